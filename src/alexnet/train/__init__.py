"""One training loop for ``alexnet train`` (from scratch) and ``alexnet finetune`` (from loaded weights).

The recipe is the paper's (Krizhevsky, Sutskever & Hinton 2012, section 5): SGD with batch 128, momentum 0.9,
weight decay 5e-4, learning rate 0.01 divided by 10 when the validation error stops improving (three times in the
paper, about 90 epochs), dropout 0.5 (section 4.2), the paper's initialisation, random crops + horizontal flips +
PCA lighting (section 4.1). Caffe's ``step`` policy (x0.1 every ``step_size`` iterations) is the alternative schedule.

Laid out as torchvision's ``references/classification/train.py``: plain functions with explicit arguments
(`train_one_epoch`, `main`), precision chosen once (`alexnet.runtime`), DDP started by torchrun
(`alexnet.distributed`). The package's modules, bottom to top: `config` (TrainConfig, its sources and checks),
`loop` (one epoch), `setup` (model, frozen layers, parameter groups, schedule, feature cache), `checkpoint` (state,
RNG, atomic saves), `inputs` (data sets and loaders), `diagnostics` (the checks that say when a run fails, and
why: docs/DIAGNOSTICS.md), `summary` (the header and closing summary), `run` (`main`: the run as a sequence of
named steps). The run folder's files are `alexnet.rundir`'s (docs/CONTRACTS.md); ``state.pt`` loads with
``weights_only=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Public names and the submodule that holds each; imported on first use (PEP 562), so that the command line can
# read `TrainConfig`'s defaults (``alexnet.train.config`` imports no torch) without loading the training code.
_HOMES = {
    "METRICS_COLUMNS": "..rundir",
    "load_state": ".checkpoint",
    **dict.fromkeys(
        ["TrainConfig", "TrainError", "check_config", "config_from_sources", "load_config_file", "normalize_config",
         "read_resumed_config", "resolve_config"],
        ".config",
    ),
    **dict.fromkeys(["EpochOptions", "EpochStats", "NonFiniteLoss", "train_one_epoch"], ".loop"),
    **dict.fromkeys(["TrainResult", "main"], ".run"),
    **dict.fromkeys(
        ["build_model", "cache_split", "compute_features", "freeze_layers", "make_param_groups", "make_scheduler"],
        ".setup",
    ),
}  # fmt: skip

if TYPE_CHECKING:
    from ..rundir import METRICS_COLUMNS
    from .checkpoint import load_state
    from .config import (
        TrainConfig,
        TrainError,
        check_config,
        config_from_sources,
        load_config_file,
        normalize_config,
        read_resumed_config,
        resolve_config,
    )
    from .loop import EpochOptions, EpochStats, NonFiniteLoss, train_one_epoch
    from .run import TrainResult, main
    from .setup import build_model, cache_split, compute_features, freeze_layers, make_param_groups, make_scheduler


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'alexnet.train' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "TrainError",
    "TrainConfig",
    "TrainResult",
    "EpochOptions",
    "EpochStats",
    "METRICS_COLUMNS",
    "NonFiniteLoss",
    "load_config_file",
    "resolve_config",
    "normalize_config",
    "check_config",
    "config_from_sources",
    "read_resumed_config",
    "build_model",
    "freeze_layers",
    "make_param_groups",
    "make_scheduler",
    "train_one_epoch",
    "cache_split",
    "compute_features",
    "load_state",
    "main",
]
