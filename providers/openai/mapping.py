"""Pure wire mapping: a spec becomes a create body; service objects become uniform records, events,
checkpoints and metric points.  No I/O, no SDK: what ``plan`` shows is exactly what is sent, and
every function here is tested table by table."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from anytune._provider import IDEMPOTENCY_TAG
from anytune._spec import JobSpec, Method
from anytune._timestamps import parse_timestamp
from anytune._types import Checkpoint, Event, EventKind, JobError, JobRecord, JobStatus, MetricPoint, utcnow

from .status import STATUS_MESSAGES, map_status

__all__ = [
    "MAX_USER_SUFFIX_WITH_TOKEN",
    "TRAINING_TYPE_WIRE",
    "as_dict",
    "azure_training_type",
    "build_create_body",
    "checkpoint_from_api",
    "decode_result_file",
    "event_from_api",
    "job_carries_key",
    "merge_points",
    "metric_from_data",
    "parse_result_csv",
    "record_from_job",
    "split_body",
    "suffix_token",
    "suffix_with_token",
    "to_number",
]

Flavour = Literal["openai", "azure"]

# -- the spec, mapped --------------------------------------------------------------------------------


def azure_training_type(spec: JobSpec) -> str | None:
    """Azure OpenAI's training type: its own section first, else the older combined ``azure`` one
    (the spec refuses both at once)."""
    if spec.azure_openai is not None:
        return spec.azure_openai.training_type
    return spec.azure.training_type if spec.azure is not None else None


#: anytune's training types -> the ``trainingType`` values the service accepts.
TRAINING_TYPE_WIRE: Mapping[str, str] = {
    "standard": "standard",
    "globalstandard": "globalstandard",
    "developer": "developerTier",
}

#: Room a user's suffix keeps when the job is identified by its suffix (40 minus "-" and the token).
SUFFIX_TOKEN_CHARS = 12
MAX_USER_SUFFIX_WITH_TOKEN = 40 - 1 - SUFFIX_TOKEN_CHARS


def suffix_token(idempotency_key: str) -> str:
    """The token that identifies a job by its suffix where the service keeps no metadata: ``at``
    and 10 hex digits of the key's SHA-256 (letters and digits only, as Azure's suffixes allow)."""
    return "at" + hashlib.sha256(idempotency_key.encode()).hexdigest()[: SUFFIX_TOKEN_CHARS - 2]


def suffix_with_token(suffix: str | None, idempotency_key: str) -> str:
    token = suffix_token(idempotency_key)
    return f"{suffix}-{token}" if suffix else token


def job_carries_key(job: Mapping[str, Any], idempotency_key: str) -> bool:
    """Whether ``job`` was created for ``idempotency_key``: its metadata tag, or (services that keep
    no metadata) the key's token at the end of its suffix or fine-tuned model name."""
    metadata = job.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get(IDEMPOTENCY_TAG) == idempotency_key:
        return True
    token = suffix_token(idempotency_key)
    for name in ("suffix", "user_provided_suffix", "fine_tuned_model"):
        value = job.get(name)
        if isinstance(value, str) and (value == token or value.endswith("-" + token) or f"-{token}:" in value):
            return True
    return False


def _hyperparameters(spec: JobSpec) -> dict[str, Any]:
    hp = spec.hyperparameters
    hyper: dict[str, Any] = {}
    if hp.epochs is not None:
        hyper["n_epochs"] = hp.epochs
    if hp.batch_size is not None:
        hyper["batch_size"] = hp.batch_size
    if hp.learning_rate_multiplier is not None:
        hyper["learning_rate_multiplier"] = hp.learning_rate_multiplier
    if spec.method is Method.DPO and hp.beta is not None:
        hyper["beta"] = hp.beta
    return hyper


