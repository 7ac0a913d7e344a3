"""`alexnet serve` against a real server: `alexnet serve` in a subprocess on 127.0.0.1, tiny random weights.

Answers are checked against the model run here on the same bytes, so a wrong preprocessing, a mixed-up batch
or a swapped label fails. Bad input must give a 4xx JSON error and leave the server healthy.
"""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from _builders import make_weights, start_server
from PIL import Image

import alexnet
from alexnet.data.decode import decode_image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="needs the [serve] extra")
from alexnet import serve as serve_mod  # noqa: E402  (after the importorskip above)

NUM_CLASSES = 11
MAX_BYTES = 4_000_000
MAX_IMAGES = 4


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("serve") / "tiny.safetensors")


@pytest.fixture(scope="module")
def reference(weights):
    """The served model run here, one image at a time, on the device and in the precision the server's defaults
    resolve to (auto: bf16 where the device computes it natively, as predict): what every answer must equal."""
    from alexnet.runtime import resolve_device, resolve_precision

    model, pre = alexnet.load_model(weights)
    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    net = precision.inference_model(model, device)

    def probs(data: bytes, ten_crop: bool = False) -> torch.Tensor:
        img = decode_image(data, min_size=pre.resize_size)
        x = pre.ten_crop_transform()(img) if ten_crop else pre.eval_transform()(img).unsqueeze(0)
        x = x.to(device)
        if precision.dtype is not None:
            x = x.to(precision.dtype, memory_format=torch.channels_last)
        with torch.no_grad():
            return torch.softmax(net(x).float(), dim=1).mean(dim=0).cpu()  # (num_classes,)

    return probs


