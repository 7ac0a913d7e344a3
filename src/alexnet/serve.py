"""`alexnet serve`: an HTTP API and a web page that classify images with one loaded model.

Why it is built this way:

- Requests from concurrent clients are batched (`alexnet.serve_batch.Batcher`): the first request of a batch
  waits a few milliseconds for company, then one forward pass serves them all, so throughput grows with load
  instead of every client paying for its own small forward pass. Inference runs in one dedicated thread and
  decoding in the thread pool, so the event loop only moves bytes.
- The model runs as predict runs it: on the device `alexnet.runtime.resolve_device` names, in the `Precision`
  the caller resolved (``alexnet serve --precision auto``: bf16 where the device computes it natively), through
  `Precision.inference_model`: a cast copy of a caller's model (left untouched), or, for the model ``alexnet
  serve`` loaded itself, that model cast in place (`alexnet.weights.load_for_inference`: no second copy).
- Every response is a JSON document with its version key first (``"schema": "alexnet.serve.predict/1"``, ...;
  `alexnet.schemas`, docs/JSON.md). A prediction has the command line's vocabulary (``alexnet predict --json``):
  per image ``file`` and ``predictions``, per class ``index``, ``name`` and ``prob``; one shape whether one image
  or several were sent.
- Bad input is the client's fault, so it gets a 4xx with a JSON body ``{"schema", "error": {"status",
  "message"}}``, never a 500: the body size is checked while it streams in (a client cannot make the server
  buffer more than ``max_bytes``), multipart parts are counted as they arrive, and image headers are checked
  before decoding (JPEGs are decoded downscaled, so a 20-megapixel photo costs little); see
  `alexnet.serve_upload`.
- The web page (``static/``) is plain HTML/CSS/JS served from this package: no CDN, and its Content-Security-Policy
  forbids anything else. FastAPI's /docs pages load from a CDN, so they are off; ``/openapi.json`` stays.

Needs the ``[serve]`` extra (FastAPI, uvicorn, python-multipart); importing this module without it raises a
one-line `AlexnetError` naming ``pip install 'alexnet[serve]'``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch

from .errors import AlexnetError

try:
    import uvicorn
    from fastapi import BackgroundTasks, FastAPI, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise AlexnetError(
        f"alexnet serve needs the [serve] extra ({e.name} is not installed): pip install 'alexnet[serve]'"
    ) from None

from .data.decode import BadImageError
from .models import count_parameters
from .options import WeightsSource
from .preprocessing import Preprocessing
from .runtime import (
    NonFiniteScoresError,
    Precision,
    check_finite_scores,
    model_input,
    one_malloc_arena,
    ready_for_inference,
    release_free_memory,
    resolve_device,
    unwrap_model,
)
from .schemas import tagged
from .serve_api import (
    ERROR_RESPONSES,
    PREDICT_BODY,
    ErrorResponse,
    ModelInfo,
    PredictResponse,
    ServeOptions,
    ServeOptionsError,
)
from .serve_batch import Batcher
from .serve_guard import ConnectionLimits, guarded_protocol, install_log_limits
from .serve_upload import (
    IMAGE_FIELD,
    ApiError,
    PixelBudget,
    clean_message,
    image_size,
    pixel_cost,
    prepare_upload,
    read_images,
)
from .weights import PRETRAINED, describe_config, guess_arch, load_model, read_provenance

__all__ = [
    "Batcher",
    "ServeOptions",
    "ServeOptionsError",
    "ServedModel",
    "bind",
    "create_app",
    "image_size",
    "serve",
    "uvicorn_config",
]

STATIC_DIR = Path(__file__).with_name("static")
# The page may load only what this server serves; images are shown from blob: URLs of the chosen file.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = tagged("serve.error", {"error": {"status": status, "message": clean_message(message)}})
    return JSONResponse(body, status_code=status, headers=headers)


class ServedModel:
    """The model as the server runs it: on its device, in its precision (a cast copy of the weights for bf16/fp16,
    as predict runs it), with the class names and facts /v1/model reports."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: Preprocessing,
        name: str,
        opts: ServeOptions,
        *,
        own: bool = False,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self.name, self.preprocessing, self.options = name, preprocessing, opts
        self.provenance = dict(provenance) if provenance is not None else None
        self.device = resolve_device(opts.device)
        self.precision: Precision = opts.precision
        self.model = model
        # as it is when already prepared (alexnet serve: load_for_inference); else the model itself (eval, on
        # device) for fp32, a cast copy, or the model cast in place when it is ours
        self.net = ready_for_inference(model, self.precision, self.device, copy=not own)
        self.num_classes = _num_classes(self.net, preprocessing, self.device)
        names = list(preprocessing.class_names or [])
        self.class_names = names if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]
        self.arch = _arch_name(model)
        config = getattr(unwrap_model(model), "config", None)
        self.description = describe_config(config) if config is not None else self.arch

    # Softmax rows, not predict.classify_batch's top-k: one pass here mixes requests with and without ten_crop and
    # with different topk, so averaging over crops and the top-k happen per request, after the pass.
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # runs in the inference thread
        """float (rows, 3, S, S) -> softmax probabilities (rows, num_classes) float32 on the CPU."""
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=True)
            x = model_input(self.net, x)  # the cast copy takes its own dtype, channels_last
            return torch.softmax(self.net(x).float(), dim=1).cpu()

    def info(self) -> ModelInfo:
        pre = self.preprocessing.to_dict()
        pre.pop("class_names", None)
        return ModelInfo(
            name=self.name,
            arch=self.arch,
            description=self.description,
            num_classes=self.num_classes,
            class_names=self.class_names,
            parameters=count_parameters(self.model),
            preprocessing=pre,
            device=str(self.device),
            precision=self.precision.name,
            limits=self.options.limits(),
            provenance=self.provenance,
        )

    def results(self, files: list[str], sizes: list[tuple[int, int]], probs: torch.Tensor, topk: int) -> list[dict]:
        """Per image, in order: ``file``, ``width``, ``height`` and the top-k ``predictions`` (index, name, prob)."""
        top_p, top_i = probs.topk(min(topk, self.num_classes), dim=1)
        return [
            {
                "file": file,
                "width": size[0],
                "height": size[1],
                "predictions": [
                    {"index": int(i), "name": self.class_names[int(i)], "prob": float(p)}
                    for p, i in zip(top_p[n].tolist(), top_i[n].tolist(), strict=True)
                ],
            }
            for n, (file, size) in enumerate(zip(files, sizes, strict=True))
        ]


