"""`Batch`: the one type every loader of the package yields (`datasets.make_loader`, `prepared_loader.PreparedLoader`)
and every consumer reads (the training step, evaluation, the feature cache, feature extraction).

``images`` is one of three things, told apart by type, never by position or length: a uint8 tensor (N, 3, S, S)
(or (N, 10, 3, S, S) for ten-crop testing) already cut in the loader; an `device_decode.EncodedBatch`, JPEGs still
to be decoded on the device; or a `prepared_loader.CropBatch`, whole stored squares still to be cropped on the
device. `Batch.on` makes the last two real (`device_decode.materialize`). A NamedTuple, so the DataLoader pins its
tensors and sends it from a worker like any tuple of tensors; torchvision-style ``(images, labels)`` pairs from a
caller's own loader become a `Batch` through `Batch.of`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import torch

from .device_decode import EncodedBatch, materialize

if TYPE_CHECKING:
    from .prepared_loader import CropBatch

__all__ = ["Batch", "BatchImages"]

BatchImages = Union[torch.Tensor, EncodedBatch, "CropBatch"]  # noqa: UP007 - a forward reference in the union


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
