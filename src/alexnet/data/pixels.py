"""What a picture handed over from Python may be, and the check that turns it into the pipeline's one input type,
an RGB uint8 tensor (3, H, W) (or a batch (N, 3, H, W)): a PIL image, a NumPy (H, W, 3) uint8 array, a uint8
tensor, or a float tensor in [0, 1] (what torchvision's ``ToTensor`` and ``v2.ToDtype(scale=True)`` give).

Inputs are checked, never guessed (torchvision v2's ``ToDtype(scale=True)`` says what it scales): a float tensor
outside [0, 1] is most likely already normalised (or 0..255 values as floats), and normalising it again would
give confident nonsense, so it is refused with its numbers. A wrong channel count or dtype is refused with a
sentence that says what to do. `check_training_sample` applies the same rule to the first sample of a data set
handed to the training code, which takes uint8 (3, S, S) images and normalises them itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import AlexnetError
from .decode import decode_image, pil_to_rgb

__all__ = [
    "Picture",
    "ImageInputError",
    "ImageTypeError",
    "as_uint8_image",
    "check_training_sample",
    "check_uint8_batch",
    "describe_values",
    "load_pictures",
]

# One picture: a file's path, a PIL image, a NumPy (H, W, 3) uint8 array, or a tensor (3, H, W) of uint8 or of
# floats in [0, 1]. A sequence of them, or a (N, 3, H, W) tensor, is several.
Picture = str | Path | Image.Image | np.ndarray | torch.Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# PIL modes whose pixels have no agreed 8-bit scale (16-bit integers may span 0..255, 0..4095 or 0..65535;
# floats 0..1 or anything): refused rather than guessed
_DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageInputError(AlexnetError, ValueError):
    """A picture whose values or shape cannot be what the model was trained on; the message says why."""


class ImageTypeError(ImageInputError, TypeError):
    """A picture of a type or dtype the pipeline does not take; the message names the ones it takes."""


def describe_values(x: torch.Tensor) -> str:
    """``min -2.118, max 2.640, mean 0.013``: the numbers a refusal shows."""
    f = x.detach().float()
    return f"min {f.min().item():.3f}, max {f.max().item():.3f}, mean {f.mean().item():.3f}"


def as_uint8_image(img: Any, *, batch: bool = True, what: str = "image") -> torch.Tensor:
    """``img`` as RGB uint8 (3, H, W), or (N, 3, H, W) when ``batch`` allows a 4-d tensor; `ImageInputError`
    (a ValueError) or `ImageTypeError` (a TypeError) with a sentence otherwise.

    A float tensor in [0, 1] becomes ``round(x * 255)``: exactly the uint8 image that ``ToTensor`` divided by
    255, so every form of the same picture gives the same tensor. PIL images in another mode are converted to RGB
    as a file of that image is decoded (grayscale repeated, palette looked up, CMYK converted, transparency
    composited on white); 16-bit and float PIL modes are refused (their 8-bit scale would be a guess).
    """
    if isinstance(img, Image.Image):
        return _from_pil(img, what)
    if isinstance(img, np.ndarray):
        return _from_numpy(img, what)
    if not isinstance(img, torch.Tensor):
        raise ImageTypeError(
            f"{what}: a {type(img).__name__} is not a picture; pass a PIL image, a NumPy (H, W, 3) uint8 array, "
            "a uint8 tensor (3, H, W) or a float tensor in [0, 1]"
        )
    _check_shape(img, batch, what)
    if img.dtype == torch.uint8:
        return img
    if img.dtype not in FLOAT_DTYPES:
        raise ImageTypeError(
            f"{what}: {str(img.dtype).removeprefix('torch.')} pixels are neither uint8 (0..255) nor float in [0, 1]; "
            "convert it with .to(torch.uint8) if its values are 0..255"
        )
    _check_unit_range(img, what)
    return img.float().mul(255.0).round_().to(torch.uint8)


def check_uint8_batch(x: torch.Tensor, what: str) -> None:
    """Refuse a batch that is not uint8 before it is normalised: a float batch is either normalised already or
    scaled otherwise, and the normaliser would treat it as 0..255 pixels. A dtype test only (no pass over the
    values, no device synchronisation), cheap enough for every training step."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        got = str(x.dtype).removeprefix("torch.") if isinstance(x, torch.Tensor) else type(x).__name__
        raise ImageTypeError(
            f"{what} takes uint8 images (0..255) and normalises them, got {got}: a float batch would be "
            "normalised twice; give the uint8 pictures, or call Preprocessing(img) on [0, 1] floats"
        )


def _check_shape(img: torch.Tensor, batch: bool, what: str) -> None:
    dims = "(3, H, W) or (N, 3, H, W)" if batch else "(3, H, W)"
    if img.ndim not in ((3, 4) if batch else (3,)):
        raise ImageInputError(f"{what}: expected a tensor of shape {dims}, got {tuple(img.shape)}")
    if img.shape[-3] != 3:
        hint = (
            "channels last? permute it to (3, H, W) with x.permute(2, 0, 1)"
            if img.shape[-1] == 3
            else "a grayscale image? repeat it with x.expand(3, -1, -1)"
            if img.shape[-3] == 1
            else "an alpha channel? drop it with x[:3] or composite it first"
            if img.shape[-3] == 4
            else "the model takes RGB"
        )
        raise ImageInputError(f"{what}: expected 3 channels (RGB) in {dims}, got shape {tuple(img.shape)}: {hint}")
    if img.numel() == 0:
        raise ImageInputError(f"{what}: has no pixels (shape {tuple(img.shape)})")


