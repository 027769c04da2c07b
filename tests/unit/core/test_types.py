"""The core's request and event types."""

from __future__ import annotations

import dataclasses

import orjson

from modelway.surfaces.openai_request import parse_chat_body


def test_a_capped_request_is_the_same_request_with_its_max_tokens_set() -> None:
    body = {
        "model": "gpt",
        "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}],
        "max_tokens": 900,
        "temperature": 0.5,
        "top_p": 0.9,
        "n": 2,
        "stop": ["\n\n"],
        "tools": [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "seed": 7,
        "logit_bias": {"42": 1},
        "logprobs": True,
        "top_logprobs": 3,
        "user": "u-1",
        "metadata": {"team": "a"},
        "stream": True,
        "stream_options": {"include_usage": True},
        "provider": {"order": ["up"]},
        "vendor_knob": 1,
    }
    request = parse_chat_body(orjson.dumps(body))
    capped = request.capped(100)
    assert capped == dataclasses.replace(request, max_tokens=100)
    assert capped.max_tokens == 100 and request.max_tokens == 900
    assert capped.extra == {"vendor_knob": 1} and capped.routing.order == ("up",)
