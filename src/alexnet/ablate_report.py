"""The outputs of `alexnet.ablate`: ``ablation.json``, the Markdown table, two pictures and an HTML section.

Every figure is a paired difference: variant minus ``full`` with the same seed (the same initial draw where the
shapes agree, the same data order and split), in percentage points of error, averaged over the seeds, with a
two-sided 95% Student t-interval (mean +- t(0.975, n-1) * sd / sqrt(n)) cut to [-100, +100], the range a
difference of error rates can take. With one seed there is no spread to estimate and the interval cannot be
computed. A direction "agrees" with the paper when the whole interval lies on the paper's side of zero,
"disagrees" when it lies on the other side, and "cannot tell" when it holds zero. Beside it, McNemar's exact test
on the test images the two models classify differently, pooled over the seeds (`alexnet.ablate_stats`).

A run that diverged (loss not finite, or training error near chance after the first epoch) is counted and named,
and kept out of every mean: it measures an accident of that seed, not the idea the variant takes away.

Every sentence about the run (counts, epochs, seeds, what the scale cannot show) is made from the run's own
settings in ``meta``. Works from plain records (dicts), so the files can be rebuilt from ``ablation.json`` alone
(`rebuild`), older records included (fields added since are optional).
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

from .ablate_stats import (
    BOUND,
    discordant,
    mcnemar_exact,
    paired_interval,
    t_interval,
    t_quantile,
    unpack_bits,
    verdict,
)

__all__ = [
    "plural",
    "t_quantile",
    "t_interval",
    "verdict",
    "mcnemar_exact",
    "summarize",
    "relu_tanh",
    "cannot_show",
    "markdown",
    "plot_differences",
    "plot_relu_tanh",
    "Written",
    "write_outputs",
    "rebuild",
    "html_section",
]

_METRICS = (("top1", "centre", "top1_error"), ("top5", "centre", "top5_error"))


def _ok(r: dict[str, Any]) -> bool:
    """A run that counts: finished, evaluated, not diverged."""
    return not r.get("diverged") and r.get("centre") is not None


def _by_key(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["variant"], int(r["seed"])): r for r in records if _ok(r)}


def _pair_seeds(records: list[dict[str, Any]], variant: str) -> list[int]:
    runs = _by_key(records)
    return sorted(s for v, s in runs if v == variant and ("full", s) in runs)


def _paired(records: list[dict[str, Any]], variant: str, get: Any) -> list[float]:
    """variant minus full, seed by seed, in percentage points, over the seeds where neither diverged."""
    runs = _by_key(records)
    return [100.0 * (get(runs[(variant, s)]) - get(runs[("full", s)])) for s in _pair_seeds(records, variant)]


def _bits(r: dict[str, Any], crop: str) -> list[bool] | None:
    hexed = (r.get(crop) or {}).get("correct")
    return None if hexed is None else unpack_bits(hexed, int(r["test_samples"]))


def _mcnemar(pairs: list[tuple[dict[str, Any], str, dict[str, Any], str]]) -> dict[str, Any] | None:
    """McNemar's exact test pooled over the seeds: b = images the reference gets right and the other wrong, c
    the reverse, summed over (reference, other) pairs of runs on the same test images; with the difference's
    per-image 95% interval (`paired_interval`, over the pooled images). Per seed too."""
    per_seed, images = [], 0
    for ref, ref_crop, other, other_crop in pairs:
        a, o = _bits(ref, ref_crop), _bits(other, other_crop)
        if a is None or o is None or len(a) != len(o):
            return None
        b, c = discordant(a, o)
        images += len(a)
        per_seed.append({"seed": int(ref["seed"]), "b": b, "c": c, "p": mcnemar_exact(b, c)})
    if not per_seed or not images:
        return None
    b, c = sum(x["b"] for x in per_seed), sum(x["c"] for x in per_seed)
    return {"b": b, "c": c, "p": mcnemar_exact(b, c), "images": images, "interval": paired_interval(b, c, images),
            "pooled": "over seeds", "seeds": per_seed}  # fmt: skip


def _diverged(records: list[dict[str, Any]], variant: str) -> list[dict[str, Any]]:
    return [
        {"seed": int(r["seed"]), "why": r["diverged"]} for r in records if r["variant"] == variant and r.get("diverged")
    ]


def _absolute(records: list[dict[str, Any]], variant: str) -> dict[str, Any]:
    """Means over the seeds of one variant, in percent; diverged runs counted, not averaged."""
    every = [r for r in records if r["variant"] == variant]
    mine = [r for r in every if _ok(r)]

    def mean(get: Any) -> float | None:
        vals = [get(r) for r in mine if get(r) is not None]
        return 100.0 * statistics.fmean(vals) if vals else None

    reached = [r["epochs_to_threshold"] for r in mine if r["epochs_to_threshold"] is not None]
    return {
        "seeds": sorted(int(r["seed"]) for r in mine),
        "diverged": len(every) - len(mine),
        "top1_centre": mean(lambda r: r["centre"]["top1_error"]),
        "top1_ten": mean(lambda r: (r["ten_crop"] or {}).get("top1_error")),  # None: not tested on ten patches
        "top5_centre": mean(lambda r: r["centre"]["top5_error"]),
        "top5_ten": mean(lambda r: (r["ten_crop"] or {}).get("top5_error")),
        "train_error": mean(lambda r: r["final_train_error"]),
        "gap": mean(lambda r: r["centre"]["top1_error"] - r["final_train_error"]),
        "epochs_to_threshold": statistics.fmean(reached) if reached else None,
        "reached": f"{len(reached)}/{len(mine)}",
        "train_seconds": statistics.fmean([r["train_seconds"] for r in every]) if every else None,
    }


def summarize(records: list[dict[str, Any]], variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant (and one for ten patches against the centre crop, on ``full``'s runs)."""
    rows = []
    runs = _by_key(records)
    for name, info in variants.items():
        row = {"variant": name, "description": info["description"], "switch": info["switch"], "paper": info["paper"]}
        row.update(paper_top1=info.get("paper_top1"), paper_top5=info.get("paper_top5"), expect=info["expect"])
        row["absolute"] = _absolute(records, name)
        row["diverged"] = _diverged(records, name)
        if name != "full":
            for key, crop, metric in _METRICS:
                row[key] = t_interval(_paired(records, name, lambda r, c=crop, m=metric: r[c][m]))
            row["gap_diff"] = t_interval(
                _paired(records, name, lambda r: r["centre"]["top1_error"] - r["final_train_error"])
            )
            seeds = _pair_seeds(records, name)
            row["mcnemar"] = _mcnemar([(runs[("full", s)], "centre", runs[(name, s)], "centre") for s in seeds])
            row["verdict"] = verdict(row["top1"], info["expect"])
        rows.append(row)
    full = [r for r in records if r["variant"] == "full" and _ok(r) and r.get("ten_crop")]
    if full:
        row = {"variant": "ten-crop", "description": "ten patches (corners, centre, mirrors) against the centre crop",
               "switch": "evaluation of full", "paper": "averages the softmax of ten patches at test time (4.1)",
               "paper_top1": None, "paper_top5": None, "expect": -1, "diverged": []}  # fmt: skip
        for key, _crop, metric in _METRICS:
            row[key] = t_interval([100.0 * (r["ten_crop"][metric] - r["centre"][metric]) for r in full])
        row["mcnemar"] = _mcnemar([(r, "centre", r, "ten_crop") for r in full])
        row["verdict"] = verdict(row["top1"], -1)
        rows.append(row)
    return rows


