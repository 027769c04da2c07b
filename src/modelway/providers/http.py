"""The shared HTTP transport: the process's one aiohttp session, failure mapping, and the HTTP provider.

`HttpProvider` is every upstream that is not built in: it sends what its
translator asks for, feeds back what arrives (one JSON body, or SSE events
through the one SSE reader), and turns every transport failure into a
GatewayError the router understands (`UpstreamFailures`). Leaving the
response early (the caller went away, or an error) closes the upstream
connection, so the upstream stops generating at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from types import TracebackType

import aiohttp

from modelway.config import ProviderConfig
from modelway.core.offload import off_loop_if_large
from modelway.core.types import ChatRequest, GeneratedImage, ImageRequest, StreamEvent
from modelway.errors import GatewayError, Reason
from modelway.providers.base import HttpRequest, ImageTranslatorFactory, Translator, TranslatorFactory, Upstream
from modelway.providers.sse import SseDecoder

__all__ = ["HttpProvider", "Transport", "UpstreamFailures"]

# An upstream error answer (status, headers, body) as ours: each translator's `error`.
ErrorTranslator = Callable[[int, Mapping[str, str], bytes], GatewayError]
# An error body is read for its message, never without bound.
_MAX_ERROR_BODY = 64 * 1024


class Transport:
    """Owns the one ClientSession: a sized connection pool with keep-alive, opened and closed by the app."""

    def __init__(self, *, pool_size: int = 256, per_host: int = 128) -> None:
        self._pool_size = pool_size
        self._per_host = per_host
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the transport is not started")
        return self._session

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=self._per_host, keepalive_timeout=30)
        # No cookies: upstream APIs are stateless, and one caller's cookie must never reach another's call.
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class UpstreamFailures:
    """aiohttp and timeout failures in its block as GatewayErrors; all may pass on another attempt.

    A class, not a @contextmanager generator: every upstream call enters one, and a generator's
    machinery costs more than the mapping itself.
    """

    def __init__(self, provider: str) -> None:
        self._provider = provider

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        provider = self._provider
        if isinstance(exc, TimeoutError):
            raise GatewayError(
                Reason.UPSTREAM_TIMEOUT, f"The upstream provider {provider} timed out.", retryable=True
            ) from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise GatewayError(
                Reason.PROVIDER_ERROR, f"Could not connect to the upstream provider {provider}.", retryable=True
            ) from exc
        if isinstance(exc, (aiohttp.ClientError, ConnectionError)):
            raise GatewayError(
                Reason.PROVIDER_ERROR, f"The connection to the upstream provider {provider} failed.", retryable=True
            ) from exc


async def _error_body(response: aiohttp.ClientResponse) -> bytes:
    """The error body up to its end, or the first _MAX_ERROR_BODY bytes of it."""
    body = b""
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) >= _MAX_ERROR_BODY:
            return body[:_MAX_ERROR_BODY]
    return body


class HttpProvider:
    """A provider over HTTP: one wire format (the translator kinds) at one base URL."""

    def __init__(
        self,
        config: ProviderConfig,
        translator: TranslatorFactory,
        transport: Transport,
        images: ImageTranslatorFactory | None = None,
    ) -> None:
        self._config = config
        self._translator = translator
        self._images = images
        self._transport = transport

    def _upstream(self, model: str) -> Upstream:
        config = self._config
        return Upstream(config.base_url, model, config.api_key, config.headers)

    async def _open(self, http: HttpRequest, error: ErrorTranslator, timeout: float) -> aiohttp.ClientResponse:
        """The upstream's answer once its status says success, for the caller to read and release
        (`async with`); its error, translated, otherwise. Call it inside `UpstreamFailures`.
        (A coroutine, not an async context manager around the request: one fewer generator per call.)"""
        config = self._config
        limits = aiohttp.ClientTimeout(
            total=max(0.001, min(config.timeout_seconds, timeout)),
            sock_connect=config.connect_timeout_seconds,
            # A whole JSON answer arrives only when the model has finished thinking: only the
            # attempt's total bounds it. A stream must start, and keep, talking.
            sock_read=config.first_byte_timeout_seconds if http.streaming else None,
        )
        response = await self._transport.session.post(
            http.url, data=http.body, headers=dict(http.headers), timeout=limits, allow_redirects=False
        )
        if response.status >= 400:
            async with response:
                raise error(response.status, response.headers, await _error_body(response))
        return response

    async def complete_chat(
        self, request: ChatRequest, upstream_model: str, *, timeout: float
    ) -> Sequence[StreamEvent]:
        translator = self._translator(request, self._upstream(upstream_model))
        return await self._whole(translator, translator.request(), timeout)

    async def _whole(self, translator: Translator, http: HttpRequest, timeout: float) -> Sequence[StreamEvent]:
        with UpstreamFailures(self._config.name):
            async with await self._open(http, translator.error, timeout) as response:
                body = await response.read()
        return translator.json_body(body)

    async def stream_chat(
        self, request: ChatRequest, upstream_model: str, *, timeout: float
    ) -> AsyncGenerator[StreamEvent, None]:
        translator = self._translator(request, self._upstream(upstream_model))
        http = translator.request()
        if not http.streaming:
            for event in await self._whole(translator, http, timeout):
                yield event
            return
        with UpstreamFailures(self._config.name):
            async with await self._open(http, translator.error, timeout) as response:
                decoder = SseDecoder()
                async for chunk in response.content.iter_any():
                    for sse in decoder.feed(chunk):
                        for event in translator.sse_event(sse):
                            yield event
                for sse in decoder.close():
                    for event in translator.sse_event(sse):
                        yield event
                for event in translator.end():
                    yield event

    async def generate_images(
        self, request: ImageRequest, upstream_model: str, *, timeout: float
    ) -> tuple[GeneratedImage, ...]:
        if self._images is None:
            raise GatewayError(
                Reason.INVALID_VALUE, f"The model `{request.model}` cannot generate images.", param="model"
            )
        translator = self._images(request, self._upstream(upstream_model))
        with UpstreamFailures(self._config.name):
            async with await self._open(translator.request(), translator.error, timeout) as response:
                body = await response.read()
        # Base64 images make answers of megabytes: those are parsed in a thread, the loop keeps its turns.
        return await off_loop_if_large(len(body), lambda: translator.json_body(body))
