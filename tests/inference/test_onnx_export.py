"""The exported toy UNet: ONNX Runtime (CPU) reproduces torch, with a dynamic batch axis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from inference.bundle import load_bundle
from inference.runtime import CPU, create_session


def test_onnx_matches_torch(toy_unet_bundle: tuple[Path, torch.nn.Module],
                            rng: np.random.Generator) -> None:
    folder, model = toy_unet_bundle
    bundle = load_bundle(folder)
    session = create_session(bundle.model_file, providers=[CPU], threads=1)
    assert model.training  # export_to_onnx put back the mode the model had
    patch = rng.normal(size=(3, 2, *bundle.patch_size)).astype(np.float32)  # batch of 3
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(patch)).numpy()
    got = session.run(patch)
    assert got.shape == (3, 3, *bundle.patch_size)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_serving_modules_import_no_torch() -> None:
    """Serving must run where torch is absent: importing it must not pull torch in."""
    code = ("import sys, inference.bundle, inference.runtime, inference.sliding_window, "
            "inference.segmentation, inference.measurements; "
            "bad = [m for m in ('torch', 'monai', 'dicom_io', 'export', 'plugin') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
