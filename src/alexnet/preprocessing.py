"""What a weights file's inputs must look like (`Preprocessing`): input size, resize, mean/std, pixel scale and
class names, and the transforms that follow from them (the paper's centre crop, 10 test patches and training
geometry, section 4.1). Every weights format records one (see `alexnet.weights`); data loaders and the inference
commands build their pipelines from it. Knows nothing of weights files.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from .data.geometry import CenterPatch, EvalTransform, Normalizer, TenCrop
from .data.pixels import ImageTypeError, as_uint8_image
from .errors import AlexnetError
from .limits import check_side
from .models import AlexNetConfig

__all__ = [
    "BVLC_PREPROCESSING",
    "TORCHVISION_PREPROCESSING",
    "Preprocessing",
    "PreprocessingError",
    "default_preprocessing",
    "paper_resize",
    "preprocessing_of",
]


class PreprocessingError(AlexnetError, ValueError):
    """A `Preprocessing` field no model input can have (the package's error: the command line prints one line)."""


@dataclass
class Preprocessing:
    """How a model's inputs must look. A model always takes RGB, (N, 3, input_size, input_size).

    A pixel p in 0..255 becomes ``(p / 255 * value_scale - mean) / std``: torchvision's weights use
    value_scale 1 with ImageNet mean/std; BVLC's use value_scale 255, mean (123.68, 116.779, 103.939), std 1.
    """

    input_size: int = 224  # side of the square crop the model sees
    resize_size: int = 256  # short side before cropping (the paper's 256)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # per channel, RGB, in value_scale units
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    value_scale: float = 1.0  # 1: pixels in [0, 1]; 255: pixels in [0, 255]
    class_names: list[str] | None = field(default=None, repr=False)  # index -> name

    def __post_init__(self) -> None:
        # a weights file's metadata is untrusted input: name the field whose value cannot be right
        for name in ("input_size", "resize_size"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                raise PreprocessingError(f"{name} must be an integer, got {v!r:.60}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or not all(_is_finite(x) for x in v):
                raise PreprocessingError(f"{name} must be 3 finite numbers (R, G, B), got {v!r:.60}")
        if not _is_finite(self.value_scale) or not 1e-3 <= self.value_scale <= 65535:
            raise PreprocessingError(
                f"value_scale must be a number from 0.001 to 65535 (1 or 255), got {self.value_scale!r:.60}"
            )
        if self.class_names is not None and not isinstance(self.class_names, (list, tuple)):
            raise PreprocessingError(f"class_names must be a list of names, got {type(self.class_names).__name__}")
        self.mean = tuple(float(m) for m in self.mean)  # type: ignore[assignment]  # length checked next
        self.std = tuple(float(s) for s in self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise PreprocessingError("mean and std need 3 values (R, G, B)")
        # Pixels lie in 0..value_scale, so does their mean; a std under value_scale / 10^4 (or a mean of 1e308)
        # would turn every input into infinities and every probability into NaN.
        scale = self.value_scale
        if not all(0 <= m <= scale for m in self.mean):
            raise PreprocessingError(
                f"mean must lie in the pixel range 0..{scale:g} (value_scale), got {list(self.mean)}"
            )
        if not all(scale * 1e-4 <= s <= scale * 10 for s in self.std):
            raise PreprocessingError(
                f"std must lie in {scale * 1e-4:g}..{scale * 10:g} (value_scale 1e-4..10), got {list(self.std)}"
            )
        for name in ("input_size", "resize_size"):
            check_side(name, getattr(self, name))
        if self.input_size < 1 or self.resize_size < self.input_size:
            raise PreprocessingError(f"need 1 <= input_size <= resize_size, got {self.input_size}, {self.resize_size}")
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]

    # --- transforms ---------------------------------------------------------------------------------------------
    def __call__(self, img: Any) -> torch.Tensor:
        """The model's input for a picture, as torchvision's ``weights.transforms()(img)``: short side to
        ``resize_size``, centre crop, normalise. ``img``: a PIL image, a NumPy (H, W, 3) uint8 array, a uint8
        tensor (3, H, W) or (N, 3, H, W), or a float tensor in [0, 1]; the same picture in any of these forms gives
        the same float (3, S, S) (or (N, 3, S, S)). A float tensor outside [0, 1] (already normalised), a wrong
        channel count or dtype raises `alexnet.data.pixels.ImageInputError` (a ValueError) or `ImageTypeError`
        (a TypeError) with a sentence: nothing is rescaled silently."""
        return self.eval_transform()(img)

    def normalizer(self) -> Normalizer:
        """uint8 image or batch -> normalised float; runs on any device."""
        return Normalizer(self.mean, self.std, self.value_scale)

    def eval_transform(self) -> Callable[[Any], torch.Tensor]:
        """A picture (what ``__call__`` takes) -> float (3, S, S): short side to resize_size, centre crop,
        normalise. A float tensor is checked to lie in [0, 1], never normalised twice."""
        return EvalTransform(self.resize_size, self.input_size, self.normalizer())

    def ten_crop_transform(self) -> Callable[[Any], torch.Tensor]:
        """One picture (what ``__call__`` takes, no batch) -> float (10, 3, S, S): the paper's 10 test patches,
        normalised."""
        geometry, norm = self.geometry(False, ten_crop=True), self.normalizer()
        return lambda img: norm(geometry(as_uint8_image(img, batch=False)))

    def geometry(self, train: bool, *, ten_crop: bool = False) -> nn.Module:
        """The uint8 part of the pipeline, for loader workers: uint8 (3, H, W) -> uint8 (3, S, S), or
        (10, 3, S, S) with ``ten_crop`` (the paper's test patches, section 4.1). Train: the central
        resize_size square, a random input_size patch and a random mirror (section 4.1); eval: torchvision's
        resize and centre crop. Its ``min_size`` lets the decoder shrink JPEGs in the DCT domain. Inference's
        geometry needs torch alone; training's is built on torchvision's transforms, imported only then."""
        if ten_crop:
            return TenCrop(self.resize_size, self.input_size)
        if train:
            from .data.transforms import train_geometry

            return train_geometry(self.resize_size, self.input_size)
        return CenterPatch(self.resize_size, self.input_size)

    def batch_transform(
        self, train: bool, *, lighting: float = 0.0, stats: Any = None, per_pixel_mean: bool = False
    ) -> nn.Module:
        """The float part, batched on the training device: uint8 (N, 3, S, S) or (N, 10, 3, S, S) ->
        normalised float32, with PCA lighting of strength ``lighting`` (alpha's sigma; the paper's 0.1) when
        ``train``. ``stats``: an `alexnet.data.stats.Stats` or the path of ``alexnet stats``'s JSON; it supplies
        the eigen-pairs (else the ImageNet constants, see `alexnet.data.transforms.PCALighting`) and, with
        ``per_pixel_mean``, the mean image subtracted instead of the per-channel ``mean`` (section 2)."""
        if stats is not None and not hasattr(stats, "eigvals"):
            from .data.stats import load_stats

            stats = load_stats(stats)
        mean_image = None
        if per_pixel_mean:
            if stats is None or getattr(stats, "mean_image", None) is None:
                raise PreprocessingError("per_pixel_mean needs stats with a mean image (alexnet stats writes one)")
            mean_image = torch.as_tensor(stats.mean_image, dtype=torch.float32)
        from .data.transforms import BatchTransform

        module = BatchTransform(
            self.mean,
            self.std,
            self.value_scale,
            lighting=lighting if train else 0.0,
            eigvals=stats.eigvals if stats is not None else None,
            eigvecs=stats.eigvecs if stats is not None else None,
            mean_image=mean_image,
        )
        return module.train(train)

    # --- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        if not isinstance(d, Mapping):
            raise PreprocessingError(f"preprocessing must be an object of fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:  # a misspelt or foreign field (crop_size) would be silently ignored: the input would differ
            raise PreprocessingError(
                f"unknown preprocessing fields {', '.join(unknown)[:200]}; known: {', '.join(sorted(known))}"
            )
        return cls(**d)


def _is_finite(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


# torchvision's AlexNet_Weights.IMAGENET1K_V1 preset (ImageClassification: resize 256, crop 224).
TORCHVISION_PREPROCESSING = Preprocessing(input_size=224, resize_size=256)
# The tutorial's bvlc_alexnet.npy: Caffe's 227 crop, 0-255 pixels, ImageNet mean in RGB order, no std.
BVLC_PREPROCESSING = Preprocessing(
    input_size=227, resize_size=256, mean=(123.68, 116.779, 103.939), std=(1.0, 1.0, 1.0), value_scale=255.0
)


def paper_resize(input_size: int) -> int:
    """The short side to resize to before cutting an ``input_size`` crop: the paper's 256 for crops from 224 to
    256 (section 2), else the same 256:224 ratio (a 300 crop is cut from 343, a 64 crop from 73)."""
    return 256 if 224 <= input_size <= 256 else round(input_size * 256 / 224)


def default_preprocessing(
    config: AlexNetConfig, class_names: Sequence[str] | None = None, *, resize_size: int | None = None
) -> Preprocessing:
    """Preprocessing for a freshly created model: ImageNet mean/std in [0, 1], the config's input size, cut from
    ``resize_size`` (default `paper_resize`)."""
    return Preprocessing(
        input_size=config.input_size,
        resize_size=resize_size or paper_resize(config.input_size),
        class_names=list(class_names) if class_names else None,
    )


def preprocessing_of(model: nn.Module, given: Preprocessing | None = None) -> Preprocessing:
    """``given``, else the ``preprocessing`` that `alexnet.create_model` and `alexnet.load_model` attach to the
    model (through a DDP or torch.compile wrapper); an `ImageTypeError` with a sentence when there is none:
    guessing ImageNet's mean and std for weights trained otherwise would give wrong answers without a word."""
    if given is not None:
        return given
    inner = getattr(model, "module", model)
    pre = getattr(getattr(inner, "_orig_mod", inner), "preprocessing", None)
    if not isinstance(pre, Preprocessing):
        raise ImageTypeError(
            "this model carries no preprocessing: build it with alexnet.create_model or alexnet.load_model, or pass "
            "preprocessing=alexnet.Preprocessing(...)"
        )
    return pre
