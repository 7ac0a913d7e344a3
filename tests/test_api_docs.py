"""Every example of docs/API.md runs, in order, each in a fresh interpreter, in a folder holding what they name:
``photo.jpg``, ``data/`` (two classes of three JPEGs) and torchvision's weights file (random weights) in a private
torch hub cache, so nothing is downloaded. ``path/to/alexnet`` becomes this checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "API.md"
BLOCKS = re.findall(r"```python\n(.*?)```", API_MD.read_text(encoding="utf-8"), flags=re.S)


def _image(path: Path, seed: int, size: tuple[int, int] = (80, 60)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC).save(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("api_docs")
    _image(ws / "photo.jpg", 0, (120, 90))
    for c, name in enumerate(("cats", "dogs")):
        (ws / "data" / name).mkdir(parents=True)
        for i in range(3):
            _image(ws / "data" / name / f"{i}.jpg", 10 * (c + 1) + i)
    ckpt = ws / "torch_home" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), ckpt / "alexnet-owt-7be5be79.pth")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["TORCH_HOME"] = str(ws / "torch_home")
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return ws, env


def test_the_page_has_its_examples():
    assert len(BLOCKS) >= 8
    assert all("import" in b for b in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_api_md_example_runs(index, workspace):
    ws, env = workspace
    code = BLOCKS[index].replace('"path/to/alexnet"', repr(str(ROOT)))
    out = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"docs/API.md example {index + 1}:\n{code}\n{out.stderr[-3000:]}"
    if "except alexnet.ImageInputError" in code:  # the refusals print their sentence
        assert "must lie in [0, 1]" in out.stdout or "is already normalised" in out.stdout, out.stdout
