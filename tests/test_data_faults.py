"""Issue 14, data side: what a hostile or careless input does to the data commands. Each test failed before the
change that made it pass (items 5, 6, 7, 8, 11, 15, 17 of the issue)."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.data import datasets as D
from alexnet.data.decode import BadImageError, decode_image, read_bytes
from alexnet.data.transforms import ResizeCenterCrop
from alexnet.errors import AlexnetError
from alexnet.options import check_workers, max_workers


def _png(path, w=12, h=10, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _tree(root, per_class=3):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            _png(root / c / f"{i}.png", seed=i + (10 if c == "b" else 0))
    return root


# --- item 5: a symlink loop, links to the same image ---------------------------------------------------------------
def test_a_symlink_loop_adds_no_image(tmp_path):
    root = _tree(tmp_path / "data")
    os.symlink("..", root / "a" / "loop")  # a/loop -> data: a/loop/a/loop/... forever
    os.symlink(root / "a" / "0.png", root / "b" / "same.png")  # a second name for an image of class a
    paths, targets, classes = D.scan_image_folder(root)
    assert classes == ["a", "b"]
    assert len(paths) == 6 and targets == [0, 0, 0, 1, 1, 1]  # each image once, under its first label
    assert not any("loop" in p.relative_to(root).parts for p in paths)


# --- issue 24, item 2: links across classes --------------------------------------------------------------------------
def test_an_image_reached_through_another_class_keeps_its_real_class(tmp_path):
    root = tmp_path / "data"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        _png(root / c / "0.png", seed=1 if c == "cat" else 2)
    (root / "dog" / "sub").mkdir()
    _png(root / "dog" / "sub" / "1.png", seed=3)
    os.symlink("../dog/0.png", root / "cat" / "aa.png")  # sorts before dog: it used to take dog's image as "cat"
    os.symlink("../dog/sub", root / "cat" / "zz")
    paths, targets, classes = D.scan_image_folder(root)
    got = {str(p.relative_to(root)): classes[t] for p, t in zip(paths, targets, strict=True)}
    assert got == {"cat/0.png": "cat", "dog/0.png": "dog", "dog/sub/1.png": "dog"}


def test_two_class_names_for_one_folder_are_refused(tmp_path):
    root = _tree(tmp_path / "data")
    os.symlink("a", root / "c")
    with pytest.raises(D.DataError) as e:
        D.scan_image_folder(root)
    assert str(e.value) == (
        f"{root}: class folders a and c are the same folder (a link): each image would have two labels; remove the link"
    )


# --- item 6: special files ------------------------------------------------------------------------------------------
def test_a_fifo_and_dev_zero_are_refused_at_once(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(BadImageError, read_bytes, fifo)), daemon=True)
    t.start()
    t.join(10)
    assert done, "reading a FIFO hung"
    assert "not a regular file" in str(done[0].value)
    os.symlink("/dev/zero", tmp_path / "zero.png")
    with pytest.raises(BadImageError, match="not a regular file"):
        decode_image(tmp_path / "zero.png")


def test_special_files_in_a_data_folder_are_left_out(tmp_path):
    root = _tree(tmp_path / "data")
    os.mkfifo(root / "a" / "fifo.jpg")
    os.symlink("/dev/zero", root / "b" / "zero.png")
    paths, _, _ = D.scan_image_folder(root)
    assert len(paths) == 6 and not any(p.name in ("fifo.jpg", "zero.png") for p in paths)


def test_predict_names_a_fifo_and_goes_on(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.jpg")
    good = _png(tmp_path / "good.png", 40, 30)
    from alexnet import create_model, save_model
    from alexnet.preprocessing import Preprocessing

    w = tmp_path / "w.safetensors"
    save_model(create_model("alexnet2012", num_classes=3, input_size=67, adaptive_pool=True),
               Preprocessing(input_size=67, resize_size=76), w)  # fmt: skip
    assert main(["predict", str(tmp_path / "fifo.jpg"), str(good), "--weights", str(w), "--precision", "fp32"]) == 1
    err = capsys.readouterr().err
    assert "fifo.jpg: not a regular file" in err and "1 of 2 files failed" in err


def test_a_file_over_the_size_cap_is_refused(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * 2000)
    with pytest.raises(BadImageError, match="2,004 bytes, more than the 1,000"):
        read_bytes(big, max_bytes=1000)


# --- item 7: libjpeg's corrupt data ---------------------------------------------------------------------------------
def test_a_jpeg_whose_header_claims_more_than_its_data_is_bad(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (9000).to_bytes(2, "big") * 2  # 9000x9000 in a few hundred bytes: grey, not an image
    bad = tmp_path / "liar.jpg"
    bad.write_bytes(bytes(data))
    for min_size in (None, 256):
        with pytest.raises(BadImageError, match="premature end of data"):
            decode_image(bad, min_size=min_size)
    root = _tree(tmp_path / "data")
    (root / "a" / "liar.jpg").write_bytes(bytes(data))
    ds = D.open_dataset(root, transform=ResizeCenterCrop(16))
    batches = list(D.make_loader(ds, batch_size=8))
    assert sum(len(b[1]) for b in batches) == 6 and any("liar.jpg" in n for b in batches for n in b[2])


# --- item 8: an empty class folder ----------------------------------------------------------------------------------
def test_an_empty_class_folder_is_named(tmp_path):
    root = _tree(tmp_path / "data")
    (root / "c_empty").mkdir()
    with pytest.raises(D.DataError, match="c_empty hold no images"):
        D.open_dataset(root)


# --- item 11: strip images -----------------------------------------------------------------------------------------
def test_a_strip_image_is_refused_by_name_before_it_costs_memory(tmp_path, capsys):
    strip = tmp_path / "strip.png"
    Image.new("RGB", (100000, 1)).save(strip)  # 300 KB decoded; 25.6 billion pixels once resized to short side 256
    assert strip.stat().st_size < 1000
    from alexnet.preprocessing import Preprocessing

    ds = D.ImageListDataset([strip], [0], ["a"], transform=Preprocessing().geometry(False))
    assert ds[0] is None  # skipped, not gigabytes
    ds.on_bad_image = "fail"
    with pytest.raises(BadImageError, match="strip.png: a 100000x1 image"):
        ds[0]


# --- item 15: workers -----------------------------------------------------------------------------------------------
def test_workers_are_bounded_with_a_message(capsys):
    with pytest.raises(AlexnetError, match="more than this machine can use"):
        check_workers(1000)
    assert check_workers(None) <= os.cpu_count()
    for argv in (["stats", "x", "--out", "s.json", "--workers", "1000"], ["train", "x", "--workers", "1000"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert f"at most {max_workers()}" in capsys.readouterr().err


# --- item 17: outputs that name the wrong kind of thing, seeds too large -------------------------------------------
def test_outputs_of_the_wrong_kind_are_refused_before_the_work(tmp_path, capsys):
    root = _tree(tmp_path / "data")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(["stats", str(root), "--out", str(folder), "--size", "16"]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert list(tmp_path.glob("*.npy")) == [] and list(folder.iterdir()) == []  # no runs.mean_image.npy left
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    assert main(["prepare", str(root), str(a_file), "--size", "16"]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err and a_file.read_text() == "mine"
    assert main(["stats", str(root), "--out", str(a_file / "s.json"), "--size", "16"]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["stats", str(root), "--out", "s.json", "--seed", "99999999999999999999999"])
    assert "seed in 0..2**63-1" in capsys.readouterr().err


def test_torch_stays_usable(tmp_path):
    """The checks above add no state: a normal data set still loads (guard against an over-eager scan)."""
    root = _tree(tmp_path / "data", per_class=2)
    ds = D.open_dataset(root, transform=ResizeCenterCrop(8))
    x, y, bad, *_ = next(iter(D.make_loader(ds, batch_size=4)))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8 and not bad
