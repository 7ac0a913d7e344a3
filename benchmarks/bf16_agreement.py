"""Top-1 agreement of bf16 inference (`alexnet predict --precision bf16`/`auto`) with our own fp32 result, on a
trained model and real images: random weights give near-tied softmaxes, where any rounding flips the top-1.

    python -m benchmarks agreement --weights runs/demo/best.safetensors [--data fashion-mnist] [--limit 10000]
"""

from __future__ import annotations

import argparse
import time

import alexnet
from alexnet.data.datasets import open_dataset
from alexnet.predict import classify
from alexnet.runtime import Precision, tune_cpu_allocator


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a trained model (any load_model source)")
    p.add_argument("--data", default="fashion-mnist", help="images to classify (any open_dataset source)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    tune_cpu_allocator()
    model, pre = alexnet.load_model(args.weights)
    ds = open_dataset(args.data, split=args.split)
    n = min(args.limit, len(ds))
    images, labels = zip(*(ds[i] for i in range(n)))
    t = time.perf_counter()
    fp32 = classify(model, pre, list(images), topk=1, precision=Precision("fp32"), batch_size=args.batch_size)
    t_fp32 = time.perf_counter() - t
    t = time.perf_counter()
    bf16 = classify(model, pre, list(images), topk=1, precision=Precision("bf16"), batch_size=args.batch_size)
    t_bf16 = time.perf_counter() - t
    agree = sum(a[0].index == b[0].index for a, b in zip(fp32, bf16)) / n
    acc32 = sum(a[0].index == y for a, y in zip(fp32, labels)) / n
    acc16 = sum(b[0].index == y for b, y in zip(bf16, labels)) / n
    print(f"{n} images: top-1 agreement bf16 vs fp32 {agree:.2%}; accuracy fp32 {acc32:.2%}, bf16 {acc16:.2%}")
    print(f"model time: fp32 {n / t_fp32:.0f} img/s, bf16 {n / t_bf16:.0f} img/s ({t_fp32 / t_bf16:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
