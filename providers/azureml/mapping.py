"""Pure wire mapping: spec -> names, model reference, hyperparameters and job body; job -> record.

Nothing here sends anything. :func:`job_entity` builds the azure-ai-ml entity offline (azure-ai-ml
is imported on first use), and :func:`rest_body` shows the JSON ``jobs.create_or_update`` PUTs for
it, which is what a dry run prints.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from anytune._secrets import redact
from anytune._spec import JobSpec
from anytune._timestamps import parse_timestamp
from anytune._types import JobError, JobRecord, JobStatus
from anytune.errors import ConfigError, NotSupportedError
from anytune.providers.azureml.errors import NAME
from anytune.providers.azureml.status import map_status

Deployment = Literal["serverless", "managed"]
Task = Literal["chat-completion", "text-completion"]

#: Task -> the ``task`` ``create_finetuning_job`` takes.
TASKS: Mapping[Task, str] = {"chat-completion": "ChatCompletion", "text-completion": "TextCompletion"}
#: Task -> what a registry model lists in its ``finetuning-tasks`` property.
CATALOG_TASKS: Mapping[Task, str] = {"chat-completion": "chat-completion", "text-completion": "text-generation"}

#: Registries whose models are Microsoft's own: no marketplace subscription is needed for them.
FIRST_PARTY_REGISTRIES: frozenset[str] = frozenset({"azureml", "azure-openai"})

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


#: Where a hyperparameter no Azure ML deployment takes can be set (they run anytune's trainer).
_TRAINER_PROVIDERS = ("local", "huggingface")


def options_section(spec: JobSpec) -> str:
    """The spec section Azure ML options come from: ``azure`` when the older one is given."""
    return "azure" if spec.azure is not None else "azureml"


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
                # Neither deployment takes it: the providers that run anytune's own trainer do.
                alternatives=() if alt else _TRAINER_PROVIDERS,
            )
        out[table[key]] = _value(value)
    if spec.lora is not None:
        if deployment == "serverless":
            raise NotSupportedError(
                "serverless fine-tuning chooses its own adapter; set "
                f"{options_section(spec)}.deployment='managed' to set LoRA",
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


def slug(text: str, limit: int = 64) -> str:
    """``text`` as an Azure ML asset name: letters, digits, ``-`` and ``_``."""
    out = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    return (out or "model")[:limit].rstrip("-_")


def subscription_name(model: str) -> str:
    """A marketplace subscription's name: letters, digits and dashes only."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", model).strip("-")[:50] or "model"


def data_asset_name(prefix: str, sha256: str) -> str:
    """Content-addressed data asset name: the same bytes always map to the same asset."""
    return f"{slug(prefix, 40)}-{sha256[:32]}"


# -- models ------------------------------------------------------------------------------------


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


# -- the job -----------------------------------------------------------------------------------


@dataclass
class Submission:
    """Everything ``submit`` sends, resolved from the spec and settings (no network)."""

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
    #: The spec section its options came from (``azureml``, or the older ``azure``), for messages.
    section: str = "azureml"

    @property
    def needs_marketplace(self) -> bool:
        """Serverless fine-tuning of a third-party registry's model is billed through Azure Marketplace."""
        registry = self.model.registry
        return self.deployment == "serverless" and registry is not None and registry not in FIRST_PARTY_REGISTRIES


def compute_id(compute: str | None, workspace_arm_id: str | None) -> str | None:
    """The ARM id of a compute cluster given by name, ``azureml:`` name or ARM id."""
    if not compute:
        return None
    if compute.startswith("/subscriptions/"):
        return compute
    return f"{workspace_arm_id or '<workspace>'}/computes/{compute.removeprefix('azureml:')}"


