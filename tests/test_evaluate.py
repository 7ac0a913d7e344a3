"""Evaluation (issue 5): top-k error, 10-crop averaging, confusion matrix, whole data sets, torchrun, bad input."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _builders import CLASSES, RESIZE, image_folder, saved_weights, tiny_model, tiny_preprocessing
from torch import nn

import alexnet
from alexnet.cli import main
from alexnet.cli.evaluation import format_table
from alexnet.data.decode import decode_image
from alexnet.data.transforms import resize_center_crop
from alexnet.evaluate import (
    EvalResult,
    EvaluationError,
    eval_sampler,
    evaluate,
    evaluate_dataset,
    read_eval_json,
    topk_correct,
)
from alexnet.runtime import Precision


# --- top-k against a hand-computed example ------------------------------------------------------------------------
def test_topk_hand_computed_with_ties_and_k_above_classes():
    logits = torch.tensor(
        [
            [0.1, 0.5, 0.2],  # target 1 ranks first
            [0.3, 0.3, 0.1],  # target 1 ties with class 0; the lower index wins, so it ranks second
            [0.3, 0.3, 0.1],  # target 0: wins the same tie
            [0.2, 0.2, 0.2],  # target 2: a three-way tie, ranks third
            [math.nan, 0.1, 0.0],  # target 0 scored NaN: ranks last
        ]
    )
    targets = torch.tensor([1, 1, 0, 2, 0])
    # by hand: rank of each target = [0, 1, 0, 2, 2]
    assert topk_correct(logits, targets, (1, 2, 3, 5)) == [2, 3, 5, 5]  # k=5 > 3 classes: all correct
    # top-1 agrees with argmax, hence with the confusion matrix
    assert topk_correct(logits[:4], targets[:4], (1,)) == [int((logits[:4].argmax(1) == targets[:4]).sum())]


class Table(nn.Module):
    """A "model" that returns fixed logits: input (N, 1) holds the row to return."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.flatten(1)[:, 0].long()]


def test_evaluate_counts_loss_and_confusion_by_hand():
    # 6 classes, so that top-5 can miss
    logits = torch.tensor(
        [
            [5.0, 4, 3, 2, 1, 0],  # target 0: top-1 hit
            [5.0, 4, 3, 2, 1, 0],  # target 5: ranked 6th, a top-5 miss
            [0.0, 1, 0, 0, 0, 0],  # target 2: ties with 0, 3, 4, 5 at 0; rank 1 (class 1 higher, class 0 first)
            [0.0, 0, 0, 0, 0, 9],  # target 5: hit
            [1.0, 1, 1, 1, 1, 1],  # target 4: six-way tie, rank 4: top-5 hit, top-1 miss (argmax 0)
        ]
    )
    targets = torch.tensor([0, 5, 2, 5, 4])
    ids = torch.arange(5, dtype=torch.float32).view(-1, 1)
    loader = [(ids[:2], targets[:2], []), (ids[2:2], targets[2:2], ["broken.jpg"]), (ids[2:], targets[2:], [])]
    r = evaluate(Table(logits), loader, num_classes=6, collect=True)
    # top-1 hits: samples 0, 3; top-5 hits: all but sample 1 (sample 2 has rank 2, sample 4 rank 4)
    assert (r.num_samples, r.acc1, r.acc5) == (5, 2 / 5, 4 / 5)
    assert r.top1_error == pytest.approx(0.6) and r.top5_error == pytest.approx(0.2)
    assert r.loss == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    expected = torch.zeros(6, 6, dtype=torch.int64)
    for t, p in [(0, 0), (5, 0), (2, 1), (5, 5), (4, 0)]:
        expected[t, p] += 1
    assert torch.equal(r.confusion, expected)
    assert r.skipped == ["broken.jpg"]
    pc = r.per_class_accuracy()
    assert pc[0] == 1.0 and pc[5] == 0.5 and math.isnan(pc[1])
    # the most confident error first: sample 1 (p = softmax of 5 over 5..0) before sample 4 (1/6) and 2
    probs = F.softmax(logits, dim=1)
    wrong = r.predictions.misclassified()
    assert wrong == [1, 2, 4]
    assert r.predictions.confidence[1] == pytest.approx(probs[1].max().item())
    assert r.predictions.true_prob[1] == pytest.approx(probs[1, 5].item())
    d = r.to_dict([f"c{i}" for i in range(6)], top_misclassified=2)
    assert [m["label"] for m in d["misclassified"]] == ["c5", "c2"]
    assert d["per_class_accuracy"]["c1"] is None
    json.dumps(d, allow_nan=False)


def test_evaluate_rejects_labels_out_of_range():
    with pytest.raises(EvaluationError, match="out of range"):
        evaluate(Table(torch.zeros(1, 3)), [(torch.zeros(1, 1), torch.tensor([3]))], num_classes=3)


