"""The outputs of `alexnet.ablate`: ``ablation.json``, the Markdown table, two pictures and an HTML section.

Every figure is a paired difference: variant minus ``full`` with the same seed (the same initial draw where the
shapes agree, the same data order and split), in percentage points of error, averaged over the seeds, with a
two-sided 95% Student t-interval (mean +- t(0.975, n-1) * sd / sqrt(n)). With one seed there is no spread to
estimate and the interval cannot be computed. A direction "agrees" with the paper when the whole interval lies on
the paper's side of zero, "disagrees" when it lies on the other side, and "cannot tell" when it holds zero.

Works from plain records (dicts), so the files can be rebuilt from ``ablation.json`` alone (`rebuild`).
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "t_quantile",
    "t_interval",
    "verdict",
    "summarize",
    "relu_tanh",
    "markdown",
    "plot_differences",
    "plot_relu_tanh",
    "Written",
    "write_outputs",
    "rebuild",
    "html_section",
]

# t(0.975, df) for df = 1..30 (two-sided 95%); beyond, a Cornish-Fisher expansion around the normal's 1.96.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_METRICS = (("top1", "centre", "top1_error"), ("top5", "centre", "top5_error"))


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95% t-interval of ``values``; low/high are None with fewer than two values."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "low": None, "high": None, "sd": None}
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": 1, "mean": mean, "low": None, "high": None, "sd": None}
    sd = statistics.stdev(values)
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half, "sd": sd}


def verdict(interval: dict[str, Any], expect: int) -> str:
    """Whether the interval of a difference sides with the paper (``expect`` the sign it claims)."""
    if interval["n"] == 0:
        return "no runs"
    if interval["low"] is None:
        return "interval cannot be computed (1 seed)"
    if expect == 0:
        return "no sign claimed"
    if interval["low"] > 0 or interval["high"] < 0:
        return "agrees" if (interval["low"] > 0) == (expect > 0) else "disagrees"
    return "cannot tell"


def _by_key(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["variant"], int(r["seed"])): r for r in records}


def _paired(records: list[dict[str, Any]], variant: str, get: Any) -> list[float]:
    """variant minus full, seed by seed, in percentage points, over the seeds where both finished."""
    runs = _by_key(records)
    seeds = sorted(s for v, s in runs if v == variant and ("full", s) in runs)
    return [100.0 * (get(runs[(variant, s)]) - get(runs[("full", s)])) for s in seeds]


def _absolute(records: list[dict[str, Any]], variant: str) -> dict[str, Any]:
    """Means over the seeds of one variant, in percent."""
    mine = [r for r in records if r["variant"] == variant]

    def mean(get: Any) -> float | None:
        vals = [get(r) for r in mine if get(r) is not None]
        return 100.0 * statistics.fmean(vals) if vals else None

    reached = [r["epochs_to_threshold"] for r in mine if r["epochs_to_threshold"] is not None]
    return {
        "seeds": sorted(int(r["seed"]) for r in mine),
        "top1_centre": mean(lambda r: r["centre"]["top1_error"]),
        "top1_ten": mean(lambda r: r["ten_crop"]["top1_error"]),
        "top5_centre": mean(lambda r: r["centre"]["top5_error"]),
        "top5_ten": mean(lambda r: r["ten_crop"]["top5_error"]),
        "train_error": mean(lambda r: r["final_train_error"]),
        "gap": mean(lambda r: r["centre"]["top1_error"] - r["final_train_error"]),
        "epochs_to_threshold": statistics.fmean(reached) if reached else None,
        "reached": f"{len(reached)}/{len(mine)}",
        "train_seconds": statistics.fmean([r["train_seconds"] for r in mine]) if mine else None,
    }


def summarize(records: list[dict[str, Any]], variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant (and one for ten patches against the centre crop, on ``full``'s runs)."""
    rows = []
    for name, info in variants.items():
        row = {"variant": name, "description": info["description"], "switch": info["switch"], "paper": info["paper"]}
        row.update(paper_top1=info.get("paper_top1"), paper_top5=info.get("paper_top5"), expect=info["expect"])
        row["absolute"] = _absolute(records, name)
        if name != "full":
            for key, crop, metric in _METRICS:
                row[key] = t_interval(_paired(records, name, lambda r, c=crop, m=metric: r[c][m]))
            row["gap_diff"] = t_interval(
                _paired(records, name, lambda r: r["centre"]["top1_error"] - r["final_train_error"])
            )
            row["verdict"] = verdict(row["top1"], info["expect"])
        rows.append(row)
    full = [r for r in records if r["variant"] == "full"]
    if full:
        row = {"variant": "ten-crop", "description": "ten patches (corners, centre, mirrors) against the centre crop",
               "switch": "evaluation of full", "paper": "averages the softmax of ten patches at test time (4.1)",
               "paper_top1": None, "paper_top5": None, "expect": -1}  # fmt: skip
        for key, _crop, metric in _METRICS:
            row[key] = t_interval([100.0 * (r["ten_crop"][metric] - r["centre"][metric]) for r in full])
        row["verdict"] = verdict(row["top1"], -1)
        rows.append(row)
    return rows


