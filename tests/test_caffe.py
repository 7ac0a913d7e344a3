"""Caffe import: tiny AlexNets written as .caffemodel/.prototxt with our protobuf classes (both the current
``layer`` and the legacy V1 ``layers`` format, both LRN orders, renamed layers, legacy and current blob shapes),
checked against an independent reader, OpenCV 4's dnn module, and the one-line errors for files that do not fit."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import threading

import numpy as np
import pytest
import torch
from _builders import closed_port
from _caffe_builders import CH, CLASSES, FC, _layer_specs, _random_blobs, build_net, write_mean, write_model
from google.protobuf import text_format

from alexnet.models import get_config
from alexnet.weights import caffe as C
from alexnet.weights import load_model, save_model
from alexnet.weights.caffe_net import parse_caffe_net
from alexnet.weights.caffe_proto import CaffeError, NetParameter, read_prototxt


def _opencv_logits(model, proto, x_bgr: np.ndarray, fc8_name: str) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    if int(cv2.__version__.split(".")[0]) >= 5:
        pytest.skip("OpenCV 5 removed its Caffe importer")
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    net.setInput(x_bgr)
    return net.forward(fc8_name)


@pytest.mark.parametrize(
    "fmt, order, legacy, fc8_name",
    [
        ("current", "lrn_pool", False, "fc8"),
        ("current", "pool_lrn", False, "fc8_flickr"),
        ("v1", "lrn_pool", True, "fc8_renamed"),
        ("v1", "pool_lrn", True, "fc8"),
    ],
)
def test_logits_match_opencv(tmp_path, fmt, order, legacy, fc8_name):
    model_path, proto, _ = write_model(tmp_path, fmt=fmt, order=order, legacy=legacy, fc8_name=fc8_name)
    model, pre = C.load_caffe(model_path, proto)
    assert model.config.lrn_before_pool == (order == "lrn_pool")
    assert (model.config.lrn_k, model.config.lrn_alpha, model.config.lrn_size) == (1.0, pytest.approx(0.02), 5)
    assert model.config.conv_channels == CH and model.config.fc_features == FC and model.config.groups == 2
    assert (pre.input_size, pre.value_scale, pre.std, pre.class_names) == (227, 255.0, (1.0, 1.0, 1.0), None)
    rng = np.random.default_rng(1)
    x_bgr = rng.uniform(-128, 128, (2, 3, 227, 227)).astype(np.float32)  # Caffe's input: BGR minus the mean
    want = _opencv_logits(model_path, proto, x_bgr, fc8_name)
    with torch.no_grad():
        got = model(torch.from_numpy(np.ascontiguousarray(x_bgr[:, ::-1]))).numpy()  # ours takes RGB
    assert got.shape == (2, CLASSES)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert np.abs(want).max() > 1.0  # a test that can fail: the logits are not all ~0


def test_lrn_k_is_read(tmp_path):
    lrn = {"local_size": 3, "alpha": 0.5, "beta": 0.6, "k": 2.0}
    specs = _layer_specs("lrn_pool", 2, "fc8", lrn=lrn)
    blobs = _random_blobs(specs, 0)
    (tmp_path / "m.caffemodel").write_bytes(build_net(specs, "current", blobs).SerializeToString())
    (tmp_path / "d.prototxt").write_text(text_format.MessageToString(build_net(specs, "current")))
    model, _ = C.load_caffe(tmp_path / "m.caffemodel", tmp_path / "d.prototxt")
    cfg = model.config
    assert (cfg.lrn_size, cfg.lrn_alpha, cfg.lrn_beta, cfg.lrn_k) == (3, 0.5, pytest.approx(0.6), 2.0)
    # Caffe's ACROSS_CHANNELS LRN (lrn_layer.cpp): x / (k + alpha / n * sum of x^2 over n channels)^beta
    x = np.random.default_rng(0).normal(0, 2, (1, 6, 4, 4))
    sq = np.pad(x**2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    window = sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:]
    want = x / (2.0 + 0.5 / 3 * window) ** 0.6
    norm = next(m for m in model.features if isinstance(m, torch.nn.LocalResponseNorm))
    got = norm(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt, order, arch", [("v1", "lrn_pool", "alexnet2012"), ("current", "pool_lrn", "caffenet")])
def test_full_size_deploy_prototxt_is_the_registered_arch(fmt, order, arch, tmp_path):
    """The zoo's deploy nets (bvlc_alexnet: V1 layers, input_dim; caffenet: current layers) read as exactly our
    registered architectures with Caffe's k = 1, training-only fields (fillers, lr multipliers) skipped."""
    lrn = {"local_size": 5, "alpha": 0.0001, "beta": 0.75}  # k left to Caffe's default, as the zoo's files do
    specs = _layer_specs(order, 2, "fc8", lrn=lrn, ch=(96, 256, 384, 384, 256), fc=4096, classes=1000)
    net = build_net(specs, fmt, input_dims=(10, 3, 227, 227))
    filler = 'weight_filler { type: "gaussian" std: 0.01 variance_norm: FAN_IN }\n    engine: CUDNN'
    text = text_format.MessageToString(net).replace("convolution_param {", "convolution_param {\n    " + filler)
    silence = (
        'layers { name: "x" type: SILENCE bottom: "prob" blobs_lr: 0 }'
        if fmt == "v1"
        else ('layer { name: "x" type: "Silence" bottom: "prob" param { lr_mult: 0 } }')
    )
    path = tmp_path / "deploy.prototxt"
    path.write_text(text + silence + "\n")
    spec = parse_caffe_net(read_prototxt(path))
    got = get_config(spec.arch, num_classes=spec.num_classes, **spec.config_overrides)
    assert spec.arch == arch and got == get_config(arch, lrn_k=1.0)
    assert spec.layer_names["fc8"] == "fc8" and spec.input_size == 227


