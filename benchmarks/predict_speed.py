"""Classify a folder of JPEGs end to end on CPU (decode, preprocess, model): our predict path vs the baseline.

Baseline = what a torchvision user writes: ``ImageFolder`` with the PIL transforms ``Resize(256)``,
``CenterCrop(224)``, ``ToTensor``, ``Normalize``, a ``DataLoader`` (batch B, one worker process per core) and
``torchvision.models.alexnet()`` fp32 eager, NCHW, under ``torch.inference_mode``.
Ours = `alexnet.predict.predict_files` as ``alexnet predict`` runs it: libjpeg-turbo decode and uint8 resize/crop in
threads, the next batch decoding while the model runs, normalisation batched, and ``precision="auto"`` (bf16
weights cast once + channels_last where the CPU computes bf16 natively) — and the same with ``precision="fp32"``,
the reference for top-1 agreement. Both models hold the SAME random weights: torchvision's state dict, loaded into
``alexnet_owt`` through a .pth file (`alexnet.load_model`).

Top-1 agreement is measured against our own fp32 result, per image, on more generated images: with the benchmark's
random weights (torchvision's init: near-uniform softmax, near ties everywhere) and with He-init random weights
(activations keep their scale, so the logits have margins); random weights are all this offline benchmark has.
Median of several interleaved runs after a warm-up pass. Peak memory: each path once more in a fresh process,
its peak resident set (VmHWM) and, for the baseline's DataLoader, the largest worker process's (ours decodes in
threads of the one process).

    python -m benchmarks predict [--images 256] [--runs 3] [--batch 32] [--agree-images 512]
    python -m benchmarks predict --process [--images 240] [--runs 5] [--serve] [--before CHECKOUT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from alexnet import create_model
from alexnet.predict import predict_files
from alexnet.runtime import resolve_precision
from alexnet.weights import load_model

from .model_speed import in_subprocess, machine, peak_rss_mib
from .pipeline import MEAN, STD, make_jpegs


def run_baseline(model: torch.nn.Module, folder: Path, batch: int, workers: int) -> tuple[float, list[int]]:
    from torchvision import datasets
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])
    ds = datasets.ImageFolder(str(folder), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers)
    top1: list[int] = []
    t = time.perf_counter()
    with torch.inference_mode():
        for x, _ in loader:
            top1 += model(x).argmax(1).tolist()
    return len(ds) / (time.perf_counter() - t), top1


def run_ours(model, pre, files: list[str], batch: int, precision: str) -> tuple[float, list[int]]:
    t = time.perf_counter()
    res = list(
        predict_files(
            model,
            pre,
            files,
            topk=1,
            batch_size=batch,
            device="cpu",
            expand=False,
            precision=resolve_precision(precision, torch.device("cpu")),
        )
    )
    dt = time.perf_counter() - t
    return len(files) / dt, [r.scores[0].index for r in res]


def peak_in_process(case: str, tmp: str, batch: int, workers: int) -> dict[str, float]:
    """Run ``case`` once over ``tmp``/jpg in THIS (fresh) process; its peak RSS and its children's, MiB."""
    import resource

    from alexnet.runtime import tune_cpu_allocator

    folder = Path(tmp) / "jpg"
    if case == "baseline":
        model = torchvision.models.alexnet().eval()
        model.load_state_dict(torch.load(Path(tmp) / "random.pth", weights_only=True))
        run_baseline(model, folder, batch, workers)
    else:
        tune_cpu_allocator()  # what the alexnet command does at start-up
        model, pre = load_model(str(Path(tmp) / "random.pth"), arch="alexnet_owt")
        run_ours(model, pre, sorted(str(p) for p in folder.rglob("*.jpg")), batch, case)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": peak_rss_mib(), "child": children}


def peak_memory(case: str, tmp: str, batch: int, workers: int) -> dict[str, float]:
    expr = f"peak_in_process({case!r}, {tmp!r}, {batch}, {workers})"
    return in_subprocess(expr, "benchmarks.predict_speed")


