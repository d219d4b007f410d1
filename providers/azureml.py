"""Azure Machine Learning fine-tuning: serverless (Models as a Service) and managed compute (MaaP).

Built on ``azure-ai-ml`` (``create_finetuning_job`` + ``MLClient.jobs``) and ``azure-identity``; both
are imported on first use, so ``capabilities`` and :meth:`AzureMLProvider.plan` need nothing from
the network and importing this module needs neither SDK.

Two modes, chosen by ``spec.azure.deployment`` or the ``deployment`` setting:

* ``serverless`` - Microsoft-hosted, pay per token.  Models from third-party registries
  (``azureml-meta``, ``azureml-mistral``...) are billed through an Azure Marketplace subscription,
  which this adapter creates first, but only with ``accept_marketplace_terms``.
* ``managed`` - your compute cluster (``compute=``) or instance types (``instance_type=``), and an
  optional job tier.

Where things go:

* Workspace: settings (argument > ``ANYTUNE_AZUREML_*`` > profile), then the variables Azure ML sets
  in its own runs (``AZUREML_ARM_SUBSCRIPTION``, ``AZUREML_ARM_RESOURCEGROUP``,
  ``AZUREML_ARM_WORKSPACE_NAME``, and ``AZURE_SUBSCRIPTION_ID``), then the workspace ``config.json``
  found the way ``MLClient.from_config`` finds it.
* Data: each file is normalised to what the task reads (chat JSONL, or prompt/completion for
  text-completion), uploaded once to the workspace's default blob datastore and registered as a
  ``uri_file`` data asset named after its sha256, so the same content is never uploaded twice.
* Job: its name derives from anytune's idempotency key, so a create that failed ambiguously is
  looked up by name before it is sent again; it is never retried blindly.
* Reads go through azure-core's retry policy (Retry-After honoured, a total deadline per call);
  writes are never retried by the transport.
* Events: status changes observed by :meth:`get`, and metric points from the run's MLflow metrics,
  journalled under ``ANYTUNE_HOME/azureml/events`` so their ids stay stable for ``events(after=)``.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import unquote

import orjson
from pydantic import Field

from anytune._capabilities import Capabilities
from anytune._provider import (
    IDEMPOTENCY_TAG,
    PlannedRequest,
    PlannedUpload,
    Provider,
    ProviderSettings,
    SubmitPlan,
)
from anytune._retry import parse_retry_after
from anytune._secrets import RedactingFilter, install_log_filter, redact, register_secret
from anytune._spec import AzureOptions, JobSpec, Method, Quantization
from anytune._store import JobStore
from anytune._types import Event, FineTunedModel, JobError, JobRecord, JobStatus, MetricPoint, utcnow
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    JobNotFoundError,
    ModelNotAvailableError,
    NotSupportedError,
    PermissionDeniedError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)

NAME = "azureml"
ARM_SCOPE = "https://management.azure.com/.default"
#: Registries whose models are Microsoft's own: no marketplace subscription is needed for them.
FIRST_PARTY_REGISTRIES: frozenset[str] = frozenset({"azureml", "azure-openai"})

Deployment = Literal["serverless", "managed"]
Task = Literal["chat-completion", "text-completion"]

# -- status ------------------------------------------------------------------------------------

#: Azure ML job status -> uniform status.  NotResponding and CancelRequested are not final: the
#: service may still recover or is still stopping the job.
STATUS_MAP: Mapping[str, JobStatus] = {
    "notstarted": JobStatus.QUEUED,
    "starting": JobStatus.QUEUED,
    "provisioning": JobStatus.QUEUED,
    "preparing": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "finalizing": JobStatus.RUNNING,
    "cancelrequested": JobStatus.RUNNING,
    "notresponding": JobStatus.RUNNING,
    "paused": JobStatus.PAUSED,
    "completed": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "canceled": JobStatus.CANCELLED,
    "unknown": JobStatus.QUEUED,
}


def map_status(raw: str | None) -> JobStatus:
    """The uniform status of an Azure ML job status (case-insensitive).

    Unrecognised values count as queued: never terminal, so a caller keeps polling rather than
    report an outcome the service did not give.
    """
    return STATUS_MAP.get((raw or "unknown").strip().lower(), JobStatus.QUEUED)


# -- hyperparameters ---------------------------------------------------------------------------

#: Uniform hyperparameter -> name the Azure ML fine-tuning components read, per deployment.
HYPERPARAMETERS: Mapping[Deployment, Mapping[str, str]] = {
    "serverless": {
        "epochs": "num_train_epochs",
        "batch_size": "per_device_train_batch_size",
        "learning_rate": "learning_rate",
    },
    "managed": {
        "epochs": "num_train_epochs",
        "batch_size": "per_device_train_batch_size",
        "learning_rate": "learning_rate",
        "warmup_steps": "warmup_steps",
        "max_steps": "max_steps",
        "max_length": "max_seq_length",
        "seed": "seed",
    },
}

#: Which spec sections each deployment reads; the rest is refused by :meth:`AzureMLProvider.validate`.
_MANAGED_ONLY_OPTIONS = ("compute", "instance_type", "job_tier")
_TASKS: Mapping[Task, str] = {"chat-completion": "ChatCompletion", "text-completion": "TextCompletion"}
_JOB_TIERS = ("spot", "basic", "standard", "premium")


def _value(v: Any) -> str:
    # The service takes every hyperparameter as a string.
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def map_hyperparameters(spec: JobSpec, deployment: Deployment) -> dict[str, str]:
    """The ``hyperparameters`` dict of ``create_finetuning_job`` (pure).

    Raises:
        NotSupportedError: a hyperparameter or LoRA setting this deployment does not take.
    """
    table = HYPERPARAMETERS[deployment]
    out: dict[str, str] = {}
    for key, value in spec.hyperparameters.model_dump(exclude_none=True).items():
        if key not in table:
            alt = " (managed compute takes it)" if key in HYPERPARAMETERS["managed"] else ""
            raise NotSupportedError(
                f"{deployment} fine-tuning on Azure ML does not take {key}{alt}",
                field=f"hyperparameters.{key}",
                provider=NAME,
            )
        out[table[key]] = _value(value)
    if spec.lora is not None:
        if deployment == "serverless":
            raise NotSupportedError(
                "serverless fine-tuning chooses its own adapter; set azure.deployment='managed' to set LoRA",
                field="lora",
                provider=NAME,
            )
        out.update(
            apply_lora="true",
            lora_r=_value(spec.lora.r),
            lora_alpha=_value(spec.lora.effective_alpha),
            lora_dropout=_value(spec.lora.dropout),
        )
    return out


# -- names -------------------------------------------------------------------------------------


def job_name(idempotency_key: str) -> str:
    """The client-side job name for an idempotency key: the same key always names the same job."""
    return "anytune-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def _slug(text: str, limit: int = 64) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    return (slug or "model")[:limit].rstrip("-_")


def _subscription_name(model: str) -> str:
    # Marketplace subscription names take letters, digits and dashes only.
    return re.sub(r"[^A-Za-z0-9-]+", "-", model).strip("-")[:50] or "model"


def data_asset_name(prefix: str, sha256: str) -> str:
    """Content-addressed data asset name: the same bytes always map to the same asset."""
    return f"{_slug(prefix, 40)}-{sha256[:32]}"


@dataclass(frozen=True)
class ModelRef:
    """A base model: registry, name and version (``None``: the latest, resolved at submit)."""

    registry: str | None
    name: str
    version: str | None = None
    asset_id: str | None = None

    @property
    def uri(self) -> str:
        """The asset id the job gets (a placeholder version until it is resolved)."""
        if self.asset_id:
            return self.asset_id
        return f"azureml://registries/{self.registry}/models/{self.name}/versions/{self.version or '<latest>'}"

    @property
    def marketplace_id(self) -> str:
        """What a marketplace subscription names: the model without its version."""
        return f"azureml://registries/{self.registry}/models/{self.name}"


_REGISTRY_ID = re.compile(
    r"^azureml://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)(?:/(?:versions/(?P<version>[^/]+)|labels/latest))?/?$"
)
_WORKSPACE_ID = re.compile(
    r"^(?:azureml://locations/[^/]+/workspaces/[^/]+|/subscriptions/.+)/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$"
)


def parse_model(base_model: str, *, registry: str, version: str | None = None) -> ModelRef:
    """Read ``base_model``: a full asset id, ``name``, ``name:version`` or ``name@latest`` (pure).

    Raises:
        ConfigError: the reference cannot be read.
    """
    text = base_model.strip()
    if m := _REGISTRY_ID.match(text):
        v = m["version"] or version
        ref = ModelRef(m["registry"], m["name"], v)
        return ModelRef(ref.registry, ref.name, v, ref.uri if v else None)
    if m := _WORKSPACE_ID.match(text):
        return ModelRef(None, m["name"], m["version"], text)
    if text.startswith(("azureml://", "/subscriptions/")):
        raise ConfigError(f"cannot read model asset id {text!r}", field="base_model")
    name, sep, pinned = text.partition(":")
    if not sep:
        name, sep, pinned = text.partition("@")
    if pinned == "latest" or not pinned:
        pinned = ""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"{text!r} is not a model name, name:version or asset id", field="base_model")
    return ModelRef(registry, name, pinned or version)


# -- data --------------------------------------------------------------------------------------

_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def _chat_line(obj: dict[str, Any]) -> dict[str, Any]:
    if "messages" in obj:
        return {"messages": [{k: m[k] for k in _MESSAGE_KEYS if k in m} for m in obj["messages"]]}
    return {
        "messages": [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
    }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _completion_line(obj: dict[str, Any]) -> dict[str, Any]:
    if "prompt" in obj:
        return {"prompt": obj["prompt"], "completion": obj["completion"]}
    messages = obj["messages"]
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    prompt = "\n\n".join(_text(m.get("content")) for m in messages[:last] if m.get("content"))
    return {"prompt": prompt, "completion": _text(messages[last].get("content"))}


def converted_lines(path: Path, task: Task) -> Iterator[bytes]:
    """The file as the task reads it, one JSONL line at a time (streams; constant memory).

    ``chat-completion`` gets ``{"messages": [...]}`` with only the message keys the service reads
    (``weight`` and other anytune-only keys dropped; prompt/completion becomes a user/assistant
    pair); ``text-completion`` gets ``{"prompt", "completion"}`` (a chat example's last assistant
    message is the completion and the turns before it the prompt).
    """
    convert = _chat_line if task == "chat-completion" else _completion_line
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                yield orjson.dumps(convert(orjson.loads(raw))) + b"\n"


def converted_digest(path: Path, task: Task) -> tuple[int, str]:
    """Size and sha256 of the converted file, computed without writing it."""
    h = hashlib.sha256()
    size = 0
    for line in converted_lines(path, task):
        h.update(line)
        size += len(line)
    return size, h.hexdigest()


# -- workspace ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    subscription_id: str
    resource_group: str
    name: str

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.name}"
        )

    @property
    def scope(self) -> str:
        """Key of this workspace in the job store's upload table."""
        return f"{self.subscription_id}/{self.resource_group}/{self.name}".lower()


