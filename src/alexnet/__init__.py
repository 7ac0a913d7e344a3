"""alexnet: a practical, faithful and fast AlexNet toolkit (Krizhevsky, Sutskever & Hinton, NIPS 2012).

The public API is imported on first use (PEP 562), so that ``import alexnet.cli`` and ``alexnet --help`` do not
pay for torch: ``alexnet.create_model`` and the others load their modules when first touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["AlexNet", "AlexNetConfig", "Preprocessing", "create_model", "list_models", "load_model", "save_model"]
__version__ = "0.1.0"

_HOMES = {
    "AlexNet": "models",
    "AlexNetConfig": "models",
    "create_model": "models",
    "list_models": "models",
    "Preprocessing": "preprocessing",
    "load_model": "weights",
    "save_model": "weights",
}

if TYPE_CHECKING:
    from .models import AlexNet, AlexNetConfig, create_model, list_models
    from .preprocessing import Preprocessing
    from .weights import load_model, save_model


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'alexnet' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