def _method(spec: JobSpec) -> dict[str, Any]:
    hyper = _hyperparameters(spec)
    options = spec.openai
    if options is not None and options.reinforcement is not None:
        reinforcement = dict(options.reinforcement)
        if hyper:
            reinforcement["hyperparameters"] = {**hyper, **dict(reinforcement.get("hyperparameters") or {})}
        return {"type": "reinforcement", "reinforcement": reinforcement}
    if spec.method is Method.DPO:
        # Azure's DpoMethodRequest requires the ``dpo`` object even when it is empty (OpenAI's
        # schema takes it empty too).
        return {"type": "dpo", "dpo": {"hyperparameters": hyper} if hyper else {}}
    return {"type": "supervised", "supervised": {"hyperparameters": hyper}} if hyper else {"type": "supervised"}


def build_create_body(
    spec: JobSpec,
    *,
    training_file: str,
    validation_file: str | None,
    idempotency_key: str,
    flavour: Flavour,
    keeps_metadata: bool = True,
    training_type: str | None = None,
    takes_method: bool = True,
    supervised_in_method: bool = True,
) -> dict[str, Any]:
    """The JSON body of ``POST /fine_tuning/jobs`` for ``spec`` (pure; what ``plan`` shows is sent).

    Hyperparameters go under ``method.<type>.hyperparameters`` (the top-level ``hyperparameters`` is
    deprecated); ``anytune.idempotency_key`` joins the user's tags in ``metadata``.  Where the
    service keeps no metadata (``keeps_metadata`` False: Azure's dated api-versions) there is no
    ``metadata`` and the suffix ends with the key's token (:func:`suffix_token`) instead.  Azure
    always gets a ``trainingType``: the spec's, else ``training_type`` (the settings' default),
    in the service's spelling (``developer`` -> ``developerTier``).  Where the body takes no
    ``method`` (``takes_method`` False: Azure's 2024-10-21) hyperparameters go top-level, and so do
    supervised ones where the supervised method holds only its type (``supervised_in_method``
    False: Azure's dated versions), leaving ``method`` as ``{"type": "supervised"}``.
    """
    body: dict[str, Any] = {"model": spec.base_model, "training_file": training_file}
    if validation_file is not None:
        body["validation_file"] = validation_file
    body["method"] = _method(spec)
    if not keeps_metadata:
        body["suffix"] = suffix_with_token(spec.suffix, idempotency_key)
    elif spec.suffix is not None:
        body["suffix"] = spec.suffix
    if spec.hyperparameters.seed is not None:
        body["seed"] = spec.hyperparameters.seed
    if keeps_metadata:
        body["metadata"] = {**spec.tags, IDEMPOTENCY_TAG: idempotency_key}
    if spec.openai is not None and spec.openai.wandb is not None:
        wandb = spec.openai.wandb.model_dump(exclude_none=True)
        if not wandb.get("tags"):
            wandb.pop("tags", None)
        body["integrations"] = [{"type": "wandb", "wandb": wandb}]
    if flavour == "azure":
        chosen = azure_training_type(spec) or training_type or "standard"
        body["trainingType"] = TRAINING_TYPE_WIRE.get(chosen, chosen)
    method = body["method"]
    if not takes_method or (not supervised_in_method and method["type"] == "supervised"):
        hyper = (method.pop(method["type"], None) or {}).get("hyperparameters")
        if hyper:
            body["hyperparameters"] = hyper
        if not takes_method:
            del body["method"]
    return body


_SDK_CREATE_ARGS = frozenset(
    {
        "model",
        "training_file",
        "validation_file",
        "method",
        "suffix",
        "seed",
        "metadata",
        "integrations",
        "hyperparameters",
    }
)


def split_body(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keyword arguments the SDK knows, the rest for ``extra_body``) - e.g. Azure's trainingType."""
    known = {k: v for k, v in body.items() if k in _SDK_CREATE_ARGS}
    extra = {k: v for k, v in body.items() if k not in _SDK_CREATE_ARGS}
    return known, extra


# -- service objects, mapped -------------------------------------------------------------------------


def _time(value: Any) -> datetime | None:
    """Both services send epoch seconds; anything else (text, null, NaN) is not a time here."""
    return parse_timestamp(value, unit="s") if isinstance(value, int | float) else None


