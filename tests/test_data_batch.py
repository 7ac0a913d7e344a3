"""`alexnet.data.batch.Batch`: every loader yields one type, whose images are told apart by type (a tensor, JPEGs
still encoded, stored squares still to crop), never by position or length."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from _builders import make_folder
from PIL import Image

from alexnet.data import datasets as D
from alexnet.data import prepared_loader as PL
from alexnet.data.batch import Batch
from alexnet.data.decode import BadImageError
from alexnet.data.device_decode import EncodedBatch
from alexnet.data.prepare import prepare
from alexnet.data.transforms import eval_geometry


def _jpegs(root):
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(3):
            buf = io.BytesIO()
            Image.fromarray(np.full((40, 40, 3), 40 * c + i, np.uint8)).save(buf, "JPEG")
            (root / f"c{c}" / f"{i}.jpg").write_bytes(buf.getvalue())
    return root


def test_every_loader_yields_a_batch_and_each_kind_becomes_real_on_a_device(tmp_path):
    folder = make_folder(tmp_path / "png", classes=2, per_class=3)
    plain = next(iter(D.make_loader(D.open_dataset(folder, transform=eval_geometry(40, 32)), batch_size=6)))
    assert isinstance(plain, Batch) and isinstance(plain.images, torch.Tensor)
    assert plain.images.shape == (6, 3, 32, 32) and plain.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert list(plain.bad) == [] and plain.refs is None and plain.failure is None

    ds = D.open_dataset(_jpegs(tmp_path / "jpg"), transform=eval_geometry(40, 32))
    ds.encoded = True
    encoded = next(iter(D.make_loader(ds, batch_size=6)))
    assert isinstance(encoded, Batch) and isinstance(encoded.images, EncodedBatch)
    real = encoded.on("cpu")
    assert isinstance(real.images, torch.Tensor) and real.images.shape == (6, 3, 32, 32)
    assert torch.equal(real.labels, encoded.labels)

    prepare(folder, tmp_path / "prep", size=40, shard_size=4, progress=False)
    prep = D.open_dataset(tmp_path / "prep", transform=eval_geometry(40, 32))
    cropped = next(iter(D.make_loader(prep, batch_size=6, crop_device="cpu")))
    assert isinstance(cropped, Batch) and isinstance(cropped.images, PL.CropBatch)
    direct = next(iter(D.make_loader(prep, batch_size=6)))
    assert isinstance(direct, Batch) and torch.equal(cropped.on("cpu").images, direct.images)


def test_a_bad_image_under_fail_is_raised_in_the_caller_not_yielded(tmp_path):
    folder = make_folder(tmp_path / "png", classes=2, per_class=2)
    (folder / "class1" / "zz.png").write_bytes(b"not an image")
    ds = D.open_dataset(folder, transform=eval_geometry(40, 32), on_bad_image="fail")
    with pytest.raises(BadImageError) as e:
        list(D.make_loader(ds, batch_size=8, workers=1))
    assert "zz.png" in str(e.value) and "\n" not in str(e.value)
    skip = D.open_dataset(folder, transform=eval_geometry(40, 32))
    (batch,) = list(D.make_loader(skip, batch_size=8))
    assert list(batch.bad) == [str(folder / "class1" / "zz.png")] and len(batch.labels) == 4


def test_a_callers_pairs_become_batches_and_anything_else_is_refused():
    x, y = torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1])
    b = Batch.of((x, y))
    assert b.images is x and b.labels is y and list(b.bad) == [] and Batch.of(b) is b
    assert Batch.of([x, y, ["gone.jpg"]]).bad == ["gone.jpg"]
    with pytest.raises(TypeError) as e:
        Batch.of(x)
    assert str(e.value) == "a loader batch is a Batch or an (images, labels) pair, got Tensor"
