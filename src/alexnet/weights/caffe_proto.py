"""The part of Caffe's ``caffe.proto`` (BVLC/caffe, ``src/caffe/proto/caffe.proto``) that AlexNet files need,
as protobuf message classes built at import time, and readers for ``.caffemodel``, ``.prototxt`` and
``.binaryproto`` files that use them.

No hand-written wire decoding: the ``protobuf`` package parses everything. The field numbers, types and defaults
below are Caffe's own (proto2), so files written by Caffe parse exactly; fields not listed here are kept as unknown
fields by the binary parser and skipped by the text parser (a deploy prototxt carries many training-only settings:
fillers, learning-rate multipliers, data sources). The classes live in a private descriptor pool, so they never
clash with a ``caffe_pb2`` that another package may register.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import DecodeError, Message

from .base import CaffeError

__all__ = [
    "CaffeError",
    "NetParameter",
    "BlobProto",
    "BlobShape",
    "LayerParameter",
    "V1LayerParameter",
    "V1_LAYER_TYPES",
    "read_caffemodel",
    "read_prototxt",
    "read_binaryproto",
]


_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_SCALAR = {
    "string": _F.TYPE_STRING,
    "bool": _F.TYPE_BOOL,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
}

# Caffe's V1LayerParameter.LayerType (the legacy ``layers`` field of old zoo models).
V1_LAYER_TYPES: dict[str, int] = {
    "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
    "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
    "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11,
    "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
    "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33,
    "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31,
}  # fmt: skip

# message -> enums nested in it: {enum name: {value name: number}}
_ENUMS: dict[str, dict[str, dict[str, int]]] = {
    "V1LayerParameter": {"LayerType": V1_LAYER_TYPES},
    "LRNParameter": {"NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}},
    "PoolingParameter": {"PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}, "RoundMode": {"CEIL": 0, "FLOOR": 1}},
}
_TOP_ENUMS = {"Phase": {"TRAIN": 0, "TEST": 1}}

# message -> fields (name, number, repeated?, type, default or None, packed?). Types: a scalar name above, a message
# name, or "enum:Name" (nested in the same message, or top-level). Numbers, types and defaults from caffe.proto.
_MESSAGES: dict[str, list[tuple[str, int, bool, str, str | None, bool]]] = {
    "BlobShape": [("dim", 1, True, "int64", None, True)],
    "BlobProto": [
        ("num", 1, False, "int64", "0", False),  # 4D dimensions: deprecated, old files use them
        ("channels", 2, False, "int64", "0", False),
        ("height", 3, False, "int64", "0", False),
        ("width", 4, False, "int64", "0", False),
        ("data", 5, True, "float", None, True),
        ("diff", 6, True, "float", None, True),
        ("shape", 7, False, "BlobShape", None, False),
        ("double_data", 8, True, "double", None, True),
        ("double_diff", 9, True, "double", None, True),
    ],
    "NetState": [
        ("phase", 1, False, "enum:Phase", "TEST", False),
        ("level", 2, False, "int32", "0", False),
        ("stage", 3, True, "string", None, False),
    ],
    "NetStateRule": [
        ("phase", 1, False, "enum:Phase", None, False),
        ("min_level", 2, False, "int32", None, False),
        ("max_level", 3, False, "int32", None, False),
        ("stage", 4, True, "string", None, False),
        ("not_stage", 5, True, "string", None, False),
    ],
    "ParamSpec": [
        ("name", 1, False, "string", None, False),
        ("lr_mult", 3, False, "float", "1", False),
        ("decay_mult", 4, False, "float", "1", False),
    ],
    "FillerParameter": [
        ("type", 1, False, "string", "constant", False),
        ("value", 2, False, "float", "0", False),
        ("min", 3, False, "float", "0", False),
        ("max", 4, False, "float", "1", False),
        ("mean", 5, False, "float", "0", False),
        ("std", 6, False, "float", "1", False),
        ("sparse", 7, False, "int32", "-1", False),
    ],
    "TransformationParameter": [
        ("scale", 1, False, "float", "1", False),
        ("mirror", 2, False, "bool", "false", False),
        ("crop_size", 3, False, "uint32", "0", False),
        ("mean_file", 4, False, "string", None, False),
        ("mean_value", 5, True, "float", None, False),
        ("force_color", 6, False, "bool", "false", False),
        ("force_gray", 7, False, "bool", "false", False),
    ],
    "ConvolutionParameter": [
        ("num_output", 1, False, "uint32", None, False),
        ("bias_term", 2, False, "bool", "true", False),
        ("pad", 3, True, "uint32", None, False),
        ("kernel_size", 4, True, "uint32", None, False),
        ("group", 5, False, "uint32", "1", False),
        ("stride", 6, True, "uint32", None, False),
        ("weight_filler", 7, False, "FillerParameter", None, False),
        ("bias_filler", 8, False, "FillerParameter", None, False),
        ("pad_h", 9, False, "uint32", "0", False),
        ("pad_w", 10, False, "uint32", "0", False),
        ("kernel_h", 11, False, "uint32", None, False),
        ("kernel_w", 12, False, "uint32", None, False),
        ("stride_h", 13, False, "uint32", None, False),
        ("stride_w", 14, False, "uint32", None, False),
        ("axis", 16, False, "int32", "1", False),
        ("dilation", 18, True, "uint32", None, False),
    ],
    "InnerProductParameter": [
        ("num_output", 1, False, "uint32", None, False),
        ("bias_term", 2, False, "bool", "true", False),
        ("weight_filler", 3, False, "FillerParameter", None, False),
        ("bias_filler", 4, False, "FillerParameter", None, False),
        ("axis", 5, False, "int32", "1", False),
        ("transpose", 6, False, "bool", "false", False),
    ],
    "LRNParameter": [
        ("local_size", 1, False, "uint32", "5", False),
        ("alpha", 2, False, "float", "1", False),
        ("beta", 3, False, "float", "0.75", False),
        ("norm_region", 4, False, "enum:NormRegion", "ACROSS_CHANNELS", False),
        ("k", 5, False, "float", "1", False),
    ],
    "PoolingParameter": [
        ("pool", 1, False, "enum:PoolMethod", "MAX", False),
        ("kernel_size", 2, False, "uint32", None, False),
        ("stride", 3, False, "uint32", "1", False),
        ("pad", 4, False, "uint32", "0", False),
        ("kernel_h", 5, False, "uint32", None, False),
        ("kernel_w", 6, False, "uint32", None, False),
        ("stride_h", 7, False, "uint32", None, False),
        ("stride_w", 8, False, "uint32", None, False),
        ("pad_h", 9, False, "uint32", "0", False),
        ("pad_w", 10, False, "uint32", "0", False),
        ("global_pooling", 12, False, "bool", "false", False),
        ("round_mode", 13, False, "enum:RoundMode", "CEIL", False),
    ],
    "DropoutParameter": [("dropout_ratio", 1, False, "float", "0.5", False)],
    "ReLUParameter": [("negative_slope", 1, False, "float", "0", False)],
    "InputParameter": [("shape", 1, True, "BlobShape", None, False)],
    "DataParameter": [  # its scale / mean_file / crop_size / mirror are deprecated but used by V1-era nets
        ("source", 1, False, "string", None, False),
        ("scale", 2, False, "float", "1", False),
        ("mean_file", 3, False, "string", None, False),
        ("batch_size", 4, False, "uint32", None, False),
        ("crop_size", 5, False, "uint32", "0", False),
        ("mirror", 6, False, "bool", "false", False),
    ],
    "LayerParameter": [
        ("name", 1, False, "string", None, False),
        ("type", 2, False, "string", None, False),
        ("bottom", 3, True, "string", None, False),
        ("top", 4, True, "string", None, False),
        ("loss_weight", 5, True, "float", None, False),
        ("param", 6, True, "ParamSpec", None, False),
        ("blobs", 7, True, "BlobProto", None, False),
        ("include", 8, True, "NetStateRule", None, False),
        ("exclude", 9, True, "NetStateRule", None, False),
        ("phase", 10, False, "enum:Phase", None, False),
        ("transform_param", 100, False, "TransformationParameter", None, False),
        ("convolution_param", 106, False, "ConvolutionParameter", None, False),
        ("data_param", 107, False, "DataParameter", None, False),
        ("dropout_param", 108, False, "DropoutParameter", None, False),
        ("inner_product_param", 117, False, "InnerProductParameter", None, False),
        ("lrn_param", 118, False, "LRNParameter", None, False),
        ("pooling_param", 121, False, "PoolingParameter", None, False),
        ("relu_param", 123, False, "ReLUParameter", None, False),
        ("input_param", 143, False, "InputParameter", None, False),
    ],
    "V1LayerParameter": [
        ("bottom", 2, True, "string", None, False),
        ("top", 3, True, "string", None, False),
        ("name", 4, False, "string", None, False),
        ("type", 5, False, "enum:LayerType", None, False),
        ("blobs", 6, True, "BlobProto", None, False),
        ("blobs_lr", 7, True, "float", None, False),
        ("weight_decay", 8, True, "float", None, False),
        ("convolution_param", 10, False, "ConvolutionParameter", None, False),
        ("data_param", 11, False, "DataParameter", None, False),
        ("dropout_param", 12, False, "DropoutParameter", None, False),
        ("inner_product_param", 17, False, "InnerProductParameter", None, False),
        ("lrn_param", 18, False, "LRNParameter", None, False),
        ("pooling_param", 19, False, "PoolingParameter", None, False),
        ("relu_param", 30, False, "ReLUParameter", None, False),
        ("include", 32, True, "NetStateRule", None, False),
        ("exclude", 33, True, "NetStateRule", None, False),
        ("loss_weight", 35, True, "float", None, False),
        ("transform_param", 36, False, "TransformationParameter", None, False),
        ("param", 1001, True, "string", None, False),
    ],
    "NetParameter": [
        ("name", 1, False, "string", None, False),
        ("layers", 2, True, "V1LayerParameter", None, False),  # deprecated: V1 nets (old zoo models)
        ("input", 3, True, "string", None, False),
        ("input_dim", 4, True, "int32", None, False),
        ("force_backward", 5, False, "bool", "false", False),
        ("state", 6, False, "NetState", None, False),
        ("input_shape", 8, True, "BlobShape", None, False),
        ("layer", 100, True, "LayerParameter", None, False),
    ],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="alexnet/caffe_subset.proto", package="caffe", syntax="proto2")
    for name, values in _TOP_ENUMS.items():
        e = fdp.enum_type.add(name=name)
        for vname, number in values.items():
            e.value.add(name=vname, number=number)
    for mname, fields in _MESSAGES.items():
        msg = fdp.message_type.add(name=mname)
        nested = _ENUMS.get(mname, {})
        for ename, values in nested.items():
            e = msg.enum_type.add(name=ename)
            for vname, number in values.items():
                e.value.add(name=vname, number=number)
        for fname, number, repeated, ftype, default, packed in fields:
            f = msg.field.add(name=fname, number=number, label=_REP if repeated else _OPT)
            if ftype in _SCALAR:
                f.type = _SCALAR[ftype]
            elif ftype.startswith("enum:"):
                ename = ftype[5:]
                f.type = _F.TYPE_ENUM
                f.type_name = f".caffe.{mname}.{ename}" if ename in nested else f".caffe.{ename}"
            else:
                f.type, f.type_name = _F.TYPE_MESSAGE, f".caffe.{ftype}"
            if default is not None:
                f.default_value = default
            if packed:
                f.options.packed = True
    return fdp


def _build_classes() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()  # private: never clashes with another package's caffe_pb2
    file_desc = pool.Add(_file_descriptor())
    file_desc = pool.FindFileByName("alexnet/caffe_subset.proto") if file_desc is None else file_desc
    classes = {}
    for name in _MESSAGES:
        desc = pool.FindMessageTypeByName(f"caffe.{name}")
        if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
            classes[name] = message_factory.GetMessageClass(desc)
        else:  # protobuf 4.21
            classes[name] = message_factory.MessageFactory(pool).GetPrototype(desc)
    return classes


_CLASSES = _build_classes()
NetParameter: Any = _CLASSES["NetParameter"]
BlobProto: Any = _CLASSES["BlobProto"]
BlobShape: Any = _CLASSES["BlobShape"]
LayerParameter: Any = _CLASSES["LayerParameter"]
V1LayerParameter: Any = _CLASSES["V1LayerParameter"]


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise CaffeError(f"{path}: no such {what} file" if not path.exists() else f"{path}: not a {what} file")
    return path.read_bytes()


def _parse_binary(cls: Any, path: Path, what: str) -> Any:
    data = _read_bytes(path, what)
    msg = cls()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise CaffeError(f"{path}: not a readable {what} (truncated or corrupt: {detail})") from None
    return msg


def read_caffemodel(path: str | Path) -> Any:
    """Parse a binary ``.caffemodel`` (a serialised NetParameter: the layers with their blobs) into `NetParameter`."""
    path = Path(path)
    net = _parse_binary(NetParameter, path, "caffemodel")
    if not len(net.layer) and not len(net.layers):
        raise CaffeError(f"{path}: not a caffemodel (no layers in it)")
    return net


def read_binaryproto(path: str | Path) -> Any:
    """Parse a binary ``.binaryproto`` (one serialised BlobProto, e.g. Caffe's mean image) into `BlobProto`."""
    path = Path(path)
    blob = _parse_binary(BlobProto, path, "binaryproto")
    if not len(blob.data) and not len(blob.double_data):
        raise CaffeError(f"{path}: not a Caffe blob (.binaryproto): it holds no data")
    return blob


def read_prototxt(path: str | Path) -> Any:
    """Parse a text ``.prototxt`` net definition into `NetParameter` with protobuf's text format.

    Fields this subset does not define (fillers' variance_norm, engines, data sources of other layer kinds, other
    networks' layer parameters) are skipped, not refused: a layer's type is what decides whether it fits."""
    path = Path(path)
    try:
        text = _read_bytes(path, "prototxt").decode("utf-8")
    except UnicodeDecodeError:
        raise CaffeError(
            f"{path}: not a text prototxt (not UTF-8; a binary .caffemodel given as --prototxt?)"
        ) from None
    net = NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=True)
    except text_format.ParseError as e:
        raise CaffeError(f"{path}: not a readable prototxt ({' '.join(str(e).split())[:200]})") from None
    except RecursionError:  # protobuf's text parser recurses once per nested message: a crafted 50,000-deep file
        raise CaffeError(f"{path}: not a readable prototxt (its messages are nested too deep to be a net)") from None
    if not len(net.layer) and not len(net.layers):
        raise CaffeError(f"{path}: not a Caffe net definition (no layers in it)")
    return net