def to_number(value: Any) -> float | None:
    """A finite number from what the service sent (numbers, numeric text), else None."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_dict(obj: Any) -> dict[str, Any]:
    """The JSON the service sent, from an SDK model (extra fields kept, nothing validated away)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict(mode="json", warnings=False))
    return dict(obj.model_dump(mode="json", warnings=False))


#: Service metric names -> MetricPoint fields (OpenAI, Azure and the older result-file spellings).
_METRIC_FIELDS: Mapping[str, str] = {
    "train_loss": "train_loss",
    "training_loss": "train_loss",
    "valid_loss": "valid_loss",
    "validation_loss": "valid_loss",
    "train_mean_token_accuracy": "token_accuracy",
    "train_accuracy": "token_accuracy",
    "training_mean_token_accuracy": "token_accuracy",
    "valid_mean_token_accuracy": "valid_token_accuracy",
    "validation_mean_token_accuracy": "valid_token_accuracy",
    "valid_accuracy": "valid_token_accuracy",
    "learning_rate": "learning_rate",
    "epoch": "epoch",
}
_NOT_METRICS = frozenset({"step", "total_steps", "step_number"})


def metric_from_data(data: Mapping[str, Any] | None, *, time: datetime | None = None) -> MetricPoint | None:
    """A metric point from an event's ``data`` or a checkpoint's ``metrics`` (None without a step).

    Known names fill the uniform fields; other numbers (``full_valid_loss``, DPO rewards...) go to
    ``extra`` so nothing the service reports is dropped.
    """
    if not isinstance(data, Mapping):
        return None
    step = to_number(data.get("step"))
    if step is None:
        step = to_number(data.get("step_number"))
    if step is None:
        return None
    values: dict[str, Any] = {}
    extra: dict[str, float] = {}
    for key, raw in data.items():
        number = to_number(raw)
        if number is None or key in _NOT_METRICS:
            continue
        target = _METRIC_FIELDS.get(str(key))
        if target is not None:
            values.setdefault(target, number)
        else:
            extra[str(key)] = number
    return MetricPoint(step=int(step), time=time, extra=extra, **values)


def decode_result_file(content: bytes) -> str:
    """The CSV text of a result file; some services (Azure) base64-encode it."""
    text = content.decode("utf-8", errors="replace").lstrip("\ufeff")
    if text.lstrip().lower().startswith("step"):
        return text
    try:
        decoded = base64.b64decode(b"".join(content.split()), validate=True).decode("utf-8").lstrip("\ufeff")
    except (ValueError, UnicodeDecodeError):
        return text
    return decoded if decoded.lstrip().lower().startswith("step") else text


def parse_result_csv(text: str) -> list[MetricPoint]:
    """Metric points of a result file (``step,train_loss,train_accuracy,...``), in file order."""
    points: list[MetricPoint] = []
    for row in csv.DictReader(io.StringIO(text)):
        point = metric_from_data({(k or "").strip(): v for k, v in row.items()})
        if point is not None:
            points.append(point)
    return points


def merge_points(*sources: Sequence[MetricPoint]) -> list[MetricPoint]:
    """One point per step, in step order; later sources fill in and override earlier ones.

    Pass the least authoritative first: events (live, partial), then checkpoints, then the result
    file (complete once the job ends).
    """
    merged: dict[int, dict[str, Any]] = {}
    for source in sources:
        for point in source:
            row = merged.setdefault(point.step, {"step": point.step, "extra": {}})
            for name, value in point.model_dump(exclude={"step", "extra"}).items():
                if value is not None:
                    row[name] = value
            row["extra"].update(point.extra)
    return [MetricPoint.model_validate(merged[s]) for s in sorted(merged)]


_LEVELS: Mapping[str, Literal["debug", "info", "warning", "error"]] = {
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
}


_STEP_IN_MESSAGE = re.compile(r"step (\d+)", re.IGNORECASE)


