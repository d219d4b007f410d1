"""What an evaluation produced: per-example answers and scores, per-model summaries, the settings used.

Pure data (pydantic) and pure views of it (the summary table's rows, the disagreements), so the CLI,
the job store and the plot read one shape.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EvalReport", "EvalRow", "GenerationSettings", "summary_rows"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


class GenerationSettings(BaseModel):
    """How answers were generated (recorded with the results): greedy by default, so reruns agree."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    seed: int = 0
    #: Examples asked of a model at once (padding to the longest in a batch changes float sums in
    #: the last digits, so it is recorded too).
    batch_size: int = Field(default=8, ge=1)


class EvalRow(BaseModel):
    """One held-out example: where it came from, its last user message, the reference answer, each
    model's answer and scores (``scores[model][metric]``; ``loss`` is the example's mean token loss)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    location: str
    prompt: str
    reference: str
    answers: dict[str, str] = Field(default_factory=dict)
    scores: dict[str, dict[str, float]] = Field(default_factory=dict)


class EvalReport(BaseModel):
    """Base model and fine-tuned model side by side on the same examples.

    ``models`` maps the two roles (``base``, ``fine-tuned``) to what was called; ``summary[role]``
    holds each metric's mean over the examples, except ``loss`` (token-weighted: total loss over
    total assistant tokens, as training reports it) and ``perplexity`` (``exp(loss)``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_ref: str
    data: str
    examples: int
    models: dict[str, str]
    metrics: tuple[str, ...]
    settings: GenerationSettings
    summary: dict[str, dict[str, float]]
    rows: tuple[EvalRow, ...] = ()
    judge: dict[str, Any] | None = None
    #: lm-evaluation-harness results, ``tasks[role][task][metric]`` (weights only).
    tasks: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=_now)

    def disagreements(self, n: int, metric: str | None = None) -> list[EvalRow]:
        """The ``n`` examples on which the two models differ most by ``metric`` (default: the first
        generation metric evaluated), then those whose answers differ at all."""
        key = metric or next((m for m in self.metrics if m not in ("loss", "perplexity")), None)

        def gap(row: EvalRow) -> tuple[float, bool]:
            scores = [row.scores.get(role, {}).get(key or "", 0.0) for role in ("fine-tuned", "base")]
            answers = {row.answers.get(role) for role in ("fine-tuned", "base")}
            return abs(scores[0] - scores[1]), len(answers) > 1

        ranked = sorted(self.rows, key=gap, reverse=True)
        return [row for row in ranked if gap(row) != (0.0, False)][:n]


def summary_rows(report: EvalReport) -> list[tuple[str, float | None, float | None, float | None]]:
    """``(metric, base, fine-tuned, change)`` per metric, in the order asked for."""
    out: list[tuple[str, float | None, float | None, float | None]] = []
    for metric in report.metrics:
        base = report.summary.get("base", {}).get(metric)
        tuned = report.summary.get("fine-tuned", {}).get(metric)
        change = tuned - base if base is not None and tuned is not None else None
        out.append((metric, base, tuned, change))
    return out
