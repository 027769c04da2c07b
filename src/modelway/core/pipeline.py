"""One chat (or image) call from credentials to usage row, the same for every surface.

    authenticate -> permission -> rate limit -> resolve model/alias -> input cap, context length,
    budget and credit holds -> route (attempts, fallbacks) -> provider -> settle and record

A servicer parses its surface's request into a ChatRequest, opens
`Pipeline.chat(...)`, and renders what the ChatRun produces. The call's
meter lives inside: leaving the block, however it is left, settles the holds
and records the one usage row.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn, Protocol, cast

from modelway.config import ModelConfig
from modelway.core.access import Bucket, Gate
from modelway.core.clock import Clock
from modelway.core.directory import Caller
from modelway.core.memory import release_memory
from modelway.core.metering import CallMeter, Metering
from modelway.core.offload import OFFLOAD_BYTES, off_loop_if_large
from modelway.core.ready import Pull
from modelway.core.router import Router
from modelway.core.routing import Resolver, output_cap
from modelway.core.tokens import count_message_tokens, count_tokens
from modelway.core.types import (
    ChatRequest,
    ChoiceDelta,
    FinishReason,
    GeneratedImage,
    ImageRequest,
    StreamEvent,
    ToolCall,
    ToolCallAssembler,
    Usage,
)
from modelway.core.wording import Wording
from modelway.errors import GatewayError, Reason
from modelway.frozen import slot_init

__all__ = [
    "SHUTDOWN_MESSAGE",
    "CallInfo",
    "ChatRun",
    "CompletedChoice",
    "Completion",
    "Deliverable",
    "ImagesRun",
    "Pipeline",
    "Surface",
]


class CallInfo(Protocol):
    """What the transport knows of a call: its id, its headers, and where response headers go."""

    @property
    def request_id(self) -> str: ...

    @property
    def client_request_id(self) -> str:
        """The caller's own id for the call ("" when it gave none), kept beside ours."""
        ...

    @property
    def size(self) -> int:
        """The request's size in bytes as it arrived (0 when unknown)."""
        ...

    @property
    def metadata(self) -> Mapping[str, str]: ...

    @property
    def headers(self) -> list[tuple[str, str]]: ...


class Surface(Protocol):
    """The API a call came through: its name in usage rows, the status it shows for an error, and the
    words the core's own errors borrow from it (how to send a key, what to lower)."""

    @property
    def name(self) -> str: ...

    @property
    def wording(self) -> Wording: ...

    def status(self, error: GatewayError) -> int: ...


class Deliverable(Protocol):
    """A run whose whole answer goes out in one piece (ChatRun, ImagesRun): what delivering it needs
    (services/delivery.py), so that an answer its caller never got is never charged."""

    async def finish(self) -> None:
        """Settles the call and commits its usage row; called before the answer goes out."""
        ...

    async def withdraw(self, error: GatewayError) -> None:
        """The answer was settled but did not reach its caller: the row says `error`, the charge is refunded."""
        ...

    def undelivered(self, error: GatewayError) -> None:
        """The answer was ready too late for its caller: recorded as `error`, not charged."""
        ...


@slot_init
@dataclass(frozen=True, slots=True)
class CompletedChoice:
    index: int
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason
    logprobs: tuple[Mapping[str, object], ...] = ()


@slot_init
@dataclass(frozen=True, slots=True)
class Completion:
    choices: tuple[CompletedChoice, ...]
    usage: Usage


