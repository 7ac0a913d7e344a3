"""A Caffe net definition (prototxt, or the one a caffemodel carries) read as an AlexNet of this family.

The prototxt decides the architecture: LRN before pooling is ``alexnet2012`` (bvlc_alexnet, the paper), pooling
before LRN is ``caffenet`` (bvlc_reference_caffenet). Grouped convolutions, channel widths, LRN's parameters, the
pooling window, the classes (the last inner product's num_output) and the input size are read from it; layers are
matched by position and kind, so a fine-tune that renamed its classifier (``fc8_flickr``) fits. Anything that is not
an AlexNet of this family is refused with a one-line `CaffeError` naming the first layer that does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..limits import MAX_IMAGE_SIDE
from .caffe_proto import V1_LAYER_TYPES, CaffeError

__all__ = ["CaffeLayer", "CaffeNetSpec", "WEIGHT_LAYERS", "caffe_layers", "parse_caffe_net"]

# current-format type names of the V1 enum values that matter here
_V1_KIND = {
    "CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "POOLING": "Pooling",
    "RELU": "ReLU", "DROPOUT": "Dropout", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "ACCURACY": "Accuracy", "DATA": "Data", "IMAGE_DATA": "ImageData", "MEMORY_DATA": "MemoryData",
    "WINDOW_DATA": "WindowData", "DUMMY_DATA": "DummyData", "HDF5_DATA": "HDF5Data", "SILENCE": "Silence",
    "FLATTEN": "Flatten", "SPLIT": "Split",
}  # fmt: skip
_V1_NAME = {number: name for name, number in V1_LAYER_TYPES.items()}
_INPUT_KINDS = {"Input", "Data", "ImageData", "MemoryData", "WindowData", "DummyData", "HDF5Data", "AnnotatedData"}
_TAIL_KINDS = {"Softmax", "SoftmaxWithLoss", "Accuracy", "Silence", "ArgMax"}  # allowed after fc8 only
WEIGHT_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# (kernel, stride, pad) the model builds for conv2..conv5; conv1's pad is read (config.conv1_padding)
_CONV_GEOMETRY = {
    "conv1": (11, 4, None),
    "conv2": (5, 1, 2),
    "conv3": (3, 1, 1),
    "conv4": (3, 1, 1),
    "conv5": (3, 1, 1),
}


@dataclass
class CaffeLayer:
    """One layer of either format (current ``layer`` or legacy V1 ``layers``), normalised."""

    name: str
    kind: str  # current type name: "Convolution", "InnerProduct", ...
    proto: Any = field(repr=False)

    @property
    def bottom(self) -> list[str]:
        return list(self.proto.bottom)

    @property
    def top(self) -> list[str]:
        return list(self.proto.top)

    def describe(self) -> str:
        return f"layer '{self.name}' ({self.kind})"


def caffe_layers(net: Any) -> list[CaffeLayer]:
    """The layers of a NetParameter in order, from its current ``layer`` or legacy V1 ``layers`` field."""
    out = []
    for lp in net.layer:
        out.append(CaffeLayer(lp.name, lp.type, lp))
    for lp in net.layers:  # a file has one or the other
        enum_name = _V1_NAME.get(lp.type, f"V1 type {lp.type}")
        out.append(CaffeLayer(lp.name, _V1_KIND.get(enum_name, enum_name), lp))
    return out


def _in_test_phase(layer: CaffeLayer) -> bool:
    """Caffe's NetStateRule for a TEST net with level 0 and no stages (what deploy nets are run as)."""

    def meets(rule: Any) -> bool:
        if rule.HasField("phase") and rule.phase != 1:  # 1 = TEST
            return False
        if rule.HasField("min_level") and rule.min_level > 0:
            return False
        if rule.HasField("max_level") and rule.max_level < 0:
            return False
        return not len(rule.stage)

    p = layer.proto
    if len(p.include):
        return any(meets(r) for r in p.include)
    return not any(meets(r) for r in p.exclude)


# --- the net definition -------------------------------------------------------------------------------------------
@dataclass
class CaffeNetSpec:
    """What a Caffe net definition says about the AlexNet it describes."""

    arch: str  # "alexnet2012" (LRN before pooling), "caffenet" (pooling before LRN)
    config_overrides: dict[str, Any]  # AlexNetConfig fields for create_model(arch, **overrides)
    num_classes: int  # the last inner product's num_output
    input_size: int  # the square crop the net takes
    layer_names: dict[str, str]  # our paper name (conv1..fc8) -> the Caffe layer's name ("fc8_flickr")
    transpose: dict[str, bool]  # inner products stored (in, out)
    bias: dict[str, bool]  # weight layers with a bias blob
    mean_bgr: tuple[float, float, float] | None = None  # transform_param mean_value, BGR
    scale: float = 1.0  # transform_param scale: Caffe feeds (pixel - mean) * scale
    mean_file: str | None = None  # transform_param mean_file, as written


