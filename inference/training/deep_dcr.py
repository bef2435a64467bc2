"""Seed 004: multi-sequence MRI + clinical variables → disease control (DCR), trained.

1. An Inception-style CNN (``deep_models.InceptionCam``) learns, per sequence, a deep score
   whose spatial decomposition is that sequence's CAM (cross-entropy, SGD lr 0.01 with
   momentum, learning rate ÷10 on a plateau, dropout 0.2 and L2, as the study; batch 16
   instead of 1, and far fewer epochs).
2. ``folds``-fold cross-fitting gives every training patient an out-of-fold deep score per
   sequence; the SVM is fitted on those and the clinical variables, so it learns how far to
   trust the CNN on patients the CNN has not seen. The served CNN is refitted on all rows.
3. The SVM (scaler + SVC, linear or RBF kernel chosen by CV ROC AUC, sigmoid-calibrated)
   is exported by skl2onnx and merged behind the CNN's ONNX graph: one ``model.onnx`` takes
   ``image`` + ``clinical`` and returns ``probability`` and ``explanation`` (the CAMs).

Deviation from the study, stated in the bundle: the SVM sees one deep score per sequence
(the global average of its CAM) rather than the full pooled feature vector, because feature
``k`` of one fold's network is not feature ``k`` of another's, while "the evidence sequence
``s`` gives" means the same in every fold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from inference.training.deep_common import (
    centre,
    export_graph,
    merge_graphs,
    predict_logits,
    train_binary,
)
from inference.training.deep_models import DcrFusion, InceptionCam

__all__ = ["DcrConfig", "DcrModel", "export_dcr", "fit_dcr", "onnx_parity", "svm_pipeline"]

Progress = Callable[[str, int, int], None]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DcrConfig:
    """Network size and schedule; defaults are the shipped (scaled-down) recipe."""

    width: int = 8
    features: int = 32
    epochs: int = 30
    lr: float = 0.01
    batch: int = 16
    folds: int = 5
    margin: int = 8
    seed: int = 0
    kernel: str = "auto"  # linear | rbf | auto (by CV ROC AUC)
    optimiser: str = "sgd"  # sgd (the study's, momentum 0.9) | adamw


@dataclass
class DcrModel:
    """The fitted CNN, the SVM, and what training measured."""

    cnn: InceptionCam
    svm: Pipeline
    log_columns: list[int]
    n_clinical: int
    metrics: dict[str, Any] = field(default_factory=dict)


def svm_pipeline(kernel: str, seed: int) -> Pipeline:
    """Scaler + SVC (Platt-calibrated by 5-fold CV, one refit)."""
    svc = SVC(kernel=kernel, C=1.0 if kernel == "rbf" else 0.1, random_state=seed)
    return Pipeline([("scale", StandardScaler()),
                     ("model", CalibratedClassifierCV(svc, method="sigmoid", cv=5,
                                                      ensemble=False))])


def _cnn(sequences: int, config: DcrConfig) -> InceptionCam:
    torch.manual_seed(config.seed)
    return InceptionCam(sequences, config.width, config.features)


def _sequence_scores(cnn: InceptionCam, x: FloatArray, margin: int) -> FloatArray:
    cnn.eval()
    with torch.no_grad():
        scores, _ = cnn.maps(torch.from_numpy(centre(x, margin)))
    return np.asarray(scores.numpy(), np.float32)


def _transform(clinical: FloatArray, log_columns: Sequence[int]) -> FloatArray:
    out = clinical.astype(np.float32).copy()
    for j in log_columns:
        out[:, j] = np.log1p(np.clip(out[:, j], 0.0, None))
    return out


def _auc(y: npt.NDArray[np.int_], score: npt.NDArray[np.floating]) -> float:
    return float(roc_auc_score(y, score)) if len(set(y.tolist())) == 2 else float("nan")


def fit_dcr(images: FloatArray, clinical: FloatArray, y: npt.NDArray[np.int_],
            log_columns: Sequence[int], config: DcrConfig = DcrConfig(),
            progress: Progress | None = None) -> DcrModel:
    """Cross-fitted deep scores → SVM; final CNN on all rows. ``images`` are margin-widened
    ``[N, S, 1, Y, X]``; ``clinical`` raw ``[N, F]``."""
    sequences = images.shape[1]
    folds = StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
    oof = np.zeros((len(y), sequences), np.float32)
    fold_aucs = []
    for k, (train, test) in enumerate(folds.split(images, y)):
        cnn = _cnn(sequences, config)
        train_binary(cnn, images[train], y[train], margin=config.margin, epochs=config.epochs,
                     lr=config.lr, batch=config.batch, seed=config.seed + k,
                     optimiser=config.optimiser, progress=progress,
                     label=f"CNN fold {k + 1}/{config.folds}")
        oof[test] = _sequence_scores(cnn, images[test], config.margin)
        fold_aucs.append(_auc(y[test], oof[test].sum(axis=1)))
    cnn = _cnn(sequences, config)
    history = train_binary(cnn, images, y, margin=config.margin, epochs=config.epochs,
                           lr=config.lr, batch=config.batch, seed=config.seed,
                           optimiser=config.optimiser, progress=progress,
                           label="CNN on all rows")
    fused = np.concatenate([oof, _transform(clinical, log_columns)], axis=1)
    kernel, cv = _choose_kernel(fused, y, config)
    svm = svm_pipeline(kernel, config.seed).fit(fused, y)
    threshold = _youden(y, _cv_probabilities(fused, y, kernel, config))
    metrics = {"cnn_oof_auc_folds": [round(a, 4) for a in fold_aucs],
               "cnn_oof_auc": round(_auc(y, oof.sum(axis=1)), 4),
               "cnn_final_loss": round(history[-1], 4), "svm_kernel": kernel,
               "threshold_youden_cv": round(threshold, 4),
               **{f"svm_cv_auc_{k}": round(v, 4) for k, v in cv.items()},
               "clinical_only_cv_auc": round(_cv_auc(_transform(clinical, log_columns), y,
                                                     kernel, config), 4)}
    return DcrModel(cnn, svm, list(log_columns), clinical.shape[1], metrics)


def _cv_probabilities(x: FloatArray, y: npt.NDArray[np.int_], kernel: str,
                      config: DcrConfig) -> npt.NDArray[np.float64]:
    folds = StratifiedKFold(5, shuffle=True, random_state=config.seed + 100)
    oof = np.zeros(len(y))
    for train, test in folds.split(x, y):
        oof[test] = svm_pipeline(kernel, config.seed).fit(x[train], y[train]).predict_proba(
            x[test])[:, 1]
    return oof


def _cv_auc(x: FloatArray, y: npt.NDArray[np.int_], kernel: str, config: DcrConfig) -> float:
    return _auc(y, _cv_probabilities(x, y, kernel, config))


def _youden(y: npt.NDArray[np.int_], p: npt.NDArray[np.float64]) -> float:
    """The probability threshold maximising sensitivity + specificity (0.5 if undefined)."""
    from sklearn.metrics import roc_curve
    if len(set(y.tolist())) < 2:
        return 0.5
    fpr, tpr, cuts = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))
    return float(min(max(cuts[best], 1e-6), 1 - 1e-6))


def _choose_kernel(x: FloatArray, y: npt.NDArray[np.int_], config: DcrConfig
                   ) -> tuple[str, dict[str, float]]:
    kernels = ["linear", "rbf"] if config.kernel == "auto" else [config.kernel]
    cv = {k: _cv_auc(x, y, k, config) for k in kernels}
    return max(cv, key=lambda k: cv[k]), cv


def export_dcr(model: DcrModel, crop_yx: Sequence[int], out_dir: Path) -> Path:
    """``model.onnx`` = CNN fusion graph → SVM (one graph: image + clinical in,
    probability + explanation out)."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    out_dir.mkdir(parents=True, exist_ok=True)
    sequences = model.cnn.sequences
    fusion = DcrFusion(model.cnn, model.log_columns, model.n_clinical).eval()
    example = {"image": torch.zeros(1, sequences, 1, *crop_yx),
               "clinical": torch.zeros(1, model.n_clinical)}
    first = export_graph(fusion, example, ["fused", "explanation"], out_dir / "_cnn.onnx")
    width = sequences + model.n_clinical
    proto = convert_sklearn(model.svm, initial_types=[("features",
                                                       FloatTensorType([None, width]))],
                            options={id(model.svm.steps[-1][1]): {"zipmap": False}},
                            target_opset={"": 17, "ai.onnx.ml": 3})
    second = out_dir / "_svm.onnx"
    onnx.save(proto, str(second))
    probabilities = next(o.name for o in proto.graph.output if "prob" in o.name)
    merged = merge_graphs(first, second, [("fused", "features")],
                          [probabilities, "explanation"], out_dir / "model.onnx")
    model_proto = onnx.load(str(merged))
    from inference.training.deep_common import rename_output
    rename_output(model_proto, probabilities, "probability")
    onnx.save(model_proto, str(merged))
    first.unlink()
    second.unlink()
    return merged