@pytest.fixture(scope="module")
def server(weights, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    args = ["--max-bytes", str(MAX_BYTES), "--max-images", str(MAX_IMAGES), "--batch-window-ms", "10"]
    proc, url = start_server(weights, log, *args)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    assert "Traceback" not in log.read_text(), log.read_text()  # no request crashed the server


def image_bytes(seed: int, size: tuple[int, int] = (96, 80), fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    # smooth random colour fields, so that the crops of one image differ and JPEG keeps them
    small = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize(size, Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def check_predictions(preds: list[dict], probs: torch.Tensor, k: int) -> None:
    top_p, top_i = probs.topk(k)
    assert [p["index"] for p in preds] == top_i.tolist()
    assert [p["name"] for p in preds] == [f"class {i}" for i in top_i.tolist()]
    np.testing.assert_allclose([p["prob"] for p in preds], top_p.numpy(), atol=1e-5)


def assert_error(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["schema"] == "alexnet.serve.error/1" and set(body) == {"schema", "error"}
    err = body["error"]
    assert err["status"] == status
    for w in words:
        assert w in err["message"], err["message"]


# --- the API ------------------------------------------------------------------------------------------------------
def test_model_healthz_openapi(server):
    assert httpx.get(f"{server}/healthz").json() == {"schema": "alexnet.serve.health/1", "status": "ok"}
    info = httpx.get(f"{server}/v1/model").json()
    assert info["schema"] == "alexnet.serve.model/1" and info["name"] == "tiny.safetensors"
    assert info["arch"] == "custom"  # for programs; people read the description
    assert info["description"] == "alexnet_owt, 64x64, channels 16-32-48-32-32, fc6/fc7 width 64"
    prov = info["provenance"]  # written by save_model: the version and date, nothing else known
    assert prov["alexnet_version"] == alexnet.__version__ and prov["parent"] is None and prov["epochs"] is None
    assert info["num_classes"] == NUM_CLASSES
    assert info["class_names"] == [f"class {i}" for i in range(NUM_CLASSES)]
    assert info["preprocessing"]["input_size"] == 64 and info["preprocessing"]["resize_size"] == 72
    assert info["limits"]["max_bytes"] == MAX_BYTES and info["limits"]["max_images"] == MAX_IMAGES
    assert info["precision"] in ("fp32", "bf16")  # auto: bf16 only where the device computes it natively
    spec = httpx.get(f"{server}/openapi.json").json()
    op = spec["paths"]["/v1/predict"]["post"]
    assert {p["name"] for p in op["parameters"]} == {"topk", "ten_crop"}
    assert "image" in op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"400", "413", "415"} <= set(op["responses"])
    assert "/v1/model" in spec["paths"] and "/healthz" in spec["paths"]
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from another origin
    assert httpx.get(f"{server}/static/app.js").status_code == 200


def test_predict_one_image_matches_reference(server, reference):
    data = image_bytes(1)
    r = httpx.post(f"{server}/v1/predict", files={"image": ("cat.jpg", data, "image/jpeg")}, params={"topk": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    # one shape whether one image or several were sent: no top-level "predictions" for a single image
    assert set(body) == {"schema", "model", "ten_crop", "topk", "results"}
    assert body["schema"] == "alexnet.serve.predict/1"
    assert body["model"] == "tiny.safetensors" and body["ten_crop"] is False and body["topk"] == 3
    (res,) = body["results"]
    assert (res["file"], res["width"], res["height"]) == ("cat.jpg", 96, 80)
    check_predictions(res["predictions"], reference(data), 3)
    # topk above the number of classes gives them all; the default is 5
    r = httpx.post(f"{server}/v1/predict?topk=50", files={"image": ("cat.jpg", data)})
    assert len(r.json()["results"][0]["predictions"]) == NUM_CLASSES
    r = httpx.post(f"{server}/v1/predict", content=data, headers={"content-type": "image/jpeg"})
    check_predictions(r.json()["results"][0]["predictions"], reference(data), 5)


def test_predict_several_images_ten_crop(server, reference):
    blobs = [image_bytes(10 + i, fmt=f) for i, f in enumerate(["JPEG", "PNG", "WEBP"])]
    files = [("image", (f"im{i}", b)) for i, b in enumerate(blobs)]
    r = httpx.post(f"{server}/v1/predict", files=files, params={"ten_crop": "true", "topk": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ten_crop"] is True and set(body) == {"schema", "model", "ten_crop", "topk", "results"}
    assert [x["file"] for x in body["results"]] == ["im0", "im1", "im2"]
    for res, b in zip(body["results"], blobs, strict=True):
        check_predictions(res["predictions"], reference(b, ten_crop=True), 4)
    # 10-crop is a different answer from the centre crop
    assert not torch.allclose(reference(blobs[0], ten_crop=True), reference(blobs[0]), atol=1e-4)


def _truncated_jpeg() -> bytes:
    data = image_bytes(3, size=(300, 200))
    return data[: len(data) // 2]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its pixel data is absent)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BAD_INPUTS = {
    "not an image": dict(files={"image": ("notes.txt", b"hello, this is text", "text/plain")}, want=(400, "notes.txt")),
    "truncated jpeg": dict(files={"image": ("half.jpg", _truncated_jpeg(), "image/jpeg")}, want=(400, "half.jpg")),
    "empty body": dict(content=b"", headers={"content-type": "multipart/form-data; boundary=x"}, want=(400, "empty")),
    "no body at all": dict(want=(400, "empty")),
    "empty file": dict(files={"image": ("zero.jpg", b"", "image/jpeg")}, want=(400, "zero.jpg")),
    "too many images": dict(
        files=[("image", (f"{i}.jpg", image_bytes(i))) for i in range(MAX_IMAGES + 1)], want=(413, "--max-images")
    ),
    "wrong field": dict(files={"file": ("a.jpg", image_bytes(0))}, want=(400, "'file'")),
    "text field": dict(data={"topk": "3"}, files={"image": ("a.jpg", image_bytes(0))}, want=(400, "'topk'")),
    "no image part": dict(
        content=b"--x--\r\n", headers={"content-type": "multipart/form-data; boundary=x"}, want=(400,)
    ),
    "unclosed multipart": dict(
        content=b'--x\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nabc',
        headers={"content-type": "multipart/form-data; boundary=x"},
        want=(400, "incomplete"),
    ),
    "json body": dict(json={"image": "cat.jpg"}, want=(415, "application/json")),
    "bad topk": dict(files={"image": ("a.jpg", image_bytes(0))}, params={"topk": "many"}, want=(422, "topk")),
    "zero topk": dict(files={"image": ("a.jpg", image_bytes(0))}, params={"topk": 0}, want=(422, "topk")),
    "bad ten_crop": dict(files={"image": ("a.jpg", image_bytes(0))}, params={"ten_crop": "maybe"}, want=(422,)),
    "64 megapixels": dict(files={"image": ("big.png", _png_header(8000, 8000))}, want=(413, "--max-pixels")),
    "thin strip": dict(files={"image": ("strip.png", _png_header(1, 100_000))}, want=(413, "strip.png")),
    "pixel bomb": dict(files={"image": ("bomb.png", _png_header(20000, 20000))}, want=(413, "bomb.png")),
    "over max-bytes": dict(files={"image": ("big.jpg", os.urandom(MAX_BYTES + 1000))}, want=(413, "--max-bytes")),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_a_4xx_json_error(server, case):
    kwargs = dict(BAD_INPUTS[case])
    status, *words = kwargs.pop("want")
    r = httpx.post(f"{server}/v1/predict", timeout=30, **kwargs)
    assert_error(r, status, *words)
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_unknown_route_and_method_are_json(server):
    assert_error(httpx.get(f"{server}/v1/nothing"), 404)
    assert_error(httpx.get(f"{server}/v1/predict"), 405)


def test_20_megapixel_jpeg_is_decoded_downscaled(server, reference):
    w, h = 5472, 3648
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    rgb = np.stack(np.broadcast_arrays(x, y, (x + y) / 2), axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=70)
    data = buf.getvalue()
    # what the server's header check predicts: JPEG draft mode decodes at 1/8 scale, short side still >= 72
    assert serve_mod.image_size(data, 72) == ((w, h), (w // 8, h // 8))
    t0 = time.perf_counter()
    r = httpx.post(f"{server}/v1/predict", files={"image": ("big.jpg", data)}, timeout=30)
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert (res["width"], res["height"]) == (w, h)
    check_predictions(res["predictions"], reference(data), 5)
    assert time.perf_counter() - t0 < 10


# --- the size limit holds while the body streams in ---------------------------------------------------------------
def _raw_request(url: str, head: str, body_parts: list[bytes], pause_s: float = 0.0) -> tuple[int, bytes]:
    """Send ``head`` and ``body_parts`` on a socket, never the rest, and return (status, response bytes)."""
    host, port = re.match(r"http://([\d.]+):(\d+)", url).groups()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode())
        for part in body_parts:
            s.sendall(part)
        time.sleep(pause_s)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_declared_length_over_limit_is_refused_before_reading(server):
    # Content-Length says 1 GB; only 10 kB follow. The server answers without waiting for the rest.
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        "Content-Length: 1000000000\r\n\r\n"
    )
    t0 = time.perf_counter()
    status, data = _raw_request(server, head, [b"--x\r\n" + b"a" * 10_000])
    assert status == 413 and b"--max-bytes" in data
    assert time.perf_counter() - t0 < 5


def test_streamed_body_over_limit_is_refused_at_the_limit(server):
    # A chunked body (no length announced) that never ends: the server must stop at --max-bytes and answer.
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = 256 * 1024
    chunk = f"{piece:x}\r\n".encode() + b"\xff" * piece + b"\r\n"
    n = MAX_BYTES // piece + 2  # just over the limit, then silence
    status, data = _raw_request(server, head, [chunk] * n)
    assert status == 413 and b"--max-bytes" in data


# --- load and batching --------------------------------------------------------------------------------------------
def test_load_every_answer_correct_and_batched(server, reference):
    clients, per_client = 8, 25  # 200 requests
    blobs = [image_bytes(100 + i) for i in range(clients)]
    expected = [reference(b) for b in blobs]
    # the images' answers differ, so a request given another's rows would fail
    tops = {tuple(e.topk(5).indices.tolist()) + tuple(np.round(e.topk(5).values.numpy(), 4)) for e in expected}
    assert len(tops) == clients
    before = httpx.get(f"{server}/v1/stats").json()
    failures: list[str] = []
    start = threading.Barrier(clients)

    def client(c: int) -> None:
        with httpx.Client(base_url=server, timeout=30) as http:
            start.wait()
            for n in range(per_client):
                i = (c + n) % clients  # every client sends every image
                r = http.post("/v1/predict", files={"image": (f"{i}.jpg", blobs[i])})
                try:
                    assert r.status_code == 200, r.text
                    check_predictions(r.json()["results"][0]["predictions"], expected[i], 5)
                except AssertionError as e:
                    failures.append(f"client {c} request {n}: {e}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    assert not failures, failures[:3]
    after = httpx.get(f"{server}/v1/stats").json()
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == clients * per_client
    # batching across clients happened: fewer forward passes than requests, and some pass held several
    assert batches < requests, after
    assert after["largest_batch"] > 1
    print(f"\nload: {requests} requests, 8 clients, {seconds:.2f} s, {requests / seconds:.0f} req/s, {batches} batches")


# --- command line -------------------------------------------------------------------------------------------------
def test_cli_defaults_bind_loopback_and_20mb():
    from alexnet.cli import build_parser

    args = build_parser().parse_args(["serve", "--weights", "w.safetensors"])
    assert args.host == "127.0.0.1" and args.max_bytes == 20_000_000
    assert serve_mod.ServeOptions().max_bytes == 20_000_000


def test_cli_errors_are_one_line(tmp_path, weights, capsys):
    from alexnet.cli import main

    assert main(["serve", "--weights", str(tmp_path / "none.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such weights file" in err
    if not torch.cuda.is_available():
        assert main(["serve", "--weights", str(weights), "--device", "cuda"]) == 1
        assert "CUDA is not available" in capsys.readouterr().err
    # a taken port is a one-line error too
    with serve_mod.bind("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(alexnet.errors.AlexnetError, match=f"127.0.0.1:{port}"):
            serve_mod.bind("127.0.0.1", port)


def test_without_the_serve_extra_the_error_names_the_extra(monkeypatch, capsys):
    # fastapi made unimportable and alexnet.serve not yet imported: `serve` names the extra in one line
    from alexnet.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "alexnet.serve")
    assert main(["serve", "--weights", "w.safetensors"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'alexnet[serve]'" in err and "fastapi" in err, err


# --- inference off the event loop ---------------------------------------------------------------------------------
class _Gate:
    """What the test and every copy of `_SlowModel` share (the server runs a cast copy of its model): the calls
    made, a forward pass running, and the release of the held passes."""

    def __init__(self) -> None:
        self.calls = 0
        self.running, self.release = threading.Event(), threading.Event()
        self.release.set()  # the server's warm-up pass runs through

    def __deepcopy__(self, memo: dict) -> _Gate:
        return self


class _SlowModel(torch.nn.Module):
    """The tiny model behind a forward pass that lasts until the test releases it: a stand-in for a big model on a
    slow CPU, whose length no machine's load can change."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.gate = _Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.gate.calls += 1
        self.gate.running.set()
        assert self.gate.release.wait(300), "the test never released the forward pass"
        return self.inner(x)


def test_slow_inference_blocks_neither_the_loop_nor_other_clients(weights, reference):
    import uvicorn

    from alexnet.runtime import resolve_device, resolve_precision

    inner, pre = alexnet.load_model(weights)
    model = _SlowModel(inner)
    device = resolve_device("auto")  # the reference's device and precision, resolved as the command line does
    opts = serve_mod.ServeOptions(batch_window_ms=50, device=device, precision=resolve_precision("auto", device))
    app = serve_mod.create_app(model, pre, name="slow", options=opts)
    sock = serve_mod.bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        gate = model.gate
        calls_before = gate.calls  # the warm-up pass
        gate.running.clear()
        gate.release.clear()  # from now on a forward pass holds until released
        blobs = [image_bytes(200 + i) for i in range(6)]
        answers: dict[int, httpx.Response] = {}

        def post(i: int) -> None:  # odd clients ask for 10-crop and top-3: mixed requests share a pass
            params = {"ten_crop": "true", "topk": 3} if i % 2 else {}
            files = {"image": ("x.jpg", blobs[i])}
            answers[i] = httpx.post(f"{url}/v1/predict", files=files, params=params, timeout=300)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(blobs))]
        for t in threads:
            t.start()
        assert gate.running.wait(120), "no forward pass started"
        # the first batch is held in its forward pass: the event loop must answer anyway
        assert httpx.get(f"{url}/healthz", timeout=120).status_code == 200
        assert not gate.release.is_set() and gate.calls - calls_before == 1
        gate.release.set()
        for t in threads:
            t.join()
        for i, b in enumerate(blobs):
            assert answers[i].status_code == 200, answers[i].text
            check_predictions(
                answers[i].json()["results"][0]["predictions"], reference(b, ten_crop=bool(i % 2)), 3 if i % 2 else 5
            )
        # six concurrent clients, at most two passes (one may start before the others arrive)
        assert 1 <= gate.calls - calls_before <= 2
    finally:
        model.gate.release.set()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_healthz_fails_when_the_batcher_is_not_running(weights):
    import asyncio

    model, pre = alexnet.load_model(weights)
    app = serve_mod.create_app(model, pre)

    async def get() -> httpx.Response:  # httpx's ASGI transport runs no lifespan: the worker never starts
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            return await c.get("/healthz")

    assert_error(asyncio.run(get()), 503, "not running")


def test_precision_and_the_json_vocabulary_of_predict(weights):
    """``precision`` runs a cast copy of the weights, as predict does; a result has predict --json's keys."""
    from alexnet.errors import AlexnetError
    from alexnet.predict import ClassScore
    from alexnet.runtime import Precision

    model, pre = alexnet.load_model(weights)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = torch.softmax(model(x), dim=1)
    for precision, atol in (("fp32", 1e-6), ("bf16", 0.05)):
        opts = serve_mod.ServeOptions(device="cpu", precision=Precision(precision))
        app = serve_mod.create_app(model, pre, options=opts)
        served = app.state.served
        got = served.forward(x)
        assert served.info().precision == precision and got.dtype == torch.float32
        assert torch.allclose(got, want, atol=atol) and (precision == "fp32" or not torch.equal(got, want))
        assert next(served.net.parameters()).dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left as it was
    (res,) = served.results(["a.jpg"], [(96, 80)], want[:1], topk=2)
    assert set(res) == {"file", "width", "height", "predictions"} and res["file"] == "a.jpg"
    assert [tuple(p) for p in res["predictions"]] == [tuple(ClassScore._fields)] * 2
    with pytest.raises(AlexnetError, match="'fp64' is not a resolved precision"):
        serve_mod.ServeOptions(precision=Precision("fp64"))
    with pytest.raises(AlexnetError, match="expected an alexnet.runtime.Precision, got 'bf16'"):
        serve_mod.ServeOptions(precision="bf16")  # a word is resolved where the command starts
    # `alexnet serve` owns the model it loaded: cast in place, no second copy of the weights
    bf16 = serve_mod.ServeOptions(device="cpu", precision=Precision("bf16"))
    served = serve_mod.create_app(model, pre, options=bf16, own_model=True).state.served
    assert served.net is model and next(model.parameters()).dtype == torch.bfloat16


def test_alexnet_serve_prepares_its_model_once(tmp_path, monkeypatch):
    """`alexnet serve` casts the model it loads once, in place (`load_for_inference`); the server takes it as it
    is (issue 23). `serve` is replaced by what it does before binding: build the app on the command's model."""
    from alexnet.cli import main
    from alexnet.runtime import Precision

    calls, apps = [], []
    real = Precision.inference_model

    def counting(self, model, device, *, copy=True):
        calls.append((self.name, copy))
        return real(self, model, device, copy=copy)

    def serve_without_binding(model, *, preprocessing, name, provenance, options, **_):
        apps.append(serve_mod.create_app(model, preprocessing, name=name, options=options, own_model=True,
                                         provenance=provenance))  # fmt: skip

    monkeypatch.setattr(Precision, "inference_model", counting)
    monkeypatch.setattr(serve_mod, "serve", serve_without_binding)
    weights = make_weights(tmp_path / "w.safetensors")
    assert main(["serve", "--weights", str(weights), "--device", "cpu", "--precision", "bf16"]) == 0
    (app,) = apps
    assert calls == [("bf16", False)] and next(app.state.served.net.parameters()).dtype == torch.bfloat16


def test_serve_options_check_themselves_with_the_package_error(capsys):
    """`ServeOptions` checks every field and raises `AlexnetError` (issue 23): the command line re-checks none of
    them and prints the options' own one line."""
    from alexnet.cli import main
    from alexnet.errors import AlexnetError

    for kw, message in (
        ({"max_batch": 0}, "--max-batch must be an integer >= 1, got 0"),
        ({"batch_window_ms": -1.0}, "--batch-window-ms must be a number >= 0, got -1.0"),
        ({"header_timeout_s": 0.0}, "--header-timeout must be > 0 seconds, got 0.0"),
        ({"max_request_pixels": 10, "max_inflight_pixels": 5},
         "--max-inflight-pixels must be >= --max-request-pixels (else no request could run)"),
    ):  # fmt: skip
        with pytest.raises(AlexnetError) as e:
            serve_mod.ServeOptions(**kw)
        assert str(e.value) == message
    assert main(["serve", "--weights", "none.safetensors", "--body-timeout", "0"]) == 1
    assert capsys.readouterr().err == "alexnet serve: error: --body-timeout must be > 0 seconds, got 0.0\n"
