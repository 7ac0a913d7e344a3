"""Commands that measure and picture weights: evaluate, features, neighbors, plot, report. Wiring only."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..names import LAYER_NAMES
from ..schemas import tagged
from .flags import (
    EXIT_OK,
    Formatter,
    add_data_arg,
    add_data_source_flags,
    add_json_flag,
    add_progress_flag,
    add_runtime_flags,
    add_topk_flag,
    add_weights_flags,
    check_out_file,
    nonneg_int,
    print_json,
    runtime_values,
    weights_spec,
)

if TYPE_CHECKING:
    from ..eval_metrics import EvalResult

__all__ = ["add_commands", "format_table"]

EXACT = "fp32: the exact figures; bf16/fp16 (auto: bf16 where the device computes it natively): weights cast once"


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_evaluate(sub)
    _add_features(sub)
    _add_neighbors(sub)
    _add_plot(sub)
    _add_report(sub)


# --- evaluate ---------------------------------------------------------------------------------------------------------
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="top-1/top-5 error, loss, per-class accuracy and confusion matrix of weights on a data set",
        description="The paper's measures (section 6): top-1 and top-5 error, with the centre crop or the softmax "
        "averaged over 10 patches (--ten-crop). Under torchrun every process evaluates a disjoint share and every "
        "sample is counted once: torchrun --nproc_per_node 4 -m alexnet evaluate DATA --weights W",
        formatter_class=Formatter,
    )
    add_data_source_flags(p, split=None)
    add_weights_flags(p, default=None, required=True)
    add_runtime_flags(p, precision="fp32", precision_help=EXACT)
    p.add_argument("--ten-crop", action="store_true", help="average the softmax over the paper's 10 patches")
    p.add_argument("--out", default=None, help="write the result as JSON to this file (e.g. eval.json)")
    add_json_flag(p, what="print JSON instead of a table")
    _add_top_misclassified(p, default=32, what="most confident errors listed in the JSON")
    p.add_argument(
        "--ignore-class-names",
        action="store_true",
        help="only check the number of classes, not their names (e.g. ImageNet weights on wnid folders)",
    )
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..distributed import setup_distributed, shutdown_distributed
    from ..eval_metrics import write_json
    from ..evaluate import evaluate_dataset

    device, precision = runtime_values(args)
    info = setup_distributed(device)  # under torchrun: the group every rank evaluates in
    try:
        result = evaluate_dataset(
            weights_spec(args),
            args.data,
            ten_crop=args.ten_crop,
            split=args.split,
            val_split=args.val_split,
            seed=args.seed,
            batch_size=args.batch_size,
            workers=args.workers,
            device=device,
            check_class_names=not args.ignore_class_names,
            progress=args.progress,
            precision=precision,
        )
    finally:
        shutdown_distributed(info)
    if result.rank != 0:  # under torchrun only the first process writes and prints
        return EXIT_OK
    d = tagged("evaluate", result.to_dict(top_misclassified=args.top_misclassified))
    if args.out:
        write_json(d, args.out)
    if args.json:
        print_json(d)
    else:
        print(format_table(d))
        if args.out:
            print(f"\nwrote {args.out}")
    return EXIT_OK


# --- features / neighbors ---------------------------------------------------------------------------------------------
def _add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="save a layer's activations (e.g. fc7's 4096-d embeddings) for every image of a data set",
        description="Extract one layer's output for every image (centre crop) into a .safetensors index with the "
        "image names and labels. conv1..conv4: after ReLU; conv5: after ReLU and pooling (the 9216-d input of "
        "fc6); fc6, fc7: after ReLU (fc7 is what the paper's Figure 4 compares); fc8: the logits.",
        formatter_class=Formatter,
    )
    add_data_source_flags(p, split="train")
    add_weights_flags(p, default=None, required=True)
    add_runtime_flags(p, precision="fp32", precision_help=EXACT)
    p.add_argument("--layer", default="fc7", choices=list(LAYER_NAMES), help="which layer's output")
    p.add_argument("--out", required=True, help="the index to write (.safetensors)")
    add_json_flag(p, what="print a JSON summary")
    p.set_defaults(func=_cmd_features, check=check_out_file)


def _cmd_features(args: argparse.Namespace) -> int:
    from ..features import IndexData, check_index_path, index_weights, save_features

    check_index_path(args.out)  # before the pass over the data, not after
    device, precision = runtime_values(args)
    data = IndexData(args.data, args.split, args.val_split, args.seed, args.batch_size, args.workers)
    index = index_weights(weights_spec(args), data, args.layer, device=device, progress=args.progress,
                          precision=precision)  # fmt: skip
    save_features(index, args.out)
    summary = {"out": str(args.out), "layer": index.layer, "images": len(index), "dim": index.dim}
    if args.json:
        print_json(tagged("features", summary))
    else:
        print(f"wrote {args.out}: {len(index)} images x {index.dim} ({index.layer})")
    return EXIT_OK


def _add_neighbors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "neighbors",
        help="the index images nearest to query images in a layer's feature space (the paper's Figure 4)",
        description="Rank the entries of a feature index (alexnet features) by their distance to each query "
        "image's features: Euclidean, as the paper (section 6.1), or cosine. The weights default to the ones the "
        "index was made with.",
        formatter_class=Formatter,
    )
    p.add_argument("queries", nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("--index", required=True, help="a feature index written by alexnet features")
    add_topk_flag(p, default=6, what="neighbours per query")
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"], help="distance")
    p.add_argument("--layer", default=None, choices=list(LAYER_NAMES), help="refuse an index of another layer "
                   "(default: the index's)")  # fmt: skip
    add_weights_flags(p, default=None)
    add_runtime_flags(p, precision="fp32", precision_help=EXACT)
    add_progress_flag(p, default="none")
    p.add_argument("--out", default=None, help="draw the queries and their neighbours into this PNG")
    add_json_flag(p)
    p.set_defaults(func=_cmd_neighbors)


def _cmd_neighbors(args: argparse.Namespace) -> int:
    from ..features import neighbors_for_images

    device, precision = runtime_values(args)
    queries, index, ranked = neighbors_for_images(
        args.queries,
        args.index,
        k=args.topk,
        metric=args.metric,
        layer=args.layer,
        weights=weights_spec(args),
        device=device,
        precision=precision,
        progress=args.progress,
    )
    if args.out:
        from ..plots import plot_neighbors

        plot_neighbors(queries, ranked, args.out, data=index.data, query_names=args.queries)
    if args.json:
        queries = [{"query": q, "neighbors": [vars(n) for n in nbrs]} for q, nbrs in zip(args.queries, ranked)]
        body = {"index": str(args.index), "layer": index.layer, "metric": args.metric, "queries": queries}
        print_json(tagged("neighbors", body))
        return EXIT_OK
    for q, nbrs in zip(args.queries, ranked):
        print(f"{q}  ({index.layer}, {args.metric})")
        for n in nbrs:
            print(f"  {n.rank:3d}  {n.distance:12.6g}  {n.class_name:<20} {n.name}")
    if args.out:
        print(f"wrote {args.out}")
    return EXIT_OK


# --- plot / report ----------------------------------------------------------------------------------------------------
def _png_size(s: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 1200x900, got {s!r}") from None
    if w < 50 or h < 50:
        raise argparse.ArgumentTypeError(f"picture size must be at least 50x50, got {s!r}")
    if w > 20000 or h > 20000:
        raise argparse.ArgumentTypeError(f"picture size must be at most 20000x20000, got {s!r}")
    return w, h


def _add_figure_flags(p: argparse.ArgumentParser, size: tuple[int, int]) -> None:
    p.add_argument("--figure-size", type=_png_size, default=size, metavar="WxH", help="the picture's "
                   "WIDTHxHEIGHT in pixels (--size is the image side of stats and prepare)")  # fmt: skip
    add_json_flag(p, what="print a JSON summary: {schema, what, out}")


def _add_top_misclassified(p: argparse.ArgumentParser, *, default: int, what: str) -> None:
    p.add_argument("--top-misclassified", type=nonneg_int, default=default, help=what)
    p.add_argument("--top", dest="top_misclassified", type=nonneg_int, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # fmt: skip


def _plotted(args: argparse.Namespace) -> int:
    """What a plot command says it wrote: a line, or with --json ``{schema, what, out}``."""
    if args.json:
        print_json({"schema": "alexnet.plot/1", "what": args.what, "out": str(args.out)})
    else:
        print(f"wrote {args.out}")
    return EXIT_OK


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot", help="pictures: conv1 filters, training curves, confusion matrix", formatter_class=Formatter
    )
    what = p.add_subparsers(dest="what", metavar="WHAT")
    what.required = True
    f = what.add_parser(
        "filters",
        help="conv1's kernels as a grid (the paper's Figure 3)",
        description="conv1's kernels, each scaled to its own range; with the paper's two groups the first half "
        "(GPU 1) is drawn above the second (GPU 2). 96 kernels make an 8x12 grid.",
        formatter_class=Formatter,
    )
    add_weights_flags(f, default=None, required=True)
    f.add_argument("--out", default="conv1.png", help="PNG to write")
    _add_figure_flags(f, (1200, 900))
    f.set_defaults(func=_cmd_plot_filters)
    c = what.add_parser(
        "curves",
        help="loss, top-1/top-5 error and learning rate per epoch, from metrics.csv",
        formatter_class=Formatter,
    )
    c.add_argument("run", metavar="RUN", help="a run folder or its metrics.csv")
    c.add_argument("--out", default="curves.png", help="PNG to write")
    _add_figure_flags(c, (1500, 450))
    c.set_defaults(func=_cmd_plot_curves)
    m = what.add_parser("confusion", help="the confusion matrix of an evaluation JSON", formatter_class=Formatter)
    m.add_argument("evaluation", metavar="EVAL_JSON", help="written by alexnet evaluate --out (or a run's eval.json)")
    m.add_argument("--out", default="confusion.png", help="PNG to write")
    _add_figure_flags(m, (900, 800))
    m.add_argument("--counts", action="store_true", help="colour by counts instead of per-class fractions")
    m.set_defaults(func=_cmd_plot_confusion)


def _cmd_plot_filters(args: argparse.Namespace) -> int:
    from ..plots import plot_filters

    spec = weights_spec(args)
    plot_filters(spec, args.out, size=args.figure_size)
    return _plotted(args)


def _cmd_plot_curves(args: argparse.Namespace) -> int:
    import warnings

    from ..plots import plot_curves

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_curves(args.run, args.out, size=args.figure_size)
    for w in caught:  # e.g. the partial last line of an interrupted run
        print(f"alexnet plot curves: warning: {w.message}", file=sys.stderr)
    return _plotted(args)


def _cmd_plot_confusion(args: argparse.Namespace) -> int:
    from ..plots import plot_confusion

    plot_confusion(args.evaluation, args.out, size=args.figure_size, normalize=not args.counts)
    return _plotted(args)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page about a training run",
        description="Config, curves, final metrics, confusion matrix, conv1 kernels and the most confidently "
        "misclassified validation images, all embedded in one HTML file that can be sent alone. The metrics come "
        "from the run's eval.json; to find the misclassified images the weights are evaluated again on the run's "
        "validation data (config.json's data and val_split), or on --data.",
        formatter_class=Formatter,
    )
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by alexnet train / finetune")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    add_data_arg(p, flag=True, help="validation data to evaluate the run's weights on (default: the run's own)")
    p.add_argument(
        "--no-evaluate",
        action="store_true",
        help="use eval.json only; do not evaluate the weights on the run's validation data to find the "
        "misclassified images",
    )
    p.add_argument("--ten-crop", action="store_true", help="average over the paper's 10 patches when evaluating")
    _add_top_misclassified(p, default=24, what="most confident errors shown")
    add_runtime_flags(p, precision="fp32", precision_help=EXACT)
    add_progress_flag(p)
    add_json_flag(p)
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report import report

    device, precision = runtime_values(args)
    path = report(
        args.run,
        args.out,
        data=args.data,
        top=args.top_misclassified,
        ten_crop=args.ten_crop,
        device=device,
        precision=precision,
        progress=args.progress,
        evaluate=not args.no_evaluate,
    )
    if args.json:
        print_json(tagged("report", {"report": str(path)}))
    else:
        print(f"wrote {path}")
    return EXIT_OK


# --- a result as text (the command line's, not the library's) ----------------------------------------------------
def format_table(result: EvalResult | dict[str, Any], *, max_classes: int = 50) -> str:
    """The result as a plain-text table: the paper's two error rates, the loss, then per-class accuracy and (for
    a few classes) the confusion matrix, rows = true class."""
    d = result.to_dict() if hasattr(result, "to_dict") else result
    crop = "10-crop" if d.get("ten_crop") else "centre crop"
    loss = d.get("loss")
    skipped = f", {len(d['skipped'])} bad images skipped" if d.get("skipped") else ""
    lines = [
        f"samples      {d['num_samples']:>10,}   ({crop}{skipped})",
        f"top-1 error  {100 * d['top1_error']:>10.2f} %",
        f"top-5 error  {100 * d['top5_error']:>10.2f} %",
        f"loss         {loss:>10.4f}" if loss is not None else "loss                n/a",
    ]
    names = list(d["classes"])
    m = d["confusion_matrix"]
    if len(names) <= max_classes:
        w = max(8, *(len(n) for n in names))
        lines += ["", f"{'class':<{w}}  {'samples':>8}  {'accuracy':>8}"]
        for n, row in zip(names, m):
            acc = d["per_class_accuracy"].get(n)
            lines.append(f"{n:<{w}}  {sum(row):>8}  {'n/a' if acc is None else f'{100 * acc:7.2f}%':>8}")
    if len(names) <= 12:
        cw = max(6, *(len(str(v)) + 1 for row in m for v in row))
        w = max(8, *(len(n) for n in names))
        lines += ["", "confusion (rows = true class, columns = predicted)"]
        lines.append(" " * w + "".join(f"{i:>{cw}}" for i in range(len(names))))
        for i, (n, row) in enumerate(zip(names, m)):
            lines.append(f"{n:<{w}}" + "".join(f"{v:>{cw}}" for v in row) + f"  [{i}]")
    return "\n".join(lines)
