"""Run an evaluation: read the held-out examples, ask each model, score, summarise.

The models are :class:`Answerer` objects handed in by whoever can reach them (the local backend for
weights, a provider's chat API for hosted models, a fake in tests), so this module holds the one
definition of what is scored and how it adds up, and no I/O of its own beyond reading the data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from anytune._eval.metrics import GENERATION_METRICS, METRICS, WEIGHT_METRICS
from anytune._eval.report import EvalReport, EvalRow, GenerationSettings
from anytune.errors import DataValidationError, UsageError

__all__ = ["Answerer", "EvalExample", "check_metrics", "read_examples", "run_evaluation"]

Messages = Sequence[Mapping[str, Any]]
#: Called after each example: (examples done, examples in all).
Progress = Callable[[int, int], None]


class Answerer(Protocol):
    """One model under evaluation, asked a batch of examples at a time (``GenerationSettings.batch_size``)."""

    #: What is called, as the report names it (a model id, a folder, ``base + adapter``).
    name: str

    def answer(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]:
        """The model's reply to each prompt (messages ending with a user turn), in order."""
        ...

    def loss(self, conversations: Sequence[Messages]) -> list[tuple[float, int] | None]:
        """``(summed token loss, tokens)`` over the assistant turns of each conversation; ``None``
        where the weights are out of reach."""
        ...


@dataclass(frozen=True)
class EvalExample:
    """A held-out conversation: the whole of it (for loss), the turns before its last assistant turn
    (the prompt) and that turn's text (the reference)."""

    location: str
    messages: tuple[Mapping[str, Any], ...]
    prompt: tuple[Mapping[str, Any], ...]
    reference: str


def check_metrics(metrics: Sequence[str], *, judge: bool, weights: bool) -> tuple[str, ...]:
    """The metrics asked for, checked: known names, a judge for ``judge``, weights for loss.

    Raises:
        UsageError: naming the metric and what it needs.
    """
    asked = tuple(dict.fromkeys(metrics))
    if not asked:
        raise UsageError(f"no metrics asked for: choose from {', '.join(METRICS)}")
    for metric in asked:
        if metric not in METRICS:
            raise UsageError(f"unknown metric {metric!r}: choose from {', '.join(METRICS)}")
    if "judge" in asked and not judge:
        raise UsageError("the judge metric needs a judge model: pass judge= (--judge MODEL)")
    needs_weights = [m for m in asked if m in WEIGHT_METRICS]
    if needs_weights and not weights:
        raise UsageError(
            f"{', '.join(needs_weights)} {'need' if len(needs_weights) > 1 else 'needs'} the model's weights, "
            "which this result does not give (a hosted "
            f"model answers through its API): use {', '.join(m for m in METRICS if m not in WEIGHT_METRICS)}"
        )
    return asked


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


def read_examples(source: str | os.PathLike[str], *, limit: int | None = None) -> list[EvalExample]:
    """The chat examples of ``source`` (any shape ``anytune data`` reads), each ending with an
    assistant turn, in order; at most ``limit``.

    Raises:
        DataValidationError: a row that cannot be read, a preference (DPO) row, or a conversation
            with no assistant turn to compare against, naming its location and field.
    """
    from anytune._data.pipeline import to_canonical
    from anytune._data.validate import ValidationIssue

    def refuse(loc: Any, code: str, message: str) -> DataValidationError:
        issue = ValidationIssue(
            file=loc.file, line=loc.number, field="messages", code=code, message=message, location=str(loc)
        )
        return DataValidationError(f"{loc.file}: cannot evaluate on this data", [issue])

    out: list[EvalExample] = []
    for loc, example in _take(to_canonical(source), limit):
        where = str(loc)
        messages = example.get("messages") if "input" not in example else None
        if not isinstance(messages, list) or not messages:
            raise refuse(loc, "not_chat", "evaluation takes chat examples (messages), not preference pairs")
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            raise refuse(loc, "no_reference", "no assistant turn after a prompt: nothing to compare an answer with")
        out.append(
            EvalExample(
                location=where,
                messages=tuple(messages[: last + 1]),
                prompt=tuple(messages[:last]),
                reference=_text(messages[last].get("content")),
            )
        )
    return out


def _take(items: Iterator[Any], limit: int | None) -> Iterator[Any]:
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        yield item


def _last_user(prompt: Sequence[Mapping[str, Any]]) -> str:
    return next((_text(m.get("content")) for m in reversed(prompt) if m.get("role") == "user"), "")