def torch_reference(model: DcrModel, images: FloatArray, clinical: FloatArray
                    ) -> tuple[FloatArray, FloatArray]:
    """Probability of disease control and CAMs from the framework models (parity)."""
    fusion = DcrFusion(model.cnn, model.log_columns, model.n_clinical).eval()
    with torch.no_grad():
        fused, cam = fusion(torch.from_numpy(images), torch.from_numpy(clinical))
    p = model.svm.predict_proba(fused.numpy().astype(np.float32))[:, 1]
    return np.asarray(p, np.float32), np.asarray(cam.numpy(), np.float32)


def onnx_parity(model: DcrModel, onnx_path: Path, images: FloatArray, clinical: FloatArray
                ) -> dict[str, float]:
    """Largest |ONNX − framework| of the probability and of the CAMs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    p_onnx, cam_onnx = session.run(["probability", "explanation"],
                                   {"image": images, "clinical": clinical})
    p_ref, cam_ref = torch_reference(model, images, clinical)
    return {"probability": float(np.max(np.abs(np.asarray(p_onnx)[:, 1] - p_ref))),
            "explanation": float(np.max(np.abs(np.asarray(cam_onnx) - cam_ref)))}


def oof_logits(model: DcrModel, images: FloatArray) -> npt.NDArray[np.float64]:
    """The final CNN's logit (no SVM) - for diagnostics."""
    return predict_logits(model.cnn, images, 0)
