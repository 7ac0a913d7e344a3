import pytest
import torch
import torchvision

import alexnet
from alexnet.models import LAYER_NAMES, AlexNetConfig, count_parameters

PARAMS = {"alexnet2012": 60_965_224, "caffenet": 60_965_224, "alexnet_owt": 61_100_840}


@pytest.mark.parametrize("arch", alexnet.list_models())
def test_parameter_count_and_output_shape(arch):
    model = alexnet.create_model(arch).eval()
    assert count_parameters(model) == PARAMS[arch]
    s = model.config.input_size
    with torch.no_grad():
        assert model(torch.randn(2, 3, s, s)).shape == (2, 1000)


@pytest.mark.parametrize("arch", alexnet.list_models())
def test_paper_layer_names(arch):
    model = alexnet.create_model(arch, num_classes=7)
    assert set(model.named_layers()) == set(LAYER_NAMES)
    assert model.fc8.out_features == 7
    assert model.conv1 is model.features[0]
    # properties do not duplicate parameters in the state dict
    assert not any(k.startswith("conv1") for k in model.state_dict())


def test_alexnet2012_layout():
    m = alexnet.create_model("alexnet2012")
    assert m.conv2.groups == 2 and m.conv4.groups == 2 and m.conv5.groups == 2 and m.conv3.groups == 1
    kinds = [type(x).__name__ for x in m.features]
    assert kinds[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    assert [type(x).__name__ for x in alexnet.create_model("caffenet").features][:4] == [
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "LocalResponseNorm",
    ]


def test_owt_keys_are_torchvisions():
    assert set(torchvision.models.alexnet().state_dict()) == set(alexnet.create_model("alexnet_owt").state_dict())


def test_torchvision_equivalence():
    torch.manual_seed(0)
    tv = torchvision.models.alexnet().eval()
    ours = alexnet.create_model("alexnet_owt").eval()
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        assert (tv(x) - ours(x)).abs().max().item() <= 1e-5


SWITCHES = [
    {"lrn": False},
    {"lrn_before_pool": False},
    {"groups": 1},
    {"pool_kernel": 2, "pool_stride": 2, "adaptive_pool": True},
    {"dropout": 0.0},
    {"dropout_before_fc": True},
    {"init": "caffe"},
    {"init": "torchvision"},
    {"init": "kaiming"},
    {"lrn_k": 1.0, "lrn_size": 3},
]


@pytest.mark.parametrize("overrides", SWITCHES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_every_switch_builds_and_runs(overrides):
    m = alexnet.create_model("alexnet2012", num_classes=5, **overrides)
    m.train()
    out = m(torch.randn(2, 3, 227, 227))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_paper_init():
    m = alexnet.create_model("alexnet2012", init="paper")
    for name, layer in m.named_layers().items():
        expect = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.all(layer.bias == expect), name
        assert abs(layer.weight.std().item() - 0.01) < 0.002, name
    c = alexnet.create_model("alexnet2012", init="caffe")
    assert abs(c.fc6.weight.std().item() - 0.005) < 0.001 and torch.all(c.fc6.bias == 0.1)


def test_bad_config():
    with pytest.raises(ValueError, match="groups"):
        AlexNetConfig(groups=3)
    with pytest.raises(ValueError, match="unknown architecture"):
        alexnet.create_model("vgg16")
    with pytest.raises(ValueError, match="num_classes"):
        alexnet.create_model(num_classes=0)


def test_wrong_input_size_is_clear():
    m = alexnet.create_model("alexnet2012").eval()
    with pytest.raises(ValueError, match="227x227"):
        m(torch.randn(1, 3, 224, 224))


def test_kaiming_init_keeps_relu_variance():
    m = alexnet.create_model("alexnet2012", init="kaiming")
    fan_in = 9216
    assert abs(m.fc6.weight.std().item() - (2 / fan_in) ** 0.5) < 1e-3
    assert abs(m.fc8.weight.std().item() - (1 / 4096) ** 0.5) < 1e-3
    assert all(torch.all(layer.bias == 0) for layer in m.named_layers().values())


def test_lrn_models_run_in_bf16_on_cpu():
    m = alexnet.create_model("caffenet", num_classes=4).eval()
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        ref = m(x)
        low = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16 and (low.float() - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_dropout_draws_bernoulli_masks_scales_and_backpropagates():
    from alexnet.models import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.5)
    x = torch.full((64, 9216), 3.0, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert 0.49 < kept.float().mean().item() < 0.51  # 590k Bernoulli(0.5) draws
    assert torch.all(y[kept] == 6.0)  # inverted dropout: kept units scaled by 1/(1-p)
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * 2.0)  # the gradient flows through the same mask
    a, b = Dropout(0.5)(torch.ones(4096)), Dropout(0.5)(torch.ones(4096))
    assert not torch.equal(a, b)  # a new mask each call
    assert Dropout(0.25)(torch.ones(100_000)).ne(0).float().mean().item() == pytest.approx(0.75, abs=0.01)
    half = Dropout(0.5)(torch.ones(1000, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16 and set(half.unique().tolist()) <= {0.0, 2.0}
    z = torch.ones(1000)
    assert Dropout(0.5, inplace=True)(z) is z and set(z.unique().tolist()) <= {0.0, 2.0}
    drop.eval()
    x = torch.randn(8, 16)
    assert torch.equal(drop(x), x)  # evaluation: identity
    assert torch.equal(Dropout(0.0)(x), x)


def test_models_use_the_fast_dropout():
    from alexnet.models import Dropout

    for arch in ("alexnet2012", "alexnet_owt", "caffenet"):
        drops = [m for m in alexnet.create_model(arch).modules() if isinstance(m, torch.nn.Dropout)]
        assert len(drops) == 2 and all(type(m) is Dropout and m.p == 0.5 for m in drops)


def test_activation_default_is_the_papers_relu():
    # the activation switch (tanh for Figure 1's comparison) leaves every existing model as it was
    assert AlexNetConfig().activation == "relu"
    for arch in alexnet.list_models():
        assert alexnet.models.get_config(arch).activation == "relu"
    relu = alexnet.create_model("alexnet2012", num_classes=5)
    tanh = alexnet.create_model("alexnet2012", num_classes=5, activation="tanh")
    kinds = [type(m).__name__ for m in relu.features] + [type(m).__name__ for m in relu.classifier]
    swapped = [type(m).__name__ for m in tanh.features] + [type(m).__name__ for m in tanh.classifier]
    assert kinds.count("ReLU") == 7 and "Tanh" not in kinds
    assert swapped == ["Tanh" if k == "ReLU" else k for k in kinds]
    assert set(relu.state_dict()) == set(tanh.state_dict())
    with pytest.raises(ValueError, match="activation"):
        AlexNetConfig(activation="sigmoid")


@pytest.mark.parametrize("size", [5, 4])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_lrn_matches_torch_forward_and_backward(size: int, channels_last: bool, beta: float) -> None:
    """The CPU LRN (a channel-window matmul with its own backward) computes torch's LRN and its gradient,
    zeros in the input included, in either memory layout; the paper's beta by roots, another by pow."""
    from alexnet.models import LocalResponseNorm

    torch.manual_seed(0)
    x = torch.randn(3, 16, 5, 5, dtype=torch.float64) * 3
    x[0, :, 0, 0] = 0
    ours_x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.clone()
    ours_x.requires_grad_(True)
    ref_x = x.clone().requires_grad_(True)
    y = LocalResponseNorm(size, 1e-2, beta, 2.0)(ours_x)
    ref = torch.nn.functional.local_response_norm(ref_x, size, 1e-2, beta, 2.0)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-12, atol=1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_lrn_bf16_within_rounding() -> None:
    """In bfloat16 (training under autocast) the LRN stays within bf16 rounding of the float64 result."""
    from alexnet.models import LocalResponseNorm

    torch.manual_seed(1)
    x = torch.randn(2, 96, 7, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y = LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x.to(torch.bfloat16))
    ref = torch.nn.functional.local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(y.double(), ref, rtol=1.6e-2, atol=1e-2)


@pytest.mark.parametrize("arch", ["alexnet2012", "caffenet"])
def test_fc6_folded_over_a_1x1_conv5_map_is_the_same_network(arch: str) -> None:
    """At 67x67 conv5's map is 1x1 and adaptive pooling copies it to fc6's 36 cells: the forward then runs fc6 as
    one product with its weight summed over the cells. Output and every gradient equal the unfolded network's; a
    hook on fc6 (count_macs, feature extraction) gets the unfolded path that calls it."""
    torch.manual_seed(0)
    model = alexnet.create_model(arch, num_classes=7, input_size=67, adaptive_pool=True, dropout=0.0).double()
    x = torch.randn(3, 3, 67, 67, dtype=torch.float64)
    assert model._folds_fc6(model.features(x))
    out = model(x)
    out.square().sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    ref = model.classifier(model.forward_features(x))
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for k, p in model.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-10, atol=1e-12)
    seen = []
    handle = model.fc6.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model(x)
    handle.remove()
    assert seen == [torch.Size([3, 9216])]
