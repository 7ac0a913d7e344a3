"""CPU training speed at the demo's shape: ours vs a torchvision user's eager fp32 loop, in one run.

Both train the same network, ``alexnet2012`` at 67x67 with adaptive pooling before fc6 and 10 classes (what
``alexnet demo`` trains on a CPU), on a synthetic batch (no data loading), with SGD, momentum 0.9 and weight decay
5e-4.

- baseline: what a torchvision user writes: the model in fp32, NCHW, PyTorch's own ``nn.LocalResponseNorm``, fc6
  applied to the 6x6 cells that adaptive pooling copies from conv5's 1x1 map,
  ``torch.optim.SGD`` (its default foreach update), ``zero_grad()``, ``loss.backward()``, ``opt.step()``, in a
  plain Python process (no allocator setting, torch's default threads).
- ours: the step ``alexnet train`` and ``alexnet demo`` run (`alexnet.train.loop`'s ``_step``) with what they set
  up: the precision ``auto`` resolves to (bf16 autocast on a CPU with AVX512-BF16/AMX), channels_last, the fused SGD
  update (`alexnet.train.setup.make_optimizer`), the CPU LRN and fc6 folded over the copied cells of
  `alexnet.models` and trained through their mean (`alexnet.train.fold`), the allocator and thread settings
  of the ``alexnet`` command (`alexnet.runtime`).

Each case runs in a fresh process (median seconds per step of ``--steps`` steps after 2 warm-up steps); a round runs
baseline then ours; the figure is the median over ``--runs`` rounds. ``--hog`` also runs every round with two
busy-loop processes beside it (one per core of a 2-core machine: ``--hog-procs``), and reports how much of its quiet
speed each case keeps (the issue's target: >= 45 % with two busy loops on 2 cores).

    python -m benchmarks train [--batch 128] [--runs 5] [--steps 6] [--hog] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from .model_speed import machine

SIZE = 67  # the demo's input side on a CPU
CLASSES = 10


def _model(baseline: bool) -> Any:
    import torch

    import alexnet

    torch.manual_seed(0)
    model = alexnet.create_model(
        "alexnet2012", num_classes=CLASSES, input_size=SIZE, adaptive_pool=True, init="kaiming"
    )
    if baseline:  # PyTorch's own LRN and fc6 over the 36 copied cells, as a torchvision user's model has
        for i, m in enumerate(model.features):
            if isinstance(m, torch.nn.LocalResponseNorm):
                model.features[i] = torch.nn.LocalResponseNorm(m.size, m.alpha, m.beta, m.k)
        model.forward = lambda x: model.classifier(model.forward_features(x))
    return model


def baseline_step(batch: int):
    """A torchvision user's eager fp32 training step."""
    import torch
    import torch.nn.functional as F

    model = _model(True).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, SIZE, SIZE)
    y = torch.randint(0, CLASSES, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def ours_step(batch: int):
    """``alexnet train``'s step, set up as `alexnet.train.main` sets it up for the demo."""
    import torch

    from alexnet.runtime import resolve_precision, tune_cpu_allocator
    from alexnet.train import TrainConfig
    from alexnet.train.fold import fc6_fold
    from alexnet.train.loop import EpochOptions, _step
    from alexnet.train.setup import make_optimizer, make_param_groups

    tune_cpu_allocator()
    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    model = _model(False).to(memory_format=torch.channels_last).train()
    groups = make_param_groups(model, [n for n, _ in model.named_layers().items()], set(), 0.01, 1.0)
    opt = make_optimizer(TrainConfig(lr=0.01), groups, device)
    o = EpochOptions(device=device, num_classes=CLASSES, autocast=lambda: precision.autocast(device),
                     channels_last=True)  # fmt: skip
    x = torch.randn(batch, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (batch,))
    flags = torch.zeros(2)
    fold = fc6_fold(model, opt, SIZE, device=device)
    if fold is not None:  # as `alexnet train` opens it for an epoch's steps (its open and close: once per epoch)
        fold.open()

    def step() -> None:
        _step(model, opt, x, y, o, flags, "benchmark")

    return step


def measure(case: str, batch: int, steps: int) -> dict[str, Any]:
    """Median seconds per step of ``case`` in THIS process, and the thread settings it ran with."""
    import torch

    step = (baseline_step if case == "baseline" else ours_step)(batch)
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {
        "seconds": statistics.median(times),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
    }


def _env(case: str) -> dict[str, str]:
    """The process environment of ``case``: ours gets what the ``alexnet`` command sets before torch starts."""
    env = dict(os.environ)
    if case == "ours":
        from alexnet.threads import openmp_environment

        env.update(openmp_environment(env))
    return env


def in_process(case: str, batch: int, steps: int) -> dict[str, Any]:
    code = (
        "import sys, json; sys.path.insert(0, '.'); from benchmarks.train_speed import measure; "
        f"print(json.dumps(measure({case!r}, {batch}, {steps})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env(case))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _busy() -> None:
    while True:
        pass


class Hogs:
    """``n`` busy-loop processes for the duration of a ``with`` block."""

    def __init__(self, n: int) -> None:
        self.n, self.procs = n, []

    def __enter__(self) -> Hogs:
        ctx = multiprocessing.get_context("spawn")
        self.procs = [ctx.Process(target=_busy, daemon=True) for _ in range(self.n)]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join()


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128, help="images per step (default: the demo's)")
    p.add_argument("--runs", type=int, default=5, help="rounds (baseline, ours) of fresh processes")
    p.add_argument("--steps", type=int, default=6, help="timed steps per process, after 2 warm-up steps")
    p.add_argument("--hog", action="store_true", help="also measure every round beside busy loops")
    p.add_argument("--hog-procs", type=int, default=2, help="busy-loop processes with --hog")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    print(f"# {machine()}; alexnet2012 at {SIZE}x{SIZE}, batch {args.batch}, median of {args.runs} rounds; "
          f"load average before: {_load()}", flush=True)  # fmt: skip
    settings = {"quiet": 0, **({"hog": args.hog_procs} if args.hog else {})}
    secs: dict[str, dict[str, list[float]]] = {s: {"baseline": [], "ours": []} for s in settings}
    info: dict[str, Any] = {}
    for r in range(args.runs):
        for setting, hogs in settings.items():
            with Hogs(hogs):
                for case in ("baseline", "ours"):
                    m = in_process(case, args.batch, args.steps)
                    secs[setting][case].append(m["seconds"])
                    info[case] = {k: m[k] for k in ("threads", "omp_wait_policy")}
            rates = ", ".join(f"{c} {args.batch / secs[setting][c][-1]:.1f} img/s" for c in ("baseline", "ours"))
            print(f"round {r + 1}, {setting}: {rates}", flush=True)
    results: dict[str, Any] = {"batch": args.batch, "threads": info}
    for setting in settings:
        rate = {c: args.batch / statistics.median(t) for c, t in secs[setting].items()}
        results[setting] = {**rate, "ratio": rate["ours"] / rate["baseline"]}
        print(f"{setting:<6} baseline {rate['baseline']:7.1f} img/s   ours {rate['ours']:7.1f} img/s   "
              f"ratio {rate['ours'] / rate['baseline']:.2f}x", flush=True)  # fmt: skip
    if args.hog:
        kept = {c: results["hog"][c] / results["quiet"][c] for c in ("baseline", "ours")}
        results["kept_under_hog"] = kept
        print(f"under {args.hog_procs} busy loops: baseline keeps {kept['baseline']:.0%} of its quiet speed, "
              f"ours {kept['ours']:.0%}", flush=True)  # fmt: skip
    print(f"threads: {json.dumps(info)}; load average after: {_load()}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
