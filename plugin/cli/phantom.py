"""Command-line options for the richer phantoms and the synthetic cohort (issue 3).

``plugin/cli/main.py`` owns the parser; this module only adds options and runs them, so the
single-study ``hepatica phantom OUT_DIR`` keeps its positional argument while
``hepatica cohort …`` (and ``hepatica phantom cohort …``, rewritten by
:func:`rewrite_phantom_cohort`) reach :func:`run_cohort`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from dicom_io.synthetic import PhantomSpec
from dicom_io.synthetic.cohort import SCENARIOS, write_cohort
from dicom_io.synthetic.vendors import VENDORS


def add_phantom_options(parser: argparse.ArgumentParser) -> None:
    """Opt-in options of ``hepatica phantom``; without them the output is unchanged."""
    parser.add_argument("--vendor", choices=VENDORS, help="header and description style")
    parser.add_argument("--sequences", help="comma-separated, e.g. PRE,AP,PVP,DP,HBP,T2,IN,"
                        "OPP,DWI_B50,DWI_B400,DWI_B800,ADC or CT_NC,CT_AP,CT_PVP,CT_DP")
    parser.add_argument("--packaging", choices=("classic", "dynamic", "enhanced"),
                        default="classic")
    parser.add_argument("--ignored-series", action="store_true",
                        help="add localizer, subtraction and MPR series")
    parser.add_argument("--not-coregistered", action="store_true",
                        help="per-sequence FOV, matrix and slice positions")
    parser.add_argument("--motion-mm", type=float, default=0.0)
    for flag in ("cirrhosis", "capsule", "mosaic", "pvtt", "feeding-arteries",
                 "peritumoral-enhancement"):
        parser.add_argument(f"--{flag}", action="store_true")
    parser.add_argument("--infiltrative", action="store_true", help="irregular margin")
    parser.add_argument("--satellites", type=int, default=0)
    parser.add_argument("--ct-ma", type=float, help="CT tube current (noise ∝ 1/√mA)")
    parser.add_argument("--timepoints", type=int, default=1,
                        help=">1: baseline and follow-ups in tp0, tp1, … (partial response)")


def phantom_spec_from_args(args: argparse.Namespace) -> PhantomSpec:
    """The PhantomSpec the options ask for (defaults: the historical phantom)."""
    sequences = (tuple(s.strip().upper() for s in args.sequences.split(",") if s.strip())
                 if getattr(args, "sequences", None) else None)
    return PhantomSpec(
        modality=args.modality.upper(), sequences=sequences, vendor=args.vendor,
        packaging=args.packaging, ignored_series=args.ignored_series,
        coregistered=not args.not_coregistered, motion_mm=args.motion_mm,
        cirrhosis=args.cirrhosis, capsule=args.capsule, mosaic=args.mosaic, pvtt=args.pvtt,
        feeding_arteries=args.feeding_arteries,
        peritumoral_enhancement=args.peritumoral_enhancement,
        margin="infiltrative" if args.infiltrative else "regular", satellites=args.satellites,
        ct_tube_current_ma=args.ct_ma)


def run_phantom(args: argparse.Namespace) -> int:
    """``hepatica phantom OUT_DIR [options]``: one study, or K time points of one patient."""
    from dicom_io.synthetic import make_phantom, write_phantom_study

    if getattr(args, "timepoints", 1) > 1:
        return run_phantom_timepoints(args)
    phantom = make_phantom(args.seed, phantom_spec_from_args(args))
    files = write_phantom_study(phantom, Path(args.out_dir))
    print(f"wrote {len(files)} files in {len(phantom.spec.phases)} series to "
          f"{Path(args.out_dir) / 'dicom'}; truth in {Path(args.out_dir) / 'ground_truth'}")
    return 0


def run_phantom_timepoints(args: argparse.Namespace) -> int:
    """``hepatica phantom OUT_DIR --timepoints K``: a partial responder's K studies."""
    import datetime as dt

    from dicom_io.synthetic.timepoints import plan_courses, write_timepoints

    spec = phantom_spec_from_args(args)
    courses = plan_courses("PR", "PR", 4, args.timepoints - 1)
    months = [2.0 * k for k in range(args.timepoints)]
    records = write_timepoints(Path(args.out_dir), args.seed, spec, courses, months,
                               baseline_date=dt.date(2026, 1, 15),
                               patient_id=f"HEPPH{args.seed:05d}")
    print(f"wrote {len(records)} studies to {args.out_dir}/tp0 … tp{len(records) - 1}")
    return 0


def add_cohort_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                      name: str = "cohort") -> argparse.ArgumentParser:
    """``hepatica cohort OUT_DIR --patients N --seed S …``."""
    p = subparsers.add_parser(name, help="write a synthetic cohort (studies + cohort.csv)")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", choices=SCENARIOS, default="immunotherapy")
    p.add_argument("--modality", choices=("mr", "ct"), default="mr")
    p.add_argument("--timepoints", type=int, default=1)
    p.add_argument("--no-images", action="store_true", help="cohort.csv only (fast)")
    p.add_argument("--effects", type=Path, help="an edited copy of cohort_effects.toml")
    p.set_defaults(func=run_cohort)
    return p


def run_cohort(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    path = write_cohort(args.out_dir, args.patients, args.seed, args.scenario, args.modality,
                        args.timepoints, images=not args.no_images, effects=args.effects)
    print(f"wrote {path} ({args.patients} patients, {time.perf_counter() - started:.1f} s)")
    return 0


def rewrite_phantom_cohort(argv: Sequence[str]) -> list[str]:
    """``phantom cohort …`` → ``cohort …`` so one sub-command serves both spellings."""
    args = list(argv)
    for i, token in enumerate(args[:-1]):
        if token == "phantom" and args[i + 1] == "cohort":
            return args[:i] + args[i + 1:]
        if not token.startswith("-"):
            break
    return args
