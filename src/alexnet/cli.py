"""Command line: argparse subcommands that parse flags and call the library. No logic of its own.

Every command has ``--help`` with defaults, ``--json`` where it prints results, exit code 0 only on success,
and a one-line error (no traceback) for user mistakes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .errors import AlexnetError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
INIT_CHOICES = ["paper", "caffe", "torchvision", "kaiming"]
PRECISIONS = ["fp32", "bf16", "fp16", "auto"]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


# --- models -------------------------------------------------------------------------------------------------------
def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered architectures", formatter_class=_Formatter)
    p.add_argument("--num-classes", type=_positive_int, default=1000, help="classes of fc8")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import count_macs, count_parameters, create_model, list_models

    rows = []
    for name in list_models():
        m = create_model(name, num_classes=args.num_classes)
        size = m.config.input_size
        rows.append(
            {
                "name": name,
                "parameters": count_parameters(m),
                "gflops": round(2 * count_macs(m) / 1e9, 3),
                "gmacs": round(count_macs(m) / 1e9, 3),
                "input_size": size,
            }
        )
    if args.json:
        _print_json(rows)
    else:
        print(f"{'name':<14}{'parameters':>14}{'GFLOPs':>9}{'input':>9}")
        for r in rows:
            print(f"{r['name']:<14}{r['parameters']:>14,}{r['gflops']:>9.2f}{r['input_size']:>6}x{r['input_size']}")
    return EXIT_OK


# --- serve --------------------------------------------------------------------------------------------------------
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: a JSON API and a web page",
        formatter_class=_Formatter,
        description="Serve a model: the page at http://HOST:PORT/, POST /v1/predict (multipart field 'image'), "
        "GET /v1/model, /healthz, /openapi.json. Needs the [serve] extra: pip install 'alexnet[serve]'.",
    )
    p.add_argument("--weights", required=True, help="weights: .safetensors, .pth/.pt, .npy or 'torchvision'")
    p.add_argument("--arch", default=None, help="architecture when the weights file does not say")
    p.add_argument(
        "--trust-pickle",
        "--allow-pickle",
        dest="trust_pickle",
        action="store_true",
        help="allow loading a pickled .npy (pickle can run arbitrary code: only for files you trust)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind; another than loopback only when asked")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--max-bytes", type=_positive_int, default=20_000_000, help="largest request body in bytes")
    p.add_argument("--max-images", type=_positive_int, default=16, help="most images in one request")
    p.add_argument("--max-pixels", type=_positive_int, default=50_000_000, help="most decoded pixels per image")
    p.add_argument("--max-batch", type=_positive_int, default=64, help="most rows in one forward pass")
    p.add_argument("--batch-window-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeOptions, serve  # raises a one-line AlexnetError without the [serve] extra

    if not 0 <= args.port <= 65535:
        raise AlexnetError(f"--port must be in 0..65535, got {args.port}")
    if args.batch_window_ms < 0:
        raise AlexnetError(f"--batch-window-ms must be >= 0, got {args.batch_window_ms}")
    options = ServeOptions(
        max_bytes=args.max_bytes,
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        device=args.device,
    )
    serve(
        args.weights,
        host=args.host,
        port=args.port,
        arch=args.arch,
        allow_pickle=args.trust_pickle,
        options=options,
        log_level=args.log_level,
    )
    return EXIT_OK


# --- predict / convert / export (weights and inference) ---------------------------------------------------------
def _add_weights_flags(p: argparse.ArgumentParser, *, default: str | None = "torchvision") -> None:
    if default is not None:
        p.add_argument(
            "--weights",
            default=default,
            help="'torchvision' (downloaded once, hash checked) or a .safetensors / .pth / .pt / bvlc .npy file",
        )
    p.add_argument(
        "--arch",
        default=None,
        help="architecture of the weights (alexnet2012, caffenet, alexnet_owt; None: from the file). "
        "A bvlc .npy does not say whether LRN comes before pooling (alexnet2012) or after (caffenet)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading a pickled .npy (pickle can run arbitrary code: only for files you trust)",
    )


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images: top-k classes with probabilities",
        description="Classify image files, folders (searched recursively) and globs. Bad files are reported by "
        "name and the others still classified; the exit code is 1 if any file failed.",
        formatter_class=_Formatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or globs")
    _add_weights_flags(p)
    p.add_argument("--topk", type=_positive_int, default=5, help="classes to show per image")
    p.add_argument("--ten-crop", action="store_true", help="average the softmax over the paper's 10 patches")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=_positive_int, default=None, help="decoding threads (None: min(8, CPUs))")
    p.add_argument("--device", default="auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda:0', ...")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="'auto': bf16 weights (cast once, channels_last) where the device computes bf16 natively "
        "(CUDA, AVX512-BF16 / AMX CPUs), else fp32",
    )
    p.add_argument("--json", action="store_true", help="print JSON: a list of {file, predictions | error}")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import expand_inputs, predict_files, resolve_device
    from .weights import load_model

    device = resolve_device(args.device)
    files = expand_inputs(args.inputs)
    if not files:
        raise AlexnetError(f"no image files found in {' '.join(args.inputs)}")
    model, pre = load_model(args.weights, arch=args.arch, allow_pickle=args.trust_pickle)
    results = []
    for r in predict_files(
        model,
        pre,
        files,
        topk=args.topk,
        ten_crop=args.ten_crop,
        batch_size=args.batch_size,
        device=device,
        workers=args.workers,
        expand=False,
        precision=args.precision,
    ):
        if r.error is not None:
            print(f"alexnet predict: error: {r.error}", file=sys.stderr)
        elif not args.json:
            print(r.file)
            for s in r.scores or []:
                print(f"  {s.prob:8.4f}  {s.name} ({s.index})")
        results.append(r)
    if args.json:
        _print_json([r.to_dict() for r in results])
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"alexnet predict: {failed} of {len(results)} files failed", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert weights between formats",
        description="Read weights in any supported format and write them in the format of DST's suffix: "
        ".safetensors (ours: weights + arch, config, preprocessing, class names), .npy (the bvlc_alexnet layout "
        "the tutorial's TensorFlow code loads), .pth/.pt (a plain torch state dict).",
        formatter_class=_Formatter,
    )
    p.add_argument("src", metavar="SRC", help="'torchvision' or a .safetensors / .pth / .pt / bvlc .npy file")
    p.add_argument("dst", metavar="DST", help="output file: .safetensors, .npy, .pth or .pt")
    _add_weights_flags(p, default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .weights import WeightsError, export_npy, export_pth, load_model, save_model

    dst = Path(args.dst)
    suffix = dst.suffix.lower()
    if suffix not in (".safetensors", ".npy", ".pth", ".pt"):
        raise WeightsError(f"{dst}: unknown output format {suffix!r}; expected .safetensors, .npy, .pth or .pt")
    model, pre = load_model(args.src, arch=args.arch, allow_pickle=args.trust_pickle)
    if suffix == ".safetensors":
        save_model(model, pre, dst, arch=args.arch)
    elif suffix == ".npy":
        export_npy(model, dst, preprocessing=pre)
    else:
        export_pth(model, dst)
    if args.json:
        _print_json({"src": str(args.src), "dst": str(dst), "format": suffix[1:]})
    else:
        print(f"wrote {dst}")
    return EXIT_OK


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export weights for other runtimes (ONNX)",
        description="Export to ONNX with a dynamic batch axis, verified against onnxruntime. The input is the "
        "normalised (N, 3, S, S) float tensor; the preprocessing and class names are in the model's metadata.",
        formatter_class=_Formatter,
    )
    p.add_argument("weights", metavar="WEIGHTS", help="'torchvision' or a .safetensors / .pth / .pt / bvlc .npy file")
    p.add_argument("--onnx", required=True, metavar="OUT", help="output .onnx file")
    p.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    _add_weights_flags(p, default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from .weights import export_onnx, load_model

    model, pre = load_model(args.weights, arch=args.arch, allow_pickle=args.trust_pickle)
    diff = export_onnx(model, pre, args.onnx, opset=args.opset, verify=not args.no_verify)
    if args.json:
        _print_json({"onnx": str(args.onnx), "max_abs_diff_vs_pytorch": diff})
    else:
        check = f" (onnxruntime vs PyTorch max abs diff {diff:.2e})" if diff is not None else ""
        print(f"wrote {args.onnx}{check}")
    return EXIT_OK


# --- stats / prepare (data) ---------------------------------------------------------------------------------------
def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _default_workers() -> int:
    import os

    return min(4, os.cpu_count() or 1)


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=_positive_int, default=256, help="side of the square images (short side, crop)")
    p.add_argument("--workers", type=_nonneg_int, default=_default_workers(), help="decoding processes")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="images per loader batch")
    p.add_argument("--on-bad-image", choices=("skip", "fail"), default="skip", help="skip and list bad images, or stop")
    p.add_argument("--data-dir", default=None, help="folder holding Fashion-MNIST (for source 'fashion-mnist')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="training-set mean (per channel and per pixel), std, RGB covariance and its eigenvectors",
        description="One pass over the training images at the paper's 256x256: per-channel mean/std, the mean "
        "image (saved beside OUT as .mean_image.npy), the RGB covariance and its eigen-pairs for PCA lighting.",
        formatter_class=_Formatter,
    )
    p.add_argument("source", help="image folder, list file, prepared set, or 'fashion-mnist'")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--split", choices=("train", "val", "all"), default="train", help="which samples to use")
    p.add_argument("--val-split", type=float, default=0.0, help="share held out as val (no val/ folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val split")
    _add_data_flags(p)
    p.set_defaults(func=_cmd_stats)


def _cmd_stats(args: argparse.Namespace) -> int:
    from .data.stats import compute_stats, save_stats

    stats = compute_stats(
        args.source,
        size=args.size,
        split=args.split,
        val_split=args.val_split,
        seed=args.seed,
        workers=args.workers,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        on_bad_image=args.on_bad_image,
        data_dir=args.data_dir,
    )
    path = save_stats(stats, args.out)
    if args.json:
        _print_json({**stats.to_dict(), "out": str(path)})
    else:
        print(f"{stats.num_images} images ({len(stats.skipped)} skipped) -> {path}")
        print("mean    " + " ".join(f"{v:.4f}" for v in stats.mean) + "  (RGB, 0..1)")
        print("std     " + " ".join(f"{v:.4f}" for v in stats.std))
        print("eigvals " + " ".join(f"{v:.5f}" for v in stats.eigvals))
    return EXIT_OK


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="decode and resize a data set once (short side 256, centre crop 256) into memory-mappable shards",
        description="The paper's preprocessing step, done once: every image decoded, short side resized, the "
        "central square kept, stored as uint8 .npy shards. Resumes when run again after an interruption.",
        formatter_class=_Formatter,
    )
    p.add_argument("source", help="image folder (with or without train/ and val/), list file, or 'fashion-mnist'")
    p.add_argument("out", help="folder to write")
    p.add_argument("--shard-size", type=_positive_int, default=500, help="images per shard file")
    _add_data_flags(p)
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare

    manifest = prepare(
        args.source,
        args.out,
        size=args.size,
        shard_size=args.shard_size,
        workers=args.workers,
        batch_size=args.batch_size,
        on_bad_image=args.on_bad_image,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )
    if args.json:
        _print_json(manifest)
    else:
        for split, info in manifest["splits"].items():
            print(f"{split}: {info['count']} images in {len(info['shards'])} shards")
        print(f"prepared {manifest['size']}x{manifest['size']} -> {args.out}")
    return EXIT_OK


# --- evaluate / features / neighbors / plot / report (evaluation and pictures) ---------------------------------
def _eval_weights_flags(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument(
        "--weights",
        required=required,
        default=None,
        help="'torchvision' or a .safetensors / .pth / .pt / bvlc .npy file (e.g. runs/ft/best.safetensors)",
    )
    p.add_argument(
        "--arch",
        default=None,
        help="architecture of the weights when the file does not say (a bvlc .npy: alexnet2012 or caffenet)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading a pickled .npy (pickle can run arbitrary code: only for files you trust)",
    )


def _workers(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more processes, got {v}")
    return v


def _data_flags(p: argparse.ArgumentParser, *, split: str | None) -> None:
    p.add_argument("data", metavar="DATA", help="class folders, a train/+val/ folder, a list file, a prepared set "
                   "or 'fashion-mnist'")  # fmt: skip
    p.add_argument(
        "--split",
        default=split,
        choices=["train", "val", "test", "all"],
        help="which samples" + (" (default: val where DATA has one, else all)" if split is None else ""),
    )
    p.add_argument("--val-split", type=float, default=0.0, help="share held out as 'val' when DATA has no val/")
    p.add_argument("--seed", type=int, default=0, help="seed of the --val-split draw (use the training run's)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass")
    p.add_argument(
        "--workers", type=_workers, default=0, help="data loader processes, reader threads for a prepared set (0: none)"
    )
    p.add_argument("--device", default="auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda:0', ...")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="top-1/top-5 error, loss, per-class accuracy and confusion matrix of weights on a data set",
        description="The paper's measures (section 6): top-1 and top-5 error, with the centre crop or the softmax "
        "averaged over 10 patches (--ten-crop). Under torchrun every process evaluates a disjoint share and every "
        "sample is counted once: torchrun --nproc_per_node 4 -m alexnet evaluate DATA --weights W",
        formatter_class=_Formatter,
    )
    _data_flags(p, split=None)
    _eval_weights_flags(p)
    p.add_argument("--ten-crop", action="store_true", help="average the softmax over the paper's 10 patches")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="fp32: the exact figures; bf16 (or auto: bf16 where the device computes it natively): weights cast "
        "once, channels_last, several times faster on GPUs and AVX512-BF16 / AMX CPUs",
    )
    p.add_argument("--out", default=None, help="write the result as JSON to this file (e.g. eval.json)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--top-misclassified", type=int, default=32, help="most confident errors listed in the JSON")
    p.add_argument(
        "--ignore-class-names",
        action="store_true",
        help="only check the number of classes, not their names (e.g. ImageNet weights on wnid folders)",
    )
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_dataset, format_table, write_json

    result = evaluate_dataset(
        args.weights,
        args.data,
        ten_crop=args.ten_crop,
        split=args.split,
        val_split=args.val_split,
        seed=args.seed,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        arch=args.arch,
        allow_pickle=args.trust_pickle,
        check_class_names=not args.ignore_class_names,
        progress=args.progress,
        precision=args.precision,
    )
    if result.rank != 0:  # under torchrun only the first process writes and prints
        return EXIT_OK
    d = result.to_dict(top_misclassified=args.top_misclassified)
    if args.out:
        write_json(d, args.out)
    if args.json:
        _print_json(d)
    else:
        print(format_table(d))
        if args.out:
            print(f"\nwrote {args.out}")
    return EXIT_OK


def _add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="save a layer's activations (e.g. fc7's 4096-d embeddings) for every image of a data set",
        description="Extract one layer's output for every image (centre crop) into a .safetensors index with the "
        "image names and labels. conv1..conv4: after ReLU; conv5: after ReLU and pooling (the 9216-d input of "
        "fc6); fc6, fc7: after ReLU (fc7 is what the paper's Figure 4 compares); fc8: the logits.",
        formatter_class=_Formatter,
    )
    _data_flags(p, split="train")
    _eval_weights_flags(p)
    p.add_argument("--layer", default="fc7", choices=list(_feature_layers()), help="which layer's output")
    p.add_argument("--out", required=True, help="the index to write (.safetensors)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_cmd_features)


def _feature_layers() -> tuple[str, ...]:
    from .models import LAYER_NAMES

    return LAYER_NAMES


def _cmd_features(args: argparse.Namespace) -> int:
    from .features import build_index, save_features

    index = build_index(
        args.weights,
        args.data,
        args.layer,
        split=args.split,
        val_split=args.val_split,
        seed=args.seed,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        arch=args.arch,
        allow_pickle=args.trust_pickle,
        progress=args.progress,
    )
    save_features(index, args.out)
    summary = {"out": str(args.out), "layer": index.layer, "images": len(index), "dim": index.dim}
    if args.json:
        _print_json(summary)
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
        formatter_class=_Formatter,
    )
    p.add_argument("queries", nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("--index", required=True, help="a feature index written by alexnet features")
    p.add_argument("-k", type=_positive_int, default=6, help="neighbours per query")
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"], help="distance")
    p.add_argument("--layer", default=None, help="refuse an index of another layer (default: the index's)")
    _eval_weights_flags(p, required=False)
    p.add_argument("--device", default="auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda:0', ...")
    p.add_argument("--out", default=None, help="draw the queries and their neighbours into this PNG")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_neighbors)


def _cmd_neighbors(args: argparse.Namespace) -> int:
    from .features import neighbors_for_images

    queries, index, ranked = neighbors_for_images(
        args.queries,
        args.index,
        k=args.k,
        metric=args.metric,
        layer=args.layer,
        weights=args.weights,
        device=args.device,
        arch=args.arch,
        allow_pickle=args.trust_pickle,
    )
    if args.out:
        from .plots import plot_neighbors

        plot_neighbors(queries, ranked, args.out, data=index.data, query_names=args.queries)
    if args.json:
        _print_json(
            [
                {"query": q, "layer": index.layer, "metric": args.metric, "neighbors": [vars(n) for n in nbrs]}
                for q, nbrs in zip(args.queries, ranked)
            ]
        )
    else:
        for q, nbrs in zip(args.queries, ranked):
            print(f"{q}  ({index.layer}, {args.metric})")
            for n in nbrs:
                print(f"  {n.rank:3d}  {n.distance:12.6g}  {n.class_name:<20} {n.name}")
        if args.out:
            print(f"wrote {args.out}")
    return EXIT_OK


def _png_size(s: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 1200x900, got {s!r}") from None
    if w < 50 or h < 50:
        raise argparse.ArgumentTypeError(f"picture size must be at least 50x50, got {s!r}")
    return w, h


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="pictures: conv1 filters, training curves, confusion matrix",
                       formatter_class=_Formatter)  # fmt: skip
    what = p.add_subparsers(dest="what", metavar="WHAT")
    what.required = True
    f = what.add_parser(
        "filters",
        help="conv1's kernels as a grid (the paper's Figure 3)",
        description="conv1's kernels, each scaled to its own range; with the paper's two groups the first half "
        "(GPU 1) is drawn above the second (GPU 2). 96 kernels make an 8x12 grid.",
        formatter_class=_Formatter,
    )
    _eval_weights_flags(f)
    f.add_argument("--out", default="conv1.png", help="PNG to write")
    f.add_argument("--size", type=_png_size, default=(1200, 900), help="WIDTHxHEIGHT in pixels")
    f.set_defaults(func=_cmd_plot_filters)
    c = what.add_parser(
        "curves",
        help="loss, top-1/top-5 error and learning rate per epoch, from metrics.csv",
        formatter_class=_Formatter,
    )
    c.add_argument("run", metavar="RUN", help="a run folder or its metrics.csv")
    c.add_argument("--out", default="curves.png", help="PNG to write")
    c.add_argument("--size", type=_png_size, default=(1500, 450), help="WIDTHxHEIGHT in pixels")
    c.set_defaults(func=_cmd_plot_curves)
    m = what.add_parser("confusion", help="the confusion matrix of an evaluation JSON", formatter_class=_Formatter)
    m.add_argument("evaluation", metavar="EVAL_JSON", help="written by alexnet evaluate --out (or a run's eval.json)")
    m.add_argument("--out", default="confusion.png", help="PNG to write")
    m.add_argument("--size", type=_png_size, default=(900, 800), help="WIDTHxHEIGHT in pixels")
    m.add_argument("--counts", action="store_true", help="colour by counts instead of per-class fractions")
    m.set_defaults(func=_cmd_plot_confusion)


def _cmd_plot_filters(args: argparse.Namespace) -> int:
    from .plots import plot_filters

    plot_filters(args.weights, args.out, size=args.size, arch=args.arch, allow_pickle=args.trust_pickle)
    print(f"wrote {args.out}")
    return EXIT_OK


def _cmd_plot_curves(args: argparse.Namespace) -> int:
    import warnings

    from .plots import plot_curves

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_curves(args.run, args.out, size=args.size)
    for w in caught:  # e.g. the partial last line of an interrupted run
        print(f"alexnet plot curves: warning: {w.message}", file=sys.stderr)
    print(f"wrote {args.out}")
    return EXIT_OK


def _cmd_plot_confusion(args: argparse.Namespace) -> int:
    from .plots import plot_confusion

    plot_confusion(args.evaluation, args.out, size=args.size, normalize=not args.counts)
    print(f"wrote {args.out}")
    return EXIT_OK


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page about a training run",
        description="Config, curves, final metrics, confusion matrix, conv1 kernels and the most confidently "
        "misclassified validation images, all embedded in one HTML file that can be sent alone. The metrics come "
        "from the run's eval.json; to find the misclassified images the weights are evaluated again on the run's "
        "validation data (config.json's data and val_split), or on --data.",
        formatter_class=_Formatter,
    )
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by alexnet train / finetune")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--data", default=None, help="validation data to evaluate the run's weights on")
    p.add_argument(
        "--no-evaluate",
        action="store_true",
        help="use eval.json only; do not evaluate the weights on the run's validation data to find the "
        "misclassified images",
    )
    p.add_argument("--ten-crop", action="store_true", help="with --data: average over the paper's 10 patches")
    p.add_argument("--top", type=_positive_int, default=24, help="misclassified images to show")
    p.add_argument("--device", default="auto", help="with --data: 'auto', 'cpu', 'cuda:0', ...")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import report

    path = report(
        args.run,
        args.out,
        data=args.data,
        top=args.top,
        ten_crop=args.ten_crop,
        device=args.device,
        evaluate=not args.no_evaluate,
    )
    if args.json:
        _print_json({"report": str(path)})
    else:
        print(f"wrote {path}")
    return EXIT_OK


# --- train / finetune ---------------------------------------------------------------------------------------------
def _train_default(name: str) -> str:
    from .train import TrainConfig

    return f" (default: {getattr(TrainConfig(), name)})"


def _key_value(s: str) -> tuple[str, Any]:
    key, sep, value = s.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_train_common(p: argparse.ArgumentParser) -> None:
    """Flags shared by train and finetune. Every flag is also a config-file key (dashes as underscores); only
    the flags given override the config file, which overrides the defaults (the paper's recipe)."""
    S = argparse.SUPPRESS
    d = _train_default
    p.add_argument(
        "data",
        nargs="?",
        default=S,
        help="image folder (train/ and val/, or class folders), list file, prepared set or 'fashion-mnist'",
    )
    p.add_argument("--config", default=None, help="JSON (or YAML) file of settings; flags override it")
    p.add_argument("--out", default=S, help="run folder" + d("out"))
    p.add_argument("--resume", default=S, metavar="RUN_DIR", help="continue RUN_DIR exactly where it stopped")
    g = p.add_argument_group("data")
    g.add_argument("--val-split", type=float, default=S, help="held-out fraction without val/" + d("val_split"))
    g.add_argument("--stats", default=S, help="stats.json from `alexnet stats` (mean, std, PCA eigen-pairs)")
    g.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="random crop + flip + PCA lighting (section 4.1); --no-augment: eval geometry" + d("augment"),
    )
    g.add_argument("--lighting", type=float, default=S, help="PCA lighting sigma (section 4.1)" + d("lighting"))
    g.add_argument(
        "--workers", type=int, default=S, help="loader processes per rank (threads for a prepared set)" + d("workers")
    )
    g.add_argument("--on-bad-image", choices=["skip", "fail"], default=S, help="bad images" + d("on_bad_image"))
    g = p.add_argument_group("model")
    g.add_argument("--arch", default=S, help="architecture (alexnet models)" + d("arch"))
    g.add_argument("--input-size", type=_positive_int, default=S, help="crop side (default: the architecture's)")
    g.add_argument("--resize-size", type=_positive_int, default=S, help="short side before cropping (default: 256)")
    g.add_argument("--dropout", type=float, default=S, help="dropout p (section 4.2)" + d("dropout"))
    g.add_argument(
        "--init", choices=["paper", "caffe", "torchvision", "kaiming"], default=S, help="initialisation" + d("init")
    )
    g.add_argument(
        "--model-option",
        type=_key_value,
        action="append",
        default=S,
        metavar="KEY=VALUE",
        help="any AlexNetConfig field, e.g. lrn=false or groups=1 (repeatable)",
    )
    g = p.add_argument_group("recipe (section 5)")
    g.add_argument("--epochs", type=_positive_int, default=S, help="epochs" + d("epochs"))
    g.add_argument("--batch-size", type=_positive_int, default=S, help="global batch" + d("batch_size"))
    g.add_argument("--lr", type=float, default=S, help="learning rate" + d("lr"))
    g.add_argument("--momentum", type=float, default=S, help="SGD momentum" + d("momentum"))
    g.add_argument("--weight-decay", type=float, default=S, help="weight decay" + d("weight_decay"))
    g.add_argument(
        "--schedule",
        choices=["plateau", "step"],
        default=S,
        help="plateau: /10 when val error stops improving; step: Caffe's every --step-size iterations" + d("schedule"),
    )
    g.add_argument("--lr-factor", type=float, default=S, help="learning-rate drop factor" + d("lr_factor"))
    g.add_argument("--plateau-patience", type=int, default=S, help="epochs without gain" + d("plateau_patience"))
    g.add_argument("--max-lr-drops", type=int, default=S, help="most plateau drops" + d("max_lr_drops"))
    g.add_argument("--step-size", type=_positive_int, default=S, help="iterations per step" + d("step_size"))
    g.add_argument("--seed", type=int, default=S, help="random seed" + d("seed"))
    g = p.add_argument_group("engineering")
    g.add_argument("--device", default=S, help="auto, cpu, cuda, cuda:N" + d("device"))
    g.add_argument(
        "--precision", choices=["fp32", "bf16", "fp16", "auto"], default=S, help="precision" + d("precision")
    )
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=S, help="NHWC convolutions")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=S, help="torch.compile the model")
    g.add_argument(
        "--decode-on-device",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="decode plain JPEGs in batches on the training device (nvJPEG on a GPU), crop and flip them there; "
        "the workers only read files",
    )
    g.add_argument("--progress", choices=["auto", "bar", "log", "none"], default=S, help="progress" + d("progress"))
    g.add_argument("--log-every", type=_positive_int, default=S, help="steps per log line" + d("log_every"))
    g.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="TensorBoard events when the extra is installed" + d("tensorboard"),
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train from scratch with the paper's recipe (one CPU, one GPU, or torchrun for many)",
        formatter_class=_Formatter,
        description="Train AlexNet from scratch: SGD, batch 128, momentum 0.9, weight decay 5e-4, lr 0.01 /10 on "
        "plateau (3 times), 90 epochs. Many GPUs: torchrun --nproc_per_node N -m alexnet train DATA ...",
    )
    _add_train_common(p)
    p.set_defaults(func=_cmd_train)


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune loaded weights on your own images",
        formatter_class=_Formatter,
        description="Fine-tune: --train-layers chooses which layers learn (the rest are frozen), --reinit which "
        "start afresh (fc8 always, when the class count differs).",
    )
    _add_train_common(p)
    S = argparse.SUPPRESS
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--weights", default=S, help="'torchvision', or a .safetensors / .pth / .pt / bvlc .npy file")
    g.add_argument("--trust-pickle", action="store_true", default=S, help="allow a pickled .npy (trusted files only)")
    g.add_argument(
        "--train-layers", default=S, help="comma-separated layers that learn, e.g. fc6,fc7,fc8 (default: all)"
    )
    g.add_argument("--reinit", default=S, help="comma-separated layers re-initialised, e.g. fc8")
    g.add_argument(
        "--new-layer-lr-mult", type=float, default=S, help="lr multiplier of re-initialised layers (default: 1)"
    )
    g.add_argument(
        "--cache-features",
        action="store_true",
        default=S,
        help="all conv layers frozen: compute their features once (and fc6's, when frozen in the paper's layout) "
        "and train the rest from them",
    )
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import config_from_sources, main

    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config", "model_option")}
    if getattr(args, "model_option", None):
        flags["model_options"] = dict(args.model_option)
    config = config_from_sources(flags, config_file=args.config, command=args.command)
    result = main(config)
    return 130 if result.interrupted else EXIT_OK


