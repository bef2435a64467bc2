"""``hepatica evaluate``: the studies' statistics for any model on a site's cohort (issue 6).

Only argument handling and terminal output live here; the statistics are in
``inference.evaluation``. ``--run BUNDLE`` (predict first, then evaluate) and the drop-a-phase
robustness table wait for the model pipeline.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

__all__ = ["add_parser", "run"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
WIDE_OUTPUT = 120


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="ROC/AUC, calibration, decision curve and survival statistics for predictions",
        description="Evaluate model predictions against a cohort: writes OUT/report.html and "
        "OUT/metrics.json and prints a summary.",
    )
    p.add_argument("--predictions", type=Path, required=True, metavar="PRED.csv",
                   help="patient_id, model, score (binary) or p_<class> columns (multi-class)")
    p.add_argument("--cohort", type=Path, required=True, metavar="COHORT.csv",
                   help="patient_id plus outcome columns and clinical covariates")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--label", metavar="COLUMN",
                   help="outcome column (default: the one of dcb/orr/pd/dc/... present)")
    p.add_argument("--compare", nargs=2, metavar=("MODEL_A", "MODEL_B"),
                   help="DeLong test of the two models' AUCs on their common patients")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="the bundle's operating threshold (also splits survival groups)")
    p.add_argument("--time-column", metavar="COLUMN",
                   help="survival time (default: every <x>_months with an <x>_event)")
    p.add_argument("--event-column", metavar="COLUMN", help="survival event indicator (1 = event)")
    p.add_argument("--covariates", default="", metavar="COL,COL",
                   help="clinical covariates for the multivariable Cox model, comma-separated")
    p.set_defaults(func=run)


def _fmt(value: Any, digits: int = 3) -> str:
    """A metric for the terminal table."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def _auc_text(model: dict[str, Any]) -> str:
    """AUC with DeLong CI, or the macro one-vs-rest AUC."""
    if model["auc"] is not None:
        a = model["auc"]
        return f"{_fmt(a['auc'])} ({_fmt(a['ci_low'])}–{_fmt(a['ci_high'])})"
    if model["multiclass"] is not None:
        return f"{_fmt(model['multiclass']['macro_auc'])} macro OvR"
    return "—"


def _summary_table(metrics: dict[str, Any]) -> Table:
    """One row per model: the numbers people quote."""
    table = Table(title=f"hepatica evaluate — outcome '{metrics['label']}'")
    for column in ("Model", "n", "AUC (95% CI)", "Sens*", "Spec*", "Brier", "HL p",
                   "LR p", "C-index"):
        table.add_column(column, justify="left" if column == "Model" else "right",
                         no_wrap=column in ("Model", "AUC (95% CI)"))
    for m in metrics["models"]:
        youden = m["youden"] or {}
        hl = (m["hosmer_lemeshow"] or {}).get("p_value")
        first = m["survival"][0] if m["survival"] else {}
        logrank = (first.get("logrank") or {}).get("p_value")
        cindex = (first.get("multivariable") or {}).get("concordance")
        table.add_row(m["model"], str(m["n"]), _auc_text(m),
                      _fmt((youden.get("sensitivity") or {}).get("estimate"), 2),
                      _fmt((youden.get("specificity") or {}).get("estimate"), 2),
                      _fmt(m["brier"]), _fmt(hl), _fmt(logrank), _fmt(cindex, 2))
    table.caption = "* at the Youden threshold; LR: log-rank and C-index of the first endpoint"
    return table


def _print_comparisons(console: Console, metrics: dict[str, Any]) -> None:
    """DeLong test lines."""
    for c in metrics["comparisons"]:
        console.print(f"DeLong {c['model_a']} vs {c['model_b']}: ΔAUC {_fmt(c['difference'])}, "
                      f"z {_fmt(c['z'], 2)}, p {_fmt(c['p_value'], 4)} (n={c['n']})")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; print errors as one line and return a non-zero exit status."""
    from inference.evaluation import EvaluationError, evaluate

    console, errors = Console(), Console(stderr=True)
    if not console.is_terminal:  # piped or logged: do not squeeze the table into 80 columns
        console = Console(width=WIDE_OUTPUT)
    covariates = tuple(c.strip() for c in args.covariates.split(",") if c.strip())
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  console=errors, transient=True) as progress:
        task = progress.add_task("reading inputs", total=None)

        def report(message: str, done: int, total: int) -> None:
            progress.update(task, description=message, completed=done, total=total)

        try:
            metrics = evaluate(args.predictions, args.cohort, args.out, args.label,
                               tuple(args.compare) if args.compare else None, report,
                               threshold=args.threshold, time_column=args.time_column,
                               event_column=args.event_column, covariates=covariates)
        except EvaluationError as exc:
            progress.stop()
            errors.print(f"[bold red]error:[/] {exc}", highlight=False)
            return EXIT_BAD_INPUT
    console.print(_summary_table(metrics))
    _print_comparisons(console, metrics)
    console.print(f"Wrote {args.out / 'report.html'} and {args.out / 'metrics.json'}")
    return EXIT_OK
