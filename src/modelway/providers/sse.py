"""The one server-sent events reader, by the WHATWG event-stream rules.

Lines end in "\\r\\n", "\\n" or "\\r" (also when a "\\r\\n" pair is split across
reads); `data:` may or may not be followed by one space; several data lines
join with "\\n"; lines starting with ":" are comments (keep-alives) and are
dropped; `event:` names the event and `id:` sets its id; a blank line
dispatches; an event with no data line is not dispatched; the last event is
dispatched at the end of the stream even without a trailing blank line.
"""

from __future__ import annotations

import codecs

from modelway.providers.base import SseEvent

__all__ = ["SseDecoder"]


class SseDecoder:
    """Feed it bytes as they arrive; it returns the events they complete."""

    def __init__(self) -> None:
        self._buffer = ""
        # Keeps a UTF-8 sequence cut by a read until its end arrives; bad bytes become U+FFFD.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._carriage_return = False  # the last read ended in "\r": a "\n" next belongs to it
        self._data: list[str] = []
        self._event = ""
        self._id = ""

    def feed(self, chunk: bytes, *, final: bool = False) -> list[SseEvent]:
        text = self._utf8.decode(chunk, final)
        if not text:
            return []
        if self._carriage_return and text.startswith("\n"):
            text = text[1:]
        self._carriage_return = text.endswith("\r")
        self._buffer += text
        lines = self._buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buffer = lines.pop()
        events: list[SseEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SseEvent]:
        """The stream ended: the last event counts even without its blank line."""
        events = self.feed(b"", final=True)
        if self._buffer:
            events += self.feed(b"\n")
        event = self._dispatch()
        return [*events, event] if event is not None else events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(data="\n".join(self._data), event=self._event, id=self._id)
        self._data, self._event = [], ""
        return event
