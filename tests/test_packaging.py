"""Install as a user does it: the version defined once (``alexnet --version``), LICENSE and py.typed in the wheel,
an sdist that leaves the tests out (they need the clone's README, docs, benchmarks and helpers: `make test` runs
them there), mypy seeing the package's types from a user's script, and (slow) the wheel installed into a fresh
venv, where the command and the import work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import alexnet

ROOT = Path(__file__).resolve().parents[1]
# what a build reads; the copy keeps build/ and *.egg-info out of the checkout
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "src", "tests", "benchmarks", "docs")


def _copy_checkout(dest: Path) -> Path:
    dest.mkdir()
    for name in BUILD_INPUTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def _build(kind: str, tmp_path: Path) -> Path:
    """An sdist or a wheel of a copy of the checkout, built by setuptools (no network, no isolation)."""
    src = _copy_checkout(tmp_path / "checkout")
    out = tmp_path / "dist"
    code = f"import setuptools.build_meta as b; print(b.build_{kind}({str(out)!r}))"
    run = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out / run.stdout.strip().splitlines()[-1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_is_defined_once():
    meta = _pyproject()
    assert "version" not in meta["project"] and meta["project"]["dynamic"] == ["version"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "alexnet.__version__"}
    out = subprocess.run([sys.executable, "-m", "alexnet", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == f"alexnet {alexnet.__version__}\n"


def test_license_and_py_typed_are_in_the_checkout():
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert (ROOT / "src" / "alexnet" / "py.typed").is_file()
    meta = _pyproject()
    assert meta["project"]["license"] == "MIT" and meta["project"]["license-files"] == ["LICENSE"]


def test_the_sdist_holds_the_license_and_no_tests(tmp_path):
    sdist = _build("sdist", tmp_path)
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert "LICENSE" in names and "pyproject.toml" in names and "src/alexnet/py.typed" in names
    assert "src/alexnet/static/index.html" in names and "src/alexnet/imagenet_classes.json" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]  # no half test suite


def test_mypy_sees_the_public_types(tmp_path):
    """A user's script type-checks against the package's annotations (not ``Any``): a wrong use is reported."""
    pytest.importorskip("mypy")
    script = tmp_path / "user.py"
    script.write_text(
        "import torch\n\nimport alexnet\n\n"
        'model: alexnet.AlexNet = alexnet.create_model("alexnet_owt", num_classes=10, dropout=0.3)\n'
        "pre: alexnet.Preprocessing = alexnet.Preprocessing(input_size=224)\n"
        "x: torch.Tensor = pre(torch.zeros(3, 256, 256, dtype=torch.uint8))\n"
        "scores = alexnet.classify(model, [x], preprocessing=pre, topk=3)\n"
        "best: float = scores[0][0].prob\n"
        'feats: torch.Tensor = alexnet.features(model, "photo.jpg", "fc7")\n'
        "names: list[str] = alexnet.list_models() + alexnet.list_pretrained()\n"
        "version: str = alexnet.__version__\n"
        "wrong: int = scores[0][0].name\n"
    )
    env = {"MYPYPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache"), "user.py"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.stdout.splitlines() == [
        'user.py:13: error: Incompatible types in assignment (expression has type "str", variable has type "int")  '
        "[assignment]",
        "Found 1 error in 1 file (checked 1 source file)",
    ], out.stdout + out.stderr


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv(tmp_path):
    wheel = _build("wheel", tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert "alexnet/py.typed" in names and "alexnet/static/index.html" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert not any(n.startswith(("tests/", "hubconf")) for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True).strip())  # fmt: skip
    # install with this interpreter's pip into the new venv (no download: --no-deps), then let the venv see this
    # environment's torch after its own packages (a path line: the editable alexnet hook here is not read)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True, timeout=600,
    )  # fmt: skip
    (site / "zz_torch_from_the_test_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    code = (
        "import alexnet, sys\n"
        "print(alexnet.__file__)\n"
        "m = alexnet.create_model('alexnet_owt', num_classes=3, conv_channels=(8, 8, 8, 8, 8), fc_features=16)\n"
        "print(type(m).__name__, m.fc8.out_features, alexnet.__version__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed wheel, not a source tree
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(site)) and lines[1] == f"AlexNet 3 {alexnet.__version__}"
    (venv / "bin" / "alexnet").write_text(f"#!{py}\nfrom alexnet.cli import run\nrun()\n")  # pip --target writes none
    (venv / "bin" / "alexnet").chmod(0o755)
    cli = subprocess.run([venv / "bin" / "alexnet", "--version"], capture_output=True, text=True, timeout=300, env=env)
    assert cli.returncode == 0 and cli.stdout == f"alexnet {alexnet.__version__}\n", cli.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_takes_torch_from_pypi_unless_told_the_cpu_index(tmp_path):
    """`make test` / `make demo` work where only PyPI is reachable; TORCH_INDEX opts into PyPI-less CPU wheels."""

    def torch_line(*args: str) -> str:
        venv = tmp_path / "venv"
        cmd = ["make", "-n", "-C", str(ROOT), f"VENV={venv}", *args, str(venv / ".installed")]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return next(line for line in out.stdout.splitlines() if "torch==" in line)

    assert torch_line().split("install -q")[1].split() == ["torch==2.14.1", "torchvision==0.29.1"]
    cpu = torch_line("TORCH_INDEX=https://download.pytorch.org/whl/cpu").split("install -q")[1].split()
    assert cpu == ["--index-url", "https://download.pytorch.org/whl/cpu", "torch==2.14.1", "torchvision==0.29.1"]
    assert not (tmp_path / "venv").exists()  # -n: nothing ran
