"""What a predict request carries, checked before anything costly: its images read from a multipart or raw body
within a byte limit that holds while the body streams in, image headers checked against a pixel limit before
decoding, and the decoded image prepared as predict prepares it. A client's mistake is an `ApiError` (a 4xx).
Needs the ``[serve]`` extra, as `alexnet.serve` does.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .errors import AlexnetError, one_line

try:
    from fastapi import Request
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.requests import ClientDisconnect
except ImportError as e:  # pragma: no cover - alexnet.serve names the extra first
    raise AlexnetError(
        f"alexnet serve needs the [serve] extra ({e.name} is not installed): pip install 'alexnet[serve]'"
    ) from None

from PIL import Image

from .data.decode import decode_image
from .predict import prepare_image
from .preprocessing import Preprocessing

__all__ = [
    "IMAGE_FIELD",
    "MAX_BOUNDARY",
    "ApiError",
    "PixelBudget",
    "Upload",
    "clean_message",
    "image_size",
    "pixel_cost",
    "prepare_upload",
    "read_images",
]

IMAGE_FIELD = "image"  # the multipart field name of an image; repeat it to send several
MAX_BOUNDARY = 256  # longest multipart boundary python-multipart accepts (RFC 2046: 70)


def clean_message(text: str) -> str:
    """An error text fit for a client: one line of at most 300 characters, no Python object repr
    (`alexnet.errors.one_line`)."""
    return one_line(text, what="the image")


class ApiError(Exception):
    """A client error: becomes ``{"error": {"status": status, "message": message}}`` with that status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = clean_message(message)
        self.headers = headers or {}


# --- request bodies -----------------------------------------------------------------------------------------------
@dataclass
class Upload:
    """One image of a request, as received: the name it was sent under and its bytes."""

    filename: str
    data: bytearray = field(default_factory=bytearray)


class _MultipartImages:
    """Streams a multipart/form-data body into a list of image uploads, refusing extra images as they start."""

    def __init__(self, boundary: bytes, max_images: int) -> None:
        self.images: list[Upload] = []
        self.finished = False
        self._max_images = max_images
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._current: Upload | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_end": self._on_end,
            },
        )

    def write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as e:
            raise ApiError(400, f"malformed multipart body ({clean_message(str(e))})") from None

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._current = None

    def _on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name != IMAGE_FIELD:
            raise ApiError(
                400,
                f"unexpected form field {name!r}: send each image as a file in field {IMAGE_FIELD!r} "
                "(topk and ten_crop are query parameters)",
            )
        if len(self.images) >= self._max_images:
            raise ApiError(413, f"more than {self._max_images} images in one request (--max-images)")
        filename = params.get(b"filename", b"").decode("utf-8", "replace") or f"image {len(self.images) + 1}"
        self._current = Upload(filename)
        self.images.append(self._current)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current.data.extend(data[start:end])

    def _on_end(self) -> None:
        self.finished = True


