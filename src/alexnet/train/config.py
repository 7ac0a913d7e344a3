"""A training run's configuration: `TrainConfig` (the paper's recipe as defaults), where its values come from
(defaults < the resumed run's config.json < ``--config`` file < flags: timm's precedence) and the checks that
refuse a value no run can use, each with a one-line `TrainError` naming the setting."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import options, rundir
from ..errors import AlexnetError
from ..limits import MAX_IMAGE_SIDE
from ..names import CONV_LAYERS, INIT_SCHEMES, LAYER_NAMES
from ..options import WeightsSource

__all__ = [
    "DEFAULT_OUT",
    "KEEP_MODES",
    "RESUMABLE_SETTINGS",
    "RUN_DEFINING_SETTINGS",
    "TrainConfig",
    "TrainError",
    "check_config",
    "check_resume",
    "config_from_sources",
    "load_config_file",
    "normalize_config",
    "read_resumed_config",
    "resolve_config",
    "run_settings",
    "settle_config",
    "settle_run",
]


class TrainError(AlexnetError, ValueError):
    """A training run that cannot start or continue as asked; the message is one line for the user."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on. Defaults are the paper's recipe (section 5); precedence when resolved:
    these defaults < ``--config file.json`` < command-line flags. The resolved config is the run's config.json.
    Frozen: a change is a new config (`dataclasses.replace`), made where the run is planned (`settle_run`)."""

    # data
    data: str = ""  # anything `alexnet.data.datasets.open_dataset` reads (image folder, list file, prepared set)
    val_split: float = 0.0  # fraction held out for validation when the data has no validation split of its own
    out: str | None = None  # the run folder (config.json, metrics.csv, checkpoints); None = a new runs/train[-N]
    stats: str | None = None  # stats.json from `alexnet stats`: mean/std and PCA eigen-pairs of the training set
    # model (from scratch)
    arch: str | None = None  # registered architecture (`alexnet models`); None = alexnet2012, or the weights' own
    input_size: int | None = None  # crop side; None = the architecture's (227 for alexnet2012, 224 for alexnet_owt)
    resize_size: int | None = None  # short side before cropping; None = 256 for crops 224..256, else 256:224 scaled
    model_options: dict[str, Any] = field(default_factory=dict)  # further AlexNetConfig overrides (study switches)
    dropout: float = 0.5  # p of both dropout layers (section 4.2)
    init: str = "paper"  # paper | caffe | torchvision | kaiming initialisation (section 5)
    # fine-tuning
    # start from these weights (a `WeightsSource`: a name, a file, or in a config file an object with a Caffe
    # model's prototxt, mean, labels); required by finetune. A pickled .npy needs allow_pickle in the source,
    # which only the command line (--trust-pickle) or the Python API gives, never a file
    weights: WeightsSource | None = None
    train_layers: list[str] | None = None  # layers that learn (paper names); None = all; the rest are frozen
    reinit: list[str] = field(default_factory=list)  # layers re-initialised before training (fc8 always, if resized)
    new_layer_lr_mult: float = 1.0  # learning-rate multiplier of re-initialised layers
    cache_features: bool = False  # all conv layers frozen: compute the frozen front once, train the rest from it
    # recipe (section 5)
    epochs: int = 90  # "roughly 90 cycles through the training set"
    batch_size: int = 128  # global batch (split evenly over DDP ranks)
    lr: float = 0.01  # initial learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # plateau: /10 when val error stops improving; step: Caffe's x0.1 every step_size iters; linear: after the warm-up
    # lr falls in a straight line to 0 at iteration decay_steps (not the paper's: the best short-budget schedule)
    schedule: str = "plateau"
    lr_factor: float = 0.1  # the "divide by 10"
    plateau_patience: int = 5  # epochs without improvement before the learning rate drops
    max_lr_drops: int = 3  # the paper reduced the learning rate three times
    step_size: int = 100_000  # iterations between drops with schedule=step (bvlc_alexnet solver: 100000)
    warmup_steps: int = 0  # step/linear: lr rises linearly over these first iterations (not the paper's; 0 = none)
    decay_steps: int = 0  # linear: the iteration where lr reaches 0; 0: the run's length, fixed when it starts
    augment: bool = True  # random crop + horizontal flip + PCA lighting (section 4.1); False: eval geometry
    lighting: float = 0.1  # sigma of the PCA lighting coefficients alpha_i (section 4.1); 0 disables
    # engineering
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + GradScaler) | auto (bf16 where native)
    channels_last: bool = False  # NHWC memory format for the convolutions
    compile: bool = False  # torch.compile the model
    decode_on_device: bool = False  # JPEGs decoded in batches on the device (nvJPEG on a GPU); not with the cache
    workers: int | None = None  # DataLoader worker processes per rank; None = options.default_workers()
    seed: int = 0  # seeds model init, data order, augmentation and dropout
    on_bad_image: str = "skip"  # skip (count and list in skipped.txt) | fail
    resume: str | None = None  # a run folder to continue exactly where it stopped
    progress: str = "auto"  # auto (bar on a terminal, log lines otherwise) | bar | log | none
    log_every: int = 50  # steps between plain log lines
    tensorboard: bool = True  # write TensorBoard events when torch.utils.tensorboard imports
    keep: str = "all"  # checkpoints kept: all (state.pt, last, best) | last (no best) | best (best only at the end)

    def to_dict(self) -> dict[str, Any]:
        """The run's config.json: plain JSON values (the weights as `WeightsSource.to_config`, no pickle trust)."""
        d = dataclasses.asdict(dataclasses.replace(self, weights=None))
        d["weights"] = self.weights.to_config() if self.weights is not None else None
        return d


