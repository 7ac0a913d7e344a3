"""Prepared sets read by threads (`alexnet.data.prepared_loader`): the same batches as the DataLoader path, the
crops cut on a device, and the same training result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _builders import assert_same_metrics, assert_same_weights, check_sigint_resume, make_folder, tiny_config
from torchvision.transforms import v2

import alexnet
from alexnet import train
from alexnet.data import datasets as D
from alexnet.data import prepared_loader as PL
from alexnet.data import transforms as T
from alexnet.data.device_decode import materialize
from alexnet.data.prepare import prepare


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """26 images of 3 classes at 40x40 in shards of 7 (so batches cross shard ends)."""
    root = tmp_path_factory.mktemp("prep")
    make_folder(root / "src", classes=3, per_class=9, size=48)
    (root / "src" / "class0" / "008.png").write_bytes(b"not an image")  # skipped when preparing
    prepare(root / "src", root / "prep", size=40, shard_size=7, progress=False)
    return root / "prep"


def _reference_loader(monkeypatch, ds, **kw):
    """make_loader's DataLoader path for the same data set (as before prepared_loader existed)."""
    with monkeypatch.context() as m:
        m.setattr(PL, "plan_for", lambda ds: None)
        loader = D.make_loader(ds, **kw)
    assert isinstance(loader, torch.utils.data.DataLoader)
    return loader


def test_crop_plan_recognises_the_crop_transforms():
    assert PL.crop_plan(T.train_geometry(40, 32), 40) == PL.CropPlan(40, 32, 8, 0, 0.5)
    assert PL.crop_plan(T.train_geometry(40, 32, flip=False), 40) == PL.CropPlan(40, 32, 8, 0, 0.0)
    assert PL.crop_plan(T.eval_geometry(40, 32), 40) == PL.CropPlan(40, 32, 0, 4, 0.0)
    assert PL.crop_plan(T.eval_geometry(40, 27), 40) == PL.CropPlan(40, 27, 0, 6, 0.0)  # torchvision's rounding
    assert PL.crop_plan(T.ResizeCenterCrop(40), 40) == PL.CropPlan(40, 40, 0, 0, 0.0)
    assert PL.crop_plan(None, 40) == PL.CropPlan(40, 40, 0, 0, 0.0)
    # anything else runs per sample: another size, ten-crop, other transforms
    assert PL.crop_plan(T.train_geometry(48, 32), 40) is None
    assert PL.crop_plan(T.eval_geometry(48, 32), 40) is None
    assert PL.crop_plan(T.ResizeCenterCrop(32), 40) is None
    assert PL.crop_plan(T.TenCrop(40, 32), 40) is None
    assert PL.crop_plan(v2.Compose([v2.RandomCrop(32)]), 40) is None
    assert PL.crop_plan(T.Geometry([T.RandomPatch(40, 32), v2.RandomVerticalFlip()], 40), 40) is None


@pytest.mark.parametrize("geometry", ["train", "whole", "eval", "none"])
@pytest.mark.parametrize("workers", [0, 2])
def test_batches_equal_the_dataloader_path(prepared, monkeypatch, geometry, workers):
    tf = {
        "train": T.train_geometry(40, 27),
        "whole": T.train_geometry(40, 40),  # the patch is the whole square; RandomPatch still draws its offsets
        "eval": T.eval_geometry(40, 32),
        "none": None,
    }[geometry]
    ds = D.open_dataset(prepared, transform=tf, val_split=0.3, split="train")  # a Subset of the prepared set
    assert isinstance(ds, D.Subset)
    kw = dict(batch_size=4, shuffle=True, workers=workers, seed=7)
    fast = D.make_loader(ds, **kw)
    on_device = D.make_loader(ds, **kw, crop_device="cpu")
    ref = _reference_loader(monkeypatch, ds, **kw)
    assert isinstance(fast, PL.PreparedLoader) and len(fast) == len(ref)
    flips = 0
    for _ in range(2):  # two passes: the second reshuffles and reseeds, as the DataLoader does
        batches = list(zip(fast, on_device, ref, strict=True))
        assert sum(len(b[2][1]) for b in batches) == len(ds)
        for (x, y, bad, *_), (c, yc, *_), (xr, yr, badr, *_) in batches:
            assert isinstance(c, PL.CropBatch) and c.images.shape[-1] == 40
            c, yc, dropped = materialize(c, yc, "cpu")
            assert bad == badr == dropped == []
            assert x.dtype == torch.uint8 and torch.equal(x, xr) and torch.equal(y, yr)
            assert torch.equal(c, xr) and torch.equal(yc, yr)
            if geometry in ("train", "whole"):
                flips += sum(not torch.equal(x[k], x[k].flip(-1)) for k in range(len(x)))
    if geometry in ("train", "whole"):
        assert flips > 0  # mirrored and unmirrored patches both occur
    fast.close()
    on_device.close()


