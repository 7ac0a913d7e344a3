"""Training and fine-tuning (issue 4): the recipe's loop on tiny generated data, resume, checkpoints, bad input."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _builders import (  # noqa: I001 (the tests' own helpers)
    HANG_S,
    TINY,
    assert_same_metrics,
    assert_same_weights,
    check_sigint_resume,
    make_folder,
    read_metrics,
    state_dict_of,
    tiny_config,
    tiny_train_flags,
)

import alexnet
from alexnet import train
from alexnet.cli import main as cli_main
from alexnet.models import CONV_LAYERS, LAYER_NAMES
from alexnet.weights import default_preprocessing, load_model, save_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"))


# --- the recipe learns ---------------------------------------------------------------------------------------------
def test_learns_tiny_dataset_to_100_percent(tmp_path):
    data = make_folder(tmp_path / "data", per_class=4)
    wide = {"conv_channels": [32, 64, 64, 64, 64], "fc_features": 128}
    cfg = tiny_config(data, tmp_path / "run", epochs=14, augment=False, dropout=0.0, init="torchvision", lr=0.02,
                      batch_size=4, val_split=0.0, plateau_patience=100, model_options=wide)  # fmt: skip
    result = train.main(cfg)
    rows = read_metrics(tmp_path / "run")
    assert list(rows[0]) == list(train.METRICS_COLUMNS)
    assert len(rows) == 14 and result.epochs_done == 14
    assert float(rows[-1]["train_top1_accuracy"]) == 1.0  # a fraction, as every rate the toolkit writes
    # the saved weights classify every training image (eval mode, the eval transform)
    model, pre = load_model(tmp_path / "run" / "last.safetensors")
    assert pre.class_names == ["class0", "class1", "class2"]
    from alexnet.data.datasets import open_dataset

    ds = open_dataset(data, transform=pre.eval_transform())
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert pred.tolist() == ds.targets
    saved = train.load_config_file(tmp_path / "run" / "config.json")
    assert saved["epochs"] == 14 and saved["momentum"] == 0.9 and saved["weight_decay"] == 5e-4


def test_paper_recipe_defaults():
    c = train.TrainConfig()
    assert (c.batch_size, c.lr, c.momentum, c.weight_decay, c.epochs, c.dropout) == (128, 0.01, 0.9, 5e-4, 90, 0.5)
    assert (c.schedule, c.lr_factor, c.max_lr_drops, c.init, c.lighting, c.augment) == (
        "plateau", 0.1, 3, "paper", 0.1, True
    )  # fmt: skip


def test_plateau_drops_at_most_three_times():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    cfg = train.TrainConfig(plateau_patience=0)
    sched, per_iter = train.make_scheduler(cfg, opt)
    assert per_iter is None
    lrs = []
    for _ in range(12):
        sched.step(0.5)  # the validation error never improves
        lrs.append(opt.param_groups[0]["lr"])
    drops = sum(b < a for a, b in zip([0.01, *lrs], lrs))
    assert drops == 3
    assert math.isclose(lrs[-1], 1e-5, rel_tol=1e-5) and math.isclose(min(lrs), 1e-5, rel_tol=1e-5)


def test_caffe_step_schedule(data, tmp_path):
    # 18 training images, batch 8: 3 iterations per epoch; x0.1 every 3 iterations
    cfg = tiny_config(data, tmp_path / "run", epochs=3, schedule="step", step_size=3)
    train.main(cfg)
    lrs = [float(r["lr"]) for r in read_metrics(tmp_path / "run")]
    assert lrs == pytest.approx([0.01, 0.001, 0.0001])


def test_config_precedence_defaults_file_flags(data, tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"lr": 0.05, "epochs": 7, "momentum": 0.5}')
    args = ["train", str(data), "--config", str(f), "--epochs", "3", "--arch", "alexnet_owt"]
    from alexnet.cli import build_parser
    from alexnet.cli.training import config_flags

    ns = build_parser().parse_args(args)
    flags = config_flags(ns)
    cfg = train.config_from_sources(flags, config_file=ns.config)
    assert (cfg.lr, cfg.epochs, cfg.momentum, cfg.weight_decay, cfg.arch) == (0.05, 3, 0.5, 5e-4, "alexnet_owt")
    f.write_text('{"lrr": 0.05}')
    with pytest.raises(train.TrainError, match="unknown setting.*lrr"):
        train.config_from_sources(flags, config_file=f)


# --- resume and checkpoints ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_resume_equals_uninterrupted(data, tmp_path, workers):
    """train 4 epochs == train 2, stop, resume to 4: identical weights and metrics (augmentation and dropout on)."""
    kw = dict(epochs=4, workers=workers, lr=0.02)
    train.main(tiny_config(data, tmp_path / "full", **kw))
    train.main(tiny_config(data, tmp_path / "split", **{**kw, "epochs": 2}))
    assert len(read_metrics(tmp_path / "split")) == 2
    train.main(tiny_config(data, tmp_path / "split", **{**kw, "resume": str(tmp_path / "split")}))
    assert_same_weights(tmp_path / "full" / "last.safetensors", tmp_path / "split" / "last.safetensors")
    assert_same_weights(tmp_path / "full" / "best.safetensors", tmp_path / "split" / "best.safetensors")
    assert_same_metrics(tmp_path / "full", tmp_path / "split")
    state = train.load_state(tmp_path / "split")  # weights_only=True inside
    assert state["epoch"] == 4 and set(state["rng"][0]) >= {"torch", "numpy", "python"}


def test_loader_workers_do_not_change_the_result(data, tmp_path):
    """Augmentation draws from per-batch seeds: 0 or 2 workers (kept across epochs) train the same weights."""
    kw = dict(epochs=2, lr=0.02, lighting=0.1)
    train.main(tiny_config(data, tmp_path / "w0", workers=0, **kw))
    train.main(tiny_config(data, tmp_path / "w2", workers=2, **kw))
    assert_same_weights(tmp_path / "w0" / "last.safetensors", tmp_path / "w2" / "last.safetensors")
    assert_same_metrics(tmp_path / "w0", tmp_path / "w2")


@pytest.mark.parametrize("workers", [0, 2])
def test_sigint_mid_epoch_saves_and_resumes_exactly(data, tmp_path, workers):
    """SIGINT finishes the step, saves, exits; the resumed run equals an uninterrupted one (with loader workers
    too: the resumed epoch's batches draw their augmentation from the same per-batch seeds)."""
    check_sigint_resume(data, tmp_path, workers)


_SLOW_WRITE = r"""
import sys, time, torch, safetensors.torch as st
from alexnet import train
real_save, real_st = torch.save, st.save_file
def slow_save(obj, f, *a, **k):
    real_save(obj, f, *a, **k)
    with open(f, "r+b") as fh:
        fh.truncate(100)  # a half-written file where the checkpoint is going
    print("WRITING", flush=True)
    time.sleep(60)
torch.save = slow_save
cfg = train.resolve_config(dict(data=sys.argv[1], out=sys.argv[2], resume=sys.argv[2], arch="alexnet_owt",
    input_size=64, model_options={"conv_channels": [16, 32, 32, 32, 32], "fc_features": 64}, epochs=3,
    batch_size=8, workers=0, progress="none", tensorboard=False, val_split=0.25))
train.main(cfg)
"""


def test_sigkill_while_writing_checkpoint_keeps_previous(data, tmp_path):
    run = tmp_path / "run"
    train.main(tiny_config(data, run, epochs=2))
    before = (run / "state.pt").read_bytes()
    p = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, str(data), str(run)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "WRITING"  # epoch 3 is inside torch.save of state.pt
    p.kill()
    p.wait(timeout=HANG_S)
    assert list(run.glob(".state.pt.*.tmp"))  # the half-written file was beside, never over, the checkpoint
    assert (run / "state.pt").read_bytes() == before
    state = train.load_state(run)
    assert state["epoch"] == 2
    load_model(run / "last.safetensors")
    load_model(run / "best.safetensors")
    result = train.main(tiny_config(data, run, epochs=3, resume=str(run)))  # and the run still resumes
    assert result.epochs_done == 3 and train.load_state(run)["epoch"] == 3
    assert not list(run.glob(".*.tmp"))  # the killed writer's temporary file is cleared


# --- fine-tuning -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = alexnet.create_model("alexnet_owt", num_classes=5, input_size=64, **TINY)
    pre = default_preprocessing(model.config, [f"old{i}" for i in range(5)])
    pre = alexnet.Preprocessing.from_dict({**pre.to_dict(), "resize_size": 73, "mean": [0.3, 0.4, 0.5]})
    path = tmp_path_factory.mktemp("w") / "pre.safetensors"
    save_model(model, pre, path)
    return path


def test_finetune_frozen_identical_reinit_changed_fc8_resized(data, pretrained, tmp_path):
    cfg = tiny_config(data, tmp_path / "ft", weights=str(pretrained), train_layers=["fc6", "fc7", "fc8"],
                      reinit=["fc7"], new_layer_lr_mult=10.0, epochs=2)  # fmt: skip
    train.main(cfg)
    src, _ = load_model(pretrained)
    out, pre = load_model(tmp_path / "ft" / "last.safetensors")
    for name in CONV_LAYERS:  # frozen: bit-identical
        for a, b in zip(src.layer(name).parameters(), out.layer(name).parameters()):
            assert torch.equal(a, b), name
    assert not torch.equal(src.fc6.weight, out.fc6.weight)  # trained from the loaded weights
    assert not torch.equal(src.fc7.weight, out.fc7.weight)  # re-initialised and trained
    assert out.fc8.out_features == 3 and out.config.num_classes == 3  # 5 classes -> the data set's 3
    assert pre.class_names == ["class0", "class1", "class2"]
    assert pre.mean == (0.3, 0.4, 0.5) and pre.resize_size == 73  # the weights' own normalisation is kept
    groups = train.load_state(tmp_path / "ft")["optimizer"]["param_groups"]
    # fc6 keeps the base rate; fc7 (reinit) and fc8 (resized) are new layers at 10x
    assert [(g["lr"], len(g["params"])) for g in groups] == [(0.01, 2), (pytest.approx(0.1), 4)]


def test_finetune_reinit_only_changes_the_layer(data, pretrained, tmp_path):
    """reinit without training: the layer starts fresh but stays frozen (kept apart from train_layers)."""
    cfg = tiny_config(data, tmp_path / "ft", weights=str(pretrained), train_layers=["fc8"], reinit=["fc6"], epochs=1)
    train.main(cfg)
    src, _ = load_model(pretrained)
    out, _ = load_model(tmp_path / "ft" / "last.safetensors")
    assert not torch.equal(src.fc6.weight, out.fc6.weight)
    assert torch.equal(src.fc7.weight, out.fc7.weight)


def test_param_groups_hold_only_learners():
    model = alexnet.create_model("alexnet_owt", num_classes=3, input_size=64, **TINY)
    learners = train.freeze_layers(model, ["fc8"])
    groups = train.make_param_groups(model, learners, {"fc8"}, 0.01, 10.0)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == 2 and params[0] is model.fc8.weight
    assert all(not p.requires_grad for n in LAYER_NAMES if n != "fc8" for p in model.layer(n).parameters())


def test_dropout_follows_train_and_eval_mode(data):
    model = alexnet.create_model("alexnet_owt", num_classes=3, input_size=64, **TINY)
    seen = []
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for m in drops:
        m.register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    from alexnet.data.datasets import make_loader, open_dataset
    from alexnet.evaluate import evaluate

    pre = default_preprocessing(model.config)
    ds = open_dataset(data, transform=pre.geometry(True))
    loader = make_loader(ds, batch_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.eval()
    options = train.EpochOptions(device=torch.device("cpu"), num_classes=3, batch_transform=pre.batch_transform(True))
    train.train_one_epoch(model, loader, opt, options, epoch=1)
    assert seen and all(seen)
    seen.clear()
    evaluate(model, make_loader(open_dataset(data, transform=pre.geometry(False)), batch_size=8),
             batch_transform=pre.batch_transform(False))  # fmt: skip
    assert seen and not any(seen)


def test_feature_cache_equals_plain_path(data, pretrained, tmp_path):
    kw = dict(weights=str(pretrained), train_layers=["fc6", "fc7", "fc8"], augment=False, epochs=3, lr=0.05)
    train.main(tiny_config(data, tmp_path / "plain", **kw))
    train.main(tiny_config(data, tmp_path / "cache", **kw, cache_features=True))
    a, b = (
        state_dict_of(tmp_path / "plain" / "last.safetensors"),
        state_dict_of(tmp_path / "cache" / "last.safetensors"),
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    ra, rb = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "cache")
    for x, y in zip(ra, rb):
        for k in ("train_loss", "train_top1_accuracy", "val_loss", "val_top1_accuracy"):
            assert float(x[k]) == pytest.approx(float(y[k]), rel=1e-5, abs=1e-6)


def test_cache_split_stops_at_the_first_learner_or_dropout():
    paper = alexnet.create_model("alexnet2012", num_classes=3, input_size=64, adaptive_pool=True, **TINY)
    train.freeze_layers(paper, ["fc7", "fc8"])
    assert train.cache_split(paper) == 2  # fc6 + ReLU; the dropout after them draws a new mask every step
    train.freeze_layers(paper, ["fc6", "fc7", "fc8"])
    assert train.cache_split(paper) == 0
    owt = alexnet.create_model("alexnet_owt", num_classes=3, input_size=64, **TINY)
    train.freeze_layers(owt, ["fc7", "fc8"])
    assert train.cache_split(owt) == 0  # torchvision's layout: dropout comes before fc6
    nodrop = alexnet.create_model("alexnet2012", num_classes=3, dropout=0.0, input_size=64, adaptive_pool=True, **TINY)
    train.freeze_layers(nodrop, ["fc8"])
    assert train.cache_split(nodrop) == 4  # fc6, ReLU, fc7, ReLU


def test_feature_cache_through_frozen_fc6_equals_plain_path(data, tmp_path):
    """The tutorial's case: the paper's layout, fc7 and fc8 learn; the cache holds fc6's output."""
    torch.manual_seed(2)
    model = alexnet.create_model(
        "alexnet2012", num_classes=3, input_size=64, adaptive_pool=True, conv1_padding=2, **TINY
    )
    pre = default_preprocessing(model.config, ["class0", "class1", "class2"])
    path = save_model(model, pre, tmp_path / "paper.safetensors")
    kw = dict(weights=str(path), train_layers=["fc7", "fc8"], augment=False, epochs=3, lr=0.05, arch="alexnet2012")
    calls = []
    original = train.setup.compute_features  # where the run calls it from

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((kwargs["front"], result[0].features.shape[1]))
        return result

    train.main(tiny_config(data, tmp_path / "plain", **kw))
    train.setup.compute_features = spy
    try:
        train.main(tiny_config(data, tmp_path / "cache", **kw, cache_features=True))
    finally:
        train.setup.compute_features = original
    assert calls == [(2, 64), (2, 64)]  # train and val caches hold fc6's 64 outputs, not conv5's 32*6*6
    a, b = (
        state_dict_of(tmp_path / "plain" / "last.safetensors"),
        state_dict_of(tmp_path / "cache" / "last.safetensors"),
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert torch.equal(a["classifier.0.weight"], model.fc6.weight)  # fc6 frozen on both paths
    assert not torch.equal(a["classifier.3.weight"], model.fc7.weight)
    ra, rb = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "cache")
    for x, y in zip(ra, rb):
        for k in ("train_loss", "train_top1_accuracy", "val_loss", "val_top1_accuracy"):
            assert float(x[k]) == pytest.approx(float(y[k]), rel=1e-5, abs=1e-6)


def test_feature_cache_needs_frozen_convs(data, pretrained, tmp_path):
    with pytest.raises(train.TrainError, match="every conv layer frozen"):
        tiny_config(data, tmp_path / "x", weights=str(pretrained), cache_features=True)
    with pytest.raises(train.TrainError, match="every conv layer frozen"):
        tiny_config(data, tmp_path / "x", weights=str(pretrained), cache_features=True,
                    train_layers=["conv5", "fc8"])  # fmt: skip


# --- bad input: one clear line, never a traceback --------------------------------------------------------------------
def _cli_error(capsys, args: list[str]) -> str:
    rc = cli_main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _tiny_args(data: Path, out: Path) -> list[str]:
    return tiny_train_flags(data, out) + ["--progress", "none", "--epochs", "1"]


def test_empty_data_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _cli_error(capsys, _tiny_args(tmp_path / "empty", tmp_path / "run"))
    empty = tmp_path / "empty"
    assert err == f"alexnet train: error: {empty}: no class sub-folders (expected {empty}/<class>/<image>)"


def test_one_class_only(tmp_path, capsys):
    make_folder(tmp_path / "one", classes=1)
    err = _cli_error(capsys, _tiny_args(tmp_path / "one", tmp_path / "run"))
    assert err == f"alexnet train: error: {tmp_path / 'one'}: found 1 class; training a classifier needs at least 2"


class _Labelled(torch.utils.data.Dataset):
    """A contract-following in-memory data set whose labels may lie outside its classes."""

    def __init__(self, labels, classes=("a", "b"), targets=True):
        self.labels, self.classes = list(labels), list(classes)
        if targets:
            self.targets = list(labels)
        self.names = [f"img{i}" for i in range(len(labels))]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.full((3, 64, 64), 10 * i % 255, dtype=torch.uint8), self.labels[i]


@pytest.mark.parametrize("targets", [True, False])
def test_labels_out_of_range(tmp_path, targets):
    cfg = tiny_config(tmp_path, tmp_path / "run", epochs=1)
    with pytest.raises(train.TrainError, match="label 2 out of range") as e:
        train.main(cfg, train_dataset=_Labelled([0, 1, 0, 2, 1, 0, 1, 0], targets=targets))
    assert "\n" not in str(e.value)


def test_corrupt_image_mid_epoch_is_counted_and_listed(data, tmp_path, capsys):
    import shutil

    bad_data = tmp_path / "data"
    shutil.copytree(data, bad_data)
    (bad_data / "class1" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = train.main(tiny_config(bad_data, tmp_path / "run", epochs=2, val_split=0.0))
    listed = (tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert result.skipped == 2 and len(listed) == 2 and all(s.endswith("003.png") for s in listed)  # once per epoch
    err = _cli_error(capsys, [*_tiny_args(bad_data, tmp_path / "run2"), "--on-bad-image", "fail"])
    assert "003.png" in err


def test_resume_with_a_different_architecture(data, tmp_path, capsys):
    train.main(tiny_config(data, tmp_path / "run", epochs=1))
    err = _cli_error(capsys, ["train", "--resume", str(tmp_path / "run"), "--arch", "caffenet"])
    assert "alexnet_owt" in err and "caffenet" in err
    err = _cli_error(capsys, ["train", "--resume", str(tmp_path / "nothing")])
    assert "no such run folder" in err


def test_a_resume_reads_config_json_once_and_settles_the_config_once(data, tmp_path, monkeypatch, capsys):
    """The command reads the resumed run's config.json once and hands it, as a value, to the config merge and to
    the run; the merged config is normalised and checked once (train.main takes a settled config as it is)."""
    from alexnet.train import config as train_config

    run = tmp_path / "run"
    train.main(tiny_config(data, run, epochs=1))
    reads, settled = [], []
    real_read, real_normalize = Path.read_text, train_config.normalize_config

    def read_text(self, *a, **k):
        reads.append(self.name)
        return real_read(self, *a, **k)

    def normalize(cfg):
        settled.append(cfg)
        return real_normalize(cfg)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(train_config, "normalize_config", normalize)
    assert cli_main(["train", "--resume", str(run)]) == 0
    assert reads.count("config.json") == 1 and len(settled) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{run} is complete: 1 of 1 epochs done. To train longer: alexnet train --resume {run} --epochs 2 (or more)"
    ]
    plain = dataclasses.replace(tiny_config(data, run, epochs=1), resume=str(run))  # a new, unsettled config
    settled.clear()
    assert train.main(plain).epochs_done == 1 and len(settled) == 1  # settled once, by train.main


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train.main(tiny_config(data, run, epochs=2))
    before = (run / "last.safetensors").read_bytes()
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def exploding(logits, target, *a, **k):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= 2:
                return real(logits, target, *a, **k) * float("nan")
        return real(logits, target, *a, **k)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", exploding)
    with pytest.raises(train.NonFiniteLoss, match="not finite.*epoch 3, step 2.*last good checkpoint") as e:
        train.main(tiny_config(data, run, epochs=4, resume=str(run)))
    assert "\n" not in str(e.value)
    assert (run / "last.safetensors").read_bytes() == before
    assert train.load_state(run)["epoch"] == 2


def test_auto_precision_resolves_per_device():
    from alexnet.runtime import bf16_native, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp16", cpu).name == "fp16"
    assert resolve_precision("auto", cpu).name == ("bf16" if bf16_native(cpu) else "fp32")
