"""`alexnet info`: what a weights file is and where it comes from, for a person (`format_info`) and a program
(`weights_info`, the ``alexnet.info`` JSON document of docs/JSON.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models import count_parameters
from .base import describe_config, guess_arch
from .io import WeightsSource, load_model
from .provenance import file_sha256, read_metadata, read_provenance
from .records import CAFFE_ZOO, PRETRAINED

__all__ = ["format_info", "weights_info"]


def weights_info(source: str | Path | WeightsSource) -> dict[str, Any]:
    """The weights' format, SHA-256 (a file), architecture and description, classes, parameters, preprocessing and
    provenance (None when the file records none: files written before provenance existed, other tools' files)."""
    spec = source if isinstance(source, WeightsSource) else WeightsSource(str(source))
    model, pre = load_model(spec)
    name = spec.source
    path = Path(name)
    if name in PRETRAINED or name.removeprefix("caffe:") in CAFFE_ZOO:
        fmt, sha = "recorded", None
    else:
        fmt, sha = path.suffix.lower().lstrip("."), file_sha256(path)
    meta = read_metadata(name) if fmt != "recorded" else {}
    preprocessing = pre.to_dict()
    names = preprocessing.pop("class_names", None)
    return {
        "weights": name,
        "format": "pth" if fmt == "pt" else fmt,
        "sha256": sha,
        "arch": meta.get("arch") or guess_arch(model.config),
        "description": describe_config(model.config),
        "num_classes": model.config.num_classes,
        "class_names": list(names) if names else None,
        "parameters": count_parameters(model),
        "config": model.config.to_dict(),
        "preprocessing": preprocessing,
        "provenance": read_provenance(name) if fmt != "recorded" else None,
    }


def format_info(info: dict[str, Any]) -> str:
    """`weights_info`'s answer as aligned lines for a terminal."""
    p = info["preprocessing"]
    names = info["class_names"]
    classes = f"{info['num_classes']}" + (
        f": {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}" if names else ""
    )
    sha = f", sha256 {info['sha256']}" if info["sha256"] else ""
    lines = [
        f"weights      {info['weights']} ({info['format']}{sha})",
        f"model        {info['description']} (arch {info['arch']})",
        f"classes      {classes}",
        f"parameters   {info['parameters']:,}",
        f"input        short side {p['resize_size']}, centre crop {p['input_size']}, pixels x {p['value_scale']}/255, "
        f"mean {_floats(p['mean'])}, std {_floats(p['std'])}",
    ]
    prov = info["provenance"]
    if prov is None:
        lines.append("provenance   none recorded (written before alexnet recorded it, or by another tool)")
        return "\n".join(lines)
    parent = prov.get("parent")
    if parent:
        parent_text = parent.get("weights", "?") + (f" (sha256 {parent['sha256']})" if parent.get("sha256") else "")
    else:
        parent_text = "none (trained from scratch, or not recorded)"
    lines += [
        f"written by   alexnet {prov.get('alexnet_version', '?')} on {prov.get('created', '?')}",
        f"parent       {parent_text}",
        f"data         {prov.get('data') or 'not recorded'}",
        f"epochs       {prov['epochs'] if prov.get('epochs') is not None else 'not recorded'}",
        f"metrics      {_metrics(prov.get('metrics'))}",
    ]
    return "\n".join(lines)


def _floats(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _metrics(m: dict[str, Any] | None) -> str:
    """The last epoch's figures in words (rates are fractions: shown as percents)."""
    if not m:
        return "not recorded"
    words = {
        "val_top1_accuracy": "validation top-1 accuracy",
        "val_top5_accuracy": "validation top-5 accuracy",
        "best_val_top1_error": "best validation top-1 error",
    }
    parts = [f"{w} {m[k]:.2%}" for k, w in words.items() if m.get(k) is not None]
    if m.get("best_epoch"):
        parts.append(f"best epoch {m['best_epoch']}")
    if m.get("val_loss") is not None:
        parts.append(f"validation loss {m['val_loss']:.4f}")
    return ", ".join(parts) or "not recorded"
