"""Evaluation: base model and fine-tuned model side by side on the same held-out examples, with the
same metric definitions whichever provider trained the model (``FineTuneJob.evaluate``,
``FineTunedModel.evaluate``, ``anytune eval``)."""

from anytune._eval.metrics import GENERATION_METRICS, METRICS, WEIGHT_METRICS
from anytune._eval.report import EvalReport, EvalRow, GenerationSettings, summary_rows
from anytune._eval.run import Answerer, EvalExample, check_metrics, read_examples, run_evaluation

__all__ = [
    "GENERATION_METRICS",
    "METRICS",
    "WEIGHT_METRICS",
    "Answerer",
    "EvalExample",
    "EvalReport",
    "EvalRow",
    "GenerationSettings",
    "check_metrics",
    "read_examples",
    "run_evaluation",
    "summary_rows",
]
