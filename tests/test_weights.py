"""Importers: the tutorial's bvlc_alexnet.npy against an independent NumPy reference of its TensorFlow graph,
torchvision's pretrained weights through torch hub's download path (served from 127.0.0.1), .pth state dicts,
and every kind of bad input."""

import dataclasses
import functools
import hashlib
import http.server
import shutil
import threading

import numpy as np
import pytest
import torch
from _builders import closed_port
from bvlc_reference import BVLC_MEAN_BGR, forward, random_bvlc_layers, write_py2_npy

import alexnet
from alexnet import weights as W
from alexnet.cli import main
from alexnet.weights import WeightsError

NUM_CLASSES = 10


# --- bvlc_alexnet.npy -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bvlc_layers():
    return random_bvlc_layers(NUM_CLASSES, seed=0)


@pytest.fixture(scope="module")
def bvlc_file(bvlc_layers, tmp_path_factory):
    path = tmp_path_factory.mktemp("bvlc") / "bvlc_alexnet.npy"
    write_py2_npy(path, bvlc_layers)  # bytes keys and array data as Python 2 strings, HWIO, NHWC fc6 rows
    return path


@pytest.fixture(scope="module")
def bvlc_model(bvlc_file):
    return alexnet.load_model(bvlc_file, allow_pickle=True)  # arch alexnet2012 by default


