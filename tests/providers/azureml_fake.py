"""An in-memory Azure Machine Learning, answering at the azure-core transport level.

:class:`FakeTransport` is a real ``azure.core.pipeline.transport.RequestsTransport`` whose
``requests`` session has an in-memory adapter instead of sockets: azure-ai-ml, azure-storage-blob
and anytune's own data-plane calls all go through their real pipelines (auth, retry, serialisation,
error mapping) and reach :class:`FakeAzureML`, which answers with the shapes the services document:

* ARM (``management.azure.com``): workspace, jobs (FineTuning, api-versions 2024-01-01-preview and
  2024-10-01-preview), cancel, computes, datastores (+ ``listSecrets``), data versions, workspace
  models, marketplace subscriptions;
* registry discovery and the registry model data plane;
* blob storage (``PUT`` of a block blob);
* workspace discovery, run history and MLflow tracking (``runs/get``, ``runs/search``,
  ``metrics/get-history``).

Time is a :class:`~tests.conftest.FakeClock`: a job walks through its script of statuses as the
clock advances, so tests drive a whole lifecycle by sleeping (instantly).  Faults are scripted per
method and path: an HTTP status with headers (429 + Retry-After, 503...), a transport exception
(timeouts, dropped connections), optionally *after* the request took effect (an ambiguous failure).
"""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter

from tests.conftest import FakeClock

SUB = "00000000-1111-2222-3333-444444444444"
RG = "rg-anytune"
WS = "ws-anytune"
LOCATION = "eastus"
WS_GUID = "9d2b4c1e-5f6a-4b7c-8d9e-0a1b2c3d4e5f"
ACCOUNT = "stanytunefake"
CONTAINER = "azureml-blobstore-9d2b4c1e"
API = f"https://{LOCATION}.api.azureml.ms"
TENANT = "72f988bf-0000-4000-8000-2d7cd011db47"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# A decodable (unsigned) JWT, as azure-identity hands out, and a SAS signature: tests assert that
# neither ever reaches logs, errors, events or the job store.
TOKEN = ".".join(
    (
        _b64({"typ": "JWT", "alg": "RS256"}),
        _b64({"aud": "https://management.azure.com", "tid": TENANT, "oid": "user-object-id"}),
        "c2lnbmF0dXJlLW5vdC1yZWFsLWJ1dC1sb25nLWVub3VnaA",
    )
)
SAS = "sv=2021-10-04&ss=b&srt=sco&sp=rwlc&se=2030-01-01T00%3A00%3A00Z&sig=S3cr3tSasSignatureValue0123456789abcdef"

WS_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"

HAPPY = (
    (0, "NotStarted"),
    (5, "Starting"),
    (10, "Preparing"),
    (20, "Queued"),
    (30, "Running"),
    (90, "Finalizing"),
    (100, "Completed"),
)
FAILING = ((0, "NotStarted"), (10, "Queued"), (30, "Running"), (50, "Failed"))


class FakeCredential:
    """An azure-core ``TokenCredential`` that hands out a fixed JWT-shaped token."""

    def __init__(self, clock: FakeClock, token: str = TOKEN) -> None:
        self.clock = clock
        self.token = token
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, int(self.clock() + 3600))


@dataclass
class Recorded:
    method: str
    url: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    times: int = 1
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    exception: type[BaseException] | None = None
    after: bool = False  # apply the request first, then fail (the caller cannot know it worked)


class _Adapter(BaseAdapter):
    def __init__(self, fake: FakeAzureML) -> None:
        super().__init__()
        self.fake = fake

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        status, headers, payload = self.fake.handle(request)
        data = payload if isinstance(payload, bytes) else (json.dumps(payload).encode() if payload is not None else b"")
        response = requests.Response()
        response.status_code = status
        response.url = request.url or ""
        response.request = request
        response.reason = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content"}.get(status, "Error")
        response.headers.update(
            {"Content-Type": "application/json; charset=utf-8", "x-ms-request-id": str(uuid.uuid4()), **headers}
        )
        response.raw = io.BytesIO(data)
        response._content = data
        return response

    def close(self) -> None:
        pass


