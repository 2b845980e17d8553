"""Keep the allocator's freed memory in the process during CPU training.

A train step at batch 32 frees and re-allocates gigabytes of activations. glibc hands large blocks back to
the kernel on free (mmap above its threshold, trimming the heap top), so every step page-faults them in
again and the kernel zeroes each page: measured on the S0 student at batch 32, 1 thread, about half of the
step's time went to the kernel (`clear_page`), and none once the memory is kept (benchmarks/distill_step.py).
It is best effort: in 2 of 3 bare probes (a fresh process re-allocating 256 MiB) the kept memory was not reused,
probably glibc's mmap fallback when the heap cannot grow in place; so the effect is measured in the benchmark,
not asserted in a test.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and never trim it (glibc only); returns whether it took effect.

    The process's resident size then stays at its peak, which a training process reaches every step anyway.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:  # the process's own symbols: no ldconfig subprocess as ctypes.util.find_library would run
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # M_MMAP_MAX 0: no block is mmap'd (munmap'd on free); M_TRIM_THRESHOLD INT_MAX: the heap top is kept.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