def relu_tanh(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Figure 1's comparison per seed: epochs, training seconds and images seen (step granularity: the first
    window of steps at or below the threshold) until the threshold, ReLU (full) and tanh. The ratio of images
    seen is the paper's "six times faster"; when tanh never gets there, the images it saw give a lower bound."""
    runs = {(r["variant"], int(r["seed"])): r for r in records if not r.get("diverged")}
    seeds = sorted(s for v, s in runs if v == "tanh" and ("full", s) in runs)
    if not seeds:
        return None
    pairs = []
    for s in seeds:
        relu, tanh = runs[("full", s)], runs[("tanh", s)]
        pair: dict[str, Any] = {"seed": s}
        for w, r in (("relu", relu), ("tanh", tanh)):
            for k in ("epochs", "seconds", "images"):
                pair[f"{k}_{w}"] = r.get(f"{k}_to_threshold")
            pair[f"seen_{w}"] = r.get("images_seen")
        pair["ratio"] = pair["at_least"] = None
        if pair["images_relu"] and relu.get("steps_complete") and tanh.get("steps_complete"):
            if pair["images_tanh"]:
                pair["ratio"] = pair["images_tanh"] / pair["images_relu"]
            elif pair["seen_tanh"]:
                pair["at_least"] = pair["seen_tanh"] / pair["images_relu"]
        pairs.append(pair)
    both = [p for p in pairs if p["epochs_relu"] and p["epochs_tanh"]]
    ratio = statistics.median(p["epochs_tanh"] / p["epochs_relu"] for p in both) if both else None
    measured = [p["ratio"] for p in pairs if p["ratio"] is not None]
    return {
        "threshold": records[0]["threshold"],
        "pairs": pairs,
        "median_epoch_ratio": ratio,
        "median_image_ratio": statistics.median(measured) if measured else None,
    }


