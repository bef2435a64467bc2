"""Fixtures for the inference room: bundle folders and tiny ONNX models written in tmp."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import write_bundle_toml, write_scale_model

from inference.runtime import clear_session_cache


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "toy"
    write_scale_model(folder / "model.onnx")
    write_bundle_toml(folder)
    return folder


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "toy", **kwargs: object) -> Path:
        folder = tmp_path / name
        write_scale_model(folder / "model.onnx")
        write_bundle_toml(folder, **kwargs)  # type: ignore[arg-type]
        return folder
    return make


@pytest.fixture(autouse=True)
def _fresh_sessions() -> None:
    clear_session_cache()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def toy_unet_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A random-weight MONAI UNet exported with the project's helper, plus its bundle.toml.

    Session-scoped: exporting costs a second or two, and several tests read the same model.
    torch is imported here, not at module level, so tests that need no model stay light.
    """
    import torch
    from monai.networks.nets import UNet

    from inference.training.onnx_export import export_to_onnx

    torch.manual_seed(0)
    model = UNet(spatial_dims=3, in_channels=2, out_channels=3, channels=(4, 8), strides=(2,),
                 num_res_units=0)
    folder = tmp_path_factory.mktemp("toy-unet")
    with warnings.catch_warnings():  # tracer notes on MONAI's shape checks: benign here
        warnings.simplefilter("ignore")
        export_to_onnx(model, in_channels=2, patch_size=(8, 16, 16),
                       path=folder / "model.onnx")
    write_bundle_toml(folder, spacing=(2.0, 2.0, 3.0), patch=(8, 16, 16), activation="logits")
    return folder, model
