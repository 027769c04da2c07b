"""Structured logs: one JSON object a line, one line per call, and no secret in any line.

`configure_logging` is called once by the command line before anything
runs. Every record, ours or a library's, passes the `Scrubber` on its way
out: key secrets (the configured prefix and what follows), bearer tokens,
API-key headers and the configured upstream secrets are replaced by
"[redacted]", whatever logged them. The per-call line carries ids, figures
and outcomes, never a prompt or a completion.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import orjson

from modelway.config import MICRO, Config
from modelway.store import UsageRecord

__all__ = ["CALLS_LOGGER", "CallLog", "JsonFormatter", "Scrubber", "TextFormatter", "configure_logging"]

CALLS_LOGGER = "modelway.calls"
_FIELDS = "modelway_fields"  # the LogRecord attribute holding a line's structured fields
_REDACTED = "[redacted]"
# What a key secret, a bearer token or a header value is made of, up to a quote, space or separator.
# A byte that is not UTF-8 shows as \xNN in a bytes repr: part of the token, not its end (a key with a
# stray byte in the middle is still a key).
# (Written as runs between escapes, not an alternation per character: every log line passes here.)
_ESCAPED_BYTE = r"\\x[0-9a-fA-F]{2}"
_TOKEN_CHAR = r"[^\s'\",;\\]"
_TOKEN = rf"(?:{_TOKEN_CHAR}+|{_ESCAPED_BYTE})(?:{_TOKEN_CHAR}*{_ESCAPED_BYTE})*{_TOKEN_CHAR}*"
_SECRET_HEADERS = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|x-goog-api-key|api[-_]key)(['\"]?\s*[:=,]\s*b?['\"]?)"
    r"(?!bearer\b)" + _TOKEN
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+" + _TOKEN)
# grpcio logs a whole header value it cannot decode ("Invalid encoding on b'...'"), and which header it
# was is not said: the value may be a key with the bad byte anywhere, even in its prefix. Never shown.
_UNDECODABLE = re.compile(r"""(Invalid encoding on )b(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
# Upstream secrets shorter than this are not scrubbed by value: they would match ordinary words.
_MIN_SECRET = 8


class Scrubber(logging.Filter):
    """Removes anything that looks like a secret from a record before any handler formats it."""

    def __init__(self, key_prefix: str, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        key_char = r"[A-Za-z0-9_\-]"
        # At least 8 characters or escaped bytes after the prefix (checked ahead), then as many as follow.
        self._key = re.compile(
            re.escape(key_prefix)
            + rf"(?=(?:{key_char}|{_ESCAPED_BYTE}){{8}})(?:{key_char}*{_ESCAPED_BYTE})*{key_char}*"
        )
        self._key_prefix = key_prefix
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True))
        # Every log line passes here and almost none holds a secret: whether the lowered text holds
        # one of the literal words the patterns need (the key prefix, a configured secret, grpcio's
        # "Invalid encoding", "bearer"/"basic" and the credential headers' names) tells when the
        # patterns can be skipped. Substring tests: one regex alternation of them cost 4 us a line.
        self._triggers = tuple(
            {
                word.lower()
                for word in (key_prefix, *self._secrets, "Invalid encoding", "bearer", "basic", "authorization")
            }
            | {"api-key", "api_key"}
        )

    def _triggered(self, text: str) -> bool:
        if not text.isascii():
            # The patterns ignore case as regexes do (U+017F, long s, matches "s"; U+0131, dotless i,
            # matches "i"); str.lower() does not.
            return True
        lowered = text.lower()
        return any(word in lowered for word in self._triggers)

    def scrub(self, text: str) -> str:
        if not self._triggered(text):
            return text  # no pattern below can match: each needs one of the trigger's words
        if "Invalid encoding" in text:
            text = _UNDECODABLE.sub(lambda m: m.group(1) + _REDACTED, text)
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        text = self._key.sub(self._key_prefix + _REDACTED, text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
        return _SECRET_HEADERS.sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        # The message is rendered here so that an argument carrying a secret is scrubbed too.
        record.msg, record.args = self.scrub(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, Mapping):
            # One search over all the strings (no trigger word holds "\n", so none is made across two)
            # tells whether any field needs scrubbing: the per-call line has a dozen and they rarely do.
            if self._triggered("\n".join([v for v in fields.values() if isinstance(v, str)])):
                fields = {k: self.scrub(v) if isinstance(v, str) else v for k, v in fields.items()}
            # A copy of its own: what the caller's mapping holds later is not what was scrubbed.
            setattr(record, _FIELDS, dict(fields))
        return True


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, _FIELDS, None)
    return fields if isinstance(fields, Mapping) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message, then the record's fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # dictConfig and subclasses pass Formatter's own arguments
        # The timestamp up to its seconds, made once a second: lines come many a second, and
        # datetime's isoformat cost a microsecond and a half a line.
        # (One tuple, replaced whole: a formatter shared by two handlers is used from two threads.)
        self._second: tuple[int, str] | None = None

    def _timestamp(self, created: float) -> str:
        # As datetime does: rounded to the microsecond first, then cut to the millisecond (a time
        # on a millisecond is a float a little below it), seconds counted down (before 1970 too).
        second, micro = divmod(round(created * 1_000_000), 1_000_000)
        cached = self._second
        if cached is None or cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{cached[1]}.{micro // 1000:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a person at a terminal: the classic line, then the fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        head, _, tail = text.partition("\n")
        pairs = " ".join(f"{key}={value}" for key, value in fields.items() if value not in ("", None))
        return f"{head} {pairs}" + (f"\n{tail}" if tail else "")


def configure_logging(config: Config, stream: TextIO | None = None) -> None:
    """The process's one log handler: the configured format and level, every record scrubbed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if config.logging.format == "json" else TextFormatter())
    handler.addFilter(Scrubber(config.keys.prefix, (p.api_key for p in config.providers)))
    logging.basicConfig(level=config.logging.level.upper(), handlers=[handler], force=True)
    # Neither format shows the thread or process: not gathering them for every record is the logging
    # module's documented optimisation, a fifth of a call line's cost. (The caller's file and line are
    # still gathered: a record asking for its stack, stack_info=True, needs them.)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class CallLog:
    """The call's one line: who, what, how it ended and what it cost. No prompt, no completion, no secret."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(CALLS_LOGGER)

    def write(self, row: UsageRecord, first_token_seconds: float | None) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        fields: dict[str, object] = {
            "request_id": row.request_id,
            # Added beside the request id by the request-id work; absent on rows that predate it.
            "client_request_id": row.client_request_id,
            "surface": row.surface,
            "account_id": row.account_id,
            "key_id": row.key_id,
            "model": row.model,
            "provider": row.provider,
            "status": row.status,
            "error_code": row.error_code,
            "latency_ms": row.latency_ms,
            "ttft_ms": None if first_token_seconds is None else round(first_token_seconds * 1000, 1),
            "tokens_in": row.prompt_tokens,
            "tokens_out": row.completion_tokens,
            "credits": row.cost / MICRO,
        }
        # The record is made here rather than by logger.info(), which would walk the stack for the
        # caller's file and line on every call: a tenth of the line's cost, to say what is known.
        # (Made by the logging module each time: a record factory, say one adding a trace id, sees every line.)
        logger.handle(
            logger.makeRecord(CALLS_LOGGER, logging.INFO, __file__, 0, "call", (), None, "write", {_FIELDS: fields})
        )
