"""The tests' shared builders (not collected): tiny image folders, images as bytes, idx files, weights, run
folders, training configs, and the comparisons of two runs. One home, so that no test module imports another."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import alexnet
from alexnet.weights import BVLC_PREPROCESSING, Preprocessing, save_model

REPO = Path(__file__).resolve().parents[1]
# How long a child process may take before a test calls it hung: far beyond what a slow or busy machine needs (the
# default suite must pass on a loaded 2-core box), so that only a real hang trips it.
HANG_S = 1800

CLASSES = ["cat", "dog", "fox"]
INPUT, RESIZE = 64, 72  # about the smallest input alexnet_owt's pooling accepts, kept tiny for 2-core CI
TINY = {"conv_channels": [16, 32, 32, 32, 32], "fc_features": 64}  # alexnet_owt's layout, few weights


def tiny_model(num_classes: int = 3, seed: int = 0) -> alexnet.AlexNet:
    torch.manual_seed(seed)
    return alexnet.create_model("alexnet_owt", num_classes=num_classes, input_size=INPUT, **TINY).eval()


def tiny_preprocessing(classes: list[str] | None = None) -> Preprocessing:
    return Preprocessing(input_size=INPUT, resize_size=RESIZE, class_names=list(classes or CLASSES))


def write_image(path: Path, seed: int, tint: int | None = None, size: tuple[int, int] = (80, 96)) -> Path:
    """A random RGB PNG (lossless: the loader and a test decode the same pixels); ``tint`` saturates a channel."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    if tint is not None:
        a[..., tint] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def image_folder(root: Path, classes: list[str] | None = None, per_class: int = 3, seed: int = 0) -> Path:
    """One sub-folder per class (torchvision's ImageFolder layout) of tinted random images."""
    for ci, c in enumerate(classes or CLASSES):
        for i in range(per_class):
            write_image(root / c / f"{c}{i}.png", seed * 1000 + ci * 100 + i, tint=ci % 3)
    return root


def saved_weights(path: Path, classes: list[str] | None = None, seed: int = 0) -> Path:
    classes = list(classes or CLASSES)
    save_model(tiny_model(len(classes), seed), tiny_preprocessing(classes), path)
    return path


METRICS_HEADER = (
    "epoch,lr,train_loss,train_top1_accuracy,val_loss,val_top1_accuracy,val_top5_accuracy,images_per_s,seconds\n"
)


def run_folder(root: Path, *, epochs: int = 4, partial: bool = False, data: Path | None = None) -> Path:
    """A run folder as alexnet train leaves it: config.json, metrics.csv, best/last weights, and with ``data``
    (a folder with train/ and val/) eval.json of the last weights on val/."""
    from alexnet import rundir
    from alexnet.evaluate import evaluate_dataset

    root.mkdir(parents=True, exist_ok=True)
    lines = [METRICS_HEADER]
    for e in range(1, epochs + 1):
        lr = 0.01 if e <= epochs // 2 else 0.001
        lines.append(
            f"{e},{lr},{1.2 - 0.1 * e:.3f},{0.3 + 0.1 * e:g},{1.1 - 0.05 * e:.3f},{0.33 + 0.08 * e:g},1,55.5,2.5\n"
        )
    if partial:
        lines.append(f"{epochs + 1},0.001,0.7")  # killed while writing: no line end, fields missing
    (root / "metrics.csv").write_text("".join(lines))
    (root / "config.json").write_text(
        json.dumps({"arch": "alexnet_owt", "data": str(data) if data else "", "val_split": 0.0, "seed": 0})
    )
    saved_weights(root / "best.safetensors")
    saved_weights(root / "last.safetensors", seed=1)
    if data is not None:
        result = evaluate_dataset(root / "last.safetensors", data, device="cpu")
        rundir.write_eval(root, epochs, result.to_dict(), "last.safetensors")
    return root


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


