"""The floor of this architecture: a grpc.aio servicer that only relays a chat call to the upstream.

It serves the same RPC as modelway's OpenAI chat endpoint
(modelway.v1.rest.ChatRestService/CreateChatCompletion) behind the same
rendered Envoy configuration, so a REST call crosses exactly the Envoy
modelway's does. Per call it reads the model (to pick the upstream), posts
the body unchanged over one shared aiohttp session, and relays the answer:
JSON as one google.api.HttpBody, an event stream as one HttpBody per
upstream event. It runs on the event loop modelway's server runs on
(uvloop's; see `modelway.app.loop_factory`). No auth, limits, credits or usage:
whatever modelway costs above this is the price of its pipeline.

    python -m bench.floor --port 50099 --route bench-json=http://127.0.0.1:18000/json/v1 ...
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
import grpc
import orjson
import uvloop
from google.api import httpbody_pb2

from modelway.v1.rest import chat_pb2_grpc as chat_rest_pb2_grpc

__all__ = ["FloorServicer", "main", "serve", "split_events"]

Context = grpc.aio.ServicerContext[Any, Any]
_EVENT_END = b"\n\n"


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events (each with its blank line) in `buffer`, and the rest that waits for more bytes."""
    events = []
    start = 0
    while (end := buffer.find(_EVENT_END, start)) != -1:
        events.append(buffer[start : end + 2])
        start = end + 2
    return events, buffer[start:]


class FloorServicer(chat_rest_pb2_grpc.ChatRestServiceServicer):
    def __init__(self, session: aiohttp.ClientSession, routes: Mapping[str, str]) -> None:
        self._session = session
        # Model -> the upstream's chat completions URL.
        self._urls = {model: base + "/chat/completions" for model, base in routes.items()}

    async def CreateChatCompletion(
        self, request: httpbody_pb2.HttpBody, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        url = self._urls.get(orjson.loads(request.data).get("model"))
        if url is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown model")
        headers = {"Content-Type": "application/json"}
        async with self._session.post(url, data=request.data, headers=headers) as response:
            content_type = response.headers.get("Content-Type", "application/json")
            if not content_type.startswith("text/event-stream"):
                yield httpbody_pb2.HttpBody(content_type=content_type, data=await response.read())
                return
            rest = b""
            async for data in response.content.iter_any():
                events, rest = split_events(rest + data)
                for event in events:
                    yield httpbody_pb2.HttpBody(content_type=content_type, data=event)
            if rest:
                yield httpbody_pb2.HttpBody(content_type=content_type, data=rest)


async def serve(port: int, routes: Mapping[str, str]) -> None:
    """Serves on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=128, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        chat_rest_pb2_grpc.add_ChatRestServiceServicer_to_server(FloorServicer(session, routes), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        await server.stop(1)


def _route(text: str) -> tuple[str, str]:
    model, sep, url = text.partition("=")
    if not sep or not url.startswith("http"):
        raise argparse.ArgumentTypeError(f"expected MODEL=URL, got {text!r}")
    return model, url.rstrip("/")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the gRPC port (Envoy's modelway cluster)")
    parser.add_argument("--route", type=_route, action="append", required=True, help="MODEL=upstream base URL")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.port, dict(args.route)))


if __name__ == "__main__":
    main()
