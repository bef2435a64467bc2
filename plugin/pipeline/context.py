"""The typed study context that the pipeline's steps read and fill, and the settings.

Each step (``select``, ``segment``, ``measure``, ``prediction``, ``recist``, ``report``) takes
the context and adds what it made; nothing is passed around loose, so a new model is one
more step and one more field, not a new argument threaded through every function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from dicom_io.phases import PhaseRules
from dicom_io.selection import LabelledSeries, SelectedVolume
from dicom_io.series import SeriesInstances
from dicom_io.volume import Volume
from inference.bundle import Bundle

if TYPE_CHECKING:
    from inference.measurements import StudyMeasurements
    from inference.segmentation import SegmentationResult
    from plugin.pipeline.prediction import ResponseOutcome, ResponseSettings
    from plugin.pipeline.reader_roi import TumourRoi
    from plugin.pipeline.recist import PriorResponse, PriorSettings

Progress = Callable[[str], None]


class PipelineError(RuntimeError):
    """The study cannot be processed at all; the message says why and what to do."""


def _response_settings() -> ResponseSettings:
    from plugin.pipeline.prediction import ResponseSettings

    return ResponseSettings()


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline needs from the configuration."""

    bundle_dirs: tuple[Path, ...] = ()
    series_number_base: int = 9900
    providers: tuple[str, ...] = ()
    response: ResponseSettings = field(default_factory=_response_settings)
    priors: PriorSettings | None = None  # RECIST/mRECIST against prior studies
    phase_rules: tuple[Path, ...] = ()  # site files extending dicom_io/phase_rules.toml


@dataclass(frozen=True)
class SegmentationInputs:
    """The segmentation bundle chosen for the study, its input volumes and why."""

    bundle: Bundle
    selected: dict[str, SelectedVolume]
    """Bundle channel → the selected volume, in the bundle's channel order."""
    reason: str

    @property
    def reference(self) -> SelectedVolume:
        """The first channel: its grid is the grid of every result."""
        return self.selected[self.bundle.inputs.phases[0]]

    @property
    def datasets(self) -> list[Dataset]:
        return list(self.reference.datasets)


@dataclass
class StudyContext:
    """One study on its way through the steps."""

    study_dir: Path
    out_dir: Path
    settings: PipelineSettings
    rules: PhaseRules | None = None
    series: list[SeriesInstances] = field(default_factory=list)
    """Every series of the study, images and non-image objects (SEG, RTSTRUCT, SR …)."""
    labelled: list[LabelledSeries] = field(default_factory=list)
    """The image series with their phase labels."""
    bundles: list[Bundle] = field(default_factory=list)
    """The installed segmentation bundles, in the order they were considered."""
    inputs: SegmentationInputs | None = None
    not_run: str = ""
    """Why no segmentation bundle could run (empty when one did)."""
    channels: list[Volume] = field(default_factory=list)
    segmentation: SegmentationResult | None = None
    providers: list[str] = field(default_factory=list)
    roi: TumourRoi | None = None
    measurements: StudyMeasurements | None = None
    predictions: list[ResponseOutcome] = field(default_factory=list)
    recist: PriorResponse | None = None
    files: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    progress: Progress | None = None

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step (and tell the progress callback it started)."""
        if self.progress:
            self.progress(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - started, 4)

    @property
    def reference_volume(self) -> Volume:
        assert self.inputs is not None
        return self.inputs.reference.volume

    @property
    def study_uid(self) -> str:
        if self.inputs is not None:
            return str(self.inputs.datasets[0].StudyInstanceUID)
        first = next((s.first for s in self.series), None)
        return str(first.StudyInstanceUID) if first is not None else ""

    def non_image_datasets(self) -> list[Dataset]:
        """Instances of the study that are not images (clinical SRs, reader ROIs, KOs …)."""
        images = {item.series.series_uid for item in self.labelled}
        return [ds for s in self.series if s.series_uid not in images for ds in s.datasets]
