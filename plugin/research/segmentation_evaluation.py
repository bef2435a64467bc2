"""``hepatica evaluate segmentation``: a bundle against a site's reader ROIs, study by study.

A site measures a model on its own annotated studies before it relies on it: each study goes
through the served path (ONNX Runtime, the bundle's preprocessing and post-processing, as a
node runs it) and is compared with the reader's SEG/RTSTRUCT: Dice, HD95 (the larger of the
two directed 95th-percentile surface distances, in mm), volumes, and the longest axial
diameter of the largest lesion. Only what the reader drew is scored (a liver-only outline
gives no tumour figures). Results go to ``metrics.json`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.bundle import Bundle
from inference.measurements import measure
from plugin.research.annotated_studies import AnnotatedStudy, Skipped

__all__ = ["StudyScore", "dice", "evaluate_studies", "hd95", "write_report"]

RESEARCH_USE = "RESEARCH USE ONLY — not for diagnostic use"
Mask = npt.NDArray[np.bool_]


def dice(a: Mask, b: Mask) -> float:
    """Sørensen–Dice overlap (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def hd95(a: Mask, b: Mask, spacing_xyz: Sequence[float]) -> float | None:
    """95th-percentile Hausdorff distance (mm) between the surfaces; None if one is empty."""
    if not a.any() or not b.any():
        return None
    box = ndimage.find_objects((a | b).astype(np.uint8))[0]
    assert box is not None
    a, b = a[box], b[box]
    sampling = [float(s) for s in spacing_xyz[::-1]]
    surface_a, surface_b = _surface(a), _surface(b)
    to_b = np.asarray(ndimage.distance_transform_edt(~surface_b, sampling=sampling))
    to_a = np.asarray(ndimage.distance_transform_edt(~surface_a, sampling=sampling))
    return float(max(np.percentile(to_b[surface_a], 95), np.percentile(to_a[surface_b], 95)))


def _surface(mask: Mask) -> Mask:
    inner = ndimage.binary_erosion(mask, border_value=0)
    return np.asarray(mask & ~inner)


@dataclass(frozen=True)
class StudyScore:
    """One study's agreement with the reader (None: not drawn, so not scored)."""

    study: str
    modality: str
    phases: list[str]
    slices: int
    dice_liver: float | None
    hd95_liver_mm: float | None
    liver_ml_reader: float | None
    liver_ml_model: float
    dice_tumour: float | None
    hd95_tumour_mm: float | None
    tumour_ml_reader: float | None
    tumour_ml_model: float
    longest_diameter_reader_mm: float | None
    longest_diameter_model_mm: float | None
    diameter_error_mm: float | None
    seconds: float
    reader_roi: str


def score_study(study: AnnotatedStudy, predicted: npt.NDArray[np.integer],
                seconds: float = 0.0) -> StudyScore:
    """Compare a predicted label map (0/1/2) with the study's reader labels."""
    spacing = study.spacing
    voxel_ml = float(np.prod(spacing)) / 1000.0
    organ_model, tumour_model = predicted > 0, predicted == 2
    organ_reader = (study.labels == 1) | (study.labels == 2) | (study.labels == 4)
    tumour_reader = study.labels == 2
    liver = study.liver_drawn
    tumour = study.tumour_drawn
    reader_d = _largest_diameter(tumour_reader, spacing) if tumour else None
    model_d = _largest_diameter(tumour_model, spacing)
    return StudyScore(
        study=study.key, modality=study.modality, phases=list(study.phases),
        slices=int(study.labels.shape[0]),
        dice_liver=_round(dice(organ_model, organ_reader)) if liver else None,
        hd95_liver_mm=_round(hd95(organ_model, organ_reader, spacing)) if liver else None,
        liver_ml_reader=_round(organ_reader.sum() * voxel_ml) if liver else None,
        liver_ml_model=_round(organ_model.sum() * voxel_ml) or 0.0,
        dice_tumour=_round(dice(tumour_model, tumour_reader)) if tumour else None,
        hd95_tumour_mm=_round(hd95(tumour_model, tumour_reader, spacing)) if tumour else None,
        tumour_ml_reader=_round(tumour_reader.sum() * voxel_ml) if tumour else None,
        tumour_ml_model=_round(tumour_model.sum() * voxel_ml) or 0.0,
        longest_diameter_reader_mm=_round(reader_d),
        longest_diameter_model_mm=_round(model_d) if tumour else None,
        diameter_error_mm=(_round((model_d or 0.0) - reader_d)
                           if tumour and reader_d is not None else None),
        seconds=round(seconds, 2), reader_roi=study.roi)


def _largest_diameter(tumour: Mask, spacing: Sequence[float]) -> float | None:
    """Longest axial diameter of the largest lesion (RECIST's measure), None if none."""
    if not tumour.any():
        return None
    labels = tumour.astype(np.uint8) * 2
    lesions = measure(labels, spacing).lesions
    if not lesions:
        return None
    return max(lesions, key=lambda m: m.volume_ml).longest_diameter_mm


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def evaluate_studies(bundle: Bundle, studies: Sequence[AnnotatedStudy],
                     skipped: Sequence[Skipped] = (),
                     progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Segment each study through the served path and score it against its reader ROI."""
    from inference.runtime import create_session
    from inference.segmentation import segment

    session = create_session(bundle.model_file)
    scores = []
    for i, study in enumerate(studies):
        started = time.perf_counter()
        result = segment(bundle, session, list(study.channels), study.spacing)
        scores.append(score_study(study, result.labels, time.perf_counter() - started))
        if progress:
            progress("evaluating", i + 1, len(studies))
    return {"research_use": RESEARCH_USE,
            "bundle": {"name": bundle.name, "version": bundle.version,
                       "phases": list(bundle.inputs.phases)},
            "summary": summarise(scores),
            "studies": [asdict(s) for s in scores],
            "skipped": [asdict(s) for s in skipped]}


def summarise(scores: Sequence[StudyScore]) -> dict[str, Any]:
    """Mean, median and range of each figure over the studies that have it."""
    out: dict[str, Any] = {"studies": len(scores)}
    for name in ("dice_liver", "hd95_liver_mm", "dice_tumour", "hd95_tumour_mm",
                 "diameter_error_mm"):
        values = [getattr(s, name) for s in scores if getattr(s, name) is not None]
        if not values:
            continue
        out[name] = {"n": len(values), "mean": round(float(np.mean(values)), 4),
                     "median": round(float(np.median(values)), 4),
                     "min": round(float(np.min(values)), 4),
                     "max": round(float(np.max(values)), 4)}
    return out


COLUMNS = (("study", "study (hash)"), ("modality", "mod."), ("phases", "phase(s)"),
           ("slices", "slices"), ("dice_liver", "Dice liver"), ("hd95_liver_mm", "HD95 liver mm"),
           ("liver_ml_reader", "liver mL reader"), ("liver_ml_model", "liver mL model"),
           ("dice_tumour", "Dice tumour"), ("hd95_tumour_mm", "HD95 tumour mm"),
           ("tumour_ml_reader", "tumour mL reader"), ("tumour_ml_model", "tumour mL model"),
           ("longest_diameter_reader_mm", "LD reader mm"),
           ("longest_diameter_model_mm", "LD model mm"), ("diameter_error_mm", "LD error mm"))


def write_report(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``metrics.json`` and ``report.html`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = out_dir / "metrics.json"
    metrics.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    report = out_dir / "report.html"
    report.write_text(_html(result), encoding="utf-8")
    return metrics, report


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return html.escape(", ".join(map(str, value)))
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _html(result: dict[str, Any]) -> str:
    bundle = result["bundle"]
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(s.get(key))}</td>" for key, _ in COLUMNS)
                   + "</tr>" for s in result["studies"])
    summary = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{v['n']}</td><td>{v['mean']:.3f}</td>"
        f"<td>{v['median']:.3f}</td><td>{v['min']:.3f}–{v['max']:.3f}</td></tr>"
        for name, v in result["summary"].items() if isinstance(v, dict))
    skipped = "".join(f"<li>{html.escape(s['key'])}: {html.escape(s['reason'])}</li>"
                      for s in result["skipped"]) or "<li>none</li>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Segmentation evaluation: {html.escape(bundle['name'])} {html.escape(bundle['version'])}
</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:3px 6px;text-align:right}}
.ruo{{background:#ffd400;padding:6px;font-weight:bold}}</style></head><body>
<p class="ruo">{html.escape(result['research_use'])}</p>
<h1>{html.escape(bundle['name'])} {html.escape(bundle['version'])} against reader ROIs</h1>
<p>Inputs: {html.escape(', '.join(bundle['phases']))}. Each study was segmented through the
served path and compared with the reader's SEG/RTSTRUCT; a figure is blank when the reader did
not draw that structure. Studies are named by a hash of their StudyInstanceUID.</p>
<h2>Summary ({result['summary']['studies']} studies)</h2>
<table><tr><th>figure</th><th>n</th><th>mean</th><th>median</th><th>range</th></tr>{summary}
</table>
<h2>Per study</h2><table><tr>{head}</tr>{rows}</table>
<h2>Skipped</h2><ul>{skipped}</ul>
</body></html>
"""
