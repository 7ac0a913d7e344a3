"""Two-process gloo DDP on CPU (torchrun) against one process with the same global batch (issue 4); the process
group is the command's to start, never `train.main`'s (issue 23)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _builders import HANG_S, TINY, make_folder

from alexnet import train
from alexnet.weights import load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo_equals_one_process(tmp_path):
    data = tmp_path / "data"
    make_folder(data / "train", per_class=8, seed=0)  # 24 images: 3 global batches of 8 = 2 ranks x 4
    make_folder(data / "val", per_class=[3, 2, 2], seed=1)  # 7 images: an uneven split over 2 ranks (4 + 3)
    common = dict(arch="alexnet_owt", input_size=64, model_options=TINY, batch_size=8, epochs=2, workers=0,
                  augment=False, dropout=0.0, lr=0.02, progress="none", tensorboard=False)  # fmt: skip
    train.main(train.resolve_config({**common, "data": str(data), "out": str(tmp_path / "one")}))

    cfg = tmp_path / "ddp.json"
    cfg.write_text(json.dumps(common))
    # torchrun's elastic agent keeps its logs in a torchelastic_* folder under TMPDIR and never removes it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "alexnet", "train", str(data), "--config", str(cfg), "--out", str(tmp_path / "two")]  # fmt: skip
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=HANG_S)
    assert p.returncode == 0, p.stderr[-3000:]

    state = train.load_state(tmp_path / "two")
    assert state["world_size"] == 2 and len(state["rng"]) == 2  # both ranks' RNG states, for an exact resume
    a, _ = load_model(tmp_path / "one" / "last.safetensors")
    b, _ = load_model(tmp_path / "two" / "last.safetensors")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=k)
    one = json.loads((tmp_path / "one" / "eval.json").read_text())
    two = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert one["num_samples"] == two["num_samples"] == 7  # every validation image counted exactly once
    assert sum(map(sum, two["confusion_matrix"])) == 7
    assert two["confusion_matrix"] == one["confusion_matrix"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
    # only rank 0 wrote: one set of files, no per-rank leftovers
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_train_main_joins_a_group_but_never_starts_one(tmp_path, monkeypatch):
    """The command starts the process group (`alexnet train` under torchrun); `train.main` called without one is
    rank 0 of 1 whatever torchrun's variables say (starting one here would wait for a rank 0 that is not there)."""
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    data = make_folder(tmp_path / "data", per_class=4)
    cfg = train.resolve_config(dict(data=str(data), out=str(tmp_path / "run"), arch="alexnet_owt", input_size=64,
                                    model_options=TINY, batch_size=8, epochs=1, workers=0, val_split=0.25,
                                    progress="none", tensorboard=False))  # fmt: skip
    result = train.main(cfg)
    assert result.epochs_done == 1 and not torch.distributed.is_initialized()
    assert train.load_state(tmp_path / "run")["world_size"] == 1
