"""Phantom tissue maps for the domain-randomised recipe replay the phantom generator."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_io.synthetic import PhantomSpec, make_phantom
from inference.training import domain_randomisation as dr
from plugin.research.phantom_tissues import phase_tables, tissue_map

SMALL = dict(rows=96, columns=96, slices=24, pixel_spacing_mm=4.0, slice_spacing_mm=8.0)


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_tissue_map_replays_make_phantom(modality: str) -> None:
    """Same seed, same anatomy and lesions: labels agree except intrahepatic vessels,
    which the map counts as liver (as clinical outlines do)."""
    spec = PhantomSpec(modality=modality, **SMALL)  # type: ignore[arg-type]
    truth = tissue_map(5, spec)
    phantom = make_phantom(5, spec)
    assert truth.tissues.shape == phantom.labels.shape
    assert np.array_equal(truth.labels == 2, phantom.labels == 2)
    differ = truth.labels != phantom.labels
    vessels = np.isin(truth.tissues, (dr.tissue_code("portal_in_liver"),
                                      dr.tissue_code("hepatic_vein_in_liver")))
    assert not (differ & ~vessels).any()
    assert (truth.labels == 1).sum() >= (phantom.labels == 1).sum()


def test_phase_tables_hold_every_phase_of_the_modality() -> None:
    mr, ct = phase_tables("MR"), phase_tables("CT")
    assert len(mr) == 6 and len(ct) == 4 and all(len(choice) == 1 for choice in mr + ct)
    liver, fat = dr.tissue_code("liver"), dr.tissue_code("fat")
    assert all(choice[0][liver] > choice[0][fat] for choice in ct)  # HU: liver over fat


def test_enrich_anatomy_adds_tissues_but_never_changes_labels() -> None:
    truth = tissue_map(11, PhantomSpec(**SMALL))  # type: ignore[arg-type]
    enriched = dr.enrich_anatomy(truth.tissues, truth.spacing, np.random.default_rng(1))
    assert np.array_equal(dr.LABEL_OF_TISSUE[enriched], dr.LABEL_OF_TISSUE[truth.tissues])
    added = set(np.unique(enriched).tolist()) - set(np.unique(truth.tissues).tolist())
    assert {dr.tissue_code("subcutaneous_fat"), dr.tissue_code("bowel_wall")} <= added
