"""A training run as a short sequence of named steps (torchvision's ``references/classification/train.py``
``main``): resolve the device and join the process group its caller started (the command, under torchrun); build
the model and open the data; place the model and choose its precision; compute the feature cache when asked; build
the optimizer and schedule; restore a resumed run; then per epoch train, validate, record (metrics.csv, eval.json,
TensorBoard) and checkpoint. SIGINT/SIGTERM stop the run at the next step with everything saved, so ``--resume``
continues it exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import options, rundir, runtime
from ..distributed import (
    DistInfo,
    EpochSampler,
    all_gather,
    eval_sampler,
    gather_lists,
    joined_group,
    reduce_max,
    reduce_sums,
)
from ..errors import AlexnetError
from ..evaluate import EvalResult, evaluate
from ..models import AlexNet
from ..preprocessing import Preprocessing
from . import diagnostics, fold, inputs, setup, summary
from .checkpoint import (
    RunProgress,
    Trainables,
    finish_checkpoints,
    load_state,
    model_from_state,
    restore_progress,
    save_checkpoint,
    seed_everything,
)
from .config import (
    DEFAULT_OUT,
    TrainConfig,
    TrainError,
    check_resume,
    read_resumed_config,
    run_settings,
    settle_config,
    settle_run,
)
from .loop import EpochOptions, EpochStats, NonFiniteLoss, StopFlag, install_signal_handlers, train_one_epoch

__all__ = ["TrainResult", "main"]


@dataclass
class TrainResult:
    """What a run ends with: the folder, the epochs done, the best validation top-1 error, why it stopped."""

    out: Path
    epochs_done: int
    best_val_top1_error: float | None
    metrics: list[dict[str, Any]]
    interrupted: bool = False
    skipped: int = 0
    signal: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run, or arrived after its end


def main(
    config: TrainConfig,
    *,
    train_dataset: Any | None = None,
    val_dataset: Any | None = None,
    overwrite: bool = False,
    resumed_config: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train (or fine-tune) as ``config`` says and write the run folder; returns a `TrainResult`.

    ``train_dataset`` / ``val_dataset``: data sets that follow the `alexnet.data` contract (``ds[i]`` is
    ``(uint8 (3, S, S) image, label)`` already cropped to the input size, attributes ``classes``/``targets``),
    used instead of opening ``config.data``. One whose ``transform`` attribute is None gets the run's
    `Preprocessing.geometry` (training or evaluation).

    Many processes: the caller starts the process group (`alexnet.distributed.setup_distributed`, as the
    ``alexnet train`` command does under torchrun) and every rank calls ``main``; without one the run is rank 0 of
    1, whatever torchrun's variables say: a library function joins a group, never starts one.

    A folder that already holds a run is refused unless ``config.resume`` continues it or ``overwrite`` (never a
    config key: only the caller's explicit word) starts it afresh; ``config.out`` None picks a new folder.
    A resumed run refuses settings that define it when they differ from what its state.pt records
    (`check_resume`), be they flags or an edited config.json. ``resumed_config``: that run's config.json as the
    caller already read it (the command: `read_resumed_config`, once); read here when not given.
    """
    cfg = settle_config(config)  # a config from resolve_config / config_from_sources is already settled
    runtime.tune_cpu_allocator()  # what the alexnet command does at start-up: same results, faster CPU steps
    try:
        device = runtime.resolve_device(cfg.device)
    except AlexnetError as e:
        raise TrainError(str(e)) from None
    info = joined_group()  # the group the caller started (`alexnet train` under torchrun), else rank 0 of 1
    with contextlib.ExitStack() as owned:  # the run folder's lock, held by the first process until the end
        cfg = _own_folder(cfg, info, overwrite, owned)
        resume_state = load_state(cfg.resume) if cfg.resume else None
        if resume_state is None:
            cfg = settle_run(cfg, None)  # out and arch: from here on the config is not rewritten
        else:
            saved = _resumed_config(cfg, resumed_config)
            cfg = settle_run(cfg, saved, resume_state.get("arch"))
            changes = check_resume(cfg, saved, cfg.resume, resume_state.get("settings") or None)
            if int(resume_state["epoch"]) >= cfg.epochs:
                return _complete(cfg, resume_state)
            if changes and info.is_main and options.resolve_progress(cfg.progress) != "none":
                print(f"resume {cfg.out}: {', '.join(changes)}", flush=True)
        run = _assemble(cfg, info, device, resume_state, train_dataset, val_dataset, overwrite=overwrite)
        return run.train()


