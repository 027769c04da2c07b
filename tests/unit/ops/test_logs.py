"""Log lines: JSON or text, and no secret in any record, whatever logged it and however."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from modelway.config import Config, ConfigError, LoggingConfig, ProviderConfig, load_config
from modelway.ops.logs import CALLS_LOGGER, CallLog, JsonFormatter, Scrubber, TextFormatter, configure_logging
from modelway.store import UsageRecord

KEY = "mw-Zq3_xK9-aaaaBBBBccccDDDDeeeeFFFFgggg0123456"
UPSTREAM = "sk-upstream-very-secret-42"


@pytest.fixture
def scrubber() -> Scrubber:
    return Scrubber("mw-", [UPSTREAM, "short"])


@pytest.mark.parametrize(
    "text",
    [
        f"Invalid encoding on b'Bearer {KEY}\\xff'",
        f"authorization: Bearer {KEY}",
        f"key={KEY}&x=1",
        f"x-api-key: {KEY}",
        f"{{'x-goog-api-key': '{KEY}'}}",
        f"upstream said: invalid key {UPSTREAM}",
        f"Authorization: Basic {UPSTREAM}",
        f"api_key={UPSTREAM}",
    ],
)
def test_scrub_removes_keys_tokens_and_upstream_secrets(scrubber: Scrubber, text: str) -> None:
    scrubbed = scrubber.scrub(text)
    assert KEY not in scrubbed and KEY[3:20] not in scrubbed
    assert UPSTREAM not in scrubbed
    assert "[redacted]" in scrubbed


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {KEY[:8]}\\xff{KEY[8:]}",  # a stray byte in the middle of the key
        f"{KEY[:8]}\\xff{KEY[8:]}",  # x-api-key: the bare key, byte before the 8th character
        f"{KEY[:4]}\\xff{KEY[4:]}",  # right after the prefix
        f"m\\xff{KEY[1:]}",  # inside the prefix: no key pattern can match, the value goes whole
        f"Bearer {KEY}\\xff\\'q\\\\",  # escaped quote and backslash in the repr
    ],
)
def test_an_undecodable_header_value_is_never_shown(scrubber: Scrubber, value: str) -> None:
    """grpcio's own words, rendered as it renders them (the bytes repr of the whole header value)."""
    for quote in ("'", '"'):
        text = f"Invalid encoding on b{quote}{value}{quote}"
        assert scrubber.scrub(text) == "Invalid encoding on [redacted]"
    # The same value anywhere else still loses everything of the key after its first characters.
    elsewhere = scrubber.scrub(f"header authorization: {value} then more")
    assert KEY[8:] not in elsewhere and KEY[10:] not in elsewhere


@pytest.mark.parametrize("header", ["BEARER", "Ba\u017fic", "author\u0131zation:", "X-API-KEY:", "Api_Key="])
def test_a_credential_word_in_any_case_is_scrubbed(scrubber: Scrubber, header: str) -> None:
    # Regexes ignoring case take U+017F (long s) for "s" and U+0131 (dotless i) for "i"; str.lower() does not.
    assert scrubber.scrub(f"{header} opaque-credential-value") == f"{header} [redacted]"


def test_scrub_keeps_ordinary_text(scrubber: Scrubber) -> None:
    text = "model mw-1 answered 200 for key_0123abcd in 12 ms; a short word"
    assert scrubber.scrub(text) == text


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("grpc", logging.ERROR, __file__, 1, message, args, exc_info)


def test_filter_scrubs_arguments_and_tracebacks(scrubber: Scrubber) -> None:
    try:
        raise ValueError(f"bad header Bearer {KEY}")
    except ValueError as error:
        rec = record("Invalid encoding on %r", f"Bearer {KEY}".encode(), exc=error)
    assert scrubber.filter(rec)
    line = JsonFormatter().format(rec)
    assert KEY not in line and KEY[3:] not in line
    parsed = json.loads(line)
    assert parsed["message"] == "Invalid encoding on [redacted]"
    assert "ValueError: bad header Bearer [redacted]" in parsed["exception"]


