"""`Batch`: the one type every loader of the package yields (`datasets.make_loader`, `prepared_loader.PreparedLoader`)
and every consumer reads (the training step, evaluation, the feature cache, feature extraction).

``images`` is one of three things, told apart by type, never by position or length: a uint8 tensor (N, 3, S, S)
(or (N, 10, 3, S, S) for ten-crop testing) already cut in the loader; an `device_decode.EncodedBatch`, JPEGs still
to be decoded on the device; or a `CropBatch`, whole stored squares (`prepared_loader`'s) still to be cropped on the
device. `Batch.on` makes the last two real (`device_decode.materialize`). A NamedTuple, so the DataLoader pins its
tensors and sends it from a worker like any tuple of tensors; torchvision-style ``(images, labels)`` pairs from a
caller's own loader become a `Batch` through `Batch.of`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from .device_decode import EncodedBatch, materialize

__all__ = ["Batch", "BatchImages", "CropBatch"]


class CropBatch:
    """Whole stored images (uint8 (n, 3, S, S), pinned when bound for a GPU) with each one's crop offsets and
    mirror flag; `crop` cuts the batch on a device in one gather."""

    def __init__(self, images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, out: int) -> None:
        self.images, self.offsets, self.flips, self.out = images, offsets, flips, int(out)

    def __len__(self) -> int:
        return len(self.images)

    def crop(self, device: torch.device | str) -> torch.Tensor:
        """uint8 (n, 3, out, out) on ``device``: ``images[k, :, top:top+out, left:left+out]``, mirrored where
        flagged (the values the reader thread's slices give, tested equal)."""
        device = torch.device(device)
        x = self.images.to(device, non_blocking=True)
        n, p = len(x), self.out
        if n == 0:
            return x[:, :, :p, :p]
        off = self.offsets.to(device, non_blocking=True)
        flips = self.flips.to(device, non_blocking=True)
        ar = torch.arange(p, device=device)
        rows = off[:, 0, None] + ar  # (n, p)
        cols = torch.where(flips[:, None], off[:, 1, None] + (p - 1) - ar, off[:, 1, None] + ar)
        nk = torch.arange(n, device=device)[:, None, None, None]
        ch = torch.arange(x.shape[1], device=device)[None, :, None, None]
        return x[nk, ch, rows[:, None, :, None], cols[:, None, None, :]]


BatchImages = torch.Tensor | EncodedBatch | CropBatch


class Batch(NamedTuple):
    """One batch: ``images`` (`BatchImages`), ``labels`` int64 (N,), ``bad`` the names of the samples dropped from
    it as unreadable, ``refs`` one ``(index, name)`` per kept sample where known (`evaluate.batches_with_refs`),
    ``failure`` the message of a bad image under ``on_bad_image="fail"`` (the loader raises it in the calling
    process, as one line, instead of yielding the batch)."""

    images: BatchImages
    labels: torch.Tensor
    bad: Sequence[str] = ()
    refs: Sequence[tuple[int, str]] | None = None
    failure: str | None = None

    @classmethod
    def of(cls, item: Batch | Sequence[Any]) -> Batch:
        """``item`` as a `Batch`: itself, or a caller's ``(images, labels[, bad[, refs]])`` tuple."""
        if isinstance(item, Batch):
            return item
        if not isinstance(item, (tuple, list)) or not 2 <= len(item) <= 4:
            raise TypeError(f"a loader batch is a Batch or an (images, labels) pair, got {type(item).__name__}")
        return cls(*item)

    def materialized(self, device: torch.device | str) -> Batch:
        """This batch with tensor images: encoded JPEGs decoded and stored squares cropped on ``device`` (a plain
        tensor stays where it is, the labels too); the images lost on the way join ``bad`` and leave ``refs``."""
        images, labels, dropped = materialize(self.images, torch.as_tensor(self.labels), device)
        refs = self.refs
        if dropped and refs is not None:
            gone = set(dropped)
            refs = [r for r in refs if r[1] not in gone]
        return self._replace(images=images, labels=labels, bad=[*self.bad, *dropped], refs=refs)

    def on(self, device: torch.device | str) -> Batch:
        """`materialized`, with the images and labels moved to ``device``."""
        b = self.materialized(device)
        if not len(b.labels):
            return b
        images = torch.as_tensor(b.images).to(device, non_blocking=True)
        return b._replace(images=images, labels=b.labels.to(device, non_blocking=True))
