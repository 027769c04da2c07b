"""Pieces of request translation that several wire formats share."""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from typing import Any

import orjson

from modelway.errors import GatewayError, Reason

__all__ = ["arguments_object", "data_url"]


def arguments_object(arguments: str, param: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object wire formats other than OpenAI's want ("" is {})."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise GatewayError(Reason.INVALID_VALUE, "Tool call arguments must be a JSON object.", param=param)
    return value


def data_url(url: str, param: str) -> tuple[str, str]:
    """The media type and base64 data of a data: URL (percent-encoded data is base64-encoded here)."""
    header, comma, payload = url.removeprefix("data:").partition(",")
    if not url.startswith("data:") or not comma or not payload:
        raise GatewayError(Reason.INVALID_VALUE, "An image data: URL has no data.", param=param)
    media, _, encoding = header.partition(";")
    data = payload if encoding.endswith("base64") else base64.b64encode(urllib.parse.unquote_to_bytes(payload)).decode()
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GatewayError(Reason.INVALID_VALUE, "An image data: URL is not valid base64.", param=param) from exc
    return media or "image/jpeg", data
