"""Training JPEGs decoded on the training device: the loader's workers only read the files, and each batch is
decoded in one batched ``torchvision.io.decode_jpeg(..., device=...)`` call (nvJPEG on a GPU), then cropped and
flipped there by the data set's own geometry transform.

On a GPU, decoding is what bounds end-to-end training from JPEG files: a CPU core decodes far fewer images per
second than one GPU trains AlexNet on, while the GPU's own decoder keeps up (figures in docs/BENCHMARKS.md). This
is NVIDIA DALI's design, built from torchvision's decoder.

Only plain JPEGs take this path: 8-bit RGB or grayscale, no EXIF rotation, within Pillow's pixel limit, judged
from the header in the worker (`plain_jpeg`). Every other file (PNG, CMYK, rotated, ...) is decoded and cropped in
the worker as usual and joins the batch as pixels. A file that passes the header check but fails to decode on the
device is decoded again on the CPU by `decode_image`; if that fails too it is a bad image, skipped and named (or
raised with ``on_bad_image="fail"``). The random crops and flips draw from the batch's seed, so the results do not
depend on the number of workers, as on the CPU path (`datasets.SeededBatchSampler`); they are the CPU path's
transforms, on the device. On a GPU the training geometry runs grouped (`EncodedBatch._patches`): one resampling
call per source size instead of one per image, the same pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from .decode import BadImageError, decode_image, jpeg_header
from .transforms import mirror_draw, patch_and_mirror

__all__ = ["EncodedBatch", "EncodedJpeg", "materialize", "plain_jpeg", "sample_seed"]


def sample_seed(batch_seed: int, position: int) -> int:
    """The seed of the random transform of the sample at ``position`` in a batch: each sample's crop and flip
    depend on its batch's seed and its place only, so they come out the same whether it is transformed in a
    worker or, decoded later, on the device."""
    return (int(batch_seed) + 0x9E3779B97F4A7C15 * (int(position) + 1)) % 2**64


def plain_jpeg(data: bytes) -> bool:
    """True when ``data`` is a JPEG the device decoder reproduces exactly as `decode_image` would: 8-bit RGB or
    grayscale (``mode=RGB`` expands the latter), no EXIF orientation to apply, and no more pixels than Pillow
    allows. Reads the header only (`decode.jpeg_header`)."""
    head = jpeg_header(data)
    if head is None:
        return False
    w, h, components, orientation = head
    limit = Image.MAX_IMAGE_PIXELS
    return components in (1, 3) and orientation == 1 and (limit is None or w * h <= limit)


class EncodedJpeg:
    """A sample's file bytes (uint8 1-D tensor), to be decoded with its batch on the device."""

    __slots__ = ("data",)

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data