def _resumed_config(cfg: TrainConfig, given: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The resumed run's config.json, ``given`` or read now (settings that define the run must equal it:
    `check_resume`); an ``--out`` other than the run's own folder is refused."""
    run_dir = Path(cfg.resume)
    saved = read_resumed_config(run_dir) if given is None else given
    if cfg.out is not None and cfg.out != saved.get("out") and Path(cfg.out).resolve() != run_dir.resolve():
        raise TrainError(
            f"--out {cfg.out}: a resumed run continues in its own folder {run_dir}; drop --out (to start a new run "
            f"from its weights: alexnet finetune --weights {run_dir / rundir.LAST} --out {cfg.out})"
        )
    return saved


def _complete(cfg: TrainConfig, state: Mapping[str, Any]) -> TrainResult:
    """A resumed run that has already trained ``cfg.epochs`` epochs: say so and how to extend it."""
    out, done, best = Path(cfg.out), int(state["epoch"]), float(state["best_metric"])
    print(
        f"{out} is complete: {done} of {cfg.epochs} epochs done. To train longer: alexnet train --resume {out} "
        f"--epochs {max(done, cfg.epochs) + 1} (or more)",
        flush=True,
    )
    rows = rundir.read_metrics(out) if (out / rundir.METRICS).exists() else []
    return TrainResult(out, done, None if math.isinf(best) else best, rows)


def _own_folder(cfg: TrainConfig, info: DistInfo, overwrite: bool, owned: contextlib.ExitStack) -> TrainConfig:
    """The first process takes the run folder's lock (`rundir.lock_run`, kept in ``owned`` until the run ends)
    before anything in it is read or written, so two processes never write one folder; every rank takes its
    word. A new run's folder (``cfg.out``) must not hold a run unless ``overwrite`` (its run files are then
    removed when the run opens); None picks a fresh ``runs/train[-N]``. A resumed run locks its own folder.
    Returns ``cfg`` with a new run's folder settled."""
    decision: tuple[str, str | None] = ("", None)
    if info.is_main:
        try:
            if cfg.resume:
                if Path(cfg.resume).is_dir():  # else load_state says there is no run to resume
                    owned.enter_context(rundir.lock_run(cfg.resume, create=False))
            elif cfg.out is None:
                decision = (str(owned.enter_context(rundir.lock_fresh_run_dir(DEFAULT_OUT))), None)
            elif Path(cfg.out).exists() and not Path(cfg.out).is_dir():
                decision = (cfg.out, f"--out {cfg.out}: is a file, not a folder; choose another --out")
            else:
                owned.enter_context(rundir.lock_run(cfg.out))
                held = rundir.describe_run(cfg.out)
                refusal = None
                if held is not None and not overwrite:
                    refusal = (
                        f"{cfg.out} holds a run, {held}: continue it with --resume {cfg.out}, or choose another "
                        "--out, or pass --overwrite to start it afresh"
                    )
                decision = (cfg.out, refusal)
        except rundir.RunDirError as e:
            decision = ("", str(e))
    out, refusal = all_gather(decision, info)[0]
    if refusal:
        raise TrainError(refusal)
    return cfg if cfg.resume else dataclasses.replace(cfg, out=out)


