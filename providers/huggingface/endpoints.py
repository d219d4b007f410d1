"""Hugging Face Inference Endpoints for a fine-tuned adapter: the deploy settings, the create request,
and an endpoint read back as a uniform :class:`~anytune._deploy.Deployment` (pure: no I/O here).

How the adapter is served, and why. A Hugging Face job pushes a PEFT LoRA adapter repo, not a
merged model. Hugging Face documents serving LoRA adapters on an Inference Endpoint with
Text Generation Inference (TGI): the *base* model is the endpoint's ``repository``, the adapters
go in the ``LORA_ADAPTERS`` environment variable, and a request names the adapter it wants
(blog "TGI Multi-LoRA: Deploy Once, Serve 30 Models", huggingface.co/blog/multi-lora-serving,
section "Inference Endpoints Code", linked from the Inference Endpoints docs' index; TGI docs
``conceptual/lora.md``, "Specifying LoRA models"). So:

* ``repository`` = ``FineTunedModel.base_model``; ``model.image`` = ``{"tgi": {"url": <TGI image>,
  "healthRoute": "/health", "port": 80}}`` (huggingface_hub 2.x forwards an image keyed by its
  variant as it is; ``tgi`` is the API's variant name, ``hf endpoints deploy --engine tgi``);
* ``env.LORA_ADAPTERS`` = ``<hub_repo>@<revision>``: TGI's adapter syntax is ``id[=path][@revision]``
  (``text_generation_server/utils/adapter.py: parse_lora_adapters``), so the adapter's revision
  is pinned and its id is the Hub repo;
* the chat request's ``model`` is that id: TGI's Messages API takes the request's ``model`` as the
  adapter (``router/src/lib.rs``: ``adapter_id: model.filter(|m| *m != "tgi")``);
* the adapter repo is private by default, so TGI downloads it with the token, given to the
  endpoint as the *secret* ``HF_TOKEN`` (``model.secrets``), never as an environment variable.

TGI is in maintenance mode since December 2025 (Inference Endpoints docs, engines/tgi.md), which
recommends vLLM for new endpoints; vLLM's LoRA modules take no revision, so TGI remains the
documented way to serve this adapter *at its revision*. ``image`` can name another TGI build.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from anytune._deploy import Deployment, DeploymentStatus
from anytune._types import FineTunedModel

__all__ = [
    "CHAT_DEFAULT_MODEL",
    "DEFAULT_TGI_IMAGE",
    "ENDPOINT_STATUS",
    "KIND",
    "PRICES_SOURCE",
    "PUBLISHED_PRICES",
    "HuggingFaceDeploySettings",
    "adapter_of",
    "chat_model_of",
    "cost_notes",
    "create_arguments",
    "deployment_from_raw",
    "served_adapters",
    "serves",
    "split_target",
]

KIND = "inference-endpoint"
#: A TGI release with multi-LoRA (>= 2.1.1, the blog's minimum) and the Messages API.
DEFAULT_TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.2"
#: The ``model`` TGI's Messages API takes for "no adapter, the base model".
CHAT_DEFAULT_MODEL = "tgi"

#: ``InferenceEndpointStatus`` -> uniform status. ``scaledToZero`` is ready: the next request
#: wakes it (a cold start). ``paused`` serves nothing until resumed: reported as failed, with why.
ENDPOINT_STATUS: Mapping[str, DeploymentStatus] = {
    "pending": "creating",
    "initializing": "creating",
    "updating": "creating",
    "running": "ready",
    "scaledToZero": "ready",
    "updateFailed": "failed",
    "failed": "failed",
    "paused": "failed",
}

#: Hourly rate per replica (USD), billed per minute, from the Inference Endpoints pricing page
#: (huggingface/hf-endpoints-documentation docs/source/support/pricing.md, read 2026-08;
#: https://huggingface.co/docs/inference-endpoints/pricing). The hardware API's ``pricePerHour``
#: replaces it when deploy reads it.
PUBLISHED_PRICES: Mapping[tuple[str, str, str], float] = {
    ("aws", "nvidia-t4", "x1"): 0.5,
    ("aws", "nvidia-l4", "x1"): 0.8,
    ("aws", "nvidia-a10g", "x1"): 1.0,
    ("aws", "nvidia-l40s", "x1"): 1.8,
    ("aws", "nvidia-a100", "x1"): 2.5,
    ("aws", "nvidia-h200", "x1"): 5.0,
    ("gcp", "nvidia-t4", "x1"): 0.5,
    ("gcp", "nvidia-l4", "x1"): 0.7,
    ("gcp", "nvidia-a100", "x1"): 3.6,
}
PRICES_SOURCE = "https://huggingface.co/docs/inference-endpoints/pricing"

_SLUG = r"^[a-z0-9][a-z0-9-]*$"


class HuggingFaceDeploySettings(BaseModel):
    """``huggingface`` deploy settings: where the Inference Endpoint runs, on what, how it scales.

    ``vendor``/``region``/``accelerator``/``instance_type``/``instance_size`` are the values
    ``HfApi.list_inference_endpoints_hardware`` lists (``hf endpoints`` hardware); the default, one
    NVIDIA L4 (24 GB) on AWS us-east-1, fits models up to a few billion parameters in 16 bits.
    """

    model_config = ConfigDict(extra="forbid")

    vendor: Literal["aws", "gcp", "azure"] = "aws"
    region: str = Field("us-east-1", pattern=r"^[a-z]+(-[a-z0-9]+)+$")
    accelerator: Literal["gpu", "cpu", "neuron"] = "gpu"
    instance_type: str = Field("nvidia-l4", pattern=_SLUG, description="e.g. nvidia-t4, nvidia-l4, nvidia-a10g")
    instance_size: str = Field("x1", pattern=r"^x[0-9]{1,2}$")
    min_replica: int = Field(0, ge=0, le=100, description="0: scale to zero when idle (no charge, a cold start)")
    max_replica: int = Field(1, ge=1, le=100)
    scale_to_zero_timeout: int = Field(15, ge=1, le=10080, description="minutes without traffic before scaling to 0")
    namespace: str | None = Field(None, description="user or organisation (default: the provider's, else the token's)")
    endpoint_type: Literal["authenticated", "public"] = Field(
        "authenticated", description="authenticated: a Hugging Face token is needed to call it; public: anyone"
    )
    image: str = Field(DEFAULT_TGI_IMAGE, min_length=1, description="the TGI container image")

    @field_validator("endpoint_type", mode="before")
    @classmethod
    def _protected(cls, value: Any) -> Any:
        # The API's former name for "authenticated" (huggingface_hub refuses it now).
        return "authenticated" if value == "protected" else value

    @model_validator(mode="after")
    def _replicas(self) -> HuggingFaceDeploySettings:
        if self.max_replica < self.min_replica:
            raise ValueError(f"max_replica ({self.max_replica}) is below min_replica ({self.min_replica})")
        return self


def adapter_of(model: FineTunedModel) -> str:
    """``<hub_repo>@<revision>``: the LoRA adapter the endpoint serves, pinned (pure).

    Raises:
        NotSupportedError: the result has no Hub adapter, revision or base model.
    """
    from anytune.errors import NotSupportedError

    for field, value in (("hub_repo", model.hub_repo), ("revision", model.revision), ("base_model", model.base_model)):
        if not value:
            raise NotSupportedError(
                f"the result of {model.job_ref} has no {field}: an Inference Endpoint serves a Hub adapter repo at "
                "a revision on its base model",
                field=f"result.{field}",
                provider="huggingface",
            )
    return f"{model.hub_repo}@{model.revision}"


def create_arguments(
    model: FineTunedModel, name: str, settings: HuggingFaceDeploySettings, namespace: str
) -> dict[str, Any]:
    """The keyword arguments of ``HfApi.create_inference_endpoint`` (the token secret aside; pure)."""
    scale_to_zero = settings.scale_to_zero_timeout if settings.min_replica == 0 else None
    return {
        "name": name,
        "namespace": namespace,
        "repository": model.base_model,
        "framework": "pytorch",
        "task": "text-generation",
        "accelerator": settings.accelerator,
        "vendor": settings.vendor,
        "region": settings.region,
        "instance_type": settings.instance_type,
        "instance_size": settings.instance_size,
        "min_replica": settings.min_replica,
        "max_replica": settings.max_replica,
        "scale_to_zero_timeout": scale_to_zero,
        "type": settings.endpoint_type,
        "custom_image": {"tgi": {"url": settings.image, "healthRoute": "/health", "port": 80}},
        # MODEL_ID: where Inference Endpoints mount ``repository`` (the base model) in the container.
        "env": {"LORA_ADAPTERS": adapter_of(model), "MODEL_ID": "/repository"},
        "tags": ["anytune"],
    }


def served_adapters(raw: Mapping[str, Any]) -> list[str]:
    """The ``LORA_ADAPTERS`` entries of an endpoint read back (pure)."""
    env = (raw.get("model") or {}).get("env") or {}
    text = env.get("LORA_ADAPTERS") or ""
    return [part.strip() for part in str(text).split(",") if part.strip()]


def serves(raw: Mapping[str, Any], model: FineTunedModel) -> bool:
    """Whether the endpoint serves this result: its base model with this adapter at this revision."""
    return (raw.get("model") or {}).get("repository") == model.base_model and adapter_of(model) in served_adapters(raw)


def describe(raw: Mapping[str, Any]) -> str:
    """What an endpoint serves, in words (for a refusal)."""
    adapters = served_adapters(raw)
    repository = (raw.get("model") or {}).get("repository")
    return f"{repository} with adapter {', '.join(adapters)}" if adapters else f"{repository}"


def chat_model_of(raw: Mapping[str, Any]) -> str:
    """The ``model`` a chat request names: the first adapter's id (its revision and any local path
    dropped, as TGI keys adapters), else TGI's name for the base model (pure)."""
    adapters = served_adapters(raw)
    if not adapters:
        return CHAT_DEFAULT_MODEL
    match = re.match(r"^([^=@]+)", adapters[0])
    return match[1] if match else CHAT_DEFAULT_MODEL


