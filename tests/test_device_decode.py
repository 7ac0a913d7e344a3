"""JPEGs decoded a batch at a time on the training device (`alexnet.data.device_decode`). Run here on the CPU
device, where the decoder is libjpeg-turbo instead of nvJPEG: the logic (which files take the path, the fallbacks,
bad files, the seeds of the crops) is the same, and the results must equal the ordinary loader's."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from _builders import assert_same_metrics, assert_same_weights, jpeg_bytes, tiny_config
from PIL import Image

from alexnet import train
from alexnet.data import datasets as D
from alexnet.data.device_decode import EncodedBatch, EncodedJpeg, materialize, plain_jpeg
from alexnet.weights import load_model


def test_plain_jpeg_tells_which_files_the_device_decodes():
    assert plain_jpeg(jpeg_bytes("RGB", (48, 40))) and plain_jpeg(jpeg_bytes("L", (48, 40)))
    assert plain_jpeg(jpeg_bytes("RGB", (48, 40), orientation=1))
    assert not plain_jpeg(
        jpeg_bytes("RGB", (48, 40), orientation=6)
    )  # rotated: decode_image applies EXIF, nvJPEG does not
    assert not plain_jpeg(jpeg_bytes("CMYK", (48, 40)))
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert not plain_jpeg(png.getvalue())
    assert not plain_jpeg(b"\xff\xd8\xff garbage") and not plain_jpeg(b"")


def _folder(root: Path, bad: bool = False) -> Path:
    """3 class folders of JPEGs (RGB, grayscale, one EXIF-rotated) and a PNG: both paths in one batch."""
    for c in range(3):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(6):
            mode = "L" if i == 1 else "RGB"
            (d / f"{i}.jpg").write_bytes(jpeg_bytes(mode, (48, 40), orientation=6 if i == 2 else None, seed=10 * c + i))
        arr = np.full((40, 44, 3), 60 * c, dtype=np.uint8)
        Image.fromarray(arr).save(d / "z.png")
    if bad:
        good = jpeg_bytes(size=(48, 40), seed=99)
        (root / "class0" / "truncated.jpg").write_bytes(good[: len(good) // 3])
        (root / "class1" / "fake.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _batches(ds, encoded: bool, workers: int = 0):
    ds.encoded = encoded
    loader = D.make_loader(ds, batch_size=8, workers=workers, seed=4)
    loader.batch_sampler.set_epoch(1)
    out = []
    for x, y, bad, *_ in loader:
        x, y, dropped = materialize(x, y, "cpu")
        out.append((x, y, sorted(bad + dropped)))
    return out


@pytest.mark.parametrize("train_geometry", [True, False])
def test_device_decoded_batches_equal_the_loaders(tmp_path, train_geometry):
    from alexnet.weights import Preprocessing

    pre = Preprocessing(input_size=32, resize_size=36)
    ds = D.open_dataset(_folder(tmp_path / "data"), transform=pre.geometry(train_geometry))
    plain, device = _batches(ds, False), _batches(ds, True, workers=2)
    assert len(plain) == len(device) == 3
    for (a, ya, ba), (b, yb, bb) in zip(plain, device):
        assert torch.equal(a, b) and torch.equal(ya, yb) and ba == bb == []
    ds.encoded = True
    loader = D.make_loader(ds, batch_size=8, seed=4)
    first = next(iter(loader))[0]
    assert isinstance(first, EncodedBatch)  # the JPEGs really came through encoded
    assert sum(isinstance(it, EncodedJpeg) for it in first.items) >= 5
    assert sum(isinstance(it, torch.Tensor) for it in first.items) >= 1  # the rotated JPEG and the PNG: pixels


def test_bad_files_are_skipped_and_named_or_fail(tmp_path):
    from alexnet.data.decode import BadImageError
    from alexnet.weights import Preprocessing

    pre = Preprocessing(input_size=32, resize_size=36)
    root = _folder(tmp_path / "data", bad=True)
    ds = D.open_dataset(root, transform=pre.geometry(False))
    plain, device = _batches(ds, False), _batches(ds, True)
    bad_plain = sorted(n for *_, b in plain for n in b)
    bad_device = sorted(n for *_, b in device for n in b)
    assert bad_device == bad_plain and any(n.endswith("fake.jpg") for n in bad_device)
    assert sum(len(y) for _, y, _ in plain) == sum(len(y) for _, y, _ in device)
    for (a, ya, _), (b, yb, _) in zip(plain, device):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    # a file whose header passes but whose data the decoders refuse is dropped with its label
    enc = EncodedBatch(
        [EncodedJpeg(torch.frombuffer(bytearray(jpeg_bytes(size=(48, 40))), dtype=torch.uint8)),
         EncodedJpeg(torch.frombuffer(bytearray(b"\xff\xd8\xff\xdb" + b"\x00" * 64), dtype=torch.uint8))],
        ["a.jpg", "b.jpg"], pre.geometry(False), seed=1,
    )  # fmt: skip
    x, y, dropped = materialize(enc, torch.tensor([4, 7]), "cpu")
    assert x.shape == (1, 3, 32, 32) and y.tolist() == [4] and dropped == ["b.jpg"]
    enc.on_bad_image = "fail"
    with pytest.raises(BadImageError, match="b.jpg"):
        enc.decode("cpu")


def test_training_with_decode_on_device_equals_the_plain_loader(tmp_path):
    """Same seeds, same crops and flips, same weights: the device path changes where decoding runs, not what."""
    data = _folder(tmp_path / "data")
    kw = dict(epochs=2, lr=0.02, workers=2, batch_size=6)
    train.main(tiny_config(data, tmp_path / "plain", **kw))
    train.main(tiny_config(data, tmp_path / "device", decode_on_device=True, **kw))
    assert_same_weights(tmp_path / "plain" / "last.safetensors", tmp_path / "device" / "last.safetensors")
    assert_same_metrics(tmp_path / "plain", tmp_path / "device")
    assert load_model(tmp_path / "device" / "last.safetensors")[0].fc8.out_features == 3


def test_mixed_sizes_are_cropped_in_groups_equal_to_per_image(tmp_path, monkeypatch):
    """Sizes that resample differently (and one already the resize_size square, a plain slice) in one batch: the
    grouped crop gives the per-image transform's pixels, and resamples once per source size."""
    from torchvision.transforms.v2 import functional as F

    from alexnet.data import device_decode
    from alexnet.weights import Preprocessing

    root = tmp_path / "data"
    sizes = [(48, 40), (36, 36), (60, 45), (48, 40), (36, 36), (60, 45), (41, 52), (48, 40)]
    for n, size in enumerate(sizes * 2):
        d = root / f"class{n % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{n:02d}.jpg").write_bytes(jpeg_bytes("L" if n == 3 else "RGB", size, seed=n))
    pre = Preprocessing(input_size=32, resize_size=36)
    ds = D.open_dataset(root, transform=pre.geometry(True))
    monkeypatch.setattr(device_decode, "GROUP_ON_CPU", True)  # as on a GPU
    calls = []
    real = F.resize
    monkeypatch.setattr(F, "resize", lambda x, *a, **k: calls.append(tuple(x.shape)) or real(x, *a, **k))
    device = _batches(ds, True)
    grouped = [c for c in calls if len(c) == 4]
    assert grouped and max(c[0] for c in grouped) >= 3  # several images resampled in one call
    monkeypatch.setattr(device_decode, "GROUP_ON_CPU", False)  # the per-image path
    per_image = _batches(ds, True)
    plain = _batches(ds, False)
    assert len(plain) == len(device) == len(per_image) == 2
    for (a, ya, _), (b, yb, _), (c, yc, _) in zip(plain, device, per_image):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(ya, yb) and torch.equal(ya, yc)
