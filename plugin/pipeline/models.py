"""Which model bundles this node serves (the shipped ones plus those a site drops in), and
the versions that job keys and result UIDs derive from."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import inference
from inference.bundle import Bundle, discover_bundles
from plugin import __version__

SHIPPED_BUNDLES = Path(inference.__file__).resolve().parent / "bundles"
"""Bundles committed with the package (trained on phantoms, and they say so)."""
SEGMENTATION_FAMILY = "segmentation"


class NoModelError(LookupError):
    """No installed bundle can do what was asked."""


def installed_bundles(extra_dirs: Sequence[Path] = ()) -> list[Bundle]:
    """Site bundles first (they override shipped ones of the same name), then shipped."""
    site = discover_bundles(*extra_dirs)
    names = {b.name for b in site}
    shipped = [b for b in discover_bundles(SHIPPED_BUNDLES) if b.name not in names]
    return [*site, *shipped]


def segmentation_bundles(extra_dirs: Sequence[Path] = ()) -> list[Bundle]:
    """Every installed segmentation bundle in the order the pipeline considers them.

    Site bundles before shipped ones (a site's own model is preferred), then more input
    phases before fewer (a four-phase model sees more than a one-phase one), then by name.
    """
    found = [b for b in installed_bundles(extra_dirs) if b.family == SEGMENTATION_FAMILY]
    if not found:
        searched = [str(d) for d in (*extra_dirs, SHIPPED_BUNDLES)]
        raise NoModelError(f"no segmentation bundle found in {searched}; train one with "
                           "`hepatica train segmentation --out DIR` and add DIR to "
                           "[pipeline] bundle_dirs")
    return sorted(found, key=lambda b: (not is_site_bundle(b), -len(b.inputs.phases), b.name))


def segmentation_bundle(extra_dirs: Sequence[Path] = ()) -> Bundle:
    """The first segmentation bundle the pipeline would consider."""
    return segmentation_bundles(extra_dirs)[0]


def is_site_bundle(bundle: Bundle) -> bool:
    return SHIPPED_BUNDLES not in bundle.path.resolve().parents


@lru_cache(maxsize=64)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(bundle: Bundle) -> str:
    """SHA-256 of the bundle's model file (the weights; IHE AIR Device UIDs derive from it)."""
    stat = bundle.model_file.stat()
    return _file_digest(bundle.model_file, stat.st_size, stat.st_mtime_ns)


def bundle_digest(bundle: Bundle) -> str:
    """Name, version and the hash of the model file: a retrained model changes it."""
    return f"{bundle.name}-{bundle.version}-{model_sha256(bundle)[:16]}"


def pipeline_version(bundles: Bundle | Iterable[Bundle]) -> str:
    """Package version and every installed model: a new one re-processes a study."""
    items = [bundles] if isinstance(bundles, Bundle) else list(bundles)
    models = "+".join(sorted(bundle_digest(b) for b in items))
    return f"hepatica-{__version__}+{hashlib.sha256(models.encode()).hexdigest()[:12]}"


def content_version(*parts: object) -> str:
    """The version one result object's UIDs derive from: package version and its inputs.

    Identical inputs (models, series instances, clinical values, priors) give the same
    string, so re-sending a study replaces its results; any change gives a new one, so an
    archive never keeps stale content under a reused UID.
    """
    text = "\x1f".join(str(p) for p in parts)
    return f"hepatica-{__version__}+{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def installed_version(extra_dirs: Sequence[Path] = ()) -> str:
    """The node's pipeline version: package plus every installed bundle (jobs key on it)."""
    return pipeline_version(installed_bundles(extra_dirs))
