"""Render one heatmap slice to RGB pixels with burned-in text (matplotlib, Agg).

Uses matplotlib's object API (``Figure``, rasterised by Agg), never
``pyplot``: no global state, so worker threads can render in parallel. The
slice keeps its on-screen orientation (row 0 at the top, column 0 at the left),
so the Patient Orientation of the source still describes the picture.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.text import Text

from export.common import RESEARCH_USE_TEXT

__all__ = [
    "COLORMAP",
    "CT_WINDOW",
    "MR_WINDOW_PERCENTILES",
    "render_heatmap",
    "window_background",
]

COLORMAP = "inferno"
_FIGSIZE_IN = (6.4, 6.0)
_DPI = 100
# Overlay opacity ramps from 0 at p = 0.2 to its maximum at p = 0.5, so low
# probabilities leave the anatomy readable and p > 0.5 is plainly visible.
_ALPHA_START, _ALPHA_FULL, _ALPHA_MAX = 0.2, 0.5, 0.75
CT_WINDOW = (400.0, 50.0)
"""Width and level (HU) of the abdominal soft-tissue window a reader uses for the liver."""
MR_WINDOW_PERCENTILES = (1.0, 99.0)
"""MR has no absolute scale: a reader windows it to its own intensity range."""


def render_heatmap(
    background: npt.NDArray[np.floating],
    probability: npt.NDArray[np.floating],
    *,
    title: str,
    caption_lines: Sequence[str],
    aspect: float = 1.0,
    modality: str = "",
) -> npt.NDArray[np.uint8]:
    """Return ``[rows, cols, 3]`` uint8 RGB of the overlay, colour bar and text.

    ``aspect`` is row spacing / column spacing, so anisotropic pixels are drawn
    with their true proportions. ``modality`` chooses the background window:
    CT in HU through the abdominal window (W400/L50), anything else between its
    1st and 99th percentiles.
    """
    _check_shapes(background, probability)
    rgb = _composite(window_background(background, modality), probability)
    return _frame().render(rgb, aspect, title, caption_lines)


class _Frame:
    """One figure with what every heatmap shares (colour bar, disclaimer) drawn once.

    Building the figure and drawing the colour bar's axis was most of a heatmap's time;
    each picture now restores that background and draws only its own artists on it
    (matplotlib's blitting). The layout is the one the whole figure had.
    """

    def __init__(self) -> None:
        self.fig = Figure(figsize=_FIGSIZE_IN, dpi=_DPI, facecolor="black")
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes((0.02, 0.17, 0.82, 0.74))
        self.ax.set_axis_off()
        _add_colorbar(self.fig)
        _add_disclaimer(self.fig)
        self.canvas.draw()  # type: ignore[no-untyped-call]
        self.background = self.canvas.copy_from_bbox(  # type: ignore[no-untyped-call]
            self.fig.bbox)

    def render(self, rgb: npt.NDArray[np.float64], aspect: float, title: str,
               caption_lines: Sequence[str]) -> npt.NDArray[np.uint8]:
        """Draw one picture over the shared background; ``[rows, cols, 3]`` uint8."""
        self.canvas.restore_region(self.background)  # type: ignore[no-untyped-call]
        image = self.ax.imshow(rgb, interpolation="nearest", aspect=aspect, animated=True)
        texts = _add_text(self.fig, title, caption_lines, animated=True)
        try:
            self.ax.apply_aspect()
            self.ax.draw_artist(image)
            for text in texts:
                self.fig.draw_artist(text)
            rgba = np.asarray(self.canvas.buffer_rgba())  # type: ignore[no-untyped-call]
            return np.ascontiguousarray(rgba[..., :3])
        finally:
            image.remove()
            for text in texts:
                text.remove()


_FRAMES = threading.local()


def _frame() -> _Frame:
    """This thread's frame: a figure is never drawn by two threads at once."""
    frame: _Frame | None = getattr(_FRAMES, "frame", None)
    if frame is None:
        frame = _FRAMES.frame = _Frame()
    return frame


def _composite(gray: npt.NDArray[np.float64],
               probability: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """The windowed slice through the grey colour map, the overlay blended over it.

    One RGB image sampled nearest-neighbour is the picture the two layers made when each
    was sampled and then blended ("over"), at half the drawing cost.
    """
    base = np.asarray(mpl.colormaps["gray"](gray), dtype=np.float64)[..., :3]
    overlay = _overlay_rgba(probability)
    alpha = overlay[..., 3:4]
    rgb: npt.NDArray[np.float64] = np.clip(overlay[..., :3] * alpha + base * (1.0 - alpha),
                                           0.0, 1.0)
    return rgb


def _rasterise(fig: Figure) -> npt.NDArray[np.uint8]:
    """Draw a whole figure with Agg into raw RGBA bytes and drop the alpha channel."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="rgba", dpi=_DPI)
    width, height = (round(v * _DPI) for v in _FIGSIZE_IN)
    rgba = np.frombuffer(buffer.getvalue(), dtype=np.uint8).reshape(height, width, 4)
    return np.ascontiguousarray(rgba[..., :3])


def _check_shapes(
    background: npt.NDArray[np.floating], probability: npt.NDArray[np.floating]
) -> None:
    """Both inputs are one 2-D slice of the same size, or rendering is refused."""
    if background.ndim != 2 or background.shape != probability.shape:
        raise ValueError(
            f"background {background.shape} and probability {probability.shape} "
            "must be the same 2-D (y, x) shape"
        )


def window_background(background: npt.NDArray[np.floating],
                      modality: str = "") -> npt.NDArray[np.float64]:
    """Scale to 0..1 as a reader would window the slice.

    CT values are Hounsfield units (the caller passes them after rescaling), so the
    abdominal window applies as such: fat black, bone white, the liver mid-grey. The full
    range (air at −1000 to bone, or −3024 padding) would leave the liver a flat grey.
    MR has no absolute scale: the 1st–99th percentiles of the slice.
    """
    values = np.nan_to_num(background.astype(np.float64))
    if modality.upper() == "CT":
        width, level = CT_WINDOW
        low, high = level - width / 2, level + width / 2
    else:
        low, high = (float(v) for v in np.percentile(values, MR_WINDOW_PERCENTILES))
    if high <= low:
        return np.zeros_like(values)
    scaled: npt.NDArray[np.float64] = np.clip((values - low) / (high - low), 0.0, 1.0)
    return scaled


def _overlay_rgba(probability: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Colour-mapped probability with an opacity that grows with probability."""
    p = np.clip(np.nan_to_num(probability.astype(np.float64)), 0.0, 1.0)
    rgba: npt.NDArray[np.float64] = np.asarray(mpl.colormaps[COLORMAP](p), dtype=np.float64)
    ramp = (p - _ALPHA_START) / (_ALPHA_FULL - _ALPHA_START)
    rgba[..., 3] = np.clip(ramp, 0.0, 1.0) * _ALPHA_MAX
    return rgba


def _add_colorbar(fig: Figure) -> None:
    """Vertical colour bar for probability 0..1 with labelled ticks."""
    cax = fig.add_axes((0.87, 0.22, 0.035, 0.64))
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=COLORMAP)
    bar = fig.colorbar(mappable, cax=cax, ticks=[0.0, 0.25, 0.5, 0.75, 1.0])
    bar.ax.tick_params(colors="white", labelsize=9)
    bar.set_label("tumour probability", color="white", fontsize=9)
    bar.outline.set_edgecolor("white")


def _add_text(fig: Figure, title: str, caption_lines: Sequence[str],
              animated: bool = False) -> list[Text]:
    """The phase title and the caption (the disclaimer is part of every frame)."""
    texts = [fig.text(0.02, 0.965, title, color="white", fontsize=13, weight="bold", va="top",
                      animated=animated)]
    y = 0.145
    for line in caption_lines:
        texts.append(fig.text(0.02, y, line, color="white", fontsize=9, va="top",
                              animated=animated))
        y -= 0.035
    return texts


def _add_disclaimer(fig: Figure) -> None:
    """Burn in, always, the disclaimer along the bottom edge."""
    fig.text(
        0.5,
        0.012,
        RESEARCH_USE_TEXT,
        color="#ffd400",
        fontsize=11,
        weight="bold",
        ha="center",
        va="bottom",
    )
