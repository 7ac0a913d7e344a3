"""Data sets (folder, list file, Fashion-MNIST, prepared), the loader's bad-image handling, and stats."""

import json

import numpy as np
import pytest
import torch
from _builders import make_fashion, write_idx
from PIL import Image

from alexnet.cli import main
from alexnet.data import datasets as D
from alexnet.data.decode import BadImageError
from alexnet.data.prepare import prepare
from alexnet.data.stats import compute_stats, dataset_stats, load_stats, pixel_stats, save_stats
from alexnet.data.transforms import ResizeCenterCrop
from alexnet.errors import AlexnetError


def _write_images(root, per_class=(6, 4), size=(48, 64), bad=()):
    rng = np.random.default_rng(0)
    for c, n in enumerate(per_class):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"img{i}.png")
    for name in bad:
        (root / name).write_bytes(b"not an image")
    return root


def test_image_folder_and_stratified_reproducible_split(tmp_path):
    root = _write_images(tmp_path / "data", per_class=(10, 5))
    ds = D.open_dataset(root)
    assert ds.classes == ["class0", "class1"] and len(ds) == 15 and ds.targets.count(1) == 5
    tr = D.open_dataset(root, split="train", val_split=0.2, seed=1)
    va = D.open_dataset(root, split="val", val_split=0.2, seed=1)
    assert sorted(va.targets) == [0, 0, 1]  # 20% of each class
    assert not set(tr.names) & set(va.names) and len(tr) + len(va) == 15
    assert D.open_dataset(root, split="val", val_split=0.2, seed=1).names == va.names
    other = [D.open_dataset(root, split="val", val_split=0.2, seed=s).names for s in range(2, 6)]
    assert any(o != va.names for o in other)
    img, label = va[0]
    assert img.shape == (3, 48, 64) and img.dtype == torch.uint8 and label == va.targets[0]
    with pytest.raises(AlexnetError, match="val_split"):
        D.open_dataset(root, split="val")


def test_train_val_folders(tmp_path):
    _write_images(tmp_path / "d" / "train")
    _write_images(tmp_path / "d" / "val", per_class=(1, 2))
    assert len(D.open_dataset(tmp_path / "d", split="train")) == 10
    assert D.open_dataset(tmp_path / "d", split="val").targets == [0, 1, 1]


def test_list_file_and_errors(tmp_path):
    _write_images(tmp_path / "imgs")
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nimgs/class0/img0.png 0\n\nimgs/class1/img1.png 1\nimgs/nope.png 1\n")
    ds = D.open_dataset(lst, transform=ResizeCenterCrop(32))
    assert ds.targets == [0, 1, 1] and ds[0][0].shape == (3, 32, 32)
    assert ds[2] is None  # missing image: skipped, named by the loader
    batches = list(D.make_loader(ds, batch_size=3))
    assert len(batches) == 1 and batches[0][0].shape == (2, 3, 32, 32) and batches[0][1].tolist() == [0, 1]
    assert batches[0][2] == [str(tmp_path / "imgs/nope.png")]
    failing = D.open_dataset(lst, on_bad_image="fail")
    with pytest.raises(BadImageError, match="nope.png"):
        list(D.make_loader(failing, batch_size=2))
    for text, where in [("a.png\n", ":1:"), ("a.png 0\nb.png x\n", ":2:"), ("a.png -1\n", ":1:")]:
        lst.write_text(text)
        with pytest.raises(AlexnetError, match=f"list.txt{where}"):
            D.open_dataset(lst)


def test_loader_with_workers_reports_bad_names(tmp_path):
    root = _write_images(tmp_path / "data", per_class=(3, 3), bad=("class0/broken.png",))
    ds = D.open_dataset(root, transform=ResizeCenterCrop(16))
    seen, bad = 0, []
    for images, labels, b, *_ in D.make_loader(ds, batch_size=4, workers=1, shuffle=True, seed=3):
        seen += len(labels)
        bad += b
        assert images.shape[1:] == (3, 16, 16) and labels.dtype == torch.int64
    assert seen == 6 and len(bad) == 1 and bad[0].endswith("broken.png")