_SCOPE = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)",
    re.I,
)


def find_workspace_config(start: Path) -> Path | None:
    """``config.json`` or ``.azureml/config.json`` in ``start`` or a parent (``MLClient.from_config``)."""
    here = start.resolve()
    if here.is_file():
        return here
    for folder in (here, *here.parents):
        for candidate in (folder / "config.json", folder / ".azureml" / "config.json"):
            if candidate.is_file():
                return candidate
    return None


def read_workspace_config(path: Path) -> dict[str, str]:
    """Subscription, resource group and workspace of a workspace ``config.json``.

    Raises:
        ConfigError: the file cannot be read or names no workspace.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read workspace config: {exc}", source=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError("workspace config must be a JSON object", source=str(path))
    out = {k: str(data[k]) for k in ("subscription_id", "resource_group", "workspace_name") if data.get(k)}
    if data.get("Scope") and (m := _SCOPE.search(str(data["Scope"]))):
        out = {"subscription_id": m["sub"], "resource_group": m["rg"], "workspace_name": m["ws"]} | out
    return out


# -- errors ------------------------------------------------------------------------------------

#: Substrings of an error's code or message that decide its class before the HTTP status does.
_CODE_RULES: tuple[tuple[str, type[ProviderError]], ...] = (
    ("quota", QuotaExceededError),
    ("insufficientcapacity", QuotaExceededError),
    ("marketplace", ModelNotAvailableError),
    ("not supported for fine", ModelNotAvailableError),
    ("notsupportedforfinetuning", ModelNotAvailableError),
    ("modelnotsupported", ModelNotAvailableError),
    ("unsupportedmodel", ModelNotAvailableError),
)
_STATUS_RULES: Mapping[int, type[ProviderError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: InvalidRequestError,
    409: InvalidRequestError,
    413: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitError,
}
_MISSING_SCOPE = ("resourcegroupnotfound", "subscriptionnotfound", "workspacenotfound", "invalidsubscriptionid")


def _describe(exc: BaseException) -> tuple[int | None, str, str, Mapping[str, str] | None, str | None]:
    """(status, code, message, headers, request id) of an azure-core/azure-ai-ml exception."""
    status = getattr(exc, "status_code", None)
    err = getattr(exc, "error", None)
    code = str(getattr(err, "code", None) or getattr(exc, "error_code", None) or "")
    message = str(getattr(err, "message", None) or getattr(exc, "message", None) or exc)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    request_id = None
    if headers is not None:
        request_id = headers.get("x-ms-request-id") or headers.get("x-request-id")
    return (status if isinstance(status, int) else None), code, message.strip(), headers, request_id


def map_error(exc: BaseException, *, action: str, workspace: Workspace | None = None) -> AnytuneError:
    """The anytune error for an exception raised by azure-core, azure-identity or azure-ai-ml."""
    kind = type(exc).__name__
    names = {c.__name__ for c in type(exc).__mro__}
    if "ClientAuthenticationError" in names or "CredentialUnavailableError" in names:
        return AuthenticationError(
            f"{action}: Azure sign-in failed ({kind}): {exc}. Sign in with `az login`, or set the "
            "'identity' setting to the credential you use",
            provider=NAME,
            status_code=getattr(exc, "status_code", None),
        )
    status, code, message, headers, request_id = _describe(exc)
    text = f"{code} {message}".lower()
    if workspace is not None and status == 404 and any(c in text for c in _MISSING_SCOPE):
        return ConfigError(
            f"workspace {workspace.name!r} (resource group {workspace.resource_group!r}, subscription "
            f"{workspace.subscription_id!r}) was not found: {message}",
            field="settings.workspace",
        )
    if status is None and names & {"ServiceRequestError", "ServiceResponseError", "RequestException"}:
        # No answer: connection refused or dropped, or a timeout.
        return ServiceUnavailableError(f"{action}: no answer from the service ({kind}): {message}", provider=NAME)
    cls: type[ProviderError] | None = next((c for needle, c in _CODE_RULES if needle in text), None)
    if cls is None and status is not None:
        cls = _STATUS_RULES.get(status) or (ServiceUnavailableError if status >= 500 else InvalidRequestError)
    if cls is None:
        # Client-side validation in azure-ai-ml (ValidationException, UserErrorException...).
        cls = InvalidRequestError
    detail = f"{action}: {message}" + (f" [{code}]" if code and code not in message else "")
    if cls is ModelNotAvailableError and "marketplace" in text:
        detail += ". Accept the model's marketplace terms with accept_marketplace_terms=true"
    kwargs: dict[str, Any] = {"provider": NAME, "status_code": status, "request_id": request_id}
    if cls is RateLimitError:
        return RateLimitError(detail, retry_after=parse_retry_after(headers), **kwargs)
    return cls(detail, **kwargs)


def _is_azure(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("azure.", "msrest", "requests", "urllib3", "marshmallow"))


# -- settings ----------------------------------------------------------------------------------

Identity = Literal[
    "default", "cli", "managed", "environment", "workload", "interactive", "device_code", "developer_cli", "powershell"
]

#: ``identity`` setting -> azure-identity credential class.
CREDENTIALS: Mapping[str, str] = {
    "default": "DefaultAzureCredential",
    "cli": "AzureCliCredential",
    "managed": "ManagedIdentityCredential",
    "environment": "EnvironmentCredential",
    "workload": "WorkloadIdentityCredential",
    "interactive": "InteractiveBrowserCredential",
    "device_code": "DeviceCodeCredential",
    "developer_cli": "AzureDeveloperCliCredential",
    "powershell": "AzurePowerShellCredential",
}


class AzureMLSettings(ProviderSettings):
    """Where and how to reach the workspace.

    Unset workspace fields fall back to ``AZUREML_ARM_*`` / ``AZURE_SUBSCRIPTION_ID`` and then to
    the workspace ``config.json`` (``config_path``, else searched from the working directory up).
    No secret is stored: sign-in goes through azure-identity (``identity`` picks the credential).
    """

    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None
    config_path: Path | None = None
    identity: Identity = "default"
    managed_identity_client_id: str | None = None
    tenant_id: str | None = None
    registry: str = "azureml"
    deployment: Deployment = "serverless"
    compute: str | None = None
    instance_types: tuple[str, ...] = ()
    job_tier: Literal["spot", "basic", "standard", "premium"] | None = None
    accept_marketplace_terms: bool = False
    experiment_name: str = "anytune"
    data_prefix: str = "anytune"
    retry_total: int = Field(4, ge=0, le=20)
    retry_backoff: float = Field(0.8, ge=0)
    retry_backoff_max: float = Field(60.0, gt=0)
    timeout: float = Field(300.0, gt=0, description="seconds per service call, retries included")
    create_attempts: int = Field(3, ge=1, le=10)
    marketplace_wait: float = Field(120.0, ge=0, description="seconds to wait for a new subscription")


# -- the provider ------------------------------------------------------------------------------


@dataclass
class _Submission:
    """Everything ``submit`` sends, resolved from the spec (no network)."""

    workspace: Workspace | None
    deployment: Deployment
    task: Task
    model: ModelRef
    name: str
    display_name: str
    experiment_name: str
    output_name: str
    hyperparameters: dict[str, str]
    compute: str | None
    instance_types: list[str]
    job_tier: str | None
    tags: dict[str, str]
    accept_marketplace_terms: bool
    needs_marketplace: bool


class AzureMLProvider(Provider):
    """Azure Machine Learning fine-tuning; see the module docstring.

    Args:
        settings: :class:`AzureMLSettings`.
        store: the job store (upload reuse, records).
        home: anytune's home (event journals).
        credential: an azure-core ``TokenCredential`` (default: from the ``identity`` setting).
        transport: an azure-core ``HttpTransport`` every request goes through (tests pass a fake).
        sleep: how to wait between retries (tests pass a recorder).
    """

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({Method.SFT}),
        hyperparameters=frozenset(HYPERPARAMETERS["managed"]),
        lora=True,
        lora_fields=frozenset({"r", "alpha", "dropout"}),
        quantization=frozenset({Quantization.NONE}),
        data_formats=frozenset({"chat", "prompt_completion"}),
        sections=frozenset({"azure"}),
        min_examples=10,
        notes="serverless (MaaS, marketplace models with opt-in) or managed compute (MaaP); "
        "LoRA and most hyperparameters on managed only",
        extra={"deployments": ["serverless", "managed"], "tasks": sorted(_TASKS)},
    )
    Settings: ClassVar[type[ProviderSettings]] = AzureMLSettings
    poll_interval: ClassVar[float] = 30.0

    def __init__(
        self,
        settings: ProviderSettings | None = None,
        *,
        store: JobStore | None = None,
        home: Path | None = None,
        credential: Any = None,
        transport: Any = None,
        sleep: Callable[[float], None] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings, store=store, home=home)
        self._credential_given = credential
        self._transport = transport
        self._sleep = sleep or time.sleep
        self._env = os.environ if env is None else env
        self._clients: dict[str, Any] = {}
        self._workspace_info: dict[str, Any] | None = None

    @property
    def _settings(self) -> AzureMLSettings:
        assert isinstance(self.settings, AzureMLSettings)
        return self.settings

    # -- configuration (no network) -------------------------------------------------------------
    def workspace(self, *, required: bool = True) -> Workspace | None:
        """The workspace in force: settings, then Azure ML's variables, then ``config.json``.

        Raises:
            ConfigError: ``required`` and some part is missing.
        """
        s, env = self._settings, self._env
        values = {
            "subscription_id": s.subscription_id
            or env.get("AZUREML_ARM_SUBSCRIPTION")
            or env.get("AZURE_SUBSCRIPTION_ID"),
            "resource_group": s.resource_group or env.get("AZUREML_ARM_RESOURCEGROUP"),
            "workspace_name": s.workspace or env.get("AZUREML_ARM_WORKSPACE_NAME"),
        }
        if not all(values.values()):
            path = find_workspace_config(s.config_path or Path.cwd())
            if path is None and s.config_path is not None:
                raise ConfigError(f"no workspace config.json at {s.config_path}", field="settings.config_path")
            if path is not None:
                found = read_workspace_config(path)
                values = {k: v or found.get(k) for k, v in values.items()}
        missing = [k for k, v in values.items() if not v]
        if missing:
            if not required:
                return None
            names = {
                "subscription_id": "subscription_id",
                "resource_group": "resource_group",
                "workspace_name": "workspace",
            }
            raise ConfigError(
                f"no Azure ML workspace: set {', '.join(names[m] for m in missing)} (settings, "
                f"ANYTUNE_AZUREML_* variables) or put the workspace config.json in the project",
                field=f"settings.{names[missing[0]]}",
            )
        return Workspace(str(values["subscription_id"]), str(values["resource_group"]), str(values["workspace_name"]))

    def _options(self, spec: JobSpec) -> AzureOptions:
        return spec.azure or AzureOptions()

    def _deployment(self, spec: JobSpec) -> Deployment:
        return self._options(spec).deployment or self._settings.deployment

    def _target(self, spec: JobSpec) -> tuple[str | None, builtins.list[str]]:
        """Managed compute: (cluster, instance types); the spec's choice replaces the settings' pair."""
        opts, s = self._options(spec), self._settings
        if opts.compute or opts.instance_type:
            return opts.compute, [opts.instance_type] if opts.instance_type else []
        return s.compute, list(s.instance_types)

    def validate(self, spec: JobSpec) -> None:
        """Refuse what the chosen deployment cannot do (pure).

        Raises:
            NotSupportedError: an option or hyperparameter the deployment does not take.
            ConfigError: managed compute with neither a cluster nor instance types.
        """
        opts, s = self._options(spec), self._settings
        deployment = self._deployment(spec)
        if opts.training_type is not None:
            raise NotSupportedError(
                "training_type belongs to Azure OpenAI",
                field="azure.training_type",
                provider=NAME,
                alternatives=["azure-openai"],
            )
        if opts.instance_count is not None:
            raise NotSupportedError(
                "fine-tuning jobs choose their node count", field="azure.instance_count", provider=NAME
            )
        if deployment == "serverless":
            for option in _MANAGED_ONLY_OPTIONS:
                if getattr(opts, option) is not None:
                    raise NotSupportedError(
                        f"serverless fine-tuning runs on Microsoft-managed compute; {option} needs "
                        "azure.deployment='managed'",
                        field=f"azure.{option}",
                        provider=NAME,
                    )
        else:
            compute, types = self._target(spec)
            if not compute and not types:
                raise ConfigError(
                    "managed fine-tuning needs a compute cluster (azure.compute) or an "
                    "instance type (azure.instance_type)",
                    field="azure.compute",
                )
            if compute and types:
                raise ConfigError("give a compute cluster or instance types, not both", field="azure.compute")
        map_hyperparameters(spec, deployment)
        parse_model(spec.base_model, registry=opts.registry or s.registry, version=opts.model_version)

    def _submission(self, spec: JobSpec, key: str, *, workspace_required: bool) -> _Submission:
        self.validate(spec)
        opts, s = self._options(spec), self._settings
        deployment = self._deployment(spec)
        model = parse_model(spec.base_model, registry=opts.registry or s.registry, version=opts.model_version)
        # A dry run has no key yet (FineTuneJob.plan passes a placeholder): show where it goes.
        name = job_name(key) if not key.startswith("<") else "anytune-KEYHASH"
        suffix = spec.suffix or "ft"
        short = name.rsplit("-", 1)[-1][:8]
        output = spec.output_name or f"{model.name}-{suffix}-{short}"
        compute, types = self._target(spec) if deployment == "managed" else (None, [])
        tier = opts.job_tier or (s.job_tier if deployment == "managed" else None)
        return _Submission(
            workspace=self.workspace(required=workspace_required),
            deployment=deployment,
            task=opts.task or "chat-completion",
            model=model,
            name=name,
            display_name=f"{model.name} {suffix} (anytune)",
            experiment_name=opts.experiment_name or s.experiment_name,
            output_name=_slug(output, 200),
            hyperparameters=map_hyperparameters(spec, deployment),
            compute=compute,
            instance_types=types,
            job_tier=tier,
            tags={
                **spec.tags,
                IDEMPOTENCY_TAG: key,
                "anytune.base_model": spec.base_model[:256],
                "anytune.deployment": deployment,
            },
            accept_marketplace_terms=bool(
                opts.accept_marketplace_terms
                if opts.accept_marketplace_terms is not None
                else s.accept_marketplace_terms
            ),
            needs_marketplace=deployment == "serverless"
            and model.registry is not None
            and model.registry not in FIRST_PARTY_REGISTRIES,
        )

    def _compute_id(self, sub: _Submission) -> str | None:
        if not sub.compute:
            return None
        if sub.compute.startswith("/subscriptions/"):
            return sub.compute
        base = sub.workspace.arm_id if sub.workspace else "<workspace>"
        return f"{base}/computes/{sub.compute.removeprefix('azureml:')}"

    def _job_entity(
        self, sub: _Submission, model_uri: str, training: str, validation: str | None, compute_id: str | None
    ) -> Any:
        from azure.ai.ml.finetuning import create_finetuning_job

        # azure-ai-ml 1.35's create_finetuning_job fails (UnboundLocalError) without validation data:
        # give it the training data there and clear the field on the entity afterwards.
        entity = create_finetuning_job(
            model=model_uri,
            task=_TASKS[sub.task],
            training_data=training,
            validation_data=validation or training,
            output_model_name_prefix=sub.output_name,
            hyperparameters=sub.hyperparameters or None,
            compute=compute_id,
            instance_types=sub.instance_types or None,
            job_tier=sub.job_tier,
            name=sub.name,
            display_name=sub.display_name,
            experiment_name=sub.experiment_name,
            tags=sub.tags,
        )
        if validation is None:
            entity.validation_data = None
        return entity

    # -- plan -----------------------------------------------------------------------------------
    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        sub = self._submission(spec, idempotency_key, workspace_required=False)
        uploads: list[PlannedUpload] = []
        ids: dict[str, str] = {}
        for purpose, path in (("training", spec.training_file), ("validation", spec.validation_file)):
            if path is None:
                continue
            size, digest = converted_digest(Path(path), sub.task)
            uploads.append(PlannedUpload(path=str(path), purpose=purpose, bytes=size, sha256=digest))
            ids[purpose] = f"azureml:{data_asset_name(self._settings.data_prefix, digest)}:1"
        requests: list[PlannedRequest] = []
        notes = [
            f"deployment: {sub.deployment}; task: {sub.task}; job name: {sub.name}"
            + (" (KEYHASH: from the idempotency key assigned at submit)" if "KEYHASH" in sub.name else ""),
            f"data go to the workspace's default datastore as uri_file assets ({', '.join(ids.values())}); "
            "content already uploaded is reused",
        ]
        if sub.workspace is None:
            notes.append("no workspace configured yet: submit needs subscription_id, resource_group and workspace")
        if sub.model.version is None and sub.model.asset_id is None:
            notes.append(
                f"the latest version of {sub.model.name!r} in registry {sub.model.registry!r} is looked up at submit"
            )
        if sub.needs_marketplace:
            consent = (
                "created first (accept_marketplace_terms is set)"
                if sub.accept_marketplace_terms
                else "required: set accept_marketplace_terms=true, or subscribe in Azure AI Foundry"
            )
            notes.append(f"marketplace subscription for {sub.model.marketplace_id}: {consent}")
            requests.append(
                PlannedRequest(
                    operation="MLClient.marketplace_subscriptions.begin_create_or_update",
                    body={
                        "name": _subscription_name(sub.model.name),
                        "properties": {"modelId": sub.model.marketplace_id},
                    },
                )
            )
        if sub.compute:
            notes.append(f"compute cluster {sub.compute!r} must exist in the workspace")
        with self._boundary("build the fine-tuning job"):
            entity = self._job_entity(sub, sub.model.uri, ids["training"], ids.get("validation"), self._compute_id(sub))
        requests.append(PlannedRequest(operation="MLClient.jobs.create_or_update", body=_rest_body(entity)))
        return SubmitPlan(provider=self.name, uploads=uploads, requests=requests, notes=notes)

    # -- clients (lazy) -------------------------------------------------------------------------
    def _credential(self) -> Any:
        if self._credential_given is not None:
            return self._credential_given
        cached = self._clients.get("credential")
        if cached is not None:
            return cached
        import azure.identity

        s = self._settings
        cls = getattr(azure.identity, CREDENTIALS[s.identity])
        kwargs: dict[str, Any] = {}
        if s.identity == "default":
            kwargs = {
                k: v
                for k, v in {
                    "managed_identity_client_id": s.managed_identity_client_id,
                    "interactive_browser_tenant_id": s.tenant_id,
                }.items()
                if v
            }
        elif s.identity == "managed" and s.managed_identity_client_id:
            kwargs = {"client_id": s.managed_identity_client_id}
        elif s.tenant_id and s.identity in ("cli", "interactive", "device_code", "developer_cli", "powershell"):
            kwargs = {"tenant_id": s.tenant_id}
        credential = cls(**kwargs)
        self._clients["credential"] = credential
        return credential

    def _client_kwargs(self) -> dict[str, Any]:
        _redact_azure_logs()
        s = self._settings
        kwargs: dict[str, Any] = {
            "retry_policy": _read_retry_policy(
                sleep=self._sleep,
                retry_total=s.retry_total,
                retry_backoff_factor=s.retry_backoff,
                retry_backoff_max=s.retry_backoff_max,
                timeout=s.timeout,
            ),
            "enable_telemetry": False,
            "show_progress": False,
            "user_agent": "anytune",
        }
        if self._transport is not None:
            kwargs["transport"] = self._transport
        return kwargs

    def _ml(self) -> Any:
        """The workspace ``MLClient`` (made on first use; making it sends nothing)."""
        client = self._clients.get("workspace")
        if client is None:
            from azure.ai.ml import MLClient

            ws = self.workspace()
            assert ws is not None
            client = MLClient(
                self._credential(), ws.subscription_id, ws.resource_group, ws.name, **self._client_kwargs()
            )
            self._clients["workspace"] = client
        return client

    def _registry_client(self, registry: str) -> Any:
        key = f"registry:{registry}"
        client = self._clients.get(key)
        if client is None:
            from azure.ai.ml import MLClient

            # Constructing a registry client already calls the registry discovery service.
            with self._boundary(f"open registry {registry!r}"):
                client = MLClient(self._credential(), registry_name=registry, **self._client_kwargs())
            self._clients[key] = client
        return client

    @contextlib.contextmanager
    def _boundary(self, action: str, *, not_found: Callable[[], AnytuneError] | None = None) -> Iterator[None]:
        """Translate every azure.* (and transport) exception into the anytune error tree."""
        try:
            yield
        except AnytuneError:
            raise
        except Exception as exc:
            if not _is_azure(exc):
                raise
            if not_found is not None and getattr(exc, "status_code", None) == 404:
                raise not_found() from exc
            raise map_error(exc, action=action, workspace=self.workspace(required=False)) from exc

    def _info(self) -> dict[str, Any]:
        """Workspace facts (location, id, API endpoint); the first call checks the workspace exists."""
        if self._workspace_info is None:
            ws = self.workspace()
            assert ws is not None

            def missing() -> AnytuneError:
                return ConfigError(
                    f"workspace {ws.name!r} was not found in resource group {ws.resource_group!r} of "
                    f"subscription {ws.subscription_id!r}",
                    field="settings.workspace",
                )

            with self._boundary(f"open workspace {ws.name!r}", not_found=missing):
                entity = self._ml().workspaces.get(ws.name)
            discovery = getattr(entity, "discovery_url", None) or ""
            self._workspace_info = {
                "location": getattr(entity, "location", None),
                "workspace_id": getattr(entity, "_workspace_id", None),
                "discovery_url": discovery,
            }
        return self._workspace_info

    # -- submit ---------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        sub = self._submission(spec, idempotency_key, workspace_required=True)
        self._info()
        existing = self._find_job(sub.name)
        if existing is not None:
            # Submitted before under this key (a retried create): the same job, not a second one.
            return self._record(existing)
        model_uri = self._resolve_model(sub)
        if sub.needs_marketplace:
            self._ensure_marketplace(sub)
        compute_id = self._check_compute(sub) if sub.compute else None
        training = self._upload(Path(spec.training_file), sub.task)
        validation = self._upload(Path(spec.validation_file), sub.task) if spec.validation_file else None
        record = self._record(self._create(sub, model_uri, training, validation, compute_id))
        self._journal_status(record)
        return record

    def _or_none(self, action: str, call: Callable[[], Any]) -> Any:
        """``call()``, or ``None`` when the service answers 404."""
        try:
            with self._boundary(action, not_found=_NotFound):
                return call()
        except _NotFound:
            return None

    def _find_job(self, name: str) -> Any:
        return self._or_none(f"look up job {name}", lambda: self._ml().jobs.get(name))

    def _create(
        self, sub: _Submission, model_uri: str, training: str, validation: str | None, compute_id: str | None
    ) -> Any:
        """Create the job; after an ambiguous failure look the name up before sending it again."""
        attempts = self._settings.create_attempts
        for attempt in range(attempts):
            try:
                with self._boundary(f"create fine-tuning job {sub.name}"):
                    entity = self._job_entity(sub, model_uri, training, validation, compute_id)
                    return self._ml().jobs.create_or_update(entity)
            except (ServiceUnavailableError, RateLimitError, InvalidRequestError) as exc:
                ambiguous = not isinstance(exc, InvalidRequestError) or exc.status_code == 409
                if not ambiguous:
                    raise
                found = self._find_job(sub.name)
                if found is not None:
                    return found
                if isinstance(exc, InvalidRequestError) or attempt == attempts - 1:
                    raise
                delay = (
                    exc.retry_after
                    if isinstance(exc, RateLimitError) and exc.retry_after
                    else min(self._settings.retry_backoff_max, self._settings.retry_backoff * 2**attempt)
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _resolve_model(self, sub: _Submission) -> str:
        model = sub.model
        if model.asset_id:
            return model.asset_id
        assert model.registry is not None

        def invalid() -> AnytuneError:
            which = f"version {model.version}" if model.version else "any version"
            return ModelNotAvailableError(
                f"model {model.name!r} ({which}) is not in registry {model.registry!r}; check the name in "
                "the Azure AI model catalog, or pass its full asset id",
                provider=NAME,
                status_code=404,
            )

        client = self._registry_client(model.registry)
        with self._boundary(f"look up model {model.name!r}", not_found=invalid):
            entity = (
                client.models.get(model.name, version=model.version)
                if model.version
                else client.models.get(model.name, label="latest")
            )
        tasks = str((getattr(entity, "properties", None) or {}).get("finetuning-tasks", "") or "")
        wanted = {"chat-completion": "chat-completion", "text-completion": "text-generation"}[sub.task]
        listed = [t.strip().lower() for t in tasks.split(",") if t.strip()]
        if listed and wanted not in listed and sub.task not in listed:
            raise ModelNotAvailableError(
                f"model {model.name!r} cannot be fine-tuned for {sub.task} (it lists: {', '.join(listed)})",
                provider=NAME,
            )
        return str(entity.id)

    def _ensure_marketplace(self, sub: _Submission) -> None:
        from azure.ai.ml.entities import MarketplaceSubscription

        name = _subscription_name(sub.model.name)
        ml = self._ml()
        current = self._or_none("look up marketplace subscription", lambda: ml.marketplace_subscriptions.get(name))
        if current is not None and str(getattr(current, "status", "")).lower() == "subscribed":
            return
        if not sub.accept_marketplace_terms:
            state = f" (its subscription {name!r} is {current.status})" if current is not None else ""
            raise ModelNotAvailableError(
                f"model {sub.model.marketplace_id} is billed through Azure Marketplace and this workspace "
                f"has no active subscription to it{state}. Review its terms, then set "
                "accept_marketplace_terms=true (setting or azure section) to subscribe, or subscribe in Azure "
                "AI Foundry",
                provider=NAME,
            )
        with self._boundary(f"subscribe to {sub.model.marketplace_id}"):
            ml.marketplace_subscriptions.begin_create_or_update(
                MarketplaceSubscription(name=name, model_id=sub.model.marketplace_id), polling=False
            ).result()
        waited = 0.0
        while True:
            with self._boundary("check marketplace subscription"):
                current = ml.marketplace_subscriptions.get(name)
            status = str(getattr(current, "status", "") or "").lower()
            if status == "subscribed":
                return
            if status in ("unsubscribed", "suspended") or waited >= self._settings.marketplace_wait:
                raise ModelNotAvailableError(
                    f"marketplace subscription {name!r} for {sub.model.marketplace_id} is {status or 'pending'}",
                    provider=NAME,
                )
            delay = min(5.0, self._settings.marketplace_wait - waited) or 1.0
            self._sleep(delay)
            waited += delay

    def _check_compute(self, sub: _Submission) -> str:
        assert sub.compute is not None
        name = sub.compute.rsplit("/", 1)[-1].removeprefix("azureml:")
        ml = self._ml()

        def missing() -> AnytuneError:
            known: list[str] = []
            with contextlib.suppress(Exception):
                known = sorted(str(c.name) for c in ml.compute.list())
            listing = f" Clusters in this workspace: {', '.join(known)}." if known else ""
            return ConfigError(
                f"compute cluster {name!r} does not exist in workspace {ml.workspace_name!r}."
                f"{listing} Create it, or use azure.instance_type instead",
                field="azure.compute",
            )

        with self._boundary(f"look up compute {name!r}", not_found=missing):
            compute = ml.compute.get(name)
        return str(compute.id)

    # -- data -----------------------------------------------------------------------------------
    def _converted_file(self, path: Path, task: Task) -> tuple[Path, int, str]:
        """Write the converted file to a private temporary file; (path, size, sha256)."""
        folder = self.home / "azureml" / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{os.getpid()}-{time.monotonic_ns()}.jsonl"
        h = hashlib.sha256()
        size = 0
        try:
            with tmp.open("wb") as f:
                for line in converted_lines(path, task):
                    f.write(line)
                    h.update(line)
                    size += len(line)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp, size, h.hexdigest()

    def _upload(self, path: Path, task: Task) -> str:
        """Upload (once) and register ``path`` as a data asset; returns the asset's ARM id."""
        ws = self.workspace()
        assert ws is not None
        local, size, digest = self._converted_file(path, task)
        try:
            name = data_asset_name(self._settings.data_prefix, digest)
            if self.store is not None and (known := self.store.find_upload(NAME, ws.scope, digest)):
                # Trust but verify: the asset may have been archived or deleted since.
                if self._data_asset(name) is not None:
                    return known
                self.store.forget_upload(NAME, ws.scope, digest)
            asset = self._data_asset(name)
            if asset is None:
                uri = self._put_blob(local, digest, path.name)
                asset = self._register_data(name, uri, digest, path)
            if self.store is not None:
                self.store.record_upload(NAME, ws.scope, digest, str(asset.id), size)
            return str(asset.id)
        finally:
            with contextlib.suppress(OSError):
                local.unlink()

    def _data_asset(self, name: str) -> Any:
        return self._or_none(f"look up data asset {name}", lambda: self._ml().data.get(name, version="1"))

    def _register_data(self, name: str, uri: str, digest: str, source: Path) -> Any:
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data

        data = Data(
            name=name,
            version="1",
            type=AssetTypes.URI_FILE,
            path=uri,
            description=f"anytune upload of {source.name}",
            tags={"anytune.sha256": digest},
        )
        try:
            with self._boundary(f"register data asset {name}"):
                return self._ml().data.create_or_update(data)
        except (ServiceUnavailableError, InvalidRequestError):
            # A concurrent or earlier attempt may have registered it: the name is content-addressed.
            found = self._data_asset(name)
            if found is None:
                raise
            return found

    def _put_blob(self, local: Path, digest: str, filename: str) -> str:
        """Upload to the default datastore (azure-storage-blob, same transport); returns its azureml:// uri."""
        from azure.storage.blob import BlobServiceClient

        ml = self._ml()
        with self._boundary("look up the default datastore"):
            store = ml.datastores.get_default(include_secrets=True)
        account = str(store.account_name)
        container = str(getattr(store, "container_name", "") or "")
        if not container:
            raise InvalidRequestError(
                f"default datastore {store.name!r} is not a blob container; anytune uploads to blob datastores only",
                provider=NAME,
            )
        endpoint = getattr(store, "endpoint", None) or "core.windows.net"
        protocol = getattr(store, "protocol", None) or "https"
        creds = getattr(store, "credentials", None)
        secret = getattr(creds, "sas_token", None) or getattr(creds, "account_key", None)
        credential: Any
        if getattr(creds, "sas_token", None):
            credential = str(secret)
        elif getattr(creds, "account_key", None):
            credential = {"account_name": account, "account_key": str(secret)}
        else:
            credential = self._credential()  # identity-based datastore
        if secret:
            register_secret(str(secret))
            # A SAS token's signature is what grants access; it is what a message would quote.
            for part in str(secret).lstrip("?").split("&"):
                if part.startswith("sig="):
                    register_secret(part[4:])
                    register_secret(unquote(part[4:]))
        blob_path = f"anytune/{digest}/{_slug(Path(filename).stem, 80)}.jsonl"
        kwargs: dict[str, Any] = {"retry_total": self._settings.retry_total}
        if self._transport is not None:
            kwargs["transport"] = self._transport
        with self._boundary(f"upload {filename} to datastore {store.name!r}"):
            service = BlobServiceClient(f"{protocol}://{account}.blob.{endpoint}", credential=credential, **kwargs)
            blob = service.get_blob_client(container, blob_path)
            with local.open("rb") as f:
                blob.upload_blob(f, overwrite=True)
        return f"azureml://datastores/{store.name}/paths/{blob_path}"

    # -- state ----------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        ref = f"{self.name}:{job_id}"
        self._info()
        with self._boundary(f"get job {job_id}", not_found=lambda: JobNotFoundError(ref)):
            job = self._ml().jobs.get(job_id)
        run = self._run_details(job_id, map_status(_raw_status(job)))
        record = self._record(job, run=run)
        self._journal_status(record, warnings=run.get("warnings") or [])
        return record

    def cancel(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record.done or record.raw_status.lower() == "cancelrequested":
            return record
        with self._boundary(f"cancel job {job_id}", not_found=lambda: JobNotFoundError(f"{self.name}:{job_id}")):
            # polling=False: the poller would otherwise follow the operation on a thread of its own.
            self._ml().jobs.begin_cancel(job_id, polling=False)
        return self.get(job_id)

    def list(self, limit: int = 20) -> builtins.list[JobRecord]:
        out: builtins.list[JobRecord] = []
        with self._boundary("list jobs"):
            for job in self._ml().jobs.list():
                if job is None or str(getattr(job, "type", "")).lower() != "finetuning":
                    continue
                out.append(self._record(job))
                if len(out) >= limit:
                    break
        return out

    def _record(self, job: Any, run: Mapping[str, Any] | None = None) -> JobRecord:
        raw_status = _raw_status(job)
        status = map_status(raw_status)
        run = run or {}
        created = getattr(getattr(job, "creation_context", None), "created_at", None)
        output = _registered_output(job)
        error = None
        if status is JobStatus.FAILED:
            detail = (run.get("error") or {}).get("error") or {}
            error = JobError(
                message=redact(
                    str(
                        detail.get("message")
                        or "the job failed (no detail from the service; see the job in Azure ML studio)"
                    )
                ),
                code=detail.get("code"),
            )
        elif status is JobStatus.CANCELLED:
            error = JobError(message="the job was canceled", code="Canceled")
        tags = dict(getattr(job, "tags", None) or {})
        services = getattr(job, "services", None) or {}
        studio = getattr(services.get("Studio"), "endpoint", None) if isinstance(services, dict) else None
        details = getattr(job, "model", None)
        raw = {
            "name": getattr(job, "name", None),
            "id": getattr(job, "id", None),
            "status": raw_status,
            "display_name": getattr(job, "display_name", None),
            "experiment_name": getattr(job, "experiment_name", None),
            "task": getattr(job, "task", None),
            "model": getattr(details, "path", None),
            "compute": getattr(job, "compute", None),
            "tags": tags,
            "studio_url": studio,
            "outputs": {"registered_model": output},
        }
        return JobRecord(
            provider=self.name,
            id=str(getattr(job, "name", "")),
            status=status,
            raw_status=raw_status,
            base_model=tags.get("anytune.base_model") or raw["model"],
            fine_tuned_model=f"azureml:{output}" if status is JobStatus.SUCCEEDED and output else None,
            created_at=_as_datetime(created),
            started_at=_as_datetime(run.get("startTimeUtc")),
            finished_at=_as_datetime(run.get("endTimeUtc")) if status.is_terminal else None,
            error=error,
            output={"registered_model": output, "studio_url": studio} if output or studio else {},
            raw=json.loads(redact(json.dumps(raw, default=str))),
        )

    # -- data plane: run history and MLflow (same credential, transport and retry policy) ---------
    def _data_plane(self) -> Any:
        client = self._clients.get("data_plane")
        if client is None:
            from azure.core import PipelineClient
            from azure.core.pipeline.policies import BearerTokenCredentialPolicy, HeadersPolicy, UserAgentPolicy

            api = self._api_base()
            kwargs = self._client_kwargs()
            policies = [
                HeadersPolicy(),
                UserAgentPolicy("anytune"),
                kwargs["retry_policy"],
                BearerTokenCredentialPolicy(self._credential(), ARM_SCOPE),
            ]
            extra = {"transport": kwargs["transport"]} if "transport" in kwargs else {}
            client = PipelineClient(api, policies=policies, **extra)
            self._clients["data_plane"] = client
        return client

    def _api_base(self) -> str:
        info = self._info()
        if "api" not in info:
            url = info.get("discovery_url") or f"https://{info.get('location') or 'eastus'}.api.azureml.ms/discovery"
            api = None
            with contextlib.suppress(ProviderError):
                api = self._get_json(url, absolute=True).get("api")
            info["api"] = (api or url.rsplit("/discovery", 1)[0]).rstrip("/")
        return str(info["api"])

    def _get_json(self, url: str, *, absolute: bool = False, method: str = "GET", body: Any = None) -> dict[str, Any]:
        from azure.core.rest import HttpRequest

        client = self._clients.get("data_plane") if not absolute else None
        if client is None:
            # Discovery runs before the data plane's base URL is known.
            from azure.core import PipelineClient
            from azure.core.pipeline.policies import BearerTokenCredentialPolicy

            kwargs = self._client_kwargs()
            extra = {"transport": kwargs["transport"]} if "transport" in kwargs else {}
            client = PipelineClient(
                url,
                policies=[kwargs["retry_policy"], BearerTokenCredentialPolicy(self._credential(), ARM_SCOPE)],
                **extra,
            )
        with self._boundary(f"{method} {url.split('?')[0]}"):
            request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
            response = client.send_request(request)
            response.raise_for_status()
            data = response.json() if response.content else {}
        return data if isinstance(data, dict) else {}

    def _ws_path(self) -> str:
        ws = self.workspace()
        assert ws is not None
        return ws.arm_id

    def _run_details(self, run_id: str, status: JobStatus) -> dict[str, Any]:
        """Run history's view of the job (start/end times, error); empty when it cannot be read."""
        if status is JobStatus.QUEUED:
            return {}
        try:
            self._data_plane()
            return self._get_json(f"{self._api_base()}/history/v1.0{self._ws_path()}/runs/{run_id}")
        except (ServiceUnavailableError, InvalidRequestError, RateLimitError, PermissionDeniedError):
            return {}

    def _mlflow(self, path: str, *, body: Any = None) -> dict[str, Any]:
        self._data_plane()
        url = f"{self._api_base()}/mlflow/v1.0{self._ws_path()}/api/2.0/mlflow/{path}"
        return self._get_json(url, method="POST" if body is not None else "GET", body=body)

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        """Metric points from the MLflow metrics of the job's run and its child runs, by step."""
        try:
            root = self._mlflow(f"runs/get?run_id={job_id}").get("run") or {}
        except (ServiceUnavailableError, InvalidRequestError, RateLimitError, PermissionDeniedError):
            return []
        runs = [root]
        experiment = (root.get("info") or {}).get("experiment_id")
        if experiment:
            with contextlib.suppress(ServiceUnavailableError, InvalidRequestError, RateLimitError):
                found = self._mlflow(
                    "runs/search",
                    body={
                        "experiment_ids": [experiment],
                        "max_results": 100,
                        "filter": f"tags.mlflow.rootRunId = '{job_id}'",
                    },
                )
                runs += [r for r in found.get("runs") or [] if (r.get("info") or {}).get("run_id") != job_id]
        points: dict[int, dict[str, Any]] = {}
        for run in runs:
            run_id = (run.get("info") or {}).get("run_id")
            keys = {m.get("key") for m in (run.get("data") or {}).get("metrics") or []}
            for key in sorted(k for k in keys if isinstance(k, str)):
                field = METRIC_KEYS.get(key.lower())
                history = self._mlflow(f"metrics/get-history?run_id={run_id}&metric_key={key}")
                for m in history.get("metrics") or []:
                    step = int(m.get("step") or 0)
                    row = points.setdefault(step, {"step": step, "extra": {}})
                    value = float(m.get("value"))
                    if field is None:
                        row["extra"][key] = value
                    else:
                        row[field] = int(value) if field == "tokens_seen" else value
                    if m.get("timestamp"):
                        row["time"] = datetime.fromtimestamp(int(m["timestamp"]) / 1000, tz=timezone.utc)
        return [MetricPoint(**points[s]) for s in sorted(points)]

    # -- events ---------------------------------------------------------------------------------
    def _journal_path(self, job_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", job_id):
            raise JobNotFoundError(f"{self.name}:{job_id}", "not an Azure ML job name")
        return self.home / "azureml" / "events" / f"{job_id}.jsonl"

    def _journal(self, job_id: str) -> builtins.list[Event]:
        path = self._journal_path(job_id)
        if not path.is_file():
            return []
        return [Event.model_validate_json(line) for line in path.read_bytes().splitlines() if line.strip()]

    def _append(self, job_id: str, make: Callable[[builtins.list[Event]], builtins.list[Event]]) -> None:
        """Append the events ``make`` derives from the journal so far, under a cross-process lock."""
        from filelock import FileLock

        path = self._journal_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            current = self._journal(job_id)
            new = make(current)
            if new:
                with path.open("ab") as f:
                    for event in new:
                        f.write(redact(event.model_dump_json()).encode() + b"\n")
                    f.flush()
                    os.fsync(f.fileno())

    def _journal_status(self, record: JobRecord, warnings: Sequence[Any] = ()) -> None:
        def make(current: builtins.list[Event]) -> builtins.list[Event]:
            # Run history's warnings are the job's own log lines anytune can read without its files.
            known = {e.message for e in current if e.kind == "log"}
            logs: builtins.list[Event] = []
            for warning in warnings:
                text = redact(str(warning.get("message") if isinstance(warning, dict) else warning))
                if text and text not in known:
                    known.add(text)
                    logs.append(
                        Event(
                            id=f"{len(current) + len(logs) + 1:08d}",
                            kind="log",
                            time=utcnow(),
                            message=text,
                            level="warning",
                        )
                    )
            current = [*current, *logs]
            last = next((e for e in reversed(current) if e.kind == "status"), None)
            if last is not None and (last.raw or {}).get("status") == record.raw_status:
                return logs
            message = f"{record.raw_status}"
            if record.error is not None and record.status is JobStatus.FAILED:
                message += f": {record.error.message}"
            when = (
                (record.finished_at if record.status.is_terminal else None)
                or (
                    record.started_at
                    if record.status is JobStatus.RUNNING and last is not None and last.status is not JobStatus.RUNNING
                    else None
                )
                or utcnow()
            )
            return [
                *logs,
                Event(
                    id=f"{len(current) + 1:08d}",
                    kind="status",
                    time=when,
                    status=record.status,
                    message=message,
                    level="error" if record.status is JobStatus.FAILED else "info",
                    raw={"status": record.raw_status},
                ),
            ]

        self._append(record.id, make)

    def _journal_metrics(self, job_id: str, points: builtins.list[MetricPoint]) -> None:
        def make(current: builtins.list[Event]) -> builtins.list[Event]:
            seen = {e.metric.step for e in current if e.metric is not None}
            out: builtins.list[Event] = []
            for point in points:
                if point.step in seen:
                    continue
                bits = [
                    f"{k} {v:.4g}"
                    for k, v in (("train_loss", point.train_loss), ("valid_loss", point.valid_loss))
                    if v is not None
                ]
                out.append(
                    Event(
                        id=f"{len(current) + len(out) + 1:08d}",
                        kind="metric",
                        time=point.time or utcnow(),
                        metric=point,
                        message=f"step {point.step}" + (": " + ", ".join(bits) if bits else ""),
                    )
                )
            return out

        if points:
            self._append(job_id, make)

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        """Status changes (as observed by :meth:`get`) and metric points, oldest first."""
        journal = self._journal(job_id)
        if not journal:
            self.get(job_id)
        last_status = next((e for e in reversed(self._journal(job_id)) if e.kind == "status"), None)
        if last_status is not None and last_status.status in (JobStatus.RUNNING, *_FINISHED):
            # Metrics are a bonus: a metrics store that stays unavailable must not stop the stream.
            with contextlib.suppress(ServiceUnavailableError, RateLimitError, InvalidRequestError):
                self._journal_metrics(job_id, self.metrics(job_id))
        for event in self._journal(job_id):
            if after is None or event.id > after:
                yield event

    # -- result ---------------------------------------------------------------------------------
    def result(self, record: JobRecord) -> FineTunedModel:
        """The registered output model (name, version, asset id) and how to deploy it."""
        output = (record.output or {}).get("registered_model")
        if not output:
            with self._boundary(f"get job {record.id}"):
                output = _registered_output(self._ml().jobs.get(record.id))
        if not output:
            raise InvalidRequestError(f"job {record.id} succeeded but names no registered model", provider=NAME)
        with self._boundary(f"get model {output}"):
            model = self._ml().models.get(output, label="latest")
        version = str(model.version)
        info = self._info()
        location, ws_id = info.get("location"), info.get("workspace_id")
        ws_model_uri = (
            f"azureml://locations/{location}/workspaces/{ws_id}/models/{output}/versions/{version}"
            if location and ws_id
            else str(model.id)
        )
        serverless = (record.raw.get("tags") or {}).get("anytune.deployment", "serverless") == "serverless"
        deploy = {
            "serverless_endpoint": {
                "model_id": ws_model_uri,
                "python": f"ml_client.serverless_endpoints.begin_create_or_update(ServerlessEndpoint("
                f"name='{_slug(output, 40)}', model_id='{ws_model_uri}')).result()",
            },
            "managed_online_endpoint": {
                "model": str(model.id),
                "python": f"ml_client.online_deployments.begin_create_or_update(ManagedOnlineDeployment("
                f"name='default', endpoint_name='<endpoint>', model='{model.id}', "
                "instance_type='<GPU SKU>', instance_count=1)).result()",
            },
            "recommended": "serverless_endpoint" if serverless else "managed_online_endpoint",
        }
        points = []
        with contextlib.suppress(ProviderError):
            points = self.metrics(record.id)
        return FineTunedModel(
            provider=record.provider,
            job_ref=record.ref,
            base_model=record.base_model,
            model_id=f"azureml:{output}:{version}",
            final_metrics=points[-1] if points else None,
            extra={
                "name": output,
                "version": version,
                "asset_id": str(model.id),
                "workspace_model_uri": ws_model_uri,
                "deploy": deploy,
            },
        )


_FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

#: MLflow metric key -> MetricPoint field (anything else goes to ``extra``).
METRIC_KEYS: Mapping[str, str] = {
    "loss": "train_loss",
    "train_loss": "train_loss",
    "train/loss": "train_loss",
    "eval_loss": "valid_loss",
    "validation_loss": "valid_loss",
    "eval/loss": "valid_loss",
    "epoch": "epoch",
    "train/epoch": "epoch",
    "learning_rate": "learning_rate",
    "train/learning_rate": "learning_rate",
    "train_token_accuracy": "token_accuracy",
    "eval_token_accuracy": "valid_token_accuracy",
    "num_input_tokens_seen": "tokens_seen",
}


class _NotFound(AnytuneError):
    """Internal: a lookup found nothing (never leaves this module)."""

    def __init__(self) -> None:
        super().__init__("not found")


def _redact_azure_logs() -> None:
    """Redact the Azure SDKs' log records like anytune's own.

    azure-ai-ml logs service messages (which may echo what was sent) on loggers of its own, some
    with their own stderr handler and no propagation: each handler gets the filter too.
    """
    for name in ("azure", "azure.ai.ml", "azure.ai.ml._telemetry"):
        logger = logging.getLogger(name)
        install_log_filter(logger)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def _raw_status(job: Any) -> str:
    """The service's status string (entities carry it as a str or as a REST enum member)."""
    status = getattr(job, "status", None)
    return str(getattr(status, "value", status) or "Unknown")


def _registered_output(job: Any) -> str | None:
    outputs = getattr(job, "outputs", None) or {}
    out = outputs.get("registered_model") if isinstance(outputs, dict) else None
    if out is None:
        return None
    name = getattr(out, "name", None) or (out.get("name") if isinstance(out, dict) else None)
    return str(name) if name else None


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    with contextlib.suppress(ValueError):
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _rest_body(entity: Any) -> dict[str, Any]:
    """The JSON body ``jobs.create_or_update`` PUTs for ``entity`` (built offline by the SDK)."""
    rest = entity._to_rest_object()
    as_dict = getattr(rest, "as_dict", None)
    body = as_dict() if callable(as_dict) else rest.serialize()
    plain: dict[str, Any] = json.loads(json.dumps(body, default=str))
    return plain


_POLICY_CLASS: Any = None


def _read_retry_policy(*, sleep: Callable[[float], None], **kwargs: Any) -> Any:
    """An azure-core ``RetryPolicy`` that retries reads only and sleeps through ``sleep``.

    Writes (PUT/POST/PATCH/DELETE) are never retried here, not even on a Retry-After: the adapter
    decides, after looking up whether the first attempt took effect.
    """
    global _POLICY_CLASS
    if _POLICY_CLASS is None:
        from azure.core.pipeline.policies import RetryPolicy

        class ReadRetryPolicy(RetryPolicy):  # type: ignore[misc]
            READS = frozenset({"GET", "HEAD", "OPTIONS"})

            def __init__(self, *, sleep: Callable[[float], None], **kw: Any) -> None:
                super().__init__(**kw)
                self._sleep_fn = sleep
                self._method_whitelist = self.READS

            def _is_method_retryable(self, settings: Any, request: Any, response: Any = None) -> bool:
                return str(request.method).upper() in self.READS

            def is_retry(self, settings: Any, response: Any) -> bool:
                if str(response.http_request.method).upper() not in self.READS:
                    return False
                return bool(super().is_retry(settings, response))

            def sleep(self, settings: Any, transport: Any, response: Any = None) -> None:
                delay = self.get_retry_after(response) if response is not None else None
                if not delay:
                    delay = self.get_backoff_time(settings)
                if delay and delay > 0:
                    self._sleep_fn(min(float(delay), float(settings.get("max_backoff") or delay)))

        _POLICY_CLASS = ReadRetryPolicy
    return _POLICY_CLASS(sleep=sleep, **kwargs)
