"""Weights: what a weights file's inputs must look like (`Preprocessing`), and loading/saving every format.

Formats: our ``.safetensors`` (weights + JSON metadata: arch, config, preprocessing, class names), torch
``.pth``/``.pt`` state dicts (torchvision's layout or ours), the tutorial's ``bvlc_alexnet.npy``, torchvision's
pretrained weights through its weights API, and ONNX export. Knows nothing of training.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from .data import transforms as T
from .data.fileio import atomic_write
from .errors import AlexnetError
from .models import AlexNet, AlexNetConfig, create_model, get_config

__all__ = [
    "WeightsError",
    "Preprocessing",
    "TORCHVISION_PREPROCESSING",
    "BVLC_PREPROCESSING",
    "load_model",
    "save_model",
    "check_state_dict",
    "atomic_write",
    "PretrainedWeights",
    "PRETRAINED",
    "load_pretrained",
    "BVLC_CONVERSIONS",
    "read_bvlc_npy",
    "bvlc_to_state_dict",
    "state_dict_to_bvlc",
    "export_npy",
    "export_pth",
    "export_onnx",
    "verify_onnx",
    "imagenet_classes",
]

FORMAT_NAME = "alexnet"
FORMAT_VERSION = "1"


class WeightsError(AlexnetError, ValueError):
    """A weights file that cannot be used as asked; the message is one line for the user."""


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
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values (R, G, B)")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.input_size < 1 or self.resize_size < self.input_size:
            raise ValueError(f"need 1 <= input_size <= resize_size, got {self.input_size}, {self.resize_size}")
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]

    # --- transforms ---------------------------------------------------------------------------------------------
    def normalizer(self) -> nn.Module:
        """uint8 image or batch -> normalised float; runs on any device."""
        return T.Normalizer(self.mean, self.std, self.value_scale)

    def eval_transform(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 (3, H, W) -> float (3, S, S): short side to resize_size, centre crop, normalise."""
        return T.eval_transform(self.resize_size, self.input_size, self.mean, self.std, self.value_scale)

    def train_transform(self, *, flip: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 (3, H, W) -> float (3, S, S): the paper's random crop and flip, then normalise."""
        return T.train_transform(self.resize_size, self.input_size, self.mean, self.std, self.value_scale, flip)

    def ten_crop_transform(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 (3, H, W) -> float (10, 3, S, S): the paper's 10 test patches, normalised."""
        geometry, norm = self.geometry(False, ten_crop=True), self.normalizer()
        return lambda img: norm(geometry(img))

    def geometry(self, train: bool, *, ten_crop: bool = False) -> nn.Module:
        """The uint8 part of the pipeline, for loader workers: uint8 (3, H, W) -> uint8 (3, S, S), or
        (10, 3, S, S) with ``ten_crop`` (the paper's test patches, section 4.1). Train: the central
        resize_size square, a random input_size patch and a random mirror (section 4.1); eval: torchvision's
        resize and centre crop. Its ``min_size`` lets the decoder shrink JPEGs in the DCT domain."""
        if ten_crop:
            return T.TenCrop(self.resize_size, self.input_size)
        if train:
            return T.train_geometry(self.resize_size, self.input_size)
        return T.eval_geometry(self.resize_size, self.input_size)

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
                raise ValueError("per_pixel_mean needs stats with a mean image (alexnet stats writes one)")
            mean_image = torch.as_tensor(stats.mean_image, dtype=torch.float32)
        module = T.BatchTransform(
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
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# torchvision's AlexNet_Weights.IMAGENET1K_V1 preset (ImageClassification: resize 256, crop 224).
TORCHVISION_PREPROCESSING = Preprocessing(input_size=224, resize_size=256)
# The tutorial's bvlc_alexnet.npy: Caffe's 227 crop, 0-255 pixels, ImageNet mean in RGB order, no std.
BVLC_PREPROCESSING = Preprocessing(
    input_size=227, resize_size=256, mean=(123.68, 116.779, 103.939), std=(1.0, 1.0, 1.0), value_scale=255.0
)


def default_preprocessing(config: AlexNetConfig, class_names: Sequence[str] | None = None) -> Preprocessing:
    """Preprocessing for a freshly created model: ImageNet mean/std in [0, 1], the config's input size."""
    return Preprocessing(input_size=config.input_size, class_names=list(class_names) if class_names else None)


# --- helpers ------------------------------------------------------------------------------------------------------
def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise `WeightsError` unless ``state`` has exactly ``model``'s keys and shapes; name the first problem
    by the paper's layer name where possible, and point to fine-tuning when only fc8's classes differ."""
    own = model.state_dict()
    names = _prefix_to_paper_name(model)

    def pretty(key: str) -> str:
        prefix, _, leaf = key.rpartition(".")
        return f"{names[prefix]}.{leaf} ({key})" if prefix in names else key

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(pretty(k) for k in missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            more = " ..." if len(unexpected) > 4 else ""
            parts.append(f"unexpected {', '.join(unexpected[:4])}{more}")
        raise WeightsError(f"{source}: keys do not match the model: {'; '.join(parts)}")
    for k, v in own.items():
        got = tuple(state[k].shape)
        if got != tuple(v.shape):
            if isinstance(model, AlexNet) and k.startswith(model.layer_prefix("fc8")):
                raise WeightsError(
                    f"{source}: fc8 has {got[0]} classes, the model asks for {v.shape[0]}; to train a new "
                    "classifier on these weights, fine-tune (alexnet finetune --weights ... --reinit fc8)"
                )
            raise WeightsError(f"{source}: {pretty(k)} has shape {got}, expected {tuple(v.shape)}")


def _prefix_to_paper_name(model: nn.Module) -> dict[str, str]:
    if not isinstance(model, AlexNet):
        return {}
    return {model.layer_prefix(n): n for n in model.named_layers()}


# --- our safetensors format ---------------------------------------------------------------------------------------
def save_model(model: AlexNet, preprocessing: Preprocessing, path: str | Path, *, arch: str | None = None) -> Path:
    """Save weights and everything needed to rebuild and feed the model as ``.safetensors`` (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: save_model writes .safetensors files")
    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    if not isinstance(model, AlexNet):
        raise WeightsError("save_model expects an alexnet.AlexNet model")
    names = preprocessing.class_names
    if names is not None and len(names) != model.config.num_classes:
        raise WeightsError(f"{path}: {len(names)} class names for a model with {model.config.num_classes} classes")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": arch or _guess_arch(model.config),
        "config": json.dumps(model.config.to_dict()),
        "preprocessing": json.dumps(preprocessing.to_dict()),
    }
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    return path


def _guess_arch(config: AlexNetConfig) -> str:
    from .models import list_models

    for name in list_models():
        ref = get_config(name, num_classes=config.num_classes).to_dict()
        mine = config.to_dict()
        # init, dropout and LRN k do not change the weights' layout
        if all(ref[k] == mine[k] for k in ref if k not in ("init", "dropout", "num_classes", "lrn_k")):
            return name
    return "custom"


def _load_safetensors(path: Path, arch: str | None, num_classes: int | None) -> tuple[AlexNet, Preprocessing]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT_NAME:
        # A bare safetensors state dict (e.g. from another tool): treat it like a .pth state dict.
        return _model_from_state_dict(state, str(path), arch, num_classes, None)
    try:
        config = AlexNetConfig.from_dict(json.loads(meta["config"]))
        pre = Preprocessing.from_dict(json.loads(meta["preprocessing"]))
    except (KeyError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: corrupt metadata ({e})") from None
    saved_arch = meta.get("arch", "custom")
    if arch is not None and arch != saved_arch and saved_arch != "custom":
        raise WeightsError(f"{path}: holds {saved_arch} weights, not {arch}")
    if num_classes is not None and num_classes != config.num_classes:
        raise WeightsError(
            f"{path}: fc8 has {config.num_classes} classes, {num_classes} were asked for; to train a new "
            "classifier on these weights, fine-tune (alexnet finetune --weights ... --reinit fc8)"
        )
    model = AlexNet(config)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    return model.eval(), pre


def _model_from_state_dict(
    state: Mapping[str, torch.Tensor],
    source: str,
    arch: str | None,
    num_classes: int | None,
    preprocessing: Preprocessing | None,
) -> tuple[AlexNet, Preprocessing]:
    """Build ``arch`` (guessed from conv1's shape when None) and load a state dict in our/torchvision's layout."""
    w = state.get("features.0.weight")
    if w is None or w.ndim != 4:
        raise WeightsError(f"{source}: no conv1 weight (features.0.weight): not an AlexNet state dict")
    if arch is None:
        arch = "alexnet_owt" if w.shape[0] == 64 else "alexnet2012"
    if num_classes is None:
        fc8 = [k for k in state if k.startswith("classifier.") and k.endswith(".weight")]
        fc8_w = state[max(fc8, key=lambda k: int(k.split(".")[1]))] if fc8 else None
        num_classes = int(fc8_w.shape[0]) if fc8_w is not None else 1000
    try:
        model = create_model(arch, num_classes=num_classes)
    except ValueError as e:
        raise WeightsError(f"{source}: {e}") from None
    check_state_dict(model, state, source)
    model.load_state_dict(state)
    if preprocessing is None:
        preprocessing = TORCHVISION_PREPROCESSING if arch == "alexnet_owt" else default_preprocessing(model.config)
        if num_classes == 1000:
            preprocessing = Preprocessing.from_dict({**preprocessing.to_dict(), "class_names": imagenet_classes()})
    return model.eval(), preprocessing


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in the standard (sorted WordNet id) order, shipped with torchvision."""
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


# --- dispatch -----------------------------------------------------------------------------------------------------
def load_model(
    source: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    allow_pickle: bool = False,
) -> tuple[AlexNet, Preprocessing]:
    """Load weights from ``source`` and return ``(model in eval mode, its Preprocessing)``.

    ``source``: ``"torchvision"`` (torchvision's IMAGENET1K_V1, downloaded once, hash checked), a ``.npy`` file in
    the bvlc_alexnet layout (pickle: needs ``allow_pickle=True``), a ``.pth``/``.pt`` state dict (loaded with
    ``weights_only=True``), or our ``.safetensors``.
    """
    if str(source) == "torchvision":
        return _load_torchvision(arch, num_classes)
    path = Path(source)
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file")
    if path.is_dir():
        raise WeightsError(f"{path}: is a directory, not a weights file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(path, arch, num_classes)
    if suffix in (".pth", ".pt"):
        return _load_pth(path, arch, num_classes)
    if suffix == ".npy":
        return _load_npy(path, arch, num_classes, allow_pickle)
    raise WeightsError(f"{path}: unknown weights format {suffix!r}; expected .safetensors, .pth, .pt or .npy")


# --- pretrained weights are data ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainedWeights:
    """Where a set of pretrained weights comes from and how it must be fed: data, not code (STYLE 3; cf.
    torchvision's ``Weights`` and timm's ``PretrainedCfg``). ``load_model(name)`` reads the record of ``name``."""

    name: str  # the source name (``load_model("torchvision")``) or the usual file name
    arch: str  # registered architecture the weights fit
    url: str  # where the file is published
    file_format: str  # "pth": torch state dict, downloaded and sha256-checked; "npy": bvlc layout, fetched by hand
    preprocessing: Preprocessing = field(compare=False)  # input size, scale, mean/std and the class names
    num_classes: int = 1000  # fc8 outputs
    acc1: float | None = None  # published ImageNet-1k validation top-1 accuracy (%), single centre crop
    acc5: float | None = None  # ... top-5 accuracy (%)
    accuracy_source: str = ""  # where those figures were published
    config_overrides: Mapping[str, Any] = field(default_factory=dict)  # AlexNetConfig fields the weights need
    notes: str = ""

    @property
    def file_name(self) -> str:
        """The file name in the URL; for hub downloads it carries the sha256 prefix (``name-<sha256[:8]>.pth``)."""
        return os.path.basename(urlparse(self.url).path)

    def cache_path(self, model_dir: str | Path | None = None) -> Path:
        """Where the file is cached (torch hub's ``<hub dir>/checkpoints``), i.e. where to place it by hand."""
        return Path(model_dir if model_dir is not None else Path(torch.hub.get_dir()) / "checkpoints") / self.file_name


def _pretrained_records() -> dict[str, PretrainedWeights]:
    from torchvision.models import AlexNet_Weights

    tv = AlexNet_Weights.IMAGENET1K_V1
    classes = list(tv.meta["categories"])
    metrics = tv.meta["_metrics"]["ImageNet-1K"]
    return {
        "torchvision": PretrainedWeights(
            name="torchvision",
            arch="alexnet_owt",
            url=tv.url,
            file_format="pth",
            preprocessing=Preprocessing.from_dict({**TORCHVISION_PREPROCESSING.to_dict(), "class_names": classes}),
            acc1=float(metrics["acc@1"]),
            acc5=float(metrics["acc@5"]),
            accuracy_source="torchvision AlexNet_Weights.IMAGENET1K_V1",
            notes="torchvision's 'one weird trick' AlexNet (Krizhevsky 2014), trained with torchvision's recipe",
        ),
        "bvlc_alexnet": PretrainedWeights(
            name="bvlc_alexnet.npy",
            arch="alexnet2012",
            url="http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy",
            file_format="npy",
            preprocessing=Preprocessing.from_dict({**BVLC_PREPROCESSING.to_dict(), "class_names": classes}),
            acc1=57.1,
            acc5=80.2,
            accuracy_source="Caffe model zoo, models/bvlc_alexnet/readme.md (the .caffemodel this file came from)",
            config_overrides={"lrn_k": 1.0},
            notes="Caffe's bvlc_alexnet converted for TensorFlow (the tutorial's file); a pickle, so fetched by hand "
            "and loaded with --trust-pickle; the file does not say whether LRN comes before or after pooling",
        ),
    }


PRETRAINED: dict[str, PretrainedWeights] = _pretrained_records()


def load_pretrained(
    weights: str | PretrainedWeights = "torchvision",
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    model_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[AlexNet, Preprocessing]:
    """Download (once; sha256-checked against the prefix in the file name) and load a ``pth`` record.

    Uses ``torch.hub.load_state_dict_from_url(check_hash=True, weights_only=True)``, so a file already in the
    cache (placed by hand when offline) is read through the same code path as a fresh download.
    """
    rec = PRETRAINED[weights] if isinstance(weights, str) else weights
    if rec.file_format != "pth":
        raise WeightsError(
            f"{rec.name}: not downloaded automatically; fetch {rec.url} by hand and load the file "
            "(it is a pickle: --trust-pickle)"
        )
    if arch is not None and arch != rec.arch:
        raise WeightsError(f"{rec.name}: these are {rec.arch} weights, not {arch}")
    if num_classes is not None and num_classes != rec.num_classes:
        raise WeightsError(
            f"{rec.name}: fc8 has {rec.num_classes} classes, {num_classes} were asked for; to train a new "
            "classifier on these weights, fine-tune (alexnet finetune --weights ... --reinit fc8)"
        )
    cached = rec.cache_path(model_dir)
    downloading = not cached.exists()
    try:
        # torch hub announces downloads on stdout; keep stdout for results (`alexnet predict --json`).
        with contextlib.redirect_stdout(sys.stderr):
            state = torch.hub.load_state_dict_from_url(
                rec.url,
                model_dir=str(cached.parent),
                map_location="cpu",
                progress=progress,
                check_hash=True,
                file_name=rec.file_name,
                weights_only=True,
            )
    except Exception as e:  # every failure here is the user's network or cache file
        msg = _one_line(e)
        if downloading and not cached.exists():
            if "invalid hash" in msg:
                raise WeightsError(
                    f"{rec.url}: the download fails its sha256 check ({msg}); nothing was cached"
                ) from None
            raise WeightsError(
                f"cannot download {rec.url} ({msg}); offline? fetch that file elsewhere and place it at {cached}"
            ) from None
        raise WeightsError(f"{cached}: not a readable torch state dict ({msg}); delete it to download again") from None
    state = _unwrap_state_dict(state, str(cached))
    pre = Preprocessing.from_dict(rec.preprocessing.to_dict())  # a copy: callers may change theirs
    return _model_from_state_dict(state, str(cached), rec.arch, rec.num_classes, pre)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _load_torchvision(arch: str | None, num_classes: int | None) -> tuple[AlexNet, Preprocessing]:
    return load_pretrained("torchvision", arch=arch, num_classes=num_classes)


# --- torch .pth / .pt state dicts ---------------------------------------------------------------------------------
def _load_pth(path: Path, arch: str | None, num_classes: int | None) -> tuple[AlexNet, Preprocessing]:
    try:
        # weights_only=True: only tensors and plain containers are unpickled, never arbitrary objects (code).
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{path}: holds Python objects besides tensors, refused (loaded with weights_only=True because "
            f"unpickling arbitrary objects can run code): {first[:200]}"
        ) from None
    except Exception as e:  # truncated zip, not a torch file, ...
        raise WeightsError(f"{path}: not a readable torch file ({_one_line(e)})") from None
    state = _unwrap_state_dict(obj, str(path))
    return _model_from_state_dict(state, str(path), arch, num_classes, None)


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # common checkpoint layouts (torchvision references)
_KEY_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def _unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict in ``obj``: the dict itself, or under a usual checkpoint key; DDP/compile prefixes dropped."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{source}: holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{source}: not a state dict: {bad[0]!r} is not a tensor (keys: {', '.join(map(str, obj))[:200]})"
        )
    state = {}
    for k, v in obj.items():
        for prefix in _KEY_PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix) :]
        state[k] = v
    return state


def export_pth(model: AlexNet, path: str | Path) -> Path:
    """Write the plain state dict (torchvision's keys for ``alexnet_owt``) as ``.pth``, atomically.
    It carries no preprocessing: prefer `save_model` (.safetensors) between our own tools."""
    path = Path(path)
    model = getattr(model, "_orig_mod", model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


# --- the tutorial's bvlc_alexnet.npy --------------------------------------------------------------------------------
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


def _load_npy(
    path: Path, arch: str | None, num_classes: int | None, allow_pickle: bool
) -> tuple[AlexNet, Preprocessing]:
    """Load ``bvlc_alexnet.npy``: a pickled dict layer -> [W, b] (see `BVLC_CONVERSIONS`).

    The file does not say whether LRN comes before pooling (``alexnet2012``, BVLC's prototxt) or after it
    (``caffenet``, the tutorial's TensorFlow graph), so the caller chooses ``arch`` (default ``alexnet2012``).
    Its weights were trained by Caffe with LRN k = 1 (the paper says 2), so the config uses k = 1.
    """
    layers = read_bvlc_npy(path, allow_pickle=allow_pickle)
    rec = PRETRAINED["bvlc_alexnet"]
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
        raise WeightsError(f"{path}: not a readable .npy file ({_one_line(e)})") from None
    except Exception as e:  # truncated file, corrupt pickle: anything can be raised
        raise WeightsError(f"{path}: not a readable .npy file ({type(e).__name__}: {_one_line(e)})") from None
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
    model = getattr(model, "_orig_mod", model)
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


# --- ONNX ---------------------------------------------------------------------------------------------------------
def export_onnx(
    model: AlexNet,
    preprocessing: Preprocessing,
    path: str | Path,
    *,
    opset: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
) -> float | None:
    """Export to ONNX with a dynamic batch axis (input ``input`` (N, 3, S, S) normalised as ``preprocessing``
    says, output ``logits`` (N, classes)); the preprocessing and class names go into the metadata as JSON.

    With ``verify``, onnxruntime runs the file on a batch of a size other than the traced one and the result must
    match PyTorch within ``atol``; returns that max abs difference (None without ``verify``). Written atomically.
    """
    import copy
    import warnings

    try:
        import onnx
    except ImportError:
        raise WeightsError("ONNX export needs the onnx extra: pip install 'alexnet[onnx]'") from None
    path = Path(path)
    model = copy.deepcopy(getattr(model, "_orig_mod", model)).to("cpu", torch.float32).eval()
    s = preprocessing.input_size
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, s, s, generator=gen)  # batch 2: a batch of 1 could be specialised away
    meta = {
        "format": FORMAT_NAME,
        "arch": _guess_arch(model.config) if isinstance(model, AlexNet) else "custom",
        "config": json.dumps(model.config.to_dict()) if isinstance(model, AlexNet) else "{}",
        "preprocessing": json.dumps(preprocessing.to_dict()),
    }
    diff: list[float] = []

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    model,
                    (example,),
                    tmp,
                    input_names=["input"],
                    output_names=["logits"],
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                    verbose=False,
                )
            except Exception as e:
                raise WeightsError(f"ONNX export failed: {_one_line(e)}") from None
        proto = onnx.load(tmp)
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, tmp)
        if verify:
            diff.append(verify_onnx(model, tmp, input_size=s, atol=atol))

    atomic_write(path, write)
    return diff[0] if diff else None


def verify_onnx(
    model: nn.Module, onnx_path: str | Path, *, input_size: int, batch: int = 3, atol: float = 1e-4
) -> float:
    """Run ``onnx_path`` in onnxruntime and ``model`` in PyTorch on the same random batch; raise `WeightsError`
    if the logits differ by more than ``atol``; return the max abs difference."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise WeightsError("verifying ONNX needs onnxruntime: pip install 'alexnet[onnx]'") from None
    x = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model.to("cpu").eval()(x).numpy()
    d = float(np.abs(got - want).max())
    if got.shape != want.shape or not d <= atol:
        raise WeightsError(f"{onnx_path}: onnxruntime differs from PyTorch by {d:.3g} (> {atol}), shape {got.shape}")
    return d
