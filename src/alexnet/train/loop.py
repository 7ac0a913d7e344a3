"""One pass over the training data (torchvision's ``train_one_epoch``): forward under the run's autocast, the
loss checked every step, backward (through fp16's GradScaler when there is one), the optimizer step, running
totals that an interrupted epoch can continue from, and the stop flag that SIGINT/SIGTERM set."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import Batch
from ..distributed import any_rank
from ..progress import Progress
from .config import TrainError

__all__ = [
    "EpochOptions",
    "EpochStats",
    "NonFiniteLoss",
    "StopFlag",
    "install_signal_handlers",
    "step_hook",
    "train_one_epoch",
]


@dataclass
class EpochStats:
    """Running totals of one epoch (sums, so an interrupted epoch can be continued and reported whole)."""

    loss_sum: float = 0.0
    correct: int = 0
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0
    bad: list[str] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else math.nan

    @property
    def acc1(self) -> float:
        return 100.0 * self.correct / self.samples if self.samples else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "bad"}


class NonFiniteLoss(TrainError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint stays."""


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop finishes the current step, saves and returns."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        self.requested = True
        self.signum = signum


def install_signal_handlers(stop: StopFlag) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop``: the loop finishes its step, saves, returns. A second signal still kills."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):

        def handler(signum: int, frame: Any, _prev: Any = None) -> None:
            if stop.requested:  # second signal: give up at once
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            stop(signum, frame)

        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore


@dataclass
class EpochOptions:
    """What every epoch of a run shares, set up once, so that `train_one_epoch` takes few arguments."""

    device: torch.device
    num_classes: int
    batch_transform: nn.Module | None = None  # uint8 (N, 3, S, S) -> normalised float (+ PCA lighting)
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # a fresh one per step
    scaler: torch.amp.GradScaler | None = None  # fp16's loss scaler
    iter_scheduler: Any = None  # stepped every iteration (Caffe's step policy); None with the plateau schedule
    channels_last: bool = False  # NHWC images for the convolutions
    distributed: bool = False  # every rank agrees, step by step, on a non-finite loss and on stopping
    stop: StopFlag | None = None  # set by a signal: finish the step and return
    total_steps: int | None = None  # steps in a whole epoch (for progress)
    progress: str = "none"  # bar | log | none (already resolved)
    log_every: int = 50  # steps between log lines
    monitor: Any = None  # `alexnet.train.diagnostics.Monitor`: the first batch, then each step's loss and labels


_STEP_HOOKS: list[Callable[[int, EpochStats], Any]] = []


@contextlib.contextmanager
def step_hook(fn: Callable[[int, EpochStats], Any]) -> Iterator[None]:
    """Call ``fn(epoch, stats)`` after every training step while the block runs, with the epoch's running totals
    (host numbers the step has already computed: no extra device sync). For a caller that needs a finer curve
    than metrics.csv's one row per epoch: `alexnet.ablate` measures Figure 1 in images seen. Unused, it costs
    one empty-list check per step."""
    _STEP_HOOKS.append(fn)
    try:
        yield
    finally:
        _STEP_HOOKS.remove(fn)


def _rate(stats: EpochStats) -> float:
    return stats.samples / stats.seconds if stats.seconds > 0 else 0.0


