"""Commands that train: train (from scratch), finetune (from loaded weights), demo. Wiring only: every flag of
train and finetune is a config-file key (`alexnet.train.config_from_sources` merges them)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..names import INIT_SCHEMES
from ..options import PRECISIONS, PROGRESS_MODES, default_workers
from .flags import (
    EXIT_OK,
    Formatter,
    add_progress_flag,
    add_runtime_flags,
    add_weights_flags,
    positive_int,
    print_json,
    seed_int,
    workers_int,
)

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_finetune(sub)
    _add_demo(sub)
    _add_ablate(sub)


# --- train / finetune ---------------------------------------------------------------------------------------------
def _train_default(name: str) -> str:
    from ..train.config import TrainConfig  # plain data: imports no torch

    return f" (default: {getattr(TrainConfig(), name)})"


def _key_value(s: str) -> tuple[str, Any]:
    key, sep, value = s.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_run_folder_flags(p: argparse.ArgumentParser) -> None:
    """--out, --resume, --overwrite (the last is never a config key: only typed, it may remove a run)."""
    S = argparse.SUPPRESS
    p.add_argument("--out", default=S, help="run folder; one that holds a run is refused without --resume or "
                   "--overwrite (default: a new folder runs/train, runs/train-2, ...)")  # fmt: skip
    p.add_argument("--resume", default=S, metavar="RUN_DIR", help="continue RUN_DIR exactly where it stopped "
                   "(--epochs N trains it longer; the settings that define the run cannot change)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", default=S, help="--out holds a run: remove its files "
                   "(only those a run writes) and start afresh")  # fmt: skip


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
    _add_run_folder_flags(p)
    _add_data_group(p.add_argument_group("data"), d)
    _add_model_group(p.add_argument_group("model"), d)
    _add_recipe_group(p.add_argument_group("recipe (section 5)"), d)
    _add_engineering_group(p.add_argument_group("engineering"), d)


def _add_data_group(g: argparse._ArgumentGroup, d: Any) -> None:
    S = argparse.SUPPRESS
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
        "--workers",
        type=workers_int,
        default=S,
        help=f"loader processes per rank (threads for a prepared set); default: one per CPU, at most 4 "
        f"(here {default_workers()})",
    )
    g.add_argument("--on-bad-image", choices=["skip", "fail"], default=S, help="bad images" + d("on_bad_image"))


def _add_model_group(g: argparse._ArgumentGroup, d: Any) -> None:
    S = argparse.SUPPRESS
    g.add_argument("--arch", default=S, help="architecture (alexnet models); default: alexnet2012, or the weights' "
                   "own when fine-tuning (a .pth or bvlc .npy does not say caffenet from alexnet2012)")  # fmt: skip
    g.add_argument("--input-size", type=positive_int, default=S, help="crop side (default: the architecture's)")
    g.add_argument("--resize-size", type=positive_int, default=S, help="short side before cropping (default: 256)")
    g.add_argument("--dropout", type=float, default=S, help="dropout p (section 4.2)" + d("dropout"))
    g.add_argument("--init", choices=INIT_SCHEMES, default=S, help="initialisation" + d("init"))
    g.add_argument(
        "--model-option",
        type=_key_value,
        action="append",
        default=S,
        metavar="KEY=VALUE",
        help="any AlexNetConfig field, e.g. lrn=false or groups=1 (repeatable)",
    )


def _add_recipe_group(g: argparse._ArgumentGroup, d: Any) -> None:
    S = argparse.SUPPRESS
    g.add_argument("--epochs", type=positive_int, default=S, help="epochs" + d("epochs"))
    g.add_argument("--batch-size", type=positive_int, default=S, help="global batch" + d("batch_size"))
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
    g.add_argument("--step-size", type=positive_int, default=S, help="iterations per step" + d("step_size"))
    g.add_argument("--warmup-steps", type=int, default=S, help="iterations of linear lr warm-up (step schedule)"
                   + d("warmup_steps"))  # fmt: skip
    g.add_argument("--seed", type=seed_int, default=S, help="random seed" + d("seed"))


def _add_engineering_group(g: argparse._ArgumentGroup, d: Any) -> None:
    S = argparse.SUPPRESS
    g.add_argument("--device", default=S, help="auto, cpu, cuda, cuda:N" + d("device"))
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=S,
        help="autocast precision (auto: bf16 where native)" + d("precision"),
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
    g.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default=S,
        help="auto: a bar on a terminal, log lines otherwise" + d("progress"),
    )
    g.add_argument("--log-every", type=positive_int, default=S, help="steps per log line" + d("log_every"))
    g.add_argument("--keep", choices=["all", "last", "best"], default=S, help="checkpoints kept: all (state.pt, last "
                   "and best weights), last (no best.safetensors), best (only best.safetensors once the run is "
                   "complete: it cannot be extended)" + d("keep"))  # fmt: skip
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
        formatter_class=Formatter,
        description="Train AlexNet from scratch: SGD, batch 128, momentum 0.9, weight decay 5e-4, lr 0.01 /10 on "
        "plateau (3 times), 90 epochs. Many GPUs: torchrun --nproc_per_node N -m alexnet train DATA ...",
    )
    _add_train_common(p)
    p.set_defaults(func=_cmd_train)


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune loaded weights on your own images",
        formatter_class=Formatter,
        description="Fine-tune: --train-layers chooses which layers learn (the rest are frozen), --reinit which "
        "start afresh (fc8 always, when the class count differs).",
    )
    _add_train_common(p)
    S = argparse.SUPPRESS
    g = p.add_argument_group("fine-tuning")
    add_weights_flags(g, arch=False, config_keys=True)  # --arch is in the model group (train builds it too)
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
    from ..train import config_from_sources, main

    skip = ("func", "command", "config", "model_option", "overwrite")
    flags = {k: v for k, v in vars(args).items() if k not in skip}
    if getattr(args, "model_option", None):
        flags["model_options"] = dict(args.model_option)
    config = config_from_sources(flags, config_file=args.config, command=args.command)
    result = main(config, overwrite=getattr(args, "overwrite", False))
    # the shell's convention for a process a signal stopped: 128 + the signal (SIGINT 130, SIGTERM 143)
    return 128 + result.signal if result.signal else EXIT_OK


# --- demo ---------------------------------------------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job on Fashion-MNIST, offline, in minutes",
        description="Fine-tune ImageNet AlexNet on Fashion-MNIST when its weights are cached or downloadable, "
        "else train alexnet2012 from scratch; evaluate on held-out test images; write a run folder with "
        "metrics, checkpoints and an HTML report; classify a few test images. Defaults (None) depend on the "
        "device: a CPU gets a run of a few minutes, --full is the paper's setting for a GPU.",
        formatter_class=Formatter,
    )
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's idx files (default: usual places)")
    p.add_argument("--weights", choices=["auto", "torchvision", "none"], default="auto", help="start from")
    p.add_argument("--full", action="store_true", help="whole training set, 10 epochs, 227x227 input (GPU)")
    p.add_argument("--train-samples", type=int, default=None, help="training images (0: all)")
    p.add_argument("--val-samples", type=positive_int, default=None, help="training images held out")
    p.add_argument("--test-samples", type=positive_int, default=None, help="first N test images to report on")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--input-size", type=positive_int, default=None, help="crop side")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--init", choices=INIT_SCHEMES, default="kaiming", help="from-scratch initialisation")
    add_runtime_flags(p, precision_help="auto: bf16 autocast where the device computes it natively, else fp32")
    p.add_argument("--workers", type=workers_int, default=None, help="loader processes (default: 0 on a CPU, whose "
                   "cores compute; one per CPU, at most 8, on a GPU)")  # fmt: skip
    add_progress_flag(p)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--no-download", action="store_true", help="never use the network")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run_demo

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
        precision=args.precision,
        progress=args.progress,
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
        print_json(
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
    _print_demo(r)
    return EXIT_OK


def _print_demo(r: Any) -> None:
    """The demo's summary: a few classified test images, the figures, where everything is, what to try next."""
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


