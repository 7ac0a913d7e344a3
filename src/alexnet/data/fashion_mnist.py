"""Fashion-MNIST (Xiao et al., 2017), the demo's stand-in for ImageNet: its idx files found in the usual places
(Debian's ``dataset-fashion-mnist``, torchvision's root) or downloaded through torchvision, read as a data set of
28x28 grey images given as RGB."""

from __future__ import annotations

import copy
import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import DataError, Transform

__all__ = [
    "FASHION_FILES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_INSTALL",
    "FashionMNISTDataset",
    "download_fashion_mnist",
    "fashion_file",
    "fashion_mnist_missing",
    "find_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_INSTALL = "sudo apt-get install dataset-fashion-mnist"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, raw or .gz) as a uint8 array: (N,) labels or (N, H, W) images."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read idx file ({e})") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise DataError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise DataError(f"{path}: holds {len(data) - header} bytes of data, its header says {count}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def fashion_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion_candidates(data_dir: str | Path | None) -> list[Path]:
    dirs: list[Path] = []
    if data_dir is not None:
        d = Path(data_dir)
        dirs += [d, d / "FashionMNIST" / "raw", d / "fashion-mnist"]
    else:
        env = os.environ.get("ALEXNET_FASHION_MNIST")
        if env:
            dirs.append(Path(env))
        dirs.append(FASHION_MNIST_SYSTEM_DIR)
        # torchvision.datasets.FashionMNIST(root) keeps its files in root/FashionMNIST/raw.
        for root in (Path("data"), Path.home() / ".cache" / "torchvision", Path.home() / ".cache" / "alexnet"):
            dirs.append(root / "FashionMNIST" / "raw")
    return dirs


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path | None:
    """The folder holding Fashion-MNIST's four idx files (raw or .gz), or None. Looks in ``data_dir`` (and its
    ``FashionMNIST/raw``) when given, else in $ALEXNET_FASHION_MNIST, /usr/share/datasets/fashion-mnist (Debian's
    ``dataset-fashion-mnist``), and torchvision's usual roots (./data, ~/.cache/torchvision, ~/.cache/alexnet)."""
    for d in _fashion_candidates(data_dir):
        if all(fashion_file(d, stem) for pair in FASHION_FILES.values() for stem in pair):
            return d
    return None


def fashion_mnist_missing(data_dir: str | Path | None) -> DataError:
    where = ", ".join(str(d) for d in _fashion_candidates(data_dir)[:3])
    return DataError(f"Fashion-MNIST not found (looked in {where}, ...); install it with: {FASHION_MNIST_INSTALL}")


class FashionMNISTDataset(Dataset):
    """Fashion-MNIST (Xiao et al., 2017) from its idx files: 28x28 grayscale repeated to 3 channels, so that the
    same RGB pipeline and models apply. ``split``: "train" (60,000) or "test"/"val" (10,000)."""

    def __init__(self, folder: str | Path, split: str = "train", *, transform: Transform | None = None) -> None:
        folder = Path(folder)
        key = "test" if split in ("test", "val") else split
        if key not in FASHION_FILES:
            raise DataError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
        files = [fashion_file(folder, stem) for stem in FASHION_FILES[key]]
        if any(f is None for f in files):
            raise DataError(f"{folder}: no Fashion-MNIST {key} files; install them with: {FASHION_MNIST_INSTALL}")
        images, labels = read_idx(files[0]), read_idx(files[1])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{files[0]}: {images.shape} images do not match {labels.shape} labels in {files[1]}")
        if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{files[1]}: label {int(labels.max())} out of range")
        self.images = images
        self.targets = labels.astype(np.int64).tolist()
        self.classes = list(FASHION_MNIST_CLASSES)
        self.names = [f"fashion-mnist/{key}/{i}" for i in range(len(labels))]
        self.transform = transform
        self.on_bad_image = "skip"
        self.min_size = None

    def __len__(self) -> int:
        return len(self.targets)

    def presized(self, side: int) -> FashionMNISTDataset:
        """This data set with every image resized once to ``side`` x ``side`` (the preprocessing's resize_size;
        `alexnet.data.geometry.resize`, the resampling the per-image path uses), held in memory as grey uint8
        (``side``^2 bytes an image: 72 makes 311 MB for 60,000). Each epoch's patches and centre crops are then
        slices (`RandomPatch`, `CenterPatch`), as from a prepared set, instead of a resampling per image per
        epoch (the demo's epochs: 944-983 img/s, 927-942 before; docs/BENCHMARKS.md). The centre crop is
        unchanged bit for bit (the same resize, then the same crop); a training patch is cut from the resized
        square instead of resampled from the 28x28 source, as a prepared set's are. A view with its own
        ``transform``; ``self`` is unchanged."""
        from .geometry import resize

        out = copy.copy(self)
        if self.images.shape[1:] != (side, side):
            dst = torch.empty(len(self.images), 1, side, side, dtype=torch.uint8)
            for k in range(0, len(dst), 4096):  # bounded temporaries; np.array: a writable copy of the chunk
                dst[k : k + 4096] = resize(
                    torch.from_numpy(np.array(self.images[k : k + 4096])).unsqueeze(1), (side, side)
                )
            out.images = dst.squeeze(1).numpy()
        return out

    def view(self) -> FashionMNISTDataset:
        """Another view of the same images with its own ``transform`` (the training and validation views of one
        split share the pixels)."""
        return copy.copy(self)

    def load(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[i])).unsqueeze(0).expand(3, -1, -1).contiguous()

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.load(i)
        return (self.transform(img) if self.transform is not None else img), self.targets[i]


def download_fashion_mnist(data_dir: str | Path | None) -> Path:
    from torchvision.datasets import FashionMNIST

    root = Path(data_dir) if data_dir is not None else Path.home() / ".cache" / "alexnet"
    try:
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types
        msg = f"Fashion-MNIST download into {root} failed ({e}); or install it with: {FASHION_MNIST_INSTALL}"
        raise DataError(msg) from None
    return root / "FashionMNIST" / "raw"
