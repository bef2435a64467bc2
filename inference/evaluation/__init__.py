"""Statistics and report of ``hepatica evaluate``: the table every study in SEEDS.md reports.

Needs numpy, scipy, pandas, matplotlib and lifelines (the ``evaluate`` extra); imports none of
``dicom_io``, ``export`` or ``plugin``.
"""

from inference.evaluation.inputs import EvaluationError
from inference.evaluation.run import Evaluation, ModelEvaluation, SurvivalAnalysis, evaluate

__all__ = ["Evaluation", "EvaluationError", "ModelEvaluation", "SurvivalAnalysis", "evaluate"]
