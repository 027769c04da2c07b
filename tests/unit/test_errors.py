"""clip and the bounds on what an error may quote."""

from __future__ import annotations

from modelway.errors import CLIP_CHARS, GatewayError, Reason, clip


def test_clip_keeps_short_values() -> None:
    assert clip("gpt-4o") == "gpt-4o"
    assert clip("x" * CLIP_CHARS) == "x" * CLIP_CHARS


def test_clip_cuts_long_values_with_an_ellipsis() -> None:
    clipped = clip("m" * 1_000_000)
    assert len(clipped) == CLIP_CHARS and clipped.endswith("\u2026")


def test_clip_shows_other_values_by_repr() -> None:
    assert clip(["a", 1]) == "['a', 1]"
    assert clip(list(range(10_000))).startswith("[0, 1, 2") and len(clip(list(range(10_000)))) <= CLIP_CHARS


def test_a_message_and_param_built_without_clip_are_still_bounded() -> None:
    error = GatewayError(Reason.INVALID_VALUE, "bad " + "y" * 100_000, param="metadata." + "k" * 100_000)
    assert len(error.message) == 2048 and error.message.endswith("\u2026")
    assert error.param is not None and len(error.param) == CLIP_CHARS
    assert str(error) == error.message


def test_the_new_reasons_have_their_statuses() -> None:
    assert GatewayError(Reason.ARRAY_TOO_LONG, "m").http_status == 400
    assert GatewayError(Reason.NESTED_TOO_DEEPLY, "m").http_status == 400
    deadline = GatewayError(Reason.DEADLINE_EXCEEDED, "m")
    assert deadline.http_status == 504 and deadline.grpc_code.name == "DEADLINE_EXCEEDED"
