"""Typed reads from a framework's settings table in ``bundle.toml`` (``[nnunet]``, ``[monai]``).

Each helper raises ``SettingsError(key, problem)``; ``inference.bundle`` turns it into a
``BundleError`` naming the file and the dotted key, like every other bad bundle key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SettingsError", "boolean", "choice", "integer_in", "integers", "join", "number",
           "numbers", "positive_int", "triple"]


class SettingsError(ValueError):
    """A bad key in a framework settings table: ``key`` and what is wrong with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"key '{key}' {problem}")
        self.key = key
        self.problem = problem


def join(prefix: str, key: str) -> str:
    """``prefix.key``, or ``key`` without a prefix."""
    return f"{prefix}.{key}" if prefix else key


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integers(table: Mapping[str, Any], key: str, default: list[int], prefix: str = ""
             ) -> list[int]:
    value = table.get(key, default)
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise SettingsError(join(prefix, key), f"must be a list of integers, got {value!r}")
    return list(value)


def numbers(table: Mapping[str, Any], key: str, length: int, prefix: str = ""
            ) -> tuple[float, ...]:
    value = table.get(key)
    if not isinstance(value, list) or len(value) != length or not all(map(_is_number, value)):
        raise SettingsError(join(prefix, key), f"must be {length} numbers, got {value!r}")
    return tuple(float(v) for v in value)


def triple(table: Mapping[str, Any], key: str, kind: type, prefix: str = ""
           ) -> tuple[Any, Any, Any]:
    value = table.get(key)
    if not isinstance(value, list) or len(value) != 3 or not all(
            _is_number(v) and v > 0 for v in value) \
            or (kind is int and not all(isinstance(v, int) for v in value)):
        raise SettingsError(join(prefix, key),
                            f"must be 3 positive {kind.__name__}s, got {value!r}")
    return kind(value[0]), kind(value[1]), kind(value[2])


def number(table: Mapping[str, Any], key: str, default: float | None, prefix: str = ""
           ) -> float:
    value = table.get(key, default)
    if not _is_number(value):
        raise SettingsError(join(prefix, key), f"must be a number, got {value!r}")
    return float(value)


def integer_in(table: Mapping[str, Any], key: str, default: int, low: int, high: int,
               prefix: str = "") -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(join(prefix, key),
                            f"must be an integer in [{low}, {high}], got {value!r}")
    return value


def positive_int(table: Mapping[str, Any], key: str, prefix: str = "") -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(join(prefix, key), f"must be a positive integer, got {value!r}")
    return value


def boolean(table: Mapping[str, Any], key: str, default: bool, prefix: str = "") -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise SettingsError(join(prefix, key), f"must be true or false, got {value!r}")
    return value


def choice(table: Mapping[str, Any], key: str, allowed: Sequence[str], default: str,
           prefix: str = "") -> str:
    value = table.get(key, default)
    if value not in allowed:
        raise SettingsError(join(prefix, key), f"must be one of {tuple(allowed)}, got {value!r}")
    return str(value)
