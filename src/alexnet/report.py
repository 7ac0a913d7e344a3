"""One self-contained HTML page about a training run. Its first screen is a summary a person reads (what model,
which data, how many epochs, the best and the final or test figures); then the curves (metrics.csv), final metrics
and confusion matrix (eval.json, or a fresh evaluation), conv1's kernels (the paper's Figure 3), the most
confidently misclassified validation images, and the raw configuration folded away at the end. Pictures come
from `alexnet.plots` and are embedded as base64 PNG/JPEG, so the page can be sent alone; the run folder is read
through `alexnet.rundir`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import rundir
from .ablate_report import html_section as ablation_section
from .data.fileio import atomic_write_text
from .errors import AlexnetError
from .plots import PlotError, load_thumbnail, plot_confusion, plot_curves, plot_filters, read_metrics
from .runtime import FP32, Precision

__all__ = ["report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
img.plot{max-width:100%;height:auto}.note{color:#777}.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:140px;font-size:.8em;text-align:center}figure img{width:128px;height:128px}
table.summary th{width:12em}details{margin-top:2em}summary{cursor:pointer;font-weight:600}
"""


def _img_tag(data: bytes, mime: str, alt: str, cls: str = "") -> str:
    b64 = base64.b64encode(data).decode("ascii")
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{html.escape(alt)}" src="data:{mime};base64,{b64}">'


def _jpeg(img: torch.Tensor, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _find_weights(run: Path) -> Path | None:
    return rundir.RunDir(run).weights()


def _metrics_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f'<tr><th class="l">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>' for k, v in rows)
    return f"<table>{body}</table>"


def _pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * float(x):.2f} %"


@dataclass
class _Page:
    """The page as it is built: its HTML parts and the notes gathered on the way."""

    parts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- the sections -------------------------------------------------------------------------------------------------
def _read_config(run: Path, page: _Page) -> dict[str, Any]:
    """config.json as a dict ({} when absent or unreadable, with a note)."""
    cfg_path = run / rundir.CONFIG
    if not cfg_path.is_file():
        page.notes.append("no config.json in this run folder")
        return {}
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        page.notes.append(f"config.json is unreadable: {e}")
        return {}
    return config if isinstance(config, dict) else {}


def _config_section(config: dict[str, Any], page: _Page) -> None:
    """The raw configuration, folded away: the summary says what a reader needs first."""
    if not config:
        return
    text = html.escape(json.dumps(config, indent=2, sort_keys=True))
    page.parts.append(f"<details><summary>Configuration (config.json)</summary><pre>{text}</pre></details>")


def _describe_weights(weights: Path | None) -> str | None:
    """The model in words (`alexnet.weights.describe_config`), from the weights file's metadata."""
    from .models import AlexNetConfig
    from .weights import describe_config, read_metadata

    if weights is None:
        return None
    try:
        meta = read_metadata(weights)
        if meta.get("description"):
            return str(meta["description"])
        return describe_config(AlexNetConfig.from_dict(json.loads(meta["config"]))) if "config" in meta else None
    except (AlexnetError, KeyError, ValueError, TypeError):
        return None


