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
    p.add_argument("--allow-pickle", action="store_true", help="allow loading pickled .npy weights")
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
        allow_pickle=args.allow_pickle,
        options=options,
        log_level=args.log_level,
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
    _add_serve(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or EXIT_OK)
    except AlexnetError as e:
        print(f"alexnet {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
