"""Shared test set-up: the temporary folders a test session leaves behind stay small (issue 14, item 21).

pytest keeps the last three sessions' temporary folders for inspection; the demo and README tests train and
download full-size AlexNets (about 230 MB per weights file), which left gigabytes there. At the end of a session
every file over `BIG` bytes in its temporary folder is removed; logs, configs, metrics and reports stay."""

from __future__ import annotations

import contextlib

import pytest

BIG = 8 << 20  # bytes


@pytest.fixture(scope="session", autouse=True)
def _drop_big_temporary_files(tmp_path_factory):
    yield
    base = tmp_path_factory.getbasetemp()
    for p in base.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink() and p.stat().st_size > BIG:
                p.unlink()
