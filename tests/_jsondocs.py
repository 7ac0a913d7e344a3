"""docs/JSON.md read as data, and a real JSON document checked against it (tests/test_json_schemas.py,
tests/test_demo.py). Not collected.

Each section of docs/JSON.md is headed ``## `alexnet.NAME/VERSION` `` and holds one table whose rows are
``| `path` | type | unit | meaning |``: ``a.b`` is key b of object a, ``a[]`` an element of array a, ``a.*`` any
value of a map (an object whose keys are data, e.g. class names). Types: string, integer, number (an integer
is a number too), boolean, null, object, map, array, joined with " or "; "optional" marks a field that may be
absent."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[1] / "docs" / "JSON.md"
TYPES = {"string", "integer", "number", "boolean", "null", "object", "map", "array"}
_HEADING = re.compile(r"^## `(alexnet\.[\w.]+/\d+)`\s*$")
_ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+) \|")


def documented() -> dict[str, dict[str, tuple[set[str], bool]]]:
    """schema id -> path -> (types, optional), from docs/JSON.md's tables."""
    out: dict[str, dict[str, tuple[set[str], bool]]] = {}
    current: dict[str, tuple[set[str], bool]] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if m := _HEADING.match(line):
            current = out.setdefault(m.group(1), {})
        elif line.startswith("## "):
            current = None
        elif current is not None and (m := _ROW.match(line)):
            words = [w.strip() for w in m.group(2).split(" or ")]
            optional = any(w.endswith("optional") for w in words)
            types = {w.removesuffix(", optional").removesuffix("optional").strip() for w in words} - {""}
            assert types <= TYPES, f"docs/JSON.md: {m.group(1)}: unknown type in {m.group(2)!r}"
            current[m.group(1)] = (types, optional)
    return out


def _jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    assert isinstance(v, dict), type(v)
    return "object"


def _observe(v: Any, path: str, fields: dict, seen: dict[str, set[str]], empty: set[str]) -> None:
    t = _jtype(v)
    if t == "object" and "map" in fields.get(path, (set(), False))[0]:
        t = "map"
    seen[path].add(t)
    if t == "object":
        for k, x in v.items():
            _observe(x, f"{path}.{k}" if path else k, fields, seen, empty)
    elif t == "map":
        for x in v.values():
            _observe(x, f"{path}.*", fields, seen, empty)
        if not v:
            empty.add(path)
    elif t == "array":
        for x in v:
            _observe(x, f"{path}[]", fields, seen, empty)
        if not v:
            empty.add(path)


def _parents(path: str) -> list[str]:
    out, p = [], path
    while True:
        p = re.sub(r"(\[\]|\.\*|\.[^.\[]+)$", "", p) if re.search(r"(\[\]|\.\*|\.[^.\[]+)$", p) else ""
        if not p:
            return out
        out.append(p)


def check(doc: dict[str, Any], *more: dict[str, Any]) -> list[str]:
    """What in ``doc`` (and ``more`` documents of the same schema) disagrees with docs/JSON.md: an undocumented
    field, a type the docs do not give, a documented field that never appears (unless optional, or inside an
    empty array or map or a null). [] when they agree."""
    schema = doc.get("schema")
    fields = documented().get(schema)
    if fields is None:
        return [f"{schema}: no section in docs/JSON.md"]
    seen: dict[str, set[str]] = defaultdict(set)
    empty: set[str] = set()
    for d in (doc, *more):
        assert d.get("schema") == schema, (d.get("schema"), schema)
        _observe(d, "", fields, seen, empty)
    seen.pop("", None)
    problems = []
    for path, types in sorted(seen.items()):
        if path not in fields:
            problems.append(f"{schema}: {path} ({', '.join(sorted(types))}) is not documented")
            continue
        allowed = fields[path][0] | ({"integer"} if "number" in fields[path][0] else set())
        if not types <= allowed:
            problems.append(
                f"{schema}: {path} is {', '.join(sorted(types))}, documented as {' or '.join(sorted(fields[path][0]))}"
            )
    for path, (_, optional) in fields.items():
        if path in seen or optional:
            continue
        ups = _parents(path)
        if any(
            u in empty or (u in seen and seen[u] <= {"null"}) or (u not in seen and fields.get(u, (0, False))[1])
            for u in ups
        ):
            continue
        problems.append(f"{schema}: documented {path} is absent")
    return problems
