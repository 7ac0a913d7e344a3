"""Reading and writing weights files by their suffix: `load_model` (a registry name, ``.safetensors``,
``.pth``/``.pt`` or a bvlc ``.npy``) and `save_weights` (``.safetensors``, ``.npy``, ``.pth``/``.pt``); our
``.safetensors`` (weights + JSON metadata: arch, config, preprocessing, class names) and torch state dicts are
read and written here, the bvlc layout in `alexnet.weights.bvlc`. Knows nothing of training.
"""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.fileio import atomic_write
from ..models import AlexNet, AlexNetConfig
from ..options import WeightsSource
from ..preprocessing import Preprocessing
from ..runtime import Precision, unwrap_model
from .base import (
    FORMAT_NAME,
    FORMAT_VERSION,
    PTH_METADATA_KEY,
    WeightsError,
    assign_state,
    check_class_names,
    check_state_dict,
    check_tensor_values,
    config_from_metadata,
    describe_config,
    empty_model,
    guess_arch,
    model_from_state_dict,
    one_line,
    preprocessing_from_metadata,
    unwrap_state_dict,
)
from .bvlc import bvlc_import_differences, export_npy, load_bvlc_npy
from .pretrained import load_pretrained
from .provenance import PROVENANCE_KEY, make_provenance
from .records import CAFFE_ZOO, PRETRAINED

__all__ = [
    "SAVE_FORMATS",
    "WeightsSource",
    "export_pth",
    "load_for_inference",
    "load_model",
    "save_model",
    "save_notes",
    "save_weights",
    "weights_format",
]

# What `save_weights` writes for each suffix (convert's DST); `load_model` reads all of them.
SAVE_FORMATS = {".safetensors": "safetensors", ".npy": "npy", ".pth": "pth", ".pt": "pth"}


def load_for_inference(
    source: WeightsSource | str | Path, device: torch.device, precision: Precision
) -> tuple[AlexNet, Preprocessing]:
    """`load_model`, then the model made ready the way predict and serve run it (`Precision.inference_model`):
    eval mode, on ``device``, its weights cast once, in place, to ``precision`` (no second copy of 61M weights:
    the command owns the model)."""
    model, pre = load_model(source)
    return precision.inference_model(model, device, copy=False), pre


def load_model(
    source: WeightsSource | str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    allow_pickle: bool = False,
    prototxt: str | Path | None = None,
    mean: str | Path | Sequence[float] | None = None,
    labels: str | Path | Sequence[str] | None = None,
) -> tuple[AlexNet, Preprocessing]:
    """Load weights from ``source`` and return ``(model in eval mode, its Preprocessing)``.

    ``source``: a `WeightsSource` (how the command line and every library function pass weights), or its
    ``source`` alone with the other fields as keywords (``arch``, ``allow_pickle``, ``prototxt``, ``mean``,
    ``labels``: not both). The name of a pretrained record (`PRETRAINED`: ``"torchvision"``, torchvision's
    IMAGENET1K_V1, downloaded once, hash checked; ``"bvlc_alexnet"``, the tutorial's file placed by hand in the
    cache), a ``.npy`` file in the bvlc_alexnet layout (pickle: needs ``allow_pickle=True``), a ``.pth``/``.pt``
    state dict (loaded with ``weights_only=True``), our ``.safetensors``, a Caffe ``.caffemodel`` (with its deploy
    ``prototxt``, optionally a ``.binaryproto`` ``mean`` and a ``labels`` file: `alexnet.weights.caffe.load_caffe`)
    or a Caffe model zoo name (`CAFFE_ZOO`: ``caffe:NAME``, or NAME alone where no other record has it).
    ``num_classes``: refuse weights whose fc8 has another count.
    The model's ``preprocessing`` attribute is the returned `Preprocessing` too.
    """
    model, pre = _load_any(source, arch, num_classes, allow_pickle, prototxt, mean, labels)
    model.preprocessing = pre
    return model, pre


