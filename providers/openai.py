"""OpenAI and Azure OpenAI fine-tuning behind the uniform API.

One adapter, two providers.  What the API looks like (files, uploads, jobs, events, checkpoints,
result files, statuses, errors) is shared; who and where differs and lives in the two small
subclasses: :class:`OpenAIProvider` builds ``openai.OpenAI(api_key, base_url, organization)``,
:class:`AzureOpenAIProvider` builds ``openai.AzureOpenAI(azure_endpoint, api_version, api_key or an
Entra ID token provider)``.

Reliability, and why:

* The SDK's own retries are off (``max_retries=0``) on every client: a create must never be
  repeated blindly, and one policy (:mod:`anytune._retry`) with an injectable sleep is easier to
  reason about and to test than two stacked ones.
* Reads retry on 408/429/5xx and connection errors, honouring ``Retry-After``, within a deadline.
* A create carries ``metadata["anytune.idempotency_key"]``.  When it fails ambiguously (timeout,
  dropped connection, 408, 5xx) the job may exist anyway, so the adapter lists jobs with that
  metadata filter before trying again; the tag is checked on our side too, for services that ignore
  the filter.
* Uploads are content-addressed: the sha256 of each file is recorded in the job store with the
  remote file id, and a file already uploaded to the same account is reused (after checking it
  still exists).  Large files go through the Uploads API in parts of at most 64 MiB, sent in
  parallel straight from disk, so memory stays bounded whatever the file size.
* Events come newest first in pages; ``events(after=...)`` pages back until it meets the cursor and
  returns what is newer, oldest first, so polls and reconnects neither lose nor repeat an event.

The openai SDK (and azure-identity) are imported on first use: reading ``capabilities`` or making a
dry-run plan never needs them.  Every SDK exception is translated into anytune's error tree in one
place (:meth:`_OpenAIAdapter._translated`); none escapes.
"""

from __future__ import annotations

import abc
import base64
import builtins
import contextlib
import csv
import functools
import hashlib
import io
import logging
import math
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast

import orjson
from pydantic import Field, SecretStr

from anytune._capabilities import Capabilities
from anytune._provider import (
    IDEMPOTENCY_TAG,
    PlannedRequest,
    PlannedUpload,
    Provider,
    ProviderSettings,
    SubmitPlan,
)
from anytune._retry import RetryPolicy, is_retryable_status, retry_after_of, retry_call
from anytune._secrets import install_log_filter, redact, register_secret
from anytune._spec import JobSpec, Method, Quantization
from anytune._store import JobStore
from anytune._types import (
    Checkpoint,
    Event,
    EventKind,
    FineTunedModel,
    JobError,
    JobRecord,
    JobStatus,
    MetricPoint,
    utcnow,
)
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    JobNotFoundError,
    MissingDependencyError,
    ModelNotAvailableError,
    NotSupportedError,
    PermissionDeniedError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    import httpx2
    from openai import OpenAI

__all__ = [
    "AZURE_STATUS",
    "DEFAULT_AZURE_API_VERSION",
    "HOOKS",
    "MAX_PART_BYTES",
    "OPENAI_STATUS",
    "AzureOpenAIProvider",
    "AzureOpenAISettings",
    "ClientConfig",
    "Hooks",
    "OpenAIProvider",
    "OpenAISettings",
    "build_create_body",
    "event_from_api",
    "map_status",
    "merge_points",
    "metric_from_data",
    "parse_result_csv",
    "spec_problems",
]

T = TypeVar("T")
logger = logging.getLogger("anytune.providers.openai")

#: The Uploads API takes parts of at most 64 MiB (the SDK's own default part size).
MAX_PART_BYTES = 64 * 1024 * 1024
#: api-version used when neither the profile nor ``OPENAI_API_VERSION`` names one: the data-plane
#: authoring preview that has fine-tuning events, checkpoints, pause/resume and DPO.
DEFAULT_AZURE_API_VERSION = "2025-04-01-preview"
AZURE_TOKEN_SCOPE = "https://cognitiveservices.azure.com/.default"
#: Models that take prompt/completion examples as they are; every other model gets chat.
_LEGACY_COMPLETION_MODELS = ("babbage-002", "davinci-002")
#: What the services accept (OpenAPI ranges), checked before anything is uploaded.
_RANGES: dict[str, tuple[float, float]] = {"epochs": (1, 50), "batch_size": (1, 256), "beta": (0, 2)}
_LOOKUP_MAX_PAGES = 10

# -- status tables (pure) ---------------------------------------------------------------------------

#: OpenAI job statuses.  ``pausing``/``resuming`` are not in the published enum but the pause and
#: resume endpoints exist, so they are mapped rather than guessed at.
OPENAI_STATUS: Mapping[str, JobStatus] = {
    "validating_files": JobStatus.VALIDATING,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    # A pause that was accepted: training stops at the next checkpoint, and no more is billed.
    "pausing": JobStatus.PAUSED,
    "paused": JobStatus.PAUSED,
    "resuming": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}

#: Azure OpenAI adds ``created`` (accepted, inputs being checked) and ``pending`` (waiting for
#: capacity) before ``running``, and spells cancelled both ways across api-versions.
AZURE_STATUS: Mapping[str, JobStatus] = {
    **OPENAI_STATUS,
    "created": JobStatus.VALIDATING,
    "pending": JobStatus.QUEUED,
    "canceled": JobStatus.CANCELLED,
}


def map_status(raw: str | None, table: Mapping[str, JobStatus]) -> JobStatus:
    """The uniform status of a raw service status.

    An unknown status (a service adding one) maps to ``running``: it is not terminal, so ``wait``
    keeps polling instead of reporting an outcome that did not happen; the raw value stays on the
    record.
    """
    if raw:
        found = table.get(raw) or table.get(raw.lower())
        if found is not None:
            return found
    logger.warning("unknown fine-tuning job status %r; treating it as running", raw)
    return JobStatus.RUNNING


_LEVELS: Mapping[str, Literal["debug", "info", "warning", "error"]] = {
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
}

# (pattern, kind, status) for the messages both services write on state changes; first match wins.
_MESSAGE_RULES: tuple[tuple[re.Pattern[str], EventKind, JobStatus | None], ...] = (
    (re.compile(r"^validating training file", re.I), "status", JobStatus.VALIDATING),
    (re.compile(r"moving job to queued state|^job enqueued", re.I), "status", JobStatus.QUEUED),
    (re.compile(r"^fine-?tuning job started|^job started", re.I), "status", JobStatus.RUNNING),
    (re.compile(r"^checkpoint created at step", re.I), "checkpoint", None),
    (re.compile(r"successfully completed|^(fine-?tuning )?job succeeded", re.I), "status", JobStatus.SUCCEEDED),
    (re.compile(r"^(fine-?tuning )?job (was |has been )?cancell?ed", re.I), "status", JobStatus.CANCELLED),
    (re.compile(r"^(fine-?tuning )?job (has been |was )?paused", re.I), "status", JobStatus.PAUSED),
    (re.compile(r"^(fine-?tuning )?job (has been |was )?resumed", re.I), "status", JobStatus.RUNNING),
    (re.compile(r"^(fine-?tuning )?job failed", re.I), "status", JobStatus.FAILED),
)
_STEP_IN_MESSAGE = re.compile(r"step (\d+)", re.IGNORECASE)

