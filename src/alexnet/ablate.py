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
demo's: 67x67 inputs, a 6,000-image subset, a few epochs, He initialisation) fits a 2-core machine in about 40
minutes; it cannot show what needs long runs (overfitting without dropout or augmentation, differences below the
seed-to-seed noise). ``cpu-long`` trains on the whole training set and tests on every test image; ``--scale full``
is for a GPU: 227x227, the whole training set, the paper's 90 epochs and its plateau schedule. On smaller data the
scale's counts become shares of what is there (`alexnet.ablate_data.fit_counts`).

Imports nothing heavy at module level, so `add_arguments` needs no torch (the package's ``__init__`` still
imports it today).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rundir
from .ablate_data import Counts, Splits
from .ablate_runs import RUN_RECORD, train_and_record
from .ablate_variants import SCALES, VARIANTS, AblationError, Scale, Variant, parse_variants
from .data.fileio import check_output_dir

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

MAX_SEEDS = 100  # seeds per variant: 100 already means 100 training runs of each; 1e8 once built a 4.6 GB list


@dataclass
class AblationConfig:
    """What to run. None fields take the scale's value; ``model_options`` apply to every variant alike."""

    data: str  # Fashion-MNIST's folder (or "fashion-mnist"), or anything `alexnet.data.datasets.open_dataset` reads
    out: str = "runs/ablate"
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    seeds: int | None = None  # seeds 0 .. seeds-1 (model init, data order, augmentation, dropout); None: the scale's
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
    asked: Counts  # the counts the user gave, -1 where the scale decides (`alexnet.ablate_data.fit_counts`)
    workers: int
    batch_size: int


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
    seeds = s.seeds if config.seeds is None else config.seeds
    if not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise AblationError(f"seeds must be from 1 to {MAX_SEEDS} (each is a training run per variant), got {seeds!r}")
    if not 0.0 < config.threshold < 1.0:
        raise AblationError(f"threshold must be a training error in (0, 1), got {config.threshold!r}")

    def pick(value: int | None, default: int, name: str, least: int) -> int:
        v = default if value is None else value
        if v < least:
            raise AblationError(f"{name} must be >= {least}, got {v}")
        return v

    return Settings(
        variants=parse_variants(config.variants),
        seeds=list(range(seeds)),
        scale=s,
        epochs=pick(config.epochs, s.epochs, "epochs", 1),
        asked=Counts(
            train=-1 if config.train_samples is None else pick(config.train_samples, 0, "train_samples", 0),
            val=-1 if config.val_samples is None else pick(config.val_samples, 1, "val_samples", 1),
            test=-1 if config.test_samples is None else pick(config.test_samples, 0, "test_samples", 0),
        ),
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
        warmup_steps=min(s.warmup_steps, steps),
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


def load_splits(config: AblationConfig, settings: Settings) -> Splits:
    """The data every run shares, drawn once with ``split_seed`` (`alexnet.ablate_data.load_splits`)."""
    from . import ablate_data

    return ablate_data.load_splits(str(config.data), settings.scale, settings.asked, config.split_seed)


def _stats_file(splits: Splits, out: Path) -> str:
    """The training subset's statistics (mean, std and the RGB eigen-pairs PCA lighting needs, section 4.1),
    computed once and shared by every run; a rerun reuses the file."""
    from .data import stats as stats_mod

    path = rundir.RunDir(out).stats
    if path.is_file():
        return str(path)
    st = stats_mod.dataset_stats(splits.train)
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


def _existing(plan: RunPlan) -> tuple[dict[str, Any] | None, str]:
    """(the finished run's record or None, what to do: skip / resume / train)."""
    record_path = plan.folder / RUN_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        _check_same(plan, record["train_config"], plan.folder)
        return record, "skip (finished)"
    run = rundir.RunDir(plan.folder)
    if run.is_resumable() and run.config.is_file():
        _check_same(plan, run.read_config(), plan.folder)
        return None, "resume"
    return None, "train"


def run_ablation(config: AblationConfig, *, log: Callable[[str], Any] = print) -> AblationResult:
    """Train and evaluate every variant with every seed, then write the ablation's outputs into ``config.out``,
    which this process owns meanwhile (`rundir.lock_run`: a second ablation there is refused)."""
    with rundir.lock_run(config.out):
        return _run_ablation(config, log)


def _run_ablation(config: AblationConfig, log: Callable[[str], Any]) -> AblationResult:
    from . import ablate_data, ablate_report

    t0 = time.perf_counter()
    settings = resolve_settings(config)
    out = check_output_dir(config.out)  # a file named as --out: one line now, not a FileExistsError later
    splits = load_splits(config, settings)
    ablate_data.check_split(out, splits, config.split_seed)
    stats = _stats_file(splits, out)
    plans = plan_runs(config, settings, train_size=len(splits.train), stats=stats)
    log(
        f"ablate: {len(settings.variants)} variants x {len(settings.seeds)} seeds {settings.seeds} = {len(plans)} "
        f"runs at scale {config.scale}: {len(splits.train):,} training images, {len(splits.val):,} validation, "
        f"{len(splits.test):,} test ({splits.test_source}), {ablate_report.plural(settings.epochs, 'epoch')}, "
        f"{settings.scale.input_size}x{settings.scale.input_size}, batch {settings.batch_size}, lr {settings.scale.lr}"
    )
    s = settings.scale
    if not config.report_only and config.epochs is None and len(splits.val) == s.val_samples and s.cost:
        log(f"ablate: expected cost at scale {config.scale}'s own counts (docs/ABLATIONS.md): {s.cost}")
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
        record = train_and_record(
            plan.variant, plan.seed, plan.train_config, splits, threshold=config.threshold, device=config.device,
            workers=settings.workers, keep=config.keep_checkpoints,
            ten_crop=s.ten_crop == "all" or plan.variant == "full",
        )  # fmt: skip
        spent += time.perf_counter() - t_run
        done_here += 1
        log(f"{head}: {_run_line(record)}; {_fmt_s(time.perf_counter() - t_run)}")
        records.append(record)
    meta = _meta(config, settings, splits, time.perf_counter() - t0)
    meta["runs_finished"] = f"{len(records)} of {len(plans)}"
    written = ablate_report.write_outputs(out, records, _variant_info(settings.variants), meta)
    from .report import report

    written.files["report"] = report(out)  # the HTML page: the table, Figure 1's line and both pictures
    log(written.table)
    log(f"ablate: done in {_fmt_s(time.perf_counter() - t0)}; {', '.join(str(p) for p in written.files.values())}")
    return AblationResult(out, records, written.summary, written.table, written.files, time.perf_counter() - t0)


def _run_line(record: dict[str, Any]) -> str:
    if record["diverged"]:
        return f"diverged ({record['diverged']}): kept out of the means"
    c, t = record["centre"], record["ten_crop"]
    ten = f" (ten patches {t['top1_error']:.2%})" if t else ""
    return (
        f"test top-1 error {c['top1_error']:.2%}{ten}, top-5 {c['top5_error']:.2%}; "
        f"final training error {record['final_train_error']:.2%}"
    )


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
        "input_size": settings.scale.input_size,
        "batch_size": settings.batch_size,
        "num_classes": splits.num_classes,
        "seeds": settings.seeds,
        "variants": settings.variants,
        "threshold": config.threshold,
        "data": splits.source,
        "train_samples": len(splits.train),
        "val_samples": len(splits.val),
        "test_samples": len(splits.test),
        "test_source": splits.test_source,
        "model_options": config.model_options,
        "note": settings.scale.note,
        "seconds": seconds,
    }


def _command(config: AblationConfig) -> str:
    parts = ["alexnet ablate", str(config.data), "--out", str(config.out)]
    if list(config.variants) != list(VARIANTS):
        parts += ["--variants", ",".join(config.variants)]
    if config.seeds is not None:
        parts += ["--seeds", str(config.seeds)]
    parts += ["--scale", config.scale]
    for flag, value in (("--epochs", config.epochs), ("--train-samples", config.train_samples),
                        ("--val-samples", config.val_samples), ("--test-samples", config.test_samples)):  # fmt: skip
        if value is not None:
            parts += [flag, str(value)]
    return " ".join(parts)


# --- command line (no torch here: the parser is built before anything heavy loads) ----------------------------------
