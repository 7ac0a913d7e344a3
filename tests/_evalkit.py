"""Tiny data sets, weights and run folders for the evaluation, features and plots tests (not collected)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import alexnet
from alexnet.weights import Preprocessing, save_model

CLASSES = ["cat", "dog", "fox"]
INPUT, RESIZE = 64, 72  # about the smallest input alexnet_owt's pooling accepts, kept tiny for 2-core CI
TINY = {"conv_channels": (16, 32, 32, 32, 32), "fc_features": 64}  # alexnet_owt's layout, few weights


def tiny_model(num_classes: int = 3, seed: int = 0) -> alexnet.AlexNet:
    torch.manual_seed(seed)
    return alexnet.create_model("alexnet_owt", num_classes=num_classes, input_size=INPUT, **TINY).eval()


def tiny_preprocessing(classes: list[str] | None = None) -> Preprocessing:
    return Preprocessing(input_size=INPUT, resize_size=RESIZE, class_names=list(classes or CLASSES))


def write_image(path: Path, seed: int, tint: int | None = None, size: tuple[int, int] = (80, 96)) -> Path:
    """A random RGB PNG (lossless: the loader and a test decode the same pixels); ``tint`` saturates a channel."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    if tint is not None:
        a[..., tint] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def image_folder(root: Path, classes: list[str] | None = None, per_class: int = 3, seed: int = 0) -> Path:
    """One sub-folder per class (torchvision's ImageFolder layout) of tinted random images."""
    for ci, c in enumerate(classes or CLASSES):
        for i in range(per_class):
            write_image(root / c / f"{c}{i}.png", seed * 1000 + ci * 100 + i, tint=ci % 3)
    return root


def saved_weights(path: Path, classes: list[str] | None = None, seed: int = 0) -> Path:
    classes = list(classes or CLASSES)
    save_model(tiny_model(len(classes), seed), tiny_preprocessing(classes), path)
    return path


METRICS_HEADER = (
    "epoch,lr,train_loss,train_top1_accuracy,val_loss,val_top1_accuracy,val_top5_accuracy,images_per_s,seconds\n"
)


def run_folder(root: Path, *, epochs: int = 4, partial: bool = False, data: Path | None = None) -> Path:
    """A run folder as alexnet train leaves it: config.json, metrics.csv, best/last weights, and with ``data``
    (a folder with train/ and val/) eval.json of the last weights on val/."""
    from alexnet import rundir
    from alexnet.evaluate import evaluate_dataset

    root.mkdir(parents=True, exist_ok=True)
    lines = [METRICS_HEADER]
    for e in range(1, epochs + 1):
        lr = 0.01 if e <= epochs // 2 else 0.001
        lines.append(
            f"{e},{lr},{1.2 - 0.1 * e:.3f},{0.3 + 0.1 * e:g},{1.1 - 0.05 * e:.3f},{0.33 + 0.08 * e:g},1,55.5,2.5\n"
        )
    if partial:
        lines.append(f"{epochs + 1},0.001,0.7")  # killed while writing: no line end, fields missing
    (root / "metrics.csv").write_text("".join(lines))
    (root / "config.json").write_text(
        json.dumps({"arch": "alexnet_owt", "data": str(data) if data else "", "val_split": 0.0, "seed": 0})
    )
    saved_weights(root / "best.safetensors")
    saved_weights(root / "last.safetensors", seed=1)
    if data is not None:
        result = evaluate_dataset(root / "last.safetensors", data, device="cpu")
        rundir.write_eval(root, epochs, result.to_dict(), "last.safetensors")
    return root


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size