class _ChoiceBuilder:
    """Accumulates one choice's deltas into its final text and tool calls."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls = ToolCallAssembler()
        self.logprobs: list[Mapping[str, object]] = []
        self.finish_reason: FinishReason = "stop"

    def add(self, delta: ChoiceDelta) -> None:
        self.text.append(delta.content)
        self.logprobs.extend(delta.logprobs)
        self.calls.add(delta.tool_calls)
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason

    def build(self, index: int) -> CompletedChoice:
        calls = self.calls.calls()
        text = "".join(self.text)
        return CompletedChoice(
            index=index,
            content=None if calls and not text else text,
            tool_calls=calls,
            finish_reason=self.finish_reason,
            logprobs=tuple(self.logprobs),
        )


def _delta_tokens(delta: ChoiceDelta) -> int:
    tokens = count_tokens(delta.content) if delta.content else 0
    for call in delta.tool_calls:
        tokens += count_tokens(call.name) + count_tokens(call.arguments)
    return tokens


# What a call ended by `Pipeline.stop_streams` shows its client (its row says "server_shutdown").
SHUTDOWN_MESSAGE = "The server is shutting down; retry shortly"


class ChatRun:
    """An admitted call: its identity, and its answer as events or as a whole.

    The surface calls `finish` once the answer is complete and before its
    last bytes go out: the usage row is then final and committed.

    `stop` ends the call from outside (server shutdown): the next (or the
    pending) read of an event raises GatewayError(SERVICE_UNAVAILABLE)
    instead, which surfaces render like any failure (an error frame and the
    terminator inside a stream that has begun). A pending read is
    interrupted by cancelling the task that waits in it; the cancellation is
    taken back (uncancel) and turned into that error, so it cannot be
    mistaken for a client that went away (499). Outside a read (while the
    transport writes a frame, or the row commits) nothing is cancelled: the
    call stops at its next read.
    """

    def __init__(
        self, request: ChatRequest, candidates: tuple[ModelConfig, ...], router: Router, meter: CallMeter, created: int
    ) -> None:
        self.request = request
        self.id = secrets.token_urlsafe(18)
        self.created = created
        self._candidates = candidates
        self._router = router
        self._meter = meter
        self._shutdown: GatewayError | None = None
        self._reader: asyncio.Task[object] | None = None
        # The upstream's own counts, when it reported them (kept for the one Usage at the end).
        self._upstream_usage: Usage | None = None

    @property
    def model(self) -> str:
        """The catalog id of the model that answers (the last one tried, once the first event is out)."""
        return self._meter.model.id if self._meter.model else self._candidates[0].id

    @property
    def credits_used(self) -> int:
        """Micro-credits the call was charged; final once `finish` has returned (for surfaces that show it)."""
        return self._meter.charged

    def credits_remaining(self) -> int:
        """The account's available micro-credits now: after `finish`, what is left after this call.
        A read of the ledger's memory, done only by surfaces that show it."""
        return self._meter.balance()

    def fail(self, error: GatewayError) -> None:
        """Records an error that reached the caller inside a stream that had begun."""
        self._meter.fail(error)

    async def finish(self) -> None:
        """Settles the call and waits (bounded) for its usage row to commit; call before the last bytes."""
        await self._meter.finish()

    def stop(self) -> None:
        """Ends the call because the server is shutting down (see the class docstring)."""
        if self._shutdown is not None:
            return
        self._shutdown = GatewayError(Reason.SERVICE_UNAVAILABLE, SHUTDOWN_MESSAGE, retry_after=1)
        self._meter.stopped(self._shutdown)
        if self._reader is not None:
            self._reader.cancel(SHUTDOWN_MESSAGE)

    async def withdraw(self, error: GatewayError) -> None:
        """A finished answer whose caller gave up while its row was committed: recorded as `error`, refunded."""
        await self._meter.withdraw(error)

    def undelivered(self, error: GatewayError) -> None:
        """A whole answer that was ready too late for its caller (its deadline passed): not charged."""
        self._meter.completion_tokens = 0
        self._meter.fail(error)

    async def events(self) -> AsyncGenerator[StreamEvent, None]:
        """Deltas in order, then exactly one Usage: the upstream's counts when it gave them."""
        async with aclosing(self._upstream()) as upstream:
            async for event in upstream:
                if await self._metered(event):
                    yield event
        yield self._final_usage()

    async def _upstream(self) -> AsyncGenerator[StreamEvent, None]:
        """The router's events as they come, unmetered; `stop` ends the call while a read waits."""
        # The task that reads: `stop` cancels it while it waits for the upstream.
        reader = asyncio.current_task()
        async with aclosing(self._router.stream(self.request, self._candidates, self._meter.attempting)) as events:
            while True:
                if self._shutdown is not None:
                    raise self._shutdown
                self._reader = reader
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    self._raise_if_stopped(reader)
                    raise
                finally:
                    self._reader = None
                yield event

    async def event_groups(self) -> AsyncGenerator[tuple[StreamEvent, ...], None]:
        """The events of `events`, grouped by what was ready together: a group ends where the next
        event would have to be waited for (see core/ready.py), so a stream can send each group as
        one message and nothing waits for company. The last group ends with the one Usage.

        Metered as `events` is; `stop` cancels only a read the caller waits on: while a group is
        out (being written) with the next read started, it is marked and ends the call when the
        group's write returns, the read then cancelled and its upstream closed.
        """
        group: list[StreamEvent] = []
        reader = asyncio.current_task()
        pull: Pull[StreamEvent] | None = None
        async with aclosing(self._router.stream(self.request, self._candidates, self._meter.attempting)) as events:
            try:
                while True:
                    if self._shutdown is not None:
                        raise self._shutdown
                    try:
                        pull = Pull(events)
                    except Exception:
                        if group:  # what arrived before a failure goes out before it
                            yield tuple(group)
                        raise
                    if pull.exhausted:
                        pull = None
                        break
                    if pull.ready:
                        event = cast(StreamEvent, pull.value)  # a pull that did not end has its event
                    else:
                        if group:
                            yield tuple(group)
                            group = []
                            if self._shutdown is not None:
                                raise self._shutdown
                        self._reader = reader
                        try:
                            event = await pull
                        except StopAsyncIteration:
                            pull = None
                            break
                        except asyncio.CancelledError:
                            pull = None  # it has ended with the cancellation
                            self._raise_if_stopped(reader)
                            raise
                        finally:
                            self._reader = None
                    pull = None
                    if await self._metered(event):
                        group.append(event)
            finally:
                if pull is not None:
                    await pull.abandon()
        group.append(self._final_usage())
        yield tuple(group)

    def _raise_if_stopped(self, reader: asyncio.Task[object] | None) -> None:
        """In a read's CancelledError: the cancellation is ours when stop() asked for it and nobody
        else did (a client that left cancels too); then the call ends as a shutdown."""
        if self._shutdown is not None and reader is not None and reader.uncancel() == 0:
            raise self._shutdown from None

    async def _metered(self, event: StreamEvent) -> bool:
        """Meters one upstream event; False for the upstream's Usage, kept for the end instead."""
        if isinstance(event, Usage):
            self._upstream_usage = self._reported(event)
            return False
        if self._meter.checkpoint_due():
            await self._meter.checkpoint()
        self._passing(event)
        return True

    def _final_usage(self) -> Usage:
        """The one Usage that ends the events: the upstream's counts, or ours when it gave none."""
        meter = self._meter
        return self._upstream_usage or Usage(meter.prompt_tokens, meter.completion_tokens)

    def _reported(self, event: Usage) -> Usage:
        """The upstream's counts are the truth; one it left out (0) keeps ours. A negative count is
        no count: it would refund budgets and break the row."""
        meter = self._meter
        reported = Usage(
            max(0, event.prompt_tokens) or meter.prompt_tokens,
            max(0, event.completion_tokens) or meter.completion_tokens,
        )
        meter.prompt_tokens, meter.completion_tokens = reported.prompt_tokens, reported.completion_tokens
        return reported

    def _passing(self, event: ChoiceDelta) -> None:
        """Counted as it passes, so a stream cut short is metered for what was delivered."""
        self._meter.completion_tokens += _delta_tokens(event)
        self._meter.delivered()

    async def complete(self) -> Completion:
        """The whole answer, for a call that is not streamed.

        The router gives it in one piece (Router.complete), not metered event
        by event: nothing is delivered before the end, so there is no time
        to first token and no checkpoint to write, and the answer's tokens
        are counted only when the upstream did not report them (a long
        answer's count is not free). `stop` ends it while it waits, as it
        ends `events`. A call that fails or is abandoned delivered nothing.
        """
        meter = self._meter
        meter.streamed = False  # a whole answer has no time to first token
        if self._shutdown is not None:
            raise self._shutdown
        reader = self._reader = asyncio.current_task()
        try:
            events = await self._router.complete(self.request, self._candidates, meter.attempting)
        except asyncio.CancelledError:
            self._raise_if_stopped(reader)
            raise
        finally:
            self._reader = None
        choices = [_ChoiceBuilder() for _ in range(self.request.n)]
        deltas: list[ChoiceDelta] = []  # every choice's, those past `n` too: they are metered, not shown
        reported: Usage | None = None
        for event in events:
            if isinstance(event, Usage):
                reported = event
                continue
            deltas.append(event)
            if event.index < len(choices):
                choices[event.index].add(event)
        if reported is None or reported.completion_tokens <= 0:
            meter.completion_tokens = sum(_delta_tokens(delta) for delta in deltas)
        usage = self._reported(reported) if reported is not None else self._final_usage()
        return Completion(tuple(choice.build(index) for index, choice in enumerate(choices)), usage)