class _Pid(torch.utils.data.Dataset):
    """Each item: a random draw (the transform's randomness) and the pid of the process that made it."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        import os

        return torch.rand(3), os.getpid()


def _draws(loader):
    return [(x.clone(), y.tolist()) for x, y, *_ in loader]


def test_random_transforms_follow_the_batch_not_the_worker():
    """SeededBatchSampler: a batch's random numbers depend on (seed, epoch, batch number) only."""
    draws = {}
    for workers in (0, 2):
        loader = D.make_loader(_Pid(), batch_size=4, workers=workers, seed=5)
        loader.batch_sampler.set_epoch(1)
        draws[workers] = [x for x, _ in _draws(loader)]
    assert all(torch.equal(a, b) for a, b in zip(draws[0], draws[2]))
    assert not torch.equal(draws[0][0], draws[0][1])  # batches differ from one another
    loader = D.make_loader(_Pid(), batch_size=4, seed=5)
    loader.batch_sampler.set_epoch(2)
    assert not torch.equal(_draws(loader)[0][0], draws[0][0])  # and from epoch to epoch
    torch.manual_seed(0)
    before = torch.rand(4)
    torch.manual_seed(0)
    _draws(D.make_loader(_Pid(), batch_size=4, seed=5))  # no workers: the caller's generator is left as it was
    assert torch.equal(torch.rand(4), before)


def test_loader_skips_batches_and_keeps_workers():
    class Skipping(torch.utils.data.SequentialSampler):
        skip = 0

        def __iter__(self):
            return iter(list(super().__iter__())[self.skip :])

    sampler = Skipping(range(12))
    loader = D.make_loader(_Pid(), batch_size=4, workers=2, sampler=sampler, seed=1)
    loader.batch_sampler.set_epoch(3)
    full = _draws(loader)
    sampler.skip = 4  # resume after the first batch: the rest is drawn as before
    rest = _draws(loader)
    assert len(rest) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(full[1:], rest))
    pids = {p for _, ps in full + rest for p in ps}
    assert len(pids) == 2  # the same two worker processes served both passes


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path, gz):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    imgs = rng.integers(0, 256, (7, 28, 28))
    write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", imgs, gz=gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", np.arange(7) % 10, gz=gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", imgs[:3], gz=gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", np.array([9, 8, 7]), gz=gz)
    assert D.find_fashion_mnist(tmp_path) == tmp_path
    ds = D.open_dataset("fashion-mnist", data_dir=tmp_path)
    assert len(ds) == 7 and ds.classes[9] == "Ankle boot" and ds.targets == list(range(7))
    img, label = ds[2]
    assert img.shape == (3, 28, 28) and torch.equal(img[1], torch.from_numpy(imgs[2].astype(np.uint8)))
    assert D.open_dataset(tmp_path, split="val").targets == [9, 8, 7]
    (tmp_path / f"t10k-labels-idx1-ubyte{sfx}").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05" if not gz else b"x")
    with pytest.raises(AlexnetError, match="t10k-labels"):
        D.open_dataset(tmp_path, split="val")


def test_fashion_mnist_missing_message(tmp_path):
    assert D.find_fashion_mnist(tmp_path) is None
    with pytest.raises(AlexnetError) as e:
        D.open_dataset("fashion-mnist", data_dir=tmp_path)
    assert "sudo apt-get install dataset-fashion-mnist" in str(e.value) and "\n" not in str(e.value)


def test_stats_equal_numpy(tmp_path):
    root = _write_images(tmp_path / "data", per_class=(3, 2), size=(40, 50), bad=("class1/bad.jpg",))
    st = compute_stats(root, size=32, batch_size=2, progress=False)
    ds = D.open_dataset(root, transform=ResizeCenterCrop(32))
    x = np.stack([ds[i][0].numpy() for i in range(len(ds)) if ds[i] is not None]).astype(np.float64) / 255
    assert st.num_images == 5 and len(st.skipped) == 1
    pix = x.transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(st.mean, pix.mean(1), atol=1e-12)
    np.testing.assert_allclose(st.std, pix.std(1), atol=1e-10)
    np.testing.assert_allclose(st.cov, np.cov(pix, bias=True), atol=1e-10)
    np.testing.assert_allclose(st.mean_image, x.mean(0), atol=1e-6)
    vals, vecs = np.linalg.eigh(np.cov(pix, bias=True))
    np.testing.assert_allclose(st.eigvals, vals[::-1], atol=1e-10)
    v = np.asarray(st.eigvecs)
    np.testing.assert_allclose(v @ np.diag(st.eigvals) @ v.T, np.cov(pix, bias=True), atol=1e-10)
    path = save_stats(st, tmp_path / "stats.json")
    back = load_stats(path)
    assert back.mean == st.mean and back.eigvecs == st.eigvecs
    np.testing.assert_array_equal(back.mean_image, st.mean_image)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(AlexnetError, match="broken.json"):
        load_stats(tmp_path / "broken.json")


