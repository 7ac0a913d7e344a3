"""`alexnet ablate`: what each of the paper's ideas is worth, measured side by side.

Krizhevsky, Sutskever & Hinton (NIPS 2012) give a figure for most of their choices: ReLU against tanh (section 3.1,
Figure 1), local response normalisation (3.3: -1.4%/-1.2% top-1/top-5 error), overlapping pooling (3.4:
-0.4%/-0.3%), the two-GPU net against a one-GPU net with half the kernels (3.2: -1.7%/-1.2%), PCA lighting (4.1:
over -1% top-1), dropout (4.2: "substantial overfitting" without it), and ten test patches against one. This module
trains the full recipe and each variant with exactly one switch changed, with the same seeds, data split and data
order, each as an ordinary run folder of `alexnet.train`; a rerun skips finished runs and resumes stopped ones.
Every run is evaluated on held-out data with a centre crop and with the ten patches. `alexnet.ablate_report` turns
the records into ``ablation.json``, a Markdown table (mean difference from ``full`` and its t-interval over the
seeds, the paper's figure beside it), pictures and an HTML section.

Nothing is tuned per variant: one learning rate, schedule, initialisation and budget for all. The CPU scale (the
demo's: 67x67 inputs, a 6,000-image subset, a few epochs, He initialisation) fits a 2-core machine in about half
an hour; it cannot show what needs long runs (overfitting without dropout or augmentation, differences below the
seed-to-seed noise). ``--scale full`` is for a GPU: 227x227, the whole training set, the paper's 90 epochs and
its plateau schedule.

Imports nothing heavy at module level, so `add_arguments` needs no torch (the package's ``__init__`` still
imports it today).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ablate_variants import SCALES, VARIANTS, AblationError, Scale, Variant, parse_variants
from .errors import AlexnetError

__all__ = [
    "AblationError",
    "Variant",
    "VARIANTS",
    "Scale",
    "SCALES",
    "AblationConfig",
    "Settings",
    "Splits",
    "RunPlan",
    "AblationResult",
    "parse_variants",
    "resolve_settings",
    "variant_train_config",
    "load_splits",
    "plan_runs",
    "run_ablation",
]

RUN_RECORD = "ablate_run.json"  # written into a run folder once it is trained and evaluated: "finished"


@dataclass
class AblationConfig:
    """What to run. None fields take the scale's value; ``model_options`` apply to every variant alike."""

    data: str  # Fashion-MNIST's folder (or "fashion-mnist"), or anything `alexnet.data.datasets.open_dataset` reads
    out: str = "runs/ablate"
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    seeds: int = 3  # seeds 0 .. seeds-1: model init, data order, augmentation and dropout
    epochs: int | None = None
    scale: str = "cpu"
    device: str = "auto"
    threshold: float = 0.25  # training error of Figure 1 (the paper's 25%)
    train_samples: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None
    workers: int | None = None
    batch_size: int | None = None  # None: the scale's (the tests' tiny data sets need small batches)
    model_options: dict[str, Any] = field(default_factory=dict)
    keep_checkpoints: bool = False  # False: a finished run keeps only last.safetensors (the evaluated weights)
    report_only: bool = False  # train nothing: write the outputs from the runs finished so far
    progress: str = "auto"
    precision: str = "auto"  # training's autocast, the same for every variant (alexnet.options.PRECISIONS)
    split_seed: int = 0  # the data split, the same for every variant and seed


@dataclass(frozen=True)
class Settings:
    """An `AblationConfig` resolved against its scale."""

    variants: list[str]
    seeds: list[int]
    scale: Scale
    epochs: int
    train_samples: int
    val_samples: int
    test_samples: int
    workers: int
    batch_size: int


@dataclass
class Splits:
    """The data every run shares: training subset, validation share, held-out test images."""

    train: Any
    val: Any
    test: Any
    source: str
    test_source: str  # where the test images come from (the test split, or a share held out of the training set)


@dataclass(frozen=True)
class RunPlan:
    variant: str
    seed: int
    folder: Path
    train_config: Any  # alexnet.train.TrainConfig


