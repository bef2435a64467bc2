"""Write a response bundle: ``bundle.toml`` (format in docs/bundles.md) beside ``model.onnx``.

TOML is written by hand because the standard library only reads it; values are restricted to
strings, numbers, booleans, lists of those and one level of tables, which is all a bundle uses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["toml_text", "write_bundle_toml"]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value}")
        return repr(round(value, 8))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum()
    return key if bare else json.dumps(key)


def toml_text(document: Mapping[str, Any], header: str = "") -> str:
    """Top-level scalars first, then one ``[table]`` per mapping value."""
    lines = [f"# {line}" for line in header.splitlines()]
    tables = {k: v for k, v in document.items() if isinstance(v, Mapping)}
    lines += [f"{_key(k)} = {_value(v)}" for k, v in document.items() if k not in tables]
    for name, table in tables.items():
        lines += ["", f"[{_key(name)}]"]
        lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_bundle_toml(folder: Path, document: Mapping[str, Any], header: str = "") -> Path:
    """``folder/bundle.toml``; the caller re-loads it with ``load_bundle`` to validate."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bundle.toml"
    path.write_text(toml_text(document, header))
    return path
