"""`alexnet serve`'s resident memory (VmRSS) before, during and after a burst of large requests, each within the
pixel budgets (the issue-24 item 15 measurement): the server gives freed memory back once a burst is over.

A server with small random weights (the decoded images, not the model, are what the burst costs) is started from
each checkout in turn; ``--clients`` threads each send ``--requests`` requests of ``--images`` PNGs of
``--side``x``--side`` pixels, then the server idles two seconds; then 4 clients send ``--small`` requests each of a
500x500 PNG (requests/s: what sharing one malloc arena costs). ``--before CHECKOUT`` measures an earlier checkout
(e.g. a ``git worktree`` of main) in the same run, side by side.

    python -m benchmarks serve_memory [--before CHECKOUT] [--clients 3] [--requests 3] [--images 3] [--side 4000]
                                      [--small 25]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]

MAKE_WEIGHTS = """
import sys, torch, alexnet
torch.manual_seed(0)
m = alexnet.create_model("alexnet_owt", num_classes=10, conv_channels=(16, 32, 48, 32, 32), fc_features=64,
                         input_size=64)
alexnet.save_model(m, alexnet.Preprocessing(input_size=64, resize_size=72), sys.argv[1])
"""


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def _png(side: int) -> bytes:
    from PIL import Image

    x, y = np.meshgrid(np.linspace(0, 255, side), np.linspace(0, 255, side))
    img = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    buf = io.BytesIO()  # a smooth picture: little is sent, side * side pixels are decoded
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _serve(code: Path, weights: Path, log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(code / "src")}
    cmd = [sys.executable, "-m", "alexnet", "serve", "--weights", str(weights), "--port", "0", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))  # noqa: SIM115
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read_text())
        if m:
            try:
                if httpx.get(f"{m.group(1)}/healthz", timeout=2).status_code == 200:
                    return proc, m.group(1)
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(log.read_text())


def measure(code: Path, weights: Path, image: bytes, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    import httpx

    proc, url = _serve(code, weights, tmp / f"log-{code.name}.txt")
    try:
        small = [("image", ("s.png", _png(300), "image/png"))]
        httpx.post(f"{url}/v1/predict", files=small, timeout=60)
        start, peak, codes = _rss_mb(proc.pid), 0.0, []

        def client() -> None:
            for _ in range(args.requests):
                files = [("image", (f"{i}.png", image, "image/png")) for i in range(args.images)]
                codes.append(httpx.post(f"{url}/v1/predict", files=files, timeout=300).status_code)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, _rss_mb(proc.pid))
            time.sleep(0.05)
        time.sleep(2.0)
        after = _rss_mb(proc.pid)
        photo = [("image", ("p.png", _png(500), "image/png"))]

        def small_client() -> None:
            for _ in range(args.small):
                httpx.post(f"{url}/v1/predict", files=photo, timeout=60)

        t0 = time.perf_counter()  # throughput of small requests from 4 clients: the cost of one malloc arena
        threads = [threading.Thread(target=small_client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = 4 * args.small / (time.perf_counter() - t0)
        return {
            "start": start,
            "peak": peak,
            "after": after,
            "ok": codes.count(200),
            "sent": len(codes),
            "rate": rate,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks serve_memory")
    p.add_argument("--before", type=Path, help="an earlier checkout to measure in the same run")
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--requests", type=int, default=3)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--side", type=int, default=4000)
    p.add_argument("--small", type=int, default=25, help="small requests per client after the burst (4 clients)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        weights = tmp / "w.safetensors"
        subprocess.run(
            [sys.executable, "-c", MAKE_WEIGHTS, str(weights)],
            check=True,
            env={**os.environ, "PYTHONPATH": str(HERE / "src")},
        )
        image = _png(args.side)
        runs = [("before", args.before)] if args.before else []
        for name, code in [*runs, ("this checkout", HERE)]:
            r = measure(code, weights, image, args, tmp)
            print(
                f"{name:>14}: VmRSS {r['start']:.0f} MB at start, {r['peak']:.0f} MB peak during the burst, "
                f"{r['after']:.0f} MB 2 s after it ({r['ok']}/{r['sent']} requests answered); then "
                f"{r['rate']:.1f} small requests/s"
            )
