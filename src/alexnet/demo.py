"""`alexnet demo`: the toolkit's main job on a built-in default, offline, in minutes.

Fashion-MNIST (Xiao et al., 2017) stands in for ImageNet: it installs as a Debian package and ships with
torchvision's downloader, and its 28x28 grey images go through the same RGB pipeline. The demo

1. finds the data (``--data``, Debian's ``dataset-fashion-mnist``, torchvision's root, or a download);
2. fine-tunes torchvision's ImageNet AlexNet when those weights are cached or downloadable (conv1-conv5 frozen,
   conv5 features cached, fc6-fc8 trained, fc8 new), and otherwise trains ``alexnet2012`` from scratch;
3. holds out part of the training set for the learning-rate schedule and the best checkpoint, and reports the
   paper's top-1/top-5 error on held-out *test* images the training never saw;
4. writes the run folder (config.json, metrics.csv, best/last checkpoints, test_eval.json, report.html) and
   classifies a few test images.

On a CPU the from-scratch run is scaled to minutes: all 59,000 training images (1,000 held out), 5 epochs at
batch 256, lr 0.06 reached over a warm-up epoch (Goyal et al., 2017) and falling linearly to 0 at the last step (Li
et al., 2020: the schedule for a short budget), a 67x67 input (the paper's layers; adaptive pooling brings conv5's
1x1 maps to fc6's 6x6x256), patches from a 70x70 square, the training images' own statistics and He initialisation
(the paper's N(0, 0.01) needs epochs to leave its initial plateau); the figure is on all 10,000 test images
(90.57 % in 263 s on a quiet 2-core CPU, README). On a GPU the from-scratch run keeps Caffe's step schedule
(x0.1 after 2/3 of the steps). ``--full`` is the paper's setting for a
GPU: the whole training set, 10 epochs, 227x227 input.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from . import rundir
from .errors import AlexnetError
from .options import cpu_count
from .preprocessing import paper_resize
from .runtime import resolve_device

__all__ = ["DemoConfig", "DemoResult", "run_demo", "locate_data", "pretrained_available"]


# The CPU demo cuts its training patches from a square JITTER pixels larger than the input (70 for 67), where the
# paper's 256:224 ratio would give 77: Fashion-MNIST's garments are centred and fill the frame, and in five epochs
# the paper's larger shifts cost more accuracy than they teach (on all 10,000 test images, five epochs: 72x72
# 90.0 %, 70x70 90.6 %, 69x69 90.7 %, 68x68 90.5 %; README).
JITTER = 3
# Resizing the training images once is worth its memory at the CPU demo's small squares (70: 289 MB); at --full's
# 256x256 it would hold 3.9 GB, and a GPU run's loader workers resample per image in parallel anyway.
PRESIZE_BYTES = 1 << 30


class DemoError(AlexnetError, ValueError):
    """A demo that cannot run as asked (no data, bad option)."""


@dataclass
class DemoConfig:
    """The demo's settings; None means "the default for this device and mode" (see `resolve`)."""

    out: str = "runs/demo"  # run folder
    data_dir: str | None = None  # folder with Fashion-MNIST's idx files; None: the usual places
    weights: str = "auto"  # auto (pretrained if cached or downloadable) | torchvision | none (from scratch)
    full: bool = False  # the paper's setting: whole training set, 10 epochs, 227x227 (meant for a GPU)
    train_samples: int | None = None  # training images (stratified subset); default 30,000 (CPU) / all (--full)
    val_samples: int | None = None  # training images held out for the schedule and best checkpoint
    test_samples: int | None = None  # test images for the final figure: the first N of the 10,000 (0: all)
    epochs: int | None = None
    input_size: int | None = None  # crop side; default 67 (CPU from scratch), 227 (--full), 224 (fine-tune)
    resize_size: int | None = None  # square the patches are cut from; default input_size + JITTER (CPU from scratch)
    batch_size: int | None = None
    lr: float | None = None
    init: str = "kaiming"  # initialisation for from-scratch training (paper | caffe | torchvision | kaiming)
    device: str = "auto"
    precision: str = "auto"  # training's autocast (alexnet.options.PRECISIONS); the test figures are fp32
    progress: str = "auto"  # alexnet.options.PROGRESS_MODES
    workers: int | None = None  # loader processes; default 0 on a CPU (the cores compute), <= 8 on a GPU
    seed: int = 0
    download: bool = True  # may fetch the data and the pretrained weights where the network allows
    show: int = 5  # test images to classify at the end


