"""Small file helpers for data/ (which must not import weights): atomic writes, and the clean-up of the
temporaries a killed writer leaves behind.

Each write goes into a private temporary folder beside its target, named ``.NAME.XXXXXXXX.alexnet.tmp``
(`TEMP_SUFFIX`), then is renamed over the target. A writer that makes temporaries of its own beside the file it
writes (safetensors' ``save_file`` writes ``.tmpXXXXXX`` and renames it) makes them inside that folder, so a
SIGKILL mid-save leaves only names of ours, which `remove_stale_temps` recognises; nobody else's ``.notes.tmp``
is ever touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import AlexnetError

__all__ = [
    "TEMP_SUFFIX",
    "DiskFullError",
    "atomic_write",
    "atomic_write_text",
    "check_output_dir",
    "check_output_file",
    "is_temp_name",
    "remove_stale_temps",
]

TEMP_SUFFIX = ".alexnet.tmp"  # the end of every temporary `atomic_write` makes (a folder)
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122")
_NEARLY_FULL = 1 << 20  # bytes: a writer that failed on a file system with less than this free ran out of space


class DiskFullError(AlexnetError, OSError):
    """The device (or the user's quota) filled up during an atomic write; the previous file is intact."""

    def __init__(self, path: Path, existed: bool) -> None:
        self.path = path
        kept = f"the previous {path.name} is intact" if existed else "nothing was written"
        super().__init__(f"no space left on the device while writing {path}; {kept}")


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary `atomic_write` made (``.NAME.XXXXXXXX.alexnet.tmp``)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and len(name) > len(TEMP_SUFFIX) + 10


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporaries a process killed inside `atomic_write` left in ``folder`` (only ours: see
    `is_temp_name`); returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if is_temp_name(p.name) and not p.is_symlink():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:  # an older version's temporary file
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _disk_full(e: BaseException, folder: Path) -> bool:
    """Whether ``e`` (from a writer: OSError 28, safetensors' or torch's own errors) means the disk filled up."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if any(t in str(seen).lower() for t in _FULL_TEXTS):
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(e, Exception) and not isinstance(e, AlexnetError):
        with contextlib.suppress(OSError):  # torch says only "unexpected pos": look at the free space
            return shutil.disk_usage(folder).free < _NEARLY_FULL
    return False


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Write through ``write(tmp_path)`` into a temporary folder beside ``path`` (``tmp_path`` has ``path``'s
    own name), then rename it over ``path``, so an interrupted run never leaves a half-written file where a
    complete one is expected (checkpoints, resumable prepare, reports). A full disk is a `DiskFullError` naming
    ``path`` (the previous file is intact)."""
    path = Path(path)
    check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        write(str(tmp))
        # the writer may replace the file: give it the mode any new file would get
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        if _disk_full(e, path.parent):
            raise DiskFullError(path, existed) from None
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def check_output_file(path: str | Path) -> Path:
    """Refuse (one line) an output file whose path names a folder, or lies under something that is no folder,
    before anything is written."""
    path = Path(path)
    if path.is_dir():
        raise AlexnetError(f"{path}: is a folder; name the file to write, e.g. {path / 'out'}{path.suffix}")
    return _check_parents(path)


def check_output_dir(path: str | Path) -> Path:
    """Refuse (one line) an output folder whose path names an existing file, before anything is written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AlexnetError(f"{path}: is a file, not a folder; choose another output folder")
    return _check_parents(path)


def _check_parents(path: Path) -> Path:
    """``path``, unless its nearest existing parent is a file (nothing could be written under it)."""
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
