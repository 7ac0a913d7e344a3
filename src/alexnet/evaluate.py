"""Evaluation: the paper's top-1 and top-5 error rates (section 6), 10-crop testing (section 4.1), confusion matrix.

Counts are exact over the whole data set: under torch.distributed every rank evaluates a disjoint share of the
samples (`eval_sampler`, no padding, nothing dropped) and the counts are all-reduced, as pytorch/examples' imagenet
``validate`` does for the tail that a DistributedSampler would pad.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data.device_decode import materialize
from .distributed import DistInfo, eval_sampler, setup_distributed, shutdown_distributed
from .errors import AlexnetError
from .options import WeightsSource, check_workers, resolve_progress
from .progress import track
from .runtime import FP32, Precision, model_input, require_precision, resolve_device, unwrap_model

if TYPE_CHECKING:
    from .preprocessing import Preprocessing

__all__ = [
    "EvaluationError",
    "EvalResult",
    "SamplePredictions",
    "topk_correct",
    "evaluate",
    "EvalOptions",
    "evaluate_dataset",
    "open_eval_dataset",
    "read_eval_json",
    "batches_with_refs",
    "check_classes",
    "format_table",
    "write_json",
]


class EvaluationError(AlexnetError, ValueError):
    """Weights and data that cannot be evaluated together, or an unreadable evaluation file; one-line message."""


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the ``k`` highest scores, for each k (the paper's top-1/top-5).

    A sample's rank is the number of classes scored strictly higher than its target, plus the number scored
    equally with a lower class index: ties go to the lower index, the same rule as ``argmax`` (and so as the
    confusion matrix), independent of the device's sort. A k at least the number of classes counts every
    sample as correct (the target is always among all classes). NaN scores rank last.
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)}, {tuple(targets.shape)}")
    scores = logits.float().nan_to_num(nan=-math.inf)
    targets = targets.view(-1, 1).long()
    own = scores.gather(1, targets)  # (N, 1)
    classes = torch.arange(scores.shape[1], device=scores.device).view(1, -1)
    rank = (scores > own).sum(dim=1) + ((scores == own) & (classes < targets)).sum(dim=1)  # (N,)
    return [int((rank < k).sum()) for k in ks]


@dataclass
class SamplePredictions:
    """What the model said about every evaluated sample: enough to list the most confidently misclassified
    images in a report (the pictures the paper's Figure 4 left column invites one to look at)."""

    labels: torch.Tensor  # (N,) int64 true classes
    predicted: torch.Tensor  # (N,) int64 argmax classes
    confidence: torch.Tensor  # (N,) float32 probability of the predicted class (softmax, 10-crop averaged)
    true_prob: torch.Tensor  # (N,) float32 probability of the true class
    indices: list[int]  # data set index per sample (-1 where unknown)
    names: list[str]  # path or id per sample ("" where unknown)

    def __len__(self) -> int:
        return len(self.labels)

    def misclassified(self, n: int | None = None) -> list[int]:
        """Positions of wrong predictions, the most confident first (ties: data set order)."""
        wrong = (self.predicted != self.labels).nonzero().flatten()
        order = torch.sort(self.confidence[wrong], descending=True, stable=True).indices
        pos = wrong[order].tolist()
        return pos if n is None else pos[:n]

    @staticmethod
    def concat(parts: Sequence[SamplePredictions]) -> SamplePredictions:
        """Join per-rank shares and restore data set order where the indices are known."""
        p = SamplePredictions(
            labels=torch.cat([x.labels for x in parts]) if parts else torch.zeros(0, dtype=torch.int64),
            predicted=torch.cat([x.predicted for x in parts]) if parts else torch.zeros(0, dtype=torch.int64),
            confidence=torch.cat([x.confidence for x in parts]) if parts else torch.zeros(0),
            true_prob=torch.cat([x.true_prob for x in parts]) if parts else torch.zeros(0),
            indices=[i for x in parts for i in x.indices],
            names=[nm for x in parts for nm in x.names],
        )
        if len(parts) > 1 and all(i >= 0 for i in p.indices):
            order = sorted(range(len(p)), key=p.indices.__getitem__)
            t = torch.tensor(order, dtype=torch.int64)
            p = SamplePredictions(
                p.labels[t],
                p.predicted[t],
                p.confidence[t],
                p.true_prob[t],
                [p.indices[i] for i in order],
                [p.names[i] for i in order],
            )
        return p


@dataclass
class EvalResult:
    """Totals over a data set. Accuracies are fractions; errors are 1 - accuracy (the paper reports errors)."""

    num_samples: int
    loss: float
    acc1: float
    acc5: float
    confusion: torch.Tensor  # (C, C) int64, rows = true class, columns = predicted class
    predictions: SamplePredictions | None = None  # per sample, when evaluate(collect=True)
    skipped: list[str] = field(default_factory=list)  # bad images the loader dropped (never counted)
    class_names: list[str] | None = None  # index -> name, when known
    ten_crop: bool = False  # True: softmax averaged over the paper's 10 patches (section 4.1)
    data: dict[str, Any] | None = None  # how to reopen the data set (source, split, ...) for pictures
    rank: int = 0  # the process that made this result (under torchrun only rank 0 writes files)

    @property
    def top1_error(self) -> float:
        return 1.0 - self.acc1

    @property
    def top5_error(self) -> float:
        return 1.0 - self.acc5

    def per_class_accuracy(self) -> list[float]:
        """Recall of each class (NaN for a class with no samples)."""
        totals = self.confusion.sum(dim=1)
        diag = self.confusion.diagonal()
        return [float(d) / float(t) if t > 0 else math.nan for d, t in zip(diag.tolist(), totals.tolist())]

    def to_dict(self, class_names: Sequence[str] | None = None, *, top_misclassified: int = 32) -> dict[str, Any]:
        """JSON-ready summary; ``misclassified`` lists the ``top_misclassified`` most confident errors."""
        c = self.confusion.shape[0]
        if class_names is None:
            class_names = self.class_names
        names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
        per_class = self.per_class_accuracy()
        d: dict[str, Any] = {
            "num_samples": self.num_samples,
            "loss": None if math.isnan(self.loss) else self.loss,
            "top1_accuracy": self.acc1,
            "top5_accuracy": self.acc5,
            "top1_error": self.top1_error,
            "top5_error": self.top5_error,
            "ten_crop": self.ten_crop,
            "classes": names,
            "per_class_accuracy": {n: (None if math.isnan(a) else a) for n, a in zip(names, per_class)},
            "confusion_matrix": self.confusion.tolist(),
            "skipped": list(self.skipped),
        }
        if self.data is not None:
            d["data"] = self.data
        if self.predictions is not None:
            p = self.predictions
            d["misclassified"] = [
                {
                    "index": p.indices[i],
                    "name": p.names[i],
                    "label": names[int(p.labels[i])],
                    "predicted": names[int(p.predicted[i])],
                    "confidence": float(p.confidence[i]),
                    "true_class_probability": float(p.true_prob[i]),
                }
                for i in p.misclassified(top_misclassified)
            ]
        return d


def batches_with_refs(loader: Any, names: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """Yield ``(images, labels, bad, refs)``: the loader's batches plus ``refs``, one ``(index, name)`` per kept
    sample.

    The indices come from the loader's (deterministic, unshuffled) batch sampler; the samples the loader dropped
    as bad are recognised by name. Where that does not add up, refs are ``(-1, "")``: counts stay exact, only
    the pictures of a report lose their source.
    """
    chunks = iter(loader.batch_sampler) if getattr(loader, "batch_sampler", None) is not None else None
    for batch in loader:
        images, labels = batch[0], batch[1]
        bad = list(batch[2]) if len(batch) > 2 else []
        idx = list(next(chunks, [])) if chunks is not None else []
        if bad:
            bad_set = {str(b) for b in bad}
            idx = [i for i in idx if str(names[i]) not in bad_set]
        known = len(idx) == len(labels)
        refs = [(int(i), str(names[i])) for i in idx] if known else [(-1, "")] * len(labels)
        yield images, labels, bad, refs


class _Tally:
    """Running totals of an evaluation: [samples, top-1 hits, top-5 hits, loss sum] in float64 (large sums stay
    exact), the confusion matrix, the skipped names, and (``collect``) every sample's prediction."""

    def __init__(self, num_classes: int, device: torch.device, collect: bool) -> None:
        self.num_classes, self.collect = num_classes, collect
        self.totals = torch.zeros(4, dtype=torch.float64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.skipped: list[str] = []
        self.kept: dict[str, list[Any]] = {k: [] for k in ("labels", "predicted", "confidence", "true_prob", "refs")}

    def add(self, logits: torch.Tensor, labels: torch.Tensor, crops: int, refs: list[Any] | None) -> None:
        """Score one batch: ``logits`` (N * crops, C); with 10 crops the softmax is averaged over them (section
        4.1) and the loss is the NLL of that average."""
        c = self.num_classes
        if logits.shape[-1] != c:
            raise EvaluationError(f"the model gives {logits.shape[-1]} scores, expected {c} classes")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c):
            raise EvaluationError(f"labels out of range [0, {c}): {int(labels.max())}")
        if crops > 1:
            scores = F.softmax(logits, dim=-1).view(len(labels), crops, -1).mean(dim=1)  # (N, C)
            loss_sum = F.nll_loss(scores.clamp_min(1e-12).log(), labels, reduction="sum")
        else:
            scores = logits
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        c1, c5 = topk_correct(scores, labels, (1, 5))
        self.totals += torch.tensor([len(labels), c1, c5, float(loss_sum)], dtype=torch.float64, device=logits.device)
        pred = scores.argmax(dim=-1)
        self.confusion += torch.bincount(labels * c + pred, minlength=c * c).view(c, c)
        if self.collect:
            probs = scores if crops > 1 else F.softmax(logits, dim=-1)
            self.kept["labels"].append(labels.cpu())
            self.kept["predicted"].append(pred.cpu())
            self.kept["confidence"].append(probs.gather(1, pred.view(-1, 1)).flatten().cpu())
            self.kept["true_prob"].append(probs.gather(1, labels.view(-1, 1)).flatten().cpu())
            self.kept["refs"].extend(
                refs if refs is not None and len(refs) == len(labels) else [(-1, "")] * len(labels)
            )

    def predictions(self) -> SamplePredictions | None:
        if not self.collect:
            return None
        cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
        k = self.kept
        return SamplePredictions(
            labels=cat(k["labels"], torch.int64),
            predicted=cat(k["predicted"], torch.int64),
            confidence=cat(k["confidence"], torch.float32),
            true_prob=cat(k["true_prob"], torch.float32),
            indices=[int(r[0]) for r in k["refs"]],
            names=[str(r[1]) for r in k["refs"]],
        )

    def result(self, distributed: bool) -> EvalResult:
        """The totals of every rank (all-reduced and gathered under torch.distributed)."""
        skipped, predictions = self.skipped, self.predictions()
        if distributed and dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.totals)
            dist.all_reduce(self.confusion)
            shares: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(shares, (skipped, predictions))
            skipped = [b for s in shares for b in s[0]]
            if self.collect:
                predictions = SamplePredictions.concat([s[1] for s in shares])
        t = self.totals
        n = int(t[0].item())
        return EvalResult(
            num_samples=n,
            loss=float(t[3] / n) if n else math.nan,
            acc1=float(t[1] / n) if n else math.nan,
            acc5=float(t[2] / n) if n else math.nan,
            confusion=self.confusion.cpu(),
            predictions=predictions,
            skipped=skipped,
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device | str = "cpu",
    batch_transform: nn.Module | None = None,
    num_classes: int | None = None,
    distributed: bool = False,
    mixed: Precision | None = None,
    channels_last: bool = False,
    progress: str | bool = "none",
    collect: bool = False,
) -> EvalResult:
    """Top-1/top-5 accuracy, mean cross-entropy and the confusion matrix of ``model`` over ``loader``.

    ``loader`` yields ``(images, labels)``, ``(images, labels, bad_names)`` or, from `batches_with_refs`,
    ``(images, labels, bad_names, refs)``. A 5-D batch (N, 10, 3, S, S) is 10-crop testing: the softmax is
    averaged over the crops, as the paper does (section 4.1), and the loss is the NLL of that average.
    ``batch_transform`` (uint8 -> normalised float) runs on ``device``. ``mixed``: a training run's precision,
    whose autocast the forward runs under (fp32 master weights); a model already cast by
    `Precision.inference_model` needs none (its inputs are cast to its dtype). ``collect`` keeps every sample's
    prediction and confidence (`SamplePredictions`). Under torch.distributed (``distributed=True``) the counts,
    the skipped names and the predictions are gathered from every rank.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    net = unwrap_model(model)
    tally = _Tally(int(num_classes or net.config.num_classes), device, collect)
    total = len(loader) if hasattr(loader, "__len__") else None
    try:
        for batch in track(loader, "evaluate", progress, total=total):
            images, labels, refs = _unpack(batch, device, tally.skipped)
            if len(labels) == 0:
                continue
            crops = images.shape[1] if images.ndim == 5 else 1
            images = images.flatten(0, 1) if crops > 1 else images  # (N*10, 3, S, S)
            if batch_transform is not None:
                images = batch_transform(images)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if mixed is None:  # a cast copy (`Precision.inference_model`) takes its own dtype
                images = model_input(model, images)
            with mixed.autocast(device) if mixed is not None else contextlib.nullcontext():
                logits = model(images)
            tally.add(logits.float(), labels, crops, refs)
    finally:
        model.train(was_training)
    return tally.result(distributed)


def _unpack(batch: Any, device: torch.device, skipped: list[str]) -> tuple[torch.Tensor, torch.Tensor, list | None]:
    """(images on ``device``, labels on ``device``, refs) of a loader batch; encoded or prepared batches are made
    real first (`materialize`), and the names of the images dropped on the way added to ``skipped``."""
    images, labels = batch[0], batch[1]
    refs = batch[3] if len(batch) > 3 and batch[3] is not None else None
    if len(batch) > 2 and batch[2]:
        skipped.extend(str(b) for b in batch[2])
    images, labels, dropped = materialize(images, labels, device)  # a batch still encoded
    if dropped:
        skipped.extend(dropped)
        gone = set(dropped)
        refs = [r for r in refs if r[1] not in gone] if refs is not None else None
    labels = torch.as_tensor(labels)
    if len(labels) == 0:
        return images, labels, refs
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True), refs


# --- a whole data set, from the command line or torchrun --------------------------------------------------------------
def check_classes(
    num_classes: int, weight_classes: Sequence[str] | None, data_classes: Sequence[str], source: str = "data set"
) -> None:
    """Raise `EvaluationError` unless the weights' classes are the data set's, in the same order: a label index
    means nothing if the two disagree (and an fc8 of another size cannot be scored at all)."""
    data_classes = [str(c) for c in data_classes]
    if num_classes != len(data_classes):
        raise EvaluationError(
            f"the weights have {num_classes} classes, {source} has {len(data_classes)} "
            f"({_preview(data_classes)}); evaluate weights trained on this data set, or fine-tune them first"
        )
    if weight_classes is None:
        return
    weight_classes = [str(c) for c in weight_classes]
    if weight_classes != data_classes:
        diff = next(i for i, (a, b) in enumerate(zip(weight_classes, data_classes)) if a != b)
        how = "in another order" if sorted(weight_classes) == sorted(data_classes) else "different"
        raise EvaluationError(
            f"the weights' class names are {how} than {source}'s (class {diff}: {weight_classes[diff]!r} vs "
            f"{data_classes[diff]!r}); pass --ignore-class-names if the order is known to match"
        )


def _preview(names: Sequence[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


@dataclass
class EvalOptions:
    """How `evaluate_dataset` reads and runs: everything but the weights and the data's identity."""

    ten_crop: bool = False  # average the softmax over the paper's 10 patches (section 4.1)
    batch_size: int = 64
    workers: int | None = 0  # loader processes (None: `alexnet.options.default_workers`)
    device: torch.device | str | None = None  # `alexnet.runtime.resolve_device`
    precision: Precision = FP32  # resolved (`alexnet.runtime.resolve_precision`); fp32 gives the exact figures
    channels_last: bool = False
    collect: bool = True  # keep every sample's prediction (the report's misclassified images)
    progress: str | bool = "none"  # `alexnet.options.PROGRESS_MODES`
    check_class_names: bool = True  # refuse weights whose class names differ from the data's
    on_bad_image: str = "skip"

    def __post_init__(self) -> None:
        """Every field checked here, with the package's error, so that no caller re-checks them."""
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise EvaluationError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.workers is not None:
            check_workers(self.workers)
        require_precision(self.precision)
        resolve_progress(self.progress)
        if self.on_bad_image not in ("skip", "fail"):
            raise EvaluationError(f"on_bad_image must be skip or fail, got {self.on_bad_image!r}")


def evaluate_dataset(
    weights: WeightsSource | str | Path | nn.Module,
    data: str | Path | Any,
    options: EvalOptions | None = None,
    *,
    preprocessing: Preprocessing | None = None,
    split: str | None = None,
    val_split: float = 0.0,
    seed: int = 0,
    **option_values: Any,
) -> EvalResult:
    """Evaluate weights on a data set the way the paper reports it (section 6): top-1 and top-5 error of the
    centre crop, or of the softmax averaged over the 10 patches (``ten_crop``, section 4.1).

    ``weights``: a `WeightsSource` (a name or path alone is its ``source``) or a model (then ``preprocessing`` is
    required). ``data``: a source for `alexnet.data.datasets.open_dataset` (``split``,
    ``val_split``, ``seed`` choose its samples: `open_eval_dataset`), or a dataset already built (``classes``,
    ``names``, and a transform giving the geometry's uint8 output). The data set is read with the weights' own
    preprocessing. ``options`` (`EvalOptions`), or its fields as keywords. Under torchrun every rank evaluates a
    disjoint share (`eval_sampler`) and gets the same, complete result. ``precision`` (a `Precision`) other than
    fp32 runs a copy of the weights cast once (`Precision.inference_model`), as `alexnet.predict` does.
    """
    from .weights import load_model

    opts = dataclasses.replace(options or EvalOptions(), **option_values)
    dev = resolve_device(opts.device)
    info = setup_distributed(dev)
    try:
        if isinstance(weights, nn.Module):
            if preprocessing is None:
                raise EvaluationError("evaluate_dataset: a model needs its Preprocessing")
            model, pre = weights, preprocessing
        else:
            model, pre = load_model(WeightsSource.of(weights))
            pre = preprocessing or pre
        data_info: dict[str, Any] | None = None
        if isinstance(data, (str, Path)):
            geometry = pre.geometry(False, ten_crop=opts.ten_crop)
            ds, data_info = open_eval_dataset(data, geometry, split, val_split, seed, opts.on_bad_image)
            label = str(data)
        else:
            ds, label = data, "the data set"
        result = _evaluate_on(model, pre, ds, label, opts, dev, info)
    finally:
        shutdown_distributed(info)
    result.ten_crop = opts.ten_crop
    result.data = data_info
    result.rank = info.rank
    return result


def _evaluate_on(
    model: nn.Module, pre: Preprocessing, ds: Any, label: str, opts: EvalOptions, dev: torch.device, info: DistInfo
) -> EvalResult:
    """Check the classes, build the loader and the inference model, evaluate."""
    from .data.datasets import make_loader

    num_classes = int(unwrap_model(model).config.num_classes)
    classes = list(getattr(ds, "classes", []) or [])
    if not classes:
        raise EvaluationError(f"{label}: the data set names no classes")
    check_classes(num_classes, pre.class_names if opts.check_class_names else None, classes, label)
    if len(ds) == 0:
        raise EvaluationError(f"{label}: no images to evaluate")
    sampler = eval_sampler(ds, info.rank, info.world_size) if info.world_size > 1 else None
    crop_device = dev if dev.type == "cuda" else None  # a prepared set's crops cut on the GPU (evaluate crops)
    loader = make_loader(
        ds, batch_size=opts.batch_size, shuffle=False, workers=check_workers(opts.workers), sampler=sampler,
        crop_device=crop_device,
    )  # fmt: skip
    net = require_precision(opts.precision).inference_model(model, dev)  # fp32: the model itself
    names = list(getattr(ds, "names", []) or [])
    batches = batches_with_refs(loader, names) if len(names) == len(ds) else loader
    result = evaluate(
        net, batches, device=dev, batch_transform=pre.batch_transform(False).to(dev), num_classes=num_classes,
        distributed=info.world_size > 1, channels_last=opts.channels_last,
        progress=resolve_progress(opts.progress, is_main=info.rank == 0), collect=opts.collect,
    )  # fmt: skip
    result.class_names = classes
    return result


def open_eval_dataset(
    data: str | Path,
    transform: Any = None,
    split: str | None = None,
    val_split: float = 0.0,
    seed: int = 0,
    on_bad_image: str = "skip",
) -> tuple[Any, dict[str, Any]]:
    """Open ``data`` for evaluation: ``split`` None means its validation part where it has one (a ``val/``
    folder, a prepared val split, Fashion-MNIST's test set, or a ``val_split`` share), else all of it (a folder
    that *is* the validation set). Returns the data set and how to reopen it (``source`` made absolute)."""
    from .data.datasets import open_dataset

    source = str(Path(data).resolve()) if Path(data).exists() else str(data)
    opts = {"val_split": val_split, "seed": seed, "transform": transform, "on_bad_image": on_bad_image}
    if split is not None:
        chosen = split
        ds = open_dataset(source, split=split, **opts)
    else:
        try:
            chosen, ds = "val", open_dataset(source, split="val", **opts)
        except AlexnetError as first:
            if val_split > 0:
                raise
            try:
                chosen, ds = "all", open_dataset(source, split="all", **opts)
            except AlexnetError:
                raise first from None
    return ds, {"source": source, "split": chosen, "val_split": val_split, "seed": seed}


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON, atomically (temp file, then rename)."""
    from .weights import atomic_write

    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)
    return Path(path)


def read_eval_json(path: str | Path) -> dict[str, Any]:
    """An evaluation JSON (`EvalResult.to_dict`), checked for the keys the plots need."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvaluationError(f"{path}: not a readable evaluation JSON ({e})") from None
    if not isinstance(d, dict) or "confusion_matrix" not in d or "classes" not in d:
        raise EvaluationError(f"{path}: not an evaluation JSON (no confusion_matrix/classes); see alexnet evaluate")
    m = d["confusion_matrix"]
    if not isinstance(m, list) or len(m) != len(d["classes"]) or any(len(r) != len(m) for r in m):
        raise EvaluationError(f"{path}: confusion_matrix is not {len(d['classes'])} x {len(d['classes'])}")
    return d


def format_table(result: EvalResult | dict[str, Any], *, max_classes: int = 50) -> str:
    """The result as a plain-text table: the paper's two error rates, the loss, then per-class accuracy and (for
    a few classes) the confusion matrix, rows = true class."""
    d = result.to_dict() if isinstance(result, EvalResult) else result
    crop = "10-crop" if d.get("ten_crop") else "centre crop"
    loss = d.get("loss")
    skipped = f", {len(d['skipped'])} bad images skipped" if d.get("skipped") else ""
    lines = [
        f"samples      {d['num_samples']:>10,}   ({crop}{skipped})",
        f"top-1 error  {100 * d['top1_error']:>10.2f} %",
        f"top-5 error  {100 * d['top5_error']:>10.2f} %",
        f"loss         {loss:>10.4f}" if loss is not None else "loss                n/a",
    ]
    names = list(d["classes"])
    m = d["confusion_matrix"]
    if len(names) <= max_classes:
        w = max(8, *(len(n) for n in names))
        lines += ["", f"{'class':<{w}}  {'samples':>8}  {'accuracy':>8}"]
        for n, row in zip(names, m):
            acc = d["per_class_accuracy"].get(n)
            lines.append(f"{n:<{w}}  {sum(row):>8}  {'n/a' if acc is None else f'{100 * acc:7.2f}%':>8}")
    if len(names) <= 12:
        cw = max(6, *(len(str(v)) + 1 for row in m for v in row))
        w = max(8, *(len(n) for n in names))
        lines += ["", "confusion (rows = true class, columns = predicted)"]
        lines.append(" " * w + "".join(f"{i:>{cw}}" for i in range(len(names))))
        for i, (n, row) in enumerate(zip(names, m)):
            lines.append(f"{n:<{w}}" + "".join(f"{v:>{cw}}" for v in row) + f"  [{i}]")
    return "\n".join(lines)