def _expected_sequence(order: str) -> list[tuple[str, str]]:
    """The layers of this family in order, (kind, our name); a kind ending in '?' may be absent."""
    norm_pool = {
        "lrn_pool": lambda i: [("LRN", f"norm{i}"), ("Pooling", f"pool{i}")],
        "pool_lrn": lambda i: [("Pooling", f"pool{i}"), ("LRN", f"norm{i}")],
        "pool": lambda i: [("Pooling", f"pool{i}")],
    }[order]
    seq: list[tuple[str, str]] = []
    for i in range(1, 6):
        seq += [("Convolution", f"conv{i}"), ("ReLU", f"relu{i}")]
        if i in (1, 2):
            seq += norm_pool(i)
    seq += [("Pooling", "pool5"), ("Flatten?", "flatten")]
    seq += [("InnerProduct", "fc6"), ("ReLU", "relu6"), ("Dropout?", "drop6")]
    seq += [("InnerProduct", "fc7"), ("ReLU", "relu7"), ("Dropout?", "drop7"), ("InnerProduct", "fc8")]
    return seq


def _match_layers(body: list[CaffeLayer], source: str) -> tuple[dict[str, CaffeLayer], str]:
    """Match the net's layers, by position and kind, to the family's sequence; name the first misfit.
    Returns the matches and the order of LRN and pooling: "lrn_pool", "pool_lrn" or "pool" (no LRN)."""
    if len(body) < 3:
        raise CaffeError(f"{source}: {len(body)} layers, not an AlexNet (conv1, relu1, norm1/pool1, ...)")
    third, fourth = body[2].kind, body[3].kind if len(body) > 3 else ""
    order = "lrn_pool" if third == "LRN" else ("pool_lrn" if fourth == "LRN" else "pool")
    matched: dict[str, CaffeLayer] = {}
    i = 0
    previous: CaffeLayer | None = None
    for kind, ours in _expected_sequence(order):
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        layer = body[i] if i < len(body) else None
        if layer is None or layer.kind != kind:
            if optional:
                continue
            if layer is None:
                raise CaffeError(f"{source}: the net ends after {previous.describe()}; an AlexNet has {ours} next")
            raise CaffeError(f"{source}: {layer.describe()} does not fit an AlexNet: expected {kind} ({ours}) here")
        if previous is not None and (layer.bottom[:1] != previous.top[:1] or len(layer.bottom) != 1):
            raise CaffeError(
                f"{source}: {layer.describe()} reads {layer.bottom}, not the output of '{previous.name}' "
                f"({previous.top[:1]}): not the chain of an AlexNet"
            )
        matched[ours] = layer
        previous = layer
        i += 1
    if i < len(body):
        raise CaffeError(f"{source}: {body[i].describe()} after fc8 ('{previous.name}') does not fit an AlexNet")
    return matched, order


def _one(values: Sequence[int], h: int, w: int, default: int | None, what: str, layer: CaffeLayer, src: str) -> int:
    """A square kernel/stride/pad from Caffe's repeated field or its *_h/*_w pair."""
    vals = [int(v) for v in values] or ([h, w] if h or w else ([] if default is None else [default]))
    if not vals:
        raise CaffeError(f"{src}: {layer.describe()} has no {what}")
    if len(set(vals)) != 1:
        raise CaffeError(f"{src}: {layer.describe()} has a non-square {what} {vals}; AlexNet's are square")
    return vals[0]


def _conv_params(layer: CaffeLayer, ours: str, src: str) -> tuple[int, int, int, int, bool]:
    p = layer.proto.convolution_param
    k = _one(p.kernel_size, p.kernel_h, p.kernel_w, None, "kernel size", layer, src)
    s = _one(p.stride, p.stride_h, p.stride_w, 1, "stride", layer, src)
    pad = _one(p.pad, p.pad_h, p.pad_w, 0, "pad", layer, src)
    want_k, want_s, want_pad = _CONV_GEOMETRY[ours]
    if (k, s) != (want_k, want_s) or (want_pad is not None and pad != want_pad):
        want = f"{want_k}x{want_k} stride {want_s}" + (f" pad {want_pad}" if want_pad is not None else "")
        raise CaffeError(f"{src}: {layer.describe()} is {k}x{k} stride {s} pad {pad}; AlexNet's {ours} is {want}")
    if any(int(d) != 1 for d in p.dilation):
        raise CaffeError(f"{src}: {layer.describe()} is dilated; AlexNet's convolutions are not")
    if not p.num_output:
        raise CaffeError(f"{src}: {layer.describe()} has no num_output")
    return int(p.num_output), pad, int(p.group), k, bool(p.bias_term)


