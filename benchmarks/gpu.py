"""GPU benchmark: every figure of the speed issue in one run of under 5 minutes on one NVIDIA H200.

    bash benchmarks/gpu.sh            # or: PYTHONPATH=src python3 -m benchmarks.gpu
    PYTHONPATH=src python3 -m benchmarks.gpu --smoke --device cpu   # a seconds-long dry run of the logic

Sections (each prints ours, the baseline where there is one, and the ratio; median of several timed runs):
1. training img/s on synthetic data: torchvision fp32 eager (baseline) vs ours (bf16 autocast, channels_last,
   torch.compile, large batch);
2. inference img/s: the same baseline vs ours (bf16 weights, channels_last, torch.compile);
3. GPU JPEG decode img/s: ``torchvision.io.decode_jpeg(device="cuda")`` on batches of 500x375 JPEGs;
4. end-to-end training img/s from JPEG files (decoded by the workers, and decoded on the device as
   ``--decode-on-device`` does), 16 loader workers, and from a prepared set (``alexnet prepare``), read by 16
   threads (`alexnet.data.prepared_loader`), its crops cut on the GPU as ``alexnet train`` does there, and, for
   comparison, cut in the threads (eager bf16 model, the loader and batch transform ``alexnet train`` uses:
   workers kept from pass to pass, as from epoch to epoch in training; 8,192 images at batch 256: a warm-up pass,
   one pass that only loads, two that train). The loader-only figure tells the loader's limit apart from the
   training step's.
Figures are also written as JSON to ``$OUT/gpu.json`` when OUT is set, after each figure.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

import alexnet

RESULTS: dict[str, object] = {}


def log(key: str, text: str, value: object) -> None:
    """Print a figure and rewrite $OUT/gpu.json with every figure so far (a run cut short keeps what it made)."""
    RESULTS[key] = value
    print(text, flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu.json").write_text(json.dumps(RESULTS, indent=2))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_rate(step, items: int, device: torch.device, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    return items / statistics.median(times)


def train_step(
    model, device, batch, *, amp: torch.dtype | None, channels_last: bool, fused: bool = False, size: int = 224
):
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    extra = {"fused": True} if fused else {}  # ours: as alexnet.train builds its optimizer
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **extra)
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext

    def step() -> None:
        with ctx():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_step(model, device, batch, *, dtype: torch.dtype, channels_last: bool, size: int = 224):
    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step


def ours_model(device: torch.device, compile_: bool, dtype: torch.dtype | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    m = alexnet.create_model("alexnet_owt").to(device, memory_format=torch.channels_last)
    if dtype is not None:
        m = m.to(dtype)
    return torch.compile(m) if compile_ else m


def _write_jpeg(job: tuple[Path, np.ndarray]) -> None:
    path, small = job
    Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(path, quality=90)


def make_jpegs(folder: Path, n: int, classes: int = 10, workers: int = 1) -> None:
    """``n`` 500x375 quality-90 JPEGs in ``classes`` folders, written by ``workers`` processes."""
    rng = np.random.default_rng(0)
    # smooth random images compress like photos rather than like noise
    base = rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8)
    for c in range(classes):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"c{i % classes}" / f"{i}.jpg", base[i]) for i in range(n)]
    if workers <= 1:
        for job in jobs:
            _write_jpeg(job)
        return
    from multiprocessing import get_context

    with get_context("fork").Pool(workers) as pool:
        pool.map(_write_jpeg, jobs, chunksize=64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script itself (any device)")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--skip", default="", help="comma-separated sections to skip: train,infer,decode,e2e")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    smoke = args.smoke
    runs, warm = (2, 1) if smoke else (10, 5)
    compile_ = not smoke and device.type == "cuda"
    low = torch.bfloat16
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, torchvision {torchvision.__version__}")
    else:
        print(f"# {device}, torch {torch.__version__} (smoke run: figures mean nothing)")

    if "train" not in skip:
        b_base, b_ours = (4, 8) if smoke else (256, 1024)
        base = torchvision.models.alexnet().to(device).train()
        r_base = median_rate(
            train_step(base, device, b_base, amp=None, channels_last=False), b_base, device, runs, warm
        )
        del base
        ours = ours_model(device, compile_).train()
        step = train_step(ours, device, b_ours, amp=low, channels_last=True, fused=device.type in ("cpu", "cuda"))
        r_ours = median_rate(step, b_ours, device, runs, warm)
        del ours
        log(
            "train_img_s",
            f"train     baseline fp32 eager b{b_base}: {r_base:10.0f} img/s   ours bf16+cl+compile+fused b{b_ours}: "
            f"{r_ours:10.0f} img/s   ratio {r_ours / r_base:.2f}x",
            {"baseline": r_base, "ours": r_ours},
        )

    if "infer" not in skip:
        b = 8 if smoke else 2048
        base = torchvision.models.alexnet().to(device).eval()
        r_base = median_rate(
            infer_step(base, device, b, dtype=torch.float32, channels_last=False), b, device, runs, warm
        )
        del base
        ours = ours_model(device, compile_, dtype=low).eval()
        r_ours = median_rate(infer_step(ours, device, b, dtype=low, channels_last=True), b, device, runs, warm)
        del ours
        log(
            "infer_img_s",
            f"inference baseline fp32 eager b{b}: {r_base:10.0f} img/s   ours bf16+cl+compile b{b}: "
            f"{r_ours:10.0f} img/s   ratio {r_ours / r_base:.2f}x",
            {"baseline": r_base, "ours": r_ours},
        )

    tmp = Path(tempfile.mkdtemp(prefix="alexnet-gpu-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the JPEGs and prepared set are scratch, never kept
    n_img = 64 if smoke else 8192
    make_jpegs(tmp / "jpegs", n_img, workers=1 if smoke else args.workers)
    files = sorted((tmp / "jpegs").rglob("*.jpg"))

    if "decode" not in skip:
        datas = [torchvision.io.read_file(str(f)) for f in files]
        b = 16 if smoke else 256
        chunks = [datas[i : i + b] for i in range(0, len(datas) - b + 1, b)]

        def decode_all() -> None:
            for c in chunks:
                torchvision.io.decode_jpeg(c, device=device)

        r = median_rate(decode_all, len(chunks) * b, device, max(2, runs // 3), 1)
        log("decode_img_s", f"decode    torchvision.io.decode_jpeg on {device}, batch {b}: {r:10.0f} img/s", r)

    if "e2e" not in skip:
        from alexnet.data.datasets import make_loader, open_dataset
        from alexnet.data.device_decode import materialize

        pre = alexnet.Preprocessing(input_size=224, resize_size=256)
        bt = pre.batch_transform(True, lighting=0.1).to(device)
        b = 8 if smoke else 256
        workers = 0 if smoke else args.workers
        model = ours_model(device, False).train()  # eager: the loader is what this measures
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **fused)

        def run_epoch(ds, crop_device: torch.device | None = None) -> tuple[float, float, float]:
            """(loader-only img/s, training img/s, training process CPU ms per batch while only loading) over one
            data set and one loader: pass 1 starts the workers and warms up cuDNN and the page cache (training),
            pass 2 only loads (decoding on the device and the batch transform included), passes 3-4 train. The
            workers are kept from pass to pass, as ``alexnet train`` keeps them from epoch to epoch. The CPU time
            counts the training process's threads (reader threads included), not worker processes."""
            loader = make_loader(
                ds, batch_size=b, shuffle=True, workers=workers, drop_last=True, crop_device=crop_device
            )
            rates: list[float] = []
            seen, t0, c0, cpu = 0, time.perf_counter(), time.process_time(), 0.0
            for k in range(4):
                if k in (1, 2):
                    sync(device)
                    t0, c0, seen = time.perf_counter(), time.process_time(), 0
                train = k != 1
                for x, y, *_ in loader:
                    x, y, _ = materialize(x, y, device)  # encoded (decode_on_device): decoded; CropBatch: cut
                    x = bt(x.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
                    y = y.to(device, non_blocking=True)
                    if train:
                        with torch.autocast(device.type, dtype=low):
                            loss = torch.nn.functional.cross_entropy(model(x), y)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                    seen += len(y)
                if k == 1:
                    sync(device)
                    rates.append(seen / (time.perf_counter() - t0))
                    cpu = (time.process_time() - c0) / max(1, seen // b) * 1e3
            sync(device)
            rates.append(seen / (time.perf_counter() - t0))
            return rates[0], rates[1], cpu

        def report(key: str, what: str, rates: tuple[float, float, float]) -> None:
            log(
                f"loader_{key}_img_s",
                f"loader    {what}, {workers} workers, b{b}: {rates[0]:10.0f} img/s   (training process CPU "
                f"{rates[2]:.1f} ms/batch)",
                rates[0],
            )
            RESULTS[f"loader_{key}_cpu_ms_per_batch"] = rates[2]
            log(f"e2e_{key}_img_s", f"e2e train {what}, {workers} workers, b{b}: {rates[1]:10.0f} img/s", rates[1])

        ds = open_dataset(str(tmp / "jpegs"), transform=pre.geometry(True))
        report("jpeg", "from JPEG files", run_epoch(ds))
        ds.encoded = True  # alexnet train --decode-on-device: workers read files, the device decodes and crops
        report("jpeg_device_decode", f"from JPEG files decoded on {device.type}", run_epoch(ds))
        from alexnet.data.prepare import prepare

        prepare(str(tmp / "jpegs"), str(tmp / "prepared"), workers=workers, progress=False)
        ds = open_dataset(str(tmp / "prepared"), transform=pre.geometry(True))
        # as alexnet train reads a prepared set on a GPU: 16 reader threads, crops cut on the device
        report("prepared", "from a prepared set (threads, crops on the device)", run_epoch(ds, device))
        # the same set through the CPU crop in the reader threads (what train does on a CPU)
        report("prepared_cpu_crop", "from a prepared set (threads, crops in the threads)", run_epoch(ds))

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
