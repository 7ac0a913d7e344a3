"""Data sets: an image folder, a list file, Fashion-MNIST, and prepared sets written by `alexnet prepare`.

Every data set yields ``(transform(uint8 (3, H, W) RGB image), int label)``, or ``None`` for a bad image when
``on_bad_image == "skip"`` (`make_loader` drops it and reports its name), and has ``classes``, ``targets`` and
``names`` (a path or an id per sample). Knows nothing of models.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from . import prepared_loader
from .base import IMAGE_EXTENSIONS, PREPARED_MANIFEST, DataError, PreparedDataset, Subset, Transform, read_manifest
from .batch import Batch
from .decode import BadImageError, decode_image, read_bytes
from .device_decode import EncodedBatch, EncodedJpeg, plain_jpeg, sample_seed
from .fashion_mnist import (
    FASHION_FILES,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_INSTALL,
    FashionMNISTDataset,
    download_fashion_mnist,
    fashion_file,
    fashion_mnist_missing,
    find_fashion_mnist,
    read_idx,
)

__all__ = [
    "DataError",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_INSTALL",
    "FashionMNISTDataset",
    "ImageListDataset",
    "PreparedDataset",
    "Subset",
    "download_fashion_mnist",
    "fashion_mnist_missing",
    "find_fashion_mnist",
    "make_loader",
    "SeededBatchSampler",
    "open_dataset",
    "read_idx",
    "read_list_file",
    "scan_image_folder",
    "stratified_split",
]


def _check_policy(on_bad_image: str) -> None:
    if on_bad_image not in ("skip", "fail"):
        raise DataError(f"on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")


# --- images on disk -----------------------------------------------------------------------------------------------
class ImageListDataset(Dataset):
    """Images named by path with integer labels; decoded on access (`alexnet.data.decode.decode_image`)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        targets: Sequence[int],
        classes: Sequence[str],
        *,
        transform: Transform | None = None,
        on_bad_image: str = "skip",
        min_size: int | None = None,
    ) -> None:
        _check_policy(on_bad_image)
        if len(paths) != len(targets):
            raise ValueError("paths and targets differ in length")
        self.names = [str(p) for p in paths]
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.transform = transform
        self.on_bad_image = on_bad_image
        # The decoder may decode JPEGs at reduced scale as long as the short side stays >= min_size.
        self.min_size = min_size if min_size is not None else getattr(transform, "min_size", None)
        # True: plain JPEGs are returned as their bytes, for the loader to decode on the training device
        # (`alexnet.data.device_decode`); other files are decoded and transformed here as usual.
        self.encoded = False

    def __len__(self) -> int:
        return len(self.names)

    def load(self, i: int) -> torch.Tensor:
        """The decoded uint8 (3, H, W) image of sample ``i``; raises `BadImageError`."""
        return decode_image(self.names[i], min_size=self.min_size)

    def __getitem__(self, i: int) -> tuple[Any, int] | None:
        try:
            if getattr(self, "encoded", False):
                data = read_bytes(self.names[i])
                if plain_jpeg(data):
                    return EncodedJpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)), self.targets[i]
                img = decode_image(data, min_size=self.min_size, name=self.names[i])
            else:
                img = self.load(i)
            try:
                return (self.transform(img) if self.transform is not None else img), self.targets[i]
            except BadImageError as e:  # the geometry refused it (e.g. a 5000x1 strip): name the file
                raise BadImageError(f"{self.names[i]}: {e}") from None
        except BadImageError:
            if self.on_bad_image == "fail":
                raise
            return None


