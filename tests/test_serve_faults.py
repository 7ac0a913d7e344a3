"""Issue 14, serve faults: the server bounds what clients can make it decode or hold open (items 12, 13, 14):
decoded-pixel budgets, slow clients, connection caps, the multipart boundary, error texts without Python reprs.
In-process apps (tiny models built here) or a server on 127.0.0.1; `alexnet serve` end to end is tests/test_serve.py."""

from __future__ import annotations

import functools
import json
import time

import pytest
from _builders import CLASSES, narrow_model

from alexnet import weights as W


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
