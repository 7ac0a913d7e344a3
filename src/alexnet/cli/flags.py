"""The flags several commands share, each defined once here, and the one function that interprets each value:
weights (`add_weights_flags`, read by `weights_spec` into an `alexnet.options.WeightsSource`), device and precision
(`add_runtime_flags`, resolved by `runtime_values`), workers (`add_workers_flag`: `alexnet.options.check_workers`),
progress (`add_progress_flag`: `alexnet.options.resolve_progress`), top-k (`add_topk_flag`), the data a command
reads (`add_data_arg`), checkpoints kept (`add_keep_flag`) and ``--json`` (`add_json_flag`). A definition made
with ``config_keys=True`` (train, finetune) leaves its flag absent unless typed, so a config file's value stands.

Every action a definition makes carries ``definition`` (its function's name): `tests/test_cli.py` walks every
subcommand's parser and fails when a flag is declared by hand or one concept is spelled two ways.

Nothing here imports torch: building the parser, ``--help`` and an argument error stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import AlexnetError
from ..options import PRECISIONS, PROGRESS_MODES, WeightsSource, check_workers, default_workers, max_workers

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "KEEP_MODES",
    "Formatter",
    "add_data_arg",
    "add_data_dir_alias",
    "add_data_source_flags",
    "check_out_file",
    "add_json_flag",
    "add_keep_flag",
    "add_progress_flag",
    "add_runtime_flags",
    "add_topk_flag",
    "add_weights_flags",
    "add_workers_flag",
    "nonneg_int",
    "positive_int",
    "print_json",
    "runtime_values",
    "seed_int",
    "workers_int",
    "weights_spec",
]

# Exit codes (README, docs/ARCHITECTURE.md): 0 success; 1 an error the command explains in one line (bad input,
# a file that failed); 2 a usage error (unknown flag, bad value); 130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM
# (the shell's 128 + signal; a training run is saved and resumable).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
KEEP_MODES = ("all", "last", "best")  # `alexnet.train.config.KEEP_MODES` (that module is the training config's)
WEIGHTS_HELP = (
    "'torchvision', a recorded name (listed by `alexnet models`), or a .safetensors / .pth / .pt / bvlc .npy / "
    ".caffemodel file"
)
_UNSET = argparse.SUPPRESS


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in ``--help``, except None: a None default means "chosen at run time", which the help says."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == _UNSET:
            return action.help
        return super()._get_help_string(action)


def _mark(definition: str, *actions: argparse.Action) -> None:
    for a in actions:
        a.definition = definition  # type: ignore[attr-defined]


def _unset(config_keys: bool, default: Any) -> Any:
    """A config-key flag is absent unless typed (a config file's value stands); any other has its default."""
    return _UNSET if config_keys else default


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def seed_int(s: str) -> int:
    """A random seed: an integer in [0, 2**63) (torch's and numpy's generators take no more)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {s!r}") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..2**63-1, got {s}")
    return v


def workers_int(s: str) -> int:
    try:
        return check_workers(s)
    except AlexnetError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("workers: ")) from None


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


# --- weights --------------------------------------------------------------------------------------------------------
def add_weights_flags(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default: str | None = "torchvision",
    required: bool = False,
    positional: bool = False,
    arch: bool = True,
    config_keys: bool = False,
) -> None:
    """``--weights``, ``--arch``, ``--trust-pickle`` (``--allow-pickle``: a hidden alias) and a Caffe model's
    ``--prototxt``, ``--mean``, ``--labels``. ``positional``: the weights may also be given as the first positional
    argument (convert, export), read by `weights_spec`. ``config_keys``: train/finetune (`_unset`)."""
    mark = lambda *a: _mark("add_weights_flags", *a)  # noqa: E731
    if positional:
        mark(p.add_argument("weights_pos", nargs="?", default=None, metavar="WEIGHTS",
                            help=f"{WEIGHTS_HELP} (or --weights)"))  # fmt: skip
    mark(p.add_argument("--weights", default=_unset(config_keys, default), required=required and not positional,
                        help=WEIGHTS_HELP))  # fmt: skip
    caffe = p.add_argument_group("Caffe weights (.caffemodel)") if isinstance(p, argparse.ArgumentParser) else p
    mark(
        caffe.add_argument("--prototxt", default=_unset(config_keys, None), help="a .caffemodel's deploy net"),
        caffe.add_argument("--mean", default=_unset(config_keys, None),
                           help="a .caffemodel's mean: a .binaryproto file, or B,G,R (0..255, Caffe's order)"),
        caffe.add_argument("--labels", default=_unset(config_keys, None),
                           help="class names, one per line (e.g. synset_words.txt)"),
    )  # fmt: skip
    if arch:
        mark(p.add_argument(
            "--arch",
            default=_unset(config_keys, None),
            help="architecture of the weights (alexnet2012, caffenet, alexnet_owt; default: from the file). "
            "A bvlc .npy does not say whether LRN comes before pooling (alexnet2012) or after (caffenet)",
        ))  # fmt: skip
    trust = dict(dest="trust_pickle", action="store_true", default=_unset(config_keys, False))
    mark(
        p.add_argument("--trust-pickle", **trust, help="allow loading a pickled .npy (pickle can run arbitrary "
                       "code: only for files you trust); only on the command line, never from a config file"),
        p.add_argument("--allow-pickle", **{**trust, "default": _UNSET}, help=_UNSET),
    )  # fmt: skip


def weights_spec(args: argparse.Namespace) -> WeightsSource | None:
    """The one reading of the weights flags, as an `alexnet.options.WeightsSource`: ``--weights`` or the
    positional form (not both), ``--arch``, ``--trust-pickle``, and a Caffe model's ``--prototxt``, ``--mean``
    (read by `WeightsSource`), ``--labels``. None when no weights were given."""
    pos = getattr(args, "weights_pos", None)
    flag = getattr(args, "weights", None)
    if pos is not None and flag is not None and pos != flag:
        raise AlexnetError(f"weights given twice ({pos!r} and --weights {flag!r}): give one")
    source = pos or flag
    if source is None:
        return None
    return WeightsSource(
        str(source),
        arch=getattr(args, "arch", None),
        allow_pickle=bool(getattr(args, "trust_pickle", False)),
        prototxt=getattr(args, "prototxt", None),
        mean=getattr(args, "mean", None),
        labels=getattr(args, "labels", None),
    )


# --- where and how a model runs ---------------------------------------------------------------------------------------
def add_runtime_flags(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    precision: str = "auto",
    precision_help: str = "",
    config_keys: bool = False,
) -> None:
    """``--device`` and ``--precision`` (one vocabulary everywhere; `runtime_values` resolves both, once)."""
    _mark(
        "add_runtime_flags",
        p.add_argument("--device", default=_unset(config_keys, "auto"),
                       help="'auto' (this process's GPU if any, else cpu), 'cpu', 'cuda', 'cuda:N'"),
        p.add_argument("--precision", choices=PRECISIONS, default=_unset(config_keys, precision), help=precision_help
                       or "auto: bf16 where the device computes it natively (CUDA, AVX512-BF16 / AMX CPUs), else fp32"),
    )  # fmt: skip


def runtime_values(args: argparse.Namespace) -> tuple[Any, Any]:
    """``--device`` and ``--precision`` resolved, once, where a command starts: (`torch.device`,
    `alexnet.runtime.Precision`). Library functions take these, never the words. Imports torch."""
    from ..runtime import resolve_device, resolve_precision

    device = resolve_device(args.device)
    return device, resolve_precision(args.precision, device)


def add_workers_flag(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default_help: str = "",
    config_keys: bool = False,
) -> None:
    """``--workers N``: one meaning everywhere, the processes (threads where a command decodes in threads) that
    read and decode images beside the model; 0: the command's own process does it. More than 4 per CPU is
    refused (`alexnet.options.check_workers`). ``default_help``: the command's default when not one per CPU."""
    default = default_help or f"one per CPU, at most 4 (here {default_workers()})"
    _mark("add_workers_flag", p.add_argument(
        "--workers",
        type=workers_int,
        default=_unset(config_keys, None),
        help=f"workers that read and decode images beside the model (0: none, the command's own process reads "
        f"them); default: {default}; at most {max_workers()}",
    ))  # fmt: skip


def add_progress_flag(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: str = "auto", config_keys: bool = False
) -> None:
    """``--progress {auto,bar,log,none}``; a bare ``--progress`` means auto, ``--no-progress`` none."""
    _mark(
        "add_progress_flag",
        p.add_argument("--progress", nargs="?", const="auto", default=_unset(config_keys, default),
                       choices=PROGRESS_MODES, help="auto: a bar on a terminal, a line every 10%% otherwise; none: "
                       "quiet (progress goes to stderr)"),
        p.add_argument("--no-progress", dest="progress", action="store_const", const="none", default=_UNSET,
                       help=_UNSET),
    )  # fmt: skip


# --- what a command reads and prints --------------------------------------------------------------------------------
DATA_HELP = (
    "class folders, a train/ + val/ folder, a list file, a prepared set, a Fashion-MNIST folder or 'fashion-mnist'"
)


def add_data_arg(
    p: argparse.ArgumentParser, *, flag: bool = False, optional: bool = False, help: str = DATA_HELP
) -> None:
    """The data a command reads: the positional DATA, or ``--data`` where the positional is another's (report's
    RUN_DIR) or the command has a default (demo)."""
    if flag:
        _mark("add_data_arg", p.add_argument("--data", default=None, metavar="DATA", help=help))
        return
    kw: dict[str, Any] = {"nargs": "?", "default": _UNSET} if optional else {}
    _mark("add_data_arg", p.add_argument("data", metavar="DATA", help=help, **kw))


def add_data_dir_alias(p: argparse.ArgumentParser) -> None:
    """``--data-dir DIR``, hidden: the folder that holds Fashion-MNIST when DATA (or demo's ``--data``) is the
    name 'fashion-mnist'. The visible spelling is DATA itself: a Fashion-MNIST folder is a data source."""
    _mark("add_data_dir_alias", p.add_argument("--data-dir", default=None, help=_UNSET))


def add_topk_flag(p: argparse.ArgumentParser, *, default: int, what: str) -> None:
    """``--topk K`` (``-k``: a hidden alias): how many of the best answers each query shows."""
    _mark(
        "add_topk_flag",
        p.add_argument("--topk", type=positive_int, default=default, help=what),
        p.add_argument("-k", dest="topk", type=positive_int, default=_UNSET, help=_UNSET),
    )


def add_keep_flag(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: str | None, help: str, config_keys: bool = False
) -> None:
    """``--keep {all,last,best}``: which checkpoints a run keeps once it is complete."""
    _mark("add_keep_flag", p.add_argument("--keep", choices=KEEP_MODES, default=_unset(config_keys, default),
                                          help=help))  # fmt: skip


def check_out_file(args: argparse.Namespace) -> None:
    """``--out`` FILE that cannot be written (a folder, or under a file), refused before torch loads and before
    the pass over the data (a command's ``check``)."""
    from ..data.fileio import check_output_file  # plain files: no torch

    check_output_file(args.out)


def add_json_flag(p: argparse.ArgumentParser, *, what: str = "print JSON") -> None:
    """``--json``: stdout is one JSON document (progress and notes go to stderr); docs/CONTRACTS.md has each
    command's schema, named by the ``schema`` key of the new summaries (``alexnet.train/1``, ...)."""
    _mark("add_json_flag", p.add_argument("--json", action="store_true", help=what))


def add_data_source_flags(p: argparse.ArgumentParser, *, split: str | None) -> None:
    """DATA and the flags that choose its samples (evaluate, features)."""
    add_data_arg(p)
    p.add_argument(
        "--split",
        default=split,
        choices=SPLITS,
        help="which samples" + (" (default: val where DATA has one, else all)" if split is None else ""),
    )
    p.add_argument("--val-split", type=float, default=0.0, help="share held out as 'val' when DATA has no val/")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the --val-split draw (use the training run's)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    add_workers_flag(p)
    add_progress_flag(p)


SPLITS = ("train", "val", "test", "all")  # test: the held-out part, as val where a data set has only one
