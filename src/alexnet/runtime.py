"""Where and how a model runs, decided once for every command: the device (`resolve_device`), the precision
(`resolve_precision` -> `Precision`: autocast for training, a cast weight copy for inference), unwrapping a
DDP / torch.compile wrapper (`unwrap_model`), and a CPU allocator setting that makes PyTorch faster without
changing any result (`tune_cpu_allocator`).

glibc's malloc serves every block above its mmap threshold (at most 32 MiB by default) with a fresh mmap and gives
it back with munmap on free. AlexNet's large tensors (fc6's 151 MB weight and its gradient, bf16 weight copies,
conv1's activations) are allocated and freed every step, so each step pays page faults to zero fresh pages: on a
2-core CPU that is a quarter or more of a training step. Raising the mmap and trim thresholds lets freed blocks
be reused instead (what jemalloc/tcmalloc, which PyTorch's CPU performance guide recommends, do by design).
Measured in benchmarks/model_speed.py.
"""

from __future__ import annotations

import contextlib
import copy as _copy
import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import AlexnetError
from .options import PRECISIONS, check_precision

__all__ = [
    "FP32",
    "PRECISIONS",
    "Precision",
    "NonFiniteScoresError",
    "bf16_native",
    "check_finite_scores",
    "env_local_rank",
    "is_inference_ready",
    "one_malloc_arena",
    "ready_for_inference",
    "release_free_memory",
    "model_input",
    "require_precision",
    "resolve_device",
    "resolve_precision",
    "tune_cpu_allocator",
    "unwrap_model",
]

_M_TRIM_THRESHOLD = -1
_M_ARENA_MAX = -8
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


