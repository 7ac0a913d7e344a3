"""Commands that train: train (from scratch), finetune (from loaded weights), demo. Wiring only: every flag of
train and finetune is a config-file key (`alexnet.train.config_from_sources` merges them)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from ..errors import AlexnetError
from ..names import INIT_SCHEMES
from ..schemas import tagged
from .flags import (
    EXIT_OK,
    Formatter,
    add_data_arg,
    add_data_dir_alias,
    add_json_flag,
    add_keep_flag,
    add_progress_flag,
    add_runtime_flags,
    add_weights_flags,
    add_workers_flag,
    nonneg_int,
    positive_int,
    print_json,
    seed_int,
)

__all__ = ["add_commands", "config_flags"]


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
    d = _train_default
    add_data_arg(p, optional=True)
    p.add_argument("--config", default=None, help="JSON (or YAML) file of settings; flags override it")
    add_json_flag(p, what="print a JSON summary when the run ends: {schema: alexnet.train/1, command, out, "
                  "epochs_done, best_val_top1_error, interrupted, skipped, signal}; the log goes to "
                  "stderr")  # fmt: skip
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
    add_workers_flag(g, config_keys=True)
    g.add_argument("--on-bad-image", choices=["skip", "fail"], default=S, help="bad images" + d("on_bad_image"))


def _add_model_group(g: argparse._ArgumentGroup, d: Any) -> None:
    S = argparse.SUPPRESS
    g.add_argument("--arch", default=S, help="architecture (alexnet models); default: alexnet2012, or the weights' "
                   "own when fine-tuning (a .pth or bvlc .npy does not say caffenet from alexnet2012)")  # fmt: skip
    g.add_argument("--input-size", type=positive_int, default=S, help="crop side (default: the architecture's)")
    g.add_argument(
        "--resize-size",
        type=positive_int,
        default=S,
        help="short side before cropping (default: 256 for crops of 224-256, else "
        "the paper's 256:224 ratio; at most 1024)",
    )
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
        choices=["plateau", "step", "linear"],
        default=S,
        help="plateau: /10 when val error stops improving; step: Caffe's every --step-size iterations; linear: "
        "down to 0 at --decay-steps (default: the run's end)" + d("schedule"),
    )
    g.add_argument("--lr-factor", type=float, default=S, help="learning-rate drop factor" + d("lr_factor"))
    g.add_argument("--plateau-patience", type=int, default=S, help="epochs without gain" + d("plateau_patience"))
    g.add_argument("--max-lr-drops", type=int, default=S, help="most plateau drops" + d("max_lr_drops"))
    g.add_argument("--step-size", type=positive_int, default=S, help="iterations per step" + d("step_size"))
    g.add_argument("--warmup-steps", type=int, default=S, help="iterations of linear lr warm-up (step, linear)"
                   + d("warmup_steps"))  # fmt: skip
    g.add_argument("--decay-steps", type=int, default=S, help="linear schedule: the iteration where lr reaches 0 "
                   "(0: the run's length at its start)" + d("decay_steps"))  # fmt: skip
    g.add_argument("--seed", type=seed_int, default=S, help="random seed" + d("seed"))


def _add_engineering_group(g: argparse._ArgumentGroup, d: Any) -> None:
    S = argparse.SUPPRESS
    add_runtime_flags(g, config_keys=True, precision_help="autocast precision (auto: bf16 where native)" +
                      d("precision"))  # fmt: skip
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=S, help="NHWC convolutions")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=S, help="torch.compile the model")
    g.add_argument(
        "--decode-on-device",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="decode plain JPEGs in batches on the training device (nvJPEG on a GPU), crop and flip them there; "
        "the workers only read files",
    )
    add_progress_flag(g, config_keys=True)
    g.add_argument("--log-every", type=positive_int, default=S, help="steps per log line" + d("log_every"))
    add_keep_flag(g, default="all", config_keys=True, help="checkpoints kept: all (state.pt, last and best "
                  "weights), last (no best.safetensors), best (only best.safetensors once the run is complete: it "
                  "cannot be extended)" + d("keep"))  # fmt: skip
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
    p.set_defaults(func=_cmd_train, check=_refuse_held_out)


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
    p.set_defaults(func=_cmd_train, check=_refuse_held_out)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..distributed import setup_distributed, shutdown_distributed
    from ..runtime import resolve_device
    from ..train import config_from_sources, main, read_resumed_config

    flags = config_flags(args)
    saved = read_resumed_config(flags["resume"]) if flags.get("resume") else None  # its config.json, read once
    config = config_from_sources(flags, config_file=args.config, command=args.command, resumed_config=saved)
    info = setup_distributed(resolve_device(config.device))  # under torchrun: the group every rank trains in
    try:
        with _log_to_stderr(args.json):  # with --json, stdout is the summary alone
            result = main(config, overwrite=getattr(args, "overwrite", False), resumed_config=saved)
    finally:
        shutdown_distributed(info)
    if args.json:
        print_json({
            "schema": "alexnet.train/1", "command": args.command, "out": str(result.out),
            "epochs_done": result.epochs_done, "best_val_top1_error": result.best_val_top1_error,
            "interrupted": result.interrupted, "skipped": result.skipped, "signal": result.signal,
        })  # fmt: skip
    # the shell's convention for a process a signal stopped: 128 + the signal (SIGINT 130, SIGTERM 143)
    return 128 + result.signal if result.signal else EXIT_OK


def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings train/finetune's flags give (only those typed: every flag is a config key), as
    `alexnet.train.config_from_sources` takes them."""
    skip = ("func", "check", "command", "config", "model_option", "overwrite", "json")
    flags = {k: v for k, v in vars(args).items() if k not in skip}
    if getattr(args, "model_option", None):
        flags["model_options"] = dict(args.model_option)
    return flags