# --- ablate ---------------------------------------------------------------------------------------------------------
def _add_ablate(sub: argparse._SubParsersAction) -> None:
    from ..ablate_variants import SCALES, VARIANTS  # plain data, no torch

    p = sub.add_parser(
        "ablate",
        help="what each of the paper's ideas is worth: the full recipe and one-switch variants, side by side",
        formatter_class=Formatter,
        description="Train the full recipe and each variant with exactly one switch changed (same seeds, data order "
        "and split), evaluate each with a centre crop and ten patches on held-out data, and report the mean "
        "difference from full with its t-interval over the seeds, beside the paper's figure (ablation.json, "
        "ablation.md, pictures). A finished run is skipped on a rerun, a stopped one resumed.",
    )
    p.add_argument("data", help="Fashion-MNIST's folder (or 'fashion-mnist'), or an image folder / list file")
    p.add_argument("--out", default="runs/ablate", help="runs and outputs go here")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; full is always run")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..N-1 for every variant")
    p.add_argument("--epochs", type=positive_int, default=None, help="default: the scale's (cpu 4, full 90)")
    p.add_argument(
        "--scale",
        choices=tuple(SCALES),
        default="cpu",
        help="cpu: 67x67, 6,000 images, a few epochs (a CPU); full: 227x227, the whole set, 90 epochs (a GPU)",
    )
    add_runtime_flags(p, precision_help="training's autocast for every variant alike (auto: bf16 where native)")
    p.add_argument("--workers", type=workers_int, default=None, help="loader processes (default: the scale's)")
    p.add_argument("--threshold", type=float, default=0.25, help="training error for Figure 1's timing")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep state.pt and best.safetensors")
    p.add_argument("--report-only", action="store_true", help="train nothing: tables and pictures from finished runs")
    add_progress_flag(p)
    p.set_defaults(func=_cmd_ablate)


def _cmd_ablate(args: argparse.Namespace) -> int:
    from ..ablate import AblationConfig, parse_variants, run_ablation

    config = AblationConfig(
        data=args.data,
        out=args.out,
        variants=parse_variants(args.variants),
        seeds=args.seeds,
        epochs=args.epochs,
        scale=args.scale,
        device=args.device,
        precision=args.precision,
        workers=args.workers,
        threshold=args.threshold,
        keep_checkpoints=args.keep_checkpoints,
        report_only=args.report_only,
        progress=args.progress,
    )
    run_ablation(config)
    return EXIT_OK
