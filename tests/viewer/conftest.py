"""The viewer test reuses the Orthanc fixtures (a real Orthanc with the plugin, the worker)."""

from __future__ import annotations

from tests.orthanc.conftest import node, phantom_dirs

__all__ = ["node", "phantom_dirs"]
