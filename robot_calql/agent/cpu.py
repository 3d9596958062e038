"""Process-wide CPU settings for a process that trains or runs a CalQL agent.

Both are set once per process by `CalQL(...)` on CPU, on purpose: every CPU process that builds
an agent trains or acts with it. Measured on this project's 2-core machines (docs/agent.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 1 << 30

_done = False


def configure_cpu_process() -> bool:
    """Flush subnormal floats to zero, and keep freed memory in glibc's heap.

    - Subnormals (|x| < 1.2e-38) appear as training goes on and x86 CPUs compute with them ~100x
      slower: a 6000-update pre-training fell from 21 to 8 updates/s after step 3000, and 21 came
      back with them flushed to zero (docs/training.md).
    - PyTorch's CPU tensors come straight from malloc. glibc serves the update's 8-16 MB
      activations with fresh mmap'd or re-grown heap pages and hands them back on free, so every
      update paid ~7000 page faults (30 MB of zeroed pages) and the state-mode bf16 update ran
      at 22-23 updates/s instead of 27-28. Heap allocation up to 32 MB and a 1 GiB trim threshold
      keep those pages: the process holds on to its peak working set instead.

    Returns True where the malloc settings were applied (Linux with glibc)."""
    global _done
    torch.set_flush_denormal(True)
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl has mallopt, as a no-op)
        return False
    _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
