"""Pictures and the HTML report (issue 5): filters (Figure 3), curves, confusion matrix, report, bad input."""

from __future__ import annotations

import html.parser
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _builders import METRICS_HEADER, image_folder, png_size, run_folder

import alexnet
from alexnet.cli import main
from alexnet.evaluate import EvaluationError
from alexnet.plots import PlotError, filter_grids, plot_confusion, plot_curves, plot_filters, read_metrics
from alexnet.report import report


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plots")
    image_folder(root / "data" / "train", per_class=1, seed=1)
    image_folder(root / "data" / "val", per_class=2)
    return run_folder(root / "run", partial=True, data=root / "data")


def test_filter_grid_is_the_papers_figure_3():
    torch.manual_seed(0)
    w = torch.randn(96, 3, 11, 11) * torch.linspace(0.01, 10, 96).view(-1, 1, 1, 1)  # very different ranges
    top, bottom = filter_grids(w, groups=2)
    # two halves of 4 x 12 kernels (8 x 12 in all), 11 px each, 1 px gaps
    assert top.shape == bottom.shape == (3, 4 * 12 + 1, 12 * 12 + 1)
    # the first 48 kernels (GPU 1) in the top grid, kernel 49 first in the bottom one, each on its own scale
    for grid, k in ((top, 0), (top, 47), (bottom, 48)):
        j = k % 48
        r, c = divmod(j, 12)
        tile = grid[:, 1 + 12 * r : 12 + 12 * r, 1 + 12 * c : 12 + 12 * c]
        want = (w[k] - w[k].min()) / (w[k].max() - w[k].min())
        torch.testing.assert_close(tile, want)
    (single,) = filter_grids(torch.randn(64, 3, 11, 11), groups=1)
    assert single.shape == (3, 8 * 12 + 1, 8 * 12 + 1)  # 64 kernels: 8 x 8
    with pytest.raises(PlotError, match="conv1 kernels"):
        filter_grids(torch.randn(256, 96, 5, 5))


def test_plot_filters_png_size(tmp_path: Path):
    model = alexnet.create_model("alexnet2012", num_classes=3, conv_channels=(96, 32, 32, 32, 32), fc_features=64)
    out = tmp_path / "f.png"
    plot_filters(model, out, size=(600, 500))
    assert png_size(out) == (600, 500) and out.stat().st_size > 1000


def test_read_metrics_partial_last_line(run: Path):
    with pytest.warns(UserWarning, match=r"metrics.csv:6: partial last line"):
        rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and rows[-1]["val_top1_accuracy"] == 0.65


def test_read_metrics_bad_files(tmp_path: Path):
    m = tmp_path / "metrics.csv"
    with pytest.raises(PlotError, match="no such file"):
        read_metrics(m)
    m.write_text(METRICS_HEADER + "1,0.01,1")
    with pytest.warns(UserWarning), pytest.raises(PlotError, match="no complete epoch"):
        read_metrics(m)
    m.write_text("a,b\n1,2\n")
    with pytest.raises(PlotError, match="no 'epoch' column"):
        read_metrics(m)
    # a resumed run repeats epoch 2 after a garbled line: the last row of an epoch wins
    m.write_text(METRICS_HEADER + "1,0.1,1,1,1,0.1,0.5,1,1\n2,0.1,1,1,1,0.2,0.5,1,1\n2,0.1,1,1,1,0.3,0.5,1,1\n")
    assert [r["val_top1_accuracy"] for r in read_metrics(m)] == [0.1, 0.3]
    # a run folder written before rates were fractions everywhere: its percent columns read as fractions
    m.write_text(
        "epoch,lr,train_loss,train_acc1,val_loss,val_acc1,val_acc5,images_per_s,seconds\n1,0.1,1,40,1,25,50,1,1\n"
    )
    (row,) = read_metrics(m)
    assert (row["train_top1_accuracy"], row["val_top1_accuracy"], row["val_top5_accuracy"]) == (0.4, 0.25, 0.5)
    assert "val_acc1" not in row


def test_every_plot_command_writes_a_png_of_the_asked_size(run: Path, tmp_path: Path, capsys):
    cases = [
        (["plot", "filters", "--weights", str(run / "best.safetensors")], (1200, 900), "800x640"),
        (["plot", "curves", str(run)], (1500, 450), "900x300"),
        (["plot", "curves", str(run / "metrics.csv")], (1500, 450), None),
        (["plot", "confusion", str(run / "eval.json")], (900, 800), "640x640"),
    ]
    for i, (args, default, size) in enumerate(cases):
        out = tmp_path / f"p{i}.png"
        assert main([*args, "--out", str(out)]) == 0, args
        assert png_size(out) == default and out.stat().st_size > 2000
        if size:
            assert main([*args, "--out", str(out), "--figure-size", size]) == 0
            assert png_size(out) == tuple(int(v) for v in size.split("x"))
    err = capsys.readouterr().err
    assert "alexnet plot curves: warning:" in err and "partial last line" in err


