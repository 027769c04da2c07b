"""A scripted upstream: a small aiohttp server on 127.0.0.1, on its own thread, whose replies each test sets.

A test queues replies with `script(...)`; each request takes the next one,
and when none is queued the kind's `default` handler answers (a plausible
reply in that provider's wire format). Every request is recorded, and every
connection the client closed before the reply ended is counted, with the
moment it was seen, so disconnect propagation can be measured. `active`
counts replies still being written and `open_connections` the client's
connections (idle keep-alive ones included), so a test can see the client's
pool return to idle.

Faults a reply can carry: any status (Json), a stream cut (FIN) or reset
(RST) after some items (Sse cut/reset), a connection dropped (Cut) or reset
(Reset) before any answer, no answer at all (Hang), a slow trickle (Sse gap,
Trickle), any bytes in place of JSON or SSE (Json body bytes, Sse bytes
items) and any content type (Json/Sse/Trickle content_type).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["Cut", "FakeUpstream", "Hang", "Json", "Received", "Reply", "Reset", "Sse", "Trickle"]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True)
class Json:
    """A JSON answer (any status)."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the headers
    content_type: str = "application/json"


@dataclass(frozen=True)
class Trickle:
    """A body written in `pieces` parts with `gap` seconds between them; `cut` (with `reset`: by RST)
    drops the connection after that many parts."""

    body: bytes
    pieces: int = 10
    gap: float = 0.05
    status: int = 200
    content_type: str = "application/json"
    cut: int | None = None
    reset: bool = False


@dataclass(frozen=True)
class Sse:
    """An event stream: each item is written as is (bytes) or framed as `data: item\\n\\n` (str).

    `delay` passes before the headers, `gap` between items; `cut` drops the
    connection after that many items without ending the stream properly
    (closing it, or with `reset` resetting it: RST instead of FIN).
    """

    events: Sequence[str | bytes]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    gap: float = 0.0
    cut: int | None = None
    content_type: str = "text/event-stream"
    reset: bool = False


@dataclass(frozen=True)
class Hang:
    """Accepts the request and answers nothing for `seconds`."""

    seconds: float = 3600.0


@dataclass(frozen=True)
class Cut:
    """Drops the connection without any answer."""


@dataclass(frozen=True)
class Reset:
    """Resets the connection (RST) without any answer."""


Reply = Json | Sse | Hang | Cut | Reset | Trickle
Handler = Callable[[Received], Reply]


class FakeUpstream:
    def __init__(self, default: Handler) -> None:
        self.default = default
        self.requests: list[Received] = []
        self.disconnects: list[float] = []  # monotonic times a client left mid-reply
        self._queue: list[Reply | Handler] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstream", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.active = 0  # replies being written now

    @property
    def open_connections(self) -> int:
        """Connections the client holds open to this upstream now, idle keep-alive ones included."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def script(self, *replies: Reply | Handler) -> None:
        """The next requests get these replies, in order; then the default handler answers again."""
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.disconnects.clear()

    def _call(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)  # type: ignore[arg-type]

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.read(),
        )
        with self._lock:
            self.requests.append(received)
            reply = self._queue.pop(0) if self._queue else self.default
        if callable(reply):
            reply = reply(received)
        self.active += 1
        try:
            return await self._reply(request, reply)
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects.append(time.monotonic())
            raise
        finally:
            self.active -= 1

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if isinstance(reply, Hang):
            await asyncio.sleep(reply.seconds)
            return web.Response(status=504)
        if isinstance(reply, (Cut, Reset)):
            _drop(request, reset=isinstance(reply, Reset))
            raise ConnectionResetError("cut by the script")
        if isinstance(reply, Json):
            await asyncio.sleep(reply.delay)
            body = reply.body if isinstance(reply.body, bytes) else orjson.dumps(reply.body)
            response = web.Response(status=reply.status, body=body, headers=reply.headers)
            response.content_type = reply.content_type
            return response
        if isinstance(reply, Trickle):
            return await self._trickle(request, reply)
        await asyncio.sleep(reply.delay)
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.content_type = reply.content_type
        await response.prepare(request)
        for index, item in enumerate(reply.events):
            if reply.cut is not None and index >= reply.cut:
                _drop(request, reset=reply.reset)
                return response
            if index and reply.gap:
                await asyncio.sleep(reply.gap)
            await response.write(item if isinstance(item, bytes) else f"data: {item}\n\n".encode())
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _trickle(self, request: web.Request, reply: Trickle) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status)
        response.content_type = reply.content_type
        await response.prepare(request)
        size = -(-len(reply.body) // reply.pieces)
        for index in range(reply.pieces):
            if reply.cut is not None and index >= reply.cut:
                _drop(request, reset=reply.reset)
                return response
            if index:
                await asyncio.sleep(reply.gap)
            await response.write(reply.body[index * size : (index + 1) * size])
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def _drop(request: web.Request, *, reset: bool) -> None:
    """Closes the request's connection: FIN, or with `reset` an RST (SO_LINGER 0, then abort)."""
    transport = request.transport
    assert transport is not None
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
