"""Training that says when it is failing, and why (issue 27), and train's header and closing summary (issue 22,
item 5): each diagnosis produced on tiny data with its message checked, and healthy runs that print none."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _builders import TINY, make_folder, tiny_config
from PIL import Image

from alexnet import train
from alexnet.errors import AlexnetError
from alexnet.preprocessing import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING, Preprocessing
from alexnet.train import diagnostics as diag


def findings(run: Path) -> dict[str, dict]:
    doc = json.loads((run / "diagnostics.json").read_text())
    return {f["kind"]: f for f in doc["findings"]}


def read_rows(run: Path) -> list[str]:
    return (run / "metrics.csv").read_text().splitlines()[1:]


def warnings_printed(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning: ")]


def noise_folder(root: Path, *, classes: int = 4, per_class: int = 40, size: int = 24, seed: int = 0) -> Path:
    """Class folders of noise images: the folder an image sits in says nothing of it (labels shuffled)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"class{c}/{i:03d}.png")
    return root


# --- 1. diverging --------------------------------------------------------------------------------------------------
def test_learning_rate_50_diverges_stops_early_and_says_what_to_try(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=30)  # 12 steps per epoch
    run = tmp_path / "run"
    with pytest.raises(diag.Diverging) as e:
        train.main(tiny_config(data, run, lr=50.0, epochs=5, val_split=0.0, progress="log"))
    expected = (
        r"diverging: training loss (\S+) \(median of the last 20 steps\) at epoch 2, step 8, above both 4\.10 "
        r"\(chance's ln\(3\) = 1\.10\) and 3x the first step's 1\.\d\d; lr 50 on every layer \(conv1-fc8\) "
        r"\(124,547 parameters\)\. Try --lr 5 \(10x lower\); "
        rf"stopped \(last good checkpoint: {re.escape(str(run / 'last.safetensors'))} kept\)"
    )
    m = re.fullmatch(expected, str(e.value))
    assert m is not None, str(e.value)
    assert float(m.group(1)) > 4.10
    # stopped at its 20th step (epoch 2 of 5) with its state saved: epoch 1's checkpoint, metrics and diagnostics
    assert train.load_state(run)["epoch"] == 1 and len(read_rows(run)) == 1
    found = findings(run)["diverging"]
    assert (found["epoch"], found["step"], found["evidence"]["lr"]) == (2, 8, {"base": 50.0})
    assert len(found["evidence"]["recent_losses"]) == 20
    assert (
        str(e.value)
        == f"diverging: {found['message']}; stopped (last good checkpoint: {run / 'last.safetensors'} kept)"
    )
    assert warnings_printed(capsys.readouterr().out) == []  # the error says it, once


def test_non_finite_loss_names_the_learning_rate_and_layers(tmp_path, monkeypatch):
    data = make_folder(tmp_path / "data")
    run = tmp_path / "run"
    train.main(tiny_config(data, run, epochs=1, val_split=0.0))
    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(train.NonFiniteLoss) as e:
        train.main(tiny_config(data, run, epochs=2, val_split=0.0, resume=str(run)))
    assert str(e.value) == (
        f"loss is not finite (nan) at epoch 2, step 1; stopped (last good checkpoint: {run / 'last.safetensors'} "
        "kept); diverging: lr 0.01 on every layer (conv1-fc8) (124,547 parameters). Try --lr 0.001 (10x lower)"
    )
    assert findings(run)["diverging"]["evidence"]["loss"] == "not finite"


def test_divergence_rule():
    t = diag.diverge_threshold(3)
    assert t == pytest.approx(math.log(3) + 3) and diag.diverge_threshold(1000) == pytest.approx(3 * math.log(1000))
    assert diag.check_loss([1.1] + [50.0] * 18, 19, 3, 1.1) is None  # too early to judge a size
    assert diag.check_loss([1.1] + [50.0] * 19, 20, 3, 1.1) == 50.0
    assert math.isnan(diag.check_loss([1.1, math.nan], 2, 3, 1.1))
    # the paper's lr on alexnet_owt (8 classes, batch 8): a spike of 7 steps that comes back is no divergence
    spike = [3.06, 68.03, 17.7, 9.41, 6.45, 17.12, 6.23, 2.32, 4.37, 2.32, 2.16, 1.91, 2.21, 2.01, 2.2, 2.32, 2.16]
    assert diag.check_loss(spike + [2.3] * 3, 20, 8, 3.06) is None
    # He initialisation starts far above chance and falls: no divergence while under 3x the first step's loss
    assert diag.check_loss([9.0] + [8.0] * 19, 20, 10, 9.0) is None
    assert diag.check_loss([9.0] + [30.0] * 19, 20, 10, 9.0) == 30.0


