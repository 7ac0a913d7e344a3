"""Weights carry their provenance and a description a person reads; `alexnet info` prints both (issue 22, item 5)."""

from __future__ import annotations

import json

import pytest
import torch
from _builders import saved_weights, tiny_model, tiny_preprocessing

import alexnet
from alexnet.cli import main
from alexnet.models import get_config
from alexnet.weights import (
    WeightsError,
    describe_config,
    file_sha256,
    format_info,
    load_model,
    read_provenance,
    save_weights,
    weights_info,
)

TINY = "alexnet_owt, 64x64, channels 16-32-32-32-32, fc6/fc7 width 64"


@pytest.mark.parametrize(
    ("arch", "overrides", "words"),
    [
        ("alexnet2012", {}, "alexnet2012, 227x227"),
        ("alexnet_owt", {}, "alexnet_owt, 224x224"),
        ("caffenet", {}, "caffenet, 227x227"),
        ("alexnet2012", {"input_size": 67, "adaptive_pool": True}, "alexnet2012, 67x67, adaptive pooling"),
        ("caffenet", {"groups": 1}, "caffenet, 227x227, dense (one group)"),
        ("alexnet2012", {"lrn": False, "activation": "tanh"}, "alexnet2012, 227x227, no LRN, tanh"),
        ("alexnet2012", {"num_classes": 10, "dropout": 0.0, "init": "kaiming"}, "alexnet2012, 227x227"),
    ],
)
def test_every_model_has_a_description(arch, overrides, words):
    """What a model is, from its config: the nearest architecture, its input size and each difference (the
    demo's model was "custom" before); classes, dropout and initialisation do not change what it is."""
    assert describe_config(get_config(arch, **overrides)) == words


def test_saved_weights_record_provenance(tmp_path):
    before = alexnet.weights.make_provenance()["created"]
    parent = {"weights": "parent.safetensors", "sha256": "ab" * 32}
    metrics = {"val_top1_accuracy": 0.5, "best_epoch": 2, "best_val_top1_error": 0.5}
    given = {"parent": parent, "data": "photos/", "epochs": 3, "metrics": metrics}
    path = alexnet.save_model(tiny_model(), tiny_preprocessing(), tmp_path / "w.safetensors", provenance=given)
    prov = read_provenance(path)
    assert set(prov) == {"alexnet_version", "created", "parent", "data", "epochs", "metrics"}
    assert prov["alexnet_version"] == alexnet.__version__ and prov["created"] >= before
    assert (prov["parent"], prov["data"], prov["epochs"], prov["metrics"]) == (parent, "photos/", 3, metrics)
    # a file saved without any: the version and the date, the rest null
    bare = read_provenance(saved_weights(tmp_path / "bare.safetensors"))
    assert bare["alexnet_version"] == alexnet.__version__ and bare["parent"] is bare["data"] is bare["metrics"] is None


def test_old_files_without_provenance_still_load(tmp_path):
    """A file written before provenance existed (no `provenance`, no `description` key) loads as before."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    new = saved_weights(tmp_path / "new.safetensors")
    with safe_open(str(new), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k not in ("provenance", "description")}
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(tmp_path / "old.safetensors"), metadata=meta)  # noqa: SIM118
    model, pre = load_model(tmp_path / "old.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), load_model(new)[0].state_dict().values()))
    assert read_provenance(tmp_path / "old.safetensors") is None
    info = weights_info(tmp_path / "old.safetensors")
    assert info["provenance"] is None and info["description"] == TINY  # described from its config
    text = format_info(info)
    assert (
        text.splitlines()[-1] == "provenance   none recorded (written before alexnet recorded it, or by another tool)"
    )


def test_convert_names_its_source_as_parent_and_keeps_its_history(tmp_path, capsys):
    history = {"data": "photos/", "epochs": 4, "metrics": {"val_top1_accuracy": 0.75}}
    src = alexnet.save_model(tiny_model(), tiny_preprocessing(), tmp_path / "run.safetensors", provenance=history)
    for dst in (tmp_path / "copy.safetensors", tmp_path / "copy.pth"):
        assert main(["convert", str(src), str(dst)]) == 0
        prov = read_provenance(dst)
        assert prov["parent"] == {"weights": str(src), "sha256": file_sha256(src)}
        assert (prov["data"], prov["epochs"], prov["metrics"]) == ("photos/", 4, {"val_top1_accuracy": 0.75})
    capsys.readouterr()


def test_info_prints_what_the_weights_are_and_where_they_come_from(tmp_path, capsys):
    src = saved_weights(tmp_path / "parent.safetensors")
    child = tmp_path / "child.safetensors"
    save_weights(tiny_model(), tiny_preprocessing(), child, provenance={
        "parent": alexnet.weights.parent_of(src), "data": "photos/", "epochs": 2,
        "metrics": {"val_top1_accuracy": 0.625, "best_epoch": 2, "best_val_top1_error": 0.375, "val_loss": 0.9},
    })  # fmt: skip
    assert main(["info", str(child)]) == 0
    lines = capsys.readouterr().out.splitlines()
    created = read_provenance(child)["created"]
    assert lines == [
        f"weights      {child} (safetensors, sha256 {file_sha256(child)})",
        f"model        {TINY} (arch custom)",
        "classes      3: cat, dog, fox",
        f"parameters   {sum(p.numel() for p in tiny_model().parameters()):,}",
        "input        short side 72, centre crop 64, pixels x 1.0/255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, "
        "0.225)",
        f"written by   alexnet {alexnet.__version__} on {created}",
        f"parent       {src} (sha256 {file_sha256(src)})",
        "data         photos/",
        "epochs       2",
        "metrics      validation top-1 accuracy 62.50%, best validation top-1 error 37.50%, best epoch 2, validation "
        "loss 0.9000",
    ]
    assert main(["info", "--weights", str(child), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "alexnet.info/1" and doc["provenance"]["parent"]["sha256"] == file_sha256(src)


def test_info_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 1
    assert capsys.readouterr().err == f"alexnet info: error: {tmp_path / 'missing.safetensors'}: no such weights file\n"
    assert main(["info"]) == 1
    assert (
        capsys.readouterr().err
        == "alexnet info: error: info needs weights: alexnet info WEIGHTS (or --weights WEIGHTS)\n"
    )
    # a corrupt provenance entry is named, not a traceback
    from safetensors import safe_open
    from safetensors.torch import save_file

    good = saved_weights(tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        meta = {**f.metadata(), "provenance": "{not json"}
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(tmp_path / "bad.safetensors"), metadata=meta)  # noqa: SIM118
    with pytest.raises(WeightsError, match=r"bad.safetensors: corrupt provenance in its metadata \(not JSON\)$"):
        read_provenance(tmp_path / "bad.safetensors")