@dataclass
class AblationResult:
    out: Path
    runs: list[dict[str, Any]]  # one record per variant and seed (see `ablate_report`)
    summary: list[dict[str, Any]]  # one row per variant: mean differences from full and their intervals
    table: str  # the Markdown table
    files: dict[str, Path]
    seconds: float


def resolve_settings(config: AblationConfig) -> Settings:
    """Check ``config`` and fill its None fields from the scale."""
    if config.scale not in SCALES:
        raise AblationError(f"unknown scale {config.scale!r}; valid scales: {', '.join(SCALES)}")
    s = SCALES[config.scale]
    if not isinstance(config.seeds, int) or config.seeds < 1:
        raise AblationError(f"seeds must be >= 1, got {config.seeds!r}")
    if not 0.0 < config.threshold < 1.0:
        raise AblationError(f"threshold must be a training error in (0, 1), got {config.threshold!r}")

    def pick(value: int | None, default: int, name: str, least: int) -> int:
        v = default if value is None else value
        if v < least:
            raise AblationError(f"{name} must be >= {least}, got {v}")
        return v

    return Settings(
        variants=parse_variants(config.variants),
        seeds=list(range(config.seeds)),
        scale=s,
        epochs=pick(config.epochs, s.epochs, "epochs", 1),
        train_samples=pick(config.train_samples, s.train_samples, "train_samples", 0),
        val_samples=pick(config.val_samples, s.val_samples, "val_samples", 1),
        test_samples=pick(config.test_samples, s.test_samples, "test_samples", 0),
        workers=pick(config.workers, s.workers, "workers", 0),
        batch_size=pick(config.batch_size, s.batch_size, "batch_size", 1),
    )


