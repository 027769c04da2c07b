"""The gateway's one error type, and the reasons it can carry.

    GatewayError(reason, message, param=..., retry_after=..., headers=...)

Every failure a caller sees is a GatewayError whose `reason` is one member of
`Reason`. A reason fixes the HTTP status every surface starts from and the
gRPC status native callers get (REASONS below); each REST dialect maps a
reason to its own body in one table of its own (surfaces/), and
services/_rpc.py is the one place that turns an error into a gRPC status.

    400 bad request        INVALID_BODY INVALID_VALUE INVALID_TYPE MISSING_REQUIRED_PARAMETER EMPTY_ARRAY
                           ARRAY_TOO_LONG NESTED_TOO_DEEPLY
                           INTEGER_BELOW_MIN INTEGER_ABOVE_MAX DECIMAL_BELOW_MIN DECIMAL_ABOVE_MAX
                           INPUT_TOO_LARGE CONTEXT_LENGTH_EXCEEDED INVALID_DATE_RANGE UPSTREAM_REJECTED
                           STRING_ABOVE_MAX_LENGTH EMPTY_MESSAGE
    401 who are you        MISSING_API_KEY INVALID_API_KEY API_KEY_DISABLED API_KEY_EXPIRED
    402 pay first          INSUFFICIENT_CREDITS
    403 not for you        PERMISSION_DENIED MODEL_NOT_ALLOWED KEY_LIMIT_REACHED
    404 no such thing      NOT_FOUND MODEL_NOT_FOUND API_KEY_NOT_FOUND
    409 changed meanwhile  CONVERSATION_CHANGED
    429 slow down          RATE_LIMITED GLOBAL_RATE_LIMITED BUDGET_EXCEEDED
    500 our bug            INTERNAL
    501 not here yet       NOT_IMPLEMENTED
    502 upstream failed    PROVIDER_ERROR
    503 try again later    SERVICE_UNAVAILABLE UPSTREAM_OVERLOADED STORE_UNAVAILABLE SHARED_STATE_UNAVAILABLE
    504 too late           UPSTREAM_TIMEOUT DEADLINE_EXCEEDED

Messages may quote what the caller sent, but only through `clip`: a quoted
value is at most CLIP_CHARS characters, so an error (and the gRPC trailers and
HTTP headers that carry it) stays small whatever the caller sends.

`retryable` says whether the router may try the call again (on the same or
another upstream); it is about upstream failures, never about the caller's.
"""

from __future__ import annotations

import enum
import logging
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import grpc

__all__ = ["CLIP_CHARS", "REASONS", "GatewayError", "Reason", "ReasonInfo", "as_gateway_error", "clip"]

log = logging.getLogger(__name__)


class Reason(enum.StrEnum):
    INVALID_BODY = "invalid_body"
    INVALID_VALUE = "invalid_value"
    INVALID_TYPE = "invalid_type"
    MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
    EMPTY_ARRAY = "empty_array"
    ARRAY_TOO_LONG = "array_above_max_length"
    NESTED_TOO_DEEPLY = "nested_too_deeply"
    INTEGER_BELOW_MIN = "integer_below_min_value"
    INTEGER_ABOVE_MAX = "integer_above_max_value"
    DECIMAL_BELOW_MIN = "decimal_below_min_value"
    DECIMAL_ABOVE_MAX = "decimal_above_max_value"
    INPUT_TOO_LARGE = "input_too_large"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    INVALID_DATE_RANGE = "invalid_date_range"
    UPSTREAM_REJECTED = "upstream_rejected"
    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    API_KEY_DISABLED = "api_key_disabled"
    API_KEY_EXPIRED = "api_key_expired"
    INSUFFICIENT_CREDITS = "insufficient_quota"
    PERMISSION_DENIED = "insufficient_permissions"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    KEY_LIMIT_REACHED = "key_limit_reached"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    API_KEY_NOT_FOUND = "api_key_not_found"
    RATE_LIMITED = "rate_limit_exceeded"
    GLOBAL_RATE_LIMITED = "global_rate_limit_exceeded"
    BUDGET_EXCEEDED = "daily_token_budget_exceeded"
    INTERNAL = "internal_error"
    NOT_IMPLEMENTED = "not_implemented"
    PROVIDER_ERROR = "provider_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    UPSTREAM_OVERLOADED = "upstream_overloaded"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    # The caller's own deadline passed before its answer could be delivered.
    DEADLINE_EXCEEDED = "deadline_exceeded"
    # A string parameter longer than the API allows (an image prompt over 4,000 characters).
    STRING_ABOVE_MAX_LENGTH = "string_above_max_length"
    # A message with no text where the API needs some (chat/send's "Message cannot be empty").
    EMPTY_MESSAGE = "empty_message"
    # The store (PostgreSQL) is unreachable, or too many usage rows wait for it: try again shortly.
    STORE_UNAVAILABLE = "store_unavailable"
    # The shared limits, budgets and balances (Redis) cannot be reached or are being rebuilt: the
    # call is refused (fail closed) rather than admitted unmetered.
    SHARED_STATE_UNAVAILABLE = "shared_state_unavailable"
    # Another message to the conversation was stored (by another server process) after this one's
    # history was read: its answer, built on the conversation as it was, is not stored or charged.
    CONVERSATION_CHANGED = "conversation_changed"