class FakeTransport(RequestsTransport):
    """The azure-core transport every client in a test sends through; sleeps are recorded."""

    def __init__(self, fake: FakeAzureML) -> None:
        session = requests.Session()
        session.trust_env = False
        for prefix in ("https://", "http://"):
            session.mount(prefix, _Adapter(fake))
        super().__init__(session=session, session_owner=False, use_env_settings=False)
        self.fake = fake

    def sleep(self, duration: float) -> None:
        self.fake.clock.sleep(duration)


def _body(request: requests.PreparedRequest) -> Any:
    raw = request.body
    if raw is None:
        return None
    if hasattr(raw, "read"):
        raw = raw.read()
    elif not isinstance(raw, (bytes, str)):
        raw = b"".join(part if isinstance(part, bytes) else str(part).encode() for part in raw)
    if isinstance(raw, str):
        raw = raw.encode()
    ctype = request.headers.get("Content-Type", "")
    if "json" in ctype or raw[:1] in (b"{", b"["):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], Any]:
    return status, {"x-ms-error-code": code}, {"error": {"code": code, "message": message}}


def _iso(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


class FakeAzureML:
    """One subscription, resource group and workspace, the ``azureml`` and ``azureml-meta``
    registries, a blob datastore, and a run-history/MLflow data plane."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.workspace_exists = True
        self.jobs: dict[str, dict[str, Any]] = {}
        self.scripts: dict[str, tuple[tuple[float, str], ...]] = {}
        self.default_script: tuple[tuple[float, str], ...] = HAPPY
        self.failure = {"code": "UserError", "message": "Training failed: CUDA out of memory at step 3"}
        self.blobs: dict[str, bytes] = {}
        self.data: dict[tuple[str, str], dict[str, Any]] = {}
        self.computes: dict[str, dict[str, Any]] = {}
        self.marketplace: dict[str, dict[str, Any]] = {}
        self.marketplace_pending_polls = 1
        self.registry_models: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.workspace_models: dict[str, list[str]] = {}
        self.metric_steps = 4
        self.cancel_seconds = 5.0  # how long a job stays CancelRequested
        self.run_warnings: list[str] = []
        self.add_registry_model("azureml", "Phi-3-mini-4k-instruct", "7", tasks="chat-completion,text-generation")
        self.add_registry_model("azureml-meta", "Meta-Llama-3-8B-Instruct", "9", tasks="chat-completion")
        self.add_registry_model("azureml", "bert-base-uncased", "3", tasks="text-classification")

    # -- setup ------------------------------------------------------------------------------
    def transport(self) -> FakeTransport:
        return FakeTransport(self)

    def add_registry_model(self, registry: str, name: str, version: str, *, tasks: str) -> None:
        self.registry_models.setdefault((registry, name), []).append(
            {
                "id": f"azureml://registries/{registry}/models/{name}/versions/{version}",
                "name": version,
                "type": "Microsoft.MachineLearningServices/registries/models/versions",
                "properties": {
                    "description": f"{name} foundation model",
                    "modelType": "mlflow_model",
                    "modelUri": f"azureml://registries/{registry}/models/{name}/versions/{version}",
                    "flavors": {"transformers": {"data": {"task": "chat-completion"}}},
                    "properties": {"finetuning-tasks": tasks, "finetune-recommended-sku": "Standard_NC24ads_A100_v4"},
                    "tags": {"task": "chat-completion"},
                    "isAnonymous": False,
                    "isArchived": False,
                },
                "systemData": {"createdAt": "2025-01-01T00:00:00Z", "createdBy": "azureml"},
            }
        )

    def add_compute(self, name: str, vm_size: str = "STANDARD_NC24ADS_A100_V4") -> None:
        self.computes[name] = {
            "id": f"{WS_PATH}/computes/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/computes",
            "location": LOCATION,
            "properties": {
                "computeType": "AmlCompute",
                "provisioningState": "Succeeded",
                "computeLocation": LOCATION,
                "properties": {
                    "vmSize": vm_size,
                    "vmPriority": "Dedicated",
                    "scaleSettings": {"maxNodeCount": 2, "minNodeCount": 0, "nodeIdleTimeBeforeScaleDown": "PT120S"},
                },
            },
        }

    def fail(
        self,
        method: str,
        pattern: str,
        *,
        times: int = 1,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        exception: type[BaseException] | None = None,
        after: bool = False,
    ) -> None:
        """Script a fault for the next ``times`` requests matching ``method`` and ``pattern``."""
        self.faults.append(Fault(method, re.compile(pattern), times, status, headers or {}, body, exception, after))

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], Any]:
        url = request.url or ""
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        rec = Recorded(request.method or "GET", url, unquote(parts.path), query, dict(request.headers), _body(request))
        self.requests.append(rec)
        fault = next(
            (f for f in self.faults if f.times > 0 and f.method == rec.method and f.pattern.search(rec.path)), None
        )
        if fault is not None and not fault.after:
            fault.times -= 1
            return self._fault(fault)
        answer = self._route(rec, parts.netloc)
        if fault is not None:
            fault.times -= 1
            return self._fault(fault)
        return answer

    def _fault(self, fault: Fault) -> tuple[int, dict[str, str], Any]:
        if fault.exception is not None:
            raise fault.exception("injected fault")
        status = fault.status or 500
        body = (
            fault.body
            if fault.body is not None
            else {
                "error": {
                    "code": {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(status, "InternalServerError"),
                    "message": f"injected {status}",
                }
            }
        )
        return status, fault.headers, body

    def _route(self, rec: Recorded, host: str) -> tuple[int, dict[str, str], Any]:
        auth = rec.headers.get("Authorization", "")
        if host.endswith(".blob.core.windows.net"):
            if "sig=" not in rec.url and not auth.startswith("Bearer "):
                return _error(403, "AuthenticationFailed", "Server failed to authenticate the request.")
            return self._blob(rec)
        if auth != f"Bearer {TOKEN}":
            return _error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if host == "management.azure.com":
            return self._arm(rec)
        if rec.path.startswith("/registrymanagement/v1.0/registries/"):
            registry = rec.path.split("/")[4]
            return (
                200,
                {},
                {
                    "registryName": registry,
                    "primaryRegion": LOCATION,
                    "regions": [LOCATION],
                    "subscriptionId": "reg-sub-0000",
                    "resourceGroup": f"registry-{registry}",
                    "primaryRegionResourceProviderUri": f"https://cert-{LOCATION}.experiments.azureml.net/",
                    "registryFqdns": {LOCATION: {"primary": f"{LOCATION}.api.azureml.ms"}},
                },
            )
        if "/registries/" in rec.path and "/models/" in rec.path:
            return self._registry_model(rec)
        if rec.path == "/discovery":
            return (
                200,
                {},
                {
                    "api": API,
                    "catalog": API,
                    "experimentation": API,
                    "history": API,
                    "modelmanagement": API,
                    "pipelines": API,
                    "studiometadata": API,
                },
            )
        if rec.path.startswith("/history/v1.0" + WS_PATH + "/runs/"):
            return self._run(rec.path.rsplit("/", 1)[-1])
        if rec.path.startswith("/mlflow/v1.0" + WS_PATH + "/api/2.0/mlflow/"):
            return self._mlflow(rec, rec.path.split("/api/2.0/mlflow/", 1)[1])
        return _error(404, "NotFound", f"no route for {rec.method} {rec.path}")

    # -- ARM ----------------------------------------------------------------------------------
    def _arm(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        path = rec.path
        if not path.startswith(WS_PATH) or not self.workspace_exists:
            return _error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.MachineLearningServices/workspaces/{WS}' under resource "
                f"group '{RG}' was not found.",
            )
        rest = path[len(WS_PATH) :]
        if rest == "":
            return 200, {}, self._workspace()
        m = re.fullmatch(r"/jobs/([^/]+)(/cancel)?", rest)
        if m:
            return self._job(rec, m.group(1), cancel=bool(m.group(2)))
        if rest == "/jobs":
            return 200, {}, {"value": [self._job_view(n) for n in reversed(list(self.jobs))]}
        m = re.fullmatch(r"/computes/([^/]+)", rest)
        if m:
            compute = self.computes.get(m.group(1))
            if compute is None:
                return _error(404, "ResourceNotFound", f"Compute '{m.group(1)}' was not found.")
            return 200, {}, compute
        if rest == "/computes":
            return 200, {}, {"value": list(self.computes.values())}
        if rest == "/datastores":
            return 200, {}, {"value": [self._datastore()]}
        if rest == "/datastores/workspaceblobstore":
            return 200, {}, self._datastore()
        if rest == "/datastores/workspaceblobstore/listSecrets":
            return 200, {}, {"secretsType": "Sas", "sasToken": SAS}
        m = re.fullmatch(r"/data/([^/]+)/versions/([^/]+)", rest)
        if m:
            return self._data(rec, m.group(1), m.group(2))
        m = re.fullmatch(r"/models/([^/]+)/versions(?:/([^/]+))?", rest)
        if m:
            return self._workspace_model(m.group(1), m.group(2))
        m = re.fullmatch(r"/marketplaceSubscriptions/([^/]+)", rest)
        if m:
            return self._marketplace(rec, m.group(1))
        return _error(404, "NotFound", f"no route for {rec.method} {rest}")

    def _workspace(self) -> dict[str, Any]:
        return {
            "id": WS_PATH,
            "name": WS,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": LOCATION,
            "kind": "Default",
            "identity": {"type": "SystemAssigned"},
            "sku": {"name": "Basic", "tier": "Basic"},
            "properties": {
                "friendlyName": WS,
                "workspaceId": WS_GUID,
                "provisioningState": "Succeeded",
                "discoveryUrl": f"{API}/discovery",
                "storageAccount": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/"
                f"storageAccounts/{ACCOUNT}",
                "publicNetworkAccess": "Enabled",
            },
            "systemData": {"createdAt": "2025-01-01T00:00:00Z", "createdBy": "someone@example.com"},
        }

    def _datastore(self) -> dict[str, Any]:
        return {
            "id": f"{WS_PATH}/datastores/workspaceblobstore",
            "name": "workspaceblobstore",
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": ACCOUNT,
                "containerName": CONTAINER,
                "endpoint": "core.windows.net",
                "protocol": "https",
                "isDefault": True,
                "credentials": {"credentialsType": "AccountKey"},
                "tags": {},
                "properties": {},
            },
        }

    def _data(self, rec: Recorded, name: str, version: str) -> tuple[int, dict[str, str], Any]:
        key = (name, version)
        if rec.method == "PUT":
            body = rec.body if isinstance(rec.body, dict) else {}
            created = key not in self.data
            self.data[key] = {
                "id": f"{WS_PATH}/data/{name}/versions/{version}",
                "name": version,
                "type": "Microsoft.MachineLearningServices/workspaces/data/versions",
                "properties": {**body.get("properties", {}), "isArchived": False},
                "systemData": {"createdAt": _iso(self.clock()), "createdBy": "anytune-test"},
            }
            return (201 if created else 200), {}, self.data[key]
        if key not in self.data:
            return _error(404, "UserError", f"Data container {name} version {version} not found")
        return 200, {}, self.data[key]

    def _workspace_model(self, name: str, version: str | None) -> tuple[int, dict[str, str], Any]:
        versions = self.workspace_models.get(name)
        if not versions:
            return (200, {}, {"value": []}) if version is None else _error(404, "UserError", "model not found")

        def view(v: str) -> dict[str, Any]:
            return {
                "id": f"{WS_PATH}/models/{name}/versions/{v}",
                "name": v,
                "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
                "properties": {
                    "modelType": "mlflow_model",
                    "isArchived": False,
                    "flavors": {"transformers": {"data": {"task": "chat-completion"}}},
                    "modelUri": "azureml://jobs/x/outputs/registered_model",
                    "tags": {},
                    "properties": {},
                },
                "systemData": {"createdAt": _iso(self.clock())},
            }

        if version is None:
            return 200, {}, {"value": [view(versions[-1])]}
        return (200, {}, view(version)) if version in versions else _error(404, "UserError", "no such version")

    def _marketplace(self, rec: Recorded, name: str) -> tuple[int, dict[str, str], Any]:
        if rec.method == "PUT":
            model_id = rec.body["properties"]["modelId"]
            self.marketplace[name] = {
                "modelId": model_id,
                "status": "PendingFulfillmentStart",
                "polls": self.marketplace_pending_polls,
            }
            return 201, {}, self._marketplace_view(name)
        if name not in self.marketplace:
            return _error(404, "ResourceNotFound", f"Marketplace subscription {name} not found")
        entry = self.marketplace[name]
        if entry["status"] == "PendingFulfillmentStart":
            if entry["polls"] <= 0:
                entry["status"] = "Subscribed"
            entry["polls"] -= 1
        return 200, {}, self._marketplace_view(name)

    def _marketplace_view(self, name: str) -> dict[str, Any]:
        entry = self.marketplace[name]
        return {
            "id": f"{WS_PATH}/marketplaceSubscriptions/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/marketplaceSubscriptions",
            "properties": {
                "modelId": entry["modelId"],
                "marketplaceSubscriptionStatus": entry["status"],
                "provisioningState": "Succeeded",
                "marketplacePlan": {
                    "publisherId": "metagenai",
                    "offerId": "meta-llama-3-8b-offer",
                    "planId": "meta-llama-3-8b-instruct",
                },
            },
        }

    # -- jobs -------------------------------------------------------------------------------
    def _status(self, name: str) -> str:
        job = self.jobs[name]
        elapsed = self.clock() - job["created"]
        if job.get("cancel_at") is not None:
            return "CancelRequested" if self.clock() - job["cancel_at"] < self.cancel_seconds else "Canceled"
        status = "NotStarted"
        for at, value in self.scripts.get(name, self.default_script):
            if elapsed >= at:
                status = value
        return status

    def _times(self, name: str) -> tuple[float | None, float | None]:
        job = self.jobs[name]
        script = self.scripts.get(name, self.default_script)
        start = next((at for at, s in script if s == "Running"), None)
        status = self._status(name)
        started = job["created"] + start if start is not None and self.clock() - job["created"] >= start else None
        if status in ("Completed", "Failed"):
            end_at = next(at for at, s in script if s == status)
            return started, job["created"] + end_at
        if status == "Canceled":
            return started, job["cancel_at"] + self.cancel_seconds
        return started, None

    def _job_view(self, name: str) -> dict[str, Any]:
        job = self.jobs[name]
        body = json.loads(json.dumps(job["body"]))
        props = body["properties"]
        props["status"] = self._status(name)
        props.setdefault("services", {})["Studio"] = {
            "endpoint": f"https://ml.azure.com/runs/{name}?wsid={WS_PATH}",
            "jobServiceType": "Studio",
        }
        outputs = props.get("outputs") or {}
        if "registered_model" in outputs:
            outputs["registered_model"].setdefault("mode", "ReadWriteMount")
        return {
            "id": f"{WS_PATH}/jobs/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "properties": props,
            "systemData": {
                "createdAt": _iso(job["created"]),
                "createdBy": "someone@example.com",
                "createdByType": "User",
            },
        }

    def _job(self, rec: Recorded, name: str, *, cancel: bool) -> tuple[int, dict[str, str], Any]:
        if cancel:
            if name not in self.jobs:
                return _error(404, "UserError", f"Job {name} not found")
            if self._status(name) in ("Completed", "Failed", "Canceled"):
                return _error(400, "UserError", f"Job {name} is already in a terminal state")
            self.jobs[name].setdefault("cancel_at", self.clock())
            location = f"https://management.azure.com{WS_PATH}/operationResults/{uuid.uuid4()}"
            return 202, {"Location": location, "Retry-After": "10"}, None
        if rec.method == "PUT":
            if name in self.jobs:
                return _error(400, "UserError", f"A job with name {name} already exists and cannot be updated")
            self.jobs[name] = {"body": rec.body, "created": self.clock()}
            outputs = rec.body["properties"].get("outputs") or {}
            registered = outputs.get("registered_model", {}).get("assetName")
            if registered:
                self.workspace_models.setdefault(registered, [])
            return 201, {}, self._job_view(name)
        if name not in self.jobs:
            return _error(404, "UserError", f"Job {name} not found in workspace {WS}")
        if self._status(name) == "Completed":
            registered = (
                (self.jobs[name]["body"]["properties"].get("outputs") or {})
                .get("registered_model", {})
                .get("assetName")
            )
            if registered and not self.workspace_models.get(registered):
                self.workspace_models[registered] = ["1"]
        return 200, {}, self._job_view(name)

    def created_jobs(self) -> list[Recorded]:
        """Every PUT of a job that reached the service."""
        return [r for r in self.calls("PUT", r"/jobs/[^/]+$")]

    # -- data plane -------------------------------------------------------------------------
    def _run(self, name: str) -> tuple[int, dict[str, str], Any]:
        if name not in self.jobs:
            return _error(404, "UserError", f"Run {name} not found")
        status = self._status(name)
        started, ended = self._times(name)
        run: dict[str, Any] = {
            "runId": name,
            "status": status,
            "experimentId": "exp-1",
            "createdUtc": _iso(self.jobs[name]["created"]),
            "startTimeUtc": _iso(started) if started else None,
            "endTimeUtc": _iso(ended) if ended else None,
        }
        if status == "Failed":
            run["error"] = {"error": dict(self.failure), "time": _iso(ended or self.clock())}
        if started is not None and self.run_warnings:
            run["warnings"] = [{"source": "finetune", "message": m} for m in self.run_warnings]
        return 200, {}, run

    def _points(self, name: str) -> list[tuple[int, float, float]]:
        """(step, loss, time) logged so far: one step per 10 s of running."""
        started, ended = self._times(name)
        if started is None:
            return []
        now = min(self.clock(), ended) if ended else self.clock()
        steps = min(self.metric_steps, int((now - started) // 10))
        return [(k, round(2.0 * 0.8**k, 6), started + 10 * k) for k in range(1, steps + 1)]

    def _mlflow(self, rec: Recorded, op: str) -> tuple[int, dict[str, str], Any]:
        if op == "runs/get":
            run_id = rec.query.get("run_id", "")
            if run_id not in self.jobs:
                return 404, {}, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Run {run_id} not found"}
            return (
                200,
                {},
                {"run": {"info": {"run_id": run_id, "experiment_id": "exp-1"}, "data": {"metrics": [], "tags": []}}},
            )
        if op == "runs/search":
            match = re.search(r"'([^']+)'", rec.body.get("filter", ""))
            root = match.group(1) if match else ""
            if root not in self.jobs:
                return 200, {}, {"runs": []}
            points = self._points(root)
            metrics = (
                [
                    {"key": k, "value": v, "step": points[-1][0], "timestamp": 0}
                    for k, v in (("loss", points[-1][1]), ("learning_rate", 2e-4))
                ]
                if points
                else []
            )
            return (
                200,
                {},
                {
                    "runs": [
                        {
                            "info": {"run_id": f"{root}_finetune", "experiment_id": "exp-1"},
                            "data": {"metrics": metrics, "tags": [{"key": "mlflow.rootRunId", "value": root}]},
                        }
                    ]
                },
            )
        if op == "metrics/get-history":
            run_id, key = rec.query.get("run_id", ""), rec.query.get("metric_key", "")
            root = run_id.removesuffix("_finetune")
            if root not in self.jobs:
                return 200, {}, {"metrics": []}
            out = [
                {"key": key, "value": loss if key == "loss" else 2e-4, "step": step, "timestamp": int(at * 1000)}
                for step, loss, at in self._points(root)
            ]
            return 200, {}, {"metrics": out}
        return 404, {}, {"error_code": "ENDPOINT_NOT_FOUND", "message": op}

    # -- registry and blobs -------------------------------------------------------------------
    def _registry_model(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        m = re.search(r"/registries/([^/]+)/models/([^/]+)/versions(?:/([^/]+))?$", rec.path)
        if not m:
            return _error(404, "NotFound", rec.path)
        versions = self.registry_models.get((m.group(1), m.group(2)))
        if not versions:
            return _error(404, "ResourceNotFound", f"Model container {m.group(2)} not found in registry")
        if m.group(3) is None:
            return 200, {}, {"value": [versions[-1]]}
        found = next((v for v in versions if v["name"] == m.group(3)), None)
        return (200, {}, found) if found else _error(404, "ResourceNotFound", "Model version not found")

    def _blob(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        if rec.method == "PUT":
            data = rec.body if isinstance(rec.body, bytes) else json.dumps(rec.body).encode()
            self.blobs[rec.path] = data
            return (
                201,
                {
                    "ETag": '"0x8DC"',
                    "Last-Modified": "Mon, 01 Jan 2025 00:00:00 GMT",
                    "x-ms-request-server-encrypted": "true",
                    "x-ms-version": "2025-01-05",
                },
                b"",
            )
        return _error(404, "BlobNotFound", "The specified blob does not exist.")

    def uploads(self) -> list[Recorded]:
        return [r for r in self.requests if ".blob.core.windows.net" in r.url and r.method == "PUT"]
