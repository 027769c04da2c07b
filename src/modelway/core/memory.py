"""Giving memory back to the operating system after one large request.

glibc keeps freed heap memory (per thread arena) for reuse, so one large body
would leave the process's RSS at its peak for good. malloc_trim(0) returns
the free pages; elsewhere (musl, macOS) there is nothing to call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["release_memory"]


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


# Looked up once, at import: a constant, not state.
_MALLOC_TRIM = _find_malloc_trim()


def release_memory() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
