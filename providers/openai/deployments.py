"""Azure OpenAI model deployments: a fine-tuned model is called through a *deployment*, an ARM
resource ``Microsoft.CognitiveServices/accounts/{account}/deployments/{name}`` made, read and
deleted through ``azure-mgmt-cognitiveservices`` (imported on first use) signed in with Entra ID.

What is pure here (the settings, the request body, the ARM resource -> :class:`Deployment`, the
provisioning states, the cost notes, the error table) is table-tested; :class:`AzureDeployments`
does the I/O. Shapes follow the published REST description of the api-version the adapter pins,
:data:`ARM_API_VERSION` (``specification/cognitiveservices/resource-manager/Microsoft.CognitiveServices/
stable/2025-09-01/cognitiveservices.json``: ``Deployment`` = ``sku`` {``name`` required, ``capacity``}
+ ``properties`` {``model`` {``format``, ``name``, ``version``}, ``raiPolicyName``,
``provisioningState`` read-only}; PUT answers 200/201, DELETE 200/202/204), and Microsoft Learn's
"Deploy a fine-tuned model" (format ``OpenAI``, version ``"1"``, sku ``standard`` capacity 1) and
"Test a fine-tuned model" (sku ``developertier``, capacity 50).

Reliability: the management client's own retries are off (``retry_total=0``); reads and the delete
(idempotent) retry with the provider's :class:`~anytune._retry.RetryPolicy`, honouring Retry-After;
the create (a PUT by name) goes through :func:`~anytune._create_once.create_once`, which looks the
name up after an ambiguous failure before sending it again. Waiting polls ``deployments.get`` with
the provider's injected ``sleep``/``clock`` (the SDK's LRO pollers sleep on their own).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from anytune._boundary import boundary, error_class_for_status, sign_in_not_set_up
from anytune._create_once import create_once
from anytune._deploy import Deployment, DeploymentStatus, is_gone, is_settled, wait_until
from anytune._netfail import NetFailure, classify
from anytune._retry import RetryPolicy, is_retryable_status, retry_after_of, retry_call
from anytune._secrets import install_log_filter
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    MissingDependencyError,
    NotSupportedError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
    UsageError,
)

if TYPE_CHECKING:
    from anytune._types import FineTunedModel

    from .clients import AzureOpenAISettings

__all__ = [
    "ARM_API_VERSION",
    "ARM_SCOPE",
    "DEFAULT_CAPACITY",
    "PROVISIONING_STATUS",
    "SKU_NAMES",
    "ArmScope",
    "AzureDeployments",
    "AzureOpenAIDeploySettings",
    "account_of",
    "arm_ambiguous",
    "arm_transient",
    "check_deploy_settings",
    "cost_notes",
    "deployment_body",
    "deployment_of",
    "require_model_id",
    "resolve_scope",
    "scope_missing",
    "served_model",
    "status_of",
    "translate_arm_error",
]

T = TypeVar("T")
logger = logging.getLogger("anytune.providers.openai")

#: The api-version every management call sends (the SDK's default when this was written), pinned so
#: a newer SDK does not silently change the shapes checked against its published description.
ARM_API_VERSION = "2025-09-01"
#: The token scope of Azure Resource Manager (not the data plane's cognitiveservices scope).
ARM_SCOPE = "https://management.azure.com/.default"
#: ``properties.model`` of a fine-tuned model's deployment (Microsoft Learn, "Deploy a fine-tuned model").
MODEL_FORMAT = "OpenAI"
FINE_TUNED_VERSION = "1"

DeploySku = Literal["standard", "globalstandard", "developer"]
#: ``sku`` setting -> ARM ``sku.name`` (Learn writes them in lower case; ARM takes either case).
SKU_NAMES: Mapping[str, str] = {
    "standard": "Standard",
    "globalstandard": "GlobalStandard",
    "developer": "DeveloperTier",
}
#: ``sku.capacity`` when the settings give none: Learn's examples for fine-tuned models (standard 1,
#: developertier 50), in thousands of tokens per minute.
DEFAULT_CAPACITY: Mapping[str, int] = {"standard": 1, "globalstandard": 1, "developer": 50}
#: ``properties.provisioningState`` (DeploymentProvisioningState, 2025-09-01) -> uniform status.
PROVISIONING_STATUS: Mapping[str, DeploymentStatus] = {
    "accepted": "creating",
    "creating": "creating",
    "moving": "creating",
    "succeeded": "ready",
    "failed": "failed",
    "canceled": "failed",
    "disabled": "failed",
    "deleting": "deleting",
}

# Where each cost fact comes from (checked 2026-12 in the stored copies of Microsoft Learn).
_LEARN_DEPLOY = "Microsoft Learn, 'Deploy a fine-tuned model' (Azure OpenAI)"
_LEARN_TEST = "Microsoft Learn, 'Test a fine-tuned model' (Azure OpenAI)"


class AzureOpenAIDeploySettings(BaseModel):
    """``FineTunedModel.deploy(**settings)`` on ``azure-openai``.

    ``sku``: the deployment type: ``standard`` (the resource's region, hourly hosting fee plus
    tokens), ``globalstandard`` (any region, same billing), ``developer`` (no hosting fee, no SLA,
    deleted after 24 hours). ``capacity``: thousands of tokens per minute (default: 1, developer 50).
    ``rai_policy_name``: the content filter (default: the account's).
    """

    model_config = ConfigDict(extra="forbid")

    sku: DeploySku = Field("standard", description="deployment type: standard, globalstandard or developer")
    capacity: int | None = Field(None, ge=1, le=100_000, description="thousands of tokens per minute")
    rai_policy_name: str | None = Field(None, min_length=1, max_length=256, description="content filter name")


# -- who and where (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmScope:
    """The Azure OpenAI account as ARM knows it."""

    subscription_id: str
    resource_group: str
    account: str

    def deployment_id(self, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.CognitiveServices/accounts/{self.account}/deployments/{name}"
        )


_ACCOUNT_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


def account_of(endpoint: str | None) -> str | None:
    """The account name an endpoint's host starts with (``https://NAME.openai.azure.com`` -> NAME);
    None for any other host (a proxy, a private domain): then the ``account`` setting is needed."""
    if not endpoint:
        return None
    host = (urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").hostname or "").lower()
    label, _, rest = host.partition(".")
    return label if label and f".{rest}".endswith(_ACCOUNT_HOSTS) else None


def resolve_scope(settings: AzureOpenAISettings, env: Mapping[str, str], endpoint: str | None) -> ArmScope:
    """Subscription, resource group and account: settings, then ``AZURE_SUBSCRIPTION_ID`` /
    ``AZURE_RESOURCE_GROUP``, then (account) the endpoint's host.

    Raises:
        ConfigError: naming the first missing setting and where it can come from.
    """
    values = {
        "subscription_id": settings.subscription_id or env.get("AZURE_SUBSCRIPTION_ID"),
        "resource_group": settings.resource_group or env.get("AZURE_RESOURCE_GROUP"),
        "account": settings.account or account_of(endpoint),
    }
    hints = {
        "subscription_id": "settings subscription_id or AZURE_SUBSCRIPTION_ID",
        "resource_group": "settings resource_group or AZURE_RESOURCE_GROUP",
        "account": "settings account (the Azure OpenAI resource's name; taken from an endpoint "
        "https://NAME.openai.azure.com when it has that form)",
    }
    for key, value in values.items():
        if not value:
            raise ConfigError(
                f"deploying on Azure OpenAI creates an ARM resource in the account's subscription and resource "
                f"group: set {hints[key]}",
                field=f"settings.{key}",
            )
    return ArmScope(str(values["subscription_id"]), str(values["resource_group"]), str(values["account"]))


# -- the wire (pure) -------------------------------------------------------------------------------


def deployment_body(model_id: str, settings: AzureOpenAIDeploySettings) -> dict[str, Any]:
    """The PUT body (REST shape, ``Deployment`` of api-version 2025-09-01) for ``model_id``."""
    properties: dict[str, Any] = {"model": {"format": MODEL_FORMAT, "name": model_id, "version": FINE_TUNED_VERSION}}
    if settings.rai_policy_name:
        properties["raiPolicyName"] = settings.rai_policy_name
    capacity = settings.capacity if settings.capacity is not None else DEFAULT_CAPACITY[settings.sku]
    return {"sku": {"name": SKU_NAMES[settings.sku], "capacity": capacity}, "properties": properties}


def status_of(provisioning_state: str | None) -> DeploymentStatus:
    """The uniform status of a ``provisioningState``; an unknown one counts as still creating."""
    return PROVISIONING_STATUS.get(str(provisioning_state or "").lower(), "creating")


def served_model(resource: Mapping[str, Any]) -> str | None:
    """The model a deployment resource serves (``properties.model.name``)."""
    model = (resource.get("properties") or {}).get("model") or {}
    name = model.get("name")
    return str(name) if name else None


def cost_notes(sku_name: str | None) -> tuple[str, ...]:
    """What a deployment of this ARM sku keeps costing, as Microsoft documents it (no figures: the
    hourly rates vary by model, region and deployment type and no dated figure was at hand)."""
    if str(sku_name or "").lower() == "developertier":
        return (
            "Developer tier: no hourly hosting fee, billed per token only; no SLA and no data residency "
            f"({_LEARN_TEST}).",
            f"Azure deletes a developer-tier deployment 24 hours after it is made ({_LEARN_TEST}).",
            "undeploy() deletes it sooner; the fine-tuned model itself is kept.",
        )
    return (
        "Billed an hourly hosting fee for every hour the deployment exists, called or not, plus per token "
        f"({_LEARN_DEPLOY}; rates by model, region and deployment type on the Azure OpenAI pricing page).",
        "Azure deletes a fine-tuned deployment left without chat completions or responses calls for 15 days "
        f"in a row ({_LEARN_DEPLOY}).",
        "undeploy() deletes it and stops the hosting fee; the fine-tuned model is kept and can be deployed again.",
    )


def deployment_of(
    resource: Mapping[str, Any],
    *,
    provider: str,
    job_ref: str,
    url: str | None,
    created: bool = False,
    status: DeploymentStatus | None = None,
) -> Deployment:
    """The uniform :class:`Deployment` of an ARM deployment resource (REST shape)."""
    props = resource.get("properties") or {}
    sku = resource.get("sku") or {}
    state = props.get("provisioningState")
    name = str(resource.get("name") or "")
    found = status or status_of(state)
    extra: dict[str, Any] = {
        "resource_id": resource.get("id"),
        "sku": sku.get("name"),
        "capacity": sku.get("capacity"),
        "provisioning_state": state,
    }
    if props.get("raiPolicyName"):
        extra["rai_policy_name"] = props["raiPolicyName"]
    if found == "failed":
        extra["error"] = f"the deployment's provisioningState is {state}"
    return Deployment(
        provider=provider,
        job_ref=job_ref,
        name=name,
        kind="deployment",
        target=name,
        model=served_model(resource) or "",
        status=found,
        url=url,
        created=created,
        cost_notes=cost_notes(sku.get("name")),
        extra=extra,
    )


# -- errors (pure) ---------------------------------------------------------------------------------

_SIGN_IN = frozenset({"ClientAuthenticationError", "CredentialUnavailableError"})
_NO_ANSWER = frozenset({"ServiceRequestError", "ServiceResponseError", "RequestException"})
#: Failures after the request left: the service may have acted.
_ANSWER_LOST = frozenset({"ServiceResponseError", "ServiceResponseTimeoutError", "ReadTimeout"})
_QUOTA = ("quota", "insufficientcapacity", "capacityexceeded")
#: A 404 naming one of these means the account, its group or subscription is missing, not the deployment.
_MISSING_SCOPE = ("resourcegroupnotfound", "subscriptionnotfound", "invalidsubscriptionid")


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _described(exc: BaseException) -> tuple[int | None, str, str]:
    """(status, code, message) of an azure-core exception."""
    status = getattr(exc, "status_code", None)
    err = getattr(exc, "error", None)
    code = str(getattr(err, "code", None) or "")
    message = str(getattr(err, "message", None) or getattr(exc, "message", None) or exc).strip()
    return (status if isinstance(status, int) else None), code, message


def scope_missing(exc: BaseException) -> bool:
    """A 404 about the account (or its resource group or subscription), not about a deployment."""
    status, code, message = _described(exc)
    if status != 404:
        return False
    code = code.lower()
    if code in _MISSING_SCOPE:
        return True
    text = message.lower()
    return code == "resourcenotfound" and "/deployments/" not in text and "microsoft.cognitiveservices/accounts" in text


def arm_transient(exc: BaseException) -> bool:
    """Retry predicate: no answer (but for no network, DNS, refused, TLS), 408, 429 (not quota), 5xx."""
    names = _names(exc)
    status, code, message = _described(exc)
    if status is None:
        if not names & _NO_ANSWER:
            return False
        failure = classify(exc)
        return failure is None or not failure.permanent
    if status == 429 and any(q in f"{code} {message}".lower() for q in _QUOTA):
        return False
    return is_retryable_status(status)


def arm_ambiguous(exc: BaseException) -> bool:
    """Whether a failed PUT may have taken effect: the answer was lost (timeout, dropped), 408, 5xx."""
    status, _, _ = _described(exc)
    if status is None:
        return bool(_names(exc) & _ANSWER_LOST) and arm_transient(exc)
    return status == 408 or status >= 500


def translate_arm_error(exc: BaseException, *, provider: str, what: str) -> AnytuneError | None:
    """The anytune error for an azure-core / azure-identity exception (None for anything else)."""
    if not type(exc).__module__.startswith(("azure.", "requests", "urllib3")):
        return None  # a programming error is never disguised as a service failure
    names = _names(exc)
    status, code, message = _described(exc)
    if names & _SIGN_IN and status is None:
        if sign_in_not_set_up(exc):
            return ConfigError(
                f"{what}: no Azure credential found for Entra ID sign-in to Azure Resource Manager: sign in "
                "(`az login`, managed identity, AZURE_CLIENT_ID...)",
                field="settings.auth",
            )
        return AuthenticationError(f"{what}: Entra ID sign-in failed ({type(exc).__name__})", provider=provider)
    if status is None:
        if names & _NO_ANSWER:
            failure = classify(exc, url="https://management.azure.com") or NetFailure("connect")
            retried = "" if failure.permanent else " (after retries)"
            return ServiceUnavailableError(f"{what}: {failure.describe()}{retried}", provider=provider)
        return ProviderError(f"{what}: {type(exc).__name__}: {message}", provider=provider)
    text = f"{code} {message}".lower()
    detail = f"{what}: {message}" + (f" [{code}]" if code and code not in message else "")
    common: dict[str, Any] = {"provider": provider, "status_code": status, "request_id": _request_id(exc)}
    family = error_class_for_status(status)
    if status in (400, 403, 409, 429) and any(q in text for q in _QUOTA):
        return QuotaExceededError(f"{detail} (quota: ask for more, or lower capacity)", **common)
    if family is RateLimitError:
        return RateLimitError(detail, retry_after=retry_after_of(exc), **common)
    if family is AuthenticationError:
        return AuthenticationError(f"{detail} (the credential must sign in to Azure Resource Manager)", **common)
    return family(detail, **common)


def _request_id(exc: BaseException) -> str | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    found = headers.get("x-ms-request-id") or headers.get("x-ms-correlation-request-id")
    return str(found) if found else None


# -- the I/O -----------------------------------------------------------------------------------------


def import_mgmt() -> Any:
    """``azure.mgmt.cognitiveservices``; ``MissingDependencyError`` naming the extra if absent."""
    try:
        import azure.mgmt.cognitiveservices as mgmt
    except ImportError as exc:
        raise MissingDependencyError("azure-mgmt-cognitiveservices", "azure", "deploying on 'azure-openai'") from exc
    install_log_filter(logging.getLogger("azure"))
    return mgmt


def default_credential() -> Any:
    """azure-identity's ``DefaultAzureCredential`` (``az login``, managed identity, environment)."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise MissingDependencyError("azure-identity", "azure", "Entra ID sign-in for 'azure-openai' deploy") from exc
    from anytune._quiet import demote_warnings

    demote_warnings("azure.identity._credentials.chained")
    return DefaultAzureCredential()


class AzureDeployments:
    """Deployments of one Azure OpenAI account through ``CognitiveServicesManagementClient``.

    Args:
        provider: the provider's name (for errors and :class:`Deployment`).
        scope: the account.
        url: the account's endpoint (:attr:`Deployment.url`).
        credential: an azure-core ``TokenCredential`` (None: ``DefaultAzureCredential``).
        transport: an azure-core ``HttpTransport`` (tests pass a fake; None: azure-core's).
        policy, sleep, clock, rand: the provider's retry policy and time sources.
        poll_interval: seconds between reads while waiting.
        settle: seconds a lookup after an ambiguous create is repeated before creating again.
    """

    def __init__(
        self,
        *,
        provider: str,
        scope: ArmScope,
        url: str | None,
        credential: Any,
        transport: Any,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        rand: Callable[[], float],
        poll_interval: float,
        settle: float,
    ) -> None:
        self.provider = provider
        self.scope = scope
        self.url = url
        self._credential = credential
        self._transport = transport
        self._policy = policy
        self._timing: dict[str, Any] = {"sleep": sleep, "clock": clock, "rand": rand}
        self._poll_interval = poll_interval
        self._settle = settle
        self._client_obj: Any = None

    # -- plumbing ------------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._client_obj is None:
            mgmt = import_mgmt()
            extra = {"transport": self._transport} if self._transport is not None else {}
            with self._boundary("signing in to Azure Resource Manager"):
                credential = self._credential if self._credential is not None else default_credential()
            # retry_total=0: one retry policy (ours) decides what is repeated, and sleeps as injected.
            self._client_obj = mgmt.CognitiveServicesManagementClient(
                credential, self.scope.subscription_id, api_version=ARM_API_VERSION, retry_total=0, **extra
            )
        return self._client_obj

    def _boundary(self, what: str) -> Any:
        return boundary(functools.partial(translate_arm_error, provider=self.provider, what=what))

    def _read(self, what: str, fn: Callable[[], T]) -> T:
        return retry_call(
            fn,
            policy=self._policy,
            retry_on=arm_transient,
            retry_after=retry_after_of,
            **self._timing,
            what=f"{self.provider}: {what}",
        )

    def _get(self, name: str) -> dict[str, Any] | None:
        """The deployment resource (REST shape), or None on 404; a missing account is ConfigError."""
        what = f"reading deployment {name!r} of account {self.scope.account!r}"
        client = self._client()

        def read() -> dict[str, Any] | None:
            try:
                found = client.deployments.get(self.scope.resource_group, self.scope.account, name)
            except Exception as exc:
                if getattr(exc, "status_code", None) == 404 and type(exc).__module__.startswith("azure."):
                    if scope_missing(exc):
                        raise self._scope_error(exc) from exc
                    return None
                raise
            out: dict[str, Any] = found.serialize(keep_readonly=True)
            return out

        with self._boundary(what):
            return self._read(what, read)

    def _scope_error(self, exc: BaseException) -> ConfigError:
        _, code, message = _described(exc)
        s = self.scope
        return ConfigError(
            f"Azure OpenAI account {s.account!r} (resource group {s.resource_group!r}, subscription "
            f"{s.subscription_id!r}) was not found: {message} [{code}]; check settings account, resource_group "
            "and subscription_id",
            field="settings.account",
        )

    def _mine(self, model_id: str, name: str, resource: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """``resource`` when it serves ``model_id``; another model under the name is refused."""
        if resource is None:
            return None
        served = served_model(resource)
        if served != model_id:
            raise UsageError(
                f"deployment {name!r} of account {self.scope.account!r} serves {served or 'another model'}, not "
                f"{model_id}: choose another name (it is someone's deployment, left as it is)",
                field="name",
            )
        return resource

    def _view(self, model: FineTunedModel, resource: Mapping[str, Any], **kw: Any) -> Deployment:
        return deployment_of(resource, provider=self.provider, job_ref=model.job_ref, url=self.url, **kw)

    # -- the contract ----------------------------------------------------------------------------------
    def deployment(self, model: FineTunedModel, name: str) -> Deployment | None:
        model_id = require_model_id(model, self.provider, "deployment")
        found = self._mine(model_id, name, self._get(name))
        return None if found is None else self._view(model, found)

    def deploy(
        self, model: FineTunedModel, name: str, settings: AzureOpenAIDeploySettings, *, wait: bool, timeout: float
    ) -> Deployment:
        model_id = require_model_id(model, self.provider, "deploy")
        body = deployment_body(model_id, settings)  # every check done before anything is sent
        existing = self._mine(model_id, name, self._get(name))
        current = self._view(model, existing) if existing is not None else self._create(model, name, body)
        if wait and not is_settled(current):
            settled = wait_until(
                lambda: self.deployment(model, name),
                settled=is_settled,
                **{k: self._timing[k] for k in ("sleep", "clock")},
                timeout=timeout,
                what=f"{self.provider} deployment {name}",
                interval=self._poll_interval,
            )
            if settled is None:
                raise UsageError(f"deployment {name!r} was deleted while it was being created", field="name")
            current = settled.model_copy(update={"created": current.created})
        return current

    def _create(self, model: FineTunedModel, name: str, body: dict[str, Any]) -> Deployment:
        mgmt = import_mgmt()
        client = self._client()
        model_id = str(model.model_id)
        what = f"creating deployment {name!r} of {model_id}"

        def create() -> Mapping[str, Any]:
            poller = client.deployments.begin_create_or_update(
                self.scope.resource_group,
                self.scope.account,
                name,
                mgmt.models.Deployment.from_dict(body),
                polling=False,  # waiting is ours: the provider's sleep and clock, its timeout
            )
            out: dict[str, Any] = poller.result().serialize(keep_readonly=True)
            return out

        def lookup() -> Mapping[str, Any] | None:
            return self._mine(model_id, name, self._get(name))

        with self._boundary(what):
            resource = create_once(
                create,
                lookup,
                is_ambiguous=arm_ambiguous,
                retry_on=arm_transient,
                policy=self._policy,
                retry_after=retry_after_of,
                settle=self._settle,
                **self._timing,
                what=f"{self.provider}: {what}",
            )
        logger.info("%s: deployment %s of %s requested (%s)", self.provider, name, model_id, body["sku"]["name"])
        return self._view(model, resource, created=True)

    def undeploy(self, model: FineTunedModel, name: str, *, timeout: float) -> Deployment | None:
        model_id = require_model_id(model, self.provider, "undeploy")
        found = self._mine(model_id, name, self._get(name))
        if found is None:
            return None
        client = self._client()
        what = f"deleting deployment {name!r}"

        def delete() -> None:
            try:
                client.deployments.begin_delete(
                    self.scope.resource_group, self.scope.account, name, polling=False
                ).result()
            except Exception as exc:
                # Gone already (an earlier attempt went through): what undeploy wants.
                if getattr(exc, "status_code", None) != 404 or not type(exc).__module__.startswith("azure."):
                    raise

        with self._boundary(what):
            self._read(what, delete)  # a DELETE by name is idempotent: retried like a read
        wait_until(
            lambda: self.deployment(model, name),
            settled=is_gone,
            **{k: self._timing[k] for k in ("sleep", "clock")},
            timeout=timeout,
            what=f"{self.provider} undeploy {name}",
            interval=self._poll_interval,
        )
        logger.info("%s: deployment %s deleted", self.provider, name)
        return self._view(model, found, status="deleted")


def require_model_id(model: FineTunedModel, provider: str, action: str) -> str:
    """The fine-tuned model id a deployment serves; refused before anything is sent when absent."""
    if not model.model_id:
        raise NotSupportedError(
            f"{model.job_ref} has no fine-tuned model id (the job made none): nothing to deploy",
            field=action,
            provider=provider,
        )
    return model.model_id


def check_deploy_settings(settings: Any) -> AzureOpenAIDeploySettings:
    """``settings`` as :class:`AzureOpenAIDeploySettings` (a mapping is validated; UsageError naming the field)."""
    if isinstance(settings, AzureOpenAIDeploySettings):
        return settings
    from anytune._deploy import check_settings

    checked: AzureOpenAIDeploySettings = check_settings(AzureOpenAIDeploySettings, settings or {}, "azure-openai")
    return checked
