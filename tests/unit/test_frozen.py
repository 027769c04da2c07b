"""slot_init: the same records as dataclasses' own frozen __init__ makes, from the same arguments."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
import typing
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelway.core.accounting import _Queued
from modelway.core.budgets import TokenHold
from modelway.core.directory import Caller
from modelway.core.ledger import Reservation
from modelway.core.limits import LimitState
from modelway.core.pipeline import CompletedChoice, Completion
from modelway.core.types import ChatRequest, ChoiceDelta, Message, TextPart, Usage
from modelway.frozen import slot_init
from modelway.providers.base import HttpRequest, Upstream
from modelway.store import UsageRecord

_GATEWAY_RECORDS = (
    ChatRequest,
    Message,
    TextPart,
    ChoiceDelta,
    Usage,
    CompletedChoice,
    Completion,
    UsageRecord,
    Upstream,
    HttpRequest,
    LimitState,
    _Queued,
    TokenHold,
    Reservation,
    Caller,
)


def _declare() -> type[Any]:
    """A new class each time, with every kind of field dataclasses knows."""

    @dataclass(frozen=True, slots=True)
    class Record:
        name: str
        count: int = 3
        tags: list[str] = field(default_factory=list)
        seen: tuple[str, ...] = field(default=(), init=False)
        made: list[int] = field(default_factory=lambda: [1], init=False)
        limit: int = field(default=9, kw_only=True)

    return Record


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("a",), {}), (("a", 5), {}), (("a", 5, ["x"]), {"limit": 1}), ((), {"name": "b", "tags": ["y"], "count": 0})],
)
def test_the_same_fields_as_dataclasses_own_init(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    plain, fast = _declare(), slot_init(_declare())
    assert dataclasses.asdict(fast(*args, **kwargs)) == dataclasses.asdict(plain(*args, **kwargs))
    assert str(inspect.signature(fast)) == str(inspect.signature(plain))


def test_factories_make_a_new_value_for_each_instance_and_the_instance_stays_frozen() -> None:
    record = slot_init(_declare())
    first, second = record("a"), record("b")
    assert first.tags == [] and first.tags is not second.tags and first.made is not second.made
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.name = "c"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del first.count
    assert record("a") == first and not hasattr(first, "__dict__")


def test_the_arguments_dataclasses_refuses_are_refused() -> None:
    record = slot_init(_declare())
    with pytest.raises(TypeError):
        record()
    with pytest.raises(TypeError):
        record("a", 1, [], 2)  # limit is keyword-only
    with pytest.raises(TypeError):
        record("a", seen=("x",))  # not an __init__ field


def test_fields_named_like_the_generated_code_are_fields() -> None:
    @slot_init
    @dataclass(frozen=True, slots=True)
    class Awkward:
        self: int
        store: int = 1
        default_tags: int = 2
        tags: list[str] = field(default_factory=list)

    made = Awkward(0, 5)
    assert (made.self, made.store, made.default_tags, made.tags) == (0, 5, 2, [])


def _slotted_base() -> type[Any]:
    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclass(frozen=True, slots=True)
    class Derived(Base):
        b: int = 0

    return Derived


def _own_init() -> type[Any]:
    @dataclass(frozen=True, slots=True)
    class Converted:
        a: int

        def __init__(self, text: str) -> None:
            object.__setattr__(self, "a", int(text))

    return Converted


@pytest.mark.parametrize(
    "declare",
    [
        lambda: dataclass(frozen=True)(type("Unslotted", (), {"__annotations__": {"a": "int"}})),
        lambda: dataclass(slots=True)(type("Mutable", (), {"__annotations__": {"a": "int"}})),
        lambda: dataclass(frozen=True, slots=True, init=False)(type("OwnInit", (), {"__annotations__": {"a": "int"}})),
        lambda: dataclass(frozen=True)(type("Checked", (), {"__annotations__": {"a": "int"}, "__post_init__": print})),
        lambda: type("NotADataclass", (), {}),
        _slotted_base,  # `a` is the base's slot: the generated init would store only `b`
        _own_init,  # dataclasses keeps an __init__ written in the class body
    ],
)
def test_only_frozen_slotted_dataclasses_with_their_own_init(declare: Any) -> None:
    with pytest.raises(TypeError, match="slot_init"):
        slot_init(declare())


@pytest.mark.parametrize("cls", _GATEWAY_RECORDS)
def test_the_gateways_records_keep_their_fields_defaults_and_hints(cls: type[Any]) -> None:
    parameters = inspect.signature(cls).parameters
    declared = [f for f in dataclasses.fields(cls) if f.init]
    assert list(parameters) == [f.name for f in declared]
    for f in declared:
        if f.default is not dataclasses.MISSING:
            assert parameters[f.name].default is f.default
    assert vars(cls)["__init__"].__qualname__ == f"{cls.__qualname__}.__init__"
    assert "return" in typing.get_type_hints(cls.__init__)  # the annotations resolve in the class's module


def test_a_record_survives_pickle_copy_and_replace() -> None:
    request = ChatRequest(model="m", messages=(Message(role="user", content=(TextPart("hi"),)),), max_tokens=5)
    assert pickle.loads(pickle.dumps(request)) == request
    assert copy.deepcopy(request) == request == copy.copy(request)
    assert dataclasses.replace(request, max_tokens=7) == request.capped(7) != request
