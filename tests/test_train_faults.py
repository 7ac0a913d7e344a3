"""Issue 14, the run folder's faults (items 1, 2, 3, 16, 18, 19, 20, 21): nothing already written is lost, a
resumed run cannot silently change, weights files and config files cannot lie, signals and full disks end in
one line. Tiny models (64x64 input, a few thousand weights) on a handful of 40x40 images."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _builders import HANG_S, TINY, make_fashion, make_folder, signal_at

import alexnet
from alexnet import rundir, train
from alexnet.cli import main as cli_main
from alexnet.data import fileio
from alexnet.weights import default_preprocessing, load_model, save_model

SRC = Path(alexnet.__file__).resolve().parents[1]  # the code under test, for subprocesses
TINY_FLAGS = [
    "--arch", "alexnet_owt", "--input-size", "64", "--model-option", "conv_channels=[16,32,32,32,32]",
    "--model-option", "fc_features=64", "--workers", "0", "--val-split", "0.25", "--no-tensorboard",
    "--batch-size", "4", "--progress", "none", "--epochs", "1",
]  # fmt: skip


def tiny(data: Path, out: Path | None, **kw) -> train.TrainConfig:
    base = dict(data=str(data), out=None if out is None else str(out), arch="alexnet_owt", input_size=64,
                model_options=dict(TINY), batch_size=4, epochs=1, workers=0, progress="none", tensorboard=False,
                val_split=0.25)  # fmt: skip
    base.update(kw)
    return train.resolve_config(base)


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    rc = cli_main(args)
    out, err = capsys.readouterr()
    return rc, out, err.strip()


def one_line_error(capsys, args: list[str]) -> str:
    rc, _, err = run_cli(capsys, args)
    assert rc == 1, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"), per_class=4)


@pytest.fixture(scope="module")
def done_run(data, tmp_path_factory) -> Path:
    """A complete one-epoch run (copied by the tests that change it)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    train.main(tiny(data, out))
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


# --- 1. a folder that holds a run ---------------------------------------------------------------------------------
def test_out_holding_a_run_is_refused_and_nothing_is_lost(data, done_run, tmp_path, capsys):
    run = copy_run(done_run, tmp_path / "run")
    before = snapshot(run)
    err = one_line_error(capsys, ["train", str(data), "--out", str(run), *TINY_FLAGS, "--epochs", "3"])
    assert f"{run} holds a run, epoch 1 of 1" in err and "--resume" in err and "--overwrite" in err
    assert snapshot(run) == before