def test_architecture_from_the_lrn_order(tmp_path):
    a, pa, _ = write_model(tmp_path, order="lrn_pool")
    b, pb, _ = write_model(tmp_path, order="pool_lrn")
    assert C.load_caffe(a, pa)[0].config.lrn_before_pool
    assert not C.load_caffe(b, pb)[0].config.lrn_before_pool
    with pytest.raises(CaffeError, match=r"the net is caffenet \(pooling before LRN\), not alexnet2012"):
        C.load_caffe(b, pb, arch="alexnet2012")


def test_blobs_are_copied_with_only_the_bgr_flip(tmp_path):
    model_path, proto, blobs = write_model(tmp_path, groups=1, legacy=True)
    model, _ = C.load_caffe(model_path, proto)
    assert model.config.groups == 1
    np.testing.assert_array_equal(model.conv1.weight.detach().numpy(), blobs["conv1"][0][:, ::-1].astype(np.float32))
    np.testing.assert_array_equal(model.conv2.weight.detach().numpy(), blobs["conv2"][0].astype(np.float32))
    # fc6 reads pool5 flattened as (c, h, w) in both: no reordering
    np.testing.assert_array_equal(model.fc6.weight.detach().numpy(), blobs["fc6"][0].astype(np.float32))
    np.testing.assert_array_equal(model.fc8.bias.detach().numpy(), blobs["fc8"][1].astype(np.float32))


def test_transposed_inner_product_and_no_bias(tmp_path):
    specs = _layer_specs("lrn_pool", 2, "fc8")
    fc7 = next(sp for sp in specs if sp[1] == "fc7")[4]["inner_product_param"]
    fc7.update(transpose=True, bias_term=False)
    blobs = _random_blobs(specs, 0)
    blobs["fc7"] = [blobs["fc7"][0].T]  # stored (in, out), one blob
    (tmp_path / "m.caffemodel").write_bytes(build_net(specs, "current", blobs).SerializeToString())
    (tmp_path / "d.prototxt").write_text(text_format.MessageToString(build_net(specs, "current")))
    model, _ = C.load_caffe(tmp_path / "m.caffemodel", tmp_path / "d.prototxt")
    np.testing.assert_array_equal(model.fc7.weight.detach().numpy(), blobs["fc7"][0].T.astype(np.float32))
    assert not model.fc7.bias.detach().any()