# --- image folders and images ---------------------------------------------------------------------------------------
def make_folder(root: Path, *, classes: int = 3, per_class: int | list[int] = 8, size: int = 40, seed: int = 0) -> Path:
    """Class folders (``class0``, ``class1``, ...) of small PNGs whose colour says the class (learnable in a few
    epochs); ``per_class`` may give each class its own count."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class[c] if isinstance(per_class, list) else per_class):
            a = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            a[..., c % 3] += 150
            if c >= 3:
                a[: size // 2] = 255 - a[: size // 2]
            Image.fromarray(a).save(d / f"{i:03d}.png")
    return root


def jpeg_bytes(
    mode: str = "RGB",
    size: tuple[int, int] = (40, 30),
    *,
    orientation: int | None = None,
    exif_tags: dict[int, object] | None = None,
    progressive: bool = False,
    seed: int = 0,
) -> bytes:
    """A random JPEG (quality 90) of ``size`` (width, height) in PIL ``mode``, with an EXIF orientation and other
    EXIF tags where given."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    exif = Image.Exif()
    for tag, value in (exif_tags or {}).items():
        exif[tag] = value
    if orientation is not None:
        exif[0x0112] = orientation
    kw = {"exif": exif.tobytes()} if (orientation is not None or exif_tags) else {}
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, "JPEG", quality=90, progressive=progressive, **kw)
    return buf.getvalue()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = True) -> Path:
    """``arr`` (uint8) as an idx file, the format (MNIST's, Fashion-MNIST's) gzipped or not."""
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released): a download from it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- training runs ----------------------------------------------------------------------------------------------
TIMING = ("images_per_s", "seconds")  # metrics.csv columns that differ from run to run


def tiny_config(data: Path, out: Path, **kw):
    """A `TrainConfig` for a seconds-long run: alexnet_owt's layout at 64x64 with a few thousand weights."""
    from alexnet import train

    base = dict(
        data=str(data),
        out=str(out),
        arch="alexnet_owt",
        input_size=64,
        model_options=dict(TINY),
        batch_size=8,
        epochs=2,
        workers=0,
        progress="none",
        tensorboard=False,
        val_split=0.25,
    )
    base.update(kw)
    return train.resolve_config(base)


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    from alexnet.weights import load_model

    return load_model(path)[0].state_dict()


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = state_dict_of(a), state_dict_of(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def assert_same_metrics(a: Path, b: Path) -> None:
    ra, rb = read_metrics(a), read_metrics(b)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k not in TIMING} == {k: v for k, v in y.items() if k not in TIMING}


def _train():
    from alexnet import train

    return train