# --- the steps before the first epoch ------------------------------------------------------------------------------
def _model(
    cfg: TrainConfig, resume_state: Mapping[str, Any] | None, train_dataset: Any | None
) -> tuple[AlexNet, Preprocessing, set[str]]:
    """The model and its preprocessing: from the resumed state, the weights (fine-tuning), or fresh."""
    if resume_state is not None:
        return model_from_state(resume_state, cfg)
    classes = inputs.class_names(train_dataset) if train_dataset is not None else inputs.peek_classes(cfg)
    inputs.check_classes(classes, cfg.data)
    return setup.build_model(cfg, classes)


def _switch_decode_on_device(cfg: TrainConfig, train_ds: Any, info: DistInfo, device: torch.device) -> None:
    if not cfg.decode_on_device or cfg.cache_features:
        return
    if not inputs.decode_on_device(train_ds) and info.is_main:
        print("decode_on_device: the training set holds no image files; it is read as before", flush=True)
    elif device.type != "cuda" and info.is_main:
        print(
            f"decode_on_device: on {device.type} the main process decodes every batch, which the loader's "
            "workers would share; it is meant for a GPU",
            flush=True,
        )


def _datasets(
    cfg: TrainConfig, pre: Preprocessing, augment: bool, resumed: bool, handed: tuple[Any | None, Any | None]
) -> tuple[Any, Any | None]:
    """The training and validation sets (opened, or handed in and given this run's geometry), checked against
    the run's class names."""
    if handed[0] is None:
        train_ds, val_ds = inputs.open_datasets(cfg, pre, augment)
    else:
        train_ds, val_ds = handed
        # data sets handed in without a transform get this run's geometry (the model decides the input size)
        for ds, train_geo in ((train_ds, augment), (val_ds, False)):
            if ds is not None and hasattr(ds, "transform") and ds.transform is None:
                ds.transform = pre.geometry(train_geo)
        inputs.check_handed(train_ds, "train_dataset")  # normalised or 0..1 images would train on wrong inputs
        inputs.check_handed(val_ds, "val_dataset")
    ds_classes = inputs.class_names(train_ds)
    inputs.check_data(train_ds, ds_classes, cfg.data or "data")
    run_classes = list(pre.class_names or [])
    if ds_classes != run_classes:
        raise TrainError(
            f"{cfg.data or 'data'}: classes {ds_classes[:3]}... do not match the run's {run_classes[:3]}..."
            if resumed
            else f"{cfg.data or 'data'}: class names changed while opening the data"
        )
    return train_ds, val_ds


def _place(model: AlexNet, cfg: TrainConfig, pre: Preprocessing, device: torch.device) -> list[str]:
    """Check the input size, freeze the layers that do not learn (returns those that do), move to ``device``."""
    setup.check_input_size(model, pre.input_size, cfg.arch)
    learners = setup.freeze_layers(model, cfg.train_layers)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return learners


@dataclass
class _EpochData:
    """What an epoch iterates: the images (with their batch transforms) or the cached features (none)."""

    net: nn.Module  # the network the optimizer drives: the model, or its classifier over the cache
    train_ds: Any
    val_ds: Any | None
    train_tf: nn.Module | None
    val_tf: nn.Module | None
    skipped: list[str]


def _cache_features(
    model: AlexNet, cfg: TrainConfig, datasets: tuple[Any, Any | None], eval_tf: nn.Module, env: _Env
) -> _EpochData:
    """The frozen front's features of both sets, computed once; the rest of the classifier trains from them."""
    train_ds, val_ds = datasets
    front = setup.cache_split(model)
    skipped: list[str] = []
    compute = functools.partial(
        setup.compute_features, model, device=env.device, front=front, batch_transform=eval_tf,
        autocast=env.autocast, channels_last=cfg.channels_last, progress=env.progress,
    )  # fmt: skip
    # Computing the cache must not consume the RNG that the plain path would leave untouched, so that both
    # paths draw the same dropout masks: fork the RNG around it.
    with torch.random.fork_rng(devices=[env.device] if env.device.type == "cuda" else []):
        loader = inputs.make_loader(
            train_ds, batch_size=env.local_batch, sampler=None, workers=env.workers, seed=cfg.seed
        )
        train_feats, bad = compute(loader, desc="caching train features")
        skipped.extend(bad)
        val_feats = None
        if val_ds is not None:
            vloader = inputs.make_loader(
                val_ds, batch_size=env.local_batch, sampler=eval_sampler(val_ds, env.info.rank, env.info.world_size),
                workers=env.workers, seed=cfg.seed,
            )  # fmt: skip
            val_feats, bad = compute(vloader, desc="caching val features")
            skipped.extend(bad)
    return _EpochData(setup.CachedClassifier(model, front), train_feats, val_feats, None, None, skipped)