def test_the_caffemodels_own_definition_and_round_trip(tmp_path):
    model_path, proto, _ = write_model(tmp_path, fmt="v1")
    ours, _ = C.load_caffe(model_path, proto)
    alone, pre = C.load_caffe(model_path, None)  # no prototxt: the layers the caffemodel carries
    for k, v in ours.state_dict().items():
        assert torch.equal(alone.state_dict()[k], v)
    pre.class_names = [f"c{i}" for i in range(CLASSES)]
    save_model(alone, pre, tmp_path / "m.safetensors")
    again, pre2 = load_model(tmp_path / "m.safetensors")
    assert torch.equal(again.fc8.weight, alone.fc8.weight) and pre2.to_dict() == pre.to_dict()


# --- preprocessing: mean and labels -------------------------------------------------------------------------------
def test_binaryproto_mean_becomes_the_rgb_channel_mean(tmp_path):
    model_path, proto, _ = write_model(tmp_path)
    mean = write_mean(tmp_path / "mean.binaryproto")
    _, pre = C.load_caffe(model_path, proto, mean=mean)
    assert pre.mean == pytest.approx((120.0, 110.0, 100.0), abs=1e-4)  # BGR file, RGB preprocessing
    assert (pre.resize_size, pre.input_size, pre.value_scale) == (256, 227, 255.0)
    img = C.read_caffe_mean(mean)
    assert img.shape == (3, 256, 256) and img[0].mean() == pytest.approx(120.0, abs=1e-4)


def test_mean_values_bgr_triple_and_default(tmp_path):
    model_path, proto, _ = write_model(tmp_path)
    _, pre = C.load_caffe(model_path, proto, mean=(104.0, 117.0, 123.0))
    assert pre.mean == (123.0, 117.0, 104.0)
    _, pre = C.load_caffe(model_path, proto)
    assert pre.mean == pytest.approx((123.68, 116.779, 103.939))  # ImageNet's, as for bvlc_alexnet.npy


def test_transform_param_of_a_data_layer(tmp_path):
    specs = _layer_specs("lrn_pool", 2, "fc8")
    net = build_net(specs, "current")
    del net.input[:], net.input_shape[:]
    data = NetParameter().layer.add(name="data", type="Data")
    data.top.append("data")
    data.transform_param.crop_size = 227
    data.transform_param.mean_value.extend([104.0, 117.0, 123.0])
    data.transform_param.scale = 0.5
    net.layer.insert(0, data)
    proto = tmp_path / "train_val.prototxt"
    proto.write_text(text_format.MessageToString(net))
    model_path, _, _ = write_model(tmp_path)
    _, pre = C.load_caffe(model_path, proto)
    assert (pre.input_size, pre.mean, pre.std) == (227, (123.0, 117.0, 104.0), (2.0, 2.0, 2.0))


def test_labels_files(tmp_path):
    syn = tmp_path / "synset_words.txt"
    syn.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    assert C.read_labels(syn) == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    places = tmp_path / "categories_places365.txt"
    places.write_text("/a/airfield 0\n/a/airplane_cabin 1\n")
    assert C.read_labels(places) == ["/a/airfield", "/a/airplane_cabin"]
    model_path, proto, _ = write_model(tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {i}\n" for i in range(CLASSES)))
    assert C.load_caffe(model_path, proto, labels=names)[1].class_names[4] == "class 4"
    with pytest.raises(CaffeError, match="2 class names for a net with 5 classes"):
        C.load_caffe(model_path, proto, labels=syn)


# --- one-line errors ----------------------------------------------------------------------------------------------
def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_truncated_caffemodel(tmp_path):
    model_path, proto, _ = write_model(tmp_path)
    data = model_path.read_bytes()
    model_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaffeError) as e:
        C.load_caffe(model_path, proto)
    assert "truncated or corrupt" in _one_line(e)