# -- settings ---------------------------------------------------------------------------------------

_MiB = 1024 * 1024


class _FamilySettings(ProviderSettings):
    """Settings both services share: timeouts, retries, uploads, paging."""

    timeout: float = Field(60.0, gt=0, description="seconds to wait for a response")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to wait for a connection")
    upload_timeout: float = Field(600.0, gt=0, description="seconds to wait for one upload request")
    max_attempts: int = Field(6, ge=1, le=50, description="attempts per call, the first included")
    retry_deadline: float = Field(300.0, gt=0, description="seconds after which no retry is started")
    max_backoff: float = Field(30.0, gt=0, description="cap on any single wait between attempts")
    upload_threshold_bytes: int = Field(
        MAX_PART_BYTES, ge=0, description="files larger than this go through the Uploads API in parts"
    )
    upload_part_bytes: int = Field(MAX_PART_BYTES, ge=1024, le=MAX_PART_BYTES)
    upload_concurrency: int = Field(4, ge=1, le=32, description="parts sent at once")
    events_page_size: int = Field(100, ge=1, le=1000)
    file_processing_timeout: float = Field(1800.0, ge=0, description="seconds to wait for file import")
    lookup_window: float = Field(86400.0, gt=0, description="how far back (s) a job is looked up by tag")


class OpenAISettings(_FamilySettings):
    """``openai`` settings. Unset values come from the SDK's variables: ``OPENAI_API_KEY`` (or the
    variable named by ``api_key_env``), ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``."""

    api_key: SecretStr | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None


class AzureOpenAISettings(_FamilySettings):
    """``azure-openai`` settings. Unset values come from ``AZURE_OPENAI_ENDPOINT``,
    ``AZURE_OPENAI_API_KEY`` (or ``api_key_env``) and ``OPENAI_API_VERSION``.

    ``auth``: ``key`` needs an API key; ``entra`` signs in with azure-identity's
    ``DefaultAzureCredential`` (``az login``, managed identity, ``AZURE_CLIENT_ID``...); ``auto`` uses
    the key when one is found, Entra ID otherwise.
    """

    endpoint: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    api_version: str | None = None
    auth: Literal["auto", "key", "entra"] = "auto"
    token_scope: str = AZURE_TOKEN_SCOPE


