"""Usage reports: daily totals of one account over a range of UTC days."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from dataclasses import dataclass

from modelway.core.accounting import UsageRecorder
from modelway.core.clock import Clock
from modelway.core.directory import Caller
from modelway.errors import GatewayError, Reason, clip
from modelway.store import DailyUsage, Store

__all__ = ["UsageReport", "UsageReports"]

MAX_DAYS = 366
DEFAULT_DAYS = 30
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class UsageReport:
    start: dt.date
    end: dt.date
    days: tuple[DailyUsage, ...]  # every day of the range, zeros included

    @property
    def total(self) -> DailyUsage:
        return DailyUsage(
            day="",
            requests=sum(d.requests for d in self.days),
            input_tokens=sum(d.input_tokens for d in self.days),
            output_tokens=sum(d.output_tokens for d in self.days),
            cost=sum(d.cost for d in self.days),
        )


def _date(param: str, value: str) -> dt.date:
    if _DATE.fullmatch(value):
        with contextlib.suppress(ValueError):
            return dt.date.fromisoformat(value)
    raise GatewayError(
        Reason.INVALID_VALUE, f"Invalid '{param}': {clip(value)!r} is not a date in the form YYYY-MM-DD.", param=param
    )


def _epoch(day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()


class UsageReports:
    def __init__(self, store: Store, recorder: UsageRecorder, clock: Clock) -> None:
        self._store = store
        self._recorder = recorder
        self._clock = clock

    async def report(self, caller: Caller, start_date: str, end_date: str) -> UsageReport:
        today = dt.datetime.fromtimestamp(self._clock.now(), dt.UTC).date()
        end = _date("end_date", end_date) if end_date else today
        start = _date("start_date", start_date) if start_date else end - dt.timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise GatewayError(
                Reason.INVALID_DATE_RANGE, f"'start_date' ({start}) is after 'end_date' ({end}).", param="start_date"
            )
        if (end - start).days + 1 > MAX_DAYS:
            raise GatewayError(Reason.INVALID_DATE_RANGE, f"A report covers at most {MAX_DAYS} days.", param="end_date")
        # Rows still in memory belong in the report: a caller who just made a
        # call expects to see it.
        await self._recorder.flush()
        found = {
            row.day: row
            for row in await self._store.daily_usage(
                caller.account.id, _epoch(start), _epoch(end + dt.timedelta(days=1))
            )
        }
        days = []
        for offset in range((end - start).days + 1):
            day = (start + dt.timedelta(days=offset)).isoformat()
            days.append(found.get(day, DailyUsage(day=day, requests=0, input_tokens=0, output_tokens=0, cost=0)))
        return UsageReport(start=start, end=end, days=tuple(days))
