"""Give the C heap's free memory back to the operating system when a session is freed.

A session's frames are decoded, and its tensors allocated, on several threads (the model
thread, its readers' decode threads, the prefetcher), so glibc's malloc serves them from
several arenas. Freed, those chunks stay in the arenas: reused by later sessions, but counted
in the replica's RSS, which then never comes back down to where it was before the session
(measured by scripts/bench_session_churn.py; docs/benchmarks.md, "Memory comes back").
``malloc_trim(0)`` returns every arena's free pages to the kernel. glibc on Linux only; a no-op
elsewhere (musl, macOS, Windows) and where libc cannot be loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable

_lock = threading.Lock()


def _load_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only: musl has none
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS (``malloc_trim(0)``). True if anything was
    released; False if nothing was or the platform has no ``malloc_trim``. Thread-safe; it
    takes milliseconds (it walks every arena), and ctypes lets go of the GIL meanwhile."""
    if _malloc_trim is None:
        return False
    with _lock:  # one walk at a time: two sessions deleted together need only one
        return bool(_malloc_trim(0))
