"""`alexnet demo` end to end on small generated Fashion-MNIST idx files, offline, and its data-finding chain."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch
import torchvision

from alexnet import cli, demo
from alexnet.data import datasets


def _idx(path, arr: np.ndarray) -> None:
    """Write ``arr`` (uint8) as a gzipped idx file, the format Fashion-MNIST ships in."""
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def make_fashion(folder, n_train: int = 300, n_test: int = 100, seed: int = 0):
    """Ten classes that a small network can tell apart: a bright square at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 5)
            images[i, 4 + 12 * r : 12 + 12 * r, 1 + 5 * q : 6 + 5 * q] = 250
        _idx(folder / f"{stem}-images-idx3-ubyte.gz", images)
        _idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels)
    return folder


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
    argv = ["demo", "--data-dir", str(fashion), "--out", str(out), "--train-samples", "150", "--val-samples", "30"]
    argv += ["--test-samples", "40", "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--json"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "scratch" and summary["test_samples"] == 40
    assert 0.0 <= summary["test_top1_error"] <= 1.0 and summary["test_top5_error"] <= summary["test_top1_error"]
    assert any("from scratch" in n for n in summary["notes"])
    for name in ("config.json", "metrics.csv", "best.safetensors", "last.safetensors", "report.html", "test_eval.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss") and len(rows) == 3
    ev = json.loads((out / "test_eval.json").read_text())
    assert ev["num_samples"] == 40 and len(ev["confusion_matrix"]) == 10
    assert ev["classes"] == datasets.FASHION_MNIST_CLASSES
    html = (out / "report.html").read_text()
    assert "Most confidently misclassified" in html and "data:image/png;base64" in html
    assert len(summary["examples"]) == 5 and len(summary["examples"][0]["top3"]) == 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "alexnet2012" and cfg["input_size"] == 67 and cfg["init"] == "kaiming"
    assert json.loads((out / "diagnostics.json").read_text())["findings"] == []  # a healthy run: no false alarm


def test_demo_text_output_says_where_everything_is(fashion, tmp_path, offline, capsys):
    out = tmp_path / "run"
    argv = ["demo", "--data-dir", str(fashion), "--out", str(out), "--train-samples", "60", "--val-samples", "20"]
    argv += ["--test-samples", "20", "--epochs", "1", "--batch-size", "20", "--device", "cpu"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and str(out / "report.html") in text and "alexnet predict" in text


def test_demo_fine_tunes_when_pretrained_weights_are_cached(fashion, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "_reachable", lambda url, timeout=3.0: False)
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert demo.pretrained_available(download=False)[0]
    out = tmp_path / "ft"
    argv = ["demo", "--data-dir", str(fashion), "--out", str(out), "--train-samples", "40", "--val-samples", "20"]
    argv += ["--test-samples", "20", "--epochs", "1", "--batch-size", "20", "--device", "cpu", "--json"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "finetune"
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
    assert cli.main(["demo", "--data-dir", str(tmp_path), "--no-download"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Fashion-MNIST idx files" in err


def test_demo_bad_option_is_one_line(fashion, tmp_path, offline, capsys):
    assert cli.main(["demo", "--data-dir", str(fashion), "--test-samples", "20000", "--no-download"]) == 1
    assert "--test-samples" in capsys.readouterr().err