def _load_any(
    source: str | Path | WeightsSource,
    arch: str | None,
    num_classes: int | None,
    allow_pickle: bool,
    prototxt: str | Path | None,
    mean: str | Path | Sequence[float] | None,
    labels: str | Path | Sequence[str] | None,
) -> tuple[AlexNet, Preprocessing]:
    if isinstance(source, WeightsSource):
        if (arch, allow_pickle, prototxt, mean, labels) != (None, False, None, None, None):
            raise WeightsError("load_model: give arch, allow_pickle, prototxt, mean and labels in the WeightsSource")
        spec = source
    else:
        spec = WeightsSource(
            str(source), arch=arch, allow_pickle=allow_pickle, prototxt=prototxt, mean=mean, labels=labels
        )
    return _load(spec, num_classes)


def _load(spec: WeightsSource, num_classes: int | None) -> tuple[AlexNet, Preprocessing]:
    arch, allow_pickle, prototxt, mean, labels = spec.arch, spec.allow_pickle, spec.prototxt, spec.mean, spec.labels
    source = spec.source
    name = str(source)
    caffe_only = (prototxt, mean, labels) != (None, None, None)
    if name in PRETRAINED and not caffe_only:
        return load_pretrained(name, arch=arch, num_classes=num_classes, allow_pickle=allow_pickle)
    zoo = name.removeprefix("caffe:")
    if zoo in CAFFE_ZOO and (name.startswith("caffe:") or name not in PRETRAINED):
        from .caffe import load_caffe_zoo  # protobuf is imported only for Caffe files

        return _fits(load_caffe_zoo(zoo, labels=labels, arch=arch), num_classes, name)
    path = Path(source)
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file")
    if path.is_dir():
        raise WeightsError(f"{path}: is a directory, not a weights file")
    if not path.is_file():  # opening a FIFO blocks until a writer comes; a device never ends
        raise WeightsError(f"{path}: not a regular file (a pipe or a device), not a weights file")
    suffix = path.suffix.lower()
    if suffix == ".caffemodel":
        if prototxt is None:
            raise WeightsError(
                f"{path}: a .caffemodel needs its deploy net definition: pass --prototxt deploy.prototxt"
            )
        from .caffe import load_caffe

        return _fits(load_caffe(path, prototxt, mean=mean, labels=labels, arch=arch), num_classes, name)
    if caffe_only:
        raise WeightsError(f"{path}: --prototxt, --mean and --labels are for .caffemodel weights")
    if suffix == ".safetensors":
        return _load_safetensors(path, arch, num_classes)
    if suffix in (".pth", ".pt"):
        return _load_pth(path, arch, num_classes)
    if suffix == ".npy":
        return load_bvlc_npy(path, arch=arch, num_classes=num_classes, allow_pickle=allow_pickle)
    raise WeightsError(
        f"{path}: unknown weights format {suffix!r}; expected .safetensors, .pth, .pt, .npy or .caffemodel"
    )


def _fits(loaded: tuple[AlexNet, Preprocessing], num_classes: int | None, source: str) -> tuple[AlexNet, Preprocessing]:
    """``loaded`` when its fc8 has ``num_classes`` outputs (or none is asked for), else a one-line error."""
    have = loaded[0].config.num_classes
    if num_classes is not None and num_classes != have:
        raise WeightsError(
            f"{source}: fc8 has {have} classes, not {num_classes}; fine-tune it with --reinit fc8 for another count"
        )
    return loaded


def weights_format(path: str | Path) -> str:
    """The format `save_weights` writes to ``path`` (``safetensors``, ``npy`` or ``pth``), by its suffix; a
    one-line `WeightsError` for another suffix, so a command can refuse before loading anything."""
    suffix = Path(path).suffix.lower()
    if suffix not in SAVE_FORMATS:
        raise WeightsError(f"{path}: unknown output format {suffix!r}; expected .safetensors, .npy, .pth or .pt")
    return SAVE_FORMATS[suffix]


