"""Where the project's shared reference data lie: ``shared/`` beside the checkout.

CI and every developer checkout have ``../shared`` next to the repository; the variable
``HEPATICA_SHARED_DIR`` points elsewhere when needed.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("HEPATICA_SHARED_DIR",
                             Path(__file__).resolve().parents[2] / "shared"))
REAL_DATA = SHARED / "data" / "real"
"""Real DICOM objects made by other tools (see its README.md for provenance)."""
