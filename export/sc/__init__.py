"""Secondary-capture heatmap writer (RGB, burned-in text)."""

from export.sc.codes import SERIES_DESCRIPTION
from export.sc.render import COLORMAP, render_heatmap
from export.sc.sop import build_heatmap_image

__all__ = ["COLORMAP", "SERIES_DESCRIPTION", "build_heatmap_image", "render_heatmap"]
