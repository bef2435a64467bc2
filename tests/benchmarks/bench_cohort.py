"""Benchmark (not a test): time to write a single-time-point MR cohort with images.

Run: ``.venv/bin/python tests/benchmarks/bench_cohort.py --patients 20`` (prints seconds
for the sample and the linear extrapolation to 200 patients; cohort.csv alone is timed
for 200 patients). Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dicom_io.synthetic.cohort import write_cohort


def time_cohort(patients: int, images: bool, scenario: str = "immunotherapy") -> float:
    """Seconds to write ``patients`` MR patients (one time point) to a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        write_cohort(Path(tmp), patients, seed=1, scenario=scenario, modality="mr",
                     timepoints_=1, images=images)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=20)
    args = parser.parse_args()
    csv_only = time_cohort(200, images=False)
    sample = time_cohort(args.patients, images=True)
    print(f"cohort.csv only, 200 patients: {csv_only:.2f} s")
    print(f"with images, {args.patients} patients: {sample:.1f} s "
          f"({sample / args.patients:.2f} s/patient); 200 patients ≈ "
          f"{sample / args.patients * 200 / 60:.1f} min (extrapolated)")


if __name__ == "__main__":
    main()
