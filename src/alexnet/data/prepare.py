"""`alexnet prepare`: decode, resize and crop every image once (the paper's section 2: short side to 256, central
256 x 256), into uint8 ``.npy`` shards that `PreparedDataset` reads through memory maps, so that an epoch never
decodes a full-size JPEG again.

Layout of ``out/``: ``prepared.json`` (the manifest, written last: its presence means complete), ``job.json``
(what is being prepared, to resume safely), and per split ``<split>/NNNNN.npy`` (uint8 (n, 3, S, S)) with
``<split>/NNNNN.json`` (targets, names, skipped). Each shard is written atomically and its ``.json`` after its
``.npy``, so an interrupted run resumes at the first shard without a ``.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..options import check_workers
from ..progress import Progress
from .datasets import PREPARED_MANIFEST, DataError, Subset, make_loader, open_dataset
from .fileio import atomic_write, atomic_write_text, check_output_dir
from .transforms import ResizeCenterCrop

__all__ = ["prepare", "source_splits"]


def source_splits(source: str | Path, *, data_dir: str | Path | None = None) -> list[str]:
    """The splits a source holds: ["train", "val"] for a train/ + val/ folder or Fashion-MNIST, else ["train"]."""
    text = str(source).lower().replace("_", "-")
    if text in ("fashion-mnist", "fashionmnist"):
        return ["train", "val"]
    p = Path(source)
    if p.is_dir() and (p / PREPARED_MANIFEST).is_file():
        raise DataError(f"{p}: is already a prepared set")
    if p.is_dir() and (p / "train").is_dir() and ((p / "val").is_dir() or (p / "validation").is_dir()):
        return ["train", "val"]
    if p.is_dir() and any((p / f).exists() for f in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz")):
        return ["train", "val"]
    return ["train"]


def prepare(
    source: str | Path,
    out: str | Path,
    *,
    size: int = 256,
    shard_size: int = 500,
    workers: int | None = 0,
    batch_size: int = 64,
    on_bad_image: str = "skip",
    data_dir: str | Path | None = None,
    progress: str | bool = "auto",
) -> dict[str, Any]:
    """Write the prepared form of ``source`` into ``out`` and return its manifest. Re-running after an
    interruption resumes; re-running on a complete set returns at once. Bad images are left out and listed."""
    out = check_output_dir(out)
    workers = check_workers(workers)
    if (out / PREPARED_MANIFEST).is_file():
        manifest = json.loads((out / PREPARED_MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("source") == str(source) and manifest.get("size") == size:
            return manifest
        raise DataError(f"{out}: already holds a prepared set of {manifest.get('source')}; choose another folder")
    transform = ResizeCenterCrop(size)
    datasets = {
        s: open_dataset(source, split=s, transform=transform, on_bad_image=on_bad_image, data_dir=data_dir)
        for s in source_splits(source, data_dir=data_dir)
    }
    counts = {s: len(d) for s, d in datasets.items()}
    job = {"source": str(source), "size": size, "shard_size": shard_size, "counts": counts}
    job_path = out / "job.json"
    if job_path.is_file():
        if json.loads(job_path.read_text(encoding="utf-8")) != job:
            raise DataError(f"{out}: holds an unfinished prepare of another source or size; choose another folder")
    else:
        atomic_write_text(job_path, json.dumps(job, indent=2) + "\n")
    first = next(iter(datasets.values()))
    splits: dict[str, Any] = {}
    for split, ds in datasets.items():
        shards = []
        n_shards = math.ceil(len(ds) / shard_size)
        bar = Progress(n_shards, f"prepare {split}", progress, unit="shard")
        for k in range(n_shards):
            images, meta = f"{split}/{k:05d}.npy", f"{split}/{k:05d}.json"
            if not (out / meta).is_file():
                indices = range(k * shard_size, min(len(ds), (k + 1) * shard_size))
                _write_shard(Subset(ds, indices), ds, indices, out / images, out / meta, size, workers, batch_size)
            shards.append({"images": images, "meta": meta})
            bar.update(1)
        bar.close()
        splits[split] = {"count": len(ds), "shards": shards}
    manifest = {
        "format": "alexnet-prepared",
        "version": 1,
        "source": str(source),
        "size": size,
        "classes": list(first.classes),
        "splits": splits,
    }
    atomic_write_text(out / PREPARED_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    job_path.unlink(missing_ok=True)
    return manifest


def _write_shard(
    subset: Dataset,
    ds: Dataset,
    indices: range,
    images_path: Path,
    meta_path: Path,
    size: int,
    workers: int,
    batch_size: int,
) -> None:
    loader = make_loader(subset, batch_size=batch_size, workers=workers, pin_memory=False)
    names_in = [ds.names[i] for i in indices]
    targets_in = [ds.targets[i] for i in indices]
    skipped: list[str] = []
    chunks = []
    for batch in loader:
        skipped += batch.bad
        if batch.images.numel():
            chunks.append(batch.images.numpy())
    bad_set = set(skipped)
    keep = [j for j, name in enumerate(names_in) if name not in bad_set]
    array = np.concatenate(chunks) if chunks else np.zeros((0, 3, size, size), np.uint8)
    if len(array) != len(keep):  # names are unique per sample: a mismatch is a bug, not bad data
        raise RuntimeError(f"{images_path}: {len(array)} images for {len(keep)} names")

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array, dtype=np.uint8))

    atomic_write(images_path, save)
    meta = {"targets": [targets_in[j] for j in keep], "names": [names_in[j] for j in keep], "skipped": skipped}
    atomic_write_text(meta_path, json.dumps(meta) + "\n")
