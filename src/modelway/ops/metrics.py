"""Prometheus metrics: one registry per gateway, fed by a few hooks in core and read at scrape time.

Every per-call figure comes from the call's usage row, observed once when the
meter records it (`Telemetry.call_ended`), so the metrics and the usage table
cannot disagree about what a call was. Upstream attempts come from the router,
usage commits from the recorder; breaker states and the usage queue are read
when Prometheus scrapes, so they cost nothing between scrapes.

Label values are bounded: models and providers are the configured ones (a
name the configuration does not know becomes "unknown"), surfaces and
outcomes come from code, statuses are HTTP statuses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from modelway.config import MICRO
from modelway.core.breaker import Breakers
from modelway.errors import Reason
from modelway.ops.logs import CallLog
from modelway.store import UsageRecord

__all__ = ["BREAKER_STATES", "REJECTIONS", "Telemetry"]

# The gauge's value for each breaker state.
BREAKER_STATES = {"closed": 0, "open": 1, "half_open": 2}

# Calls refused by a limit the caller can see and wait out: counted by reason.
REJECTIONS = frozenset(
    {
        Reason.RATE_LIMITED.value,
        Reason.GLOBAL_RATE_LIMITED.value,
        Reason.BUDGET_EXCEEDED.value,
        Reason.INSUFFICIENT_CREDITS.value,
    }
)

_UNKNOWN = "unknown"
# Seconds: from a fast local failure to a long generation.
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
# A group commit is a few milliseconds when the disk is well.
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


@dataclass(frozen=True, slots=True)
class _CallSeries:
    """The labelled children that calls with one (surface, model, provider, status) feed."""

    requests: Counter
    duration: Histogram
    first_token: Histogram
    input_tokens: Counter
    output_tokens: Counter
    credits: Counter


class _StateCollector:
    """Gauges read from the running gateway at scrape time."""

    def __init__(self, breakers: Breakers, queue_depth: Callable[[], int]) -> None:
        self._breakers = breakers
        self._queue_depth = queue_depth

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        breaker = GaugeMetricFamily(
            "modelway_circuit_breaker_state",
            "Circuit breaker per upstream provider: 0 closed, 1 open, 2 half-open.",
            labels=["provider"],
        )
        queue = GaugeMetricFamily(
            "modelway_usage_queue_depth",
            "Usage rows recorded in memory, waiting for the next batch write to the store.",
        )
        return breaker, queue

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        breaker, queue = self._families()
        for provider, state in self._breakers.states().items():
            breaker.add_metric([provider], BREAKER_STATES.get(state, 0))
        queue.add_metric([], self._queue_depth())
        yield breaker
        yield queue


class _Registry(CollectorRegistry):
    """A registry that exports no *_created series.

    prometheus_client gives every counter and histogram child a second
    series holding its creation time, doubling the series count for a value
    nobody graphs. Its switch for that (disable_created_metrics) is
    process-wide state; this drops them for this registry alone.
    """

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():
            kept = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            if len(kept) != len(metric.samples):
                metric = copy.copy(metric)
                metric.samples = kept
            yield metric


class Telemetry:
    """The gateway's metrics and per-call log line. One per Gateway, with its own registry."""

    def __init__(self, *, models: Iterable[str] = (), providers: Iterable[str] = ()) -> None:
        self.registry: CollectorRegistry = _Registry()
        self._models = frozenset(models)
        self._providers = frozenset(providers)
        # Bounded like the labels: surfaces x configured models and providers (or "unknown") x statuses.
        self._series: dict[tuple[str, str, str, int], _CallSeries] = {}
        # (provider, outcome): configured providers x "ok" and the Reason values.
        self._attempts: dict[tuple[str, str], Histogram] = {}
        self._call_log = CallLog()
        registry = self.registry
        self._requests = Counter(
            "modelway_requests",
            "Calls by surface, catalog model, provider and HTTP status (also for native gRPC callers).",
            ["surface", "model", "provider", "status"],
            registry=registry,
        )
        self._duration = Histogram(
            "modelway_request_duration_seconds",
            "Whole call, from arrival to the last byte or the error.",
            ["surface", "model"],
            buckets=_CALL_BUCKETS,
            registry=registry,
        )
        self._first_token = Histogram(
            "modelway_time_to_first_token_seconds",
            "Streamed calls: from arrival to the first output delta.",
            ["surface", "model"],
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self._upstream = Histogram(
            "modelway_upstream_attempt_duration_seconds",
            'Each upstream attempt, to its first event or its failure; outcome "ok" or the error reason.',
            ["provider", "outcome"],
            buckets=_CALL_BUCKETS,
            registry=registry,
        )
        self._input_tokens = Counter(
            "modelway_input_tokens", "Prompt tokens of calls that produced output.", ["model"], registry=registry
        )
        self._output_tokens = Counter(
            "modelway_output_tokens", "Completion tokens delivered.", ["model"], registry=registry
        )
        self._credits = Counter(
            "modelway_credits_charged", "Credits charged to accounts.", ["model"], registry=registry
        )
        self._rejections = Counter(
            "modelway_rejections",
            "Calls refused by a rate limit, a daily token budget or the account's credits, by reason.",
            ["reason"],
            registry=registry,
        )
        self._commit = Histogram(
            "modelway_usage_commit_duration_seconds",
            "One store transaction writing a batch of usage rows and their charges.",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        ProcessCollector(registry=registry)

    def watch(self, breakers: Breakers, queue_depth: Callable[[], int]) -> None:
        """Adds the gauges read at scrape time: breaker states and the usage queue."""
        self.registry.register(_StateCollector(breakers, queue_depth))

    def _model(self, model: str) -> str:
        return model if not model or model in self._models else _UNKNOWN

    def _provider(self, provider: str) -> str:
        return provider if not provider or provider in self._providers else _UNKNOWN

    def _call_series(self, surface: str, model: str, provider: str, status: int) -> _CallSeries:
        """The labelled children one kind of call feeds, looked up once per label set: `labels()`
        validates and locks on every call, and the label sets are few (configured names, codes)."""
        key = (surface, self._model(model), self._provider(provider), status)
        series = self._series.get(key)
        if series is None:
            surface, model, provider, status = key
            series = _CallSeries(
                requests=self._requests.labels(surface, model, provider, str(status)),
                duration=self._duration.labels(surface, model),
                first_token=self._first_token.labels(surface, model),
                input_tokens=self._input_tokens.labels(model),
                output_tokens=self._output_tokens.labels(model),
                credits=self._credits.labels(model),
            )
            self._series[key] = series
        return series

    def call_ended(self, row: UsageRecord, first_token_seconds: float | None) -> None:
        """One finished call, from its usage row: counters, histograms and its log line."""
        series = self._call_series(row.surface, row.model, row.provider, row.status)
        series.requests.inc()
        series.duration.observe(row.latency_ms / 1000)
        if first_token_seconds is not None:
            series.first_token.observe(first_token_seconds)
        if row.prompt_tokens:
            series.input_tokens.inc(row.prompt_tokens)
        if row.completion_tokens:
            series.output_tokens.inc(row.completion_tokens)
        if row.cost:
            series.credits.inc(row.cost / MICRO)
        if row.error_code in REJECTIONS:
            self._rejections.labels(row.error_code).inc()
        self._call_log.write(row, first_token_seconds)

    def upstream_attempt(self, provider: str, outcome: str, seconds: float) -> None:
        """One attempt on an upstream ended: "ok" (its first event arrived) or the failure's reason."""
        key = (self._provider(provider), outcome)
        child = self._attempts.get(key)
        if child is None:
            child = self._attempts[key] = self._upstream.labels(*key)
        child.observe(seconds)

    def usage_committed(self, seconds: float) -> None:
        self._commit.observe(seconds)
