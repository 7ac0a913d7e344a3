"""Loading a prepared set: DataLoader worker processes (the per-sample path) against reader threads.

A prepared set (``alexnet prepare``, 256x256 uint8 shards) is read as ``alexnet train`` reads it, in batches of 256
with the paper's training geometry (a random 224 patch of the stored square, mirrored half the time):
(a) DataLoader worker processes, each building whole batches per sample (the data set's ``__getitem__``, the
    geometry transform, stacking) and sending them to the training process through shared memory: what
    `make_loader` did for prepared sets before `alexnet.data.prepared_loader`, and what a torchvision user's
    DataLoader does;
(b) `PreparedLoader` threads, crops cut in the threads (``alexnet train`` on a CPU);
(c) `PreparedLoader` threads reading whole rows into the batch buffer, the crops left to the GPU (``alexnet train``
    on a GPU; the GPU's gather is not part of this figure).
The consumer touches every 4 KiB page of each batch, as the copy to a GPU would. Every case runs in a fresh
process with the allocator setting of ``alexnet train``, the cases alternating; images/s of a pass over the set
after a warm-up pass, median over passes and runs; beside it the CPU time the training process spends per batch
(its own threads included, worker processes not: for (a) that is the cost of receiving batches). Nothing here
trains.

    python -m benchmarks loader [--images 2048] [--batch 256] [--workers N] [--runs 3] [--passes 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from .model_speed import in_subprocess, machine

CASES = {
    "processes": "(a) DataLoader, worker processes, per-sample crops",
    "threads": "(b) reader threads, crops in the threads",
    "rows": "(c) reader threads, whole rows (crops on the GPU)",
}


def measure(case: str, root: str, batch: int, workers: int, passes: int) -> list[float]:
    """images/s of ``passes`` timed passes (after one warm-up pass) of one case, in THIS process."""
    from alexnet.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    import alexnet
    from alexnet.data import prepared_loader
    from alexnet.data.datasets import make_loader, open_dataset

    pre = alexnet.Preprocessing(input_size=224, resize_size=256)
    ds = open_dataset(root, transform=pre.geometry(True))
    if case == "processes":
        prepared_loader.plan_for = lambda ds: None  # make_loader's DataLoader path
    crop_device = "cpu" if case == "rows" else None  # rows only: CropBatch.crop is not called
    loader = make_loader(ds, batch_size=batch, shuffle=True, workers=workers, drop_last=True, crop_device=crop_device)
    rates, cpu = [], []
    for k in range(passes + 1):
        t, c, n, steps = time.perf_counter(), time.process_time(), 0, 0
        for x, y, *_ in loader:
            x = x.images if case == "rows" else x
            x.view(-1)[::4096].sum()  # every page, as a copy to the GPU reads them
            n += len(y)
            steps += 1
        if k:
            rates.append(n / (time.perf_counter() - t))
            cpu.append((time.process_time() - c) / steps * 1e3)
    return [rates, cpu]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks loader", description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes or reader threads")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args(argv)
    from alexnet.data.prepare import prepare

    from .pipeline import make_jpegs

    print(f"# {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "jpg", args.images)
        prepare(Path(tmp) / "jpg", Path(tmp) / "prep", size=256, workers=args.workers, progress=False)
        root = str(Path(tmp) / "prep")
        rates: dict[str, list[float]] = {c: [] for c in CASES}
        cpu: dict[str, list[float]] = {c: [] for c in CASES}
        for _ in range(args.runs):  # alternating, so that load changes hit every case alike
            for c in CASES:
                r, t = in_subprocess(
                    f"measure({c!r}, {root!r}, {args.batch}, {args.workers}, {args.passes})", "benchmarks.loader"
                )
                rates[c] += r
                cpu[c] += t
    print(
        f"# {args.images} prepared 256x256 images, batch {args.batch}, {args.workers} workers/threads, random 224 "
        f"patches + mirror, median of {args.runs} runs x {args.passes} passes"
    )
    base = statistics.median(rates["processes"])
    for c, what in CASES.items():
        r = statistics.median(rates[c])
        print(
            f"{what:<52} {r:9.0f} images/s   {r / base:5.2f}x   (passes {min(rates[c]):.0f}-{max(rates[c]):.0f})   "
            f"training process CPU {statistics.median(cpu[c]):5.1f} ms/batch"
        )
    print("# training process CPU: its own threads (the readers of (b), (c)) included, worker processes not")


if __name__ == "__main__":
    main()