async def read_images(request: Request, max_bytes: int, max_images: int) -> list[Upload]:
    """The images of a predict request: multipart field ``image`` (repeatable) or a raw ``image/*`` body.

    The size limit holds while reading: a declared Content-Length over it is refused before any byte is read, and
    a body that streams past it is refused at the chunk that crosses it (uvicorn then discards the rest).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, f"invalid Content-Length {declared!r}") from None
        if length > max_bytes:
            raise ApiError(413, f"request body of {length} bytes is over the limit of {max_bytes} (--max-bytes)")
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    ctype = ctype.decode("latin-1").lower()
    multipart: _MultipartImages | None = None
    raw: Upload | None = None
    if ctype == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, "multipart/form-data without a boundary")
        if len(boundary) > MAX_BOUNDARY:
            raise ApiError(
                400,
                f"multipart boundary of {len(boundary)} characters is over the limit of {MAX_BOUNDARY} "
                "(RFC 2046 allows 70): send a shorter boundary",
            )
        try:
            multipart = _MultipartImages(boundary, max_images)
        except FormParserError as e:  # python-multipart's own checks of the boundary
            raise ApiError(400, f"bad multipart boundary ({clean_message(str(e))})") from None
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        raw = Upload("<request body>")
    elif ctype:
        raise _unsupported(ctype)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise ApiError(413, f"request body is over the limit of {max_bytes} bytes (--max-bytes)")
            if multipart is not None:
                multipart.write(chunk)
            elif raw is not None:
                raw.data.extend(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client disconnected before the body was complete") from None
    if received == 0:
        raise ApiError(400, f"empty request body: send an image in multipart field {IMAGE_FIELD!r}")
    if raw is not None:
        return [raw]
    if multipart is None:
        raise _unsupported("(none)")
    if not multipart.finished:
        raise ApiError(400, "incomplete multipart body (no closing boundary)")
    if not multipart.images:
        raise ApiError(400, f"no image in the request: send a file in multipart field {IMAGE_FIELD!r}")
    return multipart.images


def _unsupported(ctype: str) -> ApiError:
    return ApiError(
        415,
        f"unsupported Content-Type {ctype!r}: send multipart/form-data with field {IMAGE_FIELD!r}, or an image/* body",
    )


# --- decoding and prediction --------------------------------------------------------------------------------------
def image_size(data: bytes, min_size: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((width, height) as stored, (width, height) as it will be decoded) from the header alone, or None when
    Pillow cannot read it (`decode_image` then names the problem). JPEGs decode downscaled by up to 8x (draft mode)
    while keeping the short side >= ``min_size``, as `decode_image` does."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            stored = im.size
            if im.format == "JPEG":
                im.draft("RGB", (min_size, min_size))
            return stored, im.size
    except Image.DecompressionBombError:
        raise  # so large that Pillow refuses to open it: the caller's 413
    except Exception:  # anything unreadable is decode_image's to report
        return None


def pixel_cost(upload: Upload, preprocessing: Preprocessing, max_pixels: int) -> int:
    """The pixels decoding and resizing ``upload`` will hold, from its header alone (a 413 `ApiError` when one
    image is over ``max_pixels``); an image whose header Pillow cannot read counts as ``max_pixels``."""
    try:
        sizes = image_size(bytes(upload.data[:_HEADER_BYTES]), preprocessing.resize_size)
        if sizes is None and len(upload.data) > _HEADER_BYTES:
            sizes = image_size(bytes(upload.data), preprocessing.resize_size)
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"{upload.filename}: too many pixels to decode ({e}) (--max-pixels)") from None
    if sizes is None:
        return max_pixels
    width, height = sizes[1]
    _check_pixels(upload.filename, width, height, preprocessing.resize_size, max_pixels)
    return int(max(width * height, _resized_pixels(width, height, preprocessing.resize_size)))


_HEADER_BYTES = 65536  # enough for the size of a PNG, GIF, BMP or WebP, and of most JPEGs


class PixelBudget:
    """The decoded pixels of the requests being decoded now, against a server-wide ``capacity``: a request
    that would take the total over it is answered 503 with Retry-After at once, before anything is decoded, so
    concurrent clients cannot add up what one request may not take (8 PNGs of 7000x7000, 0.4 MB sent, would
    hold 3 GB decoded). Used from the event loop only, so it needs no lock."""

    def __init__(self, capacity: int, retry_after_s: int = 1, trim_after: int = 20_000_000) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.retry_after_s = retry_after_s
        self.trim_after = trim_after  # decoded pixels (about 60 MB) after which idle memory is given back
        self.since_trim = 0
        self.active = 0  # requests between their first byte read and their answer

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Count a request as active for the block (its decoded images alive)."""
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def burst_over(self) -> bool:
        """True once per burst: no request is active now, and at least ``trim_after`` pixels were decoded since
        the last time this said True. The server then gives freed memory back (`release_free_memory`)."""
        if self.active or self.since_trim < self.trim_after:
            return False
        self.since_trim = 0
        return True

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Reserve ``pixels`` for the block, or raise the 503 `ApiError`."""
        if self.in_use + pixels > self.capacity:
            raise ApiError(
                503,
                f"the server is decoding {self.in_use / 1e6:.0f} megapixels for other requests; this one needs "
                f"{pixels / 1e6:.0f} more, over --max-inflight-pixels ({self.capacity / 1e6:g}): retry shortly",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.in_use += pixels
        self.since_trim += pixels
        try:
            yield
        finally:
            self.in_use -= pixels


def prepare_upload(
    upload: Upload, preprocessing: Preprocessing, *, ten_crop: bool, max_pixels: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Bytes -> (model input (1 or 10, 3, S, S) float, (width, height) as stored). Runs in the thread pool."""
    data = bytes(upload.data)
    try:
        sizes = image_size(data, preprocessing.resize_size)
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"{upload.filename}: too many pixels to decode ({e}) (--max-pixels)") from None
    if sizes is not None:  # refuse before decoding when the header tells enough
        _check_pixels(upload.filename, *sizes[1], preprocessing.resize_size, max_pixels)
    img = decode_image(data, min_size=preprocessing.resize_size, name=upload.filename)  # (3, H, W) uint8
    _check_pixels(upload.filename, img.shape[2], img.shape[1], preprocessing.resize_size, max_pixels)
    if sizes is None:
        sizes = ((img.shape[2], img.shape[1]), (img.shape[2], img.shape[1]))
    x = prepare_image(img, preprocessing, ten_crop=ten_crop)  # predict's: (3, S, S), or (10, 3, S, S)
    if not ten_crop:
        x = x.unsqueeze(0)
    return x, sizes[0]


def _check_pixels(name: str, width: int, height: int, resize_size: int, max_pixels: int) -> None:
    """Refuse an image whose decoding, or whose resize to a short side of ``resize_size``, would take more than
    ``max_pixels``: a 1 x 100000 strip is small to send but huge once its short side is scaled up."""
    resized = _resized_pixels(width, height, resize_size)
    if width * height > max_pixels or resized > max_pixels:
        raise ApiError(
            413,
            f"{name}: a {width}x{height} image needs {max(width * height, resized) / 1e6:.1f} megapixels to "
            f"decode and resize, over the limit of {max_pixels / 1e6:g} (--max-pixels)",
        )


def _resized_pixels(width: int, height: int, resize_size: int) -> float:
    return width * height * (resize_size / max(1, min(width, height))) ** 2
