"""Small file helpers for data/ (which must not import weights): atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import AlexnetError

__all__ = ["atomic_write", "atomic_write_text", "check_output_dir", "check_output_file"]


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Write through ``write(tmp_path)`` into a temporary file beside ``path``, then rename it over ``path``,
    so an interrupted run never leaves a half-written file where a complete one is expected (checkpoints,
    resumable prepare, reports)."""
    path = Path(path)
    check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600 (and some writers replace the file): give it the mode any new file would get
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def check_output_file(path: str | Path) -> Path:
    """Refuse (one line) an output file whose path names a folder, or lies under something that is no folder,
    before anything is written."""
    path = Path(path)
    if path.is_dir():
        raise AlexnetError(f"{path}: is a folder; name the file to write, e.g. {path / 'out'}{path.suffix}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AlexnetError(f"{path}: {parent} is a file, not a folder")
            break
    return path


def check_output_dir(path: str | Path) -> Path:
    """Refuse (one line) an output folder whose path names an existing file, before anything is written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AlexnetError(f"{path}: is a file, not a folder; choose another output folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AlexnetError(f"{path}: {parent} is a file, not a folder")
            break
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` for a text file (UTF-8)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