def test_pixel_stats_equal_the_loader_pass_on_fashion_mnist(tmp_path):
    """The demo's histogram shortcut gives what `compute_stats` gives through the loader, field by field."""
    folder = make_fashion(tmp_path / "fm", n_train=40, n_test=10)
    ds = D.FashionMNISTDataset(folder, "train")
    idx = list(range(3, 40, 2))
    fast = pixel_stats(ds.images[idx])
    slow = compute_stats(D.Subset(ds, idx), size=28, batch_size=7, progress=False)
    assert fast.num_images == slow.num_images == len(idx) and fast.size == 28
    for name in ("mean", "std", "eigvals", "eigvecs", "cov"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), atol=1e-12, err_msg=name)
    np.testing.assert_allclose(fast.mean_image, slow.mean_image, atol=1e-7)
    assert dataset_stats(D.Subset(ds, idx)).mean == fast.mean  # the dispatch takes the histogram for Fashion-MNIST
    assert ds.transform is None
    assert max(fast.eigvals[1:]) < 1e-12 * fast.eigvals[0]  # grey images: one eigen-pair, a brightness jitter
    with pytest.raises(AlexnetError, match=r"expected grey uint8 images \(N, S, S\), got float64"):
        pixel_stats(ds.images[idx].astype(np.float64))


def test_fashion_mnist_presized_gives_the_same_centre_crops_and_patches_as_slices(tmp_path):
    from alexnet.data.geometry import CenterPatch
    from alexnet.data.transforms import RandomPatch

    ds = D.FashionMNISTDataset(make_fashion(tmp_path / "fm", n_train=20, n_test=10), "train")
    big = ds.presized(76)
    assert big.images.shape == (20, 76, 76) and ds.images.shape == (20, 28, 28)  # the original is untouched
    centre = CenterPatch(76, 67)
    for i in (0, 7, 19):  # resizing once, then cropping, is what the eval geometry does to each image
        assert torch.equal(centre(ds.load(i)), centre(big.load(i)))
    torch.manual_seed(3)
    i, j = RandomPatch(76, 67).draw()
    torch.manual_seed(3)
    assert torch.equal(RandomPatch(76, 67)(big.load(5)), big.load(5)[:, i : i + 67, j : j + 67])  # a plain slice
    view = big.view()
    view.transform = centre
    assert view.images is big.images and big.transform is None and big.presized(76).images is big.images


def test_prepared_set_reads_back_identical_and_resumes(tmp_path, capsys):
    root = _write_images(tmp_path / "data", per_class=(5, 4), size=(60, 40), bad=("class0/zz_bad.png",))
    out = tmp_path / "prep"
    m = prepare(root, out, size=32, shard_size=4, progress=False)
    assert m["splits"]["train"]["count"] == 10 and len(m["splits"]["train"]["shards"]) == 3
    src = D.open_dataset(root, transform=ResizeCenterCrop(32))
    good = [i for i in range(len(src)) if src[i] is not None]
    prep = D.open_dataset(out)
    assert len(prep) == 9 and prep.classes == src.classes and len(prep.skipped) == 1
    for j, i in enumerate(good):
        assert prep.names[j] == src.names[i]
        assert torch.equal(prep[j][0], src[i][0]) and prep[j][1] == src[i][1]
    # an interrupted run: drop the manifest and one shard's metadata, then resume
    (out / "prepared.json").unlink()
    (out / "train/00001.json").unlink()
    before = (out / "train/00000.npy").stat().st_mtime_ns
    assert (
        main(
            [
                "prepare",
                str(root),
                str(out),
                "--size",
                "32",
                "--shard-size",
                "4",
                "--workers",
                "0",
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["splits"]["train"]["count"] == 10
    assert (out / "train/00000.npy").stat().st_mtime_ns == before
    again = D.open_dataset(out, transform=ResizeCenterCrop(32))
    assert all(torch.equal(again[j][0], prep[j][0]) for j in range(len(prep)))
    assert (
        main(["stats", str(out), "--out", str(tmp_path / "s.json"), "--size", "32", "--workers", "0", "--no-progress"])
        == 0
    )
    assert load_stats(tmp_path / "s.json").num_images == 9
    assert main(["stats", str(tmp_path / "nothing"), "--out", str(tmp_path / "t.json"), "--workers", "0"]) == 1
    assert "nothing" in capsys.readouterr().err
