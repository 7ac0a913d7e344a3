"""A run's data: the training and validation sets (opened from ``cfg.data`` or handed in), their class names and
checks, and the loaders made once for the whole run."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.pixels import check_training_sample
from ..distributed import DistInfo, EpochSampler, eval_sampler
from ..errors import AlexnetError
from ..preprocessing import Preprocessing
from .config import TrainConfig, TrainError
from .setup import FeatureDataset

__all__ = [
    "check_classes",
    "check_handed",
    "check_data",
    "class_names",
    "decode_on_device",
    "make_loader",
    "open_datasets",
    "peek_classes",
    "run_loaders",
]


def peek_classes(cfg: TrainConfig) -> list[str]:
    """The class names of the training data, read before the model (and so the transforms) exist."""
    from ..data import datasets

    if not cfg.data:
        raise TrainError("no data: give a data folder or list file")
    ds = datasets.open_dataset(
        cfg.data, split="train", val_split=cfg.val_split, seed=cfg.seed, on_bad_image=cfg.on_bad_image
    )
    if len(ds) == 0:
        raise TrainError(f"{cfg.data}: the training data set is empty (no images found)")
    return class_names(ds)


def check_classes(classes: Sequence[str], source: str) -> None:
    if len(classes) < 2:
        raise TrainError(f"{source or 'data'}: found {len(classes)} class; training a classifier needs at least 2")


def open_datasets(cfg: TrainConfig, pre: Preprocessing, augment: bool) -> tuple[Any, Any | None]:
    from ..data import datasets

    train_ds = datasets.open_dataset(
        cfg.data,
        split="train",
        val_split=cfg.val_split,
        seed=cfg.seed,
        transform=pre.geometry(augment),
        on_bad_image=cfg.on_bad_image,
    )
    try:
        val_ds = datasets.open_dataset(
            cfg.data,
            split="val",
            val_split=cfg.val_split,
            seed=cfg.seed,
            transform=pre.geometry(False),
            on_bad_image=cfg.on_bad_image,
        )
    except AlexnetError:
        if cfg.val_split > 0:
            raise
        val_ds = None  # no validation split and none asked for: the plateau schedule watches the training error
    if val_ds is not None and len(val_ds) == 0:
        val_ds = None
    return train_ds, val_ds


def class_names(ds: Any) -> list[str]:
    classes = getattr(ds, "classes", None)
    if classes is None:
        targets = getattr(ds, "targets", None)
        if targets is None:
            raise TrainError("the training data set has neither classes nor targets")
        return [str(i) for i in range(max(targets) + 1)] if len(targets) else []
    return [str(c) for c in classes]


def check_data(train_ds: Any, classes: Sequence[str], source: str) -> None:
    if len(train_ds) == 0:
        raise TrainError(f"{source}: the training data set is empty (no images found)")
    if len(classes) < 2:
        raise TrainError(f"{source}: found {len(classes)} class; training a classifier needs at least 2")
    targets = getattr(train_ds, "targets", None)
    if targets is not None and len(targets):
        lo, hi = min(targets), max(targets)
        if lo < 0 or hi >= len(classes):
            bad = lo if lo < 0 else hi
            raise TrainError(f"{source}: label {bad} out of range for {len(classes)} classes (0..{len(classes) - 1})")


def check_handed(ds: Any, name: str) -> None:
    """Refuse a data set handed to `alexnet.train.main` whose first sample is not a uint8 (3, S, S) image with
    0..255 values (`alexnet.data.pixels.check_training_sample`). Reading the sample draws its random crop: the
    random states are restored, so the run's seeded draws are those it would make without the check."""
    if ds is None or not len(ds):
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            sample = ds[0]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
    check_training_sample(sample, name)


def make_loader(
    ds: Any, *, batch_size: int, sampler: Any, workers: int, seed: int, device: torch.device | None = None
) -> DataLoader:
    """``datasets.make_loader``; on a GPU a prepared set's batches are cropped there (`CropBatch`, made real by
    `materialize` in the training step), so the loader only reads the stored images into pinned memory."""
    from ..data import datasets

    crop_device = device if device is not None and device.type == "cuda" else None
    return datasets.make_loader(
        ds, batch_size=batch_size, sampler=sampler, workers=workers, seed=seed, crop_device=crop_device
    )


def decode_on_device(ds: Any) -> bool:
    """Switch an image-file data set (possibly a subset) to handing out its plain JPEGs still encoded, for the
    training loop to decode a batch at a time on the device (`alexnet.data.device_decode`). False when ``ds``
    holds no image files (Fashion-MNIST, a prepared set, a handed-in data set)."""
    from ..data.datasets import ImageListDataset, Subset

    base = ds
    while isinstance(base, Subset):
        base = base.base
    if not isinstance(base, ImageListDataset):
        return False
    ds.encoded = True
    return True


def run_loaders(
    cfg: TrainConfig,
    train_ds: Any,
    val_ds: Any | None,
    batch: int,
    sampler: EpochSampler,
    info: DistInfo,
    workers: int,
    device: torch.device | None = None,
) -> tuple[Any, Any | None]:
    """The training and validation loaders of the whole run, made once: their workers live from epoch to epoch
    (no start-up per epoch). Each training batch's random transforms draw from a seed of (seed, rank, epoch,
    batch number) (`alexnet.data.datasets.SeededBatchSampler`), so a resumed run, even one resumed mid-epoch,
    sees the batches an uninterrupted one would, whatever the number of workers. Cached features need no
    workers."""
    if isinstance(train_ds, FeatureDataset):  # each rank cached its own eval_sampler share of the validation set
        # an own generator: a DataLoader without one draws its base seed from the global RNG (dropout's) per pass
        g = torch.Generator().manual_seed(cfg.seed)
        val = DataLoader(val_ds, batch_size=batch, shuffle=False, generator=g) if val_ds is not None else None
        return DataLoader(train_ds, batch_size=batch, sampler=sampler, num_workers=0, generator=g), val
    seed = (cfg.seed * 1_000_003 + info.rank) % 2**63
    train = make_loader(train_ds, batch_size=batch, sampler=sampler, workers=workers, seed=seed, device=device)
    val = None
    if val_ds is not None:
        vsampler = eval_sampler(val_ds, info.rank, info.world_size)
        val = make_loader(val_ds, batch_size=batch, sampler=vsampler, workers=workers, seed=cfg.seed, device=device)
    return train, val
