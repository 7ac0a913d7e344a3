"""A run's checkpoint: the pair ``last.safetensors`` (the model's weights, for users and for resuming) and
``state.pt`` (state dicts and plain values only, so it loads with ``torch.load(weights_only=True)``): everything
else an exact resume needs (pytorch/examples' imagenet habit): optimizer, scheduler, scaler, epoch, the step
reached inside an interrupted epoch, best metric, every RNG a step touches, the digest of the weights it goes
with, and the settings that define the run (a resume is checked against them, never against an editable
config.json). Each tensor is stored once: state.pt refers to last.safetensors' weights instead of repeating them, and
``best.safetensors`` is a hard link to last.safetensors when the epoch improved (a copy where links fail).

Writing the pair: the previous last.safetensors is kept (a hard link, `rundir.PREVIOUS_LAST`) until the new
state.pt is in place, so a kill or a full disk between the two writes leaves the previous pair whole; a resume
takes whichever weights file matches state.pt's digest, and refuses a pair that does not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import rundir
from ..data.fileio import DiskFullError, atomic_write
from ..distributed import DistInfo, all_gather
from ..errors import AlexnetError
from ..models import AlexNet, AlexNetConfig
from ..preprocessing import Preprocessing
from ..weights import check_state_dict, load_model, save_model
from .config import TrainConfig, TrainError
from .loop import EpochStats

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "RunProgress",
    "Trainables",
    "finish_checkpoints",
    "get_rng_state",
    "load_state",
    "model_from_state",
    "restore_progress",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]

STATE_FORMAT = "alexnet-train-state"
STATE_VERSION = 3  # 1: state.pt held the weights too; 2: no run-defining settings (both still read)


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes: what ties state.pt to its weights file."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


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


def _unreadable_state(run: Path, path: Path, e: Exception) -> str:
    """What is wrong with an unreadable state.pt (truncated: a full disk, a copy cut short) and the way on: the
    weights live in their own file, written before state.pt, so they outlive it."""
    if isinstance(e, PermissionError):
        return f"{path}: cannot be read ({e.strerror}); give this user read access to resume the run"
    detail = " ".join(str(e).split()).split(". ")[0][:80] or type(e).__name__
    if not path.is_file():
        what = f"{path} is not a regular file (a folder, a pipe, a device), so the run cannot resume"
    else:
        what = f"{path} is truncated or corrupt ({path.stat().st_size} bytes; {detail}), so the run cannot resume"
    last = run / rundir.LAST
    if last.is_file():
        return (
            f"{what}; its weights are in {last}, a file of their own: train on from them in a new run with "
            f"alexnet finetune DATA --weights {last} --out NEW (the momentum and the epoch count are lost)"
        )
    return f"{what}, and no {rundir.LAST} is beside it: start the run again"


def load_state(run_dir: str | Path) -> dict[str, Any]:
    """The training state of a run folder (``state.pt``, loaded with ``weights_only=True``) with the model's
    weights under ``"model"`` (from the weights file whose digest state.pt records)."""
    run = Path(run_dir)
    path = run / rundir.STATE
    if not run.is_dir():
        raise TrainError(f"{run_dir}: no such run folder to resume")
    if not path.exists():
        if (run / rundir.BEST).exists() and not (run / rundir.LAST).exists():
            raise TrainError(
                f"{run_dir}: kept only best.safetensors (--keep best), so it cannot resume; to train on from it: "
                f"alexnet finetune --weights {run / rundir.BEST}"
            )
        raise TrainError(f"{run_dir}: no state.pt to resume from (the run saved no checkpoint yet)")
    if not path.is_file():  # a FIFO would block the read forever, a link to /dev/zero never end it
        raise TrainError(_unreadable_state(run, path, OSError("not a regular file")))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt file can raise anything from the unpickler
        raise TrainError(_unreadable_state(run, path, e)) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainError(f"{path}: not an alexnet training state")
    if "model" not in state:
        state["model"] = _paired_weights(run, state)
    return state


def _paired_weights(run: Path, state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights state.pt goes with: last.safetensors, or the previous one kept while a new pair was being
    written (a kill or a full disk between the two writes; it is put back as last.safetensors)."""
    want = str(state.get("weights", {}).get("digest", ""))
    for name in (rundir.LAST, rundir.PREVIOUS_LAST):
        p = run / name
        if not p.exists():
            continue
        try:
            weights = load_model(p)[0].state_dict()
        except AlexnetError:
            continue
        if weights_digest(weights) == want:
            if name == rundir.PREVIOUS_LAST:
                os.replace(p, run / rundir.LAST)
            return weights
    where = f"epoch {state.get('epoch')}, step {state.get('step', 0)}"
    raise TrainError(
        f"{run / rundir.STATE} ({where}) does not match {run / rundir.LAST} (the weights of another checkpoint, or "
        f"none): this pair cannot resume exactly; start a new run from the weights with alexnet finetune --weights"
    )


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
    check_state_dict(model, state["model"], str(rundir.RunDir(str(cfg.resume)).state))
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
    settings: dict[str, Any] = field(default_factory=dict)  # `config.run_settings`: what a resume is checked against
    origin: dict[str, Any] = field(default_factory=dict)  # the weights' provenance: parent and data (run.py)


