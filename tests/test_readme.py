"""Every command in README.md runs, on tiny data, so the README cannot rot.

The commands are extracted from the README's ``sh`` blocks and run in order in one workspace holding what they
name: ``photo.jpg``, ``photos/``, ``data/`` (two classes), ``bvlc_alexnet.npy`` (random weights in the bvlc layout)
and torchvision's weights file in a private torch hub cache (random weights, so nothing is downloaded). Two
substitutions keep it quick: every ``--epochs N`` becomes ``--epochs 1`` and torchrun starts 2 processes, not 8.
The README's Python block runs too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _commands() -> list[str]:
    return [line.strip() for block in _blocks("sh") for line in block.splitlines() if line.strip()]


COMMANDS = _commands()


def _quick(cmd: str) -> str:
    cmd = re.sub(r"--epochs \d+", "--epochs 1", cmd)
    return cmd.replace("--nproc_per_node 8", "--nproc_per_node 2")


def _image(path: Path, seed: int, size: tuple[int, int] = (80, 60)) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(base).resize(size, Image.BICUBIC).save(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("readme")
    _image(ws / "photo.jpg", 0)
    (ws / "photos").mkdir()
    for i in range(3):
        _image(ws / "photos" / f"p{i}.{'png' if i == 2 else 'jpg'}", 10 + i)
    for c, name in enumerate(("cats", "dogs")):
        (ws / "data" / name).mkdir(parents=True)
        for i in range(6):
            _image(ws / "data" / name / f"{i}.jpg", 100 * (c + 1) + i)
    # the tutorial's file: random alexnet2012 weights in the bvlc layout
    from alexnet import create_model
    from alexnet.weights import BVLC_PREPROCESSING, export_npy

    torch.manual_seed(0)
    export_npy(create_model("alexnet2012", lrn_k=1.0), ws / "bvlc_alexnet.npy", preprocessing=BVLC_PREPROCESSING)
    # torchvision's pretrained file, pre-placed in a private hub cache where a download would put it
    ckpt = ws / "torch_home" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), ckpt / "alexnet-owt-7be5be79.pth")
    env = dict(os.environ)
    env["TORCH_HOME"] = str(ws / "torch_home")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["TMPDIR"] = str(ws)  # torchrun's torchelastic_* log folders stay in the workspace, never in /tmp
    state: dict = {"ws": ws, "env": env, "server": None}
    yield state
    if state["server"] is not None:
        state["server"].terminate()
        state["server"].wait(timeout=10)


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("serve did not become healthy")


def test_readme_has_the_two_commands_first():
    first = _blocks("")[0]
    assert "make demo" in first and "make test" in first
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c[:60] for c in COMMANDS])
def test_readme_command_runs(cmd, workspace):
    ws, env = workspace["ws"], workspace["env"]
    argv = shlex.split(_quick(cmd))
    if argv[0] == "alexnet" and argv[1] == "serve":
        port = int(argv[argv.index("--port") + 1])
        proc = subprocess.Popen(argv, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        workspace["server"] = proc
        _wait_healthy(port, proc)
        return
    if argv[0] == "curl":
        assert workspace["server"] is not None, "the serve command comes before curl in the README"
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        out = subprocess.run(argv, cwd=ws, env=env, capture_output=True, text=True, timeout=60)
        workspace["server"].terminate()
        workspace["server"].wait(timeout=10)
        workspace["server"] = None
        assert out.returncode == 0, out.stderr
        assert '"predictions"' in out.stdout
        return
    assert argv[0] in ("alexnet", "torchrun"), f"README command of an unknown kind: {cmd}"
    if argv[0] == "torchrun":
        argv[1:1] = ["--master_port", str(29500 + os.getpid() % 1000)]
    out = subprocess.run(argv, cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr
    # a healthy run: none of the training diagnostics (docs/DIAGNOSTICS.md) speaks up
    assert not re.findall(
        r"^warning: (?:diverging|stuck|preprocessing|leakage|imbalance|overfitting):.*", out.stdout, re.M
    )


def test_readme_python_block_runs(workspace):
    code = _blocks("python")[0]
    ws = workspace["ws"]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ws, env=workspace["env"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (ws / "mine.safetensors").is_file()
    assert out.stdout.startswith("[ClassScore(index=") and out.stdout.count("ClassScore(") == 3
    assert "from alexnet" not in code and "import alexnet." not in code  # `import alexnet` alone


def test_readme_names_the_cpu_wheel_index():
    text = README.read_text(encoding="utf-8")
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "make test TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
