"""Tests for SseDecoder: bytes in, exactly the events the event-stream rules dispatch out."""

from __future__ import annotations

import pytest

from modelway.providers.base import SseEvent
from modelway.providers.sse import SseDecoder


def decode(*chunks: bytes) -> list[SseEvent]:
    """Every event of a stream fed in `chunks`, the ones close() delivers included."""
    decoder = SseDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def test_data_with_and_without_the_space() -> None:
    assert decode(b"data: one\n\ndata:two\n\ndata:  three\n\n") == [
        SseEvent("one"),
        SseEvent("two"),
        SseEvent(" three"),  # only one space is dropped
    ]


@pytest.mark.parametrize("end", [b"\r\n", b"\n", b"\r"])
def test_line_ends(end: bytes) -> None:
    stream = b"event: delta" + end + b"data: a" + end + b"data: b" + end + end + b"data: c" + end + end
    assert decode(stream) == [SseEvent("a\nb", event="delta"), SseEvent("c")]


def test_mixed_line_ends() -> None:
    assert decode(b"data: a\r\ndata: b\rdata: c\n\r\n") == [SseEvent("a\nb\nc")]


def test_crlf_split_across_two_feeds() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r") == []
    # The "\n" completes the "\r" before it: one line end, not a blank line.
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [SseEvent("a\nb")]
    assert decoder.feed(b"\n") == []
    assert decoder.close() == []


def test_blank_line_split_across_feeds_as_cr_then_cr() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [SseEvent("a")]


def test_comments_and_keep_alives_are_dropped() -> None:
    stream = b": keep-alive\n\n:\n\ndata: x\n: in the middle\ndata: y\n\n: ping\n\n"
    assert decode(stream) == [SseEvent("x\ny")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode(b'data: {\ndata:   "a": 1\ndata: }\n\n') == [SseEvent('{\n  "a": 1\n}')]


def test_empty_data_lines_count() -> None:
    assert decode(b"data\n\ndata:\ndata:\n\n") == [SseEvent(""), SseEvent("\n")]


def test_event_and_id_lines() -> None:
    stream = (
        b"event: message_start\nid: 1\ndata: {}\n\n"
        b"data: second\n\n"  # the name does not carry over; the id does
        b"id: 7\nevent:ping\ndata: third\n\n"
    )
    assert decode(stream) == [
        SseEvent("{}", event="message_start", id="1"),
        SseEvent("second", event="", id="1"),
        SseEvent("third", event="ping", id="7"),
    ]


def test_an_id_with_a_nul_is_ignored() -> None:
    assert decode(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n") == [SseEvent("a", id="1"), SseEvent("b", id="1")]


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"retry: 1000\nfoo: bar\ndata: x\n\n") == [SseEvent("x")]


def test_an_event_without_data_is_not_dispatched() -> None:
    stream = b"event: ping\n\nid: 3\n\ndata: x\n\n"
    # The name of the data-less event is forgotten; its id is kept.
    assert decode(stream) == [SseEvent("x", event="", id="3")]


def test_blank_lines_alone_dispatch_nothing() -> None:
    assert decode(b"\n\n\r\n\r\r") == []


def test_the_last_event_without_a_blank_line_comes_from_close() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\n\nevent: end\ndata: b") == [SseEvent("a")]
    assert decoder.close() == [SseEvent("b", event="end")]


def test_the_last_event_ended_by_one_newline_comes_from_close() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: last\n") == []
    assert decoder.close() == [SseEvent("last")]


def test_close_after_a_complete_stream_gives_nothing() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\n\n") == [SseEvent("a")]
    assert decoder.close() == []


def test_a_utf8_character_split_across_feeds() -> None:
    raw = "data: é€😀\n\n".encode()
    decoder = SseDecoder()
    # Cut inside the 2-, 3- and 4-byte sequences.
    assert decoder.feed(raw[:7]) == []
    assert decoder.feed(raw[7:10]) == []
    assert decoder.feed(raw[10:13]) == []
    assert decoder.feed(raw[13:]) == [SseEvent("é€😀")]


def test_every_byte_fed_alone() -> None:
    raw = "event: e\r\ndata: 東京\r\n\r\ndata: ☃\r\n\r\n".encode()
    assert decode(*(raw[i : i + 1] for i in range(len(raw)))) == [SseEvent("東京", event="e"), SseEvent("☃")]


def test_many_events_in_one_feed() -> None:
    raw = b"".join(b"data: %d\n\n" % n for n in range(100))
    decoder = SseDecoder()
    assert decoder.feed(raw) == [SseEvent(str(n)) for n in range(100)]


def test_an_event_split_at_every_position() -> None:
    raw = b'event: delta\r\ndata: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n'
    expected = [SseEvent('{"a":1}', event="delta"), SseEvent("[DONE]")]
    for cut in range(len(raw) + 1):
        assert decode(raw[:cut], raw[cut:]) == expected, cut


# Once defects: an empty read between \r and \n, a stream cut inside a UTF-8 sequence, a bad byte near a read's end.


def test_an_empty_feed_between_cr_and_lf() -> None:
    assert decode(b"data: a\r", b"", b"\ndata: b\n\n") == [SseEvent("a\nb")]


def test_a_stream_cut_inside_a_utf8_sequence_keeps_its_last_event() -> None:
    assert decode(b"data: x\xe2\x82") == [SseEvent("x\ufffd")]


def test_a_malformed_byte_near_the_end_does_not_hold_back_the_event() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: x\xff\n\n") == [SseEvent("x\ufffd")]