def _check_unit_range(img: torch.Tensor, what: str) -> None:
    """Refuse a float image with values outside [0, 1], naming what it most likely is."""
    lo, hi = img.amin().item(), img.amax().item()
    if lo != lo or hi != hi:  # NaN
        raise ImageInputError(f"{what}: float pixels hold NaN")
    if lo >= 0.0 and hi <= 1.0:
        return
    numbers = describe_values(img)
    if lo < 0.0:
        raise ImageInputError(
            f"{what}: float pixels must lie in [0, 1] (ToTensor, ToDtype(scale=True)); got {numbers}: already "
            "normalised? pass the picture before Normalize: alexnet normalises with the weights' own mean and std"
        )
    raise ImageInputError(
        f"{what}: float pixels must lie in [0, 1] (ToTensor, ToDtype(scale=True)); got {numbers}: 0..255 values "
        "as floats? divide by 255, or pass a uint8 tensor"
    )


def _from_numpy(arr: np.ndarray, what: str) -> torch.Tensor:
    if arr.dtype != np.uint8:
        raise ImageTypeError(
            f"{what}: a NumPy array of {arr.dtype} pixels; NumPy images must be uint8 (H, W, 3) (as PIL and OpenCV "
            "give them), float pictures a torch tensor in [0, 1]"
        )
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        hint = " (a grayscale image? use np.stack([a] * 3, axis=-1))" if arr.ndim == 2 else ""
        raise ImageInputError(f"{what}: expected a NumPy array of shape (H, W, 3) RGB, got {arr.shape}{hint}")
    return torch.from_numpy(np.ascontiguousarray(arr).copy()).permute(2, 0, 1)  # channels-last, as decode_image


def _from_pil(im: Image.Image, what: str) -> torch.Tensor:
    if im.mode in _DEEP_MODES:
        raise ImageInputError(
            f"{what}: a PIL image in mode {im.mode!r} (16-bit or float pixels) has no agreed 8-bit scale; convert "
            "it to 8-bit RGB yourself, or pass its file's path (the decoder scales it by its peak)"
        )
    arr = np.asarray(pil_to_rgb(im), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def check_training_sample(sample: Any, source: str) -> None:
    """Refuse a data set whose first sample is not what the training code normalises: an RGB uint8 tensor
    (3, S, S) with 0..255 values. An already normalised float image (a ``Normalize`` in its transform), a float
    image in [0, 1] or a uint8 image whose values stop at 1 would train on the wrong inputs without a word."""
    image = sample[0] if isinstance(sample, (tuple, list)) and sample else sample
    what = f"{source}: the first sample"
    if isinstance(image, Image.Image):
        raise ImageTypeError(
            f"{what} is a PIL image; the training code takes uint8 tensors (3, S, S): end the data set's transform "
            "with v2.PILToTensor(), or leave transform None for the run's own"
        )
    if not isinstance(image, torch.Tensor):
        raise ImageTypeError(f"{what} is a {type(image).__name__}, not a uint8 image tensor (3, S, S)")
    _check_shape(image, False, what)
    if image.dtype in FLOAT_DTYPES:
        kind = "already normalised (a Normalize in its transform?)" if image.amin().item() < 0 else "floats"
        raise ImageInputError(
            f"{what} is {kind}: {describe_values(image)}; the training code takes uint8 (3, S, S) images with "
            "0..255 values and normalises them with the run's mean and std: drop Normalize and ToDtype/ToTensor "
            "from the data set's transform (v2.PILToTensor() gives uint8)"
        )
    if image.dtype != torch.uint8:
        raise ImageTypeError(f"{what} holds {str(image.dtype).removeprefix('torch.')} pixels, not uint8 (0..255)")
    if image.amax().item() == 1:  # all zeros may be a black picture; a peak of exactly 1 is no photo
        raise ImageInputError(
            f"{what} is uint8 with values in 0..1: a [0, 1] image cast to uint8? the training code takes 0..255 pixels"
        )


def load_pictures(images: Picture | Sequence[Picture], min_size: int | None = None) -> list[torch.Tensor]:
    """Each picture of ``images`` (one `Picture`, a sequence of them, or a (N, 3, H, W) tensor) as RGB uint8
    (3, H, W), checked by `as_uint8_image`; a path is decoded (`decode_image`: a JPEG at least twice ``min_size``
    is decoded smaller in the DCT domain). The top-level ``alexnet.classify`` and ``alexnet.features`` take these."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(as_uint8_image(images, what="images").unbind(0))
    one = isinstance(images, (str, Path, Image.Image, np.ndarray, torch.Tensor))
    items: list[Any] = [images] if one else list(images)  # type: ignore[arg-type]
    out = []
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            out.append(decode_image(item, min_size=min_size))
        else:
            out.append(as_uint8_image(item, batch=False, what="image" if one else f"image {i}"))
    if not out:
        raise ImageInputError("no images given")
    return out
