"""What a REST dialect supplies, and the one helper that streams any chat call to an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Protocol

from google.api import httpbody_pb2

from modelway.core.pipeline import CallInfo, ChatRun, Completion, Pipeline
from modelway.core.types import ChatRequest, StreamEvent, Usage
from modelway.core.wording import Wording
from modelway.errors import GatewayError, Reason, as_gateway_error

__all__ = ["MAX_ANSWER_BYTES", "Dialect", "StreamWriter", "respond", "stream_answer"]


class StreamWriter(Protocol):
    """One stream's frames; holds what the dialect needs to remember between events."""

    def event(self, event: StreamEvent) -> bytes:
        """The frame(s) for one event; b"" when the dialect shows nothing for it."""
        ...

    def error(self, error: GatewayError) -> bytes:
        """A failure after the stream began, in the dialect's in-stream form."""
        ...

    def end(self) -> bytes:
        """The dialect's terminator (b"" when it has none)."""
        ...


class Dialect(Protocol):
    """A REST API's words: its name in usage rows, its statuses and bodies, its stream frames and
    their content type, and the advice the core's errors borrow from it."""

    @property
    def name(self) -> str: ...

    @property
    def wording(self) -> Wording: ...

    @property
    def stream_content_type(self) -> str:
        """The content type of a streamed answer (text/event-stream, or Gemini's JSON array)."""
        ...

    def status(self, error: GatewayError) -> int: ...

    def error_response(self, error: GatewayError) -> tuple[int, bytes]:
        """The HTTP status and body of an error answered before any output."""
        ...

    def completion(self, run: ChatRun, completion: Completion) -> bytes:
        """The JSON body of a whole answer."""
        ...

    def stream(self, run: ChatRun) -> StreamWriter: ...


# The largest whole JSON answer: Envoy's transcoder buffers it and answers a bare 500 past 32 MiB.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

_JSON = "application/json"


async def respond(
    pipeline: Pipeline, call: CallInfo, dialect: Dialect, parse: Callable[[], ChatRequest]
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """Runs one chat call and yields its HTTP body: one JSON message, or the dialect's stream frames.

    The first event is pulled before anything is answered, so a failure
    before any output is a real HTTP error (raised to the RPC wrapper). After
    it, a failure is written into the stream in the dialect's form, the
    stream still ends with the dialect's terminator, and the call is recorded
    as failed with what was delivered.

    The usage row is settled and committed before the last bytes go out (the
    JSON body, the terminator): a client that has the whole answer has a row
    that survives a crash.
    """
    async with pipeline.chat(call, dialect, parse) as run:
        if not run.request.stream:
            body = dialect.completion(run, await run.complete())
            if len(body) > MAX_ANSWER_BYTES:
                error = GatewayError(
                    Reason.INVALID_VALUE,
                    f"The answer is {len(body)} bytes, more than the {MAX_ANSWER_BYTES} a whole JSON answer may "
                    f"have. {dialect.wording.answer_smaller}",
                    param="stream",
                )
                run.undelivered(error)
                raise error
            await run.finish()
            yield httpbody_pb2.HttpBody(content_type=_JSON, data=body)
            return
        async for body in stream_answer(run, dialect):
            yield body


async def stream_answer(run: ChatRun, dialect: Dialect) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """An admitted call's answer as the dialect's stream frames (see `respond`).

    The row is settled and committed as the Usage event (always the last)
    arrives, before its frame is asked for: a dialect without a terminator
    (Gemini) ends with that frame, and any frame for it may carry the call's
    final figures (credits). A stream that fails is settled after its error
    frame, before the terminator.
    """
    content_type = dialect.stream_content_type
    # Events that arrived together go out as one message (ChatRun.event_groups): one write, not one each.
    # The group with the Usage (always the last) carries the terminator too.
    async with aclosing(run.event_groups()) as groups:
        first = await anext(groups)
        # Made after the first event: by then the router knows which model answers.
        writer = dialect.stream(run)
        yield httpbody_pb2.HttpBody(content_type=content_type, data=await _frames(run, writer, first))
        ended = isinstance(first[-1], Usage)
        try:
            async for group in groups:
                frames = await _frames(run, writer, group)
                ended = isinstance(group[-1], Usage)
                if frames:
                    yield httpbody_pb2.HttpBody(content_type=content_type, data=frames)
        except Exception as exc:
            error = as_gateway_error(exc)
            run.fail(error)
            yield httpbody_pb2.HttpBody(content_type=content_type, data=writer.error(error))
    if ended:
        return
    await run.finish()
    terminator = writer.end()
    if terminator:
        yield httpbody_pb2.HttpBody(content_type=content_type, data=terminator)


async def _frames(run: ChatRun, writer: StreamWriter, group: tuple[StreamEvent, ...]) -> bytes:
    """The frames of a group of events. The Usage ends the stream: the row is settled and committed
    before its frame, and the terminator follows it."""
    frames: list[bytes] = []
    for event in group:
        if isinstance(event, Usage):
            await run.finish()
            frames += (writer.event(event), writer.end())
        else:
            frames.append(writer.event(event))
    return b"".join(frames)
