"""`alexnet.rundir`: the run folder's files read back as they were written; train's config checks."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _builders import TINY, make_folder

import alexnet
from alexnet import options, rundir, train
from alexnet.cli import main as cli_main
from alexnet.train.config import RUN_DEFINING_SETTINGS, run_settings


def test_skipped_names_stay_one_entry_each(tmp_path):
    names = [
        "plain/a.jpg",
        "two\nlines.jpg",
        "carriage\rreturn.png",
        "line\u2028separator.jpg",
        '"quoted".jpg',
        " padded.jpg ",
        "",
        "ünïcode/ß.jpg",
    ]
    rundir.write_skipped(tmp_path, names)
    text = (tmp_path / "skipped.txt").read_text(encoding="utf-8")
    assert len(text.split("\n")) == len(names) + 1  # one line per name, then the final newline
    assert text.startswith("plain/a.jpg\n")  # an ordinary name is written as it is
    assert rundir.read_skipped(tmp_path) == names


def test_skipped_missing_and_empty(tmp_path):
    assert rundir.read_skipped(tmp_path) == []
    rundir.write_skipped(tmp_path, [])
    assert (tmp_path / "skipped.txt").read_text() == "" and rundir.read_skipped(tmp_path) == []


def test_metrics_read_back_exactly(tmp_path):
    rows = [
        {"epoch": e, "lr": 0.01 / 3, "train_loss": 1 / 7, "train_top1_accuracy": 0.333, "val_loss": math.nan,
         "val_top1_accuracy": math.nan, "val_top5_accuracy": math.nan, "images_per_s": 1e3 / 3, "seconds": 2.5 * e}
        for e in (1, 2)
    ]  # fmt: skip
    rundir.write_metrics(tmp_path, rows)
    back = rundir.read_metrics(tmp_path)
    assert [r["epoch"] for r in back] == [1, 2] and all(isinstance(r["epoch"], int) for r in back)
    for a, b in zip(rows, back):
        assert list(b) == list(rundir.METRICS_COLUMNS)
        for k in rundir.METRICS_COLUMNS:
            assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k]


def test_metrics_missing_columns_are_nan_and_errors_are_one_line(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,lr\n1,0.1\n")
    (row,) = rundir.read_metrics(tmp_path)
    assert row["lr"] == 0.1 and math.isnan(row["val_top1_accuracy"])
    with pytest.raises(rundir.RunDirError, match="no such file"):
        rundir.read_metrics(tmp_path / "nope.csv")
    (tmp_path / "metrics.csv").write_text(",".join(rundir.METRICS_COLUMNS) + "\n")
    assert rundir.read_metrics(tmp_path) == []  # no epoch finished yet


def test_check_config_looks_and_normalise_rewrites():
    cfg = train.TrainConfig(train_layers="fc7, fc8", reinit="fc8")
    with pytest.raises(train.TrainError, match="train_layers: expected a list"):
        train.check_config(cfg)
    assert cfg.train_layers == "fc7, fc8"  # the check left it as it was
    fixed = train.normalize_config(cfg)
    assert fixed.train_layers == ["fc7", "fc8"] and fixed.reinit == ["fc8"] and cfg.reinit == "fc8"
    train.check_config(fixed)


def test_workers_default_and_limit():
    assert train.TrainConfig().workers is None  # options.default_workers() when the run starts
    train.check_config(train.TrainConfig(workers=options.max_workers()))
    too_many = dataclasses.replace(train.TrainConfig(), workers=options.max_workers() + 1)
    with pytest.raises(train.TrainError, match="workers: .* more than this machine") as e:
        train.check_config(too_many)
    assert "\n" not in str(e.value)
    with pytest.raises(train.TrainError, match="workers"):
        train.check_config(train.TrainConfig(workers=-1))


# --- the lock: one process owns a run folder (issue 24, item 1) ---------------------------------------------------
SRC = Path(alexnet.__file__).resolve().parents[1]  # the code under test, for subprocesses
_HOLD = r"""
import sys, time
from alexnet import rundir
with rundir.lock_run(sys.argv[1]):
    print("LOCKED", flush=True)
    time.sleep(600)
