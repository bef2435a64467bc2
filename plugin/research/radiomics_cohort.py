"""Radiomics features of a training cohort: one row per patient, plus perturbed-mask ratings.

A cohort folder is what ``hepatica cohort`` writes (``cohort.csv``). Training uses the
reference mask (the phantom's ground truth here; a reader's contour at a site), as the seeds
did; serving uses Hepatica's segmentation. Phantom patients are rendered in memory from their
rows (the same phantoms ``hepatica cohort`` would write as DICOM, without the disk), which is
what keeps training cheap; reading a site's DICOM studies and masks from
``<patient_id>/tp0/`` is not implemented yet. Results are cached as CSV in the cohort folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from dicom_io.selection import EQUIVALENT_LABELS
from dicom_io.synthetic.anatomy import make_phantom
from dicom_io.synthetic.cohort import patient_spec
from inference.bundle import Bundle
from inference.radiomics import PERTURBATIONS, extract_all, make_tasks, perturb, settings_path

__all__ = ["FeatureSpec", "cohort_features", "patient_features", "read_rows"]

Progress = Callable[[str, int, int], None]
FEATURES_CSV = "radiomics_features.csv"
RATINGS_JSON = "radiomics_ratings.json"


@dataclass(frozen=True)
class FeatureSpec:
    """What to extract: phases (bundle names), regions, ring width and a settings file."""

    phases: tuple[str, ...] = ("AP", "PVP")
    regions: tuple[str, ...] = ("tumour", "ring")
    ring_mm: float = 5.0
    settings: str = "ct_original"
    modality: str = "ct"
    phantom_seed: int = 0

    @classmethod
    def for_bundle(cls, bundle: Bundle, phantom_seed: int = 0) -> FeatureSpec:
        """The extraction a response bundle was trained on (its ``[radiomics]`` table)."""
        config = bundle.radiomics
        return cls(bundle.inputs.phases, tuple(config.get("regions", ("tumour",))),
                   float(config.get("ring_mm", 5.0)), str(config.get("settings", "ct_original")),
                   str(config.get("modality", "ct")).lower(), phantom_seed)

    def fingerprint(self) -> str:
        """Changes whenever the features would change (settings text included)."""
        text = json.dumps(asdict(self), sort_keys=True) + settings_path(self.settings).read_text()
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_rows(cohort_dir: Path) -> list[dict[str, str]]:
    """The rows of ``cohort.csv``."""
    path = Path(cohort_dir) / "cohort.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a cohort folder needs cohort.csv "
                                "(write one with `hepatica cohort DIR --no-images`)")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def largest_lesion(lesion_labels: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """The largest connected tumour component (the lesion the seeds modelled)."""
    components, count = ndimage.label(lesion_labels > 0)
    if count == 0:
        raise ValueError("no tumour in the mask")
    sizes = np.bincount(components.ravel())[1:]
    return np.asarray(components == int(np.argmax(sizes)) + 1, dtype=bool)


def _phantom(row: Mapping[str, str], spec: FeatureSpec, index: int
             ) -> tuple[dict[str, npt.NDArray[np.float32]], npt.NDArray[np.bool_],
                        npt.NDArray[np.bool_], tuple[float, float, float]]:
    typed: dict[str, Any] = {k: _number(v) for k, v in row.items()}
    typed["patient_id"], typed["scenario"] = row["patient_id"], row["scenario"]
    phantom = make_phantom(spec.phantom_seed * 100_000 + index, patient_spec(typed, spec.modality))
    images = {phase: _phase(phantom.phases, phase) for phase in spec.phases}
    return images, largest_lesion(phantom.lesion_labels), phantom.labels > 0, phantom.spacing


def _phase(phases: Mapping[str, npt.NDArray[np.float32]], phase: str
           ) -> npt.NDArray[np.float32]:
    for label in EQUIVALENT_LABELS.get(phase, (phase,)):
        if label in phases:
            return phases[label]
    raise KeyError(f"the phantom has no {phase} phase (it has {sorted(phases)})")


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def patient_features(row: Mapping[str, str], index: int, spec: FeatureSpec,
                     ratings: bool = False) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Features of one phantom patient, and with ``ratings`` those of each perturbed mask."""
    images, lesion, liver, spacing = _phantom(row, spec, index)
    settings = settings_path(spec.settings)

    def features(mask: npt.NDArray[np.bool_], tag: str) -> dict[str, float]:
        tasks = make_tasks(images, mask, spacing, spec.regions, spec.ring_mm, settings,
                           f"{row['patient_id']}/{tag}", within=liver)
        return extract_all(tasks, workers=1)

    reference = features(lesion, "reference")
    raters = [reference]
    if ratings:
        raters += [features(perturb(lesion, kind, seed=index), kind) for kind in PERTURBATIONS]
    return reference, raters


def _job(args: tuple[dict[str, str], int, FeatureSpec, bool]
         ) -> tuple[str, dict[str, float], list[dict[str, float]]]:
    row, index, spec, ratings = args
    reference, raters = patient_features(row, index, spec, ratings)
    return row["patient_id"], reference, raters


def cohort_features(cohort_dir: Path, spec: FeatureSpec, rated_patients: int = 30,
                    workers: int = 2, progress: Progress | None = None
                    ) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, float]]]]:
    """Features per patient and perturbed-mask ratings of the first ``rated_patients``.

    Cached in the cohort folder under the spec's fingerprint; ``workers`` processes.
    """
    cohort_dir = Path(cohort_dir)
    cached = _load_cache(cohort_dir, spec)
    if cached is not None:
        return cached
    rows = read_rows(cohort_dir)
    jobs = [(row, int(row["patient_id"][3:]), spec, i < rated_patients)
            for i, row in enumerate(rows)]
    features: dict[str, dict[str, float]] = {}
    ratings: dict[str, list[dict[str, float]]] = {}
    for done, (pid, reference, raters) in enumerate(_run(jobs, workers), start=1):
        features[pid] = reference
        if len(raters) > 1:
            ratings[pid] = raters
        if progress:
            progress("radiomics features", done, len(jobs))
    _save_cache(cohort_dir, spec, features, ratings)
    return features, ratings


def _run(jobs: Sequence[tuple[dict[str, str], int, FeatureSpec, bool]], workers: int
         ) -> Any:
    if workers <= 1:
        return map(_job, jobs)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return pool.map(_job, jobs)


def _load_cache(cohort_dir: Path, spec: FeatureSpec
                ) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, float]]]] | None:
    path, ratings_path = cohort_dir / FEATURES_CSV, cohort_dir / RATINGS_JSON
    if not (path.is_file() and ratings_path.is_file()):
        return None
    stored = json.loads(ratings_path.read_text())
    if stored.get("fingerprint") != spec.fingerprint():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = {r.pop("patient_id"): {k: float(v) for k, v in r.items()} for r in rows}
    return features, stored["ratings"]


def _save_cache(cohort_dir: Path, spec: FeatureSpec, features: Mapping[str, dict[str, float]],
                ratings: Mapping[str, list[dict[str, float]]]) -> None:
    names = sorted(set.intersection(*(set(f) for f in features.values())))
    with (cohort_dir / FEATURES_CSV).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", *names])
        for pid, values in features.items():
            writer.writerow([pid, *(repr(values[n]) for n in names)])
    (cohort_dir / RATINGS_JSON).write_text(json.dumps(
        {"fingerprint": spec.fingerprint(), "spec": asdict(spec), "ratings": ratings}))
