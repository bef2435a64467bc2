"""Benchmark (not a test): pyradiomics time per lesion per phase, and the feature cache's effect.

Run: ``.venv/bin/python tests/benchmarks/bench_radiomics.py [--settings ct_original]
[--workers 2] [--patients 3]``. For each CT phantom patient of a ``tki-pd1`` cohort it extracts
the largest lesion's tumour and 5 mm ring on AP and PVP (4 tasks), first cold, then again with
the same cache (what a second bundle or a re-processed study costs). Prints seconds per
(lesion, phase) for tumour + ring, the ROI sizes, and the cached time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dicom_io.synthetic.anatomy import make_phantom
from dicom_io.synthetic.cohort import patient_spec, simulate
from inference.radiomics import FeatureCache, extract_all, make_tasks, settings_path
from plugin.research.radiomics_cohort import largest_lesion


def bench(patients: int, settings: str, workers: int) -> None:
    """Print one line per patient and the medians."""
    path = settings_path(settings)
    cold, warm = [], []
    for index, row in enumerate(simulate(patients, 0, "tki-pd1")):
        phantom = make_phantom(index, patient_spec(row, "ct"))
        images = {"AP": phantom.phases["CT_AP"], "PVP": phantom.phases["CT_PVP"]}
        lesion = largest_lesion(phantom.lesion_labels)
        tasks = make_tasks(images, lesion, phantom.spacing, ("tumour", "ring"), 5.0, path,
                           f"bench-{index}", within=phantom.labels > 0)
        with tempfile.TemporaryDirectory() as tmp:
            cache = FeatureCache(Path(tmp))
            started = time.perf_counter()
            features = extract_all(tasks, cache, workers)
            cold.append((time.perf_counter() - started) / len(images))
            started = time.perf_counter()
            extract_all(tasks, FeatureCache(Path(tmp)), workers)
            warm.append((time.perf_counter() - started) / len(images))
        print(f"patient {index}: lesion {int(lesion.sum())} voxels, {len(features)} features, "
              f"{cold[-1]:.2f} s per phase (tumour + ring) cold, {warm[-1] * 1000:.1f} ms cached")
    cold.sort()
    warm.sort()
    print(f"median: {cold[len(cold) // 2]:.2f} s per lesion per phase cold, "
          f"{warm[len(warm) // 2] * 1000:.1f} ms cached ({settings}, {workers} worker(s))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--settings", default="ct_original")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    bench(args.patients, args.settings, args.workers)


if __name__ == "__main__":
    main()
