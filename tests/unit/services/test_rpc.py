"""The caller's own request id, as the usage row keeps it."""

from __future__ import annotations

from modelway.services._rpc import client_request_id


def test_absent_is_empty() -> None:
    assert client_request_id({}) == ""


def test_kept_as_sent_when_printable_ascii() -> None:
    assert client_request_id({"x-client-request-id": "req-abc 123"}) == "req-abc 123"


def test_clipped_to_128_characters() -> None:
    assert client_request_id({"x-client-request-id": "a" * 5000}) == "a" * 128


def test_non_printable_and_non_ascii_characters_are_dropped() -> None:
    assert client_request_id({"x-client-request-id": "a\x00b\tc\u00e9d\x7f"}) == "abcd"


def test_a_direct_callers_x_request_id_is_its_id_but_not_envoys() -> None:
    assert client_request_id({"x-request-id": "dup-id-1"}) == "dup-id-1"
    assert client_request_id({"x-request-id": "envoy-uuid", "x-forwarded-proto": "http"}) == ""
    assert client_request_id({"x-request-id": "a", "x-client-request-id": "b"}) == "b"
