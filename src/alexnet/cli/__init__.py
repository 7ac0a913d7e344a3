"""Command line: argparse subcommands that parse flags and call the library. No logic of its own.

Every command has ``--help`` with defaults, ``--json`` where it prints results, and a one-line error (no
traceback) for user mistakes. Exit codes: 0 success; 1 an error explained in one line; 2 a usage error (a
mistyped flag shows the subcommand's usage and the nearest flags); 130 / 143 stopped by SIGINT / SIGTERM.
Building the parser imports no torch and no training code: ``alexnet --help`` and a mistyped flag answer at once;
each command imports what it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import AlexnetError, one_line
from . import data, evaluation, infer, training
from .flags import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Formatter
from .parser import Parser, parse

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever & Hinton, 2012): classify, fine-tune, train, evaluate.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    infer.add_commands(sub)  # models, predict, convert, export, serve, info
    evaluation.add_commands(sub)  # evaluate, features, neighbors, plot, report
    data.add_commands(sub)  # stats, prepare
    training.add_commands(sub)  # train, finetune, demo
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code (tests and Python callers use this; the program is `run`)."""
    return _execute(argv)[0]


def _execute(argv: Sequence[str] | None) -> tuple[int, bool]:
    """(exit code, whether the process may end without the interpreter's teardown)."""
    parser = build_parser()
    args = parse(parser, argv)
    fast = bool(getattr(args, "fast_exit", False))
    try:
        check = getattr(args, "check", None)
        if check is not None:  # refusals that need no torch (an --out that exists), made before it loads
            check(args)
        from ..runtime import tune_cpu_allocator

        tune_cpu_allocator()  # faster CPU steps, same results (see alexnet.runtime)
        return int(args.func(args) or EXIT_OK), fast
    except AlexnetError as e:
        print(f"alexnet {args.command}: error: {one_line(e, limit=None)}", file=sys.stderr)
        return EXIT_ERROR, fast
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED, False
    except BrokenPipeError:  # `alexnet ... | head`: the reader left; not an error of ours
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK, False


def run() -> None:
    """The ``alexnet`` program (console script and ``python -m alexnet``). After a command that leaves nothing
    running behind it (``fast_exit``: predict, models, convert, export), the process ends as soon as its output is
    flushed, skipping the interpreter's teardown of torch, a third of a second of a one-photo ``alexnet predict``
    (docs/BENCHMARKS.md). Other commands exit normally, so that loader workers, TensorBoard writers and servers
    are shut down as usual."""
    from ..threads import configure_openmp

    configure_openmp(command=sys.argv[1] if len(sys.argv) > 1 else "")  # before torch loads (alexnet.threads)
    code, fast = _execute(sys.argv[1:])
    if fast:
        import contextlib
        import os

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
                stream.flush()
        os._exit(code)
    raise SystemExit(code)
