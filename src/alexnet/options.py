"""The vocabularies of the values every command shares, interpreted in one place: ``--precision``, ``--progress``,
``--workers`` and ``--device``'s spelling. Imports nothing heavy (no torch), so the command line can check a flag
before any model code loads; `alexnet.runtime` turns the checked words into torch objects.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from .errors import AlexnetError

__all__ = [
    "PRECISIONS",
    "PROGRESS_MODES",
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