def alexnet_cli(args: list[str], **kw) -> subprocess.Popen:
    """``python -m alexnet ARGS`` in a child process, unbuffered, from the repository's root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "alexnet", *args], env=env, cwd=REPO, text=True, **kw)


def tiny_train_flags(data: Path, out: Path) -> list[str]:
    """`alexnet train`'s flags for `tiny_config`'s run."""
    return [
        "train", str(data), "--out", str(out), "--arch", "alexnet_owt", "--input-size", "64",
        "--model-option", "conv_channels=[16,32,32,32,32]", "--model-option", "fc_features=64", "--workers", "0",
        "--val-split", "0.25", "--no-tensorboard",
    ]  # fmt: skip


def signal_at(p: subprocess.Popen, prefix: str, sig: int) -> tuple[str, str]:
    """Send ``sig`` to the training process ``p`` once it prints a line starting with ``prefix`` (its step log),
    then wait for it (within `HANG_S`) and return what it printed after that: (stdout, stderr)."""
    for line in p.stdout:
        if line.startswith(prefix):
            p.send_signal(sig)
            break
    return p.communicate(timeout=HANG_S)


def check_sigint_resume(data: Path, tmp_path: Path, workers: int) -> None:
    """Train 2 epochs uninterrupted; train again through the CLI, SIGINT at epoch 1 step 4, resume: both equal."""
    kw = dict(epochs=2, batch_size=2, lr=0.02, workers=workers)
    _train().main(tiny_config(data, tmp_path / "full", **kw))
    p = alexnet_cli([*tiny_train_flags(data, tmp_path / "cut"), "--epochs", "2", "--batch-size", "2", "--lr", "0.02",
              "--progress", "log", "--log-every", "1", "--workers", str(workers)],
             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, err = signal_at(p, "epoch 1 step 4/", signal.SIGINT)
    assert p.returncode == 130, err
    assert "interrupted at epoch 1" in out and "Traceback" not in err
    state = _train().load_state(tmp_path / "cut")
    assert state["epoch"] == 0 and state["step"] >= 4
    _train().main(tiny_config(data, tmp_path / "cut", **kw, resume=str(tmp_path / "cut")))
    assert_same_weights(tmp_path / "full" / "last.safetensors", tmp_path / "cut" / "last.safetensors")
    assert_same_metrics(tmp_path / "full", tmp_path / "cut")


# --- data sets in their shipped formats, and a running server -------------------------------------------------
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
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels)
    return folder


def make_weights(path: Path, num_classes: int = 11) -> Path:
    """A real AlexNet (torchvision's layout, adaptive pool), narrowed so that CPU tests stay fast.

    He-normal weights and zero biases: with the stock inits a random narrow net answers nearly the same for every
    input, and the tests need answers that tell images (and crops) apart."""
    torch.manual_seed(0)
    model = alexnet.create_model(
        "alexnet_owt",
        num_classes=num_classes,
        conv_channels=(16, 32, 48, 32, 32),
        fc_features=64,
        input_size=64,
    )
    for layer in model.named_layers().values():
        torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        torch.nn.init.zeros_(layer.bias)
    pre = alexnet.Preprocessing(input_size=64, resize_size=72, class_names=[f"class {i}" for i in range(num_classes)])
    return alexnet.save_model(model, pre, path)


def start_server(weights: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """Run ``alexnet serve`` on a free loopback port; return the process and its base URL."""
    import httpx

    cmd = [sys.executable, "-m", "alexnet", "serve", "--weights", str(weights), "--port", "0", "--log-level", "warning"]
    proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL, stderr=open(log, "w"))  # noqa: SIM115
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read_text())
        if m:
            url = m.group(1)
            while time.monotonic() < deadline:  # the line comes before uvicorn's startup (warm-up) completes
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        return proc, url
                except httpx.TransportError:
                    time.sleep(0.05)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"alexnet serve did not start:\n{log.read_text()}")


# --- weights files, crafted ----------------------------------------------------------------------------------
def narrow_model(arch: str = "alexnet2012", **overrides) -> alexnet.AlexNet:
    """A 3-class AlexNet narrow enough that every file of it is a few hundred KB."""
    torch.manual_seed(0)
    opts = {"conv_channels": (8, 8, 8, 8, 8), "fc_features": 16, **overrides}
    return alexnet.create_model(arch, num_classes=3, **opts)


def bvlc_preprocessing(**kw) -> Preprocessing:
    """BVLC's preprocessing with the three test classes (and ``kw`` replaced)."""
    return Preprocessing.from_dict({**BVLC_PREPROCESSING.to_dict(), "class_names": CLASSES, **kw})


def saved_narrow(tmp_path: Path, name: str = "m.safetensors"):
    """``(narrow_model(), the path of it saved with bvlc_preprocessing())``."""
    model = narrow_model()
    return model, save_model(model, bvlc_preprocessing(), tmp_path / name)


def rewrite_weights(src, dst, *, config=None, preprocessing=None, tensors=None, metadata=None):
    """Copy a saved .safetensors with some of its metadata fields or tensors replaced (a crafted file)."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    state = load_file(str(src))
    if config:
        meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    if preprocessing:
        meta["preprocessing"] = json.dumps({**json.loads(meta["preprocessing"]), **preprocessing})
    meta.update(metadata or {})
    state.update(tensors or {})
    save_file(state, str(dst), metadata=meta)
    return dst


def one_line_error(e, *words: str) -> str:
    """The message of ``e`` (a pytest.ExceptionInfo): one line, short, holding every one of ``words``."""
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    for w in words:
        assert w in msg, msg
    return msg