def scan_image_folder(root: str | Path, *, empty_ok: bool = False) -> tuple[list[Path], list[int], list[str]]:
    """torchvision's ImageFolder convention: one sub-folder per class (sorted names), image files under it,
    found recursively, in sorted order so that a seed means the same split on every machine.

    Links are followed, also out of ``root`` (a class folder may link to images kept elsewhere), but every
    folder is walked once and every file is taken once, by its real path: a link loop (``ln -s .. cls/loop``)
    or a second link to the same image adds nothing, so no image is counted twice or under two labels. Only
    regular files are taken (a FIFO or device named ``x.jpg`` is left out). A class folder without images is an
    error naming it (it would become a class no image has), unless ``empty_ok`` (a validation folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    paths: list[Path] = []
    targets: list[int] = []
    # the data root and every class folder belong to themselves: a link from class a into them (a loop, or
    # a/loop -> .. -> b) is not followed, so no image is taken under another class's label
    seen_dirs: set[tuple[int, int]] = {_dir_key(root)} | {_dir_key(root / c) for c in classes}
    seen_files: set[tuple[int, int]] = set()
    owners = _class_owners(root, classes)
    empty = []
    for k, c in enumerate(classes):
        found = _scan_class(root / c, k, owners, seen_dirs, seen_files)
        paths += found
        targets += [k] * len(found)
        if not found:
            empty.append(c)
    if not paths:
        raise DataError(f"{root}: no images found in {len(classes)} class folders")
    if empty and not empty_ok:
        raise DataError(
            f"{root}: class folder(s) {', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''} hold no images "
            "(an empty class would be a class no image has): remove them or add images"
        )
    return paths, targets, classes


def _dir_key(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _class_owners(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(real path of a class folder + os.sep, class index), deepest first: an image belongs to the class whose real
    folder holds it (`_owner`). Two class names for one real folder (``dog -> cat``) are refused: every image
    would have two labels."""
    owners: dict[str, int] = {}
    for k, c in enumerate(classes):
        real = os.path.join(os.path.realpath(root / c), "")
        if real in owners:
            raise DataError(
                f"{root}: class folders {classes[owners[real]]} and {c} are the same folder (a link): "
                "each image would have two labels; remove the link"
            )
        owners[real] = k
    return sorted(owners.items(), key=lambda item: -len(item[0]))


def _owner(real: str, owners: list[tuple[str, int]]) -> int | None:
    """The class whose real folder holds the real path ``real`` (the deepest one), None outside them all."""
    real = os.path.join(real, "")
    return next((k for prefix, k in owners if real.startswith(prefix)), None)


def _scan_class(
    folder: Path,
    k: int,
    owners: list[tuple[str, int]],
    seen_dirs: set[tuple[int, int]],
    seen_files: set[tuple[int, int]],
) -> list[Path]:
    """The image files under ``folder`` (class ``k``; sorted), each real folder walked once and each real file
    taken once. A folder or an image whose real path lies in another class's folder (``cat/aa.jpg ->
    ../dog/0.jpg``, ``cat/zz -> ../dog/sub``) is left to that class, which takes it from its own folder: an image
    keeps its real class whatever links lead to it. One outside every class folder goes to the first class that
    links to it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            key = _dir_key(Path(dirpath))
        except OSError:
            dirnames[:] = []
            continue
        if key in seen_dirs and dirpath != str(folder):  # a loop, or a folder reached twice through links
            dirnames[:] = []
            continue
        if dirpath != str(folder) and _owner(os.path.realpath(dirpath), owners) not in (k, None):
            dirnames[:] = []  # another class's folder, reached through a link: its images are that class's
            continue
        seen_dirs.add(key)
        dirnames.sort()
        for f in sorted(filenames):
            if os.path.splitext(f)[1].lower() not in IMAGE_EXTENSIONS or f.startswith("."):
                continue
            p = Path(dirpath) / f
            try:
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):  # only a link can lead into another class: one realpath per link
                    if _owner(os.path.realpath(p), owners) not in (k, None):
                        continue
                    st = os.stat(p)
            except OSError:  # a broken link
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_files or not stat.S_ISREG(st.st_mode):  # taken already, or a FIFO / device
                continue
            seen_files.add(key)
            out.append(p)
    return out


def read_list_file(path: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """The tutorial's list file: ``relative/path.jpg label`` per line (paths relative to the list file, labels
    integers from 0; blank lines and ``#`` comments ignored). A path may contain spaces: the label is the last field.
    Missing images are not checked here: they are reported by name when read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such list file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read list file ({e})") from None
    paths: list[Path] = []
    targets: list[int] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DataError(f"{path}:{n}: expected 'path label', got {line!r}")
        try:
            label = int(parts[1])
        except ValueError:
            raise DataError(f"{path}:{n}: label {parts[1]!r} is not an integer") from None
        if label < 0:
            raise DataError(f"{path}:{n}: label {label} is negative")
        p = Path(parts[0])
        paths.append(p if p.is_absolute() else path.parent / p)
        targets.append(label)
    if not paths:
        raise DataError(f"{path}: no samples in list file")
    return paths, targets, [str(i) for i in range(max(targets) + 1)]


