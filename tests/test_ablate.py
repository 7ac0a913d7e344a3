"""`alexnet ablate` on tiny data: every variant changes one switch, reruns skip and resume, the interval arithmetic."""

import json
import math
import os
import signal
from pathlib import Path

import pytest
from _builders import make_folder

from alexnet import ablate, ablate_data, ablate_report, ablate_stats, train
from alexnet.data.datasets import Subset

TINY_NET = {"conv_channels": [8, 16, 16, 16, 16], "fc_features": 32}


def tiny(data: Path, out: Path, **kw) -> ablate.AblationConfig:
    opts = {"seeds": 1, "epochs": 2, "train_samples": 0, "val_samples": 3, "test_samples": 6, "batch_size": 4}
    opts.update(kw)
    return ablate.AblationConfig(data=str(data), out=str(out), model_options=dict(TINY_NET), progress="none", **opts)


def _flat(tc) -> dict:
    d = tc.to_dict()
    opts = d.pop("model_options")
    return {**d, **{f"model.{k}": v for k, v in opts.items()}}


def test_each_variant_differs_from_full_only_in_its_switch(tmp_path):
    cfg = ablate.AblationConfig(data="d", out=str(tmp_path))
    settings = ablate.resolve_settings(cfg)
    full = _flat(ablate.variant_train_config(cfg, settings, "full", 1, train_size=6000, stats="s.json"))
    assert full["model.adaptive_pool"] is True and full["seed"] == 1 and full["lighting"] == 0.1
    for name, v in ablate.VARIANTS.items():
        mine = _flat(ablate.variant_train_config(cfg, settings, name, 1, train_size=6000, stats="s.json"))
        changed = {k for k in set(full) | set(mine) if full.get(k) != mine.get(k)} - {"out"}
        expected = {f"model.{k}" for k in v.model} | set(v.train)
        expected |= {"model.conv_channels"} if v.halve_convs else set()
        assert changed == expected, name
        assert mine["out"] == str(tmp_path / name / "seed-1")
    half = _flat(ablate.variant_train_config(cfg, settings, "one-gpu-half", 0, train_size=6000, stats=None))
    assert half["model.conv_channels"] == [48, 128, 192, 192, 256]  # conv5 kept: the paper's footnote 2
    assert half["model.groups"] == 1