class EncodedBatch:
    """What the loader yields in place of an image batch when some of its samples are still encoded: ``items`` in
    batch order, each an `EncodedJpeg` or an already transformed uint8 (3, S, S) tensor; ``names`` theirs;
    ``transform`` the data set's geometry (applied on the device to the decoded images); ``seed`` the batch's and
    ``positions`` the items' places in the batch the sampler drew (samples found bad in the worker are gone)."""

    def __init__(
        self,
        items: Sequence[Any],
        names: Sequence[str],
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        seed: int | None,
        on_bad_image: str = "skip",
        positions: Sequence[int] | None = None,
    ) -> None:
        self.items, self.names = list(items), list(names)
        self.transform, self.seed, self.on_bad_image = transform, seed, on_bad_image
        self.positions = list(positions) if positions is not None else list(range(len(self.items)))

    def __len__(self) -> int:
        return len(self.items)

    def decode(self, device: torch.device | str) -> tuple[torch.Tensor, list[int], list[str]]:
        """(uint8 (n, 3, S, S) on ``device``, positions of the kept samples, names of the bad ones)."""
        device = torch.device(device)
        encoded = [k for k, it in enumerate(self.items) if isinstance(it, EncodedJpeg)]
        images = dict(zip(encoded, _decode_many([self.items[k].data for k in encoded], device)))
        bad: list[str] = []
        for k in encoded:
            if images[k] is None:  # the device decoder refused it: the CPU decoder decides
                try:
                    images[k] = decode_image(bytes(self.items[k].data.numpy()), name=self.names[k]).to(device)
                except BadImageError:
                    if self.on_bad_image == "fail":
                        raise
                    bad.append(self.names[k])
        keep = [k for k, it in enumerate(self.items) if not isinstance(it, EncodedJpeg) or images[k] is not None]
        done: dict[int, torch.Tensor] = {}
        with torch.random.fork_rng(devices=[]):  # the crops and flips draw from the CPU generator
            todo = [k for k in keep if isinstance(self.items[k], EncodedJpeg)]
            patch = patch_and_mirror(self.transform)
            if patch is not None and todo and (device.type != "cpu" or GROUP_ON_CPU):
                done = self._patches(images, todo, *patch)
            else:
                for k in todo:
                    if self.seed is not None:
                        torch.default_generator.manual_seed(sample_seed(self.seed, self.positions[k]))
                    done[k] = self.transform(images[k]) if self.transform is not None else images[k]
        out = [done[k] if k in done else self.items[k].to(device, non_blocking=True) for k in keep]
        if not out:
            return torch.empty(0, 3, 1, 1, dtype=torch.uint8, device=device), keep, bad
        return torch.stack(out), keep, bad

    def _patches(self, images: dict[int, Any], todo: list[int], patch: Any, flip: float) -> dict[int, torch.Tensor]:
        """The training geometry (`RandomPatch`, then a mirror with probability ``flip``) of the decoded images
        ``todo``, batched: each sample draws what the per-image transform would from its own seed, the source
        squares of one size are resampled in one call (a GPU's kernel launches, not its arithmetic, are what
        per-image calls cost), and the mirrors are one op. Equal, pixel for pixel, to the per-image transform."""
        from torchvision.transforms.v2 import functional as F

        p = patch.input_size
        groups: dict[int | None, list[tuple[int, torch.Tensor, bool]]] = {}
        for k in todo:
            if self.seed is not None:
                torch.default_generator.manual_seed(sample_seed(self.seed, self.positions[k]))
            img = images[k]
            i, j = patch.draw()
            mirrored = mirror_draw(flip)
            box = patch.box(*img.shape[-2:], i, j)
            if box is None:  # already the resize_size square: a plain slice
                groups.setdefault(None, []).append((k, img[..., i : i + p, j : j + p], mirrored))
            else:
                top, left, size = box
                groups.setdefault(size, []).append((k, F.crop(img, top, left, size, size), mirrored))
        done: dict[int, torch.Tensor] = {}
        for size, members in groups.items():
            batch = torch.stack([c for _, c, _ in members])
            if size is not None:
                batch = F.resize(batch, [p, p], antialias=True)
            mask = torch.tensor([m for _, _, m in members], device=batch.device)
            if bool(mask.any()):
                batch = torch.where(mask[:, None, None, None], batch.flip(-1), batch)
            done.update((k, batch[n]) for n, (k, _, _) in enumerate(members))
        return done


# On a CPU the per-image transform is faster (in a trial while building this, for 256 decoded 500x375 images: not
# a benchmark kept here): PyTorch's fast uint8 resampling path is per image, and the batch adds a copy. The grouped
# path is for devices whose per-call cost is a kernel launch. Tests switch it on to check both give the same pixels.
GROUP_ON_CPU = False


def _decode_many(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Batched decode to RGB uint8 (3, H, W) on ``device``; None where one image fails (found one by one, since
    a batched call fails as a whole)."""
    if not datas:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        out: list[torch.Tensor | None] = []
        for d in datas:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


def materialize(
    x: Any, labels: torch.Tensor, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A loader batch's images as a tensor: an `EncodedBatch` is decoded on ``device`` and its labels kept in
    step (bad samples dropped and named); a `prepared_loader.CropBatch` is cropped on ``device``; anything else
    is returned as it is."""
    if hasattr(x, "crop") and not isinstance(x, torch.Tensor):  # a CropBatch (prepared_loader imports this module)
        return x.crop(device), labels, []
    if not isinstance(x, EncodedBatch):
        return x, labels, []
    images, keep, bad = x.decode(device)
    if len(keep) != len(labels):
        labels = labels[torch.as_tensor(keep, dtype=torch.long)]
    return images, labels, bad