def stratified_split(targets: Sequence[int], val_split: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (train, val): from each class, round(val_split * n) samples (at least 1 when the class has 2 or
    more) go to val, chosen by a seeded shuffle, so every class is represented and a seed is reproducible."""
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"val_split must be in [0, 1), got {val_split}")
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    rng = random.Random(seed)
    train: list[int] = []
    val: list[int] = []
    for c in sorted(by_class):
        idx = by_class[c][:]
        rng.shuffle(idx)
        k = round(val_split * len(idx))
        if val_split > 0 and k == 0 and len(idx) >= 2:
            k = 1
        val.extend(idx[:k])
        train.extend(idx[k:])
    return sorted(train), sorted(val)


# --- dispatch -----------------------------------------------------------------------------------------------------
def open_dataset(
    source: str | Path,
    *,
    split: str = "train",
    val_split: float = 0.0,
    seed: int = 0,
    transform: Transform | None = None,
    on_bad_image: str = "skip",
    min_size: int | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
) -> Dataset:
    """Open ``source`` as a data set (see the module docstring for the item format).

    ``source``: ``"fashion-mnist"`` (found by `find_fashion_mnist` in ``data_dir`` or the usual places, downloaded
    through torchvision only when ``download``), a folder of Fashion-MNIST idx files, a prepared set (has
    ``prepared.json``), a folder with ``train/`` and ``val/`` class folders, a plain class-folder tree, or a list
    file. ``split``: "train", "val" (or "test"), or "all". Without a ``val/`` folder, ``val_split`` > 0 holds out a
    seeded, stratified share of the samples as "val". ``min_size``: see `ImageListDataset`.
    """
    _check_policy(on_bad_image)
    opts: dict[str, Any] = {"transform": transform, "on_bad_image": on_bad_image, "min_size": min_size}
    if split not in ("train", "val", "test", "all"):
        raise DataError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}")
    text = str(source)
    if text.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist"):
        folder = find_fashion_mnist(data_dir)
        if folder is None:
            if not download:
                raise fashion_mnist_missing(data_dir)
            folder = download_fashion_mnist(data_dir)
        return _fashion_split(folder, split, val_split, seed, transform)
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        paths, targets, classes = read_list_file(path)
        base = ImageListDataset(paths, targets, classes, **opts)
        return _split(base, split, val_split, seed, path)
    if (path / PREPARED_MANIFEST).is_file():
        splits = read_manifest(path).get("splits", {})
        if split in ("val", "test") and "val" in splits:
            return PreparedDataset(path, "val", transform=transform)
        return _split(PreparedDataset(path, "train", transform=transform), split, val_split, seed, path)
    if fashion_file(path, FASHION_FILES["train"][0]) or fashion_file(path, FASHION_FILES["test"][0]):
        return _fashion_split(path, split, val_split, seed, transform)
    val_dir = next((path / d for d in ("val", "validation") if (path / d).is_dir()), None)
    if (path / "train").is_dir() and val_dir is not None:
        if split == "all":
            raise DataError(f"{path}: has train/ and val/ folders; pick split 'train' or 'val'")
        folder = path / "train" if split == "train" else val_dir
        paths, targets, classes = scan_image_folder(folder, empty_ok=split != "train")
        if split != "train":
            train_classes = scan_image_folder(path / "train")[2]
            if classes != train_classes:
                raise DataError(f"{folder}: class folders differ from {path / 'train'}")
        return ImageListDataset(paths, targets, classes, **opts)
    paths, targets, classes = scan_image_folder(path)
    base = ImageListDataset(paths, targets, classes, **opts)
    return _split(base, split, val_split, seed, path)


def _fashion_split(folder: Path, split: str, val_split: float, seed: int, transform: Transform | None) -> Dataset:
    if split in ("val", "test"):
        return FashionMNISTDataset(folder, "test", transform=transform)
    return _split(FashionMNISTDataset(folder, "train", transform=transform), split, 0.0, seed, folder)


def _split(base: Dataset, split: str, val_split: float, seed: int, where: Path) -> Dataset:
    if split == "all" or (split == "train" and val_split <= 0):
        return base
    if val_split <= 0:
        raise DataError(f"{where}: no val/ folder; pass a val_split (e.g. --val-split 0.1) to hold out samples")
    train, val = stratified_split(base.targets, val_split, seed)
    return Subset(base, train if split == "train" else val)


# --- loading ------------------------------------------------------------------------------------------------------
class _Indexed(Dataset):
    """Wraps a data set so that each item carries its index (to name bad samples) and bad-image failures
    travel to the main process as data, where they are raised with their one-line message."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        try:
            return i, self.ds[i], None
        except BadImageError as e:
            return i, None, str(e)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[int, Any, str | None]]:
        """One batch, its random transforms drawn from the batch's own seed (`SeededBatchSampler`): in a worker
        the worker's generators are reseeded; in the main process (no workers) they are set aside and restored,
        so that the training step's own random numbers (dropout) do not depend on the loading."""
        seed = getattr(indices, "seed", None)
        out = _SeededBatch()
        out.seed = seed  # for the samples still encoded, whose transforms run later (`EncodedBatch`)
        if seed is None:
            out.extend(self[i] for i in indices)
        elif torch.utils.data.get_worker_info() is not None:
            _reseed(seed)
            out.extend(self._seeded(seed, indices))
        else:
            py, npy = random.getstate(), np.random.get_state()
            try:
                with torch.random.fork_rng(devices=[]):
                    _reseed(seed)
                    out.extend(self._seeded(seed, indices))
            finally:
                random.setstate(py)
                np.random.set_state(npy)
        return out

    def _seeded(self, seed: int, indices: Sequence[int]) -> Iterator[tuple[int, Any, str | None]]:
        """The samples, torch's generator seeded per sample (`device_decode.sample_seed`): a sample's crop does
        not depend on its neighbours, so one decoded later on the device draws the same."""
        for position, i in enumerate(indices):
            torch.default_generator.manual_seed(sample_seed(seed, position))
            yield self[i]