def create_app(
    model: torch.nn.Module,
    preprocessing: Preprocessing,
    *,
    name: str = "alexnet",
    options: ServeOptions | None = None,
    own_model: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> FastAPI:
    """The ASGI app serving ``model``: the page at ``/``, the API under ``/v1``, ``/healthz``, ``/openapi.json``.

    Tests and embedding programs call this directly (with uvicorn or any ASGI server); ``serve`` adds loading and
    listening. The caller's ``model`` is left as it is (a bf16/fp16 server runs a cast copy) unless ``own_model``
    says the app may cast it in place (``serve``, which loaded it: no second copy of the weights). ``provenance``:
    the weights file's (`alexnet.weights.read_provenance`), shown by /v1/model and the page.
    """
    opts = options or ServeOptions()
    served = ServedModel(model, preprocessing, name, opts, own=own_model, provenance=provenance)
    batcher = Batcher(served.forward, max_batch=opts.max_batch, window_s=opts.batch_window_ms / 1000.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        s = preprocessing.input_size  # warm-up: the first client should not pay for lazy initialisation
        await batcher.run_in_inference_thread(lambda: served.forward(torch.zeros(1, 3, s, s)))
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
    app.state.served = served
    app.state.pixel_budget = PixelBudget(opts.max_inflight_pixels)
    _add_error_handlers(app)
    _add_page_and_info(app, served, batcher)
    _add_predict(app, served, batcher, app.state.pixel_budget)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is ``{"error": {"status", "message"}}``: the client's mistakes are 4xx, never a 500."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}" for err in e.errors()]
        return _error(422, "; ".join(parts) or "invalid request")

    # Bad images raised inside the thread pool arrive here as themselves.
    @app.exception_handler(BadImageError)
    async def _bad_image(request: Request, e: BadImageError) -> JSONResponse:
        return _error(400, str(e))


def _add_page_and_info(app: FastAPI, served: ServedModel, batcher: Batcher) -> None:
    """The page, /healthz, /v1/model and /v1/stats."""

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
        return tagged("serve.health", {"status": "ok"})

    @app.get("/v1/model", response_model=ModelInfo, summary="The served model: arch, classes, preprocessing")
    async def model_info() -> ModelInfo:
        return served.info()

    @app.get("/v1/stats", summary="Batching counters since start (forward passes, rows, largest batch)")
    async def stats() -> dict[str, Any]:
        return tagged("serve.stats", batcher.stats.to_dict())


def _add_predict(app: FastAPI, served: ServedModel, batcher: Batcher, budget: PixelBudget) -> None:
    """POST /v1/predict: read, check and decode the images (thread pool), one batched pass, top-k per image."""
    opts, preprocessing = served.options, served.preprocessing

    async def give_back_memory() -> None:
        """After the response, when this request's images are gone: once a burst of large requests is over
        (none active), hand the freed pages back; `tune_cpu_allocator`'s thresholds would keep them otherwise."""
        if budget.burst_over():
            await run_in_threadpool(release_free_memory)

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=PREDICT_BODY,
        summary="Classify one or several images",
        description=(
            f"Send images as multipart field `{IMAGE_FIELD}` (repeat it for several), or one image as the raw body "
            "with an image/* Content-Type. Requests from concurrent clients share forward passes."
        ),
    )
    async def predict(
        request: Request,
        background: BackgroundTasks,
        topk: int = Query(5, ge=1, le=1000, description="classes per image (at most the model's classes)"),
        ten_crop: bool = Query(False, description="average over the paper's 10 patches instead of the centre crop"),
    ) -> dict[str, Any]:
        background.add_task(give_back_memory)
        with budget.serving():
            return await answer(request, topk, ten_crop)

    async def answer(request: Request, topk: int, ten_crop: bool) -> dict[str, Any]:
        uploads = await read_images(request, opts.max_bytes, opts.max_images)
        pixels = sum(pixel_cost(u, preprocessing, opts.max_pixels) for u in uploads)  # headers only
        if pixels > opts.max_request_pixels:
            raise ApiError(
                413,
                f"{len(uploads)} images need {pixels / 1e6:.0f} megapixels to decode and resize, over the limit of "
                f"{opts.max_request_pixels / 1e6:g} per request (--max-request-pixels): send fewer or smaller images",
            )
        with budget.hold(pixels):
            # every decode finishes before the pixels are released, also when one of them fails
            prepared = await asyncio.gather(
                *(
                    run_in_threadpool(prepare_upload, u, preprocessing, ten_crop=ten_crop, max_pixels=opts.max_pixels)
                    for u in uploads
                ),
                return_exceptions=True,
            )
        for p in prepared:
            if isinstance(p, BaseException):
                raise p
        x = torch.cat([p[0] for p in prepared])  # (images * crops, 3, S, S)
        probs = await batcher.submit(x)
        try:  # this request's rows only: the others of the same pass are answered as they are
            check_finite_scores(probs, "/v1/predict")
        except NonFiniteScoresError as e:
            raise ApiError(500, str(e)) from None
        if ten_crop:
            probs = probs.view(len(uploads), 10, -1).mean(dim=1)  # the paper: average the 10 patches' softmax
        results = served.results([u.filename for u in uploads], [p[1] for p in prepared], probs, topk)
        return tagged("serve.predict", {"model": served.name, "ten_crop": ten_crop, "topk": topk, "results": results})


def _num_classes(model: torch.nn.Module, preprocessing: Preprocessing, device: torch.device) -> int:
    config = getattr(unwrap_model(model), "config", None)
    if config is not None:
        return int(config.num_classes)
    s = preprocessing.input_size
    with torch.inference_mode():
        return int(model(model_input(model, torch.zeros(1, 3, s, s, device=device))).shape[1])


def _arch_name(model: torch.nn.Module) -> str:
    config = getattr(unwrap_model(model), "config", None)
    if config is None:
        return type(model).__name__
    return guess_arch(config)


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
    weights: WeightsSource | str | Path | torch.nn.Module,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServeOptions | None = None,
    log_level: str = "info",
    preprocessing: Preprocessing | None = None,
    name: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> None:
    """Serve ``weights`` until interrupted: a `WeightsSource` (a name or path alone is its ``source``), loaded
    here, or a model already loaded (``alexnet serve``: `alexnet.weights.load_for_inference`), with its
    ``preprocessing``, the ``name`` the page shows and the file's ``provenance``. The model is the server's own
    either way (cast in place). Binds loopback unless another ``host`` is asked for."""
    one_malloc_arena()  # a no-op when `alexnet serve` did it first, before loading
    if isinstance(weights, torch.nn.Module):
        if preprocessing is None:
            raise AlexnetError("serve: a model needs its Preprocessing")
        model = weights
    else:
        spec = WeightsSource.of(weights)
        model, preprocessing = load_model(spec)
        name = name or (spec.source if spec.source in PRETRAINED else Path(spec.source).name)
        provenance = provenance if provenance is not None else read_provenance(spec)
    name = name or "model"
    app = create_app(model, preprocessing, name=name, options=options, own_model=True, provenance=provenance)
    served: ServedModel = app.state.served
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"alexnet serve: {name} ({served.description}, {served.num_classes} classes, {served.device} "
        f"{served.precision.name}) on http://{shown}:{actual}/  (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"alexnet serve: note: listening on {host}, reachable from other machines", file=sys.stderr)
    uvicorn.Server(uvicorn_config(app, host=host, port=actual, log_level=log_level)).run(sockets=[sock])


def uvicorn_config(app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's config for ``app`` with the app's `ServeOptions` enforced on connections: the h11 protocol with a
    connection cap and header/body deadlines (`alexnet.serve_guard`), h11's 16 KB limit on a request's headers, and
    rate-limited error logs. The open-file limit is raised to fit the cap where the hard limit allows."""
    opts: ServeOptions = app.state.options
    limits = ConnectionLimits(opts.max_connections, opts.header_timeout_s, opts.body_timeout_s)
    _fit_open_files(opts.max_connections)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=guarded_protocol(limits),
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
    )
    install_log_limits()
    return config


def _fit_open_files(max_connections: int) -> None:
    """Raise the soft open-file limit to the connections plus room for the model, logs and the thread pool."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    need = max_connections + 128
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            new = soft
        if new < need:
            print(
                f"alexnet serve: note: the open-file limit ({new}) is below --max-connections + 128 ({need}): "
                "lower --max-connections or raise the limit (ulimit -n)",
                file=sys.stderr,
            )
