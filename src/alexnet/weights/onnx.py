"""ONNX export with a dynamic batch axis and the preprocessing in the metadata, verified against onnxruntime.
Needs the ``[onnx]`` extra (onnx, onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.fileio import atomic_write
from ..limits import check_opset
from ..models import AlexNet
from ..preprocessing import Preprocessing
from ..runtime import unwrap_model
from .base import FORMAT_NAME, WeightsError, guess_arch, one_line

__all__ = ["export_onnx", "verify_onnx"]


def export_onnx(
    model: AlexNet,
    preprocessing: Preprocessing,
    path: str | Path,
    *,
    opset: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
) -> float | None:
    """Export to ONNX with a dynamic batch axis (input ``input`` (N, 3, S, S) normalised as ``preprocessing``
    says, output ``logits`` (N, classes)); the preprocessing and class names go into the metadata as JSON.

    With ``verify``, onnxruntime runs the file on a batch of a size other than the traced one and the result must
    match PyTorch within ``atol``; returns that max abs difference (None without ``verify``). Written atomically.
    """
    import copy

    if opset is not None:
        check_opset(opset)
    try:
        import onnx
    except ImportError:
        raise WeightsError("ONNX export needs the onnx extra: pip install 'alexnet[onnx]'") from None
    model = copy.deepcopy(unwrap_model(model)).to("cpu", torch.float32).eval()
    meta = {
        "format": FORMAT_NAME,
        "arch": guess_arch(model.config) if isinstance(model, AlexNet) else "custom",
        "config": json.dumps(model.config.to_dict()) if isinstance(model, AlexNet) else "{}",
        "preprocessing": json.dumps(preprocessing.to_dict()),
    }
    diff: list[float] = []

    def write(tmp: str) -> None:
        _trace(model, preprocessing.input_size, tmp, opset)
        proto = onnx.load(tmp)
        written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is not None and written != opset:  # the exporter's converter only logs its failures
            raise WeightsError(f"ONNX export wrote opset {written}, not the {opset} asked for; nothing written")
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, tmp)
        if verify:
            diff.append(verify_onnx(model, tmp, input_size=preprocessing.input_size, atol=atol))

    atomic_write(Path(path), write)
    return diff[0] if diff else None


def _trace(model: nn.Module, input_size: int, out: str, opset: int | None) -> None:
    """torch.onnx's dynamo exporter with a symbolic batch axis, its warnings silenced, failures one line."""
    import warnings

    s = input_size
    example = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))  # batch 1 could be specialised
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (example,),
                out,
                input_names=["input"],
                output_names=["logits"],
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                verbose=False,
            )
        except Exception as e:
            raise WeightsError(f"ONNX export failed: {one_line(e)}") from None


def verify_onnx(
    model: nn.Module, onnx_path: str | Path, *, input_size: int, batch: int = 3, atol: float = 1e-4
) -> float:
    """Run ``onnx_path`` in onnxruntime and ``model`` in PyTorch on the same random batch; raise `WeightsError`
    if the logits differ by more than ``atol``; return the max abs difference."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise WeightsError("verifying ONNX needs onnxruntime: pip install 'alexnet[onnx]'") from None
    x = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model.to("cpu").eval()(x).numpy()
    d = float(np.abs(got - want).max())
    if got.shape != want.shape or not d <= atol:
        raise WeightsError(f"{onnx_path}: onnxruntime differs from PyTorch by {d:.3g} (> {atol}), shape {got.shape}")
    return d
