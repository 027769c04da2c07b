"""Key administration for an account: every operation is scoped to the caller's own account.

`key_name` and `check_key_count` are the one rule for a key's name and for a
plan's `max_keys`: the REST/gRPC API and the operator's CLI both use them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from modelway.config import ALL_PERMISSIONS, DEFAULT_PERMISSIONS, Config, PlanConfig
from modelway.core.catalog import Catalog
from modelway.core.clock import Clock
from modelway.core.directory import Caller, Directory
from modelway.core.keys import IssuedKey, issue_key, rotate_key
from modelway.errors import GatewayError, Reason, clip
from modelway.store import KeyRecord

__all__ = ["MAX_NAME", "KeyAdmin", "KeyChanges", "NewKey", "check_key_count", "key_name"]

MAX_NAME = 100
# Control, format, unassigned and private-use characters, and line/paragraph separators: none
# belongs in a name shown in lists, logs and terminals.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"})
LATEST_EXPIRY = 253_402_300_799  # 9999-12-31T23:59:59Z: what RFC 3339 (and JSON clients) can show


@dataclass(frozen=True, slots=True)
class NewKey:
    name: str
    permissions: tuple[str, ...] = ()  # empty: DEFAULT_PERMISSIONS
    expires_at: int | None = None
    rate_limit: int | None = None
    daily_token_budget: int | None = None
    allowed_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyChanges:
    """What an update changes; None leaves a field as it is."""

    name: str | None = None
    is_enabled: bool | None = None
    permissions: tuple[str, ...] | None = None
    rate_limit: int | None = None  # 0: back to the plan's
    daily_token_budget: int | None = None  # 0: back to the plan's
    allowed_models: tuple[str, ...] | None = None
    expires_at: int | None = None


Limit = Literal["rate_limit", "daily_token_budget"]
_LIMITS: tuple[Limit, ...] = ("rate_limit", "daily_token_budget")


def _effective(key: KeyRecord, caller: Caller, param: Limit) -> int:
    """A key's limit as enforced: its own, or else its account's plan's."""
    own: int | None = getattr(key, param)
    if own is not None:
        return own
    return caller.plan.chat_requests_per_minute if param == "rate_limit" else caller.plan.daily_token_budget


def _stronger_in(key: KeyRecord, caller: Caller) -> list[str]:
    """Where `key` may do more than the calling key: a key only manages keys no stronger than itself."""
    mine = caller.key
    found = [f"permission {p}" for p in key.permissions if p not in mine.permissions]
    if mine.allowed_models and (not key.allowed_models or set(key.allowed_models) - set(mine.allowed_models)):
        found.append("models")
    found += [param for param in _LIMITS if _effective(key, caller, param) > _effective(mine, caller, param)]
    if mine.expires_at is not None and (key.expires_at is None or key.expires_at > mine.expires_at):
        found.append("expiry")
    return found


def key_name(name: str) -> str:
    """A key's name as stored: trimmed, 1 to MAX_NAME characters, no control characters (NUL included)."""
    name = name.strip()
    if not name:
        raise GatewayError(Reason.MISSING_REQUIRED_PARAMETER, "Missing required parameter: 'name'.", param="name")
    if len(name) > MAX_NAME:
        raise GatewayError(Reason.INVALID_VALUE, f"'name' is longer than {MAX_NAME} characters.", param="name")
    bad = next((char for char in name if unicodedata.category(char) in _FORBIDDEN_CATEGORIES), None)
    if bad is not None:
        raise GatewayError(
            Reason.INVALID_VALUE,
            f"'name' may not contain control or invisible characters (found U+{ord(bad):04X}).",
            param="name",
        )
    return name


def check_key_count(plan: PlanConfig, owned: int) -> None:
    """Refuses one more key when the account already has its plan's `max_keys`."""
    if owned >= plan.max_keys:
        raise GatewayError(
            Reason.KEY_LIMIT_REACHED,
            f"The {plan.name} plan allows {plan.max_keys} API key(s) per account and this account "
            f"has {owned}. Delete a key or change plan.",
        )


