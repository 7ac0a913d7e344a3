"""Commands that read a data set once: stats (mean, std, PCA eigen-pairs) and prepare (decoded shards). Wiring only."""

from __future__ import annotations

import argparse

from ..schemas import tagged
from .flags import (
    EXIT_OK,
    SPLITS,
    Formatter,
    add_data_arg,
    add_data_dir_alias,
    add_json_flag,
    add_progress_flag,
    add_workers_flag,
    check_out_file,
    positive_int,
    print_json,
    seed_int,
)

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_stats(sub)
    _add_prepare(sub)


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=positive_int, default=256, help="side of the square images (short side, crop)")
    add_workers_flag(p)
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per loader batch")
    p.add_argument("--on-bad-image", choices=("skip", "fail"), default="skip", help="skip and list bad images, or stop")
    add_data_dir_alias(p)
    add_progress_flag(p)
    add_json_flag(p)


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="training-set mean (per channel and per pixel), std, RGB covariance and its eigenvectors",
        description="One pass over the training images at the paper's 256x256: per-channel mean/std, the mean "
        "image (saved beside OUT as .mean_image.npy), the RGB covariance and its eigen-pairs for PCA lighting.",
        formatter_class=Formatter,
    )
    add_data_arg(p)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--split", choices=SPLITS, default="train", help="which samples to use")
    p.add_argument("--val-split", type=float, default=0.0, help="share held out as val (no val/ folder)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the val split")
    _add_data_flags(p)
    p.set_defaults(func=_cmd_stats, check=check_out_file)


def _cmd_stats(args: argparse.Namespace) -> int:
    from ..data.stats import compute_stats, save_stats

    stats = compute_stats(
        args.data,
        size=args.size,
        split=args.split,
        val_split=args.val_split,
        seed=args.seed,
        workers=args.workers,
        batch_size=args.batch_size,
        progress=args.progress,
        on_bad_image=args.on_bad_image,
        data_dir=args.data_dir,
    )
    path = save_stats(stats, args.out)
    if args.json:
        print_json(tagged("stats", {**stats.to_dict(), "out": str(path)}))
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
        formatter_class=Formatter,
    )
    add_data_arg(p, help="image folder (with or without train/ and val/), list file, a Fashion-MNIST folder or "
                 "'fashion-mnist'")  # fmt: skip
    p.add_argument("out", help="folder to write")
    p.add_argument("--shard-size", type=positive_int, default=500, help="images per shard file")
    _add_data_flags(p)
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from ..data.prepare import prepare

    manifest = prepare(
        args.data,
        args.out,
        size=args.size,
        shard_size=args.shard_size,
        workers=args.workers,
        batch_size=args.batch_size,
        on_bad_image=args.on_bad_image,
        data_dir=args.data_dir,
        progress=args.progress,
    )
    if args.json:
        print_json(tagged("prepare", {**manifest, "out": str(args.out)}))
    else:
        for split, info in manifest["splits"].items():
            print(f"{split}: {info['count']} images in {len(info['shards'])} shards")
        print(f"prepared {manifest['size']}x{manifest['size']} -> {args.out}")
    return EXIT_OK