def test_overwrite_removes_only_the_run_files(data, done_run, tmp_path, capsys):
    run = copy_run(done_run, tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    (run / ".notes.tmp").write_text("mine too")
    rc, _, err = run_cli(capsys, ["train", str(data), "--out", str(run), *TINY_FLAGS, "--epochs", "2",
                                  "--overwrite"])  # fmt: skip
    assert rc == 0, err
    assert len(rundir.read_metrics(run)) == 2 and train.load_state(run)["epoch"] == 2
    assert (run / "notes.txt").read_text() == "mine" and (run / ".notes.tmp").read_text() == "mine too"
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


def test_default_out_is_a_fresh_folder_per_run(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        rc, _, err = run_cli(capsys, ["train", str(data), *TINY_FLAGS])
        assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["train", "train-2"]
    for name in ("train", "train-2"):
        saved = json.loads((tmp_path / "runs" / name / "config.json").read_text())
        assert saved["out"] == f"runs/{name}"  # config.json tells the folder the run used


def test_stale_temp_cleanup_spares_the_users_files(tmp_path):
    ours = tmp_path / ".last.safetensors.a1b2c3d4.alexnet.tmp"
    ours.mkdir()
    (ours / ".tmpXy12Ab").write_bytes(b"half a safetensors file")  # what safetensors' writer makes beside its target
    mine = [tmp_path / ".notes.tmp", tmp_path / ".x.tmp", tmp_path / "a.alexnet.tmp"]
    for p in mine:
        p.write_text("user")
    rundir.prepare_run_dir(tmp_path)
    assert not ours.exists()
    assert all(p.read_text() == "user" for p in mine)


_KILLED_SAVE = r"""
import sys, time, torch, safetensors.torch as st
from pathlib import Path
from alexnet.data.fileio import atomic_write
def stuck_save(tensors, filename, metadata=None):
    # safetensors' own writer makes .tmpXXXXXX beside the file it was given, then renames it (strace shows it)
    Path(filename).with_name(".tmpAbC123").write_bytes(b"x" * 1000)
    print("WRITING", flush=True)
    time.sleep(60)
atomic_write(Path(sys.argv[1]) / "last.safetensors", lambda tmp: stuck_save({}, tmp))
"""


def test_sigkill_in_a_safetensors_save_leaves_only_our_temporaries(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    p = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert p.stdout.readline().strip() == "WRITING"
    p.kill()
    p.wait(timeout=HANG_S)
    left = [q.name for q in tmp_path.iterdir()]
    assert left and all(fileio.is_temp_name(n) for n in left), left  # .tmpAbC123 is inside our folder
    rundir.prepare_run_dir(tmp_path)
    assert not list(tmp_path.iterdir())


# --- 2. resume with changed settings ------------------------------------------------------------------------------
def test_resume_refuses_settings_that_define_the_run(done_run, tmp_path, capsys):
    run = copy_run(done_run, tmp_path / "run")
    before = snapshot(run)
    err = one_line_error(capsys, ["train", "--resume", str(run), "--epochs", "2", "--lr", "0.1", "--batch-size",
                                  "2", "--seed", "3", "--val-split", "0.5", "--model-option", "lrn=true"])  # fmt: skip
    for part in ("--lr 0.1 differs from the run's 0.01", "--batch-size 2 differs from the run's 4",
                 "--seed 3 differs from the run's 0", "--val-split 0.5 differs from the run's 0.25",
                 "--model-options"):  # fmt: skip
        assert part in err, err
    assert snapshot(run) == before
    err = one_line_error(capsys, ["train", "--resume", str(run), "--out", str(tmp_path / "elsewhere")])
    assert "continues in its own folder" in err and not (tmp_path / "elsewhere").exists()


def test_resume_honours_logs_and_records_what_may_change(data, done_run, tmp_path, capsys):
    run = copy_run(done_run, tmp_path / "run")
    rc, out, err = run_cli(capsys, ["train", "--resume", str(run), "--epochs", "2", "--workers", "1",
                                    "--progress", "log", "--log-every", "7"])  # fmt: skip
    assert rc == 0, err
    assert "epochs 2 (was 1)" in out and "workers 1 (was 0)" in out and "progress log (was none)" in out
    saved = json.loads((run / "config.json").read_text())
    assert (saved["epochs"], saved["workers"], saved["log_every"], saved["out"]) == (2, 1, 7, str(run))
    assert train.load_state(run)["epoch"] == 2


# --- 3. --arch with weights ------------------------------------------------------------------------------------------
def test_finetune_passes_arch_to_load_model(data, tmp_path, monkeypatch):
    """The architecture asked for is the one loaded (a .pth or bvlc .npy does not say caffenet from alexnet2012)."""
    from alexnet.train import setup

    asked = {}
    model = alexnet.create_model("caffenet", num_classes=3, input_size=67, adaptive_pool=True, **TINY)

    def fake_load(source):
        asked["arch"] = source.arch  # a WeightsSource: the one form weights travel in
        return model, default_preprocessing(model.config, ["a", "b", "c"])

    monkeypatch.setattr(setup, "load_model", fake_load)
    cfg = tiny(data, tmp_path / "ft", weights="x.pth", arch="caffenet", model_options={}, input_size=None)
    result = train.main(cfg)
    assert asked["arch"] == "caffenet"
    assert json.loads((result.out / "config.json").read_text())["arch"] == "caffenet"
    assert load_model(result.out / "last.safetensors")[0].config.lrn_before_pool is False


@pytest.mark.slow
def test_finetune_from_pth_builds_the_arch_asked_for(tmp_path):
    """A full-size alexnet2012 .pth with --arch caffenet: the model built is caffenet (pool before LRN)."""
    from alexnet.train import setup
    from alexnet.weights import export_pth

    pth = export_pth(alexnet.create_model("alexnet2012", num_classes=3), tmp_path / "w.pth")
    try:
        cfg = train.resolve_config(dict(data="x", weights=str(pth), arch="caffenet"))
        model, _, _ = setup.build_model(cfg, ["a", "b", "c"])
        assert model.config == alexnet.create_model("caffenet", num_classes=3).config
    finally:
        pth.unlink()


def test_arch_contradicting_the_weights_file_is_refused(data, tmp_path, capsys):
    model = alexnet.create_model("alexnet_owt", num_classes=3, input_size=32, **TINY)
    w = save_model(model, default_preprocessing(model.config, ["a", "b", "c"]), tmp_path / "w.safetensors",
                   arch="alexnet_owt")  # fmt: skip
    flags = [f for f in TINY_FLAGS if f not in ("--arch", "alexnet_owt")]
    err = one_line_error(capsys, ["finetune", str(data), "--weights", str(w), "--arch", "caffenet",
                                  "--out", str(tmp_path / "ft"), *flags])  # fmt: skip
    assert "alexnet_owt" in err and "caffenet" in err and "drop --arch" in err
    assert not (tmp_path / "ft").exists()


# --- 18. trust comes from the command line only ----------------------------------------------------------------
def test_config_file_cannot_enable_unpickling(data, tmp_path, capsys):
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"trust_pickle": True, "weights": str(tmp_path / "w.npy")}))
    err = one_line_error(capsys, ["finetune", str(data), "--config", str(c), "--out", str(tmp_path / "ft")])
    assert "trust_pickle" in err and "--trust-pickle" in err and str(c) in err
    with pytest.raises(train.TrainError, match="command line only"):
        train.config_from_sources({"data": str(data)}, config_file=c, command="finetune")