def save_weights(
    model: AlexNet,
    preprocessing: Preprocessing,
    path: str | Path,
    *,
    arch: str | None = None,
    lossy: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` in the format ``path``'s suffix names (`weights_format`), atomically: our ``.safetensors``
    (`save_model`: weights, arch, config, preprocessing, class names), a bvlc-layout ``.npy`` (`export_npy`, the
    input normalisation folded into conv1) or a ``.pth``/``.pt`` state dict (`export_pth`, the preprocessing and
    class names in its ``_metadata``).

    A ``.npy`` records no config: a model that `load_bvlc_npy` would not rebuild identically (other pooling, LRN k,
    input size; see `bvlc_import_differences`) is refused with the differences, unless ``lossy``. Returns the path;
    `save_notes` says what the written file will not carry. ``provenance``: `alexnet.weights.provenance`'s object
    (recorded by ``.safetensors`` and ``.pth``; the package version and date are always recorded)."""
    fmt = weights_format(path)
    if fmt == "safetensors":
        return save_model(model, preprocessing, path, arch=arch, provenance=provenance)
    if fmt == "npy":
        _, diffs = bvlc_import_differences(model, preprocessing)
        if diffs and not lossy:
            raise WeightsError(
                f"{path}: the bvlc .npy layout cannot express this model: loading it would rebuild "
                f"{'; '.join(diffs)}, which changes its predictions; keep .safetensors (or pass --lossy to write "
                "it anyway)"
            )
        return export_npy(model, path, preprocessing=preprocessing)
    return export_pth(model, path, preprocessing, arch=arch, provenance=provenance)


def save_notes(model: AlexNet, preprocessing: Preprocessing, path: str | Path) -> list[str]:
    """What a file `save_weights` writes to ``path`` loses or needs, one line each, for the user to read: the
    ``.npy`` layout keeps no class names (the tutorial's loader would take an extra entry for a layer) and no
    config (load it with the arch named here; differences when written with ``lossy``). ``.safetensors`` and
    ``.pth`` keep everything."""
    fmt, notes = weights_format(path), []
    model = unwrap_model(model)
    if fmt == "npy":
        arch, diffs = bvlc_import_differences(model, preprocessing)
        if diffs:
            notes.append(f"warning: {path} loads as a different model ({'; '.join(diffs)}): its predictions change")
        if arch != PRETRAINED["bvlc_alexnet"].arch:
            notes.append(f"note: the .npy layout does not record the arch: load {path} with --arch {arch}")
        if preprocessing.class_names and model.config.num_classes != PRETRAINED["bvlc_alexnet"].num_classes:
            notes.append(f"note: the .npy layout keeps no class names: {path} predicts class indices only")
    return notes


# --- our safetensors format ---------------------------------------------------------------------------------------
def save_model(
    model: AlexNet,
    preprocessing: Preprocessing,
    path: str | Path,
    *,
    arch: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Save weights and everything needed to rebuild and feed the model as ``.safetensors`` (atomically), with
    their provenance (`alexnet.weights.provenance.make_provenance`'s keys; the package version and the date are
    always recorded, the rest is None unless given)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: save_model writes .safetensors files")
    model = unwrap_model(model)  # DistributedDataParallel, torch.compile
    if not isinstance(model, AlexNet):
        raise WeightsError("save_model expects an alexnet.AlexNet model")
    names = preprocessing.class_names
    if names is not None and len(names) != model.config.num_classes:
        raise WeightsError(f"{path}: {len(names)} class names for a model with {model.config.num_classes} classes")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = _metadata(model, preprocessing, arch, provenance)
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    return path


def _metadata(
    model: AlexNet, preprocessing: Preprocessing, arch: str | None, provenance: Mapping[str, Any] | None
) -> dict[str, str]:
    """What our files record besides the tensors (strings only: safetensors metadata is str -> str)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": arch or guess_arch(model.config),
        "description": describe_config(model.config),
        "config": json.dumps(model.config.to_dict()),
        "preprocessing": json.dumps(preprocessing.to_dict()),
        PROVENANCE_KEY: json.dumps(make_provenance(**dict(provenance or {}))),
    }


def _load_safetensors(path: Path, arch: str | None, num_classes: int | None) -> tuple[AlexNet, Preprocessing]:
    """Read the header (dtypes, shapes, metadata) and check it all before reading a tensor or building the model:
    a crafted file must cost no more memory than its own size (a 12 MB file whose config asks for a million
    conv1 channels is refused here, not after allocating 14 GB)."""
    from safetensors import SafetensorError, safe_open

    source = str(path)
    try:
        with safe_open(source, framework="pt") as f:
            meta = f.metadata() or {}
            header = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}  # noqa: SIM118
            for k, (dtype, _) in header.items():
                if dtype not in _SAFETENSORS_FLOATS:
                    raise WeightsError(
                        f"{path}: {k} holds {dtype} values, not floating point weights: the file is corrupt or "
                        "not weights of this model"
                    )
            if meta.get("format") == FORMAT_NAME:
                config, pre = _check_metadata(path, meta, {k: v[1] for k, v in header.items()}, arch, num_classes)
            state = {k: f.get_tensor(k) for k in header}
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{path}: not a readable safetensors file ({one_line(e)})") from None
    if meta.get("format") != FORMAT_NAME:
        # A bare safetensors state dict (e.g. from another tool): treat it like a .pth state dict.
        return model_from_state_dict(state, source, arch, num_classes, None)
    check_tensor_values(state, source)
    return assign_state(empty_model(config), state).eval(), pre


_SAFETENSORS_FLOATS = ("F32", "F16", "BF16", "F64")


def _check_metadata(
    path: Path,
    meta: Mapping[str, str],
    shapes: Mapping[str, tuple[int, ...]],
    arch: str | None,
    num_classes: int | None,
) -> tuple[AlexNetConfig, Preprocessing]:
    """Our metadata (.safetensors, or a .pth's ``_metadata`` entry), validated field by field, and the stored
    shapes checked against the config on the meta device: nothing is allocated."""
    source = str(path)
    if "config" not in meta or "preprocessing" not in meta:
        raise WeightsError(f"{path}: corrupt metadata (no {'config' if 'config' not in meta else 'preprocessing'})")
    config = config_from_metadata(meta["config"], source)
    pre = preprocessing_from_metadata(meta["preprocessing"], source)
    check_class_names(pre, config.num_classes, source)
    saved_arch = meta.get("arch", "custom")
    if arch is not None and arch != saved_arch and saved_arch != "custom":
        raise WeightsError(f"{path}: holds {saved_arch} weights, not {arch}; drop --arch {arch}")
    if num_classes is not None and num_classes != config.num_classes:
        raise WeightsError(
            f"{path}: fc8 has {config.num_classes} classes, {num_classes} were asked for; to train a new "
            "classifier on these weights, fine-tune (alexnet finetune --weights ... --reinit fc8)"
        )
    stored = {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}
    check_state_dict(empty_model(config), stored, source)
    return config, pre


# --- torch .pth / .pt state dicts ---------------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped (the tensors read from the page cache as used, no copy)
    where the file's format allows it (zip files since torch 1.6), else read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_pth(path: Path, arch: str | None, num_classes: int | None) -> tuple[AlexNet, Preprocessing]:
    try:
        # weights_only=True: only tensors and plain containers are unpickled, never arbitrary objects (code).
        obj = _torch_load(path)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{path}: holds Python objects besides tensors, refused (loaded with weights_only=True because "
            f"unpickling arbitrary objects can run code): {first[:200]}"
        ) from None
    except Exception as e:  # truncated zip, not a torch file, ...
        raise WeightsError(f"{path}: not a readable torch file ({one_line(e)})") from None
    state = unwrap_state_dict(obj, str(path))
    carried = getattr(obj, "_metadata", None)
    meta = carried.get(PTH_METADATA_KEY) if isinstance(carried, Mapping) else None
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT_NAME:
        return model_from_state_dict(state, str(path), arch, num_classes, None)
    config, pre = _check_metadata(path, meta, {k: tuple(v.shape) for k, v in state.items()}, arch, num_classes)
    check_tensor_values(state, str(path))
    return assign_state(empty_model(config), state).eval(), pre


def export_pth(
    model: AlexNet,
    path: str | Path,
    preprocessing: Preprocessing | None = None,
    *,
    arch: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write the plain state dict (torchvision's keys for ``alexnet_owt``) as ``.pth``, atomically.

    With ``preprocessing``, what `save_model` records (arch, config, preprocessing, class names) travels in the
    state dict's ``_metadata`` under `PTH_METADATA_KEY`: ``load_state_dict`` reads that table by module prefix
    only, so torchvision's ``model.load_state_dict(torch.load(f))`` loads the file as before, and `load_model`
    rebuilds the same model with its class names."""
    path = Path(path)
    model = unwrap_model(model)
    own = model.state_dict()
    state = OrderedDict((k, v.detach().to("cpu").contiguous()) for k, v in own.items())
    table = OrderedDict(getattr(own, "_metadata", {}))
    if preprocessing is not None and isinstance(model, AlexNet):
        check_class_names(preprocessing, model.config.num_classes, str(path))
        table[PTH_METADATA_KEY] = _metadata(model, preprocessing, arch, provenance)
    state._metadata = table  # type: ignore[attr-defined]
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path
