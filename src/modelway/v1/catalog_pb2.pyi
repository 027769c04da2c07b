from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CatalogModel(_message.Message):
    __slots__ = ("id", "slug", "name", "description", "category", "type", "capabilities", "context_length", "max_output_tokens", "pricing", "created", "owned_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRICING_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    id: int
    slug: str
    name: str
    description: str
    category: str
    type: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    context_length: int
    max_output_tokens: int
    pricing: CatalogPricing
    created: int
    owned_by: str
    def __init__(self, id: _Optional[int] = ..., slug: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., category: _Optional[str] = ..., type: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., context_length: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., pricing: _Optional[_Union[CatalogPricing, _Mapping]] = ..., created: _Optional[int] = ..., owned_by: _Optional[str] = ...) -> None: ...

class CatalogPricing(_message.Message):
    __slots__ = ("input_per_1k_tokens", "output_per_1k_tokens", "per_request", "per_image")
    INPUT_PER_1K_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PER_1K_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    input_per_1k_tokens: float
    output_per_1k_tokens: float
    per_request: float
    per_image: float
    def __init__(self, input_per_1k_tokens: _Optional[float] = ..., output_per_1k_tokens: _Optional[float] = ..., per_request: _Optional[float] = ..., per_image: _Optional[float] = ...) -> None: ...

class PageInfo(_message.Message):
    __slots__ = ("page", "per_page", "total", "total_pages")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PER_PAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PAGES_FIELD_NUMBER: _ClassVar[int]
    page: int
    per_page: int
    total: int
    total_pages: int
    def __init__(self, page: _Optional[int] = ..., per_page: _Optional[int] = ..., total: _Optional[int] = ..., total_pages: _Optional[int] = ...) -> None: ...

class ListCatalogModelsRequest(_message.Message):
    __slots__ = ("query", "category", "type", "page")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    query: str
    category: str
    type: str
    page: int
    def __init__(self, query: _Optional[str] = ..., category: _Optional[str] = ..., type: _Optional[str] = ..., page: _Optional[int] = ...) -> None: ...

class ListCatalogModelsResponse(_message.Message):
    __slots__ = ("models", "page")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[CatalogModel]
    page: PageInfo
    def __init__(self, models: _Optional[_Iterable[_Union[CatalogModel, _Mapping]]] = ..., page: _Optional[_Union[PageInfo, _Mapping]] = ...) -> None: ...

class GetCatalogModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetCatalogModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: CatalogModel
    def __init__(self, model: _Optional[_Union[CatalogModel, _Mapping]] = ...) -> None: ...

class ListCategoriesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Category(_message.Message):
    __slots__ = ("name", "model_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_count: int
    def __init__(self, name: _Optional[str] = ..., model_count: _Optional[int] = ...) -> None: ...

class ListCategoriesResponse(_message.Message):
    __slots__ = ("categories",)
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedCompositeFieldContainer[Category]
    def __init__(self, categories: _Optional[_Iterable[_Union[Category, _Mapping]]] = ...) -> None: ...
