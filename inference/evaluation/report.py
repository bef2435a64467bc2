"""metrics.json (every number) and report.html (what a clinician reads), from one Evaluation.

The HTML is one self-contained file: inline CSS, figures as base64 PNG, no script, so it opens
offline from a hospital share and shows no console errors. Every number in it is also in
metrics.json, which is derived from the same frozen results.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.evaluation import plots
from inference.evaluation.discrimination import Proportion, ThresholdMetrics

if TYPE_CHECKING:
    from inference.evaluation.run import Evaluation, ModelEvaluation, SurvivalAnalysis

__all__ = ["render_html", "to_jsonable", "write_outputs"]

RESEARCH_USE_TEXT = "RESEARCH USE ONLY — not for diagnostic use"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1150px;color:#1b1b1b;line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #2a5d84;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em;color:#2a5d84}
.banner{background:#fff3cd;border:1px solid #e0c46c;padding:.5em 1em;font-weight:600}
table{border-collapse:collapse;margin:.6em 0 1em}th,td{border:1px solid #c9d3dc;
padding:.3em .6em;text-align:right}th{background:#eef3f7}
td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs img{max-width:100%;border:1px solid #ddd}
.note{color:#6b4d00}.help{color:#444;font-size:.95em}code{background:#f2f2f2;padding:0 .2em}
"""


# ---------------------------------------------------------------- JSON


def _clean(value: Any) -> Any:
    """NaN/inf become null, tuples lists, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_jsonable(evaluation: Evaluation) -> dict[str, Any]:
    """The Evaluation as plain JSON types, strictly valid (no NaN)."""
    result: dict[str, Any] = _clean(dataclasses.asdict(evaluation))
    return result


def write_outputs(evaluation: Evaluation, out_dir: Path) -> tuple[Path, Path]:
    """Write metrics.json and report.html into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = out_dir / "metrics.json"
    metrics.write_text(json.dumps(to_jsonable(evaluation), indent=1, allow_nan=False) + "\n")
    report = out_dir / "report.html"
    report.write_text(render_html(evaluation), encoding="utf-8")
    return metrics, report


# ---------------------------------------------------------------- formatting


def _num(value: float | None, digits: int = 3) -> str:
    """A number for a table cell; a dash when it is missing."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    """p-values the way journals print them."""
    if value is None or not math.isfinite(value):
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _ci(estimate: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """'0.812 (0.75–0.87)'."""
    return f"{_num(estimate, digits)} ({_num(low, digits)}–{_num(high, digits)})"


def _prop(p: Proportion) -> str:
    """Proportion with its counts and exact CI."""
    return f"{_ci(p.estimate, p.ci_low, p.ci_high)} [{p.k}/{p.n}]"


def _e(text: object) -> str:
    """Escape anything user-supplied (model names, column names)."""
    return html.escape(str(text))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table; cells are already escaped or formatted numbers."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    """A figure embedded as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _notes(notes: Sequence[str]) -> str:
    """Why an analysis was skipped or patients left out."""
    return "".join(f'<p class="note">Note: {_e(n)}</p>' for n in notes)


# ---------------------------------------------------------------- sections


def _summary_row(m: ModelEvaluation) -> list[str]:
    """One line of the overview table."""
    if m.auc is not None:
        auc = _ci(m.auc.auc, m.auc.ci_low, m.auc.ci_high)
        boot = m.auc_bootstrap_ci
        boot_text = f"{_num(boot[0])}–{_num(boot[1])}" if boot else "—"
    elif m.multiclass is not None:
        auc, boot_text = f"{_num(m.multiclass.macro_auc)} (macro, one-vs-rest)", "—"
    else:
        auc, boot_text = "—", "—"
    sens = _num(m.youden.sensitivity.estimate) if m.youden else "—"
    spec = _num(m.youden.specificity.estimate) if m.youden else "—"
    hl = _p(m.hosmer_lemeshow.p_value) if m.hosmer_lemeshow else "—"
    cidx = next((_num(s.multivariable.concordance) for s in m.survival if s.multivariable), "—")
    return [_e(m.model), str(m.n), auc, boot_text, sens, spec, _num(m.brier), hl, cidx]


