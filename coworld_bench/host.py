"""The training process's host memory allocator.

An update allocates and frees the same large tensors every step (at the authors' CoWorld
size, convolution activations of ~100 MB each). glibc's malloc serves blocks above its
mmap threshold with fresh ``mmap`` pages and gives them back to the kernel on free, so
every step page-faults its working set in again: ~480,000 minor faults and 0.9-1.8 s of
kernel time per update there (``benchmarks/host_memory.py``). ``keep_freed_memory``
makes malloc serve every block from its heap and keep freed memory for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
ENV = "COWORLD_BENCH_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to serve large blocks from the heap (no ``mmap``) and to keep
    up to 2 GiB of freed memory at the heap's top instead of returning it to the kernel.
    The resident size then settles near its peak after a few updates (a few percent above,
    measured: a freed block is reused once its neighbours are free too, since torch's
    aligned allocation of the same size needs slightly more than the hole it left); tensors
    are aligned as before (torch aligns CPU buffers itself), so the numbers do not change.
    Returns whether it applied: not on other C libraries, nor with the environment
    variable ``COWORLD_BENCH_KEEP_FREED_MEMORY=0``."""
    if os.environ.get(ENV, "1") == "0" or platform.system() != "Linux" \
            or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
