"""Run dciodvfy and PixelMed's validators on a DICOM file; report their error lines.

PixelMed (Debian ``libpixelmed-java``) validates with XSLT; Java 17's default XPath limits
stop its compiled stylesheets before they start (JAXP0801003), hence the ``jdk.xml`` options.
A run that does not reach "IOD validation complete" raises instead of passing silently.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from export_testutils import dciodvfy_errors

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")  # its manifest names the other jars
JAVA = shutil.which("java") or "/usr/bin/java"
_XPATH_LIMITS_OFF = ("-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0",
                     "-Djdk.xml.xpathTotalOpLimit=0")
SR_VALIDATOR = "com.pixelmed.validate.DicomSRValidator"
INSTANCE_VALIDATOR = "com.pixelmed.validate.DicomInstanceValidator"
_UNRECOGNISED = "IOD (SOP Class) unrecognized"

needs_pixelmed = pytest.mark.skipif(
    not PIXELMED_JAR.exists() or shutil.which("java") is None,
    reason="PixelMed validators not installed (libpixelmed-java, a JRE): run docker/setup.sh",
)


@dataclass(frozen=True)
class PixelMedReport:
    """What one PixelMed validator said about one file."""

    validator: str
    output: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("Error")]

    @property
    def recognised(self) -> bool:
        """False when this PixelMed release has no rules for the file's SOP Class."""
        return _UNRECOGNISED not in self.output


def pixelmed(path: Path, *, sr: bool) -> PixelMedReport:
    """Validate ``path`` with DicomSRValidator (``sr``) or DicomInstanceValidator.

    The SR validator also checks content item order and template identifiers.
    """
    validator = SR_VALIDATOR if sr else INSTANCE_VALIDATOR
    options = ["-checkcontentitemorder", "-checktemplateid"] if sr else []
    result = subprocess.run(
        [JAVA, *_XPATH_LIMITS_OFF, "-cp", str(PIXELMED_JAR), validator, *options, str(path)],
        capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0 or not (
            "IOD validation complete" in output or _UNRECOGNISED in output):
        raise RuntimeError(f"{validator} did not finish on {path.name} "
                           f"(exit {result.returncode}):\n{output[-2000:]}")
    return PixelMedReport(validator.rsplit(".", 1)[-1], output)


@dataclass(frozen=True)
class Verdict:
    """Both validators' error lines for one file (warnings are allowed)."""

    dciodvfy: list[str]
    pixelmed: PixelMedReport

    @property
    def errors(self) -> list[str]:
        return [*(f"dciodvfy: {e}" for e in self.dciodvfy),
                *(f"{self.pixelmed.validator}: {e}" for e in self.pixelmed.errors)]


def validate(path: Path, *, sr: bool) -> Verdict:
    """dciodvfy and the fitting PixelMed validator on one written file."""
    return Verdict(dciodvfy_errors(path), pixelmed(path, sr=sr))
