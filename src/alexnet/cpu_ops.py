"""The CPU's own versions of a few AlexNet operations: same arithmetic as PyTorch's, faster where the CPU
training step spends its time (docs/BENCHMARKS.md, "Training at the demo's shape").

- `LocalResponseNorm` (section 3.3) as a channel-window matmul with its own backward, in the input's dtype;
- `Dropout` (section 4.2) drawing its mask with ``torch.rand``;
- `Conv2d` whose weight gradient on the 3x3 maps of conv3-conv5 at the CPU demo's 67x67 is one matmul over the
  unfolded input (oneDNN's bfloat16 weight gradient there costs 4-7x the forward);
- `EqualCellsSum`, the folded fc6's weight from its cells' mean (`alexnet.train.fold`).

Each takes its fast path only for a real CPU tensor in eager mode (`eager_cpu`); traced, scripted, exported or
compiled graphs, and other devices, get PyTorch's own operation, so exports and torch.fx see standard layers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

__all__ = ["Conv2d", "Dropout", "EqualCellsSum", "LocalResponseNorm", "eager_cpu"]


def _lrn_band(channels: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """(C, C) 0/1 matrix B with ``(sq @ B)[:, c]`` the sum of ``sq`` over channels ``c - size//2 .. c + (size-1)//2``
    (zero-padded at the ends): LRN's window, as `torch.nn.functional.local_response_norm` takes it."""
    i = torch.arange(channels)
    d = i.view(1, -1) - i.view(-1, 1)  # d[j, c] = c - j
    return ((d >= -((size - 1) // 2)) & (d <= size // 2)).to(dtype)


def _channels_last_rows(x: torch.Tensor) -> torch.Tensor | None:
    """``x`` (N, C, H, W) as an (N*H*W, C) view when it is channels_last in memory, else None."""
    rows = x.permute(0, 2, 3, 1)
    return rows.view(-1, x.shape[1]) if rows.is_contiguous() else None


def _window_sum(sq: torch.Tensor, band: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """``shift + scale * window_sum(sq)`` over channels, as one matmul per layout (channels_last: rows of C;
    NCHW: B^T @ (C, H*W) per image). ``band`` is symmetric for LRN's odd sizes and transposed otherwise."""
    n, c, h, w = sq.shape
    rows = _channels_last_rows(sq)
    if rows is not None:
        out = torch.addmm(torch.full((c,), shift, dtype=sq.dtype), rows, band, alpha=scale)
        return out.view(n, h, w, c).permute(0, 3, 1, 2)
    out = torch.matmul(band.t(), sq.reshape(n, c, h * w)).mul_(scale).add_(shift)
    return out.view(n, c, h, w)


class _LRNFunction(torch.autograd.Function):
    """LRN with its own backward: ``y = x * d**-beta``, ``d = k + alpha/n * W(x**2)`` (W the channel window), so
    ``dx = g * d**-beta - 2*alpha*beta/n * x * W'(g * y / d)``. Two small matmuls and a few elementwise passes in
    the input's dtype, instead of PyTorch's avg_pool3d forward and backward in float32 (38% of a bf16 training
    step at the demo's shape, docs/BENCHMARKS.md)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        band = _lrn_band(x.shape[1], size, x.dtype)
        d = _window_sum(x * x, band, alpha / size, k)
        if beta == 0.75:  # the paper's: d**-0.75 = d**-0.5 * d**-0.25, two root passes instead of pow's exp and log
            p = d.rsqrt()
            p = p.mul_(p.sqrt())
        else:
            p = d.pow(-beta)
        ctx.save_for_backward(x, p, d, band)
        ctx.coef = 2.0 * alpha * beta / size
        return x * p

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, p, d, band = ctx.saved_tensors
        gp = g * p
        u = _window_sum(gp * x / d, band.t().contiguous(), 1.0, 0.0)  # W' = W^T
        return torch.addcmul(gp, x, u, value=-ctx.coef), None, None, None, None


class LocalResponseNorm(nn.LocalResponseNorm):
    """`torch.nn.LocalResponseNorm` (section 3.3: ``b = a * (k + alpha/n * sum of a**2 over n adjacent channels)
    ** -beta``) computed on the CPU as a channel-window matmul in the input's dtype (`_LRNFunction`): PyTorch's
    kernel is an avg_pool3d with no bfloat16 CPU version (a float32 round trip) and a slow backward. Elsewhere,
    and when traced or scripted for export, PyTorch's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _local_response_norm(x, self.size, self.alpha, self.beta, self.k)


def _local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """`LocalResponseNorm`'s arithmetic. A free function, wrapped for torch.fx (below): its branches are taken
    when the traced graph runs, not when it is traced, and TorchScript compiles it (the fused path is skipped
    there). Eager CPU tensors take `_LRNFunction`; traced, exported or compiled graphs PyTorch's own LRN."""
    if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript drops this block only when the test stands alone)
        if eager_cpu(x):
            return _fused_lrn(x, size, alpha, beta, k)
    if x.device.type == "cpu" and (x.dtype == torch.bfloat16 or x.dtype == torch.float16):
        return F.local_response_norm(x.float(), size, alpha, beta, k).to(x.dtype)
    return F.local_response_norm(x, size, alpha, beta, k)


@torch.jit.unused
def _fused_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    return _LRNFunction.apply(x, size, alpha, beta, k)


def eager_cpu(x: torch.Tensor) -> bool:
    """Whether ``x`` is a real 4-d CPU tensor in eager mode (not traced by TorchScript, torch.fx, torch.export or
    the ONNX exporter, which get PyTorch's own LRN)."""
    if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return not torch.onnx.is_in_onnx_export() and x.device.type == "cpu" and x.ndim == 4


class Dropout(nn.Dropout):
    """`torch.nn.Dropout` (section 4: each hidden unit of fc6/fc7 is zeroed with probability ``p`` while training;
    inverted, as torchvision's, so that evaluation needs no rescaling) whose CPU mask comes from ``torch.rand``.
    PyTorch's CPU ``bernoulli_`` kernel is several times slower than ``rand`` for the same Bernoulli(1 - p) mask, a
    visible share of a cached fine-tuning step (docs/BENCHMARKS.md). Other devices keep PyTorch's fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _dropout(x, self.p, self.training, self.inplace)


def _dropout(x: torch.Tensor, p: float, training: bool, inplace: bool) -> torch.Tensor:
    """`Dropout`'s arithmetic, a free function for torch.fx and TorchScript as `_local_response_norm`."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training, inplace)
    if p == 1.0:
        return x.mul_(0.0) if inplace else x * 0.0
    keep = torch.rand(x.shape, device=x.device) >= p  # float32 draws whatever x's dtype
    scale = keep.to(x.dtype).mul_(1.0 / (1.0 - p))
    return x.mul_(scale) if inplace else x * scale


class EqualCellsSum(torch.autograd.Function):
    """The sum of fc6's cells from their mean (``cells * mean``; the deviations sum to zero), whose gradient is
    one cell's: each of the 36 cells gets the folded weight's gradient, so the mean, trained by SGD on that
    gradient, moves exactly as the cells' mean of the unfolded network moves (`alexnet.train.fold`)."""

    @staticmethod
    def forward(ctx: Any, mean: torch.Tensor, cells: int) -> torch.Tensor:
        return mean * cells

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class Conv2d(nn.Conv2d):
    """`torch.nn.Conv2d` (the same module, state dict and hooks) whose training backward on a small map
    (stride 1, 3x3 kernel, padding 1, at most 3x3 outputs: conv3-conv5 at 67x67) computes the weight gradient as
    one matmul over the unfolded input (`_SmallMapConv`) and leaves the input gradient to oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript drops this block only when the test stands alone)
            if self._small_map(x):
                return _small_map_conv(x, self.weight, self.bias, self.groups)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused
    def _small_map(self, x: torch.Tensor) -> bool:
        # eager_cpu first: under torch.fx, self.weight is a proxy whose requires_grad cannot be tested
        if not eager_cpu(x) or not torch.is_grad_enabled() or not self.weight.requires_grad:
            return False
        shape = (self.kernel_size, self.stride, self.padding, self.dilation, self.padding_mode)
        return shape == ((3, 3), (1, 1), (1, 1), (1, 1), "zeros") and x.shape[-2] <= 3 and x.shape[-1] <= 3


@torch.jit.unused
def _small_map_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """`_SmallMapConv` under the caller's autocast: inputs cast as autocast casts a convolution's (the casts are
    differentiable, so the fp32 weights get their gradients), the function itself outside autocast."""
    if torch.is_autocast_enabled("cpu"):
        dt = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dt), weight.to(dt)
        bias = bias.to(dt) if bias is not None else None
    with torch.autocast("cpu", enabled=False):
        return _SmallMapConv.apply(x, weight, bias, groups)


def _unfolded_weight_grad(x: torch.Tensor, g: torch.Tensor, groups: int) -> torch.Tensor:
    """The weight gradient of a stride-1, padding-1 3x3 convolution: the output gradient's rows (one per image
    and position) against the unfolded input's (its 3x3 neighbourhood, zero-padded), one matmul per group."""
    n, c = x.shape[:2]
    o, ho, wo = g.shape[1:]
    cols = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1)).unfold(1, 3, 1).unfold(2, 3, 1)  # (N, Ho, Wo, C, 3, 3)
    rows = g.permute(0, 2, 3, 1).reshape(n * ho * wo, o)
    cg, og = c // groups, o // groups
    if groups == 1:
        gw = rows.t() @ cols.permute(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, 9 * c)  # (O, 3*3*C)
    else:
        cols = cols.reshape(n, ho, wo, groups, cg, 3, 3).permute(3, 0, 1, 2, 5, 6, 4).reshape(groups, -1, 9 * cg)
        gw = torch.bmm(rows.view(-1, groups, og).permute(1, 2, 0), cols)  # (groups, O/groups, 3*3*C/groups)
    return gw.reshape(o, 3, 3, cg).permute(0, 3, 1, 2)  # (O, C/groups, 3, 3), channels_last in memory


class _SmallMapConv(torch.autograd.Function):
    """A stride-1, padding-1 3x3 convolution whose weight gradient is `_unfolded_weight_grad` (at 3x3 maps oneDNN's
    bfloat16 weight gradient of conv3-conv5 costs 4-7x their forward; the matmul about 1.5x) and whose bias
    gradient is the output gradient's sum. The input gradient is oneDNN's own."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.groups, ctx.has_bias = groups, bias is not None
        return F.conv2d(x, weight, bias, 1, 1, 1, groups)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        g = g.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else g
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                g, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], ctx.groups, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            gw = _unfolded_weight_grad(x, g, ctx.groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None


# torch.fx records calls of these as single nodes instead of tracing into them (their branches depend on the
# device or the dtype); torchvision's `create_feature_extractor` traces `AlexNet` through them.
torch.fx.wrap("_local_response_norm")
torch.fx.wrap("_dropout")
