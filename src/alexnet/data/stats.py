"""Training-set statistics for the paper's preprocessing (sections 2 and 4.1): per-channel mean and std, the
per-pixel mean image that the paper subtracts, and the RGB covariance whose eigen-pairs drive PCA lighting.

One streaming pass (DataLoader workers, a progress bar) over the images at the paper's fixed size (short side to
``size``, central square); sums are kept in float64, so the result does not depend on batch size or order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import AlexnetError
from ..options import check_workers
from ..progress import track
from .datasets import make_loader, open_dataset
from .fileio import atomic_write, atomic_write_text, check_output_file
from .transforms import ResizeCenterCrop

__all__ = ["Stats", "StatsError", "compute_stats", "dataset_stats", "load_stats", "pixel_stats", "save_stats"]


class StatsError(AlexnetError, ValueError):
    """A statistics file that cannot be read, or a data set without usable images."""


@dataclass
class Stats:
    """Statistics of a training set, pixels in 0..1 (multiply by 255 for the 0..255 scale; eigenvalues and the
    covariance by 255^2)."""

    mean: tuple[float, float, float]  # per channel, RGB
    std: tuple[float, float, float]  # per channel (population std over all pixels)
    eigvals: tuple[float, float, float]  # eigenvalues of `cov`, largest first
    eigvecs: list[list[float]]  # (3, 3), eigenvectors as COLUMNS, matching `eigvals`
    cov: list[list[float]]  # (3, 3) RGB covariance over all pixels
    num_images: int = 0
    size: int = 256  # side of the images the mean image was computed at
    mean_image: np.ndarray | None = field(default=None, repr=False)  # float32 (3, size, size), 0..1
    skipped: list[str] = field(default_factory=list, repr=False)  # bad images left out

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "eigvals": list(self.eigvals),
            "eigvecs": [list(r) for r in self.eigvecs],
            "cov": [list(r) for r in self.cov],
            "num_images": self.num_images,
            "size": self.size,
            "scale": "0..1",
            "skipped": list(self.skipped),
        }


def compute_stats(
    source: str | Path | Dataset,
    *,
    size: int = 256,
    split: str = "train",
    val_split: float = 0.0,
    seed: int = 0,
    workers: int | None = 0,
    batch_size: int = 32,
    progress: str | bool = "auto",
    on_bad_image: str = "skip",
    data_dir: str | Path | None = None,
) -> Stats:
    """Statistics of ``source``: a data set path (opened with `open_dataset`, the training split by default) or a
    Dataset that yields uint8 (3, size, size) images. Bad images are skipped and listed in ``skipped``."""
    if isinstance(source, Dataset):
        ds = source
    else:
        ds = open_dataset(
            source,
            split=split,
            val_split=val_split,
            seed=seed,
            transform=ResizeCenterCrop(size),
            on_bad_image=on_bad_image,
            data_dir=data_dir,
        )
    loader = make_loader(ds, batch_size=batch_size, workers=check_workers(workers), pin_memory=False)
    sum_image = torch.zeros(3, size, size, dtype=torch.float64)
    sum_outer = torch.zeros(3, 3, dtype=torch.float64)
    count = 0
    skipped: list[str] = []
    for batch in track(loader, "stats", progress):
        images = batch.images
        skipped += batch.bad
        if images.numel() == 0:
            continue
        if images.shape[1:] != (3, size, size):
            raise StatsError(f"expected uint8 (3, {size}, {size}) images, got {tuple(images.shape[1:])}")
        x = images.to(torch.float64)  # (N, 3, S, S), 0..255: integer sums are exact in float64
        sum_image += x.sum(0)
        flat = x.transpose(0, 1).reshape(3, -1)  # (3, N*S*S)
        sum_outer += flat @ flat.T
        count += images.shape[0]
    if count == 0:
        raise StatsError(f"{source}: no readable images ({len(skipped)} skipped)")
    return _from_sums(sum_image, sum_outer, count, size, skipped)


def pixel_stats(images: np.ndarray) -> Stats:
    """The statistics of grey uint8 images held in memory, ``(N, H, W)`` (Fashion-MNIST's idx array), each taken as
    its grey value in all three channels, as `FashionMNISTDataset` gives them: the same sums as `compute_stats`
    from a histogram of the 256 grey levels, exact and in a fraction of a second instead of a pass through the
    loader (the demo computes its training set's mean, as section 2 subtracts it, before it trains). The mean
    image is at the arrays' own ``H x W`` (square)."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2] or len(images) == 0:
        raise StatsError(f"expected grey uint8 images (N, S, S), got {images.dtype} {images.shape}")
    levels = np.arange(256, dtype=np.float64)
    hist = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    squares = float(hist @ levels**2)
    sum_image = torch.from_numpy(images.sum(0, dtype=np.int64).astype(np.float64)).expand(3, -1, -1)
    sum_outer = torch.full((3, 3), squares, dtype=torch.float64)  # the three channels are one grey value
    return _from_sums(sum_image, sum_outer, len(images), images.shape[1], [])


def dataset_stats(ds: Dataset, size: int = 32) -> Stats:
    """The statistics a training run subtracts and lights with, of the images of ``ds``: Fashion-MNIST (a
    `FashionMNISTDataset` or a `Subset` of one) exactly from its grey-level histogram at its own 28x28
    (`pixel_stats`, a second for 59,000 images); any other data set by one pass at ``size`` (`compute_stats`;
    colour statistics need no resolution). ``ds``'s transform is restored afterwards."""
    from .fashion_mnist import FashionMNISTDataset

    base, indices = getattr(ds, "base", ds), getattr(ds, "indices", None)
    if isinstance(base, FashionMNISTDataset):
        return pixel_stats(base.images if indices is None else base.images[indices])
    before = getattr(ds, "transform", None)
    ds.transform = ResizeCenterCrop(size)
    try:
        return compute_stats(ds, size=size, progress=False)
    finally:
        ds.transform = before


def _from_sums(sum_image: torch.Tensor, sum_outer: torch.Tensor, count: int, size: int, skipped: list[str]) -> Stats:
    """`Stats` from the float64 sums over ``count`` images of ``size x size`` in 0..255: the per-pixel sum (3, S, S)
    and the sum of the RGB outer products (3, 3)."""
    pixels = count * size * size
    mean_image = sum_image / count / 255.0  # (3, S, S)
    mean = sum_image.sum((1, 2)) / pixels / 255.0  # (3,)
    cov = sum_outer / pixels / 255.0**2 - torch.outer(mean, mean)
    cov = (cov + cov.T) / 2
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    vals, vecs = vals.flip(0), vecs.flip(1)
    vecs = vecs * torch.where(vecs.sum(0) < 0, -1.0, 1.0)  # a fixed sign per eigenvector, for stable files
    return Stats(
        mean=tuple(mean.tolist()),
        std=tuple(cov.diagonal().clamp_min(0).sqrt().tolist()),
        eigvals=tuple(vals.clamp_min(0).tolist()),
        eigvecs=vecs.tolist(),
        cov=cov.tolist(),
        num_images=count,
        size=size,
        mean_image=mean_image.to(torch.float32).numpy(),
        skipped=skipped,
    )


def _mean_image_path(path: Path) -> Path:
    return path.with_name(path.stem + ".mean_image.npy")


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to the temporary name
        np.save(f, array)


def save_stats(stats: Stats, path: str | Path) -> Path:
    """Write ``stats`` as JSON at ``path`` and the mean image beside it as ``<stem>.mean_image.npy`` (atomically)."""
    path = check_output_file(path)  # before the mean image is written beside it
    d = stats.to_dict()
    if stats.mean_image is not None:
        img_path = _mean_image_path(path)
        atomic_write(img_path, lambda tmp: _save_npy(tmp, np.asarray(stats.mean_image, np.float32)))
        d["mean_image"] = img_path.name
    atomic_write_text(path, json.dumps(d, indent=2) + "\n")
    return path


def load_stats(path: str | Path) -> Stats:
    """Read a file written by `save_stats` (``alexnet stats``); the mean image is loaded when present."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        raise StatsError(f"{path}: not a regular file (a folder, a pipe or a device); name a stats.json file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        stats = Stats(
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            eigvals=tuple(float(v) for v in d["eigvals"]),
            eigvecs=[[float(v) for v in r] for r in d["eigvecs"]],
            cov=[[float(v) for v in r] for r in d.get("cov", [[0.0] * 3] * 3)],
            num_images=int(d.get("num_images", 0)),
            size=int(d.get("size", 256)),
            skipped=list(d.get("skipped", [])),
        )
    except FileNotFoundError:
        raise StatsError(f"{path}: no such statistics file (make one with: alexnet stats DATA --out {path})") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StatsError(f"{path}: not a statistics file ({type(e).__name__}: {e})") from None
    if len(stats.mean) != 3 or len(stats.eigvals) != 3 or np.asarray(stats.eigvecs).shape != (3, 3):
        raise StatsError(f"{path}: mean, eigvals and eigvecs must describe 3 channels")
    values = np.asarray([*stats.mean, *stats.std, *stats.eigvals, *np.ravel(stats.eigvecs)], dtype=np.float64)
    if not np.isfinite(values).all() or min(stats.std) <= 0:  # NaN here would turn every input into NaN
        raise StatsError(f"{path}: mean, std and the eigen-pairs must be finite numbers (std > 0): the file is corrupt")
    if d.get("mean_image"):
        img_path = path.parent / d["mean_image"]
        try:
            stats.mean_image = np.load(img_path).astype(np.float32)
        except (OSError, ValueError) as e:
            raise StatsError(f"{img_path}: cannot read the mean image ({e})") from None
        if stats.mean_image.shape != (3, stats.size, stats.size):
            raise StatsError(f"{img_path}: mean image has shape {stats.mean_image.shape}, expected (3, S, S)")
        if not np.isfinite(stats.mean_image).all():
            raise StatsError(f"{img_path}: the mean image holds NaN or infinite values: the file is corrupt")
    return stats