@dataclass
class RunProgress:
    """Where a run stands between epochs: what a resume restores and every epoch updates."""

    start_epoch: int = 1
    partial: EpochStats = field(default_factory=EpochStats)  # the steps an interrupted epoch already did
    best_err: float = math.inf
    best_epoch: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv's rows
    skipped: list[str] = field(default_factory=list)  # skipped.txt's names
    fc6_fold: dict[str, Any] | None = None  # an interrupted epoch's fc6 fold (`alexnet.train.fold`), where it stood


def _build_state(
    t: Trainables, progress: RunProgress, epoch_done: int, stats: EpochStats | None, rngs: list[Any], world: int
) -> dict[str, Any]:
    weights = {k: v.detach().cpu() for k, v in t.model.state_dict().items()}
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "arch": t.arch,
        "model_config": t.model.config.to_dict(),
        "preprocessing": t.pre.to_dict(),
        "new_layers": sorted(t.new_layers),
        "weights": {"file": rundir.LAST, "digest": weights_digest(weights)},  # not repeated here
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict() if t.scheduler is not None else {},
        "scaler": t.scaler.state_dict() if t.scaler is not None else {},
        "epoch": epoch_done,
        "step": stats.steps if stats is not None else 0,
        "partial": stats.to_dict() if stats is not None else {},
        "fc6_fold": progress.fc6_fold if stats is not None else None,  # weights_only-loadable: tensors, floats
        "best_metric": progress.best_err,
        "best_epoch": progress.best_epoch,
        "world_size": world,
        "rng": rngs,
        "settings": t.settings,  # the run-defining settings (`config.run_settings`), checked on resume
    }


def save_checkpoint(
    out: Path,
    t: Trainables,
    progress: RunProgress,
    epoch_done: int,
    stats: EpochStats | None,
    info: DistInfo,
    device: torch.device,
    *,
    best: bool = False,
) -> None:
    """Checkpoint after ``epoch_done`` whole epochs (+ ``stats.steps`` of the next when interrupted); ``best``:
    these weights are also the run's best (best.safetensors). Every rank takes part (each one's RNG state is
    gathered); the first writes. A full disk: a `TrainError` naming the file (the previous pair is intact)."""
    rngs = all_gather(get_rng_state(device), info)
    if not info.is_main:
        return
    state = _build_state(t, progress, epoch_done, stats, rngs, info.world_size)
    last, previous = out / rundir.LAST, out / rundir.PREVIOUS_LAST
    try:
        if last.exists():  # kept until the new state.pt is in place: the previous pair stays whole meanwhile
            previous.unlink(missing_ok=True)
            _link_or_copy(last, previous)
        save_model(t.model, t.pre, last, arch=t.arch, provenance=_provenance(t, progress, epoch_done))
        if best:
            atomic_write(out / rundir.BEST, lambda tmp: _link_or_copy(last, Path(tmp)))
        atomic_write(out / rundir.STATE, lambda tmp: torch.save(state, tmp))
    except DiskFullError as e:
        raise TrainError(
            f"no space left on the device while writing {e.path}; the previous checkpoint is intact"
        ) from None
    previous.unlink(missing_ok=True)


def _provenance(t: Trainables, progress: RunProgress, epochs: int) -> dict[str, Any]:
    """What the saved weights carry about their making (`alexnet.weights.provenance`): parent and data from the
    run, the epochs done, and the last epoch's figures (rates as fractions) with the best so far."""
    row = progress.metrics[-1] if progress.metrics else {}
    metrics = {
        k: row.get(k)
        for k in ("train_loss", "train_top1_accuracy", "val_loss", "val_top1_accuracy", "val_top5_accuracy")
    }
    metrics = {k: (None if v is None or v != v else float(v)) for k, v in metrics.items()}  # NaN: not measured
    metrics["best_epoch"] = progress.best_epoch or None
    metrics["best_val_top1_error"] = None if math.isinf(progress.best_err) else float(progress.best_err)
    return {**t.origin, "epochs": epochs, "metrics": metrics}


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no second copy of the tensors), or a copy where links are refused."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def finish_checkpoints(out: Path, keep: str) -> None:
    """What a complete run keeps (``--keep``): all (state.pt, last and best), last (no best.safetensors), best
    (only best.safetensors: the run can no longer be extended)."""
    drop = {"all": (), "last": (rundir.BEST,), "best": (rundir.STATE, rundir.LAST)}[keep]
    if keep == "best" and not (out / rundir.BEST).exists():
        return  # no best weights (no epoch finished): keep what there is
    for name in (*drop, rundir.PREVIOUS_LAST):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()


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
        progress.fc6_fold = state.get("fc6_fold")  # the fold continues exactly where the epoch stopped
    rng = state.get("rng", [])
    if int(state.get("world_size", 1)) == info.world_size and info.rank < len(rng):
        set_rng_state(rng[info.rank], device)
    elif info.is_main:
        print(f"resume: world size changed to {info.world_size}; random streams restart from the seed", flush=True)
    rows = rundir.read_metrics(out) if (out / rundir.METRICS).exists() else []
    progress.metrics = [r for r in rows if r["epoch"] <= done]
    progress.skipped = rundir.read_skipped(out)
    return progress