def _message_kind(message: str, when: datetime) -> tuple[EventKind, JobStatus | None, Checkpoint | None]:
    """(kind, status, checkpoint) a message announces, by the first rule of the table it matches."""
    rule = next(((kind, status) for pattern, kind, status in STATUS_MESSAGES if pattern.search(message)), None)
    if rule is None:
        return "log", None, None
    kind, status = rule
    if kind != "checkpoint":
        return kind, status, None
    step = _STEP_IN_MESSAGE.search(message)
    if step is None:
        return "log", None, None
    return "checkpoint", None, Checkpoint(step=int(step.group(1)), created_at=when)


def event_from_api(raw: Mapping[str, Any]) -> Event:
    """A uniform event from a ``fine_tuning.job.event`` (either service; Azure sends nulls)."""
    message = str(raw.get("message") or "")
    when = _time(raw.get("created_at")) or utcnow()
    event_id = raw.get("id")
    if not event_id:  # very old api-versions: derive a stable id from what is there
        event_id = f"ev-{raw.get('created_at')}-{hashlib.sha1(message.encode()).hexdigest()[:12]}"
    level = _LEVELS.get(str(raw.get("level") or "info").lower())
    data = raw.get("data") if isinstance(raw.get("data"), Mapping) else None
    status: JobStatus | None = None
    metric: MetricPoint | None = None
    checkpoint: Checkpoint | None = None
    if raw.get("type") == "metrics" or (data is not None and "train_loss" in data):
        metric = metric_from_data(data, time=when)
        kind: EventKind = "metric" if metric is not None else "log"
    else:
        kind, status, checkpoint = _message_kind(message, when)
    if status is JobStatus.FAILED or (level == "error" and kind == "log" and "fail" in message.lower()):
        kind, status = "status", JobStatus.FAILED
    return Event(
        id=str(event_id),
        kind=kind,
        time=when,
        message=message,
        level=level or "info",
        status=status,
        metric=metric,
        checkpoint=checkpoint,
        raw=dict(raw),
    )


def checkpoint_from_api(raw: Mapping[str, Any]) -> Checkpoint:
    """A uniform checkpoint from a ``fine_tuning.job.checkpoint``."""
    step = int(to_number(raw.get("step_number")) or 0)
    given = raw.get("metrics")
    metrics: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    created = _time(raw.get("created_at"))
    point = metric_from_data({**{k: v for k, v in metrics.items() if k != "step"}, "step": step}, time=created)
    return Checkpoint(
        step=step,
        id=raw.get("id"),
        model=raw.get("fine_tuned_model_checkpoint"),
        metrics=point,
        created_at=created,
    )


#: Job fields kept on the record's ``output`` when the service sets them.
_OUTPUT_FIELDS = (
    "training_file",
    "validation_file",
    "result_files",
    "hyperparameters",
    "method",
    "seed",
    "estimated_finish",
    "organization_id",
    "trainingType",
    "suffix",
    "user_provided_suffix",
)


def _job_error(err: Any) -> JobError | None:
    if not isinstance(err, Mapping) or not (err.get("message") or err.get("code")):
        return None
    return JobError(
        message=str(err.get("message") or err.get("code")),
        code=str(err["code"]) if err.get("code") else None,
        param=str(err["param"]) if err.get("param") else None,
    )


def record_from_job(provider: str, job: Mapping[str, Any], table: Mapping[str, JobStatus]) -> JobRecord:
    """A uniform record from a ``fine_tuning.job`` (Azure's nulls and extra fields included)."""
    raw_status = str(job.get("status") or "")
    trained = to_number(job.get("trained_tokens"))
    return JobRecord(
        provider=provider,
        id=str(job.get("id") or ""),
        status=map_status(raw_status, table),
        raw_status=raw_status,
        base_model=job.get("model"),
        fine_tuned_model=job.get("fine_tuned_model") or None,
        created_at=_time(job.get("created_at")),
        finished_at=_time(job.get("finished_at")),
        error=_job_error(job.get("error")),
        trained_tokens=int(trained) if trained is not None else None,
        output={k: job[k] for k in _OUTPUT_FIELDS if job.get(k) is not None},
        raw=dict(job),
    )
