"""The contracts between the router, the shared HTTP transport and each upstream wire format.

A `ChatProvider` streams one chat completion for the router. The built-in
echo provider is one directly; every HTTP upstream is an `HttpProvider`
(providers/http.py) driving a `Translator`, created per request, that does no
I/O and knows one wire format:

    request()                  our ChatRequest -> the upstream HTTP request
    json_body(bytes)           a whole JSON answer -> canonical events
    sse_event(SseEvent)        one upstream SSE event -> canonical events
    end()                      the stream closed -> last events (Usage); raises if it was cut short
    error(status, headers, b)  an upstream error answer -> GatewayError

Canonical events are core.types.ChoiceDelta and Usage. A translator raises
GatewayError for an error the upstream reports inside a stream.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from modelway.core.types import ChatRequest, GeneratedImage, ImageRequest, StreamEvent
from modelway.errors import GatewayError, Reason
from modelway.frozen import slot_init

__all__ = [
    "ChatProvider",
    "HttpRequest",
    "ImageProvider",
    "ImageTranslator",
    "ImageTranslatorFactory",
    "MalformedAnswer",
    "SseEvent",
    "Translator",
    "TranslatorFactory",
    "Upstream",
    "account_error",
    "clip",
    "malformed",
    "retry_after_seconds",
    "status_error",
]


class ChatProvider(Protocol):
    """Streams one chat completion.

    Yields ChoiceDelta events in order, then at most one Usage (the
    upstream's own counts, when it gives them). Raises GatewayError on
    failure; `retryable` on it tells the router whether another attempt may
    help. `upstream_model` is the provider's own name for the model; `timeout`
    is what is left of the call's deadline, in seconds.
    """

    def stream_chat(
        self, request: ChatRequest, upstream_model: str, *, timeout: float
    ) -> AsyncGenerator[StreamEvent, None]: ...

    async def complete_chat(
        self, request: ChatRequest, upstream_model: str, *, timeout: float
    ) -> Sequence[StreamEvent]:
        """Every event `stream_chat` would yield, at once, for a request that is not streamed
        (`request.stream` false): its answer comes whole (one JSON body) and is delivered whole."""
        ...


class ImageProvider(Protocol):
    """Generates images in one go (no stream): the images in order, or GatewayError as ChatProvider does."""

    async def generate_images(
        self, request: ImageRequest, upstream_model: str, *, timeout: float
    ) -> tuple[GeneratedImage, ...]: ...


@slot_init
@dataclass(frozen=True, slots=True)
class Upstream:
    """Where one attempt goes: the provider's endpoint and secret, and the model's name there."""

    base_url: str  # without a trailing slash
    model: str
    api_key: str = field(default="", repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)


@slot_init
@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One upstream HTTP call (always a POST of a JSON body)."""

    url: str
    headers: Mapping[str, str] = field(repr=False)  # carries the upstream secret
    body: bytes = field(repr=False)
    streaming: bool  # the answer is an SSE stream, not one JSON body


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: `data` lines joined with "\\n"; `event` is "" when the event has no name."""

    data: str
    event: str = ""
    id: str = ""


class Translator(Protocol):
    def request(self) -> HttpRequest: ...

    def json_body(self, body: bytes) -> Sequence[StreamEvent]: ...

    def sse_event(self, event: SseEvent) -> Sequence[StreamEvent]: ...

    def end(self) -> Sequence[StreamEvent]: ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError: ...


# A translator kind: builds the translator for one request to one upstream.
TranslatorFactory = Callable[[ChatRequest, Upstream], Translator]


class ImageTranslator(Protocol):
    """An image generation request out, the images (or an error) in; one JSON answer, no stream."""

    def request(self) -> HttpRequest: ...

    def json_body(self, body: bytes) -> tuple[GeneratedImage, ...]: ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError: ...


ImageTranslatorFactory = Callable[[ImageRequest, Upstream], ImageTranslator]


# An upstream's words are shown to callers, never without bound.
_MAX_UPSTREAM_TEXT = 1000


def clip(text: str) -> str:
    """An upstream's message, trimmed and cut to a length fit for an error body."""
    text = text.strip()
    return text if len(text) <= _MAX_UPSTREAM_TEXT else text[:_MAX_UPSTREAM_TEXT] + "..."


class MalformedAnswer(GatewayError):
    """A PROVIDER_ERROR for an upstream that answered, but not as its wire format promises.

    A chat attempt retries it (a stream cut or garbled may do better next time). An image call does
    not, and its breaker does not count it: the upstream was up, every attempt would make (and bill
    the gateway for) the images again, and a caller could trip the breaker for everyone by asking
    for something that comes back in another form.
    """


def malformed(detail: str = "") -> MalformedAnswer:
    """An upstream answer that is not what its wire format promises: another attempt may do better."""
    suffix = f" ({detail})" if detail else ""
    return MalformedAnswer(
        Reason.PROVIDER_ERROR, f"The upstream provider sent a malformed answer{suffix}.", retryable=True
    )


# The longest upstream Retry-After taken at its word, in seconds.
MAX_RETRY_AFTER = 3600.0


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The upstream's Retry-After (or retry-after-ms) in seconds; None when absent or not a number.

    HTTP dates are not parsed: model APIs send seconds.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            seconds = float(lowered["retry-after-ms"]) / 1000
        elif "retry-after" in lowered:
            seconds = float(lowered["retry-after"])
        else:
            return None
    except ValueError:
        return None
    # An upstream's word, bounded: "inf", "nan" or a year are not waits anyone means.
    return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None


def account_error(status: int) -> GatewayError:
    """The upstream refuses the gateway's own account (credentials, billing): the operator's
    problem, shown without the upstream's words (they may quote the key), worth trying on
    another provider but not again on this one."""
    return GatewayError(
        Reason.PROVIDER_ERROR, f"The upstream provider refused the gateway's credentials or account ({status})."
    )


def status_error(
    status: int, message: str, headers: Mapping[str, str], *, context_length: bool = False, account: bool = False
) -> GatewayError:
    """An upstream's HTTP error answer as ours; `message` is the upstream's own words.

    The caller's fault (400, 413, 422) comes back as 400 with the upstream's
    message and is never retried; the context window is named as such when
    the translator recognised it. A 404 means a wrong upstream model or URL:
    a 502 another provider may fix. 429, 529, 408, 409 and 5xx may pass with
    another attempt. 401, 402, 403, and whatever the translator recognised as
    an account problem (`account`: OpenAI's 429 insufficient_quota), are
    `account_error`s.
    """
    if account or status in (401, 402, 403):
        return account_error(status)
    text = clip(message) or f"HTTP {status}"
    retry_after = retry_after_seconds(headers)
    if status == 404:
        # A wrong upstream_model or base_url: the operator's to fix; another provider may serve.
        return GatewayError(Reason.PROVIDER_ERROR, f"The upstream provider does not know this model or path: {text}")
    if status in (400, 413, 422):
        reason = Reason.CONTEXT_LENGTH_EXCEEDED if context_length else Reason.UPSTREAM_REJECTED
        return GatewayError(reason, text, param="messages" if context_length else None)
    if status in (429, 529):
        what = "rate limiting" if status == 429 else "overloaded"
        return GatewayError(
            Reason.UPSTREAM_OVERLOADED,
            f"The upstream provider is {what}: {text}",
            retry_after=retry_after,
            retryable=True,
        )
    if status in (408, 504):
        return GatewayError(Reason.UPSTREAM_TIMEOUT, f"The upstream provider timed out: {text}", retryable=True)
    retryable = status == 409 or status >= 500
    return GatewayError(
        Reason.PROVIDER_ERROR,
        f"The upstream provider failed ({status}): {text}",
        retry_after=retry_after,
        retryable=retryable,
    )
