"""The paper's layer names and the initialisation schemes: plain data that the command line and the configs
need before (and without) importing torch. `alexnet.models` builds the layers these names name."""

from __future__ import annotations

__all__ = ["CONV_LAYERS", "FC_LAYERS", "INIT_SCHEMES", "LAYER_NAMES"]

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")
LAYER_NAMES = CONV_LAYERS + FC_LAYERS
# paper: N(0, 0.01), biases 1 in conv2/4/5, fc6/7 (section 5); caffe: bvlc's recipe (fc6/7 std 0.005, biases 0.1);
# torchvision: PyTorch's layer defaults; kaiming: He et al. 2015 (fan-out), for short runs from scratch
INIT_SCHEMES = ("paper", "caffe", "torchvision", "kaiming")
