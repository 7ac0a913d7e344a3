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
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .data.fileio import atomic_write_text, remove_stale_temps
from .errors import AlexnetError

__all__ = [
    "BEST",
    "CONFIG",
    "DIAGNOSTICS",
    "EVAL",
    "LAST",
    "METRICS",
    "METRICS_COLUMNS",
    "PREVIOUS_LAST",
    "RUN_FILES",
    "SKIPPED",
    "STATE",
    "TENSORBOARD",
    "RunDirError",
    "TensorBoardLog",
    "clear_run",
    "describe_run",
    "fresh_run_dir",
    "format_metrics",
    "prepare_run_dir",
    "read_metrics",
    "read_skipped",
    "skipped_summary",
    "write_config",
    "write_eval",
    "write_metrics",
    "write_skipped",
]

CONFIG, METRICS, SKIPPED, EVAL = "config.json", "metrics.csv", "skipped.txt", "eval.json"
TENSORBOARD = "tensorboard"
DIAGNOSTICS = "diagnostics.json"  # what the training's checks found (`alexnet.train.diagnostics`: writer and reader)
# the checkpoints (written by `alexnet.train.checkpoint`): named here so that a run folder is recognised and
# cleared by one list. PREVIOUS_LAST: the last weights kept (a hard link) while a new pair is being written.
STATE, LAST, BEST, PREVIOUS_LAST = "state.pt", "last.safetensors", "best.safetensors", ".previous.last.safetensors"
RUN_FILES = (CONFIG, METRICS, SKIPPED, EVAL, DIAGNOSTICS, STATE, LAST, BEST, PREVIOUS_LAST)  # + the TENSORBOARD folder
METRICS_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc1",
    "val_loss",
    "val_acc1",
    "val_acc5",
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


def fresh_run_dir(base: str | Path) -> Path:
    """``base`` when it holds no run, else the first of ``base-2``, ``base-3``, ... that holds nothing (the
    default ``--out``: two plain ``alexnet train`` commands never write into one folder)."""
    base = Path(base)
    if describe_run(base) is None:
        return base
    n = 2
    while (candidate := base.with_name(f"{base.name}-{n}")).exists():
        n += 1
    return candidate


def write_config(out: str | Path, config: Mapping[str, Any]) -> Path:
    """config.json: the resolved configuration (what ``--resume`` reads back)."""
    return atomic_write_text(Path(out) / CONFIG, json.dumps(dict(config), indent=2) + "\n")


def write_eval(out: str | Path, epoch: int, evaluation: Mapping[str, Any], weights: str = "last.safetensors") -> Path:
    """eval.json: the evaluation of ``weights`` (a file of the run folder) after ``epoch``."""
    doc = {"epoch": epoch, "weights": weights, **evaluation}
    return atomic_write_text(Path(out) / EVAL, json.dumps(doc, indent=2) + "\n")


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


def _parse_row(header: list[str], values: list[str]) -> dict[str, Any]:
    if len(values) != len(header):
        raise ValueError("wrong number of fields")
    row: dict[str, Any] = {h: float(v) if v.strip() else math.nan for h, v in zip(header, values)}
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
