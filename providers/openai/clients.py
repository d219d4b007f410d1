"""Who and where: settings, what they resolve to (:class:`ClientConfig`), and the SDK clients.

Settings win over the SDKs' standard variables, which win over the services' defaults.  The
``openai`` SDK and azure-identity are imported here, on first use only: reading capabilities or
making a dry-run plan never needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr

from anytune._provider import ProviderSettings
from anytune._quiet import demote_warnings
from anytune._retry import RetrySettings
from anytune._secrets import install_log_filter
from anytune.errors import ConfigError, MissingDependencyError

from .uploads import MAX_PART_BYTES
from .versions import V1_VERSIONS, AzureSurface, azure_surface

if TYPE_CHECKING:
    import httpx2
    from openai import OpenAI

__all__ = [
    "AZURE_TOKEN_SCOPE",
    "AZURE_V1_PATH",
    "AZURE_V1_VERSIONS",
    "DEFAULT_AZURE_API_VERSION",
    "DEFAULT_AZURE_TRAINING_TYPE",
    "AzureOpenAISettings",
    "ClientConfig",
    "FamilySettings",
    "OpenAISettings",
    "azure_client",
    "azure_client_config",
    "client_timeout",
    "default_token_provider",
    "import_openai",
    "openai_client",
    "openai_client_config",
]

#: api-version used when neither the profile nor ``OPENAI_API_VERSION`` names one: the service's
#: current API surface, ``{endpoint}/openai/v1/`` (OpenAI's shapes, job ``metadata`` included).
#: ``preview`` is that surface's preview; a dated version (``2025-04-01-preview``, ``2024-10-21``)
#: selects the older ``{endpoint}/openai/...?api-version=`` surface.
DEFAULT_AZURE_API_VERSION = "v1"
#: The api-versions that select the ``/openai/v1/`` surface.
AZURE_V1_VERSIONS = V1_VERSIONS
AZURE_V1_PATH = "/openai/v1"
#: trainingType when neither the spec nor the settings name one: training in the resource's region.
DEFAULT_AZURE_TRAINING_TYPE: Literal["standard", "globalstandard", "developer"] = "standard"
AZURE_TOKEN_SCOPE = "https://cognitiveservices.azure.com/.default"

# -- settings ---------------------------------------------------------------------------------------


class FamilySettings(ProviderSettings, RetrySettings):
    """Settings both services share: timeouts, retries (``retry_after_max`` from :class:`RetrySettings`),
    uploads, paging."""

    _WAIT_CAP_SETTING = "max_backoff"

    timeout: float = Field(60.0, gt=0, description="seconds to wait for a response")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to wait for a connection")
    upload_timeout: float = Field(600.0, gt=0, description="seconds to wait for one upload request")
    max_attempts: int = Field(6, ge=1, le=50, description="attempts per call, the first included")
    retry_deadline: float = Field(300.0, gt=0, description="seconds after which no retry is started")
    max_backoff: float = Field(
        30.0, gt=0, description="cap on our own back-off; when set (and retry_after_max is not), on Retry-After too"
    )
    upload_threshold_bytes: int = Field(
        MAX_PART_BYTES, ge=0, description="files larger than this go through the Uploads API in parts"
    )
    upload_part_bytes: int = Field(MAX_PART_BYTES, ge=1024, le=MAX_PART_BYTES)
    upload_concurrency: int = Field(4, ge=1, le=32, description="parts sent at once")
    events_page_size: int = Field(100, ge=1, le=1000)
    file_processing_timeout: float = Field(1800.0, ge=0, description="seconds to wait for file import")
    lookup_window: float = Field(86400.0, gt=0, description="how far back (s) a job is looked up by tag")


class OpenAISettings(FamilySettings):
    """``openai`` settings. Unset values come from the SDK's variables: ``OPENAI_API_KEY`` (or the
    variable named by ``api_key_env``), ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``."""

    api_key: SecretStr | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None


class AzureOpenAISettings(FamilySettings):
    """``azure-openai`` settings. Unset values come from ``AZURE_OPENAI_ENDPOINT``,
    ``AZURE_OPENAI_API_KEY`` (or ``api_key_env``) and ``OPENAI_API_VERSION``.

    ``auth``: ``key`` needs an API key; ``entra`` signs in with azure-identity's
    ``DefaultAzureCredential`` (``az login``, managed identity, ``AZURE_CLIENT_ID``...) unless the
    provider was given a token provider; ``auto`` uses the key when one is found, Entra ID otherwise.

    ``api_version``: ``v1`` (the default: ``{endpoint}/openai/v1/``), ``preview``, or a dated
    version such as ``2025-04-01-preview`` (``{endpoint}/openai/...?api-version=``).

    ``training_type``: the ``trainingType`` sent when the spec names none.  Azure needs one (without
    it the service answers "base model does not support fine-tuning"); the default ``standard``
    trains in the resource's own region, ``globalstandard`` wherever capacity is (data may leave the
    region's geography), ``developer`` on spare capacity (sent as ``developerTier``).

    ``subscription_id``, ``resource_group``, ``account``: the Azure OpenAI resource as Azure Resource
    Manager knows it, where ``deploy()`` makes model deployments (Entra ID sign-in, never the key).
    """

    endpoint: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    api_version: str | None = None
    auth: Literal["auto", "key", "entra"] = "auto"
    token_scope: str = AZURE_TOKEN_SCOPE
    training_type: Literal["standard", "globalstandard", "developer"] = Field(
        DEFAULT_AZURE_TRAINING_TYPE, description="trainingType when the spec names none"
    )
    # Where deployments are made (``FineTunedModel.deploy``): an ARM resource of the account.
    subscription_id: str | None = Field(None, description="the account's subscription (else AZURE_SUBSCRIPTION_ID)")
    resource_group: str | None = Field(None, description="the account's resource group (else AZURE_RESOURCE_GROUP)")
    account: str | None = Field(None, description="the account's name (default: the endpoint's first host label)")


# -- what they resolve to (pure) --------------------------------------------------------------------


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

    @property
    def surface(self) -> AzureSurface | None:
        """Azure: what the api-version's fine-tuning API has (:mod:`.versions`); OpenAI: None."""
        return azure_surface(self.api_version) if self.flavour == "azure" else None

    @property
    def azure_v1(self) -> bool:
        """True on Azure's ``/openai/v1/`` surface (``api_version`` ``v1`` or ``preview``)."""
        return self.surface is not None and self.surface.v1

    @property
    def job_keeps_metadata(self) -> bool:
        """Whether the service keeps a job's ``metadata``.

        OpenAI and Azure's v1 surface do; Azure's dated versions do not (their published
        ``FineTuningJob`` and ``FineTuningJobCreation`` schemas have no ``metadata``), so there the
        job is identified by its ``suffix``, which those versions keep.
        """
        return self.surface is None or self.surface.keeps_metadata

    @property
    def takes_method(self) -> bool:
        """Whether the create body takes ``method`` (all but Azure's 2024-10-21 surface)."""
        return self.surface is None or self.surface.has_method

    @property
    def supervised_in_method(self) -> bool:
        """Whether supervised hyperparameters go under ``method.supervised`` (OpenAI, Azure's v1) or
        in the top-level ``hyperparameters`` (Azure's dated versions)."""
        return self.surface is None or self.surface.supervised_hyperparameters_in_method

    @property
    def methods(self) -> frozenset[str]:
        """The fine-tuning methods the create body takes."""
        return frozenset({"supervised", "dpo", "reinforcement"}) if self.surface is None else self.surface.methods

    @property
    def can_pause(self) -> bool:
        """Whether jobs pause and resume (all but Azure's 2024-10-21 surface)."""
        return self.surface is None or self.surface.pauses

    @property
    def filters_jobs_by_metadata(self) -> bool:
        """Whether the job list takes a ``metadata`` filter: OpenAI's does; Azure's (v1 and dated)
        defines only ``after`` and ``limit``, so the adapter checks each job itself."""
        return self.flavour == "openai"

    @property
    def has_uploads_api(self) -> bool:
        """Whether large files may go through the Uploads API in parts: OpenAI and Azure's dated
        versions define ``/uploads``; Azure's v1 description does not (uploads through ``/openai/v1/``
        answer 404), so there every file goes whole through the Files API, up to the per-file limit."""
        return not self.azure_v1

    @property
    def file_list_query(self) -> dict[str, Any]:
        """Paging of ``GET /files`` beyond ``purpose``: OpenAI's takes ``limit`` and ``order``; Azure's
        v1 and 2024-10-21 define only ``purpose`` (and answer every file), so none is sent there."""
        return {"limit": 100, "order": "desc"} if self.flavour == "openai" else {}


