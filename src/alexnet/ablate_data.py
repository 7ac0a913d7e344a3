"""The data every run of `alexnet ablate` shares: how many images train, validate and test (counts fitted to
what the data holds), and the split itself, drawn once so that every variant and seed sees the same images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ablate_variants import AblationError, Scale
from .errors import AlexnetError

__all__ = ["Counts", "Splits", "fit_counts", "load_splits", "check_split"]

SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class Counts:
    """How many images each part gets (0 train or test: all there is)."""

    train: int
    val: int
    test: int


@dataclass
class Splits:
    """The data every run shares: training subset, validation share, held-out test images."""

    train: Any
    val: Any
    test: Any
    source: str
    test_source: str  # where the test images come from (the test split, or a share held out of the training set)

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def fit_counts(scale: Scale, asked: Counts, *, pool: int, test_split: int | None, data: str = "data") -> Counts:
    """The counts for ``pool`` training images (and a test split of ``test_split`` images, None when the data has
    none). A count the user gave (``asked``, -1 where not given) is taken as it is; a count from the scale is at
    most its share of what is there (validation ``val_share``; a held-out test set ``test_share``), so a small
    folder runs a small study instead of failing. What cannot fit is a one-line error with the minimum."""
    held_out = test_split is None
    if asked.test >= 0:
        test = asked.test if held_out or asked.test else test_split or 0
    elif held_out:
        share = max(1, round(scale.test_share * pool))
        test = min(scale.test_samples, share) if scale.test_samples else share
    else:
        test = min(scale.test_samples, test_split) if scale.test_samples else test_split or 0
    if held_out and test == 0:
        test = max(1, round(scale.test_share * pool))  # 0 = "all": with no test split, the share
    val = asked.val if asked.val >= 0 else min(scale.val_samples, max(1, round(scale.val_share * pool)))
    left = pool - val - (test if held_out else 0)
    train = asked.train if asked.train >= 0 else (min(scale.train_samples, left) if scale.train_samples else 0)
    need = max(train, 1) + val + (test if held_out else 0)
    if need > pool:
        parts = [f"{val:,} validation"] + (
            [f"{test:,} test (held out: the data has no test split)"] if held_out else []
        )
        raise AblationError(
            f"{data}: {pool:,} training images, but {' + '.join(parts)} + {max(train, 1):,} to train on need at "
            f"least {need:,}; lower --train-samples/--val-samples/--test-samples or use more images"
        )
    return Counts(train, val, test)


def _take(targets: list[int], n: int, seed: int) -> tuple[list[int], list[int]]:
    """(the rest, about ``n`` positions drawn class by class, seeded); n == 0 or n >= len: all are taken."""
    from .data import datasets

    if n == 0 or n >= len(targets):
        return [], list(range(len(targets)))
    return datasets.stratified_split(targets, n / len(targets), seed)


def _open(data: str, split: str) -> Any:
    """One split of ``data`` (Fashion-MNIST's idx folder or anything `open_dataset` reads); None if it has none."""
    from .data import datasets

    try:
        ds = datasets.open_dataset(data, split=split)
    except AlexnetError:
        if split == "train":
            raise
        return None
    return ds if len(ds) else None


def load_splits(data: str, scale: Scale, asked: Counts, split_seed: int = 0) -> Splits:
    """The training subset, validation share and test images, drawn once with ``split_seed``: the same for every
    variant and seed. Test images come from the data's test split (Fashion-MNIST's 10,000, a ``val/`` folder),
    else from a stratified share held out of the training data. Counts: `fit_counts`."""
    from .data import datasets

    pool = _open(data, "train")
    test_base = _open(data, "test")
    counts = fit_counts(scale, asked, pool=len(pool), test_split=None if test_base is None else len(test_base),
                        data=data)  # fmt: skip
    if test_base is None:
        rest, test_idx = _take(pool.targets, counts.test, split_seed + 2)
        test_source = "held out of the training data"
        test_base = _open(data, "train")
    else:
        rest, test_source = list(range(len(pool))), "test split"
        test_idx = list(range(min(counts.test or len(test_base), len(test_base))))
    # the validation share and the training subset come from what is left
    rest2, val_pos = _take([pool.targets[i] for i in rest], counts.val, split_seed + 1)
    val_idx = [rest[i] for i in val_pos]
    left = [rest[i] for i in rest2]
    train_pos = _take([pool.targets[i] for i in left], counts.train, split_seed)[1]
    train_idx = [left[i] for i in train_pos]
    if not train_idx or not val_idx or not test_idx:  # the stratified draw rounds class by class
        raise AblationError(
            f"{data}: {len(pool):,} images leave {len(train_idx):,} to train on after {len(val_idx):,} validation and "
            f"{len(test_idx):,} test images ({test_source}); use more images"
        )
    val_base = _open(data, "train")  # its own object: train.main gives each view its geometry
    return Splits(
        train=datasets.Subset(pool, train_idx),
        val=datasets.Subset(val_base, val_idx),
        test=datasets.Subset(test_base, test_idx),
        source=str(data),
        test_source=test_source,
    )


def check_split(out: Path, splits: Splits, split_seed: int) -> None:
    """Record the split's counts in ``out/split.json`` on the first run; on a rerun refuse other counts (the
    finished runs were trained and tested on other images, and would be mixed into the table)."""
    from .data.fileio import atomic_write_text

    mine = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
            "test_source": splits.test_source, "split_seed": split_seed}  # fmt: skip
    path = Path(out) / SPLIT_FILE
    if path.is_file():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        diff = [k for k in mine if theirs.get(k) != mine[k]]
        if diff:
            k = diff[0]
            raise AblationError(
                f"{out}: made with another split ({k} {theirs.get(k)!r}, now {mine[k]!r}); use the same "
                "--train-samples/--val-samples/--test-samples, another --out, or delete that folder"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(mine, indent=2) + "\n")