@dataclass
class DemoResult:
    out: Path
    mode: str  # "finetune" or "scratch"
    test_top1_error: float
    test_top5_error: float
    test_samples: int
    seconds: float
    files: dict[str, Path]
    examples: list[dict[str, Any]]
    notes: list[str]
    next_commands: list[str] = field(default_factory=list)  # what to try next; each works offline after the demo

    @property
    def test_accuracy(self) -> float:
        return 1.0 - self.test_top1_error


def locate_data(data_dir: str | None, download: bool) -> Path:
    """The folder holding Fashion-MNIST's idx files: ``data_dir``, the Debian package's folder or torchvision's
    roots; else a download through torchvision where the network allows; else a one-line error that names the
    install command."""
    from .data import datasets

    folder = datasets.find_fashion_mnist(data_dir)
    if folder is not None:
        return folder
    if data_dir is not None:
        raise DemoError(f"{data_dir}: no Fashion-MNIST idx files there (train-images-idx3-ubyte[.gz], ...)")
    if download:
        from torchvision.datasets import FashionMNIST

        if _reachable(FashionMNIST.mirrors[0]):
            return datasets.download_fashion_mnist(None)  # its failures are one-line DataErrors
    raise datasets.fashion_mnist_missing(None)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` (no request is sent)."""
    p = urlparse(url)
    try:
        with socket.create_connection((p.hostname, p.port or (80 if p.scheme == "http" else 443)), timeout=timeout):
            return True
    except OSError:
        return False


def pretrained_available(download: bool) -> tuple[bool, str]:
    """(whether torchvision's ImageNet weights can be had, why): cached already, or downloadable now."""
    from .weights import PRETRAINED

    rec = PRETRAINED["torchvision"]
    if rec.cache_path().is_file():
        return True, f"cached at {rec.cache_path()}"
    if not download:
        return False, "not cached and downloads are off"
    if _reachable(rec.url):
        return True, f"downloadable from {rec.url}"
    return False, f"not cached ({rec.cache_path()}) and {urlparse(rec.url).hostname} is unreachable"


def resolve(cfg: DemoConfig, finetune: bool, device: torch.device) -> DemoConfig:
    """Fill the None fields with the defaults of this mode and device."""
    gpu = device.type == "cuda"
    c = dataclasses.replace(cfg)
    if c.full:
        defaults = {"train_samples": 0, "val_samples": 5000, "test_samples": 10000, "epochs": 10, "input_size": 227}
        defaults.update(batch_size=128, lr=0.01)
    elif finetune:
        defaults = {"train_samples": 6000 if not gpu else 0, "val_samples": 1000, "test_samples": 2000}
        # the usual fine-tuning rates: pretrained fc6/fc7 at 0.001, the new fc8 ten times faster
        defaults.update(epochs=3, input_size=224, batch_size=64, lr=0.001)
    elif gpu:
        defaults = {"train_samples": 0, "val_samples": 1000, "test_samples": 10000}
        defaults.update(epochs=3, input_size=227, batch_size=64, lr=0.01)
    else:
        # all 59,000 training images, 5 epochs at batch 256 (fewer, larger steps are what a CPU does fast: the
        # weights' traffic is paid once per step), lr 0.06 after a warm-up epoch, then linearly down to 0 (README)
        defaults = {"train_samples": 0, "val_samples": 1000, "test_samples": 10000}
        defaults.update(epochs=5, input_size=67, batch_size=256, lr=0.06)
    defaults["workers"] = min(8, cpu_count()) if gpu else 0
    for k, v in defaults.items():
        if getattr(c, k) is None:
            setattr(c, k, v)
    if c.resize_size is None and not (c.full or finetune or gpu):
        c.resize_size = c.input_size + JITTER  # patches within a few pixels of the centre: see JITTER
    if c.test_samples == 0:
        c.test_samples = 10000  # 0 = all of the test split, as ablate's --test-samples says
    if c.test_samples < 0 or c.test_samples > 10000:
        raise DemoError(f"--test-samples must be in 0..10000 (0 = all), got {c.test_samples}")
    if c.val_samples < 1 or c.train_samples < 0 or c.epochs < 1:
        raise DemoError("--val-samples and --epochs must be >= 1, --train-samples >= 0 (0 = all)")
    if c.resize_size is not None and c.resize_size < c.input_size:
        raise DemoError(f"--resize-size {c.resize_size} is smaller than the input size {c.input_size}: the patches are "
                        "cut from it")  # fmt: skip
    return c


def _take(targets: list[int], n: int, seed: int) -> tuple[list[int], list[int]]:
    """(the rest, about ``n`` indices drawn class by class, seeded) by `datasets.stratified_split`; n == 0 or
    n >= len: everything is taken."""
    from .data import datasets

    if n == 0 or n >= len(targets):
        return [], list(range(len(targets)))
    return datasets.stratified_split(targets, n / len(targets), seed)


def _choose_mode(cfg: DemoConfig, log: Any, notes: list[str]) -> bool:
    """Whether the demo fine-tunes pretrained weights (True) or trains from scratch."""
    if cfg.weights not in ("auto", "torchvision", "none"):
        raise DemoError(f"--weights must be auto, torchvision or none, got {cfg.weights!r}")
    if cfg.weights == "torchvision":
        return True
    if cfg.weights == "auto" and not cfg.full:
        finetune, why = pretrained_available(cfg.download)
        log(f"pretrained ImageNet weights: {'yes' if finetune else 'no'} ({why})")
        if not finetune:
            notes.append(f"trained from scratch: pretrained weights {why}")
        return finetune
    return False


def _training_stats(out: str, train_ds: Any, rerun: bool) -> str | None:
    """Write the training images' statistics to the run folder's stats.json and return its path: section 2
    subtracts the training set's own mean, and section 4.1's PCA lighting uses its own RGB eigen-pairs (for grey
    images one eigen-pair: a brightness jitter; ImageNet's would paint them in colour). config.json names the file,
    so a resume reads the same one. None when the folder holds another run, which training then refuses before
    anything is written."""
    from .data.stats import dataset_stats, save_stats

    run = rundir.RunDir(out)
    if run.describe() is not None and not rerun:
        return None
    st = dataset_stats(train_ds)  # exact, from a histogram of the grey levels: well under a second
    st.mean_image = None  # the per-channel mean is what the training subtracts; no mean image beside it
    run.prepare()
    return str(save_stats(st, run.stats))


def _train_config(c: DemoConfig, folder: Path, finetune: bool, train_images: int, stats: str | None) -> Any:
    """The `TrainConfig` of this mode: fine-tuning fc6-fc8 over cached conv5 features, or the paper's network
    from scratch at the scaled-down size, with the training images' own statistics and Caffe's step schedule."""
    from .train import TrainConfig

    tc = TrainConfig(
        data=str(folder),
        out=c.out,
        arch="alexnet_owt" if finetune else "alexnet2012",
        input_size=c.input_size,
        resize_size=c.resize_size,
        epochs=c.epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        init=c.init,
        device=c.device,
        precision=c.precision,
        channels_last=True,
        workers=c.workers,
        seed=c.seed,
        progress=c.progress,
        log_every=100,
        tensorboard=False,
    )
    if finetune:
        # conv1-conv5 keep their ImageNet filters; their conv5 features are computed once (section 6.1's
        # "feature activations induced at the last, 4096-dimensional hidden layer" come from these layers)
        return dataclasses.replace(
            tc, weights="torchvision", train_layers=["fc6", "fc7", "fc8"], reinit=["fc8"], cache_features=True,
            augment=False, new_layer_lr_mult=10.0,
        )  # fmt: skip
    per_epoch = -(-train_images // c.batch_size)
    steps = c.epochs * per_epoch
    if c.input_size < 224:  # the CPU recipe: a warm-up epoch, then straight down to 0 at the end (README)
        return dataclasses.replace(
            tc, schedule="linear", warmup_steps=per_epoch, decay_steps=steps, stats=stats,
            model_options={"adaptive_pool": True},
        )  # fmt: skip
    # Caffe's step schedule: the last third of the run at lr/10 (a few epochs are too few for the plateau rule)
    return dataclasses.replace(
        tc, schedule="step", step_size=max(1, (2 * steps) // 3), warmup_steps=min(50, steps), stats=stats
    )


def _test_figures(
    out: Path, test_ds: Any, c: DemoConfig, device: torch.device, folder: Path
) -> tuple[Any, Any, Any, Path]:
    """Evaluate the best checkpoint on the held-out test images; write test_eval.json (and eval.json, which the
    report shows). Returns (evaluation, model, preprocessing, weights path)."""
    from .evaluate import evaluate_dataset
    from .weights import load_model

    run = rundir.RunDir(out)
    best = run.weights() or run.last
    model, pre = load_model(best)
    test_ds.transform = pre.geometry(False)
    ev = evaluate_dataset(
        model, test_ds, preprocessing=pre, batch_size=128, workers=c.workers, device=device, channels_last=True,
        collect=True,
    )  # fmt: skip
    ev.data = {"source": str(folder), "split": "test"}  # test_idx are the first N: indices match the full set
    run.write_test_eval(ev.to_dict(top_misclassified=24), best.name)  # and eval.json, which the report shows
    return ev, model, pre, best


def next_commands(best: Path, folder: Path, pretrained: bool) -> list[str]:
    """The commands the demo suggests, each one runnable as printed: the data by its folder (found there, not
    downloaded again), and fine-tuning from torchvision's weights only when they were reachable; from the demo's
    own weights otherwise (offline, they are the ones at hand)."""
    start = "torchvision --train-layers fc6,fc7,fc8" if pretrained else f"{best}"
    return [
        f"alexnet predict your_photo.jpg --weights {best}",
        f"alexnet evaluate {folder} --split test --weights {best} --ten-crop",
        f"alexnet info {best}",
        f"alexnet finetune path/to/your/images --weights {start} --reinit fc8 --val-split 0.1 --out runs/mine",
    ]


def run_demo(cfg: DemoConfig, *, log: Any = print) -> DemoResult:
    """Run the demo end to end and return where everything is; ``log`` prints progress lines. The run folder is
    this process's from the look at what it holds to the report (`rundir.lock_run`)."""
    with rundir.lock_run(cfg.out):
        return _run_demo(cfg, log)


def _run_demo(cfg: DemoConfig, log: Any) -> DemoResult:
    from . import train
    from .data import datasets
    from .predict import classify
    from .report import report

    t0 = time.perf_counter()
    notes: list[str] = []
    device = resolve_device(cfg.device)
    folder = locate_data(cfg.data_dir, cfg.download)
    log(f"data: Fashion-MNIST from {folder}")
    finetune = _choose_mode(cfg, log, notes)
    c = resolve(cfg, finetune, device)
    mode = "finetune" if finetune else "scratch"

    # data: a stratified training subset, a held-out validation share of the training set, the first N test images
    base = datasets.FashionMNISTDataset(folder, "train")
    rest, val_idx = _take(base.targets, c.val_samples, c.seed + 1)
    train_idx = [rest[i] for i in _take([base.targets[i] for i in rest], c.train_samples, c.seed)[1]]
    test_base = datasets.FashionMNISTDataset(folder, "test")
    test_idx = list(range(min(c.test_samples, len(test_base))))
    # a rerun of the demo replaces the demo's previous run (test_eval.json marks one); any other run is refused
    rerun = rundir.RunDir(c.out).test_eval.is_file()
    stats = None if finetune else _training_stats(c.out, datasets.Subset(base, train_idx), rerun)
    tc = _train_config(c, folder, finetune, len(train_idx), stats)

    # two views of one data set (train.main gives each its geometry); from scratch, its images resized once to
    # the preprocessing's square, so that an epoch only slices them (fine-tuning computes its features once)
    side = tc.resize_size or paper_resize(c.input_size)
    if not finetune and len(base) * side * side <= PRESIZE_BYTES:
        base = base.presized(side)
    train_ds = datasets.Subset(base, train_idx)
    val_ds = datasets.Subset(base.view(), val_idx)
    log(
        f"{mode}: {tc.arch} at {c.input_size}x{c.input_size}, {len(train_ds):,} training images, "
        f"{len(val_ds):,} held out for validation, {c.epochs} epochs, batch {c.batch_size}, lr {c.lr}, on {device}"
    )
    result = train.main(tc, train_dataset=train_ds, val_dataset=val_ds, overwrite=rerun)
    if result.interrupted:
        raise DemoError(f"interrupted; the run so far is in {result.out}")

    out = Path(result.out)
    run = rundir.RunDir(out)
    ev, model, pre, best = _test_figures(out, datasets.Subset(test_base, test_idx), c, device, folder)
    log(
        f"test: top-1 error {ev.top1_error:.2%} (accuracy {1 - ev.top1_error:.2%}), top-5 error "
        f"{ev.top5_error:.2%} on {ev.num_samples:,} held-out test images"
    )
    report_path = report(out, evaluate=False)

    picks = list(range(min(c.show, len(test_base))))
    top = classify(model, pre, [test_base.load(i) for i in picks], topk=3, device=device)
    examples = [
        {"index": i, "true": test_base.classes[test_base.targets[i]], "top3": [(s.name, s.prob) for s in t]}
        for i, t in zip(picks, top)
    ]
    files = {
        "run": out,
        "best": best,
        "metrics": run.metrics,
        "report": report_path,
        "test_eval": run.test_eval,
        "config": run.config,
    }
    if stats is not None:
        files["stats"] = run.stats
    return DemoResult(
        out=out,
        mode=mode,
        test_top1_error=ev.top1_error,
        test_top5_error=ev.top5_error,
        test_samples=ev.num_samples,
        seconds=time.perf_counter() - t0,
        files=files,
        examples=examples,
        notes=notes,
        next_commands=next_commands(best, folder, finetune),
    )
