"""`alexnet serve`'s vocabulary: the server's options (`ServeOptions`, every field a flag of ``alexnet serve``,
checked here so that the command line need not) and the shapes of its JSON documents (pydantic models, which
FastAPI turns into ``/openapi.json``; docs/JSON.md lists the same fields). Apart from `alexnet.serve`, which
builds the app, so that each module stays one concern."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, Field

from .errors import AlexnetError
from .runtime import FP32, Precision, require_precision
from .schemas import schema_id
from .serve_upload import IMAGE_FIELD


class ServeOptionsError(AlexnetError, ValueError):
    """A `ServeOptions` field no server can run with; the message names the flag of ``alexnet serve``."""


@dataclass
class ServeOptions:
    """Limits, batching, device and precision of one server; every field is a command-line flag of ``alexnet serve``."""

    max_bytes: int = 20_000_000  # largest request body (bytes), enforced while the body streams in
    max_images: int = 16  # images in one request
    max_pixels: int = 50_000_000  # pixels one image may have after JPEG draft downscaling (PNG etc.: as stored)
    max_request_pixels: int = 100_000_000  # decoded (and resized) pixels of all images of one request: else 413
    max_inflight_pixels: int = 200_000_000  # ... of all requests being decoded at once: else 503 + Retry-After
    max_connections: int = 256  # open connections; more are answered 503 and closed at once
    header_timeout_s: float = 10.0  # a request's line and headers must arrive within this, else the socket closes
    body_timeout_s: float = 60.0  # its body within this after the headers (a 20 MB upload at 3 Mbit/s: 55 s)
    max_batch: int = 64  # rows in one forward pass (an image is 1 row, or 10 under ten_crop)
    batch_window_ms: float = 5.0  # how long a batch waits for more requests once its first one arrived
    device: str | torch.device = "auto"  # `alexnet.runtime.resolve_device`: "auto" is cuda when available, else cpu
    precision: Precision = FP32  # resolved (`alexnet.runtime.resolve_precision`): bf16/fp16 run a cast copy

    def __post_init__(self) -> None:
        """Every field checked here, with the package's error (`AlexnetError`, one line naming the field as
        ``alexnet serve`` spells it), so that no caller re-checks them."""
        ints = ("max_bytes", "max_images", "max_pixels", "max_batch", "max_request_pixels", "max_inflight_pixels")
        for name in (*ints, "max_connections"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ServeOptionsError(f"{_flag(name)} must be an integer >= 1, got {v!r}")
        for name in ("header_timeout_s", "body_timeout_s", "batch_window_ms"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ServeOptionsError(f"{_flag(name)} must be a number >= 0, got {v!r}")
            if v == 0 and name != "batch_window_ms":
                raise ServeOptionsError(f"{_flag(name)} must be > 0 seconds, got {v!r}")
        if self.max_inflight_pixels < self.max_request_pixels:
            raise ServeOptionsError("--max-inflight-pixels must be >= --max-request-pixels (else no request could run)")
        require_precision(self.precision)

    def limits(self) -> dict[str, Any]:
        """The limits as /v1/model reports them."""
        names = (
            "max_bytes",
            "max_images",
            "max_pixels",
            "max_request_pixels",
            "max_inflight_pixels",
            "max_connections",
            "header_timeout_s",
            "body_timeout_s",
            "max_batch",
            "batch_window_ms",
        )
        return {k: getattr(self, k) for k in names}


def _flag(field_name: str) -> str:
    """A `ServeOptions` field as ``alexnet serve``'s flag (``header_timeout_s`` -> ``--header-timeout``)."""
    return "--" + field_name.removesuffix("_s").replace("_", "-")


class Prediction(BaseModel):
    """One of an image's top-k classes: `alexnet.predict.ClassScore`'s fields."""

    index: int = Field(description="class index (fc8 output)")
    name: str = Field(description="class name, or the index when the weights carry no names")
    prob: float = Field(description="softmax probability (averaged over the 10 crops under ten_crop)")


class ImageResult(BaseModel):
    file: str = Field(description="the file name the image was sent under")
    width: int = Field(description="width of the image as sent")
    height: int = Field(description="height of the image as sent")
    predictions: list[Prediction] = Field(description="top-k classes, most probable first")


def _schema_field(name: str) -> Any:
    """The version key: ``schema`` in JSON (a pydantic model's own ``schema`` method keeps its name here)."""
    return Field(schema_id(name), alias="schema", description="the document's version (docs/JSON.md)")


class PredictResponse(BaseModel):
    schema_: str = _schema_field("serve.predict")
    model: str = Field(description="the served weights' name")
    ten_crop: bool
    topk: int = Field(description="classes asked for per image (at most the model's classes are given)")
    results: list[ImageResult] = Field(description="one entry per image, in the order sent")


class ErrorBody(BaseModel):
    status: int
    message: str


class ErrorResponse(BaseModel):
    schema_: str = _schema_field("serve.error")
    error: ErrorBody


class ModelInfo(BaseModel):
    schema_: str = _schema_field("serve.model")
    name: str = Field(description="the served weights' name (file name)")
    arch: str = Field(description="the registered architecture the weights fit, or custom")
    description: str = Field(
        description="what the model is, from its config: e.g. alexnet2012, 67x67, adaptive pooling"
    )
    num_classes: int
    class_names: list[str]
    parameters: int
    preprocessing: dict[str, Any] = Field(description="input_size, resize_size, mean, std, value_scale")
    device: str
    precision: str = Field(description="fp32, bf16 or fp16: what the forward pass computes in")
    limits: dict[str, Any] = Field(description="the server's limits: ServeOptions' fields, as the flags name them")
    provenance: dict[str, Any] | None = Field(
        description="where the weights come from (the file's provenance, docs/FORMATS.md), null when it has none"
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": d}
    for s, d in [
        (400, "not an image, truncated, empty, or malformed request"),
        (
            413,
            "body over --max-bytes, more than --max-images images, an image over --max-pixels, or images over "
            "--max-request-pixels together",
        ),
        (415, "unsupported Content-Type"),
        (422, "invalid query parameter"),
        (503, "other requests hold --max-inflight-pixels of decoding: retry after the Retry-After seconds"),
    ]
}

PREDICT_BODY = {
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
