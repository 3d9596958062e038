"""Process-wide CPU settings for a process that trains or runs a CalQL agent.

`configure_cpu_process()` changes the whole process, so building an agent does not call it: each
entry point calls it once, after setting torch's thread count (pretrain, finetune, evaluate, the
policy and learner nodes, the in-process ROS launcher and the speed benchmarks). Why each setting
exists: docs/agent.md, "CPU settings".
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

_malloc_set = False


def configure_cpu_process() -> bool:
    """Flush subnormal floats to zero, and keep freed memory in glibc's heap.

    - Subnormal floats (|x| < 1.2e-38) appear in the weights and activations as training goes
      on, and x86 CPUs compute with them many times slower; flushed to zero, they cost nothing.
    - PyTorch's CPU tensors come straight from malloc. By default glibc serves an update's large
      activations from freshly mapped pages and returns them to the OS on free, so each update
      pays page faults for memory it used a moment before. Heap allocation up to 32 MB
      (`MMAP_THRESHOLD`) and a 1 GiB trim threshold (`TRIM_THRESHOLD`) keep those pages: the
      process holds on to its peak working set instead.

    Safe to call more than once. Returns True where the malloc settings were applied (Linux with
    glibc); the subnormal flush is set wherever the CPU supports it."""
    global _malloc_set
    torch.set_flush_denormal(True)
    if _malloc_set:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl has mallopt, as a no-op)
        return False
    _malloc_set = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                       and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _malloc_set


def cpu_process_state() -> dict[str, bool]:
    """What `configure_cpu_process` has set in this process: `flush_subnormals` (read back by
    multiplying a subnormal float) and `malloc_settings` (glibc's thresholds applied)."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    return {"flush_subnormals": (tiny * 1.0).item() == 0.0, "malloc_settings": _malloc_set}


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bfloat16 matmuls run natively here: a CUDA device that supports them, or a CPU with
    AVX512-BF16 or AMX-BF16 units (Linux /proc/cpuinfo flags). Elsewhere bf16 is emulated and
    slower than fp32."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """`auto` -> bf16 where `native_bf16(device)`, else fp32; fp32 and bf16 stay as they are."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"

