"""Phantom tissue maps for domain-randomised training (dicom_io phantoms → inference codes).

The domain-randomised recipe draws every training image itself from a map of tissues
(``inference.training.domain_randomisation.TISSUES``), so it needs the phantom's anatomy,
not its pictures. ``tissue_map`` replays the phantom generator's anatomy and lesion draws for
a seed — the same calls on the same random stream as ``make_phantom``, without rendering a
single phase (four times faster) — and ``phase_tables`` gives the physical intensity of every
tissue in each phase from the phantom's own contrast tables. A test pins the replay to
``make_phantom``'s labels, so a change in the generator cannot silently shift the maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from dicom_io.synthetic import PhantomSpec, contrast, lesions
from dicom_io.synthetic import anatomy as phantom_anatomy
from inference.training import domain_randomisation as dr

__all__ = ["PhantomTissues", "phase_tables", "tissue_map"]

MR_TRAINING_PHASES = ("PRE", "AP_EARLY", "AP", "PVP", "DP", "HBP")
CT_TRAINING_PHASES = ("CT_NC", "CT_AP", "CT_PVP", "CT_DP")
"""The phases a single-series bundle learns from (one drawn per training patch)."""


@dataclass(frozen=True)
class PhantomTissues:
    """A phantom's tissue codes and training labels on its own grid."""

    seed: int
    modality: str
    tissues: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]
    spacing: tuple[float, float, float]


def tissue_map(seed: int, spec: PhantomSpec | None = None) -> PhantomTissues:
    """Replay ``make_phantom(seed, spec)``'s anatomy and lesions as tissue codes.

    Only the historical anatomy and lesion knobs are honoured (the findings of issue 3 are
    drawn on other streams and are not part of the training recipe).
    """
    spec = spec or PhantomSpec()
    if spec.lesion_plan or spec.course or spec.margin != "regular" or spec.satellites:
        raise ValueError("tissue_map replays default lesions only (no plan, course, "
                         "infiltrative margin or satellites)")
    rng = np.random.default_rng(seed)
    spacing = (spec.pixel_spacing_mm, spec.pixel_spacing_mm, spec.slice_spacing_mm)
    origin = (-spec.columns * spacing[0] / 2, -spec.rows * spacing[1] / 2,
              -spec.slices * spacing[2] / 2)
    grid = phantom_anatomy._grid(spec, spacing, origin)
    organs = phantom_anatomy._anatomy(grid, rng)
    liver_core = ndimage.binary_erosion(organs["liver"], iterations=4)
    lesion_labels, necrosis = phantom_anatomy._lesions(grid, liver_core, spec, rng)
    lesion_labels, necrosis = lesions.shape_and_evolve(grid, liver_core, lesion_labels,
                                                       necrosis, spec, seed)
    lesion = lesion_labels > 0
    codes = np.zeros(lesion.shape, np.uint8)
    for name in ("fat", "muscle", "bone", "spleen", "kidney", "aorta", "ivc", "portal",
                 "hepatic_vein", "liver"):
        codes[organs[name]] = dr.tissue_code(name)
    # vessels within the organ's outline belong to it, as in clinical liver segmentations
    # (the phantom's own truth leaves most of them out; serving fills such holes anyway)
    inside = ndimage.binary_closing(organs["liver"] | lesion, iterations=3)
    codes[organs["portal"] & inside] = dr.tissue_code("portal_in_liver")
    codes[organs["hepatic_vein"] & inside] = dr.tissue_code("hepatic_vein_in_liver")
    codes[lesion & ~necrosis] = dr.tissue_code("tumour")
    codes[lesion & necrosis] = dr.tissue_code("necrosis")
    labels = dr.LABEL_OF_TISSUE[codes].astype(np.uint8)
    return PhantomTissues(seed, spec.modality, codes, labels, spacing)


def phase_tables(modality: str, phases: Sequence[str] | None = None
                 ) -> tuple[tuple[npt.NDArray[np.float32], ...], ...]:
    """One single-channel choice per phase: the phantom's tissue intensities of that phase."""
    names = phases or (CT_TRAINING_PHASES if modality == "CT" else MR_TRAINING_PHASES)
    return tuple((dr.table_vector(contrast.intensities(p)),) for p in names)
