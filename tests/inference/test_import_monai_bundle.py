"""Importing MONAI bundles: Hepatica serves the probabilities ``monai.bundle`` computes.

Each test writes a small model-zoo style bundle (``configs/inference.json`` with a
``SupervisedEvaluator``, ``configs/metadata.json``, ``models/model.pt`` of a randomly
initialised 2-level UNet) and a NIfTI image, runs the bundle with ``monai.bundle``'s own
``ConfigWorkflow``, imports it with ``import_monai_bundle`` and serves the same image with
Hepatica (SimpleITK's array, spacing and direction of the same file, as a DICOM series gives).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from inference.bundle import load_bundle
from inference.imported import probabilities
from inference.importers.common import ImportRefused
from inference.runtime import create_session
from inference.segmentation import segment

torch = pytest.importorskip("torch")
pytest.importorskip("monai.bundle")
pytest.importorskip("ignite")  # MONAI's evaluator runs on pytorch-ignite

PREPROCESSING: list[dict[str, Any]] = [
    {"_target_": "LoadImaged", "keys": "image"},
    {"_target_": "EnsureChannelFirstd", "keys": "image"},
    {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
    {"_target_": "Spacingd", "keys": "image", "pixdim": "@pixdim", "mode": "bilinear"},
    {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 240,
     "b_min": 0.0, "b_max": 1.0, "clip": True},
    {"_target_": "CropForegroundd", "keys": "image", "source_key": "image", "margin": 2},
    {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True},
    {"_target_": "EnsureTyped", "keys": "image"},
]
POSTPROCESSING: list[dict[str, Any]] = [
    {"_target_": "Activationsd", "keys": "pred", "softmax": True},
    {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
     "meta_key_postfix": "meta_dict", "nearest_interp": False, "to_tensor": True},
    {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
     "output_postfix": "prob", "output_dtype": "$np.float32", "separate_folder": False,
     "resample": False},
]
NETWORK = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
           "channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "batch"}


def write_bundle(root: Path, preprocessing: list[dict[str, Any]] | None = None,
                 postprocessing: list[dict[str, Any]] | None = None,
                 inferer: dict[str, Any] | None = None) -> Path:
    """A zoo-style bundle with random weights; batch-norm statistics made non-trivial."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    config = {
        "imports": ["$import glob", "$import numpy as np", "$import torch"],
        "bundle_root": ".", "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/nonexistent", "pixdim": [1.5, 1.5, 2.0],
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cpu')",
        "network_def": NETWORK, "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose",
                          "transforms": PREPROCESSING if preprocessing is None
                          else preprocessing},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1,
                       "shuffle": False, "num_workers": 0},
        "inferer": inferer or {"_target_": "SlidingWindowInferer", "roi_size": [24, 24, 16],
                               "sw_batch_size": 2, "overlap": 0.5, "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose",
                           "transforms": POSTPROCESSING if postprocessing is None
                           else postprocessing},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device",
                      "val_data_loader": "@dataloader", "network": "@network",
                      "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "amp": False},
        "checkpointloader": {"_target_": "CheckpointLoader",
                             "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network"}},
        "initialize": ["$monai.utils.set_determinism(seed=0)", "$@checkpointloader(@evaluator)"],
        "run": ["$@evaluator.run()"],
    }
    (root / "configs" / "inference.json").write_text(json.dumps(config, indent=1))
    metadata = {"version": "0.1.0", "name": "Tiny liver CT", "license": "Apache-2.0",
                "network_data_format": {
                    "inputs": {"image": {"type": "image", "num_channels": 1}},
                    "outputs": {"pred": {"type": "image", "num_channels": 3, "channel_def": {
                        "0": "background", "1": "liver", "2": "tumor"}}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=1))
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    network = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8),
                   strides=(2,), num_res_units=1, norm="batch")
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


def write_image(folder: Path, direction: tuple[float, ...]) -> Path:
    """A noisy CT-like volume with air (-1000 HU) along two sides: cropped by the bundle."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    array = rng.normal(60, 50, (18, 40, 34)).astype(np.float32)
    array[:, :8] = -1000.0
    array[:, :, -6:] = -1000.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.3, 1.1, 2.5))
    image.SetOrigin((10.0, -20.0, 5.0))
    image.SetDirection(direction)
    path = folder / "case.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def run_monai(root: Path, data: Path) -> np.ndarray:
    """The bundle's own inference (``monai.bundle``), probabilities as ``[C, z, y, x]``."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=str(root / "configs" / "inference.json"),
                              meta_file=str(root / "configs" / "metadata.json"),
                              workflow_type="infer", bundle_root=str(root),
                              dataset_dir=str(data), output_dir=str(root / "eval"))
    workflow.initialize()
    workflow.run()
    prediction = np.asarray(workflow.evaluator.state.output[0]["pred"])  # [C, x, y, z]
    workflow.finalize()
    return np.ascontiguousarray(prediction.transpose(0, 3, 2, 1))


def served(bundle_dir: Path, image_path: Path) -> tuple[np.ndarray, Any, Any]:
    image = sitk.ReadImage(str(image_path))
    array = sitk.GetArrayFromImage(image)
    bundle = load_bundle(bundle_dir)
    session = create_session(bundle.model_file, providers=["CPUExecutionProvider"], threads=1)
    probs = probabilities(bundle, session, [array], image.GetSpacing(), image.GetDirection())
    result = segment(bundle, session, [array], image.GetSpacing(),
                     direction=image.GetDirection())
    return probs, result, bundle


