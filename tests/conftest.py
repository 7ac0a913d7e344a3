"""Shared test set-up: the temporary folders a test session leaves behind stay small (issue 14, item 21).

pytest keeps the last three sessions' temporary folders for inspection; the demo and README tests train and
download full-size AlexNets (about 230 MB per weights file), which left gigabytes there. At the end of a session
every file over `BIG` bytes in its temporary folder is removed; logs, configs, metrics and reports stay.

Everything else a test or a process it starts writes to the temp folder goes to the session's own folder, which must
be empty at the end (tests/_tempguard.py): a leak fails the session."""

from __future__ import annotations

import contextlib

import pytest
import torch

# the session's own temporary folder, and the check that it is left empty (fixtures and hooks, found by name)
from _tempguard import (  # noqa: F401
    _session_temp_folder,
    _temp_left_by_test,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

import alexnet

BIG = 8 << 20  # bytes


@pytest.fixture(scope="session", autouse=True)
def _drop_big_temporary_files(tmp_path_factory):
    yield
    base = tmp_path_factory.getbasetemp()
    for p in base.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink() and p.stat().st_size > BIG:
                p.unlink()


@pytest.fixture
def no_build(monkeypatch):
    """Arm to fail the test if anything builds a real (not meta-device) AlexNet: crafted metadata must be refused
    before allocating. Armed once the test's files are written."""
    real_init = alexnet.AlexNet.__init__

    def guarded(self, config):
        if torch.empty(0).device.type != "meta":
            raise AssertionError("a real model was built before the file was refused")
        real_init(self, config)

    return lambda: monkeypatch.setattr(alexnet.AlexNet, "__init__", guarded)
