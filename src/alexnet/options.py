"""The vocabularies of the values every command shares, interpreted in one place: ``--precision``, ``--progress``,
``--workers``, ``--device``'s spelling and the weights flags (`WeightsSource`). Imports nothing heavy (no torch), so
the command line can check a flag before any model code loads; `alexnet.runtime` turns the checked words into torch
objects and `alexnet.weights.load_model` reads a `WeightsSource`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TextIO

from .errors import AlexnetError

__all__ = [
    "PRECISIONS",
    "PROGRESS_MODES",
    "WeightsSource",
    "check_precision",
    "check_workers",
    "cpu_count",
    "default_workers",
    "max_workers",
    "resolve_progress",
]

# auto: bf16 where the device computes it natively (CUDA with bf16, AVX512-BF16 / AMX CPUs), else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# auto: a bar on a terminal, a log line every few percent otherwise (a file, a pipe, CI); none: silent.
PROGRESS_MODES = ("auto", "bar", "log", "none")
_WORKERS_PER_CPU = 4  # past this, loader processes only add memory and start-up (each holds a torch)


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, as torch's DataLoader counts them)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """Loader workers when none are asked for: one per CPU, at most 4, so that no command starts more workers
    than the machine has cores (DataLoader warns past that) and the main process keeps a core on a small one."""
    return min(4, cpu_count())


def max_workers() -> int:
    """The most workers a command accepts: 4 per CPU (at least 8)."""
    return max(8, _WORKERS_PER_CPU * cpu_count())


def check_workers(value: int | str | None) -> int:
    """``None`` -> `default_workers`; else the count, refused (one line) below 0 or above `max_workers`."""
    if value is None:
        return default_workers()
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise AlexnetError(f"workers: expected a number of workers, got {value!r}") from None
    if isinstance(value, bool) or n < 0:
        raise AlexnetError(f"workers: expected 0 or more, got {value!r}")
    limit = max_workers()
    if n > limit:
        raise AlexnetError(
            f"workers: {n} is more than this machine can use ({cpu_count()} CPUs: at most {limit}); "
            f"the default is {default_workers()}"
        )
    return n


def check_precision(value: str) -> str:
    """The precision word, checked against `PRECISIONS` (``auto`` is resolved per device by `runtime`)."""
    if value not in PRECISIONS:
        raise AlexnetError(f"unknown precision {value!r}; choose one of {', '.join(PRECISIONS)}")
    return value


def resolve_progress(mode: str | bool | None, *, is_main: bool = True, stream: TextIO | None = None) -> str:
    """``auto`` -> ``bar`` when ``stream`` (stderr) is a terminal, else ``log``; ``none`` on every process but the
    first of a distributed job. ``True``/``False``/``None`` (older API) mean auto/none/none."""
    if mode is True:
        mode = "auto"
    elif mode is False or mode is None:
        mode = "none"
    if mode not in PROGRESS_MODES:
        raise AlexnetError(f"progress: {mode!r} is not one of {', '.join(PROGRESS_MODES)}")
    if not is_main or mode == "none":
        return "none"
    if mode == "auto":
        stream = stream if stream is not None else sys.stderr
        try:
            return "bar" if stream.isatty() else "log"
        except (AttributeError, ValueError):
            return "log"
    return mode


@dataclass(frozen=True)
class WeightsSource:
    """Where weights come from and how to read them: the one form weights travel in from the command line (or a
    config file) to `alexnet.weights.load_model`. ``source``: a recorded name (``torchvision``, ``bvlc_alexnet``,
    ``caffe:NAME``; ``alexnet models`` lists them) or a file (.safetensors, .pth/.pt, bvlc .npy, .caffemodel);
    ``arch``: the architecture where the file does not say it; ``allow_pickle``: a pickled .npy may be read (pickle
    runs code: given on the command line only, never saved); a Caffe model's ``prototxt``, ``mean`` (a
    .binaryproto file, or three numbers B,G,R in 0..255, Caffe's order, also as the text ``"104,117,123"``) and
    ``labels``. Torch-free, so that a training config (`alexnet.train.TrainConfig.weights`) can carry one."""

    source: str
    arch: str | None = None
    allow_pickle: bool = False
    prototxt: str | None = None
    mean: str | tuple[float, float, float] | None = None
    labels: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str | Path) or not str(self.source):
            raise AlexnetError(f"weights: expected a recorded name or a file, got {self.source!r}")
        object.__setattr__(self, "source", str(self.source))
        if isinstance(self.labels, list | tuple):  # class names given as a list (the Python API)
            object.__setattr__(self, "labels", tuple(str(n) for n in self.labels))
        for name in ("arch", "prototxt", "labels"):
            v = getattr(self, name)
            if isinstance(v, tuple):
                continue
            if v is not None and not isinstance(v, str | Path):
                raise AlexnetError(f"weights: {name} must be a name or a file, got {v!r}")
            object.__setattr__(self, name, None if v is None else str(v))
        object.__setattr__(self, "mean", _read_mean(self.mean))

    def __str__(self) -> str:
        return self.source

    @classmethod
    def of(cls, value: WeightsSource | str | Path | Mapping[str, Any], *, allow_pickle: bool = False) -> WeightsSource:
        """``value`` as a source: itself, a name or path alone, or a config file's object of these fields
        (``{"source": "x.caffemodel", "prototxt": "deploy.prototxt"}``; never ``allow_pickle``, which only the
        caller's ``allow_pickle`` gives)."""
        if isinstance(value, WeightsSource):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)} - {"allow_pickle"}
            unknown = sorted(set(value) - known)
            if unknown or "source" not in value:
                what = f"unknown key(s) {', '.join(unknown)}" if unknown else "no 'source'"
                raise AlexnetError(
                    f"weights: {what}; expected a name, a file or an object of {', '.join(sorted(known))}"
                )
            return cls(**dict(value), allow_pickle=allow_pickle)
        return cls(value, allow_pickle=allow_pickle)  # type: ignore[arg-type]

    def to_config(self) -> str | dict[str, Any]:
        """What a run's config.json records: the source alone, or the object of the fields given (never
        ``allow_pickle``: trust is given anew on each command line)."""
        extra = {k: getattr(self, k) for k in ("arch", "prototxt", "mean", "labels") if getattr(self, k) is not None}
        extra = {k: list(v) if isinstance(v, tuple) else v for k, v in extra.items()}
        return {"source": self.source, **extra} if extra else self.source


def _read_mean(value: Any) -> str | tuple[float, float, float] | None:
    """``--mean`` (the one reader): a .binaryproto file, or three numbers B,G,R (a sequence or ``"B,G,R"``)."""
    if value is None:
        return None
    if isinstance(value, Path) or (isinstance(value, str) and "," not in value):
        return str(value)
    parts = value.split(",") if isinstance(value, str) else value
    try:
        b, g, r = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise AlexnetError(f"--mean: expected a .binaryproto file or three numbers B,G,R, got {value!r}") from None
    return (b, g, r)
