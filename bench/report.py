"""What a run measured: rows, start-up times, ratios and the issue's targets, as a table and as JSON."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.load import LoadResult

__all__ = ["FLOOR", "LITELLM", "MOCK", "MODELWAY", "NATIVE", "REST", "Check", "Report", "Row", "checks", "render"]

MODELWAY = "modelway"
FLOOR = "floor"
LITELLM = "LiteLLM"
MOCK = "mock (direct)"
REST = "REST"
NATIVE = "gRPC"


@dataclass(frozen=True, slots=True)
class Row:
    """One system, interface and scenario: the median over repeats, CPU per request apart for server and Envoy."""

    system: str
    via: str
    mode: str
    concurrency: int
    load: LoadResult
    server_cpu_ms: float
    envoy_cpu_ms: float
    server_rss_mb: float
    envoy_rss_mb: float

    @property
    def scenario(self) -> tuple[str, int]:
        return self.mode, self.concurrency

    @property
    def total_cpu_ms(self) -> float:
        return self.server_cpu_ms + self.envoy_cpu_ms


@dataclass(frozen=True, slots=True)
class Report:
    machine: dict[str, str]
    command: str
    settings: dict[str, Any]
    rows: tuple[Row, ...]
    ready_seconds: dict[str, float]
    # System -> why it has no figures (e.g. `--workers` before the scale-out work).
    not_measured: dict[str, str] = field(default_factory=dict)
    elapsed_seconds: float = 0.0

    def row(self, system: str, via: str, mode: str, concurrency: int) -> Row | None:
        for row in self.rows:
            if (row.system, row.via, row.mode, row.concurrency) == (system, via, mode, concurrency):
                return row
        return None

    def added(self, row: Row) -> tuple[float, float] | None:
        """Latency added against the mock directly in the same scenario: (p50, p99) in ms."""
        mock = self.row(MOCK, REST, row.mode, row.concurrency)
        if mock is None or row.system == MOCK:
            return None
        return row.load.p50_ms - mock.load.p50_ms, row.load.p99_ms - mock.load.p99_ms

    def ratios(
        self, over: str, under: str, figure: Callable[[Row], float], modes: Iterable[str] = ("json", "sse")
    ) -> dict[str, float]:
        """`over`'s figure / `under`'s, per REST scenario both have (e.g. "json c16" -> 1.2)."""
        found: dict[str, float] = {}
        for row in self.rows:
            if row.system != under or row.via != REST or row.mode not in modes:
                continue
            other = self.row(over, REST, row.mode, row.concurrency)
            if other is not None and figure(row) > 0:
                found[f"{row.mode} c{row.concurrency}"] = figure(other) / figure(row)
        return found

    def to_json(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            data = asdict(row)
            data["rps"] = row.load.rps
            added = self.added(row)
            data["added_p50_ms"], data["added_p99_ms"] = added if added else (None, None)
            rows.append(data)
        return {
            "machine": self.machine,
            "command": self.command,
            "settings": self.settings,
            "elapsed_seconds": self.elapsed_seconds,
            "ready_seconds": self.ready_seconds,
            "not_measured": self.not_measured,
            "rows": rows,
            "ratios": {
                "modelway_over_floor_server_cpu": self.ratios(MODELWAY, FLOOR, _server),
                "modelway_over_floor_total_cpu": self.ratios(MODELWAY, FLOOR, _total),
                "litellm_over_modelway_server_cpu": self.ratios(LITELLM, MODELWAY, _server),
                "litellm_over_modelway_total_cpu": self.ratios(LITELLM, MODELWAY, _total),
            },
            "targets": [asdict(check) for check in checks(self)],
        }


@dataclass(frozen=True, slots=True)
class Check:
    """One of the issue's targets: what it asks, what was measured, and whether it holds (None: not measured)."""

    target: str
    measured: str
    passed: bool | None


def _span(values: Iterable[float], unit: str = "") -> str:
    values = list(values)
    if not values:
        return "n/a"
    low, high = min(values), max(values)
    return f"{low:.2f}{unit}" if abs(high - low) < 0.005 else f"{low:.2f}-{high:.2f}{unit}"


def _modelway_rows(report: Report) -> list[Row]:
    return [row for row in report.rows if row.system == MODELWAY]


