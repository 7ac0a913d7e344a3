"""The run folder's files, each with one writer and one reader (the contract is docs/CONTRACTS.md, "Run folder").

``config.json`` (the resolved configuration), ``metrics.csv`` (one row per epoch, `METRICS_COLUMNS`: the single
source of every curve, as timm's ``summary.csv``), ``skipped.txt`` (the bad images a run skipped, one per line),
``eval.json`` (the last validation, `EvalResult.to_dict`), and ``tensorboard/`` (optional scalars, timm's
``update_summary`` habit). Every file is replaced atomically, so a killed run never leaves a half-written one.
The checkpoints (``state.pt``, ``last``/``best.safetensors``) are `alexnet.train.checkpoint`'s.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .data.fileio import atomic_write_text, remove_stale_temps
from .errors import AlexnetError
from .schemas import tagged

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BEST",
    "CONFIG",
    "DIAGNOSTICS",
    "EVAL",
    "LAST",
    "LOCK",
    "METRICS",
    "METRICS_COLUMNS",
    "PREVIOUS_LAST",
    "REPORT",
    "RUN_FOLDER_NAMES",
    "RUN_FILES",
    "SKIPPED",
    "STATE",
    "STATS",
    "TEST_EVAL",
    "DIAGNOSTICS",
    "TENSORBOARD",
    "RunDir",
    "RunDirError",
    "RunFolderBusy",
    "RunLock",
    "TensorBoardLog",
    "clear_run",
    "describe_run",
    "fresh_run_dir",
    "lock_fresh_run_dir",
    "lock_run",
    "format_metrics",
    "prepare_run_dir",
    "read_metrics",
    "read_skipped",
    "skipped_summary",
    "write_config",
    "write_eval",
    "write_metrics",
    "write_skipped",
    "write_test_eval",
]

CONFIG, METRICS, SKIPPED, EVAL = "config.json", "metrics.csv", "skipped.txt", "eval.json"
TENSORBOARD = "tensorboard"
# written by others into a run folder: the demo's held-out test evaluation, the HTML report (`alexnet.report`)
TEST_EVAL, REPORT = "test_eval.json", "report.html"
# the training set's statistics a run subtracts and lights with (`alexnet.data.stats`), written by the demo into its
# run folder and by `alexnet ablate` into the study's folder; the run's config.json names it (``stats``)
STATS = "stats.json"
DIAGNOSTICS = "diagnostics.json"  # what the training's checks found (`alexnet.train.diagnostics`: writer and reader)
# the checkpoints (written by `alexnet.train.checkpoint`): named here so that a run folder is recognised and
# cleared by one list. PREVIOUS_LAST: the last weights kept (a hard link) while a new pair is being written.
STATE, LAST, BEST, PREVIOUS_LAST = "state.pt", "last.safetensors", "best.safetensors", ".previous.last.safetensors"
# LOCK: present while a process owns the folder (`RunLock`); never a run file (`clear_run` leaves it alone)
LOCK = ".lock"
RUN_FILES = (CONFIG, METRICS, SKIPPED, EVAL, DIAGNOSTICS, STATE, LAST, BEST, PREVIOUS_LAST)  # + the TENSORBOARD folder
# every name a run folder can hold (tests/test_rundir.py refuses one of them spelled out anywhere else in src/)
RUN_FOLDER_NAMES = (*RUN_FILES, TEST_EVAL, REPORT, STATS, LOCK, TENSORBOARD)
METRICS_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_top1_accuracy",
    "val_loss",
    "val_top1_accuracy",
    "val_top5_accuracy",
    "images_per_s",
    "seconds",
)


class RunDirError(AlexnetError, ValueError):
    """A run folder's file that cannot be read; one-line message."""


