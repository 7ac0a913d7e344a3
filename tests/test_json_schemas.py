"""Every JSON document the toolkit prints or serves carries its version key and matches docs/JSON.md field by
field (tests/_jsondocs.py reads the docs' tables): real output of every command and endpoint, on a tiny model and
tiny images, so that the docs cannot drift from the code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _builders import image_folder, run_folder, saved_weights, write_image
from _jsondocs import check, documented

from alexnet.cli import main
from alexnet.schemas import SCHEMAS, schema_id


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> dict[str, list[dict]]:
    """schema name -> the real documents made here (several where one shape has variants)."""
    capsys = _Capture()
    tmp = tmp_path_factory.mktemp("json")
    data = tmp / "data"
    image_folder(data / "train", per_class=2)
    image_folder(data / "val", per_class=2, seed=1)
    w = saved_weights(tmp / "w.safetensors")
    bad = tmp / "imgs" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = write_image(tmp / "imgs" / "good.png", 3)
    docs: dict[str, list[dict]] = {}
    with capsys:
        docs["models"] = [capsys.json(["models", "--json", "--num-classes", "3"])]
        docs["predict"] = [capsys.json(["predict", str(tmp / "imgs"), "--weights", str(w), "--device", "cpu",
                                        "--topk", "2", "--json"], code=1)]  # fmt: skip
        docs["convert"] = [capsys.json(["convert", str(w), str(tmp / "w2.safetensors"), "--json"])]
        docs["info"] = [
            capsys.json(["info", str(tmp / "w2.safetensors"), "--json"]),  # provenance with a parent
            capsys.json(["info", str(_old_file(w, tmp / "old.safetensors")), "--json"]),  # none recorded
        ]
        docs["export"] = [capsys.json(["export", str(w), "--onnx", str(tmp / "w.onnx"), "--json"])]
        docs["evaluate"] = [capsys.json(["evaluate", str(data), "--weights", str(w), "--device", "cpu", "--json"])]
        docs["features"] = [capsys.json(["features", str(data), "--weights", str(w), "--out",
                                         str(tmp / "f.safetensors"), "--json", "--progress", "none"])]  # fmt: skip
        docs["neighbors"] = [capsys.json(["neighbors", str(good), "--index", str(tmp / "f.safetensors"), "-k", "2",
                                          "--json"])]  # fmt: skip
        docs["stats"] = [capsys.json(["stats", str(data / "train"), "--out", str(tmp / "stats.json"), "--size", "64",
                                      "--json", "--progress", "none"])]  # fmt: skip
        docs["prepare"] = [capsys.json(["prepare", str(data), str(tmp / "prepared"), "--size", "64", "--json",
                                        "--progress", "none"])]  # fmt: skip
        run = run_folder(tmp / "run", data=data)
        docs["report"] = [capsys.json(["report", str(run), "--no-evaluate", "--json", "--progress", "none"])]
    docs["evaluate"].append(json.loads((run / "eval.json").read_text()))  # a run's eval.json: the same schema
    docs.update(_served(w, good))
    return docs


class _Capture:
    """stdout of `alexnet.cli.main` as a string (pytest's capsys is function-scoped; the documents are made once)."""

    def __enter__(self):
        import io

        self._old, self._buf = sys.stdout, io.StringIO()
        sys.stdout = self._buf
        return self

    def __exit__(self, *exc):
        sys.stdout = self._old

    def json(self, argv: list[str], code: int = 0) -> dict:
        self._buf.seek(0)
        self._buf.truncate()
        assert main(argv) == code, argv
        return json.loads(self._buf.getvalue())


def _old_file(w: Path, dst: Path) -> Path:
    """``w`` as a file written before provenance was recorded: the same tensors and metadata, without it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(w), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k not in ("provenance", "description")}
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(dst), metadata=meta)  # noqa: SIM118
    return dst


def _served(w: Path, image: Path) -> dict[str, list[dict]]:
    pytest.importorskip("fastapi", reason="needs the [serve] extra")
    import warnings

    with warnings.catch_warnings():  # starlette's note on its own httpx use: nothing of ours
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    import alexnet
    from alexnet import serve

    model, pre = alexnet.load_model(w)
    app = serve.create_app(model, pre, name=w.name, provenance=alexnet.weights.read_provenance(w))
    data = image.read_bytes()
    with TestClient(app) as client:
        one = client.post("/v1/predict", files={"image": ("a.png", data)}).json()
        two = client.post("/v1/predict?ten_crop=true", files=[("image", ("a.png", data)), ("image", ("b.png", data))])
        return {
            "serve.predict": [one, two.json()],
            "serve.model": [client.get("/v1/model").json()],
            "serve.error": [client.post("/v1/predict", files={"image": ("x.png", b"nope")}).json()],
            "serve.health": [client.get("/healthz").json()],
            "serve.stats": [client.get("/v1/stats").json()],
        }


def test_every_schema_has_a_section_and_a_document(documents):
    """SCHEMAS, docs/JSON.md's sections and the documents made here name the same set (demo: tests/test_demo.py)."""
    assert set(documented()) == {schema_id(n) for n in SCHEMAS}
    assert set(documents) == set(SCHEMAS) - {"demo"}


@pytest.mark.parametrize("name", sorted(set(SCHEMAS) - {"demo"}))
def test_document_matches_the_docs(documents, name):
    docs = documents[name]
    assert all(next(iter(d)) == "schema" and d["schema"] == schema_id(name) for d in docs)  # the key comes first
    assert check(*docs) == []


def test_the_checker_finds_drift(documents):
    """An undocumented field, a wrong type and a missing field are each reported (the check can fail)."""
    doc = dict(documents["convert"][0])
    assert check({**doc, "extra": 1}) == ["alexnet.convert/1: extra (integer) is not documented"]
    assert check({**doc, "dst": 3}) == ["alexnet.convert/1: dst is integer, documented as string"]
    del doc["format"]
    assert check(doc) == ["alexnet.convert/1: documented format is absent"]


def test_rates_are_fractions(documents):
    """One unit for errors and accuracies everywhere: fractions in [0, 1] (docs/JSON.md)."""
    ev = documents["evaluate"][0]
    assert ev["top1_error"] == pytest.approx(1 - ev["top1_accuracy"]) and 0 <= ev["top1_accuracy"] <= 1
    assert all(v is None or 0 <= v <= 1 for v in ev["per_class_accuracy"].values())
