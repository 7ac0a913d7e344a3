"""Commands that run or move weights: models, predict, convert, export, serve, info. Parsing and wiring only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import AlexnetError
from ..limits import ONNX_OPSETS, check_opset
from ..schemas import tagged
from .flags import (
    EXIT_ERROR,
    EXIT_OK,
    Formatter,
    add_json_flag,
    add_progress_flag,
    add_runtime_flags,
    add_topk_flag,
    add_weights_flags,
    add_workers_flag,
    positive_int,
    print_json,
    runtime_values,
    weights_spec,
)

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_models(sub)
    _add_predict(sub)
    _add_convert(sub)
    _add_export(sub)
    _add_serve(sub)
    _add_info(sub)


# --- models -----------------------------------------------------------------------------------------------------------
def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models", help="list the registered architectures and pretrained weights", formatter_class=Formatter
    )
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classes of fc8")
    add_json_flag(p)
    p.set_defaults(func=_cmd_models, fast_exit=True)


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models import count_macs, count_parameters, create_model, list_models
    from ..weights import CAFFE_ZOO, PRETRAINED

    rows = []
    for name in list_models():
        m = create_model(name, num_classes=args.num_classes)
        macs = count_macs(m)
        rows.append(
            {
                "name": name,
                "parameters": count_parameters(m),
                "gflops": round(2 * macs / 1e9, 3),
                "gmacs": round(macs / 1e9, 3),
                "input_size": m.config.input_size,
            }
        )
    if args.json:
        weights = [
            {"name": name, "arch": rec.arch, "num_classes": rec.num_classes, "format": rec.file_format}
            for name, rec in PRETRAINED.items()
        ]
        weights += [
            {"name": f"caffe:{name}" if name in PRETRAINED else name, "arch": z.arch, "num_classes": z.num_classes,
             "format": "caffemodel"}
            for name, z in CAFFE_ZOO.items()
        ]  # fmt: skip
        print_json(tagged("models", {"models": rows, "weights": weights}))
        return EXIT_OK
    print(f"{'name':<14}{'parameters':>14}{'GFLOPs':>9}{'input':>9}")
    for r in rows:
        print(f"{r['name']:<14}{r['parameters']:>14,}{r['gflops']:>9.2f}{r['input_size']:>6}x{r['input_size']}")
    print("\npretrained weights (--weights NAME):")
    for name, rec in PRETRAINED.items():
        print(f"  {name:<24}{rec.arch:<14}{rec.num_classes:>6} classes")
    for name, zoo in CAFFE_ZOO.items():  # a name the records above hold too is caffe:NAME
        shown = f"caffe:{name}" if name in PRETRAINED else name
        print(f"  {shown:<24}{zoo.arch:<14}{zoo.num_classes:>6} classes  (Caffe)")
    return EXIT_OK


# --- predict ----------------------------------------------------------------------------------------------------------
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images: top-k classes with probabilities",
        description="Classify image files, folders (searched recursively) and globs. Bad files are reported by "
        "name and the others still classified; the exit code is 1 if any file failed.",
        formatter_class=Formatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or globs")
    add_weights_flags(p)
    add_topk_flag(p, default=5, what="classes to show per image")
    p.add_argument("--ten-crop", action="store_true", help="average the softmax over the paper's 10 patches")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    add_workers_flag(p, default_help="the CPUs, at most 8 (threads: decoding releases the GIL)")
    add_runtime_flags(
        p,
        precision_help="auto: bf16 weights (cast once, channels_last) where the device computes bf16 natively "
        "(CUDA, AVX512-BF16 / AMX CPUs), else fp32",
    )
    add_progress_flag(p, default="none")
    add_json_flag(p, what="print JSON (docs/JSON.md, alexnet.predict): per file predictions or error")
    p.set_defaults(func=_cmd_predict, fast_exit=True)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..predict import expand_inputs, predict_files
    from ..progress import track
    from ..weights import load_for_inference

    device, precision = runtime_values(args)
    files = expand_inputs(args.inputs)
    if not files:
        raise AlexnetError(f"no image files found in {' '.join(args.inputs)}")
    model, pre = load_for_inference(weights_spec(args), device, precision)  # --weights defaults to torchvision
    results = []
    stream = predict_files(
        model,
        pre,
        files,
        topk=args.topk,
        ten_crop=args.ten_crop,
        batch_size=args.batch_size,
        device=device,
        workers=args.workers,
        expand=False,
        precision=precision,
    )
    for r in track(stream, "predict", args.progress, total=len(files), unit="image"):
        if r.error is not None:
            print(f"alexnet predict: error: {r.error}", file=sys.stderr)
        elif not args.json:
            print(r.file)
            for s in r.scores or []:
                print(f"  {s.prob:8.4f}  {s.name} ({s.index})")
        results.append(r)
    if args.json:
        body = {"weights": str(weights_spec(args)), "ten_crop": args.ten_crop, "topk": args.topk}
        print_json(tagged("predict", {**body, "results": [r.to_dict() for r in results]}))
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"alexnet predict: {failed} of {len(results)} files failed", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


# --- convert / export -------------------------------------------------------------------------------------------------
def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert weights between formats",
        description="Read weights in any supported format and write them in the format of DST's suffix: "
        ".safetensors (ours: weights + arch, config, preprocessing, class names), .npy (the bvlc_alexnet layout "
        "the tutorial's TensorFlow code loads), .pth/.pt (a plain torch state dict). "
        "Usage: alexnet convert SRC DST, or alexnet convert --weights SRC DST.",
        formatter_class=Formatter,
    )
    add_weights_flags(p, default=None, positional=True)
    p.add_argument("dst", metavar="DST", help="output file: .safetensors, .npy, .pth or .pt")
    p.add_argument(
        "--lossy",
        action="store_true",
        help="write a .npy even when the bvlc layout cannot express the model (it then loads as another model)",
    )
    add_json_flag(p)
    p.set_defaults(func=_cmd_convert, fast_exit=True)


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..weights import load_model, parent_of, read_provenance, save_notes, save_weights, weights_format

    spec = weights_spec(args)
    if spec is None:
        raise AlexnetError("convert needs SRC: alexnet convert SRC DST (or --weights SRC DST)")
    weights_format(args.dst)  # an unknown suffix is refused before loading anything
    model, pre = load_model(spec)
    carried = read_provenance(spec) or {}  # the same weights: their data, epochs and metrics stay theirs
    provenance = {**{k: carried.get(k) for k in ("data", "epochs", "metrics")}, "parent": parent_of(spec)}
    dst = save_weights(model, pre, args.dst, arch=spec.arch, lossy=args.lossy, provenance=provenance)
    for line in save_notes(model, pre, dst):
        print(f"alexnet convert: {line}", file=sys.stderr)
    if args.json:
        print_json(tagged("convert", {"src": str(spec.source), "dst": str(dst), "format": weights_format(dst)}))
    else:
        print(f"wrote {dst}")
    return EXIT_OK


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export weights for other runtimes (ONNX)",
        description="Export to ONNX with a dynamic batch axis, verified against onnxruntime. The input is the "
        "normalised (N, 3, S, S) float tensor; the preprocessing and class names are in the model's metadata.",
        formatter_class=Formatter,
    )
    add_weights_flags(p, default=None, positional=True)
    p.add_argument("--onnx", required=True, metavar="OUT", help="output .onnx file")
    p.add_argument(
        "--opset",
        type=_opset_int,
        default=None,
        help=f"ONNX opset, {ONNX_OPSETS[0]} to {ONNX_OPSETS[1]} (default: the exporter's)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    add_json_flag(p)
    p.set_defaults(func=_cmd_export, fast_exit=True)


def _opset_int(s: str) -> int:
    try:
        return check_opset(positive_int(s))
    except AlexnetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _cmd_export(args: argparse.Namespace) -> int:
    from ..weights import export_onnx, load_model

    spec = weights_spec(args)
    if spec is None:
        raise AlexnetError("export needs weights: alexnet export WEIGHTS --onnx OUT (or --weights WEIGHTS)")
    model, pre = load_model(spec)
    diff = export_onnx(model, pre, args.onnx, opset=args.opset, verify=not args.no_verify)
    if args.json:
        print_json(tagged("export", {"onnx": str(args.onnx), "max_abs_diff_vs_pytorch": diff}))
    else:
        check = f" (onnxruntime vs PyTorch max abs diff {diff:.2e})" if diff is not None else ""
        print(f"wrote {args.onnx}{check}")
    return EXIT_OK


# --- info -------------------------------------------------------------------------------------------------------------
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="what a weights file is and where it comes from (provenance)",
        description="The weights' architecture and description, classes, parameters, preprocessing, SHA-256 and "
        "the provenance our files record: package version, parent weights and their hash, data, epochs, final "
        "metrics, date (docs/FORMATS.md). Files written before provenance was recorded show none.",
        formatter_class=Formatter,
    )
    add_weights_flags(p, default=None, positional=True)
    add_json_flag(p, what="print JSON (docs/JSON.md, alexnet.info)")
    p.set_defaults(func=_cmd_info, fast_exit=True)


def _cmd_info(args: argparse.Namespace) -> int:
    from ..weights import format_info, weights_info

    spec = weights_spec(args)
    if spec is None:
        raise AlexnetError("info needs weights: alexnet info WEIGHTS (or --weights WEIGHTS)")
    info = weights_info(spec)
    if args.json:
        print_json(tagged("info", info))
    else:
        print(format_info(info))
    return EXIT_OK


# --- serve ------------------------------------------------------------------------------------------------------------
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: a JSON API and a web page",
        formatter_class=Formatter,
        description="Serve a model: the page at http://HOST:PORT/, POST /v1/predict (multipart field 'image'), "
        "GET /v1/model, /healthz, /openapi.json. Needs the [serve] extra: pip install 'alexnet[serve]'.",
    )
    add_weights_flags(p, default=None, required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; another than loopback only when asked")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    add_runtime_flags(p)
    p.add_argument("--max-bytes", type=positive_int, default=20_000_000, help="largest request body in bytes")
    p.add_argument("--max-images", type=positive_int, default=16, help="most images in one request")
    p.add_argument("--max-pixels", type=positive_int, default=50_000_000, help="most decoded pixels per image")
    p.add_argument(
        "--max-request-pixels",
        type=positive_int,
        default=100_000_000,
        help="most decoded pixels of all images of one request (413 beyond)",
    )
    p.add_argument(
        "--max-inflight-pixels",
        type=positive_int,
        default=200_000_000,
        help="most decoded pixels of all requests being decoded at once (503 with Retry-After beyond)",
    )
    p.add_argument("--max-connections", type=positive_int, default=256, help="most open connections (503 beyond)")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds a request's headers may take")
    p.add_argument("--body-timeout", type=float, default=60.0, help="seconds a request's body may take")
    p.add_argument("--max-batch", type=positive_int, default=64, help="most rows in one forward pass")
    p.add_argument("--batch-window-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:  # before anything is imported or read (the options are checked by ServeOptions)
        raise AlexnetError(f"--port must be in 0..65535, got {args.port}")
    from ..runtime import one_malloc_arena

    one_malloc_arena()  # before any thread starts: memory freed after a burst can go back (docs/RELIABILITY.md)
    from ..serve import ServeOptions, serve  # raises a one-line AlexnetError without the [serve] extra
    from ..weights import PRETRAINED, load_for_inference, read_provenance

    spec = weights_spec(args)
    device, precision = runtime_values(args)
    options = ServeOptions(
        max_bytes=args.max_bytes,
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        max_request_pixels=args.max_request_pixels,
        max_inflight_pixels=args.max_inflight_pixels,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        device=device,
        precision=precision,
    )
    model, pre = load_for_inference(spec, device, options.precision)  # the server's own model: cast in place
    name = spec.source if spec.source in PRETRAINED else Path(spec.source).name
    serve(model, preprocessing=pre, name=name, provenance=read_provenance(spec), host=args.host, port=args.port,
          options=options, log_level=args.log_level)  # fmt: skip
    return EXIT_OK
