"""Process-wide settings: the device a command runs on, and a CPU allocator setting that makes PyTorch faster
without changing any result.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB by default) with a fresh mmap and gives
it back with munmap on free. AlexNet's large tensors (fc6's 151 MB weight and its gradient, bf16 weight copies,
conv1's activations) are allocated and freed every step, so each step pays page faults to zero fresh pages: on a
2-core CPU that is a quarter or more of a training step. Raising the mmap and trim thresholds lets freed blocks
be reused instead (what jemalloc/tcmalloc, which PyTorch's CPU performance guide recommends, do by design).
Measured in benchmarks/model_speed.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

from .errors import AlexnetError

__all__ = ["tune_cpu_allocator", "resolve_device"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: above every tensor AlexNet allocates per step
_done = False


def tune_cpu_allocator() -> bool:
    """Raise glibc malloc's mmap and trim thresholds once per process; True if applied. A no-op elsewhere
    (macOS, musl, Windows) and when ALEXNET_MALLOC_TUNING=0 or glibc's own MALLOC_* variables are set."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("ALEXNET_MALLOC_TUNING", "1") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False  # the user chose their own allocator settings
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    return _done


def resolve_device(spec: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """The device a command runs on. ``None``/``"auto"``: this process's GPU (``cuda:LOCAL_RANK`` under torchrun)
    when CUDA is available, else the CPU; a bare ``"cuda"`` also means this process's GPU. Raises `AlexnetError`
    for a name that is no device, or for CUDA where there is none."""
    if spec is None or str(spec) == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise AlexnetError(f"unknown device {str(spec)!r} (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AlexnetError(f"device {str(spec)!r} asked for, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
