"""The variants of `alexnet ablate` and the budgets it runs them at: each variant is the paper's full recipe with
one switch changed, with what Krizhevsky, Sutskever & Hinton (NIPS 2012) say that switch is worth. No torch here:
the command line lists and checks names before anything heavy loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import AlexnetError

__all__ = ["AblationError", "Variant", "VARIANTS", "Scale", "SCALES", "parse_variants"]


class AblationError(AlexnetError, ValueError):
    """An ablation that cannot run or continue as asked; the message is one line for the user."""


@dataclass(frozen=True)
class Variant:
    """One ablation: the full recipe with one switch changed, and what the paper says that switch is worth."""

    description: str
    model: dict[str, Any] = field(default_factory=dict)  # AlexNetConfig overrides (`TrainConfig.model_options`)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    halve_convs: bool = False  # conv1-conv4 with half their kernels (the paper's one-GPU net, footnote 2)
    paper: str = ""  # the paper's claim, in words
    paper_top1: float | None = None  # the paper's change of top-1 error (points) when the idea is taken away
    paper_top5: float | None = None
    expect: int = 0  # +1: taking the idea away should raise the test error; 0: no claim about the sign

    def switch(self) -> str:
        """The one change, as it would be written on the command line."""
        parts = [f"{k}={v}" for k, v in {**self.model, **self.train}.items()]
        if self.halve_convs:
            parts.append("conv1-conv4 half the kernels")
        return ", ".join(parts) or "(none)"


VARIANTS: dict[str, Variant] = {
    "full": Variant(
        "the paper's recipe: ReLU, LRN, overlapping 3/2 pooling, two-GPU groups, dropout 0.5, crops + flips + "
        "PCA lighting",
        paper="reference",
    ),
    "no-lrn": Variant(
        "no local response normalisation after conv1 and conv2",
        model={"lrn": False},
        paper="LRN lowers top-1/top-5 error by 1.4%/1.2% (section 3.3)",
        paper_top1=1.4,
        paper_top5=1.2,
        expect=1,
    ),
    "no-overlap": Variant(
        "traditional non-overlapping 2/2 max-pooling instead of 3/2",
        model={"pool_kernel": 2, "pool_stride": 2},
        paper="overlapping pooling lowers top-1/top-5 error by 0.4%/0.3% (section 3.4)",
        paper_top1=0.4,
        paper_top5=0.3,
        expect=1,
    ),
    "no-dropout": Variant(
        "no dropout in fc6 and fc7",
        train={"dropout": 0.0},
        paper='without dropout the network "exhibits substantial overfitting" (section 4.2)',
        expect=1,
    ),
    "no-pca": Variant(
        "no PCA lighting (crops and flips kept)",
        train={"lighting": 0.0},
        paper="PCA lighting lowers top-1 error by over 1% (section 4.1)",
        paper_top1=1.0,
        expect=1,
    ),
    "no-augment": Variant(
        "no training augmentation: centre crops, no flips, no PCA lighting",
        train={"augment": False},
        paper="without crops and flips the network suffers substantial overfitting (section 4.1)",
        expect=1,
    ),
    "tanh": Variant(
        "tanh instead of ReLU after every conv and fc6/fc7 (same initialisation)",
        model={"activation": "tanh"},
        paper="ReLUs reach 25% training error six times faster than tanh (Figure 1: CIFAR-10, a four-layer net)",
        expect=1,
    ),
    "one-gpu-half": Variant(
        "dense (groups 1) with half the kernels in conv1-conv4; conv5 and fc6-fc8 kept, as the paper's footnote 2",
        model={"groups": 1},
        halve_convs=True,
        paper="the two-GPU net beats a one-GPU net with half the kernels by 1.7%/1.2% (section 3.2)",
        paper_top1=1.7,
        paper_top5=1.2,
        expect=1,
    ),
}


@dataclass(frozen=True)
class Scale:
    """The budget every variant gets alike. On data smaller than the counts ask for, each count becomes at most
    its share of what is there (`alexnet.ablate_data.fit_counts`)."""

    train_samples: int  # stratified subset of the training set; 0 = all that is left
    val_samples: int  # training images held out (the schedule's and the curves' validation set)
    test_samples: int  # held-out test images (the first N of the test split); 0 = all
    epochs: int
    input_size: int
    batch_size: int
    lr: float
    schedule: str  # step: Caffe's policy, the last third at lr/10; plateau: the paper's
    workers: int  # loader processes
    note: str  # what this scale cannot measure whatever the counts (the counts' limits are worked out per run)
    val_share: float = 0.1  # on small data: at most this share of the images for validation
    test_share: float = 0.2  # and this share held out for testing, when the data has no test split
    cost: str = ""  # the expected cost of one run, printed at the start (docs/ABLATIONS.md)
    warmup_steps: int = 0  # schedule step: the learning rate rises linearly over these first steps (Goyal et al.)
    seeds: int = 3  # seeds per variant when --seeds is not given
    ten_crop: str = "all"  # whose runs are also tested on ten patches: "all", or "full" (the ten-crop row only)


SCALES: dict[str, Scale] = {
    "cpu": Scale(
        0,
        1000,
        0,
        3,
        67,
        256,
        0.02,  # the demo's 0.04 made tanh diverge in both seeds (docs/ABLATIONS.md); every variant trains at 0.02
        "step",
        0,
        "67x67 inputs, He initialisation, 3 epochs and batch 256 with a warm-up are the demo's, not the paper's",
        cost="a run trains 177,000 images (3 epochs of 59,000) and tests 10,000: about 3m20s on 2 quiet cores "
        "(16 runs with 2 seeds, and ten patches for full's: about 55 minutes; docs/ABLATIONS.md)",
        warmup_steps=50,
        seeds=2,
        ten_crop="full",
    ),  # fmt: skip
    "cpu-small": Scale(
        6000,
        500,
        1000,
        4,
        67,
        64,
        0.01,
        "step",
        0,
        "67x67 inputs and He initialisation are the demo's, not the paper's",
        cost="a run took 1m13s-1m52s on 2 quiet cores (measured 2026-12-01: 24 runs, about 40 minutes)",
    ),  # fmt: skip
    "full": Scale(
        0,
        5000,
        0,
        90,
        227,
        128,
        0.01,
        "plateau",
        8,
        "the paper's figures are for 1000 classes of colour photographs",
        cost="a run trains 4.95 million images (90 epochs of 55,000): about 26 minutes at the 3,200 images/s "
        "measured end to end on an H200 (an estimate: 24 runs take 10-11 hours)",
    ),  # fmt: skip
}


def parse_variants(text: str | list[str] | None) -> list[str]:
    """Variant names from ``"full,no-lrn"`` (or a list); ``full`` is always run (the reference of the
    differences). An unknown name is a one-line error listing the valid ones."""
    if text is None:
        return list(VARIANTS)
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise AblationError(f"unknown variant {bad[0]!r}; valid variants: {', '.join(VARIANTS)}")
    if not names:
        raise AblationError(f"no variants given; valid variants: {', '.join(VARIANTS)}")
    ordered = ["full"] + [n for n in VARIANTS if n in names and n != "full"]
    return ordered
