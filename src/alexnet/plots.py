"""Pictures: conv1's kernels (the paper's Figure 3), training curves, the confusion matrix, nearest neighbours
(Figure 4), and one self-contained HTML report of a training run.

Everything is drawn with matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg: no display, no
global pyplot state) and `torchvision.utils.make_grid`. Every file is written atomically, and a PNG's pixel size
is exactly the ``size`` asked for (no tight bounding box), so pictures of two runs line up.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn
from torchvision.utils import make_grid

from .errors import AlexnetError
from .models import AlexNet
from .train import METRICS_COLUMNS  # the run folder's columns, written by train

__all__ = [
    "PlotError",
    "METRICS_COLUMNS",
    "read_metrics",
    "filter_grids",
    "plot_filters",
    "plot_curves",
    "plot_confusion",
    "plot_neighbors",
    "report",
]

DPI = 100


class PlotError(AlexnetError, ValueError):
    """Input a picture cannot be made from (no metrics, no conv1, a bad evaluation file); one-line message."""


# --- output -------------------------------------------------------------------------------------------------------
def _figure(size: tuple[int, int]) -> Figure:
    w, h = size
    if w < 50 or h < 50:
        raise PlotError(f"picture size {w}x{h} is too small (at least 50x50 pixels)")
    return Figure(figsize=(w / DPI, h / DPI), dpi=DPI)


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _write_bytes(data: bytes, out: str | Path) -> Path:
    from .weights import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(out, write)
    return Path(out)


def _save(fig: Figure, out: str | Path | None) -> bytes:
    data = _png_bytes(fig)
    if out is not None:
        _write_bytes(data, out)
    return data


# --- Figure 3: conv1's kernels ------------------------------------------------------------------------------------
def _grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` tiles: the most nearly square exact factorisation (96 -> 8 x 12, 64 -> 8 x 8),
    or a ceil(sqrt) square when ``n`` has no reasonable factors."""
    root = math.sqrt(n)
    rows = max(d for d in range(1, int(root) + 1) if n % d == 0)
    if rows < root / 2:
        cols = math.ceil(root)
        return math.ceil(n / cols), cols
    return rows, n // rows