def _pp(v: float | None, signed: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _ci(iv: dict[str, Any]) -> str:
    if iv["n"] == 0:
        return "no runs"
    if iv["low"] is None:
        return f"{_pp(iv['mean'])} (1 seed: no interval)"
    mark = "\u2020" if iv.get("clipped") else ""
    return f"{_pp(iv['mean'])} [{_pp(iv['low'])}, {_pp(iv['high'])}]{mark}"


def _top5_informative(meta: dict[str, Any]) -> bool:
    """With 5 classes or fewer the true class is always among the top 5: top-5 error is 0 by construction."""
    return int(meta.get("num_classes") or 1000) > 5


def _top5(iv: dict[str, Any], meta: dict[str, Any]) -> str:
    return _ci(iv) if _top5_informative(meta) else f"uninformative ({meta['num_classes']} classes)"


def _p(p: float) -> str:
    return f"{p:.2g}"


def _mc(row: dict[str, Any]) -> str:
    """McNemar's cell: images only full gets right / images only the variant gets right, and p."""
    m = row.get("mcnemar")
    if not m:
        return "n/a"
    side = ""
    if m["p"] < 0.05 and row["expect"]:
        worse = m["b"] > m["c"]  # the variant loses more images than it gains: removing the idea hurts
        side = "; agrees" if worse == (row["expect"] > 0) else "; disagrees"
    iv = m.get("interval")
    diff = f": {_pp(iv['mean'])} [{_pp(iv['low'])}, {_pp(iv['high'])}]" if iv else ""
    return f"{m['b']:,} / {m['c']:,}{diff}, p {_p(m['p'])}{side}"


def _paper(row: dict[str, Any]) -> str:
    figs = [f"+{row[k]:.1f}" for k in ("paper_top1", "paper_top5") if row.get(k) is not None]
    return (" / ".join(figs) + ": " if figs else "") + row["paper"]


def _images(n: int | None) -> str:
    return "not reached" if not n else f"{n:,} images"


def _figure1_epochs(fig: dict[str, Any]) -> str:
    """Figure 1 in epochs, for records made before step curves existed."""
    cells = "; ".join(
        f"seed {p['seed']}: ReLU {p['epochs_relu'] or 'not reached'}, tanh {p['epochs_tanh'] or 'not reached'}"
        for p in fig["pairs"]
    )
    ratio = fig["median_epoch_ratio"]
    tail = f"median ratio tanh/ReLU {ratio:.2f} (the paper: about 6)" if ratio else "no ratio: a run never got there"
    return f"Figure 1 analogue, epochs to {fig['threshold']:.0%} training error: {cells}; {tail}."


def _figure1_text(fig: dict[str, Any] | None) -> str:
    if fig is None:
        return "Figure 1 (ReLU against tanh): no finished pair of `full` and `tanh` runs."
    if not any(p.get("seen_relu") for p in fig["pairs"]):
        return _figure1_epochs(fig)
    t = fig["threshold"]
    cells = []
    for p in fig["pairs"]:
        cell = f"seed {p['seed']}: ReLU {_images(p.get('images_relu'))}, tanh {_images(p.get('images_tanh'))}"
        if p.get("ratio"):
            cell += f" (ratio {p['ratio']:.2f})"
        elif p.get("at_least"):
            cell += f" (ratio above {p['at_least']:.2f}: tanh not there after {p['seen_tanh']:,} images)"
        cells.append(cell)
    ratio = fig.get("median_image_ratio")
    bounded = [p["at_least"] for p in fig["pairs"] if p.get("at_least")]
    if ratio:
        tail = f"median ratio tanh/ReLU {ratio:.2f} (the paper: about 6)"
    elif bounded:
        tail = f"tanh never got there: the ratio is above {min(bounded):.2f} (the paper: about 6)"
    else:
        tail = "no ratio: ReLU never got there, or a run was resumed (its step curve is incomplete)"
    return (
        f"Figure 1 analogue, training images seen until a window of steps is at or below {t:.0%} training error: "
        f"{'; '.join(cells)}; {tail}."
    )


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``4 epochs``, ``4 classes``: the report's sentences are made from the run's numbers."""
    return f"{n:,} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def cannot_show(meta: dict[str, Any]) -> str:
    """What this run cannot show, worked out from its own counts, epochs and seeds."""
    test, epochs, n_seeds = int(meta["test_samples"]), int(meta["epochs"]), len(meta["seeds"])
    size = meta.get("input_size") or meta.get("scale_settings", {}).get("input_size")
    se = 100.0 * math.sqrt(0.2 * 0.8 / max(1, test))
    parts = []
    if epochs < 30:
        parts.append(
            f"{plural(epochs, 'epoch')} on {plural(int(meta['train_samples']), 'training image')}"
            + (f" at {size}x{size}" if size else "")
            + " are far from convergence (the paper: 90 epochs on 1.2 million images): overfitting, which dropout "
            "and augmentation fight, shows only in long runs"
        )
    parts.append(
        f"one test image is {100.0 / max(1, test):.2g} points, and the standard error of a 20% error rate on "
        f"{plural(test, 'test image')} is {se:.1f} points: one seed cannot tell differences below about "
        f"{2 * se:.1f} points (the per-image test, which pairs the images, sees smaller ones)"
    )
    if n_seeds == 1:
        parts.append("with 1 seed there is no interval over seeds")
    elif n_seeds <= 3:
        parts.append(
            f"with {n_seeds} seeds the t-interval is mean +- {t_quantile(n_seeds - 1):.1f} sd / sqrt({n_seeds}), "
            f"wide by construction (cut to +-{BOUND:.0f} points, the range of a difference)"
        )
    if not _top5_informative(meta):
        parts.append(
            f"top-5 error says nothing with {meta['num_classes']} classes: the true class is always in the top 5"
        )
    if meta.get("note"):
        parts.append(meta["note"])
    if "fashion" in str(meta.get("data", "")).lower():
        parts.append("Fashion-MNIST is not ImageNet: ten classes of 28x28 grey images, upscaled")
    return "; ".join(parts)


def _describe(meta: dict[str, Any]) -> str:
    """What the run did, from its settings."""
    classes = f", {plural(int(meta['num_classes']), 'class')}" if meta.get("num_classes") else ""
    size = f", {meta['input_size']}x{meta['input_size']}" if meta.get("input_size") else ""
    val = f", {meta['val_samples']:,} validation" if meta.get("val_samples") is not None else ""
    return (
        f"Seeds {meta['seeds']}; scale `{meta['scale']}`: {plural(int(meta['train_samples']), 'training image')}"
        f"{val}, {plural(int(meta['test_samples']), 'test image')} ({meta['test_source']}), "
        f"{plural(int(meta['epochs']), 'epoch')}{size}{classes}."
    )


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    """A line per variant with diverged runs, and the footnote of clipped intervals."""
    out = []
    for r in rows:
        for d in r.get("diverged") or []:
            out.append(f"- {r['variant']} seed {d['seed']} diverged ({d['why']}): counted, kept out of the means.")
    if any(r.get(k, {}).get("clipped") for r in rows for k in ("top1", "top5")):
        out.append(
            f"- \u2020 the t-interval was wider than +-{BOUND:.0f} points, the range a difference of error rates can "
            "take, and is cut there: with so few seeds it is uninformative."
        )
    return out


def markdown(rows: list[dict[str, Any]], fig: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    """The differences table, the absolute table and Figure 1's line, as Markdown."""
    partial = meta.get("runs_finished", "")
    partial = f" Runs finished: {partial}." if partial and partial.split(" of ")[0] != partial.split(" of ")[-1] else ""
    diverged = sum(len(r.get("diverged") or []) for r in rows)
    lines = [
        f"{_describe(meta)} Differences are variant minus `full` in points of test error (centre crop), mean over "
        f"seeds [95% t-interval]; per-image test: the test images only one of the two gets right (only full / only "
        f"the variant), pooled over seeds, the difference they make in points [its 95% per-image interval] and "
        f"McNemar's exact p.{partial}" + (f" Diverged runs: {diverged} (kept out of the means)." if diverged else ""),
        "",
        "| variant | switch | top-1 error diff | top-5 error diff | per-image test | paper (points, idea removed) "
        "| direction |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if r["variant"] == "full":
            continue
        lines.append(
            f"| {r['variant']} | {r['switch']} | {_ci(r['top1'])} | {_top5(r['top5'], meta)} | {_mc(r)} | "
            f"{_paper(r)} | {r['verdict']} |"
        )
    notes = _notes(rows)
    lines += (["", *notes] if notes else []) + [
        "",
        "| variant | top-1 centre | top-1 ten patches | top-5 centre | top-5 ten patches | final train error | "
        "test - train | epochs to threshold (reached) | diverged | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a = r.get("absolute")
        if a is None:
            continue
        cells = [_pp(a[k], False) for k in ("top1_centre", "top1_ten", "top5_centre", "top5_ten", "train_error")]
        ept = f"{a['epochs_to_threshold']:.1f}" if a["epochs_to_threshold"] is not None else "-"
        secs = f"{a['train_seconds']:.0f}" if a["train_seconds"] is not None else "-"
        lines.append(
            f"| {r['variant']} | {' | '.join(cells)} | {_pp(a['gap'])} | {ept} ({a['reached']}) | "
            f"{a.get('diverged', 0)} | {secs} |"
        )
    lines += ["", _figure1_text(fig), "", f"What this run cannot show: {cannot_show(meta)}."]
    return "\n".join(lines) + "\n"


def plot_differences(rows: list[dict[str, Any]], path: Path, top5: bool = True) -> Path:
    """Each variant's mean difference from full with its interval (top-1, and top-5 unless ``top5`` is False:
    5 classes or fewer), the paper's figure as x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["variant"] != "full"]
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(shown) + 1.5))
    keys = (("top1", "tab:blue"), ("top5", "tab:orange")) if top5 else (("top1", "tab:blue"),)
    for j, (key, colour) in enumerate(keys):
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
    if ax.get_legend_handles_labels()[0]:  # nothing to plot when every pair diverged
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_relu_tanh(records: list[dict[str, Any]], threshold: float, path: Path) -> Path | None:
    """Figure 1 analogue, ReLU (full) and tanh, each seed: training error against images seen (windows of steps;
    per epoch for records made before step curves existed) and against training seconds."""
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
        c, steps = r["curve"], r.get("steps")
        if steps:
            axes[0].plot([p["images"] for p in steps], [100 * p["train_error"] for p in steps], "-", label=label,
                         **style)  # fmt: skip
        else:  # a record from before step curves: epochs times the images of one epoch
            n = r.get("images_per_epoch") or 1
            axes[0].plot([p["epoch"] * n for p in c], [100 * p["train_error"] for p in c], "o-", label=label, **style)
        axes[1].plot([p["seconds"] for p in c], [100 * p["train_error"] for p in c], "o-", **style)
    for ax, xl, yl in zip(axes, ("training images seen", "training seconds"), ("windows of steps", "epoch means")):
        ax.axhline(100 * threshold, ls="--", color="grey", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel(f"training error (%, {yl})")
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
    files["differences"] = plot_differences(rows, out / "differences.png", _top5_informative(meta))
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
    meta = doc["meta"]
    titles = ("variant", "switch", "top-1 diff", "top-5 diff", "per-image test", "paper", "direction")
    head = "".join(f"<th>{h}</th>" for h in titles)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in
                         (r["variant"], r["switch"], _ci(r["top1"]), _top5(r["top5"], meta), _mc(r), _paper(r),
                          r["verdict"])) + "</tr>"
        for r in doc["summary"] if r["variant"] != "full"
    )  # fmt: skip
    notes = "".join(f"<p>{esc(n[2:])}</p>" for n in _notes(doc["summary"]))
    return (
        '<section id="ablation"><h2>Ablation</h2>'
        f"<p>{esc(meta['command'])} ({esc(meta['date'])}). {esc(_describe(meta))} Variant minus full, points of "
        "test error (centre crop), mean [95% t-interval]; per-image test: McNemar, pooled over seeds.</p>"
        f"<table><tr>{head}</tr>{body}</table>{notes}"
        f"<p>{esc(_figure1_text(doc.get('figure1')))}</p>"
        f"<p>What this run cannot show: {esc(cannot_show(meta))}.</p>"
        f"{_img(Path(out) / 'differences.png')}{_img(Path(out) / 'relu_tanh.png')}</section>"
    )
