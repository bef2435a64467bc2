"""Fixtures for the Orthanc tests: phantom studies and a real Orthanc with the plugin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_io.synthetic import make_phantom, write_phantom_study
from tests.orthanc.orthanc_server import (
    OrthancServer,
    missing_packages,
    start_worker,
    stop_process,
    write_hepatica_config,
)

PHANTOM_SEEDS = (424_243, 424_244, 424_245)
"""Not training (100000+) nor validation (200000+) seeds; one study per scenario."""


@pytest.fixture(scope="session")
def phantom_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    return {}


def phantom(phantom_dirs: dict[int, Path], factory: pytest.TempPathFactory, seed: int) -> Path:
    """The phantom of ``seed`` (written once per session); its DICOM is under ``dicom/``."""
    if seed not in phantom_dirs:
        out = factory.mktemp(f"phantom-{seed}")
        write_phantom_study(make_phantom(seed), out)
        phantom_dirs[seed] = out
    return phantom_dirs[seed]


class Node:
    """Orthanc with the plugin plus `hepatica serve --orthanc`, in one temp folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.orthanc = OrthancServer(root / "orthanc", root / "hepatica.toml")
        self.data_dir = root / "data"
        write_hepatica_config(root / "hepatica.toml", self.data_dir, self.orthanc.url)
        self.worker_log = root / "worker.log"
        self.worker = None

    def start(self) -> None:
        self.orthanc.start()
        self.start_worker()

    def start_worker(self) -> None:
        self.worker = start_worker(self.root / "hepatica.toml", self.orthanc.url,
                                   self.worker_log)

    def stop(self) -> None:
        if self.worker is not None:
            stop_process(self.worker)
        self.orthanc.stop()

    def logs(self) -> str:
        worker = self.worker_log.read_text(errors="replace") if self.worker_log.exists() else ""
        return (f"--- orthanc\n{self.orthanc.log_tail(60)}\n--- worker\n"
                + "\n".join(worker.splitlines()[-40:]))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    missing = missing_packages()
    if missing:
        pytest.skip(f"Orthanc not installed ({', '.join(missing)}): run docker/setup.sh")
    running = Node(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()
