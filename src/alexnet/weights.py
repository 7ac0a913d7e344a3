"""Weights: what a weights file's inputs must look like (`Preprocessing`), and loading/saving every format.

Formats: our ``.safetensors`` (weights + JSON metadata: arch, config, preprocessing, class names), torch
``.pth``/``.pt`` state dicts (torchvision's layout or ours), the tutorial's ``bvlc_alexnet.npy``, torchvision's
pretrained weights through its weights API, and ONNX export. Knows nothing of training.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import transforms as T
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
def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Write through ``write(tmp_path)`` into a temporary file beside ``path``, then rename it over ``path``,
    so a crash never leaves a half-written file where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    if not isinstance(model, AlexNet):
        raise WeightsError("save_model expects an alexnet.AlexNet model")
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
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
        # init and dropout do not change the weights' layout
        if all(ref[k] == mine[k] for k in ref if k not in ("init", "dropout", "num_classes")):
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


def _load_torchvision(arch: str | None, num_classes: int | None) -> tuple[AlexNet, Preprocessing]:
    raise NotImplementedError  # filled in by the weights work


def _load_pth(path: Path, arch: str | None, num_classes: int | None) -> tuple[AlexNet, Preprocessing]:
    raise NotImplementedError  # filled in by the weights work


def _load_npy(
    path: Path, arch: str | None, num_classes: int | None, allow_pickle: bool
) -> tuple[AlexNet, Preprocessing]:
    raise NotImplementedError  # filled in by the weights work