def _summary_section(
    run: Path, cfg: dict[str, Any], rows: list[dict[str, float]], evaluation: dict[str, Any] | None,
    weights: Path | None, page: _Page,
) -> None:  # fmt: skip
    """The first screen: architecture, data, epochs, the best epoch's and the final (or test) figures."""
    page.parts.append("<h2>Summary</h2>")
    items: list[tuple[str, str]] = []
    described = _describe_weights(weights)
    arch = cfg.get("arch")
    if described or arch:
        items.append(("model", described or str(arch)))
    if cfg.get("weights"):
        items.append(("started from", str(cfg["weights"])))
    if cfg.get("data"):
        val = cfg.get("val_split") or 0
        items.append(("data", str(cfg["data"]) + (f" ({float(val):.0%} held out for validation)" if val else "")))
    if rows or cfg.get("epochs"):
        done = f"{rows[-1]['epoch'] if rows else 0:g}"
        items.append(("epochs", f"{done} of {cfg['epochs']}" if cfg.get("epochs") else done))
    valid = [r for r in rows if math.isfinite(r.get("val_top1_accuracy", math.nan))]
    if valid:
        best = max(valid, key=lambda r: r["val_top1_accuracy"])
        items.append(
            ("best epoch", f"{best['epoch']:g}: validation top-1 error {_pct(1 - best['val_top1_accuracy'])}, "
             f"top-5 error {_pct(1 - best.get('val_top5_accuracy', math.nan))}")
        )  # fmt: skip
    if evaluation is not None:
        what = "test" if (evaluation.get("data") or {}).get("split") == "test" else "final"
        items.append(
            (f"{what} figures", f"top-1 error {_pct(evaluation.get('top1_error'))}, top-5 error "
             f"{_pct(evaluation.get('top5_error'))} on {evaluation.get('num_samples', 0):,} images")
        )  # fmt: skip
    if weights is not None:
        items.append(("weights", weights.name))
    body = "".join(f'<tr><th class="l">{html.escape(k)}</th><td class="l">{html.escape(v)}</td></tr>' for k, v in items)
    page.parts.append(f'<table class="summary">{body}</table>' if items else _note(f"{run}: nothing to summarise"))


def _read_rows(run: Path, page: _Page) -> list[dict[str, float]]:
    """metrics.csv's rows ([] without one; its warnings become the page's notes)."""
    if not (run / rundir.METRICS).is_file():
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rows = read_metrics(run / rundir.METRICS)
        except PlotError as e:
            page.notes.append(str(e))
            rows = []
    page.notes += [str(w.message) for w in caught]
    return rows


def _curves_section(run: Path, rows: list[dict[str, float]], page: _Page) -> None:
    page.parts.append("<h2>Training curves</h2>")
    if not rows:
        page.parts.append(_note("no complete epoch in metrics.csv" if (run / rundir.METRICS).is_file() else
                                "no metrics.csv in this run folder"))  # fmt: skip
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read once above, its warnings noted there
        page.parts.append(_img_tag(plot_curves(run), "image/png", "training curves", "plot"))


def _diagnostics_section(run: Path, page: _Page) -> None:
    """What the training's checks found (diagnostics.json, docs/DIAGNOSTICS.md): one line per warning."""
    from .train.diagnostics import read_diagnostics

    if not (run / rundir.DIAGNOSTICS).is_file():
        return
    doc = read_diagnostics(run)
    page.parts.append("<h2>Diagnostics</h2>")
    found = [f for f in doc.get("findings", []) if isinstance(f, dict)]
    items = "".join(f"<li><b>{html.escape(str(f.get('kind')))}</b>: {html.escape(str(f.get('message')))}</li>"
                    for f in found)  # fmt: skip
    page.parts.append(f"<ul>{items}</ul>" if found else _note("no warning: the training's checks found nothing"))
    page.notes += [str(n) for n in doc.get("notes", [])]


@dataclass
class _EvalRequest:
    """How `report` was asked to evaluate (``data``: a data source; ``fresh``: the run's own data allowed)."""

    data: str | Path | None
    fresh: bool
    top: int
    ten_crop: bool
    batch_size: int
    workers: int | None
    device: str | torch.device | None
    precision: Precision = FP32
    progress: str | bool = "none"


def _evaluation(
    run: Path, cfg: dict[str, Any], req: _EvalRequest, page: _Page
) -> tuple[dict[str, Any] | None, str, Path | None]:
    """(the evaluation to show, where it comes from, the weights it is of): the run's eval.json, or a fresh
    evaluation that also names the misclassified images (train's eval.json has the counts only)."""
    from .eval_metrics import EvaluationError, read_eval_json

    evaluation: dict[str, Any] | None = None
    source = ""
    if (run / rundir.EVAL).is_file():
        try:
            evaluation, source = read_eval_json(run / rundir.EVAL), "the run's eval.json"
        except EvaluationError as e:
            page.notes.append(str(e))
    named = (evaluation or {}).get("weights")
    weights = run / str(named) if named and (run / str(named)).is_file() else _find_weights(run)
    own = cfg.get("data") if req.fresh and "misclassified" not in (evaluation or {}) else None
    target = req.data if req.data is not None else own
    if not target:
        return evaluation, source, weights
    try:
        if weights is None:
            raise PlotError(f"{run}: no best.safetensors or last.safetensors to evaluate")
        evaluation, source = _evaluate_now(weights, target, cfg, req)
    except AlexnetError as e:
        if req.data is not None:
            raise
        page.notes.append(f"could not evaluate {weights.name if weights else 'the run'} on {target}: {e}")
    return evaluation, source, weights


