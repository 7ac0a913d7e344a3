"""What an evaluation counts and what it gives: the paper's top-1 and top-5 error (section 6) as exact counts
(`topk_correct`, ties to the lower class index), the running totals of an evaluation (`Tally`: 10-crop softmax
averaging of section 4.1, the confusion matrix, every sample's prediction, all-reduced over the ranks of a
process group), the result (`EvalResult`) and its JSON (`write_json`, `read_eval_json`).

The arithmetic only: the loop over a loader and the orchestration (weights, data, process group) are
`alexnet.evaluate`'s; printing a result as a table is the command line's (`alexnet.cli.evaluation`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .errors import AlexnetError

__all__ = [
    "EvalResult",
    "EvaluationError",
    "SamplePredictions",
    "Tally",
    "read_eval_json",
    "topk_correct",
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


class Tally:
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
