"""Shared fixtures: a phantom study not used in training, and its ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io.synthetic import make_phantom, write_phantom_study

TEST_SEED = 424_242
"""Not a training (100000+) nor a validation (200000+) seed."""


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    write_phantom_study(make_phantom(TEST_SEED), out)
    return out