def _pool_params(layer: CaffeLayer, src: str) -> tuple[int, int]:
    p = layer.proto.pooling_param
    if p.pool != 0 or p.global_pooling:
        raise CaffeError(f"{src}: {layer.describe()} is not max pooling; AlexNet max-pools")
    k = _one([p.kernel_size] if p.kernel_size else [], p.kernel_h, p.kernel_w, None, "kernel size", layer, src)
    s = _one([p.stride] if p.HasField("stride") else [], p.stride_h, p.stride_w, 1, "stride", layer, src)
    pad = _one([p.pad] if p.pad else [], p.pad_h, p.pad_w, 0, "pad", layer, src)
    if pad:
        raise CaffeError(f"{src}: {layer.describe()} pads by {pad}; AlexNet's pooling does not pad")
    return k, s


def _f32(value: float) -> float:
    """A float32 field as the decimal written in the prototxt (1e-4, not 9.999999747378752e-05)."""
    return float(str(np.float32(value)))


def _lrn_params(layer: CaffeLayer, src: str) -> tuple[int, float, float, float]:
    p = layer.proto.lrn_param
    if p.norm_region != 0:
        raise CaffeError(f"{src}: {layer.describe()} normalises WITHIN_CHANNEL; AlexNet's LRN is ACROSS_CHANNELS")
    if p.local_size % 2 == 0:
        raise CaffeError(f"{src}: {layer.describe()} has an even local_size {p.local_size} (Caffe needs it odd)")
    return int(p.local_size), _f32(p.alpha), _f32(p.beta), _f32(p.k)


def _input_size(net: Any, layers: list[CaffeLayer], src: str) -> int | None:
    """The crop side from input_shape / input_dim / an Input layer / a data layer's crop_size."""
    shapes = [list(s.dim) for s in net.input_shape] or ([list(net.input_dim[:4])] if len(net.input_dim) >= 4 else [])
    for layer in layers:
        if layer.kind == "Input" and hasattr(layer.proto, "input_param"):
            shapes += [list(s.dim) for s in layer.proto.input_param.shape]
    for dims in shapes:
        if len(dims) != 4 or dims[1] != 3 or dims[2] != dims[3] or not 1 <= dims[2] <= MAX_IMAGE_SIDE:
            raise CaffeError(
                f"{src}: the input is {dims[:8]}; AlexNet takes (N, 3, S, S) images, S from 1 to {MAX_IMAGE_SIDE}"
            )
        return int(dims[2])
    for layer in layers:
        if layer.kind in _INPUT_KINDS:
            crop = layer.proto.transform_param.crop_size or layer.proto.data_param.crop_size
            if crop:
                if crop > MAX_IMAGE_SIDE:
                    raise CaffeError(f"{src}: {layer.describe()} crops {crop}, over the limit of {MAX_IMAGE_SIDE}")
                return int(crop)
    return None


def _transform(layers: list[CaffeLayer], src: str) -> tuple[tuple[float, float, float] | None, float, str | None]:
    for layer in layers:
        if layer.kind in _INPUT_KINDS and layer.proto.HasField("transform_param"):
            t = layer.proto.transform_param
            mean = [_f32(v) for v in t.mean_value]
            if mean and len(mean) not in (1, 3):
                raise CaffeError(f"{src}: {layer.describe()} has {len(mean)} mean_value entries; need 1 or 3 (BGR)")
            bgr = (tuple(mean * 3) if len(mean) == 1 else tuple(mean)) if mean else None
            return bgr, _f32(t.scale), (t.mean_file or None)  # type: ignore[return-value]
    return None, 1.0, None