def test_eval_sampler_counts_every_sample_once():
    shares = [list(eval_sampler(range(11), r, 4)) for r in range(4)]
    assert sorted(i for s in shares for i in s) == list(range(11))
    assert [len(s) for s in shares] == [3, 3, 3, 2]


# --- 10-crop ------------------------------------------------------------------------------------------------------
class Recorder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.config, self.seen = model, model.config, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        return self.model(x)


def test_ten_crop_averages_exactly_the_ten_patches(tmp_path: Path):
    data = image_folder(tmp_path / "val", per_class=1)
    model, pre = Recorder(tiny_model()).eval(), tiny_preprocessing()
    r = evaluate_dataset(model, data, preprocessing=pre, ten_crop=True, batch_size=2, device="cpu")
    assert r.ten_crop and r.num_samples == 3 and sum(model.seen) == 30
    norm = pre.batch_transform(False)
    s = pre.input_size
    for pos in range(3):
        img = decode_image(r.predictions.names[pos])
        square = resize_center_crop(img, RESIZE)  # the data issue's 256x256 image (section 2)
        o = (RESIZE - s) // 2
        corners = [square[:, :s, :s], square[:, :s, -s:], square[:, -s:, :s], square[:, -s:, -s:]]
        five = torch.stack([*corners, square[:, o : o + s, o : o + s]])
        patches = torch.cat([five, five.flip(-1)])  # and their horizontal reflections (section 4.1)
        with torch.no_grad():
            probs = F.softmax(model.model(norm(patches)), dim=1).mean(dim=0)  # (C,)
        label = int(r.predictions.labels[pos])
        assert r.predictions.true_prob[pos] == pytest.approx(probs[label].item(), rel=1e-5, abs=1e-7)
        assert r.predictions.confidence[pos] == pytest.approx(probs.max().item(), rel=1e-5, abs=1e-7)
    nll = -r.predictions.true_prob.double().log().mean().item()
    assert r.loss == pytest.approx(nll, rel=1e-5)


# --- whole data sets ----------------------------------------------------------------------------------------------
def test_evaluate_dataset_names_skips_and_json(tmp_path: Path):
    data = image_folder(tmp_path / "val", per_class=3)
    (data / "dog" / "zz_broken.png").write_bytes(b"not an image")
    w = saved_weights(tmp_path / "w.safetensors")
    r = evaluate_dataset(w, data, batch_size=4, device="cpu")
    assert r.num_samples == 9 and r.class_names == CLASSES
    assert [Path(s).name for s in r.skipped] == ["zz_broken.png"]
    assert int(r.confusion.sum()) == 9
    p = r.predictions
    # every kept sample is named by its own file, in data set order, its label its folder
    assert [Path(n).parent.name for n in p.names] == [CLASSES[int(y)] for y in p.labels]
    assert len(set(p.names)) == 9 and all(Path(n).is_file() for n in p.names)
    d = r.to_dict()
    assert d["data"]["split"] == "all" and Path(d["data"]["source"]).is_absolute()
    conf = [m["confidence"] for m in d["misclassified"]]
    assert conf == sorted(conf, reverse=True) and len(conf) == 9 - int(r.confusion.diagonal().sum())
    table = format_table(r)
    assert f"{100 * r.top1_error:.2f} %" in table and "zz_broken" not in table and "1 bad images skipped" in table


