"""Benchmark (not a test): Hepatica's segmentation step against the MONAI reference.

Run: ``.venv/bin/python tests/benchmarks/bench_segmentation.py [--runs 3] [--reference-runs 1]``.
Same network (the bundle's ONNX weights loaded into the MONAI UNet, parity checked), same
model-grid input, measured in the same run; prints the JSON and keeps it in
``tests/benchmarks/results/``. Not collected by pytest (no ``test_`` prefix); no timing is
asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plugin.cli.bench_segmentation import bench_segmentation, write_segmentation_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reference-runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results-dir", type=Path,
                        default=Path(__file__).parent / "results")
    args = parser.parse_args()
    report = bench_segmentation(args.runs, args.reference_runs, args.seed, progress=print)
    print(json.dumps(report, indent=2))
    print(f"kept in {write_segmentation_result(report, args.results_dir)}")


if __name__ == "__main__":
    main()
