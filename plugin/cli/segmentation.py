"""``hepatica train segmentation`` and ``hepatica evaluate segmentation``.

Three ways to get a segmentation bundle, one command:

- ``--phases AP,PVP`` (default): the two-channel ``liver-tumour-seg`` recipe on phantoms;
- ``--phases any``: the single-series ``liver-tumour-seg-any`` recipe (domain-randomised
  phantoms, every contrast phase, CT and MR);
- ``--studies DIR [--from-bundle B]``: fine-tune on a site's DICOM studies with a reader's
  SEG or RTSTRUCT (or train from scratch without ``--from-bundle``).

Defaults are the shipped recipes, so the ``command`` in a bundle's ``[training]`` rebuilds
it. ``hepatica evaluate segmentation --studies DIR --bundle B --out DIR`` scores a bundle
against the reader ROIs of a site's studies (``report.html``, ``metrics.json``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["add_evaluate_parser", "add_train_parser", "rewrite_evaluate_segmentation"]

console = Console()

RECIPES = {"AP,PVP": {"cases": 40, "steps": 3000}, "any": {"cases": 60, "steps": 1500}}
"""Defaults of the shipped recipes (``liver-tumour-seg`` 0.2.0, ``liver-tumour-seg-any``)."""
SITE_STEPS = 300


def add_train_parser(families: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``hepatica train segmentation``."""
    seg = families.add_parser(
        "segmentation", help="liver + tumour 3-D UNet: on phantoms (AP+PVP or any single "
        "phase), or fine-tuned on a site's studies with reader SEG/RTSTRUCT (--studies)",
        description="Train a liver + tumour segmentation bundle. Without --studies it trains "
        "on synthetic phantoms with the shipped recipe; with --studies it reads DICOM studies "
        "in which a reader's SEG or RTSTRUCT outlines the liver and/or tumours and fine-tunes "
        "--from-bundle (or trains from scratch).")
    seg.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    seg.add_argument("--phases", default="AP,PVP", choices=sorted(RECIPES),
                     help="phantom recipe: AP,PVP (liver-tumour-seg) or any (one series of any "
                     "phase, liver-tumour-seg-any)")
    seg.add_argument("--cases", type=int, help="training phantoms (default: the recipe's)")
    seg.add_argument("--steps", type=int, help="optimiser steps (default: the recipe's; "
                     f"{SITE_STEPS} with --studies)")
    seg.add_argument("--necrosis-probability", type=float, default=0.8,
                     help="share of large training lesions with a necrotic part")
    seg.add_argument("--seed", type=int, default=0)
    seg.add_argument("--validation-cases", type=int,
                     help="held-out phantoms (AP,PVP: 4; any: 3 MR + 3 CT, every phase)")
    seg.add_argument("--evaluate-studies", type=Path, action="append", default=[],
                     metavar="DIR", help="any: also score the bundle on these annotated "
                     "studies (reader SEG/RTSTRUCT) and record the Dice in the bundle")
    seg.add_argument("--init-from", default="liver-tumour-seg", metavar="BUNDLE",
                     help="any: start from this bundle's weights (first layer summed over "
                     "its channels), or none for random weights")
    seg.add_argument("--studies", type=Path, metavar="DIR",
                     help="train on the DICOM studies under DIR (grouped by "
                     "StudyInstanceUID) that carry a reader's SEG or RTSTRUCT")
    seg.add_argument("--from-bundle", metavar="BUNDLE",
                     help="--studies: start from this bundle (folder or shipped name, e.g. "
                     "liver-tumour-seg-any); its inputs and grid are kept")
    seg.add_argument("--learning-rate", type=float, default=5e-4,
                     help="--studies: Adam learning rate")
    seg.add_argument("--name", default="", help="--studies: bundle name")
    seg.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Dispatch to the phantom recipes or to site training, with a progress bar."""
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task("starting", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        train = _train_site if args.studies else _train_phantoms
        record = train(args, progress)
    console.print(f"bundle written to {args.out}")
    console.print_json(json.dumps(record, default=str))
    return 0


def _train_site(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from plugin.research.site_training import train_on_studies

    record = train_on_studies(args.studies, args.out, from_bundle=args.from_bundle,
                              steps=args.steps or SITE_STEPS, seed=args.seed,
                              learning_rate=args.learning_rate, name=args.name,
                              progress=progress)
    return {"data": record["data"], "fine_tuned_from": record["fine_tuned_from"],
            "final_loss": round(record["summary"]["final_loss"], 4)}


def _train_phantoms(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from plugin.research.training import train_any_phase_bundle, train_segmentation_bundle

    recipe = RECIPES[args.phases]
    cases, steps = args.cases or recipe["cases"], args.steps or recipe["steps"]
    if args.phases == "any":
        out = train_any_phase_bundle(args.out, cases=cases, steps=steps, seed=args.seed,
                                     validation_cases=args.validation_cases or 3,
                                     necrosis_probability=args.necrosis_probability,
                                     evaluate_studies=args.evaluate_studies, progress=progress,
                                     init_from=None if args.init_from.lower() == "none"
                                     else args.init_from)
    else:
        out = train_segmentation_bundle(args.out, cases=cases, steps=steps, seed=args.seed,
                                        validation_cases=args.validation_cases or 4,
                                        necrosis_probability=args.necrosis_probability,
                                        progress=progress)
    metrics: dict[str, Any] = json.loads((out / "training.json").read_text())["metrics"]
    return metrics


# ------------------------------------------------------------------ evaluate segmentation

EVALUATE_COMMAND = "evaluate-segmentation"


def rewrite_evaluate_segmentation(argv: Sequence[str]) -> list[str]:
    """``evaluate segmentation …`` → ``evaluate-segmentation …`` (``evaluate`` itself scores
    response predictions and takes no family word)."""
    args = list(argv)
    for i, token in enumerate(args[:-1]):
        if token == "evaluate" and args[i + 1] == "segmentation":
            return [*args[:i], EVALUATE_COMMAND, *args[i + 2:]]
        if not token.startswith("-"):
            break
    return args


def add_evaluate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``hepatica evaluate segmentation`` (registered as ``evaluate-segmentation``)."""
    p = sub.add_parser(
        EVALUATE_COMMAND, help="score a segmentation bundle against the reader SEG/RTSTRUCT "
        "of annotated studies (also spelled `evaluate segmentation`)",
        description="Segment every annotated study under --studies through the served path "
        "and report per-study Dice, HD95, volumes and longest-diameter error against the "
        "reader's ROI: OUT/report.html and OUT/metrics.json.")
    p.add_argument("--studies", type=Path, required=True, metavar="DIR",
                   help="DICOM studies (any layout; grouped by StudyInstanceUID)")
    p.add_argument("--bundle", required=True, metavar="BUNDLE",
                   help="bundle folder or shipped name (e.g. liver-tumour-seg-any)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print the per-study table; exit 2 if nothing was usable."""
    from plugin.research.annotated_studies import load_annotated_studies
    from plugin.research.segmentation_evaluation import evaluate_studies, write_report
    from plugin.research.site_training import resolve_bundle

    bundle = resolve_bundle(args.bundle)
    studies, skipped = load_annotated_studies(args.studies, bundle.inputs)
    result = evaluate_studies(bundle, studies, skipped)
    metrics, report = write_report(result, args.out)
    table = Table(title=f"{bundle.name} {bundle.version} against reader ROIs "
                  "(RESEARCH USE ONLY)")
    for column in ("study", "input", "Dice liver", "HD95 liver mm", "Dice tumour",
                   "LD error mm"):
        table.add_column(column)
    for row in result["studies"]:
        table.add_row(row["study"], f"{row['modality']} {'+'.join(row['phases'])}",
                      _fmt(row["dice_liver"]), _fmt(row["hd95_liver_mm"]),
                      _fmt(row["dice_tumour"]), _fmt(row["diameter_error_mm"]))
    console.print(table)
    for item in skipped:
        console.print(f"skipped {item.key}: {item.reason}")
    console.print(f"wrote {report} and {metrics}")
    return 0 if studies else 2


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
