"""The package's layering (docs/ARCHITECTURE.md) holds: imports flow one way, lazy ones included; no cycles;
no file over 600 lines, no function over 100; private names stay in their module; building the parser imports
no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from _builders import HANG_S

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "alexnet"

# Bottom to top: a module imports only modules of its own layer or below (docs/ARCHITECTURE.md draws the same).
LAYERS = [
    ["errors", "options", "names", "limits", "schemas", "threads"],
    ["runtime", "progress", "cpu_ops", "models"],
    ["data"],
    ["preprocessing", "weights"],
    ["distributed", "rundir"],
    ["eval_metrics", "evaluate", "predict", "features", "api"],
    ["train", "plots", "report", "ablate_report", "ablate_stats"],
    [
        "demo",
        "serve",
        "serve_upload",
        "serve_batch",
        "serve_guard",
        "serve_api",
        "ablate",
        "ablate_variants",
        "ablate_data",
        "ablate_runs",
    ],
    ["cli", "__main__"],
]
# data/ knows nothing of models or weights (DESIGN.md): it sits below them and may not reach up.
FORBIDDEN = {"data": {"models", "weights", "preprocessing"}}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        out[name] = p
    return out


def _top(name: str) -> str:
    """``alexnet.data.decode`` -> ``data``: the unit a layer holds."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(name: str, path: Path) -> list[tuple[str, int, list[str]]]:
    """(target module, line, imported names) of every import in the file, at any depth (lazy ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, []) for a in node.names]
    return found


def _resolve(target: str, names: list[str], mods: dict[str, Path]) -> list[str]:
    """The package modules an import reaches: ``from .data import datasets`` reaches alexnet.data.datasets."""
    out = [target] if target in mods else []
    out += [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
    return out


def _edges() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        reach: set[str] = set()
        for target, _, names in _imports(name, path):
            reach.update(_resolve(target, names, mods))
        # the root package (its public API) and the module's own parents are not dependencies
        edges[name] = {t for t in reach if t not in ("alexnet", name) and not name.startswith(t + ".")}
    return edges


def test_every_module_has_a_layer():
    layered = {u for layer in LAYERS for u in layer}
    missing = sorted({_top(m) for m in _modules()} - layered - {""})
    assert not missing, f"modules without a layer in LAYERS and docs/ARCHITECTURE.md: {missing}"


def test_imports_flow_down_the_layers():
    rank = {u: i for i, layer in enumerate(LAYERS) for u in layer}
    bad = []
    for src, targets in _edges().items():
        for t in targets:
            a, b = _top(src), _top(t)
            if a and b and a != b and rank[b] > rank[a]:
                bad.append(f"{src} (layer {rank[a]}) imports {t} (layer {rank[b]})")
            if b in FORBIDDEN.get(a, ()):
                bad.append(f"{src} imports {t}: {a}/ must not know {b}")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    edges = _edges()
    cycles, done = [], set()

    def visit(v: str, path: list[str]) -> None:
        for w in sorted(edges.get(v, ())):
            if w in path:
                cycles.append(" -> ".join(path[path.index(w) :] + [w]))
            elif w not in done:
                visit(w, path + [w])
        done.add(v)

    for v in sorted(edges):
        if v not in done:
            visit(v, [v])
    assert not cycles, "\n".join(sorted(set(cycles)))


def test_sizes():
    too_big = []
    for p in _modules().values():
        text = p.read_text(encoding="utf-8")
        if text.count("\n") > 600:
            too_big.append(f"{p.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 100:
                    too_big.append(f"{p.relative_to(SRC)}:{node.lineno} {node.name}() {n} lines")
    assert not too_big, "\n".join(too_big)


def test_private_names_stay_home():
    mods = _modules()
    leaks = []
    for name, path in mods.items():
        for target, line, names in _imports(name, path):
            if not target.startswith("alexnet"):
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in mods:
                    leaks.append(f"{path.relative_to(SRC)}:{line} imports {target}.{n}")
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--topk", "0", "x.jpg"], ["train", "--help"]])
def test_the_parser_imports_no_torch(argv):
    code = (
        "import contextlib, io, sys\n"
        "from alexnet.cli import build_parser\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    try:\n        build_parser().parse_args({argv!r})\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'numpy', 'alexnet.train.run') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"building the parser imported {out.stdout.strip()}"


def test_predict_imports_neither_torchvision_nor_protobuf(tmp_path):
    """What `alexnet predict` and `alexnet serve` import is what they wait for at start-up (docs/BENCHMARKS.md):
    torchvision (training transforms) and protobuf (Caffe files) are not on the path."""
    import numpy as np
    import torch
    from PIL import Image

    import alexnet
    from alexnet.weights import TORCHVISION_PREPROCESSING, Preprocessing, save_model

    torch.manual_seed(0)
    model = alexnet.create_model("alexnet_owt", num_classes=3, conv_channels=(8, 8, 8, 8, 8), fc_features=16)
    pre = Preprocessing.from_dict({**TORCHVISION_PREPROCESSING.to_dict(), "class_names": ["a", "b", "c"]})
    weights = save_model(model, pre, tmp_path / "m.safetensors")
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(tmp_path / "p.jpg", quality=90)
    code = (
        "import sys\n"
        "from alexnet.cli import main\n"
        f"code = main(['predict', '--weights', {str(weights)!r}, {str(tmp_path / 'p.jpg')!r}, '--json'])\n"
        "heavy = sorted(m for m in ('torchvision', 'google.protobuf', 'alexnet.train.run') if m in sys.modules)\n"
        "print('HEAVY', code, ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY 0", out.stdout


# --- the tests' own layout (issue 23, item 4) ----------------------------------------------------------------------
TESTS = Path(__file__).resolve().parent


def _test_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return {m.split(".")[-1] for m in names if m.startswith(("tests.", "test_")) or m.startswith("test_")}


def test_no_test_module_imports_another():
    """Shared builders live in tests/_builders.py; a test module importing another runs that module's fixtures
    and module-level set-up in the wrong place, and hides where a builder lives."""
    offenders = {p.name: sorted(_test_imports(p)) for p in sorted(TESTS.glob("test_*.py")) if _test_imports(p)}
    assert offenders == {}


def test_every_test_file_is_named_after_a_module_or_a_concern():
    """test_<module>[_<aspect>].py: the faults of a module sit beside its other tests (test_weights_faults.py next
    to test_weights.py), so a newcomer finds every test of a module by its name."""
    assert sorted(p.name for p in TESTS.glob("test_faults*.py")) == []
