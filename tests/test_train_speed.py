"""The CPU training path's speed-ups keep its arithmetic: the update of `alexnet.train`'s step (bf16 autocast,
channels_last, the fused SGD of `make_optimizer`, the CPU LRN) against plain fp32 `torch.optim.SGD`; the warm-up
schedule of the demo's recipe; the OpenMP waiting policy the command line sets before torch loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import alexnet
from alexnet import train
from alexnet.runtime import Precision
from alexnet.threads import configure_openmp, openmp_environment
from alexnet.train.fold import fc6_fold
from alexnet.train.loop import EpochOptions, _step
from alexnet.train.setup import make_optimizer, make_param_groups, resolve_decay_steps

REPO = Path(__file__).resolve().parents[1]


def _tiny(seed: int = 0) -> alexnet.AlexNet:
    torch.manual_seed(seed)
    return alexnet.create_model(
        "alexnet2012", num_classes=5, conv_channels=(8, 16, 16, 16, 16), fc_features=32, input_size=67,
        adaptive_pool=True, init="kaiming", dropout=0.0,
    )  # fmt: skip


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_update_equals_plain_sgd(precision: str) -> None:
    """The training loop's step (fused SGD, momentum, weight decay, a new layer at 10x lr, the CPU LRN, fc6 folded
    over the 1x1 conv5 map and trained through its cells' mean) moves every weight as plain fp32 `torch.optim.SGD`
    with PyTorch's LRN and the unfolded fc6 does: three steps equal up to float rounding in fp32; one step within
    bf16's rounding under bf16 autocast (after that the two trajectories part, as any two do)."""
    ours, ref = _tiny(), _tiny()
    for i, m in enumerate(ref.features):  # the reference: PyTorch's own LRN
        if isinstance(m, torch.nn.LocalResponseNorm):
            ref.features[i] = torch.nn.LocalResponseNorm(m.size, m.alpha, m.beta, m.k)
    ours = ours.to(memory_format=torch.channels_last)
    names = list(alexnet.models.LAYER_NAMES)
    cfg = train.TrainConfig(lr=0.05, momentum=0.9, weight_decay=5e-4)
    cpu = torch.device("cpu")
    opt = make_optimizer(cfg, make_param_groups(ours, names, {"fc8"}, cfg.lr, 10.0), cpu)
    assert opt.defaults["fused"]
    ref_opt = torch.optim.SGD(
        make_param_groups(ref, names, {"fc8"}, cfg.lr, 10.0), lr=cfg.lr, momentum=0.9, weight_decay=5e-4,
        foreach=False,
    )  # fmt: skip
    p = Precision(precision)
    o = EpochOptions(device=cpu, num_classes=5, autocast=lambda: p.autocast(cpu), channels_last=True)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    fold = fc6_fold(ours, opt, 67, device=cpu)  # as `alexnet.train` opens it around an epoch's steps
    assert fold is not None
    for _ in range(3 if precision == "fp32" else 1):
        x = torch.randn(8, 3, 67, 67, generator=g)
        y = torch.randint(0, 5, (8,), generator=g)
        with fold:
            _step(ours, opt, x.contiguous(memory_format=torch.channels_last), y, o, torch.zeros(2), "test")
        ref_opt.zero_grad()
        F.cross_entropy(ref.classifier(ref.forward_features(x)), y).backward()  # unfolded fc6
        ref_opt.step()
    moved = {k: w - before[k] for k, w in ours.state_dict().items()}
    ref_moved = {k: w - before[k] for k, w in ref.state_dict().items()}
    if precision == "fp32":  # the same arithmetic: equal up to float rounding, layer by layer
        for k, m in moved.items():
            assert ref_moved[k].abs().max() > 0, k
            err = (m - ref_moved[k]).norm() / ref_moved[k].norm()
            assert err < 1e-4, f"{k}: update differs by {err:.2e} of its size"
        return
    # bf16 autocast: activations and gradients rounded to 8 bits of mantissa through eight layers (with PyTorch's
    # own LRN the first layers' gradients differ as much): the whole update within 10 %, each layer's pointing
    # the same way
    flat = torch.cat([m.flatten() for m in moved.values()])
    ref_flat = torch.cat([m.flatten() for m in ref_moved.values()])
    assert (flat - ref_flat).norm() / ref_flat.norm() < 0.1
    for k, m in moved.items():
        cos = F.cosine_similarity(m.flatten(), ref_moved[k].flatten(), dim=0)
        assert cos > 0.9, f"{k}: cosine {cos:.3f} with the fp32 update"


def _iteration_lrs(cfg: train.TrainConfig, steps: int) -> list[float]:
    """The learning rate of each of the first ``steps`` iterations under ``cfg``'s per-iteration schedule."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    epoch_sched, per_iter = train.make_scheduler(cfg, opt)
    assert epoch_sched is None
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        per_iter.step()
    return lrs


def test_warmup_then_caffe_steps() -> None:
    cfg = train.TrainConfig(schedule="step", step_size=6, warmup_steps=4, lr=0.1)
    assert _iteration_lrs(cfg, 8) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_then_a_straight_line_to_zero() -> None:
    """The demo's schedule: the warm-up, then lr falls linearly to 0 at decay_steps (and stays there)."""
    cfg = train.TrainConfig(schedule="linear", warmup_steps=2, decay_steps=5, lr=0.1)
    assert _iteration_lrs(cfg, 7) == pytest.approx([0.05, 0.08, 0.06, 0.04, 0.02, 0.0, 0.0])