def _refuse_held_out(args: argparse.Namespace) -> None:
    """A new run's ``--out`` that already holds a run, refused before torch and the training code load (the
    ``check`` of train and finetune; the run checks it again, under torchrun on the first process only)."""
    from .. import rundir  # plain files: no torch

    out = getattr(args, "out", None)
    if out is None or getattr(args, "resume", None) or getattr(args, "overwrite", False):
        return
    held = rundir.describe_run(out)
    if held is not None:
        raise AlexnetError(
            f"{out} holds a run, {held}: continue it with --resume {out}, or choose another --out, or pass "
            "--overwrite to start it afresh"
        )


def _log_to_stderr(on: bool) -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(sys.stderr) if on else contextlib.nullcontext()


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
    add_data_arg(p, flag=True, help="a folder holding Fashion-MNIST's idx files (default: the usual places, "
                 "downloaded there when allowed)")  # fmt: skip
    add_data_dir_alias(p)
    p.add_argument("--start", choices=("auto", "torchvision", "scratch"), default="auto", help="auto: fine-tune "
                   "torchvision's ImageNet weights when cached or downloadable, else train from scratch")  # fmt: skip
    p.add_argument("--full", action="store_true", help="whole training set, 10 epochs, 227x227 input (GPU)")
    p.add_argument("--train-samples", type=nonneg_int, default=None, help="training images (0: all)")
    p.add_argument("--val-samples", type=positive_int, default=None, help="training images held out")
    p.add_argument("--test-samples", type=nonneg_int, default=None, help="first N test images to report on (0: all)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--input-size", type=positive_int, default=None, help="crop side")
    p.add_argument(
        "--resize-size",
        type=positive_int,
        default=None,
        help="side of the square the patches are cut from (default: the input size + 5 on a CPU from scratch, else "
        "the paper's 256:224 ratio)",
    )
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--init", choices=INIT_SCHEMES, default="kaiming", help="from-scratch initialisation")
    add_runtime_flags(p, precision_help="auto: bf16 autocast where the device computes it natively, else fp32")
    add_workers_flag(p, default_help="0 on a CPU, whose cores compute; one per CPU, at most 8, on a GPU")
    add_progress_flag(p)
    p.add_argument("--seed", type=seed_int, default=0, help="random seed")
    p.add_argument("--no-download", action="store_true", help="never use the network")
    add_json_flag(p, what="print the summary as JSON")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out=args.out,
        data_dir=args.data if args.data is not None else args.data_dir,
        weights="none" if args.start == "scratch" else args.start,
        full=args.full,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        test_samples=args.test_samples,
        epochs=args.epochs,
        input_size=args.input_size,
        resize_size=args.resize_size,
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
    with _log_to_stderr(args.json):  # progress goes to stderr so that stdout is the JSON alone
        r = run_demo(cfg, log=print)
    if args.json:
        print_json(
            tagged(
                "demo",
                {
                    "mode": r.mode,
                    "test_top1_error": r.test_top1_error,
                    "test_top5_error": r.test_top5_error,
                    "test_accuracy": r.test_accuracy,
                    "test_samples": r.test_samples,
                    "seconds": r.seconds,
                    "files": {k: str(v) for k, v in r.files.items()},
                    "examples": [{**e, "top3": [{"name": n, "prob": p} for n, p in e["top3"]]} for e in r.examples],
                    "notes": r.notes,
                    "next": r.next_commands,
                },
            )
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
    for command in r.next_commands:
        print(f"  {command}")


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
    add_data_arg(p)
    p.add_argument("--out", default="runs/ablate", help="runs and outputs go here")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; full is always run")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds 0..N-1 for every variant; default: the "
                   "scale's (cpu 2, cpu-small and full 3)")  # fmt: skip
    p.add_argument(
        "--epochs", type=positive_int, default=None, help="default: the scale's (cpu 3, cpu-small 4, full 90)"
    )
    p.add_argument(
        "--scale",
        choices=tuple(SCALES),
        default="cpu",
        help="cpu: 67x67, the whole training set, all test images, 3 epochs, 2 seeds (a CPU, about 1 h); cpu-small: "
        "67x67, 6,000 images, 4 epochs, 3 seeds (a CPU, about 40 min); full: 227x227, the whole set, 90 epochs (a GPU)",
    )
    counts = "default: the scale's, at most a share of what the data holds"
    p.add_argument("--train-samples", type=nonneg_int, default=None, help=f"training images, 0 = all left; {counts}")
    p.add_argument("--val-samples", type=positive_int, default=None, help=f"validation images held out; {counts}")
    p.add_argument(
        "--test-samples", type=nonneg_int, default=None, help=f"test images, 0 = all of the test split; {counts}"
    )
    add_runtime_flags(p, precision_help="training's autocast for every variant alike (auto: bf16 where native)")
    add_workers_flag(p, default_help="the scale's")
    p.add_argument("--threshold", type=float, default=0.25, help="training error for Figure 1's timing")
    add_keep_flag(p, default="last", help="checkpoints each finished run keeps: last (last.safetensors, the weights "
                  "evaluated) or all (state.pt and best.safetensors too); best is refused (the tables need the last "
                  "weights)")  # fmt: skip
    p.add_argument("--keep-checkpoints", dest="keep", action="store_const", const="all", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # fmt: skip
    p.add_argument("--report-only", action="store_true", help="train nothing: tables and pictures from finished runs")
    add_progress_flag(p)
    add_json_flag(p, what="print a JSON summary: {schema: alexnet.ablate/1, out, seconds, files, summary}")
    p.set_defaults(func=_cmd_ablate)


def _cmd_ablate(args: argparse.Namespace) -> int:
    if args.keep == "best":
        raise AlexnetError("--keep best: ablate evaluates each run's last weights; keep last (the default) or all")
    from ..ablate import AblationConfig, parse_variants, run_ablation

    config = AblationConfig(
        data=args.data,
        out=args.out,
        variants=parse_variants(args.variants),
        seeds=args.seeds,
        epochs=args.epochs,
        scale=args.scale,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        test_samples=args.test_samples,
        device=args.device,
        precision=args.precision,
        workers=args.workers,
        threshold=args.threshold,
        keep_checkpoints=args.keep == "all",
        report_only=args.report_only,
        progress=args.progress,
    )
    with _log_to_stderr(args.json):  # with --json, stdout is the summary alone
        result = run_ablation(config)
    if args.json:
        print_json({
            "schema": "alexnet.ablate/1", "out": str(result.out), "seconds": result.seconds,
            "files": {k: str(v) for k, v in result.files.items()}, "summary": result.summary,
        })  # fmt: skip
    return EXIT_OK
