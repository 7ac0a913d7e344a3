"""Classify images with a trained AlexNet: top-k classes with names and probabilities.

`classify` is the reusable core (the HTTP server calls it with images it decoded); `predict_files` adds what a
command line needs: expanding files, folders and globs, decoding in parallel threads, streaming in batches, and
reporting bad files by name while the others are still classified. ``ten_crop`` averages the softmax over the
paper's 10 patches (4 corners + centre and their mirrors, Krizhevsky et al. 2012, section 4.1).

``precision``: a resolved `alexnet.runtime.Precision` (the command line turns ``--precision auto`` into one with
`alexnet.runtime.resolve_precision`: bf16 where the device computes it natively, fp32 elsewhere): fp32 (`FP32`,
the default of the functions: results as the weights compute them) or bf16/fp16 (a copy of the model with its
weights cast once, channels_last; inputs cast per batch by `alexnet.runtime.model_input`). A model already cast
(`alexnet.weights.load_for_inference`) runs as it is. The caller's model is never modified.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .data.base import IMAGE_EXTENSIONS
from .data.decode import BadImageError, decode_image
from .options import check_workers, cpu_count
from .preprocessing import Preprocessing
from .runtime import FP32, Precision, check_finite_scores, model_input, ready_for_inference

__all__ = [
    "IMAGE_EXTENSIONS",
    "ClassScore",
    "FileResult",
    "classify",
    "classify_batch",
    "prepare_image",
    "expand_inputs",
    "predict_files",
]

_GLOB_CHARS = set("*?[")


class ClassScore(NamedTuple):
    """One of the top-k classes of an image: a plain tuple ``(index, name, prob)``."""

    index: int  # class index (fc8 output)
    name: str  # class name, or the index as text when the weights carry no names
    prob: float  # softmax probability (averaged over the 10 crops with ten_crop)


@dataclass
class FileResult:
    """The outcome for one input file: ``scores`` when it was classified, else ``error`` (one line)."""

    file: str
    scores: list[ClassScore] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """One shape for every file (docs/JSON.md, ``alexnet.predict``): ``predictions`` empty and ``error`` a line
        when it failed, ``error`` None when it was classified."""
        return {"file": self.file, "predictions": [s._asdict() for s in self.scores or []], "error": self.error}


def prepare_image(image: torch.Tensor, preprocessing: Preprocessing, *, ten_crop: bool = False) -> torch.Tensor:
    """uint8 (3, H, W) RGB -> float (3, S, S), or (10, 3, S, S) with ``ten_crop``, as ``preprocessing`` says."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, H, W) RGB image, got {image.dtype} {tuple(image.shape)}")
    return preprocessing.ten_crop_transform()(image) if ten_crop else preprocessing.eval_transform()(image)


