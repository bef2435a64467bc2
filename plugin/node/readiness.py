"""Start a study as soon as it holds what the installed models need (issue 13, part 2).

The quiet period (``[pipeline] stable_seconds``, 30 s by default) guards against processing
half a study; most of it is dead time once the series a model reads have all arrived. So a
study that has been quiet for the short ``ready_seconds`` is read (headers only), its series
labelled, and queued at once when an installed segmentation bundle finds every phase it needs
in distinct series; the full quiet period stays the rule for studies whose needs are unknown
or unmet (no bundle fits, the phases are not labelled). A study is judged once per state: it
is looked at again only when a new instance arrives, and an instance arriving after the start
re-opens the study as before (``JobQueue.record_instance``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dicom_io.phases import PhaseRules, load_site_rules
from dicom_io.roi import image_series
from dicom_io.selection import LabelledSeries, choose, label_all
from dicom_io.series import load_study
from dicom_io.spool import Spool
from inference.bundle import Bundle
from plugin.node.jobs import Job, JobQueue
from plugin.pipeline.models import NoModelError, segmentation_bundles

__all__ = ["DEFAULT_READY_SECONDS", "ReadyInbox", "needs_met"]

log = logging.getLogger(__name__)

DEFAULT_READY_SECONDS = 3.0
"""Quiet seconds after which a study holding every needed series starts (a few seconds:
longer than a sender's pause between two instances of one association, far shorter than
the quiet period)."""
_MEMORY = 4096  # studies whose last verdict is remembered (a verdict is cheap to redo)


def needs_met(labelled: Sequence[LabelledSeries], bundles: Sequence[Bundle],
              rules: PhaseRules | None = None) -> Bundle | None:
    """The first bundle each of whose channels a distinct labelled series can fill (the
    label-level part of ``plugin.pipeline.select.choose_segmentation``), or None."""
    for bundle in bundles:
        used: set[str] = set()
        for channel in bundle.inputs.phases:
            chosen = next((c.chosen for c in (choose(labelled, phase, frozenset(used), rules)
                                              for phase in bundle.inputs.accepted(channel))
                           if c.chosen is not None), None)
            if chosen is None:
                break
            used.add(chosen.series.key)
        else:
            return bundle
    return None


@dataclass
class ReadyInbox:
    """The spool's studies, queued after ``ready_seconds`` when their needs are met, else
    after ``stable_seconds`` (a drop-in for ``plugin.node.transports.SpoolInbox``)."""

    spool: Spool
    stable_seconds: float
    ready_seconds: float = DEFAULT_READY_SECONDS
    bundle_dirs: tuple[Path, ...] = ()
    phase_rules: tuple[Path, ...] = ()
    timing_key: str | None = None
    _verdicts: dict[str, tuple[float, int]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def tick(self, queue: JobQueue) -> None:
        queue.promote_stable(self.stable_seconds)
        if self.ready_seconds >= self.stable_seconds:
            return
        for job in queue.quiet_received(self.ready_seconds):
            state = (job.last_instance_at, job.instances)
            with self._lock:
                if self._verdicts.get(job.study_uid) == state:
                    continue  # judged not ready as it is; a new instance changes the state
                self._verdicts[job.study_uid] = state
                while len(self._verdicts) > _MEMORY:
                    self._verdicts.pop(next(iter(self._verdicts)))
            bundle = self._ready(job)
            if bundle is not None and queue.enqueue_if_unchanged(job.study_uid,
                                                                 job.last_instance_at):
                log.info("job %d: every series %s %s needs is here and quiet for %.0f s; "
                         "started without waiting %.0f s", job.id, bundle.name, bundle.version,
                         self.ready_seconds, self.stable_seconds)

    @contextmanager
    def study(self, job: Job) -> Iterator[Path]:
        yield self.spool.study_dir(job.study_uid)  # the UID is checked before it names a path

    def _ready(self, job: Job) -> Bundle | None:
        """The bundle whose needs the study meets now; None (wait the quiet period) when none
        does or the study cannot be read: the job itself reports any such problem later."""
        try:
            rules = load_site_rules(self.phase_rules) if self.phase_rules else None
            series = load_study(self.spool.study_dir(job.study_uid))
            return needs_met(label_all(image_series(series), rules),
                             segmentation_bundles(self.bundle_dirs), rules)
        except NoModelError:
            return None
        except Exception as exc:  # never let a study that cannot be judged stop the loop
            log.debug("job %d: not judged ready (%s: %s); the quiet period applies", job.id,
                      type(exc).__name__, exc)
            return None