def _libc_function(name: str) -> Any:
    """glibc's function ``name``, or None off glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def one_malloc_arena() -> bool:
    """Make every thread allocate from glibc's main arena (``mallopt(M_ARENA_MAX, 1)``); True if applied. Call it
    before the threads start: a server's decoding threads would each keep a heap of their own (up to 64 MiB per
    heap, 8 arenas per core), whose free top `release_free_memory` cannot give back; in the main arena it can.
    Measured (`python -m benchmarks serve_memory`): after a burst, 1.35 GB above the start with one arena per
    thread, back to the start with one."""
    mallopt = _libc_function("mallopt")
    if mallopt is None or "MALLOC_ARENA_MAX" in os.environ:  # the user's own choice stands
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, 1))


def release_free_memory() -> bool:
    """Give the pages of freed blocks back to the system (glibc's ``malloc_trim(0)``, every arena); True if it
    ran. The raised thresholds of `tune_cpu_allocator` keep freed blocks for reuse, which a training loop wants;
    a server wants them back after a burst of large requests (docs/RELIABILITY.md: serve's memory). Blocks in use
    are untouched, so results never change. A no-op off glibc."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


def env_local_rank() -> int:
    """This process's GPU index under torchrun (``LOCAL_RANK``), 0 otherwise."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def resolve_device(spec: str | torch.device | None = None, local_rank: int | None = None) -> torch.device:
    """The device a command runs on. ``None``/``"auto"``: this process's GPU (``cuda:LOCAL_RANK`` under torchrun)
    when CUDA is available, else the CPU; a bare ``"cuda"`` also means this process's GPU. Raises `AlexnetError`
    for a name that is no device, or for CUDA where there is none."""
    if local_rank is None:
        local_rank = env_local_rank()
    if isinstance(spec, torch.device):
        spec = str(spec)
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


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX):
    only there is bf16 faster than fp32; elsewhere it is emulated and slower."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved precision (never ``auto``) and the two ways a model runs in it.

    Training keeps fp32 master weights and runs the forward pass under `autocast` (fp16 adds a GradScaler, as
    PyTorch's AMP recipe does). Inference needs no master weights: `inference_model` casts a copy of the weights
    once (channels_last, the fast layout of bf16/fp16 convolutions in oneDNN and cuDNN), so no per-op cast is paid
    and the caller's fp32 model is left as it was."""

    name: str  # fp32 | bf16 | fp16

    def __post_init__(self) -> None:
        if self.name not in _DTYPES:
            raise AlexnetError(
                f"precision: {self.name!r} is not a resolved precision ({', '.join(_DTYPES)}); "
                "alexnet.runtime.resolve_precision turns a word (auto included) into one"
            )

    @property
    def dtype(self) -> torch.dtype | None:
        """The reduced dtype, None for fp32."""
        return _DTYPES[self.name]

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Training's forward pass: mixed precision under torch.autocast, or nothing for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """fp16 training's loss scaler (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(device.type) if self.name == "fp16" else None

    def inference_model(self, model: nn.Module, device: torch.device, *, copy: bool = True) -> nn.Module:
        """The network an inference pass runs: ``model`` itself (eval mode, on ``device``) for fp32, or when its
        weights already are in this precision; otherwise a copy with its weights cast once to the reduced dtype,
        channels_last. ``copy=False`` casts ``model`` itself instead (a command's own model: no second copy)."""
        model.eval().to(device)
        param = next(model.parameters(), None)
        if self.dtype is None or (param is not None and param.dtype == self.dtype):
            return model
        net = _copy.deepcopy(model) if copy else model
        return net.to(device, self.dtype, memory_format=torch.channels_last).eval()


FP32 = Precision("fp32")  # the exact figures: the library's default wherever a precision is taken


def is_inference_ready(model: nn.Module, precision: Precision, device: torch.device) -> bool:
    """Whether ``model`` already is what `Precision.inference_model` makes of it: in eval mode, its weights on
    ``device`` and in ``precision``'s dtype (fp32's own for fp32). A command prepares its model once, where it loads
    it (`alexnet.weights.load_for_inference`); predict and serve then take it as it is."""
    param = next(model.parameters(), None)
    if param is None or model.training or param.dtype != (precision.dtype or torch.float32):
        return False
    return param.device.type == device.type and (device.index is None or param.device.index == device.index)


def ready_for_inference(
    model: nn.Module, precision: Precision, device: torch.device, *, copy: bool = True
) -> nn.Module:
    """``model`` as it is when `is_inference_ready`, else `Precision.inference_model` (``copy``: see there): the
    model is prepared once, at the boundary that loads it, and travels prepared."""
    precision = require_precision(precision)
    if is_inference_ready(model, precision, device):
        return model
    return precision.inference_model(model, device, copy=copy)


def require_precision(value: Precision) -> Precision:
    """``value`` if it is a `Precision`, else a one-line error: library functions take the resolved form only
    (a word such as ``"auto"`` depends on the device and is resolved once, by `resolve_precision`, where the
    command starts)."""
    if not isinstance(value, Precision):
        raise AlexnetError(
            f"precision: expected an alexnet.runtime.Precision, got {value!r}; "
            "alexnet.runtime.resolve_precision(word, device) resolves a word"
        )
    return value


def model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``model`` takes it: the dtype its weights carry (a model cast by `Precision.inference_model`
    takes its own reduced dtype, channels_last), else ``x`` unchanged. The one place an inference input's dtype
    is decided (predict, evaluate, features, serve)."""
    param = next(unwrap_model(model).parameters(), None)
    if param is None or x.dtype == param.dtype or not param.dtype.is_floating_point:
        return x
    if x.ndim != 4:
        return x.to(param.dtype)
    return x.to(param.dtype, memory_format=torch.channels_last)


def resolve_precision(spec: str | Precision, device: torch.device) -> Precision:
    """``auto`` -> bf16 where ``device`` computes it natively, else fp32; fp32/bf16/fp16 as given. The one place a
    precision word becomes a `Precision` (`AlexnetError` for an unknown word)."""
    if isinstance(spec, Precision):
        return spec
    name = check_precision(str(spec))
    if name == "auto":
        name = "bf16" if bf16_native(device) else "fp32"
    return Precision(name)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel and/or torch.compile wrapper (the module itself otherwise)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


class NonFiniteScoresError(AlexnetError, ValueError):
    """The model's output holds NaN or infinity: never printed as a ``nan`` probability with exit 0."""


def check_finite_scores(scores: torch.Tensor, what: str) -> torch.Tensor:
    """``scores`` (logits or probabilities) when every value is finite, else `NonFiniteScoresError` naming
    ``what``. The weights readers refuse NaN weights; this catches what is left: finite weights that overflow
    (float16's range ends at 65504, a crafted bias of 3e38) and anything loaded by other means."""
    if not bool(torch.isfinite(scores).all()):
        raise NonFiniteScoresError(
            f"{what}: the model gave NaN or infinite scores (its weights overflow; with --precision fp16 try fp32); "
            "no result is reported"
        )
    return scores
