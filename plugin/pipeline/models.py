"""Which model bundles this node serves: the shipped ones plus those a site drops in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import inference
from inference.bundle import Bundle, discover_bundles
from plugin import __version__

SHIPPED_BUNDLES = Path(inference.__file__).resolve().parent / "bundles"
"""Bundles committed with the package (trained on phantoms, and they say so)."""


class NoModelError(LookupError):
    """No installed bundle can do what was asked."""


def installed_bundles(extra_dirs: Sequence[Path] = ()) -> list[Bundle]:
    """Site bundles first (they override shipped ones of the same name), then shipped."""
    site = discover_bundles(*extra_dirs)
    names = {b.name for b in site}
    shipped = [b for b in discover_bundles(SHIPPED_BUNDLES) if b.name not in names]
    return [*site, *shipped]


def segmentation_bundle(extra_dirs: Sequence[Path] = ()) -> Bundle:
    """The liver/tumour segmentation bundle to use (a site's own wins over the shipped one)."""
    for bundle in installed_bundles(extra_dirs):
        if bundle.family == "segmentation":
            return bundle
    searched = [str(d) for d in (*extra_dirs, SHIPPED_BUNDLES)]
    raise NoModelError(f"no segmentation bundle found in {searched}; train one with "
                       "`hepatica train segmentation --out DIR` and add DIR to "
                       "[pipeline] bundle_dirs")


def pipeline_version(bundle: Bundle) -> str:
    """Package and model versions: a new version re-processes, the same one replaces."""
    return f"hepatica-{__version__}+{bundle.name}-{bundle.version}"
