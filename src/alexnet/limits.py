"""The one table of upper bounds on what an `AlexNetConfig` (and the preprocessing and Caffe files that feed one)
may ask for, and the memory a config implies, estimated by arithmetic before anything is built.

A weights file's metadata or a Caffe prototxt is untrusted input: ``conv1_padding = 8000`` in a 117 KB file once
took 3.2 GB and 22 s to predict one image, ``lrn_size = 3000000`` hung past 100 s. Every bound below is far above
what the paper (Krizhevsky et al. 2012, section 3) or any AlexNet variant uses, and far below what hurts a machine;
docs/RELIABILITY.md shows the same table. No torch here: the command line and the configs check before importing it.
"""

from __future__ import annotations

from typing import Any

from .errors import AlexnetError

__all__ = [
    "MAX_ACTIVATION_BYTES",
    "MAX_IMAGE_SIDE",
    "MAX_PARAMETERS",
    "MODEL_LIMITS",
    "ONNX_OPSETS",
    "LimitError",
    "check_model_limits",
    "check_opset",
    "check_side",
    "estimate_model",
]

# field: (the most a config may ask for, what a real AlexNet uses). conv_channels bounds each of its 5 values.
MODEL_LIMITS: dict[str, tuple[float, str]] = {
    "num_classes": (100_000, "ImageNet has 1000, ImageNet-21k 21841"),
    "in_channels": (16, "RGB: 3"),
    "conv_channels": (4096, "the paper's widest is 384"),
    "conv1_padding": (10, "the paper 0, torchvision 2; conv1's kernel is 11"),
    "lrn_size": (64, "the paper's n = 5"),
    "lrn_alpha": (1.0, "the paper's 1e-4"),
    "lrn_beta": (10.0, "the paper's 0.75"),
    "lrn_k": (100.0, "the paper's 2, Caffe's 1"),
    "pool_kernel": (8, "the paper's 3, traditional pooling's 2"),
    "pool_stride": (8, "the paper's 2"),
    "fc_features": (16384, "the paper's 4096"),
    "input_size": (1024, "the paper's 227, torchvision's 224"),
}
# The side of a model's input and of the resize before the crop (Preprocessing.input_size, resize_size).
MAX_IMAGE_SIDE = 1024
# AlexNet has 61M weights (244 MB in float32); this is 8x that.
MAX_PARAMETERS = 500_000_000
# One image's float32 activations through the whole forward pass (the paper's network: 9 MB at 227x227).
MAX_ACTIVATION_BYTES = 1 << 30

# The ONNX opsets `alexnet export` writes: torch.onnx's exporter builds opset 18 and converts upwards; below 18 its
# converter fails (the file stayed at 18) and above 23 it is untested by torch.
ONNX_OPSETS = (18, 23)


class LimitError(AlexnetError, ValueError):
    """A config, preprocessing or Caffe field over `MODEL_LIMITS`, or a config whose memory is over the bounds.
    A ValueError too: the readers of weights files turn it into their own one-line error, naming the file."""


def check_opset(opset: int) -> int:
    """``opset`` when `export` can write it (`ONNX_OPSETS`), else a one-line `LimitError` stating the range."""
    low, high = ONNX_OPSETS
    if not low <= opset <= high:
        raise LimitError(f"ONNX opset {opset} is not supported: choose {low} to {high} (default {low})")
    return opset


def check_side(name: str, value: int) -> None:
    """Refuse an image side (input_size, resize_size, a Caffe input dim) over `MAX_IMAGE_SIDE`."""
    if value > MAX_IMAGE_SIDE:
        raise LimitError(f"{name} = {value} is over the limit of {MAX_IMAGE_SIDE} (the paper: 227 inside 256)")


def check_model_limits(config: Any) -> None:
    """Raise `LimitError` naming the first field of ``config`` (an `AlexNetConfig`, already type-checked) over
    `MODEL_LIMITS`, then if the network it describes would pass `MAX_PARAMETERS` or `MAX_ACTIVATION_BYTES`: a
    crafted file is refused in microseconds, before a tensor is allocated."""
    for name, (most, real) in MODEL_LIMITS.items():
        values = getattr(config, name)
        many = isinstance(values, (tuple, list))
        for i, value in enumerate(values if many else (values,)):
            if value > most:
                label = f"{name}[{i}] (conv{i + 1})" if many else name
                shown = value if isinstance(value, int) else f"{value:g}"
                raise LimitError(f"{label} = {shown} is over the limit of {most:g} ({real})")
    params, activations = estimate_model(config)
    if params > MAX_PARAMETERS:
        raise LimitError(
            f"this config has {params / 1e6:,.0f}M weights, over the limit of {MAX_PARAMETERS / 1e6:,.0f}M "
            "(AlexNet has 61M): narrow conv_channels, fc_features or num_classes"
        )
    if activations > MAX_ACTIVATION_BYTES:
        raise LimitError(
            f"this config needs {activations / 2**20:,.0f} MiB of activations per image at input_size "
            f"{config.input_size}, over the limit of {MAX_ACTIVATION_BYTES / 2**20:,.0f} MiB (AlexNet: 9 MiB)"
        )


def estimate_model(config: Any) -> tuple[int, int]:
    """(weights, float32 activation bytes of one image at ``config.input_size``) of the network `AlexNet` builds
    from ``config``, by shape arithmetic (PyTorch's: convolutions and pooling round down)."""
    ch, g, fc = list(config.conv_channels), config.groups, config.fc_features
    kernels = ((11, 4, config.conv1_padding, 1), (5, 1, 2, g), (3, 1, 1, 1), (3, 1, 1, g), (3, 1, 1, g))
    cin, side, params, floats = config.in_channels, config.input_size, 0, 0
    for i, (k, stride, pad, groups) in enumerate(kernels):
        params += cin // groups * ch[i] * k * k + ch[i]
        side = max(0, (side + 2 * pad - k) // stride + 1)
        floats += 2 * ch[i] * side * side  # the convolution's output and its activation
        if i in (0, 1, 4):  # LRN (conv1, conv2) and max-pooling after conv1, conv2, conv5
            floats += ch[i] * side * side * (2 if config.lrn and i < 2 else 1)
            side = max(0, (side - config.pool_kernel) // config.pool_stride + 1)
        cin = ch[i]
    params += ch[4] * 36 * fc + fc + fc * fc + fc + fc * config.num_classes + config.num_classes
    floats += 4 * fc + config.num_classes
    return params, 4 * floats
