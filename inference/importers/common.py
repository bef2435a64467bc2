"""What both importers share: refusals, the ``--labels`` mapping and writing ``bundle.toml``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TUMOUR_NAMES", "ImportRefused", "label_map", "parse_labels", "slug", "toml_text",
           "write_bundle"]

TUMOUR_NAMES = ("tumour", "tumor", "liver_tumour", "liver_tumor", "cancer", "lesion",
                "liver_lesion", "hcc")
"""Model label names taken as Hepatica's ``tumour`` when ``--labels`` does not say."""


class ImportRefused(ValueError):
    """The model uses something Hepatica cannot carry over faithfully; the message says what."""


def parse_labels(text: str | Mapping[str, str | Sequence[str]] | None
                 ) -> dict[str, tuple[str, ...]]:
    """``"liver=liver,tumour=liver_tumor+necrosis"`` → ``{"liver": ("liver",), ...}``.

    ``+`` joins several model labels into one Hepatica label (their probabilities are summed).
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {k: (v,) if isinstance(v, str) else tuple(v) for k, v in text.items()}
    out: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        names = tuple(n.strip() for n in value.split("+") if n.strip())
        if not sep or not key.strip() or not names:
            raise ImportRefused(f"--labels: {part!r} is not NAME=MODEL_LABEL[+MODEL_LABEL...]")
        out[key.strip()] = names
    return out


def label_map(model_labels: Sequence[str], requested: Mapping[str, tuple[str, ...]],
              source: str) -> dict[str, tuple[str, ...]]:
    """Hepatica's ``liver`` and ``tumour`` → the model's label names, checked against them.

    Without a request, ``liver`` is the model's ``liver`` and ``tumour`` the first of
    ``TUMOUR_NAMES`` it has; a model lacking either is refused (serving needs both).
    """
    unknown = [k for k in requested if k not in ("liver", "tumour")]
    if unknown:
        raise ImportRefused(f"--labels names {unknown}; only 'liver' and 'tumour' are mapped")
    lowered = {name.lower(): name for name in model_labels}
    mapping: dict[str, tuple[str, ...]] = {}
    defaults = {"liver": ("liver",), "tumour": TUMOUR_NAMES}
    for target in ("liver", "tumour"):
        if target in requested:
            missing = [n for n in requested[target] if n not in model_labels]
            if missing:
                raise ImportRefused(f"--labels {target}={'+'.join(requested[target])}: {source} "
                                    f"has no label {missing}; its labels are "
                                    f"{list(model_labels)}")
            mapping[target] = requested[target]
            continue
        found = next((lowered[n] for n in defaults[target] if n in lowered), None)
        if found is None:
            raise ImportRefused(
                f"{source} has no label Hepatica can use as '{target}' (labels: "
                f"{list(model_labels)}); name it with --labels {target}=MODEL_LABEL. Hepatica "
                "serves a model as its liver and tumour segmenter only when it outputs both")
        mapping[target] = (found,)
    overlap = set(mapping["liver"]) & set(mapping["tumour"])
    if overlap:
        raise ImportRefused(f"--labels maps {sorted(overlap)} to both liver and tumour")
    return mapping


def slug(text: str) -> str:
    """A bundle-name-safe form of ``text`` (lower case, ``-`` between words)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_text(document: Mapping[str, Any]) -> str:
    """TOML for a document of scalars, lists, tables and arrays of tables (two levels deep).

    Floats are written with ``repr`` so they read back bit for bit: normalisation constants
    copied from the plans must stay exactly what the framework used.
    """
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in document.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for name, table in tables:
        lines.extend(_table(name, table))
    return "\n".join(lines) + "\n"


def _table(name: str, table: Mapping[str, Any]) -> list[str]:
    lines = ["", f"[{name}]"]
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        is_table_array = isinstance(value, list) and value and all(
            isinstance(v, Mapping) for v in value)
        if isinstance(value, Mapping) or is_table_array:
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested:
        if isinstance(value, Mapping):
            lines.extend(_table(f"{name}.{_key(key)}", value))
        else:
            for item in value:
                lines.extend(["", f"[[{name}.{_key(key)}]]"])
                lines.extend(f"{_key(k)} = {_value(v)}" for k, v in item.items())
    return lines


def write_bundle(out_dir: Path, document: Mapping[str, Any]) -> Path:
    """Write ``bundle.toml`` and load it back with the serving loader (so a bundle the
    importer wrote is one serving accepts); returns the folder."""
    from inference.bundle import BUNDLE_FILE, load_bundle

    out_dir.mkdir(parents=True, exist_ok=True)
    file = out_dir / BUNDLE_FILE
    file.write_text(toml_text(document), encoding="utf-8")
    try:
        load_bundle(out_dir)
    except Exception:
        file.unlink()  # never leave a bundle that discovery would skip with a warning
        raise
    return out_dir
