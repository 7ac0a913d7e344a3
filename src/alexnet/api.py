"""The top-level ``alexnet.classify``: any picture a Python user holds (a path, a PIL image, a NumPy HWC uint8
array, a uint8 tensor, a float tensor in [0, 1]) through the model's own preprocessing. It checks and converts the
pictures (`alexnet.data.pixels.load_pictures`), then calls the library's core, `alexnet.predict.classify`, which
takes decoded uint8 tensors. (``alexnet.features`` is `alexnet.features.features`.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .data.pixels import Picture, load_pictures
from .predict import ClassScore
from .predict import classify as classify_images
from .preprocessing import Preprocessing, preprocessing_of
from .runtime import Precision, resolve_device, resolve_precision

__all__ = ["classify", "user_precision"]


def user_precision(model: nn.Module, precision: str | Precision, device: str | torch.device | None) -> Precision:
    """The Python API's boundary, as `alexnet.cli.flags.runtime_values` is the command line's: a precision word
    (``fp32``, ``bf16``, ``fp16``, ``auto``) resolved once, for the device the model will run on (``device``, or
    where its weights are); the library below takes only the resolved `Precision`."""
    if isinstance(precision, Precision):
        return precision
    param = next(model.parameters(), None)
    dev = resolve_device(device) if device is not None else (param.device if param is not None else None)
    return resolve_precision(precision, dev if dev is not None else torch.device("cpu"))


def classify(
    model: nn.Module,
    images: Picture | Sequence[Picture],
    *,
    preprocessing: Preprocessing | None = None,
    topk: int = 5,
    ten_crop: bool = False,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    precision: str | Precision = "fp32",
) -> list[list[ClassScore]]:
    """The ``topk`` classes of each picture, best first, as ``(index, name, prob)`` tuples: one list per picture,
    in order (one picture given alone still gets a list of one).

    ``images``: a picture or a sequence of them (`alexnet.data.pixels.Picture`), or a (N, 3, H, W) tensor.
    ``preprocessing``: defaults to ``model.preprocessing`` (set by `alexnet.create_model` and
    `alexnet.load_model`). ``ten_crop``: the softmax averaged over the paper's 10 patches (section 4.1).
    ``precision``: ``fp32``, ``bf16``, ``fp16`` or ``auto``. The model runs in eval mode on ``device`` (default:
    where it is; it moves there) and gets its training mode back; its weights are not changed (bf16/fp16 run a
    cast copy).
    """
    pre = preprocessing_of(model, preprocessing)
    pictures = load_pictures(images, pre.resize_size)
    was_training = model.training
    try:
        return classify_images(
            model, pre, pictures, topk=topk, ten_crop=ten_crop, device=device, batch_size=batch_size,
            precision=user_precision(model, precision, device),
        )  # fmt: skip
    finally:
        model.train(was_training)
