"""Pretrained weights are data (STYLE 3): where each set comes from, the architecture it fits, how it must be fed
and its published accuracy. `PRETRAINED` maps every name `load_model` accepts as a source to its record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..preprocessing import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING, Preprocessing
from .base import hub_file, imagenet_classes

__all__ = [
    "CAFFE_ZOO",
    "DEFAULT_WEIGHTS",
    "ILSVRC_2012_MEAN_BGR",
    "PRETRAINED",
    "CaffeZooWeights",
    "PretrainedWeights",
    "list_pretrained",
]


class HubFile:
    """What a record published at ``url`` knows of its file: its name and where torch hub caches it."""

    url: str

    @property
    def file_name(self) -> str:
        """The file name in the URL; for hub downloads it carries the sha256 prefix (``name-<sha256[:8]>.pth``)."""
        return hub_file(self.url).name

    def cache_path(self, model_dir: str | Path | None = None) -> Path:
        """Where the file is cached (torch hub's ``<hub dir>/checkpoints``), i.e. where to place it by hand."""
        return hub_file(self.url, model_dir)


@dataclass(frozen=True)
class PretrainedWeights(HubFile):
    """Where a set of pretrained weights comes from and how it must be fed: data, not code (STYLE 3; cf.
    torchvision's ``Weights`` and timm's ``PretrainedCfg``). ``load_model(name)`` reads the record of ``name``:
    a ``pth`` record is downloaded once through torch hub; an ``npy`` record is a pickle, fetched by hand and read
    from `cache_path` (``--trust-pickle``)."""

    name: str  # the registry key: ``load_model(name)`` and ``--weights name`` load these weights
    arch: str  # registered architecture the weights fit
    url: str  # where the file is published
    file_format: str  # "pth": torch state dict, downloaded and sha256-checked; "npy": bvlc layout, fetched by hand
    preprocessing: Preprocessing = field(compare=False)  # input size, scale, mean/std and the class names
    num_classes: int = 1000  # fc8 outputs
    acc1: float | None = None  # published ImageNet-1k validation top-1 accuracy (%), single centre crop
    acc5: float | None = None  # ... top-5 accuracy (%)
    accuracy_source: str = ""  # where those figures were published
    config_overrides: Mapping[str, Any] = field(default_factory=dict)  # AlexNetConfig fields the weights need
    notes: str = ""


def _pretrained_records() -> dict[str, PretrainedWeights]:
    # torchvision's AlexNet_Weights.IMAGENET1K_V1 as data (tests/test_weights.py checks them equal), so that a
    # command that loads weights does not import torchvision for a URL and 1000 names
    classes = imagenet_classes()
    return {
        "torchvision": PretrainedWeights(
            name="torchvision",
            arch="alexnet_owt",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            file_format="pth",
            preprocessing=Preprocessing.from_dict({**TORCHVISION_PREPROCESSING.to_dict(), "class_names": classes}),
            acc1=56.522,
            acc5=79.066,
            accuracy_source="torchvision AlexNet_Weights.IMAGENET1K_V1",
            notes="torchvision's 'one weird trick' AlexNet (Krizhevsky 2014), trained with torchvision's recipe",
        ),
        "bvlc_alexnet": PretrainedWeights(
            name="bvlc_alexnet",
            arch="alexnet2012",
            url="http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy",
            file_format="npy",
            preprocessing=Preprocessing.from_dict({**BVLC_PREPROCESSING.to_dict(), "class_names": classes}),
            acc1=57.1,
            acc5=80.2,
            accuracy_source="Caffe model zoo, models/bvlc_alexnet/readme.md (the .caffemodel this file came from)",
            config_overrides={"lrn_k": 1.0},
            notes="Caffe's bvlc_alexnet converted for TensorFlow (the tutorial's file); a pickle, so fetched by hand "
            "and loaded with --trust-pickle; the file does not say whether LRN comes before or after pooling",
        ),
    }


PRETRAINED: dict[str, PretrainedWeights] = _pretrained_records()


# Caffe's ilsvrc_2012_mean.binaryproto averaged over its 256x256 pixels, BGR (Caffe's 00-classification example).
ILSVRC_2012_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


# --- the zoo's records --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaffeZooWeights(HubFile):
    """A Caffe model zoo AlexNet: where its caffemodel is published with the sha1 of the zoo's readme, and how it
    is fed. Data, not code (like `alexnet.weights.PretrainedWeights`)."""

    name: str  # the name for --weights
    url: str  # caffemodel_url of the zoo's readme
    sha1: str  # sha1 of the zoo's readme, checked after download
    arch: str  # alexnet2012 / caffenet, as its deploy prototxt says
    num_classes: int
    prototxt_url: str  # its deploy.prototxt (the caffemodel holds the same layers; not needed to load)
    labels: str  # where its class names come from
    mean_bgr: tuple[float, float, float] = ILSVRC_2012_MEAN_BGR  # the per-channel mean it was trained with
    acc1: float | None = None
    acc5: float | None = None
    notes: str = ""


_ZOO = "https://github.com/BVLC/caffe/raw/master/models"
_ILSVRC_AUX = "caffe's data/ilsvrc12 (get_ilsvrc_aux.sh: http://dl.caffe.berkeleyvision.org/caffe_ilsvrc12.tar.gz)"
CAFFE_ZOO: dict[str, CaffeZooWeights] = {
    r.name: r
    for r in (
        CaffeZooWeights(
            "bvlc_alexnet", "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
            "9116a64c0fbe4459d18f4bb6b56d647b63920377", "alexnet2012", 1000,
            f"{_ZOO}/bvlc_alexnet/deploy.prototxt", "ImageNet-1k, torchvision's names (synset_words.txt's order)",
            acc1=57.1, acc5=80.2, notes="the paper's AlexNet as BVLC trained it (iteration 360,000)",
        ),
        CaffeZooWeights(
            "bvlc_reference_caffenet", "http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",
            "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46", "caffenet", 1000,
            f"{_ZOO}/bvlc_reference_caffenet/deploy.prototxt",
            "ImageNet-1k, torchvision's names (synset_words.txt's order)",
            acc1=57.4, acc5=80.4, notes="pooling before LRN (iteration 310,000)",
        ),
        CaffeZooWeights(
            "rcnn-ilsvrc13", "http://dl.caffe.berkeleyvision.org/bvlc_reference_rcnn_ilsvrc13.caffemodel",
            "bdd8abb885819cba5e2fe1eb36235f2319477e64", "caffenet", 200,
            f"{_ZOO}/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt", f"det_synset_words.txt of {_ILSVRC_AUX}",
            notes="R-CNN's ILSVRC13 detector: the SVMs as a 200-way fc-rcnn layer, scores for region crops",
        ),
        CaffeZooWeights(
            "finetune-flickr-style", "http://dl.caffe.berkeleyvision.org/finetune_flickr_style.caffemodel",
            "443ad95a61fb0b5cd3cee55951bcc1f299186b5e", "caffenet", 20,
            f"{_ZOO}/finetune_flickr_style/deploy.prototxt",
            "caffe's examples/finetune_flickr_style/style_names.txt",
            notes="CaffeNet fine-tuned on 80,000 Flickr Style images (fc8_flickr); test accuracy 91.6 %",
        ),
    )
}  # fmt: skip

# What ``create_model(arch, pretrained=True)`` loads: each architecture's published ImageNet weights that download
# by themselves (hash-checked), so no pickle: torchvision's for alexnet_owt, the Caffe model zoo's for the others.
DEFAULT_WEIGHTS: dict[str, str] = {
    "alexnet2012": "caffe:bvlc_alexnet",
    "alexnet_owt": "torchvision",
    "caffenet": "caffe:bvlc_reference_caffenet",
}


def list_pretrained() -> list[str]:
    """Every name ``weights=`` and ``--weights`` accept as a record (timm's ``list_pretrained``): the pretrained
    records, then the Caffe model zoo's as ``caffe:NAME``."""
    return [*PRETRAINED, *(f"caffe:{name}" for name in CAFFE_ZOO)]
