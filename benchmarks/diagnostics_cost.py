"""What the training diagnostics (issue 27, `alexnet.train.diagnostics`) cost, against the epoch they watch.

One ``alexnet.train.main`` run on a generated folder of 500x375 quality-90 JPEGs (``--classes`` class folders, a
``--val-split`` held out), every hook of the run's `Monitor` timed in place (perf_counter around each call): the
checks at the start (class counts and the content hash of every training and validation file), the first batch's
statistics, every step's hook (the loss window and the labels counted on the device) and each epoch's end (stuck,
overfitting, diagnostics.json). The epoch's own time is the training loop's, from metrics.csv, in the same run:
the checks' share of it is the figure (the issue's budget: under 2 %).

    python -m benchmarks diagnostics [--images 512] [--classes 8] [--epochs 2] [--batch 64] [--size 224]
        [--arch alexnet_owt] [--device cpu] [--precision auto] [--workers 2] [--init paper]
"""

from __future__ import annotations

import argparse
import csv
import functools
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from alexnet.train import TrainConfig
from alexnet.train import diagnostics as diag
from alexnet.train import main as train_main

from .finetune_cache import make_folder
from .model_speed import machine


def _timed(store: dict[str, list[float]], name: str, fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            store[name].append(time.perf_counter() - t0)

    return wrapper


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks diagnostics", description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--arch", default="alexnet_owt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--val-split", type=float, default=0.2)
    ap.add_argument("--init", default="paper", help="the paper's N(0, 0.01) (the recipe: lr 0.01 from scratch)")
    args = ap.parse_args(argv)
    print(f"# {machine()}; {args}")
    times: dict[str, list[float]] = defaultdict(list)
    for name in ("start", "first_batch", "step", "end_epoch", "save"):
        setattr(diag.Monitor, name, _timed(times, name, getattr(diag.Monitor, name)))
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "run"
        make_folder(data, args.images, args.classes)
        cfg = TrainConfig(
            data=str(data), out=str(out), arch=args.arch, input_size=args.size, epochs=args.epochs,
            batch_size=args.batch, val_split=args.val_split, workers=args.workers, device=args.device,
            precision=args.precision, progress="none", tensorboard=False, seed=0, init=args.init,
        )  # fmt: skip
        t0 = time.perf_counter()
        train_main(cfg)
        wall = time.perf_counter() - t0
        with open(out / "metrics.csv", newline="") as f:
            epochs = [float(r["seconds"]) for r in csv.DictReader(f)]
    epoch = sum(epochs) / len(epochs)
    per_epoch = (sum(times["step"]) + sum(times["first_batch"]) + sum(times["end_epoch"])) / len(epochs)
    start = sum(times["start"])
    steps = len(times["step"])
    print(f"run: {wall:.1f} s wall, {len(epochs)} epochs, training loop {epoch:.2f} s per epoch ({steps} steps)")
    print(f"start checks (class counts, content hashes of {args.images} files): {1e3 * start:.1f} ms once")
    print(f"first batch statistics: {1e3 * sum(times['first_batch']):.2f} ms once")
    print(f"step hook: {1e6 * sum(times['step']) / max(1, steps):.1f} us per step, {sum(times['step']):.4f} s in all")
    print(f"epoch end (stuck, overfitting, diagnostics.json): {1e3 * sum(times['end_epoch']) / len(epochs):.2f} ms")
    print(
        f"per epoch: {1e3 * per_epoch:.1f} ms = {100 * per_epoch / epoch:.3f} % of the epoch; with the start "
        f"checks charged to the first epoch: {100 * (per_epoch + start) / epoch:.3f} %"
    )


if __name__ == "__main__":
    main()
