"""Model bundles: a folder with ``bundle.toml`` and the ``.onnx`` file(s) it names.

A bundle carries everything serving must know about a model besides its weights (phases it
reads, grid spacing, normalisation, what its outputs mean, thresholds, how it was trained), so
that a site adds or replaces a model by dropping a folder, without a code change. The format is
documented in ``docs/bundles.md``. Loading validates eagerly: a broken bundle fails when it is
loaded, with the file and key named, not halfway through a study.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.settings_table import SettingsError

__all__ = [
    "BUNDLE_FILE",
    "Bundle",
    "BundleError",
    "BundleInputs",
    "discover_bundles",
    "load_bundle",
]

BUNDLE_FILE = "bundle.toml"
OUTPUT_ACTIVATIONS = ("softmax", "logits")

log = logging.getLogger(__name__)


class BundleError(ValueError):
    """A bundle folder is missing, unreadable or has a missing/bad key (the message says which)."""


@dataclass(frozen=True)
class BundleInputs:
    """What a model reads: image phases (channel order), time points and clinical variables."""

    phases: tuple[str, ...]
    timepoints: int = 1
    clinical: tuple[str, ...] = ()
    features: tuple[str, ...] = ()  # response bundles: the model's input columns, in order
    alternatives: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Channel → the phase labels that may fill it, preferred first (``[inputs.alternatives]``).
    A channel without an entry accepts only its own name (``AP`` → an AP series)."""

    def accepted(self, channel: str) -> tuple[str, ...]:
        """The phases that may fill ``channel``, preferred first."""
        return self.alternatives.get(channel, (channel,))


@dataclass(frozen=True)
class Bundle:
    """A validated model bundle; ``spacing_mm`` is (x, y, z), ``patch_size`` is (z, y, x)."""

    path: Path
    name: str
    version: str
    family: str
    intended_use: str
    description: str
    inputs: BundleInputs
    spacing_mm: tuple[float, float, float]
    normalisation: str
    patch_size: tuple[int, int, int]
    outputs: tuple[str, ...]
    thresholds: dict[str, float]
    training: dict[str, Any]
    model_file: Path
    output_activation: str = "softmax"
    extra_files: tuple[Path, ...] = field(default=())
    radiomics: dict[str, Any] = field(default_factory=dict)
    baseline: tuple[float, ...] = ()
    explain: str = ""
    group: str = ""
    kind: str = "hepatica"
    """``preprocessing.kind``: ``hepatica`` (``inference.preprocess``), or the framework an
    imported model's pre-processing and inference follow (``nnunet``, ``monai``)."""
    orientation: str = "none"
    """Axis codes the model expects its input in (``preprocessing.orientation``), or none."""
    framework: Any = None
    """Imported models: the validated ``[nnunet]`` / ``[monai]`` settings."""
    label_map: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """``[outputs.map]``: Hepatica label → the output labels whose probabilities it sums."""

    def channels_of(self, label: str) -> tuple[str, ...]:
        """The output labels that make up Hepatica's ``label`` (default: the one so named)."""
        return self.label_map.get(label, (label,))

    def threshold(self, key: str, default: float) -> float:
        """A threshold from the bundle, or the caller's default when the bundle has none."""
        return float(self.thresholds.get(key, default))


class _Reader:
    """Typed access to the parsed TOML that names ``file`` and the dotted key in every error."""

    def __init__(self, file: Path, data: Mapping[str, Any]) -> None:
        self.file = file
        self.data = data

    def fail(self, key: str, problem: str) -> BundleError:
        return BundleError(f"{self.file}: key '{key}' {problem}")

    def get(self, key: str, default: Any = None, required: bool = True) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if required:
                    raise self.fail(key, "is missing")
                return default
            node = node[part]
        return node

    def text(self, key: str, default: str | None = None) -> str:
        value = self.get(key, default, required=default is None)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def optional_text(self, key: str) -> str:
        value = self.get(key, "", required=False)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {value!r}")
        return value

    def strings(self, key: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self.get(key, default, required=default is None)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"must be a list of strings, got {value!r}")
        if len(set(value)) != len(value):
            raise self.fail(key, f"has duplicate entries: {value!r}")
        return tuple(value)

    def positive_int(self, key: str, default: int | None = None) -> int:
        value = self.get(key, default, required=default is None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, f"must be a positive integer, got {value!r}")
        return value

    def triple(self, key: str, kind: type) -> tuple[Any, Any, Any]:
        value = self.get(key)
        ok = isinstance(value, list) and len(value) == 3 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)
        if not ok or (kind is int and not all(isinstance(v, int) for v in value)):
            raise self.fail(key, f"must be 3 positive {kind.__name__}s, got {value!r}")
        return kind(value[0]), kind(value[1]), kind(value[2])

    def table(self, key: str) -> dict[str, Any]:
        value = self.get(key, {}, required=False)
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a table, got {value!r}")
        return dict(value)