def filter_grids(weight: torch.Tensor, groups: int = 1, *, padding: int = 1) -> list[torch.Tensor]:
    """conv1's kernels (K, 3, h, w) as ``groups`` image grids (3, H, W) in [0, 1], each kernel scaled to its own
    range (make_grid's ``scale_each``). With two groups the first K/2 kernels form the first grid: the paper's
    Figure 3 shows the kernels learned on GPU 1 above those learned on GPU 2 (conv2's groups split conv1's
    output channels the same way)."""
    if weight.ndim != 4 or weight.shape[1] not in (1, 3):
        raise PlotError(f"expected conv1 kernels (K, 3, h, w), got shape {tuple(weight.shape)}")
    w = weight.detach().float().cpu()
    k = w.shape[0]
    rows, cols = _grid_shape(k)
    if groups > 1 and k % groups == 0 and rows % groups == 0:
        parts = w.chunk(groups)
    elif groups > 1 and k % groups == 0:
        parts = w.chunk(groups)
        cols = _grid_shape(k // groups)[1]
    else:
        parts = (w,)
    return [make_grid(p, nrow=cols, padding=padding, normalize=True, scale_each=True, pad_value=1.0) for p in parts]


def _load(weights: str | Path | nn.Module, allow_pickle: bool, arch: str | None = None) -> AlexNet:
    if isinstance(weights, nn.Module):
        model = getattr(weights, "module", weights)
        model = getattr(model, "_orig_mod", model)
    else:
        from .weights import load_model

        model, _ = load_model(weights, arch=arch, allow_pickle=allow_pickle)
    if not isinstance(model, AlexNet):
        raise PlotError("expected an alexnet.AlexNet model")
    return model


def plot_filters(
    weights: str | Path | nn.Module,
    out: str | Path | None = None,
    *,
    size: tuple[int, int] = (1200, 900),
    arch: str | None = None,
    allow_pickle: bool = False,
) -> bytes:
    """conv1's kernels as one picture (the paper's Figure 3); returns the PNG bytes and writes ``out``."""
    model = _load(weights, allow_pickle, arch)
    w = model.conv1.weight
    groups = int(model.config.groups)
    grids = filter_grids(w, groups)
    fig = _figure(size)
    axes = fig.subplots(len(grids), 1, squeeze=False)[:, 0]
    per = w.shape[0] // len(grids)
    for g, (ax, grid) in enumerate(zip(axes, grids)):
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_axis_off()
        if len(grids) > 1:
            ax.set_title(f"kernels {g * per + 1}-{(g + 1) * per}: group {g + 1} (the paper's GPU {g + 1})")
    k, c, h, ww = w.shape
    fig.suptitle(f"conv1: {k} kernels of {h}x{ww}x{c}, each scaled to its own range")
    return _save(fig, out)


# --- training curves ----------------------------------------------------------------------------------------------
def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a run's ``metrics.csv`` (one per epoch), as floats (NaN where a value is empty).

    A run killed while writing leaves a partial last line: it is dropped with a warning, as is any other line
    that does not parse. When a resumed run repeated an epoch, its last row wins.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlotError(f"{path}: no such file (a run folder has metrics.csv once an epoch has finished)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PlotError(f"{path}: cannot read ({e})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise PlotError(f"{path}: empty metrics file")
    header = [h.strip() for h in next(csv.reader([lines[0]]))]
    if "epoch" not in header:
        raise PlotError(f"{path}: no 'epoch' column; expected {','.join(METRICS_COLUMNS)}")
    complete = text.endswith("\n")
    by_epoch: dict[float, dict[str, float]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        last = lineno == len(lines)
        values = next(csv.reader([line]))
        try:
            if len(values) != len(header) or (last and not complete):
                raise ValueError("wrong number of fields" if len(values) != len(header) else "no line end")
            row = {h: float(v) if v.strip() else math.nan for h, v in zip(header, values)}
            if not math.isfinite(row["epoch"]):
                raise ValueError("no epoch")
        except ValueError:
            what = "partial last line (an interrupted run?)" if last else "malformed line"
            warnings.warn(f"{path}:{lineno}: {what}, ignored", stacklevel=2)
            continue
        by_epoch[row["epoch"]] = row
    if not by_epoch:
        raise PlotError(f"{path}: no complete epoch yet")
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_curves(
    source: str | Path, out: str | Path | None = None, *, size: tuple[int, int] = (1500, 450), title: str | None = None
) -> bytes:
    """Loss, top-1/top-5 error (the paper's measures, in percent) and learning rate per epoch, from the run's
    ``metrics.csv`` only; returns the PNG bytes and writes ``out``."""
    rows = read_metrics(source)
    col = {k: [r.get(k, math.nan) for r in rows] for k in METRICS_COLUMNS}
    epochs = col["epoch"]
    err = {k: [100.0 - v for v in col[k]] for k in ("train_acc1", "val_acc1", "val_acc5")}
    fig = _figure(size)
    ax_loss, ax_err, ax_lr = fig.subplots(1, 3)
    marker = "o" if len(rows) < 30 else None
    ax_loss.plot(epochs, col["train_loss"], marker=marker, label="train")
    ax_loss.plot(epochs, col["val_loss"], marker=marker, label="validation")
    ax_loss.set(title="loss (cross-entropy)", xlabel="epoch")
    ax_err.plot(epochs, err["train_acc1"], marker=marker, label="train top-1")
    ax_err.plot(epochs, err["val_acc1"], marker=marker, label="validation top-1")
    ax_err.plot(epochs, err["val_acc5"], marker=marker, label="validation top-5")
    ax_err.set(title="error rate (%)", xlabel="epoch")
    ax_lr.plot(epochs, col["lr"], marker=marker, color="tab:gray")
    ax_lr.set(title="learning rate", xlabel="epoch")
    if all(v > 0 for v in col["lr"] if math.isfinite(v)) and any(math.isfinite(v) for v in col["lr"]):
        ax_lr.set_yscale("log")
    for ax in (ax_loss, ax_err):
        ax.legend(loc="best", fontsize="small")
    for ax in (ax_loss, ax_err, ax_lr):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title is None and Path(source).is_dir():
        title = Path(source).resolve().name
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)


# --- confusion matrix ---------------------------------------------------------------------------------------------
def plot_confusion(
    evaluation: str | Path | dict[str, Any],
    out: str | Path | None = None,
    *,
    size: tuple[int, int] = (900, 800),
    normalize: bool = True,
) -> bytes:
    """The confusion matrix of an evaluation JSON (rows = true class), each row normalised to sum to 1 when
    ``normalize`` (so rare classes are as visible as common ones); returns the PNG bytes and writes ``out``."""
    from .evaluate import read_eval_json

    d = read_eval_json(evaluation) if not isinstance(evaluation, dict) else evaluation
    m = torch.tensor(d["confusion_matrix"], dtype=torch.float64)
    names = [str(n) for n in d["classes"]]
    c = len(names)
    shown = m / m.sum(dim=1, keepdim=True).clamp_min(1) if normalize else m
    fig = _figure(size)
    ax = fig.subplots()
    im = ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class" if normalize else "count")
    if c <= 40:
        ax.set_xticks(range(c), labels=names, rotation=90 if c > 6 else 0, fontsize="small")
        ax.set_yticks(range(c), labels=names, fontsize="small")
    if c <= 20:
        for i in range(c):
            for j in range(c):
                dark = float(shown[i, j]) > 0.5 * float(shown.max() or 1)
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize="small",
                        color="white" if dark else "black")  # fmt: skip
    ax.set(xlabel="predicted class", ylabel="true class")
    top1 = d.get("top1_error")
    ax.set_title("confusion matrix" + (f" (top-1 error {100 * top1:.2f}%)" if top1 is not None else ""))
    fig.tight_layout()
    return _save(fig, out)


# --- Figure 4: nearest neighbours ---------------------------------------------------------------------------------
def _thumbnail(img: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, side, side): short side to ``side``, centre crop (the eval geometry)."""
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(img, side, antialias=True), side)


def plot_neighbors(
    queries: Sequence[torch.Tensor],
    neighbors: Sequence[Sequence[Any]],
    out: str | Path | None = None,
    *,
    data: dict[str, Any] | None = None,
    query_names: Sequence[str] | None = None,
    size: tuple[int, int] | None = None,
    thumb: int = 128,
) -> bytes:
    """Each query image (uint8 (3, H, W)) in the first column, its neighbours (`alexnet.features.Neighbor`) to
    the right, nearest first, with class and distance: the layout of the paper's Figure 4.
    ``size`` defaults to 180 x 200 pixels a picture."""
    from .features import load_sample_image

    if not queries or len(queries) != len(neighbors):
        raise PlotError("plot_neighbors needs one list of neighbours per query image")
    cols = 1 + max(len(n) for n in neighbors)
    size = size or (180 * cols, 200 * len(queries))
    fig = _figure(size)
    axes = fig.subplots(len(queries), cols, squeeze=False)
    for r, (q, nbrs) in enumerate(zip(queries, neighbors)):
        axes[r, 0].imshow(_thumbnail(q, thumb).permute(1, 2, 0).numpy())
        label = Path(query_names[r]).name if query_names else ""
        axes[r, 0].set_title(f"query {label}".strip(), fontsize="small", color="tab:blue")
        for c in range(1, cols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c - 1 >= len(nbrs):
                continue
            n = nbrs[c - 1]
            img = load_sample_image(n.name, n.index, data)
            ax.imshow(_thumbnail(img, thumb).permute(1, 2, 0).numpy())
            ax.set_title(f"{n.rank}. {n.class_name}\nd = {n.distance:.4g}", fontsize="small")
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
    fig.tight_layout()
    return _save(fig, out)


# --- the HTML report ----------------------------------------------------------------------------------------------
def _img_tag(data: bytes, mime: str, alt: str, cls: str = "") -> str:
    b64 = base64.b64encode(data).decode("ascii")
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{html.escape(alt)}" src="data:{mime};base64,{b64}">'


def _jpeg(img: torch.Tensor, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
img.plot{max-width:100%;height:auto}.note{color:#777}.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:140px;font-size:.8em;text-align:center}figure img{width:128px;height:128px}
"""


def _find_weights(run: Path) -> Path | None:
    for name in ("best.safetensors", "last.safetensors"):
        if (run / name).is_file():
            return run / name
    return None


def _metrics_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f'<tr><th class="l">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>' for k, v in rows)
    return f"<table>{body}</table>"


