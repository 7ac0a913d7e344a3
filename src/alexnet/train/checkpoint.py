"""A run's checkpoint: ``state.pt`` holds state dicts and plain values only (so it loads with
``torch.load(weights_only=True)``), with everything an exact resume needs (pytorch/examples' imagenet habit):
model, optimizer, scheduler, scaler, epoch, the step reached inside an interrupted epoch, best metric, and every
RNG a step touches. ``last.safetensors`` beside it holds the same weights for users; both are written atomically.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import rundir
from ..data.fileio import atomic_write
from ..distributed import DistInfo, all_gather
from ..models import AlexNet, AlexNetConfig
from ..preprocessing import Preprocessing
from ..weights import check_state_dict, save_model
from .config import TrainConfig, TrainError
from .loop import EpochStats

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "RunProgress",
    "Trainables",
    "get_rng_state",
    "load_state",
    "model_from_state",
    "restore_progress",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]

STATE_FORMAT = "alexnet-train-state"
STATE_VERSION = 1


def get_rng_state(device: torch.device) -> dict[str, Any]:
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


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Put back what `get_rng_state` saved (CUDA's only on a CUDA device)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["keys"]), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's RNGs (model init, data order, augmentation, dropout)."""
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


def model_from_state(state: Mapping[str, Any], cfg: TrainConfig) -> tuple[AlexNet, Preprocessing, set[str]]:
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


@dataclass
class Trainables:
    """What a checkpoint saves besides the run's progress: the model (unwrapped), its preprocessing, the new
    layers of a fine-tuning run, and the optimizer, scheduler (per epoch or per iteration) and scaler driving it."""

    model: AlexNet
    pre: Preprocessing
    arch: str
    new_layers: set[str]
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    scaler: torch.amp.GradScaler | None = None


@dataclass
class RunProgress:
    """Where a run stands between epochs: what a resume restores and every epoch updates."""

    start_epoch: int = 1
    partial: EpochStats = field(default_factory=EpochStats)  # the steps an interrupted epoch already did
    best_err: float = math.inf
    best_epoch: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv's rows
    skipped: list[str] = field(default_factory=list)  # skipped.txt's names


def _build_state(
    t: Trainables, progress: RunProgress, epoch_done: int, stats: EpochStats | None, rngs: list[Any], world: int
) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "arch": t.arch,
        "model_config": t.model.config.to_dict(),
        "preprocessing": t.pre.to_dict(),
        "new_layers": sorted(t.new_layers),
        "model": {k: v.detach().cpu() for k, v in t.model.state_dict().items()},
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict() if t.scheduler is not None else {},
        "scaler": t.scaler.state_dict() if t.scaler is not None else {},
        "epoch": epoch_done,
        "step": stats.steps if stats is not None else 0,
        "partial": stats.to_dict() if stats is not None else {},
        "best_metric": progress.best_err,
        "best_epoch": progress.best_epoch,
        "world_size": world,
        "rng": rngs,
    }


def save_checkpoint(
    out: Path,
    t: Trainables,
    progress: RunProgress,
    epoch_done: int,
    stats: EpochStats | None,
    info: DistInfo,
    device: torch.device,
) -> None:
    """Checkpoint after ``epoch_done`` whole epochs (+ ``stats.steps`` of the next when interrupted). Every rank
    takes part (each one's RNG state is gathered); the first writes."""
    rngs = all_gather(get_rng_state(device), info)
    if not info.is_main:
        return
    state = _build_state(t, progress, epoch_done, stats, rngs, info.world_size)
    # last.safetensors for users; state.pt (written last) holds the same weights for an exact resume.
    save_model(t.model, t.pre, out / "last.safetensors", arch=t.arch)
    atomic_write(out / "state.pt", lambda tmp: torch.save(state, tmp))


def restore_progress(
    state: Mapping[str, Any], t: Trainables, out: Path, info: DistInfo, device: torch.device
) -> RunProgress:
    """Load a resumed run's optimizer, scheduler, scaler and (same world size only) RNG states, and return where
    it stood: the next epoch, the steps an interrupted epoch did, the best metric, metrics.csv and skipped.txt."""
    t.optimizer.load_state_dict(state["optimizer"])
    if t.scheduler is not None and state.get("scheduler"):
        t.scheduler.load_state_dict(state["scheduler"])
    if t.scaler is not None and state.get("scaler"):
        t.scaler.load_state_dict(state["scaler"])
    done = int(state["epoch"])
    progress = RunProgress(
        start_epoch=done + 1, best_err=float(state["best_metric"]), best_epoch=int(state["best_epoch"])
    )
    if int(state.get("step", 0)) > 0:
        progress.partial = EpochStats(**state["partial"])
    rng = state.get("rng", [])
    if int(state.get("world_size", 1)) == info.world_size and info.rank < len(rng):
        set_rng_state(rng[info.rank], device)
    elif info.is_main:
        print(f"resume: world size changed to {info.world_size}; random streams restart from the seed", flush=True)
    rows = rundir.read_metrics(out) if (out / rundir.METRICS).exists() else []
    progress.metrics = [r for r in rows if r["epoch"] <= done]
    progress.skipped = rundir.read_skipped(out)
    return progress
