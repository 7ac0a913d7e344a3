"""`create_model`: one call for a network, fresh or with weights, in the conventions of timm's
``create_model(name, pretrained=True, num_classes=N)`` and torchvision's ``alexnet(weights=...)``.

``weights`` takes whatever ``--weights`` takes (a recorded name, ``torchvision``, a file, a `WeightsSource`);
``pretrained=True`` means the architecture's recorded default (`DEFAULT_WEIGHTS`). A ``num_classes`` other than
the weights' gets a new fc8, initialised as the architecture initialises it, and a warning that says so (timm's
behaviour); every other layer is loaded. Switches (any `AlexNetConfig` field) apply to the loaded network too,
as long as they leave its layers' shapes alone (dropout, LRN constants): one that changes a shape is refused.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AlexnetError
from ..models import AlexNet, AlexNetConfig, get_config, init_layer, list_models
from ..preprocessing import Preprocessing, default_preprocessing
from .base import WeightsError, assign_state, check_state_dict, empty_model
from .io import WeightsSource, load_model
from .records import DEFAULT_WEIGHTS, PretrainedWeights

__all__ = ["DEFAULT_WEIGHTS", "ModelError", "create_model"]


class ModelError(AlexnetError, ValueError):
    """An architecture name or switch that cannot build a model; the message is one line for the user."""


def create_model(
    name: str = "alexnet2012",
    *,
    weights: str | Path | WeightsSource | PretrainedWeights | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    **switches: Any,
) -> AlexNet:
    """Build the registered architecture ``name`` (`list_models`), fresh or with weights.

    ``weights``: a recorded name (``"torchvision"``, ``"bvlc_alexnet"``, ``"caffe:bvlc_reference_caffenet"``,
    ...), a weights file (``.safetensors``, ``.pth``, ``.npy``, ``.caffemodel``), or a `WeightsSource` (for the
    options a file needs: ``allow_pickle``, ``prototxt``, ...). ``pretrained=True``: the architecture's recorded
    default weights (`DEFAULT_WEIGHTS`). ``num_classes``: fc8's outputs (default: the weights', else 1000);
    one other than the weights' replaces fc8 by a new layer, with a `UserWarning`. ``switches``: `AlexNetConfig`
    fields (``dropout=0.3``, ``lrn=False``, ...).

    The model is in training mode, as torchvision's and timm's builders return it (call ``.eval()`` to
    classify); ``model.preprocessing`` says how its inputs must look (the weights' own, or ImageNet mean/std at
    the architecture's input size for a fresh network).
    """
    if name not in list_models():
        raise ModelError(f"unknown architecture {name!r}; choose from {', '.join(list_models())}")
    if pretrained and weights is not None:
        raise ModelError("pass weights=... or pretrained=True, not both")
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)):
        raise ModelError(f"num_classes must be an integer, got {num_classes!r:.60}")
    if pretrained:
        weights = DEFAULT_WEIGHTS[name]
    if weights is None:
        model = AlexNet(_config(name, {**switches, "num_classes": 1000 if num_classes is None else num_classes}))
        model.preprocessing = default_preprocessing(model.config)
        return model
    if isinstance(weights, PretrainedWeights):
        weights = weights.name
    spec = WeightsSource.of(weights)
    loaded, pre = load_model(spec if spec.arch is not None else dataclasses.replace(spec, arch=name))
    _check_arch(loaded.config, name, switches, str(weights))
    model = _adapt(loaded, name, str(weights), num_classes, switches)
    if model.config.num_classes != loaded.config.num_classes:
        pre = Preprocessing.from_dict({**pre.to_dict(), "class_names": None})  # fc8's new classes have no names
    model.preprocessing = pre
    return model.train()


def _config(name: str, overrides: dict[str, Any], base: AlexNetConfig | None = None) -> AlexNetConfig:
    """``name``'s config (or ``base``) with ``overrides``; a one-line `ModelError` naming a bad switch."""
    try:
        if base is None:
            return get_config(name, **overrides)
        return AlexNetConfig.from_dict({**base.to_dict(), **overrides})
    except (TypeError, ValueError) as e:
        raise ModelError(f"{name}: {' '.join(str(e).split())}") from None


# The fields that make one architecture's network another's (the class count and channel widths aside)
_ARCH_FIELDS = ("conv1_padding", "groups", "lrn", "lrn_before_pool", "pool_kernel", "pool_stride", "adaptive_pool",
                "dropout_before_fc", "activation")  # fmt: skip


def _check_arch(config: AlexNetConfig, name: str, switches: dict[str, Any], source: str) -> None:
    """Refuse weights whose network is not ``name`` (with ``switches``): another architecture's weights would
    load into the wrong computation (CaffeNet's pooling order, torchvision's layout)."""
    want = _config(name, {k: v for k, v in switches.items() if k in _ARCH_FIELDS})
    differ = [f"{k}={getattr(config, k)!r} (not {getattr(want, k)!r})" for k in _ARCH_FIELDS
              if getattr(config, k) != getattr(want, k)]  # fmt: skip
    if differ:
        raise WeightsError(f"{source}: these weights are not {name}'s network: {', '.join(differ)}")


def _adapt(loaded: AlexNet, name: str, source: str, num_classes: int | None, switches: dict[str, Any]) -> AlexNet:
    """``loaded``, or a network with ``switches`` applied and a new fc8 for ``num_classes`` that holds its
    weights (no copy of the 61M weights: the loaded tensors become its parameters)."""
    have = loaded.config.num_classes
    want = have if num_classes is None else num_classes
    if not switches and want == have:
        return loaded
    config = _config(name, {**switches, "num_classes": want}, base=loaded.config)
    state = dict(loaded.state_dict())
    if want != have:
        fc8 = nn.Linear(config.fc_features, want)
        init_layer(fc8, "fc8", config.init)
        prefix = loaded.layer_prefix("fc8")
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = fc8.weight.detach(), fc8.bias.detach()
        warnings.warn(
            f"{source}: fc8 has {have} classes, {want} were asked for: fc8 is a new, untrained {want}-class layer "
            f"({config.init} initialisation), every other layer holds the weights; train it before use",
            UserWarning,
            stacklevel=3,
        )
    model = empty_model(config)
    try:
        check_state_dict(model, state, source)
    except WeightsError as e:
        changed = ", ".join(f"{k}={v!r}" for k, v in switches.items())
        raise WeightsError(f"{e} (the switches {changed} change the layers these weights fill)") from None
    with torch.no_grad():
        return assign_state(model, state)
