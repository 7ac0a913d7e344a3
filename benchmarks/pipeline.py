"""Data pipeline speed on ONE core: the torchvision PIL baseline against our training pipeline.

(a) baseline: PIL decode, ``Resize(256)``, ``RandomCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``,
    ``Normalize``, per image;
(b) ours: `decode_image` (libjpeg-turbo, DCT-domain downscale when the image allows it), uint8 geometry
    (`Preprocessing.geometry(True)`: the paper's central 256 square, random 224 patch, mirror), and the
    normalisation batched (`Preprocessing.batch_transform`) as a training loop runs it;
(c) ours from a prepared set (`alexnet prepare`, the paper's decode-once step), same geometry and normalisation.
All produce float32 (N, 3, 224, 224) normalised tensors. Median of several runs, printed side by side.

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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from alexnet.data.datasets import open_dataset
    from alexnet.data.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp) / "jpg", args.images)
        blobs = [p.read_bytes() for p in paths]  # both pipelines decode from memory: no disk cache effects
        prepare(Path(tmp) / "jpg", Path(tmp) / "prep", size=256, progress=False)
        prepared = open_dataset(Path(tmp) / "prep")
        run_baseline(blobs[:20]), run_ours(blobs[:20])  # warm up
        base, ours, prep = [], [], []
        for _ in range(args.runs):  # interleaved, so that load changes hit all alike
            base.append(run_baseline(blobs))
            ours.append(run_ours(blobs))
            prep.append(run_prepared(prepared))
    b, o, p = statistics.median(base), statistics.median(ours), statistics.median(prep)
    print(f"{args.images} JPEGs 500x375 q90, 1 thread, median of {args.runs} runs")
    print(f"(a) torchvision PIL baseline        {b:8.1f} images/s")
    print(f"(b) alexnet decode + geometry       {o:8.1f} images/s   {o / b:.2f}x")
    print(f"(c) alexnet prepared set + geometry {p:8.1f} images/s   {p / b:.2f}x")


if __name__ == "__main__":
    main()
