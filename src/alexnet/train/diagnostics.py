"""Training that says when it is failing, and why (issue 27): cheap checks at the start of a run, on its first
batch, on every step's loss (a number the loop already has) and after each epoch, each a `Finding` printed as
one or two plain lines (the condition, its evidence, what to try) and recorded in the run folder's
``diagnostics.json`` (`rundir.DIAGNOSTICS`), which the report shows.

The six diagnoses, their evidence and thresholds (docs/DIAGNOSTICS.md says how each threshold was chosen):

1. ``diverging``: a non-finite loss, or the median of the last `DIVERGE_WINDOW` step losses above
   `diverge_threshold` (three times chance's ``ln C``, at least ``ln C + 3``) and `DIVERGE_GROWTH` times the first
   step's, once `DIVERGE_AFTER_STEPS` steps have run. The run stops (`Diverging`); its last checkpoint stays.
2. ``stuck``: an epoch's training accuracy within `STUCK_SIGMAS` binomial standard deviations of chance (the
   majority class's share of the labels seen) and its loss not below `STUCK_LOSS_FRACTION` of the labels'
   entropy (the loss of predicting the class frequencies), on enough images to tell (`STUCK_MIN_SAMPLES`) and
   after enough steps to have learnt (`STUCK_MIN_STEPS`).
3. ``preprocessing``: the first batch the model sees (after the run's batch transform) outside the values that
   0..255 pixels can give under the weights' recorded preprocessing, or its spread `INPUT_SCALE_FACTOR` times
   too small.
4. ``leakage``: images with identical content (a hash of the file's bytes, or of the stored pixels) in both the
   training and the validation split.
5. ``imbalance``: the largest class more than `IMBALANCE_RATIO` times the smallest in the training split.
6. ``overfitting``: the validation loss rising for `OVERFIT_EPOCHS` epochs in a row while the training loss fell.

No check adds a device synchronisation per step: the label counts are added on the device, the loss is the
float the loop already made, the first batch's statistics are read once per run.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .. import rundir
from ..data.fileio import atomic_write_text
from ..names import LAYER_NAMES
from ..preprocessing import Preprocessing
from .config import TrainError

__all__ = [
    "DIAGNOSES",
    "Diverging",
    "Finding",
    "Monitor",
    "check_imbalance",
    "check_inputs",
    "check_loss",
    "check_overfitting",
    "check_stuck",
    "diverge_threshold",
    "find_leaks",
    "input_stats",
    "read_diagnostics",
]

DIAGNOSES = ("diverging", "stuck", "preprocessing", "leakage", "imbalance", "overfitting")
DIVERGE_AFTER_STEPS = 20  # judged from the 20th step on: early spikes of the paper's lr last a few steps
DIVERGE_WINDOW = 20  # the median of this many step losses: a spike of under 10 steps is not a divergence
DIVERGE_GROWTH = 3.0  # and above this many times the first step's loss (He init starts far above ln C, and falls)
STUCK_SIGMAS = 3.0
STUCK_LOSS_FRACTION = 0.95
STUCK_MIN_SAMPLES = 100  # fewer images per epoch: chance and learning cannot be told apart
STUCK_MIN_STEPS = 100  # fewer steps so far: at chance is where a slow learner still is, not a fault
INPUT_SCALE_FACTOR = 16.0  # sqrt(255): halfway, on a log scale, between right and the 255x of 0-1 vs 0-255
INPUT_RANGE_MARGIN = 0.25  # of the attainable range: PCA lighting and rounding move values a little past it
IMBALANCE_RATIO = 10.0
OVERFIT_EPOCHS = 3
LEAKAGE_MAX_IMAGES = 300_000  # beyond this the content hashes are not computed (a note says so)
LEAKAGE_SHOWN = 3


class Diverging(TrainError):
    """The training loss ran away (well above chance's, or not finite): the run stops, its last good checkpoint
    stays."""


@dataclass
class Finding:
    """One diagnosis: which (`DIAGNOSES`), when (epoch 0: at the start; step within the epoch, if any), the
    message printed, and the evidence as numbers."""

    kind: str
    message: str
    epoch: int = 0
    step: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"warning: {self.kind}: {self.message}"


def _fmt_list(values: Sequence[float], digits: int = 3) -> str:
    return "(" + ", ".join(f"{v:.{digits}g}" for v in values) + ")"


# --- 1. diverging -------------------------------------------------------------------------------------------------
def diverge_threshold(num_classes: int) -> float:
    """The loss above which training is diverging: three times chance's ``ln C``, and at least ``ln C + 3`` (a
    model that puts under e^-3 = 5 % on the true class more than guessing would, for two or three classes)."""
    chance = math.log(max(2, num_classes))
    return max(3.0 * chance, chance + 3.0)


def check_loss(losses: Sequence[float], steps: int, num_classes: int, first: float) -> float | None:
    """The loss that shows divergence, else None: a non-finite one, or, from step `DIVERGE_AFTER_STEPS` on, the
    median of the last `DIVERGE_WINDOW` when it is above `diverge_threshold` and `DIVERGE_GROWTH` times ``first``
    (the run's first step's loss, computed before any update: the initialisation's, whatever the lr)."""
    if not losses:
        return None
    if not math.isfinite(losses[-1]):
        return losses[-1]
    if steps < DIVERGE_AFTER_STEPS:
        return None
    window = sorted(list(losses)[-DIVERGE_WINDOW:])
    median = window[(len(window) - 1) // 2]
    return median if median > max(diverge_threshold(num_classes), DIVERGE_GROWTH * first) else None


# --- 2. stuck at chance -------------------------------------------------------------------------------------------
def check_stuck(acc1: float, loss: float, label_counts: Sequence[int], steps: int) -> dict[str, float] | None:
    """The evidence that an epoch's training (``acc1`` in %, mean ``loss``) learnt nothing from labels seen
    ``label_counts`` times each, after ``steps`` steps in all, else None: accuracy within `STUCK_SIGMAS` binomial
    deviations of chance (the largest class's share) and a loss not clearly below the labels' entropy (predicting
    the frequencies), on at least `STUCK_MIN_SAMPLES` images and `STUCK_MIN_STEPS` steps."""
    n = sum(label_counts)
    if n < STUCK_MIN_SAMPLES or steps < STUCK_MIN_STEPS or not (math.isfinite(acc1) and math.isfinite(loss)):
        return None
    shares = [c / n for c in label_counts if c]
    chance = max(shares)
    entropy = -sum(p * math.log(p) for p in shares)
    sigma = math.sqrt(chance * (1 - chance) / n)
    band = STUCK_SIGMAS * sigma
    if entropy <= 0 or abs(acc1 / 100 - chance) > band or loss < STUCK_LOSS_FRACTION * entropy:
        return None
    return {"train_acc1": acc1, "chance_acc1": 100 * chance, "noise_acc1": 100 * band, "train_loss": loss,
            "chance_loss": entropy, "samples": n, "steps": steps}  # fmt: skip


# --- 3. preprocessing ---------------------------------------------------------------------------------------------
INPUT_STATS_IMAGES = 16  # of the first batch: enough for a channel's mean and spread, and cheap


def input_stats(x: torch.Tensor) -> dict[str, list[float]] | None:
    """Per-channel mean, std, min and max of the first `INPUT_STATS_IMAGES` of a batch of model inputs (N, 3, S, S)
    (one device sync, no copy of the batch); None for anything else (cached features)."""
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        return None
    xs = x.detach()[:INPUT_STATS_IMAGES]
    dims = (0, 2, 3)
    std, mean = torch.std_mean(xs, dim=dims, correction=0)
    rows = torch.stack([mean, std, xs.amin(dim=dims), xs.amax(dim=dims)]).float().tolist()
    return dict(zip(("mean", "std", "min", "max"), rows))


def check_inputs(stats: Mapping[str, Sequence[float]], pre: Preprocessing) -> str | None:
    """What is wrong with model inputs of these statistics under ``pre`` (one sentence), else None.

    Pixels 0..255 give, under ``pre``, values in ``[(0 - mean) / std, (value_scale - mean) / std]`` per channel;
    natural images spread about a quarter of that range (ImageNet's pixel std is 0.226 of 1)."""
    lo = [(0.0 - m) / s for m, s in zip(pre.mean, pre.std)]
    hi = [(pre.value_scale - m) / s for m, s in zip(pre.mean, pre.std)]
    span = [h - low for low, h in zip(lo, hi)]
    ratio = sum(s / (0.25 * w) for s, w in zip(stats["std"], span)) / 3
    margin = [INPUT_RANGE_MARGIN * w for w in span]
    outside = any(mn < low - d for mn, low, d in zip(stats["min"], lo, margin)) or any(
        mx > h + d for mx, h, d in zip(stats["max"], hi, margin)
    )
    if not outside and ratio >= 1 / INPUT_SCALE_FACTOR:
        return None
    pixels = "0-1" if pre.value_scale == 1 else f"0-{pre.value_scale:g}"
    seen = (
        f"the first batch reaches the model with channel means {_fmt_list(stats['mean'])}, std "
        f"{_fmt_list(stats['std'])}, values {min(stats['min']):.3g}..{max(stats['max']):.3g}; the weights' "
        f"preprocessing (pixels {pixels}, mean {_fmt_list(pre.mean)}, std {_fmt_list(pre.std)}) gives values in "
        f"{min(lo):.3g}..{max(hi):.3g} with std near {0.25 * sum(span) / 3:.3g}"
    )
    if ratio > INPUT_SCALE_FACTOR:
        why = f"{ratio:.0f}x too spread: pixels in 0-255 where {pixels} was expected?"
    elif ratio < 1 / INPUT_SCALE_FACTOR:
        why = (
            f"{1 / ratio:.0f}x too narrow: images already converted to floats in [0, 1] or normalised, then "
            "scaled again as 0-255 pixels?"
        )
    else:
        why = "far from zero: another mean subtracted, or none?"
    return f"{seen}: {why} Hand the training uint8 (3, S, S) images and check the weights' preprocessing"


# --- 4. leakage ---------------------------------------------------------------------------------------------------
def _content_keys(ds: Any) -> list[bytes] | None:
    """A hash of each image's content: its file's bytes, or its stored pixels; None for a data set that keeps
    neither where we can read it."""
    from ..data.base import PreparedDataset, Subset
    from ..data.datasets import ImageListDataset
    from ..data.fashion_mnist import FashionMNISTDataset

    base, idx = ds, None
    while isinstance(base, Subset):
        idx = base.indices if idx is None else [base.indices[i] for i in idx]
        base = base.base
    indices = range(len(base)) if idx is None else idx
    if isinstance(base, ImageListDataset):

        def content(i: int) -> bytes:
            try:
                return Path(base.names[i]).read_bytes()
            except OSError:
                return f"unreadable:{base.names[i]}".encode()

    elif isinstance(base, FashionMNISTDataset):

        def content(i: int) -> bytes:
            return base.images[i].tobytes()

    elif isinstance(base, PreparedDataset):

        def content(i: int) -> bytes:
            return base.load(i).numpy().tobytes()

    else:
        return None
    return [hashlib.blake2b(content(i), digest_size=16).digest() for i in indices]


def find_leaks(train_ds: Any, val_ds: Any) -> dict[str, Any]:
    """Images of ``val_ds`` whose content is also in ``train_ds``: ``{"count": n, "names": [...]}`` (the count
    of validation images, a few (validation, training) name pairs), or ``{"checked": False, "why": ...}``."""
    total = len(train_ds) + len(val_ds)
    if total > LEAKAGE_MAX_IMAGES:
        return {"checked": False, "why": f"{total:,} images: more than {LEAKAGE_MAX_IMAGES:,}, not hashed"}
    train_keys, val_keys = _content_keys(train_ds), _content_keys(val_ds)
    if train_keys is None or val_keys is None:
        return {"checked": False, "why": "the data set keeps no files or pixels to hash"}
    first: dict[bytes, int] = {}
    for i, k in enumerate(train_keys):
        first.setdefault(k, i)
    shared = [(j, first[k]) for j, k in enumerate(val_keys) if k in first]
    names = [(str(_name(val_ds, j)), str(_name(train_ds, i))) for j, i in shared[:LEAKAGE_SHOWN]]
    return {"checked": True, "count": len(shared), "val_images": len(val_keys), "examples": names}


def _name(ds: Any, i: int) -> str:
    names = getattr(ds, "names", None)
    return names[i] if names is not None else f"#{i}"


def leak_message(leaks: Mapping[str, Any]) -> str:
    shown = "; ".join(f"{v} = {t}" for v, t in leaks["examples"])
    more = ", ..." if leaks["count"] > len(leaks["examples"]) else ""
    return (
        f"{leaks['count']} of {leaks['val_images']} validation images are identical to training images "
        f"(content hash), e.g. {shown}{more}: the validation figures overstate accuracy on new images. Remove "
        "the copies from one split"
    )


# --- 5. imbalance -------------------------------------------------------------------------------------------------
def class_counts(ds: Any, num_classes: int) -> list[int] | None:
    """Images per class of ``ds`` (from its ``targets``), or None when it has none."""
    targets = getattr(ds, "targets", None)
    if targets is None:
        return None
    counts = [0] * num_classes
    for t in targets:
        if 0 <= int(t) < num_classes:
            counts[int(t)] += 1
    return counts


def check_imbalance(counts: Sequence[int], classes: Sequence[str]) -> str | None:
    """The warning when the largest class has more than `IMBALANCE_RATIO` times the images of the smallest."""
    if not counts:
        return None
    big, small = max(range(len(counts)), key=counts.__getitem__), min(range(len(counts)), key=counts.__getitem__)
    if counts[big] <= IMBALANCE_RATIO * counts[small]:
        return None
    ratio = f"{counts[big] / counts[small]:.0f}x" if counts[small] else "infinitely"
    return (
        f"the largest class, {classes[big]} ({counts[big]} training images), is {ratio} the smallest, "
        f"{classes[small]} ({counts[small]}): a model can score well by favouring the large classes. Compare the "
        "per-class validation accuracy at the end; gather more of the small classes or resample"
    )


# --- 6. overfitting -----------------------------------------------------------------------------------------------
def check_overfitting(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The evidence of overfitting in metrics.csv's ``rows``: the validation loss rising for `OVERFIT_EPOCHS`
    epochs in a row while the training loss fell over them, else None."""
    window = list(rows[-(OVERFIT_EPOCHS + 1) :])
    if len(window) < OVERFIT_EPOCHS + 1:
        return None
    val = [float(r["val_loss"]) for r in window]
    train = [float(r["train_loss"]) for r in window]
    if not all(math.isfinite(v) for v in val + train):
        return None
    if all(b > a for a, b in zip(val, val[1:])) and train[-1] < train[0]:
        return {"epochs": [int(r["epoch"]) for r in window], "val_loss": val, "train_loss": train}
    return None


# --- the monitor: hooks for the run and the loop ------------------------------------------------------------------
def _layers(names: Sequence[str]) -> str:
    names = list(names)
    if names == list(LAYER_NAMES):
        return "every layer (conv1-fc8)"
    return ", ".join(names) if names else "no layer"


class Monitor:
    """The run's checks. `first_batch` and `step` are the loop's hooks (cheap: no device sync per step);
    `start` and `end_epoch` the run's; `save` writes diagnostics.json (main process only)."""

    def __init__(
        self, *, out: Path, num_classes: int, classes: Sequence[str], pre: Preprocessing, model: torch.nn.Module,
        optimizer: torch.optim.Optimizer, learners: Sequence[str], new_layers: set[str], device: torch.device,
        check_batch: bool, is_main: bool, verbose: bool, distributed: bool = False,
    ) -> None:  # fmt: skip
        self.out, self.num_classes, self.classes, self.pre = out, num_classes, list(classes), pre
        self.optimizer, self.learners, self.new_layers = optimizer, list(learners), set(new_layers)
        self.trainable = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        self.total_params = sum(p.numel() for p in model.parameters())
        self.is_main, self.verbose = is_main, verbose
        # ranks see different losses: stopping one alone would hang the others (a non-finite loss the loop agrees on)
        self.judge_loss = not distributed
        self.wants_batch = check_batch
        self.inputs: dict[str, list[float]] | None = None
        self.losses: deque[float] = deque(maxlen=DIVERGE_WINDOW)
        self.steps = 0
        self.first_loss = math.nan  # the run's first step's loss (the initialisation's)
        self.label_counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.epoch, self.step_in_epoch = 0, 0  # where the last step was
        self._leaks_thread: threading.Thread | None = None
        self._leaks: dict[str, Any] | None = None

    # the run's bookkeeping ------------------------------------------------------------------------------------
    def report(self, finding: Finding, *, echo: bool = True) -> None:
        """Record ``finding`` (once per kind and run) and print it on the main process (``echo``: the error
        that stops the run does not say it twice)."""
        if any(f.kind == finding.kind for f in self.findings):
            return
        self.findings.append(finding)
        if self.is_main and self.verbose and echo:
            print(finding.line(), flush=True)

    def resume(self) -> None:
        """A resumed run keeps the findings its folder already records (entries it cannot read are dropped)."""
        known = {f.name for f in fields(Finding)}
        for f in read_diagnostics(self.out).get("findings", []):
            if isinstance(f, dict) and isinstance(f.get("kind"), str) and isinstance(f.get("message"), str):
                self.findings.append(Finding(**{k: v for k, v in f.items() if k in known}))

    def save(self) -> None:
        if not self.is_main:
            return
        doc = {
            "findings": [asdict(f) for f in self.findings],
            "notes": self.notes,
            "first_batch": self.inputs,
            "trainable_parameters": self.trainable,
            "learning_layers": self.learners,
        }
        atomic_write_text(self.out / rundir.DIAGNOSTICS, json.dumps(doc, indent=2) + "\n")

    # at the start -----------------------------------------------------------------------------------------------
    def start(self, train_ds: Any, val_ds: Any | None) -> list[int] | None:
        """Imbalance now; leakage in a thread beside the first epoch (hashing reads every file once: the GIL is
        released while it reads and hashes), reported at its end. Returns the training split's class counts."""
        counts = class_counts(train_ds, self.num_classes)
        if counts is not None and (msg := check_imbalance(counts, self.classes)):
            self.report(Finding("imbalance", msg, evidence={"class_counts": dict(zip(self.classes, counts))}))
        if val_ds is not None and self.is_main:
            self._leaks_thread = threading.Thread(target=self._hash, args=(train_ds, val_ds), daemon=True,
                                                  name="alexnet-leakage")  # fmt: skip
            self._leaks_thread.start()
        return counts

    def _hash(self, train_ds: Any, val_ds: Any) -> None:
        try:
            self._leaks = find_leaks(train_ds, val_ds)
        except Exception as e:  # a file that vanished, a data set of another kind: the check only says so
            self._leaks = {"checked": False, "why": f"{type(e).__name__}: {e}"}

    def collect_leaks(self) -> None:
        """Wait for the leakage check started by `start` (if any) and report what it found."""
        thread, self._leaks_thread = self._leaks_thread, None
        if thread is None:
            return
        thread.join()
        leaks = self._leaks or {"checked": False, "why": "no result"}
        if not leaks["checked"]:
            self.notes.append(f"leakage not checked: {leaks['why']}")
        elif leaks["count"]:
            self.report(Finding("leakage", leak_message(leaks), self.epoch, evidence=leaks))

    # the loop's hooks -----------------------------------------------------------------------------------------
    def first_batch(self, x: torch.Tensor, epoch: int, step: int) -> None:
        """The first batch the model sees, against the weights' preprocessing (once per run)."""
        self.wants_batch, self.epoch, self.step_in_epoch = False, epoch, step
        self.inputs = input_stats(x)
        if self.inputs is not None and (msg := check_inputs(self.inputs, self.pre)):
            self.report(Finding("preprocessing", msg, epoch, step, evidence=dict(self.inputs)))

    def step(self, loss: float, labels: torch.Tensor, epoch: int, step: int) -> None:
        """Every step (``step`` of ``epoch``): the loss the loop already has (`Diverging` when it runs away) and
        the labels (counted on the device, no sync)."""
        self.steps += 1
        self.epoch, self.step_in_epoch = epoch, step
        if self.steps == 1:
            self.first_loss = loss
        self.losses.append(loss)
        self.label_counts.index_add_(0, labels, torch.ones_like(labels))
        value = check_loss(self.losses, self.steps, self.num_classes, self.first_loss) if self.judge_loss else None
        if value is not None:
            raise Diverging(self.divergence(value, f"epoch {epoch}, step {step}"))

    def _advice(self) -> tuple[str, dict[str, float]]:
        lrs = {g.get("name", "base"): float(g["lr"]) for g in self.optimizer.param_groups}
        lr = next(iter(lrs.values()), math.nan)
        new = f"; new layers {', '.join(sorted(self.new_layers))} at lr {lrs['new']:g}" if "new" in lrs else ""
        return (
            f"lr {lr:g} on {_layers(self.learners)} ({self.trainable:,} parameters){new}. Try --lr {lr / 10:g} "
            "(10x lower)"
        ), lrs

    def divergence(self, value: float, where: str) -> str:
        """Record the divergence at ``where`` (a finite loss ``value`` far above chance's); its message."""
        advice, lrs = self._advice()
        msg = (
            f"training loss {value:.3g} (median of the last {len(self.losses)} steps) at {where}, above both "
            f"{diverge_threshold(self.num_classes):.2f} (chance's ln({self.num_classes}) = "
            f"{math.log(max(2, self.num_classes)):.2f}) and {DIVERGE_GROWTH:g}x the first step's "
            f"{self.first_loss:.3g}; {advice}"
        )
        evidence = {"loss": value, "recent_losses": list(self.losses), "lr": lrs, "learning_layers": self.learners}
        self.report(Finding("diverging", msg, self.epoch, self.step_in_epoch, evidence), echo=False)
        return f"diverging: {msg}"

    def stop_error(self, error: TrainError, kept: str) -> TrainError:
        """The error that stops a diverging run (``error``: `Diverging`, or the loop's non-finite loss, recorded
        here), with what was kept; diagnostics.json is written first."""
        self.collect_leaks()
        if isinstance(error, Diverging):
            message = f"{error}; stopped ({kept})"
        else:
            advice, lrs = self._advice()
            evidence = {"loss": "not finite", "recent_losses": list(self.losses), "lr": lrs,
                        "learning_layers": self.learners}  # fmt: skip
            finding = Finding("diverging", f"{error}; {advice}", self.epoch, self.step_in_epoch + 1, evidence)
            self.report(finding, echo=False)
            message = f"{error}; stopped ({kept}); diverging: {advice}"
        self.save()
        return type(error)(message)

    # after each epoch -----------------------------------------------------------------------------------------
    def end_epoch(self, rows: Sequence[Mapping[str, Any]], best_epoch: int) -> None:
        """Stuck at chance and overfitting, from the epoch's row (and the rows before); then diagnostics.json."""
        row = rows[-1]
        self.collect_leaks()
        counts = self.label_counts.tolist()  # one sync per epoch
        self.label_counts.zero_()
        stuck = check_stuck(100.0 * float(row["train_top1_accuracy"]), float(row["train_loss"]), counts, self.steps)
        if stuck is not None:
            self.report(Finding("stuck", self._stuck_message(stuck, counts), int(row["epoch"]), evidence={
                **stuck, "label_counts": counts, "lr": [float(g["lr"]) for g in self.optimizer.param_groups],
                "trainable_parameters": self.trainable, "first_batch": self.inputs}))  # fmt: skip
        over = check_overfitting(rows)
        if over is not None:
            self.report(Finding("overfitting", _overfit_message(over, best_epoch), int(row["epoch"]), evidence=over))
        self.save()

    def _stuck_message(self, s: Mapping[str, float], counts: Sequence[int]) -> str:
        lrs = ", ".join(f"{g.get('name', 'base')} {float(g['lr']):g}" for g in self.optimizer.param_groups)
        seen = ", ".join(f"{c}" for c in counts[:10]) + (", ..." if len(counts) > 10 else "")
        inputs = (
            f"inputs mean {_fmt_list(self.inputs['mean'], 2)} std {_fmt_list(self.inputs['std'], 2)}"
            if self.inputs
            else "inputs not measured"
        )
        try_ = "no layer is training: set --train-layers" if not self.trainable else (
            "check that the labels follow the images (shuffled labels train to chance), the learning rate "
            "(x10?), the layers that learn and the preprocessing"
        )  # fmt: skip
        return (
            f"training accuracy {s['train_acc1']:.1f}% is within noise ({s['noise_acc1']:.1f} points) of chance "
            f"({s['chance_acc1']:.1f}%), loss {s['train_loss']:.3f} vs chance's {s['chance_loss']:.3f}. Evidence: "
            f"{self.trainable:,} of {self.total_params:,} parameters training ({_layers(self.learners)}), lr "
            f"{lrs}, {inputs}, labels seen per class {seen}. Try: {try_}"
        )


def _overfit_message(over: Mapping[str, Any], best_epoch: int) -> str:
    val = " -> ".join(f"{v:.3f}" for v in over["val_loss"])
    tr = " -> ".join(f"{v:.3f}" for v in over["train_loss"])
    return (
        f"validation loss rose for {OVERFIT_EPOCHS} epochs ({val}) while training loss fell ({tr}). "
        f"best.safetensors keeps the best epoch ({best_epoch}); fight it with --augment, --dropout 0.5, fewer "
        "--train-layers or more data"
    )


def read_diagnostics(out: str | Path) -> dict[str, Any]:
    """A run folder's diagnostics.json (an empty record when it has none or it cannot be read)."""
    path = Path(out) / rundir.DIAGNOSTICS
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"findings": [], "notes": []}
    return doc if isinstance(doc, dict) else {"findings": [], "notes": []}
