"""argparse with the command line's error forms: a mistyped flag shows the usage of the subcommand it was typed
to (not the top level's) and the nearest flags that subcommand has ("did you mean --topk?"); a missing required
argument is one line. Both exit with `EXIT_USAGE` (2). Imports no torch."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import NoReturn

from .flags import EXIT_USAGE

__all__ = ["Parser", "parse"]

# Spellings a flag had before the vocabulary was made one (issue 22): what to suggest when one is typed where
# it no longer exists. Aliases that still work (-k, --data-dir, --allow-pickle, --top, --keep-checkpoints) are
# hidden flags of their own and need no entry.
RENAMED = {"--size": "--figure-size", "--weights": "--start"}  # plot's picture size; demo's starting point


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose missing-argument error is one line; subparsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):
            self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        super().error(message)  # the usage, then the message; exit 2


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that arguments no subcommand knows are reported by the subcommand
    that was typed, with its usage and the flags it has that are closest to them."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = _chosen(parser, args)
        sub.error(unrecognized(sub, extras))
    return args


def unrecognized(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """``unrecognized arguments: --topk2 (did you mean --topk?)``: the nearest visible flags of ``parser``."""
    flags = [s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings]
    hints = []
    for x in extras:
        if not x.startswith("-") or x == "-":
            continue
        name = x.split("=", 1)[0]
        renamed = RENAMED.get(name)
        close = [renamed] if renamed in flags else _nearest(name, flags)
        hints += [c for c in close if c not in hints]
    hint = f" (did you mean {' or '.join(hints)}?)" if hints else ""
    return f"unrecognized arguments: {' '.join(extras)}{hint}"


def _nearest(name: str, flags: Sequence[str]) -> list[str]:
    """The flag most like ``name``, compared without their dashes (``--bogus`` is not like ``--out``)."""
    bare = {f.lstrip("-"): f for f in flags}
    return [bare[m] for m in difflib.get_close_matches(name.lstrip("-"), list(bare), n=1, cutoff=0.7)]


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand parser ``args`` went through (``alexnet plot filters``: filters')."""
    current = parser
    while True:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return current
        chosen = getattr(args, subs[0].dest, None)
        if chosen is None or chosen not in subs[0].choices:
            return current
        current = subs[0].choices[chosen]