@pytest.fixture(scope="module")
def image():
    return torch.randint(0, 256, (3, 227, 227), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _reference_logits(layers, image, lrn_before_pool):
    bgr = image.numpy()[::-1].transpose(1, 2, 0).astype(np.float64) - BVLC_MEAN_BGR  # (227, 227, 3) BGR
    return forward(layers, bgr[None], lrn_before_pool=lrn_before_pool)[0]


@pytest.mark.parametrize("arch", ["alexnet2012", "caffenet"])
def test_bvlc_import_matches_numpy_tensorflow_reference(arch, bvlc_file, bvlc_layers, bvlc_model, image):
    if arch == "alexnet2012":
        model, pre = bvlc_model
    else:
        model, pre = alexnet.load_model(bvlc_file, arch=arch, allow_pickle=True)
    assert model.config.lrn_k == 1.0 and model.config.lrn_before_pool == (arch == "alexnet2012")
    assert (pre.input_size, pre.value_scale, pre.std) == (227, 255.0, (1.0, 1.0, 1.0))
    assert pre.mean == pytest.approx((123.68, 116.779, 103.939))
    with torch.no_grad():
        ours = model(pre.normalizer()(image)[None])[0].double().numpy()  # RGB in, as every model here
    ref = _reference_logits(bvlc_layers, image, lrn_before_pool=arch == "alexnet2012")  # BGR in
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel <= 1e-4, rel
    # the check can fail: the other LRN order gives clearly different logits
    other = _reference_logits(bvlc_layers, image, lrn_before_pool=arch != "alexnet2012")
    assert np.abs(other - ref).max() / np.abs(ref).max() > 1e-2


def test_bvlc_round_trip_is_bit_exact(bvlc_model, bvlc_layers, tmp_path):
    model, pre = bvlc_model
    out = W.export_npy(model, tmp_path / "again.npy", preprocessing=pre)  # BVLC preprocessing: nothing folded
    back = W.read_bvlc_npy(out, allow_pickle=True)
    assert set(back) == set(bvlc_layers)
    for name, (w, b) in bvlc_layers.items():
        assert back[name][0].dtype == np.float32 and back[name][0].shape == w.shape
        assert np.array_equal(back[name][0], w), name
        assert np.array_equal(back[name][1], b), name
    # the tutorial reads it with np.load(..., encoding="bytes").item() and iterates [W, b]
    raw = np.load(out, allow_pickle=True, encoding="bytes").item()
    assert [a.ndim for a in raw["fc6"]] == [2, 1]


def test_bvlc_conversions_listed():
    listed = " ".join(f"{a} {b}" for a, b in W.BVLC_CONVERSIONS)
    for word in ("HWIO", "BGR", "(h, w, c)", "(in, out)"):
        assert word in listed


def test_bvlc_py3_bytes_keys_and_dict_values(tmp_path):
    w, b = np.ones((2, 3), np.float32), np.zeros(3, np.float32)
    np.save(tmp_path / "k.npy", {b"fc8": [w, b], "fc7": {"weights": w, "biases": b}}, allow_pickle=True)
    layers = W.read_bvlc_npy(tmp_path / "k.npy", allow_pickle=True)
    assert set(layers) == {"fc8", "fc7"} and layers["fc7"][0] is not None


def test_bvlc_pickle_refused_without_opt_in(bvlc_file):
    with pytest.raises(WeightsError, match=r"pickle.*arbitrary code.*--trust-pickle") as e:
        alexnet.load_model(bvlc_file)
    assert "\n" not in str(e.value) and str(bvlc_file) in str(e.value)


def test_bvlc_wrong_shape_names_layer(bvlc_layers):
    bad = dict(bvlc_layers)
    w, b = bad["conv2"]
    bad["conv2"] = (np.ascontiguousarray(w.transpose(3, 2, 0, 1)), b)  # OIHW: the wrong layout
    model = alexnet.create_model("alexnet2012", num_classes=NUM_CLASSES)
    with pytest.raises(WeightsError, match=r"conv2 W has shape \(256, 48, 5, 5\), expected \(5, 5, 48, 256\) HWIO"):
        W.bvlc_to_state_dict(bad, model, "f.npy")
    bad = {k: v for k, v in bvlc_layers.items() if k != "fc7"}
    with pytest.raises(WeightsError, match="missing fc7"):
        W.bvlc_to_state_dict(bad, model, "f.npy")
    with pytest.raises(WeightsError, match="fc8 W has shape .*fine-tune"):
        W.bvlc_to_state_dict(bvlc_layers, alexnet.create_model("alexnet2012", num_classes=1000), "f.npy")
    bad = dict(bvlc_layers, fc7=(bvlc_layers["fc7"][0], np.zeros(5, np.float32)))
    with pytest.raises(WeightsError, match=r"fc7 b has shape \(5,\), expected \(4096,\)"):
        W.bvlc_to_state_dict(bad, model, "f.npy")


def test_bvlc_bad_files(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        alexnet.load_model(tmp_path / "nope.npy", allow_pickle=True)
    np.save(tmp_path / "array.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(WeightsError, match=r"holds an array of shape \(3, 4\), not the bvlc_alexnet layout"):
        alexnet.load_model(tmp_path / "array.npy", allow_pickle=True)
    np.save(tmp_path / "list.npy", {"conv1": np.zeros(3, np.float32)}, allow_pickle=True)
    with pytest.raises(WeightsError, match=r"layer conv1 is not \[W, b\]"):
        alexnet.load_model(tmp_path / "list.npy", allow_pickle=True)
    data = (tmp_path / "list.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) - 20])
    with pytest.raises(WeightsError, match="not a readable .npy file") as e:
        alexnet.load_model(tmp_path / "cut.npy", allow_pickle=True)
    assert "\n" not in str(e.value)
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(WeightsError, match="not a readable .npy file"):
        alexnet.load_model(tmp_path / "text.npy", allow_pickle=True)


def test_cli_convert_npy_needs_trust_pickle(bvlc_file, tmp_path, capsys):
    assert main(["convert", str(bvlc_file), str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("alexnet convert: error:") and "--trust-pickle" in err and "\n" not in err


# --- .pth state dicts -------------------------------------------------------------------------------------------
def test_pth_ddp_checkpoint_and_arch_choice(tmp_path):
    src = alexnet.create_model("caffenet", num_classes=NUM_CLASSES)
    ckpt = {"model": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "ckpt.pth")
    model, pre = alexnet.load_model(tmp_path / "ckpt.pth", arch="caffenet")
    assert not model.config.lrn_before_pool and model.config.num_classes == NUM_CLASSES
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert pre.class_names is None  # 10 classes: ImageNet's names would be wrong
    with pytest.raises(WeightsError, match="fc8 has 10 classes.*fine-tune"):
        alexnet.load_model(tmp_path / "ckpt.pth", num_classes=1000)
    with pytest.raises(WeightsError, match=r"keys do not match the model: missing conv2.weight \(features.3.weight\)"):
        alexnet.load_model(tmp_path / "ckpt.pth", arch="alexnet_owt")  # LRN layers shift torchvision's indices
    ckpt["model"]["module.features.8.weight"] = torch.zeros(384, 256, 5, 5)
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(
        WeightsError, match=r"conv3.weight \(features.8.weight\) has shape \(384, 256, 5, 5\), expected"
    ):
        alexnet.load_model(tmp_path / "bad.pth")


class Evil:
    """Any class: unpickling it would import and run this module's code."""


def test_pth_bad_files(tmp_path):
    torch.save({"features.0.weight": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only=True.*run code"):
        alexnet.load_model(tmp_path / "evil.pth")
    torch.save({"features.0.weight": torch.zeros(96, 3, 11, 11)}, tmp_path / "small.pth")
    data = (tmp_path / "small.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable torch file"):
        alexnet.load_model(tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match="keys do not match the model: missing .*conv1.bias"):
        alexnet.load_model(tmp_path / "small.pth")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        alexnet.load_model(tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="unknown weights format '.h5'"):
        (tmp_path / "m.h5").write_bytes(b"x")
        alexnet.load_model(tmp_path / "m.h5")


# --- torchvision's weights through torch hub -------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving a torchvision-layout state dict named as torch hub expects:
    ``alexnet-owt-<first 8 hex digits of its sha256>.pth``."""
    root = tmp_path_factory.mktemp("www")
    torch.manual_seed(0)
    state = alexnet.create_model("alexnet_owt", num_classes=NUM_CLASSES).state_dict()
    tmp = root / "tmp.pth"
    torch.save(state, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    name = f"alexnet-owt-{sha[:8]}.pth"
    tmp.rename(root / name)
    shutil.copy(root / name, root / "alexnet-owt-0badbad0.pth")  # the hash in its name is wrong
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", name, state
    server.shutdown()
    server.server_close()


def _record(url):
    return dataclasses.replace(W.PRETRAINED["torchvision"], url=url, num_classes=NUM_CLASSES)


def test_pretrained_records_are_data():
    tv = W.PRETRAINED["torchvision"]
    assert (tv.arch, tv.acc1, tv.acc5) == ("alexnet_owt", 56.522, 79.066)
    assert tv.url.startswith("https://download.pytorch.org/") and tv.file_name == "alexnet-owt-7be5be79.pth"
    assert len(tv.preprocessing.class_names) == 1000 and tv.preprocessing.input_size == 224
    bv = W.PRETRAINED["bvlc_alexnet"]
    assert (bv.arch, bv.preprocessing.input_size, bv.preprocessing.value_scale) == ("alexnet2012", 227, 255.0)
    assert bv.config_overrides == {"lrn_k": 1.0}


def test_torchvision_download_through_hub(served, tmp_path, monkeypatch, capsys):
    base, name, state = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(W.PRETRAINED, "torchvision", _record(f"{base}/{name}"))
    model, pre = alexnet.load_model("torchvision")  # the same path as a real first download
    cached = tmp_path / "home" / "hub" / "checkpoints" / name
    assert cached.is_file()
    assert "Downloading" not in capsys.readouterr().out  # stdout stays clean for --json
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v)
    assert pre.input_size == 224 and len(pre.class_names) == 1000  # the record's preprocessing
    # a second load reads the cache: the server is no longer needed
    monkeypatch.setitem(W.PRETRAINED, "torchvision", _record(f"http://127.0.0.1:{closed_port()}/{name}"))
    model2, _ = alexnet.load_model("torchvision")
    assert torch.equal(model2.fc8.weight, model.fc8.weight)
    with pytest.raises(WeightsError, match="these are alexnet_owt weights, not caffenet"):
        alexnet.load_model("torchvision", arch="caffenet")


def test_torchvision_hash_mismatch(served, tmp_path):
    base, _, _ = served
    with pytest.raises(WeightsError, match="sha256 check.*nothing was cached"):
        W.load_pretrained(_record(f"{base}/alexnet-owt-0badbad0.pth"), model_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_torchvision_offline_error_names_url_and_cache_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    url = f"http://127.0.0.1:{closed_port()}/alexnet-owt-7be5be79.pth"
    monkeypatch.setitem(W.PRETRAINED, "torchvision", dataclasses.replace(W.PRETRAINED["torchvision"], url=url))
    cache = tmp_path / "home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    with pytest.raises(WeightsError) as e:
        alexnet.load_model("torchvision")
    msg = str(e.value)
    assert "\n" not in msg and f"cannot download {url}" in msg and f"place it at {cache}" in msg
    # the command line prints it as one line and exits 1
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(img)
    assert main(["predict", str(img), "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    ours = [line for line in err.splitlines() if line.startswith("alexnet predict")]  # torch hub announces too
    assert out == "" and len(ours) == 1 and ours[0].startswith("alexnet predict: error: cannot download")


def test_torchvision_corrupt_cache_file(tmp_path):
    rec = _record("http://127.0.0.1:9/alexnet-owt-7be5be79.pth")
    (tmp_path / rec.file_name).write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not a readable torch state dict.*delete it"):
        W.load_pretrained(rec, model_dir=tmp_path)


@pytest.mark.network
def test_real_torchvision_download_matches_torchvision():
    """Needs the internet (or the file in the torch hub cache): the real IMAGENET1K_V1 weights, hash checked."""
    model, pre = alexnet.load_model("torchvision")
    tv = __import__("torchvision").models.alexnet(weights="IMAGENET1K_V1").eval()
    x = pre.eval_transform()(torch.full((3, 300, 400), 128, dtype=torch.uint8))[None]
    with torch.no_grad():
        assert torch.equal(model(x), tv(x))


def test_save_model_refuses_class_names_of_another_length(tmp_path):
    import alexnet as ax
    from alexnet.weights import WeightsError

    m = ax.create_model("alexnet_owt", num_classes=3, input_size=64)
    with pytest.raises(WeightsError, match="2 class names for a model with 3 classes"):
        ax.save_model(
            m, ax.Preprocessing(input_size=64, resize_size=73, class_names=["a", "b"]), tmp_path / "m.safetensors"
        )
    assert not (tmp_path / "m.safetensors").exists()


def test_torchvision_record_and_class_names_are_torchvisions():
    """The record and the 1000 names are shipped as data (no torchvision import to load weights); they must stay
    torchvision's."""
    from torchvision.models import AlexNet_Weights

    tv = AlexNet_Weights.IMAGENET1K_V1
    rec = W.PRETRAINED["torchvision"]
    assert rec.url == tv.url
    assert (rec.acc1, rec.acc5) == (
        tv.meta["_metrics"]["ImageNet-1K"]["acc@1"],
        tv.meta["_metrics"]["ImageNet-1K"]["acc@5"],
    )
    assert W.imagenet_classes() == list(tv.meta["categories"])
    assert rec.preprocessing.class_names == list(tv.meta["categories"])


def test_weights_travel_as_one_weights_source():
    """Outside the weights package, no function takes ``allow_pickle``/``loaded`` beside its weights, and every
    `load_model` call passes one source (a `WeightsSource`) and no reading options of its own (issue 23)."""
    import ast
    from pathlib import Path

    pkg = Path(alexnet.__file__).resolve().parent
    problems = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if rel.startswith("weights/") or rel == "options.py":  # the readers, and WeightsSource itself
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = {a.arg for a in node.args.args + node.args.kwonlyargs}
                if names & {"allow_pickle", "loaded"} or ("weights" in names and "arch" in names):
                    problems.append(f"{rel}:{node.lineno} {node.name} takes weights in pieces")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_model"
            ):
                extra = [k.arg for k in node.keywords if k.arg != "num_classes"]
                if extra:
                    problems.append(f"{rel}:{node.lineno} load_model(..., {', '.join(map(str, extra))}=)")
    assert not problems, "\n".join(problems)
