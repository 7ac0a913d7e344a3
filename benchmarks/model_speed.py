"""Model speed on CPU (or GPU): one training step and inference, ours vs the torchvision baseline, same run.

Baseline = what a torchvision user writes: ``torchvision.models.alexnet()`` in fp32 eager mode, NCHW.
Ours = the same architecture (``alexnet_owt``) with the settings ``alexnet train`` / ``alexnet predict`` apply:
bf16 autocast and the fused SGD update (training) or bf16 weights cast once (inference), channels_last. Each
measurement is the median of several fresh processes (each the median of a few steps after warm-up); baseline and
ours alternate process by process so that load on the machine hits both. Ours also has the allocator setting every
``alexnet`` command applies at start-up (`alexnet.runtime.tune_cpu_allocator`). Peak memory is measured in a fresh
subprocess per case (VmHWM, the peak RSS, on CPU: ru_maxrss would inherit the parent's across exec; max allocated
on CUDA).

    python -m benchmarks.model_speed [--batch 64] [--runs 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
import torchvision

import alexnet


def machine() -> str:
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}"


def bf16_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        flags = f.read()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build(case: str, device: torch.device, train: bool) -> tuple[torch.nn.Module, torch.dtype | None, bool]:
    """(model, autocast dtype or None, channels_last) for ``case`` in {"baseline", "ours"}."""
    torch.manual_seed(0)
    if case == "baseline":
        return torchvision.models.alexnet().to(device), None, False
    model = alexnet.create_model("alexnet_owt").to(device, memory_format=torch.channels_last)
    low = torch.bfloat16 if bf16_ok(device) else (torch.float16 if device.type == "cuda" else None)
    if not train and low is not None:
        model = model.to(low)  # inference: weights cast once, no autocast overhead per op
    return model, low, True


def make_step(case: str, device: torch.device, batch: int, train: bool):
    model, low, cl = build(case, device, train)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    if train:
        model.train()
        fused = {"fused": True} if case == "ours" else {}  # as alexnet.train builds it
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **fused)
        amp = (lambda: torch.autocast(device.type, dtype=low)) if (low is not None) else contextlib.nullcontext

        def step() -> None:
            with amp():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    else:
        model.eval()
        xin = x.to(low) if (low is not None and case == "ours") else x

        def step() -> None:
            with torch.inference_mode():
                model(xin)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t


def measure(case: str, device: str, batch: int, train: bool, steps: int, warmup: int = 2) -> float:
    """Median seconds per step of ``case`` in THIS process (run by `in_subprocess`)."""
    if case == "ours":
        from alexnet.runtime import tune_cpu_allocator

        tune_cpu_allocator()  # what the alexnet command does at start-up
    dev = torch.device(device)
    step = make_step(case, dev, batch, train)
    for _ in range(warmup):
        step()
    return statistics.median(timed(step, dev) for _ in range(steps))


def in_subprocess(expr: str, module: str = "benchmarks.model_speed") -> Any:
    """The JSON value of ``expr`` evaluated in a fresh Python process that has imported ``module``'s public names
    (run from the repository root). Every benchmark measures each case in its own process this way."""
    code = f"import sys, json; sys.path.insert(0, '.'); from {module} import *; print(json.dumps({expr}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), MiB: ru_maxrss would inherit the parent's across exec."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def compare(device: torch.device, batch: int, train: bool, runs: int, steps: int = 4) -> dict[str, float]:
    """img/s of baseline and ours: ``runs`` rounds, each a fresh process per case (a user runs one model per
    process; two models alternating in one process would share, and thrash, one allocator), alternating
    baseline, ours, baseline, ours ... so that load on the machine hits both; median over rounds."""
    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    for _ in range(runs):
        for c in times:
            times[c].append(in_subprocess(f"measure({c!r}, {str(device)!r}, {batch}, {train}, {steps})"))
    return {c: batch / statistics.median(t) for c, t in times.items()}


def peak_memory(case: str, device: str, batch: int, train: bool) -> float:
    """Peak memory (MiB) of a few steps of ``case`` in a fresh process."""
    expr = (
        f"(measure({case!r}, {device!r}, {batch}, {train}, 2), "
        f"torch.cuda.max_memory_allocated() / 2**20 if torch.device({device!r}).type == 'cuda' else peak_rss_mib())[1]"
    )
    return in_subprocess(expr)


def latency(device: torch.device, runs: int) -> dict[str, float]:
    """Model-only batch-1 latency in ms (median over fresh processes, each the median of 16 calls)."""
    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    for _ in range(runs):
        for c in times:
            times[c].append(in_subprocess(f"measure({c!r}, {str(device)!r}, 1, False, 16, 3)"))
    return {c: 1000 * statistics.median(t) for c, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(f"# {machine()}, device {device}, batch {args.batch}, median of {args.runs} runs", flush=True)
    results: dict[str, dict[str, float]] = {}
    for name, train in (("train step", True), ("inference", False)):
        r = compare(device, args.batch, train, args.runs)
        results[name] = r
        print(
            f"{name:<12} baseline {r['baseline']:8.1f} img/s   ours {r['ours']:8.1f} img/s   "
            f"ratio {r['ours'] / r['baseline']:.2f}x",
            flush=True,
        )
    lat = latency(device, args.runs)
    results["latency_ms"] = lat
    print(
        f"{'batch-1':<12} baseline {lat['baseline']:8.2f} ms      ours {lat['ours']:8.2f} ms      "
        f"ratio {lat['baseline'] / lat['ours']:.2f}x",
        flush=True,
    )
    if not args.no_memory:
        for name, train in (("train step", True), ("inference", False)):
            mem = {c: peak_memory(c, args.device, args.batch, train) for c in ("baseline", "ours")}
            results[f"{name} peak MiB"] = mem
            print(f"{name:<12} peak memory baseline {mem['baseline']:.0f} MiB, ours {mem['ours']:.0f} MiB", flush=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
