"""Exporters and round trips: safetensors, .pth, the bvlc .npy layout (with input normalisation folded into conv1)
and ONNX against onnxruntime; `alexnet convert` and `alexnet export`."""

import json

import numpy as np
import pytest
import torch

import alexnet
from alexnet import weights as W
from alexnet.cli import main
from alexnet.weights import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING, WeightsError

NUM_CLASSES = 10


def _image(seed=0, size=227):
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _logits(model, pre, img):
    with torch.no_grad():
        return model.eval()(pre.normalizer()(img)[None])[0]


def test_safetensors_round_trip_is_exact(tmp_path):
    model = alexnet.create_model("caffenet", num_classes=NUM_CLASSES, lrn_k=1.0)
    pre = W.Preprocessing.from_dict({**BVLC_PREPROCESSING.to_dict(), "class_names": list("abcdefghij")})
    path = alexnet.save_model(model, pre, tmp_path / "m.safetensors")
    back, pre2 = alexnet.load_model(path)
    assert back.config == model.config and pre2 == pre
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    assert W.guess_arch(model.config) == "caffenet"  # LRN k does not change the layout


def test_pth_export_loads_in_torchvision(tmp_path):
    import torchvision

    model = alexnet.create_model("alexnet_owt", num_classes=NUM_CLASSES)
    W.export_pth(model, tmp_path / "m.pth")
    tv = torchvision.models.alexnet(num_classes=NUM_CLASSES)
    tv.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(tv.eval()(x), model.eval()(x))


def test_npy_export_folds_input_normalisation_into_conv1(tmp_path):
    """A model trained on torchvision-style inputs (0..1, ImageNet mean/std, RGB) exported to the bvlc layout must
    give the same logits when fed BVLC inputs (0..255, BVLC mean, std 1, BGR in the file)."""
    torch.manual_seed(0)
    model = _narrow_model().eval()
    pre = W.Preprocessing(input_size=227, resize_size=256)  # ImageNet mean/std, value scale 1
    back = _narrow_model().eval()  # the importer's conversion, in memory (the file round trip is tested elsewhere)
    back.load_state_dict(W.bvlc_to_state_dict(W.state_dict_to_bvlc(model, pre), back))
    img = _image(1)
    want, got = _logits(model, pre, img), _logits(back, BVLC_PREPROCESSING, img)
    assert (got - want).abs().max() / want.abs().max() <= 1e-4
    # without folding the same weights would be wrong: the check can fail
    back.load_state_dict(W.bvlc_to_state_dict(W.state_dict_to_bvlc(model), back))
    assert (_logits(back, BVLC_PREPROCESSING, img) - want).abs().max() / want.abs().max() > 1e-2
    # conv1 padding makes folding inexact at the borders: refused, nothing written
    owt = alexnet.create_model("alexnet_owt", num_classes=NUM_CLASSES, fc_features=64)
    with pytest.raises(WeightsError, match="conv1 pads its input"):
        W.export_npy(owt, tmp_path / "owt.npy", preprocessing=TORCHVISION_PREPROCESSING)
    assert not (tmp_path / "owt.npy").exists()


def _narrow_model():
    """Every layer of alexnet2012 (LRN, groups, overlapping pooling), but fc6/fc7 256 wide: quick to export."""
    return alexnet.create_model("alexnet2012", num_classes=NUM_CLASSES, lrn_k=1.0, fc_features=256)


def test_onnx_matches_pytorch_with_dynamic_batch(tmp_path):
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    model = _narrow_model().eval()
    pre = W.Preprocessing.from_dict({**BVLC_PREPROCESSING.to_dict(), "class_names": list("abcdefghij")})
    diff = W.export_onnx(model, pre, tmp_path / "m.onnx")
    assert diff is not None and diff <= 1e-4
    proto = onnx.load(tmp_path / "m.onnx")
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # symbolic batch axis
    meta = {p.key: p.value for p in proto.metadata_props}
    assert W.Preprocessing.from_dict(json.loads(meta["preprocessing"])) == pre
    assert json.loads(meta["config"]) == model.config.to_dict()
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.stack([pre.normalizer()(_image(s)) for s in range(5)])  # batch 5: neither traced nor verified
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (5, NUM_CLASSES) and np.abs(got - want).max() <= 1e-4


