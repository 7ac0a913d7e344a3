"""The deterministic image work of inference, in torch alone (no torchvision import, so a command that only
classifies starts faster): the short side resized with antialiasing, then a centre crop (torchvision's eval
preset, pixel for pixel), the paper's fixed-size square (section 2) and its 10 test patches (section 4.1), uint8
in and out; and the normalisation to float.

The arithmetic is torchvision's `v2.Resize(size)` + `v2.CenterCrop` exactly: the long side becomes
``int(size * long / short)``, bilinear resampling with ``antialias=True`` and ``align_corners=False`` (native uint8
on the CPU; elsewhere in float32, rounded), and the crop's offset is ``int(round((H - S) / 2))``. tests compare
them bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .decode import BadImageError
from .pixels import as_uint8_image, check_uint8_batch

__all__ = [
    "MAX_RESIZED_PIXELS",
    "CenterPatch",
    "EvalTransform",
    "Normalizer",
    "TenCrop",
    "five_crop",
    "ResizeCenterCrop",
    "center_crop",
    "resize",
    "resize_center_crop",
    "resized_size",
]

# The most pixels an image may have once its short side is resized: a 4:3 photo at 256 has 87,000, a 100:1
# panorama 6.5 million. A strip of 5000x1 pixels (an 85-byte PNG) would otherwise become 1,280,000x256 before
# the crop, gigabytes for one image.
MAX_RESIZED_PIXELS = 16 * 2**20


def resized_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) with the short side ``size`` and the aspect kept, as torchvision computes it."""
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def resize(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resampling of uint8 (..., 3, H, W) to ``hw``, as torchvision's ``resize`` does it."""
    if tuple(img.shape[-2:]) == tuple(hw):
        return img
    shape = img.shape
    x = img.reshape(-1, *shape[-3:])
    if img.device.type == "cpu" and img.dtype == torch.uint8:  # PyTorch's native uint8 kernel, as torchvision uses
        out = F.interpolate(x, size=list(hw), mode="bilinear", align_corners=False, antialias=True)
    else:
        out = F.interpolate(x.float(), size=list(hw), mode="bilinear", align_corners=False, antialias=True)
        if img.dtype == torch.uint8:
            out = out.round_().to(torch.uint8)
    return out.reshape(*shape[:-2], *hw)


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` region (torchvision's offsets); the image must be at least that large."""
    h, w = img.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img[..., top : top + size, left : left + size]


def _check_resized(h: int, w: int, size: int) -> tuple[int, int]:
    nh, nw = resized_size(h, w, size)
    if nh * nw > MAX_RESIZED_PIXELS:
        raise BadImageError(
            f"a {w}x{h} image would become {nw}x{nh} pixels with its short side at {size}; at most "
            f"{MAX_RESIZED_PIXELS:,} pixels (an aspect ratio this extreme is no photo)"
        )
    return nh, nw


def resize_center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's fixed-size image (section 2): short side to ``size``, then the central ``size`` x ``size``
    square. The square is cut from the source before resampling (same pixels, less work); an image that is
    already ``size`` x ``size`` (a prepared set) comes back untouched. uint8 (3, H, W) -> uint8 (3, size, size)."""
    h, w = img.shape[-2:]
    if h == size and w == size:
        return img
    s = min(h, w)
    top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
    square = img[..., top : top + s, left : left + s]
    if s == size:
        return square.contiguous()
    return resize(square, (size, size))


class ResizeCenterCrop(nn.Module):
    """`resize_center_crop` as a module. ``min_size`` tells the decoder how small a JPEG may be decoded."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = self.min_size = int(size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return resize_center_crop(img, self.size)


class CenterPatch(nn.Module):
    """Inference geometry (torchvision's eval preset): short side to ``resize_size``, then the central
    ``input_size`` patch. Refuses (`BadImageError`) an image whose resized form would pass `MAX_RESIZED_PIXELS`.
    ``min_size`` tells the decoder how small a JPEG may be decoded. uint8 (3, H, W) -> uint8 (3, S, S)."""

    def __init__(self, resize_size: int, input_size: int) -> None:
        super().__init__()
        if input_size > resize_size:
            raise ValueError(f"input_size {input_size} > resize_size {resize_size}")
        self.resize_size = self.min_size = int(resize_size)
        self.input_size = int(input_size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        return center_crop(resize(img, _check_resized(h, w, self.resize_size)), self.input_size).contiguous()

    def extra_repr(self) -> str:
        return f"resize_size={self.resize_size}, input_size={self.input_size}"


def five_crop(img: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The four corner and the central ``size`` patches, in torchvision's ``five_crop`` order (tl, tr, bl, br,
    centre)."""
    h, w = img.shape[-2:]
    s = size
    return [
        img[..., :s, :s],
        img[..., :s, w - s :],
        img[..., h - s :, :s],
        img[..., h - s :, w - s :],
        center_crop(img, s),
    ]


class TenCrop(nn.Module):
    """The paper's test-time patches (section 4.1): the four corner and the central ``input_size`` patches of
    the ``resize_size`` image, and their mirrors. uint8 (3, H, W) -> uint8 (10, 3, S, S), in torchvision's
    ``ten_crop`` order: tl, tr, bl, br, centre of the image, then the same five of the mirrored image (its tl is
    the tr patch mirrored); the set is the paper's, and the order does not matter to an average."""

    def __init__(self, resize_size: int, input_size: int) -> None:
        super().__init__()
        self.resize_size = self.min_size = int(resize_size)
        self.input_size = int(input_size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        img = resize_center_crop(img, self.resize_size)
        return torch.stack(five_crop(img, self.input_size) + five_crop(img.flip(-1), self.input_size))


# --- float work (any device, one image or a batch) ---------------------------------------------------------------
class Normalizer(nn.Module):
    """uint8 (..., 3, H, W) -> float: ``(x / (255 / value_scale) - mean) / std``, torchvision's ``ToTensor`` and
    ``Normalize`` bit for bit (value_scale 1; 255 keeps Caffe's 0..255 range). One image or a batch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], value_scale: float = 1.0) -> None:
        super().__init__()
        self.value_scale = float(value_scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_uint8_batch(x, "Normalizer")
        # torchvision's arithmetic (ToTensor's x / 255, then Normalize's (x - mean) / std), bit for bit, in place
        # on one new float tensor: half the time of a new tensor per step (docs/BENCHMARKS.md)
        x = x.to(torch.float32, copy=True).div_(255.0 / self.value_scale)
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))


class EvalTransform(nn.Module):
    """A picture -> float (3, S, S): `CenterPatch` then `Normalizer` (predict and serve, one image at a time;
    ``Preprocessing(img)``). Takes what `alexnet.data.pixels.as_uint8_image` takes (uint8 (3, H, W) or a batch,
    a float tensor in [0, 1], a PIL image, a NumPy HWC uint8 array) and refuses the rest with a sentence, an
    already normalised float tensor included. ``min_size`` tells the decoder how small a JPEG may be decoded."""

    def __init__(self, resize_size: int, input_size: int, normalizer: Normalizer) -> None:
        super().__init__()
        self.geometry = CenterPatch(resize_size, input_size)
        self.normalizer = normalizer
        self.min_size = self.geometry.min_size

    def forward(self, img: Any) -> torch.Tensor:
        return self.normalizer(self.geometry(as_uint8_image(img)))
