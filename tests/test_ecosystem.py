"""The model works with the ecosystem's tools, as torchvision's alexnet does: torch.fx tracing and torchvision's
`create_feature_extractor` (reaching every paper layer, fc7 included), TorchScript, torch.export and torch.compile,
each giving the model's own outputs."""

from __future__ import annotations

import tempfile
import warnings

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from alexnet.features import layer_output
from alexnet.models import LAYER_NAMES, create_model, list_models

TINY = {"conv_channels": (8, 8, 8, 8, 8), "fc_features": 16}


def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(arch, num_classes=5, **TINY).eval()


def _input(model) -> torch.Tensor:
    s = model.config.input_size
    return torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", list_models())
def test_fx_symbolic_trace_gives_the_same_logits(arch):
    model = _model(arch)
    x = _input(model)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


@pytest.mark.parametrize("arch", list_models())
def test_create_feature_extractor_reaches_every_paper_layer(arch):
    model = _model(arch)
    x = _input(model)
    extractor = create_feature_extractor(model, return_nodes=model.feature_nodes())
    with torch.no_grad():
        out = extractor(x)
        assert sorted(out) == sorted(LAYER_NAMES)
        for name in LAYER_NAMES:  # the same tensors `alexnet features --layer NAME` extracts
            assert torch.equal(out[name].flatten(1), layer_output(model, x, name)), name


def test_feature_nodes_name_torchvisions_graph_nodes():
    model = _model("alexnet_owt")
    assert model.feature_nodes("fc7") == {"classifier.5": "fc7"}
    assert model.feature_nodes("conv5", "fc8") == {"flatten": "conv5", "classifier.6": "fc8"}
    with pytest.raises(KeyError, match="unknown layer 'fc9'"):
        model.feature_nodes("fc9")


def test_the_traced_graph_keeps_the_input_size_check():
    traced = torch.fx.symbolic_trace(_model("alexnet2012"))
    with pytest.raises(ValueError) as e:
        traced(torch.randn(1, 3, 100, 100))
    assert str(e.value) == "conv5 output is (2, 2), expected (6, 6): this architecture needs 227x227 inputs"


def _script(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.9+ calls TorchScript deprecated; it still works
        return torch.jit.script(model)


@pytest.mark.parametrize("arch", list_models())
def test_torchscript_gives_the_same_logits(arch):
    model = _model(arch)
    x = _input(model)
    scripted = _script(model)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))
        assert torch.equal(scripted.forward_features(x), model.forward_features(x))
    # the low-precision CPU path of LRN survives scripting
    low = _script(_model(arch).to(torch.bfloat16))
    with torch.no_grad():
        assert low(x.bfloat16()).dtype == torch.bfloat16


def test_torchscript_keeps_the_input_size_check():
    scripted = _script(_model("caffenet"))
    with pytest.raises(torch.jit.Error, match="this architecture needs 227x227 inputs"):
        scripted(torch.randn(1, 3, 100, 100))


def test_torchscript_trains_with_dropout():
    model = _model("alexnet2012").train()
    scripted = _script(model)
    x = _input(model)
    torch.manual_seed(3)
    a = scripted(x)
    torch.manual_seed(3)
    b = model(x)
    assert torch.equal(a, b)  # the same CPU dropout masks from the same seed


@pytest.mark.parametrize("arch", list_models())
def test_torch_export_gives_the_same_logits(arch):
    model = _model(arch)
    x = _input(model)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.equal(exported.module()(x), model(x))


def test_torch_compile_traces_without_graph_breaks():
    """Dynamo's capture (the part of torch.compile that a model's Python can break), with the aot_eager backend,
    which needs no C++ compiler; the slow test below runs the default inductor backend."""
    torch._dynamo.reset()
    model = _model("alexnet2012")
    x = _input(model)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list_models())
def test_torch_compile_inductor_matches(arch, tmp_path, monkeypatch):
    # inductor's cache, and its precompiled headers (which ignore TORCHINDUCTOR_CACHE_DIR), in the test's own folder
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    torch._dynamo.reset()
    model = _model(arch)
    x = _input(model)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), rtol=1e-4, atol=1e-5)
