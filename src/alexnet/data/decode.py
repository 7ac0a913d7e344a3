"""The one place that decodes images into RGB uint8 tensors of shape (3, H, W)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import AlexnetError

__all__ = ["BadImageError", "decode_image"]


class BadImageError(AlexnetError, ValueError):
    """A file that is missing, unreadable, corrupt, truncated or not an image. The message names the file."""


def decode_image(source: str | Path | bytes, *, min_size: int | None = None, name: str | None = None) -> torch.Tensor:
    """Decode ``source`` (a path or the file's bytes) to an RGB uint8 tensor (3, H, W).

    ``min_size``: the caller only needs the short side to be at least this many pixels, so the decoder may
    decode at a reduced scale (JPEG draft mode) to save time.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except FileNotFoundError:
        raise BadImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise BadImageError(f"{label}: is a directory, not an image") from None
    except OSError as e:
        raise BadImageError(f"{label}: cannot read ({e.strerror or e})") from None
    if not data:
        raise BadImageError(f"{label}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if min_size is not None and im.format == "JPEG":
                im.draft("RGB", (min_size, min_size))  # DCT-domain downscale, keeps short side >= min_size
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{label}: not a readable image ({e})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        a = np.asarray(im).astype(np.float64)
        peak = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))  # composite on white, as browsers show it
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")
