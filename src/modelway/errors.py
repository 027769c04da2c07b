"""The gateway's exception tree; every failure a caller sees is one of these.

    GatewayError
     ├── InvalidRequest        400  invalid_request_error
     ├── AuthenticationFailed  401  authentication_error
     ├── PermissionDenied      403  permission_error
     ├── NotFound              404  invalid_request_error
     ├── RateLimited           429  requests (per-minute limits)
     │    └── BudgetExceeded   429  tokens (daily token budget)
     ├── InsufficientCredits   402  insufficient_quota (429 on the OpenAI surface)
     ├── ProviderError         502  api_error
     └── ServiceUnavailable    503  api_error

Each carries what every surface needs to render it: the HTTP status, the gRPC
status code, the OpenAI error `type`, a machine `code` and the offending
`param`. `retry_after` (seconds) becomes Retry-After; `should_retry` False
tells SDKs that a retry cannot help. Each REST dialect renders the error in
its own shape (surfaces/), and services/_rpc.py is the one place that turns
it into a gRPC status plus that HTTP status and body.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

__all__ = [
    "AuthenticationFailed",
    "BudgetExceeded",
    "GatewayError",
    "InsufficientCredits",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "ProviderError",
    "RateLimited",
    "ServiceUnavailable",
]


class GatewayError(Exception):
    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str] = "internal_error"
    should_retry: ClassVar[bool | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.retry_after = retry_after
        # Response headers that belong to this error (X-RateLimit-* on a 429).
        self.headers = headers


class InvalidRequest(GatewayError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    error_type = "invalid_request_error"
    default_code = "invalid_value"


class AuthenticationFailed(GatewayError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFound(GatewayError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    error_type = "invalid_request_error"
    default_code = "not_found"


class RateLimited(GatewayError):
    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    error_type = "requests"
    default_code = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    error_type = "tokens"
    default_code = "daily_token_budget_exceeded"
    should_retry = False  # not before the budget resets at UTC midnight


class InsufficientCredits(GatewayError):
    http_status = 402
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"
    should_retry = False


class ProviderError(GatewayError):
    http_status = 502
    grpc_code = grpc.StatusCode.UNAVAILABLE
    error_type = "api_error"
    default_code = "provider_error"


class ServiceUnavailable(GatewayError):
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    error_type = "api_error"
    default_code = "service_unavailable"
