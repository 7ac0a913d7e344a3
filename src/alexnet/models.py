"""AlexNet models: every choice of Krizhevsky, Sutskever & Hinton (NIPS 2012) is a field of `AlexNetConfig`.

Three registered architectures share one module class, `AlexNet`:

- ``alexnet2012``: the paper as BVLC trained it (227x227 input, LRN after ReLU then max-pool, two-GPU groups).
- ``caffenet``: bvlc_reference_caffenet, identical except max-pool comes *before* LRN (the order the tutorial's
  TensorFlow code uses).
- ``alexnet_owt``: torchvision's "one weird trick" variant (Krizhevsky 2014): 64/192/384/256/256 channels, no LRN,
  no groups, adaptive average pooling, dropout before fc6/fc7. Its state-dict keys are torchvision's.

Layers are reachable by the paper's names (``model.conv1`` ... ``model.fc8``) while the state dict keeps
torchvision's ``features.N`` / ``classifier.N`` layout, so torchvision checkpoints load unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx
from torch import nn

from .cpu_ops import Conv2d, Dropout, EqualCellsSum, LocalResponseNorm, eager_cpu
from .limits import check_model_limits
from .names import CONV_LAYERS, FC_LAYERS, INIT_SCHEMES, LAYER_NAMES

__all__ = [
    "LAYER_NAMES",
    "CONV_LAYERS",
    "FC_LAYERS",
    "AlexNetConfig",
    "AlexNet",
    "create_model",
    "list_models",
    "get_config",
    "init_weights",
    "init_layer",
    "INIT_SCHEMES",
    "ACTIVATIONS",
    "count_parameters",
    "count_macs",
]

ACTIVATIONS = ("relu", "tanh")  # section 3.1: ReLU against the saturating tanh of Figure 1

# Layers that the paper gives a bias of 1 ("accelerates the early stages of learning by providing the ReLUs
# with positive inputs", section 5); Caffe's bvlc recipe uses 0.1 for the same layers.
_POSITIVE_BIAS_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")


@dataclass
class AlexNetConfig:
    """Every architectural choice of the paper as a typed field (defaults: the paper, section 3)."""

    num_classes: int = 1000  # fc8 outputs (ImageNet: 1000)
    in_channels: int = 3  # RGB
    conv_channels: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)  # conv1..conv5 output channels
    conv1_padding: int = 0  # the paper/BVLC: 0 on 227x227; torchvision's OWT: 2 on 224x224
    groups: int = 2  # 2 = the paper's two-GPU split of conv2, conv4, conv5 (section 3.2); 1 = dense
    lrn: bool = True  # local response normalisation after conv1 and conv2 (section 3.3)
    lrn_size: int = 5  # n: neighbouring channels summed
    lrn_alpha: float = 1e-4  # alpha (PyTorch divides by n, as the paper's formula does)
    lrn_beta: float = 0.75  # beta
    lrn_k: float = 2.0  # k: 2 in the paper; Caffe's bvlc weights were trained with 1
    lrn_before_pool: bool = True  # True: conv->ReLU->LRN->pool (paper/BVLC); False: pool->LRN (CaffeNet, tutorial)
    pool_kernel: int = 3  # 3 with stride 2 = overlapping pooling (section 3.4); 2/2 = traditional
    pool_stride: int = 2
    adaptive_pool: bool = False  # AdaptiveAvgPool2d(6) before the classifier (torchvision), accepts any input size
    fc_features: int = 4096  # width of fc6 and fc7
    dropout: float = 0.5  # p of the two dropout layers (section 4.2); 0 disables them
    dropout_before_fc: bool = False  # False: after fc6/fc7 ReLUs (paper); True: before fc6/fc7 (torchvision)
    init: Literal["paper", "caffe", "torchvision", "kaiming"] = "paper"  # weight initialisation (section 5)
    input_size: int = 227  # the crop the model is designed for (informational; used by Preprocessing)
    activation: str = "relu"  # after every conv and fc6/fc7: relu (section 3.1) | tanh (Figure 1's comparison)

    def __post_init__(self) -> None:
        _check_field_types(self)  # a weights file's metadata is untrusted input: "1.5" or 1e9 must not build
        self.conv_channels = tuple(int(c) for c in self.conv_channels)  # JSON gives lists
        if len(self.conv_channels) != 5:
            raise ValueError(f"conv_channels needs 5 values (conv1..conv5), got {len(self.conv_channels)}")
        for name in ("num_classes", "in_channels", "lrn_size", "fc_features", "input_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(self.conv_channels) < 1:
            raise ValueError(f"conv_channels must be >= 1 each, got {list(self.conv_channels)}")
        if self.conv1_padding < 0:
            raise ValueError(f"conv1_padding must be >= 0, got {self.conv1_padding}")
        for name in ("lrn_alpha", "lrn_beta", "lrn_k"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.groups not in (1, 2):
            raise ValueError(f"groups must be 1 or 2, got {self.groups}")
        for name in ("conv2", "conv4", "conv5"):
            i = int(name[-1]) - 1
            if self.conv_channels[i - 1] % self.groups or self.conv_channels[i] % self.groups:
                raise ValueError(f"{name}: channels {self.conv_channels[i - 1 : i + 1]} not divisible by groups")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {', '.join(INIT_SCHEMES)}, got {self.init!r}")
        if self.pool_kernel < 1 or self.pool_stride < 1:
            raise ValueError("pool_kernel and pool_stride must be >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        check_model_limits(self)  # one table of upper bounds, and the memory they imply (alexnet.limits)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conv_channels"] = list(self.conv_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlexNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown AlexNetConfig fields: {sorted(unknown)}")
        return cls(**d)


def _check_field_types(config: AlexNetConfig) -> None:
    """Raise ValueError naming the first field whose value has the wrong type: ints are ints (not bools or
    floats), floats any real number, bools bools, conv_channels a list of 5 ints."""
    for f in dataclasses.fields(config):
        value, kind = getattr(config, f.name), _field_kind(f.type)
        if kind == "channels":
            ok = isinstance(value, (list, tuple)) and all(_is_int(v) for v in value)
        elif kind == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind == "int":
            ok = _is_int(value)
        else:
            ok = True
        if not ok:
            want = {"channels": "a list of 5 integers", "float": "a finite number", "bool": "true or false"}
            raise ValueError(
                f"{f.name} must be {want.get(kind, 'a string' if kind == 'str' else 'an integer')}, got {value!r:.60}"
            )


def _field_kind(annotation: Any) -> str:
    """The kind of value a field's annotation (a string: ``from __future__ import annotations``) asks for."""
    text = str(annotation)
    if text.startswith("tuple"):
        return "channels"
    if text.startswith("Literal") or text == "str":
        return "str"
    return text if text in ("int", "float", "bool") else "any"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