def relu_tanh(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Figure 1's comparison: epochs and training seconds to the threshold, ReLU (full) and tanh, per seed."""
    runs = _by_key(records)
    seeds = sorted(s for v, s in runs if v == "tanh" and ("full", s) in runs)
    if not seeds:
        return None
    pairs = []
    for s in seeds:
        relu, tanh = runs[("full", s)], runs[("tanh", s)]
        pairs.append({"seed": s, **{f"{k}_{w}": r[f"{k}_to_threshold"] for w, r in (("relu", relu), ("tanh", tanh))
                                    for k in ("epochs", "seconds")}})  # fmt: skip
    both = [p for p in pairs if p["epochs_relu"] and p["epochs_tanh"]]
    ratio = statistics.median(p["epochs_tanh"] / p["epochs_relu"] for p in both) if both else None
    return {"threshold": records[0]["threshold"], "pairs": pairs, "median_epoch_ratio": ratio}


def _pp(v: float | None, signed: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _ci(iv: dict[str, Any]) -> str:
    if iv["n"] == 0:
        return "no runs"
    if iv["low"] is None:
        return f"{_pp(iv['mean'])} (1 seed: no interval)"
    return f"{_pp(iv['mean'])} [{_pp(iv['low'])}, {_pp(iv['high'])}]"


def _paper(row: dict[str, Any]) -> str:
    figs = [f"+{row[k]:.1f}" for k in ("paper_top1", "paper_top5") if row.get(k) is not None]
    return (" / ".join(figs) + ": " if figs else "") + row["paper"]


def _figure1_text(fig: dict[str, Any] | None) -> str:
    if fig is None:
        return "Figure 1 (ReLU against tanh): no finished pair of `full` and `tanh` runs."
    t = fig["threshold"]
    cells = "; ".join(
        f"seed {p['seed']}: ReLU {p['epochs_relu'] or 'not reached'}, tanh {p['epochs_tanh'] or 'not reached'}"
        for p in fig["pairs"]
    )
    ratio = fig["median_epoch_ratio"]
    tail = f"median ratio tanh/ReLU {ratio:.2f} (the paper: about 6)" if ratio else "no ratio: a run never got there"
    return f"Figure 1 analogue, epochs to {t:.0%} training error: {cells}; {tail}."


def markdown(rows: list[dict[str, Any]], fig: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    """The differences table, the absolute table and Figure 1's line, as Markdown."""
    partial = meta.get("runs_finished", "")
    partial = f" Runs finished: {partial}." if partial and partial.split(" of ")[0] != partial.split(" of ")[-1] else ""
    lines = [
        f"Seeds {meta['seeds']}; scale `{meta['scale']}`: {meta['train_samples']:,} training images, "
        f"{meta['test_samples']:,} test images ({meta['test_source']}), {meta['epochs']} epochs. Differences are "
        f"variant minus `full` in points of test error (centre crop), mean over seeds [95% t-interval].{partial}",
        "",
        "| variant | switch | top-1 error diff | top-5 error diff | paper (points, idea removed) | direction |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        if r["variant"] == "full":
            continue
        lines.append(
            f"| {r['variant']} | {r['switch']} | {_ci(r['top1'])} | {_ci(r['top5'])} | {_paper(r)} | {r['verdict']} |"
        )
    lines += [
        "",
        "| variant | top-1 centre | top-1 ten patches | top-5 centre | top-5 ten patches | final train error | "
        "test - train | epochs to threshold (reached) | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a = r.get("absolute")
        if a is None:
            continue
        cells = [_pp(a[k], False) for k in ("top1_centre", "top1_ten", "top5_centre", "top5_ten", "train_error")]
        ept = f"{a['epochs_to_threshold']:.1f}" if a["epochs_to_threshold"] is not None else "-"
        secs = f"{a['train_seconds']:.0f}" if a["train_seconds"] is not None else "-"
        lines.append(f"| {r['variant']} | {' | '.join(cells)} | {_pp(a['gap'])} | {ept} ({a['reached']}) | {secs} |")
    lines += ["", _figure1_text(fig), "", f"What this scale cannot show: {meta['cannot_show']}."]
    return "\n".join(lines) + "\n"


def plot_differences(rows: list[dict[str, Any]], path: Path) -> Path:
    """Each variant's mean difference from full with its interval (top-1 and top-5), the paper's figure as x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["variant"] != "full"]
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(shown) + 1.5))
    for j, (key, colour) in enumerate((("top1", "tab:blue"), ("top5", "tab:orange"))):
        for i, r in enumerate(shown):
            iv, y = r[key], i + (j - 0.5) * 0.3
            if iv["mean"] is None:
                continue
            err = None if iv["low"] is None else [[iv["mean"] - iv["low"]], [iv["high"] - iv["mean"]]]
            ax.errorbar(iv["mean"], y, xerr=err, fmt="o", color=colour, capsize=3, label=key if i == 0 else None)
            paper = r.get(f"paper_{key}")
            if paper is not None:
                ax.plot(paper, y, "x", color=colour, markersize=8)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(range(len(shown)), [r["variant"] for r in shown])
    ax.invert_yaxis()
    ax.set_xlabel("test error, variant minus full (points); x: the paper's figure")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_relu_tanh(records: list[dict[str, Any]], threshold: float, path: Path) -> Path | None:
    """Figure 1 analogue: training error against training seconds and epochs, ReLU (full) and tanh, each seed."""
    mine = [r for r in records if r["variant"] in ("full", "tanh")]
    if not any(r["variant"] == "tanh" for r in mine):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labelled: set[str] = set()
    for r in mine:
        style = {"color": "tab:blue" if r["variant"] == "full" else "tab:red", "alpha": 0.8}
        label = None if r["variant"] in labelled else ("ReLU (full)" if r["variant"] == "full" else "tanh")
        labelled.add(r["variant"])
        c = r["curve"]
        err = [100 * p["train_error"] for p in c]
        axes[0].plot([p["seconds"] for p in c], err, "o-", label=label, **style)
        axes[1].plot([p["epoch"] for p in c], err, "o-", **style)
    for ax, xl in zip(axes, ("training seconds", "epoch")):
        ax.axhline(100 * threshold, ls="--", color="grey", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel("training error (%, mean over the epoch)")
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8, title="one line per seed", title_fontsize=7)
    fig.suptitle(f"ReLU against tanh (the paper's Figure 1); dashed: {threshold:.0%}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class Written:
    summary: list[dict[str, Any]]
    table: str
    files: dict[str, Path]


def write_outputs(
    out: Path, records: list[dict[str, Any]], variants: dict[str, dict[str, Any]], meta: dict[str, Any]
) -> Written:
    """ablation.json, ablation.md, differences.png and relu_tanh.png in ``out``."""
    from .data.fileio import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(records, variants)
    fig = relu_tanh(records)
    table = markdown(rows, fig, meta)
    doc = {"meta": meta, "variants": variants, "summary": rows, "figure1": fig, "runs": records}
    files = {"json": atomic_write_text(out / "ablation.json", json.dumps(doc, indent=2) + "\n")}
    files["markdown"] = atomic_write_text(out / "ablation.md", table)
    files["differences"] = plot_differences(rows, out / "differences.png")
    curves = plot_relu_tanh(records, meta["threshold"], out / "relu_tanh.png")
    if curves is not None:
        files["relu_tanh"] = curves
    return Written(rows, table, files)


def rebuild(out: str | Path) -> Written:
    """Write the table and pictures again from ``out/ablation.json`` (e.g. after a change of layout)."""
    doc = json.loads((Path(out) / "ablation.json").read_text(encoding="utf-8"))
    return write_outputs(Path(out), doc["runs"], doc["variants"], doc["meta"])


def _img(path: Path) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def html_section(out: str | Path) -> str:
    """An HTML ``<section>`` for the run report: the differences table, Figure 1's line and both pictures
    (inlined). Empty string when ``out`` holds no ablation.json."""
    path = Path(out) / "ablation.json"
    if not path.is_file():
        return ""
    doc = json.loads(path.read_text(encoding="utf-8"))
    esc = html.escape
    head = "".join(f"<th>{h}</th>" for h in ("variant", "switch", "top-1 diff", "top-5 diff", "paper", "direction"))
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in
                         (r["variant"], r["switch"], _ci(r["top1"]), _ci(r["top5"]), _paper(r), r["verdict"])) + "</tr>"
        for r in doc["summary"] if r["variant"] != "full"
    )  # fmt: skip
    meta = doc["meta"]
    return (
        '<section id="ablation"><h2>Ablation</h2>'
        f"<p>{esc(meta['command'])} ({esc(meta['date'])}); seeds {esc(str(meta['seeds']))}. Variant minus full, "
        "points of test error (centre crop), mean [95% t-interval].</p>"
        f"<table><tr>{head}</tr>{body}</table>"
        f"<p>{esc(_figure1_text(doc.get('figure1')))}</p>"
        f"<p>What this scale cannot show: {esc(meta['cannot_show'])}.</p>"
        f"{_img(Path(out) / 'differences.png')}{_img(Path(out) / 'relu_tanh.png')}</section>"
    )
