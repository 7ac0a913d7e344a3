"""The suite's own guard (tests/_tempguard.py): a session that leaves something in the temp folder fails, naming it;
one that cleans up passes, and the session's folder is gone either way."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _builders import HANG_S
from _tempguard import PREFIX, TempGuard, left_in

TESTS = Path(__file__).resolve().parent

INNER = """
import os, subprocess, sys, tempfile

def test_leaks_a_folder():
    tempfile.mkdtemp(prefix="torchelastic_")

def test_a_child_process_leaks_a_file():
    code = "import tempfile; tempfile.mkstemp(prefix='alexnet-x')"
    subprocess.run([sys.executable, "-c", code], check=True)

def test_cleans_up(tmp_path):
    (tmp_path / "kept.txt").write_text("pytest's own folder is not the session's temp folder")
"""


def test_guard_fails_a_session_that_leaks_and_names_what_it_left(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "from _tempguard import _session_temp_folder, _temp_left_by_test\n"
        "from _tempguard import pytest_sessionfinish, pytest_terminal_summary\n"
    )
    (tmp_path / "test_inner.py").write_text(INNER)
    real = tmp_path / "tmp"  # the inner session's machine-wide temp folder
    real.mkdir()
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "TMPDIR": str(real), "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert p.returncode == 1, p.stdout[-3000:]
    assert re.search(r"^3 passed in ", p.stdout, re.M), p.stdout[-3000:]
    errors = [x for x in p.stdout.splitlines() if x.startswith("error: ")]
    expected = (
        rf"error: the tests left 2 entries in the session's temporary folder {re.escape(str(real))}/{PREFIX}\w+: "
        r"alexnet-x\w+ \(after test_inner.py::test_a_child_process_leaks_a_file\), "
        r"torchelastic_\w+/ \(after test_inner.py::test_leaks_a_folder\)"
    )
    assert len(errors) == 1 and re.fullmatch(expected, errors[0]), errors
    assert [x.name for x in real.iterdir()] == [f"pytest-of-{getpass.getuser()}"]  # the session's folder is gone


def test_guard_passes_a_clean_session_and_restores_the_temp_folder():
    before = (os.environ.get("TMPDIR"), tempfile.gettempdir())
    guard = TempGuard()
    folder = guard.start()
    assert tempfile.gettempdir() == os.environ["TMPDIR"] == str(folder)
    with tempfile.TemporaryDirectory() as d:
        assert Path(d).parent == folder
    assert guard.finish() == []
    assert (os.environ.get("TMPDIR"), tempfile.gettempdir()) == before and not folder.exists()


def test_a_librarys_own_file_is_not_a_leftover(tmp_path):
    """onnxruntime writes its session id to $TMPDIR/.ses when imported: not a test's leftover; anything else is."""
    (tmp_path / ".ses").write_text("1796576997785\n4a831850-dab6-aa76-d2cd-e1757d41cd16\n")
    assert left_in(tmp_path) == []
    (tmp_path / "stray").mkdir()
    assert left_in(tmp_path) == ["stray/"]
