"""The one place that decodes images into RGB uint8 tensors of shape (3, H, W).

Plain RGB and grayscale JPEGs go through simplejpeg's libjpeg-turbo straight into a numpy array, with the GIL
released (no torchvision import: a command that only classifies starts faster), at 1/2, 1/4 or 1/8 scale in the
DCT domain when the caller needs no more than that (``min_size``), the scales and pixels of Pillow's ``draft``
mode. Without simplejpeg, and for every other JPEG and format, Pillow decodes. EXIF orientation is applied, and CMYK,
grayscale, palette, alpha and 16-bit images become RGB. Anything unreadable raises `BadImageError`, whose one-line
message names the file, so that datasets can skip and count it.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import AlexnetError, one_line

try:  # libjpeg-turbo into numpy with the GIL released: half the time of Pillow's decode and copy, bit for bit
    import simplejpeg
except ImportError:  # a platform without its wheels: Pillow decodes every JPEG, same pixels
    simplejpeg = None

__all__ = [
    "MAX_FILE_BYTES",
    "BadImageError",
    "decode_image",
    "draft_scale",
    "jpeg_header",
    "pil_to_rgb",
    "read_bytes",
]

# The largest image file read: a bound on what one file may cost (a link to /dev/zero or a huge file named .jpg
# must not fill the memory). Far above any photo; a 16-bit 64-megapixel TIFF is 384 MB, so this may be raised.
MAX_FILE_BYTES = 512 * 1024 * 1024
_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112


class BadImageError(AlexnetError, ValueError):
    """A file that is missing, unreadable, corrupt, truncated or not an image. The message names the file."""


def read_bytes(source: str | Path, label: str | None = None, *, max_bytes: int | None = None) -> bytes:
    """The file's bytes, or `BadImageError` naming it: missing, a directory, not a regular file (a FIFO, a
    device such as /dev/zero: never read, so nothing hangs or fills the memory), larger than ``max_bytes``
    (default `MAX_FILE_BYTES`), unreadable or empty."""
    label = label or str(source)
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BadImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise BadImageError(f"{label}: is a directory, not an image") from None
    except OSError as e:
        raise BadImageError(f"{label}: cannot read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadImageError(f"{label}: is a directory, not an image")
        if not stat.S_ISREG(st.st_mode):
            raise BadImageError(f"{label}: not a regular file (a FIFO, socket or device)")
        if st.st_size > limit:
            raise BadImageError(f"{label}: {st.st_size:,} bytes, more than the {limit:,} an image file may have")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise BadImageError(f"{label}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while read
        raise BadImageError(f"{label}: more than the {limit:,} bytes an image file may have")
    if not data:
        raise BadImageError(f"{label}: empty file")
    return data


def decode_image(source: str | Path | bytes, *, min_size: int | None = None, name: str | None = None) -> torch.Tensor:
    """Decode ``source`` (a path or the file's bytes) to an RGB uint8 tensor (3, H, W).

    The tensor is a (3, H, W) view of H x W x 3 memory (channels last), as decoders write pixels: copying it to
    (3, H, W) memory would cost more than the resize that follows (torch's uint8 resize reads channels-last
    memory natively), so callers that need a layout ask for it (``.contiguous()``).

    ``min_size``: the caller only needs the short side to be at least this many pixels (the paper resizes the
    short side to 256, section 2), so a JPEG at least twice that size is decoded at 1/2, 1/4 or 1/8 scale in the
    DCT domain, which skips most of the inverse DCT and colour conversion work.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    data = source if isinstance(source, bytes) else read_bytes(source, label)
    if not data:
        raise BadImageError(f"{label}: empty file")
    if data[:3] == _JPEG_MAGIC:  # the common case, without Pillow's header parse (a tenth of the decode's time)
        head = jpeg_header(data)
        if head is not None:
            w, h, components, orientation = head
            _check_jpeg_length(data, w, h, label)
            limit = Image.MAX_IMAGE_PIXELS
            if components in (1, 3) and (limit is None or w * h <= limit):
                fast = _decode_jpeg_fast(data, (w, h), orientation, min_size)
                if fast is not None:
                    return fast
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                if min_size is not None and im.format == "JPEG":
                    im.draft("RGB" if im.mode != "CMYK" else None, (min_size, min_size))
                im.load()  # raises on truncated data (Pillow does not load truncated images by default)
                im = ImageOps.exif_transpose(im)
                arr = np.asarray(_to_rgb(im), dtype=np.uint8)
    except BadImageError:
        raise
    except UnidentifiedImageError:  # Pillow's message names its BytesIO object, nothing a reader can use
        raise BadImageError(f"{label}: not a readable image (no image format recognised in its bytes)") from None
    except (OSError, SyntaxError, ValueError, RuntimeError, EOFError) as e:
        raise BadImageError(f"{label}: not a readable image ({one_line(e, what='the image')})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(f"{label}: too many pixels ({one_line(e, what='the image')})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # writable, for torch; channels-last memory as above


def jpeg_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, EXIF orientation) read from a JPEG's header segments, or None when anything is
    unusual (not 8-bit, lossless or arithmetic coding, a malformed segment or EXIF block): the caller then asks
    Pillow, which words any error. Reads the segments up to the first scan only."""
    n, pos = len(data), 2
    if data[:2] != b"\xff\xd8":
        return None
    frame: tuple[int, int, int] | None = None
    orientation = 1
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > n:
            return None
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xDA:  # start of scan: the header is over
            return (*frame, orientation) if frame is not None else None
        if marker in (0xC0, 0xC1, 0xC2):  # baseline, extended and progressive Huffman frames
            if len(segment) < 6 or segment[0] != 8 or frame is not None:
                return None
            h, w = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
            if h == 0 or w == 0:
                return None
            frame = (w, h, segment[5])
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # lossless, hierarchical or arithmetic-coded frames
        elif marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            found = _exif_orientation(segment[6:])
            if found is None:
                return None
            orientation = found
        pos += 2 + length
    return None


def _check_jpeg_length(data: bytes, w: int, h: int, label: str) -> None:
    """Refuse a JPEG too short for the size its header claims. Every 8x8 luma block costs at least one bit of
    entropy-coded data (a baseline block codes its DC difference and an end-of-block; a progressive set codes
    every block's DC in its first scan), so fewer bits than blocks means data is missing: libjpeg would fill the
    rest with grey and only warn on stderr ("premature end of data segment"), and a model would learn from it."""
    blocks = -(-w // 8) * -(-h // 8)
    if len(data) * 8 < blocks:
        raise BadImageError(
            f"{label}: corrupt JPEG (its header says {w}x{h}, which needs more than the {len(data):,} bytes the "
            "file holds: premature end of data)"
        )


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag (0x0112) of IFD0 of an EXIF block (1 when absent), or None when the block is malformed."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None
    for k in range(int.from_bytes(tiff[ifd : ifd + 2], order)):
        p = ifd + 2 + 12 * k
        if p + 12 > len(tiff):
            return None
        if int.from_bytes(tiff[p : p + 2], order) == _EXIF_ORIENTATION:
            if int.from_bytes(tiff[p + 2 : p + 4], order) != 3:  # SHORT
                return None
            return int.from_bytes(tiff[p + 8 : p + 10], order)
    return 1


def _decode_jpeg_fast(
    data: bytes, size: tuple[int, int], orientation: int, min_size: int | None
) -> torch.Tensor | None:
    """A plain RGB or grayscale JPEG (its header read by `jpeg_header`) through simplejpeg's libjpeg-turbo (or
    Pillow's), at 1/2, 1/4 or 1/8 scale in the DCT domain when ``min_size`` allows (``draft``), without the EXIF
    and mode handling of the general path (the header gave the orientation). Bit for bit the pixels of torchvision's
    ``decode_jpeg`` (tested), without importing torchvision. None when the data does not decode: the general path
    then words the error."""
    arr = _simplejpeg(data, *size, min_size) if simplejpeg is not None else None
    if arr is None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                if min_size is not None:
                    im.draft("RGB", (min_size, min_size))
                im.load()
                arr = np.array(im if im.mode == "RGB" else im.convert("RGB"))  # writable, for torch
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            return None
    img = torch.from_numpy(arr).permute(2, 0, 1)  # a view of the decoder's H x W x 3 buffer: no copy
    return _orient(img, orientation) if orientation != 1 else img


def draft_scale(w: int, h: int, min_size: int | None) -> int:
    """The DCT-domain scale divisor (1, 2, 4 or 8) that Pillow's ``draft`` mode picks for a ``w`` x ``h`` JPEG whose
    short side must stay at least ``min_size``: the decoded image is ``ceil(w / s)`` x ``ceil(h / s)``."""
    if not min_size:
        return 1
    scale = min(w // min_size, h // min_size)
    return next((s for s in (8, 4, 2) if scale >= s), 1)  # 1 too for an image smaller than min_size


def _simplejpeg(data: bytes, w: int, h: int, min_size: int | None) -> np.ndarray | None:
    """(H, W, 3) uint8 by simplejpeg at Pillow's draft scale, or None (Pillow then decodes, or words the error).
    ``strict``: a JPEG libjpeg only warns about goes to Pillow, which decides as it always has."""
    try:
        s = draft_scale(w, h, min_size)
        want = (-(-h // s), -(-w // s))
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=want[0], min_width=want[1], strict=True)
    except (ValueError, OSError):
        return None
    return arr if arr.shape[:2] == want else None  # a scale Pillow would not pick: let Pillow decode


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


def pil_to_rgb(im: Image.Image) -> Image.Image:
    """An opened PIL image as RGB, converted exactly as `decode_image` converts a file of it (the Python API's
    PIL inputs, `alexnet.data.pixels`)."""
    return _to_rgb(im)
