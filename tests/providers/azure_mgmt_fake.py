"""An in-memory Azure Resource Manager for Azure OpenAI model deployments, answering at the
azure-core transport level (the pattern of :mod:`tests.providers.azureml_fake`).

:class:`ArmTransport` is a real ``azure.core`` ``RequestsTransport`` whose ``requests`` session has an
in-memory adapter: ``azure-mgmt-cognitiveservices`` sends through its real pipeline (ARM challenge
auth, serialisation, error mapping) and reaches :class:`FakeCognitiveServices`, which serves
``Microsoft.CognitiveServices/accounts/{account}/deployments/{name}`` (GET, PUT, DELETE) and the
``Azure-AsyncOperation`` status it points to, held to the published description of api-version
2025-09-01 (``specification/cognitiveservices/resource-manager/Microsoft.CognitiveServices/stable/
2025-09-01/cognitiveservices.json`` in Azure/azure-rest-api-specs; the subset is :data:`CONTRACT`):

* PUT body: ``Deployment`` (``sku.name`` required; types; the ``provisioningState`` /
  ``DeploymentModelVersionUpgradeOption`` / ``DeploymentScaleType`` / ``SkuTier`` enums) -> 400
  ARM error naming the path. ARM ignores properties it does not define; the fake records them in
  ``violations`` (as it does read-only ones sent), which the tests assert empty.
* What the service checks beyond the schema, as Microsoft Learn documents it for fine-tuned
  models: the deployment types (sku names) a fine-tuned model takes (``Standard``,
  ``GlobalStandard``, ``DeveloperTier``, provisioned ones; case-insensitive), a capacity, model
  ``format`` ``OpenAI`` and ``version`` ``"1"``, and a model name the account fine-tuned (``models``).
* Answers: PUT 201 (200 for an existing name) with ``provisioningState: Creating`` and the
  ``Azure-AsyncOperation`` header; GET moves to ``Succeeded`` (or ``Failed``, :attr:`failing_models`)
  ``create_seconds`` after the PUT on the :class:`~anytune.testing.FakeClock`; DELETE 202 (with
  ``Azure-AsyncOperation`` and ``Location``), ``Deleting`` for ``delete_seconds``, then 404; DELETE of
  nothing 204. Errors are ARM's ``{"error": {"code", "message"}}`` with ``x-ms-error-code``.
* Every bearer token carries its audience (:func:`~tests.providers.azureml_fake.token_for`): only
  ``https://management.azure.com`` is accepted (401 ``InvalidAuthenticationTokenAudience``).
* A deployment that succeeded is served by the data plane: its name -> model is written into
  ``serving`` (pass :attr:`FakeOpenAIService.deployments` of the chat fake), and removed when deleted.

Faults are scripted per method and path (:class:`~tests.providers.azureml_fake.Fault`): a status
with headers, a transport exception, optionally after the request took effect.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from anytune.testing import FakeClock
from tests.providers.azureml_fake import (
    ARM_AUDIENCE,
    Answer,
    FakeTransport,
    Fault,
    JobSchema,
    Recorded,
    SchemaError,
    _Adapter,
    _body,
    _error,
    audience_of,
)

SUB = "00000000-1111-2222-3333-444444444444"
RG = "rg-anytune"
ACCOUNT = "anytune-test"  # the first label of tests.providers.openai_support.AZURE_ENDPOINT
LOCATION = "eastus2"
API_VERSION = "2025-09-01"
ACCOUNT_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.CognitiveServices/accounts/{ACCOUNT}"

_SYSTEM_DATA = {"type": "object", "readOnly": True}
#: The subset of cognitiveservices.json (2025-09-01) a deployment PUT/GET touches, as published
#: (``ProxyResource``/``Resource`` from common-types v3: id, name, type read-only).
CONTRACT: dict[str, Any] = {
    "definitions": {
        "Resource": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "readOnly": True},
                "name": {"type": "string", "readOnly": True},
                "type": {"type": "string", "readOnly": True},
            },
        },
        "ProxyResource": {"type": "object", "allOf": [{"$ref": "#/definitions/Resource"}]},
        "Deployment": {
            "type": "object",
            "properties": {
                "sku": {"$ref": "#/definitions/Sku"},
                "systemData": _SYSTEM_DATA,
                "etag": {"type": "string", "readOnly": True},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                "properties": {"$ref": "#/definitions/DeploymentProperties"},
            },
            "allOf": [{"$ref": "#/definitions/ProxyResource"}],
        },
        "Sku": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "tier": {"type": "string", "enum": ["Free", "Basic", "Standard", "Premium", "Enterprise"]},
                "size": {"type": "string"},
                "family": {"type": "string"},
                "capacity": {"type": "integer"},
            },
            "required": ["name"],
        },
        "DeploymentProperties": {
            "type": "object",
            "properties": {
                "provisioningState": {
                    "type": "string",
                    "readOnly": True,
                    "enum": [
                        "Accepted",
                        "Creating",
                        "Deleting",
                        "Moving",
                        "Failed",
                        "Succeeded",
                        "Disabled",
                        "Canceled",
                    ],
                },
                "model": {"$ref": "#/definitions/DeploymentModel"},
                "scaleSettings": {"$ref": "#/definitions/DeploymentScaleSettings"},
                "capabilities": {"type": "object", "readOnly": True, "additionalProperties": {"type": "string"}},
                "raiPolicyName": {"type": "string"},
                "callRateLimit": {"type": "object", "readOnly": True},
                "rateLimits": {"type": "array", "readOnly": True, "items": {"type": "object"}},
                "versionUpgradeOption": {
                    "type": "string",
                    "enum": ["OnceNewDefaultVersionAvailable", "OnceCurrentVersionExpired", "NoAutoUpgrade"],
                },
                "dynamicThrottlingEnabled": {"type": "boolean", "readOnly": True},
                "currentCapacity": {"type": "integer"},
                "capacitySettings": {"$ref": "#/definitions/DeploymentCapacitySettings"},
                "parentDeploymentName": {"type": "string"},
                "spilloverDeploymentName": {"type": "string"},
            },
        },
        "DeploymentModel": {
            "type": "object",
            "properties": {
                "publisher": {"type": "string"},
                "format": {"type": "string"},
                "name": {"type": "string"},
                "version": {"type": "string"},
                "source": {"type": "string"},
                "sourceAccount": {"type": "string"},
                "callRateLimit": {"type": "object", "readOnly": True},
            },
        },
        "DeploymentScaleSettings": {
            "type": "object",
            "properties": {
                "scaleType": {"type": "string", "enum": ["Standard", "Manual"]},
                "capacity": {"type": "integer"},
                "activeCapacity": {"type": "integer", "readOnly": True},
            },
        },
        "DeploymentCapacitySettings": {
            "type": "object",
            "properties": {"designatedCapacity": {"type": "integer"}, "priority": {"type": "integer"}},
        },
    }
}
SCHEMA = JobSchema(CONTRACT["definitions"])
#: Deployment types a fine-tuned model takes (Microsoft Learn, fine-tuning deployment types).
FINE_TUNED_SKUS = frozenset(
    {"standard", "globalstandard", "developertier", "provisionedmanaged", "globalprovisionedmanaged"}
)

_DEPLOYMENT = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.CognitiveServices/"
    r"accounts/(?P<account>[^/]+)/deployments/(?P<name>[^/]+)",
    re.I,
)
_OPERATION = re.compile(
    r"/subscriptions/[^/]+/providers/Microsoft\.CognitiveServices/locations/[^/]+/operationResults/(?P<op>[^/]+)",
    re.I,
)


def fault(**kwargs: Any) -> Fault:
    """A :class:`Fault` for :meth:`FakeCognitiveServices.inject` (which sets its method and path)."""
    return Fault("", re.compile(""), **kwargs)


#: The azure-core transport the management client sends through (azureml_fake's: its sleeps advance the clock).
ArmTransport = FakeTransport


@dataclass
class _Deployment:
    name: str
    body: dict[str, Any]
    created_at: float
    deleting_at: float | None = None
    operation: str = ""

    @property
    def model(self) -> str:
        return str(self.body["properties"]["model"]["name"])


class FakeCognitiveServices:
    """See the module docstring.

    Args:
        clock: the test's clock (the provider sleeps on it too).
        serving: the data plane's deployment name -> model table (written when ready, cleared when gone).
        models: the fine-tuned models the account has (a deployment of any other is refused).
        create_seconds, delete_seconds: how long creating and deleting take.
    """

    def __init__(
        self,
        clock: FakeClock,
        *,
        serving: MutableMapping[str, str] | None = None,
        models: Callable[[], Iterable[str]] | None = None,
        create_seconds: float = 120.0,
        delete_seconds: float = 30.0,
    ) -> None:
        self.clock = clock
        self.serving = serving if serving is not None else {}
        self.models = models
        self.create_seconds = create_seconds
        self.delete_seconds = delete_seconds
        self.deployments: dict[str, _Deployment] = {}
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.violations: list[str] = []
        self.failing_models: set[str] = set()
        self.operations: dict[str, str] = {}  # operation id -> deployment name

    # -- wiring ----------------------------------------------------------------------------------------
    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        for prefix in ("https://", "http://"):
            session.mount(prefix, _Adapter(self))  # type: ignore[arg-type]
        return session

    def transport(self) -> ArmTransport:
        return ArmTransport(self)

    def inject(self, method: str, path: str, *faults: Fault) -> None:
        """Answer the next matching requests with ``faults`` (regular expression on the path)."""
        for fault in faults:
            fault.method, fault.pattern = method.upper(), re.compile(path)
            self.faults.append(fault)

    def calls(self, method: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and "/deployments/" in r.path]

    def add(self, name: str, model: str, *, sku: str = "Standard", ready: bool = True) -> None:
        """A deployment made by someone else (the portal, another tool)."""
        body = {"sku": {"name": sku, "capacity": 1}, "properties": {"model": {"format": "OpenAI", "name": model}}}
        started = self.clock() - (self.create_seconds if ready else 0)
        self.deployments[name] = _Deployment(name, body, started)
        self._sync()

    # -- the clock's effects ---------------------------------------------------------------------------
    def _state(self, dep: _Deployment) -> str:
        now = self.clock()
        if dep.deleting_at is not None:
            return "Deleting"
        if now - dep.created_at < self.create_seconds:
            return "Creating"
        return "Failed" if dep.model in self.failing_models else "Succeeded"

    def _sync(self) -> None:
        for name, dep in list(self.deployments.items()):
            if dep.deleting_at is not None and self.clock() - dep.deleting_at >= self.delete_seconds:
                del self.deployments[name]
                self.serving.pop(name, None)
            elif self._state(dep) == "Succeeded":
                self.serving[name] = dep.model
            elif dep.deleting_at is not None:
                self.serving.pop(name, None)

    # -- dispatch --------------------------------------------------------------------------------------
    def handle(self, request: requests.PreparedRequest) -> Answer:
        url = request.url or ""
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        rec = Recorded(request.method or "GET", url, unquote(parts.path), query, dict(request.headers), _body(request))
        self.requests.append(rec)
        fault = next(
            (f for f in self.faults if f.times > 0 and f.method == rec.method and f.pattern.search(rec.path)), None
        )
        if fault is not None:
            fault.times -= 1
            if not fault.after:
                return self._fault(fault)
        answer = self._route(rec, parts.netloc)
        if fault is not None:  # it took effect; the caller hears of a failure
            return self._fault(fault)
        return answer

    @staticmethod
    def _fault(fault: Fault) -> Answer:
        if fault.exception is not None:
            raise fault.exception("injected fault")
        status = fault.status or 500
        code = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(status, "InternalServerError")
        body = fault.body if fault.body is not None else {"error": {"code": code, "message": f"injected {status}"}}
        return status, {"x-ms-error-code": code, **fault.headers}, body

    def _route(self, rec: Recorded, host: str) -> Answer:
        if host != "management.azure.com":
            return _error(404, "NotFound", f"no such host in this fake: {host}")
        token = rec.headers.get("Authorization", "")
        if not token.startswith("Bearer "):
            return _error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        if audience_of(token[7:]) != ARM_AUDIENCE:
            return _error(
                401,
                "InvalidAuthenticationTokenAudience",
                "The access token has been obtained for wrong audience or resource. It should exactly match "
                "one of the allowed audiences 'https://management.azure.com/'.",
            )
        if rec.api_version != API_VERSION:
            return _error(400, "InvalidApiVersionParameter", f"The api-version '{rec.api_version}' is invalid.")
        self._sync()
        if (op := _OPERATION.fullmatch(rec.path)) is not None and rec.method == "GET":
            return self._operation(op["op"])
        match = _DEPLOYMENT.fullmatch(rec.path)
        if match is None:
            return _error(404, "NotFound", f"no route for {rec.method} {rec.path}")
        if (match["sub"], match["rg"]) != (SUB, RG):
            return _error(404, "ResourceGroupNotFound", f"Resource group '{match['rg']}' could not be found.")
        if match["account"] != ACCOUNT:
            return _error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.CognitiveServices/accounts/{match['account']}' under resource group "
                f"'{match['rg']}' was not found.",
            )
        handler = {"GET": self._get, "PUT": self._put, "DELETE": self._delete}.get(rec.method)
        if handler is None:
            return _error(405, "MethodNotAllowed", rec.method)
        return handler(match["name"], rec)

    # -- the resource ------------------------------------------------------------------------------------
    def _view(self, dep: _Deployment) -> dict[str, Any]:
        props = {k: v for k, v in dep.body.get("properties", {}).items()}
        props["provisioningState"] = self._state(dep)
        payload = {
            "id": f"{ACCOUNT_PATH}/deployments/{dep.name}",
            "name": dep.name,
            "type": "Microsoft.CognitiveServices/accounts/deployments",
            "sku": dict(dep.body["sku"]),
            "properties": props,
            "etag": f'"{uuid.uuid5(uuid.NAMESPACE_URL, dep.name)}"',
        }
        try:
            SCHEMA.check(payload, "Deployment")
        except SchemaError as exc:
            self.violations.append(f"answer off the schema: {exc}")
        return payload

    def _operation_header(self, dep: _Deployment) -> dict[str, str]:
        dep.operation = str(uuid.uuid4())
        self.operations[dep.operation] = dep.name
        where = (
            f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.CognitiveServices/locations/"
            f"{LOCATION}/operationResults/{dep.operation}?api-version={API_VERSION}"
        )
        return {"Azure-AsyncOperation": where}

    def _operation(self, op: str) -> Answer:
        name = self.operations.get(op)
        if name is None:
            return _error(404, "NotFound", f"operation {op} not found")
        dep = self.deployments.get(name)
        state = "Succeeded" if dep is None else self._state(dep)
        status = {"Creating": "InProgress", "Deleting": "InProgress"}.get(state, state)
        return 200, {}, {"id": op, "name": op, "status": status}

    def _get(self, name: str, rec: Recorded) -> Answer:
        dep = self.deployments.get(name)
        if dep is None:
            return _error(404, "DeploymentNotFound", f"Deployment '{name}' not found.")
        return 200, {}, self._view(dep)

    def _delete(self, name: str, rec: Recorded) -> Answer:
        dep = self.deployments.get(name)
        if dep is None:
            return 204, {}, None
        if dep.deleting_at is None:
            dep.deleting_at = self.clock()
        headers = self._operation_header(dep)
        headers["Location"] = headers["Azure-AsyncOperation"]
        self._sync()
        return 202, headers, None

    def _put(self, name: str, rec: Recorded) -> Answer:
        body = rec.body
        try:
            SCHEMA.check(body, "Deployment")
        except SchemaError as exc:
            return _error(400, "InvalidRequestContent", f"The request content was invalid: {exc}", exc.path)
        self._record_extras(body, "Deployment", "$")
        problem = self._service_rules(body)
        if problem is not None:
            return problem
        dep = self.deployments.get(name)
        if dep is not None and dep.deleting_at is not None:
            return _error(409, "Conflict", f"Deployment '{name}' is being deleted.")
        status = 200 if dep is not None else 201
        if dep is None:
            dep = _Deployment(name, body, self.clock())
            self.deployments[name] = dep
        else:
            dep.body = body
        return status, self._operation_header(dep), self._view(dep)

    def _service_rules(self, body: dict[str, Any]) -> Answer | None:
        """What the service refuses beyond the schema, for a fine-tuned model's deployment."""
        sku = body.get("sku") or {}
        if str(sku.get("name", "")).lower() not in FINE_TUNED_SKUS:
            return _error(400, "InvalidResourceProperties", f"The specified SKU '{sku.get('name')}' is not supported.")
        if not isinstance(sku.get("capacity"), int) or sku["capacity"] < 1:
            return _error(400, "InvalidCapacity", "The capacity should be a positive integer.")
        model = (body.get("properties") or {}).get("model") or {}
        if str(model.get("format", "")) != "OpenAI":
            return _error(
                400, "InvalidResourceProperties", f"The model format '{model.get('format')}' is not supported."
            )
        if model.get("version") != "1":
            return _error(400, "DeploymentModelNotSupported", "A fine-tuned model is deployed at version '1'.")
        known = set(self.models()) if self.models is not None else None
        if known is not None and model.get("name") not in known:
            return _error(
                400, "DeploymentModelNotSupported", f"The model '{model.get('name')}' is not found in this account."
            )
        return None

    def _record_extras(self, value: Any, definition: str, path: str) -> None:
        """Properties ARM would ignore (not defined) or not take (read-only): recorded as violations."""
        if not isinstance(value, dict):
            return
        props, _ = SCHEMA._flatten(definition, path)
        for key, item in value.items():
            spec = props.get(key)
            if spec is None:
                self.violations.append(f"PUT {path}.{key}: not defined by {definition}")
            elif spec.get("readOnly"):
                self.violations.append(f"PUT {path}.{key}: read-only, not for a PUT")
            elif "$ref" in spec:
                self._record_extras(item, spec["$ref"].rsplit("/", 1)[-1], f"{path}.{key}")
