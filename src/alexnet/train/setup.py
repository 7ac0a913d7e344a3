"""What a run trains and how: the model (from scratch or fine-tuned from loaded weights), which layers learn,
the optimizer's parameter groups, the learning-rate schedule, and the feature cache that lets a run with every
conv layer frozen compute the network's frozen front once.

Fine-tuning keeps apart what the tutorial's code conflates: ``train_layers`` (which layers get gradients; the others
are frozen: no gradient and not in the optimizer, so neither weight decay nor momentum can move them) and ``reinit``
(which layers start from fresh weights). When every convolutional layer is frozen, ``cache_features`` computes the
network's frozen, deterministic front once and trains the rest from that cache: the pooled conv5 features, or
fc6's output when fc6 is frozen too and its dropout comes after it (the paper's layout, ``alexnet2012`` and
``caffenet``: the tutorial's fc7+fc8 fine-tuning then runs two layers per step instead of eight).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.batch import Batch
from ..models import LAYER_NAMES, AlexNet, AlexNetConfig, create_model, init_layer
from ..preprocessing import Preprocessing, default_preprocessing, paper_resize
from ..progress import track
from ..weights import guess_arch, load_model, parent_of
from .config import TrainConfig, TrainError

__all__ = [
    "CachedClassifier",
    "FeatureDataset",
    "build_model",
    "cache_split",
    "check_input_size",
    "compute_features",
    "freeze_layers",
    "guess_arch_name",
    "load_stats",
    "make_optimizer",
    "make_param_groups",
    "make_scheduler",
    "resolve_decay_steps",
    "weights_origin",
]


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
        try:  # --resize-size, else the paper's 256:224 ratio (`paper_resize`)
            pre = default_preprocessing(model.config, class_names, resize_size=cfg.resize_size)
        except ValueError as e:
            raise TrainError(f"preprocessing: {e}") from None
        if cfg.stats is not None:
            st = load_stats(cfg.stats)
            try:
                pre = Preprocessing.from_dict(
                    {**pre.to_dict(), "mean": list(map(float, st.mean)), "std": list(map(float, st.std))}
                )
            except ValueError as e:
                raise TrainError(f"{cfg.stats}: {e}") from None
        return model, pre, set()  # every layer is fresh; "new layers" (own lr multiplier) is a fine-tuning notion

    # --arch as predict honours it (a bvlc .npy or .pth does not say caffenet from alexnet2012); a file that names
    # another architecture refuses it
    source = cfg.weights if cfg.arch is None else dataclasses.replace(cfg.weights, arch=cfg.arch)
    loaded, pre = load_model(source)
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
        resize = cfg.resize_size or (pre.resize_size if 224 <= size <= pre.resize_size else paper_resize(size))
        try:
            pre = Preprocessing.from_dict({**pre.to_dict(), "input_size": size, "resize_size": resize})
        except ValueError as e:
            raise TrainError(f"preprocessing: {e}") from None
    return model, _with_class_names(pre, class_names), new


def load_stats(path: str) -> Any:
    """The training set's statistics (`alexnet stats`' stats.json): mean/std and PCA eigen-pairs."""
    from ..data import stats as stats_mod

    return stats_mod.load_stats(path)


def guess_arch_name(model: AlexNet) -> str:
    """The registered architecture ``model`` is (`alexnet.weights.guess_arch`), or ``custom``."""
    return guess_arch(model.config)


def check_input_size(model: AlexNet, size: int, arch: str) -> None:
    """One forward of a blank image, so an input size the architecture cannot take fails before training."""
    was = model.training
    model.eval()
    try:
        model.forward_features(torch.zeros(1, model.config.in_channels, size, size))
    except (RuntimeError, ValueError) as e:
        raise TrainError(f"input size {size} does not fit {arch}: {str(e).splitlines()[0]}") from None
    finally:
        model.train(was)


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


def make_optimizer(cfg: TrainConfig, groups: list[dict[str, Any]], device: torch.device) -> torch.optim.SGD:
    """The paper's SGD with momentum and weight decay over ``groups``."""
    # The SGD update of AlexNet's ~61M weights (58M in fc6-fc8) is memory-bound: the fused kernel does it in one
    # pass instead of several (same update, rounding aside; a state saved by either implementation resumes in the
    # other).
    fused = device.type in ("cpu", "cuda")
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **({"fused": True} if fused else {})
    )


def weights_origin(cfg: TrainConfig, train_dataset: Any | None) -> dict[str, Any]:
    """The parent weights (name and SHA-256) and the data source a run's weights record
    (`alexnet.weights.provenance`)."""
    data = cfg.data or (type(train_dataset).__name__ if train_dataset is not None else None)
    return {"parent": parent_of(cfg.weights) if cfg.weights else None, "data": data}


def resolve_decay_steps(cfg: TrainConfig, images: int, world_size: int) -> TrainConfig:
    """``cfg`` with a linear schedule's length fixed: ``decay_steps`` 0 becomes the run's whole length at its start
    (epochs x steps per epoch over ``images`` training images, each rank a padded share as DistributedSampler
    gives it), so config.json records the number and a resume that trains longer keeps it."""
    if cfg.schedule != "linear" or cfg.decay_steps:
        return cfg
    steps = math.ceil(math.ceil(images / world_size) / (cfg.batch_size // world_size))
    return dataclasses.replace(cfg, decay_steps=max(1, cfg.epochs * steps))


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """(per-epoch scheduler, per-iteration scheduler). plateau: ReduceLROnPlateau on the validation top-1 error,
    floored at ``lr * factor**max_lr_drops`` (the paper: three drops); step: Caffe's policy,
    ``lr * gamma**floor(iter / step_size)``, stepped every iteration, times ``min(1, (iter + 1) / warmup_steps)``
    with a warm-up; linear: the warm-up, then ``1 - iter / decay_steps`` (Li et al., 2020, "Budgeted training": the
    schedule that does best when the run is short), stepped every iteration."""
    if cfg.schedule == "linear":
        w, total = max(1, cfg.warmup_steps), cfg.decay_steps
        if total < 1:
            raise ValueError("schedule linear needs decay_steps (`resolve_decay_steps` sets the run's length)")
        return None, torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: min(1.0, (it + 1) / w) * max(0.0, 1.0 - it / total)
        )
    if cfg.schedule == "step" and cfg.warmup_steps:
        # Goyal et al. (2017)'s gradual warm-up for a large batch's scaled learning rate, then Caffe's steps
        w, size, gamma = cfg.warmup_steps, cfg.step_size, cfg.lr_factor
        return None, torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: min(1.0, (it + 1) / w) * gamma ** (it // size)
        )
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
    try:
        for batch in track(loader, desc, progress, unit="batch"):
            b = Batch.of(batch).on(device)
            bad.extend(b.bad)
            x, y = b.images, b.labels
            if len(y) == 0:
                continue
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


class CachedClassifier(nn.Module):
    """The classifier of an AlexNet from module ``front`` on, fed from cached features; shares the parameters and
    has the model's ``config``."""

    def __init__(self, model: AlexNet, front: int = 0) -> None:
        super().__init__()
        self.classifier = model.classifier[front:]  # a Sequential of the same module objects
        self.config = model.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)
