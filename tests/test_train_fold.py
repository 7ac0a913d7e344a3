"""fc6 trained through its cells' mean (`alexnet.train.fold`) is the unfolded network's SGD, exactly: every cell
of fc6's weight and of its momentum after any number of steps, with the learning rate changing every step, across
epochs (a fold closed and opened again on a non-zero momentum), and as `alexnet train` runs it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _builders import TINY, make_folder, state_dict_of, tiny_config  # noqa: I001 (the tests' own helpers)

import alexnet
from alexnet.train.fold import FC6Fold, fc6_fold

CPU = torch.device("cpu")


def _tiny(size: int = 67, **over: object) -> alexnet.AlexNet:
    torch.manual_seed(0)
    kw = dict(conv_channels=(8, 16, 16, 16, 8), fc_features=16, input_size=size, adaptive_pool=True,
              init="kaiming", dropout=0.0)  # fmt: skip
    kw.update(over)
    return alexnet.create_model("alexnet2012", num_classes=4, **kw).double()


def _sgd(model: alexnet.AlexNet, **kw: object) -> torch.optim.SGD:
    fc = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    groups = [{"params": rest}, {"params": fc, "lr": 0.1}]  # fc6 in a group of its own lr, as a new layer's
    return torch.optim.SGD(groups, lr=0.02, momentum=0.9, weight_decay=0.01, **kw)  # type: ignore[arg-type]


def _train(model: alexnet.AlexNet, opt: torch.optim.SGD, steps: int, seed: int, fold: FC6Fold | None) -> None:
    g = torch.Generator().manual_seed(seed)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 / (1 + it))  # a new lr every step
    for _ in range(steps):
        x = torch.randn(6, 3, 67, 67, generator=g, dtype=torch.float64)
        y = torch.randint(0, 4, (6,), generator=g)
        opt.zero_grad()
        with fold if fold is not None else torch.enable_grad():
            F.cross_entropy(model(x), y).backward()
            opt.step()
        sched.step()


@pytest.mark.parametrize("fused", [False, True])
def test_the_fold_is_the_unfolded_update(fused: bool) -> None:
    """Two epochs of five steps (the fold opened per step here, per epoch in a run: the same arithmetic), then
    every weight and momentum buffer against plain SGD on the same network, in float64."""
    ours, ref = _tiny(), _tiny()
    with torch.no_grad():  # cells that differ, so the deviations' recurrence has something to carry
        ours.fc6.weight.add_(torch.randn_like(ours.fc6.weight), alpha=0.05)
        ref.fc6.weight.copy_(ours.fc6.weight)
    opt = _sgd(ours, **({"fused": True} if fused else {"foreach": False}))
    ref_opt = _sgd(ref, foreach=False)
    fold = fc6_fold(ours, opt, 67, device=CPU)
    assert fold is not None
    for epoch in range(2):
        _train(ours, opt, 5, epoch, fold)
        _train(ref, ref_opt, 5, epoch, None)
    assert ours.fc6_cell_mean is None  # closed: the model is the plain one again
    tol = 1e-6 if fused else 1e-12  # the fused kernel rounds differently; float64 either way
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=tol * float(q.detach().abs().max())), name
        buf, ref_buf = opt.state[p]["momentum_buffer"], ref_opt.state[q]["momentum_buffer"]
        assert torch.allclose(buf, ref_buf, rtol=0, atol=tol * float(ref_buf.abs().max())), name
    cells = ours.fc6.weight.view(16, 8, 36)
    assert (cells - cells.mean(-1, keepdim=True)).abs().max() > 0.01  # the deviations were kept, not averaged away


def test_without_momentum_no_buffer_appears() -> None:
    ours, ref = _tiny(), _tiny()
    opt = torch.optim.SGD(ours.parameters(), lr=0.1, weight_decay=0.01)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, weight_decay=0.01)
    fold = fc6_fold(ours, opt, 67, device=CPU)
    _train(ours, opt, 3, 0, fold)
    _train(ref, ref_opt, 3, 0, None)
    assert torch.allclose(ours.fc6.weight, ref.fc6.weight, rtol=0, atol=1e-12)
    assert "momentum_buffer" not in opt.state[ours.fc6.weight]


def test_the_fold_applies_only_where_every_forward_folds() -> None:
    """None where fc6 sees a map larger than 1x1, without adaptive pooling, on torchvision's layout (dropout
    before fc6), with fc6 frozen, under Nesterov, or when the step is not plain (DDP, compile, GradScaler)."""
    m = _tiny()
    assert fc6_fold(m, _sgd(m), 67, device=CPU) is not None
    assert fc6_fold(m, _sgd(m), 99, device=CPU) is None  # conv5's map is 2x2
    assert fc6_fold(m, _sgd(m), 67, device=CPU, plain_step=False) is None
    assert fc6_fold(m, _sgd(m), 67, device=torch.device("meta")) is None
    assert fc6_fold(m, _sgd(m, nesterov=True), 67, device=CPU) is None
    owt = alexnet.create_model("alexnet_owt", num_classes=4, input_size=67, conv_channels=(8, 16, 16, 16, 8),
                               fc_features=16)  # fmt: skip
    assert fc6_fold(owt, _sgd(owt), 67, device=CPU) is None
    m.fc6.weight.requires_grad_(False)
    frozen = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    assert fc6_fold(m, frozen, 67, device=CPU) is None


def test_an_unfolded_forward_while_open_is_refused() -> None:
    """fc6.weight is stale while the fold is open: a forward that would read it raises instead of using it."""
    m = _tiny()
    fold = fc6_fold(m, _sgd(m), 67, device=CPU)
    assert fold is not None
    with fold, pytest.raises(RuntimeError, match="folded"):
        m(torch.zeros(1, 3, 99, 99, dtype=torch.float64))
    m(torch.zeros(1, 3, 99, 99, dtype=torch.float64))  # closed: the plain network again


def test_the_conv5_map_size_is_the_forward_s() -> None:
    m = _tiny()
    for size in (67, 98, 99, 131, 227):
        assert m.conv5_map_size(size) == m.features(torch.zeros(1, 3, size, size, dtype=torch.float64)).shape[-1]


def test_a_run_trains_fc6_folded_resumes_exactly_and_equals_the_unfolded_run(tmp_path, monkeypatch) -> None:
    """`alexnet train` at 67x67 on the paper's layout opens the fold for every epoch; stopped after two epochs and
    resumed, it ends bit-identical to the uninterrupted run (the checkpoint holds the written-back cells and
    momentum); and it trains the weights the unfolded update trains, rounding aside."""
    from alexnet import train
    from alexnet.train import fold as fold_module

    data = make_folder(tmp_path / "data")
    opened: list[int] = []
    real_open = FC6Fold.open
    monkeypatch.setattr(FC6Fold, "open", lambda self, kept=None: (opened.append(1), real_open(self, kept))[1])
    kw = dict(arch="alexnet2012", input_size=67, model_options={**TINY, "adaptive_pool": True}, precision="fp32",
              epochs=3, lr=0.02)  # fmt: skip
    train.main(tiny_config(data, tmp_path / "full", **kw))
    assert len(opened) == 3
    train.main(tiny_config(data, tmp_path / "split", **{**kw, "epochs": 2}))
    train.main(tiny_config(data, tmp_path / "split", **{**kw, "resume": str(tmp_path / "split")}))
    full = state_dict_of(tmp_path / "full" / "last.safetensors")
    split = state_dict_of(tmp_path / "split" / "last.safetensors")
    assert all(torch.equal(full[k], split[k]) for k in full)
    monkeypatch.setattr(fold_module, "fc6_fold", lambda *a, **k: None)
    train.main(tiny_config(data, tmp_path / "plain", **kw))
    plain = state_dict_of(tmp_path / "plain" / "last.safetensors")
    for k, w in plain.items():
        assert (full[k] - w).norm() <= 1e-4 * w.norm(), k


def test_an_epoch_stopped_part_way_resumes_bit_for_bit(tmp_path) -> None:
    """Ctrl-C in the middle of an epoch: the checkpoint holds where the fold stood (the weights and momentum it
    opened on, the mean, its momentum, the recurrence), so the resumed run ends bit-identical to one never
    stopped; re-splitting the written-back cells instead would round differently."""
    import os
    import signal

    from alexnet import train
    from alexnet.train.loop import step_hook

    data = make_folder(tmp_path / "data")
    kw = dict(arch="alexnet2012", input_size=67, model_options={**TINY, "adaptive_pool": True}, precision="fp32",
              epochs=2, lr=0.02, batch_size=2)  # fmt: skip
    train.main(tiny_config(data, tmp_path / "full", **kw))

    def interrupt(epoch: int, stats) -> None:
        if epoch == 1 and stats.steps == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the run's own handler: finish the step, save, return

    with step_hook(interrupt):
        result = train.main(tiny_config(data, tmp_path / "cut", **kw))
    assert result.interrupted
    state = train.load_state(tmp_path / "cut")
    assert state["epoch"] == 0 and state["step"] == 4 and state["fc6_fold"]["steps"] == 4
    train.main(tiny_config(data, tmp_path / "cut", **kw, resume=str(tmp_path / "cut")))
    full = state_dict_of(tmp_path / "full" / "last.safetensors")
    cut = state_dict_of(tmp_path / "cut" / "last.safetensors")
    assert all(torch.equal(full[k], cut[k]) for k in full)