# --- demo ---------------------------------------------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job on Fashion-MNIST, offline, in minutes",
        description="Fine-tune ImageNet AlexNet on Fashion-MNIST when its weights are cached or downloadable, "
        "else train alexnet2012 from scratch; evaluate on held-out test images; write a run folder with "
        "metrics, checkpoints and an HTML report; classify a few test images. Defaults (None) depend on the "
        "device: a CPU gets a run of a few minutes, --full is the paper's setting for a GPU.",
        formatter_class=_Formatter,
    )
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's idx files (default: usual places)")
    p.add_argument("--weights", choices=["auto", "torchvision", "none"], default="auto", help="start from")
    p.add_argument("--full", action="store_true", help="whole training set, 10 epochs, 227x227 input (GPU)")
    p.add_argument("--train-samples", type=int, default=None, help="training images (0: all)")
    p.add_argument("--val-samples", type=_positive_int, default=None, help="training images held out")
    p.add_argument("--test-samples", type=_positive_int, default=None, help="first N test images to report on")
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--input-size", type=_positive_int, default=None, help="crop side")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--init", choices=INIT_CHOICES, default="kaiming", help="from-scratch initialisation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=None, help="loader processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-download", action="store_true", help="never use the network")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out=args.out,
        data_dir=args.data_dir,
        weights=args.weights,
        full=args.full,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        test_samples=args.test_samples,
        epochs=args.epochs,
        input_size=args.input_size,
        batch_size=args.batch_size,
        lr=args.lr,
        init=args.init,
        device=args.device,
        workers=args.workers,
        seed=args.seed,
        download=not args.no_download,
    )
    if args.json:  # progress goes to stderr so that stdout is the JSON alone
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):
            r = run_demo(cfg, log=print)
    else:
        r = run_demo(cfg, log=print)
    if args.json:
        _print_json(
            {
                "mode": r.mode,
                "test_top1_error": r.test_top1_error,
                "test_top5_error": r.test_top5_error,
                "test_accuracy": r.test_accuracy,
                "test_samples": r.test_samples,
                "seconds": r.seconds,
                "files": {k: str(v) for k, v in r.files.items()},
                "examples": r.examples,
                "notes": r.notes,
            }
        )
        return EXIT_OK
    print()
    print("A few test images, top-3:")
    for e in r.examples:
        guesses = ", ".join(f"{name} {p:.0%}" for name, p in e["top3"])
        print(f"  test image {e['index']:>4} (true: {e['true']}): {guesses}")
    print()
    print(
        f"Done in {r.seconds:.0f} s: test accuracy {r.test_accuracy:.1%} (top-1 error {r.test_top1_error:.1%}, "
        f"top-5 error {r.test_top5_error:.1%}) on {r.test_samples:,} held-out images."
    )
    for n in r.notes:
        print(f"note: {n}")
    f = r.files
    print(f"  run folder   {f['run']}")
    print(f"  report       {f['report']}   (open it in a browser)")
    print(f"  metrics      {f['metrics']}")
    print(f"  checkpoint   {f['best']}")
    print(f"  test figures {f['test_eval']}")
    print()
    print("Next:")
    print(f"  alexnet predict your_photo.jpg --weights {f['best']}")
    print(f"  alexnet evaluate fashion-mnist --weights {f['best']} --ten-crop")
    print(
        "  alexnet finetune path/to/your/images --weights torchvision --train-layers fc6,fc7,fc8 --reinit fc8 "
        "--val-split 0.1 --out runs/mine"
    )
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever & Hinton, 2012): classify, fine-tune, train, evaluate.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # One line per command group; each _add_* function lives in its own section above.
    _add_models(sub)
    _add_predict(sub)
    _add_convert(sub)
    _add_export(sub)
    _add_serve(sub)
    _add_evaluate(sub)
    _add_features(sub)
    _add_neighbors(sub)
    _add_plot(sub)
    _add_report(sub)
    _add_stats(sub)
    _add_prepare(sub)
    _add_train(sub)
    _add_finetune(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .runtime import tune_cpu_allocator

    tune_cpu_allocator()  # faster CPU steps, same results (see alexnet.runtime)
    try:
        return int(args.func(args) or EXIT_OK)
    except AlexnetError as e:
        print(f"alexnet {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `alexnet ... | head`: the reader left; not an error of ours
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
