"""Transforms of the paper's input pipeline (sections 2 and 4.1), built on torchvision.transforms.v2.

Images arrive as RGB uint8 tensors (3, H, W) from `alexnet.data.decode`. Geometry (resize, crop, flip) runs on
uint8 in the loader workers, which keeps the tensors sent to the device four times smaller than float; the float
work (value scale, PCA lighting, mean subtraction) runs batched on the training device (`BatchTransform`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .geometry import CenterPatch, EvalTransform, Normalizer, ResizeCenterCrop, TenCrop, resize_center_crop
from .pixels import check_uint8_batch

__all__ = [
    "IMAGENET_EIGVALS",
    "IMAGENET_EIGVECS",
    "BatchTransform",
    "Geometry",
    "Normalizer",
    "PCALighting",
    "RandomPatch",
    "ResizeCenterCrop",
    "TenCrop",
    "eval_geometry",
    "EvalTransform",
    "mirror_draw",
    "patch_and_mirror",
    "patch_offsets",
    "resize_center_crop",
    "CenterPatch",
    "train_geometry",
]

# The ImageNet RGB eigen-pairs everyone uses when they have not computed their own (fb.resnet.torch's
# datasets/imagenet.lua, copied by most AlexNet reproductions): pixels in 0..1, eigenvectors as COLUMNS.
IMAGENET_EIGVALS = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVECS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


# --- geometry (uint8 in, uint8 out) ------------------------------------------------------------------------------
class RandomPatch(nn.Module):
    """A random ``input_size`` patch of the `resize_center_crop` ``resize_size`` image (section 4.1), cut from the
    source first and resampled once: the same patch (up to where resampling puts its pixel centres, under a
    source pixel) at a fraction of the work, since only the patch's pixels are resampled. A source that already
    is ``resize_size`` square (a prepared set) is sliced exactly, with no resampling.
    uint8 (3, H, W) -> uint8 (3, input_size, input_size)."""

    def __init__(self, resize_size: int, input_size: int) -> None:
        super().__init__()
        if input_size > resize_size:
            raise ValueError(f"input_size {input_size} > resize_size {resize_size}")
        self.resize_size = self.min_size = int(resize_size)
        self.input_size = int(input_size)

    def draw(self) -> tuple[int, int]:
        """The patch's offsets in the resized square (`patch_offsets`), from torch's CPU generator."""
        return patch_offsets(self.resize_size - self.input_size)

    def box(self, h: int, w: int, i: int, j: int) -> tuple[int, int, int] | None:
        """The source square ``(top, left, side)`` that becomes the patch at offsets ``(i, j)`` of an ``h`` x ``w``
        image once resampled to ``input_size``; None when the image already is the ``resize_size`` square (the
        patch is then a plain slice)."""
        r, p = self.resize_size, self.input_size
        if h == r and w == r:
            return None
        side = min(h, w)
        scale = side / r  # source pixels per resized pixel
        top0, left0 = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
        return top0 + round(i * scale), left0 + round(j * scale), max(1, round(p * scale))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        p = self.input_size
        i, j = self.draw()
        box = self.box(*img.shape[-2:], i, j)
        if box is None:
            return img[..., i : i + p, j : j + p]
        top, left, size = box
        return F.resized_crop(img, top, left, size, size, [p, p], antialias=True)


def patch_offsets(span: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    """`RandomPatch`'s offsets, each in 0..``span``, drawn as RandomCrop draws them (one ``torch.randint``), even
    when ``span`` is 0."""
    i, j = (int(v) for v in torch.randint(0, span + 1, (2,), generator=generator))
    return i, j


def mirror_draw(p: float, generator: torch.Generator | None = None) -> bool:
    """Whether ``v2.RandomHorizontalFlip(p)`` mirrors, drawn as it draws (one ``torch.rand(1)``; none when p is 0)."""
    return p > 0.0 and bool(torch.rand(1, generator=generator) < p)


def patch_and_mirror(transform: nn.Module | None) -> tuple[RandomPatch, float] | None:
    """(its `RandomPatch`, its mirror probability) when ``transform`` is exactly `train_geometry`'s, else None:
    the loaders that run the training geometry batch-wise (`device_decode`, `prepared_loader`) recognise it here
    and draw with `patch_offsets` and `mirror_draw`, as the per-image transform does."""
    ops = list(getattr(transform, "transforms", []))
    if type(transform) is not Geometry or not ops or type(ops[0]) is not RandomPatch:
        return None
    if len(ops) == 1:
        return ops[0], 0.0
    if len(ops) == 2 and type(ops[1]) is v2.RandomHorizontalFlip:
        return ops[0], float(ops[1].p)
    return None


class Geometry(v2.Compose):
    """A v2.Compose that tells the dataset the smallest short side it needs (for DCT-domain JPEG decoding)."""

    def __init__(self, transforms: Sequence[nn.Module], min_size: int) -> None:
        super().__init__(list(transforms))
        self.min_size = int(min_size)


def eval_geometry(resize_size: int, input_size: int) -> CenterPatch:
    """Short side to ``resize_size``, centre crop ``input_size`` (uint8 in, uint8 out): torchvision's eval
    preset, so pretrained weights see what they were measured with (`alexnet.data.geometry`, torch alone)."""
    return CenterPatch(resize_size, input_size)


def train_geometry(resize_size: int, input_size: int, flip: bool = True) -> v2.Compose:
    """The paper's training patches (section 4.1): the central ``resize_size`` square (short side resized), a
    random ``input_size`` patch of it, mirrored with probability 1/2. uint8 (3, H, W) -> uint8 (3, S, S)."""
    ops: list[nn.Module] = [RandomPatch(resize_size, input_size)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return Geometry(ops, resize_size)


# --- float work (any device, one image or a batch) ---------------------------------------------------------------
class PCALighting(nn.Module):
    """The paper's colour augmentation (section 4.1): add ``eigvecs @ (alpha * eigvals)`` to every pixel of an
    image, alpha ~ N(0, sigma^2) per component, drawn once per image per call.

    The shifts of one image have covariance ``V diag(sigma^2 lambda^2) V^T``. ``eigvals``/``eigvecs`` (columns)
    describe pixels in 0..1; the shift is multiplied by ``value_scale`` to match the images it is added to.
    Without eigen-pairs of your own (``alexnet stats``) the ImageNet constants of fb.resnet.torch are used:
    eigvals (0.2175, 0.0188, 0.0045), eigvecs [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203]].
    """

    def __init__(
        self,
        sigma: float = 0.1,
        eigvals: Sequence[float] | torch.Tensor | None = None,
        eigvecs: Sequence[Sequence[float]] | torch.Tensor | None = None,
        value_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.sigma = float(sigma)
        vals = torch.as_tensor(IMAGENET_EIGVALS if eigvals is None else eigvals, dtype=torch.float32).reshape(3)
        vecs = torch.as_tensor(IMAGENET_EIGVECS if eigvecs is None else eigvecs, dtype=torch.float32).reshape(3, 3)
        self.register_buffer("eigvals", vals * float(value_scale), persistent=False)
        self.register_buffer("eigvecs", vecs, persistent=False)

    def shifts(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(n, 3) colour shifts, one per image."""
        alpha = torch.randn(n, 3, device=device) * self.sigma
        return (alpha * self.eigvals.to(alpha.device)) @ self.eigvecs.to(alpha.device).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float (3, H, W), (N, 3, H, W) or (N, K, 3, H, W) -> the same plus one shift per image."""
        if self.sigma <= 0:
            return x
        batch = x.shape[:-3]
        n = int(torch.tensor(batch).prod()) if batch else 1
        shift = self.shifts(n, x.device).to(x.dtype).view(*batch, 3, 1, 1)
        return x + shift


class BatchTransform(nn.Module):
    """uint8 images -> the model's float input, batched on the device: value scale, PCA lighting (train), then
    mean subtraction and division by std.

    Mean: per channel (``mean``, value_scale units), or the training set's per-pixel mean image (section 2 of the
    paper; ``mean_image`` (3, R, R) in 0..1). Patches no longer know where they were cut, so a (N, 3, S, S) batch
    has the central S x S of the mean image subtracted (the mean image is smooth); a ten-crop batch (N, 10, 3, S, S)
    gets the exact region (and mirror) of each of its patches.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        value_scale: float = 1.0,
        *,
        lighting: float = 0.0,
        eigvals: Sequence[float] | torch.Tensor | None = None,
        eigvecs: Sequence[Sequence[float]] | torch.Tensor | None = None,
        mean_image: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.value_scale = float(value_scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.lighting = PCALighting(lighting, eigvals, eigvecs, value_scale) if lighting > 0 else None
        if mean_image is not None:
            mean_image = torch.as_tensor(mean_image, dtype=torch.float32)
            if mean_image.ndim != 3 or mean_image.shape[0] != 3 or mean_image.shape[1] != mean_image.shape[2]:
                raise ValueError(f"mean_image must be (3, R, R), got {tuple(mean_image.shape)}")
            mean_image = mean_image * self.value_scale
        self.register_buffer("mean_image", mean_image, persistent=False)

    def _mean_for(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean_image is None:
            return self.mean
        s = x.shape[-1]
        m = self.mean_image
        r = m.shape[-1]
        if s > r:
            raise ValueError(f"patches of {s} pixels are larger than the {r}-pixel mean image")
        if x.ndim == 5 and x.shape[1] == 10:  # ten-crop: tl, tr, bl, br, centre, then their mirrors
            return torch.stack(list(F.ten_crop(m, [s, s])))  # the same regions as `TenCrop`: (10, 3, S, S)
        return F.center_crop(m, [s, s])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (3, S, S), (N, 3, S, S) or (N, 10, 3, S, S) -> float32 of the same shape.

        One fused pass: ``x * (value_scale / 255 / std) - (mean - shift) / std``, the lighting shift folded into
        the per-image offset (the same arithmetic as scale, add shift, subtract mean, divide by std)."""
        check_uint8_batch(x, "the batch transform")
        std = self.std.to(x.device)
        offset = self._mean_for(x).to(x.device)  # (3, 1, 1), (3, S, S) or (10, 3, S, S)
        if self.lighting is not None and self.training:
            batch = x.shape[:-3]
            n = int(torch.tensor(batch).prod()) if batch else 1
            shift = self.lighting.shifts(n, x.device).view(*batch, 3, 1, 1)
            offset = offset - shift
        y = x.to(torch.float32)
        return y.mul_(self.value_scale / 255.0 / std).sub_(offset / std)
