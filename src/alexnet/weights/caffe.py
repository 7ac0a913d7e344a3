"""The Caffe model zoo's AlexNets without Caffe: ``.caffemodel`` weights, ``.prototxt`` net definitions and
``.binaryproto`` mean images become our `AlexNet` and its `Preprocessing`.

The prototxt decides the architecture: LRN before pooling is ``alexnet2012`` (bvlc_alexnet, the paper), pooling
before LRN is ``caffenet`` (bvlc_reference_caffenet); grouped convolutions, channel widths, LRN's parameters,
the pooling window, the classes (the last inner product's num_output) and the input size are read from it, and
anything that is not an AlexNet of this family is refused with a one-line error naming the first layer that does
not fit. Layers are matched by position and kind, so a fine-tune that renamed its classifier (``fc8_flickr``)
loads. Every blob's shape is checked; see `CAFFE_CONVERSIONS` for the only changes made to the numbers.
Files are parsed by `alexnet.weights.caffe_proto` with the ``protobuf`` package.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import AlexNet, create_model
from ..preprocessing import BVLC_PREPROCESSING, Preprocessing
from .base import CaffeError, check_state_dict, check_tensor_values, imagenet_classes
from .caffe_net import WEIGHT_LAYERS, CaffeLayer, CaffeNetSpec, caffe_layers, parse_caffe_net
from .caffe_proto import read_binaryproto, read_caffemodel, read_prototxt
from .records import CAFFE_ZOO, ILSVRC_2012_MEAN_BGR, CaffeZooWeights

__all__ = [
    "CaffeError",
    "CAFFE_CONVERSIONS",
    "ILSVRC_2012_MEAN_BGR",
    "CaffeZooWeights",
    "CAFFE_ZOO",
    "load_caffe",
    "load_caffe_zoo",
    "read_caffe_mean",
    "read_labels",
]

# What differs between a Caffe AlexNet and ours; the importer applies exactly these. Caffe's blobs are already
# NCHW / OIHW / (out, in) with fc6's inputs flattened as (c, h, w), like PyTorch: nothing is transposed.
CAFFE_CONVERSIONS: tuple[tuple[str, str], ...] = (
    ("conv1 weight", "input channels BGR -> RGB: reversed along I (Caffe models read OpenCV's BGR images)"),
    ("inner product weight with transpose: true", "stored (in, out): transposed to (out, in)"),
    ("layers without a bias (bias_term: false)", "a zero bias"),
    ("everything else", "unchanged (float32; double_data blobs are cast to float32)"),
)


# --- blobs --------------------------------------------------------------------------------------------------------
def _blob_array(blob: Any, what: str, src: str) -> tuple[np.ndarray, bool]:
    """(array, legacy?) of a BlobProto: its ``shape`` field, else the deprecated num/channels/height/width."""
    legacy = not blob.HasField("shape")
    shape = (
        (int(blob.num), int(blob.channels), int(blob.height), int(blob.width))
        if legacy
        else tuple(int(d) for d in blob.shape.dim)
    )
    if any(d < 0 for d in shape):
        raise CaffeError(f"{src}: {what} has a negative dimension in its shape {shape}: the file is corrupt")
    data = np.array(blob.data, dtype=np.float32) if len(blob.data) else np.array(blob.double_data, np.float32)
    if data.size != math.prod(shape):  # Python's integers: a crafted shape cannot overflow the product
        raise CaffeError(f"{src}: {what} holds {data.size} values, its shape {shape} needs {math.prod(shape)}")
    return data.reshape(shape), legacy


def _check_shape(arr: np.ndarray, legacy: bool, want: tuple[int, ...], what: str, layout: str, src: str) -> np.ndarray:
    """Compare with the expected shape in the blob's own convention: the shape field holds the true rank; the
    legacy 4D fields pad on the left with 1s (a bias is 1x1x1xO, an inner product's weight 1x1xOxI)."""
    expected = (1,) * (4 - len(want)) + want if legacy else want
    if arr.shape != expected:
        raise CaffeError(f"{src}: {what} has shape {arr.shape}, expected {expected} {layout}")
    return arr.reshape(want)


def _blob_layers(weights: Any, spec: CaffeNetSpec, src: str) -> dict[str, CaffeLayer]:
    """The caffemodel's layer holding each weight layer's blobs: by name (Caffe's own rule), else by position
    among its layers with blobs (the same five convolutions and three inner products, renamed)."""
    with_blobs = [la for la in caffe_layers(weights) if len(la.proto.blobs)]
    by_name = {la.name: la for la in with_blobs}
    if all(spec.layer_names[n] in by_name for n in WEIGHT_LAYERS):
        return {n: by_name[spec.layer_names[n]] for n in WEIGHT_LAYERS}
    kinds = [la.kind for la in with_blobs]
    if kinds == ["Convolution"] * 5 + ["InnerProduct"] * 3:
        return dict(zip(WEIGHT_LAYERS, with_blobs))
    missing = next(n for n in WEIGHT_LAYERS if spec.layer_names[n] not in by_name)
    raise CaffeError(
        f"{src}: no weights for layer '{spec.layer_names[missing]}' ({missing}), and its layers with weights "
        f"({', '.join(f'{la.name} ({la.kind})' for la in with_blobs[:10])}) are not 5 convolutions + 3 inner products"
    )


def _state_dict(weights: Any, spec: CaffeNetSpec, model: AlexNet, src: str) -> dict[str, torch.Tensor]:
    """The model's state dict from the caffemodel's blobs, every shape checked, `CAFFE_CONVERSIONS` applied."""
    found = _blob_layers(weights, spec, src)
    state: dict[str, torch.Tensor] = {}
    for name in WEIGHT_LAYERS:
        layer, own = found[name], model.layer(name)
        blobs = list(layer.proto.blobs)
        want_n = 2 if spec.bias[name] else 1
        if len(blobs) != want_n:
            raise CaffeError(f"{src}: {layer.describe()} ({name}) has {len(blobs)} blobs, expected {want_n}")
        w, legacy = _blob_array(blobs[0], f"{name} ('{layer.name}') weight", src)
        want = tuple(own.weight.shape)
        what = f"{name} ('{layer.name}') weight"
        if own.weight.ndim == 4:  # a convolution: OIHW in both conventions
            w = _check_shape(w, False, want, what, "(OIHW)", src)
        elif spec.transpose.get(name):
            w = _check_shape(w, legacy, (want[1], want[0]), what, "(in, out): transpose: true", src).T
        else:
            w = _check_shape(w, legacy, want, what, "(out, in)", src)
        if name == "conv1":
            w = w[:, ::-1]  # BGR -> RGB input channels
        if want_n == 2:
            b, legacy_b = _blob_array(blobs[1], f"{name} ('{layer.name}') bias", src)
            b = _check_shape(b, legacy_b, (want[0],), f"{name} ('{layer.name}') bias", "", src)
        else:
            b = np.zeros(want[0], np.float32)
        prefix = model.layer_prefix(name)
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        state[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(b))
    return state


# --- mean and labels ----------------------------------------------------------------------------------------------
def read_caffe_mean(path: str | Path, *, min_size: int = 1) -> np.ndarray:
    """A ``.binaryproto`` mean image (Caffe's ilsvrc_2012_mean: 1x3x256x256, BGR, 0..255) as float32 (3, H, W)
    in **RGB** order; refused unless it has 3 channels and is at least ``min_size`` on each side (the crop
    is cut from it)."""
    blob = read_binaryproto(path)
    arr, _ = _blob_array(blob, "the mean", str(path))
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise CaffeError(f"{path}: the mean has shape {tuple(arr.shape)}, expected 3 channels (1, 3, H, W) BGR")
    if arr.shape[1] < min_size or arr.shape[2] < min_size:
        raise CaffeError(f"{path}: the mean is {arr.shape[1]}x{arr.shape[2]}, smaller than the net's {min_size} crop")
    bad = int(arr.size - np.isfinite(arr).sum())
    if bad:
        raise CaffeError(f"{path}: the mean holds {bad} NaN or infinite values: the file is corrupt")
    return np.ascontiguousarray(arr[::-1])


_WNID = re.compile(r"^n\d{8}\s+")
_INDEXED = re.compile(r"^(/\S+)\s+(\d+)$")  # Places' categories: "/a/airfield 0"


def read_labels(path: str | Path) -> list[str]:
    """Class names, one per line: ``synset_words.txt``'s ``n01440764 tench, Tinca tinca`` keeps the text after
    the WordNet id; Places' ``/a/airfield 0`` (a /path name, then its index) keeps the name; anything else the
    whole line."""
    path = Path(path)
    if not path.is_file():
        raise CaffeError(f"{path}: no such labels file")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise CaffeError(f"{path}: not a text labels file (one class name per line)") from None
    lines = [line for line in lines if line]
    names = []
    for i, line in enumerate(lines):
        indexed = _INDEXED.match(line)
        if indexed and int(indexed.group(2)) == i:
            names.append(indexed.group(1))
        else:
            names.append(_WNID.sub("", line))
    if not names:
        raise CaffeError(f"{path}: no class names in it")
    return names


def _mean_rgb(
    mean: str | Path | Sequence[float] | None, spec: CaffeNetSpec, src: Path, prototxt: Path | None
) -> tuple[tuple[float, float, float], int | None]:
    """(per-channel RGB mean in 0..255, the mean image's side or None) from ``mean``, else the net's
    transform_param (mean_value; a mean_file found beside the prototxt), else ImageNet's BVLC mean."""
    if mean is None and spec.mean_bgr is not None:
        mean = spec.mean_bgr
    if mean is None and spec.mean_file:
        beside = (prototxt.parent if prototxt is not None else src.parent) / spec.mean_file
        mean = beside if beside.is_file() else None
    if mean is None:
        return BVLC_PREPROCESSING.mean, None  # type: ignore[return-value]
    if isinstance(mean, (str, Path)):
        img = read_caffe_mean(mean, min_size=spec.input_size)
        # Preprocessing carries a per-channel mean: the image's average per channel (as Caffe's examples do)
        return tuple(float(v) for v in img.reshape(3, -1).astype(np.float64).mean(axis=1)), img.shape[1]  # type: ignore[return-value]
    values = [float(v) for v in mean]
    if len(values) != 3:
        raise CaffeError(f"a mean needs 3 values (B, G, R), got {len(values)}")
    return (values[2], values[1], values[0]), None


# --- loading ------------------------------------------------------------------------------------------------------
def load_caffe(
    caffemodel: str | Path,
    prototxt: str | Path | None,
    *,
    mean: str | Path | Sequence[float] | None = None,
    labels: str | Path | Sequence[str] | None = None,
    arch: str | None = None,
) -> tuple[AlexNet, Preprocessing]:
    """Load a Caffe AlexNet: ``(model in eval mode, its Preprocessing)``.

    ``prototxt``: the deploy net definition (None: the definition stored inside the caffemodel, which is the
    training net). ``mean``: a ``.binaryproto`` mean image, or 3 numbers in Caffe's **BGR** order (0..255); default
    the net's transform_param, else ImageNet's BVLC mean. ``labels``: a text file (see `read_labels`) or a list;
    default ImageNet's names when the net has 1000 classes. ``arch``: refuse unless the net is this architecture.
    Caffe feeds ``(pixel - mean) * scale`` with pixels 0..255 BGR; the Preprocessing says the same in RGB:
    value_scale 255, the mean reversed to RGB, std ``1 / scale``.
    """
    src = Path(caffemodel)
    weights = read_caffemodel(src)
    proto_path = Path(prototxt) if prototxt is not None else None
    net = read_prototxt(proto_path) if proto_path is not None else weights
    spec = parse_caffe_net(net, str(proto_path if proto_path is not None else src))
    if arch is not None and arch != spec.arch:
        order = "pooling before LRN" if spec.arch == "caffenet" else "LRN before pooling"
        raise CaffeError(f"{proto_path or src}: the net is {spec.arch} ({order}), not {arch}")
    try:
        model = create_model(spec.arch, num_classes=spec.num_classes, **spec.config_overrides)
    except ValueError as e:
        raise CaffeError(f"{proto_path or src}: {e}") from None
    state = _state_dict(weights, spec, model, str(src))
    check_state_dict(model, state, str(src))
    check_tensor_values(state, str(src))  # one NaN in fc6 would print "nan" for every image
    model.load_state_dict(state)
    mean_rgb, mean_side = _mean_rgb(mean, spec, src, proto_path)
    names = _class_names(labels, spec.num_classes)
    try:
        pre = Preprocessing(
            input_size=spec.input_size,
            resize_size=max(mean_side or 256, spec.input_size),
            mean=mean_rgb,
            std=(1.0 / spec.scale if spec.scale else math.inf,) * 3,
            value_scale=255.0,
            class_names=names,
        )
    except ValueError as e:  # a NaN or absurd mean_value or scale in the net's transform_param
        raise CaffeError(f"{proto_path or src}: {e}") from None
    return model.eval(), pre


def _class_names(labels: str | Path | Sequence[str] | None, num_classes: int) -> list[str] | None:
    if labels is None:
        return imagenet_classes() if num_classes == 1000 else None
    names = read_labels(labels) if isinstance(labels, (str, Path)) else [str(n) for n in labels]
    if len(names) != num_classes:
        raise CaffeError(f"{labels if isinstance(labels, (str, Path)) else 'labels'}: {len(names)} class names for "
                         f"a net with {num_classes} classes")  # fmt: skip
    return names


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(rec: CaffeZooWeights, cached: Path, progress: bool) -> None:
    """Download ``rec.url`` beside ``cached``, check its sha1 (torch hub checks only sha256 prefixes), then move
    it into place: a failed or wrong download leaves nothing in the cache."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".part")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout stays for results (--json)
            torch.hub.download_url_to_file(rec.url, str(tmp), progress=progress)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        raise CaffeError(
            f"cannot download {rec.url} ({msg}); offline? fetch that file elsewhere and place it at {cached}"
        ) from None
    got = _sha1(tmp)
    if got != rec.sha1:
        tmp.unlink(missing_ok=True)
        raise CaffeError(f"{rec.url}: the download fails its sha1 check ({got}, expected {rec.sha1}); nothing cached")
    os.replace(tmp, cached)


def load_caffe_zoo(
    name: str | CaffeZooWeights,
    *,
    labels: str | Path | Sequence[str] | None = None,
    arch: str | None = None,
    model_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[AlexNet, Preprocessing]:
    """Download (once, sha1-checked) and load a `CAFFE_ZOO` model; a file in the cache (placed by hand when
    offline) is used as it is. The caffemodel's own net definition is read (no prototxt needed), with the
    record's mean; ``labels`` names the classes of models that are not ImageNet-1k."""
    rec = CAFFE_ZOO[name] if isinstance(name, str) else name
    if arch is not None and arch != rec.arch:
        raise CaffeError(f"{rec.name}: these are {rec.arch} weights, not {arch}")
    cached = rec.cache_path(model_dir)
    if not cached.exists():
        _download(rec, cached, progress)
    try:
        return load_caffe(cached, None, mean=rec.mean_bgr, labels=labels)
    except CaffeError as e:
        raise CaffeError(f"{e} (delete {cached} to download it again)") from None
