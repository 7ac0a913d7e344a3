"""The flags several commands share, each defined once, and the one function that interprets each value:
weights (`weights_spec`), device and precision (`add_runtime_flags`; `alexnet.runtime` resolves them), workers
(`alexnet.options.check_workers`) and progress (`alexnet.options.resolve_progress`).

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
    "EXIT_OK",
    "EXIT_USAGE",
    "Formatter",
    "add_data_source_flags",
    "add_progress_flag",
    "add_runtime_flags",
    "add_weights_flags",
    "add_workers_flag",
    "nonneg_int",
    "positive_int",
    "print_json",
    "seed_int",
    "workers_int",
    "weights_spec",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
WEIGHTS_HELP = (
    "'torchvision', a recorded name (alexnet models --weights) or a .safetensors / .pth / .pt / bvlc .npy file"
)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in ``--help``, except None: a None default means "chosen at run time", which the help says."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


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
    """``--weights``, ``--arch``, ``--trust-pickle`` (``--allow-pickle`` is an alias). ``positional``: the weights
    may also be given as the first positional argument (convert, export), read by `weights_spec`. ``config_keys``:
    the flags are config-file keys (train/finetune): absent unless given, so a config file's value stands."""
    if positional:
        p.add_argument("weights_pos", nargs="?", default=None, metavar="WEIGHTS", help=f"{WEIGHTS_HELP} (or --weights)")
    unset = argparse.SUPPRESS if config_keys else None  # absent unless given: a config file's value stands
    p.add_argument("--weights", default=unset or default, required=required and not positional, help=WEIGHTS_HELP)
    caffe = p.add_argument_group("Caffe weights (.caffemodel)") if isinstance(p, argparse.ArgumentParser) else p
    caffe.add_argument("--prototxt", default=unset, help="a .caffemodel's deploy net definition")
    caffe.add_argument(
        "--mean", default=unset, help="a .caffemodel's mean: a .binaryproto file, or B,G,R (0..255, Caffe's order)"
    )
    caffe.add_argument("--labels", default=unset, help="class names, one per line (e.g. synset_words.txt)")
    if arch:
        p.add_argument(
            "--arch",
            default=unset,
            help="architecture of the weights (alexnet2012, caffenet, alexnet_owt; default: from the file). "
            "A bvlc .npy does not say whether LRN comes before pooling (alexnet2012) or after (caffenet)",
        )
    p.add_argument(
        "--trust-pickle",
        "--allow-pickle",
        dest="trust_pickle",
        action="store_true",
        default=unset or False,
        help="allow loading a pickled .npy (pickle can run arbitrary code: only for files you trust); "
        "only on the command line, never from a config file",
    )


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
def add_runtime_flags(p: argparse.ArgumentParser, *, precision: str = "auto", precision_help: str = "") -> None:
    """``--device`` and ``--precision`` (one vocabulary everywhere; `alexnet.runtime` resolves both)."""
    p.add_argument(
        "--device", default="auto", help="'auto' (this process's GPU if any, else cpu), 'cpu', 'cuda:0', ..."
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=precision,
        help=precision_help
        or "auto: bf16 where the device computes it natively (CUDA, AVX512-BF16 / AMX CPUs), else fp32",
    )


def runtime_values(args: argparse.Namespace) -> tuple[Any, Any]:
    """``--device`` and ``--precision`` resolved, once, where a command starts: (`torch.device`,
    `alexnet.runtime.Precision`). Library functions take these, never the words. Imports torch."""
    from ..runtime import resolve_device, resolve_precision

    device = resolve_device(args.device)
    return device, resolve_precision(args.precision, device)


def add_workers_flag(p: argparse.ArgumentParser, *, what: str = "data loader processes (threads for a prepared set)"):
    """``--workers``: default one per CPU, at most 4 (`alexnet.options.default_workers`); more than 4 per CPU is
    refused."""
    p.add_argument(
        "--workers",
        type=workers_int,
        default=None,
        help=f"{what}; default: one per CPU, at most 4 (here {default_workers()}); at most {max_workers()}",
    )


def add_progress_flag(p: argparse.ArgumentParser, *, default: str = "auto") -> None:
    """``--progress {auto,bar,log,none}``; a bare ``--progress`` means auto, ``--no-progress`` none."""
    p.add_argument(
        "--progress",
        nargs="?",
        const="auto",
        default=default,
        choices=PROGRESS_MODES,
        help="auto: a bar on a terminal, a line every 10%% otherwise; none: quiet",
    )
    p.add_argument("--no-progress", dest="progress", action="store_const", const="none", help=argparse.SUPPRESS)


def add_data_source_flags(p: argparse.ArgumentParser, *, split: str | None) -> None:
    """DATA and the flags that choose its samples (evaluate, features)."""
    p.add_argument("data", metavar="DATA", help="class folders, a train/+val/ folder, a list file, a prepared set "
                   "or 'fashion-mnist'")  # fmt: skip
    p.add_argument(
        "--split",
        default=split,
        choices=["train", "val", "test", "all"],
        help="which samples" + (" (default: val where DATA has one, else all)" if split is None else ""),
    )
    p.add_argument("--val-split", type=float, default=0.0, help="share held out as 'val' when DATA has no val/")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the --val-split draw (use the training run's)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    add_workers_flag(p)
    add_progress_flag(p)