class ImagesRun:
    """An admitted image call. `generate` makes the images (routed like a chat call); the surface
    then calls `finish`, which settles the call and commits its usage row, before the answer goes
    out. The images are charged only if the call ends well: one that fails after generating (its
    files could not be stored, say) delivered nothing and costs nothing."""

    def __init__(
        self, request: ImageRequest, candidates: tuple[ModelConfig, ...], router: Router, meter: CallMeter, created: int
    ) -> None:
        self.request = request
        self.created = created
        self._candidates = candidates
        self._router = router
        self._meter = meter

    @property
    def model(self) -> str:
        """The catalog id of the model that answered (the first candidate until one has)."""
        return self._meter.model.id if self._meter.model else self._candidates[0].id

    async def generate(self) -> tuple[GeneratedImage, ...]:
        images = await self._router.images(self.request, self._candidates, self._meter.attempting)
        # The credit hold covers the `n` images asked for; extra ones an upstream sends are not passed on or charged.
        images = images[: self.request.n]
        self._meter.images = len(images)
        return images

    async def finish(self) -> None:
        """Settles the call and waits (bounded) for its usage row to commit; call before the answer goes out."""
        await self._meter.finish()

    async def withdraw(self, error: GatewayError) -> None:
        """Images whose caller gave up while their row was committed: recorded as `error`, refunded."""
        await self._meter.withdraw(error)

    def undelivered(self, error: GatewayError) -> None:
        """Images that were ready too late for their caller (its deadline passed): not charged."""
        self._meter.images = 0
        self._meter.fail(error)


