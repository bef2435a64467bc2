"""Build a tiny nnU-Net v2 model folder with nnU-Net's own code (run as a script, in a subprocess).

Writes a small synthetic dataset in nnU-Net raw format, runs nnU-Net's fingerprint extraction,
experiment planning (a planner subclass with few features, so the network is tiny) and
preprocessing, builds the network from the plans through ``nnUNetTrainer.initialize`` with its
random initialisation, and saves ``checkpoint_final.pth`` with the trainer's own
``save_checkpoint``: the folder has the layout ``nnUNetv2_train`` leaves behind, with
untrained weights. A subprocess because nnU-Net reads its folders from environment variables
and starts worker pools (forked here), which needs a guarded ``__main__``.

Usage: ``python nnunet_tiny.py SPEC.json``; the spec (or each of a list of specs) holds
``root``, ``dataset_id``, ``channels`` (names, e.g. ``["CT"]``), ``spacing_xyz``,
``shape_zyx``, ``cases``, ``folds``, ``zero_rows`` (rows of every image set to exactly 0) and
``suppress_transpose``; prints each model folder on a line of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

LABELS = {"background": 0, "liver": 1, "liver_tumor": 2}


def write_raw_dataset(root: Path, name: str, spec: dict[str, Any]) -> None:
    """Ellipsoid 'livers' with a darker 'tumour' in noise; one file per channel (_0000, ...)."""
    folder = root / "raw" / name
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    shape = tuple(spec["shape_zyx"])
    for case in range(int(spec["cases"])):
        zz, yy, xx = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape],
                                 indexing="ij")
        centre = [s / 2 + rng.uniform(-1, 1) for s in shape]
        radii = [s / 3 for s in shape]
        liver = sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), centre, radii,
                                                          strict=True)) < 1
        tumour = sum(((g - c) / (r / 2.5)) ** 2 for g, c, r in zip(
            (zz, yy, xx), centre, radii, strict=True)) < 1
        label = liver.astype(np.uint8)
        label[tumour] = 2
        _write(label, folder / "labelsTr" / f"case{case:03d}.nii.gz", spec["spacing_xyz"])
        for index, channel in enumerate(spec["channels"]):
            base = 100.0 if channel.upper() == "CT" else 400.0
            image = np.where(liver, base, base * -0.5) + np.where(tumour, -0.4 * base, 0.0)
            image = image + rng.normal(0, base / 5, shape)
            rows = int(spec.get("zero_rows", 0))
            if rows:  # air outside the body stored as exactly 0 (nnU-Net crops it off)
                image[:, :rows] = 0.0
            _write(image.astype(np.float32),
                   folder / "imagesTr" / f"case{case:03d}_{index:04d}.nii.gz", spec["spacing_xyz"])
    dataset = {"channel_names": {str(i): c for i, c in enumerate(spec["channels"])},
               "labels": LABELS, "numTraining": int(spec["cases"]), "file_ending": ".nii.gz",
               "name": name}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))


def _write(array: np.ndarray, path: Path, spacing_xyz: list[float]) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing_xyz])
    sitk.WriteImage(image, str(path))


def build(spec: dict[str, Any]) -> Path:
    root = Path(spec["root"])
    for sub in ("raw", "preprocessed", "results"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # nnU-Net's own variable names (it reads them when it needs a folder)
    os.environ["nnUNet_raw"] = str(root / "raw")  # noqa: SIM112
    os.environ["nnUNet_preprocessed"] = str(root / "preprocessed")  # noqa: SIM112
    os.environ["nnUNet_results"] = str(root / "results")  # noqa: SIM112
    dataset_id = int(spec["dataset_id"])
    name = f"Dataset{dataset_id:03d}_HepTiny"
    write_raw_dataset(root, name, spec)

    import multiprocessing

    import torch

    # nnU-Net starts its worker pools with "spawn" (each worker re-imports torch and nnU-Net,
    # seconds apiece); forking this process gives the same workers at once on Linux
    spawn_context = multiprocessing.get_context
    multiprocessing.get_context = lambda method=None: spawn_context(  # type: ignore[assignment]
        "fork" if sys.platform.startswith("linux") else method)
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
    )
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.run.run_training import get_trainer_from_args

    class TinyPlanner(ExperimentPlanner):  # type: ignore[misc]
        """nnU-Net's planner with 4 base features (max 16): a network that runs in ms."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.UNet_base_num_features = 4
            self.UNet_max_features_3d = 16

    extract_fingerprint_dataset(dataset_id, num_processes=1, verbose=False,
                                show_progress_bar=False)
    TinyPlanner(dataset_id, suppress_transpose=bool(spec.get("suppress_transpose"))
                ).plan_experiment()
    preprocessor = DefaultPreprocessor(verbose=False)
    preprocessor.show_progress_bar = False
    preprocessor.run(dataset_id, "3d_fullres", "nnUNetPlans", num_processes=1)
    shutil.copy(root / "raw" / name / "dataset.json",
                root / "preprocessed" / name / "dataset.json")

    folder: Path | None = None
    for fold in range(int(spec.get("folds", 1))):
        torch.manual_seed(100 + fold)
        trainer = get_trainer_from_args(name, "3d_fullres", fold,
                                        device=torch.device("cpu"))
        trainer.initialize()
        # what training does before its first epoch; sets the test-time mirroring axes
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        Path(trainer.output_folder).mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
        folder = Path(trainer.output_folder_base)
        # what nnUNetTrainer.on_train_start leaves next to the folds
        shutil.copy(root / "preprocessed" / name / "nnUNetPlans.json", folder / "plans.json")
        shutil.copy(root / "preprocessed" / name / "dataset.json", folder / "dataset.json")
        shutil.copy(root / "preprocessed" / name / "dataset_fingerprint.json",
                    folder / "dataset_fingerprint.json")
    assert folder is not None
    return folder


if __name__ == "__main__":
    specs = json.loads(Path(sys.argv[1]).read_text())
    for one in specs if isinstance(specs, list) else [specs]:  # one interpreter for all
        print(build(one), flush=True)
