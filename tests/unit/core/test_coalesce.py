"""coalesced: a group's consecutive pieces of one choice merged, every boundary a caller sees kept."""

from __future__ import annotations

from modelway.core.coalesce import coalesced
from modelway.core.types import ChoiceDelta, StreamEvent, ToolCallAssembler, ToolCallDelta, Usage


def _assembled(events: list[StreamEvent]) -> dict[int, tuple[str, object, object]]:
    """What a caller puts back together per choice: text, tool calls, finish reason."""
    text: dict[int, str] = {}
    calls: dict[int, ToolCallAssembler] = {}
    finish: dict[int, object] = {}
    for event in events:
        if isinstance(event, ChoiceDelta):
            text[event.index] = text.get(event.index, "") + event.content
            calls.setdefault(event.index, ToolCallAssembler()).add(event.tool_calls)
            if event.finish_reason is not None:
                finish[event.index] = event.finish_reason
    return {index: (text[index], calls[index].calls(), finish.get(index)) for index in text}


def test_a_choices_text_pieces_become_one_with_the_last_finish_reason_and_usage_stays_last() -> None:
    group: list[StreamEvent] = [
        ChoiceDelta(0, "Hel", logprobs=({"token": "Hel"},)),
        ChoiceDelta(0, "lo", logprobs=({"token": "lo"},)),
        ChoiceDelta(0, "", finish_reason="stop"),
        Usage(5, 2),
    ]
    merged = coalesced(group)
    assert merged == [
        ChoiceDelta(0, "Hello", finish_reason="stop", logprobs=({"token": "Hel"}, {"token": "lo"})),
        Usage(5, 2),
    ]


def test_nothing_joins_a_finished_piece_and_text_never_joins_tool_calls() -> None:
    call = ToolCallDelta(0, "call_1", "lookup", '{"q"')
    group: list[StreamEvent] = [
        ChoiceDelta(0, "Let me look."),
        ChoiceDelta(0, tool_calls=(call,)),
        ChoiceDelta(0, tool_calls=(ToolCallDelta(0, arguments=': "fox"}'),)),
        ChoiceDelta(0, finish_reason="tool_calls"),
        ChoiceDelta(0, "late"),  # after a finish: a piece of its own
    ]
    merged = coalesced(group)
    assert merged == [
        ChoiceDelta(0, "Let me look."),
        ChoiceDelta(0, tool_calls=(ToolCallDelta(0, "call_1", "lookup", '{"q": "fox"}'),), finish_reason="tool_calls"),
        ChoiceDelta(0, "late"),
    ]
    assert _assembled(merged) == _assembled(group)


def test_a_second_tool_call_keeps_its_own_opening_piece_and_choices_stay_apart() -> None:
    group: list[StreamEvent] = [
        ChoiceDelta(0, tool_calls=(ToolCallDelta(0, "call_a", "one", "{"),)),
        ChoiceDelta(1, "other choice"),
        ChoiceDelta(0, tool_calls=(ToolCallDelta(0, arguments="}"),)),
        ChoiceDelta(0, tool_calls=(ToolCallDelta(1, "call_b", "two", "{}"),)),
        ChoiceDelta(1, " goes on", finish_reason="length"),
        ChoiceDelta(0, finish_reason="tool_calls"),
    ]
    merged = coalesced(group)
    assert merged == [
        ChoiceDelta(
            0,
            tool_calls=(ToolCallDelta(0, "call_a", "one", "{}"), ToolCallDelta(1, "call_b", "two", "{}")),
            finish_reason="tool_calls",
        ),
        ChoiceDelta(1, "other choice goes on", finish_reason="length"),
    ]
    assert _assembled(merged) == _assembled(group)


def test_a_group_of_one_is_unchanged() -> None:
    assert coalesced([ChoiceDelta(0, "x")]) == [ChoiceDelta(0, "x")]
    assert coalesced([Usage(1, 1)]) == [Usage(1, 1)]
