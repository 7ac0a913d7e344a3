"""Tiny Caffe AlexNets for the tests (not collected): a network spec, written as a .caffemodel and a deploy
.prototxt with our protobuf classes (current ``layer`` or legacy V1 ``layers`` format, either LRN order, legacy or
current blob shapes), and a .binaryproto mean. Shared by the Caffe, limits and fine-tuning tests."""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from alexnet.weights.caffe_proto import V1_LAYER_TYPES, BlobProto, NetParameter

CH = (8, 8, 12, 8, 8)  # conv1..conv5 widths: divisible by 2 for the grouped layers, small files
FC = 16
CLASSES = 5
# A large alpha: LRN visibly changes the output. k = 1 (Caffe's default, bvlc's): OpenCV's importer reads LRN's
# "bias", not Caffe's "k", so it always computes k = 1; test_lrn_k_is_read checks k against Caffe's formula.
LRN = {"local_size": 5, "alpha": 0.02, "beta": 0.75, "k": 1.0}
V1 = {"Convolution": "CONVOLUTION", "InnerProduct": "INNER_PRODUCT", "LRN": "LRN", "Pooling": "POOLING",
      "ReLU": "RELU", "Dropout": "DROPOUT", "Softmax": "SOFTMAX", "Data": "DATA"}  # fmt: skip


def _layer_specs(
    order: str, groups: int, fc8_name: str, conv1_kernel: int = 11, lrn=None, ch=CH, fc=FC, classes=CLASSES
) -> list[tuple]:
    """(kind, name, bottom, top, params) of a deploy AlexNet; order "lrn_pool" (alexnet2012) or "pool_lrn"."""
    specs: list[tuple] = []
    prev = "data"

    def add(kind, name, params=None, in_place=False):
        nonlocal prev
        top = prev if in_place else name
        specs.append((kind, name, prev, top, params or {}))
        prev = top

    conv = [(conv1_kernel, 4, 0, 1), (5, 1, 2, groups), (3, 1, 1, 1), (3, 1, 1, groups), (3, 1, 1, groups)]
    for i, (k, s, p, g) in enumerate(conv, start=1):
        params = {"num_output": ch[i - 1], "kernel_size": [k], "stride": [s], "group": g}
        if p:
            params["pad"] = [p]
        add("Convolution", f"conv{i}", {"convolution_param": params})
        add("ReLU", f"relu{i}", in_place=True)
        pool = ("Pooling", f"pool{i}", {"pooling_param": {"pool": 0, "kernel_size": 3, "stride": 2}})
        norm = ("LRN", f"norm{i}", {"lrn_param": lrn or LRN})
        if i in (1, 2):
            for kind, name, params in (norm, pool) if order == "lrn_pool" else (pool, norm):
                add(kind, name, params)
        if i == 5:
            add(*pool)
    for name, n in (("fc6", fc), ("fc7", fc)):
        add("InnerProduct", name, {"inner_product_param": {"num_output": n}})
        add("ReLU", f"relu{name[-1]}", in_place=True)
        add("Dropout", f"drop{name[-1]}", {"dropout_param": {"dropout_ratio": 0.5}}, in_place=True)
    add("InnerProduct", fc8_name, {"inner_product_param": {"num_output": classes}})
    add("Softmax", "prob")
    return specs


def _blob(arr: np.ndarray, legacy: bool):
    b = BlobProto()
    if legacy:  # the deprecated 4D fields, left-padded with 1s, as old caffemodels store them
        b.num, b.channels, b.height, b.width = (1,) * (4 - arr.ndim) + arr.shape
    else:
        b.shape.dim.extend(arr.shape)
    b.data.extend(arr.astype(np.float32).ravel().tolist())
    return b


def _random_blobs(specs, seed: int) -> dict[str, list[np.ndarray]]:
    """Caffe-layout weights (OIHW, (out, in)) drawn here, independently of our importer."""
    rng = np.random.default_rng(seed)
    blobs, cin, side = {}, 3, 227
    for kind, name, _, _, params in specs:
        if kind == "Convolution":
            p = params["convolution_param"]
            k, g = p["kernel_size"][0], p["group"]
            fan_in = cin // g * k * k
            w = rng.normal(0, (2.0 / fan_in) ** 0.5, (p["num_output"], cin // g, k, k))
            blobs[name] = [w, rng.normal(0, 0.1, p["num_output"])]
            cin = p["num_output"]
            side = (side + 2 * p.get("pad", [0])[0] - k) // p["stride"][0] + 1
        elif kind == "Pooling":
            side = (side - 3) // 2 + 1
        elif kind == "InnerProduct":
            n_in = cin * side * side
            n = params["inner_product_param"]["num_output"]
            blobs[name] = [rng.normal(0, (2.0 / n_in) ** 0.5, (n, n_in)), rng.normal(0, 0.1, n)]
            cin, side = n, 1
    return blobs


def _fill(msg, params: dict) -> None:
    for key, value in params.items():
        sub = getattr(msg, key)
        if isinstance(value, dict):
            _fill(sub, value)
        elif isinstance(value, list):
            sub.extend(value)
        else:
            setattr(msg, key, value)


def build_net(specs, fmt: str, blobs=None, *, legacy: bool = False, input_dims=(1, 3, 227, 227)):
    """A NetParameter in the current ``layer`` or the V1 ``layers`` format; with ``blobs``: a caffemodel."""
    net = NetParameter(name="tiny")
    net.input.append("data")
    if fmt == "v1":
        net.input_dim.extend(input_dims)
    else:
        net.input_shape.add().dim.extend(input_dims)
    for kind, name, bottom, top, params in specs:
        if fmt == "v1":
            layer = net.layers.add(name=name, type=V1_LAYER_TYPES[V1[kind]])
        else:
            layer = net.layer.add(name=name, type=kind)
        layer.bottom.append(bottom)
        layer.top.append(top)
        _fill(layer, params)
        for arr in (blobs or {}).get(name, []):
            layer.blobs.append(_blob(arr, legacy))
    return net


def write_model(tmp_path, *, fmt="current", order="lrn_pool", groups=2, fc8_name="fc8", legacy=False, seed=0):
    specs = _layer_specs(order, groups, fc8_name)
    blobs = _random_blobs(specs, seed)
    proto = tmp_path / f"deploy_{fmt}_{order}.prototxt"
    proto.write_text(text_format.MessageToString(build_net(specs, fmt)))
    model = tmp_path / f"w_{fmt}_{order}.caffemodel"
    model.write_bytes(build_net(specs, fmt, blobs, legacy=legacy).SerializeToString())
    return model, proto, blobs


def write_mean(path, shape=(1, 3, 256, 256), bgr=(100.0, 110.0, 120.0)):
    arr = np.empty(shape, np.float32)
    for c in range(shape[1]):
        arr[:, c] = bgr[c] if c < 3 else 0.0
    arr += np.linspace(-5, 5, shape[-1], dtype=np.float32)  # per pixel, averaging to the channel's value
    b = BlobProto(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
    b.data.extend(arr.ravel().tolist())
    path.write_bytes(b.SerializeToString())
    return path
