"""What every REST parser does first: decode the raw JSON body, and name a JSON value's type in errors."""

from __future__ import annotations

from typing import Any

import orjson

from modelway.errors import GatewayError, Reason

__all__ = ["json_type", "load_json"]


def load_json(body: bytes, message: str) -> Any:
    """The decoded body; INVALID_BODY otherwise, worded by `message` (in the surface's words), where
    `{problem}` stands for what is wrong and where ("unexpected character at line 1 column 2")."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problem = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise GatewayError(Reason.INVALID_BODY, message.format(problem=problem)) from None


def json_type(value: Any) -> str:
    """A JSON value's type as an error names it: "a string", "an array", "null", ..."""
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (str, "a string"), (int, "an integer"), (float, "a number")):
        if isinstance(value, kind):
            return name
    return "an object" if isinstance(value, dict) else "an array" if isinstance(value, list) else "a value"