def run_evaluation(
    examples: Sequence[EvalExample],
    answerers: Mapping[str, Answerer],
    *,
    metrics: Sequence[str],
    settings: GenerationSettings,
    job_ref: str,
    data: str,
    judge: Any | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Score every answerer (``base``, ``fine-tuned``) on every example.

    Args:
        judge: an object with ``grade(prompt, reference, answer) -> float`` (1 to 5) and ``describe()``.
    """
    generation = [m for m in metrics if m in GENERATION_METRICS]
    answers_needed = bool(generation) or "judge" in metrics
    losses_needed = "loss" in metrics or "perplexity" in metrics
    rows: list[EvalRow] = []
    loss_total = {role: [0.0, 0] for role in answerers}
    size = settings.batch_size
    for first in range(0, len(examples), size):
        chunk = examples[first : first + size]
        scores: list[dict[str, dict[str, float]]] = [{role: {} for role in answerers} for _ in chunk]
        answers: list[dict[str, str]] = [{} for _ in chunk]
        for role, model in answerers.items():
            if losses_needed:
                for i, measured in enumerate(model.loss([ex.messages for ex in chunk])):
                    if measured is not None and measured[1] > 0:
                        loss_total[role][0] += measured[0]
                        loss_total[role][1] += measured[1]
                        scores[i][role]["loss"] = measured[0] / measured[1]
            if answers_needed:
                for i, (ex, answer) in enumerate(
                    zip(chunk, model.answer([ex.prompt for ex in chunk], settings), strict=True)
                ):
                    answers[i][role] = answer
                    for metric in generation:
                        scores[i][role][metric] = GENERATION_METRICS[metric](answer, ex.reference)
                    if "judge" in metrics and judge is not None:
                        scores[i][role]["judge"] = float(judge.grade(ex.prompt, ex.reference, answer))
        rows.extend(
            EvalRow(
                location=ex.location,
                prompt=_last_user(ex.prompt),
                reference=ex.reference,
                answers=answers[i],
                scores=scores[i],
            )
            for i, ex in enumerate(chunk)
        )
        if progress is not None:
            progress(len(rows), len(examples))
    return EvalReport(
        job_ref=job_ref,
        data=data,
        examples=len(rows),
        models={role: model.name for role, model in answerers.items()},
        metrics=tuple(metrics),
        settings=settings,
        summary=_summarise(rows, metrics, loss_total),
        rows=tuple(rows),
        judge=judge.describe() if judge is not None and "judge" in metrics else None,
    )


def _summarise(
    rows: Sequence[EvalRow], metrics: Sequence[str], loss_total: Mapping[str, list[float]]
) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for role, (total, tokens) in loss_total.items():
        means: dict[str, float] = {}
        if tokens:
            if "loss" in metrics:
                means["loss"] = total / tokens
            if "perplexity" in metrics:
                means["perplexity"] = math.exp(total / tokens)
        for metric in metrics:
            if metric in ("loss", "perplexity"):
                continue
            values = [row.scores[role][metric] for row in rows if metric in row.scores.get(role, {})]
            if values:
                means[metric] = sum(values) / len(values)
        summary[role] = means
    return summary


# -- the two models, wherever they are -----------------------------------------------------------------

#: ``module:function`` giving ``{"base": ..., "fine-tuned": ...}`` answerers for a result with
#: weights, ``(model, *, device, base_model)``; imported on first use (the core never imports torch).
WEIGHTS_ANSWERERS = "anytune.local_backend.evaluate:answerers_for"
#: The same for an ONNX export of such a result, ``(model, path)``.
ONNX_ANSWERERS = "anytune.local_backend.export.onnx:onnx_answerers"
#: lm-evaluation-harness scores of both models, ``(model, tasks, *, include, limit, ...)``.
LM_EVAL_SCORES = "anytune.local_backend.evaluate:lm_eval_scores"


def _hook(spec: str) -> Any:
    """The function a ``module:function`` hook names, imported now (not when the core is)."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


#: What ``metrics=None`` means: everything that needs no judge and that the result can give.
DEFAULT_WEIGHT_METRICS = ("loss", "perplexity", "exact_match", "token_f1", "rouge_l")
DEFAULT_CHAT_METRICS = ("exact_match", "token_f1", "rouge_l")

#: A provider's chat call: ``(model, messages, *, max_tokens, temperature, seed) -> reply text``.
ChatCall = Callable[..., str]


@dataclass(frozen=True)
class ChatAnswerer:
    """A model reached through a chat API (a hosted model, a provider's fake): answers, no loss."""

    name: str
    call: ChatCall

    def answer(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]:
        return [
            self.call(
                self.name,
                [dict(m) for m in messages],
                max_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                seed=settings.seed,
            )
            for messages in prompts
        ]

    def loss(self, conversations: Sequence[Messages]) -> list[tuple[float, int] | None]:
        return [None for _ in conversations]


def evaluate_model(
    model: Any,
    data: str | os.PathLike[str],
    *,
    metrics: Sequence[str] | None = None,
    chat: ChatCall | None = None,
    base_model_id: str | None = None,
    call_as: Mapping[str, str] | None = None,
    lm_eval_tasks: Sequence[str] = (),
    lm_eval_include: str | None = None,
    max_examples: int | None = None,
    settings: GenerationSettings | None = None,
    judge: Any | None = None,
    device: str | None = None,
    base_model: str | None = None,
    onnx: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate a :class:`~anytune.FineTunedModel` and its base on ``data``.

    A result with weights (a local adapter, a Hub adapter) is loaded once and answers as both
    models (adapter on and off); a hosted result answers through ``chat`` (its provider's chat API),
    its base through ``base_model_id``; ``call_as`` renames either for the call (``{"fine-tuned":
    "my-deployment", "base": "gpt-4o-mini"}``: Azure OpenAI serves models by deployment name).
    ``onnx`` evaluates an ONNX export of the result instead of its PyTorch weights (the export's
    adapter on and off, in ONNX Runtime). The metrics and the data are checked before any model loads.

    Raises:
        UsageError: unknown metrics, or ones this result cannot give.
        NotSupportedError: a hosted result without a chat call to reach it.
        DataValidationError: the data, naming location and field.
    """
    weights, names, asked = _settle(
        model, metrics, judge=judge, call_as=call_as, lm_eval_tasks=lm_eval_tasks, reachable=chat is not None
    )
    if onnx is not None and (lm_eval_tasks or not weights):
        raise UsageError(
            "onnx= evaluates an ONNX export of a result with weights (local, Hugging Face Jobs), without lm-eval "
            "tasks (they run on the PyTorch weights)"
        )
    base_model_id = names.get("base", base_model_id)
    if not weights and not base_model_id:
        raise UsageError(f"{model.job_ref} does not say which base model it was trained from: name it with call_as")
    examples = read_examples(data, limit=max_examples)
    if onnx is not None:
        answerers = _hook(ONNX_ANSWERERS)(model, onnx)
    elif weights:
        answerers = _hook(WEIGHTS_ANSWERERS)(model, device=device, base_model=base_model)
    else:
        assert chat is not None and base_model_id is not None
        tuned = names.get("fine-tuned", str(model.model_id))
        answerers = {"base": ChatAnswerer(base_model_id, chat), "fine-tuned": ChatAnswerer(tuned, chat)}
    report = run_evaluation(
        examples,
        answerers,
        metrics=asked,
        settings=settings or GenerationSettings(),
        job_ref=model.job_ref,
        data=os.fspath(data),
        judge=judge,
        progress=progress,
    )
    if lm_eval_tasks:
        tasks = _hook(LM_EVAL_SCORES)(
            model,
            list(lm_eval_tasks),
            include=lm_eval_include,
            limit=max_examples,
            batch_size=report.settings.batch_size,
            device=device,
            base_model=base_model,
        )
        report = report.model_copy(update={"tasks": tasks})
    return report


def _settle(
    model: Any,
    metrics: Sequence[str] | None,
    *,
    judge: Any | None,
    call_as: Mapping[str, str] | None,
    lm_eval_tasks: Sequence[str],
    reachable: bool,
) -> tuple[bool, dict[str, str], tuple[str, ...]]:
    """Every check an evaluation makes before it reads data or loads a model (shared by the run and
    its dry run): ``(weights, call_as names, metrics)``."""
    import importlib.util

    from anytune.errors import MissingDependencyError, NotSupportedError

    weights = bool(model.has_weights)
    names = dict(call_as or {})
    unknown = sorted(set(names) - {"base", "fine-tuned"})
    if unknown:
        raise UsageError(f"call_as takes 'base' and 'fine-tuned', not {', '.join(unknown)}")
    if names and weights:
        raise UsageError("call_as renames models reached through a chat API; this result's weights are loaded here")
    if lm_eval_tasks and not weights:
        raise UsageError("lm-eval tasks run on weights (local runs, Hugging Face Jobs results), not on a hosted model")
    if lm_eval_tasks and importlib.util.find_spec("lm_eval") is None:
        raise MissingDependencyError("lm-eval", "lm-eval", "lm-evaluation-harness tasks")
    asked = check_metrics(
        metrics or (DEFAULT_WEIGHT_METRICS if weights else DEFAULT_CHAT_METRICS),
        judge=judge is not None,
        weights=weights,
    )
    if not weights and (not reachable or not model.model_id):
        raise NotSupportedError(
            f"evaluating {model.job_ref} needs its service's chat API: use "
            f"FineTuneJob.get({model.job_ref!r}).evaluate(...) (or `anytune eval`), which calls the fine-tuned "
            "model and its base model there",
            field="evaluate",
            provider=model.provider,
        )
    return weights, names, asked


def plan_evaluation(
    model: Any,
    data: str | os.PathLike[str],
    *,
    metrics: Sequence[str] | None = None,
    judge: Any | None = None,
    call_as: Mapping[str, str] | None = None,
    base_model_id: str | None = None,
    lm_eval_tasks: Sequence[str] = (),
    max_examples: int | None = None,
    settings: GenerationSettings | None = None,
) -> dict[str, Any]:
    """What :func:`evaluate_model` would do, checked the same way, calling and loading nothing: the
    examples, the metrics, the model and judge calls it would make and what they may cost
    (``costs``: one :class:`~anytune._data.pricing.CallCost` per model called; ``usd``: their sum,
    an upper bound, or None when a price is not known)."""
    weights, names, asked = _settle(
        model, metrics, judge=judge, call_as=call_as, lm_eval_tasks=lm_eval_tasks, reachable=True
    )
    examples = read_examples(data, limit=max_examples)
    answers = len(examples) if any(m in GENERATION_METRICS or m == "judge" for m in asked) else 0
    costs = [] if weights or not answers else _call_costs(model, examples, names, base_model_id, judge, settings)
    known = [c.usd for c in costs]
    return {
        "examples": len(examples),
        "metrics": list(asked),
        "model_calls": 2 * answers,
        "judge_calls": 2 * answers if "judge" in asked else 0,
        "costs": [c.model_dump() for c in costs],
        "usd": None if any(u is None for u in known) else sum(u for u in known if u is not None),
    }


#: Output tokens a judge's reply is reckoned at (``{"score": N, "reason": "<one sentence>"}``).
JUDGE_REPLY_TOKENS = 60


def _call_costs(
    model: Any,
    examples: Sequence[EvalExample],
    names: Mapping[str, str],
    base_model_id: str | None,
    judge: Any | None,
    settings: GenerationSettings | None,
) -> list[Any]:
    """Token counts and prices of the chat calls an evaluation of a hosted model makes. Prompts are
    counted with the base model's tokenizer as OpenAI's cookbook counts chat messages (4 tokens per
    message, 3 to prime the reply); answers at their ``max_new_tokens`` ceiling."""
    from anytune._data.pricing import inference_cost
    from anytune._data.tokens import counter_for
    from anytune._eval.judge import RUBRIC

    provider = str(model.provider)
    base = names.get("base", base_model_id or model.base_model or "")
    tuned = names.get("fine-tuned", str(model.model_id))
    count = counter_for(provider, base or None).count
    max_tokens = (settings or GenerationSettings()).max_new_tokens
    prompt = sum(sum(count(str(m.get("content") or "")) + 4 for m in ex.prompt) + 3 for ex in examples)
    n = len(examples)
    costs = [
        inference_cost(provider, what, name, calls=n, input_tokens=prompt, max_output_tokens=n * max_tokens)
        for what, name in (("fine-tuned", tuned), ("base", base))
    ]
    if judge is not None:
        described = judge.describe()
        rubric = sum(
            count(RUBRIC.format(question=_last_user(ex.prompt), reference=ex.reference, answer="")) + 7 + max_tokens
            for ex in examples
        )
        costs.append(
            inference_cost(
                "openai" if described.get("host") == "api.openai.com" else "judge",
                "judge",
                str(described.get("model")),
                calls=2 * n,
                input_tokens=2 * rubric,
                max_output_tokens=2 * n * JUDGE_REPLY_TOKENS,
            )
        )
    return costs
