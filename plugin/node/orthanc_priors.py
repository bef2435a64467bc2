"""Prior studies over Orthanc's REST API, for the worker beside Orthanc (plugin mode).

Orthanc is the archive there, so the DIMSE round trip of ``dicom_io.priors`` (C-FIND, then
C-MOVE back to ourselves) is not needed: ``POST /tools/find`` at Study level by PatientID
and a StudyDate range is the same query (Orthanc matches DICOM ranges ``YYYYMMDD-YYYYMMDD``),
and the worker's own download (source series only, never Hepatica's results) fetches each
prior into the prior cache, where a later follow-up finds it without downloading again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_io.priors import PriorCache, PriorStudy, order_timepoints
from plugin.node.orthanc.study import OrthancPost
from plugin.pipeline.recist import PriorSettings

__all__ = ["OrthancPriors", "orthanc_priors"]

log = logging.getLogger(__name__)

Download = Callable[[str, Path], int]
"""``download(study_uid, folder) -> instances``: the worker's download of a study."""


@dataclass
class OrthancPriors:
    """A ``PriorSource``: find with ``/tools/find``, fetch with the worker's download."""

    api: OrthancPost
    download: Download
    lookback_days: int
    cache: PriorCache

    def fetch(self, patient_id: str, study_uid: str, study_date: dt.date
              ) -> list[tuple[PriorStudy, Path]]:
        found = self.find(patient_id, study_date, exclude=study_uid)
        return [(prior, self._retrieved(prior.study_uid)) for prior in found]

    def find(self, patient_id: str, before: dt.date, exclude: str = "") -> list[PriorStudy]:
        """The patient's studies from ``before - lookback_days`` to ``before``, oldest first."""
        if not patient_id:
            raise LookupError("the study has no PatientID to look priors up by")
        start = before - dt.timedelta(days=self.lookback_days)
        query = {"Level": "Study", "Expand": True,
                 "Query": {"PatientID": patient_id,
                           "StudyDate": f"{start:%Y%m%d}-{before:%Y%m%d}"}}
        answer = json.loads(self.api.post("/tools/find", json.dumps(query).encode(),
                                          "application/json"))
        studies = [_prior(entry) for entry in answer]
        return order_timepoints([s for s in studies if s.study_uid != exclude])

    def _retrieved(self, study_uid: str) -> Path:
        cached = self.cache.lookup(study_uid)
        if cached is not None:
            return cached
        folder = self.cache.folder(study_uid)
        count = self.download(study_uid, folder)
        self.cache.mark_complete(study_uid, folder, count)
        log.info("prior study …%s: %d instances from Orthanc", study_uid[-12:], count)
        return folder


def _prior(entry: dict[str, Any]) -> PriorStudy:
    tags = entry.get("MainDicomTags", {})
    modalities = str(entry.get("RequestedTags", {}).get("ModalitiesInStudy", "") or "")
    return PriorStudy(study_uid=str(tags.get("StudyInstanceUID", "")),
                      study_date=str(tags.get("StudyDate", "") or ""),
                      study_time=str(tags.get("StudyTime", "") or ""),
                      description=str(tags.get("StudyDescription", "") or ""),
                      modalities=tuple(m for m in modalities.split("\\") if m))


def orthanc_priors(config: Any, api: OrthancPost, download: Download) -> PriorSettings | None:
    """Priors over REST from a ``HepaticaConfig`` (None when ``[priors] enabled`` is off)."""
    if not config.priors.enabled:
        return None
    return PriorSettings(OrthancPriors(api, download, config.priors.lookback_days,
                                       PriorCache(config.priors_dir)))