def split_target(target: str, default_namespace: str | None) -> tuple[str | None, str]:
    """``NAMESPACE/NAME`` or ``NAME`` -> (namespace or the default, name) (pure)."""
    namespace, _, name = target.rpartition("/")
    return (namespace or default_namespace), name


def cost_notes(compute: Mapping[str, Any], vendor: str | None, price: float | None, source: str) -> tuple[str, ...]:
    """What the endpoint costs while it exists, in plain sentences (pure).

    Args:
        compute: the endpoint's ``compute`` (``instanceType``, ``instanceSize``, ``scaling``).
        vendor: the cloud.
        price: USD per replica-hour, when known; ``source`` says where it comes from.
    """
    instance = f"{compute.get('instanceType')} {compute.get('instanceSize')}"
    scaling = compute.get("scaling") or {}
    low, high = scaling.get("minReplica", 0), scaling.get("maxReplica", 1)
    idle = scaling.get("scaleToZeroTimeout")
    if price is None:
        price = PUBLISHED_PRICES.get((str(vendor), str(compute.get("instanceType")), str(compute.get("instanceSize"))))
        source = PRICES_SOURCE
    rate = (
        f"${price:g} per replica-hour ({source})" if price is not None else f"the hourly rate listed at {PRICES_SOURCE}"
    )
    notes = [
        f"Billed per minute while a replica of {vendor} {instance} runs or initializes: {rate}, "
        f"{low} to {high} replica(s).",
    ]
    if low == 0:
        notes.append(
            f"With min_replica 0 it scales to zero after {idle or 15} minutes without requests: no charge while "
            "scaled to zero (it still counts as ready), and the next request wakes it with a cold start of "
            "minutes (answered 503 until then; chat retries)."
        )
    else:
        notes.append(f"min_replica {low}: at least {low} replica(s) billed around the clock, called or not.")
    notes.append("undeploy() deletes the endpoint and stops the charges; the adapter repo stays on the Hub.")
    return tuple(notes)


