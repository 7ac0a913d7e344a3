"""The tutorial's ``bvlc_alexnet.npy`` layout (Caffe's bvlc_alexnet converted for TensorFlow): reading it, the
exact conversions to and from our state dict (`BVLC_CONVERSIONS`), and writing it (`export_npy`), with the input
normalisation of a model trained on other inputs folded into conv1."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..data.fileio import atomic_write
from ..models import AlexNet, create_model
from ..preprocessing import BVLC_PREPROCESSING, Preprocessing
from ..runtime import unwrap_model
from .base import WeightsError, check_state_dict, check_tensor_values, one_line
from .records import PRETRAINED, PretrainedWeights

__all__ = [
    "BVLC_CONVERSIONS",
    "bvlc_import_differences",
    "bvlc_to_state_dict",
    "export_npy",
    "load_bvlc_npy",
    "read_bvlc_npy",
    "state_dict_to_bvlc",
]

# What differs between the bvlc layout (TensorFlow: NHWC activations, BGR input) and ours (NCHW, RGB). The importer
# and exporter apply exactly these, and nothing else; biases are stored identically.
BVLC_CONVERSIONS: tuple[tuple[str, str], ...] = (
    ("conv1..conv5 weight", "HWIO (kh, kw, in/groups, out) <-> OIHW: numpy transpose (3, 2, 0, 1) / (2, 3, 1, 0)"),
    ("conv1 weight", "input channels BGR <-> RGB: reversed along I"),
    ("fc6..fc8 weight", "(in, out) <-> (out, in): transposed"),
    ("fc6 weight", "its 9216 inputs are pool5 flattened as (h, w, c) in the file, (c, h, w) here: reordered"),
    ("biases", "unchanged"),
)
_PICKLE_WHY = "pickle can run arbitrary code while loading"


def load_bvlc_npy(
    path: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    allow_pickle: bool = False,
    record: PretrainedWeights | None = None,
) -> tuple[AlexNet, Preprocessing]:
    """Load ``bvlc_alexnet.npy``: a pickled dict layer -> [W, b] (see `BVLC_CONVERSIONS`).

    The file does not say whether LRN comes before pooling (``alexnet2012``, BVLC's prototxt) or after it
    (``caffenet``, the tutorial's TensorFlow graph), so the caller chooses ``arch`` (default ``alexnet2012``).
    Its weights were trained by Caffe with LRN k = 1 (the paper says 2), so the config uses k = 1. ``record``
    (default ``PRETRAINED["bvlc_alexnet"]``) gives that default arch, config and preprocessing.
    """
    path = Path(path)
    layers = read_bvlc_npy(path, allow_pickle=allow_pickle)
    rec = record if record is not None else PRETRAINED["bvlc_alexnet"]
    arch = arch or rec.arch
    fc8 = layers.get("fc8")
    if num_classes is None:
        num_classes = int(fc8[0].shape[-1]) if fc8 is not None and fc8[0].ndim == 2 else rec.num_classes
    try:
        model = create_model(arch, num_classes=num_classes)
        if model.config.lrn:
            model = create_model(arch, num_classes=num_classes, **rec.config_overrides)
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from None
    state = bvlc_to_state_dict(layers, model, str(path))
    check_state_dict(model, state, str(path))
    check_tensor_values(state, str(path))
    model.load_state_dict(state)
    pre = Preprocessing.from_dict(rec.preprocessing.to_dict())
    if num_classes != rec.num_classes:
        pre.class_names = None
    return model.eval(), pre


def read_bvlc_npy(path: str | Path, *, allow_pickle: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a bvlc-layout ``.npy`` into ``{layer: (W, b)}`` without converting anything.

    Keys may be ``str`` or ``bytes``; Python 2 pickles store arrays as byte strings, hence ``encoding="latin1"``
    (numpy's advice for Python 2 object arrays). Values may be ``[W, b]`` or ``{"weights": W, "biases": b}``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        obj = np.load(path, allow_pickle=allow_pickle, encoding="latin1")
    except ValueError as e:
        if not allow_pickle and "pickle" in str(e):
            raise WeightsError(
                f"{path}: holds a Python pickle and {_PICKLE_WHY}; load it only if you trust its source, "
                "with --trust-pickle (API: allow_pickle=True)"
            ) from None
        raise WeightsError(f"{path}: not a readable .npy file ({one_line(e)})") from None
    except Exception as e:  # truncated file, corrupt pickle: anything can be raised
        raise WeightsError(f"{path}: not a readable .npy file ({type(e).__name__}: {one_line(e)})") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, Mapping):
        what = f"an array of shape {obj.shape}" if isinstance(obj, np.ndarray) else f"a {type(obj).__name__}"
        raise WeightsError(f"{path}: holds {what}, not the bvlc_alexnet layout (a dict layer -> [W, b])")
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, value in obj.items():
        name = key.decode("latin1") if isinstance(key, bytes) else str(key)
        if isinstance(value, Mapping):
            value = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in value.items()}
            value = [value.get("weights"), value.get("biases")]
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in value)
        ):
            raise WeightsError(f"{path}: layer {name} is not [W, b] (two float arrays), the bvlc_alexnet layout")
        layers[name] = (value[0], value[1])
    return layers


def bvlc_to_state_dict(
    layers: Mapping[str, tuple[np.ndarray, np.ndarray]], model: AlexNet, source: str = "bvlc"
) -> dict[str, torch.Tensor]:
    """Convert ``{layer: (W, b)}`` in the bvlc layout to ``model``'s state dict, checking every layer's shapes
    (expected shapes follow from ``model``) and applying exactly `BVLC_CONVERSIONS`."""
    names = list(model.named_layers())
    missing = [n for n in names if n not in layers]
    unexpected = [n for n in layers if n not in names]
    if missing or unexpected:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(unexpected)}"] if unexpected else []
        raise WeightsError(f"{source}: layers do not match the bvlc_alexnet layout: {'; '.join(parts)}")
    state: dict[str, torch.Tensor] = {}
    for name in names:
        w, b = layers[name]
        own_w = model.layer(name).weight
        expected = _bvlc_shape(tuple(own_w.shape))
        if tuple(w.shape) != expected:
            hint = ""
            if name == "fc8" and w.ndim == 2 and w.shape[0] == expected[0]:
                hint = f"; it has {w.shape[1]} classes: fine-tune (alexnet finetune --reinit fc8) for other classes"
            layout = "HWIO" if len(expected) == 4 else "(in, out)"
            raise WeightsError(f"{source}: {name} W has shape {tuple(w.shape)}, expected {expected} {layout}{hint}")
        if tuple(b.shape) != (own_w.shape[0],):
            raise WeightsError(f"{source}: {name} b has shape {tuple(b.shape)}, expected ({own_w.shape[0]},)")
        w = w.astype(np.float32, copy=False)
        if w.ndim == 4:
            w = w.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            if name == "conv1":
                w = w[:, ::-1]  # BGR -> RGB input channels
        else:
            if name == "fc6":
                w = _fc6_rows_hwc_to_chw(w, model)
            w = w.T  # (in, out) -> (out, in)
        prefix = model.layer_prefix(name)
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        state[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(b.astype(np.float32, copy=False)))
    return state


def _bvlc_shape(torch_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(torch_shape) == 4:  # OIHW -> HWIO
        o, i, h, w = torch_shape
        return (h, w, i, o)
    return (torch_shape[1], torch_shape[0])  # (out, in) -> (in, out)


def _pool5_shape(model: AlexNet) -> tuple[int, int, int]:
    """(C, H, W) of the pooled conv5 maps that fc6 sees flattened: (256, 6, 6) for AlexNet."""
    c = model.config.conv_channels[4]
    side = int(round((model.fc6.in_features // c) ** 0.5))
    if c * side * side != model.fc6.in_features:
        raise WeightsError(f"fc6 takes {model.fc6.in_features} inputs, not C*H*W of a square pool5 with C={c}")
    return c, side, side


def _fc6_rows_hwc_to_chw(w: np.ndarray, model: AlexNet) -> np.ndarray:
    c, h, wd = _pool5_shape(model)
    # (9216, out) rows (h, w, c) -> (6, 6, 256, out) -> (256, 6, 6, out) -> rows (c, h, w)
    return w.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(c * h * wd, -1)


def _fc6_rows_chw_to_hwc(w: np.ndarray, model: AlexNet) -> np.ndarray:
    c, h, wd = _pool5_shape(model)
    return w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)


def state_dict_to_bvlc(model: AlexNet, preprocessing: Preprocessing | None = None) -> dict[str, list[np.ndarray]]:
    """``model``'s weights in the bvlc layout ``{layer: [W, b]}`` (the inverse of `bvlc_to_state_dict`).

    The layout implies BVLC's input (BGR, 0-255, mean subtracted, std 1). If ``preprocessing`` says the model
    was trained on other inputs, that normalisation is folded into conv1 (exact because conv1 has no padding):
    x = a * y + b per channel, so conv1(x) = (W * a) y + (bias + sum W * b).
    """
    model = unwrap_model(model)
    if not isinstance(model, AlexNet):
        raise WeightsError("the bvlc layout needs an alexnet.AlexNet model")
    out: dict[str, list[np.ndarray]] = {}
    for name, layer in model.named_layers().items():
        w = layer.weight.detach().to("cpu", torch.float32)
        b = layer.bias.detach().to("cpu", torch.float32)
        if name == "conv1" and preprocessing is not None and not _bvlc_inputs(preprocessing):
            w, b = _fold_input_normalisation(w, b, preprocessing, model)
        wn = w.numpy()
        if wn.ndim == 4:
            if name == "conv1":
                wn = wn[:, ::-1]  # RGB -> BGR input channels
            wn = wn.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        else:
            wn = wn.T  # (out, in) -> (in, out)
            if name == "fc6":
                wn = _fc6_rows_chw_to_hwc(wn, model)
        out[name] = [np.ascontiguousarray(wn), np.ascontiguousarray(b.numpy())]
    return out


def _bvlc_inputs(pre: Preprocessing) -> bool:
    ref = BVLC_PREPROCESSING
    return bool(
        np.allclose(np.array(pre.mean) / pre.value_scale, np.array(ref.mean) / ref.value_scale, rtol=1e-6, atol=0)
        and np.allclose(np.array(pre.std) / pre.value_scale, np.array(ref.std) / ref.value_scale, rtol=1e-6, atol=0)
    )


def _fold_input_normalisation(
    w: torch.Tensor, b: torch.Tensor, pre: Preprocessing, model: AlexNet
) -> tuple[torch.Tensor, torch.Tensor]:
    if model.config.conv1_padding != 0:
        raise WeightsError(
            "cannot fold this model's input normalisation into conv1 for the bvlc layout: conv1 pads its input "
            "(the padded zeros would change meaning); export models with BVLC preprocessing or no conv1 padding"
        )
    # Our input x = (p / 255 * vs - m) / s; the bvlc file's input y = p - M (RGB here, before the BGR flip).
    vs = pre.value_scale
    m, s = torch.tensor(pre.mean, dtype=torch.float64), torch.tensor(pre.std, dtype=torch.float64)
    big_m = torch.tensor(BVLC_PREPROCESSING.mean, dtype=torch.float64)
    a = vs / (255.0 * s)  # x = a * y + c
    c = (big_m * vs / 255.0 - m) / s
    w64 = w.double()
    new_w = w64 * a.view(1, 3, 1, 1)
    new_b = b.double() + (w64 * c.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
    return new_w.float(), new_b.float()


# AlexNetConfig fields that change no prediction of a loaded model (initialisation, dropout): not compared.
_TRAINING_ONLY = ("init", "dropout", "dropout_before_fc")


def bvlc_import_differences(model: AlexNet, preprocessing: Preprocessing | None = None) -> tuple[str, list[str]]:
    """What `load_bvlc_npy` would rebuild from ``model`` written as ``.npy``: ``(arch to load it with, the
    differences from ``model``)``, each as ``field=rebuilt (this model: value)``; no differences means the file
    loads back as the same function. The layout records no config: the importer builds a registered arch with
    Caffe's LRN k = 1 and BVLC's 227/256 preprocessing, whatever the model was."""
    model = unwrap_model(model)
    if not isinstance(model, AlexNet):
        raise WeightsError("the bvlc layout needs an alexnet.AlexNet model")
    from ..models import list_models

    rec = PRETRAINED["bvlc_alexnet"]
    mine = model.config.to_dict()
    best: tuple[str, list[str]] | None = None
    for arch in [rec.arch] + [a for a in list_models() if a != rec.arch]:
        rebuilt = _rebuilt_config(arch, mine["num_classes"], rec.config_overrides)
        diffs = [
            f"{k}={rebuilt[k]} (this model: {mine[k]})"
            for k in rebuilt
            if k not in _TRAINING_ONLY and rebuilt[k] != mine[k]
        ]
        if preprocessing is not None:
            for k in ("input_size", "resize_size"):
                want = getattr(rec.preprocessing, k)
                if getattr(preprocessing, k) != want and not any(d.startswith(f"{k}=") for d in diffs):
                    diffs.append(f"preprocessing {k}={want} (this model: {getattr(preprocessing, k)})")
        if best is None or len(diffs) < len(best[1]):
            best = (arch, diffs)
    assert best is not None
    return best


def _rebuilt_config(arch: str, num_classes: int, lrn_overrides: Mapping[str, object]) -> dict[str, object]:
    """The config dict `load_bvlc_npy` builds for ``arch``: LRN overrides only where the arch has LRN."""
    from ..models import get_config

    cfg = get_config(arch, num_classes=num_classes)
    if cfg.lrn:
        cfg = get_config(arch, num_classes=num_classes, **lrn_overrides)
    return cfg.to_dict()


def export_npy(model: AlexNet, path: str | Path, *, preprocessing: Preprocessing | None = None) -> Path:
    """Write ``model`` as a bvlc_alexnet-layout ``.npy`` (a pickled dict with str keys) that the tutorial's
    TensorFlow code loads, atomically. npy -> model -> npy is bit-exact (permutes only, float32).
    See `state_dict_to_bvlc` for ``preprocessing``."""
    path = Path(path)
    layers = state_dict_to_bvlc(model, preprocessing)
    arr = np.empty((), dtype=object)
    arr[()] = layers

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a name without it
            np.save(f, arr, allow_pickle=True)

    atomic_write(path, write)
    return path
