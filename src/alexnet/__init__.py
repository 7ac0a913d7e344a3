"""alexnet: a practical, faithful and fast AlexNet toolkit (Krizhevsky, Sutskever & Hinton, NIPS 2012)."""

from .models import AlexNet, AlexNetConfig, create_model, list_models
from .preprocessing import Preprocessing
from .weights import load_model, save_model

__all__ = ["AlexNet", "AlexNetConfig", "Preprocessing", "create_model", "list_models", "load_model", "save_model"]
__version__ = "0.1.0"
