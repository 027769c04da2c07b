"""SHARED_STATE_UNAVAILABLE in every surface's own 503 shape (the live path: test_scale_out's Redis restart)."""

from __future__ import annotations

import json

import grpc

from modelway.errors import GatewayError, Reason
from modelway.surfaces.catalog import CHAT_SEND
from modelway.surfaces.gemini import GEMINI
from modelway.surfaces.native import NATIVE, with_retry_after
from modelway.surfaces.openai import OPENAI

MESSAGE = "The gateway's shared limits and balances are unavailable for a moment; the call was not made."


def _error() -> GatewayError:
    return GatewayError(Reason.SHARED_STATE_UNAVAILABLE, MESSAGE, retry_after=2.0)


def test_every_surface_answers_503_in_its_own_shape() -> None:
    status, body = OPENAI.error_response(_error())
    assert (status, json.loads(body)["error"]) == (
        503,
        {"message": MESSAGE, "type": "api_error", "code": "shared_state_unavailable", "param": None},
    )
    status, body = GEMINI.error_response(_error())
    gemini = json.loads(body)["error"]
    assert (status, gemini["code"], gemini["status"], gemini["message"]) == (503, 503, "UNAVAILABLE", MESSAGE)
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"} in gemini["details"]
    status, body = NATIVE.error_response(with_retry_after(_error()))
    assert (status, json.loads(body)) == (503, {"error": {"code": "SERVICE_UNAVAILABLE", "message": MESSAGE}})
    status, body = CHAT_SEND.error_response(_error())
    assert (status, json.loads(body)) == (503, {"success": False, "message": MESSAGE})


def test_the_retry_after_is_the_errors_own_and_grpc_says_unavailable() -> None:
    error = with_retry_after(_error())
    assert error.retry_after_header == "2"
    assert error.grpc_code is grpc.StatusCode.UNAVAILABLE
