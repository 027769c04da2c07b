"""ConversationsRestService (POST /api/v1/chat/send, GET /api/v1/chat/conversations[/{id}]) and
ConversationsService, its typed gRPC twin: admit -> parse -> history -> call upstream -> store the exchange -> render.

A follow-up sends the conversation's stored messages upstream before the new
one. The body is parsed and the history read once the pipeline has admitted
the call (key, permission, rate limit), for that key's account, so a bad key, an unknown
model or another account's conversation is refused and recorded like any
other failure. Exchanges on one conversation run one at a time, from reading
its history to storing the answer: concurrent follow-ups each see the ones
before them. That lock is per process; across processes (`--workers N`) the
store keeps the order: an exchange is stored only if the conversation's last
message is still the one its history ended with, and a follow-up that lost
that race is refused (409, not stored, not charged) instead of being stored
out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import httpbody_pb2

from modelway.config import MICRO
from modelway.core.access import Gate
from modelway.core.catalog import PAGE_SIZE, Catalog, Page
from modelway.core.clock import Clock
from modelway.core.directory import Caller
from modelway.core.offload import off_loop_if_large
from modelway.core.pipeline import ChatRun, Pipeline
from modelway.core.types import ChatRequest, Message, TextPart
from modelway.errors import GatewayError, Reason, clip
from modelway.services._rpc import RpcCall, unary
from modelway.services.catalog import page_proto
from modelway.services.delivery import complete_in_time, deadline_error, deliver
from modelway.store import ConversationChanged, Store
from modelway.store.records import ChatMessageRecord, ConversationRecord
from modelway.surfaces.catalog import (
    CHAT_SEND,
    SendRequest,
    conversation_id_of,
    conversation_json,
    envelope,
    message_json,
    page_json,
    page_of,
    parse_send_body,
    parse_send_request,
    unknown_conversation,
    unknown_model,
)
from modelway.v1 import conversations_pb2, conversations_pb2_grpc
from modelway.v1.rest import conversations_pb2 as conversations_rest_pb2
from modelway.v1.rest import conversations_pb2_grpc as conversations_rest_pb2_grpc

__all__ = ["ChatSend", "ConversationsRestServicer", "ConversationsServicer", "Sent", "Turns"]

Context = grpc.aio.ServicerContext[Any, Any]
_JSON = "application/json"
_PERMISSION = "chat.completions"


@dataclass(frozen=True, slots=True)
class Sent:
    """One chat/send exchange, stored."""

    conversation_id: int
    assistant_message_id: int
    response: str
    message: str
    tokens: int
    latency_ms: int
    cost: int  # micro-credits charged


class Turns:
    """One asyncio.Lock per key while anyone holds or waits for it (forgotten after, so idle
    conversations cost nothing)."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, int], tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        """How many keys someone holds or waits for: what the map keeps."""
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, int]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class ChatSend:
    """The flow both twins share, and the account-scoped reads of stored conversations."""

    def __init__(self, pipeline: Pipeline, gate: Gate, catalog: Catalog, store: Store, clock: Clock) -> None:
        self._pipeline = pipeline
        self._gate = gate
        self._catalog = catalog
        self._store = store
        self._clock = clock
        self._turns = Turns()

    async def send(self, call: RpcCall, parse: Callable[[], SendRequest]) -> Sent:
        started = time.monotonic()
        # Set once the pipeline has admitted the call: whose it is, its body, and the conversation so far.
        caller: Caller | None = None
        parsed: SendRequest | GatewayError = GatewayError(Reason.INTERNAL, "The request was not read.")
        history: tuple[ChatMessageRecord, ...] | None = ()

        async with contextlib.AsyncExitStack() as held:

            async def admitted(admitted_caller: Caller) -> None:
                nonlocal caller, parsed, history
                caller = admitted_caller
                # The body is read only now, for a key that authenticates (a caller without one costs no
                # parse work), and a large one in a thread, so the loop keeps its turns.
                try:
                    parsed = await off_loop_if_large(call.size, parse)
                except GatewayError as error:
                    # Its traceback's frames hold the parsed body, which would live on with it.
                    parsed = error.with_traceback(None)
                if not isinstance(parsed, SendRequest) or parsed.conversation_id is None:
                    return
                # One exchange at a time per conversation, from reading its history to storing the answer:
                # a follow-up sent while another runs waits for it, and then sees it.
                await held.enter_async_context(self._turns.hold((caller.account.id, parsed.conversation_id)))
                found = await self._store.conversation(caller.account.id, parsed.conversation_id)
                history = None if found is None else tuple(await self._store.conversation_messages(found.id))

            def request() -> ChatRequest:
                if isinstance(parsed, GatewayError):
                    raise parsed
                model = self._catalog.find(parsed.model)
                if model is None:
                    raise unknown_model()
                if model.type != "chat":
                    raise GatewayError(
                        Reason.INVALID_VALUE,
                        f"The model {clip(parsed.model)!r} is an {model.type} model; chat/send needs a chat model",
                        param="model_id",
                    )
                if history is None:
                    raise unknown_conversation()
                earlier = tuple(
                    Message(role="assistant" if m.role == "assistant" else "user", content=(TextPart(m.content),))
                    for m in history
                )
                return ChatRequest(
                    model=model.id, messages=(*earlier, Message(role="user", content=(TextPart(parsed.message),)))
                )

            async with self._pipeline.chat(call, CHAT_SEND, request, admitted) as run:
                completion = await complete_in_time(call, run)
                latency_ms = round((time.monotonic() - started) * 1000)
                if isinstance(parsed, GatewayError) or caller is None:  # request() refused these already
                    raise GatewayError(Reason.INTERNAL, "The server had an error while processing your request.")
                answer = (completion.choices[0].content or "") if completion.choices else ""
                # complete_in_time has just checked that the answer is in time (nothing was awaited since).
                saving = self._store.save_exchange(
                    caller.account.id,
                    parsed.conversation_id,
                    self._catalog.resolve(run.model).slug,
                    parsed.message,
                    answer,
                    completion.usage.total_tokens,
                    self._clock.now(),
                    # The message the answer follows: stored only while it is still the last one.
                    after=None if parsed.conversation_id is None else (history[-1].id if history else 0),
                )
                saved = await self._keep(call, run, saving)
                return Sent(
                    conversation_id=saved[0],
                    assistant_message_id=saved[1],
                    response=answer,
                    message=parsed.message,
                    tokens=completion.usage.total_tokens,
                    latency_ms=latency_ms,
                    cost=run.credits_used,
                )
        raise AssertionError("not reached: the block returns or raises")  # for mypy

    async def _keep(self, call: RpcCall, run: ChatRun, saving: Awaitable[tuple[int, int] | None]) -> tuple[int, int]:
        """Stores the exchange and delivers the answer (its row committed) as one step, shielded from
        cancellation, so neither is left half done. An answer that does not reach its caller after all
        (its deadline passed meanwhile, or it went away) is refunded, and the stored exchange is taken
        back with it: the conversation never holds an answer nobody paid for."""

        async def store_and_deliver() -> tuple[int, int] | GatewayError:
            try:
                saved = await saving
            except ConversationChanged as changed:
                return changed.with_traceback(None)
            if saved is None:
                # The conversation is not the account's (any more).
                return unknown_conversation()
            try:
                await deliver(call, run)
            except BaseException:
                await self._store.forget_exchange(*saved)
                raise
            return saved

        keeping = asyncio.ensure_future(store_and_deliver())
        try:
            saved = await asyncio.shield(keeping)
        except asyncio.CancelledError:
            # The handler is cancelled (grpc does so at the caller's deadline or when it leaves): the
            # write and the row finish in their task, then both are taken back.
            try:
                kept = await keeping
            except GatewayError:
                kept = None  # withdrawn and forgotten by store_and_deliver already
            if isinstance(kept, tuple):
                await run.withdraw(deadline_error())
                await self._store.forget_exchange(*kept)
            raise
        if isinstance(saved, GatewayError):
            # Not stored, so not delivered and not charged.
            run.undelivered(saved)
            raise saved
        return saved

    async def conversations(self, call: RpcCall, page: int) -> tuple[list[ConversationRecord], Page]:
        caller = await self._gate.authorize(call.metadata, _PERMISSION, CHAT_SEND.wording)
        where = Page(page, PAGE_SIZE, 0)
        found, total = await self._store.conversations(caller.account.id, where.offset, PAGE_SIZE)
        return found, Page(page, PAGE_SIZE, total)

    async def conversation(
        self, call: RpcCall, conversation_id: int
    ) -> tuple[ConversationRecord, list[ChatMessageRecord]]:
        caller = await self._gate.authorize(call.metadata, _PERMISSION, CHAT_SEND.wording)
        found = await self._store.conversation(caller.account.id, conversation_id)
        if found is None:
            raise unknown_conversation()
        return found, await self._store.conversation_messages(found.id)


def _credits(micro: int) -> float:
    return round(micro / MICRO, 6)


def _body(data: Any) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=_JSON, data=envelope(data))


class ConversationsRestServicer(conversations_rest_pb2_grpc.ConversationsRestServiceServicer):
    def __init__(self, chat: ChatSend) -> None:
        self._chat = chat

    @unary(CHAT_SEND.error_response)
    async def SendMessage(
        self, request: httpbody_pb2.HttpBody, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        sent = await self._chat.send(call, lambda: parse_send_body(request.data))
        return _body(
            {
                "conversation_id": sent.conversation_id,
                "assistant_message_id": sent.assistant_message_id,
                "response": sent.response,
                "message": sent.message,
                "usage": {"tokens": sent.tokens, "latency_ms": sent.latency_ms, "cost": _credits(sent.cost)},
            }
        )

    @unary(CHAT_SEND.error_response)
    async def ListConversations(
        self, request: conversations_rest_pb2.ListConversationsQuery, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        page = page_of(request.page)
        found, where = await self._chat.conversations(call, page)
        return _body({"conversations": [conversation_json(c) for c in found], "pagination": page_json(where)})

    @unary(CHAT_SEND.error_response)
    async def GetConversation(
        self, request: conversations_rest_pb2.GetConversationQuery, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        found, messages = await self._chat.conversation(call, conversation_id_of(request.id))
        return _body({**conversation_json(found), "messages": [message_json(m) for m in messages]})


def _conversation_proto(conversation: ConversationRecord) -> conversations_pb2.Conversation:
    return conversations_pb2.Conversation(
        id=conversation.id,
        title=conversation.title,
        model=conversation.model,
        message_count=conversation.message_count,
        created_at=int(conversation.created_at),
        updated_at=int(conversation.updated_at),
    )


def _send_request(request: conversations_pb2.SendMessageRequest) -> SendRequest:
    return parse_send_request(
        {
            "model_id": request.model_id,
            "message": request.message,
            "conversation_id": request.conversation_id or None,
        }
    )


class ConversationsServicer(conversations_pb2_grpc.ConversationsServiceServicer):
    def __init__(self, chat: ChatSend) -> None:
        self._chat = chat

    @unary(CHAT_SEND.error_response)
    async def SendMessage(
        self, request: conversations_pb2.SendMessageRequest, context: Context, call: RpcCall
    ) -> conversations_pb2.SendMessageResponse:
        sent = await self._chat.send(call, lambda: _send_request(request))
        return conversations_pb2.SendMessageResponse(
            conversation_id=sent.conversation_id,
            assistant_message_id=sent.assistant_message_id,
            response=sent.response,
            message=sent.message,
            usage=conversations_pb2.ChatSendUsage(
                tokens=sent.tokens, latency_ms=sent.latency_ms, cost=_credits(sent.cost)
            ),
        )

    @unary(CHAT_SEND.error_response)
    async def ListConversations(
        self, request: conversations_pb2.ListConversationsRequest, context: Context, call: RpcCall
    ) -> conversations_pb2.ListConversationsResponse:
        found, where = await self._chat.conversations(call, page_of(str(request.page or 1)))
        return conversations_pb2.ListConversationsResponse(
            conversations=[_conversation_proto(c) for c in found], page=page_proto(where)
        )

    @unary(CHAT_SEND.error_response)
    async def GetConversation(
        self, request: conversations_pb2.GetConversationRequest, context: Context, call: RpcCall
    ) -> conversations_pb2.GetConversationResponse:
        if request.id < 1:
            raise unknown_conversation()
        found, messages = await self._chat.conversation(call, request.id)
        return conversations_pb2.GetConversationResponse(
            conversation=_conversation_proto(found),
            messages=[
                conversations_pb2.ConversationMessage(
                    id=m.id,
                    role=m.role,
                    content=m.content,
                    model=m.model,
                    tokens=m.tokens,
                    created_at=int(m.created_at),
                )
                for m in messages
            ],
        )
