"""Evaluation's loop and orchestration: `evaluate` runs a model over a loader (10-crop testing of section 4.1
included) and `evaluate_dataset` checks weights against a data set, builds the loader and the inference model,
and evaluates. What is counted, and the result, are `alexnet.eval_metrics`' (re-exported here); a table of the
result is the command line's.

Counts are exact over the whole data set: inside a process group (torchrun; the command line starts it, a
library call joins the one its caller started) every rank evaluates a disjoint share of the samples
(`eval_sampler`, no padding, nothing dropped) and the counts are all-reduced, as pytorch/examples' imagenet
``validate`` does for the tail that a DistributedSampler would pad.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .data.batch import Batch
from .distributed import DistInfo, eval_sampler, joined_group
from .errors import AlexnetError
from .eval_metrics import (
    EvalResult,
    EvaluationError,
    SamplePredictions,
    Tally,
    read_eval_json,
    topk_correct,
    write_json,
)
from .options import WeightsSource, check_workers, resolve_progress
from .progress import track
from .runtime import FP32, Precision, check_finite_scores, model_input, require_precision, resolve_device, unwrap_model

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
    "write_json",
]


def batches_with_refs(loader: Any, names: Sequence[str]) -> Iterator[Batch]:
    """Yield the loader's batches (`Batch`) with their ``refs``, one ``(index, name)`` per kept sample.

    The indices come from the loader's (deterministic, unshuffled) batch sampler; the samples the loader dropped
    as bad are recognised by name. Where that does not add up, refs are ``(-1, "")``: counts stay exact, only
    the pictures of a report lose their source.
    """
    chunks = iter(loader.batch_sampler) if getattr(loader, "batch_sampler", None) is not None else None
    for item in loader:
        batch = Batch.of(item)
        idx = list(next(chunks, [])) if chunks is not None else []
        if batch.bad:
            bad_set = {str(b) for b in batch.bad}
            idx = [i for i in idx if str(names[i]) not in bad_set]
        known = len(idx) == len(batch.labels)
        refs = [(int(i), str(names[i])) for i in idx] if known else [(-1, "")] * len(batch.labels)
        yield batch._replace(refs=refs)


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

    ``loader`` yields `alexnet.data.batch.Batch` es (`make_loader`; with ``refs`` from `batches_with_refs`) or a
    caller's ``(images, labels)`` pairs. A 5-D batch (N, 10, 3, S, S) is 10-crop testing: the softmax is
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
    tally = Tally(int(num_classes or net.config.num_classes), device, collect)
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
    """(images on ``device``, labels on ``device``, refs) of a loader batch (`Batch.on`: encoded or prepared
    batches made real there); the names of the images dropped, in the loader or on the way, join ``skipped``."""
    b = Batch.of(batch).on(device)
    skipped.extend(str(n) for n in b.bad)
    return b.images, b.labels, None if b.refs is None else list(b.refs)


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
    preprocessing. ``options`` (`EvalOptions`), or its fields as keywords. Inside a process group (which the
    caller starts: `alexnet.distributed.setup_distributed`) every rank evaluates a disjoint share
    (`eval_sampler`) and gets the same, complete result. ``precision`` (a `Precision`) other than fp32 runs a copy
    of the weights cast once (`Precision.inference_model`), as `alexnet.predict` does.
    """
    from .weights import load_model

    opts = dataclasses.replace(options or EvalOptions(), **option_values)
    dev = resolve_device(opts.device)
    info = joined_group()  # the process group the caller (the command, under torchrun) started, if any
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
    if result.num_samples and not math.isfinite(result.loss):  # finite logits give a finite cross-entropy
        check_finite_scores(torch.tensor(result.loss), f"evaluate on {label}")
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