def checks(report: Report) -> list[Check]:
    found: list[Check] = []
    over_floor = report.ratios(MODELWAY, FLOOR, _server)
    found.append(
        Check(
            "modelway server CPU/request <= 1.3x the floor's (REST, json and sse)",
            _span(over_floor.values(), "x"),
            all(value <= 1.3 for value in over_floor.values()) if over_floor else None,
        )
    )
    litellm = report.ratios(LITELLM, MODELWAY, _total)
    found.append(
        Check(
            "LiteLLM CPU/request >= 15x modelway's (server + Envoy)",
            _span(litellm.values(), "x"),
            all(value >= 15 for value in litellm.values()) if litellm else None,
        )
    )
    c1 = report.row(MODELWAY, REST, "json", 1)
    added = report.added(c1) if c1 else None
    found.append(
        Check(
            "added p50 at c1, non-stream, through Envoy < 1.5 ms",
            f"{added[0]:.2f} ms" if added else "n/a",
            added[0] < 1.5 if added else None,
        )
    )
    c64 = [row for row in _modelway_rows(report) if row.concurrency == 64]
    errors = sum(row.load.errors for row in c64)
    found.append(Check("no errors at c64 (modelway, REST and gRPC)", str(errors), errors == 0 if c64 else None))
    slow = report.row(MODELWAY, REST, "slow", 64)
    slow_added = report.added(slow) if slow else None
    found.append(
        Check(
            "50 ms upstream at c64: added p99 < 10 ms",
            f"{slow_added[1]:.2f} ms" if slow_added else "n/a",
            slow_added[1] < 10 if slow_added else None,
        )
    )
    rss = [row.server_rss_mb for row in _modelway_rows(report)]
    found.append(
        Check(
            "server RSS < 150 MB after the run", f"{max(rss):.0f} MB" if rss else "n/a", max(rss) < 150 if rss else None
        )
    )
    ready = report.ready_seconds.get(MODELWAY)
    found.append(
        Check("start to ready < 2 s", f"{ready:.2f} s" if ready is not None else "n/a", ready < 2 if ready else None)
    )
    for system, reason in report.not_measured.items():
        found.append(Check(f"{system}: N server processes, limits and credits exact", reason, None))
    for system in {row.system for row in report.rows if row.system.startswith(f"{MODELWAY} --workers")}:
        found.append(Check(f"{system}: N server processes behind Envoy", "measured (see rows)", True))
    found.append(
        Check(
            "stretch: beat the floor (server CPU/request < 1.0x)",
            _span(over_floor.values(), "x"),
            all(value < 1 for value in over_floor.values()) if over_floor else None,
        )
    )
    return found


_COLUMNS = (
    ("system", 24),
    ("via", 5),
    ("scenario", 9),
    ("req/s", 8),
    ("p50 ms", 8),
    ("p99 ms", 8),
    ("+p50", 7),
    ("+p99", 7),
    ("srv CPU", 8),
    ("envoy CPU", 9),
    ("srv RSS", 8),
    ("envoy RSS", 9),
    ("errors", 6),
)


def _line(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cell.rjust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True)) + " |"


def _table(report: Report) -> list[str]:
    lines = [_line(name for name, _ in _COLUMNS), "|" + "|".join("-" * (width + 2) for _, width in _COLUMNS) + "|"]
    for row in report.rows:
        added = report.added(row)
        lines.append(
            _line(
                (
                    row.system,
                    row.via,
                    f"{row.mode} c{row.concurrency}",
                    f"{row.load.rps:.0f}",
                    f"{row.load.p50_ms:.2f}",
                    f"{row.load.p99_ms:.2f}",
                    f"{added[0]:.2f}" if added else "-",
                    f"{added[1]:.2f}" if added else "-",
                    f"{row.server_cpu_ms:.2f}",
                    f"{row.envoy_cpu_ms:.2f}",
                    f"{row.server_rss_mb:.0f}",
                    f"{row.envoy_rss_mb:.0f}",
                    str(row.load.errors),
                )
            )
        )
    for system, reason in report.not_measured.items():
        lines.append(f"| {system.rjust(24)} | not measured: {reason}")
    return lines


def _ratio_lines(title: str, ratios: dict[str, float]) -> list[str]:
    if not ratios:
        return [f"{title}: n/a"]
    cells = ", ".join(f"{scenario} {value:.2f}x" for scenario, value in ratios.items())
    return [f"{title}: {cells} (median {statistics.median(ratios.values()):.2f}x)"]


def render(report: Report) -> str:
    """The whole report as text: machine, table, start-up, ratios, targets."""
    machine = report.machine
    settings = report.settings
    lines = [
        f"machine: {machine.get('nproc')} cores, {machine.get('cpu')}, {machine.get('ram')}, "
        f"load average at start {machine.get('loadavg')}",
        f"command: {report.command}",
        f"{settings['seconds']} s per run after a {settings['warmup_seconds']} s warm-up, "
        f"{settings['repeats']} repeat(s), median; CPU in ms per request; RSS in MB after the run; "
        f"+p50/+p99: latency added against the mock directly; whole run {report.elapsed_seconds / 60:.1f} min",
        "",
        *_table(report),
        "",
        "start to first good answer: "
        + ", ".join(f"{system} {seconds:.2f} s" for system, seconds in report.ready_seconds.items()),
        "",
        *_ratio_lines("modelway / floor, server CPU per request", report.ratios(MODELWAY, FLOOR, _server)),
        *_ratio_lines("modelway / floor, server + Envoy CPU per request", report.ratios(MODELWAY, FLOOR, _total)),
        *_ratio_lines("LiteLLM / modelway, server CPU per request", report.ratios(LITELLM, MODELWAY, _server)),
        *_ratio_lines("LiteLLM / modelway, server + Envoy CPU per request", report.ratios(LITELLM, MODELWAY, _total)),
        "",
        "targets (issue 9):",
    ]
    marks = {True: "PASS", False: "FAIL", None: "----"}
    for check in checks(report):
        lines.append(f"  [{marks[check.passed]}] {check.target}: {check.measured}")
    return "\n".join(lines)


def _server(row: Row) -> float:
    return row.server_cpu_ms


def _total(row: Row) -> float:
    return row.total_cpu_ms
