"""``hepatica evaluate --run BUNDLE``: score a cohort with response bundles, then evaluate.

Each patient is scored as a node would score the study: the bundle's input vector
(``inference.response.build_vector``) through its ONNX model (``inference.response.predict``);
a nomogram takes the log-odds the radiomics bundle gave the same patient. Radiomics come from
a features CSV (``--features``: patient_id plus feature columns, as ``hepatica train`` caches
them) or are extracted by ``plugin.research.radiomics_cohort`` from a phantom cohort's rows. Reading
a site's own DICOM studies for a cohort is not implemented yet; a site extracts its features and
passes them with ``--features``.

Robustness (seed 000's table) needs the model, so it is made here: every patient is scored
again with one phase removed, as ``ROBUSTNESS_METHOD`` says; ``inference.evaluation`` only
compares the scores.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference.bundle import Bundle, BundleError, discover_bundles, load_bundle
from inference.evaluation import EvaluationError
from inference.response import (
    MissingInputs,
    ResponsePrediction,
    clinical_variables,
    score_names,
)
from plugin.pipeline.models import installed_bundles
from plugin.research.scoring import (
    ALL,
    Scorer,
    bundle_cohort_features,
    image_features,
    phase_of,
)

__all__ = ["ALL_IMAGES", "ROBUSTNESS_METHOD", "RunResult", "resolve_bundles", "run_bundles"]

Progress = Callable[[str, int, int], None]
ALL_IMAGES = "all image inputs"
RESPONSE_FAMILY = "response"
PREDICTIONS_CSV = "predictions.csv"
DROPPED_CSV = "predictions_dropped.csv"
ROBUSTNESS_METHOD = (
    "each radiomics feature of the dropped phase (named <phase>_<region>_<feature>) is "
    "replaced by its training mean stored in the bundle (explain.baseline), so the phase "
    "carries no information about the patient; scores that feed a nomogram are recomputed "
    "from those features, and every other input stays as measured. For a logistic bundle "
    "this is exactly the full model with that phase's terms removed (the intercept absorbs "
    "their mean). 'all image inputs' replaces every radiomics feature: a radiomics-only "
    "bundle then gives every patient the same score (AUC 0.5) and a nomogram keeps only its "
    "clinical predictors."
)


@dataclass(frozen=True)
class RunResult:
    """What ``run_bundles`` wrote and what ``evaluate`` needs to know about it."""

    predictions_csv: Path
    dropped_csv: Path
    cohort_csv: Path
    label: str | None  # the bundles' common training label, if any
    thresholds: dict[str, float]
    notes: tuple[str, ...]
    scored: dict[str, int]


@dataclass(frozen=True)
class Condition:
    """One row of the robustness table: the phases removed (ALL: every image input)."""

    name: str
    phases: frozenset[str]


# ------------------------------------------------------------------ bundles


def resolve_bundles(specs: Sequence[str]) -> list[Bundle]:
    """Each spec is a bundle folder, or the name of an installed (shipped) bundle."""
    installed = {b.name: b for b in installed_bundles()}
    bundles = []
    for spec in specs:
        if Path(spec).is_dir():
            try:
                bundle = load_bundle(spec)
            except BundleError as exc:
                raise EvaluationError(f"--run {spec}: {exc}") from exc
        elif spec in installed:
            bundle = installed[spec]
        else:
            raise EvaluationError(f"--run {spec}: neither a bundle folder nor an installed "
                                  f"bundle (installed: {sorted(installed)})")
        if bundle.family != RESPONSE_FAMILY or not bundle.inputs.features:
            raise EvaluationError(f"--run {spec}: {bundle.name} is a {bundle.family} bundle; "
                                  "--run scores response bundles (inputs.features)")
        bundles.append(bundle)
    return bundles


def _library(bundles: Sequence[Bundle]) -> dict[str, Bundle]:
    """The run bundles plus every bundle whose score they take (siblings, then installed)."""
    library = {b.name: b for b in installed_bundles()}
    for folder in {b.path.parent for b in bundles}:
        library |= {b.name: b for b in discover_bundles(folder)}
    library |= {b.name: b for b in bundles}
    for bundle in _with_dependencies(bundles, library):
        absent = [s for s in score_names(bundle) if s not in library]
        if absent:
            raise EvaluationError(f"bundle {bundle.name} takes the score of {absent}, which is "
                                  "neither beside it nor installed")
    return library


def _with_dependencies(bundles: Iterable[Bundle], library: Mapping[str, Bundle]) -> list[Bundle]:
    """The bundles and, recursively, those whose scores they read."""
    seen: dict[str, Bundle] = {}
    pending = list(bundles)
    while pending:
        bundle = pending.pop()
        if bundle.name not in seen:
            seen[bundle.name] = bundle
            pending += [library[s] for s in score_names(bundle) if s in library]
    return list(seen.values())


# ------------------------------------------------------------------ inputs


def cohort_csv_path(cohort: Path) -> Path:
    """A cohort folder's cohort.csv, or the CSV itself."""
    path = cohort / "cohort.csv" if cohort.is_dir() else cohort
    if not path.is_file():
        raise EvaluationError(f"cohort {cohort}: no such CSV (a cohort folder holds cohort.csv;"
                              " write one with `hepatica cohort DIR --no-images`)")
    return path