def test_evaluate_dataset_in_bf16_agrees_with_fp32(tmp_path: Path, capsys):
    data = image_folder(tmp_path / "val", per_class=3)
    w = saved_weights(tmp_path / "w.safetensors")
    model, pre = alexnet.load_model(w)
    a = evaluate_dataset(model, data, preprocessing=pre, device="cpu")
    b = evaluate_dataset(model, data, preprocessing=pre, device="cpu", precision=Precision("bf16"))
    assert a.num_samples == b.num_samples == 9
    assert (a.predictions.predicted == b.predictions.predicted).sum() >= 8
    assert not torch.equal(a.predictions.confidence, b.predictions.confidence)  # bf16 arithmetic really ran
    assert all(p.dtype == torch.float32 for p in model.parameters())  # on a copy: the caller's model is kept
    assert main(["evaluate", str(data), "--weights", str(w), "--precision", "bf16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 9


def test_weights_whose_classes_differ_from_the_data(tmp_path: Path, capsys):
    data = image_folder(tmp_path / "val", per_class=1)
    four = saved_weights(tmp_path / "four.safetensors", classes=["a", "b", "c", "d"])
    with pytest.raises(EvaluationError, match="4 classes.*has 3"):
        evaluate_dataset(four, data, device="cpu")
    renamed = saved_weights(tmp_path / "renamed.safetensors", classes=["cat", "fox", "dog"])
    with pytest.raises(EvaluationError, match="another order"):
        evaluate_dataset(renamed, data, device="cpu")
    assert evaluate_dataset(renamed, data, device="cpu", check_class_names=False).num_samples == 3
    assert main(["evaluate", str(data), "--weights", str(four)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("alexnet evaluate: error:") and "4 classes" in err and err.count("\n") == 1


def test_cli_evaluate_json_and_out(tmp_path: Path, capsys):
    data = image_folder(tmp_path / "data" / "val", per_class=2)
    image_folder(tmp_path / "data" / "train", per_class=1, seed=1)
    w = saved_weights(tmp_path / "w.safetensors")
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(tmp_path / "data"), "--weights", str(w), "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = read_eval_json(out)
    assert (
        printed == saved
        and saved["schema"] == "alexnet.evaluate/1"
        and saved["num_samples"] == 6
        and saved["data"]["split"] == "val"
    )
    assert main(["evaluate", str(data), "--weights", str(w), "--ten-crop"]) == 0
    text = capsys.readouterr().out
    assert "10-crop" in text and "top-5 error" in text
    assert main(["evaluate", str(tmp_path / "nowhere"), "--weights", str(w)]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_read_eval_json_rejects_other_files(tmp_path: Path):
    bad = tmp_path / "x.json"
    bad.write_text('{"confusion_matrix": [[1, 2]], "classes": ["a"]}')
    with pytest.raises(EvaluationError, match="not 1 x 1"):
        read_eval_json(bad)
    bad.write_text("{")
    with pytest.raises(EvaluationError, match="not a readable"):
        read_eval_json(bad)


# --- torchrun -----------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, data: str, weights: str, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    from alexnet.distributed import setup_distributed, shutdown_distributed

    info = setup_distributed(torch.device("cpu"))  # what `alexnet evaluate` does under torchrun
    try:
        r = evaluate_dataset(weights, data, batch_size=2, device="cpu")
    finally:
        shutdown_distributed(info)
    torch.save({"dict": r.to_dict(top_misclassified=100), "rank": r.rank}, f"{out}.{rank}")


@pytest.mark.slow
def test_two_process_evaluation_counts_every_sample_once(tmp_path: Path):
    import torch.multiprocessing as mp

    data = image_folder(tmp_path / "val", per_class=3)  # 9 samples over 2 ranks: an uneven split
    w = saved_weights(tmp_path / "w.safetensors")
    single = evaluate_dataset(w, data, batch_size=2, device="cpu").to_dict(top_misclassified=100)
    out = str(tmp_path / "r")
    mp.spawn(_rank, args=(2, _free_port(), str(data), str(w), out), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=False)
        assert got["rank"] == rank
        d = got["dict"]
        assert d["num_samples"] == 9 and d["confusion_matrix"] == single["confusion_matrix"]
        assert d["top1_error"] == single["top1_error"] and d["loss"] == pytest.approx(single["loss"], rel=1e-5)
        assert [m["name"] for m in d["misclassified"]] == [m["name"] for m in single["misclassified"]]


def test_the_library_joins_a_process_group_and_never_starts_one(tmp_path: Path, monkeypatch):
    """torchrun's variables alone (no group started by the caller) leave evaluate_dataset one process of one: it
    used to start the group itself (and fail here, with no MASTER_ADDR to reach)."""
    data = image_folder(tmp_path / "val", per_class=2)
    w = saved_weights(tmp_path / "w.safetensors")
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    r = evaluate_dataset(w, data, batch_size=2, device="cpu")
    assert (r.rank, r.num_samples) == (0, 6) and not torch.distributed.is_initialized()


def test_eval_result_to_dict_is_stable_for_train():
    # train.py writes eval.json from EvalResult.to_dict(class_names): its keys must stay
    r = EvalResult(4, 0.5, 0.5, 1.0, torch.tensor([[2, 0], [2, 0]]))
    d = r.to_dict(["a", "b"])
    assert {"num_samples", "loss", "top1_error", "top5_error", "per_class_accuracy", "confusion_matrix"} <= set(d)
    assert "misclassified" not in d and d["per_class_accuracy"] == {"a": 1.0, "b": 0.0}


def test_eval_options_check_themselves_with_the_package_error():
    from alexnet.errors import AlexnetError
    from alexnet.evaluate import EvalOptions

    with pytest.raises(AlexnetError) as e:
        EvalOptions(batch_size=0)
    assert str(e.value) == "batch_size must be an integer >= 1, got 0"
    with pytest.raises(AlexnetError) as e:
        EvalOptions(precision="bf16")
    assert str(e.value).startswith("precision: expected an alexnet.runtime.Precision, got 'bf16'")
