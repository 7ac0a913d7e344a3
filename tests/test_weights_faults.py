"""Issue 14, weights and serve faults: crafted or lossy weights files are refused in one line before anything big is
allocated (items 4, 9, 10, 17), and the server bounds what clients can make it decode or hold open (12, 13, 14)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from _builders import (  # noqa: I001
    CLASSES,
    HANG_S,
    bvlc_preprocessing,
    narrow_model,
    one_line_error,
    rewrite_weights,
    saved_narrow,
)
from safetensors.torch import save_file

import alexnet
from alexnet import weights as W
from alexnet.cli import main
from alexnet.models import get_config
from alexnet.weights import BVLC_PREPROCESSING, WeightsError


# --- 9 and 17: the metadata's config and preprocessing are validated before anything is built -------------------
@pytest.mark.parametrize(
    ("config", "preprocessing", "words"),
    [
        ({"conv_channels": [4096, 8, 8, 8, 8]}, None, ["conv1", "(4096, 3, 11, 11)"]),
        (
            {"conv_channels": [1000000, 8, 8, 8, 8]},
            None,
            ["conv_channels[0] (conv1) = 1000000 is over the limit of 4096"],
        ),
        ({"num_classes": 1e9}, None, ["num_classes must be an integer", "1000000000.0"]),
        ({"num_classes": 10**9}, None, ["num_classes = 1000000000 is over the limit of 100000"]),
        ({"fc_features": 16384}, None, ["fc6", "16384"]),
        ({"fc_features": 10**6}, None, ["fc_features = 1000000 is over the limit of 16384"]),
        ({"lrn_size": -1}, None, ["lrn_size must be >= 1"]),
        ({"input_size": 1.5}, None, ["input_size must be an integer"]),
        ({"conv_channels": "x"}, None, ["conv_channels must be a list"]),
        ({"lrn": "yes"}, None, ["lrn must be true or false"]),
        ({"bogus": 1}, None, ["unknown AlexNetConfig fields", "bogus"]),
        (None, {"input_size": 1.5}, ["preprocessing", "input_size must be an integer"]),
        (None, {"mean": [1, 2]}, ["preprocessing"]),
        (None, {"std": [1, "a", 1]}, ["preprocessing", "std"]),
        (None, {"value_scale": float("inf")}, ["value_scale"]),
    ],
)
def test_crafted_config_is_refused_before_building(tmp_path, no_build, config, preprocessing, words):
    _, good = saved_narrow(tmp_path)
    bad = rewrite_weights(good, tmp_path / "bad.safetensors", config=config, preprocessing=preprocessing)
    no_build()
    with pytest.raises(WeightsError) as e:
        alexnet.load_model(bad)
    one_line_error(e, str(bad), *words)


@pytest.mark.parametrize("field", ["config", "preprocessing"])
@pytest.mark.parametrize("text", ["[1,2]", "not json", "null", '"x"', "[" * 100000])
def test_metadata_that_is_not_an_object_is_one_line(tmp_path, no_build, field, text):
    _, good = saved_narrow(tmp_path)
    bad = rewrite_weights(good, tmp_path / "bad.safetensors", metadata={field: text})
    no_build()
    with pytest.raises(WeightsError) as e:
        alexnet.load_model(bad)
    one_line_error(e, f"invalid {field} in the metadata")


def test_huge_conv1_file_stays_far_below_a_gigabyte(tmp_path):
    """The 12 MB file of the issue reached 14.6 GB; now the refusal costs what importing torch costs."""
    _, good = saved_narrow(tmp_path)
    bad = rewrite_weights(good, tmp_path / "bad.safetensors", config={"conv_channels": [1000000, 8, 8, 8, 8]})
    code = textwrap.dedent(
        f"""
        import resource, sys
        import alexnet
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            alexnet.load_model({str(bad)!r})
        except alexnet.weights.WeightsError as e:
            print("refused:", e)
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print("grew_kb", grew)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert "refused:" in out.stdout, out.stderr
    grew_kb = int(out.stdout.split("grew_kb")[1])
    assert grew_kb < 200_000, f"loading the crafted file grew the peak memory by {grew_kb / 1e3:.0f} MB"