def _status(raw: Mapping[str, Any]) -> tuple[DeploymentStatus, str | None]:
    status = raw.get("status") or {}
    state = str(status.get("state") or "pending")
    uniform = ENDPOINT_STATUS.get(state, "creating")
    error = None
    if uniform == "failed":
        message = status.get("message") or status.get("errorMessage") or ""
        why = "paused: resume it (hf endpoints resume) or undeploy" if state == "paused" else f"{state}"
        error = f"{why}: {message}".rstrip(": ") if message else why
    return uniform, error


def deployment_from_raw(
    raw: Mapping[str, Any],
    *,
    provider: str,
    job_ref: str,
    namespace: str,
    created: bool = False,
    price: float | None = None,
    price_source: str = "Inference Endpoints hardware API",
) -> Deployment:
    """An endpoint as the API returns it -> :class:`Deployment` (pure)."""
    status, error = _status(raw)
    state = (raw.get("status") or {}).get("state")
    name = str(raw.get("name"))
    extra: dict[str, Any] = {
        "namespace": namespace,
        "state": state,
        "type": raw.get("type"),
        "repository": (raw.get("model") or {}).get("repository"),
        "revision": (raw.get("model") or {}).get("revision"),
        "chat_model": chat_model_of(raw),
        "page": f"https://endpoints.huggingface.co/{namespace}/endpoints/{name}",
    }
    updated = (raw.get("status") or {}).get("updatedAt")
    if isinstance(updated, str):
        extra["updated_at"] = updated
    if error is not None:
        extra["error"] = error
    adapters = served_adapters(raw)
    provider_block = raw.get("provider") or {}
    return Deployment(
        provider=provider,
        job_ref=job_ref,
        name=name,
        kind=KIND,
        target=f"{namespace}/{name}",
        model=adapters[0] if adapters else str(extra["repository"]),
        status=status,
        url=(raw.get("status") or {}).get("url") or None,
        created=created,
        cost_notes=cost_notes(raw.get("compute") or {}, provider_block.get("vendor"), price, price_source),
        extra=extra,
    )