DEFAULT_OUT = "runs/train"  # the default run folder's base name (`alexnet.rundir.fresh_run_dir` numbers it)
KEEP_MODES = ("all", "last", "best")

# What ``--resume`` compares with the run's config.json. A run is defined by its data split, model, starting
# weights and recipe: changing one of these mid-run would silently be ignored (the restored model, optimizer and
# schedule carry the old values) or would train on images the old split held out. They are refused.
RUN_DEFINING_SETTINGS = (
    "val_split", "stats", "arch", "input_size", "resize_size", "model_options", "dropout", "init", "weights",
    "train_layers", "reinit", "new_layer_lr_mult", "cache_features", "batch_size", "lr", "momentum",
    "weight_decay", "schedule", "lr_factor", "plateau_patience", "max_lr_drops", "step_size", "augment", "lighting",
    "seed", "warmup_steps", "decay_steps",
)  # fmt: skip
# What may change on resume (honoured, printed and recorded in config.json): how long and where the run computes,
# and how it reports. ``data`` may move (its classes are checked); ``out`` is always the resumed folder.
RESUMABLE_SETTINGS = (
    "data", "epochs", "device", "precision", "channels_last", "compile", "decode_on_device", "workers",
    "on_bad_image", "progress", "log_every", "tensorboard", "keep",
)  # fmt: skip