def _reseed(seed: int) -> None:
    """The CPU generators a transform may draw from. Not `torch.manual_seed`, which also reseeds every CUDA
    generator: without workers this runs in the training process, whose CUDA generator draws the dropout masks."""
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


class _SeededBatch(list):
    """The indices of one batch, with the seed its random transforms draw from (pickled along to a worker)."""

    seed: int | None = None


class SeededBatchSampler(BatchSampler):
    """torch's BatchSampler whose batches carry a seed made from (``seed``, epoch, batch number): the random crops
    and flips of a batch (the loader's transforms; PCA lighting runs later, in the training step) then depend on
    nothing else, not on which worker builds it, how many workers
    there are, or what came before. So an epoch started afresh (a resumed run, even mid-epoch) draws what an
    uninterrupted one would, and the workers can be kept from epoch to epoch (``persistent_workers``) instead of
    being restarted. The epoch is what `set_epoch` set, else the number of passes so far; the batch numbers of a
    sampler with a ``skip`` attribute (`alexnet.train.EpochSampler`) start after the skipped batches."""

    def __init__(self, sampler: Sampler | Sequence[int], batch_size: int, drop_last: bool, seed: int = 0) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.seed = int(seed)
        self.epoch: int | None = None
        self._passes = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):  # type: ignore[override]
        epoch = self.epoch if self.epoch is not None else self._passes
        self._passes += 1
        first = int(getattr(self.sampler, "skip", 0)) // self.batch_size
        for k, indices in enumerate(super().__iter__(), start=first):
            batch = _SeededBatch(indices)
            batch.seed = int(np.random.SeedSequence([self.seed % 2**63, epoch, k]).generate_state(1, np.uint64)[0])
            yield batch


