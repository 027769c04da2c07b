"""Tests for the approximate tokeniser."""

from __future__ import annotations

import random
import time

import pytest

from modelway.core.tokens import count_message_tokens, count_tokens, split_tokens
from modelway.core.types import ImagePart, Message, TextPart, ToolCall

SAMPLES = [
    "",
    " ",
    "\n\t  ",
    "Hello, world!",
    "  leading space",
    "trailing space  ",
    "  both\n\n",
    "snake_case and CamelCase42",
    "naïve café — 東京 ☃!",
    'json: {"a": [1, 2.5, null]}',
    "a\u00a0b\u2003c",  # non-breaking and em spaces are whitespace too
    "x" * 1000,
]


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(text: str) -> None:
    assert "".join(split_tokens(text)) == text


def test_random_round_trip() -> None:
    rng = random.Random(7)
    alphabet = "ab_9 \t\n.,!{}\"'é東\u00a0\u2028"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
        pieces = split_tokens(text)
        assert "".join(pieces) == text
        assert count_tokens(text) == sum(1 for piece in pieces if not piece.isspace())
        assert all(piece for piece in pieces)


def test_split_examples() -> None:
    assert split_tokens("Hello, world!") == ["Hello", ",", " world", "!"]
    assert split_tokens("  hi there \n") == ["  hi", " there \n"]
    assert split_tokens("a.b") == ["a", ".", "b"]
    assert split_tokens("foo_bar42") == ["foo_bar42"]


def test_whitespace_and_empty() -> None:
    assert split_tokens("") == []
    assert count_tokens("") == 0
    assert split_tokens("   ") == ["   "]
    assert count_tokens("   ") == 0


@pytest.mark.parametrize("text", SAMPLES)
def test_count_matches_pieces(text: str) -> None:
    pieces = split_tokens(text)
    assert count_tokens(text) == sum(1 for piece in pieces if not piece.isspace())


def test_counts() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens('{"city":"Paris"}') == 9
    assert count_tokens("one two  three\n") == 3


def test_long_trailing_whitespace_is_fast() -> None:
    text = "word" + " " * 200_000
    started = time.perf_counter()
    assert split_tokens(text) == [text]
    assert count_tokens(text) == 1
    assert time.perf_counter() - started < 1.0


def test_count_message_tokens() -> None:
    messages = (
        Message(role="system", content=(TextPart("You are terse."),)),  # 4 tokens
        Message(role="user", content=(TextPart("Hi!"), ImagePart(url="https://example.com/a.png"))),  # 2
        Message(
            role="assistant",
            tool_calls=(ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}'),),  # 1 + 9
        ),
    )
    assert count_message_tokens(messages) == (3 + 4) + (3 + 2) + (3 + 1 + 9) + 3
    assert count_message_tokens(()) == 3
