"""Profile (not a test): the offline pipeline on one phantom under cProfile, warm.

Run: ``.venv/bin/python tests/benchmarks/profile_pipeline.py [--seed 7] [--out FILE.prof]``.
Runs ``process_study`` once to warm the process (model session, imports), then once under
cProfile; prints the step timings and the 40 costliest calls by cumulative time. Not
collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
from pathlib import Path

from dicom_io.synthetic import make_phantom, write_phantom_study
from plugin.pipeline.run import process_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="also keep the raw profile here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hepatica-profile-") as tmp:
        root = Path(tmp)
        write_phantom_study(make_phantom(args.seed), root / "study")
        process_study(root / "study" / "dicom", root / "warm")
        profile = cProfile.Profile()
        profile.enable()
        result = process_study(root / "study" / "dicom", root / "out")
        profile.disable()
    print(json.dumps(result.summary["timings_s"], indent=1))
    if args.out:
        profile.dump_stats(args.out)
    pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
