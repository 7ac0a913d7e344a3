"""The test session's own temporary folder: a test that leaves something in the temp folder fails the session
(issue 23, item 4).

The session points TMPDIR (and `tempfile`'s cached choice) at a fresh folder under the machine's temporary folder;
every process a test starts inherits it, so torchrun's ``torchelastic_*`` logs, a benchmark's ``alexnet-*`` scratch
folder or a stray ``mkdtemp`` land there. At the end the folder must be empty: whatever is left is named and the
session exits non-zero; then the folder is removed. Other programs on the machine write to the real temporary
folder, which the check never reads, so they cannot make it fail. pytest's own ``tmp_path`` folders stay where pytest
keeps them (the last three sessions, for inspection): the guard asks for pytest's base folder before switching.
So does PyTorch's compile cache (``torchinductor_<user>``, which lives in the temp folder by design and is reused from
run to run): TORCHINDUCTOR_CACHE_DIR keeps it where it would be without the guard.

Each entry left is named with the test after which it was first seen. Not collected (no ``test_`` prefix);
tests/conftest.py installs the two fixtures and the two hooks."""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
from pathlib import Path

import pytest

PREFIX = "alexnet-tests-"
INDUCTOR = "TORCHINDUCTOR_CACHE_DIR"


class TempGuard:
    """Switches the temporary folder to a fresh one, and at the end lists what the session left in it, each entry
    with the test after which it was first seen."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.left: list[str] = []
        self.seen_after: dict[str, str] = {}  # entry -> the test after which it was first there
        self._saved: tuple[str | None, str | None, str | None] = (None, None, None)

    def start(self) -> Path:
        self._saved = (os.environ.get("TMPDIR"), tempfile.tempdir, os.environ.get(INDUCTOR))
        os.environ.setdefault(INDUCTOR, os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}"))
        self.folder = Path(tempfile.mkdtemp(prefix=PREFIX))
        os.environ["TMPDIR"] = str(self.folder)
        tempfile.tempdir = str(self.folder)
        return self.folder

    def note(self, test: str) -> None:
        """After each test: what is new in the folder is that test's (or a process it started)."""
        if self.folder is not None and self.folder.is_dir():
            for name in left_in(self.folder):
                self.seen_after.setdefault(name, test)

    def finish(self) -> list[str]:
        """Restore the temporary folder, record what is left in the session's one, and remove it."""
        env, cached, inductor = self._saved
        _set_env("TMPDIR", env)
        _set_env(INDUCTOR, inductor)
        tempfile.tempdir = cached
        if self.folder is not None:
            self.left = left_in(self.folder)
            shutil.rmtree(self.folder, ignore_errors=True)
        return self.left


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


# Files a library writes into the temporary folder by design, not a test's leftovers: importing onnxruntime writes
# its session id to $TMPDIR/.ses (two lines: a timestamp and a UUID) and reuses it. The session's folder, and
# with it this file, is removed at the end, so the real temporary folder never receives it.
LIBRARY_FILES = {".ses": "onnxruntime's session id"}


def left_in(folder: Path) -> list[str]:
    """The entries in ``folder`` (names, sorted; a folder ends in ``/``): what the session did not clean up, less
    `LIBRARY_FILES`."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name not in LIBRARY_FILES)


def report(guard: TempGuard) -> str:
    left = guard.left
    what = "1 entry" if len(left) == 1 else f"{len(left)} entries"
    named = ", ".join(f"{n} (after {guard.seen_after.get(n, 'the last test')})" for n in left)
    return f"the tests left {what} in the session's temporary folder {guard.folder}: {named}"


GUARD = TempGuard()


@pytest.fixture(scope="session", autouse=True)
def _session_temp_folder(tmp_path_factory):
    tmp_path_factory.getbasetemp()  # pytest's own folder is placed before TMPDIR changes
    yield GUARD.start()
    GUARD.finish()


@pytest.fixture(autouse=True)
def _temp_left_by_test(request):
    yield
    GUARD.note(request.node.nodeid)


@pytest.hookimpl(trylast=True)  # after the session fixtures are torn down (the runner's own sessionfinish)
def pytest_sessionfinish(session):
    if GUARD.left and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if GUARD.left:
        terminalreporter.section("temporary folder", red=True)
        terminalreporter.write_line("error: " + report(GUARD), red=True)
