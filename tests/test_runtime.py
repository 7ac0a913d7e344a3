"""runtime.tune_cpu_allocator: glibc malloc keeps large blocks on its heap instead of mmapping and unmapping them
every step (the speed-up of the CPU training and inference loops). Each case runs in a fresh process, since the
setting is process-wide and applied once."""

import os
import platform
import subprocess
import sys

import pytest

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Counts the blocks glibc serves by mmap (mallinfo2().hblks) around one 4 MiB malloc: above glibc's default mmap
# threshold (128 KiB .. 32 MiB, dynamic) a fresh process mmaps it; with the thresholds raised it comes from the heap.
_PROBE = """
import ctypes, sys
from alexnet.runtime import tune_cpu_allocator
applied = (tune_cpu_allocator(), tune_cpu_allocator())
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblks
p = libc.malloc(4 << 20)
mapped = libc.mallinfo2().hblks - before
libc.free(p)
print(*applied, mapped)
"""


def _probe(**env: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return out.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="the allocator setting is glibc's (a no-op on macOS, musl, Windows)")
def test_tuning_keeps_large_blocks_on_the_heap():
    assert _probe() == ["True", "True", "0"]


@pytest.mark.skipif(not GLIBC, reason="the allocator setting is glibc's (a no-op on macOS, musl, Windows)")
@pytest.mark.parametrize(
    "env", [{"ALEXNET_MALLOC_TUNING": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}], ids=["off", "user-set"]
)
def test_tuning_can_be_turned_off_and_yields_to_the_users_settings(env):
    assert _probe(**env) == ["False", "False", "1"]  # untouched: glibc mmaps the 4 MiB block as it always does


@pytest.mark.skipif(GLIBC, reason="elsewhere than glibc the tuning must say it did nothing")
def test_tuning_is_a_no_op_without_glibc():
    from alexnet.runtime import tune_cpu_allocator

    assert tune_cpu_allocator() is False


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
    --device/--precision, by the training run (whose device is known only inside torchrun's process) and by the
    Python API's one reader (`alexnet.api.user_precision`); every library function takes the resolved
    `Precision`."""
    calls = _calls_of("resolve_precision")
    # the command line's reader, the training run's, and the Python API's (alexnet.classify / alexnet.features)
    assert set(calls) == {"cli/flags.py", "train/run.py", "api.py"}, calls
    assert [len(v) for v in calls.values()] == [1, 1, 1], calls


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