def test_plot_bad_input(tmp_path: Path, capsys):
    bad = tmp_path / "e.json"
    bad.write_text(json.dumps({"classes": ["a", "b"], "confusion_matrix": [[1]]}))
    with pytest.raises(EvaluationError, match="not 2 x 2"):
        plot_confusion(bad, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
    with pytest.raises(PlotError, match="no such file"):
        plot_curves(tmp_path, tmp_path / "c.png")
    assert main(["plot", "filters", "--weights", str(tmp_path / "none.safetensors")]) == 1
    with pytest.raises(SystemExit) as exit_:  # argparse: a bad flag value is a usage error
        main(["plot", "curves", str(tmp_path), "--figure-size", "10x10"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "none.safetensors" in err and "at least 50x50" in err


class _Checker(html.parser.HTMLParser):
    """Collects tags and the URLs a page would fetch; checks that elements nest and close."""

    VOID = {"meta", "img", "br", "link", "input", "hr", "col", "source"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.urls: list[tuple[str, str, str]] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "srcset", "data", "poster", "action") or (k == "style" and "url(" in (v or "")):
                self.urls.append((tag, k, v or ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_self_contained_valid_html(run: Path, tmp_path: Path):
    out = report(run, tmp_path / "r.html")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    p = _Checker()
    p.feed(page)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert {"html", "head", "body", "title", "table", "pre", "img", "figure"} <= set(p.tags)
    # nothing to fetch: every URL is an embedded image, no scripts, no style sheets, no links out
    assert p.urls and all(k == "src" and v.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
                          for _, k, v in p.urls), [u[:2] for u in p.urls]  # fmt: skip
    assert "script" not in p.tags and "link" not in p.tags and "url(" not in page
    text = " ".join(p.text)
    for section in ("Configuration", "Training curves", "Final metrics", "Confusion matrix", "conv1 kernels"):
        assert section in text
    assert "partial last line" in text  # the interrupted run is said, not hidden
    # the first screen is a summary a person reads; the raw config is folded away at the end
    first = page.index("<h2>")
    assert page[first:].startswith("<h2>Summary</h2>") and page.index("<details>") > page.index("conv1 kernels")
    assert "<summary>Configuration (config.json)</summary><pre>" in page
    summary = page[first : page.index("<h2>Training curves</h2>")]
    described = "alexnet_owt, 64x64, channels 16-32-32-32-32, fc6/fc7 width 64"  # the weights' config in words
    assert f'<th class="l">model</th><td class="l">{described}</td>' in summary and "custom" not in summary
    assert '<th class="l">epochs</th><td class="l">4</td>' in summary  # the partial 5th epoch is not counted
    assert "4: validation top-1 error 35.00 %, top-5 error 0.00 %" in summary  # metrics.csv's best epoch
    ev = json.loads((run / "eval.json").read_text())
    assert f"{100 * ev['top1_error']:.2f} %" in text
    assert f'final figures</th><td class="l">top-1 error {100 * ev["top1_error"]:.2f} %' in summary
    wrong = ev["num_samples"] - sum(ev["confusion_matrix"][i][i] for i in range(3))
    # the images: 4 plots + one thumbnail per misclassified image (found by re-evaluating the run's data)
    assert sum(v.startswith("data:image/jpeg") for _, _, v in p.urls) == min(wrong, 24)
    assert sum(v.startswith("data:image/png") for _, _, v in p.urls) == 3


def test_report_without_evaluation(tmp_path: Path, capsys):
    run = run_folder(tmp_path / "run")  # no eval.json, no data
    assert main(["report", str(run), "--json"]) == 0
    out = Path(json.loads(capsys.readouterr().out)["report"])
    assert out == run / "report.html"
    page = out.read_text()
    assert "no evaluation (eval.json)" in page and "--data VAL_DATA" in page
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "no such run folder" in capsys.readouterr().err


def test_report_finds_misclassified_images_of_a_train_eval_json(run: Path, tmp_path: Path):
    # train's eval.json holds counts only: the report evaluates the weights it names on the run's own data
    import shutil

    copy = Path(shutil.copytree(run, tmp_path / "run"))
    ev = json.loads((copy / "eval.json").read_text())
    wrong = len(ev.pop("misclassified"))
    (copy / "eval.json").write_text(json.dumps(ev))
    page = report(copy).read_text()
    assert page.count("data:image/jpeg;base64,") == wrong > 0
    assert "last.safetensors evaluated now on" in page
    assert main(["report", str(copy), "--no-evaluate", "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "data:image/jpeg" not in page and "holds no per-image predictions" in page


def test_plots_and_report_do_not_import_training():
    code = "import sys, alexnet.plots, alexnet.report; print('alexnet.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(
    ("names", "size"),
    [(["a", "b"], (300, 300)), (["cat", "dog", "fox"], (900, 800)), ([str(i) for i in range(10)], (400, 300))],
)
def test_confusion_matrix_labels_are_whole_whatever_the_names(names, size):
    """No text is cut at the picture's edges: "true class" beside short class names, the title of a narrow
    picture (wrapped), the colour bar's label of a short one."""
    import io

    import numpy as np
    from PIL import Image

    c = len(names)
    d = {"confusion_matrix": (np.eye(c, dtype=int) * 5 + 1).tolist(), "classes": names, "top1_error": 0.27}
    for normalize in (True, False):
        a = np.asarray(Image.open(io.BytesIO(plot_confusion(d, size=size, normalize=normalize))).convert("L"))
        assert a.shape == (size[1], size[0])
        edges = {"left": a[:, :2], "right": a[:, -2:], "top": a[:2], "bottom": a[-2:]}
        assert {k: int((v < 128).sum()) for k, v in edges.items()} == dict.fromkeys(edges, 0)