def _overview(ev: Evaluation) -> str:
    """The table a reader should see first."""
    header = ["Model", "Patients", "AUC (95 % CI, DeLong)", "Bootstrap 95 % CI",
              "Sensitivity*", "Specificity*", "Brier", "Hosmer–Lemeshow p", "Cox C-index"]
    rows = [_summary_row(m) for m in ev.models]
    return ("<h2>Overview</h2>" + _table(header, rows)
            + '<p class="help">* at the Youden threshold (the cut-off maximising sensitivity '
            "+ specificity). Cox C-index of the multivariable model for the first survival "
            "endpoint.</p>")


def _comparisons(ev: Evaluation) -> str:
    """DeLong tests between models."""
    if not ev.comparisons:
        return ""
    rows = [[_e(c.model_a), _e(c.model_b), _num(c.auc_a), _num(c.auc_b), _num(c.difference),
             _num(c.z, 2), _p(c.p_value), str(c.n)] for c in ev.comparisons]
    return ("<h2>Model comparison (DeLong test)</h2>"
            + _table(["Model A", "Model B", "AUC A", "AUC B", "Difference", "z", "p",
                      "Patients"], rows)
            + '<p class="help">Tests whether two models ranked the same patients equally '
            "well; a small p means the difference in AUC is unlikely to be chance.</p>")


def _removed(names: Sequence[str]) -> str:
    """The inputs a robustness row replaced, folded so the table stays readable."""
    shown = "<br>".join(_e(n) for n in names if n)
    count = sum(1 for n in names if n)
    return f"<details><summary>{count} input(s)</summary>{shown}</details>"


def _robustness(ev: Evaluation) -> str:
    """Seed 000's table: the AUC with each phase dropped, against the full model."""
    rows = [[_e(m.model), _e(r.dropped), _removed(r.inputs_removed),
             _ci(r.auc.auc, r.auc.ci_low, r.auc.ci_high), _num(r.auc_full), _num(r.change),
             f"{_num(100 * r.relative_change, 1)} %", _p(r.comparison.p_value)]
            for m in ev.models for r in m.robustness]
    if not rows:
        return ""
    header = ["Model", "Phase dropped", "Inputs removed", "AUC (95 % CI, DeLong)",
              "Full-model AUC", "Change", "Relative change", "DeLong p vs full"]
    method = _e(ev.robustness_method) or "not stated"
    return ("<h2>Robustness: AUC when a phase is dropped</h2>" + _table(header, rows)
            + f'<p class="help">How a phase is dropped: {method} A large drop means the model '
            "relies on that phase; the p-value is the paired DeLong test of the full model "
            "against the model without the phase, on the same patients.</p>")


def _roc_and_dca(ev: Evaluation) -> str:
    """Overlaid ROC and decision curves of the binary models."""
    binary = [m for m in ev.models if m.roc is not None and m.auc is not None]
    figs = []
    if binary:
        figs.append(_img(plots.roc_png([(m.model, m.roc, m.auc.auc) for m in binary
                                        if m.roc and m.auc]), "ROC curves"))
    dca = [(m.model, m.decision_curve) for m in ev.models if m.decision_curve is not None]
    if dca:
        figs.append(_img(plots.decision_curve_png(dca), "Decision curves"))
    if not figs:
        return ""
    return ("<h2>Discrimination and clinical utility</h2>"
            + f'<div class="figs">{"".join(figs)}</div>'
            + '<p class="help">ROC: the closer to the top-left corner, the better the score '
            "separates outcomes. Decision curve: a model is useful at a threshold probability "
            "where its net benefit is above both 'treat all' and 'treat none'.</p>")


