import subprocess
import sys

import pytest

from alexnet.runtime import tune_cpu_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings are Linux-only")
def test_tune_cpu_allocator_applies_once_and_can_be_turned_off():
    code = "from alexnet.runtime import tune_cpu_allocator as t; print(t(), t())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert on.stdout.split() in (["True", "True"], ["False", "False"])  # False only on a non-glibc Linux
    off = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "ALEXNET_MALLOC_TUNING": "0"},
    )
    assert off.stdout.split() == ["False", "False"]


def test_tune_cpu_allocator_returns_a_bool():
    assert isinstance(tune_cpu_allocator(), bool)


# --- precision: one resolution, where a command starts (issue 23) ---------------------------------------------------
def _calls_of(name: str) -> dict[str, list[int]]:
    """Every call of ``name`` (``f(...)`` or ``x.f(...)``) in the package: {module path: [lines]}."""
    import ast
    from pathlib import Path

    import alexnet

    pkg = Path(alexnet.__file__).resolve().parent
    found: dict[str, list[int]] = {}
    for path in sorted(pkg.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if called == name:
                    found.setdefault(path.relative_to(pkg).as_posix(), []).append(node.lineno)
    return found


def test_precision_is_resolved_only_where_a_command_starts():
    """`resolve_precision` (a word and a device -> `Precision`) is called by the command line's one reader of
    --device/--precision and by the training run (whose device is known only inside torchrun's process); every
    library function takes the resolved `Precision`."""
    calls = _calls_of("resolve_precision")
    assert set(calls) == {"cli/flags.py", "train/run.py"}, calls
    assert [len(v) for v in calls.values()] == [1, 1], calls


def test_library_functions_refuse_a_precision_word():
    import torch

    from alexnet.errors import AlexnetError
    from alexnet.runtime import FP32, Precision, model_input, require_precision, resolve_precision

    assert require_precision(FP32) is FP32
    with pytest.raises(AlexnetError) as e:
        require_precision("auto")
    assert str(e.value) == (
        "precision: expected an alexnet.runtime.Precision, got 'auto'; "
        "alexnet.runtime.resolve_precision(word, device) resolves a word"
    )
    with pytest.raises(AlexnetError, match="'auto' is not a resolved precision"):
        Precision("auto")
    assert resolve_precision("auto", torch.device("meta")) == FP32  # no native bf16 there
    net = Precision("bf16").inference_model(torch.nn.Linear(2, 2), torch.device("cpu"))
    assert model_input(net, torch.ones(1, 2)).dtype == torch.bfloat16  # the one input-dtype decision
