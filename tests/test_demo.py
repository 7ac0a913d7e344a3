"""`alexnet demo` end to end on small generated Fashion-MNIST idx files, offline, and its data-finding chain."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from _builders import make_fashion
from _jsondocs import check

import alexnet
from alexnet import cli, demo
from alexnet.data import datasets
from alexnet.weights import file_sha256, read_provenance, weights_info


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    return make_fashion(tmp_path_factory.mktemp("fm"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, and an empty torch hub cache: the demo must not find pretrained weights."""
    monkeypatch.setattr(demo, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def test_demo_runs_end_to_end_offline(fashion, tmp_path, offline, capsys):
    out = tmp_path / "run"
    argv = ["demo", "--data", str(fashion), "--out", str(out), "--train-samples", "150", "--val-samples", "30"]
    argv += ["--test-samples", "40", "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--json"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert check(summary) == []  # the alexnet.demo/1 document of docs/JSON.md
    assert summary["mode"] == "scratch" and summary["test_samples"] == 40
    assert 0.0 <= summary["test_top1_error"] <= 1.0 and summary["test_top5_error"] <= summary["test_top1_error"]
    assert any("from scratch" in n for n in summary["notes"])
    for name in ("config.json", "metrics.csv", "best.safetensors", "last.safetensors", "report.html", "test_eval.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss") and len(rows) == 3
    ev = json.loads((out / "test_eval.json").read_text())
    assert ev["schema"] == "alexnet.evaluate/1" and check(ev) == []
    assert ev["num_samples"] == 40 and len(ev["confusion_matrix"]) == 10
    assert ev["classes"] == datasets.FASHION_MNIST_CLASSES
    html = (out / "report.html").read_text()
    assert "Most confidently misclassified" in html and "data:image/png;base64" in html
    assert len(summary["examples"]) == 5 and len(summary["examples"][0]["top3"]) == 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "alexnet2012" and cfg["input_size"] == 67 and cfg["init"] == "kaiming"
    assert cfg["resize_size"] == 67 + demo.JITTER and cfg["schedule"] == "linear"
    assert (cfg["warmup_steps"], cfg["decay_steps"]) == (10, 20)  # a warm-up epoch of 10 steps, then down to 0
    # the weights say where they come from (provenance), and what they are in words
    prov = read_provenance(out / "best.safetensors")
    assert (prov["alexnet_version"], prov["parent"], prov["data"]) == (alexnet.__version__, None, str(fashion))
    assert prov["epochs"] in (1, 2) and 0.0 <= prov["metrics"]["val_top1_accuracy"] <= 1.0
    assert prov["metrics"]["best_val_top1_error"] == pytest.approx(1 - prov["metrics"]["val_top1_accuracy"])
    info = weights_info(out / "best.safetensors")
    assert info["arch"] == "alexnet2012" and info["description"] == "alexnet2012, 67x67, adaptive pooling"
    assert json.loads((out / "diagnostics.json").read_text())["findings"] == []  # a healthy run: no false alarm
    # section 2's mean subtraction with the training images' own mean, and PCA lighting with their own eigen-pairs
    stats = json.loads((out / "stats.json").read_text())
    assert cfg["stats"] == str(out / "stats.json") and stats["num_images"] == 150 and "mean_image" not in stats
    train = datasets.FashionMNISTDataset(fashion, "train").images
    assert abs(stats["mean"][0] - train.mean() / 255) < 0.02  # a subset of 150 of the 300 images
    assert stats["eigvals"][1] < 1e-12 and stats["eigvecs"][0][0] == pytest.approx(3**-0.5)
    pre = alexnet.load_model(out / "best.safetensors")[1]
    assert list(pre.mean) == stats["mean"] and list(pre.std) == stats["std"]


def test_demo_text_output_says_where_everything_is(fashion, tmp_path, offline, capsys):
    out = tmp_path / "run"
    argv = ["demo", "--data", str(fashion), "--out", str(out), "--train-samples", "60", "--val-samples", "20"]
    argv += ["--test-samples", "20", "--epochs", "1", "--batch-size", "20", "--device", "cpu"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and str(out / "report.html") in text and "alexnet predict" in text
    # offline (the pretrained weights unreachable): every suggested command works without the network
    best = out / "best.safetensors"
    suggested = text.split("Next:\n", 1)[1].splitlines()
    assert [s.strip() for s in suggested] == [
        f"alexnet predict your_photo.jpg --weights {best}",
        f"alexnet evaluate {fashion} --split test --weights {best} --ten-crop",
        f"alexnet info {best}",
        f"alexnet finetune path/to/your/images --weights {best} --reinit fc8 --val-split 0.1 --out runs/mine",
    ]
    for line in suggested[1:3]:  # the others need the user's own images
        assert cli.main(line.split()[1:] + (["--batch-size", "20"] if "evaluate" in line else [])) == 0, line
    info = capsys.readouterr().out
    assert "model        alexnet2012, 67x67, adaptive pooling (arch alexnet2012)" in info
    assert f"data         {fashion}" in info and "epochs       1" in info


def test_demo_fine_tunes_when_pretrained_weights_are_cached(fashion, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "_reachable", lambda url, timeout=3.0: False)
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert demo.pretrained_available(download=False)[0]
    out = tmp_path / "ft"
    argv = ["demo", "--data", str(fashion), "--out", str(out), "--train-samples", "40", "--val-samples", "20"]
    argv += ["--test-samples", "20", "--epochs", "1", "--batch-size", "20", "--device", "cpu", "--json"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "finetune"
    assert summary["next"][-1].startswith("alexnet finetune path/to/your/images --weights torchvision --train-layers")
    # the parent weights and their hash travel in the fine-tuned weights
    prov = read_provenance(out / "best.safetensors")
    assert prov["parent"] == {"weights": "torchvision", "sha256": file_sha256(home / "hub" / "checkpoints" /
                                                                             "alexnet-owt-7be5be79.pth")}  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["weights"] == "torchvision" and cfg["cache_features"] and cfg["train_layers"] == ["fc6", "fc7", "fc8"]


def test_data_chain_explicit_folder_and_env(fashion, monkeypatch):
    assert demo.locate_data(str(fashion), download=False) == fashion
    monkeypatch.setenv("ALEXNET_FASHION_MNIST", str(fashion))
    assert demo.locate_data(None, download=False) == fashion


def test_data_chain_package_folder(fashion, monkeypatch):
    # the Debian package's folder is one of the places looked in, after an explicit folder
    from alexnet.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "_fashion_candidates", lambda data_dir: [fashion])
    assert datasets.find_fashion_mnist() == fashion


def test_data_chain_missing_everywhere_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets, "find_fashion_mnist", lambda data_dir=None: None)
    monkeypatch.setattr(demo, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(datasets.DataError, match="apt-get install dataset-fashion-mnist"):
        demo.locate_data(None, download=True)
    assert cli.main(["demo", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in err


def test_demo_explicit_folder_without_data_is_one_line(tmp_path, capsys):
    assert cli.main(["demo", "--data", str(tmp_path), "--no-download"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Fashion-MNIST idx files" in err


def test_demo_bad_option_is_one_line(fashion, tmp_path, offline, capsys):
    assert cli.main(["demo", "--data", str(fashion), "--test-samples", "20000", "--no-download"]) == 1
    assert "--test-samples" in capsys.readouterr().err


def test_demo_resize_smaller_than_the_input_is_one_line_before_anything_is_written(fashion, tmp_path, offline, capsys):
    out = tmp_path / "run"
    argv = ["demo", "--data", str(fashion), "--out", str(out), "--resize-size", "60", "--no-download"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert (
        err == "alexnet demo: error: --resize-size 60 is smaller than the input size 67: the patches are cut from it\n"
    )
    assert not (out / "stats.json").exists()
