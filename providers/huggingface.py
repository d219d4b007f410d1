"""Hugging Face Jobs: anytune's own trainer on Hugging Face hardware, the adapter pushed to the Hub.

A job runs exactly what the ``local`` provider runs (chat template, assistant-only loss, LoRA/QLoRA,
DPO: :func:`anytune.local_backend.train.run_training`), on the flavor ``hf.flavor`` asks for.

How the job gets anytune's trainer, and why this way:

* anytune need not be on PyPI, and a user's local changes should run remotely as they run locally.
  So ``submit`` builds a wheel of the *running* anytune (pure Python; the installed files, zipped
  deterministically, with the installed distribution's metadata: its ``local`` extra pulls torch,
  transformers, peft, accelerate, bitsandbytes) and uploads it, content-addressed, to the private
  dataset repo that also holds the data.
* The job uses the stock ``uv`` image. Its command is two ``uv run`` stages: a tiny bootstrap with
  only ``huggingface_hub`` downloads the wheel (the token comes from the job *secret* ``HF_TOKEN``)
  and replaces itself (``exec``) with ``uv run --with "anytune[local] @ file://...whl" --with
  torch==... python -m anytune.local_backend.hf_job ...``: the trainer with pinned dependencies.
* :mod:`anytune.local_backend.hf_job` downloads the dataset files, builds a run directory, calls
  ``run_training``, prints one ``ANYTUNE_METRIC {json}`` line per logging step, and pushes the
  adapter, tokenizer, metrics, resolved spec and result to the output model repo (private unless
  ``hf.private`` is false) in one commit, whose revision it prints on an ``ANYTUNE_RESULT`` line.

Reliability, and why:

* Data and wheel live under content-addressed paths (``anytune/data/<sha256>.jsonl``): the job store
  remembers what was sent where, and the Hub's own preupload check skips a file whose content the
  repo already holds, so the same bytes are never sent twice.
* A create carries the label ``anytune-idempotency_key`` (labels allow no dots). Before creating, and
  after an ambiguous failure (dropped connection, 408, 5xx), jobs with that label are looked up.
* Reads retry on 408/429/5xx and connection errors, honouring ``Retry-After``, within a deadline.
* Events: stage changes and the job's log, which the Hub replays from its first line on every read;
  a log line's event id is its index in that replay, so polls and reconnects (a dropped stream is
  read again) neither lose nor repeat an event. Status events take fixed ids around the log:
  scheduled ``0``, running ``1``, log line ``i`` at ``i + 2``, the final stage last.
* The token is resolved like huggingface_hub does (``settings.token``, ``HF_TOKEN``, the cached login
  of ``hf auth login``), registered for redaction, and handed to the job only as a secret.

huggingface_hub is imported on first use: capabilities and dry-run plans never need it. Every
huggingface_hub (and httpx2) exception becomes an anytune error in one place (:meth:`_boundary`).
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import hashlib
import io
import json
import logging
import os
import random
import re
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import Field, SecretStr

from anytune._capabilities import Capabilities
from anytune._provider import (
    IDEMPOTENCY_TAG,
    PlannedRequest,
    PlannedUpload,
    Provider,
    ProviderSettings,
    SubmitPlan,
    file_digest,
)
from anytune._retry import RetryPolicy, is_retryable_status, retry_after_of, retry_call
from anytune._secrets import install_log_filter, redact, register_secret
from anytune._spec import HFOptions, JobSpec, LocalOptions, Method, Quantization
from anytune._store import JobStore
from anytune._types import Event, FineTunedModel, JobError, JobRecord, JobStatus, MetricPoint
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
from anytune.local_backend.joblog import (
    ERROR_PREFIX,
    LOG_ERROR_PREFIX,
    METRIC_PREFIX,
    RESULT_PREFIX,
    WARNING_PREFIX,
    LineKind,
    parse_line,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi, JobInfo

__all__ = [
    "DEFAULT_IMAGE",
    "ERROR_PREFIX",
    "HF_STAGE",
    "HOOKS",
    "JOB_REQUIREMENTS",
    "LABEL_KEY",
    "METRIC_PREFIX",
    "RESULT_PREFIX",
    "Hooks",
    "HuggingFaceProvider",
    "HuggingFaceSettings",
    "JobFiles",
    "JobView",
    "build_job_request",
    "build_wheel",
    "job_command",
    "job_events",
    "map_stage",
    "parse_line",
    "record_from_view",
    "translate_error",
]

T = TypeVar("T")
logger = logging.getLogger("anytune.providers.huggingface")

NAME = "huggingface"
DEFAULT_ENDPOINT = "https://huggingface.co"
#: huggingface_hub's default image for uv jobs: Debian with Python 3.12 and uv.
DEFAULT_IMAGE = "ghcr.io/astral-sh/uv:python3.12-bookworm"
#: Job labels allow letters, digits, '-' and '_' only, so the tag's dot becomes a dash.
LABEL_KEY = IDEMPOTENCY_TAG.replace(".", "-")
#: The bootstrap stage needs only the Hub client, to fetch the wheel.
HUB_CLIENT = "huggingface_hub==2.4.0"
#: What the training stage pins, on top of ``anytune[local]`` (the versions anytune is tested with;
#: ``settings.requirements`` replaces any of them by name or adds more).
JOB_REQUIREMENTS: tuple[str, ...] = (
    "torch==2.13.0",
    "transformers==5.23.0",
    "peft==0.21.2",
    "accelerate==1.15.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "bitsandbytes==0.50.2",
    "huggingface_hub==2.4.0",
)
ENTRY_MODULE = "anytune.local_backend.hf_job"
WHEEL_PLACEHOLDER = "@ANYTUNE_WHEEL@"
DATA_DIR = "anytune/data"
WHEEL_DIR = "anytune/wheels"

# The line protocol between the job (anytune.local_backend.hf_job writes) and this adapter (reads).

#: The bootstrap: fetch the wheel from the dataset repo (authenticated by the HF_TOKEN secret), then
#: become the training stage with the wheel's file URL in its requirement. Short on purpose: it is
#: shown in the job's command on the Hub.
BOOTSTRAP = (
    "import os, sys, tempfile\n"
    "from huggingface_hub import hf_hub_download\n"
    "repo, path = sys.argv[1], sys.argv[2]\n"
    "rest = sys.argv[sys.argv.index('--') + 1:]\n"
    "wheel = hf_hub_download(repo, path, repo_type='dataset', local_dir=tempfile.mkdtemp(prefix='anytune-'))\n"
    "url = 'file://' + os.path.abspath(wheel)\n"
    f"args = [a.replace({WHEEL_PLACEHOLDER!r}, url) if a.startswith('anytune[') else a for a in rest]\n"
    "print('[anytune] installing the trainer:', os.path.basename(wheel), flush=True)\n"
    "os.execvp(args[0], args)\n"
)

# -- stages (pure) ----------------------------------------------------------------------------------

#: Hugging Face Jobs stages. ``UPDATING`` is a running job whose settings (labels, ports) change;
#: ``DELETED`` is a job removed by its owner: it stopped without a result, as a cancel does.
HF_STAGE: Mapping[str, JobStatus] = {
    "SCHEDULING": JobStatus.QUEUED,
    "RUNNING": JobStatus.RUNNING,
    "UPDATING": JobStatus.RUNNING,
    "COMPLETED": JobStatus.SUCCEEDED,
    "CANCELED": JobStatus.CANCELLED,
    "ERROR": JobStatus.FAILED,
    "DELETED": JobStatus.CANCELLED,
}


def map_stage(stage: str | None) -> JobStatus:
    """The uniform status of a Jobs stage.

    An unknown stage (the service adding one) maps to ``running``: not terminal, so ``wait`` keeps
    polling instead of reporting an outcome that did not happen; the raw stage stays on the record.
    """
    found = HF_STAGE.get((stage or "").upper())
    if found is None:
        logger.warning("unknown Hugging Face job stage %r; treating it as running", stage)
        return JobStatus.RUNNING
    return found


# -- settings and hooks -----------------------------------------------------------------------------


class HuggingFaceSettings(ProviderSettings):
    """``huggingface`` settings (profiles, ``ANYTUNE_HUGGINGFACE_<SETTING>``, arguments).

    Unset values come from huggingface_hub's own sources: the token from ``HF_TOKEN`` (or the
    variable named by ``token_env``) and then the cached login of ``hf auth login``; the endpoint
    from ``HF_ENDPOINT``.
    """

    token: SecretStr | None = None
    token_env: str | None = Field(None, description="environment variable holding the token")
    endpoint: str | None = Field(None, description="Hub URL (default HF_ENDPOINT, then huggingface.co)")
    namespace: str | None = Field(None, description="user or organisation running jobs (default: the token's user)")
    image: str = Field(DEFAULT_IMAGE, description="Docker image with uv and Python")
    python: str = Field("3.12", description="Python version uv runs the trainer with")
    requirements: list[str] = Field(
        default_factory=list, description="pip requirements replacing (by name) or adding to the pinned ones"
    )
    max_attempts: int = Field(6, ge=1, le=50, description="attempts per call, the first included")
    retry_deadline: float = Field(300.0, gt=0, description="seconds after which no retry is started")
    max_backoff: float = Field(30.0, gt=0, description="cap on any single wait between attempts")
    error_log_lines: int = Field(20, ge=0, le=1000, description="log lines a failed job's error carries")


@dataclass
class Hooks:
    """Process-wide injection points (tests swap them): how retries sleep, their clock and jitter."""

    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random


HOOKS = Hooks()

# -- names (pure) -----------------------------------------------------------------------------------

_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_TIMEOUT = re.compile(r"^\d+(\.\d+)?[smhd]?$")


def _sanitize(value: str, limit: int = 100) -> str:
    """A label key or value: letters, digits, '-' and '_' only, at most ``limit`` characters."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", value)[:limit] or "-"