class KeyAdmin:
    def __init__(self, directory: Directory, catalog: Catalog, config: Config, clock: Clock) -> None:
        self._directory = directory
        self._catalog = catalog
        self._prefix = config.keys.prefix
        self._clock = clock

    def list(self, caller: Caller) -> list[KeyRecord]:
        return self._directory.keys_of(caller.account.id)

    async def create(self, caller: Caller, new: NewKey) -> IssuedKey:
        name = key_name(new.name)
        check_key_count(caller.plan, len(self._directory.keys_of(caller.account.id)))
        defaults = tuple(p for p in DEFAULT_PERMISSIONS if caller.may_use(p))
        permissions = self._permissions(caller, new.permissions or defaults)
        issued = issue_key(
            caller.account.id,
            name,
            prefix=self._prefix,
            now=int(self._clock.now()),
            permissions=permissions,
            expires_at=self._expiry(caller, new.expires_at),
            rate_limit=self._limit(caller, "rate_limit", new.rate_limit),
            daily_token_budget=self._limit(caller, "daily_token_budget", new.daily_token_budget),
            allowed_models=self._models(caller, new.allowed_models),
        )
        await self._directory.add_key(issued.record)
        return issued

    async def update(self, caller: Caller, key_id: str, changes: KeyChanges) -> KeyRecord:
        key = self._own(caller, key_id)
        if changes.name is not None:
            key = replace(key, name=key_name(changes.name))
        if changes.is_enabled is not None:
            key = replace(key, is_enabled=changes.is_enabled)
        if changes.permissions is not None:
            key = replace(key, permissions=self._permissions(caller, changes.permissions))
        if changes.rate_limit is not None:
            key = replace(key, rate_limit=self._limit(caller, "rate_limit", changes.rate_limit or None))
        if changes.daily_token_budget is not None:
            budget = self._limit(caller, "daily_token_budget", changes.daily_token_budget or None)
            key = replace(key, daily_token_budget=budget)
        if changes.allowed_models is not None:
            key = replace(key, allowed_models=self._models(caller, changes.allowed_models))
        if changes.expires_at is not None:
            key = replace(key, expires_at=self._expiry(caller, changes.expires_at))
        await self._directory.replace_key(key)
        return self._directory.key(key_id) or key

    async def rotate(self, caller: Caller, key_id: str) -> IssuedKey:
        issued = rotate_key(self._own(caller, key_id), prefix=self._prefix)
        await self._directory.replace_key(issued.record)
        return issued

    async def delete(self, caller: Caller, key_id: str) -> None:
        self._own(caller, key_id)
        await self._directory.delete_key(key_id)

    def _own(self, caller: Caller, key_id: str) -> KeyRecord:
        if not key_id:
            raise GatewayError(Reason.MISSING_REQUIRED_PARAMETER, "Missing required parameter: 'id'.", param="id")
        key = self._directory.key(key_id)
        # Another account's key is reported exactly like a missing one.
        if key is None or key.account_id != caller.account.id:
            raise GatewayError(Reason.API_KEY_NOT_FOUND, f"No API key with id '{clip(key_id)}'.", param="id")
        stronger = _stronger_in(key, caller)
        if stronger:
            raise GatewayError(
                Reason.PERMISSION_DENIED,
                f"This key cannot manage a key that may do more than itself ({', '.join(stronger)}).",
                param="id",
            )
        return key

    @staticmethod
    def _permissions(caller: Caller, wanted: Sequence[str]) -> tuple[str, ...]:
        unknown = [p for p in wanted if p not in ALL_PERMISSIONS]
        if unknown:
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"Unknown permission(s): {clip(', '.join(unknown))}. Known: {', '.join(ALL_PERMISSIONS)}.",
                param="permissions",
            )
        beyond = [p for p in wanted if not caller.may_use(p)]
        if beyond:
            raise GatewayError(
                Reason.PERMISSION_DENIED,
                f"A key cannot grant permissions it does not have: {', '.join(beyond)}.",
                param="permissions",
            )
        return tuple(dict.fromkeys(wanted))

    def _expiry(self, caller: Caller, expires_at: int | None) -> int | None:
        """A key never outlives the key that made it; a new key inherits its maker's expiry."""
        if expires_at is None:
            return caller.key.expires_at
        if expires_at <= self._clock.now():
            raise GatewayError(Reason.INVALID_VALUE, "'expires_at' must be in the future.", param="expires_at")
        if expires_at > LATEST_EXPIRY:
            raise GatewayError(Reason.INVALID_VALUE, "'expires_at' must be before the year 10000.", param="expires_at")
        if caller.key.expires_at is not None and expires_at > caller.key.expires_at:
            raise GatewayError(
                Reason.PERMISSION_DENIED, "A key cannot make a key that outlives itself.", param="expires_at"
            )
        return expires_at

    @staticmethod
    def _limit(caller: Caller, param: Limit, value: int | None) -> int | None:
        """A key's own limit. Through the API it can only be lowered: never above the calling
        key's own limit, or the plan's when the calling key has none (an operator's CLI can
        set any). A key made without one inherits the calling key's own."""
        if value is not None and value < 1:
            raise GatewayError(Reason.INVALID_VALUE, f"'{param}' must be a positive integer.", param=param)
        ceiling = _effective(caller.key, caller, param)
        if value is not None and value > ceiling:
            raise GatewayError(
                Reason.PERMISSION_DENIED,
                f"A key cannot grant a '{param}' above its own ({ceiling}).",
                param=param,
            )
        inherited: int | None = getattr(caller.key, param)
        return inherited if value is None else value

    def _models(self, caller: Caller, models: Sequence[str]) -> tuple[str, ...]:
        """The allow-list; a key limited to some models can only hand on (some of) those."""
        unknown = [model for model in models if not self._catalog.has(model)]
        if unknown:
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"Unknown model(s) in 'allowed_models': {clip(', '.join(unknown))}.",
                param="allowed_models",
            )
        own = caller.key.allowed_models
        if own and not models:
            return own
        beyond = [model for model in models if own and model not in own]
        if beyond:
            raise GatewayError(
                Reason.PERMISSION_DENIED,
                f"A key cannot grant models it may not use: {clip(', '.join(beyond))}.",
                param="allowed_models",
            )
        return tuple(dict.fromkeys(models))
