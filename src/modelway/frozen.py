"""A cheaper `__init__` for the frozen dataclasses a call makes.

dataclasses gives a frozen class an `__init__` that calls `object.__setattr__`
once per field, because the class's own `__setattr__` refuses: a generic
attribute store that looks the name up again on every call. A whole JSON call
makes some fifteen such records (its request with thirty fields, its
messages, its choice, its usage row...). `slot_init` gives a slotted frozen
dataclass an `__init__` that stores each field through its own slot
descriptor instead: the same signature, defaults and default factories, and
an instance as frozen as before.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from types import MemberDescriptorType
from typing import Any, TypeVar

__all__ = ["slot_init"]

T = TypeVar("T")


def slot_init(cls: type[T]) -> type[T]:
    """Put over `@dataclass(frozen=True, slots=True)`, whose generated `__init__` it replaces."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not (params.frozen and params.init) or hasattr(cls, "__post_init__"):
        raise TypeError(
            f"{cls.__qualname__}: slot_init needs a frozen dataclass with its own __init__, no __post_init__"
        )
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # checked above to be a dataclass
    if any(not isinstance(cls.__dict__.get(field.name), MemberDescriptorType) for field in fields):
        raise TypeError(f"{cls.__qualname__}: slot_init needs every field in a slot of the class itself")
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if [parameter.name for parameter in parameters] != [field.name for field in fields if field.init]:
        # An __init__ written in the class body, which dataclasses keeps: its arguments are not the fields.
        raise TypeError(f"{cls.__qualname__}: slot_init needs the __init__ dataclasses makes, not the class's own")
    # Closed over by the generated function, under names no field declared in a class body can have
    # (a __name there is mangled).
    closure: dict[str, Any] = {}
    arguments: list[str] = []
    keyword_only = False
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and not keyword_only:
            keyword_only = True
            arguments.append("*")
        if parameter.default is inspect.Parameter.empty:
            arguments.append(parameter.name)
        else:
            # The default dataclasses' own __init__ has: the value, or its marker for a default factory.
            closure[f"__mw_default_{parameter.name}"] = parameter.default
            arguments.append(f"{parameter.name}=__mw_default_{parameter.name}")
    stores: list[str] = []
    for field in fields:
        name = field.name
        if field.default_factory is not dataclasses.MISSING:
            closure[f"__mw_factory_{name}"] = field.default_factory
            value = f"__mw_factory_{name}()"
            if field.init:
                value = f"{value} if {name} is __mw_default_{name} else {name}"
        elif field.init:
            value = name
        elif field.default is not dataclasses.MISSING:
            closure[f"__mw_default_{name}"] = field.default
            value = f"__mw_default_{name}"
        else:
            continue  # dataclasses' __init__ leaves it unset too
        closure[f"__mw_store_{name}"] = cls.__dict__[name].__set__
        stores.append(f"        __mw_store_{name}(__dataclass_self__, {value})")
    # Made inside a function of the closure's names, in the class's module: its annotations resolve there.
    source = (
        f"def __mw_make__({', '.join(closure)}):\n"
        f"    def __init__(__dataclass_self__, {', '.join(arguments)}):\n"
        + "\n".join(stores or ["        pass"])
        + "\n"
        "    return __init__\n"
    )
    scope: dict[str, Any] = {}
    exec(source, sys.modules[cls.__module__].__dict__, scope)
    init = scope["__mw_make__"](**closure)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = cls.__init__.__annotations__
    setattr(cls, "__init__", init)  # noqa: B010  # mypy refuses a method assigned on a class
    return cls
