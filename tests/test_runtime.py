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
