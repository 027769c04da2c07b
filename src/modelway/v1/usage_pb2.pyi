from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetUsageRequest(_message.Message):
    __slots__ = ("start_date", "end_date")
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    start_date: str
    end_date: str
    def __init__(self, start_date: _Optional[str] = ..., end_date: _Optional[str] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: UsageReport
    def __init__(self, data: _Optional[_Union[UsageReport, _Mapping]] = ...) -> None: ...

class UsageReport(_message.Message):
    __slots__ = ("usage", "summary")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    usage: _containers.RepeatedCompositeFieldContainer[DailyUsage]
    summary: UsageSummary
    def __init__(self, usage: _Optional[_Iterable[_Union[DailyUsage, _Mapping]]] = ..., summary: _Optional[_Union[UsageSummary, _Mapping]] = ...) -> None: ...

class DailyUsage(_message.Message):
    __slots__ = ("day", "total_requests", "total_input_tokens", "total_output_tokens", "total_cost")
    DAY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    day: str
    total_requests: float
    total_input_tokens: float
    total_output_tokens: float
    total_cost: float
    def __init__(self, day: _Optional[str] = ..., total_requests: _Optional[float] = ..., total_input_tokens: _Optional[float] = ..., total_output_tokens: _Optional[float] = ..., total_cost: _Optional[float] = ...) -> None: ...

class UsageSummary(_message.Message):
    __slots__ = ("start_date", "end_date", "total_requests", "total_input_tokens", "total_output_tokens", "total_cost")
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    start_date: str
    end_date: str
    total_requests: float
    total_input_tokens: float
    total_output_tokens: float
    total_cost: float
    def __init__(self, start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., total_requests: _Optional[float] = ..., total_input_tokens: _Optional[float] = ..., total_output_tokens: _Optional[float] = ..., total_cost: _Optional[float] = ...) -> None: ...
