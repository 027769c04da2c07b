from __future__ import annotations

import pytest

from modelway.core.access import credential


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"authorization": "Bearer mw-1"}, "mw-1"),
        ({"authorization": "bearer   mw-1 "}, "mw-1"),
        ({"x-api-key": "mw-2"}, "mw-2"),
        ({"x-goog-api-key": "mw-3"}, "mw-3"),
        ({"x-envoy-original-path": "/api/v1beta/models/m:generateContent?alt=sse&key=mw-4"}, "mw-4"),
        ({"authorization": "Basic abc", "x-api-key": "mw-5"}, "mw-5"),
        ({"authorization": "Bearer mw-6", "x-api-key": "other"}, "mw-6"),
        ({"authorization": "Bearer "}, ""),
        ({}, ""),
    ],
)
def test_credential_header_styles(metadata: dict[str, str], expected: str) -> None:
    assert credential(metadata) == expected
