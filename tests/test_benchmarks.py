"""The prepared GPU benchmark script must work when a GPU machine is lent: its logic is run here on the CPU at tiny
sizes (`--smoke`), every section included. The figures of a smoke run mean nothing and are not checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # an end-to-end run of the whole script: minutes on a busy 2-core machine
def test_gpu_benchmark_script_runs_every_section_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OUT": str(tmp_path), "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--smoke", "--device", "cpu"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    results = json.loads((tmp_path / "gpu.json").read_text())
    sources = ("jpeg", "jpeg_device_decode", "prepared", "prepared_cpu_crop")
    e2e = tuple(f"{k}_{src}_img_s" for k in ("e2e", "loader") for src in sources)
    cpu = tuple(f"loader_{src}_cpu_ms_per_batch" for src in sources)
    assert set(results) == {"train_img_s", "infer_img_s", "decode_img_s", *e2e, *cpu}
    assert all(results[k] > 0 for k in ("decode_img_s", *e2e))
    assert results["train_img_s"]["ours"] > 0 and results["infer_img_s"]["baseline"] > 0
    assert not list(tmp_path.glob("alexnet-gpu-bench-*")), "the script left its scratch folder behind"
