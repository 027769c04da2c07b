"""Key administration for an account: every operation is scoped to the caller's own account."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from modelway.config import ALL_PERMISSIONS, DEFAULT_PERMISSIONS, Config
from modelway.core.catalog import Catalog
from modelway.core.clock import Clock
from modelway.core.directory import Caller, Directory
from modelway.core.keys import IssuedKey, issue_key, rotate_key
from modelway.errors import InvalidRequest, NotFound, PermissionDenied
from modelway.store import KeyRecord

__all__ = ["KeyAdmin", "KeyChanges", "NewKey"]

_MAX_NAME = 100


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


class KeyAdmin:
    def __init__(self, directory: Directory, catalog: Catalog, config: Config, clock: Clock) -> None:
        self._directory = directory
        self._catalog = catalog
        self._prefix = config.keys.prefix
        self._clock = clock

    def list(self, caller: Caller) -> list[KeyRecord]:
        return self._directory.keys_of(caller.account.id)

    async def create(self, caller: Caller, new: NewKey) -> IssuedKey:
        name = self._name(new.name)
        owned = len(self._directory.keys_of(caller.account.id))
        if owned >= caller.plan.max_keys:
            raise PermissionDenied(
                f"The {caller.plan.name} plan allows {caller.plan.max_keys} API key(s) per account and this account "
                f"has {owned}. Delete a key or change plan.",
                code="key_limit_reached",
            )
        permissions = self._permissions(caller, new.permissions or DEFAULT_PERMISSIONS)
        issued = issue_key(
            caller.account.id,
            name,
            prefix=self._prefix,
            now=int(self._clock.now()),
            permissions=permissions,
            expires_at=self._expiry(new.expires_at),
            rate_limit=self._positive("rate_limit", new.rate_limit),
            daily_token_budget=self._positive("daily_token_budget", new.daily_token_budget),
            allowed_models=self._models(new.allowed_models),
        )
        await self._directory.add_key(issued.record)
        return issued

    async def update(self, caller: Caller, key_id: str, changes: KeyChanges) -> KeyRecord:
        key = self._own(caller, key_id)
        if changes.name is not None:
            key = replace(key, name=self._name(changes.name))
        if changes.is_enabled is not None:
            key = replace(key, is_enabled=changes.is_enabled)
        if changes.permissions is not None:
            key = replace(key, permissions=self._permissions(caller, changes.permissions))
        if changes.rate_limit is not None:
            key = replace(key, rate_limit=self._positive("rate_limit", changes.rate_limit or None))
        if changes.daily_token_budget is not None:
            budget = self._positive("daily_token_budget", changes.daily_token_budget or None)
            key = replace(key, daily_token_budget=budget)
        if changes.allowed_models is not None:
            key = replace(key, allowed_models=self._models(changes.allowed_models))
        if changes.expires_at is not None:
            key = replace(key, expires_at=self._expiry(changes.expires_at))
        await self._directory.replace_key(key)
        return self._own(caller, key_id)

    async def rotate(self, caller: Caller, key_id: str) -> IssuedKey:
        issued = rotate_key(self._own(caller, key_id), prefix=self._prefix)
        await self._directory.replace_key(issued.record)
        return issued

    async def delete(self, caller: Caller, key_id: str) -> None:
        self._own(caller, key_id)
        await self._directory.delete_key(key_id)

    def _own(self, caller: Caller, key_id: str) -> KeyRecord:
        if not key_id:
            raise InvalidRequest("Missing required parameter: 'id'.", param="id", code="missing_required_parameter")
        key = self._directory.key(key_id)
        # Another account's key is reported exactly like a missing one.
        if key is None or key.account_id != caller.account.id:
            raise NotFound(f"No API key with id '{key_id}'.", code="api_key_not_found", param="id")
        return key

    @staticmethod
    def _name(name: str) -> str:
        name = name.strip()
        if not name:
            raise InvalidRequest("Missing required parameter: 'name'.", param="name", code="missing_required_parameter")
        if len(name) > _MAX_NAME:
            raise InvalidRequest(f"'name' is longer than {_MAX_NAME} characters.", param="name")
        return name

    @staticmethod
    def _permissions(caller: Caller, wanted: Sequence[str]) -> tuple[str, ...]:
        unknown = [p for p in wanted if p not in ALL_PERMISSIONS]
        if unknown:
            raise InvalidRequest(
                f"Unknown permission(s): {', '.join(unknown)}. Known: {', '.join(ALL_PERMISSIONS)}.",
                param="permissions",
            )
        beyond = [p for p in wanted if not caller.may_use(p)]
        if beyond:
            raise PermissionDenied(
                f"A key cannot grant permissions it does not have: {', '.join(beyond)}.",
                code="insufficient_permissions",
                param="permissions",
            )
        return tuple(dict.fromkeys(wanted))

    def _expiry(self, expires_at: int | None) -> int | None:
        if expires_at is not None and expires_at <= self._clock.now():
            raise InvalidRequest("'expires_at' must be in the future.", param="expires_at")
        return expires_at

    @staticmethod
    def _positive(param: str, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise InvalidRequest(f"'{param}' must be a positive integer.", param=param)
        return value

    def _models(self, models: Sequence[str]) -> tuple[str, ...]:
        unknown = [model for model in models if not self._catalog.has(model)]
        if unknown:
            raise InvalidRequest(f"Unknown model(s) in 'allowed_models': {', '.join(unknown)}.", param="allowed_models")
        return tuple(dict.fromkeys(models))