def _evaluate_now(weights: Path, target: str | Path, cfg: dict[str, Any], req: _EvalRequest) -> tuple[dict, str]:
    from .evaluate import evaluate_dataset

    same = cfg.get("data") and Path(str(cfg["data"])).resolve() == Path(str(target)).resolve()
    result = evaluate_dataset(
        weights,
        target,
        ten_crop=req.ten_crop,
        split="val" if same and req.data is None else None,
        val_split=float(cfg.get("val_split", 0.0)) if same else 0.0,
        seed=int(cfg.get("seed", 0)) if same else 0,
        batch_size=req.batch_size,
        workers=req.workers,
        device=req.device,
        precision=req.precision,
        progress=req.progress,
        collect=True,
    )
    source = f"{weights.name} evaluated now on {target} ({result.data['split'] if result.data else 'val'})"
    return result.to_dict(top_misclassified=req.top), source


def _final_metrics_section(
    evaluation: dict[str, Any] | None, source: str, last_row: dict[str, float] | None, page: _Page
) -> None:
    page.parts.append("<h2>Final metrics</h2>")
    if evaluation is not None:
        crop = "10-crop" if evaluation.get("ten_crop") else "centre crop"
        loss = evaluation.get("loss")
        page.parts.append(_note(f"{source}, {crop}"))
        rows = [
            ("samples", f"{evaluation['num_samples']:,}"),
            ("top-1 error", _pct(evaluation.get("top1_error"))),
            ("top-5 error", _pct(evaluation.get("top5_error"))),
            ("loss", "n/a" if loss is None else f"{loss:.4f}"),
            ("bad images skipped", str(len(evaluation.get("skipped", [])))),
        ]
        page.parts.append(_metrics_table(rows))
    elif last_row is not None:
        page.parts.append(_note(f"no eval.json: the last epoch of metrics.csv (epoch {last_row['epoch']:g})"))
        rows = [
            ("validation top-1 error", _pct(1 - last_row.get("val_top1_accuracy", math.nan))),
            ("validation top-5 error", _pct(1 - last_row.get("val_top5_accuracy", math.nan))),
            ("validation loss", f"{last_row.get('val_loss', math.nan):.4f}"),
            ("training top-1 error", _pct(1 - last_row.get("train_top1_accuracy", math.nan))),
        ]
        page.parts.append(_metrics_table(rows))
    else:
        page.parts.append(_note("no eval.json and no metrics.csv"))


def _confusion_section(evaluation: dict[str, Any] | None, page: _Page) -> None:
    page.parts.append("<h2>Confusion matrix</h2>")
    if evaluation is None:
        page.parts.append(_note("no evaluation (eval.json) in this run folder"))
        return
    page.parts.append(_img_tag(plot_confusion(evaluation), "image/png", "confusion matrix", "plot"))
    per = evaluation.get("per_class_accuracy", {})
    if per and len(per) <= 100:
        body = "".join(f'<tr><td class="l">{html.escape(str(k))}</td><td>{_pct(v)}</td></tr>' for k, v in per.items())
        page.parts.append(f'<table><tr><th class="l">class</th><th>accuracy</th></tr>{body}</table>')


def _filters_section(weights: Path | None, page: _Page) -> None:
    page.parts.append("<h2>conv1 kernels</h2>")
    if weights is None:
        page.parts.append(_note("no best.safetensors or last.safetensors in this run folder"))
        return
    try:
        page.parts.append(_note(f"from {weights.name}"))
        page.parts.append(_img_tag(plot_filters(weights), "image/png", "conv1 kernels", "plot"))
    except AlexnetError as e:
        page.parts.append(_note(str(e)))