def agreement(a: list[int], b: list[int]) -> float:
    return 100.0 * sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def agreement_report(model, pre, files: list[str], batch: int) -> str:
    """Top-1 agreement of precision=auto with fp32 on ``files``, and how decided fp32's top-1 is there."""
    fp32 = list(predict_files(model, pre, files, topk=2, batch_size=batch, device="cpu", expand=False))
    low = run_ours(model, pre, files, batch, "auto")[1]  # the top-1 classes of precision auto
    top = [r.scores[0].index for r in fp32]
    margin = statistics.median(r.scores[0].prob - r.scores[1].prob for r in fp32)
    p1 = statistics.median(r.scores[0].prob for r in fp32)
    return (
        f"auto vs our fp32 {agreement(low, top):.2f}% of {len(files)}; fp32: "
        f"{len(set(top))} distinct classes, median top-1 prob {p1:.4f}, median top-1 - top-2 prob {margin:.2e}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks predict", description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32, help="images per forward pass (alexnet predict's default)")
    ap.add_argument("--agree-images", type=int, default=512, help="images for the agreement check")
    ap.add_argument(
        "--process",
        action="store_true",
        help="whole processes as a user times them (start-up and model load included; benchmarks/predict_process.py)",
    )
    ap.add_argument("--serve", action="store_true", help="with --process: alexnet serve's start to first answer")
    ap.add_argument("--code", default=None, help="with --process: run 'ours' from this checkout")
    ap.add_argument(
        "--before", default=None, help="with --process: also run this checkout (an earlier commit), alternating"
    )
    args = ap.parse_args(argv)
    if args.process:
        from .predict_process import main as process_main

        process_main(
            images=args.images if args.images != 256 else 240,
            runs=args.runs,
            serve=args.serve,
            code=args.code,
            before=args.before,
        )
        return
    cores = os.cpu_count() or 1
    auto = resolve_precision("auto", torch.device("cpu")).name
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jpg"
        make_jpegs(folder, args.images, seed=1)
        files = sorted(str(p) for p in folder.rglob("*.jpg"))  # ImageFolder's order: class folder, then name
        torch.manual_seed(0)
        base = torchvision.models.alexnet().eval()  # random weights, torchvision's init
        torch.save(base.state_dict(), Path(tmp) / "random.pth")
        ours, pre = load_model(str(Path(tmp) / "random.pth"), arch="alexnet_owt")
        # warm up (page cache, oneDNN primitives, thread pools)
        run_baseline(base, folder, args.batch, cores)
        run_ours(ours, pre, files[: 2 * args.batch], args.batch, "auto")
        b, o, f = [], [], []
        for _ in range(args.runs):  # interleaved, so that load changes hit all alike
            rb, top_base = run_baseline(base, folder, args.batch, cores)
            ro, top_auto = run_ours(ours, pre, files, args.batch, "auto")
            rf, top_fp32 = run_ours(ours, pre, files, args.batch, "fp32")
            b.append(rb), o.append(ro), f.append(rf)
        mb, mo, mf = statistics.median(b), statistics.median(o), statistics.median(f)
        print(f"# {machine()}, torchvision {torchvision.__version__}")
        print(f"# {args.images} JPEGs 500x375 q90, batch {args.batch}, median of {args.runs} runs; auto = {auto}")
        print(f"baseline ImageFolder+PIL+DataLoader({cores} workers), fp32 {mb:8.1f} img/s   1.00x")
        print(f"ours predict_files, precision=auto ({auto:4})      {mo:8.1f} img/s   {mo / mb:.2f}x")
        print(f"ours predict_files, precision=fp32              {mf:8.1f} img/s   {mf / mb:.2f}x")
        print(f"top-1 agreement in the timed runs: auto vs our fp32 {agreement(top_auto, top_fp32):.2f}%, "
              f"our fp32 vs baseline {agreement(top_fp32, top_base):.2f}%")  # fmt: skip
        for case in ("baseline", "auto", "fp32"):
            m = peak_memory(case, tmp, args.batch, cores)
            workers = f", largest worker {m['child']:.0f} MiB" if case == "baseline" else ""
            print(f"peak memory {case:8}: {m['self']:6.0f} MiB{workers}", flush=True)
        more = Path(tmp) / "agree"
        make_jpegs(more, args.agree_images, seed=2)
        files = sorted(str(p) for p in more.rglob("*.jpg"))
        print(f"agreement, torchvision's random init: {agreement_report(ours, pre, files, args.batch)}")
        torch.manual_seed(0)
        he = create_model("alexnet_owt", init="kaiming")  # He init keeps activations' scale: real margins
        print(f"agreement, He-init random weights:    {agreement_report(he, pre, files, args.batch)}")


if __name__ == "__main__":
    main()