def test_prototxt_of_another_network(tmp_path):
    model_path, proto, _ = write_model(tmp_path)
    text = proto.read_text()
    bn = 'layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 1e-5 } }\n'
    at = text.index('layer {\n  name: "relu1"')
    (tmp_path / "bn.prototxt").write_text(text[:at] + bn + text[at:])
    with pytest.raises(CaffeError) as e:
        C.load_caffe(model_path, tmp_path / "bn.prototxt")
    assert "layer 'bn1' (BatchNorm) does not fit an AlexNet: expected ReLU (relu1)" in _one_line(e)
    specs = _layer_specs("lrn_pool", 2, "fc8", conv1_kernel=7)
    (tmp_path / "k7.prototxt").write_text(text_format.MessageToString(build_net(specs, "current")))
    with pytest.raises(CaffeError) as e:
        C.load_caffe(model_path, tmp_path / "k7.prototxt")
    assert "layer 'conv1' (Convolution) is 7x7 stride 4 pad 0; AlexNet's conv1 is 11x11 stride 4" in _one_line(e)


def test_blob_of_the_wrong_shape(tmp_path):
    specs = _layer_specs("lrn_pool", 2, "fc8")
    blobs = _random_blobs(specs, 0)
    blobs["conv3"][0] = blobs["conv3"][0][:, :4]  # conv3 sees only half its inputs
    (tmp_path / "bad.caffemodel").write_bytes(build_net(specs, "current", blobs).SerializeToString())
    (tmp_path / "d.prototxt").write_text(text_format.MessageToString(build_net(specs, "current")))
    with pytest.raises(CaffeError) as e:
        C.load_caffe(tmp_path / "bad.caffemodel", tmp_path / "d.prototxt")
    assert "conv3 ('conv3') weight has shape (12, 4, 3, 3), expected (12, 8, 3, 3) (OIHW)" in _one_line(e)


def test_mean_of_the_wrong_size(tmp_path):
    model_path, proto, _ = write_model(tmp_path)
    small = write_mean(tmp_path / "small.binaryproto", shape=(1, 3, 100, 100))
    with pytest.raises(CaffeError) as e:
        C.load_caffe(model_path, proto, mean=small)
    assert "the mean is 100x100, smaller than the net's 227 crop" in _one_line(e)
    gray = write_mean(tmp_path / "gray.binaryproto", shape=(1, 1, 256, 256))
    with pytest.raises(CaffeError, match=r"the mean has shape \(1, 256, 256\), expected 3 channels"):
        C.load_caffe(model_path, proto, mean=gray)


# --- the zoo's records: downloads served from 127.0.0.1 -----------------------------------------------------------
def test_zoo_records_are_data():
    rec = C.CAFFE_ZOO["bvlc_alexnet"]
    assert rec.sha1 == "9116a64c0fbe4459d18f4bb6b56d647b63920377" and rec.file_name == "bvlc_alexnet.caffemodel"
    assert (C.CAFFE_ZOO["bvlc_reference_caffenet"].arch, C.CAFFE_ZOO["finetune-flickr-style"].num_classes) == (
        "caffenet",
        20,
    )
    assert all(len(r.sha1) == 40 for r in C.CAFFE_ZOO.values())


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    model_path, _, _ = write_model(root, order="pool_lrn")
    target = root / "tiny_zoo.caffemodel"
    model_path.rename(target)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec = C.CaffeZooWeights(
        "tiny", f"http://127.0.0.1:{server.server_address[1]}/tiny_zoo.caffemodel",
        hashlib.sha1(target.read_bytes()).hexdigest(), "caffenet", CLASSES, "-", "test",
    )  # fmt: skip
    yield rec
    server.shutdown()
    server.server_close()


def test_zoo_download_is_sha1_checked(served, tmp_path, capsys):
    cache = tmp_path / "cache"
    model, pre = C.load_caffe_zoo(served, model_dir=cache, progress=False)
    assert (cache / "tiny_zoo.caffemodel").is_file() and not model.config.lrn_before_pool
    assert pre.mean == pytest.approx(tuple(reversed(C.ILSVRC_2012_MEAN_BGR)))
    assert capsys.readouterr().out == ""
    with pytest.raises(CaffeError, match="these are caffenet weights, not alexnet2012"):
        C.load_caffe_zoo(served, model_dir=cache, arch="alexnet2012")
    wrong = dataclasses.replace(served, sha1="0" * 40)
    other = tmp_path / "other"
    with pytest.raises(CaffeError) as e:
        C.load_caffe_zoo(wrong, model_dir=other, progress=False)
    assert "fails its sha1 check" in _one_line(e) and not any(other.iterdir())


