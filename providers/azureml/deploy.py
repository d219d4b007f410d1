"""Deploying a registered fine-tuned model: a serverless endpoint (MaaS) or a managed online
endpoint (MaaP), found or created under one name, waited on, deleted.

Which one follows from how the model was trained (:meth:`AzureMLProvider.result` records it):

* **serverless** (a serverless fine-tuning job): ``serverless_endpoints.begin_create_or_update(
  ServerlessEndpoint(name, model_id=<workspace model URI>))``. Microsoft's "Fine-tune models by
  using serverless API deployments" (MicrosoftDocs/azure-ai-docs, ``fine-tune-serverless.md``,
  ms.date 2026-01-28) gives the fine-tuned model's id as
  ``azureml://locations/{location}/workspaces/{workspace id}/models/{name}/versions/{version}``
  (azure-ai-ml refuses only *registry* ids with a version). Called as ``ENDPOINT``.
* **managed** (a job on managed compute): the endpoint (``PUT onlineEndpoints/{name}``,
  api-version 2022-02-01-preview, key auth), then its deployment ``default`` of the registered
  model (``PUT onlineEndpoints/{name}/deployments/default``, 2023-04-01-preview,
  ``instance_type`` x ``instance_count``), then 100% of the endpoint's traffic to it. Called as
  ``ENDPOINT/default``. Undeploy deletes the endpoint, which deletes its deployments.

The managed writes are sent as azure-ai-ml's entities would send them (the same JSON bodies, the
same api-versions, through the workspace's ARM pipeline) rather than through
``online_endpoints``/``online_deployments.begin_create_or_update``: those take no ``polling``
argument, so each starts an LRO poller on a thread of its own (the deployment's prints a dot to
stdout every five seconds) that nothing here can stop or give our deadline to. Serverless
endpoints take ``polling=False``, so they go through the SDK. Either way anytune waits by reading
the resource with the provider's injected sleep and clock, and a deadline is ``WaitTimeoutError``.

A failed deployment is returned with status ``failed`` (the reason in ``extra["error"]``), so the
user can read it and undeploy; it is not raised.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from anytune._deploy import DeploymentStatus
from anytune.errors import NotSupportedError, UsageError
from anytune.providers.azureml.errors import is_ambiguous, is_retryable, retry_hint

__all__ = [
    "API_VERSIONS",
    "DEFAULT_INSTANCE_TYPE",
    "DEPLOYMENT",
    "AzureMLDeploySettings",
    "Target",
    "cost_notes",
    "deployment_body",
    "endpoint_body",
    "model_key",
    "same_model",
    "status_of",
    "target_of",
]

Kind = Literal["serverless", "managed"]

#: The GPU SKU Azure ML's fine-tuning docs and the catalog's ``finetune-recommended-sku`` use.
DEFAULT_INSTANCE_TYPE = "Standard_NC24ads_A100_v4"
#: The deployment behind a managed endpoint that anytune makes (one model per endpoint).
DEPLOYMENT = "default"
#: The tag that says which job's model an endpoint was made for.
JOB_TAG = "anytune.job_ref"
#: api-versions of the managed writes: what azure-ai-ml sends for the same operations
#: (``online_endpoints``: ServiceClient022022Preview; ``online_deployments``: ServiceClient042023Preview).
API_VERSIONS: Mapping[str, str] = {"endpoint": "2022-02-01-preview", "deployment": "2023-04-01-preview"}
#: Provisioning state (ARM's, any case) -> the uniform status.
STATUS: Mapping[str, DeploymentStatus] = {
    "creating": "creating",
    "updating": "creating",
    "provisioning": "creating",
    "scaling": "creating",
    "accepted": "creating",
    "notstarted": "creating",
    "succeeded": "ready",
    "failed": "failed",
    "canceled": "failed",
    "cancelled": "failed",
    "deleting": "deleting",
}
#: Seconds between reads while waiting (grows by half up to the maximum).
POLL_INITIAL, POLL_MAXIMUM = 10.0, 60.0


class AzureMLDeploySettings(BaseModel):
    """Deploy settings of an Azure ML result. ``instance_type``/``instance_count`` size a managed
    online deployment (billed per instance-hour); a serverless result takes neither."""

    model_config = ConfigDict(extra="forbid")

    instance_type: str = Field(
        DEFAULT_INSTANCE_TYPE,
        pattern=r"^[A-Za-z][A-Za-z0-9_]{2,63}$",
        description="managed compute only: the VM SKU of each instance",
    )
    instance_count: int = Field(1, ge=1, le=100, description="managed compute only: how many instances")


@dataclass(frozen=True)
class Target:
    """What a result is deployed as: the kind and the model id that kind takes."""

    kind: Kind
    model: str  # serverless: the workspace model URI; managed: the registered model's ARM id


_WORKSPACE_URI = re.compile(r"^azureml://locations/[^/]+/workspaces/[^/]+/models/[^/]+/versions/[^/]+$")
_ARM_MODEL = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", re.I)
_SHORT_MODEL = re.compile(r"^azureml:(?P<name>[^:/]+):(?P<version>[^:/]+)$")


def target_of(extra: Mapping[str, Any], settings: AzureMLDeploySettings, job_ref: str) -> Target:
    """How a result's model is deployed, checked before anything is sent (pure).

    Raises:
        NotSupportedError: the result names no registered model (not made by this provider's job).
        UsageError: instance settings for a serverless result, or no workspace model URI for it.
    """
    hints = extra.get("deploy") if isinstance(extra.get("deploy"), Mapping) else None
    asset_id = extra.get("asset_id")
    if hints is None or not isinstance(asset_id, str) or not asset_id:
        raise NotSupportedError(
            f"{job_ref} names no registered model to deploy: use the result FineTuneJob.get(ref).result() gives",
            field="deploy",
            provider="azureml",
        )
    if hints.get("recommended") != "serverless_endpoint":
        return Target("managed", asset_id)
    given = sorted(settings.model_fields_set & {"instance_type", "instance_count"})
    if given:
        raise UsageError(
            f"{job_ref} was fine-tuned serverless: it deploys to a serverless endpoint, billed per token "
            f"(and hourly while deployed), which takes no {' or '.join(given)}",
            field=given[0],
        )
    uri = str(extra.get("workspace_model_uri") or "")
    if not _WORKSPACE_URI.match(uri):
        raise UsageError(
            f"{job_ref}: a serverless deployment needs the model's workspace URI "
            f"(azureml://locations/.../workspaces/.../models/NAME/versions/V), not {uri!r}; "
            "get the result again once the workspace can be read",
            field="model",
        )
    return Target("serverless", uri)


def model_key(model: str | None) -> tuple[str, str] | None:
    """(name, version) of a registered model from any of its ids: ARM id, workspace URI, or
    ``azureml:NAME:VERSION`` (pure); None when it is none of those."""
    text = str(model or "").strip().rstrip("/")
    m = _ARM_MODEL.search(text) or _SHORT_MODEL.match(text)
    return (m["name"].lower(), m["version"]) if m else None


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two ids name the same registered model version (pure)."""
    ka, kb = model_key(a), model_key(b)
    return ka is not None and ka == kb


def status_of(provisioning_state: Any) -> DeploymentStatus:
    """The uniform status of an ARM provisioning state (pure; unknown states count as creating)."""
    return STATUS.get(_state_text(provisioning_state).replace("_", "").lower(), "creating")


def _state_text(state: Any) -> str:
    """A provisioning state as text: azure-ai-ml gives an enum for some resources, a string for others."""
    return str(getattr(state, "value", state) or "")


def endpoint_body(location: str, job_ref: str, *, traffic: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ``PUT onlineEndpoints/{name}`` body of a key-auth managed endpoint: what azure-ai-ml's
    ``ManagedOnlineEndpoint(name, auth_mode="key", tags=...)`` sends (pure)."""
    return {
        "location": location,
        "properties": {"authMode": "Key", "properties": {}, "traffic": dict(traffic or {}), "mirrorTraffic": {}},
        "identity": {"type": "SystemAssigned"},
        "tags": {JOB_TAG: job_ref},
    }


def deployment_body(location: str, model: str, settings: AzureMLDeploySettings, job_ref: str) -> dict[str, Any]:
    """The ``PUT onlineEndpoints/{e}/deployments/{d}`` body: what azure-ai-ml's
    ``ManagedOnlineDeployment(model=..., instance_type=..., instance_count=...)`` sends (pure).
    A registered MLflow model needs no environment or scoring script (no-code deployment)."""
    return {
        "location": location,
        "properties": {
            "model": model,
            "properties": {},
            "environmentVariables": {},
            "appInsightsEnabled": False,
            "instanceType": settings.instance_type,
            "endpointComputeType": "Managed",
        },
        "tags": {JOB_TAG: job_ref},
        "sku": {"name": "Default", "capacity": settings.instance_count},
    }


def cost_notes(kind: Kind, settings: AzureMLDeploySettings | None = None) -> tuple[str, ...]:
    """What keeps being billed while the deployment exists (pure). No figures: Microsoft's pages
    give none for these (prices depend on the model, the SKU and the region)."""
    if kind == "serverless":
        return (
            "A serverless deployment of a fine-tuned model is billed per input and output token, and "
            "also an hourly hosting fee for as long as it is deployed, whether it is called or not "
            "(Microsoft Learn, 'Fine-tune models by using serverless API deployments', 2026-01-28; "
            "prices on the model's Pricing and terms tab, through Azure Marketplace for non-Microsoft models).",
            "undeploy() deletes the endpoint and stops the hosting fee; the fine-tuned model stays registered.",
        )
    s = settings or AzureMLDeploySettings()
    return (
        f"A managed online deployment is billed per instance-hour of {s.instance_type} x {s.instance_count} "
        "for as long as the deployment exists, called or not (the VM's price in the workspace's region).",
        "undeploy() deletes the endpoint and its deployment and stops the billing; the model stays registered.",
    )


# -- the calls -----------------------------------------------------------------------------------

ARM = "https://management.azure.com"


def _made_for(entity: Any, job_ref: str) -> bool:
    """Whether anytune made this endpoint for ``job_ref`` (its tag): only then may it be changed or
    deleted. A workspace's own endpoint serving the same model (with other deployments, or traffic
    split its own way) is the user's: deploy and undeploy leave it alone."""
    tags = getattr(entity, "tags", None)
    return isinstance(tags, Mapping) and tags.get(JOB_TAG) == job_ref


class Deployer:
    """Find, create, wait for and delete a result's endpoint; see the module docstring.

    Args:
        provider: the :class:`AzureMLProvider` (its connection, chat, settings and time sources).
    """

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.connection = provider.connection
        self._client: Any = None
        #: The ARM async operation of the deployment this call created (where its failure is told).
        self._operation: str | None = None

    # -- reads ------------------------------------------------------------------------------------
    def _serverless(self, name: str) -> Any:
        ml = self.connection.ml()
        return self.connection.find(f"get serverless endpoint {name}", lambda: ml.serverless_endpoints.get(name))

    def _endpoint(self, name: str) -> Any:
        ml = self.connection.ml()
        return self.connection.find(f"get online endpoint {name}", lambda: ml.online_endpoints.get(name))

    def _deployment(self, name: str) -> Any:
        ml = self.connection.ml()
        return self.connection.find(
            f"get deployment {DEPLOYMENT} of online endpoint {name}",
            lambda: ml.online_deployments.get(DEPLOYMENT, endpoint_name=name),
        )

    # -- the uniform view ---------------------------------------------------------------------------
    def _view(
        self,
        model: Any,
        name: str,
        target: Target,
        status: DeploymentStatus,
        *,
        url: str | None,
        created: bool = False,
        settings: AzureMLDeploySettings | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        from anytune._deploy import Deployment

        serverless = target.kind == "serverless"
        return Deployment(
            provider=self.provider.name,
            job_ref=model.job_ref,
            name=name,
            kind="serverless-endpoint" if serverless else "online-endpoint",
            target=name if serverless else f"{name}/{DEPLOYMENT}",
            model=target.model,
            status=status,
            url=url,
            created=created,
            cost_notes=cost_notes(target.kind, settings),
            extra={"workspace": self.connection.require_workspace().name, **(extra or {})},
        )

    def _serverless_view(self, model: Any, name: str, target: Target, entity: Any, **kw: Any) -> Any:
        status = status_of(getattr(entity, "provisioning_state", None))
        extra = {"provisioning_state": _state_text(getattr(entity, "provisioning_state", None))}
        if status == "failed":
            extra["error"] = f"serverless endpoint {name!r} provisioning {getattr(entity, 'provisioning_state', '')}"
        return self._view(model, name, target, status, url=getattr(entity, "scoring_uri", None), extra=extra, **kw)

    def _managed_view(self, model: Any, name: str, target: Target, endpoint: Any, deployment: Any, **kw: Any) -> Any:
        states = [status_of(getattr(endpoint, "provisioning_state", None))]
        if deployment is not None:
            states.append(status_of(getattr(deployment, "provisioning_state", None)))
        else:
            states.append("creating")  # the endpoint is there, its deployment not yet
        status: DeploymentStatus = next((s for s in ("failed", "deleting", "creating") if s in states), "ready")
        extra: dict[str, Any] = {
            "deployment": DEPLOYMENT,
            "instance_type": getattr(deployment, "instance_type", None),
            "instance_count": getattr(deployment, "instance_count", None),
            "traffic": dict(getattr(endpoint, "traffic", None) or {}),
        }
        if status == "failed" and self._operation and states[1] == "failed":
            extra["error"] = self._reason(self._operation)
        if status == "failed" and not extra.get("error"):
            which = "deployment" if states[1] == "failed" else "endpoint"
            extra["error"] = f"the {which} of {name!r} ended in provisioning state " + _state_text(
                getattr(deployment if which == "deployment" else endpoint, "provisioning_state", "")
            )
        return self._view(model, name, target, status, url=getattr(endpoint, "scoring_uri", None), extra=extra, **kw)

    def _refuse_other(self, name: str, model: Any, serving: str | None) -> UsageError:
        return UsageError(
            f"the name {name!r} is taken in this workspace by an endpoint serving {serving or 'another model'}, "
            f"not {model.job_ref}'s model: pick another name (deploy(name=...))",
            field="name",
        )

    # -- deploy ------------------------------------------------------------------------------------
    def deploy(self, model: Any, name: str, settings: AzureMLDeploySettings, *, wait: bool, timeout: float) -> Any:
        target = target_of(model.extra, settings, model.job_ref)
        self.connection.require_workspace()
        self.connection.info()
        deadline = self.provider.clock() + timeout
        if target.kind == "serverless":
            return self._deploy_serverless(model, name, target, wait=wait, deadline=deadline, timeout=timeout)
        return self._deploy_managed(model, name, target, settings, wait=wait, deadline=deadline, timeout=timeout)

    def _deploy_serverless(
        self, model: Any, name: str, target: Target, *, wait: bool, deadline: float, timeout: float
    ) -> Any:
        found = self._serverless(name)
        created = found is None
        if found is not None:
            self._check_serverless(model, name, target, found)
        if found is None:
            # A name held by a managed endpoint is the user's too: refuse rather than fail on the PUT.
            other = self._endpoint(name)
            if other is not None:
                raise self._refuse_other(name, model, f"the managed online endpoint {name!r}")
            found = self._create(
                f"create serverless endpoint {name}",
                lambda: self._put_serverless(name, target, model.job_ref),
                lambda: self._serverless(name),
            )
        if wait:
            found = self._wait(
                name,
                self._serverless_read(name),
                lambda e: status_of(getattr(e, "provisioning_state", None)) != "creating",
                deadline=deadline,
                timeout=timeout,
            )
        return self._serverless_view(model, name, target, found, created=created)

    def _put_serverless(self, name: str, target: Target, job_ref: str) -> Any:
        from azure.ai.ml.entities import ServerlessEndpoint

        from anytune._boundary import boundary

        info = self.connection.info()
        entity = ServerlessEndpoint(name=name, model_id=target.model, auth_mode="key", tags={JOB_TAG: job_ref})
        if info.get("location"):
            entity.location = info["location"]
        with boundary(self.connection.errors(f"create serverless endpoint {name}")):
            # polling=False: anytune waits itself, on its own clock (no poller thread).
            return self.connection.ml().serverless_endpoints.begin_create_or_update(entity, polling=False).result()

    def _serverless_read(self, name: str) -> Callable[[], Any]:
        def read() -> Any:
            found = self._serverless(name)
            if found is None:
                raise UsageError(f"serverless endpoint {name!r} disappeared while deploying", field="name")
            return found

        return read

    def _deploy_managed(
        self,
        model: Any,
        name: str,
        target: Target,
        settings: AzureMLDeploySettings,
        *,
        wait: bool,
        deadline: float,
        timeout: float,
    ) -> Any:
        endpoint = self._endpoint(name)
        deployment = self._deployment(name) if endpoint is not None else None
        if endpoint is not None:
            self._check_managed(model, name, target, endpoint, deployment)
        elif self._serverless(name) is not None:
            raise self._refuse_other(name, model, f"the serverless endpoint {name!r}")
        created = deployment is None
        location = str(self.connection.info().get("location") or "")
        if endpoint is None:
            self._create(
                f"create online endpoint {name}",
                lambda: self._arm("PUT", self._endpoint_path(name), endpoint_body(location, model.job_ref), "endpoint"),
                lambda: self._endpoint(name),
            )
        if deployment is None:
            # A deployment is refused while its endpoint is still being created: wait for the endpoint.
            endpoint = self._wait(
                name,
                self._managed_read(name),
                lambda e: status_of(getattr(e, "provisioning_state", None)) != "creating",
                deadline=deadline,
                timeout=timeout,
            )
            if status_of(getattr(endpoint, "provisioning_state", None)) == "failed":
                return self._managed_view(model, name, target, endpoint, None, created=True, settings=settings)
            body = deployment_body(location, target.model, settings, model.job_ref)
            sent = self._create(
                f"create deployment {DEPLOYMENT} of online endpoint {name}",
                lambda: self._arm("PUT", self._deployment_path(name), body, "deployment"),
                lambda: self._deployment(name),
            )
            headers = getattr(sent, "headers", None) or {}
            self._operation = str(headers.get("Azure-AsyncOperation") or "") or None
            deployment = self._deployment(name)
        if wait:
            deployment = self._wait(
                name,
                lambda: self._deployment(name),
                lambda d: d is not None and status_of(getattr(d, "provisioning_state", None)) != "creating",
                deadline=deadline,
                timeout=timeout,
            )
        endpoint = self._endpoint(name)
        if (
            deployment is not None
            and status_of(getattr(deployment, "provisioning_state", None)) == "ready"
            and dict(getattr(endpoint, "traffic", None) or {}) != {DEPLOYMENT: 100}
        ):
            endpoint = self._route_traffic(name, model.job_ref, location, deadline=deadline, timeout=timeout)
        return self._managed_view(model, name, target, endpoint, deployment, created=created, settings=settings)

    def _route_traffic(self, name: str, job_ref: str, location: str, *, deadline: float, timeout: float) -> Any:
        """All of the endpoint's traffic to the deployment (a PUT of the endpoint: repeating it is harmless)."""
        from anytune._retry import retry_call

        body = endpoint_body(location, job_ref, traffic={DEPLOYMENT: 100})
        retry_call(
            lambda: self._arm("PUT", self._endpoint_path(name), body, "endpoint"),
            policy=self._policy(),
            retry_on=is_retryable,
            retry_after=retry_hint,
            what=f"route traffic of {name}",
            **self.provider.timing,
        )
        return self._wait(
            name,
            self._managed_read(name),
            lambda e: status_of(getattr(e, "provisioning_state", None)) != "creating",
            deadline=deadline,
            timeout=timeout,
        )

    def _managed_read(self, name: str) -> Callable[[], Any]:
        def read() -> Any:
            found = self._endpoint(name)
            if found is None:
                raise UsageError(f"online endpoint {name!r} disappeared while deploying", field="name")
            return found

        return read

    # -- deployment / undeploy ------------------------------------------------------------------------
    def deployment(self, model: Any, name: str) -> Any:
        target = target_of(model.extra, AzureMLDeploySettings(), model.job_ref)
        if target.kind == "serverless":
            found = self._serverless(name)
            if found is None:
                return None
            self._check_serverless(model, name, target, found)
            return self._serverless_view(model, name, target, found)
        endpoint = self._endpoint(name)
        if endpoint is None:
            return None
        deployment = self._deployment(name)
        self._check_managed(model, name, target, endpoint, deployment)
        return self._managed_view(model, name, target, endpoint, deployment)

    def _check_serverless(self, model: Any, name: str, target: Target, found: Any) -> None:
        if not same_model(getattr(found, "model_id", None), target.model):
            raise self._refuse_other(name, model, getattr(found, "model_id", None))
        if not _made_for(found, model.job_ref):
            raise self._refuse_other(
                name, model, f"the serverless endpoint {name!r} (not made by anytune for this job)"
            )

    def _check_managed(self, model: Any, name: str, target: Target, endpoint: Any, deployment: Any) -> None:
        if deployment is not None and not same_model(getattr(deployment, "model", None), target.model):
            raise self._refuse_other(name, model, getattr(deployment, "model", None))
        if not _made_for(endpoint, model.job_ref):
            raise self._refuse_other(name, model, f"the online endpoint {name!r} (not made by anytune for this job)")

    def undeploy(self, model: Any, name: str) -> Any:
        from anytune._deploy import DEFAULT_TIMEOUT

        current = self.deployment(model, name)
        if current is None:
            return None
        serverless = current.kind == "serverless-endpoint"
        if serverless:
            ml = self.connection.ml()
            self._delete(name, lambda: ml.serverless_endpoints.begin_delete(name, polling=False).result())
            read: Callable[[], Any] = lambda: self._serverless(name)  # noqa: E731
        else:
            self._delete(name, lambda: self._arm("DELETE", self._endpoint_path(name), None, "endpoint"))
            read = lambda: self._endpoint(name)  # noqa: E731
        self._wait(
            name,
            read,
            lambda found: found is None,
            deadline=self.provider.clock() + DEFAULT_TIMEOUT,
            timeout=DEFAULT_TIMEOUT,
        )
        self.provider._chat.forget(current.target)
        return current.model_copy(update={"status": "deleted", "created": False})

    def _delete(self, name: str, send: Callable[[], Any]) -> None:
        """Send the delete, retried on 429/5xx (a repeated delete is harmless; gone is done)."""
        from anytune._boundary import boundary
        from anytune._retry import retry_call
        from anytune.providers.azureml.errors import NotFound

        def once() -> None:
            try:
                with boundary(self.connection.errors(f"delete endpoint {name}", not_found=NotFound)):
                    send()
            except NotFound:
                return

        retry_call(
            once,
            policy=self._policy(),
            retry_on=is_retryable,
            retry_after=retry_hint,
            what=f"delete {name}",
            **self.provider.timing,
        )

    # -- helpers -------------------------------------------------------------------------------------
    def _policy(self) -> Any:
        return self.connection.settings.create_policy()

    def _create(self, what: str, create: Callable[[], Any], lookup: Callable[[], Any]) -> Any:
        """Send a PUT once; after an ambiguous failure look the name up before sending it again."""
        from anytune._create_once import create_once

        return create_once(
            create,
            lookup,
            is_ambiguous=is_ambiguous,
            retry_on=is_retryable,
            policy=self._policy(),
            retry_after=retry_hint,
            settle=self.provider.create_settle,
            **self.provider.timing,
            what=what,
        )

    def _wait(
        self,
        name: str,
        read: Callable[[], Any],
        done: Callable[[Any], bool],
        *,
        deadline: float,
        timeout: float,
    ) -> Any:
        from anytune._waiting import wait_until
        from anytune.errors import WaitTimeoutError

        def late(last: Any) -> Exception:
            state = _state_text(getattr(last, "provisioning_state", None)) if last is not None else "gone"
            return WaitTimeoutError(
                f"{self.provider.name}:{name}",
                timeout,
                message=f"deployment {name!r} is still {state or 'in progress'} after {timeout:g} s; it goes on: "
                "deploy() again waits for it, undeploy() deletes it",
            )

        return wait_until(
            read,
            done,
            timeout=max(0.0, deadline - self.provider.clock()),
            on_timeout=late,
            initial=POLL_INITIAL,
            factor=1.5,
            maximum=POLL_MAXIMUM,
            sleep=self.provider.sleep,
            clock=self.provider.clock,
        )

    def _endpoint_path(self, name: str) -> str:
        return f"{self.connection.require_workspace().arm_id}/onlineEndpoints/{name}"

    def _deployment_path(self, name: str) -> str:
        return f"{self._endpoint_path(name)}/deployments/{DEPLOYMENT}"

    def _arm(self, method: str, path: str, body: Mapping[str, Any] | None, which: str) -> Any:
        """One ARM write through the workspace's pipeline (its credential, transport; writes are
        not retried there); an error answer is raised as azure-mgmt-core reads ARM's error body."""
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        from anytune._boundary import boundary

        client = self._pipeline()
        url = f"{ARM}{path}?api-version={API_VERSIONS[which]}"
        action = f"{method.lower()} {path.rsplit('/', 1)[-1]}"
        with boundary(self.connection.errors(action)):
            request = HttpRequest(method, url, json=dict(body) if body is not None else None)
            response = client.send_request(request)
            if response.status_code >= 400:
                from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

                cls = ResourceNotFoundError if response.status_code == 404 else HttpResponseError
                raise cls(response=response, error_format=ARMErrorFormat)
            return response

    def _reason(self, operation: str) -> str | None:
        """The failure an ARM async operation reports (``error.message``), or None."""
        from azure.core.rest import HttpRequest

        try:
            response = self._pipeline().send_request(HttpRequest("GET", operation))
            error = response.json().get("error") or {}
        except Exception:  # the reason is a bonus: the status says failed anyway
            return None
        message = error.get("message") if isinstance(error, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return f"{message} [{code}]" if message and code else message

    def _pipeline(self) -> Any:
        if self._client is None:
            self._client = self.connection.pipeline(ARM)
        return self._client
