"""`alexnet.predict` and `alexnet predict`: top-k, ten-crop, files/folders/globs, bad files reported by name."""

import json

import pytest
import torch
from _builders import HANG_S
from PIL import Image

import alexnet
from alexnet.cli import main
from alexnet.data.decode import decode_image
from alexnet.errors import AlexnetError
from alexnet.predict import ClassScore, classify, classify_batch, expand_inputs, predict_files
from alexnet.runtime import Precision
from alexnet.weights import Preprocessing

CLASSES = ["cat", "dog", "bird", "fish", "frog"]


@pytest.fixture(scope="module")
def small():
    """alexnet_owt (adaptive pooling: any input >= 63 px) on 64-px crops: a real AlexNet, fast on a CPU."""
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet_owt", num_classes=len(CLASSES)).eval()
    with torch.no_grad():
        model.fc8.weight.mul_(20)  # spread the probabilities so that the order of the top-k is meaningful
    return model, Preprocessing(input_size=64, resize_size=72, class_names=CLASSES)


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, 80 + 7 * i, 100 - 5 * i), dtype=torch.uint8, generator=g) for i in range(n)]


def _save(img, path):
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
    return path


def test_classify_matches_manual_softmax(small):
    model, pre = small
    images = _images(3)
    out = classify(model, pre, images, topk=3, batch_size=2)
    assert len(out) == 3 and all(len(r) == 3 for r in out)
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack([pre.eval_transform()(im) for im in images])), dim=1)
    for r, p in zip(out, probs, strict=True):
        assert isinstance(r[0], ClassScore)
        assert [s.index for s in r] == p.argsort(descending=True)[:3].tolist()
        assert [s.name for s in r] == [CLASSES[s.index] for s in r]
        assert [s.prob for s in r] == pytest.approx(p.sort(descending=True).values[:3].tolist(), abs=1e-6)
    # topk larger than the number of classes is clamped
    assert len(classify(model, pre, images[:1], topk=50)[0]) == len(CLASSES)
    with pytest.raises(ValueError):
        classify(model, pre, images, topk=0)


def test_ten_crop_averages_softmax_over_ten_patches(small):
    model, pre = small
    img = _images(1, seed=3)[0]
    got = classify(model, pre, [img], topk=5, ten_crop=True)[0]
    crops = pre.ten_crop_transform()(img)  # (10, 3, 64, 64)
    assert crops.shape == (10, 3, 64, 64)
    with torch.no_grad():
        want = torch.softmax(model(crops), dim=1).mean(0)
    assert {s.index: s.prob for s in got} == pytest.approx(dict(enumerate(want.tolist())), abs=1e-6)
    single = classify(model, pre, [img], topk=5)[0]
    assert {s.index: s.prob for s in single} != pytest.approx({s.index: s.prob for s in got}, abs=1e-6)
    # a prepared 5-D batch goes through classify_batch the same way
    again = classify_batch(model, crops[None], topk=5, class_names=CLASSES)[0]
    assert [s.index for s in again] == [s.index for s in got]