def _read_csv_rows(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Rows with stripped patient ids, and the header."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    if "patient_id" not in header:
        raise EvaluationError(f"{path} has no 'patient_id' column")
    for row in rows:
        row["patient_id"] = row["patient_id"].strip()
    return rows, header


def load_features(path: Path, needed: Sequence[str]) -> dict[str, dict[str, float]]:
    """patient_id → feature values; a column the bundles need but the CSV lacks is an error."""
    if not path.is_file():
        raise EvaluationError(f"--features {path}: file not found")
    rows, header = _read_csv_rows(path)
    absent = [n for n in needed if n not in header]
    if absent:
        raise EvaluationError(f"--features {path} lacks {len(absent)} input(s) the bundles "
                              f"need: {', '.join(absent[:5])}{' …' if len(absent) > 5 else ''}")
    return {r["patient_id"]: {n: _float(r[n]) for n in needed} for r in rows}


def _float(text: str | None) -> float:
    """A feature value; empty or unreadable cells become NaN (the patient then lacks it)."""
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _is_phantom(rows: Sequence[Mapping[str, str]]) -> bool:
    """``hepatica cohort`` rows: a scenario column and HCC00000-style ids."""
    return bool(rows) and all("scenario" in r and r["patient_id"].startswith("HCC")
                              and r["patient_id"][3:].isdigit() for r in rows)


def extract_features(cohort_csv: Path, rows: Sequence[Mapping[str, str]],
                     bundles: Sequence[Bundle], workers: int, phantom_seed: int,
                     progress: Progress | None) -> dict[str, dict[str, float]]:
    """Render the phantom patients and extract each bundle's radiomics (cached in the folder)."""
    if not _is_phantom(rows) or cohort_csv.name != "cohort.csv":
        raise EvaluationError(
            f"{cohort_csv}: images can only be rendered for a phantom cohort folder (written by "
            "`hepatica cohort`); reading a site's DICOM studies for --run is not implemented "
            "yet, so extract the features and pass them with --features CSV")
    try:
        return bundle_cohort_features(cohort_csv.parent, bundles, workers, phantom_seed,
                                      progress)
    except (KeyError, ValueError) as exc:
        raise EvaluationError(f"radiomics: {exc}") from exc


def _check_clinical(bundles: Sequence[Bundle], header: Sequence[str], cohort: Path) -> None:
    """Clinical inputs come from cohort columns; a missing column fails every patient."""
    for bundle in bundles:
        absent = [v for v in clinical_variables(bundle) if v not in header]
        if absent:
            raise EvaluationError(f"bundle {bundle.name} needs clinical column(s) {absent}, "
                                  f"which the cohort {cohort} lacks")


# ------------------------------------------------------------------ scoring


def conditions(bundle: Bundle, library: Mapping[str, Bundle]) -> list[Condition]:
    """Each phase whose radiomics reach the bundle, then (with two or more) all of them."""
    phases = _phases_used(bundle, library)
    rows = [Condition(p, frozenset({p})) for p in phases]
    if len(phases) > 1:
        rows.append(Condition(ALL_IMAGES, frozenset({ALL})))
    return rows


def _phases_used(bundle: Bundle, library: Mapping[str, Bundle]) -> list[str]:
    """Phases of the bundle's own radiomics and of the scores it reads, in bundle order."""
    found = [phase_of(f, bundle.inputs.phases) for f in image_features(bundle)]
    for name in score_names(bundle):
        found += _phases_used(library[name], library)
    order = {p: i for i, p in enumerate(bundle.inputs.phases)}
    return sorted({p for p in found if p is not None}, key=lambda p: (order.get(p, len(order)), p))


def removed_inputs(bundle: Bundle, condition: Condition, library: Mapping[str, Bundle],
                   via: str = "") -> list[str]:
    """The input names a condition replaces, including those behind a score."""
    names = [f + via for f in image_features(bundle)
             if ALL in condition.phases or phase_of(f, bundle.inputs.phases) in condition.phases]
    for score in score_names(bundle):
        names += removed_inputs(library[score], condition, library, f" (via {score})")
    return names


# ------------------------------------------------------------------ the run


def _score_bundle(bundle: Bundle, scorer: Scorer, pids: Sequence[str], tick: Callable[[], None]
                  ) -> tuple[list[tuple[str, ResponsePrediction]], dict[str, list[str]]]:
    """Served predictions of the patients, and the patients left out grouped by reason."""
    done: list[tuple[str, ResponsePrediction]] = []
    skipped: dict[str, list[str]] = {}
    for pid in pids:
        try:
            done.append((pid, scorer.predict(bundle, pid)))
        except MissingInputs as exc:
            skipped.setdefault(str(exc), []).append(pid)
        tick()
    return done, skipped


def _skip_notes(bundle: Bundle, skipped: Mapping[str, list[str]], total: int) -> list[str]:
    """One note per reason: which patients a bundle could not score."""
    notes = []
    for reason, pids in skipped.items():
        shown = ", ".join(pids[:5]) + (" …" if len(pids) > 5 else "")
        notes.append(f"{bundle.name}: {len(pids)} of {total} cohort patients not scored, "
                     f"{reason}: {shown}")
    return notes


def _dropped_rows(bundle: Bundle, scorer: Scorer, done: Sequence[tuple[str, ResponsePrediction]],
                  library: Mapping[str, Bundle]) -> tuple[list[list[str]], list[str]]:
    """predictions_dropped.csv rows (every scored patient under every condition), or a note
    saying why the bundle has no robustness table."""
    out = []
    try:
        for condition in conditions(bundle, library):
            removed = ";".join(removed_inputs(bundle, condition, library))
            for pid, _ in done:
                p = scorer.predict(bundle, pid, condition.phases).probability
                out.append([pid, bundle.name, condition.name, removed, repr(p)])
    except MissingInputs as exc:
        return [], [f"{bundle.name}: no robustness table, {exc}"]
    return out, []


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _common_label(bundles: Sequence[Bundle], header: Sequence[str]) -> str | None:
    """The outcome the bundles were trained on, when they agree and the cohort has it."""
    labels = {str(b.training.get("label", "")) for b in bundles}
    label = labels.pop() if len(labels) == 1 else ""
    return label if label and label in header else None


def run_bundles(bundles: Sequence[Bundle], cohort: Path, out_dir: Path,
                features_csv: Path | None = None, workers: int = 2, phantom_seed: int = 0,
                progress: Progress | None = None) -> RunResult:
    """Score every cohort patient with every bundle; write predictions.csv and the
    dropped-phase scores beside it. Raises EvaluationError with what to fix."""
    cohort_csv = cohort_csv_path(cohort)
    rows, header = _read_csv_rows(cohort_csv)
    library = _library(bundles)
    needed_bundles = _with_dependencies(bundles, library)
    _check_clinical(needed_bundles, header, cohort_csv)
    features = _features(cohort_csv, rows, needed_bundles, features_csv, workers, phantom_seed,
                         progress)
    scorer = Scorer(library, {r["patient_id"]: r for r in rows}, features)
    pids = [r["patient_id"] for r in rows]
    notes = _orphans(features, pids, features_csv)
    predictions, dropped, more_notes, scored = _score_all(bundles, scorer, pids, progress)
    return RunResult(
        _write(out_dir / PREDICTIONS_CSV, ["patient_id", "model", "score", "log_odds",
                                           "threshold"], predictions),
        _write(out_dir / DROPPED_CSV, ["patient_id", "model", "dropped", "inputs_removed",
                                       "score"], dropped),
        cohort_csv, _common_label(bundles, header),
        {b.name: b.threshold("probability", 0.5) for b in bundles}, (*notes, *more_notes),
        scored)


def _features(cohort_csv: Path, rows: Sequence[Mapping[str, str]], bundles: Sequence[Bundle],
              features_csv: Path | None, workers: int, phantom_seed: int,
              progress: Progress | None) -> dict[str, dict[str, float]]:
    """Radiomics from the CSV when given, else extracted; none when no bundle needs them."""
    needed = list(dict.fromkeys(f for b in bundles for f in image_features(b)))
    if features_csv is not None:
        return load_features(features_csv, needed)
    if needed:
        return extract_features(cohort_csv, rows, bundles, workers, phantom_seed, progress)
    return {}


def _score_all(bundles: Sequence[Bundle], scorer: Scorer, pids: Sequence[str],
               progress: Progress | None
               ) -> tuple[list[list[str]], list[list[str]], list[str], dict[str, int]]:
    """predictions.csv and predictions_dropped.csv rows, notes and patients scored per bundle."""
    library = scorer.library
    predictions: list[list[str]] = []
    dropped: list[list[str]] = []
    notes: list[str] = []
    scored: dict[str, int] = {}
    counter = _Counter(len(pids) * sum(1 + len(conditions(b, library)) for b in bundles),
                       progress)
    for bundle in bundles:
        done, skipped = _score_bundle(bundle, scorer, pids, counter.tick(f"scoring {bundle.name}"))
        if not done:
            raise EvaluationError(f"bundle {bundle.name} scored none of the {len(pids)} "
                                  f"patients: {next(iter(skipped))}")
        notes += _skip_notes(bundle, skipped, len(pids))
        scored[bundle.name] = len(done)
        predictions += [[pid, bundle.name, repr(p.probability), repr(p.log_odds),
                         repr(p.threshold)] for pid, p in done]
        rows_dropped, why_not = _dropped_rows(bundle, scorer, done, library)
        dropped, notes = dropped + rows_dropped, notes + why_not
        counter.advance(f"{bundle.name}: phases dropped",
                        len(pids) * len(conditions(bundle, library)))
    return predictions, dropped, notes, scored


def _orphans(features: Mapping[str, object], pids: Sequence[str], features_csv: Path | None
             ) -> list[str]:
    """Feature rows of patients the cohort does not list: ignored, but said."""
    extra = sorted(set(features) - set(pids))
    if not extra or features_csv is None:
        return []
    return [f"{len(extra)} patients of {features_csv} are not in the cohort and were not "
            f"scored: {', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}"]


class _Counter:
    """Progress over all bundles and conditions."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def advance(self, message: str, steps: int) -> None:
        self.done += steps
        if self.progress is not None:
            self.progress(message, self.done, self.total)

    def tick(self, message: str) -> Callable[[], None]:
        return lambda: self.advance(message, 1)
