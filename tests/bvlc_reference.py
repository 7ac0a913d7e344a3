"""An independent NumPy reference of the tutorial's TensorFlow AlexNet graph, for the bvlc import tests.

Written from TensorFlow's documented semantics, sharing no code with alexnet.weights: NHWC activations, HWIO
kernels, grouped convolution as split / convolve / concat along channels, ``tf.nn.local_response_normalization``
(sqr_sum over [d - r, d + r], out = x / (bias + alpha * sqr_sum) ** beta), VALID max-pooling, NHWC flatten,
BGR input. Float64 throughout.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BVLC_MEAN_BGR = np.array([103.939, 116.779, 123.68])
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def conv(x, w, b, stride=1, padding="SAME", groups=1):
    """tf.nn.conv2d(NHWC, HWIO) + bias; the tutorial's grouped convolution is split / convolve / concat."""
    if groups > 1:
        xs = np.split(x, groups, axis=3)
        ws = np.split(w, groups, axis=3)
        out = np.concatenate([conv(xi, wi, 0.0, stride, padding) for xi, wi in zip(xs, ws, strict=True)], axis=3)
        return out + b
    kh, kw = w.shape[:2]
    if padding == "SAME":  # stride 1 here: pad (k - 1) // 2 before, the rest after
        x = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]  # (N, H', W', C, kh, kw)
    return np.tensordot(win, w, axes=([4, 5, 3], [0, 1, 2])) + b  # (N, H', W', O)


def relu(x):
    return np.maximum(x, 0.0)


def lrn(x, depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75):
    """tf.nn.local_response_normalization over the channel axis of NHWC."""
    sq = np.pad(x**2, ((0, 0), (0, 0), (0, 0), (depth_radius, depth_radius)))
    c = x.shape[3]
    sqr_sum = sum(sq[..., i : i + c] for i in range(2 * depth_radius + 1))
    return x / (bias + alpha * sqr_sum) ** beta


def max_pool(x, k=3, s=2):
    """tf.nn.max_pool, VALID."""
    win = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
    return win.max(axis=(-1, -2))


def forward(layers, x_bgr, *, lrn_before_pool=True):
    """Logits of the tutorial's graph. ``layers``: {name: (W, b)} in the bvlc layout; ``x_bgr``: (N, 227, 227, 3)
    BGR, mean subtracted, 0-255 scale."""
    p = {k: (np.asarray(w, np.float64), np.asarray(b, np.float64)) for k, (w, b) in layers.items()}

    def norm_pool(h):
        return max_pool(lrn(h)) if lrn_before_pool else lrn(max_pool(h))

    h = norm_pool(relu(conv(x_bgr, *p["conv1"], stride=4, padding="VALID")))  # (N, 27, 27, 96)
    h = norm_pool(relu(conv(h, *p["conv2"], groups=2)))  # (N, 13, 13, 256)
    h = relu(conv(h, *p["conv3"]))
    h = relu(conv(h, *p["conv4"], groups=2))
    h = relu(conv(h, *p["conv5"], groups=2))
    h = max_pool(h).reshape(len(h), -1)  # (N, 6, 6, 256) -> (N, 9216), NHWC order
    h = relu(h @ p["fc6"][0] + p["fc6"][1])
    h = relu(h @ p["fc7"][0] + p["fc7"][1])
    return h @ p["fc8"][0] + p["fc8"][1]


def random_bvlc_layers(num_classes=10, seed=0):
    """Random float32 weights in the exact bvlc layout (HWIO, (in, out), fc6 rows in (h, w, c) order), scaled so
    activations stay O(1..100): large enough that LRN (and its order) changes the result."""
    rng = np.random.default_rng(seed)
    shapes = {
        "conv1": (11, 11, 3, 96),
        "conv2": (5, 5, 48, 256),
        "conv3": (3, 3, 256, 384),
        "conv4": (3, 3, 192, 384),
        "conv5": (3, 3, 192, 256),
        "fc6": (9216, 4096),
        "fc7": (4096, 4096),
        "fc8": (4096, num_classes),
    }
    out = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[:-1]))
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        b = rng.standard_normal(shape[-1], dtype=np.float32) * np.float32(0.1)
        out[name] = (w, b)
    return out


class _Py2Pickler(pickle._Pickler):
    """Pickles ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as Python 2 pickled numpy arrays and
    str keys, so that the file reads like one written by Python 2 (it needs ``encoding="latin1"``)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_py2_npy(path, layers):
    """Write ``{name: (W, b)}`` as bvlc_alexnet.npy was written: a 0-d object array holding a dict of
    [W, b] lists, pickled by Python 2 (keys and array data as Python 2 strings)."""
    arr = np.empty((), dtype=object)
    arr[()] = {name.encode(): [w, b] for name, (w, b) in layers.items()}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        _Py2Pickler(f, protocol=2).dump(arr)
