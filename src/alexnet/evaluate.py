"""Evaluation: the paper's top-1 and top-5 error rates (section 6), 10-crop testing (section 4.1), confusion matrix.

Counts are exact over the whole data set: under torch.distributed every rank evaluates a disjoint share of the
samples (`eval_sampler`, no padding, nothing dropped) and the counts are all-reduced, as pytorch/examples' imagenet
``validate`` does for the tail that a DistributedSampler would pad.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Sampler

__all__ = ["EvalResult", "topk_correct", "evaluate", "eval_sampler", "ShardSampler"]


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the ``k`` highest scores, for each k.

    A k larger than the number of classes counts every sample as correct (the target is always among all
    classes). Ties are broken by `torch.topk`'s order, i.e. an arbitrary but deterministic choice.
    """
    n_classes = logits.shape[-1]
    kmax = min(max(ks), n_classes)
    pred = logits.topk(kmax, dim=-1).indices  # (N, kmax)
    hit = pred.eq(targets.view(-1, 1))  # (N, kmax)
    return [int(hit[:, : min(k, n_classes)].any(dim=1).sum()) for k in ks]


@dataclass
class EvalResult:
    """Totals over a data set. Accuracies are fractions; errors are 1 - accuracy (the paper reports errors)."""

    num_samples: int
    loss: float
    acc1: float
    acc5: float
    confusion: torch.Tensor  # (C, C) int64, rows = true class, columns = predicted class

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

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        c = self.confusion.shape[0]
        names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
        per_class = self.per_class_accuracy()
        return {
            "num_samples": self.num_samples,
            "loss": self.loss,
            "top1_accuracy": self.acc1,
            "top5_accuracy": self.acc5,
            "top1_error": self.top1_error,
            "top5_error": self.top5_error,
            "classes": names,
            "per_class_accuracy": {n: (None if math.isnan(a) else a) for n, a in zip(names, per_class)},
            "confusion_matrix": self.confusion.tolist(),
        }


class ShardSampler(Sampler[int]):
    """Rank ``rank`` of ``world_size`` gets indices ``rank, rank + world_size, ...``: disjoint shares that cover
    every index exactly once (unlike DistributedSampler, which pads the last share with repeats)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def eval_sampler(dataset: Any, rank: int, world_size: int) -> ShardSampler:
    """A sampler that counts every sample exactly once across ``world_size`` ranks."""
    return ShardSampler(len(dataset), rank, world_size)


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device | str = "cpu",
    batch_transform: nn.Module | None = None,
    num_classes: int | None = None,
    distributed: bool = False,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Top-1/top-5 accuracy, mean cross-entropy and the confusion matrix of ``model`` over ``loader``.

    ``loader`` yields ``(images, labels)`` or ``(images, labels, bad_names)``. A 5-D batch (N, 10, 3, S, S) is
    10-crop testing: the softmax is averaged over the crops, as the paper does, and the loss is the NLL of that
    average. ``batch_transform`` (uint8 -> normalised float) runs on ``device``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    if num_classes is None:
        num_classes = int(_unwrap(model).config.num_classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    # totals: [samples, top1, top5, loss sum] in float64 so that large sums stay exact
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    it: Iterable = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc="evaluate", unit="batch", leave=False)
    try:
        for batch in it:
            images, labels = batch[0], batch[1]
            if len(labels) == 0:
                continue
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            crops = images.ndim == 5
            if crops:
                n, k = images.shape[:2]
                images = images.flatten(0, 1)  # (N*10, 3, S, S)
            if batch_transform is not None:
                images = batch_transform(images)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = model(images)
            logits = logits.float()
            if crops:
                probs = F.softmax(logits, dim=-1).view(n, k, -1).mean(dim=1)  # (N, C)
                scores = probs
                loss_sum = F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum")
            else:
                scores = logits
                loss_sum = F.cross_entropy(logits, labels, reduction="sum")
            c1, c5 = topk_correct(scores, labels, (1, 5))
            totals += torch.tensor([len(labels), c1, c5, float(loss_sum)], dtype=torch.float64, device=device)
            pred = scores.argmax(dim=-1)
            confusion += torch.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).view(
                num_classes, num_classes
            )
    finally:
        model.train(was_training)
    if distributed and dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
        dist.all_reduce(confusion)
    n = int(totals[0].item())
    return EvalResult(
        num_samples=n,
        loss=float(totals[3] / n) if n else math.nan,
        acc1=float(totals[1] / n) if n else math.nan,
        acc5=float(totals[2] / n) if n else math.nan,
        confusion=confusion.cpu(),
    )
