"""Weights: loading and saving every format, and the pretrained records.

Formats: our ``.safetensors`` (weights + JSON metadata: arch, config, preprocessing, class names) and torch
``.pth``/``.pt`` state dicts (`alexnet.weights.io`, which also dispatches by suffix or registry name), the pretrained
records and their download (`records`, `pretrained`), the tutorial's ``bvlc_alexnet.npy`` (`bvlc`), Caffe's
``.caffemodel`` + ``.prototxt`` + ``.binaryproto`` and the model zoo's records (`caffe`, `caffe_net`, `caffe_proto`)
and ONNX export (`onnx`); `base` holds what they share. What a file's inputs must look like is `alexnet.preprocessing`.
Knows nothing of training.
"""

from ..data.fileio import atomic_write
from ..preprocessing import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING, Preprocessing, default_preprocessing
from .base import (
    CaffeError,
    WeightsError,
    check_state_dict,
    check_tensor_values,
    describe_config,
    guess_arch,
    imagenet_classes,
)
from .bvlc import (
    BVLC_CONVERSIONS,
    bvlc_import_differences,
    bvlc_to_state_dict,
    export_npy,
    load_bvlc_npy,
    read_bvlc_npy,
    state_dict_to_bvlc,
)
from .info import format_info, weights_info
from .io import (
    SAVE_FORMATS,
    WeightsSource,
    export_pth,
    load_for_inference,
    load_model,
    save_model,
    save_notes,
    save_weights,
    weights_format,
)
from .onnx import export_onnx, verify_onnx
from .pretrained import load_pretrained, pretrained_record
from .provenance import file_sha256, make_provenance, parent_of, read_metadata, read_provenance
from .records import CAFFE_ZOO, PRETRAINED, CaffeZooWeights, PretrainedWeights

__all__ = [
    "BVLC_CONVERSIONS",
    "BVLC_PREPROCESSING",
    "CAFFE_ZOO",
    "CaffeError",
    "CaffeZooWeights",
    "PRETRAINED",
    "SAVE_FORMATS",
    "TORCHVISION_PREPROCESSING",
    "PretrainedWeights",
    "Preprocessing",
    "WeightsError",
    "WeightsSource",
    "atomic_write",
    "bvlc_import_differences",
    "bvlc_to_state_dict",
    "check_state_dict",
    "check_tensor_values",
    "default_preprocessing",
    "describe_config",
    "export_npy",
    "export_onnx",
    "export_pth",
    "file_sha256",
    "format_info",
    "guess_arch",
    "imagenet_classes",
    "load_bvlc_npy",
    "load_caffe",
    "load_caffe_zoo",
    "load_for_inference",
    "load_model",
    "load_pretrained",
    "make_provenance",
    "parent_of",
    "pretrained_record",
    "read_bvlc_npy",
    "read_metadata",
    "read_provenance",
    "save_model",
    "save_notes",
    "save_weights",
    "state_dict_to_bvlc",
    "verify_onnx",
    "weights_format",
    "weights_info",
]


def __getattr__(name: str) -> object:
    """The Caffe readers on first use: they import protobuf (20 ms), which predict and serve do not need."""
    if name in ("load_caffe", "load_caffe_zoo"):
        from . import caffe

        return getattr(caffe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
