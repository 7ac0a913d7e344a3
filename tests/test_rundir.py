"""`alexnet.rundir`: the run folder's files read back as they were written; train's config checks."""

from __future__ import annotations

import dataclasses
import math

import pytest

from alexnet import options, rundir, train


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
