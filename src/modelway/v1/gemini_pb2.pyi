from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateContentRequest(_message.Message):
    __slots__ = ("model", "contents", "system_instruction", "tools", "tool_config", "safety_settings", "generation_config")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CONFIG_FIELD_NUMBER: _ClassVar[int]
    SAFETY_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_CONFIG_FIELD_NUMBER: _ClassVar[int]
    model: str
    contents: _containers.RepeatedCompositeFieldContainer[GeminiContent]
    system_instruction: GeminiContent
    tools: _containers.RepeatedCompositeFieldContainer[GeminiTool]
    tool_config: GeminiToolConfig
    safety_settings: _containers.RepeatedCompositeFieldContainer[GeminiSafetySetting]
    generation_config: GeminiGenerationConfig
    def __init__(self, model: _Optional[str] = ..., contents: _Optional[_Iterable[_Union[GeminiContent, _Mapping]]] = ..., system_instruction: _Optional[_Union[GeminiContent, _Mapping]] = ..., tools: _Optional[_Iterable[_Union[GeminiTool, _Mapping]]] = ..., tool_config: _Optional[_Union[GeminiToolConfig, _Mapping]] = ..., safety_settings: _Optional[_Iterable[_Union[GeminiSafetySetting, _Mapping]]] = ..., generation_config: _Optional[_Union[GeminiGenerationConfig, _Mapping]] = ...) -> None: ...

class GeminiContent(_message.Message):
    __slots__ = ("role", "parts")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    role: str
    parts: _containers.RepeatedCompositeFieldContainer[GeminiPart]
    def __init__(self, role: _Optional[str] = ..., parts: _Optional[_Iterable[_Union[GeminiPart, _Mapping]]] = ...) -> None: ...

class GeminiPart(_message.Message):
    __slots__ = ("text", "inline_data", "file_data", "function_call", "function_response", "thought")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INLINE_DATA_FIELD_NUMBER: _ClassVar[int]
    FILE_DATA_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_CALL_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    THOUGHT_FIELD_NUMBER: _ClassVar[int]
    text: str
    inline_data: GeminiBlob
    file_data: GeminiFileData
    function_call: GeminiFunctionCall
    function_response: GeminiFunctionResponse
    thought: bool
    def __init__(self, text: _Optional[str] = ..., inline_data: _Optional[_Union[GeminiBlob, _Mapping]] = ..., file_data: _Optional[_Union[GeminiFileData, _Mapping]] = ..., function_call: _Optional[_Union[GeminiFunctionCall, _Mapping]] = ..., function_response: _Optional[_Union[GeminiFunctionResponse, _Mapping]] = ..., thought: _Optional[bool] = ...) -> None: ...

class GeminiBlob(_message.Message):
    __slots__ = ("mime_type", "data")
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    mime_type: str
    data: bytes
    def __init__(self, mime_type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class GeminiFileData(_message.Message):
    __slots__ = ("mime_type", "file_uri")
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILE_URI_FIELD_NUMBER: _ClassVar[int]
    mime_type: str
    file_uri: str
    def __init__(self, mime_type: _Optional[str] = ..., file_uri: _Optional[str] = ...) -> None: ...

class GeminiFunctionCall(_message.Message):
    __slots__ = ("id", "name", "args")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    args: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GeminiFunctionResponse(_message.Message):
    __slots__ = ("id", "name", "response")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    response: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., response: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GeminiTool(_message.Message):
    __slots__ = ("function_declarations",)
    FUNCTION_DECLARATIONS_FIELD_NUMBER: _ClassVar[int]
    function_declarations: _containers.RepeatedCompositeFieldContainer[GeminiFunctionDeclaration]
    def __init__(self, function_declarations: _Optional[_Iterable[_Union[GeminiFunctionDeclaration, _Mapping]]] = ...) -> None: ...

class GeminiFunctionDeclaration(_message.Message):
    __slots__ = ("name", "description", "parameters", "parameters_json_schema")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters: _struct_pb2.Struct
    parameters_json_schema: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parameters_json_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GeminiToolConfig(_message.Message):
    __slots__ = ("function_calling_config",)
    FUNCTION_CALLING_CONFIG_FIELD_NUMBER: _ClassVar[int]
    function_calling_config: GeminiFunctionCallingConfig
    def __init__(self, function_calling_config: _Optional[_Union[GeminiFunctionCallingConfig, _Mapping]] = ...) -> None: ...

class GeminiFunctionCallingConfig(_message.Message):
    __slots__ = ("mode", "allowed_function_names")
    MODE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FUNCTION_NAMES_FIELD_NUMBER: _ClassVar[int]
    mode: str
    allowed_function_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mode: _Optional[str] = ..., allowed_function_names: _Optional[_Iterable[str]] = ...) -> None: ...

class GeminiSafetySetting(_message.Message):
    __slots__ = ("category", "threshold")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    category: str
    threshold: str
    def __init__(self, category: _Optional[str] = ..., threshold: _Optional[str] = ...) -> None: ...

class GeminiGenerationConfig(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "max_output_tokens", "stop_sequences", "candidate_count", "response_mime_type", "response_schema", "response_json_schema", "seed", "presence_penalty", "frequency_penalty")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    max_output_tokens: int
    stop_sequences: _containers.RepeatedScalarFieldContainer[str]
    candidate_count: int
    response_mime_type: str
    response_schema: _struct_pb2.Struct
    response_json_schema: _struct_pb2.Struct
    seed: int
    presence_penalty: float
    frequency_penalty: float
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., stop_sequences: _Optional[_Iterable[str]] = ..., candidate_count: _Optional[int] = ..., response_mime_type: _Optional[str] = ..., response_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., response_json_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., seed: _Optional[int] = ..., presence_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ...) -> None: ...

class GenerateContentResponse(_message.Message):
    __slots__ = ("candidates", "usage_metadata", "model_version", "response_id")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    USAGE_METADATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[GeminiCandidate]
    usage_metadata: GeminiUsageMetadata
    model_version: str
    response_id: str
    def __init__(self, candidates: _Optional[_Iterable[_Union[GeminiCandidate, _Mapping]]] = ..., usage_metadata: _Optional[_Union[GeminiUsageMetadata, _Mapping]] = ..., model_version: _Optional[str] = ..., response_id: _Optional[str] = ...) -> None: ...

class GeminiCandidate(_message.Message):
    __slots__ = ("content", "finish_reason", "index")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    content: GeminiContent
    finish_reason: str
    index: int
    def __init__(self, content: _Optional[_Union[GeminiContent, _Mapping]] = ..., finish_reason: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class GeminiUsageMetadata(_message.Message):
    __slots__ = ("prompt_token_count", "candidates_token_count", "total_token_count")
    PROMPT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    prompt_token_count: int
    candidates_token_count: int
    total_token_count: int
    def __init__(self, prompt_token_count: _Optional[int] = ..., candidates_token_count: _Optional[int] = ..., total_token_count: _Optional[int] = ...) -> None: ...