"""
TINY_FLAGS = [
    "--arch", "alexnet_owt", "--input-size", "64", "--model-option", "conv_channels=[16,32,32,32,32]",
    "--model-option", "fc_features=64", "--workers", "0", "--val-split", "0.25", "--no-tensorboard",
    "--batch-size", "4", "--progress", "none", "--epochs", "1",
]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


@contextlib.contextmanager
def held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """A second process that owns ``folder`` until the block ends (then it is SIGKILLed)."""
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout.readline().strip() == "LOCKED"
        yield p
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def busy(folder: Path, pid: int) -> str:
    return (
        f"{folder}: in use by process {pid}, which is writing this run folder; wait for it to end (or stop it), "
        "or choose another --out"
    )


def test_a_second_process_is_refused_naming_the_owner_and_a_sigkilled_owner_leaves_no_lock(tmp_path):
    run = tmp_path / "run"
    with held_by_another_process(run) as owner:
        assert (run / rundir.LOCK).read_text().split() == [str(owner.pid)]
        with pytest.raises(rundir.RunFolderBusy) as e, rundir.lock_run(run):
            pass
        assert str(e.value) == busy(run, owner.pid) and e.value.pid == owner.pid
    # the owner was SIGKILLed: the kernel let go of its lock, the stale file names a dead process
    assert (run / rundir.LOCK).read_text().split() == [str(owner.pid)]
    with rundir.lock_run(run):
        assert (run / rundir.LOCK).read_text().split() == [str(os.getpid())]
    assert not list(run.iterdir())  # released: the lock file is gone
    fresh = tmp_path / "new" / "run"
    with rundir.lock_run(fresh):
        assert fresh.is_dir()
    assert not (tmp_path / "new").exists()  # the lock made both folders and nothing was written: nothing is left


def test_the_lock_is_reentrant_and_kept_out_of_the_run_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with rundir.lock_run(run):
        with rundir.lock_run(run):  # the demo around train.main: the same process owns it once
            pass
        assert (run / rundir.LOCK).exists()  # still held after the inner block
        (run / "config.json").write_text("{}")
        rundir.clear_run(run)  # --overwrite removes the run's files, not the owner's lock
        assert [p.name for p in run.iterdir()] == [rundir.LOCK]
        assert rundir.describe_run(run) is None  # a lock alone is no run
    assert run.is_dir() and not list(run.iterdir())  # the user's folder stays; the lock file goes
    (tmp_path / "file").write_text("x")
    with pytest.raises(rundir.RunDirError, match="is a file, not a run folder"), rundir.lock_run(tmp_path / "file"):
        pass


def test_a_fresh_default_folder_skips_one_owned_by_another_process(tmp_path):
    with held_by_another_process(tmp_path / "train"), rundir.lock_fresh_run_dir(tmp_path / "train") as got:
        assert got == tmp_path / "train-2"


_RACER = r"""
import os, sys, time
from pathlib import Path
from alexnet.cli import main
go = Path(sys.argv[1])
print(os.getpid(), flush=True)
while not go.exists():
    time.sleep(0.005)
sys.exit(main(sys.argv[2:]))
"""


def test_two_trainings_started_together_on_one_out(tmp_path):
    """Both used to exit 0 with one's results gone: now one trains, the other is refused naming it."""
    data, run, go = make_folder(tmp_path / "data", per_class=4), tmp_path / "dup", tmp_path / "go"
    args = ["train", str(data), "--out", str(run), *TINY_FLAGS, "--epochs", "2"]
    racers = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(go), *args, "--seed", str(seed)], env=_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for seed in (1, 2)
    ]  # fmt: skip
    pids = [int(p.stdout.readline()) for p in racers]
    go.touch()
    results = [(p.wait(), p.stderr.read().strip()) for p in racers]
    for p in racers:
        p.stdout.close()
        p.stderr.close()
    winner = [i for i, (rc, _) in enumerate(results) if rc == 0]
    assert len(winner) == 1, results
    w = winner[0]
    assert results[1 - w] == (1, f"alexnet train: error: {busy(run, pids[w])}")
    saved = json.loads((run / "config.json").read_text())
    assert saved["seed"] == (1, 2)[w] and train.load_state(run)["epoch"] == 2  # the winner's run, whole
    assert not (run / rundir.LOCK).exists()


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lock")
    data = make_folder(root / "data", per_class=4)
    out = root / "run"
    cfg = train.resolve_config(dict(data=str(data), out=str(out), arch="alexnet_owt", input_size=64,
                                    model_options=dict(TINY), batch_size=4, epochs=1, workers=0, progress="none",
                                    tensorboard=False, val_split=0.25))  # fmt: skip
    train.main(cfg)
    return out


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file() and p.name != rundir.LOCK}


@pytest.mark.parametrize("how", ["overwrite", "resume"])
def test_overwrite_or_resume_of_a_running_run_is_refused(done_run, tmp_path, capsys, how):
    run = tmp_path / "run"
    shutil.copytree(done_run, run)
    before = _snapshot(run)
    args = {
        "overwrite": ["train", str(done_run.parent / "data"), "--out", str(run), *TINY_FLAGS, "--overwrite"],
        "resume": ["train", "--resume", str(run), "--epochs", "2", "--progress", "none"],
    }[how]
    with held_by_another_process(run) as owner:
        assert cli_main(args) == 1
        assert capsys.readouterr().err.strip() == f"alexnet train: error: {busy(run, owner.pid)}"
    assert _snapshot(run) == before


