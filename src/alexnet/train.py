"""One training loop for ``alexnet train`` (from scratch) and ``alexnet finetune`` (from loaded weights).

The recipe is the paper's (Krizhevsky, Sutskever & Hinton 2012, section 5): SGD with batch 128, momentum 0.9,
weight decay 5e-4, learning rate 0.01 divided by 10 when the validation error stops improving (three times in the
paper, about 90 epochs), dropout 0.5 (section 4.2), the paper's initialisation, random crops + horizontal flips +
PCA lighting (section 4.1). Caffe's ``step`` policy (x0.1 every ``step_size`` iterations) is the alternative schedule.

Laid out as torchvision's ``references/classification/train.py``: plain functions with explicit arguments
(`train_one_epoch`, `main`), precision chosen once, DDP started by torchrun. The run folder is described in
docs/CONTRACTS.md; ``state.pt`` holds tensors and plain values only, so it loads with ``weights_only=True``.

Fine-tuning keeps apart what the tutorial's code conflates: ``train_layers`` (which layers get gradients; the others
are frozen: no gradient and not in the optimizer, so neither weight decay nor momentum can move them) and ``reinit``
(which layers start from fresh weights). When every convolutional layer is frozen, ``cache_features`` computes the
network's frozen, deterministic front once and trains the rest from that cache: the pooled conv5 features, or
fc6's output when fc6 is frozen too and its dropout comes after it (the paper's layout, ``alexnet2012`` and
``caffenet``: the tutorial's fc7+fc8 fine-tuning then runs two layers per step instead of eight).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import runtime
from .data.device_decode import materialize
from .errors import AlexnetError
from .evaluate import EvalResult, eval_sampler, evaluate
from .models import CONV_LAYERS, INIT_SCHEMES, LAYER_NAMES, AlexNet, AlexNetConfig, create_model, init_layer
from .weights import Preprocessing, atomic_write, check_state_dict, default_preprocessing, load_model, save_model

__all__ = [
    "TrainError",
    "TrainConfig",
    "TrainResult",
    "EpochStats",
    "METRICS_COLUMNS",
    "load_config_file",
    "resolve_config",
    "config_from_sources",
    "build_model",
    "freeze_layers",
    "make_param_groups",
    "train_one_epoch",
    "compute_features",
    "load_state",
    "main",
]

METRICS_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc1",
    "val_loss",
    "val_acc1",
    "val_acc5",
    "images_per_s",
    "seconds",
)
STATE_FORMAT = "alexnet-train-state"
STATE_VERSION = 1


class TrainError(AlexnetError, ValueError):
    """A training run that cannot start or continue as asked; the message is one line for the user."""


# --- configuration ------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults are the paper's recipe (section 5); precedence when resolved:
    these defaults < ``--config file.json`` < command-line flags. The resolved config is the run's config.json."""

    # data
    data: str = ""  # anything `alexnet.data.datasets.open_dataset` reads (image folder, list file, prepared set)
    val_split: float = 0.0  # fraction held out for validation when the data has no validation split of its own
    out: str = "runs/train"  # the run folder (config.json, metrics.csv, checkpoints)
    stats: str | None = None  # stats.json from `alexnet stats`: mean/std and PCA eigen-pairs of the training set
    # model (from scratch)
    arch: str = "alexnet2012"  # registered architecture (`alexnet models`)
    input_size: int | None = None  # crop side; None = the architecture's (227 for alexnet2012, 224 for alexnet_owt)
    resize_size: int | None = None  # short side before cropping; None = 256 (scaled by input_size/224 below 224)
    model_options: dict[str, Any] = field(default_factory=dict)  # further AlexNetConfig overrides (study switches)
    dropout: float = 0.5  # p of both dropout layers (section 4.2)
    init: str = "paper"  # paper | caffe | torchvision | kaiming initialisation (section 5)
    # fine-tuning
    weights: str | None = None  # start from these weights (any `load_model` source); required by finetune
    trust_pickle: bool = False  # allow a pickled .npy (bvlc_alexnet.npy) to be loaded
    train_layers: list[str] | None = None  # layers that learn (paper names); None = all; the rest are frozen
    reinit: list[str] = field(default_factory=list)  # layers re-initialised before training (fc8 always, if resized)
    new_layer_lr_mult: float = 1.0  # learning-rate multiplier of re-initialised layers
    cache_features: bool = False  # all conv layers frozen: compute the frozen front once, train the rest from it
    # recipe (section 5)
    epochs: int = 90  # "roughly 90 cycles through the training set"
    batch_size: int = 128  # global batch (split evenly over DDP ranks)
    lr: float = 0.01  # initial learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "plateau"  # plateau: /10 when val error stops improving; step: Caffe's x0.1 every step_size iters
    lr_factor: float = 0.1  # the "divide by 10"
    plateau_patience: int = 5  # epochs without improvement before the learning rate drops
    max_lr_drops: int = 3  # the paper reduced the learning rate three times
    step_size: int = 100_000  # iterations between drops with schedule=step (bvlc_alexnet solver: 100000)
    augment: bool = True  # random crop + horizontal flip + PCA lighting (section 4.1); False: eval geometry
    lighting: float = 0.1  # sigma of the PCA lighting coefficients alpha_i (section 4.1); 0 disables
    # engineering
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + GradScaler) | auto (bf16 where native)
    channels_last: bool = False  # NHWC memory format for the convolutions
    compile: bool = False  # torch.compile the model
    decode_on_device: bool = False  # JPEGs decoded in batches on the device (nvJPEG on a GPU); not with the cache
    workers: int = 4  # DataLoader worker processes per rank
    seed: int = 0  # seeds model init, data order, augmentation and dropout
    on_bad_image: str = "skip"  # skip (count and list in skipped.txt) | fail
    resume: str | None = None  # a run folder to continue exactly where it stopped
    progress: str = "auto"  # auto (bar on a terminal, log lines otherwise) | bar | log | none
    log_every: int = 50  # steps between plain log lines
    tensorboard: bool = True  # write TensorBoard events when torch.utils.tensorboard imports

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    "schedule": ("plateau", "step"),
    "precision": ("fp32", "bf16", "fp16", "auto"),
    "on_bad_image": ("skip", "fail"),
    "progress": ("auto", "bar", "log", "none"),
    "init": INIT_SCHEMES,
}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file (YAML too when PyYAML is installed) into a dict of `TrainConfig` keys."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainError(f"{path}: no such config file") from None
    except OSError as e:
        raise TrainError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise TrainError(f"{path}: YAML config files need PyYAML; use JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise TrainError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TrainError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise TrainError(f"{path}: a config file must hold an object of settings")
    return data


def resolve_config(*layers: Mapping[str, Any] | None, source_names: Sequence[str] = ()) -> TrainConfig:
    """Merge setting layers, later ones winning, over the dataclass defaults, then check every value."""
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    merged: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        if not layer:
            continue
        unknown = sorted(set(layer) - set(known))
        if unknown:
            where = source_names[i] if i < len(source_names) else "config"
            raise TrainError(f"{where}: unknown setting(s) {', '.join(unknown)}")
        merged.update(layer)
    cfg = TrainConfig(**merged)
    check_config(cfg)
    return cfg


def _layer_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if not isinstance(value, list | tuple):
        raise TrainError(f"{what}: expected a list of layer names, got {value!r}")
    names = [str(v) for v in value]
    bad = [n for n in names if n not in LAYER_NAMES]
    if bad:
        raise TrainError(f"{what}: unknown layer {bad[0]!r}; layers are {', '.join(LAYER_NAMES)}")
    return names


def check_config(cfg: TrainConfig) -> None:
    """Raise `TrainError` for a value no run can use (one line naming the setting)."""
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise TrainError(f"{name}: {getattr(cfg, name)!r} is not one of {', '.join(choices)}")
    positive = ("epochs", "batch_size", "plateau_patience", "step_size", "log_every")
    for name in positive:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "plateau_patience" else 1):
            raise TrainError(f"{name}: expected a positive integer, got {v!r}")
    for name in ("lr", "new_layer_lr_mult"):
        v = getattr(cfg, name)
        if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise TrainError(f"{name}: expected a positive number, got {v!r}")
    for name in ("momentum", "weight_decay", "lighting"):
        v = getattr(cfg, name)
        if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise TrainError(f"{name}: expected a number >= 0, got {v!r}")
    if not 0.0 < cfg.lr_factor < 1.0:
        raise TrainError(f"lr_factor: expected a number in (0, 1), got {cfg.lr_factor!r}")
    if not 0.0 <= cfg.val_split < 1.0:
        raise TrainError(f"val_split: expected a fraction in [0, 1), got {cfg.val_split!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise TrainError(f"dropout: expected a probability in [0, 1), got {cfg.dropout!r}")
    if cfg.max_lr_drops < 0 or cfg.workers < 0:
        raise TrainError("max_lr_drops and workers must be >= 0")
    for name in ("input_size", "resize_size"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise TrainError(f"{name}: expected a positive integer, got {v!r}")
    if cfg.input_size and cfg.resize_size and cfg.resize_size < cfg.input_size:
        raise TrainError(f"resize_size {cfg.resize_size} is smaller than input_size {cfg.input_size}")
    if not isinstance(cfg.model_options, dict):
        raise TrainError("model_options: expected an object of AlexNetConfig fields")
    if cfg.train_layers is not None:
        cfg.train_layers = _layer_list(cfg.train_layers, "train_layers")
        if not cfg.train_layers:
            raise TrainError("train_layers: at least one layer must learn")
    cfg.reinit = _layer_list(cfg.reinit, "reinit")
    if cfg.cache_features:
        frozen_convs = cfg.train_layers is not None and not set(cfg.train_layers) & set(CONV_LAYERS)
        if not frozen_convs:
            raise TrainError(
                "cache_features needs every conv layer frozen: add --train-layers with fc layers only, e.g. fc6,fc7,fc8"
            )
        if set(cfg.reinit) & set(CONV_LAYERS):
            raise TrainError(
                "cache_features: a re-initialised conv layer would be cached untrained; drop it from reinit"
            )


# --- distributed --------------------------------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False  # this module initialised the process group (and destroys it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> DistInfo:
    """Join the process group that torchrun describes through RANK / WORLD_SIZE / LOCAL_RANK (gloo on CPU, nccl
    on CUDA); a plain run is rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise TrainError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, started_here=True)


def resolve_device(spec: str, info_local_rank: int) -> torch.device:
    """`alexnet.runtime.resolve_device`, with its error as a `TrainError` naming the setting."""
    try:
        return runtime.resolve_device(spec, info_local_rank)
    except AlexnetError as e:
        raise TrainError(str(e)) from None


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX):
    only there is bf16 autocast faster than fp32; elsewhere it is emulated and slower."""
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


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device computes it natively, else ``fp32``; other values unchanged."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_native(device) else "fp32"


class EpochSampler(DistributedSampler):
    """torch's DistributedSampler (a permutation seeded by ``seed + epoch``, ranks taking interleaved shares) that
    can skip the first ``skip`` indices of this rank's share: the steps an interrupted epoch has already done.

    A single process uses it too (world size 1), so the data order depends only on (seed, epoch): a resumed run
    sees exactly the batches an uninterrupted one would, and rank r of N sees batch b's share of the same global
    batch that one process with N times the batch would see.
    """

    def __init__(self, dataset: Any, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        it = super().__iter__()
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


# --- model --------------------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def _with_class_names(pre: Preprocessing, class_names: Sequence[str]) -> Preprocessing:
    return Preprocessing.from_dict({**pre.to_dict(), "class_names": list(class_names)})


def build_model(cfg: TrainConfig, class_names: Sequence[str]) -> tuple[AlexNet, Preprocessing, set[str]]:
    """The model to train, its `Preprocessing` (class names = the data set's), and the names of its new layers.

    From scratch: `create_model` with the paper's init and `default_preprocessing`, mean/std from ``cfg.stats``.
    Fine-tuning: ``load_model(cfg.weights)`` keeps the weights' own preprocessing (torchvision's normalisation for
    torchvision's weights, BVLC's 0-255 scale for the .npy), copies every layer by its paper name into a model
    with ``num_classes = len(class_names)`` and the requested dropout, and re-initialises ``cfg.reinit`` and fc8
    when its class count differs (new layers: the tutorial re-initialises everything it trains; we do not).
    """
    n = len(class_names)
    if cfg.weights is None:
        overrides = dict(cfg.model_options)
        overrides.update(dropout=cfg.dropout, init=cfg.init)
        if cfg.input_size is not None:
            overrides["input_size"] = cfg.input_size
        try:
            model = create_model(cfg.arch, num_classes=n, **overrides)
        except (ValueError, TypeError) as e:
            raise TrainError(f"model: {e}") from None
        pre = default_preprocessing(model.config, class_names)
        size = model.config.input_size
        resize = cfg.resize_size or (256 if size >= 224 else round(size * 256 / 224))  # the paper's 256:224 ratio
        pre = Preprocessing.from_dict({**pre.to_dict(), "resize_size": resize})
        if cfg.stats is not None:
            st = _load_stats(cfg.stats)
            pre = Preprocessing.from_dict(
                {**pre.to_dict(), "mean": list(map(float, st.mean)), "std": list(map(float, st.std))}
            )
        return model, pre, set()  # every layer is fresh; "new layers" (own lr multiplier) is a fine-tuning notion

    loaded, pre = load_model(cfg.weights, allow_pickle=cfg.trust_pickle)
    old_cfg = loaded.config.to_dict()
    new_cfg = {**old_cfg, "num_classes": n, "dropout": cfg.dropout, **cfg.model_options}
    if cfg.input_size is not None:
        new_cfg["input_size"] = cfg.input_size
    try:
        model = AlexNet(AlexNetConfig.from_dict(new_cfg))
    except (ValueError, TypeError) as e:
        raise TrainError(f"model: {e}") from None
    new: set[str] = set(cfg.reinit)
    if loaded.config.num_classes != n:
        new.add("fc8")
    for name in LAYER_NAMES:
        if name in new:
            init_layer(model.layer(name), name, model.config.init)
            continue
        src, dst = loaded.layer(name), model.layer(name)
        if src.weight.shape != dst.weight.shape:
            raise TrainError(
                f"{cfg.weights}: {name} has shape {tuple(src.weight.shape)}, the model asks for "
                f"{tuple(dst.weight.shape)}; add {name} to --reinit to train it afresh"
            )
        dst.load_state_dict(src.state_dict())
    if cfg.input_size is not None or cfg.resize_size is not None:
        size = cfg.input_size or pre.input_size
        resize = cfg.resize_size or (pre.resize_size if size >= 224 else round(size * 256 / 224))
        pre = Preprocessing.from_dict({**pre.to_dict(), "input_size": size, "resize_size": resize})
    return model, _with_class_names(pre, class_names), new


def _load_stats(path: str) -> Any:
    from .data import stats as stats_mod

    return stats_mod.load_stats(path)


def freeze_layers(model: AlexNet, train_layers: Sequence[str] | None) -> list[str]:
    """Set ``requires_grad`` False on every layer not in ``train_layers`` (None: all learn); return the learners."""
    learners = list(LAYER_NAMES) if train_layers is None else [n for n in LAYER_NAMES if n in set(train_layers)]
    for name in LAYER_NAMES:
        for p in model.layer(name).parameters():
            p.requires_grad_(name in learners)
    return learners


def make_param_groups(
    model: AlexNet, learners: Sequence[str], new_layers: set[str], lr: float, new_layer_lr_mult: float
) -> list[dict[str, Any]]:
    """SGD parameter groups holding only the layers that learn (frozen ones are absent, so weight decay and
    momentum cannot move them); re-initialised layers get ``lr * new_layer_lr_mult``. Order follows the paper's
    layer order, which keeps the optimizer state dict stable across runs (needed for exact resume)."""
    base = [p for n in learners if n not in new_layers for p in model.layer(n).parameters()]
    fresh = [p for n in learners if n in new_layers for p in model.layer(n).parameters()]
    groups = []
    if base:
        groups.append({"params": base, "lr": lr, "name": "base"})
    if fresh:
        groups.append({"params": fresh, "lr": lr * new_layer_lr_mult, "name": "new"})
    return groups


# --- one epoch ----------------------------------------------------------------------------------------------------
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


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop finishes the current step, saves and returns."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        self.requested = True
        self.signum = signum


def _progress_mode(mode: str, is_main: bool) -> str:
    if not is_main or mode == "none":
        return "none"
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return mode


def train_one_epoch(
    net: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    epoch: int,
    num_classes: int,
    batch_transform: nn.Module | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scaler: torch.amp.GradScaler | None = None,
    iter_scheduler: Any = None,
    channels_last: bool = False,
    stats: EpochStats | None = None,
    total_steps: int | None = None,
    stop: _StopFlag | None = None,
    distributed: bool = False,
    progress: str = "none",
    log_every: int = 50,
) -> tuple[EpochStats, bool]:
    """One pass over ``loader`` (batches ``(x, labels[, bad_names])``; ``x`` uint8 images or cached features).

    Returns the totals (continuing ``stats`` when resuming inside an epoch) and whether a stop was requested.
    The loss is checked every step: a non-finite value raises `NonFiniteLoss` before the weights it produced
    could be saved.
    """
    stats = stats or EpochStats()
    net.train()
    start_step = stats.steps
    t0 = time.perf_counter()
    seconds0 = stats.seconds
    bar = None
    if progress == "bar":
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start_step, desc=f"epoch {epoch}", unit="step", leave=False)
    stop_requested = False
    flags = torch.zeros(2, device=device)  # [non-finite loss, stop requested], agreed by every rank
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            break
        except Exception:
            # Ctrl-C on a terminal reaches the DataLoader workers too, which then exit; the stop was asked for.
            if stop is not None and stop.requested:
                stop_requested = True
                break
            raise
        x, labels = batch[0], batch[1]
        if len(batch) > 2 and batch[2]:
            stats.bad.extend(batch[2])
        x, labels, dropped = materialize(x, labels, device)  # a batch still encoded: decoded on the device
        stats.bad.extend(dropped)
        if len(labels) == 0:  # every image of this batch was bad
            continue
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise TrainError(f"label {bad} out of range: the data set has {num_classes} classes (0..{num_classes - 1})")
        x = x.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if batch_transform is not None:
            x = batch_transform(x)  # uint8 (N, 3, S, S) -> normalised float, PCA lighting when training
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = net(x)  # (N, num_classes)
            loss = F.cross_entropy(logits.float(), labels)
        loss_value = float(loss.detach())
        nonfinite = not math.isfinite(loss_value)
        requested = stop is not None and stop.requested
        if distributed:  # every rank must stop at the same step, or the next all-reduce hangs
            flags[0], flags[1] = float(nonfinite), float(requested)
            dist.all_reduce(flags)
            nonfinite, requested = bool(flags[0] > 0), bool(flags[1] > 0)
        if nonfinite:
            raise NonFiniteLoss(f"loss is not finite ({loss_value}) at epoch {epoch}, step {stats.steps + 1}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if iter_scheduler is not None:
            iter_scheduler.step()
        n = len(labels)
        stats.loss_sum += loss_value * n
        stats.correct += int((logits.detach().argmax(dim=1) == labels).sum())
        stats.samples += n
        stats.steps += 1
        stats.seconds = seconds0 + (time.perf_counter() - t0)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss:.4f}", acc=f"{stats.acc1:.1f}", img_s=f"{_rate(stats):.0f}")
        elif progress == "log" and (stats.steps % log_every == 0 or stats.steps == total_steps):
            per_step = (stats.seconds - seconds0) / max(1, stats.steps - start_step)
            eta = (total_steps - stats.steps) * per_step if total_steps else 0.0
            print(
                f"epoch {epoch} step {stats.steps}/{total_steps or '?'} loss {stats.loss:.4f} acc {stats.acc1:.2f}% "
                f"{_rate(stats):.0f} img/s eta {eta:.0f}s",
                flush=True,
            )
        if requested:
            stop_requested = True
            break
    if bar is not None:
        bar.close()
    return stats, stop_requested


def _rate(stats: EpochStats) -> float:
    return stats.samples / stats.seconds if stats.seconds > 0 else 0.0


# --- feature cache ------------------------------------------------------------------------------------------------
class FeatureDataset(Dataset):
    """Cached features (pooled conv5, or the output of the frozen classifier front): ``ds[i] = (float (D,), label)``."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels
        self.targets = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[i], self.labels[i]


def cache_split(model: AlexNet) -> int:
    """How many of ``model.classifier``'s modules the feature cache can absorb: those before the first that
    learns or draws random numbers (a Dropout, whose mask differs every step). 0 for torchvision's layout (dropout
    comes first); 2 (fc6 and its ReLU) for the paper's layout with fc6 frozen."""
    for i, m in enumerate(model.classifier):
        if isinstance(m, nn.Dropout) or any(p.requires_grad for p in m.parameters()):
            return i
    return len(model.classifier)


@torch.no_grad()
def compute_features(
    model: AlexNet,
    loader: Iterable,
    *,
    device: torch.device,
    front: int = 0,
    batch_transform: nn.Module | None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    channels_last: bool = False,
    progress: str = "none",
    desc: str = "features",
) -> tuple[FeatureDataset, list[str]]:
    """The features of every good image in ``loader``: pooled conv5 (N, 9216), then ``model.classifier[:front]``
    (see `cache_split`), in eval mode (no dropout is involved), kept in fp32 on the CPU; and the names of the
    images that were skipped."""
    was = model.training
    model.eval()
    feats, labels, bad = [], [], []
    it: Iterable = loader
    if progress == "bar":
        from tqdm.auto import tqdm

        it = tqdm(loader, desc=desc, unit="batch", leave=False)
    try:
        for batch in it:
            x, y = batch[0], batch[1]
            if len(batch) > 2 and batch[2]:
                bad.extend(batch[2])
            if len(y) == 0:
                continue
            x = x.to(device, non_blocking=True)
            if batch_transform is not None:
                x = batch_transform(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                f = model.classifier[:front](model.forward_features(x))  # (N, 9216) or (N, 4096)
            feats.append(f.float().cpu())
            labels.append(y.to(torch.int64).cpu())
    finally:
        model.train(was)
    if not feats:
        raise TrainError("no readable images to compute features from")
    return FeatureDataset(torch.cat(feats), torch.cat(labels)), bad


class _Classifier(nn.Module):
    """The classifier of an AlexNet from module ``front`` on, fed from cached features; shares the parameters and
    has the model's ``config``."""

    def __init__(self, model: AlexNet, front: int = 0) -> None:
        super().__init__()
        self.classifier = model.classifier[front:]  # a Sequential of the same module objects
        self.config = model.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


# --- state and files ----------------------------------------------------------------------------------------------
def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a step touches, as tensors and plain values (so state.pt loads with weights_only=True)."""
    np_state = np.random.get_state()
    version, keys, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(version), "keys": list(keys), "gauss": gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["keys"]), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def load_state(run_dir: str | Path) -> dict[str, Any]:
    """The training state of a run folder (``state.pt``), loaded with ``weights_only=True``."""
    path = Path(run_dir) / "state.pt"
    if not Path(run_dir).is_dir():
        raise TrainError(f"{run_dir}: no such run folder to resume")
    if not path.exists():
        raise TrainError(f"{run_dir}: no state.pt to resume from (the run saved no checkpoint yet)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt file can raise anything from the unpickler
        raise TrainError(f"{path}: not a readable training state ({str(e).splitlines()[0] if str(e) else e})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainError(f"{path}: not an alexnet training state")
    return state


def _torch_save_atomic(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _metrics_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in METRICS_COLUMNS})
    return buf.getvalue()


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row: dict[str, Any] = {"epoch": int(r["epoch"])}
        for k in METRICS_COLUMNS[1:]:
            row[k] = float(r[k]) if r.get(k) not in (None, "") else math.nan
        out.append(row)
    return out


def _fmt(v: float) -> str:
    return "" if isinstance(v, float) and math.isnan(v) else repr(float(v))


class _TensorBoard:
    """TensorBoard scalars when the optional extra is installed (timm's ``update_summary`` habit); else nothing."""

    def __init__(self, log_dir: Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                return
            self.writer = SummaryWriter(str(log_dir))

    def log(self, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        for k in METRICS_COLUMNS[1:]:
            v = row[k]
            if isinstance(v, float) and not math.isnan(v):
                self.writer.add_scalar(k, v, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --- main ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What a run ends with: the folder, the epochs done, the best validation top-1 error, why it stopped."""

    out: Path
    epochs_done: int
    best_val_top1_error: float | None
    metrics: list[dict[str, Any]]
    interrupted: bool = False
    skipped: int = 0


def _open_datasets(cfg: TrainConfig, pre: Preprocessing, augment: bool) -> tuple[Any, Any | None]:
    from .data import datasets

    train_ds = datasets.open_dataset(
        cfg.data,
        split="train",
        val_split=cfg.val_split,
        seed=cfg.seed,
        transform=pre.geometry(augment),
        on_bad_image=cfg.on_bad_image,
    )
    try:
        val_ds = datasets.open_dataset(
            cfg.data,
            split="val",
            val_split=cfg.val_split,
            seed=cfg.seed,
            transform=pre.geometry(False),
            on_bad_image=cfg.on_bad_image,
        )
    except AlexnetError:
        if cfg.val_split > 0:
            raise
        val_ds = None  # no validation split and none asked for: the plateau schedule watches the training error
    if val_ds is not None and len(val_ds) == 0:
        val_ds = None
    return train_ds, val_ds


def _class_names(ds: Any) -> list[str]:
    classes = getattr(ds, "classes", None)
    if classes is None:
        targets = getattr(ds, "targets", None)
        if targets is None:
            raise TrainError("the training data set has neither classes nor targets")
        return [str(i) for i in range(max(targets) + 1)] if len(targets) else []
    return [str(c) for c in classes]


def _check_data(train_ds: Any, classes: Sequence[str], source: str) -> None:
    if len(train_ds) == 0:
        raise TrainError(f"{source}: the training data set is empty (no images found)")
    if len(classes) < 2:
        raise TrainError(f"{source}: found {len(classes)} class; training a classifier needs at least 2")
    targets = getattr(train_ds, "targets", None)
    if targets is not None and len(targets):
        lo, hi = min(targets), max(targets)
        if lo < 0 or hi >= len(classes):
            bad = lo if lo < 0 else hi
            raise TrainError(f"{source}: label {bad} out of range for {len(classes)} classes (0..{len(classes) - 1})")


def _make_loader(
    ds: Any, *, batch_size: int, sampler: Any, workers: int, seed: int, device: torch.device | None = None
) -> DataLoader:
    """``datasets.make_loader``; on a GPU a prepared set's batches are cropped there (`CropBatch`, made real by
    `materialize` in the training step), so the loader only reads the stored images into pinned memory."""
    from .data import datasets

    crop_device = device if device is not None and device.type == "cuda" else None
    return datasets.make_loader(
        ds, batch_size=batch_size, sampler=sampler, workers=workers, seed=seed, crop_device=crop_device
    )


def main(
    config: TrainConfig,
    *,
    train_dataset: Any | None = None,
    val_dataset: Any | None = None,
) -> TrainResult:
    """Train (or fine-tune) as ``config`` says and write the run folder; returns a `TrainResult`.

    ``train_dataset`` / ``val_dataset``: data sets that follow the `alexnet.data` contract (``ds[i]`` is
    ``(uint8 (3, S, S) image, label)`` already cropped to the input size, attributes ``classes``/``targets``),
    used instead of opening ``config.data``. One whose ``transform`` attribute is None gets the run's
    `Preprocessing.geometry` (training or evaluation).
    """
    cfg = dataclasses.replace(config)
    check_config(cfg)
    runtime.tune_cpu_allocator()  # what the alexnet command does at start-up: same results, faster CPU steps
    resume_state = load_state(cfg.resume) if cfg.resume else None
    if resume_state is not None and Path(cfg.resume).resolve() != Path(cfg.out).resolve():
        cfg.out = str(cfg.resume)  # a resumed run continues in its own folder

    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = setup_distributed(device.type)
    try:
        return _run(cfg, info, device, resume_state, train_dataset, val_dataset)
    finally:
        if info.started_here and dist.is_initialized():
            dist.destroy_process_group()


def _run(
    cfg: TrainConfig,
    info: DistInfo,
    device: torch.device,
    resume_state: dict[str, Any] | None,
    train_dataset: Any | None,
    val_dataset: Any | None,
) -> TrainResult:
    out = Path(cfg.out)
    if cfg.batch_size % info.world_size:
        raise TrainError(f"batch_size {cfg.batch_size} is not divisible by the {info.world_size} processes")
    local_batch = cfg.batch_size // info.world_size
    augment = cfg.augment and not cfg.cache_features  # the cache needs the same pixels every epoch
    progress = _progress_mode(cfg.progress, info.is_main)

    _seed_everything(cfg.seed + info.rank)

    # --- model and preprocessing: from the resumed state, the weights, or fresh
    if resume_state is not None:
        model, pre, new_layers = _model_from_state(resume_state, cfg)
    else:
        classes = _class_names(train_dataset) if train_dataset is not None else _peek_classes(cfg)
        _check_classes(classes, cfg.data)
        model, pre, new_layers = build_model(cfg, classes)
    if cfg.weights is not None and resume_state is None:
        cfg.arch = _guess_arch_name(model)  # fine-tuning: the architecture is the weights' own
    class_names = list(pre.class_names or [])

    # --- data
    if train_dataset is None:
        train_ds, val_ds = _open_datasets(cfg, pre, augment)
    else:
        train_ds, val_ds = train_dataset, val_dataset
        # data sets handed in without a transform get this run's geometry (the model decides the input size)
        for ds, train_geo in ((train_ds, augment), (val_ds, False)):
            if ds is not None and hasattr(ds, "transform") and ds.transform is None:
                ds.transform = pre.geometry(train_geo)
    if cfg.decode_on_device and not cfg.cache_features:
        if not _decode_on_device(train_ds) and info.is_main:
            print("decode_on_device: the training set holds no image files; it is read as before", flush=True)
        elif device.type != "cuda" and info.is_main:
            print(
                f"decode_on_device: on {device.type} the main process decodes every batch, which the loader's "
                "workers would share; it is meant for a GPU",
                flush=True,
            )
    ds_classes = _class_names(train_ds)
    _check_data(train_ds, ds_classes, cfg.data or "data")
    if ds_classes != class_names:
        raise TrainError(
            f"{cfg.data or 'data'}: classes {ds_classes[:3]}... do not match the run's {class_names[:3]}..."
            if resume_state is not None
            else f"{cfg.data or 'data'}: class names changed while opening the data"
        )
    num_classes = len(class_names)
    stats_obj = _load_stats(cfg.stats) if cfg.stats else None
    train_tf = pre.batch_transform(augment, lighting=cfg.lighting if augment else 0.0, stats=stats_obj).to(device)
    eval_tf = pre.batch_transform(False, stats=stats_obj).to(device)

    _check_input_size(model, pre.input_size, cfg.arch)
    learners = freeze_layers(model, cfg.train_layers)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    precision = resolve_precision(cfg.precision, device)
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def autocast() -> contextlib.AbstractContextManager:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    # --- the network the optimizer drives: the whole model, or the classifier's rest over cached features
    skipped: list[str] = []
    if cfg.cache_features:
        front = cache_split(model)
        sampler_seq = None
        # Computing the cache must not consume the RNG that the plain path would leave untouched, so that both
        # paths draw the same dropout masks: fork the RNG around it.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            loader = _make_loader(
                train_ds, batch_size=local_batch, sampler=sampler_seq, workers=cfg.workers, seed=cfg.seed
            )
            train_feats, bad = compute_features(
                model, loader, device=device, front=front, batch_transform=eval_tf, autocast=autocast,
                channels_last=cfg.channels_last, progress=progress, desc="caching train features",
            )  # fmt: skip
            skipped.extend(bad)
            val_feats = None
            if val_ds is not None:
                vloader = _make_loader(
                    val_ds, batch_size=local_batch, sampler=eval_sampler(val_ds, info.rank, info.world_size),
                    workers=cfg.workers, seed=cfg.seed,
                )  # fmt: skip
                val_feats, bad = compute_features(
                    model, vloader, device=device, front=front, batch_transform=eval_tf, autocast=autocast,
                    channels_last=cfg.channels_last, progress=progress, desc="caching val features",
                )  # fmt: skip
                skipped.extend(bad)
        net: nn.Module = _Classifier(model, front)
        epoch_train_ds, epoch_val_ds = train_feats, val_feats
        step_tf, val_tf = None, None
    else:
        net = model
        epoch_train_ds, epoch_val_ds = train_ds, val_ds
        step_tf, val_tf = train_tf, eval_tf

    groups = make_param_groups(model, learners, new_layers, cfg.lr, cfg.new_layer_lr_mult)
    # The SGD update of AlexNet's ~61M weights (58M in fc6-fc8) is memory-bound: the fused kernel does it in one
    # pass instead of several (86 -> 11 ms per step on 2 CPU cores; same update, rounding aside; a state saved by
    # either implementation resumes in the other).
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **({"fused": True} if fused else {})
    )
    sampler = EpochSampler(epoch_train_ds, num_replicas=info.world_size, rank=info.rank, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(sampler) / local_batch)
    epoch_scheduler, iter_scheduler = _make_scheduler(cfg, optimizer)

    train_net: nn.Module = net
    if info.distributed:
        ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
        train_net = nn.parallel.DistributedDataParallel(net, **ddp_kwargs)
    if cfg.compile:
        train_net = torch.compile(train_net)

    # --- state: fresh or resumed
    start_epoch, partial = 1, EpochStats()
    best_err, best_epoch = math.inf, 0
    metrics: list[dict[str, Any]] = []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        sched = epoch_scheduler or iter_scheduler
        if sched is not None and resume_state.get("scheduler"):
            sched.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        best_err = float(resume_state["best_metric"])
        best_epoch = int(resume_state["best_epoch"])
        done = int(resume_state["epoch"])
        start_epoch = done + 1
        if int(resume_state.get("step", 0)) > 0:
            partial = EpochStats(**resume_state["partial"])
        rng = resume_state.get("rng", [])
        if int(resume_state.get("world_size", 1)) == info.world_size and info.rank < len(rng):
            _set_rng_state(rng[info.rank], device)
        elif info.is_main:
            print(f"resume: world size changed to {info.world_size}; random streams restart from the seed", flush=True)
        metrics = [r for r in _read_metrics(out / "metrics.csv") if r["epoch"] <= done]
        skipped = _read_skipped(out)

    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.tmp"):  # half-written files of a process killed while saving (atomic_write)
            stale.unlink(missing_ok=True)
        _write_text_atomic(out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    tb = _TensorBoard(out / "tensorboard", cfg.tensorboard and info.is_main)
    stop = _StopFlag()
    restore = _install_signal_handlers(stop)

    def save(epoch_done: int, stats: EpochStats | None) -> None:
        """Checkpoint after ``epoch_done`` whole epochs (+ ``stats.steps`` of the next when interrupted)."""
        rngs = _gather(_rng_state(device), info)
        if not info.is_main:
            return
        sched = epoch_scheduler or iter_scheduler
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "arch": cfg.arch,
            "model_config": model.config.to_dict(),
            "preprocessing": pre.to_dict(),
            "new_layers": sorted(new_layers),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else {},
            "scaler": scaler.state_dict() if scaler is not None else {},
            "epoch": epoch_done,
            "step": stats.steps if stats is not None else 0,
            "partial": stats.to_dict() if stats is not None else {},
            "best_metric": best_err,
            "best_epoch": best_epoch,
            "world_size": info.world_size,
            "rng": rngs,
        }
        # last.safetensors for users; state.pt (written last) holds the same weights for an exact resume.
        save_model(model, pre, out / "last.safetensors", arch=cfg.arch)
        _torch_save_atomic(state, out / "state.pt")

    loader, val_loader = _run_loaders(cfg, epoch_train_ds, epoch_val_ds, local_batch, sampler, info, device)
    interrupted = False
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            sampler.set_epoch(epoch)
            stats = partial if partial.steps else EpochStats()
            partial = EpochStats()
            sampler.skip = stats.steps * local_batch
            if hasattr(loader.batch_sampler, "set_epoch"):  # per-batch seeds of the random transforms
                loader.batch_sampler.set_epoch(epoch)
            lr_now = optimizer.param_groups[0]["lr"]
            try:
                stats, stopped = train_one_epoch(
                    train_net, loader, optimizer, device=device, epoch=epoch, num_classes=num_classes,
                    batch_transform=step_tf, autocast=autocast, scaler=scaler, iter_scheduler=iter_scheduler,
                    channels_last=cfg.channels_last and not cfg.cache_features, stats=stats,
                    total_steps=steps_per_epoch, stop=stop, distributed=info.distributed, progress=progress,
                    log_every=cfg.log_every,
                )  # fmt: skip
            except NonFiniteLoss as e:
                kept = f"{out / 'last.safetensors'} kept" if (out / "state.pt").exists() else "none saved yet"
                raise NonFiniteLoss(f"{e}; stopped (last good checkpoint: {kept}); try a lower --lr") from None
            skipped.extend(_gather_list(stats.bad, info))
            stats.bad = []
            if stopped:
                save(epoch - 1, stats)
                _write_skipped(out, skipped, info)
                interrupted = True
                if info.is_main:
                    print(
                        f"interrupted at epoch {epoch}, step {stats.steps}; saved. Continue with: "
                        f"alexnet train --resume {out}",
                        flush=True,
                    )
                break
            train_totals = _reduce_stats(stats, info, device)
            val: EvalResult | None = None
            if epoch_val_ds is not None:
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    val = evaluate(
                        net, val_loader, device=device, batch_transform=val_tf, num_classes=num_classes,
                        distributed=info.distributed, amp_dtype=amp_dtype,
                        channels_last=cfg.channels_last and not cfg.cache_features,
                    )  # fmt: skip
            err = val.top1_error if val is not None else 1.0 - train_totals["acc1"] / 100.0
            if epoch_scheduler is not None:
                epoch_scheduler.step(err)
            improved = err < best_err
            if improved:
                best_err, best_epoch = err, epoch
            row = {
                "epoch": epoch,
                "lr": lr_now,
                "train_loss": train_totals["loss"],
                "train_acc1": train_totals["acc1"],
                "val_loss": val.loss if val is not None else math.nan,
                "val_acc1": 100.0 * val.acc1 if val is not None else math.nan,
                "val_acc5": 100.0 * val.acc5 if val is not None else math.nan,
                "images_per_s": train_totals["images_per_s"],
                "seconds": stats.seconds,
            }
            metrics.append(row)
            if info.is_main:
                if improved:
                    save_model(model, pre, out / "best.safetensors", arch=cfg.arch)
                if val is not None:
                    doc = {"epoch": epoch, "weights": "last.safetensors", **val.to_dict(class_names)}
                    _write_text_atomic(out / "eval.json", json.dumps(doc, indent=2) + "\n")
                _write_text_atomic(out / "metrics.csv", _metrics_text([_csv_row(r) for r in metrics]))
                tb.log(row)
                if progress != "none":
                    print(_epoch_line(row, cfg.epochs), flush=True)
            _write_skipped(out, skipped, info)
            save(epoch, None)
            if stop.requested:  # a signal between the last step and here: the epoch is whole, stop now
                interrupted = True
                if info.is_main:
                    print(f"interrupted after epoch {epoch}; saved. Continue with: alexnet train --resume {out}")
                break
    finally:
        restore()
        tb.close()
    return TrainResult(
        out=out,
        epochs_done=metrics[-1]["epoch"] if metrics else 0,
        best_val_top1_error=None if math.isinf(best_err) else best_err,
        metrics=metrics,
        interrupted=interrupted,
        skipped=len(skipped),
    )


def _csv_row(r: Mapping[str, Any]) -> dict[str, str]:
    return {k: (str(int(r[k])) if k == "epoch" else _fmt(r[k])) for k in METRICS_COLUMNS}


def _epoch_line(row: Mapping[str, Any], epochs: int) -> str:
    val = (
        f" val loss {row['val_loss']:.4f} top-1 {row['val_acc1']:.2f}% top-5 {row['val_acc5']:.2f}%"
        if not math.isnan(row["val_loss"])
        else ""
    )
    return (
        f"epoch {row['epoch']}/{epochs} lr {row['lr']:.3g} train loss {row['train_loss']:.4f} "
        f"top-1 {row['train_acc1']:.2f}%{val} {row['images_per_s']:.0f} img/s {row['seconds']:.1f}s"
    )


def _decode_on_device(ds: Any) -> bool:
    """Switch an image-file data set (possibly a subset) to handing out its plain JPEGs still encoded, for the
    training loop to decode a batch at a time on the device (`alexnet.data.device_decode`). False when ``ds``
    holds no image files (Fashion-MNIST, a prepared set, a handed-in data set)."""
    from .data.datasets import ImageListDataset, Subset

    base = ds
    while isinstance(base, Subset):
        base = base.base
    if not isinstance(base, ImageListDataset):
        return False
    ds.encoded = True
    return True


def _run_loaders(
    cfg: TrainConfig,
    train_ds: Any,
    val_ds: Any | None,
    batch: int,
    sampler: EpochSampler,
    info: DistInfo,
    device: torch.device | None = None,
) -> tuple[Any, Any | None]:
    """The training and validation loaders of the whole run, made once: their workers live from epoch to epoch
    (no start-up per epoch). Each training batch's random transforms draw from a seed of (seed, rank, epoch,
    batch number) (`alexnet.data.datasets.SeededBatchSampler`), so a resumed run, even one resumed mid-epoch,
    sees the batches an uninterrupted one would, whatever the number of workers. Cached features need no
    workers."""
    if isinstance(train_ds, FeatureDataset):  # each rank cached its own eval_sampler share of the validation set
        # an own generator: a DataLoader without one draws its base seed from the global RNG (dropout's) per pass
        g = torch.Generator().manual_seed(cfg.seed)
        val = DataLoader(val_ds, batch_size=batch, shuffle=False, generator=g) if val_ds is not None else None
        return DataLoader(train_ds, batch_size=batch, sampler=sampler, num_workers=0, generator=g), val
    seed = (cfg.seed * 1_000_003 + info.rank) % 2**63
    train = _make_loader(train_ds, batch_size=batch, sampler=sampler, workers=cfg.workers, seed=seed, device=device)
    val = None
    if val_ds is not None:
        vsampler = eval_sampler(val_ds, info.rank, info.world_size)
        val = _make_loader(
            val_ds, batch_size=batch, sampler=vsampler, workers=cfg.workers, seed=cfg.seed, device=device
        )
    return train, val


def _make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """(per-epoch scheduler, per-iteration scheduler). plateau: ReduceLROnPlateau on the validation top-1 error,
    floored at ``lr * factor**max_lr_drops`` (the paper: three drops); step: Caffe's policy,
    ``lr * gamma**floor(iter / step_size)``, stepped every iteration."""
    if cfg.schedule == "step":
        return None, torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.lr_factor)
    # The floor sits a hair below the third drop; eps (a fraction of the floor) makes the would-be fourth drop,
    # a change far smaller than eps, a no-op instead of a tiny step.
    min_lrs = [g["lr"] * cfg.lr_factor**cfg.max_lr_drops * (1 - 1e-6) for g in optimizer.param_groups]
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.plateau_patience, min_lr=min_lrs,
        eps=min(min_lrs) * 1e-3,
    )  # fmt: skip
    return sched, None


def _reduce_stats(stats: EpochStats, info: DistInfo, device: torch.device) -> dict[str, float]:
    """Training loss/top-1 over every rank's samples; images/s of the whole job."""
    t = torch.tensor([stats.loss_sum, stats.correct, stats.samples], dtype=torch.float64, device=device)
    seconds = stats.seconds
    if info.distributed:
        dist.all_reduce(t)
        s = torch.tensor([seconds], dtype=torch.float64, device=device)
        dist.all_reduce(s, op=dist.ReduceOp.MAX)
        seconds = float(s)
    loss_sum, correct, n = (float(v) for v in t.tolist())
    return {
        "loss": loss_sum / n if n else math.nan,
        "acc1": 100.0 * correct / n if n else math.nan,
        "images_per_s": n / seconds if seconds > 0 else 0.0,
    }


def _gather(obj: Any, info: DistInfo) -> list[Any]:
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _gather_list(items: list[str], info: DistInfo) -> list[str]:
    return [x for part in _gather(items, info) for x in part]


def _read_skipped(out: Path) -> list[str]:
    p = out / "skipped.txt"
    return p.read_text(encoding="utf-8").splitlines() if p.exists() else []


def _write_skipped(out: Path, skipped: Sequence[str], info: DistInfo) -> None:
    if info.is_main:
        _write_text_atomic(out / "skipped.txt", "".join(f"{s}\n" for s in skipped))


def _install_signal_handlers(stop: _StopFlag) -> Callable[[], None]:
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


def _peek_classes(cfg: TrainConfig) -> list[str]:
    """The class names of the training data, read before the model (and so the transforms) exist."""
    from .data import datasets

    if not cfg.data:
        raise TrainError("no data: give a data folder or list file")
    ds = datasets.open_dataset(
        cfg.data, split="train", val_split=cfg.val_split, seed=cfg.seed, on_bad_image=cfg.on_bad_image
    )
    if len(ds) == 0:
        raise TrainError(f"{cfg.data}: the training data set is empty (no images found)")
    return _class_names(ds)


def _check_classes(classes: Sequence[str], source: str) -> None:
    if len(classes) < 2:
        raise TrainError(f"{source or 'data'}: found {len(classes)} class; training a classifier needs at least 2")


@torch.no_grad()
def _check_input_size(model: AlexNet, size: int, arch: str) -> None:
    """One forward of a blank image, so an input size the architecture cannot take fails before training."""
    was = model.training
    model.eval()
    try:
        model.forward_features(torch.zeros(1, model.config.in_channels, size, size))
    except (RuntimeError, ValueError) as e:
        raise TrainError(f"input size {size} does not fit {arch}: {str(e).splitlines()[0]}") from None
    finally:
        model.train(was)


def _guess_arch_name(model: AlexNet) -> str:
    from .weights import _guess_arch

    return _guess_arch(model.config)


def _model_from_state(state: Mapping[str, Any], cfg: TrainConfig) -> tuple[AlexNet, Preprocessing, set[str]]:
    """Rebuild the model of a resumed run and check it is the architecture this invocation asks for."""
    saved_arch = str(state.get("arch"))
    if cfg.arch != saved_arch:
        raise TrainError(f"{cfg.resume}: the run trained {saved_arch}, not {cfg.arch}; resume it without --arch")
    try:
        model = AlexNet(AlexNetConfig.from_dict(dict(state["model_config"])))
        pre = Preprocessing.from_dict(dict(state["preprocessing"]))
    except (KeyError, ValueError, TypeError) as e:
        raise TrainError(f"{cfg.resume}: corrupt training state ({e})") from None
    check_state_dict(model, state["model"], f"{cfg.resume}/state.pt")
    model.load_state_dict(state["model"])
    return model, pre, set(state.get("new_layers", []))


def config_from_sources(
    flags: Mapping[str, Any], *, config_file: str | Path | None = None, command: str = "train"
) -> TrainConfig:
    """The resolved config of a command: defaults < the resumed run's config.json < ``config_file`` < ``flags``
    (only the flags the user gave). ``finetune`` needs weights, unless it resumes a run that had them."""
    layers: list[Mapping[str, Any]] = []
    names: list[str] = []
    resume = flags.get("resume")
    if resume:
        saved_path = Path(resume) / "config.json"
        if not Path(resume).is_dir():
            raise TrainError(f"{resume}: no such run folder to resume")
        if not saved_path.exists():
            raise TrainError(f"{resume}: not a run folder (no config.json)")
        layers.append(load_config_file(saved_path))
        names.append(str(saved_path))
    if config_file is not None:
        layers.append(load_config_file(config_file))
        names.append(str(config_file))
    layers.append(dict(flags))
    names.append("flags")
    cfg = resolve_config(*layers, source_names=names)
    if command == "finetune" and cfg.weights is None:
        raise TrainError("finetune needs --weights (torchvision, a .safetensors, .pth or .npy file)")
    if not cfg.data:
        raise TrainError("no data: give a data folder, list file or prepared set")
    return cfg