def test_cli_convert_chain_and_export(tmp_path, capsys):
    """npy -> safetensors -> npy through the command line is bit-exact."""
    torch.manual_seed(1)
    model = alexnet.create_model("alexnet2012", num_classes=NUM_CLASSES, lrn_k=1.0)
    src = W.export_npy(model, tmp_path / "src.npy")
    assert main(["convert", str(src), str(tmp_path / "m.safetensors"), "--trust-pickle", "--arch", "caffenet"]) == 0
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "back.npy")]) == 0
    capsys.readouterr()
    a = W.read_bvlc_npy(src, allow_pickle=True)
    b = W.read_bvlc_npy(tmp_path / "back.npy", allow_pickle=True)
    assert all(np.array_equal(a[k][0], b[k][0]) and np.array_equal(a[k][1], b[k][1]) for k in a)
    loaded, _ = alexnet.load_model(tmp_path / "m.safetensors")
    assert not loaded.config.lrn_before_pool and loaded.config.lrn_k == 1.0  # caffenet, as asked

    assert main(["convert", str(src), str(tmp_path / "x.onnx"), "--trust-pickle"]) == 1
    assert "unknown output format '.onnx'" in capsys.readouterr().err


def test_cli_export(tmp_path, capsys):
    model = _narrow_model()
    alexnet.save_model(model, W.default_preprocessing(model.config), tmp_path / "m.safetensors")
    assert main(["export", str(tmp_path / "m.safetensors"), "--onnx", str(tmp_path / "m.onnx"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        out["schema"] == "alexnet.export/1"
        and out["max_abs_diff_vs_pytorch"] <= 1e-4
        and (tmp_path / "m.onnx").is_file()
    )
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "m.pt")]) == 0
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert main(["export", str(tmp_path / "missing.pth"), "--onnx", str(tmp_path / "n.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"alexnet export: error: {tmp_path / 'missing.pth'}: no such weights file"


def test_save_weights_picks_the_format_by_suffix(tmp_path):
    torch.manual_seed(2)
    model = _narrow_model()
    pre = W.Preprocessing.from_dict({**BVLC_PREPROCESSING.to_dict(), "class_names": list("abcdefghij")})
    for name in ("m.safetensors", "m.pth", "m.PT"):
        assert W.save_weights(model, pre, tmp_path / name) == tmp_path / name
    # the bvlc layout cannot express a narrow fc6/fc7 (the importer builds 4096): refused unless lossy (issue 14)
    with pytest.raises(WeightsError, match="cannot express this model.*fc_features=4096"):
        W.save_weights(model, pre, tmp_path / "m.npy")
    assert W.save_weights(model, pre, tmp_path / "m.npy", lossy=True) == tmp_path / "m.npy"
    _, pre_st = alexnet.load_model(tmp_path / "m.safetensors")
    assert pre_st == pre  # only .safetensors carries the preprocessing and class names
    assert set(W.read_bvlc_npy(tmp_path / "m.npy", allow_pickle=True)) == set(model.named_layers())
    for name in ("m.pth", "m.PT"):
        state = torch.load(tmp_path / name, weights_only=True)
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(WeightsError, match=r"m\.onnx: unknown output format '\.onnx'"):
        W.save_weights(model, pre, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    assert W.weights_format("a.Safetensors") == "safetensors" and W.weights_format("b.pt") == "pth"


def test_every_record_name_is_a_source(tmp_path, monkeypatch):
    """`load_model(name)` resolves every registry name: bvlc_alexnet is read from the cache where it was placed."""
    import dataclasses

    assert all(rec.name == key for key, rec in W.PRETRAINED.items())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    rec = dataclasses.replace(W.PRETRAINED["bvlc_alexnet"], config_overrides={"lrn_k": 1.0, "fc_features": 256})
    monkeypatch.setitem(W.PRETRAINED, "bvlc_alexnet", rec)
    cached = rec.cache_path()
    assert cached == tmp_path / "home" / "hub" / "checkpoints" / "bvlc_alexnet.npy"
    with pytest.raises(WeightsError, match=f"fetch {rec.url} by hand and place it at {cached}"):
        alexnet.load_model("bvlc_alexnet")
    torch.manual_seed(3)
    model = _narrow_model()
    W.export_npy(model, cached)
    with pytest.raises(WeightsError, match="--trust-pickle"):
        alexnet.load_model("bvlc_alexnet")
    back, pre = alexnet.load_model("bvlc_alexnet", allow_pickle=True)
    assert back.config == model.config and pre.input_size == 227 and pre.class_names is None  # 10 classes
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    caffenet, _ = alexnet.load_model("bvlc_alexnet", allow_pickle=True, arch="caffenet")
    assert not caffenet.config.lrn_before_pool
    with pytest.raises(WeightsError, match="unknown pretrained weights 'nope'"):
        W.load_pretrained("nope")