@dataclass
class _Env:
    """Where and how the run computes: device, processes, batch per process, workers, progress, precision."""

    info: DistInfo
    device: torch.device
    local_batch: int
    workers: int
    progress: str
    precision: runtime.Precision

    def autocast(self) -> contextlib.AbstractContextManager:
        """Training's forward pass in the run's precision (a fresh context each step)."""
        return self.precision.autocast(self.device)


def _env(cfg: TrainConfig, info: DistInfo, device: torch.device) -> _Env:
    if cfg.batch_size % info.world_size:
        raise TrainError(f"batch_size {cfg.batch_size} is not divisible by the {info.world_size} processes")
    return _Env(
        info=info,
        device=device,
        local_batch=cfg.batch_size // info.world_size,
        workers=options.check_workers(cfg.workers),
        progress=options.resolve_progress(cfg.progress, is_main=info.is_main),
        precision=runtime.resolve_precision(cfg.precision, device),
    )


def _assemble(
    cfg: TrainConfig,
    info: DistInfo,
    device: torch.device,
    resume_state: Mapping[str, Any] | None,
    train_dataset: Any | None,
    val_dataset: Any | None,
    *,
    overwrite: bool = False,
) -> _Run:
    """Every step before the first epoch, in order (the order fixes what the seeded RNG draws)."""
    env = _env(cfg, info, device)
    augment = cfg.augment and not cfg.cache_features  # the cache needs the same pixels every epoch
    seed_everything(cfg.seed + info.rank)
    model, pre, new_layers = _model(cfg, resume_state, train_dataset)
    if cfg.arch is None:  # fine-tuning: the weights' own architecture (the file's, or as guessed), named once
        cfg = dataclasses.replace(cfg, arch=setup.guess_arch_name(model))
    train_ds, val_ds = _datasets(cfg, pre, augment, resume_state is not None, (train_dataset, val_dataset))
    _switch_decode_on_device(cfg, train_ds, info, device)
    stats_obj = setup.load_stats(cfg.stats) if cfg.stats else None
    train_tf = pre.batch_transform(augment, lighting=cfg.lighting if augment else 0.0, stats=stats_obj).to(device)
    eval_tf = pre.batch_transform(False, stats=stats_obj).to(device)
    learners = _place(model, cfg, pre, device)
    if cfg.cache_features:
        data = _cache_features(model, cfg, (train_ds, val_ds), eval_tf, env)
    else:
        data = _EpochData(model, train_ds, val_ds, train_tf, eval_tf, [])
    cfg = setup.resolve_decay_steps(cfg, len(data.train_ds), info.world_size)  # before config.json is written
    groups = setup.make_param_groups(model, learners, new_layers, cfg.lr, cfg.new_layer_lr_mult)
    optimizer = setup.make_optimizer(cfg, groups, device)
    epoch_scheduler, iter_scheduler = setup.make_scheduler(cfg, optimizer)
    t = Trainables(model, pre, cfg.arch, new_layers, optimizer, epoch_scheduler or iter_scheduler,
                   env.precision.grad_scaler(device), run_settings(cfg))  # fmt: skip
    if info.is_main:  # what the weights it writes carry (alexnet.weights.provenance): hashed once, by the writer
        t.origin = setup.weights_origin(cfg, train_dataset)
    run = _Run(cfg, env, t, data, (epoch_scheduler, iter_scheduler), Path(cfg.out))
    if resume_state is not None:
        run.state = restore_progress(resume_state, t, run.out, info, device)
    else:
        run.state.skipped = data.skipped
    run.open(overwrite=overwrite)
    run.start_diagnostics(learners, new_layers, (train_ds, val_ds), resumed=resume_state is not None)
    return run