def test_without_preadv_the_dataloader_path_reads_the_same(prepared, monkeypatch):
    ds = D.open_dataset(prepared, transform=T.train_geometry(40, 32))
    fast = D.make_loader(ds, batch_size=8, shuffle=True, seed=1)
    assert isinstance(fast, PL.PreparedLoader)
    got = list(fast)
    monkeypatch.delattr(PL.os, "preadv")
    slow = D.make_loader(ds, batch_size=8, shuffle=True, seed=1)
    assert isinstance(slow, torch.utils.data.DataLoader)
    for (a, ya, *_), (b, yb, *_) in zip(got, slow, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_crop_batch_cuts_each_patch_and_mirror():
    imgs = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(2, 3, 6, 6)
    b = PL.CropBatch(imgs, torch.tensor([[1, 2], [0, 3]]), torch.tensor([False, True]), 3)
    out = b.crop("cpu")
    assert torch.equal(out[0], imgs[0, :, 1:4, 2:5])
    assert torch.equal(out[1], imgs[1, :, 0:3, 3:6].flip(-1))
    assert b.crop("cpu")[:0].shape == (0, 3, 3, 3) and len(b) == 2


def test_every_sample_once_in_a_sequential_pass(prepared):
    ds = D.open_dataset(prepared)
    loader = D.make_loader(ds, batch_size=5, workers=2)
    got = torch.cat([x for x, *_ in loader])
    assert torch.equal(got, torch.stack([ds[i][0] for i in range(len(ds))]))
    assert [int(t) for _, y, *_ in loader for t in y] == ds.targets


def test_damaged_shards_are_one_line_errors(prepared, tmp_path):
    import os
    import shutil

    copy = tmp_path / "prep"
    shutil.copytree(prepared, copy)
    shard = copy / "train" / "00003.npy"  # the last shard (26 images in shards of 7)
    loader = D.make_loader(D.open_dataset(copy), batch_size=8, workers=2)
    os.truncate(shard, shard.stat().st_size - 100)  # cut short while the loader has it open
    with pytest.raises(D.DataError, match="truncated"):
        for _ in loader:
            pass
    with pytest.raises(D.DataError, match=r"00003\.npy: cannot read prepared shard"):
        D.make_loader(D.open_dataset(copy), batch_size=8)
    np.save(copy / "train" / "00000.npy", np.zeros((7, 3, 40, 40), np.float32))
    with pytest.raises(D.DataError, match=r"00000\.npy: prepared shard holds float32"):
        D.make_loader(D.open_dataset(copy), batch_size=8)
    (copy / "train" / "00000.npy").write_bytes(b"garbage")
    with pytest.raises(D.DataError, match=r"00000\.npy: cannot read"):
        D.make_loader(D.open_dataset(copy), batch_size=8)


def test_training_on_a_prepared_set_is_unchanged(tmp_path, monkeypatch):
    """train.main on a prepared set: the thread loader (0 and 2 threads), crops cut by materialize on the device
    as on a GPU, and the old DataLoader path give the same weights and metrics."""
    make_folder(tmp_path / "src", classes=3, per_class=8, size=80)
    prepare(tmp_path / "src", tmp_path / "prep", size=73, progress=False)  # input 64 -> resize 73
    kw = dict(epochs=2, lr=0.02, lighting=0.1)
    train.main(tiny_config(tmp_path / "prep", tmp_path / "t0", workers=0, **kw))
    train.main(tiny_config(tmp_path / "prep", tmp_path / "t2", workers=2, **kw))
    made = []
    real = D.make_loader

    def on_device(ds, **k):  # what train asks for on a GPU, on the CPU
        made.append(real(ds, **{**k, "crop_device": "cpu"}))
        return made[-1]

    with monkeypatch.context() as m:
        m.setattr(D, "make_loader", on_device)
        train.main(tiny_config(tmp_path / "prep", tmp_path / "dev", workers=0, **kw))
    assert made and all(isinstance(x, PL.PreparedLoader) and x.crop_device is not None for x in made)
    with monkeypatch.context() as m:
        m.setattr(PL, "plan_for", lambda ds: None)
        train.main(tiny_config(tmp_path / "prep", tmp_path / "ref", workers=0, **kw))
    for run in ("t2", "dev", "ref"):
        assert_same_weights(tmp_path / "t0" / "last.safetensors", tmp_path / run / "last.safetensors")
        assert_same_metrics(tmp_path / "t0", tmp_path / run)


def test_evaluate_crops_on_the_device_the_same(tmp_path, monkeypatch):
    make_folder(tmp_path / "src", classes=3, per_class=4, size=80)
    prepare(tmp_path / "src", tmp_path / "prep", size=73, progress=False)
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet_owt", num_classes=3, **{"conv_channels": [16, 32, 32, 32, 32]})
    pre = alexnet.Preprocessing(input_size=64, resize_size=73, class_names=["class0", "class1", "class2"])
    from alexnet.evaluate import evaluate_dataset

    plain = evaluate_dataset(model, str(tmp_path / "prep"), preprocessing=pre, device="cpu", collect=True)
    real = D.make_loader
    with monkeypatch.context() as m:
        m.setattr(D, "make_loader", lambda ds, **k: real(ds, **{**k, "crop_device": "cpu"}))
        dev = evaluate_dataset(model, str(tmp_path / "prep"), preprocessing=pre, device="cpu", collect=True)
    assert plain.num_samples == dev.num_samples == 12 and plain.top1_error == dev.top1_error
    assert torch.equal(plain.confusion, dev.confusion)
    assert torch.equal(plain.predictions.confidence, dev.predictions.confidence)
    assert plain.predictions.names == dev.predictions.names and "" not in plain.predictions.names


def test_sigint_mid_epoch_with_reader_threads_resumes_exactly(tmp_path):
    """Ctrl-C while reader threads work ahead: the step finishes, the state is saved, the process exits, and the
    resumed run equals an uninterrupted one."""
    make_folder(tmp_path / "src", classes=3, per_class=8, size=80)
    prepare(tmp_path / "src", tmp_path / "prep", size=73, progress=False)
    check_sigint_resume(tmp_path / "prep", tmp_path, workers=2)


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc")
def test_abandoned_loader_closes_its_files_and_threads(prepared):
    import gc
    import threading

    ds = D.open_dataset(prepared, transform=T.train_geometry(40, 32))
    before = _open_fds()
    for _ in range(3):
        loader = D.make_loader(ds, batch_size=2, shuffle=True, workers=2)
        it = iter(loader)
        next(it)  # readers are working ahead
        del it, loader
        gc.collect()
    for _ in range(50):  # the last reference may go in a reader thread, which finishes on its own
        if _open_fds() == before and not any(t.name.startswith("alexnet-read") for t in threading.enumerate()):
            break
        __import__("time").sleep(0.05)
    assert _open_fds() == before
    loader = D.make_loader(ds, batch_size=2, workers=2)
    loader.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(iter(loader))


def test_short_reads_and_too_many_shards_read_the_same(prepared, monkeypatch):
    """A read may return part of a row (network file systems); shards beyond the open-file limit are opened per
    read. Both give the same batches."""
    import os

    ds = D.open_dataset(prepared, transform=T.train_geometry(40, 32))
    want = list(D.make_loader(ds, batch_size=4, shuffle=True, seed=3, workers=2))
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, pos: real(fd, [bufs[0][:1000]], pos))
    got = list(D.make_loader(ds, batch_size=4, shuffle=True, seed=3, workers=2))
    monkeypatch.setattr(PL, "_room_for", lambda n, spare=256: False)
    per_read = D.make_loader(ds, batch_size=4, shuffle=True, seed=3, workers=2)
    assert per_read._shards.fds == []
    for other in (got, list(per_read)):
        for (a, ya, *_), (b, yb, *_) in zip(want, other, strict=True):
            assert torch.equal(a, b) and torch.equal(ya, yb)
