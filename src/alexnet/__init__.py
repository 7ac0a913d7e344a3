"""alexnet: a practical, faithful and fast AlexNet toolkit (Krizhevsky, Sutskever & Hinton, NIPS 2012).

The public API (docs/API.md) in torchvision's and timm's conventions::

    import alexnet
    model = alexnet.create_model("alexnet_owt", pretrained=True)  # or weights="torchvision" / a file
    alexnet.classify(model, "photo.jpg", topk=3)                  # paths, PIL images, arrays or tensors
    x = model.preprocessing(pil_image)                            # what weights.transforms()(img) gives

It is imported on first use (PEP 562), so that ``import alexnet.cli`` and ``alexnet --help`` do not pay for torch:
``alexnet.create_model`` and the others load their modules when first touched. ``__version__`` is the one
definition of the version (pyproject.toml reads it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AlexNet",
    "AlexNetConfig",
    "AlexnetError",
    "ClassScore",
    "ImageInputError",
    "ImageTypeError",
    "Preprocessing",
    "WeightsError",
    "WeightsSource",
    "__version__",
    "classify",
    "create_model",
    "features",
    "list_models",
    "list_pretrained",
    "load_model",
    "save_model",
]

_HOMES = {
    "AlexNet": "models",
    "AlexNetConfig": "models",
    "AlexnetError": "errors",
    "ClassScore": "predict",
    "ImageInputError": "data.pixels",
    "ImageTypeError": "data.pixels",
    "Preprocessing": "preprocessing",
    "WeightsError": "weights",
    "WeightsSource": "weights",
    "classify": "api",
    "create_model": "weights.create",
    "features": "features",
    "list_models": "models",
    "list_pretrained": "weights.records",
    "load_model": "weights",
    "save_model": "weights",
}

if TYPE_CHECKING:
    from .api import classify
    from .data.pixels import ImageInputError, ImageTypeError
    from .errors import AlexnetError
    from .features import features
    from .models import AlexNet, AlexNetConfig, list_models
    from .predict import ClassScore
    from .preprocessing import Preprocessing
    from .weights import WeightsError, WeightsSource, load_model, save_model
    from .weights.create import create_model
    from .weights.records import list_pretrained


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'alexnet' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f".{home}", __name__)
    # alexnet.features is the module alexnet/features.py, which is callable: alexnet.features(model, images)
    value = module if name == "features" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
