"""Data pipeline speed on ONE core: the torchvision PIL baseline against our training pipeline.

(a) baseline: PIL decode, ``Resize(256)``, ``RandomCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``,
    ``Normalize``, per image;
(b) ours: `decode_image` (libjpeg-turbo, DCT-domain downscale when the image allows it), uint8 geometry
    (`Preprocessing.geometry(True)`: the paper's central 256 square, random 224 patch, mirror), and the
    normalisation batched (`Preprocessing.batch_transform`) as a training loop runs it;
(c) ours from a prepared set (`alexnet prepare`, the paper's decode-once step), same geometry and normalisation.
All produce float32 (N, 3, 224, 224) normalised tensors. Each run of each pipeline is a fresh process (as in
benchmarks/model_speed.py), the three alternating run by run so that load on the machine hits all alike; median of
the runs, printed side by side. (b) and (c) have the allocator setting `alexnet train` (the CLI and `train.main`)
applies at start-up (`alexnet.runtime.tune_cpu_allocator`); the baseline runs as a torchvision user's process
does, without it. The setting is process-wide, which is why the pipelines do not share a process: without it each
batch's 38 MB float tensor is a fresh mmap whose page faults cost 5x the normalisation itself (20 vs 3.6 ms per
batch of 64 on the reference machine), and with it the baseline's per-image float tensors are served faster too.

    python -m benchmarks pipeline [--images 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 500x375 quality-90 JPEGs that compress like photos (smooth regions, edges, mild noise)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        lo = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        mid = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).resize((500, 375), Image.NEAREST)
        a = 0.6 * np.asarray(lo, np.float32) + 0.4 * np.asarray(mid.filter(ImageFilter.GaussianBlur(2)), np.float32)
        a += rng.normal(0, 3, a.shape)
        d = folder / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{i:05d}.jpg"
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p, "JPEG", quality=90)
        paths.append(p)
    return paths


def run_baseline(blobs: list[bytes]) -> float:
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    t = time.perf_counter()
    out = [tf(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
    torch.stack(out)
    return len(blobs) / (time.perf_counter() - t)


def run_ours(blobs: list[bytes], batch: int = 64) -> float:
    from alexnet.data.decode import decode_image
    from alexnet.weights import Preprocessing

    pre = Preprocessing(input_size=224)
    geometry, normalise = pre.geometry(True), pre.batch_transform(True)
    t = time.perf_counter()
    for i in range(0, len(blobs), batch):
        x = torch.stack([geometry(decode_image(b, min_size=256)) for b in blobs[i : i + batch]])
        normalise(x)
    return len(blobs) / (time.perf_counter() - t)


def run_prepared(ds, batch: int = 64) -> float:
    from alexnet.weights import Preprocessing

    pre = Preprocessing(input_size=224)
    geometry, normalise = pre.geometry(True), pre.batch_transform(True)
    t = time.perf_counter()
    for i in range(0, len(ds), batch):
        normalise(torch.stack([geometry(ds.load(j)) for j in range(i, min(len(ds), i + batch))]))
    return len(ds) / (time.perf_counter() - t)


def measure(case: str, tmp: str) -> float:
    """images/s of one pipeline in THIS process (one thread), after a warm-up on 20 images."""
    torch.set_num_threads(1)
    if case != "baseline":
        from alexnet.runtime import tune_cpu_allocator

        tune_cpu_allocator()  # as alexnet train does at start-up
    if case == "prepared":
        from alexnet.data.datasets import open_dataset

        prepared = open_dataset(Path(tmp) / "prep")
        run_prepared(prepared)  # warm up (page cache, kernels)
        return run_prepared(prepared)
    blobs = [p.read_bytes() for p in sorted((Path(tmp) / "jpg").rglob("*.jpg"))]  # decoded from memory
    run = run_baseline if case == "baseline" else run_ours
    run(blobs[:20])
    return run(blobs)


def _in_subprocess(case: str, tmp: str) -> float:
    from .model_speed import in_subprocess

    return in_subprocess(f"measure({case!r}, {tmp!r})", "benchmarks.pipeline")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    from alexnet.data.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "jpg", args.images)
        prepare(Path(tmp) / "jpg", Path(tmp) / "prep", size=256, progress=False)
        base, ours, prep = [], [], []
        for _ in range(args.runs):  # alternating, so that load changes hit all alike
            base.append(_in_subprocess("baseline", tmp))
            ours.append(_in_subprocess("ours", tmp))
            prep.append(_in_subprocess("prepared", tmp))
    b, o, p = statistics.median(base), statistics.median(ours), statistics.median(prep)
    print(f"{args.images} JPEGs 500x375 q90, 1 thread, median of {args.runs} runs")
    print(f"(a) torchvision PIL baseline        {b:8.1f} images/s")
    print(f"(b) alexnet decode + geometry       {o:8.1f} images/s   {o / b:.2f}x")
    print(f"(c) alexnet prepared set + geometry {p:8.1f} images/s   {p / b:.2f}x")


if __name__ == "__main__":
    main()
