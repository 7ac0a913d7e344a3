"""What every weights format shares: the error type, the metadata tags, the layout check of a state dict
(`check_state_dict`), naming an architecture from its config (`guess_arch`), and building a model from a state dict
in our / torchvision's layout (``.pth``, bare ``.safetensors``, torch hub downloads)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AlexnetError, one_line
from ..models import AlexNet, AlexNetConfig, get_config
from ..preprocessing import TORCHVISION_PREPROCESSING, Preprocessing, default_preprocessing

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "PTH_METADATA_KEY",
    "CaffeError",
    "WeightsError",
    "check_class_names",
    "check_state_dict",
    "assign_state",
    "empty_model",
    "hub_file",
    "check_tensor_values",
    "config_from_metadata",
    "preprocessing_from_metadata",
    "describe_config",
    "guess_arch",
    "imagenet_classes",
    "model_from_state_dict",
    "one_line",
    "unwrap_state_dict",
]

FORMAT_NAME = "alexnet"  # the ``format`` tag in our .safetensors and .onnx metadata
FORMAT_VERSION = "1"
# Where a .pth written by `export_pth` keeps its preprocessing and class names: an entry of the state dict's
# ``_metadata`` (the per-module version table `torch.nn.Module.load_state_dict` reads by module prefix), so
# torchvision's ``model.load_state_dict(torch.load(f))`` ignores it: no module has this name.
PTH_METADATA_KEY = "alexnet:preprocessing"
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class WeightsError(AlexnetError, ValueError):
    """A weights file that cannot be used as asked; the message is one line for the user."""


class CaffeError(WeightsError):
    """A Caffe file that cannot be used as asked; the message is one line for the user."""


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


def check_tensor_values(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise `WeightsError` naming the first tensor that is not floating point (int weights would load as
    truncated or garbage values) or holds NaN / infinity (a diverged or corrupt file would print ``nan``)."""
    for k, v in state.items():
        if v.dtype not in FLOAT_DTYPES:
            raise WeightsError(
                f"{source}: {k} holds {str(v.dtype).removeprefix('torch.')} values, not floating point weights: "
                "the file is corrupt or not weights of this model"
            )
        if v.numel() and not _all_finite(v):
            bad = int((~torch.isfinite(v)).sum())
            raise WeightsError(
                f"{source}: {k} holds {bad} NaN or infinite values: the weights are corrupt (a diverged run?); "
                "use an earlier checkpoint"
            )


def _all_finite(v: torch.Tensor) -> bool:
    """Whether every value of ``v`` is finite. A finite sum proves it (a NaN or an infinity makes the sum NaN or
    infinite) in one reading pass without a mask the size of the tensor: 0.01 s for AlexNet's 61M weights
    against 0.22 s for ``isfinite(v).all()``, most of the load time of a .pth (docs/BENCHMARKS.md). Only a sum
    that overflowed, or a tensor that truly holds NaN, takes the exact test."""
    return bool(torch.isfinite(v.sum())) or bool(torch.isfinite(v).all())


def config_from_metadata(text: Any, source: str) -> AlexNetConfig:
    """The `AlexNetConfig` of a weights file's JSON metadata, every field's type and range checked (one-line
    `WeightsError` naming the field): nothing is built from it yet."""
    try:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"expected an object of AlexNetConfig fields, got {type(d).__name__}")
        return AlexNetConfig.from_dict(d)
    except (TypeError, ValueError, RecursionError) as e:
        raise WeightsError(f"{source}: invalid config in the metadata: {one_line(e)}; the file is corrupt") from None


def preprocessing_from_metadata(text: Any, source: str) -> Preprocessing:
    """The `Preprocessing` of a weights file's JSON metadata, every field checked (one-line `WeightsError`)."""
    try:
        return Preprocessing.from_dict(json.loads(text))
    except (TypeError, ValueError, RecursionError) as e:
        raise WeightsError(
            f"{source}: invalid preprocessing in the metadata: {one_line(e)}; the file is corrupt"
        ) from None


def check_class_names(preprocessing: Preprocessing, num_classes: int, source: str) -> None:
    """Refuse class names that do not name exactly fc8's outputs: predictions would be named wrongly."""
    names = preprocessing.class_names
    if names is not None and len(names) != num_classes:
        raise WeightsError(f"{source}: {len(names)} class names for a model with {num_classes} classes (fc8)")


def _prefix_to_paper_name(model: nn.Module) -> dict[str, str]:
    if not isinstance(model, AlexNet):
        return {}
    return {model.layer_prefix(n): n for n in model.named_layers()}