class Pipeline:
    def __init__(self, gate: Gate, resolver: Resolver, router: Router, metering: Metering, clock: Clock) -> None:
        self._gate = gate
        self._resolver = resolver
        self._router = router
        self._metering = metering
        self._clock = clock
        # Calls admitted and not yet ended, for stop_streams.
        self._running: set[ChatRun] = set()

    def stop_streams(self) -> int:
        """Ends every call still running, and any admitted from now on, because the server is shutting down.

        Each ends with GatewayError(SERVICE_UNAVAILABLE, SHUTDOWN_MESSAGE):
        a stream that has begun writes it as its dialect's error frame and
        then the terminator; any other call fails with it. The usage row
        says 503 "server_shutdown", charged for what was delivered. Returns
        how many running calls were told to stop.
        """
        self._metering.shutting_down = True
        running = list(self._running)
        for run in running:
            run.stop()
        return len(running)

    def _meter(self, call: CallInfo, surface: Surface) -> CallMeter:
        """The call's meter: entered before anything is checked, so that every refusal is recorded."""
        return self._metering.open(
            request_id=call.request_id,
            client_request_id=call.client_request_id,
            surface=surface.name,
            status_of=surface.status,
        )

    async def _admit(
        self, meter: CallMeter, call: CallInfo, surface: Surface, permission: str, limit: Bucket
    ) -> Caller:
        """The call's key, checked, permitted and counted against the `limit` rate (inside its meter)."""
        caller = await self._gate.authenticate(call.metadata, surface.wording)
        meter.attribute(caller)
        self._gate.require(caller, permission)
        call.headers.extend(await self._gate.admit(caller, limit))
        return caller

    async def knows_key(self, call: CallInfo, surface: Surface) -> bool:
        """Whether the call's key authenticates: a cheap header check for a servicer to make before it
        reads a large body on its own. Nothing is counted or recorded; a call that fails it is refused
        (and recorded) by `chat` or `images` as usual, before they parse anything."""
        try:
            await self._gate.authenticate(call.metadata, surface.wording)
        except GatewayError:
            return False
        return True

    async def refuse(self, call: CallInfo, surface: Surface, error: GatewayError) -> NoReturn:
        """A model call the gateway cannot serve (embeddings, while no embedding model exists): its key is
        checked, permitted (chat.completions) and counted against the chat rate like any model call's, then
        `error` is raised and recorded as its usage row (charged nothing)."""
        async with self._meter(call, surface) as meter:
            await self._admit(meter, call, surface, "chat.completions", "chat")
            raise error
        raise error  # not reached: the meter records the error and lets it through

    @asynccontextmanager
    async def chat(
        self,
        call: CallInfo,
        surface: Surface,
        parse: Callable[[], ChatRequest],
        admitted: Callable[[Caller], Awaitable[None]] | None = None,
    ) -> AsyncIterator[ChatRun]:
        """Admits the call (raising GatewayError at once when it may not run) and yields it running.

        The request is parsed after the key is checked and counted: a caller
        learns nothing before authenticating, and a malformed request is
        recorded against its account like any other failure. `admitted`, when
        given, runs between the two with the caller (chat/send reads a
        conversation's history there, for `parse` to send).
        """
        async with self._meter(call, surface) as meter:
            caller = await self._admit(meter, call, surface, "chat.completions", "chat")
            if admitted is not None:
                await admitted(caller)
            try:
                request, prompt_tokens = await off_loop_if_large(call.size, lambda: _parse_and_count(parse))
            finally:
                if call.size > OFFLOAD_BYTES:
                    # The parsed body is garbage by now; without this its pages stay in the heap.
                    await asyncio.to_thread(release_memory)
            candidates = self._resolver.candidates(request, caller)
            if prompt_tokens > caller.plan.max_input_tokens:
                raise GatewayError(
                    Reason.INPUT_TOO_LARGE,
                    f"This request has {prompt_tokens} input tokens; the {caller.plan.name} plan allows at most "
                    f"{caller.plan.max_input_tokens} per request.",
                    param="messages",
                )
            candidates = _fitting(request, candidates, prompt_tokens)
            worst_tokens, worst_cost = 0, 0
            for model in candidates:
                prompt = prompt_tokens + (count_tokens(model.system_prompt) if model.system_prompt else 0)
                completion = output_cap(request, model) * request.n
                worst_tokens = max(worst_tokens, prompt + completion)
                worst_cost = max(worst_cost, model.cost(prompt, completion))
            await meter.admit(caller, candidates[0], prompt_tokens, worst_tokens, worst_cost, surface.wording)
            run = ChatRun(request, candidates, self._router, meter, int(self._clock.now()))
            if self._metering.shutting_down:
                run.stop()
            self._running.add(run)
            try:
                yield run
            finally:
                self._running.discard(run)

    @asynccontextmanager
    async def images(
        self, call: CallInfo, surface: Surface, parse: Callable[[], ImageRequest]
    ) -> AsyncIterator[ImagesRun]:
        """An image call: the same key check, permission (images.generations), the plan's image rate
        limit, credit hold and usage row as a chat call. The worst case held is every image at the
        dearest candidate's price (credits_per_image, plus its per-call and prompt prices)."""
        async with self._meter(call, surface) as meter:
            caller = await self._admit(meter, call, surface, "images.generations", "images")
            try:
                request = parse()
            except GatewayError as error:
                raise error.with_traceback(None) from None
            candidates = self._resolver.image_candidates(request.model, caller)
            prompt_tokens = count_tokens(request.prompt)
            worst_cost = max(model.cost(prompt_tokens, 0) + model.image_cost(request.n) for model in candidates)
            await meter.admit(caller, candidates[0], prompt_tokens, prompt_tokens, worst_cost, surface.wording)
            if self._metering.shutting_down:
                stopping = GatewayError(Reason.SERVICE_UNAVAILABLE, SHUTDOWN_MESSAGE, retry_after=1)
                meter.stopped(stopping)
                raise stopping
            yield ImagesRun(request, candidates, self._router, meter, int(self._clock.now()))


def _parse_and_count(parse: Callable[[], ChatRequest]) -> tuple[ChatRequest, int]:
    try:
        request = parse()
    except GatewayError as error:
        # Its traceback's frames hold the parsed body, which would then live until the cycle collector runs.
        raise error.with_traceback(None) from None
    return request, count_message_tokens(request.messages)


def _fitting(request: ChatRequest, candidates: tuple[ModelConfig, ...], prompt_tokens: int) -> tuple[ModelConfig, ...]:
    """The candidates whose context window holds the prompt and the asked-for completion."""

    def needed(model: ModelConfig) -> int:
        return prompt_tokens + (output_cap(request, model) if request.max_tokens is not None else 0)

    fitting = tuple(m for m in candidates if m.context_length is None or needed(m) <= m.context_length)
    if fitting:
        return fitting
    first = candidates[0]
    asked = (
        f" ({prompt_tokens} in the messages, {output_cap(request, first)} in the completion)"
        if request.max_tokens
        else ""
    )
    raise GatewayError(
        Reason.CONTEXT_LENGTH_EXCEEDED,
        f"This model's maximum context length is {first.context_length} tokens. However, you requested "
        f"{needed(first)} tokens{asked}. Please reduce the length of the messages or completion.",
        param="messages",
    )