def prepare_run_dir(out: str | Path) -> Path:
    """Make the run folder and remove the half-written temporaries of a process killed while saving (only the
    ones `alexnet.data.fileio.atomic_write` makes: a user's own ``.notes.tmp`` stays)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: is a file, not a run folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    return out


def describe_run(out: str | Path) -> str | None:
    """``"epoch 4 of 4"`` (epochs done of the epochs asked) when ``out`` holds a run (a config.json, metrics.csv
    or checkpoint), else None."""
    out = Path(out)
    if not out.is_dir() or not any((out / name).exists() for name in (CONFIG, METRICS, STATE, LAST)):
        return None
    done: Any = 0
    with contextlib.suppress(RunDirError, OSError, ValueError):
        rows = read_metrics(out) if (out / METRICS).exists() else []
        done = rows[-1]["epoch"] if rows else 0
    total: Any = "?"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        total = json.loads((out / CONFIG).read_text(encoding="utf-8")).get("epochs", "?")
    return f"epoch {done} of {total}"


def clear_run(out: str | Path) -> list[Path]:
    """Remove the files a run writes (`RUN_FILES`, ``tensorboard/``, our stale temporaries) from ``out`` and
    nothing else: ``--overwrite`` starts a run afresh in a folder that may hold the user's own files."""
    import shutil

    out = Path(out)
    removed = remove_stale_temps(out)
    for name in RUN_FILES:
        p = out / name
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed.append(p)
    if (out / TENSORBOARD).is_dir():
        shutil.rmtree(out / TENSORBOARD)
        removed.append(out / TENSORBOARD)
    return removed


def fresh_run_dir(base: str | Path, avoid: Sequence[Path] = ()) -> Path:
    """``base`` when it holds no run, else the first of ``base-2``, ``base-3``, ... that holds nothing (the
    default ``--out``: two plain ``alexnet train`` commands never write into one folder); ``avoid``: folders
    found owned by another process."""
    base = Path(base)
    if describe_run(base) is None and base not in avoid:
        return base
    n = 2
    while (candidate := base.with_name(f"{base.name}-{n}")).exists() or candidate in avoid:
        n += 1
    return candidate


def write_config(out: str | Path, config: Mapping[str, Any]) -> Path:
    """config.json: the resolved configuration (what ``--resume`` reads back)."""
    return atomic_write_text(Path(out) / CONFIG, json.dumps(dict(config), indent=2) + "\n")


def write_eval(out: str | Path, epoch: int | None, evaluation: Mapping[str, Any], weights: str = LAST) -> Path:
    """eval.json: the evaluation of ``weights`` (a file of the run folder) after ``epoch`` (None: the run's end)."""
    doc = tagged("evaluate", {**({"epoch": epoch} if epoch is not None else {}), "weights": weights, **evaluation})
    return atomic_write_text(Path(out) / EVAL, json.dumps(doc, indent=2) + "\n")