# --- 2. stuck at chance --------------------------------------------------------------------------------------------
def test_shuffled_labels_stay_at_chance_and_the_evidence_is_given(tmp_path, capsys):
    data = noise_folder(tmp_path / "data")
    run = tmp_path / "run"
    train.main(tiny_config(data, run, epochs=3, val_split=0.0, batch_size=4, progress="log"))
    found = findings(run)["stuck"]
    ev = found["evidence"]
    assert ev["samples"] == 160 and ev["chance_acc1"] == 25.0 and ev["label_counts"] == [40, 40, 40, 40]
    assert found["epoch"] == 3 and ev["steps"] == 120  # from 100 steps on
    expected = (
        rf"training accuracy {ev['train_acc1']:.1f}% is within noise \(10\.3 points\) of chance \(25\.0%\), loss "
        rf"{ev['train_loss']:.3f} vs chance's 1\.386\. Evidence: 124,612 of 124,612 parameters training \(every layer "
        r"\(conv1-fc8\)\), lr base 0\.01, inputs mean \(\S+, \S+, \S+\) std \(\S+, \S+, \S+\), labels seen per class "
        r"40, 40, 40, 40\. Try: check that the labels follow the images \(shuffled labels train to chance\), the "
        r"learning rate \(x10\?\), the layers that learn and the preprocessing"
    )
    assert re.fullmatch(expected, found["message"]), found["message"]
    assert warnings_printed(capsys.readouterr().out) == [f"warning: stuck: {found['message']}"]


def test_stuck_rule_needs_enough_images_and_a_loss_at_chance():
    assert diag.check_stuck(25.0, 1.386, [10, 10, 10, 10], 500) is None  # 40 images cannot tell
    assert diag.check_stuck(26.0, 1.38, [100, 100, 100, 100], 500) is not None
    assert diag.check_stuck(26.0, 1.38, [100, 100, 100, 100], 99) is None  # too young to call stuck
    assert diag.check_stuck(26.0, 1.0, [100, 100, 100, 100], 500) is None  # the loss fell: it learns
    assert diag.check_stuck(45.0, 1.38, [100, 100, 100, 100], 500) is None  # beyond the noise
    assert diag.check_stuck(80.0, 0.64, [320, 40, 40], 500) is not None  # chance: the majority's share


# --- 3. preprocessing ----------------------------------------------------------------------------------------------
def test_uint8_range_floats_to_an_imagenet_normalised_model_are_flagged():
    x = torch.randint(0, 256, (8, 3, 16, 16)).float()  # pixels 0-255 as floats, no normalisation
    stats = diag.input_stats(x)
    msg = diag.check_inputs(stats, TORCHVISION_PREPROCESSING)
    assert msg is not None
    assert re.fullmatch(
        r"the first batch reaches the model with channel means \(\S+, \S+, \S+\), std \(\S+, \S+, \S+\), values "
        r"0\.\.255; the weights' preprocessing \(pixels 0-1, mean \(0\.485, 0\.456, 0\.406\), std "
        r"\(0\.229, 0\.224, 0\.225\)\) "
        r"gives values in -2\.12\.\.2\.64 with std near 1\.11: \d+x too spread: pixels in 0-255 where 0-1 was "
        r"expected\? Hand the training uint8 \(3, S, S\) images and check the weights' preprocessing",
        msg,
    ), msg
    normalised = TORCHVISION_PREPROCESSING.batch_transform(False)(x.to(torch.uint8))
    assert diag.check_inputs(diag.input_stats(normalised), TORCHVISION_PREPROCESSING) is None
    bvlc = BVLC_PREPROCESSING.batch_transform(False)(x.to(torch.uint8))
    assert diag.check_inputs(diag.input_stats(bvlc), BVLC_PREPROCESSING) is None
    assert "too spread" in diag.check_inputs(diag.input_stats(bvlc), TORCHVISION_PREPROCESSING)
    assert diag.input_stats(torch.zeros(4, 9216)) is None  # cached features are not images


