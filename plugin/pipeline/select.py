"""Pipeline step: choose the segmentation bundle whose inputs the study has, and its volumes.

Bundles are tried in :func:`plugin.pipeline.models.segmentation_bundles` order (site first,
more phases before fewer); each channel is served by :func:`dicom_io.selection.select_volume`
from the channel's accepted phases, never the same series twice. The first bundle whose
every channel is served wins; the reason (and why others were passed over) goes into the
SR and summary.json.
"""

from __future__ import annotations

from collections.abc import Sequence

from dicom_io.phases import PhaseRules
from dicom_io.selection import LabelledSeries, NoUsableSeries, SelectedVolume, select_volume
from inference.bundle import Bundle
from plugin.pipeline.context import SegmentationInputs


class NoSegmentationInputs(LookupError):
    """No installed segmentation bundle has its inputs in the study."""


def choose_segmentation(labelled: Sequence[LabelledSeries], bundles: Sequence[Bundle],
                        rules: PhaseRules | None = None) -> SegmentationInputs:
    """The first bundle that every input of can be served, with its volumes and reason."""
    passed_over: list[str] = []
    for bundle in bundles:
        try:
            selected = _volumes_for(bundle, labelled, rules)
        except NoUsableSeries as exc:
            passed_over.append(f"{_name(bundle)} not usable: {exc.reason}")
            continue
        served = ", ".join(f"{ch}={s.phase}" for ch, s in selected.items())
        reason = (f"{_name(bundle)} chosen: every input present ({served}); order: site "
                  "bundles first, then more phases before fewer")
        if passed_over:
            reason += "; " + "; ".join(passed_over)
        return SegmentationInputs(bundle, selected, reason)
    raise NoSegmentationInputs("; ".join(passed_over) or "no segmentation bundle installed")


def _volumes_for(bundle: Bundle, labelled: Sequence[LabelledSeries],
                 rules: PhaseRules | None) -> dict[str, SelectedVolume]:
    selected: dict[str, SelectedVolume] = {}
    for channel in bundle.inputs.phases:
        used = frozenset(s.item.series.key for s in selected.values())
        selected[channel] = select_volume(labelled, bundle.inputs.accepted(channel), rules,
                                          exclude=used)
    return selected


def _name(bundle: Bundle) -> str:
    return f"{bundle.name} {bundle.version}"