def _report(name: str, got: np.ndarray, expected: np.ndarray) -> float:
    diff = float(np.abs(got - expected).max())
    print(f"\n{name}: max |diff| {diff:.3g}, labels equal on "
          f"{np.mean(got.argmax(0) == expected.argmax(0)):.5f}")
    return diff


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_served_probabilities_match_monai_bundle_inference(tmp_path: Path) -> None:
    """LPS → RAS flips, spacing, range scaling, a crop reaching outside the image (margin),
    non-zero normalisation, Gaussian windows; softmax before ``Invertd`` (bilinear)."""
    from inference.importers.monai_bundle import import_monai_bundle

    root = write_bundle(tmp_path / "bundle")
    image = write_image(tmp_path / "data", (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    expected = run_monai(root, image.parent)
    bundle_dir = import_monai_bundle(root, tmp_path / "hepatica")
    probs, result, bundle = served(bundle_dir, image)
    assert [s.op for s in bundle.framework.steps] == [
        "orientation", "spacing", "scale_intensity_range", "crop_foreground",
        "normalize_intensity"]
    assert bundle.channels_of("tumour") == ("tumor",)  # from metadata's channel_def
    assert probs.shape == expected.shape
    assert _report("MONAI bundle (softmax, then Invertd)", probs, expected) <= 1e-4
    assert np.mean(probs.argmax(0) == expected.argmax(0)) >= 0.999
    np.testing.assert_array_equal(result.liver_probability, probs[1])
    np.testing.assert_array_equal(result.tumour_probability, probs[2])


def test_oblique_order_and_invert_before_softmax(tmp_path: Path) -> None:
    """A volume whose axes are permuted (coronal-like direction), ``Invertd`` with MONAI's
    default nearest interpolation before ``Activationsd``, min-max scaling, constant
    windows, no crop."""
    from inference.importers.monai_bundle import import_monai_bundle

    preprocessing = [copy.deepcopy(t) for t in PREPROCESSING
                     if t["_target_"] not in ("CropForegroundd", "NormalizeIntensityd")]
    preprocessing.insert(-1, {"_target_": "ScaleIntensityd", "keys": "image"})
    postprocessing = [
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing",
         "orig_keys": "image"},
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]
    root = write_bundle(tmp_path / "bundle", preprocessing, postprocessing,
                        {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16],
                         "overlap": 0.25})
    image = write_image(tmp_path / "data", (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0))
    bundle_dir = import_monai_bundle(root, tmp_path / "hepatica")
    settings = load_bundle(bundle_dir).framework
    assert not settings.softmax_before_invert and settings.invert_nearest
    # monai.bundle's own run ends in argmax labels; compare probabilities on a copy without it
    no_argmax = write_bundle(tmp_path / "probs", preprocessing, postprocessing[:2],
                             {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16],
                              "overlap": 0.25})
    expected = run_monai(no_argmax, image.parent)
    labels = run_monai(root, image.parent)[0]
    probs, result, _ = served(bundle_dir, image)
    assert _report("MONAI bundle (Invertd nearest, then softmax)", probs, expected) <= 1e-4
    assert np.mean(probs.argmax(0) == labels) >= 0.999
    np.testing.assert_array_equal(result.liver_probability, probs[1])


@pytest.mark.parametrize(("change", "message"), [
    (lambda pre, post: pre.insert(3, {"_target_": "RandFlipd", "keys": "image", "prob": 0.5}),
     "RandFlipd"),
    (lambda pre, post: pre[3].update(mode=3), "mode"),
    (lambda pre, post: pre[5].update(select_fn="$lambda x: x > 0.5"), "select_fn"),
    (lambda pre, post: post.append({"_target_": "KeepLargestConnectedComponentd",
                                    "keys": "pred", "applied_labels": [1]}),
     "KeepLargestConnectedComponentd"),
    (lambda pre, post: post.insert(1, {"_target_": "AsDiscreted", "keys": "pred",
                                       "argmax": True}), "before Invertd"),
])
def test_transforms_it_cannot_reproduce_are_refused_by_name(
        tmp_path: Path, change: Any, message: str) -> None:
    from inference.importers.monai_bundle import import_monai_bundle

    pre, post = copy.deepcopy(PREPROCESSING), copy.deepcopy(POSTPROCESSING)
    change(pre, post)
    root = write_bundle(tmp_path / "bundle", pre, post)
    with pytest.raises(ImportRefused, match=message):
        import_monai_bundle(root, tmp_path / "hepatica")
    assert not (tmp_path / "hepatica" / "bundle.toml").exists()


def test_labels_may_name_channels_by_number_and_must_exist(tmp_path: Path) -> None:
    from inference.importers.monai_bundle import import_monai_bundle

    root = write_bundle(tmp_path / "bundle")
    bundle = load_bundle(import_monai_bundle(root, tmp_path / "a", labels="liver=1,tumour=2",
                                             name="site-liver", version="2.0"))
    assert (bundle.name, bundle.version) == ("site-liver", "2.0")
    assert bundle.channels_of("liver") == ("liver",)
    with pytest.raises(ImportRefused, match="no label"):
        import_monai_bundle(root, tmp_path / "b", labels="tumour=lesion")
