"""What ``train`` and ``finetune`` print before the first epoch and after the last (issue 22, item 5), as the
demo does: a header (the model and where it starts, the data with its classes and counts, which layers learn,
are frozen or start afresh, device and precision) and a closing summary (epochs done, the best epoch, the
per-class validation accuracy, what the diagnostics found, the files written and the commands to run next)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import rundir
from ..names import LAYER_NAMES
from .config import TrainConfig

__all__ = ["closing_lines", "header_lines"]

_LISTED = 12  # classes named one by one; more are summarised


def _class_line(classes: Sequence[str], counts: Sequence[int] | None) -> str:
    if counts is None:
        return f"{len(classes)} classes"
    if len(classes) <= _LISTED:
        return f"{len(classes)} classes: " + ", ".join(f"{c} {n:,}" for c, n in zip(classes, counts))
    lo = min(range(len(counts)), key=counts.__getitem__)
    hi = max(range(len(counts)), key=counts.__getitem__)
    return (
        f"{len(classes)} classes, {counts[lo]:,} to {counts[hi]:,} training images each (smallest {classes[lo]}, "
        f"largest {classes[hi]})"
    )


def _layer_list(names: Sequence[str]) -> str:
    names = [n for n in LAYER_NAMES if n in set(names)]
    if not names:
        return "none"
    return "every layer (conv1-fc8)" if names == list(LAYER_NAMES) else ", ".join(names)


def header_lines(cfg: TrainConfig, monitor: Any, sets: tuple[Any, Any], *, input_size: int, where: str) -> list[str]:
    """The header of a run: ``monitor`` (`alexnet.train.diagnostics.Monitor`) knows the classes and the layers
    that learn, ``sets`` are the training and validation sets (or None), ``where`` the device and precision."""
    from .diagnostics import class_counts

    classes, learners, new_layers = monitor.classes, monitor.learners, monitor.new_layers
    counts = class_counts(sets[0], len(classes))
    sizes = (len(sets[0]), len(sets[1]) if sets[1] is not None else None)
    trainable = monitor.trainable
    start = f"from {cfg.weights}" if cfg.weights is not None else f"from scratch (init {cfg.init})"
    command = "finetune" if cfg.weights is not None else "train"
    val = f", {sizes[1]:,} validation images" if sizes[1] else ", no validation split"
    frozen = [n for n in LAYER_NAMES if n not in set(learners)]
    fresh = f"{_layer_list(new_layers)}" + (
        f" (lr x{cfg.new_layer_lr_mult:g})" if new_layers and cfg.new_layer_lr_mult != 1 else ""
    )
    cached = "; frozen layers' features computed once (cache)" if cfg.cache_features else ""
    epochs = f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
    return [
        f"{command}: {cfg.arch} {start}, {input_size}x{input_size} input, {epochs} of batch {cfg.batch_size}, lr "
        f"{cfg.lr:g} ({cfg.schedule} schedule)",
        f"data: {cfg.data or 'data sets handed in'}: {sizes[0]:,} training images{val}; "
        + _class_line(classes, counts),
        f"layers: learning {_layer_list(learners)} ({trainable:,} parameters); frozen: {_layer_list(frozen)}; "
        f"re-initialised: {fresh}{cached}",
        f"on {where}; run folder {cfg.out}",
    ]


def _per_class(names: Sequence[str], accs: Sequence[float]) -> str:
    pairs = [(n, a) for n, a in zip(names, accs) if not math.isnan(a)]
    if len(pairs) > _LISTED:
        pairs = sorted(pairs, key=lambda p: p[1])[:5]
        return "lowest " + ", ".join(f"{n} {100 * a:.1f}%" for n, a in pairs)
    return ", ".join(f"{n} {100 * a:.1f}%" for n, a in pairs)


def closing_lines(
    out: Path,
    *,
    epochs_done: int,
    epochs: int,
    seconds: float,
    best: tuple[int, float],
    per_class: tuple[Sequence[str], Sequence[float]] | None,
    findings: Sequence[Any],
    extendable: bool = True,
) -> list[str]:
    """The closing summary of a run that finished its epochs: ``best`` (epoch, top-1 error; epoch 0 when none),
    ``per_class`` the last validation's (class names, accuracies), ``findings`` the diagnostics'; ``extendable``
    False when more epochs would train at lr 0 (a linear schedule that has reached its end)."""
    best_epoch, best_err = best
    lines = [f"done: {epochs_done} of {epochs} epochs in {seconds:.1f} s"]
    if best_epoch and math.isfinite(best_err):
        lines[0] += f"; best epoch {best_epoch}, top-1 error {100 * best_err:.2f}%"
    if per_class is not None:
        lines.append(f"per-class validation accuracy (epoch {epochs_done}): {_per_class(*per_class)}")
    kinds = ", ".join(dict.fromkeys(f.kind for f in findings))
    lines.append(
        f"diagnostics: {len(findings)} warning{'s' if len(findings) != 1 else ''} ({kinds}), in "
        f"{out / rundir.DIAGNOSTICS}"
        if findings
        else "diagnostics: no warning"
    )
    names = (rundir.BEST, rundir.LAST, rundir.STATE, rundir.METRICS, rundir.EVAL, rundir.CONFIG, rundir.DIAGNOSTICS)
    written = [n for n in names if (out / n).is_file()]
    lines.append(f"files: {out}/ {', '.join(written)}")
    weights = out / (rundir.BEST if (out / rundir.BEST).is_file() else rundir.LAST)
    lines.append("next:")
    lines.append(f"  alexnet report {out}")
    if weights.is_file():
        lines.append(f"  alexnet predict IMAGE.jpg --weights {weights}")
    if (out / rundir.STATE).is_file() and extendable:
        lines.append(f"  alexnet train --resume {out} --epochs {epochs + max(1, epochs // 2)}   (to train longer)")
    elif (out / rundir.STATE).is_file():
        lines.append("  (its linear schedule ended at lr 0: a resume with more epochs would not train further)")
    return lines


def print_lines(lines: Sequence[str]) -> None:
    print("\n".join(lines), flush=True)


def eval_per_class(val: Any, names: Sequence[str]) -> tuple[Sequence[str], Sequence[float]] | None:
    """(class names, per-class accuracies) of an `EvalResult`, or None without one."""
    if val is None:
        return None
    return list(names), list(val.per_class_accuracy())
