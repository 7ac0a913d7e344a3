"""The page of `alexnet serve` in a real headless Chromium: upload an image, read the rendered top-5.

Needs Debian's ``chromium`` (``apt-get install chromium``; `.ci/run` installs it) and Playwright for Python (the dev
extra). Playwright drives the system browser (``executable_path``); it never downloads one. Skipped, saying why,
where either is missing.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet
from alexnet.data.decode import decode_image

pytestmark = pytest.mark.browser

pytest.importorskip("fastapi", reason="needs the [serve] extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python (pip install playwright)")
uvicorn = pytest.importorskip("uvicorn")

from alexnet import serve as serve_mod  # noqa: E402  (after the importorskip above)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NUM_CLASSES = 11


def find_chromium() -> str | None:
    for name in (os.environ.get("ALEXNET_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or set ALEXNET_CHROMIUM to a Chrome binary)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, timeout=60_000)
        except sync_api.Error as e:
            pytest.skip(f"Chromium at {exe} does not start under Playwright: {str(e).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A uvicorn server in a thread on a free loopback port, serving a tiny random AlexNet of 11 named classes."""
    torch.manual_seed(1)
    model = alexnet.create_model(
        "alexnet_owt", num_classes=NUM_CLASSES, conv_channels=(16, 32, 48, 32, 32), fc_features=64, input_size=64
    )
    for layer in model.named_layers().values():  # input-sensitive answers (see test_serve.make_weights)
        torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        torch.nn.init.zeros_(layer.bias)
    names = [f"kind {chr(ord('a') + i)}" for i in range(NUM_CLASSES)]
    pre = alexnet.Preprocessing(input_size=64, resize_size=72, class_names=names)
    provenance = {"parent": {"weights": "parent.safetensors", "sha256": "ab" * 32}, "data": "photos/", "epochs": 3,
                  "metrics": {"val_top1_accuracy": 0.625, "best_val_top1_error": 0.375, "best_epoch": 3}}  # fmt: skip
    path = alexnet.save_model(
        model, pre, tmp_path_factory.mktemp("browser") / "page-model.safetensors", provenance=provenance
    )
    model, pre = alexnet.load_model(path)
    # fp32: the page must show exactly the top-5 computed below (auto would be bf16 on a bf16-native CPU)
    options = serve_mod.ServeOptions(precision=alexnet.runtime.FP32)
    app = serve_mod.create_app(
        model, pre, name=path.name, options=options, provenance=alexnet.weights.read_provenance(path)
    )
    sock = serve_mod.bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        threading.Event().wait(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", model, pre
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_page_uploads_an_image_and_shows_the_top5(browser, served, tmp_path: Path):
    url, model, pre = served
    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((140, 100), Image.BILINEAR).save(buf, "PNG")
    image = tmp_path / "photo.png"
    image.write_bytes(buf.getvalue())
    with torch.no_grad():  # what the page must show: the model's top-5 on this file
        x = pre.eval_transform()(decode_image(image.read_bytes(), min_size=pre.resize_size)).unsqueeze(0)
        probs = torch.softmax(model(x), dim=1)[0]
    top_p, top_i = probs.topk(5)

    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith((url, "blob:", "data:")) else problems.append(r.url))
    page.goto(url + "/")
    page.wait_for_selector("body[data-model=ready]", timeout=20_000)
    # the model's name, classes and preprocessing are on the page
    description = "alexnet_owt, 64x64, channels 16-32-48-32-32, fc6/fc7 width 64"
    assert page.inner_text("#model-summary") == f"page-model.safetensors · {description} · {NUM_CLASSES} classes"
    # where the weights come from: the provenance the file carries
    assert page.inner_text("dd[data-field=parent]") == f"parent.safetensors (sha256 {'ab' * 6}…)"
    assert page.inner_text("dd[data-field=data]") == "photos/"
    assert page.inner_text("dd[data-field=epochs]") == "3"
    assert page.inner_text("dd[data-field=metrics]") == (
        "validation top-1 accuracy 62.50%, best validation top-1 error 37.50% (epoch 3)"
    )
    assert page.inner_text("dd[data-field=written]").endswith(f"by alexnet {alexnet.__version__}")
    assert page.inner_text("dd[data-field=classes]").startswith(f"{NUM_CLASSES}: kind a, kind b")
    prep = page.inner_text("dd[data-field=preprocessing]")
    assert "72" in prep and "64×64" in prep and "0.485" in prep

    page.set_input_files("#file", str(image))
    page.wait_for_selector("body[data-state=done]", timeout=20_000)
    rows = page.query_selector_all("#predictions li.prediction")
    assert len(rows) == 5
    labels = [r.query_selector(".label").inner_text() for r in rows]
    assert labels == [pre.class_names[i] for i in top_i.tolist()]
    shown = [float(r.query_selector(".prob").inner_text().rstrip("%")) for r in rows]
    np.testing.assert_allclose(shown, (100 * top_p).numpy(), atol=0.051)  # shown with one decimal
    # bars are drawn in proportion to the probabilities
    widths = [r.query_selector(".bar").bounding_box()["width"] for r in rows]
    track = rows[0].query_selector(".track").bounding_box()["width"]
    np.testing.assert_allclose(np.array(widths) / track, top_p.numpy(), atol=0.02)
    # the image itself is shown, with its size from the server
    assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth") == 140
    assert "photo.png · 140×100" in page.inner_text("#caption")  # the result's file and size
    assert page.inner_text("dd[data-field=precision]") == "fp32"
    assert not problems, problems

    # a file that is not an image: the page shows the server's error message, not a crash
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not a png at all")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("body[data-state=error]", timeout=20_000)
    assert "notes.png" in page.inner_text("#error")
    page.close()
