"""Fine-tuning with frozen convolutions: through the feature cache vs without, same data, same seed.

``alexnet.train.main`` on a generated folder of 500x375 quality-90 JPEGs (``--classes`` class folders), starting
from random torchvision weights (``torchvision.models.alexnet()``'s state dict loaded into ``alexnet_owt`` and
saved with `alexnet.save_model`); fc8 is resized to the folder's classes and re-initialised. Three cases: training
fc6-fc8, training fc8 only, and the tutorial's fc7+fc8 on the paper's layout (random ``alexnet2012`` weights,
227x227; dropout follows fc6's ReLU, so the cache holds fc6's output). Each runs ``--epochs`` epochs plain (every
step decodes, crops and runs the frozen layers) and with ``cache_features=True`` (the frozen front computed once,
the rest trained from it). Both paths see the same centre crops (the cache cannot hold random crops), the same data
order and the same dropout masks, so their final weights agree up to float rounding (printed); ``--augment`` gives
the plain path random crops and flips instead (the default of a run without the cache; about the same cost,
different weights).
Reported: seconds per epoch (the training loop, from metrics.csv), the cache's one-off build time, the whole run's
wall time, and the ratios. Median of ``--runs`` runs.

    python -m benchmarks finetune [--images 1024] [--classes 10] [--epochs 2] [--runs 3] [--batch 128] [--augment]
        [--precision fp32|bf16|auto] [--channels-last]
    python -m benchmarks finetune --step-only [--batch 128] [--precision fp32|bf16]   # the cached step alone
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file

import alexnet
from alexnet.train import TrainConfig
from alexnet.train import main as train_main
from alexnet.weights import default_preprocessing

from .model_speed import machine
from .pipeline import make_jpegs


def make_folder(folder: Path, n: int, classes: int) -> None:
    paths = make_jpegs(folder / "tmp", n, seed=3)
    for i, p in enumerate(paths):  # spread over ``classes`` folders (make_jpegs makes two)
        d = folder / f"class{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        p.rename(d / p.name)
    for d in sorted((folder / "tmp").iterdir()):
        d.rmdir()
    (folder / "tmp").rmdir()


def run(data: Path, weights: Path, out: Path, layers: list[str], cache: bool, args) -> dict[str, float]:
    cfg = TrainConfig(
        data=str(data), out=str(out), weights=str(weights), train_layers=layers, cache_features=cache,
        epochs=args.epochs, batch_size=args.batch, val_split=0.0, workers=args.workers, precision=args.precision,
        schedule="step", progress="none", tensorboard=False, seed=0, augment=args.augment,
        channels_last=args.channels_last,
    )  # fmt: skip
    t = time.perf_counter()
    train_main(cfg)
    wall = time.perf_counter() - t
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epoch = statistics.median(float(r["seconds"]) for r in rows)
    return {"epoch": epoch, "wall": wall, "rest": wall - sum(float(r["seconds"]) for r in rows)}


def cached_step(batch: int, precision: str, runs: int = 10) -> None:
    """The cached fc6-fc8 step alone (``alexnet_owt``'s classifier on random 9216-d features, fused SGD as
    ``alexnet.train`` builds it): median ms per step and per image, and where the time goes (torch.profiler, by
    operator: the matmuls, autocast's casts, the update, the rest)."""
    import torch.nn.functional as F
    from torch.profiler import profile

    from alexnet.runtime import tune_cpu_allocator
    from alexnet.train.setup import CachedClassifier

    tune_cpu_allocator()  # as alexnet train does
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet_owt", num_classes=10)
    for name, prm in model.named_parameters():
        prm.requires_grad = name.startswith("classifier")
    net = CachedClassifier(model, 0).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, fused=True)
    x, y = torch.randn(batch, 9216).relu(), torch.randint(0, 10, (batch,))
    bf16 = precision != "fp32"

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    ms = statistics.median(times) * 1e3
    with profile() as prof:
        for _ in range(5):
            step()
    groups = {"matmuls": ("aten::mm", "aten::addmm"), "casts": ("aten::copy_",), "SGD update": ("aten::_fused_sgd_",)}
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    shares = {g: sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in ops) for g, ops in groups.items()}
    parts = ", ".join(f"{g} {v / total * ms:.1f} ms" for g, v in shares.items())
    rest = ms * (1 - sum(shares.values()) / total)
    print(f"cached fc6-fc8 step, batch {batch}, {precision}: {ms:.1f} ms ({ms / batch:.3f} ms per image): {parts}, "
          f"other {rest:.1f} ms")  # fmt: skip


def max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks finetune", description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128, help="alexnet train's default (the paper's)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="loader worker processes")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    ap.add_argument("--augment", action="store_true", help="random crops and flips on the plain path")
    ap.add_argument("--channels-last", action="store_true", help="NHWC convolutions (the plain path's)")
    ap.add_argument("--step-only", action="store_true", help="time the cached fc6-fc8 step alone, with a breakdown")
    args = ap.parse_args(argv)
    print(f"# {machine()}, torchvision {torchvision.__version__}")
    if args.step_only:
        cached_step(args.batch, args.precision)
        return
    print(
        f"# {args.images} JPEGs 500x375 q90 in {args.classes} classes, {args.epochs} epochs, batch {args.batch}, "
        f"{args.workers} workers, precision {args.precision}{', channels_last' if args.channels_last else ''}, "
        f"plain path "
        f"{'augmented' if args.augment else 'centre crops'}, median of {args.runs} runs",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_folder(tmp / "data", args.images, args.classes)
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet().state_dict(), tmp / "random.pth")
        model, pre = alexnet.load_model(str(tmp / "random.pth"), arch="alexnet_owt")
        weights = alexnet.save_model(model, pre, tmp / "random.safetensors")
        torch.manual_seed(0)
        paper = alexnet.create_model("alexnet2012")  # the bvlc/tutorial layout: dropout after fc6's ReLU
        paper_weights = alexnet.save_model(paper, default_preprocessing(paper.config), tmp / "paper.safetensors")
        cases = (
            ("fc6-fc8", weights, ["fc6", "fc7", "fc8"]),
            ("fc8 only", weights, ["fc8"]),
            ("fc7-fc8 (paper layout)", paper_weights, ["fc7", "fc8"]),
        )
        for name, w, layers in cases:
            res: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for r in range(args.runs):  # interleaved: plain, cached, plain, cached, ...
                for cache in (False, True):
                    res[cache].append(run(tmp / "data", w, tmp / f"{name[:3]}-{cache}-{r}", layers, cache, args))
            diff = max_diff(tmp / f"{name[:3]}-False-0", tmp / f"{name[:3]}-True-0")
            med = {c: {k: statistics.median(x[k] for x in v) for k in v[0]} for c, v in res.items()}
            p, c = med[False], med[True]
            print(
                f"{name:<22} plain {p['epoch']:7.2f} s/epoch   cached {c['epoch']:7.2f} s/epoch   "
                f"ratio {p['epoch'] / c['epoch']:5.2f}x   | cache build + setup {c['rest']:6.2f} s (plain setup "
                f"{p['rest']:.2f} s)   whole run {p['wall']:.1f} s vs {c['wall']:.1f} s ({p['wall'] / c['wall']:.2f}x)"
                f"   max |w_plain - w_cached| {diff:.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
