"""Transforms of the paper's input pipeline (section 2 and 4.1), built on torchvision.transforms.v2.

Images arrive as RGB uint8 tensors (3, H, W) from `alexnet.data.decode`. Geometry (resize, crop, flip) runs on
uint8; the float work (scale, mean subtraction, PCA lighting) is `Normalize`-like and can run batched on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.transforms import v2

__all__ = ["Normalizer", "eval_geometry", "train_geometry", "eval_transform", "train_transform", "ten_crop"]


class Normalizer(nn.Module):
    """uint8 (..., 3, H, W) -> float: ``(x / 255 * value_scale - mean) / std``. Works on one image or a batch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], value_scale: float = 1.0) -> None:
        super().__init__()
        self.value_scale = float(value_scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() * (self.value_scale / 255.0)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def eval_geometry(resize_size: int, input_size: int) -> v2.Compose:
    """Short side to ``resize_size``, centre crop ``input_size`` (uint8 in, uint8 out)."""
    return v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(input_size)])


def train_geometry(resize_size: int, input_size: int, flip: bool = True) -> v2.Compose:
    """Short side to ``resize_size``, centre crop resize_size (the paper's 256x256 image), random ``input_size``
    crop and horizontal flip (section 4.1)."""
    ops: list[nn.Module] = [
        v2.Resize(resize_size, antialias=True),
        v2.CenterCrop(resize_size),
        v2.RandomCrop(input_size),
    ]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops)


def eval_transform(resize_size: int, input_size: int, mean, std, value_scale: float = 1.0) -> v2.Compose:
    return v2.Compose([eval_geometry(resize_size, input_size), Normalizer(mean, std, value_scale)])


def train_transform(resize_size: int, input_size: int, mean, std, value_scale: float = 1.0, flip: bool = True):
    return v2.Compose([train_geometry(resize_size, input_size, flip), Normalizer(mean, std, value_scale)])


def ten_crop(img: torch.Tensor, resize_size: int, input_size: int) -> torch.Tensor:
    """The paper's 10 test patches (section 4.1): 4 corners + centre of the resized image and their mirrors.
    uint8 (3, H, W) -> uint8 (10, 3, input_size, input_size)."""
    img = v2.functional.resize(img, resize_size, antialias=True)
    img = v2.functional.center_crop(img, resize_size)
    crops = v2.functional.ten_crop(img, input_size)
    return torch.stack(list(crops))
