"""``hepatica evaluate``: the studies' statistics for any model on a site's cohort (issue 6).

Only argument handling and terminal output live here; the statistics are in
``inference.evaluation`` and ``--run BUNDLE`` (score the cohort with response bundles first,
with the drop-a-phase robustness scores of seed 000) in ``plugin.research.evaluate_run``.
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
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, metavar="PRED.csv",
                        help="patient_id, model, score (binary) or p_<class> columns")
    source.add_argument("--run", action="append", metavar="BUNDLE",
                        help="score the cohort with this response bundle (folder or installed "
                        "name; repeatable), then evaluate, with the drop-a-phase table")
    p.add_argument("--cohort", type=Path, required=True, metavar="COHORT",
                   help="CSV with patient_id plus outcomes and clinical covariates, or (with "
                   "--run) a cohort folder holding cohort.csv")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--features", type=Path, metavar="FEATURES.csv",
                   help="--run: radiomics per patient (patient_id + feature columns) instead "
                   "of extracting them from the phantom cohort's images")
    p.add_argument("--workers", type=int, default=2, help="--run: feature extraction processes")
    p.add_argument("--phantom-seed", type=int, default=0,
                   help="--run: the --seed the phantom cohort was written with")
    p.add_argument("--label", metavar="COLUMN",
                   help="outcome column (default: the one of dcb/orr/pd/dc/... present)")
    p.add_argument("--compare", nargs=2, metavar=("MODEL_A", "MODEL_B"),
                   help="DeLong test of the two models' AUCs on their common patients")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="operating threshold (also splits survival groups); with --run each "
                   "bundle's own threshold unless given")
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


def _robustness_table(metrics: dict[str, Any]) -> Table | None:
    """Seed 000's table: AUC with each phase dropped, next to the full model's."""
    rows = [(m["model"], r) for m in metrics["models"] for r in m.get("robustness") or []]
    if not rows:
        return None
    table = Table(title="Robustness — AUC when a phase is dropped")
    for column in ("Model", "Dropped", "Inputs", "AUC (95% CI)", "Full AUC", "Change", "Rel.",
                   "DeLong p"):
        table.add_column(column, justify="left" if column in ("Model", "Dropped") else "right",
                         no_wrap=column in ("Model", "Dropped", "AUC (95% CI)"))
    for model, r in rows:
        a = r["auc"]
        rel = r["relative_change"]
        table.add_row(model, r["dropped"], str(len([n for n in r["inputs_removed"] if n])),
                      f"{_fmt(a['auc'])} ({_fmt(a['ci_low'])}–{_fmt(a['ci_high'])})",
                      _fmt(r["auc_full"]), _fmt(r["change"]),
                      "—" if rel is None else f"{100 * rel:+.1f}%",
                      _fmt(r["comparison"]["p_value"], 4))
    table.caption = "method: " + metrics["robustness_method"]
    return table


def _predict_first(args: argparse.Namespace, report: Any) -> dict[str, Any]:
    """``--run``: score the cohort, then evaluate the predictions it wrote."""
    from inference.evaluation import evaluate
    from plugin.research.evaluate_run import ROBUSTNESS_METHOD, resolve_bundles, run_bundles

    bundles = resolve_bundles(args.run)
    result = run_bundles(bundles, args.cohort, args.out, args.features, args.workers,
                         args.phantom_seed, report)
    return evaluate(result.predictions_csv, result.cohort_csv, args.out,
                    args.label or result.label, tuple(args.compare) if args.compare else None,
                    report, threshold=args.threshold, time_column=args.time_column,
                    event_column=args.event_column, covariates=_covariates(args),
                    model_thresholds=None if args.threshold is not None else result.thresholds,
                    dropped_predictions=result.dropped_csv, robustness_method=ROBUSTNESS_METHOD,
                    notes=result.notes)


def _covariates(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(c.strip() for c in args.covariates.split(",") if c.strip())


def _evaluate(args: argparse.Namespace, report: Any) -> dict[str, Any]:
    """Predictions given, or made first with ``--run``."""
    from inference.evaluation import evaluate

    if args.run:
        return _predict_first(args, report)
    if args.features is not None:
        from inference.evaluation import EvaluationError

        raise EvaluationError("--features is for --run (scoring a cohort with a bundle)")
    return evaluate(args.predictions, args.cohort, args.out, args.label,
                    tuple(args.compare) if args.compare else None, report,
                    threshold=args.threshold, time_column=args.time_column,
                    event_column=args.event_column, covariates=_covariates(args))


def _print_results(console: Console, metrics: dict[str, Any], out: Path) -> None:
    """Summary, comparisons, robustness and run notes on the terminal."""
    console.print(_summary_table(metrics))
    _print_comparisons(console, metrics)
    robustness = _robustness_table(metrics)
    if robustness is not None:
        console.print(robustness)
    for note in metrics["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"Wrote {out / 'report.html'} and {out / 'metrics.json'}")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; print errors as one line and return a non-zero exit status."""
    from inference.evaluation import EvaluationError

    console, errors = Console(), Console(stderr=True)
    if not console.is_terminal:  # piped or logged: do not squeeze the table into 80 columns
        console = Console(width=WIDE_OUTPUT)
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  console=errors, transient=True) as progress:
        task = progress.add_task("reading inputs", total=None)

        def report(message: str, done: int, total: int) -> None:
            progress.update(task, description=message, completed=done, total=total)

        try:
            metrics = _evaluate(args, report)
        except EvaluationError as exc:
            progress.stop()
            errors.print(f"[bold red]error:[/] {exc}", highlight=False)
            return EXIT_BAD_INPUT
    _print_results(console, metrics, args.out)
    return EXIT_OK