def write_test_eval(out: str | Path, evaluation: Mapping[str, Any], weights: str) -> Path:
    """test_eval.json (the demo's evaluation of ``weights`` on held-out test images) and eval.json, the same
    evaluation, which the report shows."""
    doc = tagged("evaluate", {**evaluation, "weights": weights})  # docs/JSON.md
    atomic_write_text(Path(out) / TEST_EVAL, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return write_eval(out, None, {k: v for k, v in doc.items() if k != "schema"}, weights)


# --- metrics.csv --------------------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return "" if isinstance(v, float) and math.isnan(v) else repr(float(v))


def format_metrics(rows: Sequence[Mapping[str, Any]]) -> str:
    """metrics.csv's text: the header, then one row per epoch (``epoch`` an integer, NaN as an empty field,
    every other value as ``repr(float)`` so it reads back bit for bit)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (str(int(r[k])) if k == "epoch" else _fmt(r[k])) for k in METRICS_COLUMNS})
    return buf.getvalue()


def write_metrics(out: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Replace metrics.csv with ``rows`` (`METRICS_COLUMNS` each)."""
    return atomic_write_text(Path(out) / METRICS, format_metrics(rows))


# metrics.csv before rates were fractions everywhere (alexnet.schemas): accuracies in percent under these names
_PERCENT_COLUMNS = {
    "train_acc1": "train_top1_accuracy",
    "val_acc1": "val_top1_accuracy",
    "val_acc5": "val_top5_accuracy",
}


def _parse_row(header: list[str], values: list[str]) -> dict[str, Any]:
    if len(values) != len(header):
        raise ValueError("wrong number of fields")
    row: dict[str, Any] = {h: float(v) if v.strip() else math.nan for h, v in zip(header, values)}
    for old, new in _PERCENT_COLUMNS.items():  # an older run folder: read as fractions
        if old in row:
            row.setdefault(new, row.pop(old) / 100.0)
    if not math.isfinite(row["epoch"]):
        raise ValueError("no epoch")
    row["epoch"] = int(row["epoch"]) if row["epoch"].is_integer() else row["epoch"]
    for k in METRICS_COLUMNS[1:]:
        row.setdefault(k, math.nan)
    return row


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a run's metrics.csv (``path`` or the folder holding it), one per epoch in epoch order: ``epoch``
    an int, the other `METRICS_COLUMNS` floats (NaN where empty or absent).

    A run killed while writing leaves a partial last line: it is dropped with a warning, as is any other line
    that does not parse. When a resumed run repeated an epoch, its last row wins. `RunDirError` for a missing,
    unreadable or empty file, or one without an ``epoch`` column; an empty list when no epoch is complete.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunDirError(f"{path}: no such file (a run folder has metrics.csv once an epoch has finished)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: cannot read ({e})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise RunDirError(f"{path}: empty metrics file")
    header = [h.strip() for h in next(csv.reader([lines[0]]))]
    if "epoch" not in header:
        raise RunDirError(f"{path}: no 'epoch' column; expected {','.join(METRICS_COLUMNS)}")
    complete = text.endswith("\n")
    by_epoch: dict[float, dict[str, Any]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        last = lineno == len(lines)
        try:
            if last and not complete:
                raise ValueError("no line end")
            row = _parse_row(header, next(csv.reader([line])))
        except ValueError:
            what = "partial last line (an interrupted run?)" if last else "malformed line"
            warnings.warn(f"{path}:{lineno}: {what}, ignored", stacklevel=3)
            continue
        by_epoch[row["epoch"]] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


# --- skipped.txt --------------------------------------------------------------------------------------------------
def _needs_quotes(name: str) -> bool:
    # a line break of any kind str.splitlines knows, a leading quote, or edge blanks would not read back as itself
    return not name or name[0] == '"' or name != name.strip() or len((name + "x").splitlines()) > 1


def write_skipped(out: str | Path, names: Sequence[str]) -> Path:
    """skipped.txt: one skipped image per line. A name that would not read back as one plain line (it holds a
    line break, starts with ``"`` or has blanks at either end) is written JSON-quoted, so each entry stays one
    line; `read_skipped` undoes the quoting."""
    text = "".join(f"{json.dumps(s) if _needs_quotes(s) else s}\n" for s in map(str, names))
    return atomic_write_text(Path(out) / SKIPPED, text)


def skipped_summary(names: Sequence[str], out: str | Path, first: int = 3) -> str:
    """One console line: how many images were skipped (an image bad in every epoch counts once per epoch), the
    first few names (quoted as in skipped.txt when a name would break the line), and where the full list is."""
    distinct = list(dict.fromkeys(map(str, names)))
    shown = ", ".join(json.dumps(s) if _needs_quotes(s) else s for s in distinct[:first])
    more = f", ... ({len(distinct) - first} more)" if len(distinct) > first else ""
    times = f" ({len(distinct)} distinct)" if len(distinct) != len(names) else ""
    plural = "s" if len(names) != 1 else ""
    return f"skipped {len(names)} unreadable image{plural}{times}: {shown}{more}; all listed in {Path(out) / SKIPPED}"


def read_skipped(out: str | Path) -> list[str]:
    """The names `write_skipped` wrote (an empty list when the run skipped nothing or has no skipped.txt)."""
    path = Path(out) / SKIPPED
    if not path.exists():
        return []
    names = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        if line.startswith('"'):
            with contextlib.suppress(json.JSONDecodeError):  # else: an older version's name starting with '"'
                line = json.loads(line)
        names.append(str(line))
    return names


# --- TensorBoard --------------------------------------------------------------------------------------------------
class TensorBoardLog:
    """TensorBoard scalars of each metrics.csv row in ``log_dir`` when the optional extra is installed and
    ``enabled``; else nothing (metrics.csv stays the one source of the curves)."""

    def __init__(self, log_dir: str | Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                return
            self.writer = SummaryWriter(str(log_dir))

    def log(self, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        for k in METRICS_COLUMNS[1:]:
            v = row[k]
            if isinstance(v, float) and not math.isnan(v):
                self.writer.add_scalar(k, v, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --- the lock: one process owns a run folder ----------------------------------------------------------------------
class RunFolderBusy(RunDirError):
    """The run folder is owned by another live process (``pid`` names it, or is None when it did not say)."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        self.folder, self.pid = folder, pid
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"{folder}: in use by {who}, which is writing this run folder; wait for it to end (or stop it), "
            "or choose another --out"
        )


class RunLock:
    """An exclusive lock on a run folder: ``fcntl.flock`` on `LOCK` inside it, holding the owner's PID.

    The kernel releases a flock when the last descriptor of it closes, so a crashed or SIGKILLed owner never
    leaves it stuck (a forked DataLoader worker shares the descriptor and holds it until it notices its parent
    is gone, a few seconds). The lock file is removed on release; a process that opened it just before then
    sees that the path no longer names the file it locked and tries again, so two owners never coexist.
    Where ``fcntl`` is missing (Windows) there is no lock.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self._fd: int | None = None
        self._made: list[Path] = []  # the folders this lock made, innermost first (removed again when left empty)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, create: bool = True) -> RunLock:
        """Take the lock (``create``: making the folder, and its parents, when missing), or raise `RunFolderBusy`
        naming the owner's PID; a file where the folder should be is a `RunDirError`."""
        if self._fd is not None:
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise RunDirError(f"{self.folder}: is a file, not a run folder; choose another --out")
        if fcntl is None:
            return self
        for _ in range(100):  # a retry only when the file was removed between our open and our lock
            if not self.folder.is_dir():
                if not create:
                    raise RunDirError(f"{self.folder}: no such run folder")
                missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
                self.folder.mkdir(parents=True, exist_ok=True)
                self._made = self._made or missing
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed by the owner releasing it
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderBusy(self.folder, _read_pid(self.path)) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)  # the owner removed the file after we opened it: lock the new one
        raise RunDirError(f"{self.path}: could not take the run folder's lock")

    def release(self) -> None:
        """Remove the lock file (and the folders this lock made, where they hold nothing else), then let go."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                self.path.unlink()
            for folder in self._made:  # only while empty: a run that wrote nothing leaves nothing behind
                try:
                    folder.rmdir()
                except OSError:
                    break
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_pid(path: Path) -> int | None:
    """The owner's PID from its lock file (it writes it right after locking: give it a moment)."""
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text(encoding="ascii").split()[0])
        time.sleep(0.05)
    return None


_HELD: dict[Path, list[Any]] = {}  # resolved folder -> [RunLock, depth]: this process's locks, re-entrant


@contextlib.contextmanager
def lock_run(folder: str | Path, *, create: bool = True) -> Iterator[Path]:
    """Own ``folder`` for the ``with`` block: the first process gets it, any other gets `RunFolderBusy` (one
    line naming the owner's PID). Re-entrant within a process (the demo holds its folder around ``train.main``,
    which locks it again). ``create``: make the folder when missing (else a `RunDirError`)."""
    key = Path(os.path.abspath(folder))
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield Path(folder)
        finally:
            _HELD[key][1] -= 1
        return
    lock = RunLock(folder).acquire(create=create)
    _HELD[key] = [lock, 1]
    try:
        yield Path(folder)
    finally:
        del _HELD[key]
        lock.release()


@contextlib.contextmanager
def lock_fresh_run_dir(base: str | Path) -> Iterator[Path]:
    """`fresh_run_dir` of ``base``, owned (`lock_run`) for the ``with`` block: two processes started at the same
    moment get two folders (``runs/train`` and ``runs/train-2``), never one."""
    avoid: list[Path] = []
    while True:
        candidate = fresh_run_dir(base, avoid)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(lock_run(candidate))
            except RunFolderBusy:
                avoid.append(candidate)
                continue
            if describe_run(candidate) is not None:  # another process ran there between our look and our lock
                avoid.append(candidate)
                continue
            yield candidate
            return


# --- the run folder as one object ---------------------------------------------------------------------------------
class RunDir:
    """A run folder: each attribute is the path of one of its files (`RUN_FOLDER_NAMES`), each method one of the
    reads and writes above, so no other module spells a file name out.

    >>> run = RunDir("runs/train")
    >>> run.last                           # runs/train/last.safetensors
    >>> rows = run.read_metrics()
    """

    __slots__ = ("path",)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # the files
    config = property(lambda self: self.path / CONFIG, doc="config.json: the resolved configuration")
    metrics = property(lambda self: self.path / METRICS, doc="metrics.csv: one row per epoch")
    skipped = property(lambda self: self.path / SKIPPED, doc="skipped.txt: the images the run skipped")
    eval = property(lambda self: self.path / EVAL, doc="eval.json: the last evaluation")
    test_eval = property(lambda self: self.path / TEST_EVAL, doc="test_eval.json: the demo's test evaluation")
    report = property(lambda self: self.path / REPORT, doc="report.html: `alexnet report`'s page")
    stats = property(lambda self: self.path / STATS, doc="stats.json: the training set's mean, std and eigen-pairs")
    diagnostics = property(lambda self: self.path / DIAGNOSTICS, doc="diagnostics.json: the training's checks")
    state = property(lambda self: self.path / STATE, doc="state.pt: what an exact resume needs")
    last = property(lambda self: self.path / LAST, doc="last.safetensors: the last epoch's weights")
    best = property(lambda self: self.path / BEST, doc="best.safetensors: the best epoch's weights")
    previous_last = property(lambda self: self.path / PREVIOUS_LAST, doc="the last weights kept while saving")
    lock_file = property(lambda self: self.path / LOCK, doc=".lock: present while a process owns the folder")
    tensorboard = property(lambda self: self.path / TENSORBOARD, doc="tensorboard/: the optional scalars")

    def weights(self) -> Path | None:
        """The run's best weights when kept, else its last; None when it has neither."""
        return next((p for p in (self.best, self.last) if p.is_file()), None)

    def is_resumable(self) -> bool:
        """Whether the run saved a checkpoint that ``--resume`` can continue (state.pt)."""
        return self.state.is_file()

    # reads and writes (the module's functions, on this folder)
    def describe(self) -> str | None:
        return describe_run(self.path)

    def prepare(self) -> Path:
        return prepare_run_dir(self.path)

    def clear(self) -> list[Path]:
        return clear_run(self.path)

    def lock(self, *, create: bool = True) -> contextlib.AbstractContextManager[Path]:
        return lock_run(self.path, create=create)

    def read_config(self) -> dict[str, Any]:
        """config.json as a dict (`RunDirError` when missing or unreadable)."""
        try:
            d = json.loads(self.config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{self.config}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunDirError(f"{self.config}: cannot read ({e})") from None
        if not isinstance(d, dict):
            raise RunDirError(f"{self.config}: not an object of settings")
        return d

    def write_config(self, config: Mapping[str, Any]) -> Path:
        return write_config(self.path, config)

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> Path:
        return write_metrics(self.path, rows)

    def read_skipped(self) -> list[str]:
        return read_skipped(self.path)

    def write_skipped(self, names: Sequence[str]) -> Path:
        return write_skipped(self.path, names)

    def write_eval(self, epoch: int | None, evaluation: Mapping[str, Any], weights: str = LAST) -> Path:
        return write_eval(self.path, epoch, evaluation, weights)

    def write_test_eval(self, evaluation: Mapping[str, Any], weights: str) -> Path:
        return write_test_eval(self.path, evaluation, weights)
