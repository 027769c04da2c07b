"""Who may do what, how often: credentials, permissions and per-minute limits."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from modelway.config import Config
from modelway.core.directory import Caller
from modelway.core.limits import LimitRule
from modelway.core.state import KeyDirectory, RateLimits
from modelway.core.wording import Wording
from modelway.errors import GatewayError, Reason

__all__ = ["Bucket", "Gate", "credential"]

Bucket = Literal["chat", "images"]


# The Gemini REST routes (errors.lua's is_gemini_path): the only surface documented to take `?key=`.
_GEMINI_PATH = re.compile(r"/api/v1beta(/|$)|/api/v1/models/[^/?]+:")


def credential(metadata: Mapping[str, str]) -> str:
    """The key a request carries, in the header styles the surfaces document.

    `Authorization: Bearer` (OpenAI), `X-API-Key` (catalog and chat/send),
    `x-goog-api-key` or `?key=` (Gemini). Envoy keeps the original path, query
    included, in x-envoy-original-path after the transcoder drops `key`; the
    query is read on Gemini's routes only (a key in any other URL is no
    credential: URLs end up in logs and browser histories, and Envoy drops it
    there anyway). Native gRPC calls have no such path at all.
    """
    scheme, _, token = metadata.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for header in ("x-api-key", "x-goog-api-key"):
        if metadata.get(header, "").strip():
            return metadata[header].strip()
    original = urlsplit(metadata.get("x-envoy-original-path", ""))
    if not _GEMINI_PATH.match(original.path):
        return ""
    return parse_qs(original.query).get("key", [""])[0]


class Gate:
    def __init__(self, directory: KeyDirectory, limiter: RateLimits, config: Config) -> None:
        self._directory = directory
        self._limiter = limiter
        # The same for every call: built once, not per request.
        self._global_rule = LimitRule(
            "global",
            config.limits.global_requests_per_minute,
            "The gateway is at its global rate limit",
            reason=Reason.GLOBAL_RATE_LIMITED,
        )

    async def authenticate(self, metadata: Mapping[str, str], wording: Wording) -> Caller:
        """The caller, or a 401 saying what is wrong with the key (and, when there is none, how the
        surface's `wording` says to send one)."""
        secret = credential(metadata)
        if not secret:
            raise GatewayError(Reason.MISSING_API_KEY, f"You didn't provide an API key. {wording.send_key}")
        return await self._directory.authenticate(secret)

    @staticmethod
    def require(caller: Caller, permission: str) -> None:
        if not caller.may_use(permission):
            raise GatewayError(
                Reason.PERMISSION_DENIED,
                f"You have insufficient permissions for this operation. Missing permission: {permission}.",
            )

    async def authorize(self, metadata: Mapping[str, str], permission: str, wording: Wording) -> Caller:
        """Authenticates (401s) and checks the key's permission (403)."""
        caller = await self.authenticate(metadata, wording)
        self.require(caller, permission)
        return caller

    async def admit(self, caller: Caller, bucket: Bucket) -> tuple[tuple[str, str], ...]:
        """Counts one request against the limits; returns the X-RateLimit-* headers (429 when over)."""
        plan = caller.plan
        per_minute = plan.chat_requests_per_minute if bucket == "chat" else plan.image_requests_per_minute
        if caller.key.rate_limit is not None and bucket == "chat":
            per_minute = caller.key.rate_limit
        key_state, _ = await self._limiter.acquire(
            LimitRule(
                f"key:{caller.key.id}:{bucket}", per_minute, f"Rate limit reached for this key on {bucket} requests"
            ),
            self._global_rule,
        )
        return key_state.headers()
