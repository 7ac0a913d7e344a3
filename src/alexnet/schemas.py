"""The version key of every JSON document the toolkit prints or serves (``--json`` outputs, the server's
responses): ``"schema": "alexnet.NAME/VERSION"``, the first key of the document.

A program reads the key before anything else: the same NAME and VERSION promise the same fields, types and units
(docs/JSON.md describes each, and tests/test_json_schemas.py checks the descriptions against real output). A change
that removes or renames a field, or changes its type or unit, bumps VERSION; a new field does not. Rates (errors,
accuracies) are fractions in [0, 1] everywhere (JSON, metrics.csv); probabilities too. No torch here: the parser
and the server's models import this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SCHEMA_KEY", "SCHEMAS", "schema_id", "tagged"]

SCHEMA_KEY = "schema"
# NAME -> VERSION of every JSON document; docs/JSON.md has one section per name.
SCHEMAS: dict[str, int] = {
    "models": 1,
    "predict": 1,
    "convert": 1,
    "export": 1,
    "info": 1,
    "evaluate": 1,
    "features": 1,
    "neighbors": 1,
    "report": 1,
    "stats": 1,
    "prepare": 1,
    "demo": 1,
    "serve.predict": 1,
    "serve.model": 1,
    "serve.error": 1,
    "serve.health": 1,
    "serve.stats": 1,
}


def schema_id(name: str) -> str:
    """``"alexnet.NAME/VERSION"`` for a name of `SCHEMAS` (a KeyError for another: every document is listed)."""
    return f"alexnet.{name}/{SCHEMAS[name]}"


def tagged(name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with its version key first: ``{"schema": "alexnet.NAME/VERSION", **body}``."""
    return {SCHEMA_KEY: schema_id(name), **{k: v for k, v in body.items() if k != SCHEMA_KEY}}
