"""`hepatica bench`: per-step wall time of the pipeline on a phantom, as ratios.

Machines differ and are shared, so each figure is also given as a ratio to a fixed numpy
reference workload measured in the same run; compare ratios across machines, not seconds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dicom_io.synthetic import make_phantom, write_phantom_study
from plugin.pipeline.run import PipelineSettings, process_study


def reference_seconds(repeats: int = 5) -> float:
    """Median time of a fixed workload: sort 4M float32 and a 3-D Gaussian-like stencil."""
    rng = np.random.default_rng(0)
    data = rng.random(4_000_000, dtype=np.float32)
    volume = rng.random((64, 128, 128), dtype=np.float32)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.sort(data)
        for axis in range(3):
            volume = (np.roll(volume, 1, axis) + volume + np.roll(volume, -1, axis)) / np.float32(3)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_pipeline(runs: int = 3, seed: int = 7, settings: PipelineSettings | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, object]:
    """Run the offline pipeline ``runs`` times on one phantom; median seconds per step."""
    reference = reference_seconds()
    steps: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="hepatica-bench-") as tmp:
        study = Path(tmp) / "study"
        write_phantom_study(make_phantom(seed), study)
        for run in range(runs):
            if progress:
                progress(f"run {run + 1}/{runs}")
            started = time.perf_counter()
            result = process_study(study / "dicom", Path(tmp) / f"out{run}", settings)
            timings = {**result.summary["timings_s"], "total": time.perf_counter() - started}
            for name, seconds in timings.items():
                steps.setdefault(name, []).append(float(seconds))
    medians = {name: statistics.median(values) for name, values in steps.items()}
    return {"reference_seconds": reference, "runs": runs, "seed": seed,
            "median_seconds": medians,
            "ratio_to_reference": {k: v / reference for k, v in medians.items()}}
