"""`alexnet serve`: an HTTP API and a web page that classify images with one loaded model.

Why it is built this way:

- Requests from concurrent clients are batched (`Batcher`): the first request of a batch waits a few
  milliseconds for company, then one forward pass serves them all, so throughput grows with load instead of
  every client paying for its own small forward pass. Inference runs in one dedicated thread and decoding in the
  thread pool, so the event loop only moves bytes.
- Bad input is the client's fault, so it gets a 4xx with a JSON body ``{"error": {"status", "message"}}``, never a
  500: the body size is checked while it streams in (a client cannot make the server buffer more than
  ``max_bytes``), multipart parts are counted as they arrive, and image headers are checked before decoding
  (JPEGs are decoded downscaled, so a 20-megapixel photo costs little).
- The web page (``static/``) is plain HTML/CSS/JS served from this package: no CDN, and its Content-Security-Policy
  forbids anything else. FastAPI's /docs pages load from a CDN, so they are off; ``/openapi.json`` stays.

Needs the ``[serve]`` extra (FastAPI, uvicorn, python-multipart); importing this module without it raises a
one-line `AlexnetError` naming ``pip install 'alexnet[serve]'``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import AlexnetError

try:
    import uvicorn
    from fastapi import FastAPI, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, Field
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise AlexnetError(
        f"alexnet serve needs the [serve] extra ({e.name} is not installed): pip install 'alexnet[serve]'"
    ) from None

from PIL import Image

from .data.decode import BadImageError, decode_image
from .models import count_parameters
from .predict import prepare_image, resolve_device
from .weights import Preprocessing, load_model

__all__ = ["ServeOptions", "Batcher", "create_app", "serve"]

log = logging.getLogger("alexnet.serve")
STATIC_DIR = Path(__file__).with_name("static")
IMAGE_FIELD = "image"  # the multipart field name of an image; repeat it to send several
# The page may load only what this server serves; images are shown from blob: URLs of the chosen file.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@dataclass
class ServeOptions:
    """Limits and batching of one server; every field is a command-line flag of ``alexnet serve``."""

    max_bytes: int = 20_000_000  # largest request body (bytes), enforced while the body streams in
    max_images: int = 16  # images in one request
    max_pixels: int = 50_000_000  # pixels one image may have after JPEG draft downscaling (PNG etc.: as stored)
    max_batch: int = 64  # rows in one forward pass (an image is 1 row, or 10 under ten_crop)
    batch_window_ms: float = 5.0  # how long a batch waits for more requests once its first one arrived
    device: str = "auto"  # "auto": cuda when available, else cpu

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_images", "max_pixels", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {self.batch_window_ms}")


class ApiError(Exception):
    """A client error: becomes ``{"error": {"status": status, "message": message}}`` with that status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- batching -----------------------------------------------------------------------------------------------------
