"""Who and where: the workspace, the sign-in, and the azure-core clients made from them.

* Workspace: settings (argument > ``ANYTUNE_AZUREML_*`` > profile), then the variables Azure ML sets
  in its own runs (``AZUREML_ARM_SUBSCRIPTION``, ``AZUREML_ARM_RESOURCEGROUP``,
  ``AZUREML_ARM_WORKSPACE_NAME``, and ``AZURE_SUBSCRIPTION_ID``), then the workspace ``config.json``
  found the way ``MLClient.from_config`` finds it.
* Sign-in: azure-identity, the credential class named by the ``identity`` setting; no secret is
  stored.  A caller (a test) may pass its own ``TokenCredential``.
* Clients: one workspace ``MLClient``, one per registry, and plain azure-core pipelines for the
  data plane (discovery, run history, MLflow), all made on first use with the same credential,
  transport and read-only retry policy.  Making them sends nothing, except a registry client,
  whose constructor asks the registry discovery service.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field

from anytune._boundary import Translate, boundary
from anytune._netfail import classify
from anytune._provider import ProviderSettings
from anytune._quiet import demote_warnings, quiet_library_handlers
from anytune._retry import RetrySettings
from anytune._secrets import RedactingFilter, install_log_filter
from anytune.errors import AnytuneError, ConfigError
from anytune.providers.azureml.errors import NotFound, azure_errors
from anytune.providers.azureml.mapping import Deployment

T = TypeVar("T")

#: The token scope of ARM and of the workspace data plane.
ARM_SCOPE = "https://management.azure.com/.default"

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
#: Credentials that take a ``tenant_id``.
_TENANTED = ("cli", "interactive", "device_code", "developer_cli", "powershell")


class AzureMLSettings(ProviderSettings, RetrySettings):
    """Where and how to reach the workspace.

    Unset workspace fields fall back to ``AZUREML_ARM_*`` / ``AZURE_SUBSCRIPTION_ID`` and then to
    the workspace ``config.json`` (``config_path``, else searched from the working directory up).
    No secret is stored: sign-in goes through azure-identity (``identity`` picks the credential).

    Retries: ``retry_total`` retries per read, ``create_attempts`` per create, all within ``timeout``;
    ``retry_backoff``/``retry_backoff_max`` shape our own back-off; a server's ``Retry-After`` is
    honoured up to ``timeout``, capped by ``retry_after_max`` (:class:`~anytune._retry.RetrySettings`)
    when set (or, in older profiles, by an explicit ``retry_backoff_max``).
    """

    _WAIT_CAP_SETTING = "retry_backoff_max"

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

    def create_policy(self) -> Any:
        """The retry policy of a create (a job, an endpoint): ``create_attempts`` within ``timeout``,
        no jitter (create-once looks the resource up between attempts)."""
        return self.retry_policy(
            max_attempts=self.create_attempts,
            initial_backoff=self.retry_backoff,
            multiplier=2.0,
            max_backoff=self.retry_backoff_max,
            jitter=0.0,
            deadline=self.timeout,
        )


# -- the workspace -----------------------------------------------------------------------------


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
        """Key of this workspace in the upload cache."""
        return f"{self.subscription_id}/{self.resource_group}/{self.name}".lower()


_SCOPE = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)",
    re.I,
)
#: Workspace part -> the setting that gives it.
_SETTING_OF = {"subscription_id": "subscription_id", "resource_group": "resource_group", "workspace_name": "workspace"}


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


def resolve_workspace(settings: AzureMLSettings, env: Mapping[str, str], *, required: bool = True) -> Workspace | None:
    """The workspace in force: settings, then Azure ML's variables, then ``config.json``.

    Raises:
        ConfigError: ``required`` and some part is missing, or ``config_path`` names no file.
    """
    s = settings
    values = {
        "subscription_id": s.subscription_id or env.get("AZUREML_ARM_SUBSCRIPTION") or env.get("AZURE_SUBSCRIPTION_ID"),
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
    missing = [_SETTING_OF[k] for k, v in values.items() if not v]
    if not missing:
        return Workspace(str(values["subscription_id"]), str(values["resource_group"]), str(values["workspace_name"]))
    if not required:
        return None
    raise ConfigError(
        f"no Azure ML workspace: set {', '.join(missing)} (settings, "
        f"ANYTUNE_AZUREML_* variables) or put the workspace config.json in the project",
        field=f"settings.{missing[0]}",
    )


# -- sign-in -----------------------------------------------------------------------------------


def credential_kwargs(settings: AzureMLSettings) -> dict[str, Any]:
    """The arguments of the azure-identity credential the ``identity`` setting names (pure)."""
    s = settings
    if s.identity == "default":
        given = {
            "managed_identity_client_id": s.managed_identity_client_id,
            "interactive_browser_tenant_id": s.tenant_id,
        }
        return {k: v for k, v in given.items() if v}
    if s.identity == "managed" and s.managed_identity_client_id:
        return {"client_id": s.managed_identity_client_id}
    if s.tenant_id and s.identity in _TENANTED:
        return {"tenant_id": s.tenant_id}
    return {}


#: Loggers whose warnings are ours to report, or none of the user's business: each failed sign-in
#: (raised, and reported by anytune once), azure-ai-ml's "experimental class" notes (about classes
#: anytune uses inside, on every call).  Shown with ``--debug``.
AZURE_CHATTER: tuple[tuple[str, str | None], ...] = (
    ("azure.ai.ml._utils._experimental", r"experimental"),
    ("azure.identity._credentials.chained", None),
    ("azure.identity._internal.decorators", None),
    ("azure.identity._internal.get_token_mixin", None),
)


def quiet_azure_logs() -> None:
    """Lower :data:`AZURE_CHATTER` to DEBUG (idempotent; done where anytune first uses the SDKs)."""
    for name, pattern in AZURE_CHATTER:
        demote_warnings(name, pattern)
    # azure-ai-ml prints through stderr handlers of its own: its activity log (each call's start and
    # end, failures included, which anytune reports itself) and experimental notes stay out of it.
    quiet_library_handlers("azure.ai.ml", names=("azure.ai.ml._telemetry",), pattern=r"experimental")


def make_credential(settings: AzureMLSettings) -> Any:
    """The azure-identity credential of the ``identity`` setting (imports azure-identity)."""
    import azure.identity

    quiet_azure_logs()

    cls = getattr(azure.identity, CREDENTIALS[settings.identity])
    return cls(**credential_kwargs(settings))


def redact_azure_logs() -> None:
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


# -- the read retry policy ---------------------------------------------------------------------


def _permanent_network_failure(exc: BaseException) -> bool:
    failure = classify(exc)
    return failure is not None and failure.permanent


_POLICY_CLASS: Any = None


def read_retry_policy(
    *,
    sleep: Callable[[float], None],
    clock: Callable[[], float] = time.monotonic,
    retry_after_max: float = float("inf"),
    **kwargs: Any,
) -> Any:
    """An azure-core ``RetryPolicy`` that retries reads only and sleeps through ``sleep``.

    Writes (PUT/POST/PATCH/DELETE) are never retried here, not even on a Retry-After: the adapter
    decides, after looking up whether the first attempt took effect.  The class is made on first
    use, so that importing this module needs no azure-core.

    The same rules as :class:`anytune._retry.RetryPolicy`: a server's hint is honoured in full,
    capped by ``retry_after_max``; our own back-off is capped by ``retry_backoff_max``; a retry that
    would start past ``timeout`` (measured on ``clock``, so injected sleeps count) is not started,
    and the call ends with the last answer or error.
    """
    global _POLICY_CLASS
    if _POLICY_CLASS is None:
        from azure.core.pipeline.policies import RetryPolicy

        class ReadRetryPolicy(RetryPolicy):  # type: ignore[misc]
            READS = frozenset({"GET", "HEAD", "OPTIONS"})

            def __init__(
                self,
                *,
                sleep: Callable[[float], None],
                clock: Callable[[], float],
                retry_after_max: float,
                **kw: Any,
            ) -> None:
                super().__init__(**kw)
                self._sleep_fn = sleep
                self._clock = clock
                self._hint_cap = retry_after_max
                self._method_whitelist = self.READS

            def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
                settings: dict[str, Any] = super().configure_retries(options)
                settings["anytune_start"] = self._clock()
                return settings

            def increment(self, settings: Any, response: Any = None, error: Any = None) -> bool:
                if isinstance(error, BaseException) and _permanent_network_failure(error):
                    return False  # no network, no such host, refused, TLS: seconds later, the same
                if not super().increment(settings, response=response, error=error):
                    return False
                hint = self.get_retry_after(response) if hasattr(response, "http_response") else None
                # A server's hint, capped by retry_after_max; else our back-off, capped by retry_backoff_max.
                delay = min(float(hint), self._hint_cap) if hint is not None else float(self.get_backoff_time(settings))
                if self._clock() - settings["anytune_start"] + delay > settings["timeout"]:
                    return False  # the retry would start past the deadline: end with this answer
                settings["anytune_delay"] = delay
                return True

            def _is_method_retryable(self, settings: Any, request: Any, response: Any = None) -> bool:
                return str(request.method).upper() in self.READS

            def is_retry(self, settings: Any, response: Any) -> bool:
                if str(response.http_request.method).upper() not in self.READS:
                    return False
                return bool(super().is_retry(settings, response))

            def sleep(self, settings: Any, transport: Any, response: Any = None) -> None:
                delay = settings.pop("anytune_delay", None)
                if delay is None:  # not through increment (azure-core internals): the back-off
                    delay = self.get_backoff_time(settings)
                if delay and delay > 0:
                    self._sleep_fn(float(delay))

        _POLICY_CLASS = ReadRetryPolicy
    return _POLICY_CLASS(sleep=sleep, clock=clock, retry_after_max=retry_after_max, **kwargs)


# -- the clients -------------------------------------------------------------------------------


class Connection:
    """The workspace, the credential and the clients, made on first use and kept.

    Args:
        settings: where and how to sign in.
        env: the environment the workspace falls back to.
        credential: an azure-core ``TokenCredential`` (default: from the ``identity`` setting).
        transport: an azure-core ``HttpTransport`` every request goes through (default: azure-core's).
        sleep: how the read retry policy waits.
        clock: the monotonic clock its deadline is measured on (default: the real one).
    """

    def __init__(
        self,
        settings: AzureMLSettings,
        *,
        env: Mapping[str, str],
        credential: Any = None,
        transport: Any = None,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.env = env
        self.transport = transport
        self._sleep = sleep
        self._clock = clock
        self._credential = credential
        self._clients: dict[str, Any] = {}
        self._info: dict[str, Any] | None = None

    def workspace(self, *, required: bool = True) -> Workspace | None:
        """See :func:`resolve_workspace`."""
        return resolve_workspace(self.settings, self.env, required=required)

    def require_workspace(self) -> Workspace:
        """The workspace, which must be configured.

        Raises:
            ConfigError: some part of it is missing.
        """
        ws = self.workspace()
        assert ws is not None
        return ws

    def errors(self, action: str, *, not_found: Callable[[], AnytuneError] | None = None) -> Translate:
        """The translation of Azure exceptions for ``action``, for :func:`anytune._boundary.boundary`."""
        return azure_errors(action, workspace=lambda: self.workspace(required=False), not_found=not_found)

    def find(self, action: str, call: Callable[[], T]) -> T | None:
        """``call()``, or None when the service answers 404."""
        try:
            with boundary(self.errors(action, not_found=NotFound)):
                return call()
        except NotFound:
            return None

    def credential(self) -> Any:
        if self._credential is None:
            self._credential = make_credential(self.settings)
        return self._credential

    def retry_policy(self) -> Any:
        s = self.settings
        return read_retry_policy(
            sleep=self._sleep,
            clock=self._clock,
            retry_after_max=s.hint_cap,
            retry_total=s.retry_total,
            retry_backoff_factor=s.retry_backoff,
            retry_backoff_max=s.retry_backoff_max,
            timeout=s.timeout,
        )

    def _client_kwargs(self) -> dict[str, Any]:
        redact_azure_logs()
        quiet_azure_logs()
        kwargs: dict[str, Any] = {
            "retry_policy": self.retry_policy(),
            "enable_telemetry": False,
            "show_progress": False,
            "user_agent": "anytune",
        }
        if self.transport is not None:
            kwargs["transport"] = self.transport
        return kwargs

    def ml(self) -> Any:
        """The workspace ``MLClient`` (made on first use; making it sends nothing)."""
        client = self._clients.get("workspace")
        if client is None:
            from azure.ai.ml import MLClient

            ws = self.require_workspace()
            client = MLClient(
                self.credential(), ws.subscription_id, ws.resource_group, ws.name, **self._client_kwargs()
            )
            self._clients["workspace"] = client
        return client

    def registry(self, name: str) -> Any:
        """The ``MLClient`` of a model registry."""
        key = f"registry:{name}"
        client = self._clients.get(key)
        if client is None:
            from azure.ai.ml import MLClient

            # Constructing a registry client already calls the registry discovery service.
            with boundary(self.errors(f"open registry {name!r}")):
                client = MLClient(self.credential(), registry_name=name, **self._client_kwargs())
            self._clients[key] = client
        return client

    def pipeline(self, base_url: str) -> Any:
        """A plain azure-core ``PipelineClient`` for the data plane: same credential, transport, retries."""
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import BearerTokenCredentialPolicy, HeadersPolicy, UserAgentPolicy

        redact_azure_logs()
        policies = [
            HeadersPolicy(),
            UserAgentPolicy("anytune"),
            self.retry_policy(),
            BearerTokenCredentialPolicy(self.credential(), ARM_SCOPE),
        ]
        extra = {"transport": self.transport} if self.transport is not None else {}
        return PipelineClient(base_url, policies=policies, **extra)

    def info(self) -> dict[str, Any]:
        """Workspace facts (location, id, discovery URL); the first call checks the workspace exists.

        Raises:
            ConfigError: the workspace does not exist.
        """
        if self._info is None:
            ws = self.require_workspace()

            def missing() -> AnytuneError:
                return ConfigError(
                    f"workspace {ws.name!r} was not found in resource group {ws.resource_group!r} of "
                    f"subscription {ws.subscription_id!r}",
                    field="settings.workspace",
                )

            with boundary(self.errors(f"open workspace {ws.name!r}", not_found=missing)):
                entity = self.ml().workspaces.get(ws.name)
            self._info = {
                "location": getattr(entity, "location", None),
                "workspace_id": getattr(entity, "_workspace_id", None),
                "discovery_url": getattr(entity, "discovery_url", None) or "",
            }
        return self._info
