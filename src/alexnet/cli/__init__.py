"""Command line: argparse subcommands that parse flags and call the library. No logic of its own.

Every command has ``--help`` with defaults, ``--json`` where it prints results, exit code 0 only on success,
and a one-line error (no traceback) for user mistakes. Building the parser imports no torch and no training
code: ``alexnet --help`` and a mistyped flag answer at once; each command imports what it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import AlexnetError
from . import data, evaluation, infer, training
from .flags import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Formatter

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever & Hinton, 2012): classify, fine-tune, train, evaluate.",
        formatter_class=Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    infer.add_commands(sub)  # models, predict, convert, export, serve
    evaluation.add_commands(sub)  # evaluate, features, neighbors, plot, report
    data.add_commands(sub)  # stats, prepare
    training.add_commands(sub)  # train, finetune, demo
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..runtime import tune_cpu_allocator

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