@dataclass
class _Job:
    x: torch.Tensor  # (rows, 3, S, S) float
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the batcher did so far: tests and operators read it to see that batching happens."""

    batches: int = 0  # forward passes run
    rows: int = 0  # rows (images or crops) through the model
    jobs: int = 0  # requests served
    largest_batch: int = 0  # most rows in one forward pass
    busy_seconds: float = 0.0  # time spent in forward passes

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "rows": self.rows,
            "requests": self.jobs,
            "largest_batch": self.largest_batch,
            "mean_batch": round(self.rows / self.batches, 3) if self.batches else 0.0,
            "busy_seconds": round(self.busy_seconds, 4),
        }


class Batcher:
    """Gathers the rows of concurrent requests into one forward pass.

    A request submits its rows and awaits its share of the output. The worker takes the first waiting job, lets
    ``window_s`` pass so that other clients' jobs can join (skipped when the queue already fills a batch), and runs
    ``forward`` on the concatenation in its single inference thread, away from the event loop. While one batch runs,
    the next one queues up, so under load batches grow by themselves. A job with more rows than ``max_batch`` runs
    alone rather than being split.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], *, max_batch: int, window_s: float) -> None:
        self._forward = forward
        self._max_batch = max_batch
        self._window_s = window_s
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexnet-infer")
        self.stats = BatchStats()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="alexnet-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        """Whether the worker is alive to take requests (for /healthz)."""
        return self._task is not None and not self._task.done()

    async def run_in_inference_thread(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the inference thread (e.g. a warm-up pass), in order with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def submit(self, x: torch.Tensor) -> torch.Tensor:
        """Queue ``x`` (rows, ...) and return ``forward``'s output for those rows."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(x, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        carry: _Job | None = None
        while True:
            jobs = [carry if carry is not None else await self._queue.get()]
            carry = self._collect(jobs)
            if carry is None and self._rows(jobs) < self._max_batch and self._window_s > 0:
                await asyncio.sleep(self._window_s)
                carry = self._collect(jobs)
            jobs = [j for j in jobs if not j.future.done()]  # clients that went away
            if jobs:
                await self._run_batch(jobs)

    def _collect(self, jobs: list[_Job]) -> _Job | None:
        """Move waiting jobs into ``jobs`` up to max_batch rows; return the first one that did not fit."""
        assert self._queue is not None
        rows = self._rows(jobs)
        while rows < self._max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
            if rows + job.x.shape[0] > self._max_batch:
                return job
            jobs.append(job)
            rows += job.x.shape[0]
        return None

    @staticmethod
    def _rows(jobs: list[_Job]) -> int:
        return sum(j.x.shape[0] for j in jobs)

    async def _run_batch(self, jobs: list[_Job]) -> None:
        x = torch.cat([j.x for j in jobs]) if len(jobs) > 1 else jobs[0].x
        t0 = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self._forward, x)
        except Exception as e:  # a failed pass fails its requests, never the worker
            log.exception("inference failed on a batch of %d rows", x.shape[0])
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        s = self.stats
        s.batches += 1
        s.rows += x.shape[0]
        s.jobs += len(jobs)
        s.largest_batch = max(s.largest_batch, x.shape[0])
        s.busy_seconds += time.perf_counter() - t0
        start = 0
        for j in jobs:
            n = j.x.shape[0]
            if not j.future.done():
                j.future.set_result(out[start : start + n])
            start += n


# --- request bodies -----------------------------------------------------------------------------------------------
@dataclass
class _Upload:
    filename: str
    data: bytearray = field(default_factory=bytearray)


class _MultipartImages:
    """Streams a multipart/form-data body into a list of image uploads, refusing extra images as they start."""

    def __init__(self, boundary: bytes, max_images: int) -> None:
        self.images: list[_Upload] = []
        self.finished = False
        self._max_images = max_images
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._current: _Upload | None = None
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
        except MultipartParseError as e:
            raise ApiError(400, f"malformed multipart body ({e})") from None

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
        self._current = _Upload(filename)
        self.images.append(self._current)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current.data.extend(data[start:end])

    def _on_end(self) -> None:
        self.finished = True


async def read_images(request: Request, max_bytes: int, max_images: int) -> list[_Upload]:
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
    raw: _Upload | None = None
    if ctype == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, "multipart/form-data without a boundary")
        multipart = _MultipartImages(boundary, max_images)
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        raw = _Upload("<request body>")
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


def prepare_upload(upload: _Upload, preprocessing: Preprocessing, *, ten_crop: bool, max_pixels: int):
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
    resized = width * height * (resize_size / max(1, min(width, height))) ** 2
    if width * height > max_pixels or resized > max_pixels:
        raise ApiError(
            413,
            f"{name}: a {width}x{height} image needs {max(width * height, resized) / 1e6:.1f} megapixels to "
            f"decode and resize, over the limit of {max_pixels / 1e6:g} (--max-pixels)",
        )


class Prediction(BaseModel):
    index: int = Field(description="class index (fc8 output)")
    label: str = Field(description="class name, or the index when the weights carry no names")
    probability: float = Field(description="softmax probability (averaged over the 10 crops under ten_crop)")


