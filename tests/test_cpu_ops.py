"""`alexnet.cpu_ops.Conv2d`'s small-map backward is the convolution's own gradient: input, weight and bias, dense
and grouped, in either memory layout, in float64 exactly and under bf16 autocast within bf16's rounding; it is
taken only where it pays (3x3 maps, stride 1, training) and never while traced."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alexnet import cpu_ops


def _grads(conv: torch.nn.Conv2d, x: torch.Tensor, g: torch.Tensor, plain: bool) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    y = F.conv2d(x, conv.weight, conv.bias, 1, 1, 1, conv.groups) if plain else conv(x)
    (y * g).sum().backward()
    out = [x.grad, conv.weight.grad, *([conv.bias.grad] if conv.bias is not None else [])]
    conv.zero_grad(set_to_none=True)
    return [t.clone() for t in out]


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_small_map_gradients_equal_the_convolution_s(groups, channels_last, bias, monkeypatch) -> None:
    calls = []
    real = cpu_ops._unfolded_weight_grad
    monkeypatch.setattr(cpu_ops, "_unfolded_weight_grad", lambda *a: (calls.append(1), real(*a))[1])
    torch.manual_seed(0)
    conv = cpu_ops.Conv2d(8, 6, 3, padding=1, groups=groups, bias=bias).double()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = conv.to(memory_format=fmt)
    for side in (1, 2, 3):
        x = torch.randn(5, 8, side, side, dtype=torch.float64).contiguous(memory_format=fmt)
        g = torch.randn(5, 6, side, side, dtype=torch.float64)
        ours, ref = _grads(conv, x, g, False), _grads(conv, x, g, True)
        for a, b in zip(ours, ref, strict=True):
            assert torch.allclose(a, b, rtol=0, atol=1e-12), (side, a.shape)
    assert len(calls) == 3


def test_small_map_under_bf16_autocast_is_within_bf16_rounding() -> None:
    torch.manual_seed(0)
    conv = cpu_ops.Conv2d(16, 12, 3, padding=1, groups=2).to(memory_format=torch.channels_last)
    x = torch.randn(32, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    g = torch.randn(32, 12, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _grads(conv, x, g, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _grads(conv, x, g, True)
    assert conv.weight.dtype == torch.float32 and ours[1].dtype == torch.float32
    for a, b in zip(ours, ref, strict=True):
        assert (a.float() - b.float()).norm() <= 0.02 * b.float().norm()


def test_the_small_map_path_only_where_it_pays(monkeypatch) -> None:
    """Larger maps, other strides or kernels, evaluation (no grad) and traced graphs use PyTorch's convolution."""
    calls = []
    monkeypatch.setattr(cpu_ops._SmallMapConv, "apply", lambda *a: calls.append(1))
    conv = cpu_ops.Conv2d(4, 4, 3, padding=1)
    conv(torch.randn(1, 4, 5, 5))  # 5x5 map
    cpu_ops.Conv2d(4, 4, 3, stride=2, padding=1)(torch.randn(1, 4, 3, 3))
    cpu_ops.Conv2d(4, 4, 5, padding=2)(torch.randn(1, 4, 3, 3))
    with torch.no_grad():
        conv(torch.randn(1, 4, 3, 3))
    traced = torch.fx.symbolic_trace(conv)  # torch.fx sees PyTorch's convolution
    assert [n.target for n in traced.graph.nodes if n.op == "call_function"] == [torch.conv2d]
    assert calls == []
    conv(torch.randn(1, 4, 3, 3))
    assert calls == [1]