def job_entity(sub: Submission, model_uri: str, training: str, validation: str | None, compute: str | None) -> Any:
    """The azure-ai-ml ``FineTuningJob`` entity for a submission (built offline)."""
    from azure.ai.ml.finetuning import create_finetuning_job

    # azure-ai-ml 1.35's create_finetuning_job fails (UnboundLocalError) without validation data:
    # give it the training data there and clear the field on the entity afterwards.
    entity = create_finetuning_job(
        model=model_uri,
        task=TASKS[sub.task],
        training_data=training,
        validation_data=validation or training,
        output_model_name_prefix=sub.output_name,
        hyperparameters=sub.hyperparameters or None,
        compute=compute,
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


def rest_body(entity: Any) -> dict[str, Any]:
    """The JSON body ``jobs.create_or_update`` PUTs for ``entity`` (built offline by the SDK)."""
    rest = entity._to_rest_object()
    as_dict = getattr(rest, "as_dict", None)
    body = as_dict() if callable(as_dict) else rest.serialize()
    plain: dict[str, Any] = json.loads(json.dumps(body, default=str))
    return plain


# -- the record --------------------------------------------------------------------------------


def raw_status(job: Any) -> str:
    """The service's status string (entities carry it as a str or as a REST enum member)."""
    status = getattr(job, "status", None)
    return str(getattr(status, "value", status) or "Unknown")


def registered_output(job: Any) -> str | None:
    """The name of the model a fine-tuning job registers."""
    outputs = getattr(job, "outputs", None) or {}
    out = outputs.get("registered_model") if isinstance(outputs, dict) else None
    if out is None:
        return None
    name = getattr(out, "name", None) or (out.get("name") if isinstance(out, dict) else None)
    return str(name) if name else None


def _job_error(status: JobStatus, run: Mapping[str, Any]) -> JobError | None:
    if status is JobStatus.FAILED:
        detail = (run.get("error") or {}).get("error") or {}
        message = detail.get("message") or "the job failed (no detail from the service; see the job in Azure ML studio)"
        return JobError(message=redact(str(message)), code=detail.get("code"))
    if status is JobStatus.CANCELLED:
        return JobError(message="the job was canceled", code="Canceled")
    return None


def to_record(provider: str, job: Any, run: Mapping[str, Any] | None = None) -> JobRecord:
    """The uniform record of an azure-ai-ml job entity and its run-history details (``run``)."""
    status_text = raw_status(job)
    status = map_status(status_text)
    run = run or {}
    created = getattr(getattr(job, "creation_context", None), "created_at", None)
    output = registered_output(job)
    tags = dict(getattr(job, "tags", None) or {})
    services = getattr(job, "services", None) or {}
    studio = getattr(services.get("Studio"), "endpoint", None) if isinstance(services, dict) else None
    raw = {
        "name": getattr(job, "name", None),
        "id": getattr(job, "id", None),
        "status": status_text,
        "display_name": getattr(job, "display_name", None),
        "experiment_name": getattr(job, "experiment_name", None),
        "task": getattr(job, "task", None),
        "model": getattr(getattr(job, "model", None), "path", None),
        "compute": getattr(job, "compute", None),
        "tags": tags,
        "studio_url": studio,
        "outputs": {"registered_model": output},
    }
    return JobRecord(
        provider=provider,
        id=str(getattr(job, "name", "")),
        status=status,
        raw_status=status_text,
        base_model=tags.get("anytune.base_model") or raw["model"],
        fine_tuned_model=f"azureml:{output}" if status is JobStatus.SUCCEEDED and output else None,
        created_at=parse_timestamp(created),
        started_at=parse_timestamp(run.get("startTimeUtc")),
        finished_at=parse_timestamp(run.get("endTimeUtc")) if status.is_terminal else None,
        error=_job_error(status, run),
        output={"registered_model": output, "studio_url": studio} if output or studio else {},
        raw=json.loads(redact(json.dumps(raw, default=str))),
    )


def deploy_hints(output: str, model_id: str, workspace_model_uri: str, *, serverless: bool) -> dict[str, Any]:
    """How to deploy a registered fine-tuned model: serverless endpoint or managed online deployment."""
    return {
        "serverless_endpoint": {
            "model_id": workspace_model_uri,
            "python": f"ml_client.serverless_endpoints.begin_create_or_update(ServerlessEndpoint("
            f"name='{slug(output, 40)}', model_id='{workspace_model_uri}')).result()",
        },
        "managed_online_endpoint": {
            "model": model_id,
            "python": f"ml_client.online_deployments.begin_create_or_update(ManagedOnlineDeployment("
            f"name='default', endpoint_name='<endpoint>', model='{model_id}', "
            "instance_type='<GPU SKU>', instance_count=1)).result()",
        },
        "recommended": "serverless_endpoint" if serverless else "managed_online_endpoint",
    }