class ImageResult(BaseModel):
    filename: str
    width: int = Field(description="width of the image as sent")
    height: int = Field(description="height of the image as sent")
    predictions: list[Prediction] = Field(description="top-k classes, most probable first")


class PredictResponse(BaseModel):
    model: str = Field(description="the served weights' name")
    ten_crop: bool
    results: list[ImageResult] = Field(description="one entry per image, in the order sent")
    predictions: list[Prediction] | None = Field(
        None, description="the first image's predictions, present when exactly one image was sent"
    )


class ErrorBody(BaseModel):
    status: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelInfo(BaseModel):
    name: str = Field(description="the served weights' name (file name)")
    arch: str
    num_classes: int
    class_names: list[str]
    parameters: int
    preprocessing: dict[str, Any] = Field(description="input_size, resize_size, mean, std, value_scale")
    device: str
    limits: dict[str, Any] = Field(description="max_bytes, max_images, max_pixels, max_batch, batch_window_ms")


_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": d}
    for s, d in [
        (400, "not an image, truncated, empty, or malformed request"),
        (413, "body over --max-bytes, more than --max-images images, or an image over --max-pixels"),
        (415, "unsupported Content-Type"),
        (422, "invalid query parameter"),
    ]
}

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [IMAGE_FIELD],
                    "properties": {
                        IMAGE_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more image files (JPEG, PNG, WebP, ...); repeat the field",
                        }
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def create_app(
    model: torch.nn.Module,
    preprocessing: Preprocessing,
    *,
    name: str = "alexnet",
    options: ServeOptions | None = None,
) -> FastAPI:
    """The ASGI app serving ``model``: the page at ``/``, the API under ``/v1``, ``/healthz``, ``/openapi.json``.

    Tests and embedding programs call this directly (with uvicorn or any ASGI server); ``serve`` adds loading and
    listening.
    """
    opts = options or ServeOptions()
    device = resolve_device(opts.device)
    model = model.to(device).eval()
    num_classes = _num_classes(model, preprocessing, device)
    names = list(preprocessing.class_names or [])
    if len(names) != num_classes:
        names = [str(i) for i in range(num_classes)]
    arch = _arch_name(model)

    # Softmax rows, not predict.classify_batch's top-k: one pass here mixes requests with and without ten_crop and
    # with different topk, so averaging over crops and the top-k happen per request, after the pass.
    def forward(x: torch.Tensor) -> torch.Tensor:  # runs in the inference thread
        with torch.inference_mode():
            logits = model(x.to(device, non_blocking=True))
            return torch.softmax(logits.float(), dim=1).cpu()  # (rows, num_classes)

    batcher = Batcher(forward, max_batch=opts.max_batch, window_s=opts.batch_window_ms / 1000.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        s = preprocessing.input_size  # warm-up: the first client should not pay for lazy initialisation
        await batcher.run_in_inference_thread(lambda: forward(torch.zeros(1, 3, s, s)))
        yield
        await batcher.stop()

    app = FastAPI(
        title="alexnet serve",
        summary="Classify images with an AlexNet model",
        version=_version(),
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the page and /openapi.json are local
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.options = opts

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}" for err in e.errors()]
        return _error(422, "; ".join(parts) or "invalid request")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get(
        "/healthz",
        summary="Liveness: the model is loaded and the batcher runs",
        responses={503: {"model": ErrorResponse, "description": "the batching worker has stopped"}},
    )
    async def healthz() -> dict[str, str]:
        if not batcher.running:
            raise ApiError(503, "the batching worker is not running")
        return {"status": "ok"}

    @app.get("/v1/model", response_model=ModelInfo, summary="The served model: arch, classes, preprocessing")
    async def model_info() -> ModelInfo:
        pre = preprocessing.to_dict()
        pre.pop("class_names", None)
        return ModelInfo(
            name=name,
            arch=arch,
            num_classes=num_classes,
            class_names=names,
            parameters=count_parameters(model),
            preprocessing=pre,
            device=str(device),
            limits={
                "max_bytes": opts.max_bytes,
                "max_images": opts.max_images,
                "max_pixels": opts.max_pixels,
                "max_batch": opts.max_batch,
                "batch_window_ms": opts.batch_window_ms,
            },
        )

    @app.get("/v1/stats", summary="Batching counters since start (forward passes, rows, largest batch)")
    async def stats() -> dict[str, Any]:
        return batcher.stats.to_dict()

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
        openapi_extra=_PREDICT_BODY,
        summary="Classify one or several images",
        description=(
            f"Send images as multipart field `{IMAGE_FIELD}` (repeat it for several), or one image as the raw body "
            "with an image/* Content-Type. Requests from concurrent clients share forward passes."
        ),
    )
    async def predict(
        request: Request,
        topk: int = Query(5, ge=1, le=1000, description="classes per image (at most the model's classes)"),
        ten_crop: bool = Query(False, description="average over the paper's 10 patches instead of the centre crop"),
    ) -> dict[str, Any]:
        uploads = await read_images(request, opts.max_bytes, opts.max_images)
        prepared = await asyncio.gather(
            *(
                run_in_threadpool(prepare_upload, u, preprocessing, ten_crop=ten_crop, max_pixels=opts.max_pixels)
                for u in uploads
            )
        )
        x = torch.cat([p[0] for p in prepared])  # (images * crops, 3, S, S)
        probs = await batcher.submit(x)
        if ten_crop:
            probs = probs.view(len(uploads), 10, -1).mean(dim=1)  # the paper: average the 10 patches' softmax
        top_p, top_i = probs.topk(min(topk, num_classes), dim=1)
        results = [
            {
                "filename": u.filename,
                "width": size[0],
                "height": size[1],
                "predictions": [
                    {"index": int(i), "label": names[int(i)], "probability": float(p)}
                    for p, i in zip(top_p[n].tolist(), top_i[n].tolist(), strict=True)
                ],
            }
            for n, (u, (_, size)) in enumerate(zip(uploads, prepared, strict=True))
        ]
        body: dict[str, Any] = {"model": name, "ten_crop": ten_crop, "results": results}
        if len(results) == 1:
            body["predictions"] = results[0]["predictions"]
        return body

    # Bad images raised inside the thread pool arrive here as themselves.
    @app.exception_handler(BadImageError)
    async def _bad_image(request: Request, e: BadImageError) -> JSONResponse:
        return _error(400, str(e))

    return app