def _threshold_table(points: Sequence[tuple[str, ThresholdMetrics]]) -> str:
    """Sensitivity, specificity, PPV, NPV, accuracy, F1 and the 2×2 counts."""
    rows = []
    for name, t in points:
        c = t.confusion
        rows.append([name, _num(t.threshold), _prop(t.sensitivity), _prop(t.specificity),
                     _prop(t.ppv), _prop(t.npv), _prop(t.accuracy), _num(t.f1),
                     f"TP {c.tp} · FP {c.fp} · TN {c.tn} · FN {c.fn}"])
    header = ["Operating point", "Threshold", "Sensitivity", "Specificity", "PPV", "NPV",
              "Accuracy", "F1", "Confusion matrix"]
    return _table(header, rows) + (
        '<p class="help">A patient is called positive when the score is at or above the '
        "threshold. 95 % CIs are exact (Clopper–Pearson); [k/n] are the counts.</p>")


def _calibration_section(m: ModelEvaluation) -> str:
    """Calibration plot and tests."""
    if m.hosmer_lemeshow is None or m.spiegelhalter is None:
        return ""
    hl, sz = m.hosmer_lemeshow, m.spiegelhalter
    table = _table(["Test", "Statistic", "p"], [
        [f"Hosmer–Lemeshow ({len(hl.groups)} groups, {hl.df} df)", _num(hl.statistic, 2),
         _p(hl.p_value)],
        ["Spiegelhalter Z", _num(sz.z, 2), _p(sz.p_value)],
        ["Brier score (0 = perfect)", _num(m.brier), ""]])
    return ("<h4>Calibration</h4>" + '<div class="figs">'
            + _img(plots.calibration_png(m.calibration_curve), f"Calibration of {m.model}")
            + f"<div>{table}<p class='help'>Points near the diagonal mean the predicted "
            "probability matches the observed rate. A small p (&lt; 0.05) suggests "
            "miscalibration.</p></div></div>")


def _multiclass_section(m: ModelEvaluation) -> str:
    """One-vs-rest AUCs, ROC curves per class and the confusion matrix."""
    mc = m.multiclass
    if mc is None:
        return ""
    rows = [[_e(k), _ci(a.auc, a.ci_low, a.ci_high), str(a.n_positive)]
            for k, a in zip(mc.classes, mc.one_vs_rest, strict=True)]
    auc_table = _table(["Class (vs rest)", "AUC (95 % CI, DeLong)", "Patients in class"], rows)
    conf = _table(["True \\ predicted", *(_e(k) for k in mc.classes)],
                  [[_e(k), *(str(v) for v in row)] for k, row in zip(mc.classes, mc.confusion,
                                                                    strict=True)])
    roc = plots.roc_png([(k, r, a.auc) for k, r, a in zip(mc.classes, m.class_roc,
                                                          mc.one_vs_rest, strict=True)])
    return (f"<h4>Discrimination</h4>{auc_table}<p>Macro AUC {_num(mc.macro_auc)}; accuracy "
            f"{_prop(mc.accuracy)}; macro F1 {_num(mc.macro_f1)}; multi-class Brier "
            f"{_num(m.brier)}.</p>" + f'<div class="figs">{_img(roc, "ROC per class")}'
            f"<div><h4>Confusion matrix</h4>{conf}</div></div>")


def _binary_section(m: ModelEvaluation) -> str:
    """Operating points and calibration of a binary model."""
    if m.auc is None or m.youden is None:
        return ""
    points = [("Youden", m.youden)]
    if m.at_threshold is not None:
        points.append(("Given threshold", m.at_threshold))
    auc = _ci(m.auc.auc, m.auc.ci_low, m.auc.ci_high)
    return (f"<p>AUC {auc} (DeLong); {m.auc.n_positive} patients with the outcome, "
            f"{m.auc.n_negative} without.</p>" + _threshold_table(points)
            + _calibration_section(m))