# --- the epochs ---------------------------------------------------------------------------------------------------
def _epoch_line(row: Mapping[str, Any], epochs: int) -> str:
    val = (
        f" val loss {row['val_loss']:.4f} top-1 {row['val_top1_accuracy']:.2%} top-5 {row['val_top5_accuracy']:.2%}"
        if not math.isnan(row["val_loss"])
        else ""
    )
    return (
        f"epoch {row['epoch']}/{epochs} lr {row['lr']:.3g} train loss {row['train_loss']:.4f} "
        f"top-1 {row['train_top1_accuracy']:.2%}{val} {row['images_per_s']:.0f} img/s {row['seconds']:.1f}s"
    )


def _metrics_row(epoch: int, lr: float, train: Mapping[str, float], seconds: float, val: EvalResult | None) -> dict:
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train["loss"],
        "train_top1_accuracy": train["acc1"] / 100.0,  # metrics.csv holds fractions, as every file (alexnet.schemas)
        "val_loss": val.loss if val is not None else math.nan,
        "val_top1_accuracy": val.acc1 if val is not None else math.nan,
        "val_top5_accuracy": val.acc5 if val is not None else math.nan,
        "images_per_s": train["images_per_s"],
        "seconds": seconds,
    }


def _train_totals(stats: EpochStats, info: DistInfo, device: torch.device) -> dict[str, float]:
    """Training loss/top-1 over every rank's samples; images/s of the whole job."""
    loss_sum, correct, n = reduce_sums([stats.loss_sum, stats.correct, stats.samples], info, device)
    seconds = reduce_max(stats.seconds, info, device)
    return {
        "loss": loss_sum / n if n else math.nan,
        "acc1": 100.0 * correct / n if n else math.nan,
        "images_per_s": n / seconds if seconds > 0 else 0.0,
    }


