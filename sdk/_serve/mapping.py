"""Pure mappings between OpenAI's API objects (as published: ``openai-finetuning-openapi.json``)
and anytune's: job, event, checkpoint and file objects out; a create request in, as JobSpec fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from anytune._types import Checkpoint, Event, JobRecord, JobStatus
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    DataValidationError,
    JobNotFoundError,
    NotSupportedError,
    QuotaExceededError,
    RateLimitError,
    UsageError,
)

__all__ = [
    "STATUSES",
    "checkpoint_object",
    "error_body",
    "error_status",
    "event_object",
    "file_object",
    "job_object",
    "method_of",
    "model_id",
    "spec_fields",
    "split_model",
]

#: anytune's job status -> the API's. ``paused`` is what OpenAI's service answers for a paused
#: job (the published enum predates pausing).
STATUSES: dict[JobStatus, str] = {
    JobStatus.VALIDATING: "validating_files",
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "running",
    JobStatus.PAUSED: "paused",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}

#: Provider names a model may be prefixed with (``local:Qwen/Qwen2.5-0.5B-Instruct``).
PROVIDER_PREFIXES = ("local", "huggingface", "hf", "azure-openai", "openai", "azureml", "fake")


def _ts(when: datetime | None) -> int | None:
    return int(when.timestamp()) if when is not None else None


def model_id(job_id: str) -> str:
    """The id the server gives a job's fine-tuned model (chat completions and ``/v1/models``)."""
    return f"ft:{job_id}"


def split_model(model: str, default: str) -> tuple[str, str]:
    """``provider:base`` -> (provider, base); a model without a known prefix runs on ``default``."""
    head, sep, rest = model.partition(":")
    if sep and head in PROVIDER_PREFIXES and rest:
        return ("huggingface" if head == "hf" else head), rest
    return default, model