def test_demo_and_ablate_own_their_folders(tmp_path):
    from alexnet import ablate, demo

    out = tmp_path / "out"
    with held_by_another_process(out) as owner:
        with pytest.raises(rundir.RunFolderBusy, match=f"process {owner.pid},"):
            demo.run_demo(demo.DemoConfig(out=str(out), data_dir=str(tmp_path / "none"), download=False))
        with pytest.raises(rundir.RunFolderBusy, match=f"process {owner.pid},"):
            ablate.run_ablation(ablate.AblationConfig(data=str(tmp_path / "none"), out=str(out)))
        assert [p.name for p in out.iterdir()] == [rundir.LOCK]


# --- resume is checked against what state.pt records, not an editable config.json (issue 24, item 3) ----------------
@pytest.mark.parametrize(
    "field, edited, true",
    [("lr", 0.05, 0.01), ("model_options", {**TINY, "conv_channels": [8, 16, 16, 16, 16]}, TINY)],
)
def test_resume_refuses_an_edited_config_json(done_run, tmp_path, capsys, field, edited, true):
    run = tmp_path / "run"
    shutil.copytree(done_run, run)
    saved = json.loads((run / "config.json").read_text())
    assert saved[field] == true
    (run / "config.json").write_text(json.dumps({**saved, field: edited}, indent=2))
    before = _snapshot(run)
    assert cli_main(["train", "--resume", str(run), "--epochs", "2"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"alexnet train: error: {run / 'config.json'}: {field} {json.dumps(edited)} is not the run's "
        f"{json.dumps(true)} (recorded in its state.pt): config.json was edited, but these define the run and "
        "cannot change when it resumes; put them back (or start a new run from its weights with another --out)"
    )
    assert _snapshot(run) == before  # nothing trained, the edited value not written back as the truth
    # the library path reads the same state: a config built from the edited file is refused too
    cfg = train.resolve_config({**saved, field: edited, "resume": str(run), "epochs": 2})
    with pytest.raises(train.TrainError, match=f"{field} .* is not the run's"):
        train.main(cfg)
    # put back, the run resumes; the state goes on recording the settings it trained with
    (run / "config.json").write_text(json.dumps(saved, indent=2))
    assert train.main(dataclasses.replace(cfg, **{field: true})).epochs_done == 2
    assert train.load_state(run)["settings"] == run_settings(dataclasses.replace(cfg, **{field: true}))


def test_state_records_the_settings_that_define_the_run(done_run):
    settings = torch.load(done_run / "state.pt", weights_only=True)["settings"]
    assert list(settings) == list(RUN_DEFINING_SETTINGS)
    assert (settings["lr"], settings["model_options"], settings["arch"]) == (0.01, TINY, "alexnet_owt")


# --- one home for the run folder's file names (issue 23, item 2) ---------------------------------------------------
def _spelled_out_run_files() -> list[str]:
    """Every string literal in src/ (outside rundir.py) that names a run folder's file: the name alone or a path
    ending in it. ``tensorboard`` is also a setting's name, so it counts only as a path (``run / "tensorboard"``)."""
    names = [n for n in rundir.RUN_FOLDER_NAMES if n != rundir.TENSORBOARD]
    pattern = re.compile(r"^(?:.*/)?(?:" + "|".join(map(re.escape, names)) + r")$")
    found = []
    for path in sorted((SRC / "alexnet").rglob("*.py")):
        if path.name == "rundir.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            joined = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
            for c in [node.right] if joined else [node]:
                if not (isinstance(c, ast.Constant) and isinstance(c.value, str)):
                    continue
                if pattern.match(c.value) or (joined and c.value.strip("/") == rundir.TENSORBOARD):
                    found.append(f"{path.relative_to(SRC)}:{c.lineno}: {c.value!r}")
    return sorted(set(found))


def test_run_folder_file_names_are_spelled_out_in_rundir_only():
    assert _spelled_out_run_files() == []


def test_the_run_folder_object_names_every_file(tmp_path):
    run = rundir.RunDir(tmp_path)
    paths = [run.config, run.metrics, run.skipped, run.eval, run.test_eval, run.report, run.stats, run.diagnostics,
             run.state, run.last, run.best, run.previous_last, run.lock_file, run.tensorboard]  # fmt: skip
    assert sorted(p.name for p in paths) == sorted(rundir.RUN_FOLDER_NAMES)
    assert all(p.parent == tmp_path for p in paths) and os.fspath(run) == str(tmp_path)
    assert run.weights() is None and not run.is_resumable() and run.describe() is None
    run.last.write_bytes(b"w")
    assert run.weights() == run.last
    run.best.write_bytes(b"w")
    assert run.weights() == run.best
    run.write_config({"epochs": 3})
    assert run.read_config() == {"epochs": 3} and run.describe() == "epoch 0 of 3"
    run.write_test_eval({"num_samples": 2}, "best.safetensors")
    doc = {"schema": "alexnet.evaluate/1", "num_samples": 2, "weights": "best.safetensors"}  # docs/JSON.md
    assert json.loads(run.test_eval.read_text()) == json.loads(run.eval.read_text()) == doc
    run.config.write_text("[1]")
    with pytest.raises(rundir.RunDirError) as e:
        run.read_config()
    assert str(e.value) == f"{run.config}: not an object of settings"
