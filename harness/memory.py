"""Keep freed memory in the process (glibc's malloc on Linux) instead of handing it back to the
operating system after every training step (docs/design.md D8).

By default glibc serves a large allocation (a meta-training batch's activations: 14 MB for
ANML's 84 x 64 x 26 x 26 feature map) from a fresh mmap and unmaps it when torch frees it, and
it trims the top of the heap once 128 KB or more lie free there. A training step then pays,
for every large tensor, page faults that zero the memory again before any arithmetic. Raising
the mmap threshold to its maximum (32 MB) and the trim threshold to 1 GB makes freed blocks
reusable by the next step. Measured on ANML's quick meta-step: 195.3 -> 182.5 ms
(docs/profile-meta-step.md), at the price of keeping the largest step's blocks mapped.
Allocation does not touch the arithmetic: the rows are bit-identical.

`keep_freed_memory()` applies the setting once per process; `harness.experiment.execute` calls
it, so every command, sweep worker and API call runs with it. HARNESS_KEEP_MEMORY=0 turns it
off. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
"""glibc's mallopt parameter numbers (malloc.h)."""
MMAP_THRESHOLD = 32 << 20
"""glibc's largest allowed mmap threshold on 64-bit systems."""
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the setting (once); True when it is in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("HARNESS_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_TOP_PAD, TOP_PAD)))
    return _applied
