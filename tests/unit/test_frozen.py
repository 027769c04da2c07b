"""one_store_init: the same records as dataclasses' own frozen __init__ makes, from the same arguments."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from modelway.core.pipeline import CompletedChoice, Completion
from modelway.core.types import ChatRequest, ChoiceDelta, Message, TextPart, Usage
from modelway.frozen import one_store_init
from modelway.providers.base import HttpRequest, Upstream
from modelway.store import UsageRecord


@dataclass(frozen=True)
class _Plain:
    name: str
    count: int = 3
    tags: list[str] = field(default_factory=list)
    seen: tuple[str, ...] = field(default=(), init=False)
    made: list[int] = field(default_factory=lambda: [1], init=False)
    limit: int = field(default=9, kw_only=True)


def _twin() -> type:
    """_Plain's fields again, declared the same way, with one_store_init over them."""

    @one_store_init
    @dataclass(frozen=True)
    class Twin:
        name: str
        count: int = 3
        tags: list[str] = field(default_factory=list)
        seen: tuple[str, ...] = field(default=(), init=False)
        made: list[int] = field(default_factory=lambda: [1], init=False)
        limit: int = field(default=9, kw_only=True)

    return Twin


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("a",), {}), (("a", 5), {}), (("a", 5, ["x"]), {"limit": 1}), ((), {"name": "b", "tags": ["y"], "count": 0})],
)
def test_the_same_fields_as_dataclasses_own_init(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    twin = _twin()
    made, expected = twin(*args, **kwargs), _Plain(*args, **kwargs)  # type: ignore[arg-type]
    assert dataclasses.asdict(made) == dataclasses.asdict(expected)
    assert str(inspect.signature(twin)) == str(inspect.signature(_Plain))


def test_factories_make_a_new_value_for_each_instance_and_the_instance_stays_frozen() -> None:
    twin = _twin()
    first, second = twin("a"), twin("b")
    assert first.tags == [] and first.tags is not second.tags and first.made is not second.made
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.name = "c"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del first.count
    assert twin("a") == first


def test_the_arguments_dataclasses_refuses_are_refused() -> None:
    twin = _twin()
    with pytest.raises(TypeError):
        twin()
    with pytest.raises(TypeError):
        twin("a", 1, [], 2)  # limit is keyword-only
    with pytest.raises(TypeError):
        twin("a", seen=("x",))  # not an __init__ field


@pytest.mark.parametrize(
    "declare",
    [
        lambda: dataclass(frozen=True, slots=True)(type("Slotted", (), {"__annotations__": {"a": "int"}})),
        lambda: dataclass(type("Mutable", (), {"__annotations__": {"a": "int"}})),
        lambda: dataclass(frozen=True)(type("Checked", (), {"__annotations__": {"a": "int"}, "__post_init__": print})),
        lambda: type("NotADataclass", (), {}),
    ],
)
def test_only_frozen_dataclasses_without_slots_or_post_init(declare: object) -> None:
    with pytest.raises(TypeError, match="one_store_init"):
        one_store_init(declare())  # type: ignore[operator]


@pytest.mark.parametrize(
    "cls",
    [
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
    ],
)
def test_the_gateways_records_take_their_fields_and_defaults(cls: type) -> None:
    parameters = inspect.signature(cls).parameters
    declared = [f for f in dataclasses.fields(cls) if f.init]
    assert list(parameters) == [f.name for f in declared]
    for f in declared:
        if f.default is not dataclasses.MISSING:
            assert parameters[f.name].default is f.default
    assert vars(cls)["__init__"].__qualname__ == f"{cls.__qualname__}.__init__"