def load_bundle(directory: str | Path) -> Bundle:
    """Read and validate ``directory/bundle.toml``; raise ``BundleError`` naming file and key."""
    folder = Path(directory)
    file = folder / BUNDLE_FILE
    reader = _Reader(file, _read_toml(file))
    return Bundle(
        path=folder,
        name=reader.text("name"),
        version=reader.text("version"),
        family=reader.text("family"),
        intended_use=reader.text("intended_use"),
        description=reader.optional_text("description"),
        inputs=_inputs(reader),
        **_preprocessing(reader),
        outputs=_outputs(reader),
        thresholds=_thresholds(reader),
        training=reader.table("training"),
        model_file=_model_file(reader, folder),
        output_activation=_activation(reader),
        extra_files=_extra_files(reader, folder),
        radiomics=reader.table("radiomics"),
        baseline=_baseline(reader),
        explain=reader.optional_text("explain.method"),
        group=reader.optional_text("group"),
        **_imported(reader),
    )


def _preprocessing(reader: _Reader) -> dict[str, Any]:
    """Grid and normalisation: required for image networks; response bundles that read
    features may omit the table (their grid is the radiomics settings' resampling)."""
    if reader.text("family") != "segmentation" and reader.get(
            "preprocessing", None, required=False) is None:
        return {"spacing_mm": (1.0, 1.0, 1.0), "normalisation": "none",
                "patch_size": (1, 1, 1)}
    return {"spacing_mm": reader.triple("preprocessing.spacing_mm", float),
            "normalisation": reader.text("preprocessing.normalisation"),
            "patch_size": reader.triple("preprocessing.patch_size", int)}


def _imported(reader: _Reader) -> dict[str, Any]:
    """Kind, orientation, framework settings and label map (models imported from nnU-Net or
    MONAI, docs/importing_models.md); validated here so a bad bundle fails when loaded."""
    from inference.frameworks import KINDS, parse_framework
    from inference.orientation import check_codes

    kind = reader.get("preprocessing.kind", "hepatica", required=False)
    if kind not in KINDS:
        raise reader.fail("preprocessing.kind", f"must be one of {KINDS}, got {kind!r}")
    orientation = reader.text("preprocessing.orientation", default="none")
    if orientation != "none":
        try:
            orientation = check_codes(orientation)
        except ValueError as exc:
            raise reader.fail("preprocessing.orientation", str(exc)) from None
    labels = _outputs(reader)
    label_map: dict[str, tuple[str, ...]] = {}
    for name in reader.table("outputs.map"):
        label_map[name] = reader.strings(f"outputs.map.{name}")
        if not label_map[name] or any(c not in labels for c in label_map[name]):
            raise reader.fail(f"outputs.map.{name}", f"must name entries of outputs.labels "
                                                     f"{list(labels)}, got "
                                                     f"{list(label_map[name])}")
    try:
        framework = parse_framework(kind, reader.table(kind) if kind != "hepatica" else {},
                                    labels, reader.strings("inputs.phases"))
    except SettingsError as exc:
        raise reader.fail(f"{kind}.{exc.key}", exc.problem) from None
    return {"kind": kind, "orientation": orientation, "framework": framework,
            "label_map": label_map}


def _baseline(reader: _Reader) -> tuple[float, ...]:
    """Training means of the input features (contributions are measured against them)."""
    value = reader.get("explain.baseline", [], required=False)
    features = reader.strings("inputs.features", default=())
    ok = isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not ok or (value and len(value) != len(features)):
        raise reader.fail("explain.baseline", f"must be {len(features)} numbers (one per "
                          f"inputs.features), got {value!r}")
    return tuple(float(v) for v in value)