#: The hyperparameters each method takes, with the check each value passes ("auto" always does).
_WHOLE = ("an integer of at least 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1)
_POSITIVE = ("a number above 0", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)
HYPERPARAMETERS: dict[str, dict[str, tuple[str, Any]]] = {
    "supervised": {"n_epochs": _WHOLE, "batch_size": _WHOLE, "learning_rate_multiplier": _POSITIVE},
    "dpo": {"n_epochs": _WHOLE, "batch_size": _WHOLE, "learning_rate_multiplier": _POSITIVE, "beta": _POSITIVE},
}


def method_of(request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The method and hyperparameters of a create request (``method.<type>.hyperparameters``, or the
    older top-level ``hyperparameters``), checked.

    Raises:
        ConfigError: naming the field: not an object, a method not offered, an unknown
            hyperparameter or a value out of its range.
    """
    method = request.get("method")
    if method is None:
        method = {"type": "supervised"}
    if not isinstance(method, Mapping):
        raise ConfigError("method must be an object such as {'type': 'supervised'}", field="method")
    kind = method.get("type") or "supervised"
    if kind not in HYPERPARAMETERS:
        raise ConfigError(f"method.type {kind!r} is not offered here: use supervised or dpo", field="method.type")
    section = method.get(kind)
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(f"method.{kind} must be an object", field=f"method.{kind}")
    where = f"method.{kind}.hyperparameters"
    hyper = (section or {}).get("hyperparameters")
    if hyper is None:
        where, hyper = "hyperparameters", request.get("hyperparameters")
    if hyper is None:
        return str(kind), {}
    if not isinstance(hyper, Mapping):
        raise ConfigError(f"{where} must be an object", field=where)
    allowed = HYPERPARAMETERS[str(kind)]
    for name, value in hyper.items():
        if name not in allowed:
            raise ConfigError(
                f"unknown hyperparameter {name!r}: {kind} takes {', '.join(allowed)}", field=f"{where}.{name}"
            )
        what, ok = allowed[name]
        if value != "auto" and not ok(value):
            raise ConfigError(f'{name} must be "auto" or {what}, not {value!r}', field=f"{where}.{name}")
    return str(kind), dict(hyper)


def job_object(job_id: str, request: Mapping[str, Any], record: JobRecord, created_at: int) -> dict[str, Any]:
    """A ``fine_tuning.job`` for ``record`` (the job made from ``request``, checked at create)."""
    kind, hyper = method_of(request)
    error = None
    if record.status is JobStatus.FAILED:
        err = record.error
        error = {
            "code": (err.code if err is not None and err.code else "job_failed"),
            "message": (err.message if err is not None else "the job failed"),
            "param": None,
        }
    return {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": created_at,
        "error": error,
        "fine_tuned_model": model_id(job_id) if record.status is JobStatus.SUCCEEDED else None,
        "finished_at": _ts(record.finished_at) if record.done else None,
        "hyperparameters": {
            "batch_size": hyper.get("batch_size", "auto"),
            "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
            "n_epochs": hyper.get("n_epochs", "auto"),
        },
        "model": str(request.get("model")),
        "organization_id": "anytune",
        "result_files": [],
        "status": STATUSES[record.status],
        "trained_tokens": record.trained_tokens if record.status is JobStatus.SUCCEEDED else None,
        "training_file": str(request.get("training_file")),
        "validation_file": request.get("validation_file"),
        "seed": int(request.get("seed") or 0),
        "metadata": request.get("metadata"),
        "method": {"type": kind, **({kind: {"hyperparameters": hyper}} if kind in ("supervised", "dpo") else {})},
    }


def event_object(event: Event) -> dict[str, Any]:
    """A ``fine_tuning.job.event``: metrics become ``type: metrics`` with OpenAI's data keys."""
    level = {"warning": "warn", "error": "error"}.get(event.level, "info")
    out: dict[str, Any] = {
        "object": "fine_tuning.job.event",
        "id": event.id,
        "created_at": int(event.time.timestamp()),
        "level": level,
        "message": event.message or str(event),
        "type": "message",
    }
    if event.metric is not None:
        m = event.metric
        data = {"step": m.step, "train_loss": m.train_loss, "valid_loss": m.valid_loss}
        out["type"] = "metrics"
        out["data"] = {k: v for k, v in data.items() if v is not None}
    return out


def checkpoint_object(job_id: str, checkpoint: Checkpoint) -> dict[str, Any]:
    """A ``fine_tuning.job.checkpoint`` (the model name addresses it for chat: ``ft:JOB:ckpt-STEP``)."""
    metrics: dict[str, float] = {"step": float(checkpoint.step)}
    if checkpoint.metrics is not None:
        if checkpoint.metrics.train_loss is not None:
            metrics["train_loss"] = checkpoint.metrics.train_loss
        if checkpoint.metrics.valid_loss is not None:
            metrics["valid_loss"] = checkpoint.metrics.valid_loss
    return {
        "id": f"ftckpt-{job_id.removeprefix('ftjob-')}-{checkpoint.step}",
        "object": "fine_tuning.job.checkpoint",
        "created_at": _ts(checkpoint.created_at) or 0,
        "fine_tuned_model_checkpoint": f"{model_id(job_id)}:ckpt-step-{checkpoint.step}",
        "step_number": checkpoint.step,
        "metrics": metrics,
        "fine_tuning_job_id": job_id,
    }


def file_object(file_id: str, filename: str, size: int, purpose: str, created_at: int) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": created_at,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }


def error_body(message: str, *, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_status(exc: AnytuneError) -> tuple[int, str, str | None]:
    """(HTTP status, error type, code) of an anytune error, as the ``openai`` SDK maps statuses."""
    table: Sequence[tuple[type[AnytuneError], int, str, str | None]] = (
        (DataValidationError, 400, "invalid_request_error", "invalid_training_file"),
        (JobNotFoundError, 404, "invalid_request_error", "not_found"),
        (AuthenticationError, 502, "upstream_error", "provider_authentication"),
        (QuotaExceededError, 429, "insufficient_quota", "insufficient_quota"),
        (RateLimitError, 429, "rate_limit_exceeded", "rate_limit_exceeded"),
        (NotSupportedError, 400, "invalid_request_error", "not_supported"),
        (ConfigError, 400, "invalid_request_error", "invalid_value"),
        (UsageError, 400, "invalid_request_error", "invalid_value"),
    )
    for kind, status, name, code in table:
        if isinstance(exc, kind):
            return status, name, code
    return 502, "upstream_error", None


def _auto(value: Any) -> Any:
    return None if value in (None, "auto") else value


def spec_fields(request: Mapping[str, Any], training: str, validation: str | None) -> dict[str, Any]:
    """JobSpec fields of a CreateFineTuningJobRequest whose files lie at ``training``/``validation``.

    Raises:
        ConfigError: a malformed method or hyperparameter, or a seed that is no integer, naming the field.
    """
    kind, hyper = method_of(request)
    seed = request.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31):
        raise ConfigError("seed must be an integer from 0 to 2**31 - 1", field="seed")
    suffix = request.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise ConfigError("suffix must be text", field="suffix")
    hyperparameters = {
        "epochs": _auto(hyper.get("n_epochs")),
        "batch_size": _auto(hyper.get("batch_size")),
        "learning_rate_multiplier": _auto(hyper.get("learning_rate_multiplier")),
        "beta": _auto(hyper.get("beta")),
        "seed": seed,
    }
    fields: dict[str, Any] = {
        "training_file": training,
        "method": "dpo" if kind == "dpo" else "sft",
        "hyperparameters": {k: v for k, v in hyperparameters.items() if v is not None},
    }
    if validation is not None:
        fields["validation_file"] = validation
    if suffix:
        fields["suffix"] = suffix
    return fields
