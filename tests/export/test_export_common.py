"""export.common: deterministic UIDs, result identity, room boundaries."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from export_testutils import Lesion
from pydicom.dataset import Dataset
from pydicom.uid import UID

import export
from export.common import (
    RESEARCH_USE_TEXT,
    LesionLike,
    ResultIdentity,
    derive_uid,
    require_same_study,
)


def test_derive_uid_is_deterministic_and_valid() -> None:
    first = derive_uid("1.2.3", "0.1.0", "seg")
    assert first == derive_uid("1.2.3", "0.1.0", "seg")
    assert UID(first).is_valid
    assert first != derive_uid("1.2.3", "0.1.1", "seg")
    assert first != derive_uid("1.2.3", "0.1.0", "sr")


def test_derive_uid_needs_parts() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        derive_uid()


def test_result_identity_keeps_series_across_instances() -> None:
    one = ResultIdentity.derive("1.2.3", "0.1.0", "heatmap", series_number=903, instance_number=1)
    two = ResultIdentity.derive("1.2.3", "0.1.0", "heatmap", series_number=903, instance_number=2)
    assert one == ResultIdentity.derive("1.2.3", "0.1.0", "heatmap", 903, 1)
    assert one.series_instance_uid == two.series_instance_uid
    assert one.sop_instance_uid != two.sop_instance_uid
    assert one.study_instance_uid == "1.2.3"


def test_research_text_is_the_agreed_sentence() -> None:
    assert RESEARCH_USE_TEXT == "RESEARCH USE ONLY — not for diagnostic use"


def test_frozen_lesion_record_satisfies_protocol() -> None:
    lesion: LesionLike = Lesion(1, 1.0, 2.0, 3.0, (1.0, 2.0, 3.0))
    assert lesion.label == 1


def test_require_same_study_rejects_mixed_studies(source_images: list[Dataset]) -> None:
    other = copy.deepcopy(source_images[0])
    other.StudyInstanceUID = "1.2.3.4"
    with pytest.raises(ValueError, match="2 studies"):
        require_same_study([source_images[1], other])


def test_export_imports_no_other_room() -> None:
    """export receives datasets and arrays; it must not pull in the other rooms."""
    code = (
        "import sys, export; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'dicom_io', 'inference', 'plugin'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "build_segmentation" in export.__all__