# --- 19. complete runs, signals -------------------------------------------------------------------------------------
def test_resume_of_a_complete_run_says_so(done_run, capsys):
    before = snapshot(done_run)
    rc, out, err = run_cli(capsys, ["train", "--resume", str(done_run)])
    assert rc == 0, err
    assert f"{done_run} is complete" in out and "--epochs 2" in out
    assert snapshot(done_run) == before


def test_sigterm_mid_epoch_exits_143(data, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(SRC)}
    flags = [f if f != "none" else "log" for f in TINY_FLAGS]
    p = subprocess.Popen([sys.executable, "-m", "alexnet", "train", str(data), "--out", str(tmp_path / "run"), *flags,
                          "--batch-size", "1", "--log-every", "1", "--epochs", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    out, err = signal_at(p, "epoch 1 step 2/", signal.SIGTERM)
    assert p.returncode == 143, err
    assert "interrupted at epoch 1" in out and "Traceback" not in err


def test_signal_after_the_last_epoch_says_complete(data, tmp_path, capsys, monkeypatch):
    from alexnet.train import run as run_mod

    real = run_mod.evaluate

    def evaluate_then_sigint(*a, **k):
        result = real(*a, **k)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the last epoch validates
        return result

    monkeypatch.setattr(run_mod, "evaluate", evaluate_then_sigint)
    rc, out, err = run_cli(capsys, ["train", str(data), "--out", str(tmp_path / "run"), *TINY_FLAGS])
    assert rc == 130, err
    assert "the run is complete" in out and "interrupted" not in out and "--resume" not in out
    assert train.load_state(tmp_path / "run")["epoch"] == 1


# --- 20. skipped images on the console -------------------------------------------------------------------------------
def test_skipped_images_are_named_on_the_console(data, tmp_path, capsys):
    import shutil

    bad = shutil.copytree(data, tmp_path / "data")
    (bad / "class1" / "bad\nname.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rc, out, err = run_cli(capsys, ["train", str(bad), "--out", str(tmp_path / "run"), *TINY_FLAGS,
                                    "--val-split", "0"])  # fmt: skip
    assert rc == 0, err
    line = [ln for ln in out.splitlines() if ln.startswith("skipped 1 unreadable image")]
    assert line and '"' + str(bad / "class1" / "bad\\nname.png") + '"' in line[0] and "skipped.txt" in line[0]
    assert rundir.read_skipped(tmp_path / "run") == [str(bad / "class1" / "bad\nname.png")]  # one entry


# --- 21. a run folder keeps each tensor once; --keep ----------------------------------------------------------
def test_state_refers_to_the_weights_instead_of_repeating_them(done_run, tmp_path):
    raw = torch.load(done_run / "state.pt", weights_only=True)
    assert "model" not in raw and raw["weights"]["file"] == "last.safetensors"
    last = load_model(done_run / "last.safetensors")[0].state_dict()
    resumed = train.load_state(done_run)["model"]
    assert all(torch.equal(last[k], resumed[k]) for k in last)
    # best is the last epoch here: one file on disk, two names
    assert (done_run / "best.safetensors").stat().st_ino == (done_run / "last.safetensors").stat().st_ino


def test_a_mismatched_pair_is_refused(data, done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "run")
    other = train.main(tiny(data, tmp_path / "other", seed=5)).out
    (run / "last.safetensors").unlink()
    (run / "last.safetensors").write_bytes((other / "last.safetensors").read_bytes())
    with pytest.raises(train.TrainError, match="does not match .*last.safetensors"):
        train.load_state(run)


def test_previous_weights_complete_a_pair_cut_between_its_writes(data, done_run, tmp_path):
    """Killed after last.safetensors but before state.pt: the kept previous weights pair with state.pt."""
    run = copy_run(done_run, tmp_path / "run")
    os.replace(run / "last.safetensors", run / rundir.PREVIOUS_LAST)
    other = train.main(tiny(data, tmp_path / "other", seed=5)).out
    (run / "last.safetensors").write_bytes((other / "last.safetensors").read_bytes())
    state = train.load_state(run)
    assert state["epoch"] == 1 and not (run / rundir.PREVIOUS_LAST).exists()
    result = train.main(tiny(data, run, epochs=2, resume=str(run)))
    assert result.epochs_done == 2


@pytest.mark.parametrize(
    ("keep", "files"), [("last", {"state.pt", "last.safetensors"}), ("best", {"best.safetensors"})]
)
def test_keep_fewer_files(data, tmp_path, keep, files, capsys):
    run = train.main(tiny(data, tmp_path / "run", keep=keep, epochs=2)).out
    assert {p.name for p in run.iterdir() if p.name in rundir.RUN_FILES and p.suffix != ".json"} - {
        "metrics.csv",
        "skipped.txt",
    } == files
    if keep == "best":
        err = one_line_error(capsys, ["train", "--resume", str(run), "--epochs", "3"])
        assert "kept only best.safetensors" in err and "finetune --weights" in err


# --- 16. a full disk ------------------------------------------------------------------------------------------------
def _no_space(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_write_names_the_file_on_a_full_disk(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(fileio.DiskFullError, match=f"no space left on the device while writing {target}; the "
                       "previous x.bin is intact"):  # fmt: skip
        fileio.atomic_write(target, _no_space)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("writer", ["state.pt", "last.safetensors"])
def test_full_disk_during_a_checkpoint_keeps_the_previous(data, done_run, tmp_path, capsys, monkeypatch, writer):
    from alexnet.train import checkpoint

    run = copy_run(done_run, tmp_path / "run")
    if writer == "state.pt":
        monkeypatch.setattr(checkpoint.torch, "save", _no_space)
    else:
        import safetensors.torch

        def rust_full(*a, **k):  # safetensors reports the OS error in its own type
            raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, kind: "
                                              "StorageFull, message: \"No space left on device\" })")  # fmt: skip

        monkeypatch.setattr(safetensors.torch, "save_file", rust_full)
    err = one_line_error(capsys, ["train", "--resume", str(run), "--epochs", "2"])
    assert err.endswith(f"no space left on the device while writing {run / writer}; the previous checkpoint is intact")
    monkeypatch.undo()
    assert train.load_state(run)["epoch"] == 1
    assert train.main(tiny(data, run, epochs=2, resume=str(run))).epochs_done == 2


def test_demo_rerun_replaces_its_own_run_only(done_run, tmp_path, monkeypatch):
    """`make demo` twice reruns the demo in runs/demo; a demo pointed at a training run refuses to touch it."""
    from alexnet import demo

    fashion = make_fashion(tmp_path / "fm", n_train=40, n_test=10)
    calls = []

    def stop_here(*a, overwrite=False, **k):
        calls.append(overwrite)
        raise train.TrainError("stop")

    monkeypatch.setattr(train, "main", stop_here)
    monkeypatch.setattr(demo, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    run = copy_run(done_run, tmp_path / "run")
    for marker in (False, True):
        if marker:
            (run / "test_eval.json").write_text("{}")
        cfg = demo.DemoConfig(out=str(run), data_dir=str(fashion), train_samples=20, val_samples=10,
                              test_samples=10, download=False)  # fmt: skip
        with pytest.raises(train.TrainError, match="stop"):
            demo.run_demo(cfg, log=lambda *a: None)
    assert calls == [False, True]
