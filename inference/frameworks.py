"""Which framework an imported bundle follows, and validation of its settings table.

Kept apart from the serving code so that ``inference.bundle`` can validate a bundle's
``[nnunet]`` / ``[monai]`` table when loading it without pulling in segmentation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inference import monai_serving, nnunet_serving
from inference.settings_table import SettingsError

__all__ = ["KINDS", "parse_framework"]

KINDS = ("hepatica", "nnunet", "monai")
"""``preprocessing.kind`` values: Hepatica's own pipeline, or the framework a model came from."""


def parse_framework(kind: str, table: Mapping[str, Any], labels: Sequence[str],
                    phases: Sequence[str]) -> Any:
    """Validate an imported bundle's ``[nnunet]``/``[monai]`` table against its outputs and
    inputs; None for Hepatica's own bundles. Raises ``SettingsError`` naming the key."""
    settings: nnunet_serving.NnunetSettings | monai_serving.MonaiSettings
    if kind == "nnunet":
        settings = nnunet_serving.parse_settings(table)
        if len(settings.channels) != len(phases):
            raise SettingsError("channels", f"has {len(settings.channels)} entries but "
                                            f"inputs.phases names {len(phases)}")
    elif kind == "monai":
        settings = monai_serving.parse_settings(table)
    else:
        return None
    if settings.num_classes != len(labels):
        raise SettingsError("num_classes", f"is {settings.num_classes} but outputs.labels "
                                           f"names {len(labels)}")
    return settings