@torch.inference_mode()
def classify_batch(
    model: nn.Module,
    batch: torch.Tensor,
    *,
    topk: int = 5,
    class_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> list[list[ClassScore]]:
    """Top-k of a prepared batch: float (N, 3, S, S), or (N, 10, 3, S, S) whose softmax is averaged over the 10
    crops (the paper's test-time augmentation). The model must be in eval mode (dropout off)."""
    dev = torch.device(device) if device is not None else _model_device(model)
    x = batch.to(dev, non_blocking=True)
    crops = 1
    if x.ndim == 5:  # (N, 10, 3, S, S) -> (N * 10, 3, S, S)
        crops = x.shape[1]
        x = x.flatten(0, 1)
    x = model_input(model, x)  # a bf16/fp16 model (`Precision.inference_model`) takes its own dtype
    probs = torch.softmax(check_finite_scores(model(x).float(), "predict"), dim=1)  # (N * crops, C)
    probs = probs.view(-1, crops, probs.shape[1]).mean(dim=1)  # (N, C)
    k = min(topk, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    values, indices = values.cpu().tolist(), indices.cpu().tolist()
    out = []
    for vals, idxs in zip(values, indices, strict=True):
        out.append([ClassScore(i, _class_name(class_names, i), float(p)) for i, p in zip(idxs, vals, strict=True)])
    return out


def classify(
    model: nn.Module,
    preprocessing: Preprocessing,
    images: Sequence[torch.Tensor],
    *,
    topk: int = 5,
    ten_crop: bool = False,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    precision: Precision = FP32,
) -> list[list[ClassScore]]:
    """Classify decoded images: uint8 (3, H, W) RGB each, as `alexnet.data.decode.decode_image` returns them.

    Returns, per image and in order, the ``topk`` classes as ``(index, name, prob)`` tuples, best first. Class
    names come from ``preprocessing.class_names``. ``device`` defaults to the model's; the model is put in eval
    mode and moved there. ``batch_size`` bounds the images per forward pass (times 10 with ``ten_crop``).
    ``precision``: see the module's docstring; bf16/fp16 cast a copy of the model per call.
    """
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    dev = torch.device(device) if device is not None else _model_device(model)
    model = ready_for_inference(model, precision, dev)  # as it is when the caller prepared it
    results: list[list[ClassScore]] = []
    for start in range(0, len(images), batch_size):
        chunk = [prepare_image(im, preprocessing, ten_crop=ten_crop) for im in images[start : start + batch_size]]
        results += classify_batch(
            model, torch.stack(chunk), topk=topk, class_names=preprocessing.class_names, device=dev
        )
    return results


def expand_inputs(inputs: Sequence[str | Path]) -> list[str]:
    """Files as given; folders searched recursively for image extensions (sorted); globs (``**`` too) expanded
    (sorted). Anything else is kept as given, so that decoding reports it by name ("no such file")."""
    out: list[str] = []
    for item in inputs:
        s = str(item)
        if os.path.isdir(s):
            found = sorted(str(p) for p in Path(s).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            out += found
        elif not os.path.exists(s) and _GLOB_CHARS & set(s):
            matches = sorted(m for m in glob.glob(s, recursive=True) if os.path.isfile(m))
            out += matches or [s]  # no match: reported as a missing file
        else:
            out.append(s)
    seen: set[str] = set()
    return [f for f in out if not (f in seen or seen.add(f))]


def predict_files(
    model: nn.Module,
    preprocessing: Preprocessing,
    inputs: Sequence[str | Path],
    *,
    topk: int = 5,
    ten_crop: bool = False,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    workers: int | None = None,
    expand: bool = True,
    precision: Precision = FP32,
) -> Iterator[FileResult]:
    """Classify every file ``inputs`` expands to (see `expand_inputs`), yielding one `FileResult` per file in order.

    Threads decode, resize and crop a batch (PIL and torch release the GIL). On a GPU they prepare the next batch
    while the model runs on the current one; on a CPU they take turns with the model, whose own threads already
    use every core: decoding alongside them oversubscribes the cores and stalls the model's threads at their
    barriers (docs/BENCHMARKS.md measures both). A file that cannot be
    decoded yields a result with ``error`` and never stops the others. ``expand=False`` takes ``inputs`` as the
    final list of files (from `expand_inputs`). ``precision``: see the module's docstring (the weights are cast
    once per call).
    """
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    files = expand_inputs(inputs) if expand else [str(f) for f in inputs]
    dev = torch.device(device) if device is not None else _model_device(model)
    model = ready_for_inference(model, precision, dev)  # as it is when the caller prepared it
    workers = check_workers(min(8, cpu_count()) if workers is None else workers)  # threads: decoding frees the GIL

    # Threads do the uint8 work (decode, resize, crop); the float normalisation runs batched on the device, so
    # a GPU receives 1 byte per pixel instead of 4.
    geometry = preprocessing.geometry(False, ten_crop=ten_crop)
    normalize = preprocessing.normalizer().to(dev)

    def load(name: str) -> torch.Tensor:
        img = decode_image(name, min_size=preprocessing.resize_size)  # (3, H, W) uint8
        try:
            return geometry(img)  # uint8 (3, S, S), or (10, 3, S, S) with ten_crop
        except BadImageError as e:  # the geometry refused it (e.g. a 5000x1 strip)
            raise BadImageError(f"{name}: {e}") from None

    with ThreadPoolExecutor(max_workers=workers) if workers else _InCaller() as pool:
        chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
        overlap = dev.type != "cpu"
        pending: list[Future[torch.Tensor]] | None = [pool.submit(load, f) for f in chunks[0]] if chunks else None
        for n, chunk in enumerate(chunks):
            futures = pending if pending is not None else [pool.submit(load, f) for f in chunk]
            pending = [pool.submit(load, f) for f in chunks[n + 1]] if overlap and n + 1 < len(chunks) else None
            good: list[tuple[int, torch.Tensor]] = []
            errors: dict[int, str] = {}
            for i, fut in enumerate(futures):
                try:
                    good.append((i, fut.result()))
                except BadImageError as e:
                    errors[i] = str(e)
                except (ValueError, RuntimeError) as e:  # an image the transforms cannot handle
                    errors[i] = f"{chunk[i]}: cannot prepare image ({e})"
            scores: dict[int, list[ClassScore]] = {}
            if good:
                batch = normalize(torch.stack([t for _, t in good]).to(dev, non_blocking=True))
                preds = classify_batch(model, batch, topk=topk, class_names=preprocessing.class_names, device=dev)
                scores = {i: p for (i, _), p in zip(good, preds, strict=True)}
            for i, name in enumerate(chunk):
                yield FileResult(name, scores=scores.get(i), error=errors.get(i))


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class _InCaller:
    """``workers=0``: no thread; each file is decoded in the calling thread when its batch is formed."""

    def __enter__(self) -> _InCaller:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Any, *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as e:  # reported per file by the caller, as a thread's error would be
            fut.set_exception(e)
        return fut


def _class_name(names: Sequence[str] | None, i: int) -> str:
    return names[i] if names is not None and i < len(names) else str(i)