_ARCHS: dict[str, Callable[[], AlexNetConfig]] = {
    "alexnet2012": lambda: AlexNetConfig(),
    "caffenet": lambda: AlexNetConfig(lrn_before_pool=False),
    "alexnet_owt": lambda: AlexNetConfig(
        conv_channels=(64, 192, 384, 256, 256),
        conv1_padding=2,
        groups=1,
        lrn=False,
        adaptive_pool=True,
        dropout_before_fc=True,
        init="torchvision",
        input_size=224,
    ),
}


def _check_conv5(x: torch.Tensor, input_size: int) -> torch.Tensor:
    """``x`` (N, C, 6, 6) unchanged, else a ValueError that names the input size the architecture needs. A free
    function wrapped for torch.fx (so `forward` has no Python branch on a shape while traced; the check runs in
    the traced graph) that TorchScript compiles as well."""
    if x.shape[-2] != 6 or x.shape[-1] != 6:
        raise ValueError(
            "conv5 output is (" + str(x.shape[-2]) + ", " + str(x.shape[-1]) + "), expected (6, 6): this "
            "architecture needs " + str(input_size) + "x" + str(input_size) + " inputs"
        )
    return x


# torch.fx records a call of this as one node instead of tracing into it (its branch depends on a shape);
# torchvision's `create_feature_extractor` traces `AlexNet` through it (and cpu_ops' wrapped functions).
torch.fx.wrap("_check_conv5")


def _activation(name: str) -> nn.Module:
    """The non-linearity after each conv and fc6/fc7: the paper's ReLU, or tanh for its Figure 1 comparison
    (section 3.1: ReLUs reach 25% training error on CIFAR-10 six times faster than tanh units)."""
    return nn.Tanh() if name == "tanh" else nn.ReLU(inplace=True)


