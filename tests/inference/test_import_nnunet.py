"""Importing nnU-Net v2 models: Hepatica serves the probabilities ``nnUNetPredictor`` computes.

The model folders are made by nnU-Net's own code (``nnunet_tiny.py``: fingerprint, planning,
preprocessing, trainer initialisation and checkpoint) with randomly initialised, tiny networks;
nothing is downloaded. Two folders cover the paths that matter: an anisotropic one-channel CT
model with two folds (separate-z resampling, fold averaging) and a two-channel CT + MR model
whose plans transpose the axes, crop a zero border and z-score the MR channel inside the mask.

nnU-Net blends its window logits in half precision, so any float32 difference in the network
(ONNX Runtime vs torch, ~1e-6 here) can flip a half-precision rounding and move a few voxels'
probabilities by up to ~1e-3. The tests therefore check the serving pipeline exactly with
nnU-Net's own torch networks behind the session (≤ 1e-6), and the ONNX-served result for
≥ 99.9 % of voxels within 1e-4, with its maximum reported and bounded.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.bundle import BundleError, load_bundle
from inference.imported import probabilities
from inference.importers.common import ImportRefused
from inference.nnunet_resampling import Resampling, resample_to_shape
from inference.nnunet_serving import gaussian_weights, window_steps
from inference.runtime import create_session
from inference.segmentation import segment

nnunetv2 = pytest.importorskip("nnunetv2")
torch = pytest.importorskip("torch")

BUILDER = Path(__file__).with_name("nnunet_tiny.py")
SPECS = {
    "ct": {"dataset_id": 971, "channels": ["CT"], "spacing_xyz": [0.9, 0.9, 3.5],
           "shape_zyx": [10, 28, 26], "cases": 3, "folds": 2},
    "ct_mr": {"dataset_id": 972, "channels": ["CT", "T2"], "spacing_xyz": [1.6, 1.0, 1.2],
              "shape_zyx": [14, 26, 18], "cases": 3, "folds": 1, "zero_rows": 10},
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both nnU-Net model folders, built by one subprocess (one torch import for both)."""
    root = tmp_path_factory.mktemp("nnunet")
    spec_file = root / "specs.json"
    spec_file.write_text(json.dumps([{**spec, "root": str(root / name)}
                                     for name, spec in SPECS.items()]))
    run = subprocess.run([sys.executable, str(BUILDER), str(spec_file)], capture_output=True,
                         text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    folders = [Path(line) for line in run.stdout.splitlines() if line.startswith("/")]
    return dict(zip(SPECS, folders[-len(SPECS):], strict=True))


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """torch's tiny 3-D convolutions slow down ~30x when their threads share busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _predictor(model_dir: Path, folds: tuple[int, ...], mirroring: bool = True) -> Any:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=folds)
    return predictor


def _reference(predictor: Any, volumes: list[np.ndarray],
               spacing_xyz: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net's own segmentation and probabilities for [z, y, x] volumes (SimpleITK order)."""
    seg, prob = predictor.predict_single_npy_array(
        np.stack(volumes).astype(np.float32), {"spacing": list(spacing_xyz[::-1])}, None, None,
        True)
    return np.asarray(seg), np.asarray(prob)


class TorchNetworks:
    """A Session backed by nnU-Net's own torch networks (one per fold, outputs stacked as the
    exported ONNX model stacks them): isolates Hepatica's numpy pipeline from ONNX Runtime."""

    providers = ("torch",)

    def __init__(self, predictor: Any) -> None:
        self.networks = []
        for parameters in predictor.list_of_parameters:
            network = copy.deepcopy(predictor.network)
            network.load_state_dict(parameters)
            self.networks.append(network.eval())

    def run(self, x: np.ndarray) -> np.ndarray:
        outputs = []
        with torch.no_grad():
            for sample in x:  # nnU-Net runs one patch at a time
                tensor = torch.from_numpy(np.ascontiguousarray(sample[None]))
                outputs.append(torch.cat([n(tensor) for n in self.networks], dim=1).numpy())
        return np.concatenate(outputs)


def _served(bundle: Any, channels: Any, spacing: tuple[float, float, float]) -> np.ndarray:
    """What ``segment()``, the normal serving entry point, returns for the three classes
    (background = 1 - liver - tumour: the model's classes are exactly these three)."""
    session = create_session(bundle.model_file, providers=["CPUExecutionProvider"], threads=1)
    result = segment(bundle, session, channels, spacing)
    liver, tumour = result.liver_probability, result.tumour_probability
    return np.stack([1.0 - liver - tumour, liver, tumour])


def _report(name: str, served: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    diff = np.abs(served - reference).max(axis=0)
    numbers = {"max_abs_diff": float(diff.max()),
               "share_within_1e-4": float(np.mean(diff <= 1e-4)),
               "p99_9_abs_diff": float(np.quantile(diff, 0.999))}
    print(f"\n{name}: {numbers}")
    return numbers


@pytest.mark.slow
def test_served_probabilities_match_nnunet_predictor_two_folds(model_dirs: dict[str, Path],
                                                               tmp_path: Path) -> None:
    folder = model_dirs["ct"]
    bundle = load_bundle(folder_to_bundle(folder, tmp_path / "bundle",
                                          labels="liver=liver,tumour=liver_tumor"))
    assert bundle.kind == "nnunet" and bundle.framework.folds == 2
    assert bundle.framework.mirror_axes == (0, 1, 2)  # from the checkpoint, as nnU-Net reads it
    rng = np.random.default_rng(1)
    volume = rng.normal(90, 40, (12, 36, 32)).astype(np.float32)
    spacing = (1.2, 1.1, 4.0)  # anisotropic: nnU-Net resamples z on its own
    predictor = _predictor(folder, (0, 1))
    seg, reference = _reference(predictor, [volume], spacing)

    exact = probabilities(bundle, TorchNetworks(predictor), [volume], spacing)
    assert _report("nnU-Net 2 folds, torch networks", exact, reference)["max_abs_diff"] <= 1e-6

    served = _served(bundle, [volume], spacing)
    numbers = _report("nnU-Net 2 folds, ONNX served", served, reference)
    assert numbers["share_within_1e-4"] >= 0.999
    assert numbers["max_abs_diff"] <= 2e-3  # a half-precision rounding step, no more
    assert np.mean(np.argmax(served, axis=0) == seg) >= 0.999


@pytest.mark.slow
def test_transposed_two_channel_model_with_masked_zscore_and_crop(model_dirs: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    folder = model_dirs["ct_mr"]
    bundle = load_bundle(folder_to_bundle(folder, tmp_path / "bundle", phases=["AP", "PVP"]))
    settings = bundle.framework
    assert settings.transpose_forward != (0, 1, 2)
    assert [c.scheme for c in settings.channels] == ["CTNormalization", "ZScoreNormalization"]
    assert settings.channels[1].use_mask
    assert bundle.channels_of("tumour") == ("liver_tumor",)  # found without --labels
    rng = np.random.default_rng(2)
    volumes = [rng.normal(m, m / 3, (16, 30, 22)).astype(np.float32) for m in (90.0, 400.0)]
    for volume in volumes:
        volume[:, :9] = 0.0  # air stored as 0: nnU-Net crops it off and masks the z-score
    spacing = (1.5, 1.1, 1.3)
    predictor = _predictor(folder, (0,))
    seg, reference = _reference(predictor, volumes, spacing)

    exact = probabilities(bundle, TorchNetworks(predictor), volumes, spacing)
    assert _report("nnU-Net CT+MR, torch networks", exact, reference)["max_abs_diff"] <= 1e-6

    served = _served(bundle, {"PVP": volumes[1], "AP": volumes[0]}, spacing)
    numbers = _report("nnU-Net CT+MR, ONNX served", served, reference)
    assert numbers["share_within_1e-4"] >= 0.999
    assert numbers["max_abs_diff"] <= 2e-3
    assert np.mean(np.argmax(served, axis=0) == seg) >= 0.999
    np.testing.assert_array_equal(served[1:, :, :9], 0.0)  # cropped off: background, as nnU-Net


@pytest.mark.slow
def test_orientation_and_options_reach_the_served_model(model_dirs: dict[str, Path],
                                                        tmp_path: Path) -> None:
    """``orientation = "RAS"`` shows the model the volume as TotalSegmentator does (flipped
    x and y for an axial DICOM volume) and brings the result back; one fold, no mirroring."""
    folder = model_dirs["ct"]
    bundle = load_bundle(folder_to_bundle(folder, tmp_path / "bundle", folds=[1],
                                          orientation="RAS", mirroring=False))
    assert bundle.orientation == "RAS" and bundle.framework.mirror_axes == ()
    volume = np.random.default_rng(3).normal(90, 40, (12, 34, 30)).astype(np.float32)
    spacing = (1.0, 0.8, 3.0)
    predictor = _predictor(folder, (1,), mirroring=False)
    _, reference = _reference(predictor, [np.ascontiguousarray(volume[:, ::-1, ::-1])], spacing)
    exact = probabilities(bundle, TorchNetworks(predictor), [volume], spacing,
                          direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    back = reference[:, :, ::-1, ::-1]
    assert _report("nnU-Net RAS, fold 1, torch networks", exact, back)["max_abs_diff"] <= 1e-6
    with pytest.raises(ValueError, match="direction"):
        probabilities(bundle, TorchNetworks(predictor), [volume], spacing)


def folder_to_bundle(folder: Path, out: Path, **options: Any) -> Path:
    from inference.importers.nnunet import import_nnunet

    return import_nnunet(folder, out, **options)


@pytest.mark.slow
def test_import_refuses_what_it_cannot_reproduce(model_dirs: dict[str, Path],
                                                 tmp_path: Path) -> None:
    from inference.importers.nnunet import import_nnunet

    folder = model_dirs["ct"]
    with pytest.raises(ImportRefused, match="no label"):
        import_nnunet(folder, tmp_path / "a", labels="liver=liver,tumour=lesion")
    with pytest.raises(ImportRefused, match="fold '7'"):
        import_nnunet(folder, tmp_path / "b", folds=[7])
    with pytest.raises(ImportRefused, match="2 channels"):
        import_nnunet(model_dirs["ct_mr"], tmp_path / "c")

    def altered(name: str, change: Any) -> Path:
        copy_dir = tmp_path / name
        shutil.copytree(folder, copy_dir)
        for file in ("plans.json", "dataset.json"):
            data = json.loads((copy_dir / file).read_text())
            change(file, data)
            (copy_dir / file).write_text(json.dumps(data))
        return copy_dir

    def regions(file: str, data: dict[str, Any]) -> None:
        if file == "dataset.json":
            data["labels"] = {"background": 0, "liver": [1, 2], "liver_tumor": 2}
            data["regions_class_order"] = [1, 2]

    def zscore_variant(file: str, data: dict[str, Any]) -> None:
        if file == "plans.json":
            data["configurations"]["3d_fullres"]["normalization_schemes"] = ["MyNorm"]

    def cascade(file: str, data: dict[str, Any]) -> None:
        if file == "plans.json":
            data["configurations"]["3d_fullres"]["previous_stage"] = "3d_lowres"

    for name, change, message in (("regions", regions, "region-based"),
                                  ("norm", zscore_variant, "MyNorm"),
                                  ("cascade", cascade, "cascade")):
        with pytest.raises(ImportRefused, match=message):
            import_nnunet(altered(name, change), tmp_path / f"out-{name}")


def test_a_bad_nnunet_key_is_named_when_the_bundle_loads(tmp_path: Path) -> None:
    from inference_helpers import write_scale_model

    from inference.importers.common import toml_text

    folder = tmp_path / "b"
    write_scale_model(folder / "model.onnx")
    document: dict[str, Any] = {
        "name": "x", "version": "1", "family": "segmentation", "intended_use": "tests",
        "inputs": {"phases": ["PVP"]},
        "preprocessing": {"kind": "nnunet", "spacing_mm": [1.0, 1.0, 1.0],
                          "normalisation": "nnunet", "patch_size": [8, 8, 8]},
        "outputs": {"labels": ["background", "liver", "tumour"]},
        "nnunet": {"spacing": [1.0, 1.0, 1.0], "patch_size": [8, 8, 8], "num_classes": 3,
                   "step_size": 1.5, "channels": [{"scheme": "ZScoreNormalization"}]},
    }
    (folder / "bundle.toml").write_text(toml_text(document))
    with pytest.raises(BundleError, match=r"nnunet\.step_size"):
        load_bundle(folder)
    document["nnunet"]["step_size"] = 0.5
    document["nnunet"]["num_classes"] = 4
    (folder / "bundle.toml").write_text(toml_text(document))
    with pytest.raises(BundleError, match=r"nnunet\.num_classes"):
        load_bundle(folder)
    document["nnunet"]["num_classes"] = 3
    document["outputs"]["map"] = {"tumour": ["lesion"]}
    (folder / "bundle.toml").write_text(toml_text(document))
    with pytest.raises(BundleError, match=r"outputs\.map\.tumour"):
        load_bundle(folder)
    del document["outputs"]["map"]
    (folder / "bundle.toml").write_text(toml_text(document))
    assert load_bundle(folder).framework.step_size == 0.5


# ----------------------------------------------- the building blocks, against nnU-Net's own


@pytest.mark.parametrize(("shape", "current", "new", "target", "order", "order_z", "dtype"), [
    ((1, 10, 28, 26), (3.5, 0.9, 0.9), (4.0, 1.1, 1.2), (9, 23, 20), 3, 0, np.float32),
    ((3, 9, 23, 20), (4.0, 1.1, 1.2), (3.5, 0.9, 0.9), (10, 28, 26), 1, 0, np.float16),
    ((2, 12, 14, 16), (1.0, 1.2, 1.1), (1.5, 1.0, 1.0), (8, 17, 18), 3, 0, np.float32),
    ((1, 12, 14, 16), (5.0, 1.2, 1.1), (1.5, 1.0, 1.0), (40, 17, 18), 3, 1, np.float32),
    ((1, 12, 14, 16), (5.0, 1.2, 1.1), (1.5, 1.0, 1.0), (40, 17, 18), 3, 3, np.float32),
])
def test_resampling_equals_nnunets(shape: tuple[int, ...], current: tuple[float, ...],
                                   new: tuple[float, ...], target: tuple[int, ...], order: int,
                                   order_z: int, dtype: type) -> None:
    from nnunetv2.preprocessing.resampling.default_resampling import (
        resample_data_or_seg_to_shape,
    )

    data = np.random.default_rng(0).normal(0, 3, shape).astype(dtype)
    expected = resample_data_or_seg_to_shape(data, target, current, new, is_seg=False,
                                             order=order, order_z=order_z,
                                             force_separate_z=None)
    got = resample_to_shape(data, target, current, new, Resampling(order, order_z, None))
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("tile", [(10, 28, 26), (7, 13, 33), (16, 16, 16)])
def test_window_steps_and_gaussian_equal_nnunets(tile: tuple[int, int, int]) -> None:
    from nnunetv2.inference.sliding_window_prediction import (
        compute_gaussian,
        compute_steps_for_sliding_window,
    )

    for image in ((tile[0] * 3 + 1, tile[1] + 5, tile[2]), tile, (40, 61, 35)):
        image = tuple(max(i, t) for i, t in zip(image, tile, strict=True))
        for step in (0.5, 0.3, 1.0):
            assert window_steps(image, tile, step) == compute_steps_for_sliding_window(
                image, tile, step)
    expected = compute_gaussian(tile, 1 / 8, 10, torch.float16, torch.device("cpu")).numpy()
    np.testing.assert_array_equal(gaussian_weights(tile), expected)
