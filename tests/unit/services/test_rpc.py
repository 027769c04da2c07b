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


def test_the_incoming_x_request_id_is_not_the_clients_id() -> None:
    assert client_request_id({"x-request-id": "dup-id-1"}) == ""