class _Collate:
    def __init__(self, names: Sequence[str], transform: Any = None, on_bad_image: str = "skip") -> None:
        self.names = names
        self.transform, self.on_bad_image = transform, on_bad_image  # for batches still encoded

    def __call__(self, batch: list[tuple[int, Any, str | None]]) -> Batch:
        no_labels = torch.empty(0, dtype=torch.int64)
        for _, _, err in batch:
            if err is not None:  # on_bad_image="fail": raised by `_Loader` in the calling process, as one line
                return Batch(torch.empty(0, dtype=torch.uint8), no_labels, failure=err)
        good = [s for _, s, _ in batch if s is not None]
        bad = [self.names[i] for i, s, _ in batch if s is None]
        if not good:
            return Batch(torch.empty(0, dtype=torch.uint8), no_labels, bad)
        labels = torch.tensor([int(y) for _, y in good], dtype=torch.int64)
        if any(isinstance(x, EncodedJpeg) for x, _ in good):
            kept = [self.names[i] for i, s, _ in batch if s is not None]
            positions = [p for p, (_, s, _) in enumerate(batch) if s is not None]
            encoded = EncodedBatch([x for x, _ in good], kept, self.transform, getattr(batch, "seed", None),
                                   self.on_bad_image, positions)  # fmt: skip
            return Batch(encoded, labels, bad)
        images = torch.stack([torch.as_tensor(x) for x, _ in good])
        return Batch(images, labels, bad)


class _Loader(DataLoader):
    """torch's DataLoader yielding `Batch` es; a batch that carries a bad image's ``failure`` is raised here."""

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        for batch in super().__iter__():
            if batch.failure is not None:
                raise BadImageError(batch.failure)
            yield batch


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    ds: Dataset,
    *,
    batch_size: int,
    shuffle: bool = False,
    workers: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    seed: int = 0,
    pin_memory: bool | None = None,
    crop_device: torch.device | str | None = None,
) -> DataLoader | prepared_loader.PreparedLoader:
    """A DataLoader whose batches are `Batch` es: ``images`` the stacked uint8 (or transformed) tensors, or JPEGs
    still encoded (`device_decode.EncodedBatch`), ``labels`` int64, ``bad`` the names of the samples dropped
    from this batch as bad images (a batch may hold fewer than ``batch_size`` samples, or none). With
    ``on_bad_image == "fail"`` the first bad image raises `BadImageError` in the calling process. Shuffling and the
    random transforms follow ``seed`` (batch by batch, see `SeededBatchSampler`, whose ``set_epoch`` the loader's
    ``batch_sampler`` has). The workers are kept from one pass over the loader to the next.

    A prepared set whose transform only crops and mirrors its stored squares (`prepared_loader.crop_plan`) gets
    a `prepared_loader.PreparedLoader` instead: the same batches, read by ``workers`` threads straight from the
    shards into the batch's (pinned) buffer, with no worker processes to copy pixels through shared memory; with
    ``crop_device`` its batches are `prepared_loader.CropBatch` es, cut on that device by
    `device_decode.materialize`."""
    names = getattr(ds, "names", None) or [str(i) for i in range(len(ds))]
    generator = torch.Generator()
    generator.manual_seed(seed)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if sampler is None:
        sampler = RandomSampler(ds, generator=generator) if shuffle else SequentialSampler(ds)
    plan = prepared_loader.plan_for(ds)
    if plan is not None:
        batches = SeededBatchSampler(sampler, batch_size, drop_last, seed)
        return prepared_loader.PreparedLoader(
            ds, batches, plan, threads=workers, crop_device=crop_device, pin_memory=pin_memory, generator=generator
        )
    return _Loader(
        _Indexed(ds),
        batch_sampler=SeededBatchSampler(sampler, batch_size, drop_last, seed),
        num_workers=workers,
        collate_fn=_Collate(names, getattr(ds, "transform", None), getattr(ds, "on_bad_image", "skip")),
        generator=generator,
        worker_init_fn=_seed_worker if workers > 0 else None,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
    )
