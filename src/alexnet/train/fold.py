"""fc6 trained folded: its 37.7 M weights updated through a 256x4096 mean, exactly.

At the CPU demo's 67x67 input conv5's map is 1x1 and adaptive pooling copies each channel to the 36 cells of
fc6's 6x6 input, so fc6 is one (C -> 4096) product with its weight summed over the cells
(`alexnet.models.AlexNet._forward_folded`) and every cell of a channel gets the same gradient ``g``. The paper's
update (section 5: ``v <- 0.9 v - 0.0005 lr w - lr g``; PyTorch's SGD: ``d = g + wd w``, ``v <- mu v + d``,
``w <- w - lr v``) then splits exactly: writing each cell as the cells' mean plus a deviation,

- the mean and its momentum follow SGD on ``g`` itself (a (4096, C) parameter: 36x less to update), and
- the deviations (which sum to zero, so the forward never sees them) follow ``e' = (1 - lr wd) e - lr mu ve``,
  ``ve' = mu ve + wd e``: no data in it, so four numbers per step (a 2x2 matrix product kept in float64) carry
  every cell from where the fold opened.

`FC6Fold` does that for one epoch (a context: opened before the steps, closed before anything reads the weights):
the main optimizer skips fc6.weight (it gets no gradient), a post-step hook updates the mean with the main
optimizer's own lr, momentum and weight decay, and closing writes fc6.weight and its momentum buffer back, so
checkpoints, validation and a resume see the unfolded network's state (rounding aside; tests/test_train_fold.py
compares it with the unfolded update). What it saves per step at batch 256 (docs/BENCHMARKS.md): materialising 36
copies of fc6's gradient, the sum over the cells in the forward, and the fused update's pass over 37.7 M weights
with their momentum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..models import AlexNet

__all__ = ["FC6Fold", "fc6_fold"]


class FC6Fold:
    """fc6's weight trained through its cells' mean while open (see the module's docstring)."""

    def __init__(self, model: AlexNet, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        fc6 = model.classifier[0]
        assert isinstance(fc6, nn.Linear)
        self.weight: torch.Tensor = fc6.weight
        channels = model.config.conv_channels[4]
        self.shape = (fc6.out_features, channels, fc6.in_features // channels)
        self.group = _group_of(optimizer, self.weight)
        self.mean: torch.Tensor | None = None
        self.inner: torch.optim.SGD | None = None
        self.matrix: tuple[float, ...] = (1.0, 0.0, 0.0, 1.0)  # (e, ve) now = matrix @ (e, ve) at opening
        self.steps = 0
        self._handle: Any = None

    def __enter__(self) -> FC6Fold:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, kept: Mapping[str, Any] | None = None) -> None:
        """Split fc6.weight (and its momentum, if any) into the cells' mean, trained from now on, and deviations
        left where they are until `close`; or, with ``kept`` (what `close(keep=True)` returned for an epoch that
        stopped, as a checkpoint holds it), continue that fold exactly where it stood."""
        g = self.group
        fused = {"fused": True} if g.get("fused") else {}
        with torch.no_grad():
            if kept is not None:  # the weights and momentum the fold opened on, the mean and recurrence since
                self.weight.copy_(kept["weight"])
                self._set_momentum(kept["momentum"])
            self.mean = self.weight.detach().view(self.shape).mean(-1) if kept is None else kept["mean"].clone()
        self.mean.requires_grad_()
        self.inner = torch.optim.SGD(
            [self.mean], lr=g["lr"], momentum=g["momentum"], weight_decay=g["weight_decay"], **fused
        )
        buf = self.optimizer.state.get(self.weight, {}).get("momentum_buffer")
        if kept is not None and kept["mean_momentum"] is not None:
            self.inner.state[self.mean]["momentum_buffer"] = kept["mean_momentum"].clone()
        elif kept is None and buf is not None:
            self.inner.state[self.mean]["momentum_buffer"] = buf.view(self.shape).mean(-1)
        self.matrix = (1.0, 0.0, 0.0, 1.0) if kept is None else tuple(float(v) for v in kept["matrix"])
        self.steps = 0 if kept is None else int(kept["steps"])
        self.model.fc6_cell_mean = self.mean
        self._handle = self.optimizer.register_step_post_hook(self._after_step)

    def _set_momentum(self, buf: torch.Tensor | None) -> None:
        state = self.optimizer.state[self.weight]
        if buf is None:
            state.pop("momentum_buffer", None)
        else:
            state["momentum_buffer"] = buf.clone()

    def _after_step(self, _optimizer: Any, _args: Any, _kwargs: Any) -> None:
        """The mean's SGD step at the main optimizer's current settings, and the deviations' recurrence."""
        if self.mean is None or self.mean.grad is None:  # no gradient: SGD leaves a parameter (and its decay) alone
            return
        g, inner = self.group, self.inner
        assert inner is not None
        lr, mu, wd = g["lr"], g["momentum"], g["weight_decay"]
        inner.param_groups[0].update(lr=lr, momentum=mu, weight_decay=wd)
        inner.step()
        self.mean.grad = None
        a, b, c, d = self.matrix
        step = ((1.0 - lr * wd), -lr * mu, wd, mu)  # [[e'], [ve']] = step @ [[e], [ve]]
        self.matrix = (
            step[0] * a + step[1] * c, step[0] * b + step[1] * d, step[2] * a + step[3] * c, step[2] * b + step[3] * d
        )  # fmt: skip
        self.steps += 1

    def close(self, keep: bool = False) -> dict[str, Any] | None:
        """Write every cell back (mean + the deviations carried by the recurrence), and the momentum likewise.
        ``keep`` (an epoch stopped part-way): also return where the fold stood, for the checkpoint, so that a
        resume continues it bit for bit (re-splitting the written-back cells would round differently)."""
        if self._handle is None:
            return None
        self._handle.remove()
        self._handle = None
        self.model.fc6_cell_mean = None
        mean, inner = self.mean, self.inner
        self.mean = self.inner = None
        if not self.steps:
            return None
        assert mean is not None and inner is not None
        buf = self.optimizer.state[self.weight].get("momentum_buffer")
        inner_buf = inner.state[mean].get("momentum_buffer")
        kept = None
        if keep:
            kept = {
                "weight": self.weight.detach().clone(), "momentum": None if buf is None else buf.clone(),
                "mean": mean.detach().clone(), "mean_momentum": None if inner_buf is None else inner_buf.clone(),
                "matrix": list(self.matrix), "steps": self.steps,
            }  # fmt: skip
        self._write_back(mean.detach(), inner_buf, buf)
        return kept

    def _write_back(self, mean: torch.Tensor, inner_buf: torch.Tensor | None, buf: torch.Tensor | None) -> None:
        a, b, c, d = self.matrix
        state = self.optimizer.state[self.weight]
        with torch.no_grad():
            w = self.weight.view(self.shape)
            e = w - w.mean(-1, keepdim=True)
            ve = None if buf is None else buf.view(self.shape) - buf.view(self.shape).mean(-1, keepdim=True)
            w.copy_(e).mul_(a).add_(mean.unsqueeze(-1))
            if ve is not None:
                w.add_(ve, alpha=b)
            if inner_buf is None:  # no momentum (mu = 0): SGD keeps no buffer
                return
            new = e.mul_(c).add_(inner_buf.unsqueeze(-1))
            if ve is not None:
                new.add_(ve, alpha=d)
            if buf is None:
                state["momentum_buffer"] = new.view_as(self.weight)
            else:
                buf.copy_(new.view_as(buf))


def _group_of(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, Any]:
    for g in optimizer.param_groups:
        if any(q is p for q in g["params"]):
            return g
    raise ValueError("fc6.weight is not in the optimizer")


def fc6_fold(
    model: nn.Module, optimizer: torch.optim.Optimizer, input_size: int, *, device: torch.device,
    plain_step: bool = True,
) -> FC6Fold | None:  # fmt: skip
    """The fold for a run whose every training forward folds fc6 (`AlexNet.folds_fc6` at its input size, on the
    CPU), fc6 learning under plain SGD (momentum without dampening or Nesterov). None otherwise, and when
    ``plain_step`` is False (DDP, whose all-reduce hooks fc6.weight's gradient; torch.compile; fp16's GradScaler,
    which unscales only the optimizer's own parameters)."""
    if not plain_step or device.type != "cpu" or not isinstance(model, AlexNet) or not model.folds_fc6(input_size):
        return None
    fc6 = model.classifier[0]
    if not isinstance(fc6, nn.Linear) or not fc6.weight.requires_grad:
        return None
    try:
        g = _group_of(optimizer, fc6.weight)
    except ValueError:
        return None
    if not isinstance(optimizer, torch.optim.SGD) or g.get("dampening") or g.get("nesterov") or g.get("maximize"):
        return None
    return FC6Fold(model, optimizer)
