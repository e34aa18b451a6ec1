"""Measuring helpers shared by the benchmark scripts: peak memory of one call, and the machine's description.

Peak memory is the growth of the process's peak resident set (``VmHWM``) during a call
over its resident set just before it; writing ``5`` to ``/proc/self/clear_refs`` resets
the peak first (Linux only; elsewhere the figures are ``None``). Memory that the
allocator kept from an earlier call and hands out again is not counted: run in a fresh
process, or with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``), so that large
blocks go back to the system when freed.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from collections.abc import Callable
from typing import Any


def status_kb(key: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (``VmRSS``, ``VmHWM``), or None where there is none."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current resident set; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def timed_peak(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, float | None]:
    """Call ``fn``; return (its result, wall-clock seconds, peak MB above the resident set before the call)."""
    gc.collect()
    can_measure = reset_peak()
    before = status_kb("VmRSS")
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    elapsed = time.perf_counter() - start
    peak = status_kb("VmHWM")
    if not can_measure or peak is None or before is None:
        return out, elapsed, None
    return out, elapsed, max(peak - before, 0) / 1024


def machine_line() -> str:
    """One line naming the machine a figure was measured on."""
    mem = _mem_total_gib()
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.node() or 'unknown host'} ({cpu}, {os.cpu_count()} cores"
        + (f", {mem:.0f} GiB" if mem else "")
        + f", Python {platform.python_version()})"
    )


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None