def test_unnormalised_batches_reach_the_model_and_are_flagged(tmp_path, monkeypatch, capsys):
    """A pipeline that forgets the normalisation: the model gets 0-255 floats."""
    data = make_folder(tmp_path / "data")
    monkeypatch.setattr(Preprocessing, "batch_transform", lambda self, train, **k: _ToFloat())
    train.main(tiny_config(data, tmp_path / "run", epochs=1, val_split=0.0, lr=1e-4, progress="log"))
    found = findings(tmp_path / "run")["preprocessing"]
    assert (found["epoch"], found["step"]) == (1, 1)
    assert "x too spread: pixels in 0-255 where 0-1 was expected?" in found["message"]
    assert f"warning: preprocessing: {found['message']}" in warnings_printed(capsys.readouterr().out)


class _ToFloat(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


class _Normalised(torch.utils.data.Dataset):
    """Images already converted and normalised (torchvision's ToTensor + Normalize habit), handed to training."""

    classes = ["a", "b"]

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = [(torch.rand(3, 64, 64, generator=g) - 0.45) / 0.225 for _ in range(n)]
        self.targets = [i % 2 for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


def test_images_normalised_before_the_run_are_refused_before_any_step(tmp_path):
    """Normalised floats handed to training never reach a step: the handed-in data set's first sample is checked
    (`alexnet.data.pixels`, issue 22) and refused with its numbers; the run writes no checkpoint."""
    cfg = dataclasses.replace(tiny_config(tmp_path, tmp_path / "run", epochs=1, val_split=0.0), data=None)
    with pytest.raises(AlexnetError) as e:
        train.main(cfg, train_dataset=_Normalised())
    assert str(e.value) == (
        "train_dataset: the first sample is already normalised (a Normalize in its transform?): min -2.000, max "
        "2.444, mean 0.229; the training code takes uint8 (3, S, S) images with 0..255 values and normalises them "
        "with the run's mean and std: drop Normalize and ToDtype/ToTensor from the data set's transform "
        "(v2.PILToTensor() gives uint8)"
    )
    assert not (tmp_path / "run" / "state.pt").exists()


# --- 4. leakage ----------------------------------------------------------------------------------------------------
def test_images_in_both_splits_are_counted_and_named(tmp_path, capsys):
    root = tmp_path / "data"
    make_folder(root / "train")
    make_folder(root / "val", per_class=2, seed=1)
    for name in ("000.png", "001.png"):
        shutil.copy(root / "train/class1" / name, root / "val/class1" / f"copy-{name}")
    run = tmp_path / "run"
    train.main(tiny_config(root, run, epochs=1, val_split=0.0, progress="log"))
    found = findings(run)["leakage"]
    v, t = root / "val/class1", root / "train/class1"
    assert found["message"] == (
        f"2 of 8 validation images are identical to training images (content hash), e.g. {v}/copy-000.png = "
        f"{t}/000.png; {v}/copy-001.png = {t}/001.png: the validation figures overstate accuracy on new images. "
        "Remove the copies from one split"
    )
    assert found["evidence"]["count"] == 2
    assert warnings_printed(capsys.readouterr().out) == [f"warning: leakage: {found['message']}"]


def test_leakage_of_stored_pixels_and_of_a_split_folder(tmp_path):
    from _builders import make_fashion

    from alexnet.data.datasets import Subset, open_dataset
    from alexnet.data.fashion_mnist import FashionMNISTDataset

    fm = FashionMNISTDataset(make_fashion(tmp_path / "fm", n_train=40, n_test=10))
    same = diag.find_leaks(Subset(fm, range(0, 30)), Subset(fm, [29, 30, 31]))
    assert (same["count"], same["val_images"]) == (1, 3)
    assert same["examples"] == [("fashion-mnist/train/29", "fashion-mnist/train/29")]
    data = make_folder(tmp_path / "folder")
    tr, va = (open_dataset(data, split=s, val_split=0.25) for s in ("train", "val"))
    assert diag.find_leaks(tr, va)["count"] == 0
    assert diag.find_leaks(_Normalised(), _Normalised()) == {
        "checked": False, "why": "the data set keeps no files or pixels to hash"
    }  # fmt: skip


# --- 5. imbalance --------------------------------------------------------------------------------------------------
def test_imbalance_over_10x_is_warned_and_counts_are_in_the_header(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=2, per_class=2)
    for i in range(2, 22):
        shutil.copy(data / "class0/000.png", data / f"class0/{i:03d}.png")
    train.main(tiny_config(data, tmp_path / "run", epochs=1, val_split=0.0, progress="log"))
    out = capsys.readouterr().out
    assert f"data: {data}: 24 training images, no validation split; 2 classes: class0 22, class1 2" in out
    msg = (
        "the largest class, class0 (22 training images), is 11x the smallest, class1 (2): a model can score well by "
        "favouring the large classes. Compare the per-class validation accuracy at the end; gather more of the "
        "small classes or resample"
    )
    assert findings(tmp_path / "run")["imbalance"]["message"] == msg
    assert warnings_printed(out) == [f"warning: imbalance: {msg}"]
    assert diag.check_imbalance([10, 1], ["a", "b"]) is None and diag.check_imbalance([11, 1], ["a", "b"])


# --- 6. overfitting ------------------------------------------------------------------------------------------------
def test_validation_loss_rising_while_training_loss_falls_is_named(tmp_path, capsys):
    root = tmp_path / "data"
    make_folder(root / "train", per_class=4)
    make_folder(root / "val", per_class=2, seed=1)
    # the validation images' colours say another class than the training images': learning more makes it worse
    for c in range(3):
        (root / "val" / f"class{c}").rename(root / "val" / f"tmp{(c + 1) % 3}")
    for c in range(3):
        (root / "val" / f"tmp{c}").rename(root / "val" / f"class{c}")
    run = tmp_path / "run"
    wide = {"conv_channels": [32, 64, 64, 64, 64], "fc_features": 128}
    train.main(tiny_config(root, run, epochs=6, augment=False, dropout=0.0, init="torchvision", lr=0.02,
                           batch_size=4, val_split=0.0, plateau_patience=100, model_options=wide,
                           progress="log"))  # fmt: skip
    found = findings(run)["overfitting"]
    ev = found["evidence"]
    assert re.fullmatch(
        r"validation loss rose for 3 epochs \(\d\.\d{3} -> \d\.\d{3} -> \d\.\d{3} -> \d\.\d{3}\) while "
        r"training loss fell \(\d\.\d{3} -> \d\.\d{3} -> \d\.\d{3} -> \d\.\d{3}\)\. best\.safetensors keeps the "
        r"best epoch \(\d\); fight it with --augment, --dropout 0\.5, fewer --train-layers or more data",
        found["message"],
    ), found["message"]
    assert ev["val_loss"] == sorted(ev["val_loss"]) and ev["train_loss"][-1] < ev["train_loss"][0]
    assert f"warning: overfitting: {found['message']}" in warnings_printed(capsys.readouterr().out)


def test_overfitting_rule():
    rows = [{"epoch": i + 1, "val_loss": v, "train_loss": t} for i, (v, t) in
            enumerate([(1.0, 2.0), (0.9, 1.5), (0.95, 1.2), (1.0, 1.0), (1.1, 0.8)])]  # fmt: skip
    assert diag.check_overfitting(rows[:4]) is None  # two rises only
    assert diag.check_overfitting(rows)["epochs"] == [2, 3, 4, 5]
    assert diag.check_overfitting([{**r, "val_loss": math.nan} for r in rows]) is None


# --- healthy runs: no false alarm, and the header and summary ------------------------------------------------------
def test_healthy_run_prints_no_warning_and_a_header_and_summary(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=4)
    run = tmp_path / "run"
    wide = {"conv_channels": [32, 64, 64, 64, 64], "fc_features": 128}
    train.main(tiny_config(data, run, epochs=8, augment=False, dropout=0.0, init="torchvision", lr=0.02,
                           precision="fp32", batch_size=4, val_split=0.25, plateau_patience=100, model_options=wide,
                           progress="log"))  # fmt: skip
    out = capsys.readouterr().out
    assert warnings_printed(out) == [] and findings(run) == {}
    lines = out.splitlines()
    assert lines[:4] == [
        "train: alexnet_owt from scratch (init torchvision), 64x64 input, 8 epochs of batch 4, lr 0.02 (plateau "
        "schedule)",
        f"data: {data}: 9 training images, 3 validation images; 3 classes: class0 3, class1 3, class2 3",
        "layers: learning every layer (conv1-fc8) (485,635 parameters); frozen: none; re-initialised: none",
        f"on cpu, fp32, 1 process(es); run folder {run}",
    ]
    end = lines[lines.index(next(x for x in lines if x.startswith("done: "))) :]
    assert re.fullmatch(r"done: 8 of 8 epochs in \d+\.\d s; best epoch \d, top-1 error \d+\.\d\d%", end[0])
    assert re.fullmatch(
        r"per-class validation accuracy \(epoch 8\): class0 \d+\.\d%, class1 \d+\.\d%, class2 \d+\.\d%", end[1]
    )
    assert end[2:] == [
        "diagnostics: no warning",
        f"files: {run}/ best.safetensors, last.safetensors, state.pt, metrics.csv, eval.json, config.json, "
        "diagnostics.json",
        "next:",
        f"  alexnet report {run}",
        f"  alexnet predict IMAGE.jpg --weights {run / 'best.safetensors'}",
        f"  alexnet train --resume {run} --epochs 12   (to train longer)",
    ]


def test_finetune_header_names_frozen_and_reinitialised_layers(tmp_path, capsys):
    from alexnet import create_model
    from alexnet.weights import default_preprocessing, save_model

    data = make_folder(tmp_path / "data")
    model = create_model("alexnet_owt", num_classes=5, input_size=64, **TINY)
    save_model(model, default_preprocessing(model.config), tmp_path / "w.safetensors")
    cfg = tiny_config(data, tmp_path / "run", epochs=1, weights=str(tmp_path / "w.safetensors"), arch=None,
                      model_options={}, train_layers=["fc7", "fc8"], new_layer_lr_mult=10.0,
                      progress="log")  # fmt: skip
    train.main(cfg)
    out = capsys.readouterr().out
    assert (
        "layers: learning fc7, fc8 (4,355 parameters); frozen: conv1, conv2, conv3, conv4, conv5, fc6; "
        "re-initialised: fc8 (lr x10)"
    ) in out.splitlines()
    assert warnings_printed(out) == []


def test_quiet_runs_print_nothing_but_record_diagnostics(tmp_path, capsys):
    data = noise_folder(tmp_path / "data")
    train.main(tiny_config(data, tmp_path / "run", epochs=3, val_split=0.0, batch_size=4))
    assert capsys.readouterr().out == ""
    assert list(findings(tmp_path / "run")) == ["stuck"]


def test_report_shows_the_diagnostics(tmp_path):
    from alexnet.report import report

    data = noise_folder(tmp_path / "data")
    train.main(tiny_config(data, tmp_path / "run", epochs=3, val_split=0.0, batch_size=4))
    html = report(tmp_path / "run", evaluate=False).read_text()
    assert "<h2>Diagnostics</h2>" in html and "stuck" in html
    healthy = make_folder(tmp_path / "healthy")
    train.main(tiny_config(healthy, tmp_path / "ok", epochs=1))
    assert "no warning" in report(tmp_path / "ok", evaluate=False).read_text()


def test_a_resumed_run_keeps_its_findings_and_does_not_repeat_them(tmp_path, capsys):
    data = noise_folder(tmp_path / "data")
    run = tmp_path / "run"
    train.main(tiny_config(data, run, epochs=3, val_split=0.0, batch_size=4))
    doc = json.loads((run / "diagnostics.json").read_text())
    doc["findings"].append({"kind": 3, "junk": True})  # an entry that cannot be read is dropped, not fatal
    (run / "diagnostics.json").write_text(json.dumps(doc))
    capsys.readouterr()
    train.main(tiny_config(data, run, epochs=4, val_split=0.0, batch_size=4, resume=str(run), progress="log"))
    assert warnings_printed(capsys.readouterr().out) == []
    assert [f["kind"] for f in json.loads((run / "diagnostics.json").read_text())["findings"]] == ["stuck"]
