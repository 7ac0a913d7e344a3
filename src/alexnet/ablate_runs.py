"""One run of `alexnet ablate`: train (or resume) it, evaluate it on the shared test images, and write its
record (``ablate_run.json``) into its run folder. The record holds what the report needs and nothing it would
have to recompute: the test errors (centre crop and ten patches), every test image right or wrong (for the
paired per-image test), the per-epoch curve, the curve at step granularity (Figure 1 in images seen), and
whether the run diverged."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from . import ablate_stats, rundir
from .ablate_data import Splits
from .ablate_variants import AblationError

__all__ = ["RUN_RECORD", "epoch_curve", "to_threshold", "train_and_record"]

RUN_RECORD = "ablate_run.json"  # written into a run folder once it is trained and evaluated: "finished"


def epoch_curve(metrics: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per epoch: training error and loss (means over the epoch, dropout and augmentation on), validation
    error, and the training seconds so far (Figure 1's axes)."""
    total, out = 0.0, []
    for r in metrics:
        total += float(r["seconds"])
        val = float(r["val_top1_accuracy"])
        out.append(
            {
                "epoch": int(r["epoch"]),
                "train_error": 1.0 - float(r["train_top1_accuracy"]),  # metrics.csv: fractions
                "train_loss": float(r["train_loss"]),
                "val_error": None if math.isnan(val) else 1.0 - val,
                "seconds": total,
            }
        )
    return out


def to_threshold(curve: list[dict[str, float]], threshold: float) -> tuple[int | None, float | None]:
    """(epochs, training seconds) until the epoch's training error first is at or below ``threshold``."""
    for p in curve:
        if p["train_error"] <= threshold:
            return p["epoch"], p["seconds"]
    return None, None


def _evaluate(folder: Path, splits: Splits, device: Any, workers: int, ten_crop: bool) -> dict[str, Any]:
    """Top-1/top-5 error of the run's final weights on the test images, centre crop and (``ten_crop``) the softmax
    averaged over the ten patches (section 4.1), with every image's top-1 right or wrong (packed,
    `ablate_stats`). Ten patches cost ten forwards an image: the CPU scale tests them on ``full``'s runs only."""
    from .evaluate import evaluate_dataset
    from .weights import load_model

    model, pre = load_model(rundir.RunDir(folder).last)
    out: dict[str, Any] = {"ten_crop": None}
    for name, ten in (("centre", False), ("ten_crop", True))[: 2 if ten_crop else 1]:
        splits.test.transform = pre.geometry(False, ten_crop=ten)
        ev = evaluate_dataset(
            model, splits.test, preprocessing=pre, ten_crop=ten, batch_size=128, workers=workers, device=device,
            channels_last=True, collect=True, progress="none",
        )  # fmt: skip
        p = ev.predictions
        right = [] if p is None else (p.predicted == p.labels).tolist()
        out[name] = {"top1_error": ev.top1_error, "top5_error": ev.top5_error, "loss": ev.loss,
                     "correct": ablate_stats.pack_bits(right)}  # fmt: skip
    splits.test.transform = None
    out["num_samples"] = ev.num_samples
    return out


def _prune(folder: Path) -> None:
    """A finished, evaluated run needs no resume state: keep last.safetensors (the evaluated weights), drop the
    rest (a 60M-parameter run writes about 1 GB of checkpoints)."""
    run = rundir.RunDir(folder)
    for path in (run.state, run.best):
        path.unlink(missing_ok=True)


def _train(tc: Any, splits: Splits) -> tuple[list[dict[str, Any]], list[tuple[int, int, int, float]], str | None]:
    """(metrics rows, the running totals after every step, why the loss stopped the run or None)."""
    from . import train
    from .train.diagnostics import Diverging
    from .train.loop import NonFiniteLoss, step_hook

    trace: list[tuple[int, int, int, float]] = []
    splits.train.transform = None  # each run gives the views its own geometry (no-augment: the centre crop)
    splits.val.transform = None
    try:
        with step_hook(lambda epoch, st: trace.append((epoch, st.samples, st.correct, st.loss_sum))):
            result = train.main(tc, train_dataset=splits.train, val_dataset=splits.val)
    except (NonFiniteLoss, Diverging) as e:  # the run's own checks stopped it (docs/DIAGNOSTICS.md)
        folder = Path(tc.out)
        run = rundir.RunDir(folder)
        rows = run.read_metrics() if run.metrics.exists() else []
        return rows, trace, f"training diverged: {e}"
    if result.interrupted:
        raise AblationError(f"stopped in {tc.out}; run the same command again to resume it")
    return result.metrics, trace, None


def train_and_record(
    variant: str,
    seed: int,
    tc: Any,
    splits: Splits,
    *,
    threshold: float,
    device: str,
    workers: int,
    keep: bool,
    ten_crop: bool = True,
) -> dict[str, Any]:
    """Train (or resume) one run, evaluate it unless it diverged (``ten_crop``: on ten patches too), write its
    record into the run folder."""
    from .data.fileio import atomic_write_text
    from .runtime import resolve_device

    folder = Path(tc.out)
    resumed = rundir.RunDir(folder).is_resumable()
    metrics, trace, nonfinite = _train(dataclasses.replace(tc, resume=str(folder)) if resumed else tc, splits)
    curve = epoch_curve(metrics)
    diverged = nonfinite or ablate_stats.diverged_reason(curve, splits.num_classes, samples=len(splits.train))
    steps = ablate_stats.step_curve(trace)
    epochs_to, seconds_to = to_threshold(curve, threshold)
    record: dict[str, Any] = {
        "variant": variant,
        "seed": seed,
        "folder": str(folder),
        "diverged": diverged,
        "centre": None,
        "ten_crop": None,
        "test_samples": len(splits.test),
        "final_train_loss": curve[-1]["train_loss"] if curve else math.nan,
        "final_train_error": curve[-1]["train_error"] if curve else None,
        "threshold": threshold,
        "epochs_to_threshold": epochs_to,
        "seconds_to_threshold": seconds_to,
        "images_to_threshold": None if resumed else ablate_stats.images_to_threshold(steps, threshold),
        "images_seen": steps[-1]["images"] if steps else 0,
        "images_per_epoch": len(splits.train),
        "steps_complete": not resumed,  # a resumed run's step curve lacks the steps before the stop
        "train_seconds": curve[-1]["seconds"] if curve else 0.0,
        "curve": curve,
        "steps": steps,
        "train_config": tc.to_dict(),
    }
    if nonfinite is None and rundir.RunDir(folder).last.is_file():
        ev = _evaluate(folder, splits, resolve_device(device), workers, ten_crop)
        record.update(centre=ev["centre"], ten_crop=ev["ten_crop"], test_samples=ev["num_samples"])
    atomic_write_text(folder / RUN_RECORD, json.dumps(record, indent=2) + "\n")
    if not keep:
        _prune(folder)
    return record