def _halved(channels: Any) -> list[int]:
    """The one-GPU net of section 3.2: half the kernels of conv1-conv4; conv5 (which feeds fc6, where most of the
    parameters are) kept, "to make the two nets have approximately the same number of parameters" (footnote 2)."""
    ch = [int(c) for c in channels]
    return [max(1, c // 2) for c in ch[:4]] + [ch[4]]


def variant_train_config(
    config: AblationConfig, settings: Settings, variant: str, seed: int, *, train_size: int, stats: str | None
) -> Any:
    """The `alexnet.train.TrainConfig` of one run: the same for every variant but the variant's switch."""
    from .models import get_config
    from .train import TrainConfig

    s = settings.scale
    v = VARIANTS[variant]
    options: dict[str, Any] = {"adaptive_pool": True} if s.input_size < 224 else {}
    options.update(config.model_options)
    options.update(v.model)
    if v.halve_convs:
        base = options.get("conv_channels", get_config("alexnet2012").conv_channels)
        options["conv_channels"] = _halved(base)
    steps = settings.epochs * -(-train_size // settings.batch_size)
    tc = TrainConfig(
        data=str(config.data),
        out=str(Path(config.out) / variant / f"seed-{seed}"),
        stats=stats,
        arch="alexnet2012",
        input_size=s.input_size,
        model_options=options,
        init="kaiming",  # the paper's N(0, 0.01) needs epochs to leave its plateau; the same for every variant
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=s.lr,
        schedule=s.schedule,
        step_size=max(1, (2 * steps) // 3),  # schedule "step": the last third of the run at lr/10
        device=config.device,
        precision=config.precision,
        channels_last=True,
        workers=settings.workers,
        seed=seed,
        progress=config.progress,
        log_every=50,
        tensorboard=False,
    )
    return dataclasses.replace(tc, **v.train)


def _take(targets: list[int], n: int, seed: int) -> tuple[list[int], list[int]]:
    """(the rest, about ``n`` positions drawn class by class, seeded); n == 0 or n >= len: all are taken."""
    from .data import datasets

    if n == 0 or n >= len(targets):
        return [], list(range(len(targets)))
    return datasets.stratified_split(targets, n / len(targets), seed)


def _open(data: str, split: str) -> Any:
    """One split of ``data`` (Fashion-MNIST's idx folder or anything `open_dataset` reads); None if it has none."""
    from .data import datasets

    try:
        ds = datasets.open_dataset(data, split=split)
    except AlexnetError:
        if split == "train":
            raise
        return None
    return ds if len(ds) else None


def load_splits(config: AblationConfig, settings: Settings) -> Splits:
    """The training subset, validation share and test images, drawn once with ``split_seed``: the same for every
    variant and seed. Test images come from the data's test split (Fashion-MNIST's 10,000, a ``val/`` folder),
    else from a stratified share held out of the training data."""
    from .data import datasets

    pool = _open(config.data, "train")
    test_base, test_source = _open(config.data, "test"), "test split"
    if test_base is None:
        rest, test_idx = _take(pool.targets, settings.test_samples or max(1, len(pool) // 10), config.split_seed + 2)
        test_source = "held out of the training data"
        test_base = _open(config.data, "train")
    else:
        rest = list(range(len(pool)))
        n = settings.test_samples or len(test_base)
        test_idx = list(range(min(n, len(test_base))))
    # the validation share and the training subset come from what is left
    rest2, val_pos = _take([pool.targets[i] for i in rest], settings.val_samples, config.split_seed + 1)
    val_idx = [rest[i] for i in val_pos]
    left = [rest[i] for i in rest2]
    train_pos = _take([pool.targets[i] for i in left], settings.train_samples, config.split_seed)[1]
    train_idx = [left[i] for i in train_pos]
    if not train_idx or not val_idx:
        raise AblationError(
            f"{config.data}: {len(pool):,} images leave none to train on after {len(val_idx):,} validation and "
            f"{len(test_idx):,} test images ({test_source}); use more images"
        )
    val_base = _open(config.data, "train")  # its own object: train.main gives each view its geometry
    return Splits(
        train=datasets.Subset(pool, train_idx),
        val=datasets.Subset(val_base, val_idx),
        test=datasets.Subset(test_base, test_idx),
        source=str(config.data),
        test_source=test_source,
    )


def _stats_file(splits: Splits, out: Path) -> str:
    """The training subset's statistics (mean, std and the RGB eigen-pairs PCA lighting needs, section 4.1),
    computed once and shared by every run; a rerun reuses the file."""
    from .data import stats as stats_mod
    from .data.transforms import ResizeCenterCrop

    path = out / "stats.json"
    if path.is_file():
        return str(path)
    splits.train.transform = ResizeCenterCrop(32)  # colour statistics need no resolution
    try:
        st = stats_mod.compute_stats(splits.train, size=32, progress=False)
    finally:
        splits.train.transform = None
    out.mkdir(parents=True, exist_ok=True)
    stats_mod.save_stats(st, path)
    return str(path)


def plan_runs(config: AblationConfig, settings: Settings, *, train_size: int, stats: str | None) -> list[RunPlan]:
    """Every (variant, seed) run in the order they are trained: seed by seed, so that a stopped ablation already
    has complete pairs for its first seeds."""
    plans = []
    for seed in settings.seeds:
        for name in settings.variants:
            tc = variant_train_config(config, settings, name, seed, train_size=train_size, stats=stats)
            plans.append(RunPlan(name, seed, Path(tc.out), tc))
    return plans


_NOT_COMPARED = ("resume", "progress", "log_every", "out", "workers", "device")


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in json.loads(json.dumps(d)).items() if k not in _NOT_COMPARED}


def _check_same(plan: RunPlan, saved: dict[str, Any], where: Path) -> None:
    """A run folder made with other settings is never silently reused or mixed into the table."""
    mine, theirs = _comparable(plan.train_config.to_dict()), _comparable(saved)
    # settings both versions know (a TrainConfig field added or retired since does not orphan finished runs)
    diff = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
    if diff:
        k = diff[0]
        raise AblationError(
            f"{where}: made with other settings ({k} {theirs.get(k)!r}, now {mine.get(k)!r}); "
            "use another --out or delete that folder"
        )


def _fmt_s(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _curve(metrics: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per epoch: training error and loss (means over the epoch, dropout and augmentation on), validation
    error, and the training seconds so far (Figure 1's axes)."""
    total, out = 0.0, []
    for r in metrics:
        total += float(r["seconds"])
        val = float(r["val_top1_accuracy"])
        out.append(
            {
                "epoch": int(r["epoch"]),
                "train_error": 1.0 - float(r["train_top1_accuracy"]),  # metrics.csv: fractions
                "train_loss": float(r["train_loss"]),
                "val_error": None if math.isnan(val) else 1.0 - val,
                "seconds": total,
            }
        )
    return out


def _to_threshold(curve: list[dict[str, float]], threshold: float) -> tuple[int | None, float | None]:
    """(epochs, training seconds) until the epoch's training error first is at or below ``threshold``."""
    for p in curve:
        if p["train_error"] <= threshold:
            return p["epoch"], p["seconds"]
    return None, None


def _evaluate(folder: Path, splits: Splits, device: Any, workers: int) -> dict[str, dict[str, float]]:
    """Top-1/top-5 error of the run's final weights on the test images: centre crop, and the softmax averaged
    over the ten patches (section 4.1)."""
    from .evaluate import evaluate_dataset
    from .weights import load_model

    model, pre = load_model(folder / "last.safetensors")
    out = {}
    for name, ten in (("centre", False), ("ten_crop", True)):
        splits.test.transform = pre.geometry(False, ten_crop=ten)
        ev = evaluate_dataset(
            model, splits.test, preprocessing=pre, ten_crop=ten, batch_size=128, workers=workers, device=device,
            channels_last=True, collect=False,
        )  # fmt: skip
        out[name] = {"top1_error": ev.top1_error, "top5_error": ev.top5_error, "loss": ev.loss}
    splits.test.transform = None
    out["num_samples"] = ev.num_samples
    return out


def _prune(folder: Path) -> None:
    """A finished, evaluated run needs no resume state: keep last.safetensors (the evaluated weights), drop the
    rest (a 60M-parameter run writes about 1 GB of checkpoints)."""
    for name in ("state.pt", "best.safetensors"):
        (folder / name).unlink(missing_ok=True)


def _train_and_record(plan: RunPlan, splits: Splits, config: AblationConfig, settings: Settings) -> dict[str, Any]:
    """Train (or resume) one run, evaluate it, write its record into the run folder."""
    from . import train
    from .data.fileio import atomic_write_text
    from .runtime import resolve_device

    tc = plan.train_config
    if (plan.folder / "state.pt").is_file():
        tc = dataclasses.replace(tc, resume=str(plan.folder))
    splits.train.transform = None  # each run gives the views its own geometry (no-augment: the centre crop)
    splits.val.transform = None
    result = train.main(tc, train_dataset=splits.train, val_dataset=splits.val)
    if result.interrupted:
        raise AblationError(
            f"stopped during {plan.variant} seed {plan.seed}; run the same command again to resume from {plan.folder}"
        )
    curve = _curve(result.metrics)
    epochs_to, seconds_to = _to_threshold(curve, config.threshold)
    ev = _evaluate(plan.folder, splits, resolve_device(config.device), settings.workers)
    record = {
        "variant": plan.variant,
        "seed": plan.seed,
        "folder": str(plan.folder),
        "centre": ev["centre"],
        "ten_crop": ev["ten_crop"],
        "test_samples": ev["num_samples"],
        "final_train_loss": curve[-1]["train_loss"],
        "final_train_error": curve[-1]["train_error"],
        "threshold": config.threshold,
        "epochs_to_threshold": epochs_to,
        "seconds_to_threshold": seconds_to,
        "train_seconds": curve[-1]["seconds"],
        "curve": curve,
        "train_config": plan.train_config.to_dict(),
    }
    atomic_write_text(plan.folder / RUN_RECORD, json.dumps(record, indent=2) + "\n")
    if not config.keep_checkpoints:
        _prune(plan.folder)
    return record


def _existing(plan: RunPlan) -> tuple[dict[str, Any] | None, str]:
    """(the finished run's record or None, what to do: skip / resume / train)."""
    record_path = plan.folder / RUN_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        _check_same(plan, record["train_config"], plan.folder)
        return record, "skip (finished)"
    config_path = plan.folder / "config.json"
    if (plan.folder / "state.pt").is_file() and config_path.is_file():
        _check_same(plan, json.loads(config_path.read_text(encoding="utf-8")), plan.folder)
        return None, "resume"
    return None, "train"


def run_ablation(config: AblationConfig, *, log: Callable[[str], Any] = print) -> AblationResult:
    """Train and evaluate every variant with every seed, then write the ablation's outputs into ``config.out``."""
    from . import ablate_report

    t0 = time.perf_counter()
    settings = resolve_settings(config)
    out = Path(config.out)
    splits = load_splits(config, settings)
    stats = _stats_file(splits, out)
    plans = plan_runs(config, settings, train_size=len(splits.train), stats=stats)
    log(
        f"ablate: {len(settings.variants)} variants x {len(settings.seeds)} seeds {settings.seeds} = {len(plans)} "
        f"runs at scale {config.scale}: {len(splits.train):,} training images, {len(splits.val):,} validation, "
        f"{len(splits.test):,} test ({splits.test_source}), {settings.epochs} epochs, {settings.scale.input_size}x"
        f"{settings.scale.input_size}, batch {settings.batch_size}, lr {settings.scale.lr}"
    )
    records, spent, done_here = [], 0.0, 0
    for k, plan in enumerate(plans, 1):
        record, action = _existing(plan)
        head = f"[{k}/{len(plans)}] {plan.variant} seed {plan.seed}"
        if record is not None or config.report_only:
            log(f"{head}: {action if record is not None else 'not finished (report only)'}")
            records += [record] if record is not None else []
            continue
        left = [p for p in plans[k - 1 :] if _existing(p)[0] is None]
        eta = f"about {_fmt_s(spent / done_here * len(left))} left" if done_here else "time left known after one run"
        log(f"{head}: {action} ({_fmt_s(time.perf_counter() - t0)} elapsed, {eta})")
        t_run = time.perf_counter()
        record = _train_and_record(plan, splits, config, settings)
        spent += time.perf_counter() - t_run
        done_here += 1
        c, t = record["centre"], record["ten_crop"]
        log(
            f"{head}: test top-1 error {c['top1_error']:.2%} (ten patches {t['top1_error']:.2%}), top-5 "
            f"{c['top5_error']:.2%}; final training error {record['final_train_error']:.2%}; "
            f"{_fmt_s(time.perf_counter() - t_run)}"
        )
        records.append(record)
    meta = _meta(config, settings, splits, time.perf_counter() - t0)
    meta["runs_finished"] = f"{len(records)} of {len(plans)}"
    written = ablate_report.write_outputs(out, records, _variant_info(settings.variants), meta)
    from .report import report

    written.files["report"] = report(out)  # the HTML page: the table, Figure 1's line and both pictures
    log(written.table)
    log(f"ablate: done in {_fmt_s(time.perf_counter() - t0)}; {', '.join(str(p) for p in written.files.values())}")
    return AblationResult(out, records, written.summary, written.table, written.files, time.perf_counter() - t0)


def _variant_info(names: list[str]) -> dict[str, dict[str, Any]]:
    return {
        n: {**{k: v for k, v in dataclasses.asdict(VARIANTS[n]).items()}, "switch": VARIANTS[n].switch()} for n in names
    }


def _meta(config: AblationConfig, settings: Settings, splits: Splits, seconds: float) -> dict[str, Any]:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {
        "command": _command(config),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{cpu}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}",
        "scale": config.scale,
        "scale_settings": dataclasses.asdict(settings.scale),
        "epochs": settings.epochs,
        "seeds": settings.seeds,
        "variants": settings.variants,
        "threshold": config.threshold,
        "data": splits.source,
        "train_samples": len(splits.train),
        "val_samples": len(splits.val),
        "test_samples": len(splits.test),
        "test_source": splits.test_source,
        "model_options": config.model_options,
        "cannot_show": settings.scale.cannot_show,
        "seconds": seconds,
    }


def _command(config: AblationConfig) -> str:
    parts = ["alexnet ablate", str(config.data), "--out", str(config.out)]
    if list(config.variants) != list(VARIANTS):
        parts += ["--variants", ",".join(config.variants)]
    parts += ["--seeds", str(config.seeds), "--scale", config.scale]
    if config.epochs is not None:
        parts += ["--epochs", str(config.epochs)]
    return " ".join(parts)


# --- command line (no torch here: the parser is built before anything heavy loads) ----------------------------------
