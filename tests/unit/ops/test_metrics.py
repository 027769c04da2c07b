"""Telemetry: what a usage row, an attempt and a commit do to the registry; gauges read at scrape time."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import generate_latest

from modelway.core.breaker import Breakers
from modelway.ops import Telemetry
from modelway.store import UsageRecord


class Clock:
    def __init__(self) -> None:
        self.at = 100.0

    def now(self) -> float:
        return 1_800_000_000 + self.at

    def monotonic(self) -> float:
        return self.at


ROW = UsageRecord(
    request_id="r",
    account_id="a",
    key_id="k",
    surface="openai",
    model="echo-1",
    provider="echo",
    prompt_tokens=10,
    completion_tokens=5,
    cost=2_500_000,
    latency_ms=250,
    status=200,
    error_code="",
    created_at=1.0,
)


def telemetry() -> Telemetry:
    return Telemetry(models=["echo-1"], providers=["echo", "up"])


def value(t: Telemetry, name: str, **labels: str) -> float | None:
    return t.registry.get_sample_value(name, labels)


def test_a_row_feeds_counters_and_histograms() -> None:
    t = telemetry()
    t.call_ended(ROW, 0.04)
    t.call_ended(
        replace(ROW, cost=0, completion_tokens=0, prompt_tokens=0, status=429, error_code="rate_limit_exceeded"), None
    )
    labels = {"surface": "openai", "model": "echo-1", "provider": "echo"}
    assert value(t, "modelway_requests_total", **labels, status="200") == 1
    assert value(t, "modelway_requests_total", **labels, status="429") == 1
    assert value(t, "modelway_request_duration_seconds_count", surface="openai", model="echo-1") == 2
    assert value(t, "modelway_request_duration_seconds_bucket", surface="openai", model="echo-1", le="0.25") == 2
    assert value(t, "modelway_time_to_first_token_seconds_count", surface="openai", model="echo-1") == 1
    assert value(t, "modelway_time_to_first_token_seconds_sum", surface="openai", model="echo-1") == 0.04
    assert value(t, "modelway_input_tokens_total", model="echo-1") == 10
    assert value(t, "modelway_output_tokens_total", model="echo-1") == 5
    assert value(t, "modelway_credits_charged_total", model="echo-1") == 2.5
    assert value(t, "modelway_rejections_total", reason="rate_limit_exceeded") == 1


def test_no_created_series() -> None:
    t = telemetry()
    t.call_ended(ROW, 0.04)
    t.upstream_attempt("echo", "ok", 0.1)
    text = generate_latest(t.registry)
    assert b"modelway_requests_total{" in text and b"modelway_request_duration_seconds_count{" in text
    assert b"_created" not in text


def test_label_values_stay_bounded() -> None:
    t = telemetry()
    t.call_ended(replace(ROW, model="client-invented-" + "x" * 1000, provider="nowhere"), None)
    t.upstream_attempt("nowhere", "ok", 0.1)
    assert value(t, "modelway_requests_total", surface="openai", model="unknown", provider="unknown", status="200") == 1
    assert value(t, "modelway_upstream_attempt_duration_seconds_count", provider="unknown", outcome="ok") == 1
    assert b"client-invented" not in generate_latest(t.registry)


def test_breaker_states_and_queue_depth_are_read_at_scrape_time() -> None:
    t = telemetry()
    clock = Clock()
    breakers = Breakers(["echo", "up"], threshold=2, cooldown=10, clock=clock)
    depth = [3]
    t.watch(breakers, lambda: depth[0])
    assert value(t, "modelway_circuit_breaker_state", provider="up") == 0
    assert value(t, "modelway_usage_queue_depth") == 3
    breakers["up"].failed()
    breakers["up"].failed()
    depth[0] = 0
    assert value(t, "modelway_circuit_breaker_state", provider="up") == 1
    assert value(t, "modelway_circuit_breaker_state", provider="echo") == 0
    assert value(t, "modelway_usage_queue_depth") == 0
    clock.at += 10
    assert value(t, "modelway_circuit_breaker_state", provider="up") == 2
    breakers["up"].succeeded(0.1)
    assert value(t, "modelway_circuit_breaker_state", provider="up") == 0


def test_each_gateway_has_its_own_registry() -> None:
    a, b = telemetry(), telemetry()
    a.usage_committed(0.002)
    assert value(a, "modelway_usage_commit_duration_seconds_count") == 1
    assert value(b, "modelway_usage_commit_duration_seconds_count") == 0
