"""What every module of data/ shares, with no import among them: the error, the image suffixes, a subset
view, and the prepared set's reader (`alexnet.data.prepare` writes it; `datasets` opens it; `prepared_loader`
reads its shards by threads)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import AlexnetError

__all__ = ["DataError", "IMAGE_EXTENSIONS", "PREPARED_MANIFEST", "PreparedDataset", "Subset", "read_manifest"]

# The image files a folder scan (data sets) and a folder argument (predict) pick up, by suffix (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
PREPARED_MANIFEST = "prepared.json"
Transform = Callable[[torch.Tensor], Any]


class DataError(AlexnetError, ValueError):
    """A data set that cannot be read as asked (bad list line, no classes, missing files); one line, names it."""


class Subset(Dataset):
    """A view of some samples of a data set that keeps ``classes``, ``targets`` and ``names``."""

    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)
        self.classes = base.classes
        self.targets = [base.targets[i] for i in self.indices]
        self.names = [base.names[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.indices[i]]

    def __getattr__(self, name: str) -> Any:  # transform, on_bad_image, ... of the base
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("transform", "on_bad_image", "min_size", "encoded"):
            setattr(self.base, name, value)
        else:
            super().__setattr__(name, value)


class PreparedDataset(Dataset):
    """A split of a set written by `alexnet.data.prepare.prepare`: uint8 (n, 3, S, S) ``.npy`` shards, read
    through memory maps (opened lazily, once per worker process), so an epoch decodes no JPEG."""

    def __init__(self, root: str | Path, split: str = "train", *, transform: Transform | None = None) -> None:
        self.root = Path(root)
        manifest = read_manifest(self.root)
        splits = manifest.get("splits", {})
        if split not in splits:
            raise DataError(f"{self.root}: prepared set has splits {sorted(splits)}, not {split!r}")
        self.classes = list(manifest["classes"])
        self.size = int(manifest["size"])
        self.shards: list[str] = []
        self.targets: list[int] = []
        self.names: list[str] = []
        self.skipped: list[str] = []
        starts = []
        for shard in splits[split]["shards"]:
            meta = json.loads((self.root / shard["meta"]).read_text(encoding="utf-8"))
            starts.append(len(self.targets))
            self.shards.append(shard["images"])
            self.targets += [int(t) for t in meta["targets"]]
            self.names += list(meta["names"])
            self.skipped += list(meta.get("skipped", []))
        self._starts = np.asarray(starts, dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}
        self.transform = transform
        self.on_bad_image = "skip"
        self.min_size = self.size

    def __len__(self) -> int:
        return len(self.targets)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are reopened in each worker
        return state

    def load(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self.targets):
            raise IndexError(i)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        arr = self._maps.get(k)
        if arr is None:
            path = self.root / self.shards[k]
            try:
                arr = self._maps[k] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataError(f"{path}: cannot read prepared shard ({e})") from None
        return torch.from_numpy(np.array(arr[i - int(self._starts[k])]))

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.load(i)
        return (self.transform(img) if self.transform is not None else img), self.targets[i]


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / PREPARED_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{root}: not a prepared set (no {PREPARED_MANIFEST}; if prepare was interrupted, run it again)"
        raise DataError(msg) from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("format") != "alexnet-prepared":
        raise DataError(f"{path}: not an alexnet prepared-set manifest")
    return manifest
