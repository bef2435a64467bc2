"""The report renders in headless Chromium (Debian package ``chromium``) without console errors.

The screenshot is kept under pytest's tmp dir and copied to tests/artifacts/ (git-ignored)
for a human to look at.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package"),
]


def render(page: Path, screenshot: Path, profile: Path) -> str:
    """Load ``page`` headless, write a screenshot, return Chromium's log (console included)."""
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        f"--screenshot={screenshot}", "--window-size=1280,2000", page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def console_lines(log: str) -> list[str]:
    """Lines Chromium logs for page console messages and uncaught exceptions."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_console_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The checker must see errors when there are some, or its silence proves nothing."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>notDefined()</script></body></html>")
    log = render(page, tmp_path / "broken.png", tmp_path / "profile")
    assert any("Uncaught" in line for line in console_lines(log))


def test_report_renders_without_console_errors(
    binary_report: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    out, _ = binary_report
    screenshot = tmp_path / "report.png"
    log = render(out / "report.html", screenshot, tmp_path / "profile")
    assert console_lines(log) == []
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 50_000  # a rendered page, not a blank one
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "evaluation_report.png")


def test_run_report_with_robustness_renders(
    run_report: tuple[Path, dict[str, object], str], tmp_path: Path
) -> None:
    """The ``--run`` report (robustness table, folded input lists, run notes) renders too."""
    out, _, _ = run_report
    html = (out / "report.html").read_text()
    assert "Robustness: AUC when a phase is dropped" in html
    screenshot = tmp_path / "run_report.png"
    log = render(out / "report.html", screenshot, tmp_path / "profile")
    assert console_lines(log) == []
    assert screenshot.stat().st_size > 50_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "evaluation_run_report.png")