def _key(value: SecretStr | None, variable: str, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(the API key, where it came from): settings first, then the environment variable."""
    if value is not None and value.get_secret_value():
        return value.get_secret_value(), "settings.api_key"
    return env.get(variable) or None, variable


def openai_client_config(settings: OpenAISettings, env: Mapping[str, str]) -> ClientConfig:
    """Settings first, then the SDK's standard variables, then OpenAI's defaults."""
    key, source = _key(settings.api_key, settings.api_key_env or "OPENAI_API_KEY", env)
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
    key, source = _key(settings.api_key, settings.api_key_env or "AZURE_OPENAI_API_KEY", env)
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


# -- clients ----------------------------------------------------------------------------------------


def import_openai(provider: str, extra: str) -> Any:
    """The openai SDK, its logger made safe; ``MissingDependencyError`` naming the extra if absent."""
    try:
        import openai
    except ImportError as exc:
        raise MissingDependencyError("openai", extra, f"the {provider!r} provider") from exc
    # The SDK logs requests at debug level; make sure nothing it logs can show a key.
    install_log_filter(logging.getLogger("openai"))
    return openai


def client_timeout(settings: FamilySettings) -> Any:
    """The SDK's timeout: ``timeout`` for a response, ``connect_timeout`` for a connection."""
    import httpx2

    return httpx2.Timeout(settings.timeout, connect=settings.connect_timeout)


def openai_client(openai: Any, cfg: ClientConfig, *, http_client: httpx2.Client | None, timeout: Any) -> OpenAI:
    """``openai.OpenAI`` for ``cfg``, the SDK's own retries off (ours decide what is repeated).

    Raises:
        ConfigError: no API key.
    """
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


def default_token_provider(scope: str) -> Callable[[], str]:
    """An Entra ID bearer-token callable from azure-identity's ``DefaultAzureCredential``."""
    try:
        from azure.identity import DefaultAzureCredential, get_bearer_token_provider
    except ImportError as exc:
        raise MissingDependencyError("azure-identity", "azure", "Entra ID sign-in for 'azure-openai'") from exc
    # A failed sign-in is raised and reported once by anytune; azure-identity's own warning about it
    # is shown with --debug only.
    demote_warnings("azure.identity._credentials.chained")
    provider: Callable[[], str] = get_bearer_token_provider(DefaultAzureCredential(), scope)
    return provider


def azure_client(
    openai: Any,
    cfg: ClientConfig,
    *,
    http_client: httpx2.Client | None,
    timeout: Any,
    token_provider: Callable[[], str] | None,
) -> OpenAI:
    """``openai.AzureOpenAI`` for ``cfg``: the API key, else Entra ID (``token_provider``, or
    ``DefaultAzureCredential`` when none was given).

    Raises:
        ConfigError: no endpoint, no way to authenticate, or settings the SDK refuses.
    """
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
        {"api_key": cfg.api_key}
        if cfg.api_key
        else {"azure_ad_token_provider": token_provider or default_token_provider(cfg.token_scope)}
    )
    # The v1 surface is reached at {endpoint}/openai/v1 (api-version v1 or preview, as its OpenAPI
    # description allows); AzureOpenAI keeps Azure's auth headers (api-key, or an Entra ID bearer).
    where: dict[str, Any] = (
        {"base_url": f"{cfg.base_url}{AZURE_V1_PATH}"} if cfg.azure_v1 else {"azure_endpoint": cfg.base_url}
    )
    try:
        client: OpenAI = openai.AzureOpenAI(
            **where,
            api_version=cfg.api_version,
            max_retries=0,
            timeout=timeout,
            http_client=http_client,
            **credentials,
        )
    except (ValueError, openai.OpenAIError) as exc:
        raise ConfigError(f"cannot build the Azure OpenAI client: {exc}", field="settings") from exc
    return client