def _pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * float(x):.2f} %"


def report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    data: str | Path | None = None,
    top: int = 24,
    ten_crop: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    device: str | None = None,
    evaluate: bool = True,
) -> Path:
    """One self-contained HTML page about a training run: its configuration, curves (metrics.csv), final
    metrics and confusion matrix (eval.json), conv1's kernels (best or last weights), and the ``top`` most
    confidently misclassified validation images. Pictures are embedded as base64 PNG/JPEG, so the page can be
    sent alone. The run's eval.json gives the final metrics; to name the misclassified images the weights it
    names (else best, else last) are evaluated afresh on ``data``, or with ``evaluate`` on the validation split
    of the run's own data (config.json), and that evaluation is shown instead (eval.json is left as it is).
    Written atomically to ``out`` (default RUN_DIR/report.html)."""
    from .evaluate import EvaluationError, evaluate_dataset, read_eval_json

    run = Path(run_dir)
    if not run.is_dir():
        raise PlotError(f"{run}: no such run folder")
    out = Path(out) if out is not None else run / "report.html"
    title = f"alexnet run: {run.resolve().name}"
    parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    notes: list[str] = []

    # configuration
    config: dict[str, Any] | None = None
    cfg_path = run / "config.json"
    parts.append("<h2>Configuration</h2>")
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
            parts.append(f"<pre>{html.escape(json.dumps(config, indent=2, sort_keys=True))}</pre>")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            parts.append(f'<p class="note">config.json is unreadable: {html.escape(str(e))}</p>')
    else:
        parts.append('<p class="note">no config.json in this run folder</p>')

    # curves
    parts.append("<h2>Training curves</h2>")
    last_row: dict[str, float] | None = None
    if (run / "metrics.csv").is_file():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                rows = read_metrics(run / "metrics.csv")
                last_row = rows[-1]
                parts.append(_img_tag(plot_curves(run), "image/png", "training curves", "plot"))
            except PlotError as e:
                parts.append(f'<p class="note">{html.escape(str(e))}</p>')
        notes += [str(w.message) for w in caught]
    else:
        parts.append('<p class="note">no metrics.csv in this run folder</p>')

    # final metrics and confusion matrix: the run's eval.json, or a fresh evaluation that also names the
    # misclassified images (train's eval.json has the counts only)
    evaluation: dict[str, Any] | None = None
    source = ""
    if (run / "eval.json").is_file():
        try:
            evaluation, source = read_eval_json(run / "eval.json"), "the run's eval.json"
        except EvaluationError as e:
            notes.append(str(e))
    named = (evaluation or {}).get("weights")
    weights = run / str(named) if named and (run / str(named)).is_file() else _find_weights(run)
    cfg = config if isinstance(config, dict) else {}
    target = (
        data
        if data is not None
        else (cfg.get("data") if evaluate and "misclassified" not in (evaluation or {}) else None)
    )
    if target:
        same = cfg.get("data") and Path(str(cfg["data"])).resolve() == Path(str(target)).resolve()
        try:
            if weights is None:
                raise PlotError(f"{run}: no best.safetensors or last.safetensors to evaluate")
            result = evaluate_dataset(
                weights,
                target,
                ten_crop=ten_crop,
                split="val" if same and data is None else None,
                val_split=float(cfg.get("val_split", 0.0)) if same else 0.0,
                seed=int(cfg.get("seed", 0)) if same else 0,
                batch_size=batch_size,
                workers=workers,
                device=device,
                collect=True,
            )
            evaluation = result.to_dict(top_misclassified=top)
            source = f"{weights.name} evaluated now on {target} ({result.data['split'] if result.data else 'val'})"
        except AlexnetError as e:
            if data is not None:
                raise
            notes.append(f"could not evaluate {weights.name if weights else 'the run'} on {target}: {e}")
    parts.append("<h2>Final metrics</h2>")
    if evaluation is not None:
        crop = "10-crop" if evaluation.get("ten_crop") else "centre crop"
        loss = evaluation.get("loss")
        parts.append(f'<p class="note">{html.escape(source)}, {crop}</p>')
        parts.append(
            _metrics_table(
                [
                    ("samples", f"{evaluation['num_samples']:,}"),
                    ("top-1 error", _pct(evaluation.get("top1_error"))),
                    ("top-5 error", _pct(evaluation.get("top5_error"))),
                    ("loss", "n/a" if loss is None else f"{loss:.4f}"),
                    ("bad images skipped", str(len(evaluation.get("skipped", [])))),
                ]
            )
        )
    elif last_row is not None:
        parts.append(f'<p class="note">no eval.json: the last epoch of metrics.csv (epoch {last_row["epoch"]:g})</p>')
        parts.append(
            _metrics_table(
                [
                    ("validation top-1 error", _pct((100 - last_row.get("val_acc1", math.nan)) / 100)),
                    ("validation top-5 error", _pct((100 - last_row.get("val_acc5", math.nan)) / 100)),
                    ("validation loss", f"{last_row.get('val_loss', math.nan):.4f}"),
                    ("training top-1 error", _pct((100 - last_row.get("train_acc1", math.nan)) / 100)),
                ]
            )
        )
    else:
        parts.append('<p class="note">no eval.json and no metrics.csv</p>')

    parts.append("<h2>Confusion matrix</h2>")
    if evaluation is not None:
        parts.append(_img_tag(plot_confusion(evaluation), "image/png", "confusion matrix", "plot"))
        per = evaluation.get("per_class_accuracy", {})
        if per and len(per) <= 100:
            body = "".join(
                f'<tr><td class="l">{html.escape(str(k))}</td><td>{_pct(v)}</td></tr>' for k, v in per.items()
            )
            parts.append(f'<table><tr><th class="l">class</th><th>accuracy</th></tr>{body}</table>')
    else:
        parts.append('<p class="note">no evaluation (eval.json) in this run folder</p>')

    # conv1 kernels
    parts.append("<h2>conv1 kernels</h2>")
    if weights is not None:
        try:
            parts.append(f'<p class="note">from {html.escape(weights.name)}</p>')
            parts.append(_img_tag(plot_filters(weights), "image/png", "conv1 kernels", "plot"))
        except AlexnetError as e:
            parts.append(f'<p class="note">{html.escape(str(e))}</p>')
    else:
        parts.append('<p class="note">no best.safetensors or last.safetensors in this run folder</p>')

    # most confidently misclassified
    parts.append("<h2>Most confidently misclassified validation images</h2>")
    wrong = (evaluation or {}).get("misclassified")
    if wrong is None:
        parts.append(
            '<p class="note">the evaluation holds no per-image predictions; '
            f"evaluate the weights with: alexnet report {html.escape(str(run))} --data VAL_DATA</p>"
        )
    elif not wrong:
        parts.append('<p class="note">no validation image is misclassified</p>')
    else:
        figs, missing = [], 0
        for w in wrong[:top]:
            try:
                img = load_thumbnail(w.get("name", ""), int(w.get("index", -1)), (evaluation or {}).get("data"))
            except AlexnetError:
                img, missing = None, missing + 1
            name = "/".join(Path(str(w.get("name", ""))).parts[-2:]) or f"#{w.get('index')}"
            cap = (
                f"<b>{html.escape(str(w['predicted']))}</b> {100 * float(w['confidence']):.1f}%<br>"
                f"true: {html.escape(str(w['label']))}<br><small>{html.escape(name)}</small>"
            )
            pic = _img_tag(_jpeg(img), "image/jpeg", name) if img is not None else "<p>(image not found)</p>"
            figs.append(f"<figure>{pic}<figcaption>{cap}</figcaption></figure>")
        parts.append(f'<div class="grid">{"".join(figs)}</div>')
        if missing:
            notes.append(f"{missing} misclassified images could not be found to show them")

    if notes:
        notes = list(dict.fromkeys(notes))
        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        parts.append(f'<h2>Notes</h2><ul class="note">{items}</ul>')
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
    return _write_bytes(page.encode("utf-8"), out)


def load_thumbnail(name: str, index: int = -1, data: dict[str, Any] | None = None, side: int = 128) -> torch.Tensor:
    """A data set entry's image as a uint8 (3, side, side) thumbnail (see `alexnet.features.load_sample_image`)."""
    from .features import load_sample_image

    return _thumbnail(load_sample_image(name, index, data), side)