@dataclass(frozen=True)
class ClientConfig:
    """Who and where, resolved from settings and environment (pure; never holds a client).

    ``scope`` identifies the account for upload reuse (no secret in it).
    """

    flavour: Literal["openai", "azure"]
    base_url: str | None
    api_key: str | None = field(default=None, repr=False)
    key_source: str = ""
    organization: str | None = None
    project: str | None = None
    api_version: str | None = None
    entra: bool = False
    token_scope: str = AZURE_TOKEN_SCOPE

    @property
    def scope(self) -> str:
        return "|".join((self.base_url or "", self.organization or "", self.project or ""))


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def openai_client_config(settings: OpenAISettings, env: Mapping[str, str]) -> ClientConfig:
    """Settings first, then the SDK's standard variables, then OpenAI's defaults."""
    key_var = settings.api_key_env or "OPENAI_API_KEY"
    key, source = _secret(settings.api_key), "settings.api_key"
    if not key:
        key, source = env.get(key_var) or None, key_var
    return ClientConfig(
        flavour="openai",
        base_url=(settings.base_url or env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/"),
        api_key=key,
        key_source=source,
        organization=settings.organization or env.get("OPENAI_ORG_ID") or None,
        project=settings.project or env.get("OPENAI_PROJECT_ID") or None,
    )


def azure_client_config(settings: AzureOpenAISettings, env: Mapping[str, str]) -> ClientConfig:
    """Settings first, then ``AZURE_OPENAI_*`` / ``OPENAI_API_VERSION``, then defaults."""
    key_var = settings.api_key_env or "AZURE_OPENAI_API_KEY"
    key, source = _secret(settings.api_key), "settings.api_key"
    if not key:
        key, source = env.get(key_var) or None, key_var
    if settings.auth == "entra":
        key = None
    endpoint = settings.endpoint or env.get("AZURE_OPENAI_ENDPOINT") or None
    return ClientConfig(
        flavour="azure",
        base_url=endpoint.rstrip("/") if endpoint else None,
        api_key=key,
        key_source=source,
        api_version=settings.api_version or env.get("OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION,
        entra=key is None and settings.auth != "key",
        token_scope=settings.token_scope,
    )


@dataclass
class Hooks:
    """Process-wide injection points: tests swap them for fakes, users behind proxies can pass their
    own ``httpx2.Client``.  Read at call time, so changing them affects existing providers too.

    Attributes:
        http_client: returns the ``httpx2.Client`` the SDK sends through (``None``: SDK default).
        azure_token_provider: returns an Entra ID token callable, replacing ``DefaultAzureCredential``.
        sleep: how retries and file-processing waits sleep.
        clock: monotonic clock for their deadlines.
        rand: jitter source in [0, 1).
    """

    http_client: Callable[[], httpx2.Client] | None = None
    azure_token_provider: Callable[[], Callable[[], str]] | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random


HOOKS = Hooks()

# -- the spec, mapped (pure) ------------------------------------------------------------------------

_ALTERNATIVES_FOR_ADAPTERS = ("local", "huggingface")


def spec_problems(spec: JobSpec, flavour: Literal["openai", "azure"]) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every (field, reason, alternatives) the service cannot honour, in spec order.

    The core's capability check catches the same fields first with a generic message; this one
    says what the service takes instead, for anyone calling ``validate`` directly.
    """
    service = "OpenAI" if flavour == "openai" else "Azure OpenAI"
    out: list[tuple[str, str, tuple[str, ...]]] = []
    hp = spec.hyperparameters
    if hp.learning_rate is not None:
        out.append(
            (
                "hyperparameters.learning_rate",
                f"{service} does not take an absolute learning rate; set learning_rate_multiplier "
                "(a factor on the service's own default) instead",
                _ALTERNATIVES_FOR_ADAPTERS,
            )
        )
    for name in ("warmup_ratio", "warmup_steps", "max_steps", "max_length"):
        if getattr(hp, name) is not None:
            out.append((f"hyperparameters.{name}", f"{service} does not take {name}", _ALTERNATIVES_FOR_ADAPTERS))
    for name, (low, high) in _RANGES.items():
        value = getattr(hp, name)
        if value is not None and not (low < value <= high if name == "beta" else low <= value <= high):
            bounds = f"({low:g}, {high:g}]" if name == "beta" else f"{low:g} to {high:g}"
            out.append((f"hyperparameters.{name}", f"{service} accepts {name} in {bounds}, not {value}", ()))
    if spec.lora is not None:
        out.append(
            (
                "lora",
                f"{service} does not take LoRA settings: the service chooses how the model is adapted",
                _ALTERNATIVES_FOR_ADAPTERS,
            )
        )
    if spec.quantization is not Quantization.NONE:
        out.append(
            (
                "quantization",
                f"{service} trains on its own hardware and takes no quantization setting",
                _ALTERNATIVES_FOR_ADAPTERS,
            )
        )
    if len(spec.tags) > 15:
        out.append(
            (
                "tags",
                f"{service} metadata holds 16 entries and anytune uses one for its idempotency "
                "tag: give at most 15 tags",
                (),
            )
        )
    if spec.openai is not None and spec.openai.reinforcement is not None and spec.method is not Method.SFT:
        out.append(
            (
                "openai.reinforcement",
                "openai.reinforcement makes the method 'reinforcement'; "
                f"it cannot be combined with method {spec.method.value!r}",
                (),
            )
        )
    suffix = spec.suffix
    if flavour == "azure":
        if suffix is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", suffix):
            out.append(("suffix", "Azure OpenAI suffixes hold 1-40 letters, digits, '-' or '_' (no '.')", ()))
        if spec.azure is not None:
            for name in ("deployment", "compute", "instance_type", "instance_count", "experiment_name"):
                if getattr(spec.azure, name) is not None:
                    out.append(
                        (
                            f"azure.{name}",
                            f"azure.{name} applies to Azure Machine Learning, not to "
                            "Azure OpenAI (only azure.training_type does)",
                            ("azureml",),
                        )
                    )
    return out


def build_create_body(
    spec: JobSpec,
    *,
    training_file: str,
    validation_file: str | None,
    idempotency_key: str,
    flavour: Literal["openai", "azure"],
) -> dict[str, Any]:
    """The JSON body of ``POST /fine_tuning/jobs`` for ``spec`` (pure; what ``plan`` shows is sent).

    Hyperparameters go under ``method.<type>.hyperparameters`` (the top-level ``hyperparameters`` is
    deprecated); ``anytune.idempotency_key`` joins the user's tags in ``metadata``.
    """
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
    options = spec.openai
    method: dict[str, Any]
    if options is not None and options.reinforcement is not None:
        reinforcement = dict(options.reinforcement)
        if hyper:
            reinforcement["hyperparameters"] = {**hyper, **dict(reinforcement.get("hyperparameters") or {})}
        method = {"type": "reinforcement", "reinforcement": reinforcement}
    else:
        kind = "dpo" if spec.method is Method.DPO else "supervised"
        method = {"type": kind, kind: {"hyperparameters": hyper}} if hyper else {"type": kind}
    body: dict[str, Any] = {"model": spec.base_model, "training_file": training_file}
    if validation_file is not None:
        body["validation_file"] = validation_file
    body["method"] = method
    if spec.suffix is not None:
        body["suffix"] = spec.suffix
    if hp.seed is not None:
        body["seed"] = hp.seed
    body["metadata"] = {**spec.tags, IDEMPOTENCY_TAG: idempotency_key}
    if options is not None and options.wandb is not None:
        wandb = options.wandb.model_dump(exclude_none=True)
        if not wandb.get("tags"):
            wandb.pop("tags", None)
        body["integrations"] = [{"type": "wandb", "wandb": wandb}]
    if flavour == "azure" and spec.azure is not None and spec.azure.training_type is not None:
        body["trainingType"] = spec.azure.training_type
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


def _split_body(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keyword arguments the SDK knows, the rest for ``extra_body``) - e.g. Azure's trainingType."""
    known = {k: v for k, v in body.items() if k in _SDK_CREATE_ARGS}
    extra = {k: v for k, v in body.items() if k not in _SDK_CREATE_ARGS}
    return known, extra


# -- service objects, mapped (pure) -----------------------------------------------------------------


def _ts(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return datetime.fromtimestamp(value, tz=timezone.utc)


def _num(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


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
    step = _num(data.get("step"))
    if step is None:
        step = _num(data.get("step_number"))
    if step is None:
        return None
    values: dict[str, Any] = {}
    extra: dict[str, float] = {}
    for key, raw in data.items():
        number = _num(raw)
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


def event_from_api(raw: Mapping[str, Any]) -> Event:
    """A uniform event from a ``fine_tuning.job.event`` (either service; Azure sends nulls)."""
    message = str(raw.get("message") or "")
    when = _ts(raw.get("created_at")) or utcnow()
    event_id = raw.get("id")
    if not event_id:  # very old api-versions: derive a stable id from what is there
        event_id = f"ev-{raw.get('created_at')}-{hashlib.sha1(message.encode()).hexdigest()[:12]}"
    level = _LEVELS.get(str(raw.get("level") or "info").lower())
    data = raw.get("data") if isinstance(raw.get("data"), Mapping) else None
    kind: EventKind = "log"
    status: JobStatus | None = None
    metric: MetricPoint | None = None
    checkpoint: Checkpoint | None = None
    if raw.get("type") == "metrics" or (data is not None and "train_loss" in data):
        metric = metric_from_data(data, time=when)
        kind = "metric" if metric is not None else "log"
    else:
        for pattern, rule_kind, rule_status in _MESSAGE_RULES:
            if pattern.search(message):
                kind, status = rule_kind, rule_status
                break
        if kind == "checkpoint":
            step = _STEP_IN_MESSAGE.search(message)
            if step:
                checkpoint = Checkpoint(step=int(step.group(1)), created_at=when)
            else:
                kind = "log"
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
    step = int(_num(raw.get("step_number")) or 0)
    given = raw.get("metrics")
    metrics: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    point = metric_from_data(
        {**{k: v for k, v in metrics.items() if k != "step"}, "step": step}, time=_ts(raw.get("created_at"))
    )
    return Checkpoint(
        step=step,
        id=raw.get("id"),
        model=raw.get("fine_tuned_model_checkpoint"),
        metrics=point,
        created_at=_ts(raw.get("created_at")),
    )


def record_from_job(provider: str, job: Mapping[str, Any], table: Mapping[str, JobStatus]) -> JobRecord:
    """A uniform record from a ``fine_tuning.job`` (Azure's nulls and extra fields included)."""
    raw_status = str(job.get("status") or "")
    error: JobError | None = None
    err = job.get("error")
    if isinstance(err, Mapping) and (err.get("message") or err.get("code")):
        error = JobError(
            message=str(err.get("message") or err.get("code")),
            code=str(err["code"]) if err.get("code") else None,
            param=str(err["param"]) if err.get("param") else None,
        )
    trained = _num(job.get("trained_tokens"))
    output = {
        k: job[k]
        for k in (
            "training_file",
            "validation_file",
            "result_files",
            "hyperparameters",
            "method",
            "seed",
            "estimated_finish",
            "organization_id",
            "trainingType",
            "user_provided_suffix",
        )
        if job.get(k) is not None
    }
    return JobRecord(
        provider=provider,
        id=str(job.get("id") or ""),
        status=map_status(raw_status, table),
        raw_status=raw_status,
        base_model=job.get("model"),
        fine_tuned_model=job.get("fine_tuned_model") or None,
        created_at=_ts(job.get("created_at")),
        finished_at=_ts(job.get("finished_at")),
        error=error,
        trained_tokens=int(trained) if trained is not None else None,
        output=output,
        raw=dict(job),
    )


def _as_dict(obj: Any) -> dict[str, Any]:
    """The JSON the service sent, from an SDK model (extra fields kept, nothing validated away)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict(mode="json", warnings=False))
    return dict(obj.model_dump(mode="json", warnings=False))


def detect_format(path: Path) -> str:
    """``chat``, ``prompt_completion``, ``preference`` or ``unknown``, from the first example."""
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                return "unknown"
            if isinstance(obj, dict):
                if "messages" in obj:
                    return "chat"
                if "preferred_output" in obj:
                    return "preference"
                if "prompt" in obj and "completion" in obj:
                    return "prompt_completion"
            return "unknown"
    return "unknown"


# -- files ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    md5: str


def file_digests(path: Path, chunk: int = 1 << 20) -> FileDigest:
    """Size, sha256 (reuse key) and md5 (what the Uploads API checks) in one streaming pass."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with path.open("rb") as f:
        while block := f.read(chunk):
            size += len(block)
            sha.update(block)
            md5.update(block)
    return FileDigest(size, sha.hexdigest(), md5.hexdigest())


def part_ranges(size: int, part_bytes: int) -> list[tuple[int, int]]:
    """(offset, length) of each part; an empty file is one empty part."""
    if size == 0:
        return [(0, 0)]
    return [(start, min(part_bytes, size - start)) for start in range(0, size, part_bytes)]


class FileSlice(io.RawIOBase):
    """A read-only window ``[offset, offset + length)`` of a file, opened on first read.

    Handed to the SDK as the part body: httpx streams it in 64 KiB chunks and can rewind it
    (``seek``) for a retry, so a part never sits in memory whole.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._path, self._offset, self._length = path, offset, length
        self._pos = 0
        self._file: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._length - self._pos)
        if want <= 0:
            return 0
        if self._file is None:
            self._file = self._path.open("rb")
        self._file.seek(self._offset + self._pos)
        got = self._file.readinto(view[:want])
        self._pos += got
        return got

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


# -- errors -----------------------------------------------------------------------------------------

_QUOTA_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded", "quotaexceeded", "billing_not_active"}
)
# Text only as a fallback for services that send no code.  Azure's throttling message links to a
# "quotaincrease" page, so a bare "quota" must not count: throttling is retried, quota is not.
_QUOTA_TEXT = re.compile(
    r"insufficient[ _]quota|exceeded your current quota|check your plan and billing|billing hard limit|"
    r"quota (is |has been )?exceeded|maximum number of (active|running|concurrent)",
    re.I,
)
_MODEL_CODES = frozenset(
    {
        "model_not_available",
        "invalid_model",
        "model_not_found",
        "unsupported_model",
        "modelnotavailable",
        "invalidmodel",
    }
)
_MODEL_TEXT = re.compile(
    r"not available for fine-?tuning|does not support fine-?tuning|cannot be fine-?tuned|"
    r"model .{0,80}(not (available|supported|found)|does not exist)|unsupported model",
    re.I,
)


def _openai_module() -> Any:
    return sys.modules.get("openai")


def _error_fields(exc: BaseException) -> tuple[str, str, str, str]:
    """(code, type, message, param) of an SDK status error, lower-cased where they are codes."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        return (
            str(body.get("code") or "").lower(),
            str(body.get("type") or "").lower(),
            str(body.get("message") or ""),
            str(body.get("param") or ""),
        )
    return "", "", str(getattr(exc, "message", "") or exc), ""


def _is_quota(exc: BaseException) -> bool:
    code, kind, message, _ = _error_fields(exc)
    return code in _QUOTA_CODES or kind in _QUOTA_CODES or bool(_QUOTA_TEXT.search(message))


def is_transient(exc: BaseException) -> bool:
    """Retry predicate: connection errors, timeouts, 408, 429 (unless it means quota) and 5xx."""
    openai = _openai_module()
    if openai is None:
        return False
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is one too
        return True
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429 and _is_quota(exc):
            return False
        return is_retryable_status(exc.status_code)
    return False


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed write may have happened anyway: the server may have acted before the
    timeout, the dropped connection, the 408 or the 5xx.  A 429 is refused before any work."""
    openai = _openai_module()
    if openai is None:
        return False
    if isinstance(exc, openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and (exc.status_code == 408 or exc.status_code >= 500)


def _redacted_body(body: Any) -> Any:
    if body is None:
        return None
    try:
        return orjson.loads(redact(orjson.dumps(body, default=str).decode()))
    except (TypeError, orjson.JSONDecodeError):
        return redact(str(body))


def _scrub(exc: BaseException) -> None:
    """Redact the SDK exception we chain as ``__cause__``: a printed traceback shows it, and services
    echo rejected keys back in their error messages."""
    exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
    for name in ("message", "body"):
        value = getattr(exc, name, None)
        if value is not None:
            with contextlib.suppress(AttributeError):  # read-only: nothing of ours to protect there
                setattr(exc, name, redact(value) if isinstance(value, str) else _redacted_body(value))


def _wind_down_message(service_message: str) -> str:
    if "scope" in service_message.lower():
        return (
            f"the API key may not create fine-tuning jobs ({service_message}); use a key with the "
            "fine-tuning write permission"
        )
    return (
        "OpenAI refused to create the fine-tuning job for this organisation "
        f"({service_message or 'permission denied'}). OpenAI is winding down self-serve fine-tuning: "
        "organisations without prior access can no longer create jobs. Run the same spec with "
        "provider='azure-openai' (the same API on your Azure subscription) or provider='local' "
        "(LoRA on your own GPU or CPU)"
    )


def translate_error(
    exc: BaseException,
    *,
    provider: str,
    flavour: str,
    what: str,
    job_id: str | None = None,
    creating: bool = False,
) -> AnytuneError | None:
    """The anytune error for an SDK (or azure-identity) exception, or None for anything else.

    One table for both services: the status code picks the family, the error body's code, type,
    param and message refine it (quota vs throttling, invalid file, model not available, OpenAI's
    refusal of fine-tuning to organisations without access).
    """
    openai = _openai_module()
    module = type(exc).__module__
    if module.startswith("azure."):
        if "Authentication" in type(exc).__name__ or "Credential" in type(exc).__name__:
            return AuthenticationError(
                f"{what}: Entra ID sign-in failed ({exc}). Sign in (`az login`, managed identity) or set "
                "AZURE_OPENAI_API_KEY / settings.api_key",
                provider=provider,
            )
        return ProviderError(f"{what}: {type(exc).__name__}: {exc}", provider=provider)
    if openai is None or not isinstance(exc, openai.OpenAIError):
        return None
    if isinstance(exc, openai.APITimeoutError):
        return ServiceUnavailableError(f"{what}: the service did not answer in time (after retries)", provider=provider)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {type(cause).__name__}" if cause is not None else ""
        return ServiceUnavailableError(f"{what}: connection failed{detail} (after retries)", provider=provider)
    if not isinstance(exc, openai.APIStatusError):
        return ProviderError(f"{what}: {exc}", provider=provider)
    status = exc.status_code
    code, _kind, message, param = _error_fields(exc)
    message = message or f"HTTP {status}"
    common: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "request_id": exc.request_id,
        "body": _redacted_body(exc.body),
    }
    if status == 401:
        return AuthenticationError(f"{what}: credentials rejected: {message}", **common)
    if status == 429 or (status in (400, 403) and _is_quota(exc)):
        if _is_quota(exc):
            return QuotaExceededError(f"{what}: quota or billing limit reached: {message}", **common)
        return RateLimitError(f"{what}: throttled: {message}", retry_after=retry_after_of(exc), **common)
    if status == 403:
        if creating and flavour == "openai":
            return PermissionDeniedError(_wind_down_message(message), **common)
        return PermissionDeniedError(f"{what}: permission denied: {message}", **common)
    if status >= 500 or status == 408:
        return ServiceUnavailableError(f"{what}: the service failed: {message} (after retries)", **common)
    if status in (400, 404, 422) and (param == "model" or code in _MODEL_CODES or _MODEL_TEXT.search(message)):
        return ModelNotAvailableError(f"{what}: the base model cannot be fine-tuned here: {message}", **common)
    if status == 404 and job_id is not None:
        hint = " (if every call fails like this, check endpoint and api_version)" if flavour == "azure" else ""
        return JobNotFoundError(f"{provider}:{job_id}", f"{message}{hint}")
    if param in ("training_file", "validation_file") or "file" in code:
        return InvalidRequestError(f"{what}: the service rejected {param or 'a data file'}: {message}", **common)
    return InvalidRequestError(f"{what}: {message}", **common)


# -- capabilities ------------------------------------------------------------------------------------

_COMMON_CAPS: dict[str, Any] = {
    "methods": frozenset({Method.SFT, Method.DPO}),
    "hyperparameters": frozenset({"epochs", "batch_size", "learning_rate_multiplier", "seed", "beta"}),
    "lora": False,
    "quantization": frozenset({Quantization.NONE}),
    "data_formats": frozenset({"chat", "prompt_completion", "preference"}),
    "suffix": True,
    "pause": True,
    "min_examples": 10,
}


# -- the adapter ----------------------------------------------------------------------------------------


class _OpenAIAdapter(Provider):
    """Everything the two services share; subclasses say who and where (client, URLs, quirks)."""

    flavour: ClassVar[Literal["openai", "azure"]]
    status_table: ClassVar[Mapping[str, JobStatus]]
    #: Azure imports uploaded files asynchronously; a job created on a file still importing fails.
    wait_for_file_processing: ClassVar[bool] = False
    poll_interval: ClassVar[float] = 10.0

    def __init__(
        self,
        settings: ProviderSettings | None = None,
        *,
        store: JobStore | None = None,
        home: Path | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        super().__init__(settings, store=store, home=home)
        self._hooks = hooks if hooks is not None else HOOKS
        self._config = self._resolve(os.environ)
        # Keys found in the environment were never seen by configuration: register them here so
        # that no message, log line or stored record can show them.
        register_secret(self._config.api_key)
        self._lock = threading.Lock()
        self._client_obj: OpenAI | None = None

    # -- who and where (subclasses) -------------------------------------------------------------
    @abc.abstractmethod
    def _resolve(self, env: Mapping[str, str]) -> ClientConfig: ...

    @abc.abstractmethod
    def _build_client(self, openai: Any, http_client: httpx2.Client | None, timeout: Any) -> OpenAI: ...

    @abc.abstractmethod
    def _url(self, path: str) -> str:
        """The full URL of an API path, for plans and messages."""

    @property
    def _s(self) -> _FamilySettings:
        assert isinstance(self.settings, _FamilySettings)
        return self.settings

    @property
    def _service(self) -> str:
        return "OpenAI" if self.flavour == "openai" else "Azure OpenAI"

    # -- plumbing ------------------------------------------------------------------------------
    def _client(self) -> OpenAI:
        with self._lock:
            if self._client_obj is None:
                try:
                    import openai
                except ImportError as exc:
                    extra = "openai" if self.flavour == "openai" else "azure"
                    raise MissingDependencyError("openai", extra, f"the {self.name!r} provider") from exc
                import httpx2

                # The SDK logs requests at debug level; make sure nothing it logs can show a key.
                install_log_filter(logging.getLogger("openai"))
                factory = self._hooks.http_client
                timeout = httpx2.Timeout(self._s.timeout, connect=self._s.connect_timeout)
                self._client_obj = self._build_client(openai, factory() if factory else None, timeout)
            return self._client_obj

    @property
    def _policy(self) -> RetryPolicy:
        s = self._s
        return RetryPolicy(max_attempts=s.max_attempts, deadline=s.retry_deadline, max_backoff=s.max_backoff)

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        """``fn`` under the read retry policy; SDK exceptions pass through untranslated."""
        return retry_call(
            fn,
            policy=self._policy,
            retry_on=is_transient,
            retry_after=retry_after_of,
            sleep=self._hooks.sleep,
            clock=self._hooks.clock,
            rand=self._hooks.rand,
            what=f"{self.name}: {what}",
        )

    @contextmanager
    def _translated(self, what: str, *, job_id: str | None = None, creating: bool = False) -> Iterator[None]:
        """The one place where SDK exceptions become anytune errors (raised ``from`` the original)."""
        try:
            yield
        except AnytuneError:
            raise
        except Exception as exc:
            mapped = translate_error(
                exc, provider=self.name, flavour=self.flavour, what=what, job_id=job_id, creating=creating
            )
            if mapped is None:
                raise
            _scrub(exc)
            raise mapped from exc

    def _call(self, what: str, fn: Callable[[], T], *, job_id: str | None = None) -> T:
        with self._translated(what, job_id=job_id):
            return self._retrying(what, fn)

    def _record(self, job: Any) -> JobRecord:
        return record_from_job(self.name, _as_dict(job), self.status_table)

    # -- validation and plan --------------------------------------------------------------------
    def validate(self, spec: JobSpec) -> None:
        """Service rules beyond the capability table: ranges, Azure's suffix rules, metadata room."""
        problems = spec_problems(spec, self.flavour)
        if problems:
            field_name, reason, alternatives = problems[0]
            if len(problems) > 1:
                reason += "; also " + "; ".join(f"{f}: {r}" for f, r, _ in problems[1:])
            raise NotSupportedError(reason, field=field_name, provider=self.name, alternatives=alternatives)

    def _needs_chat_conversion(self, spec: JobSpec, path: Path) -> bool:
        return not spec.base_model.startswith(_LEGACY_COMPLETION_MODELS) and detect_format(path) == "prompt_completion"

    def _planned_upload_requests(self, path: Path, digest: FileDigest) -> list[PlannedRequest]:
        s = self._s
        if digest.size <= s.upload_threshold_bytes:
            return [
                PlannedRequest(
                    operation=f"POST {self._url('/files')}",
                    body={
                        "purpose": "fine-tune",
                        "file": path.name,
                        "bytes": digest.size,
                        "sha256": digest.sha256,
                    },
                )
            ]
        parts = len(part_ranges(digest.size, s.upload_part_bytes))
        return [
            PlannedRequest(
                operation=f"POST {self._url('/uploads')}",
                body={
                    "filename": path.name,
                    "purpose": "fine-tune",
                    "bytes": digest.size,
                    "mime_type": "text/jsonl",
                },
            ),
            PlannedRequest(
                operation=f"POST {self._url('/uploads/<upload id>/parts')}",
                body={
                    "parts": parts,
                    "part_bytes": s.upload_part_bytes,
                    "concurrency": s.upload_concurrency,
                },
            ),
            PlannedRequest(
                operation=f"POST {self._url('/uploads/<upload id>/complete')}",
                body={
                    "part_ids": f"<{parts} part ids, in file order>",
                    "md5": digest.md5,
                },
            ),
        ]

    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        """Uploads (file, size, sha256; Files or Uploads API, parts) and the exact create body.

        No network: the job store is read to show which files would be reused.
        """
        uploads: list[PlannedUpload] = []
        requests: list[PlannedRequest] = []
        notes: list[str] = []
        ids: dict[str, str] = {}
        for role, given in (("training_file", spec.training_file), ("validation_file", spec.validation_file)):
            if given is None:
                continue
            path = Path(given)
            digest = file_digests(path)
            uploads.append(PlannedUpload(path=str(path), purpose="fine-tune", bytes=digest.size, sha256=digest.sha256))
            if self._needs_chat_conversion(spec, path):
                notes.append(
                    f"{path}: prompt/completion examples are converted to chat format before upload "
                    "(size and digest above are of the original)"
                )
                requests.append(
                    PlannedRequest(
                        operation=f"POST {self._url('/files')}",
                        body={"purpose": "fine-tune", "file": f"{path.stem}.chat.jsonl"},
                    )
                )
                ids[role] = f"<file id of {path.stem}.chat.jsonl>"
                continue
            reused = self.store.find_upload(self.name, self._config.scope, digest.sha256) if self.store else None
            if reused:
                notes.append(f"{path} was uploaded before as {reused}: reused if it still exists")
                ids[role] = reused
            else:
                requests.extend(self._planned_upload_requests(path, digest))
                ids[role] = f"<file id of {path.name}>"
        body = build_create_body(
            spec,
            training_file=ids["training_file"],
            validation_file=ids.get("validation_file"),
            idempotency_key=idempotency_key,
            flavour=self.flavour,
        )
        requests.append(PlannedRequest(operation=f"POST {self._url('/fine_tuning/jobs')}", body=body))
        notes.append(
            f"the job carries metadata[{IDEMPOTENCY_TAG!r}]; after an ambiguous failure the adapter "
            "looks it up before creating again, so one submit makes at most one job"
        )
        return SubmitPlan(provider=self.name, uploads=uploads, requests=requests, notes=notes)

    # -- uploads --------------------------------------------------------------------------------
    def _data_file(self, spec: JobSpec, path: Path) -> Path:
        """The file to upload: ``path``, or its chat conversion (cached by content)."""
        if not self._needs_chat_conversion(spec, path):
            return path
        from anytune._data.convert import convert_prompt_completion

        digest = file_digests(path).sha256
        target = self.home / "cache" / "openai" / f"{path.stem}-{digest[:16]}.chat.jsonl"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            convert_prompt_completion(path, target)
        return target

    def _reusable(self, file_id: str) -> bool:
        """Whether a recorded upload still exists and is usable on this account."""
        openai = self._client()
        try:
            info = _as_dict(self._retrying("checking a reused file", lambda: openai.files.retrieve(file_id)))
        except Exception as exc:
            module = _openai_module()
            if module is not None and isinstance(exc, module.NotFoundError):
                return False
            raise
        return str(info.get("status") or "") not in ("error", "deleted", "deleting")

    def _upload(self, path: Path, role: str) -> str:
        """Upload ``path`` once per account and content; return its file id."""
        digest = file_digests(path)
        scope = self._config.scope
        with self._translated(f"uploading {path.name}"):
            known = self.store.find_upload(self.name, scope, digest.sha256) if self.store else None
            if known is not None:
                if self._reusable(known):
                    logger.info("%s: reusing %s for %s (same content)", self.name, known, path)
                    return known
                if self.store is not None:
                    self.store.forget_upload(self.name, scope, digest.sha256)
            if digest.size <= self._s.upload_threshold_bytes:
                file_id = self._upload_small(path)
            else:
                file_id = self._upload_parts(path, digest)
            if self.wait_for_file_processing:
                self._wait_processed(file_id, path)
        if self.store is not None:
            self.store.record_upload(self.name, scope, digest.sha256, file_id, digest.size)
        logger.info("%s: uploaded %s as %s (%s)", self.name, path, file_id, role)
        return file_id

    def _upload_small(self, path: Path) -> str:
        client = self._client()

        def send() -> Any:
            # A fresh handle per attempt: httpx streams it, so memory does not grow with the file.
            with path.open("rb") as handle:
                return client.files.create(
                    file=(path.name, handle, "application/jsonl"), purpose="fine-tune", timeout=self._s.upload_timeout
                )

        return str(_as_dict(self._retrying(f"uploading {path.name}", send))["id"])

    def _upload_parts(self, path: Path, digest: FileDigest) -> str:
        """Uploads API: create, parts in parallel from disk, complete with ordered ids and md5."""
        client = self._client()
        s = self._s
        upload = _as_dict(
            self._retrying(
                f"starting the upload of {path.name}",
                lambda: client.uploads.create(
                    bytes=digest.size, filename=path.name, mime_type="text/jsonl", purpose="fine-tune"
                ),
            )
        )
        upload_id = str(upload["id"])
        started = _num(upload.get("created_at"))
        ranges = part_ranges(digest.size, s.upload_part_bytes)

        def send_part(offset: int, length: int) -> str:
            def attempt() -> Any:
                with FileSlice(path, offset, length) as part:
                    return client.uploads.parts.create(
                        upload_id,
                        data=(path.name, cast("IO[bytes]", part), "application/octet-stream"),
                        timeout=s.upload_timeout,
                    )

            return str(_as_dict(self._retrying(f"sending part at byte {offset} of {path.name}", attempt))["id"])

        try:
            with ThreadPoolExecutor(max_workers=s.upload_concurrency, thread_name_prefix="anytune-upload") as pool:
                futures: list[Future[str]] = [pool.submit(send_part, o, n) for o, n in ranges]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = next((f for f in done if f.exception() is not None), None)
                if failed is not None:
                    for f in futures:
                        f.cancel()
                    failed.result()  # raises the part's error
                part_ids = [f.result() for f in futures]
            return self._complete_upload(upload_id, part_ids, digest, path, started)
        except BaseException:
            self._cancel_upload(upload_id)
            raise

    def _complete_upload(
        self, upload_id: str, part_ids: list[str], digest: FileDigest, path: Path, started: float | None
    ) -> str:
        client = self._client()
        ambiguous = False

        def attempt() -> Any:
            nonlocal ambiguous
            try:
                return client.uploads.complete(upload_id, part_ids=part_ids, md5=digest.md5)
            except Exception as exc:
                ambiguous = ambiguous or is_ambiguous(exc)
                raise

        try:
            done = _as_dict(self._retrying(f"completing the upload of {path.name}", attempt))
        except Exception as exc:
            module = _openai_module()
            if not (
                ambiguous
                and module is not None
                and isinstance(exc, module.APIStatusError)
                and exc.status_code in (400, 409)
            ):
                raise
            # An earlier attempt completed the upload but its answer was lost; there is no GET for
            # uploads, so find the file it produced.
            found = self._find_completed_file(path.name, digest.size, started)
            if found is None:
                raise
            return found
        file_obj = done.get("file") if isinstance(done.get("file"), Mapping) else None
        if not file_obj or not file_obj.get("id"):
            raise InvalidRequestError(
                f"completing the upload of {path.name}: the service returned no file", provider=self.name
            )
        return str(file_obj["id"])

    def _find_completed_file(self, filename: str, size: int, since: float | None) -> str | None:
        client = self._client()
        page = self._retrying(
            "looking up the uploaded file", lambda: client.files.list(purpose="fine-tune", limit=100, order="desc")
        )
        for item in (_as_dict(f) for f in page.data):
            created = _num(item.get("created_at")) or 0.0
            if item.get("filename") == filename and item.get("bytes") == size and (since is None or created >= since):
                return str(item["id"])
        return None

    def _cancel_upload(self, upload_id: str) -> None:
        try:
            self._client().uploads.cancel(upload_id)
        except Exception as exc:  # best effort: an abandoned upload expires on its own
            logger.info("%s: could not cancel upload %s: %s", self.name, upload_id, type(exc).__name__)

    def _wait_processed(self, file_id: str, path: Path) -> None:
        """Wait while the service imports the file (Azure: pending/running -> processed)."""
        client = self._client()
        deadline = self._hooks.clock() + self._s.file_processing_timeout
        polls = 0
        while True:
            info = _as_dict(self._retrying("checking the uploaded file", lambda: client.files.retrieve(file_id)))
            status = str(info.get("status") or "")
            if status in ("error", "failed"):
                detail = info.get("status_details") or "no details"
                raise InvalidRequestError(
                    f"{path.name}: the service could not import the file: {detail}", provider=self.name
                )
            if status not in ("pending", "running"):
                return
            if self._hooks.clock() >= deadline:
                raise ServiceUnavailableError(
                    f"{path.name}: still being imported after {self._s.file_processing_timeout:g} s", provider=self.name
                )
            self._hooks.sleep(min(30.0, 1.0 * 1.5**polls))
            polls += 1

    # -- create ------------------------------------------------------------------------------------
    def _find_job(self, key: str) -> JobRecord | None:
        """The job carrying idempotency ``key``, if one was created (checked on our side too)."""
        client = self._client()
        cutoff = time.time() - self._s.lookup_window
        after: str | None = None
        for _ in range(_LOOKUP_MAX_PAGES):
            kwargs: dict[str, Any] = {"limit": 100, "metadata": {IDEMPOTENCY_TAG: key}}
            if after is not None:
                kwargs["after"] = after
            page = self._call(
                "looking up the job by its idempotency tag", functools.partial(client.fine_tuning.jobs.list, **kwargs)
            )
            jobs = [_as_dict(j) for j in page.data]
            for job in jobs:
                metadata = job.get("metadata")
                if isinstance(metadata, Mapping) and metadata.get(IDEMPOTENCY_TAG) == key:
                    return self._record(job)
            oldest = _num(jobs[-1].get("created_at")) if jobs else None
            if not jobs or page.has_more is False or (oldest is not None and oldest < cutoff):
                return None
            after = str(jobs[-1]["id"])
        return None

    def _create_job(self, body: Mapping[str, Any], key: str) -> JobRecord:
        client = self._client()
        known, extra = _split_body(body)
        ambiguous = False

        def attempt() -> JobRecord:
            nonlocal ambiguous
            if ambiguous:
                found = self._find_job(key)
                if found is not None:
                    logger.info("%s: the job was created by an earlier attempt: %s", self.name, found.id)
                    return found
            try:
                job = client.fine_tuning.jobs.create(**known, extra_body=extra or None)
            except Exception as exc:
                ambiguous = ambiguous or is_ambiguous(exc)
                raise
            return self._record(job)

        with self._translated("creating the fine-tuning job", creating=True):
            try:
                return self._retrying("creating the fine-tuning job", attempt)
            except Exception as exc:
                if ambiguous and is_transient(exc):
                    found = self._find_job(key)  # the last attempt may have gone through
                    if found is not None:
                        return found
                raise

    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        """Upload (or reuse) the files and create the job, at most once for ``idempotency_key``."""
        existing = self._find_job(idempotency_key)  # a retried submit, from any process
        if existing is not None:
            return existing
        training = self._upload(self._data_file(spec, Path(spec.training_file)), "training")
        validation = (
            self._upload(self._data_file(spec, Path(spec.validation_file)), "validation")
            if spec.validation_file is not None
            else None
        )
        body = build_create_body(
            spec,
            training_file=training,
            validation_file=validation,
            idempotency_key=idempotency_key,
            flavour=self.flavour,
        )
        return self._create_job(body, idempotency_key)

    # -- tracking ------------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        client = self._client()
        return self._record(
            self._call("reading the job", lambda: client.fine_tuning.jobs.retrieve(job_id), job_id=job_id)
        )

    def list(self, limit: int = 20) -> builtins.list[JobRecord]:
        client = self._client()
        page = self._call("listing jobs", lambda: client.fine_tuning.jobs.list(limit=limit))
        return [self._record(j) for j in page.data][:limit]

    def _raw_events_after(self, job_id: str, after: str | None) -> builtins.list[dict[str, Any]]:
        """Events newer than ``after`` (all when None or not found), newest first, no repeats."""
        client = self._client()
        size = self._s.events_page_size
        newer: builtins.list[dict[str, Any]] = []
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": size}
            if cursor is not None:
                kwargs["after"] = cursor
            fetch = functools.partial(client.fine_tuning.jobs.list_events, job_id, **kwargs)
            page = self._call("listing events", fetch, job_id=job_id)
            items = [_as_dict(e) for e in page.data]
            for item in items:
                event_id = str(item.get("id") or "")
                if after is not None and event_id == after:
                    return newer
                if event_id and event_id in seen:
                    continue
                seen.add(event_id)
                newer.append(item)
            more = page.has_more if page.has_more is not None else len(items) >= size
            if not items or not more:
                return newer
            cursor = str(items[-1].get("id"))

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        """Events oldest first, strictly after event ``after``: the service pages newest first, so
        this pages back until it meets ``after`` and returns what it passed, reversed."""
        raw = self._raw_events_after(job_id, after)
        return iter([event_from_api(item) for item in reversed(raw)])

    def checkpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        client = self._client()
        found: dict[int, Checkpoint] = {}
        cursor: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 100}
            if cursor is not None:
                kwargs["after"] = cursor
            fetch = functools.partial(client.fine_tuning.jobs.checkpoints.list, job_id, **kwargs)
            page = self._call("listing checkpoints", fetch, job_id=job_id)
            items = [_as_dict(c) for c in page.data]
            for item in items:
                checkpoint = checkpoint_from_api(item)
                found[checkpoint.step] = checkpoint
            if not items or page.has_more is False or (page.has_more is None and len(items) < 100):
                break
            cursor = str(items[-1].get("id"))
        return [found[s] for s in sorted(found)]

    def _result_points(self, record: JobRecord) -> builtins.list[MetricPoint]:
        client = self._client()
        points: builtins.list[MetricPoint] = []
        for file_id in record.output.get("result_files") or []:
            content = self._call(
                "downloading the result file", functools.partial(lambda f: client.files.content(f).read(), str(file_id))
            )
            points.extend(parse_result_csv(decode_result_file(content)))
        return points

    def _metrics(self, record: JobRecord, checkpoints: Sequence[Checkpoint]) -> builtins.list[MetricPoint]:
        from_events = [e.metric for e in self.events(record.id) if e.metric is not None]
        from_checkpoints = [c.metrics for c in checkpoints if c.metrics is not None]
        return merge_points(from_events, from_checkpoints, self._result_points(record))

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        """Metric events, checkpoint metrics and the result-file CSV, merged by step."""
        return self._metrics(self.get(job_id), self.checkpoints(job_id))

    def result(self, record: JobRecord) -> FineTunedModel:
        checkpoints = self.checkpoints(record.id)
        points = self._metrics(record, checkpoints)
        return FineTunedModel(
            provider=record.provider,
            job_ref=record.ref,
            base_model=record.base_model,
            model_id=record.fine_tuned_model,
            checkpoints=tuple(checkpoints),
            final_metrics=points[-1] if points else None,
            trained_tokens=record.trained_tokens,
            extra={"result_files": list(record.output.get("result_files") or [])},
        )

    # -- control -----------------------------------------------------------------------------------
    def _control(
        self, verb: str, job_id: str, call: Callable[[], Any], settled: Callable[[JobRecord], bool]
    ) -> JobRecord:
        """cancel/pause/resume: retried like reads; a refusal because the job is already where we
        asked (an earlier attempt went through, or it ended) returns the job as it is."""
        try:
            return self._record(self._call(f"{verb} the job", call, job_id=job_id))
        except InvalidRequestError:
            record = self.get(job_id)
            if settled(record):
                return record
            raise

    def cancel(self, job_id: str) -> JobRecord:
        client = self._client()
        return self._control("cancelling", job_id, lambda: client.fine_tuning.jobs.cancel(job_id), lambda r: r.done)

    def pause(self, job_id: str) -> JobRecord:
        client = self._client()
        return self._control(
            "pausing",
            job_id,
            lambda: client.fine_tuning.jobs.pause(job_id),
            lambda r: r.status is JobStatus.PAUSED or r.done,
        )

    def resume(self, job_id: str) -> JobRecord:
        client = self._client()
        return self._control(
            "resuming",
            job_id,
            lambda: client.fine_tuning.jobs.resume(job_id),
            lambda r: r.status is not JobStatus.PAUSED,
        )


class OpenAIProvider(_OpenAIAdapter):
    """OpenAI's fine-tuning API (``api.openai.com`` or any ``base_url`` speaking it)."""

    name: ClassVar[str] = "openai"
    flavour: ClassVar[Literal["openai", "azure"]] = "openai"
    status_table: ClassVar[Mapping[str, JobStatus]] = OPENAI_STATUS
    Settings: ClassVar[type[ProviderSettings]] = OpenAISettings
    capabilities: ClassVar[Capabilities] = Capabilities(
        **_COMMON_CAPS,
        sections=frozenset({"openai"}),
        max_file_bytes=8 * 1024**3,  # the Uploads API limit
        notes="hosted; supervised, DPO and reinforcement (openai.reinforcement); epochs, batch size, "
        "learning-rate multiplier, seed; W&B via openai.wandb",
    )

    def _resolve(self, env: Mapping[str, str]) -> ClientConfig:
        assert isinstance(self.settings, OpenAISettings)
        return openai_client_config(self.settings, env)

    def _url(self, path: str) -> str:
        return f"{self._config.base_url}{path}"

    def _build_client(self, openai: Any, http_client: httpx2.Client | None, timeout: Any) -> OpenAI:
        cfg = self._config
        if not cfg.api_key:
            raise ConfigError(
                f"no OpenAI API key: set {cfg.key_source}, or settings api_key / api_key_env", field="settings.api_key"
            )
        client: OpenAI = openai.OpenAI(
            api_key=cfg.api_key,
            base_url=cfg.base_url,
            organization=cfg.organization,
            project=cfg.project,
            max_retries=0,
            timeout=timeout,
            http_client=http_client,
        )
        return client


class AzureOpenAIProvider(_OpenAIAdapter):
    """Azure OpenAI's fine-tuning API: the same shapes on ``{endpoint}/openai/...?api-version=``."""

    name: ClassVar[str] = "azure-openai"
    flavour: ClassVar[Literal["openai", "azure"]] = "azure"
    status_table: ClassVar[Mapping[str, JobStatus]] = AZURE_STATUS
    wait_for_file_processing: ClassVar[bool] = True
    Settings: ClassVar[type[ProviderSettings]] = AzureOpenAISettings
    capabilities: ClassVar[Capabilities] = Capabilities(
        **_COMMON_CAPS,
        sections=frozenset({"openai", "azure"}),
        notes="hosted on your Azure subscription; azure.training_type standard/globalstandard/developer; "
        "API key or Entra ID",
    )

    def _resolve(self, env: Mapping[str, str]) -> ClientConfig:
        assert isinstance(self.settings, AzureOpenAISettings)
        return azure_client_config(self.settings, env)

    def _url(self, path: str) -> str:
        endpoint = self._config.base_url or "<AZURE_OPENAI_ENDPOINT>"
        return f"{endpoint}/openai{path}?api-version={self._config.api_version}"

    def _token_provider(self) -> Callable[[], str]:
        factory = self._hooks.azure_token_provider
        if factory is not None:
            return factory()
        try:
            from azure.identity import DefaultAzureCredential, get_bearer_token_provider
        except ImportError as exc:
            raise MissingDependencyError("azure-identity", "azure", "Entra ID sign-in for 'azure-openai'") from exc
        provider: Callable[[], str] = get_bearer_token_provider(DefaultAzureCredential(), self._config.token_scope)
        return provider

    def _build_client(self, openai: Any, http_client: httpx2.Client | None, timeout: Any) -> OpenAI:
        cfg = self._config
        if not cfg.base_url:
            raise ConfigError(
                "no Azure OpenAI endpoint: set AZURE_OPENAI_ENDPOINT or settings endpoint", field="settings.endpoint"
            )
        if not cfg.api_key and not cfg.entra:
            raise ConfigError(
                f"no Azure OpenAI API key: set {cfg.key_source} or settings api_key, or use auth = 'entra'",
                field="settings.api_key",
            )
        credentials: dict[str, Any] = (
            {"api_key": cfg.api_key} if cfg.api_key else {"azure_ad_token_provider": self._token_provider()}
        )
        try:
            client: OpenAI = openai.AzureOpenAI(
                azure_endpoint=cfg.base_url,
                api_version=cfg.api_version,
                max_retries=0,
                timeout=timeout,
                http_client=http_client,
                **credentials,
            )
        except (ValueError, openai.OpenAIError) as exc:
            raise ConfigError(f"cannot build the Azure OpenAI client: {exc}", field="settings") from exc
        return client
