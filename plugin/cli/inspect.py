"""`hepatica inspect STUDY_DIR [--json]`: every series with its label, confidence and reason.

Series selection is where deployed imaging AI most often goes wrong, so a site checks what
Hepatica makes of its protocol before it trusts a result: which series (and which phase of
a dynamic series) would feed each model input, and why.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

MODEL_PHASES = ("PRE", "AP", "PVP", "DP")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("inspect", help="show each series' phase label, confidence and reason")
    p.add_argument("study_dir", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--rules", type=Path, action="append", default=[],
                   help="site phase-rules file extending the shipped rules (repeatable)")
    p.set_defaults(func=run)


def inspect_study(study_dir: Path, rules_files: list[Path]) -> dict[str, Any]:
    """Labels of every series and the choice for each contrast phase."""
    from dicom_io.phases import default_rules, load_site_rules
    from dicom_io.roi import image_series
    from dicom_io.selection import choose, label_all
    from dicom_io.series import load_study
    from plugin.pipeline.models import segmentation_bundles
    from plugin.pipeline.select import NoSegmentationInputs, choose_segmentation

    rules = load_site_rules(rules_files) if rules_files else default_rules()
    labelled = label_all(image_series(load_study(study_dir)), rules)
    choices = {}
    for phase in MODEL_PHASES:
        choice = choose(labelled, phase, rules=rules)
        choices[phase] = {"series_uid": choice.chosen.series.series_uid if choice.chosen
                          else None, "temporal_position": choice.chosen.series.temporal_position
                          if choice.chosen else None, "reason": choice.reason}
    segmentation: dict[str, Any]
    try:
        inputs = choose_segmentation(labelled, segmentation_bundles(), rules)
        segmentation = {"bundle": f"{inputs.bundle.name} {inputs.bundle.version}",
                        "reason": inputs.reason,
                        "inputs": {ch: s.series_uid for ch, s in inputs.selected.items()}}
    except NoSegmentationInputs as exc:
        segmentation = {"bundle": None, "reason": f"not run: {exc}", "inputs": {}}
    return {"series": [item.summary for item in labelled], "choices": choices,
            "segmentation": segmentation}


def run(args: argparse.Namespace) -> int:
    if not args.study_dir.is_dir():
        raise FileNotFoundError(f"study folder {args.study_dir} does not exist")
    report = inspect_study(args.study_dir, list(args.rules))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Hepatica series labels — RESEARCH USE ONLY")
    for column in ("#", "t", "description", "label", "conf.", "reason"):
        table.add_column(column)
    for s in report["series"]:
        table.add_row(str(s["number"]), str(s["temporal_position"] or ""), s["description"],
                      s["label"], f"{s['confidence']:.2f}", s["reason"])
    console = Console()
    console.print(table)
    for phase, choice in report["choices"].items():
        console.print(f"[bold]{phase}[/bold]: {choice['reason']}")
    console.print(f"[bold]segmentation[/bold]: {report['segmentation']['reason']}")
    return 0