def row(**changes: object) -> UsageRecord:
    base = UsageRecord(
        request_id="req-1",
        account_id="acct_1",
        key_id="key_1",
        surface="openai",
        model="echo-1",
        provider="echo",
        prompt_tokens=8,
        completion_tokens=4,
        cost=16_000,
        latency_ms=12,
        status=200,
        error_code="",
        created_at=1.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def configured(fmt: str, level: str = "info") -> io.StringIO:
    out = io.StringIO()
    provider = ProviderConfig(name="up", kind="openai", base_url="http://127.0.0.1:1", api_key=UPSTREAM)
    config = Config(providers=(provider,), logging=LoggingConfig(level=level, format=fmt))
    configure_logging(replace(config, keys=replace(config.keys, prefix="mw-")), stream=out)
    return out


def test_json_call_line(root_restored: None) -> None:
    out = configured("json")
    CallLog().write(row(), 0.0031)
    logging.getLogger("grpc").error("header %s", f"Bearer {KEY}")
    logging.getLogger("modelway.providers").warning("upstream rejected %s", UPSTREAM)
    call, grpc_line, provider_line = (json.loads(line) for line in out.getvalue().splitlines())
    assert call == {
        "ts": call["ts"],
        "level": "info",
        "logger": CALLS_LOGGER,
        "message": "call",
        "request_id": "req-1",
        "client_request_id": "",
        "surface": "openai",
        "account_id": "acct_1",
        "key_id": "key_1",
        "model": "echo-1",
        "provider": "echo",
        "status": 200,
        "error_code": "",
        "latency_ms": 12,
        "ttft_ms": 3.1,
        "tokens_in": 8,
        "tokens_out": 4,
        "credits": 0.016,
    }
    assert call["ts"].endswith("Z")
    assert grpc_line["message"] == "header Bearer [redacted]"
    assert provider_line["message"] == "upstream rejected [redacted]"


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone 5:30 from UTC: a line written in local time shows it."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("created", "ts"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1795392696.0015, "2026-11-23T00:11:36.001Z"),
        (1795392696.9999, "2026-11-23T00:11:36.999Z"),  # milliseconds cut, never rounded into the next second
        (1795392697.25, "2026-11-23T00:11:37.250Z"),
        (1795392696.5, "2026-11-23T00:11:36.500Z"),  # a second already left behind is written again
        (1795392696.001, "2026-11-23T00:11:36.001Z"),  # the float is a hair below the millisecond
        (-0.5, "1969-12-31T23:59:59.500Z"),
        (-1.0, "1969-12-31T23:59:59.000Z"),
    ],
)
def test_json_timestamps_are_utc_to_the_millisecond(created: float, ts: str, far_from_utc: None) -> None:
    formatter = JsonFormatter()
    for earlier in (created - 1, created):  # the second before, then this one: no stale second is reused
        rec = record("x")
        rec.created = earlier
        line = json.loads(formatter.format(rec))
    assert line["ts"] == ts


def test_filter_keeps_a_copy_of_the_fields_it_checked(scrubber: Scrubber) -> None:
    fields = {"model": "echo-1"}
    rec = record("call")
    rec.modelway_fields = fields
    assert scrubber.filter(rec)
    fields["model"] = f"Bearer {KEY}"  # changed after the check, before a handler formats the record
    line = json.loads(JsonFormatter().format(rec))
    assert line["model"] == "echo-1"


def test_a_call_line_names_where_it_was_written(root_restored: None) -> None:
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    configured("json")
    logging.getLogger(CALLS_LOGGER).addHandler(handler)
    try:
        CallLog().write(row(), None)
    finally:
        logging.getLogger(CALLS_LOGGER).removeHandler(handler)
    assert [(r.funcName, r.filename, r.levelname) for r in seen] == [("write", "logs.py", "INFO")]


def test_every_call_line_is_made_by_the_record_factory(root_restored: None) -> None:
    """A factory adding per-call context (a trace id, as OpenTelemetry's does) sees each line."""
    trace: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="")
    stock = logging.getLogRecordFactory()

    def tracing(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = stock(*args, **kwargs)
        made.trace_id = trace.get()
        return made

    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    configured("json")
    logging.getLogger(CALLS_LOGGER).addHandler(handler)
    logging.setLogRecordFactory(tracing)
    try:
        call_log = CallLog()
        for trace_id in ("t1", "t2"):
            trace.set(trace_id)
            call_log.write(row(request_id=f"req-{trace_id}"), None)
    finally:
        logging.setLogRecordFactory(stock)
        logging.getLogger(CALLS_LOGGER).removeHandler(handler)
    lines = [(getattr(r, "trace_id", None), getattr(r, "modelway_fields", {}).get("request_id")) for r in seen]
    assert lines == [("t1", "req-t1"), ("t2", "req-t2")]


def test_text_format_and_level(root_restored: None) -> None:
    out = configured("text", level="warning")
    CallLog().write(row(), None)  # info: below the level
    logging.getLogger("modelway.app").warning("store slow")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("WARNING modelway.app: store slow")
    out = configured("text")
    CallLog().write(row(status=404, error_code="model_not_found", model="", provider=""), None)
    line = out.getvalue().strip()
    assert "modelway.calls: call request_id=req-1" in line
    assert "status=404 error_code=model_not_found" in line and "model=" not in line.replace("error_code", "")


def test_text_formatter_keeps_traceback_after_fields() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        rec = record("failed", exc=error)
    rec.modelway_fields = {"request_id": "r1"}
    head, _, tail = TextFormatter().format(rec).partition("\n")
    assert head.endswith("grpc: failed request_id=r1") and "RuntimeError: boom" in tail


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('format = "xml"', 'logging.format must be "json" or "text"'),
        ('level = "loud"', "logging.level must be debug, info, warning or error"),
    ],
)
def test_bad_logging_config_is_named(tmp_path: object, section: str, message: str) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "m.toml"
    path.write_text(f"[logging]\n{section}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, {})


def test_logging_defaults_to_json_at_info(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "m.toml"
    path.write_text("")
    assert load_config(path, {}).logging == LoggingConfig(level="info", format="json")