def test_unknown_variant_is_one_line_listing_the_valid_ones(capsys):
    with pytest.raises(ablate.AblationError) as e:
        ablate.parse_variants("full,no-lrn,no-such")
    msg = str(e.value)
    assert "\n" not in msg and "no-such" in msg
    assert all(name in msg for name in ablate.VARIANTS)
    assert ablate.parse_variants("no-lrn") == ["full", "no-lrn"]  # full is the reference: always run
    from alexnet.cli import main

    assert main(["ablate", "data", "--variants", "tanh,bogus"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid variants: full, no-lrn" in err


def test_too_few_images_says_the_minimum(tmp_path):
    data = make_folder(tmp_path / "data", per_class=2, size=20)
    with pytest.raises(ablate.AblationError) as e:
        ablate.run_ablation(tiny(data, tmp_path / "abl", val_samples=500), log=lambda s: None)
    assert str(e.value) == (
        f"{data}: 6 training images, but 500 validation + 6 test (held out: the data has no test split) + 1 to "
        "train on need at least 507; lower --train-samples/--val-samples/--test-samples or use more images"
    )
    assert not (tmp_path / "abl").exists()


def test_counts_become_shares_of_a_small_folder():
    fit, Counts = ablate_data.fit_counts, ablate_data.Counts
    unset = Counts(-1, -1, -1)
    cpu, long = ablate.SCALES["cpu-small"], ablate.SCALES["cpu"]
    # Fashion-MNIST: 60,000 training images and a test split of 10,000: the scale's counts as they are
    assert fit(cpu, unset, pool=60000, test_split=10000) == Counts(6000, 500, 1000)
    assert fit(long, unset, pool=60000, test_split=10000) == Counts(0, 1000, 10000)  # all, all test images
    # a folder of 300 (no test split): 20% held out to test, 10% to validate, the rest to train
    assert fit(cpu, unset, pool=300, test_split=None) == Counts(210, 30, 60)
    assert fit(cpu, unset, pool=80, test_split=None) == Counts(56, 8, 16)
    # counts the user gives are taken as they are
    assert fit(cpu, Counts(20, 5, 10), pool=80, test_split=None) == Counts(20, 5, 10)
    assert fit(cpu, Counts(-1, -1, 0), pool=60000, test_split=10000) == Counts(6000, 500, 10000)
    with pytest.raises(ablate.AblationError) as e:
        fit(cpu, Counts(100, -1, -1), pool=80, test_split=None, data="mine")
    assert str(e.value) == (
        "mine: 80 training images, but 8 validation + 16 test (held out: the data has no test split) + 100 to "
        "train on need at least 124; lower --train-samples/--val-samples/--test-samples or use more images"
    )


def test_interval_arithmetic():
    iv = ablate_report.t_interval([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)  # sd 1, t(0.975, 2)
    assert iv["mean"] == pytest.approx(2.0) and iv["sd"] == pytest.approx(1.0)
    assert (iv["low"], iv["high"]) == pytest.approx((2.0 - half, 2.0 + half))
    one = ablate_report.t_interval([0.7])
    assert one["mean"] == 0.7 and one["low"] is None and one["high"] is None
    assert ablate_report.verdict(one, 1) == "interval cannot be computed (1 seed)"
    assert ablate_report.t_quantile(1) == 12.706 and ablate_report.t_quantile(60) == pytest.approx(2.0003, abs=2e-3)
    assert ablate_report.verdict({"n": 3, "low": 0.1, "high": 2.0}, 1) == "agrees"
    assert ablate_report.verdict({"n": 3, "low": -2.0, "high": -0.1}, 1) == "disagrees"
    assert ablate_report.verdict({"n": 3, "low": -0.5, "high": 1.0}, 1) == "cannot tell"
    assert ablate_report.verdict({"n": 3, "low": -2.0, "high": -0.1}, -1) == "agrees"


class _StopAt(Subset):
    """A training view that sends this process SIGINT when its ``at``-th image is read, as Ctrl-C would."""

    def __init__(self, base, indices, at: int) -> None:
        super().__init__(base, indices)
        self.at, self.reads = at, 0

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(i)


def test_rerun_skips_finished_and_resumes_stopped(tmp_path):
    data = make_folder(tmp_path / "data", size=20)
    out = tmp_path / "abl"
    first = ablate.run_ablation(tiny(data, out, variants=["full"]), log=lambda s: None)
    record = out / "full" / "seed-0" / ablate.RUN_RECORD
    assert record.is_file() and not (out / "full" / "seed-0" / "state.pt").exists()  # pruned once evaluated
    r = first.runs[0]
    assert 0.0 <= r["centre"]["top1_error"] <= 1.0 and 0.0 <= r["ten_crop"]["top1_error"] <= 1.0
    assert [p["epoch"] for p in r["curve"]] == [1, 2] and r["test_samples"] == 6

    # no-lrn stopped in its first epoch, as a Ctrl-C would stop it
    cfg = tiny(data, out, variants=["full", "no-lrn"])
    settings = ablate.resolve_settings(cfg)
    splits = ablate.load_splits(cfg, settings)
    plans = ablate.plan_runs(cfg, settings, train_size=len(splits.train), stats=str(out / "stats.json"))
    plan = next(p for p in plans if p.variant == "no-lrn")
    stopping = _StopAt(splits.train.base, splits.train.indices, at=6)
    stopped = train.main(plan.train_config, train_dataset=stopping, val_dataset=splits.val)
    assert stopped.interrupted and (plan.folder / "state.pt").is_file()
    assert not (plan.folder / ablate.RUN_RECORD).exists()

    mtime = record.stat().st_mtime_ns
    lines: list[str] = []
    again = ablate.run_ablation(cfg, log=lines.append)
    assert any("full seed 0: skip" in s for s in lines)
    assert any("no-lrn seed 0: resume" in s for s in lines)
    assert record.stat().st_mtime_ns == mtime
    resumed = next(r for r in again.runs if r["variant"] == "no-lrn")
    assert [p["epoch"] for p in resumed["curve"]] == [1, 2]

    doc = json.loads((out / "ablation.json").read_text())
    assert doc["meta"]["seeds"] == [0] and {r["variant"] for r in doc["runs"]} == {"full", "no-lrn"}
    row = next(r for r in doc["summary"] if r["variant"] == "no-lrn")
    assert row["verdict"] == "interval cannot be computed (1 seed)"
    assert (out / "differences.png").is_file() and "no-lrn" in (out / "ablation.md").read_text()
    page = (out / "report.html").read_text()  # the HTML report's ablation section, pictures inlined
    assert "no-lrn" in page and "data:image/png;base64," in page
    assert '<section id="ablation">' in ablate_report.html_section(out)

    # --report-only trains nothing: the tables say how many runs are finished
    lines.clear()
    partial = ablate.run_ablation(tiny(data, out, variants=["no-lrn", "no-pca"], report_only=True), log=lines.append)
    assert any("no-pca seed 0: not finished" in s for s in lines) and not (out / "no-pca").exists()
    assert len(partial.runs) == 2 and "Runs finished: 2 of 3." in (out / "ablation.md").read_text()

    # a rerun with other settings never mixes its runs into these
    with pytest.raises(ablate.AblationError, match="other settings"):
        ablate.run_ablation(tiny(data, out, variants=["full"], epochs=3), log=lambda s: None)
    with pytest.raises(ablate.AblationError) as e:  # nor one on other images
        ablate.run_ablation(tiny(data, out, variants=["full"], test_samples=3), log=lambda s: None)
    assert str(e.value) == (
        f"{out}: made with another split (train 15, now 18); use the same --train-samples/--val-samples/"
        "--test-samples, another --out, or delete that folder"
    )


def test_tanh_curves_and_figure1(tmp_path):
    data = make_folder(tmp_path / "data", size=20)
    out = tmp_path / "abl"
    res = ablate.run_ablation(tiny(data, out, variants=["tanh"], threshold=0.9), log=lambda s: None)
    assert {r["variant"] for r in res.runs} == {"full", "tanh"}
    assert (out / "relu_tanh.png").is_file()
    fig = json.loads((out / "ablation.json").read_text())["figure1"]
    assert fig["threshold"] == 0.9 and fig["pairs"][0]["seed"] == 0
    tanh_cfg = json.loads((out / "tanh" / "seed-0" / "config.json").read_text())
    assert tanh_cfg["model_options"]["activation"] == "tanh"


def test_a_folder_of_80_images_runs_a_tiny_study_and_the_report_says_what_it_did(tmp_path):
    """The user's own folder, the command line, nothing but the scale's defaults: the counts become shares."""
    from alexnet.cli import main

    data = make_folder(tmp_path / "data", classes=4, per_class=20, size=20)
    out = tmp_path / "abl"
    argv = ["ablate", str(data), "--out", str(out), "--variants", "full,no-lrn", "--seeds", "1", "--epochs", "1"]
    assert main([*argv, "--progress", "none"]) == 0
    doc = json.loads((out / "ablation.json").read_text())
    meta = doc["meta"]
    assert (meta["train_samples"], meta["val_samples"], meta["test_samples"]) == (56, 8, 16)
    assert (meta["epochs"], meta["seeds"], meta["num_classes"], meta["input_size"]) == (1, [0], 4, 67)
    assert all(r["test_samples"] == 16 and len(r["curve"]) == 1 for r in doc["runs"])
    assert all(r["images_per_epoch"] == 56 and r["steps"][-1]["images"] == 56 for r in doc["runs"])
    # the CPU scale tests ten patches on full's runs only (the ten-crop row); the others get the centre crop
    assert {r["variant"]: r["ten_crop"] is not None for r in doc["runs"]} == {"full": True, "no-lrn": False}
    tc = doc["runs"][0]["train_config"]
    assert (tc["batch_size"], tc["lr"], tc["warmup_steps"], tc["stats"]) == (256, 0.02, 1, str(out / "stats.json"))
    md = (out / "ablation.md").read_text()
    assert md.startswith(
        "Seeds [0]; scale `cpu`: 56 training images, 8 validation, 16 test images (held out of the training data), "
        "1 epoch, 67x67, 4 classes."
    )
    row = next(ln for ln in md.splitlines() if ln.startswith("| no-lrn | lrn=False |"))
    assert "(1 seed: no interval)" in row and "| uninformative (4 classes) |" in row
    assert "What this run cannot show: 1 epoch on 56 training images at 67x67 are far from convergence" in md
    assert "one test image is 6.2 points, and the standard error of a 20% error rate on 16 test images is 10.0" in md
    assert "with 1 seed there is no interval over seeds" in md and "6,000" not in md and "1 epochs" not in md
    assert "top-5 error says nothing with 4 classes" in md


def test_mcnemar_exact_known_answers():
    p = ablate_stats.mcnemar_exact
    assert p(0, 0) == 1.0 and p(5, 5) == 1.0
    assert p(10, 0) == p(0, 10) == 2 / 1024  # all ten discordant images one way
    assert p(1, 9) == pytest.approx(22 / 1024)  # 2 (1 + 10) / 2^10
    assert p(5, 15) == pytest.approx(2 * 21700 / 2**20)  # 2 * sum C(20, 0..5) / 2^20
    # n = 10,000, exact with integers; the normal approximation with continuity correction: z = 199.5 / 50 = 3.99,
    # two-sided 6.61e-5
    assert p(4800, 5200) == pytest.approx(6.61e-5, rel=0.01)
    with pytest.raises(ValueError):
        p(-1, 3)
    bits = [True, False, True, True, False, False, True]
    assert ablate_stats.unpack_bits(ablate_stats.pack_bits(bits), 7) == bits
    assert ablate_stats.discordant([True, True, False, False], [True, False, True, False]) == (1, 1)


def test_paired_interval_known_answers():
    iv = ablate_stats.paired_interval
    # 20 images only the reference gets right, none the other way, of 200: +10 points, se sqrt(20 - 2) / 200
    half = 1.959964 * math.sqrt(18) / 200 * 100
    assert tuple(iv(20, 0, 200).values()) == pytest.approx((10.0, 10.0 - half, 10.0 + half))
    # balanced discordance: no difference, and an interval around zero that narrows with more images
    a, b = iv(50, 50, 10_000), iv(50, 50, 20_000)
    assert a["mean"] == 0.0 and a["low"] == -a["high"] and b["high"] < a["high"]
    assert iv(0, 0, 100) == {"mean": 0.0, "low": 0.0, "high": 0.0}  # identical answers: nothing to tell apart
    with pytest.raises(ValueError):
        iv(60, 50, 100)


def test_interval_is_clipped_to_the_range_of_a_difference():
    iv = ablate_report.t_interval([-10.0, 40.0])  # mean 15, half-width 12.706 * 35.36 / sqrt(2) = 317.7
    assert (iv["low"], iv["high"], iv["clipped"]) == (-100.0, 100.0, True)
    ok = ablate_report.t_interval([1.0, 2.0, 3.0])
    assert not ok["clipped"] and ok["high"] == pytest.approx(2.0 + 4.303 / math.sqrt(3))


def test_divergence_and_step_curve_on_synthetic_curves():
    reason = ablate_stats.diverged_reason
    ep = lambda e, err, loss=1.0: {"epoch": e, "train_error": err, "train_loss": loss}  # noqa: E731
    assert reason([ep(1, 0.5), ep(2, math.nan, math.nan)], 10) == "training loss not finite at epoch 2"
    assert reason([ep(1, 0.9), ep(2, 0.87)], 10) == (
        "training error 87.0% at epoch 2, near chance (90.0%) after the first epoch"
    )
    assert reason([ep(1, 0.9)], 10) is None  # one epoch: too early to call
    assert reason([ep(1, 0.9), ep(2, 0.6)], 10) is None
    # the chance rule needs an epoch of enough images to tell chance from learning; a non-finite loss does not
    assert reason([ep(1, 0.9), ep(2, 0.87)], 10, samples=199) is None
    assert reason([ep(1, 0.9), ep(2, 0.87)], 10, samples=200) is not None
    assert reason([ep(1, 0.5), ep(2, math.nan, math.nan)], 10, samples=15) == "training loss not finite at epoch 2"
    # 4 steps of 10 images per epoch; correct so far 2, 5, 9, 14 then 8, 17, 26, 35
    trace = [(1, 10 * i, c, 2.0 * 10 * i) for i, c in enumerate((2, 5, 9, 14), 1)]
    trace += [(2, 10 * i, c, 1.0 * 10 * i) for i, c in enumerate((8, 17, 26, 35), 1)]
    pts = ablate_stats.step_curve(trace, windows_per_epoch=2)
    assert [p["images"] for p in pts] == [20, 40, 60, 80]
    assert [p["train_error"] for p in pts] == pytest.approx([0.75, 0.55, 0.15, 0.10])
    assert [p["train_loss"] for p in pts] == pytest.approx([2.0, 2.0, 1.0, 1.0])
    assert ablate_stats.images_to_threshold(pts, 0.25) == 60
    assert ablate_stats.images_to_threshold(pts, 0.05) is None


def _record(variant, seed, err, right, *, diverged=None, to=None, seen=100):
    hexed = ablate_stats.pack_bits(right)
    cell = {"top1_error": err, "top5_error": err / 10, "loss": 1.0, "correct": hexed}
    return {
        "variant": variant, "seed": seed, "diverged": diverged, "test_samples": len(right),
        "centre": None if diverged else cell, "ten_crop": None if diverged else {**cell, "top1_error": err - 0.01},
        "final_train_error": err, "final_train_loss": 1.0, "threshold": 0.25, "epochs_to_threshold": None,
        "seconds_to_threshold": None, "images_to_threshold": to, "images_seen": seen, "steps_complete": True,
        "train_seconds": 1.0, "curve": [], "steps": [],
    }  # fmt: skip


def test_report_keeps_diverged_runs_out_and_pools_mcnemar():
    variants = ablate._variant_info(["full", "no-lrn", "tanh"])
    right_full = [True] * 80 + [False] * 20
    right_lrn = [True] * 70 + [False] * 30  # loses 10 images full gets right, gains none
    records = [_record("full", s, 0.20, right_full, to=1000) for s in range(3)]
    records += [_record("no-lrn", s, 0.30, right_lrn) for s in (0, 2)]
    records += [_record("no-lrn", 1, 0.9, [], diverged="training loss not finite at epoch 2")]
    records += [_record("tanh", 0, 0.30, right_lrn, to=6000), _record("tanh", 1, 0.30, right_lrn, seen=9000)]
    records += [_record("tanh", 2, 0.30, right_lrn, to=None, seen=5000)]
    rows = ablate_report.summarize(records, variants)
    lrn = next(r for r in rows if r["variant"] == "no-lrn")
    assert lrn["top1"]["n"] == 2 and lrn["top1"]["mean"] == pytest.approx(10.0)  # seed 1 kept out
    assert lrn["diverged"] == [{"seed": 1, "why": "training loss not finite at epoch 2"}]
    assert lrn["absolute"]["diverged"] == 1 and lrn["absolute"]["seeds"] == [0, 2]
    m = lrn["mcnemar"]
    assert (m["b"], m["c"]) == (20, 0) and m["p"] == pytest.approx(2 / 2**20)  # 10 per seed, two seeds pooled
    assert [(x["seed"], x["b"], x["c"]) for x in m["seeds"]] == [(0, 10, 0), (2, 10, 0)]
    fig = ablate_report.relu_tanh(records)
    assert [p["ratio"] for p in fig["pairs"]] == [6.0, None, None]
    assert fig["pairs"][1]["at_least"] == 9.0 and fig["pairs"][2]["at_least"] == 5.0
    assert fig["median_image_ratio"] == 6.0
    meta = {"seeds": [0, 1, 2], "scale": "cpu", "train_samples": 500, "val_samples": 50, "test_samples": 100,
            "test_source": "test split", "epochs": 2, "input_size": 67, "num_classes": 10}  # fmt: skip
    md = ablate_report.markdown(rows, fig, meta)
    assert "- no-lrn seed 1 diverged (training loss not finite at epoch 2): counted, kept out of the means." in md
    assert "| 20 / 0: +10.00 [+5.84, +14.16], p 1.9e-06; agrees |" in md
    assert "Diverged runs: 1 (kept out of the means)." in md
    assert "seed 0: ReLU 1,000 images, tanh 6,000 images (ratio 6.00)" in md
    assert "seed 1: ReLU 1,000 images, tanh not reached (ratio above 9.00: tanh not there after 9,000 images)" in md
    assert "with 3 seeds the t-interval is mean +- 4.3 sd / sqrt(3)" in md
    for r in records:  # records made before step curves: Figure 1 in epochs, as then
        r.pop("images_seen")
        r["epochs_to_threshold"] = {"full": 2, "tanh": 5}.get(r["variant"])
    old = ablate_report.markdown(rows, ablate_report.relu_tanh(records), meta)
    assert "epochs to 25% training error: seed 0: ReLU 2, tanh 5; seed 1: ReLU 2, tanh 5;" in old
    assert "median ratio tanh/ReLU 2.50 (the paper: about 6)." in old


def test_a_run_whose_loss_explodes_is_reported_as_diverged(tmp_path, monkeypatch):
    import dataclasses

    data = make_folder(tmp_path / "data", size=20)
    out = tmp_path / "abl"
    monkeypatch.setitem(ablate.SCALES, "cpu", dataclasses.replace(ablate.SCALES["cpu"], lr=1e8))
    res = ablate.run_ablation(tiny(data, out, variants=["full"]), log=lambda s: None)
    (run,) = res.runs
    assert run["diverged"].startswith("training diverged: loss is not finite (") and run["centre"] is None
    from alexnet.train import loop

    assert loop._STEP_HOOKS == []  # the step hook is gone although the run ended in an exception
    assert (out / "full" / "seed-0" / ablate.RUN_RECORD).is_file()
    md = (out / "ablation.md").read_text()
    assert "- full seed 0 diverged (training diverged: loss is not finite (" in md
    lines: list[str] = []
    ablate.run_ablation(tiny(data, out, variants=["full"]), log=lines.append)  # a rerun does not train it again
    assert any("full seed 0: skip (finished)" in s for s in lines)
