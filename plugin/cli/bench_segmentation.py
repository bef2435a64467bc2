"""Segmentation step against the MONAI reference, same network, same input, same run.

The reference is how the bundle's network is usually served in research code: the MONAI
UNet in torch eager mode under ``monai.inferers.sliding_window_inference`` (Gaussian
blending, overlap 0.25, one window per batch: the settings Hepatica serves with), on the
very model-grid input Hepatica prepares, with the bundle's weights loaded from its ONNX file
(parity checked). Hepatica's figure is the whole ``segment()`` call (preparation, network,
resampling back, post-processing); the reference's is its network and windows only, so the
ratio is conservative. Figures are also given as ratios to the reference workload of
:func:`plugin.cli.bench.reference_seconds`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dicom_io.roi import image_series
from dicom_io.selection import label_all
from dicom_io.series import load_study
from dicom_io.synthetic import make_phantom, write_phantom_study
from dicom_io.volume import resample_like
from inference.bundle import Bundle
from inference.preprocess import prepare_channels
from inference.runtime import create_session
from inference.segmentation import segment
from plugin.cli.bench import reference_seconds
from plugin.cli.bench_e2e import machine
from plugin.pipeline.models import segmentation_bundles
from plugin.pipeline.select import choose_segmentation

Progress = Callable[[str], None]
PARITY_LIMIT = 1e-3
"""Largest |torch − ONNX| logit on one window for the reference to count as the same net."""


def study_channels(study: Path) -> tuple[Bundle, list[npt.NDArray[np.float32]],
                                         tuple[float, float, float]]:
    """The bundle the pipeline chooses and its channels on the reference grid, as served."""
    labelled = label_all(image_series(load_study(study)))
    inputs = choose_segmentation(labelled, segmentation_bundles())
    reference = inputs.reference.volume
    channels = [resample_like(s.volume, reference).array for s in inputs.selected.values()]
    spacing = tuple(float(v) for v in reference.spacing)
    return inputs.bundle, channels, (spacing[0], spacing[1], spacing[2])


def torch_network(bundle: Bundle) -> Any:
    """The bundle's MONAI UNet in torch with the weights of its ONNX file.

    The ONNX initialisers keep the torch parameter names; PReLU slopes (exported as
    anonymous ``onnx::PRelu_N``) are taken in graph order, which is the module order.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    from inference.training.segmentation import SegmentationTrainingConfig, build_network

    graph = onnx.load(str(bundle.model_file)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    config = json.loads((bundle.path / "training.json").read_text())["config"]
    settings = SegmentationTrainingConfig(channels=tuple(config["channels"]),
                                          strides=tuple(config["strides"]),
                                          num_res_units=int(config["num_res_units"]),
                                          classes=tuple(config["classes"]))
    net = build_network(len(bundle.inputs.phases), settings)
    state = net.state_dict()
    slopes = sorted((k for k in weights if k.startswith("onnx::PRelu")),
                    key=lambda k: int(k.rsplit("_", 1)[1]))
    slope_keys = [k for k in state if k.endswith("adn.A.weight")]
    if len(slopes) != len(slope_keys):
        raise ValueError(f"{len(slopes)} PReLU slopes in the ONNX file, {len(slope_keys)} in "
                         "the network")
    loaded = {k: torch.from_numpy(weights[k].copy()) for k in state if k in weights}
    loaded.update({k: torch.from_numpy(weights[s].reshape(state[k].shape).copy())
                   for k, s in zip(slope_keys, slopes, strict=True)})
    net.load_state_dict(loaded, strict=True)
    return net.eval()


def _parity(net: Any, session: Any, bundle: Bundle, x: npt.NDArray[np.float32]) -> float:
    import torch

    z, y, w = bundle.patch_size
    tile = np.ascontiguousarray(x[None, :, :z, :y, :w])
    with torch.no_grad():
        ours = net(torch.from_numpy(tile)).numpy()
    return float(np.abs(ours - session.run(tile)).max())


def _monai_seconds(net: Any, bundle: Bundle, x: npt.NDArray[np.float32]
                   ) -> tuple[float, npt.NDArray[np.int64]]:
    import torch
    from monai.inferers.utils import sliding_window_inference

    started = time.perf_counter()
    with torch.no_grad():
        logits = sliding_window_inference(
            torch.from_numpy(x[None]), roi_size=tuple(bundle.patch_size), sw_batch_size=1,
            predictor=net, overlap=0.25, mode="gaussian")
    seconds = time.perf_counter() - started
    assert isinstance(logits, torch.Tensor)
    return seconds, logits[0].argmax(0).numpy()


def bench_segmentation(runs: int = 3, reference_runs: int = 1, seed: int = 7,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Medians of Hepatica's ``segment()`` and of the MONAI reference on one phantom."""
    import torch

    workload = reference_seconds()
    with tempfile.TemporaryDirectory(prefix="hepatica-bench-seg-") as tmp:
        write_phantom_study(make_phantom(seed), Path(tmp))
        bundle, channels, spacing = study_channels(Path(tmp) / "dicom")
    session = create_session(bundle.model_file)
    segment(bundle, session, channels, spacing)  # warm: session, first-call allocations
    ours: list[dict[str, float]] = []
    region = None
    for run in range(runs):
        if progress:
            progress(f"hepatica segment() {run + 1}/{runs}")
        result = segment(bundle, session, channels, spacing)
        ours.append(dict(result.timings))
        region = result.region_zyx
    if progress:
        progress("hepatica segment(coarse_to_fine=False)")
    whole = segment(bundle, session, channels, spacing, coarse_to_fine=False)
    agreement = _dice(whole.labels == 2, result.labels == 2)
    x = prepare_channels(channels, spacing, bundle.spacing_mm)
    net = torch_network(bundle)
    parity = _parity(net, session, bundle, x)
    if parity > PARITY_LIMIT:
        raise ValueError(f"torch and ONNX disagree by {parity} on one window: not the same "
                         "network")
    monai: list[float] = []
    labels = None
    for run in range(reference_runs):
        if progress:
            progress(f"MONAI sliding_window_inference {run + 1}/{reference_runs}")
        seconds, labels = _monai_seconds(net, bundle, x)
        monai.append(seconds)
    steps = {k: statistics.median(t[k] for t in ours) for k in ours[0]}
    reference = statistics.median(monai)
    return {
        "mode": "segmentation", "seed": seed, "runs": runs, "reference_runs": reference_runs,
        "input_shape_zyx": list(channels[0].shape), "model_grid_zyx": list(x.shape[1:]),
        "region_zyx": [list(r) for r in region] if region else None,
        "hepatica_median_seconds": steps,
        "hepatica_whole_volume_seconds": dict(whole.timings),
        "tumour_dice_coarse_to_fine_vs_whole_volume": agreement,
        "monai_reference_seconds": reference,
        "speedup_total_vs_monai": reference / steps["total"],
        "speedup_network_vs_monai": reference / steps["predict"],
        "pre_post_seconds": steps["prepare"] + steps["resample"] + steps["postprocess"],
        "pre_post_less_than_network": (steps["prepare"] + steps["resample"]
                                       + steps["postprocess"]) < steps["predict"],
        "torch_onnx_parity_max_abs": parity,
        "monai_tumour_voxels_model_grid": int((labels == 2).sum()) if labels is not None
        else None,
        "reference_workload_seconds": workload,
        "total_x_reference_workload": steps["total"] / workload,
        "monai_x_reference_workload": reference / workload,
        "torch_threads": torch.get_num_threads(),
        "providers": list(session.providers),
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def write_segmentation_result(report: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"segmentation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    return path
