"""Features and nearest neighbours (issue 5; the paper's section 6.1 and Figure 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _builders import INPUT, image_folder, png_size, saved_weights, tiny_model

from alexnet.cli import main
from alexnet.features import (
    FeatureError,
    FeatureIndex,
    IndexData,
    build_index,
    image_features,
    index_weights,
    layer_output,
    load_features,
    nearest,
    neighbors_for_images,
    save_features,
)
from alexnet.models import LAYER_NAMES


def test_layer_outputs_are_the_tapped_activations():
    model = tiny_model()
    x = torch.randn(2, 3, INPUT, INPUT)
    taps: dict[str, torch.Tensor] = {}
    hooks = [
        model.features[1].register_forward_hook(lambda m, i, o: taps.__setitem__("conv1", o.clone())),
        model.classifier[2].register_forward_hook(lambda m, i, o: taps.__setitem__("fc6", o.clone())),
        model.classifier[5].register_forward_hook(lambda m, i, o: taps.__setitem__("fc7", o.clone())),
    ]  # the ReLUs after conv1, fc6 and fc7 (alexnet_owt's dropout comes before fc6 and fc7)
    with torch.no_grad():
        logits = model(x)
        for h in hooks:
            h.remove()
        out = {name: layer_output(model, x, name) for name in LAYER_NAMES}
    assert torch.equal(out["conv1"], taps["conv1"].flatten(1))
    assert torch.equal(out["fc6"], taps["fc6"]) and torch.equal(out["fc7"], taps["fc7"])
    assert (out["fc7"] >= 0).all() and out["fc7"].shape == (2, 64)
    assert torch.equal(out["conv5"], model.forward_features(x)) and out["conv5"].shape == (2, 32 * 36)
    assert torch.equal(out["fc8"], logits)
    with pytest.raises(FeatureError, match="unknown layer"):
        layer_output(model, x, "fc9")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    data = image_folder(root / "train", per_class=3)
    w = saved_weights(root / "w.safetensors")
    index = index_weights(w, IndexData(data, batch_size=4), "fc7", device="cpu")
    return root, data, w, index


def test_planted_duplicate_is_its_own_nearest_neighbour(indexed, tmp_path: Path):
    root, data, w, index = indexed
    assert len(index) == 9 and index.layer == "fc7" and index.dim == 64 and index.classes == ["cat", "dog", "fox"]
    planted = data / "dog" / "dog1.png"
    query = shutil.copy(planted, tmp_path / "query.png")  # the same image under another name
    images, idx, ranked = neighbors_for_images([query], index, k=9, device="cpu")
    first = ranked[0][0]
    assert first.name == str(planted) and first.class_name == "dog" and first.rank == 1
    assert first.distance < 1e-4 * float(index.features[first.position].norm())
    # distances match NumPy's, and the ranking is NumPy's argsort
    from alexnet.weights import load_model

    model, pre = load_model(w)
    q = image_features(model, pre, [query], "fc7").numpy().astype(np.float64)[0]
    f = index.features.numpy().astype(np.float64)
    want = np.linalg.norm(f - q, axis=1)
    got = np.array([n.distance for n in ranked[0]])
    np.testing.assert_allclose(got, np.sort(want), rtol=1e-9, atol=1e-12)
    assert [n.position for n in ranked[0]] == list(np.argsort(want, kind="stable"))
    cos = nearest(index, torch.from_numpy(q).float(), k=9, metric="cosine")[0]
    want_cos = 1 - (f @ q) / (np.linalg.norm(f, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose([n.distance for n in cos], np.sort(want_cos), rtol=1e-6, atol=1e-9)
    assert cos[0].position == first.position


def test_build_index_takes_a_loaded_model_and_shows_progress(indexed, capsys):
    _, data, w, index = indexed
    from alexnet.weights import load_model

    model, pre = load_model(w)
    again = build_index(model, pre, IndexData(data, batch_size=4), "fc7", device="cpu", progress="log", weights="w")
    assert torch.equal(again.features, index.features) and again.names == index.names and again.weights == "w"
    assert again.data == index.data == {"source": str(data.resolve()), "split": "train", "val_split": 0.0, "seed": 0}
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1].startswith("features fc7: 3/3 batch (100%)")  # 9 images in batches of 4


def test_round_trip_and_layer_mismatch(indexed, tmp_path: Path):
    _, _, w, index = indexed
    path = save_features(index, tmp_path / "f.safetensors")
    back = load_features(path, layer="fc7")
    assert torch.equal(back.features, index.features) and torch.equal(back.labels, index.labels)
    assert back.names == index.names and back.indices == index.indices == list(range(9))
    assert (back.arch, back.weights, back.data["split"]) == (index.arch, str(Path(w).resolve()), "train")
    with pytest.raises(FeatureError, match="holds fc7 features, not fc6"):
        load_features(path, layer="fc6")
    with pytest.raises(FeatureError, match="not a feature index"):
        load_features(w)  # a weights file is not an index
    with pytest.raises(FeatureError, match="no such feature index"):
        load_features(tmp_path / "missing.safetensors")
    other = FeatureIndex(torch.zeros(2, 5), torch.zeros(2, dtype=torch.int64), ["a", "b"], "fc6", "alexnet_owt", "")
    with pytest.raises(FeatureError, match="have 64 values.*have 5"):
        nearest(other, index.features[:1])


def test_cli_features_and_neighbors(indexed, tmp_path: Path, capsys):
    root, data, w, _ = indexed
    out = tmp_path / "conv5.safetensors"
    assert main(["features", str(data), "--weights", str(w), "--layer", "conv5", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "schema": "alexnet.features/1", "out": str(out), "layer": "conv5", "images": 9, "dim": 1152
    }  # fmt: skip
    query = data / "fox" / "fox2.png"
    png = tmp_path / "nb.png"
    args = ["neighbors", str(query), str(data / "cat" / "cat0.png"), "--index", str(out), "--topk", "3"]
    assert main([*args, "--out", str(png), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["schema"], doc["layer"], doc["metric"], doc["index"]) == (
        "alexnet.neighbors/1",
        "conv5",
        "euclidean",
        str(out),
    )
    res = doc["queries"]
    assert [r["neighbors"][0]["name"] for r in res] == [str(query), str(data / "cat" / "cat0.png")]
    assert all(len(r["neighbors"]) == 3 for r in res)
    assert png_size(png) == (180 * 4, 200 * 2) and png.stat().st_size > 1000
    # an index of another layer than asked: one clear line, exit 1
    assert main([*args, "--layer", "fc7"]) == 1
    err = capsys.readouterr().err
    assert "holds conv5 features, not fc7" in err and err.count("\n") == 1