def _num_classes(model: torch.nn.Module, preprocessing: Preprocessing, device: torch.device) -> int:
    config = getattr(model, "config", None)
    if config is not None:
        return int(config.num_classes)
    s = preprocessing.input_size
    with torch.inference_mode():
        return int(model(torch.zeros(1, 3, s, s, device=device)).shape[1])


def _arch_name(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    if config is None:
        return type(model).__name__
    from .weights import _guess_arch

    return _guess_arch(config)


def _version() -> str:
    from . import __version__

    return __version__


# --- running ------------------------------------------------------------------------------------------------------
def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), or a one-line `AlexnetError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise AlexnetError(f"cannot resolve host {host!r} ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise AlexnetError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def serve(
    weights: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    arch: str | None = None,
    allow_pickle: bool = False,
    options: ServeOptions | None = None,
    log_level: str = "info",
) -> None:
    """Load ``weights`` and serve them until interrupted. Binds loopback unless another ``host`` is asked for."""
    model, preprocessing = load_model(weights, arch=arch, allow_pickle=allow_pickle)
    name = "torchvision" if str(weights) == "torchvision" else Path(weights).name
    app = create_app(model, preprocessing, name=name, options=options)
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"alexnet serve: {name} ({_arch_name(model)}, {model.config.num_classes} classes) "
        f"on http://{shown}:{actual}/  (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"alexnet serve: note: listening on {host}, reachable from other machines", file=sys.stderr)
    config = uvicorn.Config(app, host=host, port=actual, log_level=log_level, timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])