def test_zoo_offline_error_names_url_and_path(tmp_path):
    rec = dataclasses.replace(C.CAFFE_ZOO["bvlc_alexnet"], url=f"http://127.0.0.1:{closed_port()}/x.caffemodel")
    with pytest.raises(CaffeError) as e:
        C.load_caffe_zoo(rec, model_dir=tmp_path, progress=False)
    msg = _one_line(e)
    assert f"cannot download {rec.url}" in msg and f"place it at {tmp_path / 'x.caffemodel'}" in msg


# --- the command line -----------------------------------------------------------------------------------------------
def test_cli_convert_and_predict_a_caffemodel(tmp_path, capsys):
    from PIL import Image

    from alexnet.cli import main

    model_path, proto, _ = write_model(tmp_path)
    mean = write_mean(tmp_path / "mean.binaryproto")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {i}\n" for i in range(CLASSES)))
    out = tmp_path / "out.safetensors"
    argv = ["convert", str(model_path), str(out), "--prototxt", str(proto), "--mean", str(mean), "--labels", str(names)]
    assert main(argv) == 0
    converted, pre = load_model(out)
    direct, direct_pre = C.load_caffe(model_path, proto, mean=mean, labels=names)
    assert pre.class_names == direct_pre.class_names and pre.mean == direct_pre.mean
    for a, b in zip(converted.state_dict().values(), direct.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(img)
    capsys.readouterr()
    argv = ["predict", str(img), "--weights", str(model_path), "--prototxt", str(proto), "--labels", str(names)]
    assert main([*argv, "--json", "--precision", "fp32", "--topk", "2"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["schema"] == "alexnet.predict/1" and got["results"][0]["predictions"][0]["name"].startswith("class ")
    assert main(["predict", str(img), "--weights", str(model_path), "--mean", "104,117,123", "--json"]) == 1
    assert "--prototxt" in capsys.readouterr().err  # a caffemodel without its net definition: one line
    assert main(["predict", str(img), "--weights", str(out), "--prototxt", str(proto)]) == 1
    assert "for .caffemodel weights" in capsys.readouterr().err


# --- fine-tuning from a .caffemodel (issue 23: the training config carries a WeightsSource) --------------------------
def _image_folder(root, classes=("cat", "dog"), per_class=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_finetune_from_a_caffemodel_and_its_prototxt(tmp_path, capsys):
    """`alexnet finetune DATA --weights x.caffemodel --prototxt deploy.prototxt` reads the weights as predict does
    (today: "error: flags: unknown setting(s) prototxt"); config.json records the Caffe files, no pickle trust."""
    from alexnet.cli import main
    from alexnet.options import WeightsSource

    model_path, proto, _ = write_model(tmp_path)
    data = _image_folder(tmp_path / "data")
    out = tmp_path / "ft"
    args = ["finetune", str(data), "--weights", str(model_path), "--prototxt", str(proto), "--mean", "104,117,123",
            "--train-layers", "fc8", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--progress", "none",
            "--no-tensorboard", "--val-split", "0.25", "--out", str(out), "--json"]  # fmt: skip
    rc = main(args)
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(stdout)  # --json: stdout is the summary alone, the log went to stderr
    assert summary == {"schema": "alexnet.train/1", "command": "finetune", "out": str(out), "epochs_done": 1,
                       "best_val_top1_error": summary["best_val_top1_error"], "interrupted": False, "skipped": 0,
                       "signal": None}  # fmt: skip
    recorded = json.loads((out / "config.json").read_text())["weights"]
    assert recorded == {"source": str(model_path), "prototxt": str(proto), "mean": [104.0, 117.0, 123.0]}
    tuned, pre = load_model(out / "last.safetensors")
    caffe, caffe_pre = load_model(WeightsSource(str(model_path), prototxt=str(proto), mean="104,117,123"))
    assert torch.equal(tuned.conv2.weight, caffe.conv2.weight)  # frozen: Caffe's filters, read once
    assert tuned.config.num_classes == 2 and pre.class_names == ["cat", "dog"]
    assert pre.mean == caffe_pre.mean and pre.value_scale == 255  # Caffe's 0..255 BGR-mean input, kept
