"""Renders the admin REST dialect (api-keys, api-usage) as its documented JSON."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from modelway.core.reports import UsageReport
from modelway.store import DailyUsage, KeyRecord

__all__ = ["MASK", "iso_time", "key_json", "usage_json"]

# What a listed key shows instead of its secret.
MASK = "••••••••"


def iso_time(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(key: KeyRecord, secret: str | None) -> dict[str, Any]:
    return {
        "id": key.id,
        "key": secret or MASK,
        "name": key.name,
        "created_at": iso_time(key.created_at),
        "last_used_at": iso_time(key.last_used_at),
        "permissions": list(key.permissions),
        "expires_at": iso_time(key.expires_at),
        "is_enabled": key.is_enabled,
        "rate_limit": key.rate_limit,
        "daily_token_budget": key.daily_token_budget,
        "allowed_models": list(key.allowed_models),
    }


def key_json(data: KeyRecord | list[KeyRecord], secret: str | None = None) -> bytes:
    """`{"data": key}` or `{"data": [keys]}`; the secret only when just minted."""
    body = [_key(key, None) for key in data] if isinstance(data, list) else _key(data, secret)
    return json.dumps({"data": body}, ensure_ascii=False, separators=(",", ":")).encode()


def _day(usage: DailyUsage) -> dict[str, Any]:
    return {
        "total_requests": usage.requests,
        "total_input_tokens": usage.input_tokens,
        "total_output_tokens": usage.output_tokens,
        "total_cost": usage.cost / 1e6,
    }


def usage_json(report: UsageReport) -> dict[str, Any]:
    """The report as data; the typed response and the REST body share it."""
    return {
        "usage": [{"day": day.day, **_day(day)} for day in report.days],
        "summary": {"start_date": report.start.isoformat(), "end_date": report.end.isoformat(), **_day(report.total)},
    }