class AlexNet(nn.Module):
    """AlexNet built from an `AlexNetConfig`.

    ``features`` holds the convolutional stack, ``avgpool`` is AdaptiveAvgPool2d(6) or Identity, ``classifier``
    the fully connected stack; for ``alexnet_owt`` the indices equal torchvision's. Paper layer names map to
    modules through `layer_indices` and the properties ``conv1`` ... ``fc8``.
    """

    # How the model's inputs must look (an `alexnet.Preprocessing`: crop size, mean/std, class names), set by
    # `alexnet.create_model` and `alexnet.load_model`; None on a bare network. Not part of the state dict.
    preprocessing: Any = None
    # TorchScript: Python objects the forward never reads when scripted (the cells' mean is a training state)
    __jit_ignored_attributes__ = ["preprocessing", "fc6_cell_mean"]

    def __init__(self, config: AlexNetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input_size = c.input_size  # a plain int for forward's size check (TorchScript cannot read config)
        # While `alexnet.train.fold` trains fc6 folded: the (4096, C) mean of its weight over the 36 cells of each
        # conv5 channel, which the folded forward uses instead of fc6.weight (not a parameter: never saved)
        self.fc6_cell_mean: torch.Tensor | None = None
        ch = c.conv_channels
        feats: list[nn.Module] = []
        # paper name -> ("features" | "classifier", index); not annotated: TorchScript reads no string annotations
        self._layer_index = dict[str, tuple[str, int]]()

        def add_conv(name: str, cin: int, cout: int, k: int, stride: int, pad: int, groups: int) -> None:
            self._layer_index[name] = ("features", len(feats))
            feats.append(Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups))
            feats.append(_activation(c.activation))

        def add_pool_lrn() -> None:
            pool = nn.MaxPool2d(c.pool_kernel, c.pool_stride)
            lrn = [LocalResponseNorm(c.lrn_size, c.lrn_alpha, c.lrn_beta, c.lrn_k)] if c.lrn else []
            feats.extend([*lrn, pool] if c.lrn_before_pool else [pool, *lrn])

        add_conv("conv1", c.in_channels, ch[0], 11, 4, c.conv1_padding, 1)  # (N, 96, 55, 55) at 227
        add_pool_lrn()  # (N, 96, 27, 27)
        add_conv("conv2", ch[0], ch[1], 5, 1, 2, c.groups)  # (N, 256, 27, 27)
        add_pool_lrn()  # (N, 256, 13, 13)
        add_conv("conv3", ch[1], ch[2], 3, 1, 1, 1)  # the paper's conv3 sees both GPUs' maps
        add_conv("conv4", ch[2], ch[3], 3, 1, 1, c.groups)
        add_conv("conv5", ch[3], ch[4], 3, 1, 1, c.groups)  # (N, 256, 13, 13)
        feats.append(nn.MaxPool2d(c.pool_kernel, c.pool_stride))  # (N, 256, 6, 6)
        self.features = nn.Sequential(*feats)
        self.avgpool: nn.Module = nn.AdaptiveAvgPool2d((6, 6)) if c.adaptive_pool else nn.Identity()

        cls: list[nn.Module] = []
        drop = (lambda: [Dropout(c.dropout)]) if c.dropout > 0 else (lambda: [])
        for name, fin in (("fc6", ch[4] * 6 * 6), ("fc7", c.fc_features)):
            if c.dropout_before_fc:
                cls.extend(drop())
            self._layer_index[name] = ("classifier", len(cls))
            cls.extend([nn.Linear(fin, c.fc_features), _activation(c.activation)])
            if not c.dropout_before_fc:
                cls.extend(drop())
        self._layer_index["fc8"] = ("classifier", len(cls))
        cls.append(nn.Linear(c.fc_features, c.num_classes))
        self.classifier = nn.Sequential(*cls)
        init_weights(self, c.init)

    # --- paper names -------------------------------------------------------------------------------------------
    def layer(self, name: str) -> nn.Module:
        """The module of a paper layer name (conv1..conv5, fc6..fc8)."""
        if name not in self._layer_index:
            raise KeyError(f"unknown layer {name!r}; expected one of {', '.join(LAYER_NAMES)}")
        seq, idx = self._layer_index[name]
        return getattr(self, seq)[idx]

    def layer_prefix(self, name: str) -> str:
        """The state-dict prefix of a paper layer, e.g. ``features.0`` for conv1."""
        self.layer(name)
        seq, idx = self._layer_index[name]
        return f"{seq}.{idx}"

    def named_layers(self) -> dict[str, nn.Module]:
        return {name: self.layer(name) for name in LAYER_NAMES}

    def feature_nodes(self, *names: str) -> dict[str, str]:
        """``{graph node: paper name}`` for torchvision's ``create_feature_extractor(model, return_nodes=...)``:
        the traced graph names nodes by module path (``classifier.5``), this maps them to the paper's layers
        (all of them when no name is given). Each node is the output `alexnet.features.layer_output` calls that
        layer's: conv1..conv4 and fc6/fc7 after their ReLU, conv5 the flattened pooled maps, fc8 the logits."""
        nodes = {}
        for name in names or LAYER_NAMES:
            self.layer(name)  # a KeyError naming the choices for an unknown name
            seq, idx = self._layer_index[name]
            if name == "conv5":
                nodes["flatten"] = name
            else:
                nodes[f"{seq}.{idx if name == 'fc8' else idx + 1}"] = name
        return nodes

    def conv5_map_size(self, input_size: int) -> int:
        """The side of conv5's pooled map for a square input (6 at the paper's 224/227; 1 from 67 to 98, where the
        CPU forward folds fc6), from the layers' kernels, strides and padding alone."""
        side = input_size
        for m in self.features:
            if isinstance(m, nn.Conv2d | nn.MaxPool2d):
                k, s, p = (_pair(v) for v in (m.kernel_size, m.stride, m.padding))
                side = (side + 2 * p - k) // s + 1
        return side

    # --- forward -----------------------------------------------------------------------------------------------
    @torch.jit.export  # a public method of the scripted model too (forward reaches it through `_pooled`)
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled conv5 features, flattened: (N, 9216)."""
        return self._pooled(self.features(x))

    def _pooled(self, f: torch.Tensor) -> torch.Tensor:
        x = _check_conv5(self.avgpool(f), self.input_size)  # (N, 256, 6, 6)
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript drops this block only when the test stands alone)
            if self._folds_fc6(f):  # eager CPU only: never true while traced, exported or compiled
                return self._forward_folded(f)
            if self.fc6_cell_mean is not None:  # fc6.weight is stale until the fold writes it back
                raise RuntimeError("fc6 is being trained folded (alexnet.train.fold) but this input is not folded")
        return self.classifier(self._pooled(f))

    @torch.jit.unused
    def _folds_fc6(self, f: torch.Tensor) -> bool:
        """Whether `_forward_folded` applies to conv5's map ``f``: eager mode on the CPU and `folds_fc6`."""
        return eager_cpu(f) and f.shape[-2:] == (1, 1) and self._fc6_foldable()

    @torch.jit.unused
    def folds_fc6(self, input_size: int) -> bool:
        """Whether the eager CPU forward at ``input_size`` folds fc6 (`_forward_folded`): adaptive pooling of a 1x1
        conv5 map (inputs of 67x67 to 98x98, the CPU demo's size), fc6 first in the classifier (the paper's
        layout: no dropout between the pooling and fc6) and no hooks on fc6. `alexnet.train.fold` trains fc6
        through its cells' mean exactly where this holds."""
        return self.conv5_map_size(input_size) == 1 and self._fc6_foldable()

    @torch.jit.unused
    def _fc6_foldable(self) -> bool:
        fc6 = self.classifier[0]
        hooks = fc6._forward_hooks or fc6._forward_pre_hooks or nn.modules.module._global_forward_hooks
        return self.config.adaptive_pool and fc6 is self.fc6 and not hooks

    @torch.jit.unused
    def _forward_folded(self, f: torch.Tensor) -> torch.Tensor:
        """The classifier on conv5's (N, C, 1, 1) map: adaptive pooling only copies each value to the 36 cells of
        fc6's 6x6 input, so fc6 is one (C -> 4096) product with its weight summed over the cells, and autograd
        gives every cell the gradient the unfolded network gives it. The same function and gradients (rounding
        aside) at a 36th of fc6's arithmetic: 1.2-1.27x a bf16 training step at 67x67 (docs/BENCHMARKS.md)."""
        fc6 = self.classifier[0]
        if self.fc6_cell_mean is not None:  # every cell equals the mean plus a deviation summing to zero
            weight = EqualCellsSum.apply(self.fc6_cell_mean, fc6.in_features // f.shape[1])
        else:
            weight = fc6.weight.view(fc6.out_features, f.shape[1], -1).sum(-1)
        return self.classifier[1:](nn.functional.linear(torch.flatten(f, 1), weight, fc6.bias))


def _pair(v: int | tuple[int, ...]) -> int:
    """One side of a square kernel, stride or padding (nn.Conv2d keeps tuples, nn.MaxPool2d ints)."""
    return v if isinstance(v, int) else v[0]


def _make_layer_property(name: str) -> property:
    return property(lambda self: self.layer(name), doc=f"The paper's {name}.")


for _name in LAYER_NAMES:
    setattr(AlexNet, _name, _make_layer_property(_name))
# TorchScript compiles a module's properties unless told not to; the paper names are for Python callers only
AlexNet.__jit_unused_properties__ = list(LAYER_NAMES)


def init_weights(model: AlexNet, scheme: str = "paper") -> None:
    """Initialise in place.

    ``paper`` (section 5): every weight N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, 0 elsewhere.
    ``caffe`` (bvlc_alexnet train_val.prototxt): the same, but fc6/fc7 weights N(0, 0.005) and biases 0.1.
    ``torchvision``: PyTorch's default (Kaiming-uniform, a=sqrt(5)) init, as torchvision's AlexNet uses.
    ``kaiming``: He et al. (2015) normal init for ReLU layers, zero biases; not the paper's, but it keeps the
    signal's scale through the eight layers, so training from scratch leaves its initial plateau within a few
    hundred steps instead of an epoch or more (what a CPU demo needs).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}")
    for name, m in model.named_layers().items():
        init_layer(m, name, scheme)


def init_layer(m: nn.Module, name: str, scheme: str = "paper") -> None:
    """Initialise one paper layer with ``scheme`` (see `init_weights`)."""
    if scheme == "torchvision":
        m.reset_parameters()
        return
    if scheme == "kaiming":
        with torch.no_grad():
            # fc8 feeds the softmax, not a ReLU: unit gain keeps the initial logits small
            nn.init.kaiming_normal_(m.weight, nonlinearity="linear" if name == "fc8" else "relu")
            nn.init.zeros_(m.bias)
        return
    std = 0.005 if scheme == "caffe" and name in ("fc6", "fc7") else 0.01
    bias = (1.0 if scheme == "paper" else 0.1) if name in _POSITIVE_BIAS_LAYERS else 0.0
    with torch.no_grad():
        nn.init.normal_(m.weight, 0.0, std)
        nn.init.constant_(m.bias, bias)


def list_models() -> list[str]:
    """Names of the registered architectures."""
    return sorted(_ARCHS)


def get_config(arch: str = "alexnet2012", **overrides: Any) -> AlexNetConfig:
    """The registered config of ``arch`` with ``overrides`` applied."""
    if arch not in _ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(list_models())}")
    cfg = _ARCHS[arch]()
    if overrides:
        cfg = AlexNetConfig.from_dict({**cfg.to_dict(), **overrides})
    return cfg


def create_model(arch: str = "alexnet2012", num_classes: int = 1000, **config_overrides: Any) -> AlexNet:
    """Build a registered architecture; any `AlexNetConfig` field can be overridden by keyword."""
    return AlexNet(get_config(arch, num_classes=num_classes, **config_overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: AlexNet, input_size: int | None = None) -> int:
    """Multiply-accumulates of one forward pass (convolutions and linear layers), by shape arithmetic."""
    size = input_size or model.config.input_size
    macs = 0
    hooks = []

    def conv_hook(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs += out.shape[1] * out.shape[2] * out.shape[3] * k

    def fc_hook(m: nn.Linear, _inp: Any, _out: torch.Tensor) -> None:
        nonlocal macs
        macs += m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(fc_hook))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, model.config.in_channels, size, size))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return macs
