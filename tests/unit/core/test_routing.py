"""Tests for routing: classify(), prepare() and the Resolver's candidate lists."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from modelway.config import ModelConfig, PlanConfig
from modelway.core.catalog import Catalog
from modelway.core.directory import Caller
from modelway.core.routing import COMPLEX, REASONING, SIMPLE, Resolver, classify, prepare
from modelway.core.types import (
    ChatRequest,
    FunctionTool,
    Message,
    ResponseFormat,
    RoutingPreferences,
    TextPart,
    ToolCall,
)
from modelway.errors import GatewayError, Reason
from modelway.store import AccountRecord, KeyRecord


def msg(role: Any, text: str) -> Message:
    return Message(role=role, content=(TextPart(text),))


def ask(text: str = "Hello there", *, model: str = "m-solo", **kwargs: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=(msg("user", text),), **kwargs)


# --- classify -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["Hello there", "What is the capital of France?", "Write a haiku about autumn", "Please select a colour"],
)
def test_simple(text: str) -> None:
    assert classify(ask(text)) == SIMPLE


@pytest.mark.parametrize(
    "text",
    [
        "What does this do?\n```\nx = 1\n```",
        "def add(a, b): return a + b",
        "Why is my class not found?",
        "import numpy fails",
        "SELECT * FROM users",
        "Here is the stack trace of the crash",
        "Please refactor this module",
        "Write a regex for dates",
    ],
)
def test_code_is_complex(text: str) -> None:
    assert classify(ask(text)) == COMPLEX


def test_a_pasted_python_traceback_is_complex() -> None:
    text = 'Traceback (most recent call last):\n  File "app.py", line 3, in <module>\n    main()\nKeyError: 1'
    assert classify(ask(text)) == COMPLEX


def test_tools_are_complex() -> None:
    assert classify(ask("hi", tools=(FunctionTool(name="search"),))) == COMPLEX


def test_a_json_schema_answer_is_complex() -> None:
    assert classify(ask("hi", response_format=ResponseFormat("json_schema", name="r", schema={}))) == COMPLEX
    assert classify(ask("hi", response_format=ResponseFormat("json_object"))) == SIMPLE


def test_a_long_prompt_is_complex() -> None:
    # 3 tokens of priming + 3 of framing + the words: 2000 tokens is still simple, 2001 is not.
    assert classify(ask("word " * 1994)) == SIMPLE
    assert classify(ask("word " * 1995)) == COMPLEX


def test_a_long_conversation_is_complex() -> None:
    def conversation(n: int) -> ChatRequest:
        return ChatRequest(
            model="m", messages=tuple(msg("user" if i % 2 == 0 else "assistant", "hi") for i in range(n))
        )

    assert classify(conversation(12)) == SIMPLE
    assert classify(conversation(13)) == COMPLEX


@pytest.mark.parametrize(
    "text",
    [
        "Prove that there are infinitely many primes",
        "Give me a proof of this",
        "Solve it step by step",
        "Solve it step-by-step",
        "Reason through the options",
        "Derive the formula",
        "State the theorem",
        "THINK CAREFULLY before answering",
        "Here is a puzzle",
        "Tell me a riddle",
    ],
)
def test_reasoning_cues(text: str) -> None:
    assert classify(ask(text)) == REASONING


@pytest.mark.parametrize(
    ("effort", "expected"), [("high", REASONING), ("medium", REASONING), ("low", SIMPLE), ("", SIMPLE)]
)
def test_reasoning_effort(effort: str, expected: int) -> None:
    assert classify(ask("Hello", reasoning_effort=effort)) == expected


def test_reasoning_wins_over_complex() -> None:
    request = ask("Prove this code is correct: def f(): pass", tools=(FunctionTool(name="run"),))
    assert classify(request) == REASONING


def test_system_and_developer_text_counts() -> None:
    for role in ("system", "developer"):
        request = ChatRequest(model="m", messages=(msg(role, "Think step by step."), msg("user", "2+2?")))
        assert classify(request) == REASONING


def test_assistant_and_tool_text_does_not_count() -> None:
    request = ChatRequest(
        model="m",
        messages=(
            msg("user", "hi"),
            Message(role="assistant", content=(TextPart("Let me prove it step by step: def f(): pass"),)),
            Message(role="tool", content=(TextPart("```traceback```"),), tool_call_id="c1"),
            msg("user", "thanks"),
        ),
    )
    assert classify(request) == SIMPLE


# --- prepare --------------------------------------------------------------

PLAIN = ModelConfig("m-plain", "a", max_output_tokens=50)
PROMPTED = ModelConfig("m-prompted", "a", max_output_tokens=50, system_prompt="Answer in French.")


@pytest.mark.parametrize(("asked", "sent"), [(None, 50), (10, 10), (50, 50), (100, 50)])
def test_max_tokens_capped_by_the_model(asked: int | None, sent: int) -> None:
    assert prepare(ask(max_tokens=asked), PLAIN).max_tokens == sent


def test_without_a_system_prompt_only_max_tokens_changes() -> None:
    request = ask(max_tokens=10, temperature=0.3)
    prepared = prepare(request, PLAIN)
    assert prepared == request
    assert prepared.messages is request.messages


def test_system_prompt_appended_to_the_callers_system_message() -> None:
    request = ChatRequest(model="m", messages=(msg("system", "Be brief."), msg("user", "hi"), msg("system", "Second.")))
    assert prepare(request, PROMPTED).messages == (
        msg("system", "Be brief.\n\nAnswer in French."),
        msg("user", "hi"),
        msg("system", "Second."),  # only the first one
    )


def test_system_prompt_appended_to_a_developer_message_wherever_it_is() -> None:
    request = ChatRequest(model="m", messages=(msg("user", "hi"), msg("developer", "Use metric units.")))
    assert prepare(request, PROMPTED).messages == (
        msg("user", "hi"),
        msg("developer", "Use metric units.\n\nAnswer in French."),
    )


def test_system_prompt_replaces_an_empty_system_message() -> None:
    request = ChatRequest(model="m", messages=(Message(role="system"), msg("user", "hi")))
    assert prepare(request, PROMPTED).messages == (msg("system", "Answer in French."), msg("user", "hi"))


def test_system_prompt_inserted_first_when_there_is_none() -> None:
    request = ChatRequest(
        model="m",
        messages=(
            msg("user", "hi"),
            Message(role="assistant", tool_calls=(ToolCall("c1", "f", "{}"),)),
            Message(role="tool", content=(TextPart("ok"),), tool_call_id="c1"),
        ),
        max_tokens=7,
    )
    prepared = prepare(request, PROMPTED)
    assert prepared.messages == (msg("system", "Answer in French."), *request.messages)
    assert prepared.max_tokens == 7
    assert request.messages[0] == msg("user", "hi")  # the caller's request is untouched


# --- Resolver -------------------------------------------------------------

MODELS = (
    ModelConfig("m-small", "a", input_credits_per_1k=0.1, output_credits_per_1k=0.2),
    ModelConfig("m-mid", "b", input_credits_per_1k=1, output_credits_per_1k=2, fallbacks=("m-small",)),
    ModelConfig("m-big", "c", input_credits_per_1k=5, output_credits_per_1k=10, fallbacks=("m-mid", "m-alt")),
    ModelConfig("m-alt", "a", input_credits_per_1k=0.5, output_credits_per_1k=0.5),
    ModelConfig("m-solo", "b", input_credits_per_1k=2, output_credits_per_1k=2),
    ModelConfig("m-chain", "c", fallbacks=("cheap", "m-solo")),
)
ALIASES = {
    "cheap": ("m-small", "m-alt"),
    "team": ("cheap", "m-solo", "m-small"),
    "deep": ("team", "m-big"),
    "auto": ("m-small", "m-alt", "m-solo"),
    "auto2": ("m-small", "m-solo"),
}
LATENCY = {"a": 0.5, "b": 0.1, "c": 0.3}


def resolver(aliases: Mapping[str, tuple[str, ...]] | None = None) -> Resolver:
    return Resolver(Catalog(MODELS), ALIASES if aliases is None else aliases, latency=LATENCY.__getitem__)


def caller(*allowed_models: str) -> Caller:
    plan = PlanConfig(
        "free",
        chat_requests_per_minute=10,
        image_requests_per_minute=1,
        max_keys=1,
        daily_token_budget=1000,
        max_input_tokens=1000,
    )
    key = KeyRecord(
        "key_1", "acct", "k", "hash", "hint", 0, permissions=("chat.completions",), allowed_models=allowed_models
    )
    return Caller(key=key, account=AccountRecord("acct", "a", "free", 0), plan=plan)


def ids(
    request: ChatRequest, who: Caller | None = None, aliases: Mapping[str, tuple[str, ...]] | None = None
) -> list[str]:
    return [model.id for model in resolver(aliases).candidates(request, who or caller())]


def refused(request: ChatRequest, who: Caller | None = None) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        resolver().candidates(request, who or caller())
    return caught.value


def test_a_model_without_fallbacks() -> None:
    assert ids(ask(model="m-solo")) == ["m-solo"]


def test_a_model_then_its_fallbacks_in_order() -> None:
    assert ids(ask(model="m-mid")) == ["m-mid", "m-small"]
    # Each fallback brings its own right after it, and a model comes once.
    assert ids(ask(model="m-big")) == ["m-big", "m-mid", "m-small", "m-alt"]


def test_a_fallback_may_be_an_alias() -> None:
    assert ids(ask(model="m-chain")) == ["m-chain", "m-small", "m-alt", "m-solo"]


def test_an_alias_expands_to_its_models() -> None:
    assert ids(ask(model="cheap")) == ["m-small", "m-alt"]


def test_nested_aliases_expand_in_order_each_model_once() -> None:
    assert ids(ask(model="team")) == ["m-small", "m-alt", "m-solo"]
    assert ids(ask(model="deep")) == ["m-small", "m-alt", "m-solo", "m-big", "m-mid"]


def test_an_aliased_model_brings_its_fallbacks() -> None:
    assert ids(ask(model="x"), aliases={"x": ("m-mid", "m-solo")}) == ["m-mid", "m-small", "m-solo"]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (ask("Hello"), ["m-small", "m-alt", "m-solo"]),
        (ask("def f(): pass"), ["m-alt", "m-small", "m-solo"]),
        (ask("Hello", tools=(FunctionTool(name="search"),)), ["m-alt", "m-small", "m-solo"]),
        (ask("Prove it"), ["m-solo", "m-small", "m-alt"]),
        (ask("Hello", reasoning_effort="high"), ["m-solo", "m-small", "m-alt"]),
    ],
)
def test_auto_picks_the_tier_then_keeps_the_others(request_: ChatRequest, expected: list[str]) -> None:
    assert ids(replace(request_, model="auto")) == expected


def test_auto_with_fewer_tiers_uses_the_last_for_reasoning() -> None:
    assert ids(ask("Prove it", model="auto2")) == ["m-small", "m-solo"]  # not auto: no tier picking
    assert ids(ask("Prove it", model="auto"), aliases={"auto": ("m-small", "m-solo")}) == ["m-solo", "m-small"]


def test_auto_tiers_bring_their_fallbacks() -> None:
    aliases = {"auto": ("m-solo", "m-mid", "m-big")}
    assert ids(ask("Hello", model="auto"), aliases=aliases) == ["m-solo", "m-mid", "m-small", "m-big", "m-alt"]
    assert ids(ask("Prove it", model="auto"), aliases=aliases) == ["m-big", "m-mid", "m-small", "m-alt", "m-solo"]


def test_auto_without_an_alias_is_an_unknown_model() -> None:
    with pytest.raises(GatewayError) as caught:
        resolver({}).candidates(ask(model="auto"), caller())
    assert caught.value.reason is Reason.MODEL_NOT_FOUND


def test_an_unknown_model() -> None:
    error = refused(ask(model="gpt-9"))
    assert (error.reason, error.http_status, error.param) == (Reason.MODEL_NOT_FOUND, 404, "model")
    assert error.message == "The model `gpt-9` does not exist or you do not have access to it."


def test_an_allow_list_filters_the_candidates() -> None:
    assert ids(ask(model="m-big"), caller("m-big", "m-alt")) == ["m-big", "m-alt"]
    assert ids(ask(model="team"), caller("m-solo")) == ["m-solo"]
    assert ids(ask(model="m-big"), caller()) == ["m-big", "m-mid", "m-small", "m-alt"]  # empty: all


def test_an_allow_list_leaving_nothing_is_403() -> None:
    error = refused(ask(model="m-mid"), caller("m-solo"))
    assert (error.reason, error.http_status, error.param) == (Reason.MODEL_NOT_ALLOWED, 403, "model")
    assert error.message == "This API key may not use the model `m-mid`."
    error = refused(ask(model="cheap"), caller("m-big"))
    assert error.reason is Reason.MODEL_NOT_ALLOWED
    assert error.message == "This API key may not use the model `cheap`."


def test_caller_may_use_model() -> None:
    assert caller().may_use_model("anything")
    assert caller("m-a").may_use_model("m-a")
    assert not caller("m-a").may_use_model("m-b")


def prefs(**kwargs: Any) -> ChatRequest:
    return ask(model="m-big", routing=RoutingPreferences(**kwargs))


def test_provider_order_puts_those_providers_first() -> None:
    # m-big's candidates are big (c), mid (b), small (a), alt (a).
    assert ids(prefs(order=("a", "b"))) == ["m-small", "m-alt", "m-mid", "m-big"]
    assert ids(prefs(order=("b",))) == ["m-mid", "m-big", "m-small", "m-alt"]


def test_provider_order_without_fallbacks_keeps_only_those_providers() -> None:
    assert ids(prefs(order=("a",), allow_fallbacks=False)) == ["m-small", "m-alt"]


def test_no_fallbacks_without_an_order_keeps_the_first() -> None:
    assert ids(prefs(allow_fallbacks=False)) == ["m-big"]


def test_provider_only_and_ignore() -> None:
    assert ids(prefs(only=("a",))) == ["m-small", "m-alt"]
    assert ids(prefs(only=("a", "c"))) == ["m-big", "m-small", "m-alt"]
    assert ids(prefs(ignore=("c",))) == ["m-mid", "m-small", "m-alt"]
    assert ids(prefs(only=("a", "b"), ignore=("a",))) == ["m-mid"]


def test_sort_by_price() -> None:
    assert ids(prefs(sort="price")) == ["m-small", "m-alt", "m-mid", "m-big"]


@pytest.mark.parametrize("sort", ["latency", "throughput"])
def test_sort_by_latency(sort: str) -> None:
    # b 0.1 s, c 0.3 s, a 0.5 s; ties keep their order.
    assert ids(prefs(sort=sort)) == ["m-mid", "m-big", "m-small", "m-alt"]


def test_sort_then_order() -> None:
    assert ids(prefs(sort="price", order=("c",))) == ["m-big", "m-small", "m-alt", "m-mid"]


def test_preferences_leaving_nothing() -> None:
    error = refused(prefs(only=("z",)))
    assert (error.reason, error.http_status, error.param) == (Reason.INVALID_VALUE, 400, "provider")
    assert error.message == "No provider allowed by the request's `provider` preferences serves `m-big`."
    assert refused(prefs(order=("z",), allow_fallbacks=False)).reason is Reason.INVALID_VALUE