def test_cli_refuses_crafted_file_in_one_line_and_writes_nothing(tmp_path, capsys):
    _, good = saved_narrow(tmp_path)
    bad = rewrite_weights(good, tmp_path / "bad.safetensors", config={"conv_channels": [1000000, 8, 8, 8, 8]})
    assert main(["convert", str(bad), str(tmp_path / "out.pth")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("alexnet convert: error:") and "conv1" in err
    assert not (tmp_path / "out.pth").exists()


# --- 10: dtypes, NaN / inf and class names ----------------------------------------------------------------------
def test_i32_header_over_float_bytes_is_refused(tmp_path, no_build):
    _, good = saved_narrow(tmp_path)
    data = bytearray(good.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["features.0.weight"]["dtype"] = "I32"  # same width: safetensors itself finds nothing wrong
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text))
    assert len(text) == n
    data[8 : 8 + n] = text
    (tmp_path / "i32.safetensors").write_bytes(bytes(data))
    no_build()
    with pytest.raises(WeightsError) as e:
        alexnet.load_model(tmp_path / "i32.safetensors")
    one_line_error(e, "features.0.weight", "I32", "not floating point")


def test_int_weights_are_refused_in_every_format(tmp_path):
    model, good = saved_narrow(tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["classifier.6.weight"] = state["classifier.6.weight"].to(torch.int32)
    rewrite_weights(good, tmp_path / "int.safetensors", tensors={"classifier.6.weight": state["classifier.6.weight"]})
    save_file(state, str(tmp_path / "bare.safetensors"))  # no metadata: another tool's state dict
    torch.save(state, tmp_path / "int.pth")
    for name in ("int.safetensors", "bare.safetensors", "int.pth"):
        with pytest.raises(WeightsError) as e:
            alexnet.load_model(tmp_path / name, arch="alexnet2012" if name != "int.safetensors" else None)
        one_line_error(e, "classifier.6.weight", "not floating point")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused_in_every_format(tmp_path, value):
    model = narrow_model()
    with torch.no_grad():
        model.fc8.weight[1, 2] = value
    W.save_model(model, bvlc_preprocessing(), tmp_path / "m.safetensors")
    W.export_pth(model, tmp_path / "m.pth", bvlc_preprocessing())
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    for name in ("m.safetensors", "m.pth", "plain.pth"):
        with pytest.raises(WeightsError) as e:
            alexnet.load_model(tmp_path / name)
        one_line_error(e, "classifier.6.weight", "1 NaN or infinite")
    # the bvlc layout: a full-width model (the layout's fc6/fc7 are 4096 wide)
    big = alexnet.create_model("alexnet2012", num_classes=3, lrn_k=1.0)
    with torch.no_grad():
        big.conv3.weight[0, 0, 0, 0] = value
    W.export_npy(big, tmp_path / "m.npy")
    with pytest.raises(WeightsError) as e:
        alexnet.load_model(tmp_path / "m.npy", allow_pickle=True)
    one_line_error(e, "features.", "NaN or infinite")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_the_finite_check_is_exact_where_a_sum_is_not(dtype):
    """The check reads a sum first: values whose sum overflows are still finite weights, and an infinity
    cancelled by another (sum NaN) or a lone NaN among large values is still refused."""
    big = torch.finfo(dtype).max
    W.check_tensor_values({"w": torch.full((4, 4), big, dtype=dtype)}, "x")  # the sum overflows: still accepted
    W.check_tensor_values({"w": torch.tensor([big, -big, 1.0], dtype=dtype)}, "x")
    for bad in ([float("inf"), float("-inf")], [big, float("nan")], [0.0, float("inf")]):
        with pytest.raises(WeightsError) as e:
            W.check_tensor_values({"w": torch.tensor(bad, dtype=dtype)}, "x")
        one_line_error(e, "w holds", "NaN or infinite")


def test_class_names_of_the_wrong_length_are_refused(tmp_path, no_build, monkeypatch):
    _, good = saved_narrow(tmp_path)
    bad = rewrite_weights(good, tmp_path / "bad.safetensors", preprocessing={"class_names": ["a", "b"]})
    no_build()
    with pytest.raises(WeightsError) as e:
        alexnet.load_model(bad)
    one_line_error(e, "2 class names for a model with 3 classes")
    monkeypatch.undo()
    with pytest.raises(WeightsError, match="4 class names for a model with 3 classes"):
        W.export_pth(narrow_model(), tmp_path / "x.pth", bvlc_preprocessing(class_names=CLASSES + ["emu"]))
    assert not (tmp_path / "x.pth").exists()


# --- 4: convert never writes a file that loads as another model; class names kept where the format can -----------
def test_convert_to_npy_refuses_what_the_layout_cannot_express(tmp_path, capsys):
    """The demo's model (67x67 input, adaptive pooling, the paper's LRN k = 2) as .npy would load as 227x227
    alexnet2012 with k = 1: refused with the differences, nothing written; --lossy writes it with a warning."""
    model = narrow_model(adaptive_pool=True, input_size=67)
    src = W.save_model(model, bvlc_preprocessing(input_size=67, resize_size=76), tmp_path / "demo.safetensors")
    dst = tmp_path / "demo.npy"
    assert main(["convert", str(src), str(dst)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot express this model" in err and "--lossy" in err
    for field in ("adaptive_pool=False (this model: True)", "lrn_k=1.0 (this model: 2.0)", "input_size=227"):
        assert field in err
    assert not dst.exists()
    with pytest.raises(WeightsError, match="cannot express"):
        W.save_weights(model, bvlc_preprocessing(), dst)
    assert main(["convert", str(src), str(dst), "--lossy"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "loads as a different model" in err and "keeps no class names" in err
    assert dst.is_file()


def test_npy_differences_name_the_arch_to_load_with():
    caffenet = W.base.empty_model(get_config("caffenet", lrn_k=1.0))
    assert W.bvlc_import_differences(caffenet, BVLC_PREPROCESSING) == ("caffenet", [])
    paper = W.base.empty_model(get_config("alexnet2012"))  # k = 2: the importer builds k = 1
    assert W.bvlc_import_differences(paper, BVLC_PREPROCESSING) == ("alexnet2012", ["lrn_k=1.0 (this model: 2.0)"])


def test_pth_keeps_config_and_class_names_and_still_loads_in_torchvision(tmp_path, capsys):
    import torchvision

    model = narrow_model(adaptive_pool=True, input_size=67, lrn_before_pool=False)
    src = W.save_model(model, bvlc_preprocessing(input_size=67, resize_size=76), tmp_path / "m.safetensors")
    assert main(["convert", str(src), str(tmp_path / "m.pth")]) == 0
    back, pre = alexnet.load_model(tmp_path / "m.pth")
    assert back.config == model.config and pre.class_names == CLASSES and pre.input_size == 67
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    # plain torch reads it as a state dict; torchvision's loader ignores the extra _metadata entry
    owt = alexnet.create_model("alexnet_owt", num_classes=3)
    W.export_pth(owt, tmp_path / "owt.pth", W.Preprocessing(class_names=CLASSES))
    tv = torchvision.models.alexnet(num_classes=3)
    tv.load_state_dict(torch.load(tmp_path / "owt.pth"))
    tv.load_state_dict(torch.load(tmp_path / "owt.pth", weights_only=True))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(tv.eval()(x), owt.eval()(x))
    _, pre = alexnet.load_model(tmp_path / "owt.pth")
    assert pre.class_names == CLASSES


def test_pth_metadata_is_validated_like_safetensors(tmp_path, no_build):
    model = narrow_model()
    W.export_pth(model, tmp_path / "m.pth", bvlc_preprocessing())
    obj = torch.load(tmp_path / "m.pth", weights_only=True)
    table = obj._metadata[W.base.PTH_METADATA_KEY]
    table["config"] = json.dumps({**json.loads(table["config"]), "conv_channels": [1000000, 8, 8, 8, 8]})
    torch.save(obj, tmp_path / "bad.pth")
    no_build()
    with pytest.raises(WeightsError) as e:
        alexnet.load_model(tmp_path / "bad.pth")
    one_line_error(e, "conv1")


def test_npy_of_a_matching_model_round_trips_without_notes(tmp_path):
    assert W.save_notes(narrow_model(), bvlc_preprocessing(), tmp_path / "m.safetensors") == []
    assert W.save_notes(narrow_model(), bvlc_preprocessing(), tmp_path / "m.pth") == []
    assert np.isfinite(1.0)


# --- serve: 12 (decoded-pixel budgets), 13 (slow clients), 14 (boundary, reprs) ----------------------------------
@functools.lru_cache(maxsize=4)
def _png(width: int, height: int) -> bytes:
    """A valid black RGB PNG: 7000x7000 is 143 KB to send and 147 MB decoded."""
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")

    comp, row, parts = zlib.compressobj(9), b"\0" * (1 + 3 * width), []
    for _ in range(height):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def _serve_app(**options):
    serve_mod = pytest.importorskip("alexnet.serve", reason="needs the [serve] extra")
    model = narrow_model("alexnet_owt", input_size=64)  # conv1 pads 2: 64x64 inputs reach pool5
    pre = W.Preprocessing(input_size=64, resize_size=72, class_names=CLASSES)
    return serve_mod, serve_mod.create_app(model, pre, options=serve_mod.ServeOptions(**options))


def _asgi(app, method, url, **kw):
    """One request through the app in-process (no lifespan: fine for answers that need no forward pass)."""
    import asyncio

    import httpx

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            return await c.request(method, url, **kw)

    return asyncio.run(go())


def _multipart(boundary: str, parts: list[bytes]) -> tuple[bytes, dict[str, str]]:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="f{i}.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + p
        + b"\r\n"
        for i, p in enumerate(parts)
    )
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def test_long_multipart_boundary_is_a_400(tmp_path):
    _, app = _serve_app()
    for n in (257, 300, 5000):
        body, headers = _multipart("b" * n, [_png(8, 8)])
        r = _asgi(app, "POST", "/v1/predict", content=body, headers=headers)
        assert r.status_code == 400, r.text
        assert "boundary" in r.json()["error"]["message"] and "shorter" in r.json()["error"]["message"]


def test_error_texts_show_no_python_reprs():
    _, app = _serve_app()
    body, headers = _multipart("xyz", [b"this is not an image at all" * 10])
    r = _asgi(app, "POST", "/v1/predict", content=body, headers=headers)
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "object at 0x" not in msg and "<_io" not in msg and "f0.png" in msg
    from alexnet.serve_upload import clean_message

    assert clean_message("cannot identify image file <_io.BytesIO object at 0x7f3a2b1c0d90>") == (
        "cannot identify image file the image"
    )


def test_request_pixel_budget_is_enforced_from_the_headers_before_decoding(monkeypatch):
    """8 PNGs of 7000x7000 (each under --max-pixels) are refused with 413 before a single one is decoded."""
    serve_mod, app = _serve_app()

    def no_decode(*a, **k):
        raise AssertionError("decoded before the budget was checked")

    monkeypatch.setattr("alexnet.serve_upload.decode_image", no_decode)
    body, headers = _multipart("xyz", [_png(7000, 7000)] * 8)
    assert len(body) < 1_500_000  # small to send, 392 megapixels to decode
    r = _asgi(app, "POST", "/v1/predict", content=body, headers=headers)
    assert r.status_code == 413, r.text
    assert "--max-request-pixels" in r.json()["error"]["message"]
    assert app.state.pixel_budget.in_use == 0


def test_server_pixel_budget_in_use_is_a_503_with_retry_after(monkeypatch):
    serve_mod, app = _serve_app(max_request_pixels=60_000_000, max_inflight_pixels=100_000_000)
    monkeypatch.setattr("alexnet.serve_upload.decode_image", lambda *a, **k: pytest.fail("decoded"))
    budget = app.state.pixel_budget
    body, headers = _multipart("xyz", [_png(7000, 7000)])  # 49 megapixels: within one request's budget
    with budget.hold(60_000_000):  # other requests are decoding
        r = _asgi(app, "POST", "/v1/predict", content=body, headers=headers)
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert "--max-inflight-pixels" in r.json()["error"]["message"]
    assert budget.in_use == 0
    with pytest.raises(ValueError, match="--max-inflight-pixels must be >= --max-request-pixels"):
        serve_mod.ServeOptions(max_request_pixels=10, max_inflight_pixels=5)  # an AlexnetError and a ValueError


def test_eight_huge_pngs_leave_the_server_memory_flat(tmp_path):
    """The issue's attack against a real server: the 0.4 MB request took it from 2.35 to 5.6 GB; now a 413, and the
    server's peak memory (VmHWM) grows by less than 100 MB."""
    import httpx
    from _builders import make_weights, start_server

    weights = make_weights(tmp_path / "w.safetensors")
    proc, url = start_server(weights, tmp_path / "log.txt")
    try:

        def peak_kb() -> int:
            with open(f"/proc/{proc.pid}/status") as f:
                status = f.read()
            return int(status.split("VmHWM:")[1].split()[0])

        before = peak_kb()
        files = [("image", (f"{i}.png", _png(7000, 7000), "image/png")) for i in range(8)]
        r = httpx.post(f"{url}/v1/predict", files=files, timeout=60)
        assert r.status_code == 413, r.text
        r = httpx.post(f"{url}/v1/predict", files=[("image", ("s.png", _png(300, 200), "image/png"))], timeout=60)
        assert r.status_code == 200, r.text
        assert peak_kb() - before < 100_000
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _running_server(app, serve_mod):
    """uvicorn in a thread with `uvicorn_config`'s guards, on a free loopback port; returns (server, thread, port)."""
    import threading

    import uvicorn

    sock = serve_mod.bind("127.0.0.1", 0)
    server = uvicorn.Server(serve_mod.uvicorn_config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, sock


def _trickle(port: int, head: bytes, closed_after: dict, key: str, limit_s: float = 6.0) -> None:
    """Send ``head`` a byte every 0.2 s; record when the server closes the connection (or None after limit_s)."""
    import socket

    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit_s) as s:
        s.settimeout(0.2)
        i = 0
        while time.monotonic() - t0 < limit_s:
            try:
                if s.recv(4096) == b"":
                    closed_after[key] = time.monotonic() - t0
                    return
            except TimeoutError:
                pass
            except OSError:
                closed_after[key] = time.monotonic() - t0
                return
            try:
                s.sendall(head[i % len(head) : i % len(head) + 1])
            except OSError:
                closed_after[key] = time.monotonic() - t0
                return
            i += 1
    closed_after[key] = None


def test_trickling_clients_are_cut_and_a_normal_client_is_answered():
    import threading

    import httpx

    serve_mod, app = _serve_app(header_timeout_s=1.0, body_timeout_s=1.0, max_connections=5)
    server, thread, sock = _running_server(app, serve_mod)
    port = sock.getsockname()[1]
    try:
        closed: dict[str, float | None] = {}
        slow_head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
        slow_body = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 9999\r\n\r\n"
        clients = [threading.Thread(target=_trickle, args=(port, slow_head, closed, f"head{i}")) for i in range(2)]
        # the body trickler sends its headers at once, then a byte of body every 0.2 s
        clients.append(threading.Thread(target=_trickle_body, args=(port, slow_body, closed)))
        for c in clients:
            c.start()
        time.sleep(0.3)
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert r.status_code == 200
        for c in clients:
            c.join(timeout=15)
        assert set(closed) == {"head0", "head1", "body"}
        for key, after in closed.items():
            assert after is not None and 0.8 <= after <= 3.5, (key, after)
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert r.status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _trickle_body(port: int, head: bytes, closed: dict) -> None:
    import socket

    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=6) as s:
        s.sendall(head)
        s.settimeout(0.2)
        while time.monotonic() - t0 < 6:
            try:
                data = s.recv(4096)
                if data == b"" or data.startswith(b"HTTP/1.1 4"):
                    closed["body"] = time.monotonic() - t0
                    return
            except TimeoutError:
                pass
            except OSError:
                closed["body"] = time.monotonic() - t0
                return
            try:
                s.sendall(b"\0")
            except OSError:
                closed["body"] = time.monotonic() - t0
                return
    closed["body"] = None


def test_connections_over_the_cap_get_a_503_at_once():
    import socket

    serve_mod, app = _serve_app(header_timeout_s=2.0, max_connections=3)
    server, thread, sock = _running_server(app, serve_mod)
    port = sock.getsockname()[1]
    held = []
    try:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            t0 = time.monotonic()
            answer = extra.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower(), answer
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])  # the server's one error shape, versioned
            error = {"status": 503, "message": "too many open connections: retry shortly"}
            assert body == {"schema": "alexnet.serve.error/1", "error": error}
            assert time.monotonic() - t0 < 1.0
        for s in held:  # the idle ones are cut after the header timeout, freeing their slots
            s.settimeout(5)
            assert s.recv(4096) == b""
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        for s in held:
            s.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_repeated_log_lines_are_rate_limited():
    import logging

    pytest.importorskip("alexnet.serve", reason="needs the [serve] extra")
    from alexnet.serve_guard import RateLimitFilter

    flt = RateLimitFilter(interval_s=60)
    logger = logging.getLogger("alexnet.test_flood")
    logger.propagate = False
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger.addHandler(Keep())
    logger.addFilter(flt)
    try:
        for _ in range(10_000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.exception("socket.accept() out of system resource")
        logger.warning("another kind of message")
        assert len(seen) == 2 and seen[1] == "another kind of message"
        flt.interval_s = 0  # the next line through says how many were dropped
        logger.exception("socket.accept() out of system resource", exc_info=(OSError, OSError(24, "x"), None))
        assert "9999 similar messages dropped" in seen[-1]
    finally:
        logger.handlers.clear()
        logger.removeFilter(flt)
