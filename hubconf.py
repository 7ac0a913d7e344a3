"""torch.hub entry points: ``torch.hub.load("OWNER/alexnet", "alexnet_owt", pretrained=True)``, or from a clone,
``torch.hub.load("path/to/alexnet", "alexnet2012", source="local", num_classes=10)``.

One entry per registered architecture; each takes `alexnet.create_model`'s arguments (``weights``, ``pretrained``,
``num_classes`` and any `AlexNetConfig` switch) and returns its model (training mode, ``model.preprocessing`` set).
"""

import os
import sys

dependencies = ["torch", "torchvision", "numpy", "PIL", "safetensors"]

# this checkout's package comes first, even where another version of alexnet is installed
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from alexnet.weights.create import create_model as _create_model  # noqa: E402


def alexnet2012(**kwargs):
    """The paper's AlexNet as BVLC trained it (227x227, LRN then max-pool, two-GPU groups in conv2/4/5).
    ``pretrained=True``: the Caffe model zoo's bvlc_alexnet."""
    return _create_model("alexnet2012", **kwargs)


def caffenet(**kwargs):
    """bvlc_reference_caffenet: max-pool before LRN. ``pretrained=True``: the Caffe model zoo's weights."""
    return _create_model("caffenet", **kwargs)


def alexnet_owt(**kwargs):
    """torchvision's "one weird trick" AlexNet (224x224). ``pretrained=True``: torchvision's IMAGENET1K_V1."""
    return _create_model("alexnet_owt", **kwargs)
