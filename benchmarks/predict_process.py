"""`alexnet predict` as a user times it: whole processes, from the shell prompt to the answer (interpreter
start-up, imports, reading the weights, decoding, the model), against the script a torchvision user writes.

Baseline script: ``ImageFolder`` (a folder) or ``PIL.Image.open`` (one photo) with torchvision's PIL transforms
``Resize(256)``, ``CenterCrop(224)``, ``ToTensor``, ``Normalize``, a ``DataLoader`` with one worker process per core
(a folder), ``torchvision.models.alexnet()`` fp32 loading the same ``tv.pth``, top-5 printed.
Ours: ``python -m alexnet predict --weights tv.pth IMAGES --json`` at its defaults (precision auto).
Both read the SAME random torchvision weights (tv.pth). Each case runs in a fresh process, alternating baseline
and ours, after one warm-up of each (page cache); the median wall time and the peak resident set of the largest
process (the command itself or a DataLoader worker) are reported.

``alexnet serve``: from the command to the first answered request (start, import, weights, the first forward).

``--before CHECKOUT`` runs a second ``ours`` from that checkout (an earlier commit, e.g. a ``git worktree``) in the
same rounds, so that before and after are measured side by side under the same load; ``--code CHECKOUT`` runs
``ours`` itself from another checkout.

    python -m benchmarks predict --process [--images 240] [--runs 5] [--serve] [--code CHECKOUT] [--before CHECKOUT]
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASELINE_FOLDER = """
import sys, torch, torchvision
from torchvision import datasets, transforms as T
tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
ds = datasets.ImageFolder(sys.argv[1], transform=tf)
loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=int(sys.argv[3]))
model = torchvision.models.alexnet()
model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
model.eval()
with torch.inference_mode():
    for x, _ in loader:
        p, i = model(x).softmax(1).topk(5)
        print(i.tolist())
"""

BASELINE_PHOTO = """
import sys, torch, torchvision
from PIL import Image
from torchvision import transforms as T
tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
model = torchvision.models.alexnet()
model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
model.eval()
x = tf(Image.open(sys.argv[1]).convert("RGB"))[None]
with torch.inference_mode():
    p, i = model(x).softmax(1).topk(5)
print(i.tolist(), p.tolist())
"""

# Runs a command, then prints its wall time and the peak RSS of the largest process it waited for (KiB).
LAUNCHER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
    "dt = time.perf_counter() - t\n"
    "if r.returncode: sys.exit(r.stderr.decode()[-2000:])\n"
    "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak MiB of the largest process) of ``cmd`` in a fresh process."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True, env=env, check=True)
    seconds, kib = out.stdout.split()
    return float(seconds), int(kib) / 1024


def compare(cases: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> dict[str, dict[str, Any]]:
    """Median wall time and peak memory per case (a command and its environment): a warm-up each, then ``runs``
    rounds alternating the cases."""
    for cmd, env in cases.values():
        timed(cmd, env)
    seen: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(runs):
        for name, (cmd, env) in cases.items():
            seen[name].append(timed(cmd, env))
    return {
        k: {"seconds": statistics.median(s for s, _ in v), "peak_mib": max(m for _, m in v), "all": [s for s, _ in v]}
        for k, v in seen.items()
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_first_answer(weights: str, photo: str, env: dict[str, str], timeout: float = 120.0) -> float:
    """Seconds from starting ``alexnet serve`` to the first answered POST /v1/predict of ``photo``."""
    import urllib.request

    port = free_port()
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "alexnet", "serve", "--weights", weights, "--port", str(port), "--log-level", "error"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body, boundary = _multipart(photo)
    try:
        while time.perf_counter() - t < timeout:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/predict",
                data=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    json.loads(r.read())
                    return time.perf_counter() - t
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("alexnet serve exited before answering") from None
                time.sleep(0.02)
        raise RuntimeError("alexnet serve did not answer in time")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _multipart(path: str) -> tuple[bytes, str]:
    boundary = "alexnetbenchmarkboundary"
    data = Path(path).read_bytes()
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{Path(path).name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


def _env(code: str | None) -> dict[str, str]:
    """The environment of a run of ``ours``: this checkout's, or ``code``'s sources first on the path."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if code is not None:
        env["PYTHONPATH"] = str(Path(code).resolve() / "src")
    return env


def _report(label: str, r: dict[str, dict[str, Any]]) -> None:
    b = r["baseline"]
    parts = [f"baseline {b['seconds']:.2f} s ({b['peak_mib']:.0f} MiB)"]
    for name in ("before", "ours"):
        if name in r:
            o = r[name]
            parts.append(f"{name} {o['seconds']:.2f} s ({o['peak_mib']:.0f} MiB, {o['seconds'] / b['seconds']:.2f} of "
                         f"the baseline's time, {b['seconds'] / o['seconds']:.2f}x)")  # fmt: skip
    print(f"{label}: " + "; ".join(parts), flush=True)
    print("  runs: " + "; ".join(f"{k} {[round(s, 2) for s in v['all']]}" for k, v in r.items()))


def main(
    images: int = 240, runs: int = 5, serve: bool = False, code: str | None = None, before: str | None = None
) -> None:
    import torch
    import torchvision

    from .model_speed import machine
    from .pipeline import make_jpegs

    cores = os.cpu_count() or 1
    env, env_before = _env(code), _env(before) if before is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "img"
        make_jpegs(folder, images, seed=1)
        photo = str(next(iter(sorted(folder.rglob("*.jpg")))))
        torch.manual_seed(0)
        weights = str(Path(tmp) / "tv.pth")
        torch.save(torchvision.models.alexnet().state_dict(), weights)
        (Path(tmp) / "b_folder.py").write_text(BASELINE_FOLDER)
        (Path(tmp) / "b_photo.py").write_text(BASELINE_PHOTO)
        ours = [sys.executable, "-m", "alexnet", "predict", "--weights", weights, "--json"]
        print(f"# {machine()}, torchvision {torchvision.__version__}; whole processes, median of {runs} runs")
        for label, target, script, extra in (
            (f"{images} JPEGs (500x375 q90)", str(folder), "b_folder.py", [str(cores)]),
            ("one photo", photo, "b_photo.py", []),
        ):
            cases = {"baseline": ([sys.executable, str(Path(tmp) / script), target, weights, *extra], env)}
            if env_before is not None:
                cases["before"] = ([*ours, target], env_before)
            cases["ours"] = ([*ours, target], env)
            _report(label, compare(cases, runs))
        if serve:
            envs = {"before": env_before, "ours": env} if env_before is not None else {"ours": env}
            firsts: dict[str, list[float]] = {k: [] for k in envs}
            for _ in range(max(1, runs)):
                for k, e in envs.items():
                    firsts[k].append(serve_first_answer(weights, photo, e))
            for k, v in firsts.items():
                print(f"alexnet serve ({k}), start to first answer: median {statistics.median(v):.2f} s "
                      f"(runs {[round(s, 2) for s in v]})")  # fmt: skip
            if env_before is not None:
                ratio = statistics.median(firsts["ours"]) / statistics.median(firsts["before"])
                print(f"alexnet serve: ours takes {ratio:.2f} of before's time")
