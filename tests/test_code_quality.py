"""The codebase's own rules, checked where CI runs them: rooms, ruff, mypy strict."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("dicom_io", "inference", "export")


def _imported_rooms(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & {*ROOMS, "plugin"}


@pytest.mark.parametrize("room", ROOMS)
def test_lower_rooms_do_not_import_each_other_or_plugin(room: str) -> None:
    offending = {str(p.relative_to(REPO)): sorted(_imported_rooms(p) - {room})
                 for p in (REPO / room).rglob("*.py")}
    assert {k: v for k, v in offending.items() if v} == {}


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)


def test_ruff_is_clean() -> None:
    run = _tool("ruff", "check", ".")
    assert run.returncode == 0, run.stdout[-3000:]


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    run = _tool("mypy")
    assert run.returncode == 0, run.stdout[-3000:]
