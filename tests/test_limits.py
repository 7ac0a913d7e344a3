"""Issue 24, items 4-9: a small crafted input must not take a big machine, and NaN must not pass with exit 0.
Every model field has an upper bound (`alexnet.limits.MODEL_LIMITS`), the memory a config implies is estimated
before building it, Caffe files are bounded the same way, and non-finite weights, means or results are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _builders import bvlc_preprocessing, narrow_model, one_line_error, rewrite_weights, saved_narrow
from _caffe_builders import write_mean, write_model

import alexnet
from alexnet import limits
from alexnet.cli import main
from alexnet.models import AlexNetConfig, get_config
from alexnet.weights import WeightsError
from alexnet.weights import caffe as C
from alexnet.weights.caffe_proto import BlobProto, CaffeError, NetParameter


# --- 5: one table of limits, and the memory a config implies ------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"conv1_padding": 8000}, "conv1_padding = 8000 is over the limit of 10"),
        ({"lrn_size": 3_000_000}, "lrn_size = 3000000 is over the limit of 64"),
        ({"pool_kernel": 10**6}, "pool_kernel = 1000000 is over the limit of 8"),
        ({"pool_stride": 10**6}, "pool_stride = 1000000 is over the limit of 8"),
        ({"fc_features": 2**31 - 1}, "fc_features = 2147483647 is over the limit of 16384"),
        ({"input_size": 100_000}, "input_size = 100000 is over the limit of 1024"),
        ({"lrn_alpha": 1e300}, "lrn_alpha = 1e+300 is over the limit of 1"),
    ],
)
def test_crafted_model_fields_are_refused_in_one_line_before_building(tmp_path, no_build, capsys, config, words):
    _, good = saved_narrow(tmp_path)
    bad = rewrite_weights(good, tmp_path / "bad.safetensors", config=config)
    no_build()
    with pytest.raises(WeightsError) as e:
        alexnet.load_model(bad)
    one_line_error(e, str(bad), words)
    assert main(["predict", "--weights", str(bad), str(tmp_path / "none.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alexnet predict: error:") and words in err


def test_every_config_field_has_a_limit_and_the_estimate_is_exact():
    numeric = {f for f, v in AlexNetConfig().to_dict().items() if type(v) in (int, float, list)}
    assert numeric - {"dropout", "groups"} == set(limits.MODEL_LIMITS)  # AlexNetConfig: dropout < 1, groups 1 or 2
    for arch in alexnet.list_models():
        params, _ = limits.estimate_model(get_config(arch))
        assert params == sum(p.numel() for p in alexnet.create_model(arch).parameters())


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"conv_channels": (4096,) * 5}, "this config has 1,138M weights, over the limit of 500M"),
        (
            {"input_size": 1024, "conv_channels": (1024, 256, 384, 384, 256)},
            "this config needs 1,104 MiB of activations per image at input_size 1024, over the limit of 1,024 MiB",
        ),
    ],
)
def test_the_memory_a_config_implies_is_bounded_before_building(overrides, words):
    with pytest.raises(limits.LimitError) as e:
        get_config("alexnet2012", **overrides)
    assert str(e.value).startswith(words)


# --- 6: the same through a Caffe prototxt --------------------------------------------------------------------------
def _caffe_variant(tmp_path, name: str, old: str, new: str):
    model, proto, _ = write_model(tmp_path)
    text = proto.read_text()
    assert old in text
    (tmp_path / name).write_text(text.replace(old, new))
    return model, tmp_path / name


def test_caffe_lrn_size_and_input_dims_are_bounded(tmp_path):
    model, lrn = _caffe_variant(tmp_path, "lrn.prototxt", "local_size: 5", "local_size: 10000001")
    with pytest.raises(CaffeError) as e:
        C.load_caffe(model, lrn)
    one_line_error(e, f"{lrn}: lrn_size = 10000001 is over the limit of 64")
    _, neg = _caffe_variant(tmp_path, "neg.prototxt", "dim: 227", "dim: -227")
    with pytest.raises(CaffeError) as e:
        C.load_caffe(model, neg)
    one_line_error(e, "the input is [1, 3, -227, -227]; AlexNet takes (N, 3, S, S) images, S from 1 to 1024")


def test_a_prototxt_nested_50000_deep_is_one_line(tmp_path):
    model, _, _ = write_model(tmp_path)
    deep = tmp_path / "deep.prototxt"
    deep.write_text("layer { " * 50_000 + "}" * 50_000)
    with pytest.raises(CaffeError) as e:
        C.load_caffe(model, deep)
    one_line_error(e, f"{deep}: not a readable prototxt (its messages are nested too deep to be a net)")


def test_negative_blob_dims_are_one_line(tmp_path):
    model, proto, _ = write_model(tmp_path)
    net = NetParameter()
    net.ParseFromString(model.read_bytes())
    fc7 = next(la for la in net.layer if la.name == "fc7")
    del fc7.blobs[0].shape.dim[:]
    fc7.blobs[0].shape.dim.extend([-16, -16])
    bad = tmp_path / "neg.caffemodel"
    bad.write_bytes(net.SerializeToString())
    with pytest.raises(CaffeError) as e:
        C.load_caffe(bad, proto)
    one_line_error(e, f"{bad}: fc7 ('fc7') weight has a negative dimension in its shape (-16, -16)")
    blob = BlobProto()
    blob.shape.dim.extend([-1, -3])
    blob.data.extend([1.0, 2.0, 3.0])
    mean = tmp_path / "neg.binaryproto"
    mean.write_bytes(blob.SerializeToString())
    with pytest.raises(CaffeError) as e:
        C.read_caffe_mean(mean)
    one_line_error(e, f"{mean}: the mean has a negative dimension in its shape (-1, -3)")


# --- 4: NaN from every reader, and at the output -------------------------------------------------------------------
def test_nan_in_a_caffemodel_and_its_mean_is_refused(tmp_path):
    model, proto, _ = write_model(tmp_path)
    net = NetParameter()
    net.ParseFromString(model.read_bytes())
    next(la for la in net.layer if la.name == "fc6").blobs[0].data[3] = math.nan
    bad = tmp_path / "nan.caffemodel"
    bad.write_bytes(net.SerializeToString())
    with pytest.raises(WeightsError) as e:
        C.load_caffe(bad, proto)
    one_line_error(e, f"{bad}: classifier.0.weight holds 1 NaN or infinite values")
    mean = write_mean(tmp_path / "nan.binaryproto")
    blob = BlobProto()
    blob.ParseFromString(mean.read_bytes())
    blob.data[5] = math.nan
    mean.write_bytes(blob.SerializeToString())
    with pytest.raises(CaffeError) as e:
        C.load_caffe(model, proto, mean=mean)
    one_line_error(e, f"{mean}: the mean holds 1 NaN or infinite values: the file is corrupt")


@pytest.mark.parametrize(
    ("preprocessing", "words"),
    [
        ({"mean": [1e308, 0.0, 0.0]}, "mean must lie in the pixel range 0..255 (value_scale)"),
        ({"std": [1e-300, 1.0, 1.0]}, "std must lie in 0.0255..2550"),
        ({"value_scale": 1e300}, "value_scale must be a number from 0.001 to 65535"),
        ({"crop_size": 227}, "unknown preprocessing fields crop_size"),
        ({"input_size": 100_000, "resize_size": 100_000}, "input_size = 100000 is over the limit of 1024"),
    ],
)
def test_preprocessing_that_would_print_nan_or_differ_is_refused(tmp_path, no_build, preprocessing, words):
    _, good = saved_narrow(tmp_path)
    bad = rewrite_weights(good, tmp_path / "bad.safetensors", preprocessing=preprocessing)
    no_build()
    with pytest.raises(WeightsError) as e:
        alexnet.load_model(bad)
    one_line_error(e, f"{bad}: invalid preprocessing in the metadata", words)


def test_non_finite_results_are_refused_at_the_output(tmp_path, capsys):
    """Weights that pass the load check can still overflow (fp16, a huge bias): predict says so, never "nan"."""
    model = narrow_model()
    with torch.no_grad():
        model.fc8.bias.fill_(3e38)
        model.fc8.weight.fill_(3e38)
    path = alexnet.save_model(model, bvlc_preprocessing(), tmp_path / "overflow.safetensors")
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(img)
    assert main(["predict", "--weights", str(path), str(img)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN or infinite scores" in err, err


@pytest.mark.parametrize("field", ["mean", "std", "eigvals"])
def test_a_stats_file_with_nan_is_refused(tmp_path, field):
    from alexnet.data import stats as S

    good = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2), "eigvals": (0.2, 0.02, 0.002)}
    values = {**good, field: (math.nan, 0.2, 0.2)}
    eye = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    path = S.save_stats(S.Stats(eigvecs=eye, cov=eye, **values), tmp_path / "stats.json") or tmp_path / "stats.json"
    with pytest.raises(S.StatsError) as e:
        S.load_stats(path)
    assert str(e.value) == (
        f"{path}: mean, std and the eigen-pairs must be finite numbers (std > 0): the file is corrupt"
    )


def test_the_limits_table_in_the_docs_is_the_code():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    table = text.split("## Limits: one table")[1]
    for name, (most, _) in limits.MODEL_LIMITS.items():
        assert f"| `{name}`{' (each)' if name == 'conv_channels' else ''} | {most:g} |" in table, name
