"""Prepared image inputs of a phantom cohort for the deep response families.

Phantom patients are rendered in memory from their ``cohort.csv`` rows (the phantoms
``hepatica cohort`` would write as DICOM, without the disk), as the radiomics cohort does.
Two kinds of input:

* training: the largest lesion of the ground truth centres the crop (a site's reader
  contour), on a crop widened by a margin for random shifts;
* served: the shipped segmentation bundle segments the phantom through ONNX Runtime and the
  crop is centred on its largest measured lesion, exactly as ``plugin.pipeline`` serves a
  study; beside it the distance (mm) of every crop voxel to the ground-truth lesion, which
  is what heatmap localisation is measured against.

Both go through ``inference.deep_response.prepare``. Each patient is cached as one ``.npz``
under ``<cohort>/deep_inputs/<fingerprint>/`` so an interrupted run resumes.
Reading a site's own DICOM cohort is not implemented (as for radiomics).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from dicom_io.synthetic.anatomy import make_phantom
from dicom_io.synthetic.cohort import patient_spec
from inference.deep_response import lesion_crop, prepare
from plugin.research.radiomics_cohort import largest_lesion, read_rows

__all__ = ["PHANTOM_SERIES", "DeepDataSpec", "cohort_inputs", "typed_row"]

Progress = Callable[[str, int, int], None]
PHANTOM_SERIES = {"DWI": "DWI_B800", "ADC": "ADC", "T2": "T2", "PRE": "PRE", "AP": "AP",
                  "PVP": "PVP", "DP": "DP", "HBP": "HBP", "IN": "IN", "OPP": "OPP"}
"""A bundle channel → the phantom series that shows it."""
SEGMENTATION_PHASES = ("AP", "PVP")


@dataclass(frozen=True)
class DeepDataSpec:
    """What to prepare: channels (bundle phases), crop, spacing, margin and where from."""

    channels: tuple[str, ...]
    crop_zyx: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    margin: int = 8
    normalisation: str = "liver_median"
    modality: str = "mr"
    phantom_seed: int = 0
    served: str = ""
    """Path of the segmentation bundle for served inputs; empty: ground-truth crops."""

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def typed_row(row: Mapping[str, str]) -> dict[str, Any]:
    """A cohort.csv row with numbers as numbers (what ``patient_spec`` reads)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        try:
            out[key] = int(value)
        except (TypeError, ValueError):
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                out[key] = value
    out["patient_id"], out["scenario"] = row["patient_id"], row["scenario"]
    return out


def _render(row: Mapping[str, str], spec: DeepDataSpec, extra: Sequence[str] = ()
            ) -> tuple[dict[str, npt.NDArray[np.float32]], Any]:
    """The phantom of a row with only the series the channels (and ``extra``) need."""
    index = int(row["patient_id"][3:])
    wanted = tuple(dict.fromkeys([*(PHANTOM_SERIES.get(c, c) for c in spec.channels),
                                  *extra]))
    base = patient_spec(typed_row(row), spec.modality)
    phantom = make_phantom(spec.phantom_seed * 100_000 + index,
                           dataclasses.replace(base, sequences=wanted))
    return {c: phantom.phases[PHANTOM_SERIES.get(c, c)] for c in spec.channels}, phantom


def _truth_input(row: Mapping[str, str], spec: DeepDataSpec) -> dict[str, npt.NDArray[Any]]:
    channels, phantom = _render(row, spec)
    lesion = largest_lesion(phantom.lesion_labels)
    crop = lesion_crop(lesion, phantom.spacing, spec.spacing_xyz, spec.crop_zyx)
    image = prepare([channels[c] for c in spec.channels], phantom.labels > 0,
                    crop.widened(spec.margin), spec.normalisation)
    return {"image": image.astype(np.float16)}


def _served_input(row: Mapping[str, str], spec: DeepDataSpec) -> dict[str, npt.NDArray[Any]]:
    from inference.bundle import load_bundle
    from inference.measurements import measure
    from inference.runtime import create_session
    from inference.segmentation import segment

    bundle = load_bundle(spec.served)
    channels, phantom = _render(row, spec, SEGMENTATION_PHASES)
    phases = [phantom.phases[p] for p in bundle.inputs.phases]
    session = create_session(bundle.model_file, providers=["CPUExecutionProvider"], threads=1)
    result = segment(bundle, session, phases, phantom.spacing)
    measured = measure(result.labels, phantom.spacing, arterial=phantom.phases["AP"],
                       tumour_probability=result.tumour_probability)
    truth = largest_lesion(phantom.lesion_labels)
    distance = ndimage.distance_transform_edt(~truth, sampling=phantom.spacing[::-1])
    lesion_labels = measured.lesion_labels
    if lesion_labels is None or not (lesion_labels == 1).any():
        return {"missing": np.array(1)}
    crop = lesion_crop(np.asarray(lesion_labels == 1), phantom.spacing, spec.spacing_xyz,
                       spec.crop_zyx)
    image = prepare([channels[c] for c in spec.channels], result.labels > 0, crop,
                    spec.normalisation)
    near = ndimage.map_coordinates(distance, crop.coordinates(), order=1, mode="nearest")
    return {"image": image, "distance_mm": near.astype(np.float32),
            "reference_z": np.array(crop.centre[0]),
            "diameter_mm": np.array(measured.lesions[0].longest_diameter_mm)}


def _job(args: tuple[dict[str, str], DeepDataSpec, str]) -> tuple[str, str]:
    row, spec, target = args
    values = _served_input(row, spec) if spec.served else _truth_input(row, spec)
    partial = Path(target).with_suffix(".partial.npz")
    np.savez_compressed(partial, **values)  # type: ignore[arg-type]
    partial.replace(target)  # atomic: a reader never sees half a file
    return row["patient_id"], target


def _folder(cohort_dir: Path, spec: DeepDataSpec) -> Path:
    folder = Path(cohort_dir) / "deep_inputs" / spec.fingerprint()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    return folder


def _run(jobs: list[tuple[dict[str, str], DeepDataSpec, str]], workers: int
         ) -> Iterator[tuple[str, str]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_job, jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_job, jobs)


def cohort_inputs(cohort_dir: Path, spec: DeepDataSpec, patients: Sequence[str] | None = None,
                  workers: int = 2, progress: Progress | None = None
                  ) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """patient_id → its prepared arrays (``image``; served: ``distance_mm``, or ``missing``
    when the served segmentation found no lesion). Cached per patient."""
    rows = read_rows(cohort_dir)
    if patients is not None:
        wanted = set(patients)
        rows = [r for r in rows if r["patient_id"] in wanted]
    folder = _folder(cohort_dir, spec)
    jobs = [(r, spec, str(folder / f"{r['patient_id']}.npz")) for r in rows
            if not (folder / f"{r['patient_id']}.npz").is_file()]
    done = len(rows) - len(jobs)
    what = "served inputs" if spec.served else "training inputs"
    for _ in _run(jobs, workers):
        done += 1
        if progress is not None:
            progress(what, done, len(rows))
    out = {}
    for row in rows:
        with np.load(folder / f"{row['patient_id']}.npz") as data:
            out[row["patient_id"]] = {k: np.asarray(data[k]) for k in data.files}
    return out