def test_expand_inputs(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for rel in ("a/1.jpg", "a/deep/2.PNG", "a/notes.txt", "b.jpeg", "c.png"):
        (tmp_path / rel).write_bytes(b"x")
    got = expand_inputs([tmp_path / "a", str(tmp_path / "*.jp*g"), str(tmp_path / "a/1.jpg"), "missing.jpg"])
    assert got == [str(tmp_path / "a/1.jpg"), str(tmp_path / "a/deep/2.PNG"), str(tmp_path / "b.jpeg"), "missing.jpg"]
    assert expand_inputs([str(tmp_path / "**" / "*.png")]) == [str(tmp_path / "c.png")]
    assert expand_inputs([str(tmp_path / "z*.png")]) == [str(tmp_path / "z*.png")]  # no match: reported later


@pytest.fixture()
def folder(tmp_path):
    images = _images(4, seed=7)
    good = [_save(im, tmp_path / f"{i}.png") for i, im in enumerate(images)]
    jpeg = _save(images[0], tmp_path / "big.jpg")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = jpeg.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    return tmp_path, good


def test_predict_files_reports_bad_files_and_classifies_the_rest(small, folder):
    model, pre = small
    root, good = folder
    results = list(predict_files(model, pre, [root, root / "missing.png"], topk=2, batch_size=3, workers=2))
    by_name = {r.file: r for r in results}
    files = sorted(str(p) for p in root.iterdir())
    assert [r.file for r in results] == [*files, str(root / "missing.png")]
    bad = {n for n, r in by_name.items() if not r.ok}
    assert {n.rsplit("/", 1)[1] for n in bad} == {"corrupt.png", "truncated.jpg", "empty.jpg", "missing.png"}
    for n in bad:
        assert n in by_name[n].error and "\n" not in by_name[n].error  # the message names the file
    want = classify(model, pre, [decode_image(p) for p in good], topk=2)
    for p, w in zip(good, want, strict=True):
        got = by_name[str(p)].scores
        assert [s.index for s in got] == [s.index for s in w]  # batches differ: equal up to float rounding
        assert [s.prob for s in got] == pytest.approx([s.prob for s in w], abs=1e-5)


def test_cli_predict_json_and_exit_code(small, folder, tmp_path_factory, capsys):
    model, pre = small
    root, good = folder
    weights = alexnet.save_model(model, pre, tmp_path_factory.mktemp("w") / "small.safetensors")
    argv = ["predict", str(root), "--weights", str(weights), "--topk", "3", "--batch-size", "2", "--device", "cpu"]
    assert main([*argv, "--json"]) == 1  # some files are bad
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert (doc["schema"], doc["weights"], doc["ten_crop"], doc["topk"]) == (
        "alexnet.predict/1",
        str(weights),
        False,
        3,
    )
    rows = doc["results"]
    assert all(set(r) == {"file", "predictions", "error"} for r in rows)  # one shape, classified or not
    ok = [r for r in rows if r["error"] is None]
    assert len(rows) == 8 and {r["file"] for r in ok} == {str(p) for p in good} | {str(root / "big.jpg")}
    assert all(len(r["predictions"]) == 3 and r["predictions"][0]["name"] in CLASSES for r in ok)
    failed = {r["file"]: r["error"] for r in rows if r["error"] is not None}
    assert all(failed[f].startswith(f"{f}: ") for f in failed) and not any(r["predictions"] for r in rows if r["error"])
    # no Python repr (Pillow names its BytesIO object): the message says what is wrong
    corrupt = str(root / "corrupt.png")
    assert failed[corrupt] == f"{corrupt}: not a readable image (no image format recognised in its bytes)"
    assert "object at 0x" not in out + err
    assert "corrupt.png" in err and "3 of 8 files failed" in err
    # only good files: exit 0, text output
    assert main([*argv[:1], str(good[0]), *argv[2:], "--ten-crop"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0] == str(good[0]) and len(out.splitlines()) == 4


def _count_preparations(monkeypatch) -> list[tuple[str, bool]]:
    calls: list[tuple[str, bool]] = []
    real = Precision.inference_model

    def counting(self, model, device, *, copy=True):
        calls.append((self.name, copy))
        return real(self, model, device, copy=copy)

    monkeypatch.setattr(Precision, "inference_model", counting)
    return calls


def test_cli_predict_prepares_its_model_once(small, tmp_path, monkeypatch, capsys):
    """The command casts the model where it loads it (`load_for_inference`, in place); predict_files takes it as
    it is (issue 23: one preparation, at the boundary)."""
    model, pre = small
    weights = alexnet.save_model(model, pre, tmp_path / "small.safetensors")
    image = _save(_images(1)[0], tmp_path / "a.png")
    calls = _count_preparations(monkeypatch)
    argv = ["predict", str(image), "--weights", str(weights), "--device", "cpu", "--precision", "bf16", "--json"]
    assert main(argv) == 0
    assert calls == [("bf16", False)]
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["error"] is None and len(row["predictions"]) == 5
    # a caller's fp32 model in a bf16 call: prepared (a cast copy) by predict_files itself, the caller's untouched
    calls.clear()
    (r,) = predict_files(model, pre, [image], precision=Precision("bf16"))
    assert calls == [("bf16", True)] and r.error is None and next(model.parameters()).dtype == torch.float32


def test_cli_predict_no_images(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--device", "cpu"]) == 1
    assert "no image files found" in capsys.readouterr().err
    assert main(["predict", "x.png", "--device", "nonsense"]) == 1
    assert "unknown device" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_low_precision_agrees_with_fp32_on_top1(small, tmp_path, precision):
    """bf16 weights cast once (channels_last) give the fp32 top-1 on distinct images, in classify and in
    predict_files, and leave the caller's fp32 model untouched."""
    from alexnet.runtime import resolve_precision

    model, pre = small
    images = _images(12, seed=11)
    want = [r[0].index for r in classify(model, pre, images, topk=1)]
    precision = resolve_precision(precision, torch.device("cpu"))  # the command line's one resolution
    got = classify(model, pre, images, topk=3, precision=precision)
    assert [r[0].index for r in got] == want
    assert all(0.0 <= s.prob <= 1.0 for r in got for s in r)
    files = [_save(im, tmp_path / f"{i:02d}.png") for i, im in enumerate(images)]
    fp32 = [r.scores[0].index for r in predict_files(model, pre, files, topk=1, batch_size=5, workers=2)]
    low = [r.scores[0].index for r in predict_files(model, pre, files, topk=1, batch_size=5, precision=precision)]
    assert low == fp32 == want
    assert next(model.parameters()).dtype == torch.float32  # the weights were cast on a copy
    with pytest.raises(AlexnetError, match="unknown precision"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(AlexnetError) as e:  # a word is resolved once, where the command starts; never here
        classify(model, pre, images[:1], precision="bf16")
    assert str(e.value) == (
        "precision: expected an alexnet.runtime.Precision, got 'bf16'; "
        "alexnet.runtime.resolve_precision(word, device) resolves a word"
    )


def test_the_program_flushes_its_answer_before_its_fast_exit(tmp_path):
    """`alexnet predict` ends without the interpreter's teardown (`alexnet.cli.run`): the whole answer must still
    reach a pipe, and the exit code must still say whether every file was classified."""
    import json
    import subprocess
    import sys

    from PIL import Image

    weights = tmp_path / "w.safetensors"
    alexnet.save_model(
        alexnet.create_model("alexnet2012", num_classes=4, input_size=67, adaptive_pool=True),
        Preprocessing(input_size=67, resize_size=76, class_names=["a", "b", "c", "d"]),
        weights,
    )
    for i in range(40):
        Image.new("RGB", (90, 70), (i * 5, 10, 200 - i)).save(tmp_path / f"{i:02d}.png")
    cmd = [sys.executable, "-m", "alexnet", "predict", "--weights", str(weights), "--precision", "fp32", "--json"]
    ok = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, timeout=HANG_S)
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["results"]) == 40  # all of it, through a pipe
    bad = subprocess.run([*cmd, str(tmp_path / "00.png"), str(tmp_path / "missing.jpg")], capture_output=True,
                         text=True, timeout=HANG_S)  # fmt: skip
    assert bad.returncode == 1 and "missing.jpg: no such file" in bad.stderr
    assert len(json.loads(bad.stdout)["results"]) == 2