def _read_toml(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise BundleError(f"{file}: not found (a bundle folder needs a {BUNDLE_FILE})")
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{file}: not valid TOML: {exc}") from exc


def _inputs(reader: _Reader) -> BundleInputs:
    phases = reader.strings("inputs.phases")
    if not phases:
        raise reader.fail("inputs.phases", "must name at least one phase")
    return BundleInputs(phases=phases,
                        timepoints=reader.positive_int("inputs.timepoints", default=1),
                        clinical=reader.strings("inputs.clinical", default=()),
                        features=reader.strings("inputs.features", default=()),
                        alternatives=_alternatives(reader, phases))


def _alternatives(reader: _Reader, phases: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    table = reader.table("inputs.alternatives")
    out: dict[str, tuple[str, ...]] = {}
    for channel in table:
        if channel not in phases:
            raise reader.fail(f"inputs.alternatives.{channel}", "names no channel of inputs.phases")
        out[channel] = reader.strings(f"inputs.alternatives.{channel}")
        if not out[channel]:
            raise reader.fail(f"inputs.alternatives.{channel}", "must name at least one phase")
    return out


def _outputs(reader: _Reader) -> tuple[str, ...]:
    labels = reader.strings("outputs.labels")
    if not labels:
        raise reader.fail("outputs.labels", "must name at least one output")
    return labels


def _activation(reader: _Reader) -> str:
    value = reader.text("outputs.output_activation", default="softmax")
    if value not in OUTPUT_ACTIVATIONS:
        raise reader.fail("outputs.output_activation", f"must be one of {OUTPUT_ACTIVATIONS}, "
                          f"got {value!r}")
    return value


def _thresholds(reader: _Reader) -> dict[str, float]:
    table = reader.table("thresholds")
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise reader.fail(f"thresholds.{key}", f"must be a number, got {value!r}")
    return {key: float(value) for key, value in table.items()}


def _model_file(reader: _Reader, folder: Path) -> Path:
    """The named model file, or the folder's only ``.onnx`` when none is named."""
    name = reader.get("model_file", None, required=False)
    if name is None:
        candidates = sorted(folder.glob("*.onnx"))
        if len(candidates) != 1:
            raise reader.fail("model_file", f"is missing and the folder holds "
                              f"{len(candidates)} .onnx files (name the one to serve)")
        return candidates[0]
    return _existing(reader, folder, "model_file", name)


def _extra_files(reader: _Reader, folder: Path) -> tuple[Path, ...]:
    names = reader.strings("extra_files", default=())
    return tuple(_existing(reader, folder, "extra_files", name) for name in names)


def _existing(reader: _Reader, folder: Path, key: str, name: object) -> Path:
    if not isinstance(name, str) or not name:
        raise reader.fail(key, f"must be a file name, got {name!r}")
    path = folder / name
    if not path.is_file():
        raise reader.fail(key, f"names {name!r}, which is not a file in {folder}")
    return path


def discover_bundles(*directories: str | Path, strict: bool = False) -> list[Bundle]:
    """Load every bundle found in ``directories`` (each a bundle, or a folder of bundles).

    A broken bundle is logged and skipped unless ``strict``: one bad folder dropped by a site
    must not take the other models out of service. Sorted by (family, name, version, path).
    """
    found: list[Bundle] = []
    for folder in _bundle_folders(directories):
        try:
            found.append(load_bundle(folder))
        except BundleError as exc:
            if strict:
                raise
            log.warning("skipping bundle: %s", exc)
    return sorted(found, key=lambda b: (b.family, b.name, b.version, str(b.path)))


def _bundle_folders(directories: tuple[str | Path, ...]) -> list[Path]:
    folders: list[Path] = []
    for directory in map(Path, directories):
        if (directory / BUNDLE_FILE).is_file():
            folders.append(directory)
        elif directory.is_dir():
            folders.extend(sorted(p.parent for p in directory.glob(f"*/{BUNDLE_FILE}")))
    return folders
