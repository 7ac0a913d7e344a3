"""Where a weights file comes from: its provenance, written into every file we save and read back by `alexnet info`
and the server.

A weights file outlives the run that made it; the numbers a reader needs to trust it (which package wrote it, which
weights it started from and their hash, the data, the epochs, the final metrics, the date) travel inside it, as
one JSON object under the ``provenance`` key of the safetensors metadata (and of a ``.pth``'s ``_metadata`` entry;
docs/FORMATS.md). Files written before it existed have none: they load as before and `read_provenance` gives None.
Rates are fractions in [0, 1] (`alexnet.schemas`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import FORMAT_NAME, PTH_METADATA_KEY, WeightsError
from .records import CAFFE_ZOO, PRETRAINED

__all__ = ["PROVENANCE_KEY", "file_sha256", "make_provenance", "parent_of", "read_metadata", "read_provenance"]

PROVENANCE_KEY = "provenance"


def package_version() -> str:
    from .. import __version__  # the one definition of the version

    return __version__


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """The file's SHA-256 in hex (read in 4 MB chunks: a 233 MB AlexNet in about a third of a second)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def parent_of(source: Any) -> dict[str, Any]:
    """The ``parent`` entry for weights that started from ``source`` (a file, a recorded name or a
    `WeightsSource`): its name and, where its bytes are here, their SHA-256 (a recorded name: its cached file)."""
    name = str(getattr(source, "source", source))
    path: Path | None = Path(name)
    if name in PRETRAINED:
        path = PRETRAINED[name].cache_path()
    elif name.removeprefix("caffe:") in CAFFE_ZOO:
        path = CAFFE_ZOO[name.removeprefix("caffe:")].cache_path()
    sha = file_sha256(path) if path is not None and path.is_file() else None
    return {"weights": name, "sha256": sha}


def make_provenance(
    *,
    parent: Mapping[str, Any] | None = None,
    data: str | None = None,
    epochs: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """The provenance object (docs/FORMATS.md): every key present, None where unknown; ``created`` defaults to now
    (UTC, ISO 8601 to the second), ``alexnet_version`` is this package's."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return {
        "alexnet_version": package_version(),
        "created": created or now,
        "parent": dict(parent) if parent is not None else None,
        "data": data,
        "epochs": epochs,
        "metrics": dict(metrics) if metrics is not None else None,
    }


def read_metadata(source: str | Path) -> dict[str, str]:
    """Our metadata of a ``.safetensors`` (its header only) or ``.pth``/``.pt`` file (``_metadata`` entry,
    ``weights_only`` load), as stored (str -> str); {} for a file without it or another format."""
    path = Path(source)
    suffix = path.suffix.lower()
    if not path.is_file():
        return {}
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    elif suffix in (".pth", ".pt"):
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - not ours to judge here: load_model words the error
            return {}
        table = getattr(obj, "_metadata", None)
        entry = table.get(PTH_METADATA_KEY) if isinstance(table, Mapping) else None
        meta = {str(k): str(v) for k, v in entry.items()} if isinstance(entry, Mapping) else {}
    else:
        return {}
    return meta if meta.get("format") == FORMAT_NAME else {}


def read_provenance(source: Any) -> dict[str, Any] | None:
    """The provenance a weights file carries, or None (files written before it, other formats, recorded names)."""
    meta = read_metadata(str(getattr(source, "source", source)))
    text = meta.get(PROVENANCE_KEY)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise WeightsError(f"{source}: corrupt provenance in its metadata (not JSON)") from None
    if not isinstance(value, dict):
        raise WeightsError(f"{source}: corrupt provenance in its metadata (not an object)")
    return value
