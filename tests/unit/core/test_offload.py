"""The one off-loop rule: large bodies are worked on in a worker thread, small ones on the loop."""

from __future__ import annotations

import threading

import pytest

from modelway.core.offload import OFFLOAD_BYTES, off_loop_if_large


async def test_a_small_body_is_worked_on_on_the_loop_and_a_large_one_in_a_thread() -> None:
    loop_thread = threading.get_ident()
    assert await off_loop_if_large(OFFLOAD_BYTES, threading.get_ident) == loop_thread
    assert await off_loop_if_large(OFFLOAD_BYTES + 1, threading.get_ident) != loop_thread


async def test_an_error_in_the_thread_reaches_the_caller() -> None:
    def refuse() -> int:
        raise ValueError("bad body")

    with pytest.raises(ValueError, match="bad body"):
        await off_loop_if_large(OFFLOAD_BYTES + 1, refuse)