def test_a_linear_schedule_s_length_is_the_run_s_at_its_start(tmp_path) -> None:
    """decay_steps 0 is resolved once, from the run's length when it starts, and recorded in config.json: a resume
    that trains longer keeps the schedule it started with."""
    from _builders import make_folder, read_metrics, tiny_config

    data = make_folder(tmp_path / "data")  # 18 training images at batch 8: 3 steps per epoch
    train.main(tiny_config(data, tmp_path / "run", epochs=2, schedule="linear", lr=0.03))
    saved = train.load_config_file(tmp_path / "run" / "config.json")
    assert (saved["schedule"], saved["decay_steps"]) == ("linear", 6)
    assert [float(r["lr"]) for r in read_metrics(tmp_path / "run")] == pytest.approx([0.03, 0.015])
    setup = resolve_decay_steps
    assert setup(train.TrainConfig(schedule="linear", epochs=3, batch_size=8), 17, 2).decay_steps == 9  # 9 a rank
    assert setup(train.TrainConfig(schedule="linear", decay_steps=4), 17, 1).decay_steps == 4
    assert setup(train.TrainConfig(schedule="step"), 17, 1).decay_steps == 0


def test_a_linear_run_does_not_suggest_more_epochs(tmp_path) -> None:
    """Its schedule ended at lr 0: the closing summary says so instead of suggesting a resume with more epochs."""
    from alexnet.train import summary

    (tmp_path / "state.pt").write_bytes(b"")
    kw = dict(epochs_done=2, epochs=2, seconds=1.0, best=(2, 0.1), per_class=None, findings=[])
    assert any("--resume" in line for line in summary.closing_lines(tmp_path, **kw))
    lines = summary.closing_lines(tmp_path, **kw, extendable=False)
    assert not any("--resume" in line for line in lines)
    assert "  (its linear schedule ended at lr 0: a resume with more epochs would not train further)" in lines


def test_warmup_needs_an_iteration_schedule() -> None:
    with pytest.raises(train.TrainError) as e:
        train.check_config(train.TrainConfig(data="x", warmup_steps=10))
    assert str(e.value) == "warmup_steps: only with schedule=step or linear (the plateau rule has no iteration count)"
    with pytest.raises(train.TrainError) as e:
        train.check_config(train.TrainConfig(data="x", schedule="step", warmup_steps=-1))
    assert str(e.value) == "warmup_steps: expected a non-negative integer, got -1"
    with pytest.raises(train.TrainError, match="decay_steps: only with schedule=linear"):
        train.check_config(train.TrainConfig(data="x", schedule="step", decay_steps=10))


def test_openmp_threads_sleep_unless_the_user_chose() -> None:
    assert openmp_environment({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        assert openmp_environment({var: "1"}) == {}
    assert openmp_environment({"ALEXNET_THREAD_TUNING": "0"}) == {}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert not configure_openmp(env) and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {}
    assert not configure_openmp(env, command="predict") and env == {}
    assert configure_openmp(env, command="demo") and env == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_the_program_sets_the_policy_before_torch_loads() -> None:
    """`alexnet.cli.run` (the console script) sets OMP_WAIT_POLICY for a training command before any command imports
    torch (libgomp reads it once, when torch loads it), and a user's own setting wins."""
    code = (
        "import os, sys; sys.argv = ['alexnet', 'train']; import alexnet.cli as c; "
        "c._execute = lambda argv: (print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules), (0, False))[1]; "
        "c.run()"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env["PYTHONPATH"] = str(REPO / "src")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout) == (0, "PASSIVE False\n"), out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout) == (0, "ACTIVE False\n"), out.stderr


def test_demo_cpu_recipe_is_the_readmes() -> None:
    """The from-scratch CPU demo: all training images but 1,000, 5 epochs at batch 256, lr 0.06 reached over a
    warm-up epoch and falling linearly to 0 at the last step, patches from a 70x70 square, reported on all 10,000
    test images (README, "make demo"). The GPU's from-scratch demo keeps Caffe's step schedule."""
    from alexnet import demo

    c = demo.resolve(demo.DemoConfig(), False, torch.device("cpu"))
    assert (c.train_samples, c.val_samples, c.test_samples) == (0, 1000, 10000)
    assert (c.epochs, c.batch_size, c.lr, c.input_size, c.resize_size) == (5, 256, 0.06, 67, 70)
    tc = demo._train_config(c, Path("data"), False, 59000, "stats.json")
    assert (tc.schedule, tc.warmup_steps, tc.decay_steps, tc.arch) == ("linear", 231, 1155, "alexnet2012")
    assert (tc.resize_size, tc.stats) == (70, "stats.json")
    gpu = demo.resolve(demo.DemoConfig(), False, torch.device("cuda"))
    tc = demo._train_config(gpu, Path("data"), False, 59000, "stats.json")
    assert (tc.schedule, tc.step_size, tc.warmup_steps) == ("step", 1844, 50)


@pytest.mark.slow
def test_training_benchmark_prints_ours_the_baseline_and_the_ratio() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "benchmarks", "train", "--runs", "1", "--steps", "1", "--batch", "4", "--json"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["quiet"]["ours"] > 0 and r["quiet"]["baseline"] > 0
    assert r["quiet"]["ratio"] == pytest.approx(r["quiet"]["ours"] / r["quiet"]["baseline"])
    assert r["threads"]["ours"]["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
