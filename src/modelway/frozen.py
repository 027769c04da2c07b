"""A cheaper `__init__` for the frozen dataclasses a call makes.

dataclasses gives a frozen class an `__init__` that calls `object.__setattr__`
once per field, because the class's own `__setattr__` refuses. A whole JSON
call makes some fifteen such records (its request with thirty fields, its
messages, its choice, its usage row...). `one_store_init` gives the class an
`__init__` that hands the new instance its whole `__dict__` in one call: the
same signature, defaults and default factories, and an instance as frozen as
before. It needs the instance to have a `__dict__`, so these classes are not
slotted.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

__all__ = ["one_store_init"]

T = TypeVar("T")


def one_store_init(cls: type[T]) -> type[T]:
    """Put over `@dataclass(frozen=True)`, on a class without slots or `__post_init__`."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__qualname__}: one_store_init needs a frozen dataclass without slots or __post_init__")
    namespace: dict[str, Any] = {"_store": object.__setattr__}
    arguments: list[str] = []
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and "*" not in arguments:
            arguments.append("*")
        if parameter.default is inspect.Parameter.empty:
            arguments.append(parameter.name)
        else:
            # The default dataclasses' own __init__ has: the value, or its marker for a default factory.
            namespace[f"_default_{parameter.name}"] = parameter.default
            arguments.append(f"{parameter.name}=_default_{parameter.name}")
    values: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]  # checked above to be a dataclass
        name = field.name
        value = name
        if field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = field.default_factory
            value = (
                f"_factory_{name}() if {name} is _default_{name} else {name}" if field.init else f"_factory_{name}()"
            )
        elif not field.init:
            if field.default is dataclasses.MISSING:
                continue  # dataclasses' __init__ leaves it unset too
            namespace[f"_default_{name}"] = field.default
            value = f"_default_{name}"
        values.append(f"{name!r}: {value}")
    exec(
        f"def __init__(self, {', '.join(arguments)}):\n    _store(self, '__dict__', {{{', '.join(values)}}})", namespace
    )
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = cls.__init__.__annotations__
    setattr(cls, "__init__", init)  # noqa: B010  # mypy refuses a method assigned on a class
    return cls