def _feature_overrides(m: dict[str, CaffeLayer], source: str) -> tuple[dict[str, Any], dict[str, bool]]:
    """AlexNetConfig fields of the convolutional part (widths, groups, pooling, LRN), and which convolutions have
    a bias; refuses what the model cannot express (dense conv1/conv3, one group count, one pooling window)."""
    convs = {n: _conv_params(m[n], n, source) for n in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    groups = {n: c[2] for n, c in convs.items()}
    g = groups["conv2"]
    if groups["conv1"] != 1 or groups["conv3"] != 1 or g not in (1, 2) or groups["conv4"] != g or groups["conv5"] != g:
        raise CaffeError(
            f"{source}: groups {list(groups.values())} for conv1..conv5; this family has 1, g, 1, g, g with g 1 or 2"
        )
    for n in ("relu1", "relu2", "relu3", "relu4", "relu5", "relu6", "relu7"):
        if m[n].proto.relu_param.negative_slope != 0:
            raise CaffeError(f"{source}: {m[n].describe()} is leaky (negative_slope); AlexNet's ReLUs are not")
    pools = {n: _pool_params(m[n], source) for n in ("pool1", "pool2", "pool5")}
    if len(set(pools.values())) != 1:
        raise CaffeError(f"{source}: pool1, pool2, pool5 differ {list(pools.values())}; the model uses one window")
    kernel, stride = pools["pool1"]
    overrides: dict[str, Any] = {
        "conv_channels": tuple(convs[n][0] for n in ("conv1", "conv2", "conv3", "conv4", "conv5")),
        "conv1_padding": convs["conv1"][1],
        "groups": g,
        "pool_kernel": kernel,
        "pool_stride": stride,
        "lrn": "norm1" in m,
    }
    if "norm1" in m:
        lrn = {n: _lrn_params(m[n], source) for n in ("norm1", "norm2")}
        if lrn["norm1"] != lrn["norm2"]:
            raise CaffeError(f"{source}: norm1 and norm2 differ {list(lrn.values())}; the model uses one LRN")
        size, alpha, beta, k = lrn["norm1"]
        overrides.update(lrn_size=size, lrn_alpha=alpha, lrn_beta=beta, lrn_k=k)
    return overrides, {n: c[4] for n, c in convs.items()}


def parse_caffe_net(net: Any, source: str = "prototxt") -> CaffeNetSpec:
    """Read a parsed NetParameter (prototxt or a caffemodel's own definition) as an AlexNet of this family, or
    raise `CaffeError` naming the first layer that does not fit."""
    layers = [la for la in caffe_layers(net) if _in_test_phase(la) or la.kind in _INPUT_KINDS]
    body = [la for la in layers if la.kind not in _INPUT_KINDS]
    while body and body[-1].kind in _TAIL_KINDS:
        body.pop()
    m, order = _match_layers(body, source)
    overrides, conv_bias = _feature_overrides(m, source)
    fcs = {n: m[n].proto.inner_product_param for n in ("fc6", "fc7", "fc8")}
    for n, p in fcs.items():
        if not p.num_output or p.axis != 1:
            raise CaffeError(f"{source}: {m[n].describe()} has no num_output or an axis other than 1")
    if fcs["fc6"].num_output != fcs["fc7"].num_output:
        raise CaffeError(f"{source}: fc6 and fc7 have {fcs['fc6'].num_output} and {fcs['fc7'].num_output} outputs")
    overrides["fc_features"] = int(fcs["fc6"].num_output)
    if "drop6" in m:
        overrides["dropout"] = _f32(m["drop6"].proto.dropout_param.dropout_ratio)
    size = _input_size(net, layers, source) or 227
    overrides["input_size"] = size
    _check_geometry(m, size, overrides, source)
    mean, scale, mean_file = _transform(layers, source)
    return CaffeNetSpec(
        arch="caffenet" if order == "pool_lrn" else "alexnet2012",
        config_overrides=overrides,
        num_classes=int(fcs["fc8"].num_output),
        input_size=size,
        layer_names={n: m[n].name for n in WEIGHT_LAYERS},
        transpose={n: bool(fcs[n].transpose) for n in ("fc6", "fc7", "fc8")},
        bias={**conv_bias, **{n: bool(fcs[n].bias_term) for n in ("fc6", "fc7", "fc8")}},
        mean_bgr=mean,  # type: ignore[arg-type]
        scale=scale,
        mean_file=mean_file,
    )


def _check_geometry(m: dict[str, CaffeLayer], size: int, ov: dict[str, Any], src: str) -> None:
    """Follow the map sizes as Caffe computes them (convolutions round down, pooling rounds up unless
    round_mode is FLOOR) and as PyTorch does (both round down); refuse inputs where they part, or where pool5's
    maps are not the 6x6 that fc6 was built for."""
    s = (size + 2 * ov["conv1_padding"] - 11) // 4 + 1
    k, st = ov["pool_kernel"], ov["pool_stride"]
    for pool in ("pool1", "pool2", "pool5"):
        if s < k:
            raise CaffeError(f"{src}: {m[pool].describe()} gets {s}x{s} maps at input {size}, smaller than its window")
        floor = (s - k) // st + 1
        ceil = -(-(s - k) // st) + 1
        caffe = floor if m[pool].proto.pooling_param.round_mode == 1 else ceil
        if caffe != floor:
            raise CaffeError(
                f"{src}: {m[pool].describe()}: Caffe pools {s}x{s} maps to {caffe}x{caffe} at input {size}, PyTorch "
                f"to {floor}x{floor}; this family needs inputs where they agree (227)"
            )
        s = floor
    if s != 6:
        raise CaffeError(f"{src}: {m['pool5'].describe()} gives {s}x{s} maps at input {size}; AlexNet's fc6 reads 6x6")