def _misclassified_figure(w: dict[str, Any], data: dict[str, Any] | None) -> tuple[str, bool]:
    """One image's figure and whether its picture was found."""
    try:
        img = load_thumbnail(w.get("name", ""), int(w.get("index", -1)), data)
    except AlexnetError:
        img = None
    name = "/".join(Path(str(w.get("name", ""))).parts[-2:]) or f"#{w.get('index')}"
    cap = (
        f"<b>{html.escape(str(w['predicted']))}</b> {100 * float(w['confidence']):.1f}%<br>"
        f"true: {html.escape(str(w['label']))}<br><small>{html.escape(name)}</small>"
    )
    pic = _img_tag(_jpeg(img), "image/jpeg", name) if img is not None else "<p>(image not found)</p>"
    return f"<figure>{pic}<figcaption>{cap}</figcaption></figure>", img is not None


def _misclassified_section(run: Path, evaluation: dict[str, Any] | None, top: int, page: _Page) -> None:
    page.parts.append("<h2>Most confidently misclassified validation images</h2>")
    wrong = (evaluation or {}).get("misclassified")
    if wrong is None:
        page.parts.append(
            '<p class="note">the evaluation holds no per-image predictions; '
            f"evaluate the weights with: alexnet report {html.escape(str(run))} --data VAL_DATA</p>"
        )
        return
    if not wrong:
        page.parts.append(_note("no validation image is misclassified"))
        return
    shown = [_misclassified_figure(w, (evaluation or {}).get("data")) for w in wrong[:top]]
    page.parts.append(f'<div class="grid">{"".join(fig for fig, _ in shown)}</div>')
    missing = sum(not found for _, found in shown)
    if missing:
        page.notes.append(f"{missing} misclassified images could not be found to show them")


def _html(title: str, page: _Page) -> str:
    parts = list(page.parts)
    if page.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in dict.fromkeys(page.notes))
        parts.append(f'<h2>Notes</h2><ul class="note">{items}</ul>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )


def report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    data: str | Path | None = None,
    top: int = 24,
    ten_crop: bool = False,
    batch_size: int = 64,
    workers: int | None = 0,
    device: str | torch.device | None = None,
    evaluate: bool = True,
    precision: Precision = FP32,
    progress: str | bool = "none",
) -> Path:
    """One self-contained HTML page about a training run: a summary first (model, data, epochs, best and final
    figures), then curves (metrics.csv), final metrics and confusion matrix (eval.json), conv1's kernels (best or
    last weights), and the ``top`` most confidently misclassified validation images. Pictures are embedded as
    base64 PNG/JPEG, so the page can be sent alone; the raw configuration is folded away at the end. The run's
    eval.json gives the final metrics; to name the misclassified images the weights it names (else best, else
    last) are evaluated afresh on ``data``, or with ``evaluate`` on the validation split of the run's own data
    (config.json), and that evaluation is shown instead (eval.json is left as it is).
    Written atomically to ``out`` (default RUN_DIR/report.html)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise PlotError(f"{run}: no such run folder")
    out = Path(out) if out is not None else rundir.RunDir(run).report
    if (run / "ablation.json").is_file() and not rundir.RunDir(run).config.is_file():  # an `alexnet ablate` folder
        title = f"alexnet ablation: {run.resolve().name}"
        body = f"<h1>{html.escape(title)}</h1>{ablation_section(run)}"
        return atomic_write_text(out, _html(title, _Page(parts=[body])))
    title = f"alexnet run: {run.resolve().name}"
    page = _Page(parts=[f"<h1>{html.escape(title)}</h1>"])
    cfg = _read_config(run, page)
    rows = _read_rows(run, page)
    req = _EvalRequest(data, evaluate, top, ten_crop, batch_size, workers, device, precision, progress)
    evaluation, source, weights = _evaluation(run, cfg, req, page)
    _summary_section(run, cfg, rows, evaluation, weights, page)
    _curves_section(run, rows, page)
    _diagnostics_section(run, page)
    _final_metrics_section(evaluation, source, rows[-1] if rows else None, page)
    _confusion_section(evaluation, page)
    _filters_section(weights, page)
    _misclassified_section(run, evaluation, top, page)
    _config_section(cfg, page)
    return atomic_write_text(out, _html(title, page))