def _repo_name(value: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-.")
    return name[:96] or "anytune"


def _qualified(repo: str, namespace: str) -> str:
    return repo if "/" in repo else f"{namespace}/{repo}"


def _check_repo_id(value: str, field: str) -> None:
    parts = value.split("/")
    if len(parts) > 2 or not all(_REPO_PART.match(p) for p in parts):
        raise ConfigError(
            f"{value!r} is not a Hub repo id (NAME or NAMESPACE/NAME: letters, digits, '-', '_', '.')", field=field
        )


def default_output_repo(spec: JobSpec, namespace: str, key: str) -> str:
    """``hf.output_repo`` (a bare name goes under ``namespace``), else a name from the spec that a
    retried submit (same idempotency key) gives again."""
    options = spec.hf or HFOptions()
    if options.output_repo:
        return _qualified(options.output_repo, namespace)
    if spec.output_name:
        return f"{namespace}/{_repo_name(spec.output_name)}"
    base = spec.base_model.rstrip("/").split("/")[-1]
    return f"{namespace}/{_repo_name(f'{base}-{spec.suffix or spec.method.value}-{key[:8]}')}"


def default_dataset_repo(spec: JobSpec, namespace: str) -> str:
    options = spec.hf or HFOptions()
    return _qualified(options.dataset_repo, namespace) if options.dataset_repo else f"{namespace}/anytune-datasets"


# -- the wheel of this installation (pure given the installed files) --------------------------------

_WHEEL_SUFFIXES = frozenset({".py", ".pyi", ".typed", ".json", ".jsonl", ".jinja", ".txt"})
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def package_files() -> dict[str, Path]:
    """The files of the running anytune, by their path inside a wheel (``anytune/...``).

    Follows where Python imports each part from, so an editable install (``sdk/``, ``providers/``,
    ``local_backend/`` mapped into one package) and a regular one give the same wheel.
    """
    import anytune
    import anytune.local_backend
    import anytune.providers

    roots = {
        "anytune": Path(anytune.__file__).parent,
        "anytune/providers": Path(anytune.providers.__file__).parent,
        "anytune/local_backend": Path(anytune.local_backend.__file__).parent,
    }
    files: dict[str, Path] = {}
    for prefix, root in roots.items():
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if (
                path.is_file()
                and path.suffix in _WHEEL_SUFFIXES
                and not any(p == "__pycache__" or p.startswith(".") for p in rel.parts)
            ):
                files[f"{prefix}/{rel.as_posix()}"] = path
    return files


def _wheel_metadata(version: str) -> str:
    from importlib import metadata

    try:
        installed = metadata.metadata("anytune")
    except metadata.PackageNotFoundError as exc:
        raise ConfigError(
            "anytune is not installed as a distribution (pip install -e . or pip install anytune): "
            "the Hugging Face job installs a wheel built from its metadata"
        ) from exc
    lines = ["Metadata-Version: 2.1", "Name: anytune", f"Version: {version}"]
    lines += [f"Requires-Python: {v}" for v in installed.get_all("Requires-Python") or []]
    lines += [f"Provides-Extra: {e}" for e in installed.get_all("Provides-Extra") or []]
    lines += [f"Requires-Dist: {r}" for r in installed.get_all("Requires-Dist") or []]
    return "\n".join(lines) + "\n"


def build_wheel() -> tuple[str, bytes]:
    """A py3-none-any wheel of the running anytune: ``(file name, bytes)``.

    Deterministic (sorted entries, fixed timestamps and modes): the same files give the same bytes,
    hence the same sha256, so an unchanged installation is uploaded once.
    """
    from anytune._version import __version__

    version = __version__.replace("-", "_")
    dist_info = f"anytune-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [(name, path.read_bytes()) for name, path in sorted(package_files().items())]
    entries.append((f"{dist_info}/METADATA", _wheel_metadata(__version__).encode()))
    entries.append(
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: anytune\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    )
    record = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return f"anytune-{version}-py3-none-any.whl", buffer.getvalue()


# -- the job request (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFiles:
    """Where a job's inputs live in the dataset repo."""

    dataset_repo: str
    train: str
    valid: str | None
    wheel: str


def data_path(sha256: str) -> str:
    return f"{DATA_DIR}/{sha256}.jsonl"


def wheel_path(filename: str, sha256: str) -> str:
    return f"{WHEEL_DIR}/{sha256[:16]}/{filename}"


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def job_requirements(overrides: Sequence[str] = ()) -> list[str]:
    """The pinned requirements of the training stage; ``overrides`` replace pins of the same name."""
    given = {_requirement_name(r): r for r in overrides}
    pinned = [given.pop(_requirement_name(r), r) for r in JOB_REQUIREMENTS]
    return pinned + list(given.values())


def job_spec_json(spec: JobSpec) -> str:
    """The spec the job trains with: what the user set, without the local file paths (the job
    downloads the files) and without the ``hf`` section (it concerns the submitter only)."""
    data = spec.model_dump(
        mode="json", exclude_none=True, exclude_defaults=True, exclude={"training_file", "validation_file", "hf"}
    )
    data["base_model"] = spec.base_model
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def job_command(
    spec: JobSpec,
    files: JobFiles,
    *,
    output_repo: str,
    private: bool,
    python: str = "3.12",
    requirements: Sequence[str] = (),
) -> list[str]:
    """The job's command: bootstrap (fetch the wheel), then the trainer with pinned dependencies."""
    entry = ["--dataset-repo", files.dataset_repo, "--train", files.train]
    if files.valid is not None:
        entry += ["--valid", files.valid]
    entry += ["--output-repo", output_repo, "--private" if private else "--public", "--spec", job_spec_json(spec)]
    trainer = ["uv", "run", "--no-project", "--python", python, "--with", f"anytune[local] @ {WHEEL_PLACEHOLDER}"]
    for requirement in job_requirements(requirements):
        trainer += ["--with", requirement]
    trainer += ["python", "-m", ENTRY_MODULE, *entry]
    return [
        "uv",
        "run",
        "--no-project",
        "--python",
        python,
        "--with",
        HUB_CLIENT,
        "python",
        "-c",
        BOOTSTRAP,
        files.dataset_repo,
        files.wheel,
        "--",
        *trainer,
    ]


def entry_args(command: Sequence[str]) -> list[str]:
    """The arguments of ``python -m anytune.local_backend.hf_job`` inside a job command."""
    for i in range(len(command) - 1):
        if command[i] == "-m" and command[i + 1] == ENTRY_MODULE:
            return list(command[i + 2 :])
    return []


def job_labels(spec: JobSpec, key: str) -> dict[str, str]:
    labels = {_sanitize(f"anytune-tag-{k}"): _sanitize(v) for k, v in sorted(spec.tags.items())}
    labels.update({LABEL_KEY: _sanitize(key), "anytune-method": spec.method.value})
    return labels


def build_job_request(
    spec: JobSpec,
    key: str,
    files: JobFiles,
    *,
    namespace: str,
    output_repo: str,
    settings: HuggingFaceSettings,
    endpoint: str,
) -> dict[str, Any]:
    """The keyword arguments of ``HfApi.run_job`` except ``secrets`` (added at submit time only)."""
    options = spec.hf or HFOptions()
    env = {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "UV_NO_PROGRESS": "1"}
    if endpoint.rstrip("/") != DEFAULT_ENDPOINT:
        env["HF_ENDPOINT"] = endpoint
    return {
        "image": settings.image,
        "command": job_command(
            spec,
            files,
            output_repo=output_repo,
            private=options.private,
            python=settings.python,
            requirements=settings.requirements,
        ),
        "env": env,
        "flavor": options.flavor,
        "timeout": options.timeout,
        "labels": job_labels(spec, key),
        "name": _sanitize(f"anytune-{output_repo.split('/')[-1]}", 64),
        "namespace": namespace,
    }


# -- the job's log (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """What anytune reads from a Jobs API job (``JobInfo``), independent of the SDK's classes."""

    id: str
    namespace: str
    stage: str
    message: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    flavor: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    command: Sequence[str] = ()
    url: str | None = None
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ref_id(self) -> str:
        return f"{self.namespace}/{self.id}"

    def arg(self, name: str) -> str | None:
        args = entry_args(self.command)
        return args[args.index(name) + 1] if name in args[:-1] else None

    @property
    def output_repo(self) -> str | None:
        return self.arg("--output-repo")

    @property
    def base_model(self) -> str | None:
        raw = self.arg("--spec")
        try:
            value = json.loads(raw).get("base_model") if raw else None
        except ValueError:
            return None
        return value if isinstance(value, str) else None


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def view_from_info(info: JobInfo, namespace: str | None = None) -> JobView:
    """A :class:`JobView` of huggingface_hub's ``JobInfo`` (secrets keep their names only)."""
    fields = dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(vars(info))
    raw = {k: v for k, v in fields.items() if k != "secrets"}
    raw["secrets"] = sorted(info.secrets or {})  # names only
    stage = info.status.stage
    return JobView(
        id=info.id,
        namespace=namespace or info.owner.name,
        stage=str(getattr(stage, "value", stage)),
        message=info.status.message,
        created_at=info.created_at,
        started_at=info.started_at,
        finished_at=info.finished_at,
        flavor=str(getattr(info.flavor, "value", info.flavor)) if info.flavor else None,
        labels=dict(info.labels or {}),
        command=list(info.command or []),
        url=info.url,
        raw=_json_ready(raw),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TERMINAL_EVENT_ID = "9" * 10


def _eid(position: int) -> str:
    return f"{position:010d}"


def _metric_message(point: MetricPoint) -> str:
    parts = [f"step {point.step}"]
    for name in ("train_loss", "valid_loss", "token_accuracy"):
        value = getattr(point, name)
        if value is not None:
            parts.append(f"{name} {value:.4f}")
    return ", ".join(parts)


def _line_level(line: str) -> Literal["info", "warning", "error"]:
    if line.startswith((LOG_ERROR_PREFIX, ERROR_PREFIX, "Traceback (most recent call last)")):
        return "error"
    if line.startswith(WARNING_PREFIX):
        return "warning"
    return "info"


def job_events(view: JobView, lines: Sequence[str]) -> list[Event]:
    """Every event of a job so far, oldest first, with ids stable across reads and processes.

    A plain log line has no timestamp of its own through the Jobs API: it takes the latest time
    known before it (the job's start, or the last metric point's time), so times never go back.
    """
    status = map_stage(view.stage)
    t = view.created_at or _EPOCH
    flavor = f" on {view.flavor}" if view.flavor else ""
    events = [
        Event(
            id=_eid(0),
            kind="status",
            time=t,
            status=JobStatus.QUEUED,
            message=f"job scheduled{flavor}",
            raw={"stage": "SCHEDULING"},
        )
    ]
    if view.started_at is not None or lines or status is JobStatus.RUNNING:
        t = max(t, view.started_at or t)
        events.append(
            Event(
                id=_eid(1),
                kind="status",
                time=t,
                status=JobStatus.RUNNING,
                message="job running",
                raw={"stage": "RUNNING"},
            )
        )
    result: dict[str, Any] | None = None
    for i, line in enumerate(lines):
        kind, payload = parse_line(line)
        if kind == "metric":
            point: MetricPoint = payload
            t = max(t, point.time) if point.time is not None else t
            events.append(Event(id=_eid(i + 2), kind="metric", time=t, metric=point, message=_metric_message(point)))
            continue
        if kind == "result":
            result = payload
            text = f"adapter pushed to {payload.get('hub_repo')} at revision {payload.get('revision')}"
        elif kind == "error":
            text = f"training failed: {payload.get('message')}"
        else:
            text = line
        level = "error" if kind == "error" else _line_level(line)
        events.append(Event(id=_eid(i + 2), kind="log", time=t, message=text, level=level))
    if status.is_terminal:
        events.append(
            Event(
                id=TERMINAL_EVENT_ID,
                kind="status",
                time=max(t, view.finished_at or t),
                status=status,
                message=_final_message(view, status, result, lines),
                level="error" if status is JobStatus.FAILED else "info",
                raw={"stage": view.stage},
            )
        )
    return events


def _final_message(view: JobView, status: JobStatus, result: Mapping[str, Any] | None, lines: Sequence[str]) -> str:
    if status is JobStatus.SUCCEEDED:
        if result:
            return f"job completed: adapter at {result.get('hub_repo')} revision {result.get('revision')}"
        return "job completed"
    if status is JobStatus.FAILED:
        error = _job_error(view, lines, 0)
        return f"job failed: {error.message}" if error else "job failed"
    return "job deleted" if view.stage.upper() == "DELETED" else "job cancelled"


def _last(lines: Sequence[str], kind: LineKind) -> Any:
    for line in reversed(lines):
        found, payload = parse_line(line)
        if found == kind:
            return payload
    return None


def _job_error(view: JobView, lines: Sequence[str], tail: int) -> JobError | None:
    status = map_stage(view.stage)
    if status is JobStatus.CANCELLED:
        return JobError(
            message="the job was deleted" if view.stage.upper() == "DELETED" else "the job was cancelled",
            code=view.stage.lower(),
        )
    if status is not JobStatus.FAILED:
        return None
    trainer = _last(lines, "error")
    message = (
        (str(trainer.get("message")) if trainer else None)
        or redact(view.message or "")
        or ("the job ended with an error")
    )
    code = str(trainer.get("code")) if trainer and trainer.get("code") else "job_error"
    shown = [line for line in lines if parse_line(line)[0] != "metric"][-tail:] if tail else []
    if shown:
        message += "\nlast log lines:\n" + "\n".join(shown)
    return JobError(message=message, code=code)


def record_from_view(
    provider: str, view: JobView, lines: Sequence[str] | None = None, *, error_log_lines: int = 20
) -> JobRecord:
    """The uniform record of a job (pure); ``lines``, when read, add progress, result and error."""
    status = map_stage(view.stage)
    log = list(lines or [])
    result = _last(log, "result") if log else None
    points = [p for kind, p in map(parse_line, log) if kind == "metric"]
    trained = result.get("result", {}).get("train_tokens") if isinstance(result, dict) else None
    output: dict[str, Any] = {
        "hub_repo": view.output_repo,
        "url": view.url,
        "flavor": view.flavor,
        "dataset_repo": view.arg("--dataset-repo"),
    }
    if result:
        output["revision"] = result.get("revision")
    return JobRecord(
        provider=provider,
        id=view.ref_id,
        status=status,
        raw_status=view.stage,
        base_model=view.base_model,
        fine_tuned_model=view.output_repo if status is JobStatus.SUCCEEDED else None,
        created_at=view.created_at,
        started_at=view.started_at,
        finished_at=view.finished_at,
        error=_job_error(view, log, error_log_lines),
        step=points[-1].step if points else None,
        trained_tokens=trained if isinstance(trained, int) else None,
        output={k: v for k, v in output.items() if v is not None},
        raw=dict(view.raw),
    )


# -- errors -----------------------------------------------------------------------------------------

_QUOTA_TEXT = re.compile(r"payment|billing|credit|quota|insufficient|balance|subscri|pre-?paid|pro plan", re.I)
_FLAVOR_TEXT = re.compile(r"flavou?r|hardware", re.I)


def _hub_errors() -> Any:
    return sys.modules.get("huggingface_hub.errors")


def _httpx2() -> Any:
    return sys.modules.get("httpx2")


def _status_of(exc: BaseException) -> int | None:
    errors = _hub_errors()
    if errors is not None and isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code
        return int(status) if status is not None else None
    return None


def _server_message(exc: BaseException) -> str:
    text = getattr(exc, "server_message", None) or ""
    if not text:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        text = lines[0] if lines else type(exc).__name__
    return str(text).strip()


def is_transient(exc: BaseException) -> bool:
    """Retry predicate: connection errors, timeouts, 408, 429 (unless it means quota) and 5xx."""
    httpx2 = _httpx2()
    if httpx2 is not None and isinstance(exc, httpx2.TransportError):
        return True
    status = _status_of(exc)
    if status is None:
        return False
    if status == 429 and _QUOTA_TEXT.search(_server_message(exc)):
        return False
    return is_retryable_status(status)


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed create may have happened anyway (the server may have acted before the
    dropped connection, the timeout, the 408 or the 5xx). A refused connection sent nothing."""
    httpx2 = _httpx2()
    if httpx2 is not None and isinstance(exc, httpx2.TransportError):
        return not isinstance(exc, httpx2.ConnectError)
    status = _status_of(exc)
    return status is not None and (status == 408 or status >= 500)


def translate_error(
    exc: BaseException,
    *,
    provider: str,
    what: str,
    job_ref: str | None = None,
    flavor: str | None = None,
    base_model: str | None = None,
) -> AnytuneError | None:
    """The anytune error for a huggingface_hub or httpx2 exception, or None for anything else.

    The status code picks the family; the server's message refines it (no payment method or quota
    vs throttling; an unknown flavor); the context names the job, flavor or base model concerned.
    """
    errors = _hub_errors()
    httpx2 = _httpx2()
    login = "log in with `hf auth login`, or set HF_TOKEN or the profile's token setting"
    if errors is not None and isinstance(exc, errors.LocalTokenNotFoundError):
        return AuthenticationError(f"{what}: no Hugging Face token found: {login}", provider=provider)
    if httpx2 is not None and isinstance(exc, httpx2.TimeoutException):
        return ServiceUnavailableError(f"{what}: the Hub did not answer in time (after retries)", provider=provider)
    if httpx2 is not None and isinstance(exc, httpx2.TransportError):
        return ServiceUnavailableError(
            f"{what}: connection to the Hub failed: {type(exc).__name__} (after retries)", provider=provider
        )
    if errors is None:
        return None
    if isinstance(exc, errors.HFValidationError):
        return ConfigError(f"{what}: {exc}")
    if not isinstance(exc, errors.HfHubHTTPError):
        if type(exc).__module__.startswith("huggingface_hub"):
            return ProviderError(f"{what}: {type(exc).__name__}: {exc}", provider=provider)
        return None
    status = _status_of(exc) or 0
    message = _server_message(exc)
    common: dict[str, Any] = {"provider": provider, "status_code": status or None, "request_id": exc.request_id}
    if base_model is not None and isinstance(exc, errors.GatedRepoError):
        return ModelNotAvailableError(
            f"{what}: {base_model} is gated: accept its conditions on the Hub with this account first", **common
        )
    if base_model is not None and isinstance(exc, errors.RepositoryNotFoundError):
        return ModelNotAvailableError(
            f"{what}: base model {base_model!r} not found on the Hub (or not visible to this token)", **common
        )
    if status == 401:
        return AuthenticationError(f"{what}: the Hub rejected the token ({message}): {login}", **common)
    if status == 402 or (status in (400, 403, 429) and _QUOTA_TEXT.search(message)):
        return QuotaExceededError(
            f"{what}: {message}. Hugging Face Jobs need a payment method or credits on the account that runs "
            "them (https://huggingface.co/settings/billing)",
            **common,
        )
    if status == 429:
        return RateLimitError(f"{what}: throttled: {message}", retry_after=retry_after_of(exc), **common)
    if status == 403:
        return PermissionDeniedError(
            f"{what}: permission denied: {message} (does the token have write access to this namespace?)", **common
        )
    if status == 404 and job_ref is not None:
        return JobNotFoundError(job_ref, message)
    if status >= 500 or status == 408:
        return ServiceUnavailableError(f"{what}: the Hub failed: {message} (after retries)", **common)
    if flavor is not None and status in (400, 422) and _FLAVOR_TEXT.search(message):
        return InvalidRequestError(
            f"{what}: hf.flavor {flavor!r} was refused ({message}). Known flavors: "
            f"{', '.join(known_flavors()) or 'see `hf jobs hardware`'}",
            **common,
        )
    return InvalidRequestError(f"{what}: {message}", **common)


def known_flavors() -> list[str]:
    """The Jobs flavors this huggingface_hub knows (empty without it)."""
    try:
        from huggingface_hub import JobHardware
    except ImportError:
        return []
    return [h.value for h in JobHardware]


# -- the adapter ------------------------------------------------------------------------------------


class HuggingFaceProvider(Provider):
    """See the module docstring."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({Method.SFT, Method.DPO}),
        lora=True,
        quantization=frozenset(Quantization),
        data_formats=frozenset({"chat", "prompt_completion", "preference"}),
        # The job runs the local trainer: its options section (packing, logging...) applies too.
        sections=frozenset({"hf", "local"}),
        pause=False,
        min_examples=1,
        notes="anytune's trainer on Hugging Face Jobs; adapter pushed to a Hub model repo",
        extra={"flavors": "hf.flavor (default a10g-small)", "resume": False},
    )
    Settings: ClassVar[type[ProviderSettings]] = HuggingFaceSettings
    # A log read of a running job lasts a few seconds (the Hub holds the stream open): poll calmly.
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
        self._lock = threading.Lock()
        self._api_obj: HfApi | None = None
        self._token: str | None = None
        self._whoami: str | None = None
        # Per job: the longest log replay read so far, and whether it is final (job terminal).
        self._logs: dict[str, list[str]] = {}
        self._final_logs: set[str] = set()

    @property
    def _s(self) -> HuggingFaceSettings:
        assert isinstance(self.settings, HuggingFaceSettings)
        return self.settings

    @property
    def endpoint(self) -> str:
        return (self._s.endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    # -- plumbing -------------------------------------------------------------------------------
    def _resolve_token(self) -> str:
        s = self._s
        token = s.token.get_secret_value() if s.token is not None else None
        if not token and s.token_env:
            token = os.environ.get(s.token_env) or None
        if not token:
            from huggingface_hub import get_token

            token = get_token()  # HF_TOKEN, then the cached login
        if not token:
            raise AuthenticationError(
                "no Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or set the profile's token "
                f"(ANYTUNE_HUGGINGFACE_TOKEN){f' or {s.token_env}' if s.token_env else ''}",
                provider=self.name,
            )
        # Found outside configuration: make sure no message, log line or stored record shows it.
        register_secret(token)
        return token

    def _api(self) -> HfApi:
        with self._lock:
            if self._api_obj is None:
                try:
                    import huggingface_hub
                except ImportError as exc:
                    raise MissingDependencyError("huggingface_hub", "hf", f"the {self.name!r} provider") from exc
                from anytune._version import __version__

                install_log_filter(logging.getLogger("huggingface_hub"))
                with self._boundary("reading the Hugging Face token"):
                    self._token = self._resolve_token()
                self._api_obj = huggingface_hub.HfApi(
                    endpoint=self.endpoint, token=self._token, library_name="anytune", library_version=__version__
                )
            return self._api_obj

    @property
    def _policy(self) -> RetryPolicy:
        s = self._s
        return RetryPolicy(max_attempts=s.max_attempts, deadline=s.retry_deadline, max_backoff=s.max_backoff)

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
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
    def _boundary(
        self, what: str, *, job_id: str | None = None, flavor: str | None = None, base_model: str | None = None
    ) -> Iterator[None]:
        """The one place where huggingface_hub and httpx2 exceptions become anytune errors."""
        try:
            yield
        except AnytuneError:
            raise
        except Exception as exc:
            mapped = translate_error(
                exc,
                provider=self.name,
                what=what,
                job_ref=f"{self.name}:{job_id}" if job_id else None,
                flavor=flavor,
                base_model=base_model,
            )
            if mapped is None:
                raise
            raise mapped from exc

    def _call(self, what: str, fn: Callable[[], T], **context: Any) -> T:
        with self._boundary(what, **context):
            return self._retrying(what, fn)

    def _namespace(self, spec: JobSpec | None = None) -> str:
        explicit = (spec.hf.namespace if spec is not None and spec.hf is not None else None) or self._s.namespace
        if explicit:
            return explicit
        if self._whoami is None:
            api = self._api()
            info = self._call("finding the token's user (whoami)", lambda: api.whoami(cache=True))
            self._whoami = str(info["name"])
        return self._whoami

    def _split(self, job_id: str) -> tuple[str, str]:
        namespace, _, bare = job_id.rpartition("/")
        if not bare or "/" in namespace:
            raise JobNotFoundError(f"{self.name}:{job_id}", "expected NAMESPACE/JOB_ID")
        return namespace or self._namespace(), bare

    # -- validation and plan --------------------------------------------------------------------
    def validate(self, spec: JobSpec) -> None:
        path = Path(spec.base_model).expanduser()
        if spec.base_model.startswith((".", "/", "~")) or path.exists():
            raise NotSupportedError(
                "a Hugging Face job downloads its base model from the Hub: give a Hub model id (upload a local "
                "model first with `hf upload`)",
                field="base_model",
                provider=self.name,
                alternatives=["local"],
            )
        local = spec.local or LocalOptions()
        for field, bad, why in (
            ("local.device", local.device == "mps", "a job runs on CUDA or CPU hardware"),
            ("local.num_devices", local.num_devices > 1, "one process per job is implemented"),
            ("local.output_dir", local.output_dir is not None, "the adapter goes to the Hub repo (hf.output_repo)"),
            ("local.merge", local.merge, "only the adapter is pushed"),
        ):
            if bad:
                raise NotSupportedError(why, field=field, provider=self.name, alternatives=["local"])
        options = spec.hf or HFOptions()
        if not _TIMEOUT.match(options.timeout):
            raise ConfigError(f"{options.timeout!r} is not a duration such as 90m, 2h or 3600", field="hf.timeout")
        for field, value in (
            ("hf.namespace", options.namespace),
            ("hf.dataset_repo", options.dataset_repo),
            ("hf.output_repo", options.output_repo),
        ):
            if value is not None:
                _check_repo_id(value, field)
        if options.namespace is not None and "/" in options.namespace:
            raise ConfigError("a namespace is one user or organisation name", field="hf.namespace")

    def _planned(self, spec: JobSpec) -> tuple[list[PlannedUpload], dict[str, str], tuple[str, bytes]]:
        """Uploads (data and wheel) with their paths in the dataset repo; no network."""
        uploads: list[PlannedUpload] = []
        paths: dict[str, str] = {}
        for purpose, file in (("training", spec.training_file), ("validation", spec.validation_file)):
            if file is not None:
                size, digest = file_digest(Path(file))
                uploads.append(PlannedUpload(path=str(file), purpose=purpose, bytes=size, sha256=digest))
                paths[purpose] = data_path(digest)
        filename, wheel = build_wheel()
        digest = hashlib.sha256(wheel).hexdigest()
        uploads.append(
            PlannedUpload(
                path=f"{filename} (built from the running anytune)", purpose="trainer", bytes=len(wheel), sha256=digest
            )
        )
        paths["trainer"] = wheel_path(filename, digest)
        return uploads, paths, (filename, wheel)

    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        options = spec.hf or HFOptions()
        namespace = options.namespace or self._s.namespace or "<your namespace>"
        uploads, paths, _ = self._planned(spec)
        dataset_repo = default_dataset_repo(spec, namespace)
        output_repo = default_output_repo(spec, namespace, idempotency_key)
        files = JobFiles(dataset_repo, paths["training"], paths.get("validation"), paths["trainer"])
        request = build_job_request(
            spec,
            idempotency_key,
            files,
            namespace=namespace,
            output_repo=output_repo,
            settings=self._s,
            endpoint=self.endpoint,
        )
        request["secrets"] = ["HF_TOKEN"]  # by name: the value is your token, sent only as a job secret
        return SubmitPlan(
            provider=self.name,
            uploads=uploads,
            requests=[
                PlannedRequest(
                    operation=f"GET {self.endpoint}/api/jobs/{namespace}?label={LABEL_KEY}=...",
                    body={"labels": {LABEL_KEY: _sanitize(idempotency_key)}},
                ),
                PlannedRequest(operation="HfApi.auth_check", body={"repo_id": spec.base_model, "repo_type": "model"}),
                PlannedRequest(
                    operation="HfApi.create_repo",
                    body={"repo_id": dataset_repo, "repo_type": "dataset", "private": True, "exist_ok": True},
                ),
                PlannedRequest(
                    operation="HfApi.create_commit",
                    body={"repo_id": dataset_repo, "repo_type": "dataset", "files": sorted(paths.values())},
                ),
                PlannedRequest(
                    operation="HfApi.create_repo",
                    body={"repo_id": output_repo, "repo_type": "model", "private": options.private, "exist_ok": True},
                ),
                PlannedRequest(operation="HfApi.run_job", body=request),
            ],
            notes=[
                "files already in the dataset repo with the same content are not sent again",
                "the token goes to the job as the secret HF_TOKEN only (never an environment variable or argument)",
                f"the job is labelled {LABEL_KEY}=<key>; a retried create finds it instead of starting another",
                f"the job pushes the adapter, metrics and resolved spec to {output_repo} and prints its revision",
            ],
        )

    # -- submit ---------------------------------------------------------------------------------
    def _find_job(self, api: HfApi, namespace: str, key: str) -> JobView | None:
        label = _sanitize(key)

        def lookup() -> JobView | None:
            jobs = [view_from_info(j, namespace) for j in api.list_jobs(namespace=namespace, labels={LABEL_KEY: label})]
            # Checked here too, for a service that ignores the filter.
            mine = [v for v in jobs if v.labels.get(LABEL_KEY) == label]
            mine.sort(key=lambda v: v.created_at or _EPOCH, reverse=True)
            return mine[0] if mine else None

        return self._call("looking up the job by its idempotency label", lookup)

    def _check_base_model(self, api: HfApi, spec: JobSpec) -> None:
        # Fail before paying for hardware: a missing or gated model would only fail inside the job.
        self._call(
            "checking the base model",
            lambda: api.auth_check(spec.base_model, repo_type="model"),
            base_model=spec.base_model,
        )

    def _upload_inputs(self, api: HfApi, spec: JobSpec, namespace: str) -> JobFiles:
        from huggingface_hub import CommitOperationAdd

        repo = default_dataset_repo(spec, namespace)
        uploads, paths, (_, wheel) = self._planned(spec)
        scope = f"{self.endpoint}|{repo}"
        self._call(
            "creating the dataset repo", lambda: api.create_repo(repo, repo_type="dataset", private=True, exist_ok=True)
        )
        sources: dict[str, Path | bytes] = {}
        for item in uploads:
            path_in_repo = paths[item.purpose]
            if self.store is not None and self.store.find_upload(self.name, scope, item.sha256) == path_in_repo:
                continue
            sources[path_in_repo] = wheel if item.purpose == "trainer" else Path(item.path)
        if sources:

            def commit() -> Any:
                # Fresh operations per attempt: huggingface_hub marks them used. The preupload step
                # compares each file's hash with the repo's and leaves identical content out.
                operations = [
                    CommitOperationAdd(path_in_repo=p, path_or_fileobj=src) for p, src in sorted(sources.items())
                ]
                return api.create_commit(
                    repo,
                    operations,
                    repo_type="dataset",
                    commit_message=f"anytune: {len(operations)} job input file(s)",
                )

            self._call("uploading the dataset and trainer", commit)
            if self.store is not None:
                for item in uploads:
                    if paths[item.purpose] in sources:
                        self.store.record_upload(self.name, scope, item.sha256, paths[item.purpose], item.bytes)
        return JobFiles(repo, paths["training"], paths.get("validation"), paths["trainer"])

    def _create_job(self, api: HfApi, request: Mapping[str, Any], key: str, flavor: str) -> JobView:
        """Create the job once: a create is retried only when it surely did not happen (429, refused
        connection), or after the label lookup found nothing following an ambiguous failure."""
        namespace = str(request["namespace"])
        assert self._token is not None
        secrets = {"HF_TOKEN": self._token}
        policy = self._policy
        start = self._hooks.clock()
        attempt = 0
        with self._boundary("creating the job", flavor=flavor):
            while True:
                attempt += 1
                try:
                    return view_from_info(api.run_job(**request, secrets=secrets), namespace)
                except Exception as exc:
                    ambiguous = is_ambiguous(exc)
                    wait = policy.delay(attempt - 1, hint=retry_after_of(exc), rand=self._hooks.rand())
                    if not (ambiguous or is_transient(exc)) or policy.gives_up(
                        attempt, self._hooks.clock() - start, wait
                    ):
                        raise
                    logger.info(
                        "%s: creating the job failed (%s); retry %d in %.2f s",
                        self.name,
                        type(exc).__name__,
                        attempt,
                        wait,
                    )
                    self._hooks.sleep(wait)
                    if ambiguous:
                        found = self._find_job(api, namespace, key)
                        if found is not None:
                            return found

    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        self.validate(spec)
        api = self._api()
        namespace = self._namespace(spec)
        found = self._find_job(api, namespace, idempotency_key)
        if found is not None:
            return self._record(found)
        self._check_base_model(api, spec)
        files = self._upload_inputs(api, spec, namespace)
        options = spec.hf or HFOptions()
        output_repo = default_output_repo(spec, namespace, idempotency_key)
        self._call(
            "creating the output model repo",
            lambda: api.create_repo(output_repo, repo_type="model", private=options.private, exist_ok=True),
        )
        request = build_job_request(
            spec,
            idempotency_key,
            files,
            namespace=namespace,
            output_repo=output_repo,
            settings=self._s,
            endpoint=self.endpoint,
        )
        return self._record(self._create_job(api, request, idempotency_key, options.flavor))

    # -- reads ----------------------------------------------------------------------------------
    def _record(self, view: JobView, lines: Sequence[str] | None = None) -> JobRecord:
        return record_from_view(self.name, view, lines, error_log_lines=self._s.error_log_lines)

    def _view(self, job_id: str) -> JobView:
        namespace, bare = self._split(job_id)
        api = self._api()
        info = self._call("reading the job", lambda: api.inspect_job(job_id=bare, namespace=namespace), job_id=job_id)
        return view_from_info(info, namespace)

    def _lines(self, view: JobView) -> list[str]:
        """The job's log so far: the longest replay read (a stream that ended early is read again
        next time), fetched no more once the job has finished and its log was read in full."""
        key = view.ref_id
        if key in self._final_logs or view.stage.upper() == "SCHEDULING":
            return list(self._logs.get(key, []))
        api = self._api()
        status = map_stage(view.stage)

        def replay() -> list[str]:
            # A job may print anything, the token included: nothing read leaves here unredacted.
            return [redact(line) for line in api.fetch_job_logs(job_id=view.id, namespace=view.namespace, follow=False)]

        lines: list[str] = []
        # A completed job always ends its log with the result line: a replay without it was cut short.
        for _ in range(3 if status is JobStatus.SUCCEEDED else 1):
            try:
                lines = self._call("reading the job's log", replay, job_id=view.ref_id)
            except JobNotFoundError:
                if not status.is_terminal:
                    raise
                break  # a deleted job's log may be gone: its stages still tell its story
            if status is not JobStatus.SUCCEEDED or _last(lines, "result") is not None:
                break
        known = self._logs.get(key, [])
        if len(lines) >= len(known):
            self._logs[key] = lines
        if status.is_terminal:
            self._final_logs.add(key)
        return list(self._logs[key])

    def get(self, job_id: str) -> JobRecord:
        view = self._view(job_id)
        # Finished jobs carry their log's verdict (revision, error with the last lines); running
        # ones use what events() has read, without reading the log again.
        lines = self._lines(view) if map_stage(view.stage).is_terminal else self._logs.get(view.ref_id)
        return self._record(view, lines)

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        view = self._view(job_id)
        lines = self._lines(view)
        try:
            cursor = int(after) if after is not None else -1
        except ValueError:
            cursor = -1  # not one of ours: everything (the caller's cursor drops what it has seen)
        for event in job_events(view, lines):
            if int(event.id) > cursor:
                yield event

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        view = self._view(job_id)
        points = {p.step: p for kind, p in map(parse_line, self._lines(view)) if kind == "metric"}
        return [points[s] for s in sorted(points)]

    def cancel(self, job_id: str) -> JobRecord:
        view = self._view(job_id)
        if map_stage(view.stage).is_terminal:
            return self._record(view)
        api = self._api()
        # Cancelling twice is harmless, so the request is retried like a read.
        self._call(
            "cancelling the job", lambda: api.cancel_job(job_id=view.id, namespace=view.namespace), job_id=job_id
        )
        return self._record(self._view(job_id))

    def list(self, limit: int = 20) -> builtins.list[JobRecord]:
        api = self._api()
        namespace = self._namespace()

        def read() -> builtins.list[JobView]:
            return [view_from_info(j, namespace) for j in api.list_jobs(namespace=namespace)]

        views = [v for v in self._call("listing jobs", read) if LABEL_KEY in v.labels]
        views.sort(key=lambda v: v.created_at or _EPOCH, reverse=True)
        return [self._record(v) for v in views[:limit]]

    def result(self, record: JobRecord) -> FineTunedModel:
        view = self._view(record.id)
        lines = self._lines(view)
        pushed = _last(lines, "result")
        if not isinstance(pushed, dict) or not pushed.get("hub_repo"):
            raise ProviderError(
                f"job {record.ref} completed but its log holds no {RESULT_PREFIX.strip()} line (the adapter repo "
                f"and revision); see {view.url or 'the job page'}",
                provider=self.name,
            )
        points = {p.step: p for kind, p in map(parse_line, lines) if kind == "metric"}
        reported = pushed.get("result")
        outcome: dict[str, Any] = reported if isinstance(reported, dict) else {}
        trained = outcome.get("train_tokens")
        return FineTunedModel(
            provider=self.name,
            job_ref=record.ref,
            base_model=view.base_model or record.base_model,
            hub_repo=str(pushed["hub_repo"]),
            revision=str(pushed["revision"]) if pushed.get("revision") else None,
            final_metrics=points[max(points)] if points else None,
            trained_tokens=trained if isinstance(trained, int) else None,
            extra={"url": view.url, "result": outcome},
        )
