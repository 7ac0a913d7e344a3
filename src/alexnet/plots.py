"""Pictures: conv1's kernels (the paper's Figure 3), training curves, the confusion matrix and nearest neighbours
(Figure 4). The HTML report of a run that embeds them is `alexnet.report`.

Everything is drawn with matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg: no display, no
global pyplot state) and `torchvision.utils.make_grid`. Every file is written atomically, and a PNG's pixel size
is exactly the ``size`` asked for (no tight bounding box), so pictures of two runs line up.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn
from torchvision.utils import make_grid

from . import rundir
from .data.fileio import atomic_write
from .errors import AlexnetError
from .models import AlexNet
from .options import WeightsSource
from .rundir import METRICS_COLUMNS
from .runtime import unwrap_model

__all__ = [
    "PlotError",
    "METRICS_COLUMNS",
    "read_metrics",
    "filter_grids",
    "plot_filters",
    "plot_curves",
    "plot_confusion",
    "plot_neighbors",
    "load_thumbnail",
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


def _text_outside(fig: Figure, margin: float = 2.0) -> dict[str, float]:
    """How many pixels of the figure's texts (labels, titles, tick labels) lie beyond each edge of the picture
    (``left``, ``right``, ``bottom``, ``top``; 0 where none), as drawn: what a reader would see cut."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    if not boxes:
        return {"left": 0.0, "right": 0.0, "bottom": 0.0, "top": 0.0}
    w, h = fig.bbox.width, fig.bbox.height
    return {
        "left": max(0.0, margin - min(b.x0 for b in boxes)),
        "right": max(0.0, max(b.x1 for b in boxes) - (w - margin)),
        "bottom": max(0.0, margin - min(b.y0 for b in boxes)),
        "top": max(0.0, max(b.y1 for b in boxes) - (h - margin)),
    }


def _keep_text_inside(fig: Figure, tries: int = 3) -> None:
    """Move the axes in until no text is cut at the picture's edges (`_text_outside`): tight_layout measures the
    tick labels, not always the axis labels beyond them (a short class name left "true class" at the edge)."""
    w, h = fig.bbox.width, fig.bbox.height
    for _ in range(tries):
        out = _text_outside(fig)
        if not any(out.values()):
            return
        p = fig.subplotpars
        fig.subplots_adjust(
            left=min(p.left + out["left"] / w, 0.45),
            right=max(p.right - out["right"] / w, 0.55),
            bottom=min(p.bottom + out["bottom"] / h, 0.45),
            top=max(p.top - out["top"] / h, 0.55),
        )


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _write_bytes(data: bytes, out: str | Path) -> Path:
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


def _load(weights: WeightsSource | str | Path | nn.Module) -> AlexNet:
    if isinstance(weights, nn.Module):
        model = unwrap_model(weights)
    else:
        from .weights import load_model

        model, _ = load_model(WeightsSource.of(weights))
    if not isinstance(model, AlexNet):
        raise PlotError("expected an alexnet.AlexNet model")
    return model


def plot_filters(
    weights: WeightsSource | str | Path | nn.Module,
    out: str | Path | None = None,
    *,
    size: tuple[int, int] = (1200, 900),
) -> bytes:
    """conv1's kernels as one picture (the paper's Figure 3); returns the PNG bytes and writes ``out``.
    ``weights``: a model, or a `WeightsSource` (a name or path alone is its ``source``)."""
    model = _load(weights)
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
    """Rows of a run's ``metrics.csv`` (one per epoch), as floats (NaN where a value is empty): the run folder's
    one reader, `alexnet.rundir.read_metrics` (a partial last line is dropped with a warning; when a resumed run
    repeated an epoch, its last row wins), with its errors as `PlotError` and a file without a complete epoch
    refused (there is nothing to draw)."""
    try:
        rows = rundir.read_metrics(path)
    except rundir.RunDirError as e:
        raise PlotError(str(e)) from None
    if not rows:
        where = Path(path) / rundir.METRICS if Path(path).is_dir() else Path(path)
        raise PlotError(f"{where}: no complete epoch yet")
    return rows


def plot_curves(
    source: str | Path, out: str | Path | None = None, *, size: tuple[int, int] = (1500, 450), title: str | None = None
) -> bytes:
    """Loss, top-1/top-5 error (the paper's measures, drawn in percent) and learning rate per epoch, from the run's
    ``metrics.csv`` only; returns the PNG bytes and writes ``out``."""
    rows = read_metrics(source)
    col = {k: [r.get(k, math.nan) for r in rows] for k in METRICS_COLUMNS}
    epochs = col["epoch"]
    err = {
        k: [100.0 * (1.0 - v) for v in col[k]]
        for k in ("train_top1_accuracy", "val_top1_accuracy", "val_top5_accuracy")
    }  # fractions
    fig = _figure(size)
    ax_loss, ax_err, ax_lr = fig.subplots(1, 3)
    marker = "o" if len(rows) < 30 else None
    ax_loss.plot(epochs, col["train_loss"], marker=marker, label="train")
    ax_loss.plot(epochs, col["val_loss"], marker=marker, label="validation")
    ax_loss.set(title="loss (cross-entropy)", xlabel="epoch")
    ax_err.plot(epochs, err["train_top1_accuracy"], marker=marker, label="train top-1")
    ax_err.plot(epochs, err["val_top1_accuracy"], marker=marker, label="validation top-1")
    ax_err.plot(epochs, err["val_top5_accuracy"], marker=marker, label="validation top-5")
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
    from .eval_metrics import read_eval_json

    d = read_eval_json(evaluation) if not isinstance(evaluation, dict) else evaluation
    m = torch.tensor(d["confusion_matrix"], dtype=torch.float64)
    names = [str(n) for n in d["classes"]]
    c = len(names)
    shown = m / m.sum(dim=1, keepdim=True).clamp_min(1) if normalize else m
    fig = _figure(size)
    ax = fig.subplots()
    im = ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(
        im,
        ax=ax,
        fraction=0.046,
        pad=0.04,
        label=("fraction of the true class" if size[1] >= 320 else "fraction") if normalize else "count",
    )
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
    wrap = "\n" if size[0] < 500 else " "  # a narrow picture: the title on two lines, not cut at both ends
    ax.set_title("confusion matrix" + (f"{wrap}(top-1 error {100 * top1:.2f}%)" if top1 is not None else ""))
    fig.tight_layout()
    _keep_text_inside(fig)  # the axis labels whole, however short or long the class names
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


def load_thumbnail(name: str, index: int = -1, data: dict[str, Any] | None = None, side: int = 128) -> torch.Tensor:
    """A data set entry's image as a uint8 (3, side, side) thumbnail (see `alexnet.features.load_sample_image`)."""
    from .features import load_sample_image

    return _thumbnail(load_sample_image(name, index, data), side)