class _EpochMeter:
    """The epoch's progress: a bar with loss/accuracy/images per second, or a line every ``log_every`` steps."""

    def __init__(self, o: EpochOptions, epoch: int, stats: EpochStats) -> None:
        self.o, self.epoch = o, epoch
        self.start_step, self.seconds0 = stats.steps, stats.seconds
        self.bar = None
        if o.progress == "bar":
            self.bar = Progress(o.total_steps, f"epoch {epoch}", "bar", unit="step", initial=stats.steps)

    def update(self, stats: EpochStats) -> None:
        o = self.o
        if self.bar is not None:
            self.bar.update(1, loss=f"{stats.loss:.4f}", acc=f"{stats.acc1:.1f}", img_s=f"{_rate(stats):.0f}")
        elif o.progress == "log" and (stats.steps % o.log_every == 0 or stats.steps == o.total_steps):
            per_step = (stats.seconds - self.seconds0) / max(1, stats.steps - self.start_step)
            eta = (o.total_steps - stats.steps) * per_step if o.total_steps else 0.0
            print(
                f"epoch {self.epoch} step {stats.steps}/{o.total_steps or '?'} loss {stats.loss:.4f} "
                f"acc {stats.acc1:.2f}% {_rate(stats):.0f} img/s eta {eta:.0f}s",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _next_batch(it: Iterator, stop: StopFlag | None) -> tuple[Any, bool]:
    """(the next batch or None at the end, whether a stop ended the loader)."""
    try:
        return next(it), False
    except StopIteration:
        return None, False
    except Exception:
        # Ctrl-C on a terminal reaches the DataLoader workers too, which then exit; the stop was asked for.
        if stop is not None and stop.requested:
            return None, True
        raise


def _inputs(
    batch: Batch | Sequence[Any], stats: EpochStats, o: EpochOptions
) -> tuple[torch.Tensor, torch.Tensor] | None:  # noqa: E501
    """A `Batch` on the device (decoded or cropped there when it came encoded) and transformed; None when every
    image was bad."""
    b = Batch.of(batch).materialized(o.device)
    stats.bad.extend(b.bad)
    if len(b.labels) == 0:  # every image of this batch was bad
        return None
    labels = b.labels
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= o.num_classes:
        bad = lo if lo < 0 else hi
        raise TrainError(f"label {bad} out of range: the data set has {o.num_classes} classes (0..{o.num_classes - 1})")
    b = b.on(o.device)
    x, labels = b.images, b.labels
    if o.batch_transform is not None:
        x = o.batch_transform(x)  # uint8 (N, 3, S, S) -> normalised float, PCA lighting when training
    if o.channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, labels


def _step(
    net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor, o: EpochOptions,
    flags: torch.Tensor, where: str,
) -> tuple[float, torch.Tensor, bool]:  # fmt: skip
    """One optimisation step: (loss, logits, whether any rank asked to stop). A non-finite loss raises
    `NonFiniteLoss` before the weights it would produce exist."""
    with o.autocast():
        logits = net(x)  # (N, num_classes)
        loss = F.cross_entropy(logits.float(), labels)
    loss_value = float(loss.detach())
    nonfinite = not math.isfinite(loss_value)
    requested = o.stop is not None and o.stop.requested
    if o.distributed:  # every rank must stop at the same step, or the next all-reduce hangs
        nonfinite, requested = any_rank([nonfinite, requested], flags)
    if nonfinite:
        raise NonFiniteLoss(f"loss is not finite ({loss_value}) at {where}")
    optimizer.zero_grad(set_to_none=True)
    if o.scaler is not None:
        o.scaler.scale(loss).backward()
        o.scaler.step(optimizer)
        o.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    if o.iter_scheduler is not None:
        o.iter_scheduler.step()
    return loss_value, logits, requested


def train_one_epoch(
    net: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    options: EpochOptions,
    *,
    epoch: int,
    stats: EpochStats | None = None,
) -> tuple[EpochStats, bool]:
    """One pass over ``loader`` (batches ``(x, labels[, bad_names])``; ``x`` uint8 images or cached features).

    Returns the totals (continuing ``stats`` when resuming inside an epoch) and whether a stop was requested.
    The loss is checked every step: a non-finite value raises `NonFiniteLoss` before the weights it produced
    could be saved.
    """
    stats = stats or EpochStats()
    net.train()
    t0, seconds0 = time.perf_counter(), stats.seconds
    meter = _EpochMeter(options, epoch, stats)
    flags = torch.zeros(2, device=options.device)  # [non-finite loss, stop requested], agreed by every rank
    it = iter(loader)
    while True:
        batch, stopped = _next_batch(it, options.stop)
        if batch is None:
            break
        inputs = _inputs(batch, stats, options)
        if inputs is None:
            continue
        x, labels = inputs
        where = f"epoch {epoch}, step {stats.steps + 1}"
        if options.monitor is not None and options.monitor.wants_batch:
            options.monitor.first_batch(x, epoch, stats.steps + 1)  # once per run: against the preprocessing
        loss_value, logits, stopped = _step(net, optimizer, x, labels, options, flags, where)
        if options.monitor is not None:
            options.monitor.step(loss_value, labels, epoch, stats.steps + 1)  # no device sync: a float and a device add
        n = len(labels)
        stats.loss_sum += loss_value * n
        stats.correct += int((logits.detach().argmax(dim=1) == labels).sum())
        stats.samples += n
        stats.steps += 1
        stats.seconds = seconds0 + (time.perf_counter() - t0)
        meter.update(stats)
        for hook in _STEP_HOOKS:
            hook(epoch, stats)
        if stopped:
            break
    meter.close()
    return stats, stopped