@dataclass(frozen=True, slots=True)
class ReasonInfo:
    http_status: int
    grpc_code: grpc.StatusCode


# The gRPC status native callers get for each HTTP status.
_GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    402: grpc.StatusCode.RESOURCE_EXHAUSTED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    # Google's mapping of 409: a concurrency conflict the caller resolves by trying again.
    409: grpc.StatusCode.ABORTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_STATUS: dict[int, tuple[Reason, ...]] = {
    400: (
        Reason.INVALID_BODY,
        Reason.INVALID_VALUE,
        Reason.INVALID_TYPE,
        Reason.MISSING_REQUIRED_PARAMETER,
        Reason.EMPTY_ARRAY,
        Reason.ARRAY_TOO_LONG,
        Reason.NESTED_TOO_DEEPLY,
        Reason.INTEGER_BELOW_MIN,
        Reason.INTEGER_ABOVE_MAX,
        Reason.DECIMAL_BELOW_MIN,
        Reason.DECIMAL_ABOVE_MAX,
        Reason.INPUT_TOO_LARGE,
        Reason.CONTEXT_LENGTH_EXCEEDED,
        Reason.INVALID_DATE_RANGE,
        Reason.UPSTREAM_REJECTED,
        Reason.STRING_ABOVE_MAX_LENGTH,
        Reason.EMPTY_MESSAGE,
    ),
    401: (Reason.MISSING_API_KEY, Reason.INVALID_API_KEY, Reason.API_KEY_DISABLED, Reason.API_KEY_EXPIRED),
    402: (Reason.INSUFFICIENT_CREDITS,),
    403: (Reason.PERMISSION_DENIED, Reason.MODEL_NOT_ALLOWED, Reason.KEY_LIMIT_REACHED),
    404: (Reason.NOT_FOUND, Reason.MODEL_NOT_FOUND, Reason.API_KEY_NOT_FOUND),
    409: (Reason.CONVERSATION_CHANGED,),
    429: (Reason.RATE_LIMITED, Reason.GLOBAL_RATE_LIMITED, Reason.BUDGET_EXCEEDED),
    500: (Reason.INTERNAL,),
    501: (Reason.NOT_IMPLEMENTED,),
    502: (Reason.PROVIDER_ERROR,),
    503: (
        Reason.SERVICE_UNAVAILABLE,
        Reason.UPSTREAM_OVERLOADED,
        Reason.STORE_UNAVAILABLE,
        Reason.SHARED_STATE_UNAVAILABLE,
    ),
    504: (Reason.UPSTREAM_TIMEOUT, Reason.DEADLINE_EXCEEDED),
}

# Every reason's HTTP status (the one surfaces start from) and gRPC status.
REASONS: Mapping[Reason, ReasonInfo] = MappingProxyType(
    {reason: ReasonInfo(status, _GRPC_CODES[status]) for status, reasons in _STATUS.items() for reason in reasons}
)


# How much of a caller's value an error quotes; a whole message is never longer than _MAX_MESSAGE.
CLIP_CHARS = 256
_MAX_MESSAGE = 2048
_ELLIPSIS = "\u2026"


def _clip_repr() -> reprlib.Repr:
    shortened = reprlib.Repr()
    shortened.maxstring = shortened.maxother = shortened.maxlong = CLIP_CHARS
    return shortened


_CLIP_REPR = _clip_repr()


def clip(value: object, limit: int = CLIP_CHARS) -> str:
    """A caller's value as an error may quote it: at most `limit` characters, "…" marking a cut."""
    # reprlib stops early: a huge value is never rendered whole just to be cut.
    text = value if isinstance(value, str) else _CLIP_REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS


class GatewayError(Exception):
    """A failure the caller sees, with what every surface needs to render it.

    `param` names the offending request field; `retry_after` (seconds)
    becomes Retry-After; `headers` are response headers that belong to the
    error (X-RateLimit-* on a 429); `retryable` lets the router try again.
    """

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        retryable: bool = False,
    ) -> None:
        # The last guard against quoting unbounded input: a message built
        # without `clip` is still cut, so trailers and headers stay small.
        message = clip(message, _MAX_MESSAGE)
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.param = None if param is None else clip(param)
        self.retry_after = retry_after
        self.headers = headers
        self.retryable = retryable

    @property
    def http_status(self) -> int:
        return REASONS[self.reason].http_status

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return REASONS[self.reason].grpc_code

    @property
    def retry_after_header(self) -> str | None:
        """Retry-After in whole seconds, rounded up; None when there is none."""
        if self.retry_after is None or not math.isfinite(self.retry_after):
            return None
        return str(max(1, math.ceil(self.retry_after)))

    def __repr__(self) -> str:
        return f"GatewayError({self.reason.name}, {self.message!r})"


def as_gateway_error(exc: Exception) -> GatewayError:
    """A GatewayError as it is; anything else is a bug: logged, and shown as a plain 500."""
    if isinstance(exc, GatewayError):
        return exc
    log.error("unexpected error", exc_info=exc)
    return GatewayError(Reason.INTERNAL, "The server had an error while processing your request.")