_CHOICES = {
    "keep": KEEP_MODES,
    "schedule": ("plateau", "step", "linear"),
    "precision": options.PRECISIONS,
    "on_bad_image": ("skip", "fail"),
    "progress": options.PROGRESS_MODES,
    "init": INIT_SCHEMES,
}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file (YAML too when PyYAML is installed) into a dict of `TrainConfig` keys."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        raise TrainError(f"{path}: not a regular file (a folder, a pipe or a device); name a JSON config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainError(f"{path}: no such config file") from None
    except OSError as e:
        raise TrainError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise TrainError(f"{path}: YAML config files need PyYAML; use JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise TrainError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TrainError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise TrainError(f"{path}: a config file must hold an object of settings")
    return data


def resolve_config(*layers: Mapping[str, Any] | None, source_names: Sequence[str] = ()) -> TrainConfig:
    """Merge setting layers, later ones winning, over the dataclass defaults; normalise, then check every value."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    merged: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        if not layer:
            continue
        unknown = sorted(set(layer) - known)
        if unknown:
            where = source_names[i] if i < len(source_names) else "config"
            raise TrainError(f"{where}: unknown setting(s) {', '.join(unknown)}")
        merged.update(layer)
    return settle_config(TrainConfig(**merged))


_SETTLED = "_settled"  # the attribute `settle_config` sets on the frozen config it returns


def settle_config(cfg: TrainConfig) -> TrainConfig:
    """`normalize_config`, then `check_config`: what every config passes once before a run. The config returned
    is marked settled and is returned as it is when it comes back (`alexnet.train.main` takes a config from
    `resolve_config` or `config_from_sources` without a second pass); ``TrainConfig`` is frozen, and
    ``dataclasses.replace`` makes a new, unsettled one."""
    if getattr(cfg, _SETTLED, False):
        return cfg
    cfg = normalize_config(cfg)
    check_config(cfg)
    object.__setattr__(cfg, _SETTLED, True)  # not a field: no config key, no part of equality or config.json
    return cfg


def _layer_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if not isinstance(value, list | tuple):
        raise TrainError(f"{what}: expected a list of layer names, got {value!r}")
    names = [str(v) for v in value]
    bad = [n for n in names if n not in LAYER_NAMES]
    if bad:
        raise TrainError(f"{what}: unknown layer {bad[0]!r}; layers are {', '.join(LAYER_NAMES)}")
    return names


def normalize_config(cfg: TrainConfig) -> TrainConfig:
    """A copy of ``cfg`` with its layer lists in one spelling (``"fc7,fc8"`` -> ``["fc7", "fc8"]``), checked
    against the paper's layer names, and its weights as a `WeightsSource` (a name or file alone is its source).
    The one place a config is rewritten; `check_config` only looks. Idempotent."""
    train_layers = None if cfg.train_layers is None else _layer_list(cfg.train_layers, "train_layers")
    try:
        weights = None if cfg.weights is None else WeightsSource.of(cfg.weights)
    except AlexnetError as e:
        raise TrainError(str(e)) from None
    return dataclasses.replace(
        cfg, train_layers=train_layers, reinit=_layer_list(cfg.reinit, "reinit"), weights=weights
    )


def _check_numbers(cfg: TrainConfig) -> None:
    positive = ("epochs", "batch_size", "plateau_patience", "step_size", "log_every")
    for name in positive:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "plateau_patience" else 1):
            raise TrainError(f"{name}: expected a positive integer, got {v!r}")
    for name in ("warmup_steps", "decay_steps"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise TrainError(f"{name}: expected a non-negative integer, got {v!r}")
    if cfg.warmup_steps and cfg.schedule == "plateau":
        raise TrainError("warmup_steps: only with schedule=step or linear (the plateau rule has no iteration count)")
    if cfg.decay_steps and cfg.schedule != "linear":
        raise TrainError("decay_steps: only with schedule=linear")
    for name in ("lr", "new_layer_lr_mult"):
        v = getattr(cfg, name)
        if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise TrainError(f"{name}: expected a positive number, got {v!r}")
    for name in ("momentum", "weight_decay", "lighting"):
        v = getattr(cfg, name)
        if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise TrainError(f"{name}: expected a number >= 0, got {v!r}")
    if not 0.0 < cfg.lr_factor < 1.0:
        raise TrainError(f"lr_factor: expected a number in (0, 1), got {cfg.lr_factor!r}")
    if not 0.0 <= cfg.val_split < 1.0:
        raise TrainError(f"val_split: expected a fraction in [0, 1), got {cfg.val_split!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise TrainError(f"dropout: expected a probability in [0, 1), got {cfg.dropout!r}")
    if cfg.max_lr_drops < 0:
        raise TrainError("max_lr_drops must be >= 0")
    for name in ("input_size", "resize_size"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or not 1 <= v <= MAX_IMAGE_SIDE):
            raise TrainError(f"{name}: expected an integer from 1 to {MAX_IMAGE_SIDE}, got {v!r}")
    if cfg.input_size and cfg.resize_size and cfg.resize_size < cfg.input_size:
        raise TrainError(f"resize_size {cfg.resize_size} is smaller than input_size {cfg.input_size}")


def _check_layers(cfg: TrainConfig) -> None:
    for what, names in (("train_layers", cfg.train_layers), ("reinit", cfg.reinit)):
        if names is None:
            continue
        if not isinstance(names, list) or any(n not in LAYER_NAMES for n in names):
            raise TrainError(f"{what}: expected a list of layer names ({', '.join(LAYER_NAMES)}), got {names!r}")
    if cfg.train_layers is not None and not cfg.train_layers:
        raise TrainError("train_layers: at least one layer must learn")
    if cfg.cache_features:
        frozen_convs = cfg.train_layers is not None and not set(cfg.train_layers) & set(CONV_LAYERS)
        if not frozen_convs:
            raise TrainError(
                "cache_features needs every conv layer frozen: add --train-layers with fc layers only, e.g. fc6,fc7,fc8"
            )
        if set(cfg.reinit) & set(CONV_LAYERS):
            raise TrainError(
                "cache_features: a re-initialised conv layer would be cached untrained; drop it from reinit"
            )


def check_config(cfg: TrainConfig) -> None:
    """Raise `TrainError` for a value no run can use (one line naming the setting); ``cfg`` is left as it is
    (layer lists are normalised by `normalize_config` first)."""
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise TrainError(f"{name}: {getattr(cfg, name)!r} is not one of {', '.join(choices)}")
    _check_numbers(cfg)
    if cfg.workers is not None:
        try:
            options.check_workers(cfg.workers)
        except AlexnetError as e:
            raise TrainError(str(e)) from None
    if not isinstance(cfg.model_options, dict):
        raise TrainError("model_options: expected an object of AlexNetConfig fields")
    _check_layers(cfg)


# The weights flags that are no TrainConfig keys of their own: they complete ``weights`` (a `WeightsSource`)
_WEIGHTS_FLAGS = {"prototxt": "prototxt", "mean": "mean", "labels": "labels", "trust_pickle": "allow_pickle"}


def read_resumed_config(resume: str | Path) -> dict[str, Any]:
    """The config.json of the run ``resume`` names: read once by the command that resumes it and handed, as a
    value, to both `config_from_sources` (its lowest layer) and `alexnet.train.main` (``resumed_config``: what
    `check_resume` compares with)."""
    if not Path(resume).is_dir():
        raise TrainError(f"{resume}: no such run folder to resume")
    saved_path = rundir.RunDir(resume).config
    if not saved_path.exists():
        raise TrainError(f"{resume}: not a run folder (no config.json)")
    return load_config_file(saved_path)


def config_from_sources(
    flags: Mapping[str, Any],
    *,
    config_file: str | Path | None = None,
    command: str = "train",
    resumed_config: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """The resolved config of a command: defaults < the resumed run's config.json < ``config_file`` < ``flags``
    (only the flags the user gave). The weights flags (``--prototxt``, ``--mean``, ``--labels``,
    ``--trust-pickle``) complete the ``weights`` source, whichever layer named it. ``finetune`` needs weights,
    unless it resumes a run that had them. ``resumed_config``: the resumed run's config.json as the command read
    it (`read_resumed_config`; read here when not given)."""
    layers: list[Mapping[str, Any]] = []
    names: list[str] = []
    flags = dict(flags)
    weights_flags = {_WEIGHTS_FLAGS[k]: flags.pop(k) for k in list(flags) if k in _WEIGHTS_FLAGS}
    resume = flags.get("resume")
    if resume:
        saved = dict(read_resumed_config(resume) if resumed_config is None else resumed_config)
        saved.pop("trust_pickle", None)  # trust is given anew on each command line (a resume loads no weights)
        layers.append(saved)
        names.append(str(rundir.RunDir(resume).config))
    if config_file is not None:
        from_file = load_config_file(config_file)
        if from_file.pop("trust_pickle", False) or _asks_pickle(from_file.get("weights")):
            raise TrainError(
                f"{config_file}: trust_pickle is taken from the command line only (--trust-pickle), never from a "
                "config file; remove it from the file"
            )
        layers.append(from_file)
        names.append(str(config_file))
    # the weights flags complete the source the last layer naming ``weights`` gives; a resume's out is its folder
    named = next((layer["weights"] for layer in reversed([*layers, flags]) if "weights" in layer), None)
    if weights_flags and named is not None:
        try:
            flags["weights"] = dataclasses.replace(WeightsSource.of(named), **weights_flags)
        except AlexnetError as e:
            raise TrainError(str(e)) from None
    elif any(weights_flags.values()):
        raise TrainError("--prototxt, --mean, --labels and --trust-pickle describe --weights: give --weights")
    if resume and "out" not in flags:
        flags["out"] = str(resume)  # the resumed folder as this command names it
    layers.append(flags)
    names.append("flags")
    cfg = resolve_config(*layers, source_names=names)
    if command == "finetune" and cfg.weights is None:
        raise TrainError("finetune needs --weights (torchvision, a .safetensors, .pth, .npy or .caffemodel file)")
    if not cfg.data:
        raise TrainError("no data: give a data folder, list file or prepared set")
    return cfg


def _asks_pickle(weights: Any) -> bool:
    return isinstance(weights, Mapping) and bool(weights.get("allow_pickle"))


def settle_run(cfg: TrainConfig, saved: Mapping[str, Any] | None, state_arch: str | None = None) -> TrainConfig:
    """The run's folder and architecture, settled once before it starts. A resumed run continues in its own
    folder with the architecture its state.pt (``state_arch``) or else its config.json (``saved``) names, unless
    told; a new run from scratch is
    alexnet2012 unless told; a fine-tuning run's None stays: the weights' own, named once they are read. A new
    run's folder (``out`` None: a fresh runs/train-N) is the first process's choice (`alexnet.train.run`)."""
    if cfg.resume:
        arch = cfg.arch or state_arch or (saved or {}).get("arch")
        return dataclasses.replace(cfg, out=str(cfg.resume), arch=arch)
    if cfg.weights is None and cfg.arch is None:
        return dataclasses.replace(cfg, arch="alexnet2012")
    return cfg


def _flag(name: str, value: Any) -> str:
    return f"--{name.replace('_', '-')} {json.dumps(value) if isinstance(value, dict | list) else value}"


def run_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The `RUN_DEFINING_SETTINGS` of ``cfg`` as plain JSON values: what a checkpoint's state.pt records, so that a
    resume is checked against what the run trained with rather than against config.json, which anyone can edit."""
    return {name: _defining(name, getattr(cfg, name)) for name in RUN_DEFINING_SETTINGS}


def _defining(name: str, value: Any) -> Any:
    """One spelling of a run-defining value for comparison (layer lists normalised, tuples as lists)."""
    if name in ("train_layers", "reinit") and value is not None:
        value = _layer_list(value, name)
    if name == "weights" and value is not None:  # as config.json records it (a name, or a Caffe model's files)
        value = WeightsSource.of(value).to_config()
    return json.loads(json.dumps(value))


def check_resume(
    cfg: TrainConfig, saved: Mapping[str, Any], run_dir: str | Path, proved: Mapping[str, Any] | None = None
) -> list[str]:
    """Compare a resumed run's ``cfg`` with what the run trained with: ``proved``, the `run_settings` its state.pt
    records (older states hold none: then its config.json, ``saved``). A `TrainError` listing, in one line, every
    `RUN_DEFINING_SETTINGS` value that differs, naming config.json when that is where the different value was
    written (an edited file is never taken as the truth); else the `RESUMABLE_SETTINGS` that changed, as
    ``"epochs 4 (was 2)"`` for the log. An ``arch`` of None means the run's."""
    defaults = TrainConfig()
    truth = saved if proved is None else proved
    edited, refused = [], []
    for name in RUN_DEFINING_SETTINGS:
        mine = _defining(name, getattr(cfg, name))
        theirs = _defining(name, truth.get(name, getattr(defaults, name)))
        if (name == "arch" and getattr(cfg, name) is None) or mine == theirs:
            continue
        written = _defining(name, saved.get(name, getattr(defaults, name)))
        if proved is not None and written != theirs:
            edited.append(f"{name} {json.dumps(written)} is not the run's {json.dumps(theirs)}")
        else:
            refused.append(f"{_flag(name, mine)} differs from the run's {theirs}")
    if edited:
        raise TrainError(
            f"{rundir.RunDir(run_dir).config}: {'; '.join(edited)} (recorded in its state.pt): config.json was "
            "edited, but these define the run and cannot change when it resumes; put them back (or start a new run "
            "from its weights with another --out)"
        )
    if refused:
        raise TrainError(
            f"{run_dir}: {'; '.join(refused)}: these define the run and cannot change when it resumes; drop them "
            "(or start a new run with another --out)"
        )
    changed = []
    for name in RESUMABLE_SETTINGS:
        mine, theirs = getattr(cfg, name), saved.get(name, getattr(defaults, name))
        if mine != theirs:
            changed.append(f"{name} {mine} (was {theirs})")
    return changed