def guess_arch(config: AlexNetConfig) -> str:
    """The registered architecture whose weights' layout ``config`` has (``"custom"`` when none): what a weights
    file records as its ``arch``. Initialisation, dropout, the class count and LRN k do not change the layout."""
    from ..models import list_models

    mine = config.to_dict()
    for name in list_models():
        ref = get_config(name, num_classes=config.num_classes).to_dict()
        if all(ref[k] == mine[k] for k in ref if k not in ("init", "dropout", "num_classes", "lrn_k")):
            return name
    return "custom"


_LAYOUT_IGNORED = ("init", "dropout", "num_classes", "lrn_k", "input_size")


def describe_config(config: AlexNetConfig) -> str:
    """What a model is, in words a person reads, from its config: the registered architecture it is closest to
    (fewest differing fields), its input size and each difference, e.g. ``"alexnet2012, 67x67, adaptive
    pooling"``. A registered architecture at its own size is ``"alexnet_owt, 224x224"``; the ``arch`` a file
    records stays `guess_arch`'s (``custom`` for the example), which programs compare."""
    from ..models import list_models

    mine = config.to_dict()
    best, diffs = "", list(mine)
    for name in list_models():
        ref = get_config(name, num_classes=config.num_classes).to_dict()
        found = [k for k in ref if k not in _LAYOUT_IGNORED and ref[k] != mine[k]]
        if len(found) < len(diffs):
            best, diffs = name, found
    words = [best, f"{config.input_size}x{config.input_size}"] + [_difference(k, mine[k]) for k in diffs]
    return ", ".join(words)


def _difference(key: str, value: Any) -> str:
    """One config field that differs from the nearest architecture, in words."""
    if key == "adaptive_pool":
        return "adaptive pooling" if value else "no adaptive pooling"
    if key == "lrn":
        return "LRN" if value else "no LRN"
    if key == "lrn_before_pool":
        return "LRN before pooling" if value else "LRN after pooling"
    if key == "groups":
        return "two groups (the paper's GPU split)" if value == 2 else "dense (one group)"
    if key == "conv_channels":
        return "channels " + "-".join(str(c) for c in value)
    if key == "fc_features":
        return f"fc6/fc7 width {value}"
    if key == "dropout_before_fc":
        return "dropout before fc6/fc7" if value else "dropout after fc6/fc7"
    if key == "activation":
        return str(value)
    return f"{key} {value}"


def hub_file(url: str, model_dir: str | Path | None = None) -> Path:
    """Where a download of ``url`` is cached: torch hub's ``<hub dir>/checkpoints/<file name>`` (or ``model_dir``),
    which is also where to place it by hand when offline."""
    import os
    from urllib.parse import urlparse

    folder = Path(model_dir) if model_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    return folder / os.path.basename(urlparse(url).path)


def empty_model(config: AlexNetConfig) -> AlexNet:
    """The network of ``config`` with no weights yet (on PyTorch's meta device): weights that are about to be
    loaded need no initialisation (the paper's N(0, 0.01) for 61M parameters), nor a second allocation; load them
    with ``load_state_dict(state, assign=True)``, which makes the loaded tensors the parameters."""
    with torch.device("meta"):
        return AlexNet(config)


def assign_state(model: AlexNet, state: Mapping[str, torch.Tensor]) -> AlexNet:
    """Make ``state``'s tensors the parameters of ``model`` (an `empty_model`), in float32 and contiguous as the
    parameters would have been; tensors that already are need no copy."""
    ready = {k: v.to(torch.float32).contiguous() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(ready, assign=True)
    return model


def model_from_state_dict(
    state: Mapping[str, torch.Tensor],
    source: str,
    arch: str | None,
    num_classes: int | None,
    preprocessing: Preprocessing | None,
) -> tuple[AlexNet, Preprocessing]:
    """Build ``arch`` (guessed from conv1's shape when None) and load a state dict in our/torchvision's layout."""
    check_tensor_values(state, source)
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
        model = empty_model(get_config(arch, num_classes=num_classes))
    except ValueError as e:
        raise WeightsError(f"{source}: {e}") from None
    check_state_dict(model, state, source)
    assign_state(model, state)
    if preprocessing is None:
        preprocessing = TORCHVISION_PREPROCESSING if arch == "alexnet_owt" else default_preprocessing(model.config)
        if num_classes == 1000:
            preprocessing = Preprocessing.from_dict({**preprocessing.to_dict(), "class_names": imagenet_classes()})
    return model.eval(), preprocessing


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # common checkpoint layouts (torchvision references)
_KEY_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
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


@functools.cache
def _imagenet_classes() -> tuple[str, ...]:
    text = (Path(__file__).resolve().parent.parent / "imagenet_classes.json").read_text(encoding="utf-8")
    return tuple(json.loads(text))


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in the standard (sorted WordNet id) order: torchvision's
    ``AlexNet_Weights.IMAGENET1K_V1.meta["categories"]``, shipped as data (alexnet/imagenet_classes.json, tested
    equal) so that reading them imports no torchvision."""
    return list(_imagenet_classes())
