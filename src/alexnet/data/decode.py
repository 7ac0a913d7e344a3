"""The one place that decodes images into RGB uint8 tensors of shape (3, H, W).

JPEGs go through libjpeg-turbo: torchvision's ``decode_jpeg`` at full scale, or Pillow's ``draft`` mode, which
makes libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale in the DCT domain, when the caller needs no more than that
(``min_size``). Other formats go through Pillow. EXIF orientation is applied, and CMYK, grayscale, palette,
alpha and 16-bit images become RGB. Anything unreadable raises `BadImageError`, whose one-line message names
the file, so that datasets can skip and count it.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import AlexnetError

__all__ = ["BadImageError", "decode_image", "read_bytes"]

_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112


class BadImageError(AlexnetError, ValueError):
    """A file that is missing, unreadable, corrupt, truncated or not an image. The message names the file."""


def read_bytes(source: str | Path, label: str | None = None) -> bytes:
    """The file's bytes, or `BadImageError` naming it (missing, a directory, unreadable, empty)."""
    label = label or str(source)
    try:
        data = Path(source).read_bytes()
    except FileNotFoundError:
        raise BadImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise BadImageError(f"{label}: is a directory, not an image") from None
    except OSError as e:
        raise BadImageError(f"{label}: cannot read ({e.strerror or e})") from None
    if not data:
        raise BadImageError(f"{label}: empty file")
    return data


def decode_image(source: str | Path | bytes, *, min_size: int | None = None, name: str | None = None) -> torch.Tensor:
    """Decode ``source`` (a path or the file's bytes) to an RGB uint8 tensor (3, H, W).

    ``min_size``: the caller only needs the short side to be at least this many pixels (the paper resizes the
    short side to 256, section 2), so a JPEG at least twice that size is decoded at 1/2, 1/4 or 1/8 scale in the
    DCT domain, which skips most of the inverse DCT and colour conversion work.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    data = source if isinstance(source, bytes) else read_bytes(source, label)
    if not data:
        raise BadImageError(f"{label}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                if data[:3] == _JPEG_MAGIC and im.mode in ("RGB", "L"):
                    fast = _decode_jpeg_fast(im, data, min_size)
                    if fast is not None:
                        return fast
                if min_size is not None and im.format == "JPEG":
                    im.draft("RGB" if im.mode != "CMYK" else None, (min_size, min_size))
                im.load()  # raises on truncated data (Pillow does not load truncated images by default)
                im = ImageOps.exif_transpose(im)
                arr = np.asarray(_to_rgb(im), dtype=np.uint8)
    except BadImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError, EOFError) as e:
        raise BadImageError(f"{label}: not a readable image ({_one_line(e)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(f"{label}: too many pixels ({_one_line(e)})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _decode_jpeg_fast(im: Image.Image, data: bytes, min_size: int | None) -> torch.Tensor | None:
    """A plain RGB or grayscale JPEG through libjpeg-turbo without Pillow's copies; None for Pillow's path
    (a DCT-domain downscale is possible, which Pillow's ``draft`` exposes and torchvision does not)."""
    w, h = im.size
    if min_size is not None and min(w, h) >= 2 * min_size:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
            from torchvision.io import ImageReadMode, decode_jpeg

            img = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (ImportError, RuntimeError):
        return None  # no torchvision decoder, or a bad file: Pillow decides and words the error
    orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    return _orient(img, orientation) if orientation not in (1, None) else img


def _orient(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (2..8) to a (3, H, W) tensor, as `PIL.ImageOps.exif_transpose` does."""
    ops = {
        2: lambda x: x.flip(-1),
        3: lambda x: x.flip(-1).flip(-2),
        4: lambda x: x.flip(-2),
        5: lambda x: x.transpose(-1, -2),
        6: lambda x: x.transpose(-1, -2).flip(-1),
        7: lambda x: x.transpose(-1, -2).flip(-1).flip(-2),
        8: lambda x: x.transpose(-1, -2).flip(-2),
    }
    op = ops.get(int(orientation))
    return op(img).contiguous() if op else img


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: 16-bit and float scaled to 8 bits, transparency composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        a = np.asarray(im).astype(np.float64)
        peak = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))  # composite on white, as browsers show it
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")