class _Run:
    """The assembled run: trains epoch after epoch, records each, and checkpoints."""

    def __init__(
        self, cfg: TrainConfig, env: _Env, t: Trainables, data: _EpochData, schedulers: tuple[Any, Any], out: Path
    ) -> None:
        self.cfg, self.env, self.t, self.data, self.out = cfg, env, t, data, out
        self.epoch_scheduler, iter_scheduler = schedulers  # per epoch (plateau) / per iteration (step)
        self.state = RunProgress()
        info, device = env.info, env.device
        self.channels_last = cfg.channels_last and not cfg.cache_features
        self.sampler = EpochSampler(data.train_ds, num_replicas=info.world_size, rank=info.rank, seed=cfg.seed)
        self.train_net: nn.Module = data.net
        if info.distributed:
            ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
            self.train_net = nn.parallel.DistributedDataParallel(data.net, **ddp_kwargs)
        if cfg.compile:
            self.train_net = torch.compile(self.train_net)
        plain = not (info.distributed or cfg.compile or t.scaler)  # fc6 through its cells' mean where it folds
        self.fc6_fold = fold.fc6_fold(data.net, t.optimizer, t.pre.input_size, device=device, plain_step=plain)
        self.stop = StopFlag()
        self.opts = EpochOptions(
            device=device, num_classes=len(t.pre.class_names or []), batch_transform=data.train_tf,
            autocast=env.autocast, scaler=t.scaler, iter_scheduler=iter_scheduler, channels_last=self.channels_last,
            distributed=info.distributed, stop=self.stop, total_steps=math.ceil(len(self.sampler) / env.local_batch),
            progress=env.progress, log_every=cfg.log_every,
        )  # fmt: skip
        self.restore_signals: Callable[[], None] = lambda: None
        self.tb: rundir.TensorBoardLog | None = None
        self.monitor: diagnostics.Monitor  # set by `start_diagnostics`
        self.last_val: EvalResult | None = None
        self.t0 = time.perf_counter()

    def open(self, *, overwrite: bool = False) -> None:
        """The run folder with this run's config.json (``overwrite``: the files of the run it held removed
        first), the loaders, TensorBoard and the signal handlers."""
        cfg, info = self.cfg, self.env.info
        if info.is_main:
            if overwrite:
                rundir.clear_run(self.out)
            rundir.prepare_run_dir(self.out)
            rundir.write_config(self.out, cfg.to_dict())
        self.loader, self.val_loader = inputs.run_loaders(
            cfg, self.data.train_ds, self.data.val_ds, self.env.local_batch, self.sampler, info, self.env.workers,
            self.env.device,
        )  # fmt: skip
        self.tb = rundir.TensorBoardLog(rundir.RunDir(self.out).tensorboard, cfg.tensorboard and info.is_main)
        self.restore_signals = install_signal_handlers(self.stop)  # last: `train` puts them back

    def start_diagnostics(self, learners: list[str], new_layers: set[str], sets: tuple, resumed: bool) -> None:
        """The header, then the checks at the start (imbalance, leakage); the loop's hooks watch the rest."""
        cfg, env, pre = self.cfg, self.env, self.t.pre
        classes = list(pre.class_names or [])
        self.monitor = m = diagnostics.Monitor(
            out=self.out, num_classes=len(classes), classes=classes, pre=pre, model=self.t.model,
            optimizer=self.t.optimizer, learners=learners, new_layers=new_layers, device=env.device,
            check_batch=not cfg.cache_features, is_main=env.info.is_main, verbose=env.progress != "none",
            distributed=env.info.distributed,
        )  # fmt: skip
        self.opts.monitor = m
        if resumed:
            m.resume()
        if m.verbose and m.is_main:
            where = f"{env.device}, {env.precision.name}, {env.info.world_size} process(es)"
            summary.print_lines(summary.header_lines(cfg, m, sets, input_size=pre.input_size, where=where))
        m.start(*sets)
        m.save()

    def train(self) -> TrainResult:
        interrupted = False
        try:
            for epoch in range(self.state.start_epoch, self.cfg.epochs + 1):
                if self.epoch(epoch):
                    interrupted = True
                    break
        finally:
            self.restore_signals()
            if self.tb is not None:
                self.tb.close()
        s = self.state
        if self.env.info.is_main:
            if s.skipped:
                print(rundir.skipped_summary(s.skipped, self.out), flush=True)
            if not interrupted and s.metrics and s.metrics[-1]["epoch"] >= self.cfg.epochs:
                finish_checkpoints(self.out, self.cfg.keep)
                self.print_summary()
        return TrainResult(
            out=self.out,
            epochs_done=s.metrics[-1]["epoch"] if s.metrics else 0,
            best_val_top1_error=None if math.isinf(s.best_err) else s.best_err,
            metrics=s.metrics,
            interrupted=interrupted,
            skipped=len(s.skipped),
            signal=self.stop.signum if self.stop.requested else None,
        )

    def print_summary(self) -> None:
        if self.env.progress == "none":
            return
        s = self.state
        summary.print_lines(summary.closing_lines(
            self.out, epochs_done=s.metrics[-1]["epoch"], epochs=self.cfg.epochs, seconds=time.perf_counter() - self.t0,
            best=(s.best_epoch, s.best_err), findings=self.monitor.findings, extendable=self.cfg.schedule != "linear",
            per_class=summary.eval_per_class(self.last_val, self.t.pre.class_names or []),
        ))  # fmt: skip

    def save(self, epoch_done: int, stats: EpochStats | None, *, best: bool = False) -> None:
        save_checkpoint(self.out, self.t, self.state, epoch_done, stats, self.env.info, self.env.device,
                        best=best and self.cfg.keep != "last")  # fmt: skip

    def write_skipped(self) -> None:
        if self.env.info.is_main:
            rundir.write_skipped(self.out, self.state.skipped)

    def train_epoch(self, epoch: int) -> tuple[EpochStats, bool]:
        """The epoch's steps (continuing an interrupted one); the bad images of every rank join skipped.txt."""
        s = self.state
        self.sampler.set_epoch(epoch)
        stats = s.partial if s.partial.steps else EpochStats()
        s.partial = EpochStats()
        self.sampler.skip = stats.steps * self.env.local_batch
        if hasattr(self.loader.batch_sampler, "set_epoch"):  # per-batch seeds of the random transforms
            self.loader.batch_sampler.set_epoch(epoch)
        stopped, fold = False, self.fc6_fold
        try:
            if fold is not None:  # closed (fc6.weight written back) before anything reads the weights
                fold.open(s.fc6_fold)
            stats, stopped = train_one_epoch(self.train_net, self.loader, self.t.optimizer, self.opts, epoch=epoch,
                                             stats=stats)  # fmt: skip
        except (NonFiniteLoss, diagnostics.Diverging) as e:  # diagnostics.json records it; the checkpoint stays
            run = rundir.RunDir(self.out)
            kept = f"{run.last} kept" if run.state.exists() else "none saved yet"
            raise self.monitor.stop_error(e, f"last good checkpoint: {kept}") from None
        finally:  # a stopped epoch's checkpoint holds where the fold stood, so that its resume is exact
            s.fc6_fold = fold.close(keep=stopped) if fold is not None else None
        s.skipped.extend(gather_lists(stats.bad, self.env.info))
        stats.bad = []
        return stats, stopped

    def validate(self) -> EvalResult | None:
        if self.data.val_ds is None:
            return None
        device, info = self.env.device, self.env.info
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return evaluate(
                self.data.net, self.val_loader, device=device, batch_transform=self.data.val_tf,
                num_classes=self.opts.num_classes, distributed=info.distributed,
                mixed=self.env.precision, channels_last=self.channels_last,
            )  # fmt: skip

    def record(self, row: dict[str, Any], val: EvalResult | None) -> None:
        """metrics.csv, eval.json, TensorBoard, the epoch's line (best.safetensors comes with the checkpoint)."""
        self.state.metrics.append(row)
        if not self.env.info.is_main:
            return
        if val is not None:
            rundir.write_eval(self.out, row["epoch"], val.to_dict(list(self.t.pre.class_names or [])))
        rundir.write_metrics(self.out, self.state.metrics)
        self.tb.log(row)
        if self.env.progress != "none":
            print(_epoch_line(row, self.cfg.epochs), flush=True)

    def epoch(self, epoch: int) -> bool:
        """Train, validate, record and checkpoint one epoch; True when a signal stopped the run."""
        s, out, is_main = self.state, self.out, self.env.info.is_main
        lr_now = self.t.optimizer.param_groups[0]["lr"]
        stats, stopped = self.train_epoch(epoch)
        if stopped:
            self.save(epoch - 1, stats)
            self.write_skipped()
            if is_main:
                print(f"interrupted at epoch {epoch}, step {stats.steps}; saved. Continue with: "
                      f"alexnet train --resume {out}", flush=True)  # fmt: skip
            return True
        totals = _train_totals(stats, self.env.info, self.env.device)
        val = self.validate()
        err = val.top1_error if val is not None else 1.0 - totals["acc1"] / 100.0
        if self.epoch_scheduler is not None:
            self.epoch_scheduler.step(err)
        improved = err < s.best_err
        if improved:
            s.best_err, s.best_epoch = err, epoch
        self.record(_metrics_row(epoch, lr_now, totals, stats.seconds, val), val)
        self.last_val = val
        self.monitor.end_epoch(s.metrics, s.best_epoch)
        self.write_skipped()
        self.save(epoch, None, best=improved)
        if self.stop.requested:  # a signal between the last step and here: the epoch is whole, stop now
            if epoch == self.cfg.epochs:
                if is_main:
                    print(f"stopped after the last epoch: the run is complete ({epoch} of {epoch} epochs in {out})")
                return False
            if is_main:
                print(f"interrupted after epoch {epoch}; saved. Continue with: alexnet train --resume {out}")
            return True
        return False