def _survival_section(s: SurvivalAnalysis, model: str) -> str:
    """KM curves, log-rank, group HR and the multivariable Cox model for one endpoint."""
    p = s.logrank.p_value if s.logrank else None
    figs = [_img(plots.km_png(s.curves, f"{s.endpoint} by {model} prediction", p),
                 f"Kaplan–Meier {s.endpoint}")]
    rows = [[_e(c.group), str(c.n), str(c.events), _num(c.median, 1)] for c in s.curves]
    text = _table(["Group", "Patients", "Events", "Median (months)"], rows)
    if s.hazard_ratios:
        text += _table(["Group vs reference", "Hazard ratio (95 % CI)", "p"],
                       [[_e(t.name), _ci(t.hazard_ratio, t.hr_ci_low, t.hr_ci_high, 2),
                         _p(t.p_value)] for t in s.hazard_ratios.terms])
    if s.multivariable:
        mv = s.multivariable
        figs.append(_img(plots.forest_png(mv.terms, f"Multivariable Cox, {s.endpoint}"),
                         "Forest plot"))
        text += (f"<p>Multivariable Cox: C-index {_num(mv.concordance)}, {mv.n} patients, "
                 f"{mv.events} events.</p>"
                 + _table(["Term", "Hazard ratio (95 % CI)", "p"],
                          [[_e(t.name), _ci(t.hazard_ratio, t.hr_ci_low, t.hr_ci_high, 2),
                            _p(t.p_value)] for t in mv.terms]))
    return (f"<h4>Survival: {_e(s.endpoint)} (<code>{_e(s.time_column)}</code>, "
            f"<code>{_e(s.event_column)}</code>)</h4><p>Groups: {_e(s.grouping)}; "
            f"log-rank p {_p(p)}.</p>" + f'<div class="figs">{"".join(figs)}</div>'
            + text + _notes(s.notes))


def _model_section(m: ModelEvaluation) -> str:
    """Everything about one model."""
    body = _binary_section(m) + _multiclass_section(m)
    body += "".join(_survival_section(s, m.model) for s in m.survival)
    return (f"<h3>Model: {_e(m.model)}</h3><p>{m.n} patients "
            f"({m.n_excluded_missing_label} left out for a missing outcome).</p>"
            + body + _notes(m.notes))


def _methods() -> str:
    """Where the numbers come from."""
    return ("<h2>Methods</h2><p class='help'>AUC CI: DeLong et al. 1988 (fast midrank "
            "algorithm of Sun &amp; Xu 2014); bootstrap: 2000 stratified resamples, "
            "percentile interval. Proportions: Clopper–Pearson exact CI. Calibration: "
            "Hosmer–Lemeshow on 10 equal-size risk groups (g − 2 df), Spiegelhalter 1986 Z. "
            "Decision curve: Vickers &amp; Elkin 2006. Survival: Kaplan–Meier with "
            "exponential Greenwood CIs, log-rank test, Cox proportional hazards (Efron ties, "
            "lifelines), Harrell's C-index. See docs/evaluation.md.</p>")


def render_html(ev: Evaluation) -> str:
    """The complete report as one HTML string."""
    header = (f"<h1>Hepatica model evaluation</h1><p class='banner'>{RESEARCH_USE_TEXT}</p>"
              f"<p>Outcome: <code>{_e(ev.label)}</code> · predictions "
              f"<code>{_e(ev.predictions_csv)}</code> · cohort <code>{_e(ev.cohort_csv)}</code>"
              f" · {len(ev.models)} model(s)</p>")
    sections = [_notes(ev.notes), _overview(ev), _comparisons(ev), _robustness(ev),
                _roc_and_dca(ev), "<h2>Models in detail</h2>",
                *(_model_section(m) for m in ev.models), _methods()]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Hepatica evaluation: {_e(ev.label)}</title><style>{CSS}</style></head>"
            f"<body>{header}{''.join(sections)}</body></html>\n")
