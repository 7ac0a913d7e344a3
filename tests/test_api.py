"""The public Python API (docs/API.md) in torchvision's and timm's conventions: `create_model` with ``weights``,
``pretrained`` and ``num_classes``; the callable `Preprocessing` and its input checks; the top-level `classify`
and `features`; the torch.hub entries; the data sets handed to training checked the same way."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet
from alexnet.weights import records

ROOT = Path(__file__).resolve().parents[1]
TINY = {"conv_channels": (8, 8, 8, 8, 8), "fc_features": 16}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A 3-class alexnet_owt with small layers and torchvision's preprocessing, saved as our .safetensors."""
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet_owt", num_classes=3, **TINY)
    pre = alexnet.Preprocessing(input_size=224, resize_size=256, class_names=["ant", "bee", "cat"])
    return alexnet.save_model(model, pre, tmp_path_factory.mktemp("api") / "tiny.safetensors")


def _picture(seed: int = 0, size: tuple[int, int] = (300, 260)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (13, 15, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize(size, Image.BICUBIC))  # (260, 300, 3) uint8


# --- create_model ---------------------------------------------------------------------------------------------------
def test_create_model_fresh_has_its_preprocessing_and_trains():
    model = alexnet.create_model("alexnet2012", num_classes=10, lrn=False, groups=1)
    assert isinstance(model, alexnet.AlexNet) and model.training  # as torchvision's and timm's builders
    assert model.fc8.out_features == 10 and not model.config.lrn and model.config.groups == 1
    assert model.preprocessing == alexnet.Preprocessing(input_size=227)


def test_create_model_with_weights_loads_them(tiny_weights):
    ref, pre = alexnet.load_model(tiny_weights)
    model = alexnet.create_model("alexnet_owt", weights=tiny_weights)
    assert model.training and model.preprocessing.class_names == ["ant", "bee", "cat"]
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    same = alexnet.create_model("alexnet_owt", weights=alexnet.WeightsSource(str(tiny_weights)), num_classes=3)
    assert torch.equal(same.fc8.weight, ref.fc8.weight)
    with pytest.raises(alexnet.WeightsError) as e:
        alexnet.create_model("alexnet2012", weights=tiny_weights)
    assert str(e.value) == (
        f"{tiny_weights}: these weights are not alexnet2012's network: conv1_padding=2 (not 0), groups=1 (not 2), "
        "lrn=False (not True), adaptive_pool=True (not False), dropout_before_fc=True (not False)"
    )


def test_create_model_new_num_classes_replaces_fc8_and_warns(tiny_weights):
    ref, _ = alexnet.load_model(tiny_weights)
    with pytest.warns(UserWarning) as caught:
        model = alexnet.create_model("alexnet_owt", weights=tiny_weights, num_classes=5, dropout=0.2)
    assert str(caught[0].message) == (
        f"{tiny_weights}: fc8 has 3 classes, 5 were asked for: fc8 is a new, untrained 5-class layer (torchvision "
        "initialisation), every other layer holds the weights; train it before use"
    )
    assert model.fc8.out_features == 5 and model.config.dropout == 0.2
    assert torch.equal(model.fc7.weight, ref.fc7.weight) and torch.equal(model.conv1.weight, ref.conv1.weight)
    assert model.preprocessing.class_names is None and model.preprocessing.input_size == 224
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the weights' own class count: no warning
        alexnet.create_model("alexnet_owt", weights=tiny_weights, num_classes=3)


def test_create_model_refuses_a_switch_that_changes_the_weights_layers(tiny_weights):
    with pytest.raises(alexnet.WeightsError) as e:
        alexnet.create_model("alexnet_owt", weights=tiny_weights, fc_features=32)
    assert str(e.value).endswith("(the switches fc_features=32 change the layers these weights fill)")


def test_create_model_pretrained_is_the_archs_recorded_default(tiny_weights, monkeypatch):
    assert records.DEFAULT_WEIGHTS == {
        "alexnet2012": "caffe:bvlc_alexnet",
        "alexnet_owt": "torchvision",
        "caffenet": "caffe:bvlc_reference_caffenet",
    }
    for arch, name in records.DEFAULT_WEIGHTS.items():  # each names a record of that architecture
        rec = records.PRETRAINED.get(name) or records.CAFFE_ZOO[name.removeprefix("caffe:")]
        assert rec.arch == arch and name in alexnet.list_pretrained()
    monkeypatch.setitem(records.DEFAULT_WEIGHTS, "alexnet_owt", str(tiny_weights))
    model = alexnet.create_model("alexnet_owt", pretrained=True)
    assert model.preprocessing.class_names == ["ant", "bee", "cat"]
    with pytest.raises(ValueError, match="pass weights=... or pretrained=True, not both"):
        alexnet.create_model("alexnet_owt", pretrained=True, weights="torchvision")


def test_create_model_errors_are_one_line_alexnet_errors():
    with pytest.raises(alexnet.AlexnetError) as e:
        alexnet.create_model("alexnet2013")
    assert str(e.value) == "unknown architecture 'alexnet2013'; choose from alexnet2012, alexnet_owt, caffenet"
    with pytest.raises(ValueError) as e:
        alexnet.create_model("caffenet", dropout=1.5)
    assert isinstance(e.value, alexnet.AlexnetError) and str(e.value) == "caffenet: dropout must be in [0, 1), got 1.5"


# --- the callable preprocessing ---------------------------------------------------------------------------------------
def test_preprocessing_gives_the_same_tensor_for_every_form_of_a_picture():
    pre = alexnet.Preprocessing(input_size=224, resize_size=256)
    arr = _picture()
    chw = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    want = pre(chw)
    assert want.shape == (3, 224, 224) and want.dtype == torch.float32
    assert abs(want.mean().item() - 0.2) < 0.3  # ImageNet-normalised, not normalised twice
    assert torch.equal(pre(Image.fromarray(arr)), want)
    assert torch.equal(pre(arr), want)
    assert torch.equal(pre(chw.float() / 255), want)  # ToTensor's [0, 1] floats
    assert torch.equal(pre(chw.double() / 255), want)
    assert torch.equal(pre.eval_transform()(chw.float() / 255), want)
    batch = pre(torch.stack([chw, chw]))
    assert batch.shape == (2, 3, 224, 224) and torch.equal(batch[1], want)


def test_preprocessing_is_torchvisions_transforms():
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
    img = Image.fromarray(_picture(3))
    ours = alexnet.Preprocessing(input_size=224, resize_size=256)(img)
    assert (ours - tv(img)).abs().max().item() < 0.02  # PIL's and torch's bilinear resize differ by a level


@pytest.mark.parametrize(
    ("bad", "kind", "message"),
    [
        (
            torch.full((3, 50, 50), -0.5),
            ValueError,
            "image: float pixels must lie in [0, 1] (ToTensor, ToDtype(scale=True)); got min -0.500, max -0.500, "
            "mean -0.500: already normalised? pass the picture before Normalize: alexnet normalises with the "
            "weights' own mean and std",
        ),
        (
            torch.full((3, 50, 50), 200.0),
            ValueError,
            "image: float pixels must lie in [0, 1] (ToTensor, ToDtype(scale=True)); got min 200.000, max 200.000, "
            "mean 200.000: 0..255 values as floats? divide by 255, or pass a uint8 tensor",
        ),
        (
            torch.zeros(1, 50, 50, dtype=torch.uint8),
            ValueError,
            "image: expected 3 channels (RGB) in (3, H, W) or (N, 3, H, W), got shape (1, 50, 50): a grayscale "
            "image? repeat it with x.expand(3, -1, -1)",
        ),
        (
            torch.zeros(50, 50, 3, dtype=torch.uint8),
            ValueError,
            "image: expected 3 channels (RGB) in (3, H, W) or (N, 3, H, W), got shape (50, 50, 3): channels last? "
            "permute it to (3, H, W) with x.permute(2, 0, 1)",
        ),
        (
            torch.zeros(3, 50, 50, dtype=torch.int64),
            TypeError,
            "image: int64 pixels are neither uint8 (0..255) nor float in [0, 1]; convert it with .to(torch.uint8) "
            "if its values are 0..255",
        ),
        (
            np.zeros((50, 50, 3), np.float32),
            TypeError,
            "image: a NumPy array of float32 pixels; NumPy images must be uint8 (H, W, 3) (as PIL and OpenCV give "
            "them), float pictures a torch tensor in [0, 1]",
        ),
        (
            Image.new("I;16", (50, 50)),
            ValueError,
            "image: a PIL image in mode 'I;16' (16-bit or float pixels) has no agreed 8-bit scale; convert it to "
            "8-bit RGB yourself, or pass its file's path (the decoder scales it by its peak)",
        ),
        (
            "photo.jpg",
            TypeError,
            "image: a str is not a picture; pass a PIL image, a NumPy (H, W, 3) uint8 array, a uint8 tensor "
            "(3, H, W) or a float tensor in [0, 1]",
        ),
    ],
)
def test_preprocessing_refuses_with_a_sentence(bad, kind, message):
    pre = alexnet.Preprocessing()
    with pytest.raises(kind) as e:
        pre(bad)
    assert isinstance(e.value, alexnet.ImageInputError) and isinstance(e.value, alexnet.AlexnetError)
    assert str(e.value) == message
    with pytest.raises(kind):  # the same check guards the 10-patch transform
        pre.ten_crop_transform()(bad)


def test_preprocessing_converts_odd_pil_modes_to_rgb():
    pre = alexnet.Preprocessing(input_size=224, resize_size=256)
    gray = _picture(5)[..., 0]
    want = pre(np.repeat(gray[..., None], 3, axis=2))
    assert torch.equal(pre(Image.fromarray(gray, "L")), want)  # grayscale: repeated
    rgba = np.dstack([_picture(5), np.full(gray.shape, 255, np.uint8)])
    assert torch.equal(pre(Image.fromarray(rgba, "RGBA")), pre(_picture(5)))  # opaque alpha: dropped
    clear = Image.fromarray(np.zeros_like(rgba), "RGBA")  # transparent: composited on white
    assert torch.equal(pre(clear), pre(np.full_like(_picture(5), 255)))
    cmyk = Image.fromarray(_picture(5)).convert("CMYK")
    assert torch.equal(pre(cmyk), pre(np.asarray(cmyk.convert("RGB"))))


def test_batch_transforms_refuse_float_batches():
    pre = alexnet.Preprocessing()
    with pytest.raises(TypeError) as e:
        pre.batch_transform(False)(torch.rand(2, 3, 8, 8))
    assert str(e.value) == (
        "the batch transform takes uint8 images (0..255) and normalises them, got float32: a float batch would be "
        "normalised twice; give the uint8 pictures, or call Preprocessing(img) on [0, 1] floats"
    )


# --- classify and features ----------------------------------------------------------------------------------------
def test_classify_takes_paths_pil_images_arrays_and_tensors(tiny_weights, tmp_path):
    model = alexnet.create_model("alexnet_owt", weights=tiny_weights)
    arr = _picture(7)
    Image.fromarray(arr).save(tmp_path / "p.png")
    chw = torch.from_numpy(arr).permute(2, 0, 1)
    forms = [str(tmp_path / "p.png"), tmp_path / "p.png", Image.fromarray(arr), arr, chw, chw.float() / 255]
    results = alexnet.classify(model, forms, topk=2)
    assert len(results) == len(forms) and all(r == results[0] for r in results)
    assert results[0][0].name in ("ant", "bee", "cat") and len(results[0]) == 2
    assert alexnet.classify(model, arr, topk=2) == results[:1]  # one picture: a list of one
    assert alexnet.classify(model, torch.stack([chw, chw]), topk=2) == results[:2]
    assert model.training  # its mode is given back
    with pytest.raises(ValueError, match=r"^image 1: float pixels must lie in \[0, 1\]"):
        alexnet.classify(model, [arr, chw.float()])


def test_classify_needs_a_preprocessing(tiny_weights):
    bare = alexnet.AlexNet(alexnet.AlexNetConfig(num_classes=3, **TINY))
    with pytest.raises(TypeError) as e:
        alexnet.classify(bare, _picture())
    assert str(e.value) == (
        "this model carries no preprocessing: build it with alexnet.create_model or alexnet.load_model, or pass "
        "preprocessing=alexnet.Preprocessing(...)"
    )
    scores = alexnet.classify(bare, _picture(), preprocessing=alexnet.Preprocessing(input_size=227))
    assert [s.name for s in scores[0]] != []


def test_features_of_any_picture(tiny_weights):
    model, _ = alexnet.load_model(tiny_weights)
    arr = _picture(9)
    f = alexnet.features(model, [arr, Image.fromarray(arr)])
    assert f.shape == (2, 16) and torch.equal(f[0], f[1]) and (f >= 0).all()  # fc7, after its ReLU
    assert alexnet.features(model, arr, "fc8").shape == (1, 3)


# --- torch.hub ------------------------------------------------------------------------------------------------------
def test_hubconf_has_one_entry_per_architecture(tiny_weights):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    entries = [f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_")]  # torch.hub.list's rule
    assert sorted(entries) == sorted(alexnet.list_models())
    model = torch.hub.load(str(ROOT), "alexnet2012", source="local", num_classes=4, **TINY)
    assert isinstance(model, alexnet.AlexNet) and model.fc8.out_features == 4
    loaded = torch.hub.load(str(ROOT), "alexnet_owt", source="local", weights=tiny_weights)
    assert loaded.preprocessing.class_names == ["ant", "bee", "cat"]


# --- data sets handed to training -----------------------------------------------------------------------------------
class _Images(torch.utils.data.Dataset):
    classes = ["a", "b"]

    def __init__(self, image: torch.Tensor) -> None:
        self.image, self.targets, self.transform = image, [0, 1, 0, 1], None

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return self.image, self.targets[i]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            torch.full((3, 67, 67), -1.0),
            "train_dataset: the first sample is already normalised (a Normalize in its transform?): min -1.000, "
            "max -1.000, mean -1.000; the training code takes uint8 (3, S, S) images with 0..255 values and "
            "normalises them with the run's mean and std: drop Normalize and ToDtype/ToTensor from the data set's "
            "transform (v2.PILToTensor() gives uint8)",
        ),
        (
            torch.full((3, 67, 67), 0.5),
            "train_dataset: the first sample is floats: min 0.500, max 0.500, mean 0.500; the training code takes "
            "uint8 (3, S, S) images with 0..255 values and normalises them with the run's mean and std: drop "
            "Normalize and ToDtype/ToTensor from the data set's transform (v2.PILToTensor() gives uint8)",
        ),
        (
            torch.ones(3, 67, 67, dtype=torch.uint8),
            "train_dataset: the first sample is uint8 with values in 0..1: a [0, 1] image cast to uint8? the "
            "training code takes 0..255 pixels",
        ),
    ],
)
def test_training_refuses_data_sets_of_the_wrong_scale(image, message, tmp_path):
    from alexnet.train import TrainConfig, main

    cfg = TrainConfig(
        arch="alexnet2012", input_size=67, epochs=1, batch_size=2, workers=0, out=str(tmp_path / "r"),
        model_options={**TINY, "adaptive_pool": True},
    )  # fmt: skip
    with pytest.raises(alexnet.ImageInputError) as e:
        main(cfg, train_dataset=_Images(image))
    assert str(e.value) == message


def test_alexnet_features_is_both_the_module_and_the_function(tiny_weights):
    import sys

    import alexnet.features as module

    assert alexnet.features is module is sys.modules["alexnet.features"]
    assert module.FeatureIndex is not None and callable(alexnet.features)
    model, _ = alexnet.load_model(tiny_weights)
    assert torch.equal(alexnet.features(model, _picture()), module.features(model, _picture()))
