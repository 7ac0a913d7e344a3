"""Loading a pretrained record (`alexnet.weights.records`) by name: ``pth`` records through torch hub's download
path (sha256-checked, cached), ``npy`` records (a pickle, never downloaded for the user) from the same cache folder
where the user placed the file by hand."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

from ..models import AlexNet
from ..preprocessing import Preprocessing
from .base import WeightsError, model_from_state_dict, one_line, unwrap_state_dict
from .bvlc import load_bvlc_npy
from .records import PRETRAINED, PretrainedWeights

__all__ = ["load_pretrained", "pretrained_record"]


def pretrained_record(weights: str | PretrainedWeights) -> PretrainedWeights:
    """The record of a registry name (`PRETRAINED`'s keys), or ``weights`` itself when it is a record."""
    if isinstance(weights, PretrainedWeights):
        return weights
    try:
        return PRETRAINED[str(weights)]
    except KeyError:
        raise WeightsError(f"unknown pretrained weights {weights!r}; choose from {', '.join(PRETRAINED)}") from None


def load_pretrained(
    weights: str | PretrainedWeights = "torchvision",
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    model_dir: str | Path | None = None,
    progress: bool = True,
    allow_pickle: bool = False,
) -> tuple[AlexNet, Preprocessing]:
    """Load the weights of a record (or of its registry name): ``(model in eval mode, its Preprocessing)``.

    A ``pth`` record is downloaded once (sha256-checked against the prefix in the file name) with
    ``torch.hub.load_state_dict_from_url(check_hash=True, weights_only=True)``, so a file already in the cache
    (placed by hand when offline) is read through the same code path as a fresh download. An ``npy`` record is a
    pickle: it is read from its `PretrainedWeights.cache_path` only, with ``allow_pickle=True``.
    """
    rec = pretrained_record(weights)
    if num_classes is not None and num_classes != rec.num_classes:
        raise WeightsError(
            f"{rec.name}: fc8 has {rec.num_classes} classes, {num_classes} were asked for; to train a new "
            "classifier on these weights, fine-tune (alexnet finetune --weights ... --reinit fc8)"
        )
    cached = rec.cache_path(model_dir)
    if rec.file_format == "npy":
        if not cached.is_file():
            raise WeightsError(
                f"{rec.name}: not downloaded automatically (it is a pickle); fetch {rec.url} by hand and place it "
                f"at {cached}, or pass the file's path (with --trust-pickle)"
            )
        # the file does not say its LRN order: any arch with this layout may be asked for (see load_bvlc_npy)
        return load_bvlc_npy(cached, arch=arch, num_classes=num_classes, allow_pickle=allow_pickle, record=rec)
    if rec.file_format != "pth":
        raise WeightsError(f"{rec.name}: unknown file format {rec.file_format!r} in its record")
    if arch is not None and arch != rec.arch:
        raise WeightsError(f"{rec.name}: these are {rec.arch} weights, not {arch}")
    state = unwrap_state_dict(_hub_state_dict(rec, cached, progress), str(cached))
    pre = Preprocessing.from_dict(rec.preprocessing.to_dict())  # a copy: callers may change theirs
    return model_from_state_dict(state, str(cached), rec.arch, rec.num_classes, pre)


def _hub_state_dict(rec: PretrainedWeights, cached: Path, progress: bool) -> object:
    """Download ``rec`` into ``cached``'s folder unless it is there, check its hash and read it (tensors only)."""
    downloading = not cached.exists()
    try:
        # torch hub announces downloads on stdout; keep stdout for results (`alexnet predict --json`).
        with contextlib.redirect_stdout(sys.stderr):
            return torch.hub.load_state_dict_from_url(
                rec.url,
                model_dir=str(cached.parent),
                map_location="cpu",
                progress=progress,
                check_hash=True,
                file_name=rec.file_name,
                weights_only=True,
            )
    except Exception as e:  # every failure here is the user's network or cache file
        msg = one_line(e)
        if downloading and not cached.exists():
            if "invalid hash" in msg:
                raise WeightsError(
                    f"{rec.url}: the download fails its sha256 check ({msg}); nothing was cached"
                ) from None
            raise WeightsError(
                f"cannot download {rec.url} ({msg}); offline? fetch that file elsewhere and place it at {cached}"
            ) from None
        raise WeightsError(f"{cached}: not a readable torch state dict ({msg}); delete it to download again") from None
