"""Which stable studies become jobs: the site's rules, and never Hepatica's own results.

Decisions are made on the facts Orthanc indexes (study and series main DICOM tags, the
calling AE of each series, study metadata and labels), gathered once per stable event by
:func:`plugin.node.orthanc.study.gather_facts`. Every decision carries its reason for the log.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from dicom_io.uids import is_valid_uid
from plugin.node.config import OrthancConfig

__all__ = [
    "OWN_MANUFACTURER",
    "Decision",
    "SeriesFacts",
    "StudyFacts",
    "TriggerRules",
    "decide",
    "is_own_series",
    "source_fingerprint",
]

OWN_MANUFACTURER = "Hepatica"
"""Manufacturer (0008,0070) of every object Hepatica writes (export.common.MANUFACTURER)."""
# Result series are base+1 (SEG), base+2 (SR), base+3 (heatmaps): plugin.pipeline.run._export.
_RESULT_SERIES_OFFSETS = (1, 2, 3)
_RESULT_MODALITIES = frozenset({"SEG", "SR", "OT"})


@dataclass(frozen=True)
class SeriesFacts:
    """One series as Orthanc indexes it; ``remote_aet`` is the calling AE of one instance."""

    orthanc_id: str
    modality: str = ""
    body_part: str = ""
    description: str = ""
    manufacturer: str = ""
    series_number: int | None = None
    instance_ids: tuple[str, ...] = ()
    remote_aet: str | None = None


@dataclass(frozen=True)
class StudyFacts:
    """One study: its UID, description, series, labels and the routing metadata (if read)."""

    orthanc_id: str
    study_uid: str
    description: str = ""
    series: tuple[SeriesFacts, ...] = ()
    labels: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TriggerRules:
    """The filters of ``[orthanc]`` plus the series numbers Hepatica writes."""

    modalities: tuple[str, ...] = ("MR", "CT")
    body_parts: tuple[str, ...] = ()
    description_include: tuple[str, ...] = ()
    description_exclude: tuple[str, ...] = ()
    allowed_callers: tuple[str, ...] = ()
    required_metadata: str = ""
    required_label: str = ""
    series_number_base: int = 9900

    @classmethod
    def from_config(cls, orthanc: OrthancConfig, series_number_base: int) -> TriggerRules:
        return cls(
            modalities=orthanc.modalities,
            body_parts=orthanc.body_parts,
            description_include=orthanc.description_include,
            description_exclude=orthanc.description_exclude,
            allowed_callers=orthanc.allowed_callers,
            required_metadata=orthanc.required_metadata,
            required_label=orthanc.required_label,
            series_number_base=series_number_base,
        )

    @property
    def needs_remote_aet(self) -> bool:
        return bool(self.allowed_callers)


@dataclass(frozen=True)
class Decision:
    """Whether a study triggers a job, and why (logged, and shown by the REST routes)."""

    run: bool
    reason: str


def is_own_series(series: SeriesFacts, rules: TriggerRules) -> bool:
    """A series Hepatica wrote: its manufacturer, or a result series number and modality.

    The second test catches results whose Manufacturer an archive dropped from its index;
    it needs both the number and a result modality so that a site's own series numbered
    9901 (say, an MR) is never taken for ours.
    """
    if series.manufacturer.strip().lower() == OWN_MANUFACTURER.lower():
        return True
    numbers = {rules.series_number_base + offset for offset in _RESULT_SERIES_OFFSETS}
    return series.series_number in numbers and series.modality.upper() in _RESULT_MODALITIES


def source_series(study: StudyFacts, rules: TriggerRules) -> list[SeriesFacts]:
    """The series that are input, not Hepatica's results."""
    return [s for s in study.series if not is_own_series(s, rules)]


def source_fingerprint(study: StudyFacts, rules: TriggerRules) -> str:
    """A digest of the source instances: unchanged when only Hepatica's results were added."""
    ids = sorted(i for s in source_series(study, rules) for i in s.instance_ids)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def decide(study: StudyFacts, rules: TriggerRules) -> Decision:
    """Apply the rules in order; the first that rejects gives the reason."""
    if not is_valid_uid(study.study_uid):  # it would name the worker's folders: never queue it
        return Decision(False, "its StudyInstanceUID is not a valid DICOM UID")
    sources = source_series(study, rules)
    if not sources:
        return Decision(False, "the study holds only Hepatica's results")
    for check in (_modality, _body_part, _description, _callers, _routing):
        reason = check(study, sources, rules)
        if reason is not None:
            return Decision(False, reason)
    return Decision(True, f"{len(sources)} source series pass every rule")


def _modality(study: StudyFacts, sources: list[SeriesFacts], rules: TriggerRules) -> str | None:
    if not rules.modalities:
        return None
    wanted = {m.upper() for m in rules.modalities}
    found = sorted({s.modality.upper() for s in sources})
    if wanted.intersection(found):
        return None
    return f"no series of modality {'/'.join(sorted(wanted))} (found {'/'.join(found) or '-'})"


def _body_part(study: StudyFacts, sources: list[SeriesFacts], rules: TriggerRules) -> str | None:
    if not rules.body_parts:
        return None
    wanted = {b.upper() for b in rules.body_parts}
    found = sorted({s.body_part.upper() for s in sources if s.body_part})
    if wanted.intersection(found):
        return None
    return f"Body Part Examined {'/'.join(found) or 'absent'}, not one of {sorted(wanted)}"


def _description(
    study: StudyFacts, sources: list[SeriesFacts], rules: TriggerRules
) -> str | None:
    for pattern in rules.description_exclude:
        if re.search(pattern, study.description, re.IGNORECASE):
            return f"study description {study.description!r} matches exclude rule {pattern!r}"
    if not rules.description_include:
        return None
    texts = [study.description, *(s.description for s in sources)]
    for pattern in rules.description_include:
        if any(re.search(pattern, text, re.IGNORECASE) for text in texts):
            return None
    return f"no study or series description matches {list(rules.description_include)}"


def _callers(study: StudyFacts, sources: list[SeriesFacts], rules: TriggerRules) -> str | None:
    if not rules.allowed_callers:
        return None
    allowed = {title.strip() for title in rules.allowed_callers}
    strangers = sorted({s.remote_aet or "(not received over DICOM)" for s in sources
                        if (s.remote_aet or "").strip() not in allowed})
    if not strangers:
        return None
    return f"sent by {', '.join(strangers)}, not an allowed caller ({', '.join(sorted(allowed))})"


def _routing(study: StudyFacts, sources: list[SeriesFacts], rules: TriggerRules) -> str | None:
    if rules.required_metadata and not study.metadata.get(rules.required_metadata, "").strip():
        return f"no study metadata {rules.required_metadata!r} (set by a routing rule)"
    if rules.required_label and rules.required_label not in study.labels:
        return f"no study label {rules.required_label!r} (set by a routing rule)"
    return None
