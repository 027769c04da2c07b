from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsQuery(_message.Message):
    __slots__ = ("q", "category", "type", "page")
    Q_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    q: str
    category: str
    type: str
    page: str
    def __init__(self, q: _Optional[str] = ..., category: _Optional[str] = ..., type: _Optional[str] = ..., page: _Optional[str] = ...) -> None: ...

class GetModelQuery(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListCategoriesQuery(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
