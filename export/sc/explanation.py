"""Secondary-capture explanation heatmaps of response models (CAM, Grad-CAM, Grad-CAM++).

Unlike the tumour-probability heatmaps (``export.sc.sop``) these show why a *response*
model predicted what it did: the model's explanation map over the slice it points at, a
colour bar of relative contribution, the prediction and the model burned in. One series per
model; the series description names the model, the Contributing Equipment item (IHE AIR)
identifies it.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import matplotlib as mpl
import numpy as np
import numpy.typing as npt
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from pydicom.dataset import Dataset

from export.common import (
    CHARACTER_SET,
    MANUFACTURER,
    RESEARCH_USE_TEXT,
    AlgorithmInfo,
    contributing_equipment,
    declare_air_scheme,
)
from export.sc.codes import BODY_PART, PURPOSE_SOURCE_IMAGE
from export.sc.render import _rasterise, window_background
from export.sc.sop import _patient_orientation, _pixel_aspect

__all__ = ["EXPLANATION_COLORMAP", "build_explanation_image", "render_explanation"]

EXPLANATION_COLORMAP = "jet"
_FIGSIZE_IN = (6.4, 6.0)
_DPI = 100
_ALPHA_START, _ALPHA_MAX = 0.15, 0.6  # below 15 % of the maximum: transparent


def series_description(model_name: str) -> str:
    """At most 64 characters (LO): names the model."""
    return f"Hepatica explanation {model_name}"[:64]


def render_explanation(background: npt.NDArray[np.floating],
                       explanation: npt.NDArray[np.floating], *, title: str,
                       caption_lines: Sequence[str], aspect: float = 1.0,
                       modality: str = "") -> npt.NDArray[np.uint8]:
    """``[rows, cols, 3]`` uint8: the map (scaled to its maximum) over the slice, a colour bar
    of relative contribution, title, caption and the disclaimer."""
    if background.ndim != 2 or background.shape != explanation.shape:
        raise ValueError(f"background {background.shape} and explanation "
                         f"{explanation.shape} must be the same 2-D shape")
    values = np.clip(np.nan_to_num(explanation.astype(np.float64)), 0.0, None)
    peak = float(values.max())
    relative = values / peak if peak > 0 else values
    fig = Figure(figsize=_FIGSIZE_IN, dpi=_DPI, facecolor="black")
    ax = fig.add_axes((0.02, 0.17, 0.82, 0.74))
    ax.set_axis_off()
    ax.imshow(window_background(background, modality), cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest", aspect=aspect)
    rgba = np.asarray(mpl.colormaps[EXPLANATION_COLORMAP](relative), dtype=np.float64)
    rgba[..., 3] = np.clip((relative - _ALPHA_START) / (1 - _ALPHA_START), 0, 1) * _ALPHA_MAX
    ax.imshow(rgba, interpolation="bilinear", aspect=aspect)
    cax = fig.add_axes((0.87, 0.22, 0.035, 0.64))
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=EXPLANATION_COLORMAP),
                       cax=cax, ticks=[0.0, 0.25, 0.5, 0.75, 1.0])
    bar.ax.tick_params(colors="white", labelsize=9)
    bar.set_label("relative contribution to the prediction", color="white", fontsize=9)
    bar.outline.set_edgecolor("white")
    fig.text(0.02, 0.975, title, color="white", fontsize=11, weight="bold", va="top")
    y = 0.145
    for line in caption_lines:
        fig.text(0.02, y, line, color="white", fontsize=8.5, va="top")
        y -= 0.033
    fig.text(0.5, 0.012, RESEARCH_USE_TEXT, color="#ffd400", fontsize=11, weight="bold",
             ha="center", va="bottom")
    return _rasterise(fig)


def build_explanation_image(
    background: npt.NDArray[np.floating],
    explanation: npt.NDArray[np.floating],
    *,
    source_image: Dataset,
    title: str,
    caption_lines: Sequence[str],
    algorithm: AlgorithmInfo,
    method: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int,
    software_versions: str,
) -> hd.sc.SCImage:
    """Render and wrap one explanation image as an RGB secondary capture of ``source_image``'s
    study, referencing that slice (Source Image Sequence) and naming ``algorithm``."""
    pixels = render_explanation(background, explanation, title=title,
                                caption_lines=caption_lines,
                                aspect=_pixel_aspect(source_image),
                                modality=str(source_image.get("Modality", "")))
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source_image, pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB, bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid, instance_number=instance_number,
        manufacturer=MANUFACTURER, patient_orientation=_patient_orientation(source_image),
        series_description=series_description(algorithm.name),
        software_versions=software_versions, specific_character_set=CHARACTER_SET,
        contributing_equipment=[contributing_equipment(algorithm, software_versions)])
    image.BurnedInAnnotation = "YES"
    image.BodyPartExamined = source_image.get("BodyPartExamined") or BODY_PART
    image.DerivationDescription = (f"{method} explanation of {algorithm.name} "
                                   f"{algorithm.version} rendered by Hepatica")[:1024]
    image.ImageComments = RESEARCH_USE_TEXT
    reference = Dataset()
    reference.ReferencedSOPClassUID = source_image.SOPClassUID
    reference.ReferencedSOPInstanceUID = source_image.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = [PURPOSE_SOURCE_IMAGE]
    image.SourceImageSequence = [reference]
    declare_air_scheme(image)
    return image
