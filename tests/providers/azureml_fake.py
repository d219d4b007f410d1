"""An in-memory Azure Machine Learning, answering at the azure-core transport level.

:class:`FakeTransport` is a real ``azure.core.pipeline.transport.RequestsTransport`` whose
``requests`` session has an in-memory adapter instead of sockets: azure-ai-ml, azure-storage-blob
and anytune's own data-plane calls all go through their real pipelines (auth, retry, serialisation,
error mapping) and reach :class:`FakeAzureML`, which answers with the shapes the services document:

* ARM (``management.azure.com``): workspace, jobs (FineTuning, api-versions 2024-01-01-preview and
  2024-10-01-preview), cancel, computes, datastores (+ ``listSecrets``), data versions, workspace
  models, marketplace subscriptions; serverless endpoints (2024-01-01-preview), managed online
  endpoints (2022-02-01-preview) and their deployments (2023-04-01-preview): read, and written as
  ARM does it (PUT: 201 + ``Azure-AsyncOperation``, the resource ``Creating`` until
  ``endpoint_seconds``/``deployment_seconds`` of the clock have passed; DELETE: 202 + ``Location``
  and ``Retry-After``, ``Deleting`` for ``delete_seconds``, then 404), each body held to
  azure-ai-ml's own generated REST models (:func:`check_rest_body`); a created endpoint answers
  through the scoring and serverless chat routes like one added with :meth:`FakeAzureML.add_endpoint`;
* registry discovery and the registry model data plane;
* blob storage (``PUT`` of a block blob);
* workspace discovery, run history and MLflow tracking (``runs/get``, ``runs/search``,
  ``metrics/get-history``).

It is held to the published contracts in ``azureml_finetuning_contract.json`` (sources there), so a
wrong adapter gets the service's refusal, not a green test:

* A job PUT is validated against the FineTuningJob schema of api-version 2024-10-01-preview
  (required fields, closed objects, discriminators, enums, types): 400 ``UserError`` naming the
  path. Its ``hyperParameters`` must be names Azure ML documents for the deployment the body asks
  for (serverless: no ``computeId``/``resources``; managed: either), else 400 naming them.
* Every bearer token carries its audience (:func:`token_for`; :class:`FakeCredential` hands out a
  token for the scope it is asked for). ARM, the Azure ML data planes and storage each accept their
  own audiences only: a wrong one is ARM's 401 ``InvalidAuthenticationTokenAudience``, the data
  plane's 401, storage's 401 ``InvalidAuthenticationInfo`` (XML, with its ``WWW-Authenticate``).
* MLflow (REST API 2.0): ``runs/search`` honours ``experiment_ids``, the ``filter`` grammar (clauses
  joined by AND; a filter it cannot read is 400 ``INVALID_PARAMETER_VALUE``), ``max_results`` and
  ``page_token``/``next_page_token`` (``search_page_size`` caps a page, as a server may);
  ``metrics/get-history`` answers only the metrics a run logged (an unknown key is an empty
  answer, an unknown run 404 ``RESOURCE_DOES_NOT_EXIST``) and pages too (``history_page_size``).
  A fine-tuning job's runs are the root (the job) and its steps' child runs (``<job>_preprocess``,
  ``<job>_finetune``, then ``<job>_register``; a search lists the newest first, as MLflow does),
  tagged ``mlflow.rootRunId``/``mlflow.parentRunId``. The fine-tune run logs what Hugging Face's
  Trainer logs through MLflow: per step ``loss``, ``learning_rate``, ``epoch``, ``grad_norm``; every
  ``eval_every`` steps ``eval_loss``, ``eval_runtime``; at the end the run's summary at the last
  step (``train_loss`` is the mean loss there, ``train_runtime``, ``total_flos``).

Time is a :class:`~tests.conftest.FakeClock`: a job walks through its script of statuses as the
clock advances, so tests drive a whole lifecycle by sleeping (instantly).  Faults are scripted per
method and path: an HTTP status with headers (429 + Retry-After, 503...), a transport exception
(timeouts, dropped connections), optionally *after* the request took effect (an ambiguous failure).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from operator import eq, ge, gt, le, lt, ne
from pathlib import Path
from typing import Any, Protocol
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

#: The published contracts the fake holds requests to (schema, hyperparameter names, audiences).
CONTRACT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "azureml_finetuning_contract.json").read_text()
)
ARM_AUDIENCE = "https://management.azure.com"
STORAGE_AUDIENCE = "https://storage.azure.com"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


_SIGNATURE = "c2lnbmF0dXJlLW5vdC1yZWFsLWJ1dC1sb25nLWVub3VnaA"


def token_for(audience: str) -> str:
    """A decodable (unsigned) JWT for ``audience``, as Entra ID hands out: tests assert that no token
    ever reaches logs, errors, events or the job store."""
    claims = {"aud": audience, "tid": TENANT, "oid": "user-object-id"}
    return ".".join((_b64({"typ": "JWT", "alg": "RS256"}), _b64(claims), _SIGNATURE))


def audience_of(token: str) -> str | None:
    """The audience of a token made by :func:`token_for` (None: not one of ours, or unreadable)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[2] != _SIGNATURE:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    aud = claims.get("aud") if isinstance(claims, dict) else None
    return aud if isinstance(aud, str) else None


#: The token for the ARM scope (what azure-ai-ml asks for everywhere).
TOKEN = token_for(ARM_AUDIENCE)
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

Answer = tuple[int, dict[str, str], Any]


class FakeCredential:
    """An azure-core ``TokenCredential``: a token for the audience of the scope it is asked for.

    ``token`` fixes the token it hands out whatever the scope (a stale token, or a credential that
    ignores the scope). ``issued`` holds every token handed out, ``scopes`` every request.
    """

    def __init__(self, clock: FakeClock, token: str | None = None) -> None:
        self.clock = clock
        self.token = token
        self.calls = 0
        self.scopes: list[tuple[str, ...]] = []
        self.issued: set[str] = set()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        self.scopes.append(scopes)
        token = self.token or token_for((scopes[0] if scopes else "").removesuffix("/.default"))
        self.issued.add(token)
        return AccessToken(token, int(self.clock() + 3600))


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


class _Serving(Protocol):
    clock: FakeClock

    def session(self) -> requests.Session: ...


class FakeTransport(RequestsTransport):
    """The azure-core transport every client in a test sends through to a fake service (this one,
    or another answering the same way); sleeps advance the fake's clock."""

    def __init__(self, fake: _Serving) -> None:
        super().__init__(session=fake.session(), session_owner=False, use_env_settings=False)
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


def _error(status: int, code: str, message: str, target: str | None = None) -> Answer:
    """ARM's ErrorResponse (common-types v3: error.code, message, target)."""
    error = {"code": code, "message": message} | ({"target": target} if target else {})
    return status, {"x-ms-error-code": code}, {"error": error}


def _mlflow_error(status: int, code: str, message: str) -> Answer:
    """MLflow's REST error body."""
    return status, {}, {"error_code": code, "message": message}


def _storage_error(
    status: int, code: str, message: str, detail: str = "", headers: dict[str, str] | None = None
) -> Answer:
    """Azure Storage's XML error body (``x-ms-error-code`` is what azure-storage-blob reads first)."""
    extra = f"<AuthenticationErrorDetail>{detail}</AuthenticationErrorDetail>" if detail else ""
    xml = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message>{extra}</Error>'
    head = {"x-ms-error-code": code, "Content-Type": "application/xml", **(headers or {})}
    return status, head, xml.encode()


def _iso(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


# -- the job schema (Swagger 2.0, the subset mfe.json uses) ------------------------------------------


class SchemaError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class JobSchema:
    """Validates a JSON value against the definitions of :data:`CONTRACT` the way the service reads
    them: ``allOf`` merges parents, a ``discriminator`` picks the subtype whose
    ``x-ms-discriminator-value`` matches, ``additionalProperties: false`` closes a concrete type,
    ``x-nullable`` allows null. Enum values compare without regard to case: azure-ai-ml itself
    sends ``taskType: chatCompletion`` for the spec's ``ChatCompletion`` (its enums are
    case-insensitive, ``CaseInsensitiveEnumMeta``)."""

    def __init__(self, definitions: Mapping[str, Any]) -> None:
        self.defs = definitions

    def check(self, value: Any, name: str, path: str = "$") -> None:
        """Raises SchemaError at the first mismatch."""
        self._ref(value, name, path)

    def _definition(self, name: str, path: str) -> dict[str, Any]:
        found = self.defs.get(name)
        if found is None:
            raise SchemaError(path, f"{name} is not modelled by this fake")
        return dict(found)

    def _parents(self, name: str) -> list[str]:
        return [p["$ref"].rsplit("/", 1)[-1] for p in self.defs.get(name, {}).get("allOf", [])]

    def _inherits(self, name: str, base: str) -> bool:
        return any(p == base or self._inherits(p, base) for p in self._parents(name))

    def _flatten(self, name: str, path: str) -> tuple[dict[str, Any], set[str]]:
        d = self._definition(name, path)
        props: dict[str, Any] = {}
        required: set[str] = set(d.get("required", []))
        for parent in self._parents(name):
            more, req = self._flatten(parent, path)
            props.update(more)
            required |= req
        props.update(d.get("properties", {}))
        return props, required

    def _subtype(self, value: dict[str, Any], name: str, path: str) -> str:
        key = self.defs[name]["discriminator"]
        tag = value.get(key)
        if not isinstance(tag, str):
            raise SchemaError(f"{path}.{key}", "required discriminator missing")
        for candidate, d in self.defs.items():
            if str(d.get("x-ms-discriminator-value", "")).lower() == tag.lower() and self._inherits(candidate, name):
                return candidate
        raise SchemaError(f"{path}.{key}", f"{tag!r} is not a known {name} type")

    def _ref(self, value: Any, name: str, path: str) -> None:
        d = self._definition(name, path)
        if "enum" in d or d.get("type") in ("string", "boolean", "integer", "number", "array"):
            self._value(value, d, path)
            return
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected an object ({name})")
        if "discriminator" in d:
            name = self._subtype(value, name, path)
        props, required = self._flatten(name, path)
        for key in sorted(required - set(value)):
            raise SchemaError(f"{path}.{key}", "required property missing")
        closed = self.defs[name].get("additionalProperties") is False
        for key, item in value.items():
            if key in props:
                self._value(item, props[key], f"{path}.{key}")
            elif closed:
                raise SchemaError(f"{path}.{key}", f"property not defined on {name}")

    def _value(self, value: Any, schema: Mapping[str, Any], path: str) -> None:
        if value is None:
            if schema.get("x-nullable") or schema.get("readOnly"):
                return
            raise SchemaError(path, "null is not allowed")
        if "$ref" in schema:
            self._ref(value, schema["$ref"].rsplit("/", 1)[-1], path)
            return
        kind = schema.get("type")
        checks = {"string": str, "boolean": bool, "integer": int, "number": (int, float), "array": list, "object": dict}
        if kind in checks and (not isinstance(value, checks[kind]) or (kind != "boolean" and isinstance(value, bool))):
            raise SchemaError(path, f"expected {kind}, got {type(value).__name__}")
        if "enum" in schema and str(value).lower() not in {str(e).lower() for e in schema["enum"]}:
            raise SchemaError(path, f"{value!r} is not one of {schema['enum']}")
        if kind == "string":
            if len(value) < schema.get("minLength", 0) or (
                "pattern" in schema and not re.search(schema["pattern"], value)
            ):
                raise SchemaError(path, f"{value!r} does not match {schema.get('pattern', 'minLength')}")
        elif kind == "array":
            for i, item in enumerate(value):
                self._value(item, schema.get("items", {}), f"{path}[{i}]")
        elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                self._value(item, schema["additionalProperties"], f"{path}.{key}")


SCHEMA = JobSchema(CONTRACT["definitions"])
HYPERPARAMETERS: dict[str, frozenset[str]] = {
    mode: frozenset(CONTRACT["hyperparameters"][mode]) for mode in ("serverless", "managed")
}


def deployment_of(props: Mapping[str, Any]) -> str:
    """What a FineTuning body asks for: managed compute (a cluster or instance types) or serverless."""
    resources = props.get("resources") or {}
    return "managed" if props.get("computeId") or resources.get("instanceTypes") else "serverless"


def check_job_body(body: Any) -> None:
    """The service's checks of a FineTuning job PUT (raises SchemaError)."""
    SCHEMA.check(body, CONTRACT["root"])
    props = body["properties"]
    if str(props.get("jobType", "")).lower() != "finetuning":
        raise SchemaError("$.properties.jobType", "this fake serves FineTuning jobs only")
    mode = deployment_of(props)
    names = set(props["fineTuningDetails"].get("hyperParameters") or {})
    unknown = sorted(names - HYPERPARAMETERS[mode])
    if unknown:
        raise SchemaError(
            "$.properties.fineTuningDetails.hyperParameters",
            f"unknown hyperparameter(s) for {mode} fine-tuning: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(HYPERPARAMETERS[mode]))}",
        )


# -- MLflow's search filter --------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"""\s*(?P<entity>[A-Za-z_]+)\.(?:`(?P<bq>[^`]+)`|"(?P<dq>[^"]+)"|(?P<bare>[\w.\-/]+))
        \s*(?P<op>!=|>=|<=|=|<|>|(?:NOT\s+)?I?LIKE\b)
        \s*(?:'(?P<sq>[^']*)'|"(?P<dqv>[^"]*)"|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))\s*""",
    re.I | re.X,
)
_AND = re.compile(r"AND\b", re.I)
_ENTITIES = {
    **dict.fromkeys(("tags", "tag"), "tags"),
    **dict.fromkeys(("attributes", "attribute", "attr", "run"), "attributes"),
    **dict.fromkeys(("params", "param", "parameter", "parameters"), "params"),
    **dict.fromkeys(("metrics", "metric"), "metrics"),
}


@dataclass(frozen=True)
class Clause:
    entity: str
    key: str
    op: str
    value: str | float


def parse_filter(text: str) -> list[Clause]:
    """MLflow's search filter: ``entity.key op value`` clauses joined by AND (raises ValueError)."""
    clauses: list[Clause] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _CLAUSE.match(text, pos)
        if m is None or m["entity"].lower() not in _ENTITIES:
            raise ValueError(f"invalid clause at {text[pos:]!r}")
        entity = _ENTITIES[m["entity"].lower()]
        string = m["sq"] if m["sq"] is not None else m["dqv"]
        if (entity == "metrics") == (string is not None):
            raise ValueError(f"metrics compare to numbers, others to quoted strings: {m.group(0).strip()!r}")
        clauses.append(
            Clause(
                entity, m["bq"] or m["dq"] or m["bare"], " ".join(m["op"].upper().split()), string or float(m["num"])
            )
        )
        pos = m.end()
        if pos < len(text):
            if (a := _AND.match(text, pos)) is None:
                raise ValueError(f"expected AND at {text[pos:]!r}")
            pos = a.end()
    return clauses


def _like(pattern: str, value: str, *, ignore_case: bool) -> bool:
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.I if ignore_case else 0) is not None


def _holds(clause: Clause, actual: Any) -> bool:
    """Whether ``actual`` satisfies ``clause`` (raises ValueError for an operator the type lacks)."""
    op, want = clause.op, clause.value
    if isinstance(want, float):
        compare = {"=": eq, "!=": ne, "<": lt, "<=": le, ">": gt, ">=": ge}.get(op)
        if compare is None:
            raise ValueError(f"{op} does not compare numbers")
        return actual is not None and bool(compare(float(actual), want))
    if op.endswith("LIKE"):
        found = actual is not None and _like(want, str(actual), ignore_case=op.endswith("ILIKE"))
        return not found if op.startswith("NOT") else found
    if op in ("=", "!="):
        return actual is not None and (str(actual) == want) == (op == "=")
    raise ValueError(f"{op} does not compare strings")


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"invalid page token {token!r}") from exc


#: What an endpoint answers a question it was not given an answer for.
ENDPOINT_DEFAULT_ANSWER = "I do not know."
#: The api-versions azure-ai-ml sends endpoint reads with (its ServiceClient012024PreviewArm and
#: ServiceClient022022Preview).
ENDPOINT_API_VERSIONS = {"serverless": "2024-01-01-preview", "online": "2022-02-01-preview"}
#: Generation parameters the model catalog's chat-completion scoring schema takes.
SCORING_PARAMETERS = frozenset({"max_new_tokens", "temperature", "top_p", "do_sample", "return_full_text"})


#: The api-version azure-ai-ml reads and writes online deployments with (ServiceClient042023Preview).
DEPLOYMENT_API_VERSION = "2023-04-01-preview"
#: Properties the generated models mark required that the service fills in when absent:
#: azure-ai-ml's ``ServerlessEndpoint`` never sends ``authMode`` (key auth is the service's default).
DEFAULTED = frozenset({("ServerlessEndpointProperties", "authMode")})


def _rest_fields(cls: type) -> dict[str, tuple[str, Any]]:
    """rest name -> (attribute, annotation) of a generated model (azure-ai-ml's arm_ml_service)."""
    import sys
    import typing

    from azure.ai.ml._restclient.arm_ml_service import models as rest

    cls({})  # the generated base computes its field table on first use
    namespace = dict(vars(sys.modules[cls.__module__]), _models=rest)
    hints = typing.get_type_hints(cls, globalns=namespace)
    table = cls._attr_to_rest_field  # type: ignore[attr-defined]
    return {rf._rest_name: (attr, hints.get(attr), rf) for attr, rf in table.items()}


def check_rest_body(value: Any, cls: type, path: str = "$") -> None:
    """Hold a write's JSON body to a generated REST model (from the published spec): an object with
    only the model's properties (a discriminator picks the subtype), none of them read-only, the
    required ones present, each of its type. Raises SchemaError at the first mismatch."""
    import typing

    if not isinstance(value, dict):
        raise SchemaError(path, f"expected an object ({cls.__name__})")
    mapping = getattr(cls, "__mapping__", None)
    if mapping:
        fields = _rest_fields(cls)
        tag_name = next((name for name, (_, _, rf) in fields.items() if rf._is_discriminator), None)
        if tag_name is not None:
            tag = value.get(tag_name)
            sub = next((c for k, c in mapping.items() if str(k).lower() == str(tag).lower()), None)
            if sub is None:
                raise SchemaError(f"{path}.{tag_name}", f"{tag!r} is not a known {cls.__name__} type")
            cls = sub
    fields = _rest_fields(cls)
    for name, (_, hint, rf) in fields.items():
        optional = type(None) in typing.get_args(hint)
        writable = rf._visibility is None or "create" in rf._visibility
        if not optional and writable and name not in value and (cls.__name__, name) not in DEFAULTED:
            raise SchemaError(f"{path}.{name}", "required property missing")
    for key, item in value.items():
        if key not in fields:
            raise SchemaError(f"{path}.{key}", f"property not defined on {cls.__name__}")
        _, hint, rf = fields[key]
        if rf._visibility is not None and "create" not in rf._visibility:
            raise SchemaError(f"{path}.{key}", "read-only property sent")
        _check_value(item, hint, f"{path}.{key}", typing)


def _check_value(value: Any, hint: Any, path: str, typing: Any) -> None:
    """(Extensible enums are ``Union[str, Enum]``: any string, as the service reads them.)"""
    from azure.ai.ml._restclient.arm_ml_service._utils.model_base import Model

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        options = [a for a in args if a is not type(None)]
        if value is None:
            return
        errors = []
        for option in options:
            try:
                _check_value(value, option, path, typing)
                return
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError(path, f"matches none of {options}: {errors[0] if errors else ''}")
    if origin is typing.Literal:
        if str(value).lower() not in {str(getattr(a, "value", a)).lower() for a in args}:
            raise SchemaError(path, f"{value!r} is not one of {args}")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(path, "expected an object")
        for k, v in value.items():
            _check_value(v, args[1], f"{path}.{k}", typing)
        return
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(path, "expected an array")
        for i, v in enumerate(value):
            _check_value(v, args[0], f"{path}[{i}]", typing)
        return
    if isinstance(hint, type) and issubclass(hint, Model):
        check_rest_body(value, hint, path)
        return
    expected = {str: str, bool: bool, int: int, float: (int, float)}.get(hint)
    if expected is not None and (not isinstance(value, expected) or (hint is not bool and isinstance(value, bool))):
        raise SchemaError(path, f"expected {hint.__name__}, got {type(value).__name__}")


@dataclass
class Endpoint:
    """A deployed model: answers the last user message from ``answers``."""

    name: str
    kind: str  # "serverless" | "online"
    answers: dict[str, str]
    auth_mode: str
    key: str
    #: Managed online: the deployments behind the endpoint (all of them answer alike).
    deployments: tuple[str, ...] = ("blue",)
    #: Made through PUT (None: added by a test): the model it serves, its tags and traffic.
    model: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    traffic: dict[str, int] | None = None
    #: "Creating"/"Updating" until ``ready_at`` on the clock; "Deleting" until ``gone_at``.
    state: str = "Succeeded"
    ready_at: float = 0.0
    gone_at: float | None = None
    #: Managed online deployments made through PUT: name -> their state.
    made: dict[str, dict[str, Any]] = field(default_factory=dict)

    def answer(self, messages: list[dict[str, Any]]) -> str:
        question = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        return self.answers.get(question, ENDPOINT_DEFAULT_ANSWER)


class FakeAzureML:
    """One subscription, resource group and workspace, the ``azureml`` and ``azureml-meta``
    registries, a blob datastore, and a run-history/MLflow data plane."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        #: Every request the fake refused for breaking a published contract: (path, message).
        self.rejections: list[tuple[str, str]] = []
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
        #: "Sas" (listSecrets hands out a SAS) or "None" (identity-based: storage takes a bearer token).
        self.datastore_credentials = "Sas"
        self.metric_steps = 4
        self.eval_every = 2
        #: The first step's loss of the jobs created from now on (a job's loss falls 20% a step).
        self.loss_start = 2.0
        #: The most runs / metric points one MLflow page holds, whatever max_results asks (None: no cap).
        self.search_page_size: int | None = None
        self.history_page_size: int | None = None
        self.cancel_seconds = 5.0  # how long a job stays CancelRequested
        self.run_warnings: list[str] = []
        #: Deployed endpoints (name -> Endpoint): serverless (MaaS) and managed online (MaaP).
        self.endpoints: dict[str, Endpoint] = {}
        #: Statuses (or "drop") the next serverless chat calls answer with, one each.
        self.chat_faults: list[int | str] = []
        self.chat_requests: list[dict[str, Any]] = []
        #: Seconds an endpoint (a deployment) takes to provision, and an endpoint to be deleted.
        self.endpoint_seconds = 60.0
        self.update_seconds = 10.0
        self.deployment_seconds = 300.0
        self.delete_seconds = 30.0
        #: The reason the next managed deployment made fails with (None: it succeeds).
        self.deployment_failure: str | None = None
        #: What endpoints created through PUT answer.
        self.deploy_answers: dict[str, str] = {}
        #: ARM async operations: id -> (endpoint name, what it does).
        self.operations: dict[str, tuple[str, str]] = {}
        self.add_registry_model("azureml", "Phi-3-mini-4k-instruct", "7", tasks="chat-completion,text-generation")
        self.add_registry_model("azureml-meta", "Meta-Llama-3-8B-Instruct", "9", tasks="chat-completion")
        self.add_registry_model("azureml", "bert-base-uncased", "3", tasks="text-classification")

    # -- setup ------------------------------------------------------------------------------
    def transport(self) -> FakeTransport:
        return FakeTransport(self)

    def session(self) -> requests.Session:
        """A ``requests`` session that sends to this fake (for raw requests in tests)."""
        session = requests.Session()
        session.trust_env = False
        for prefix in ("https://", "http://"):
            session.mount(prefix, _Adapter(self))
        return session

    def add_endpoint(
        self, name: str, kind: str, answers: Mapping[str, str] | None = None, *, auth_mode: str = "Key"
    ) -> Endpoint:
        """Deploy a model to ``name``: ``kind`` "serverless" or "online"; it answers a last user
        message from ``answers`` (else :data:`ENDPOINT_DEFAULT_ANSWER`)."""
        endpoint = Endpoint(name, kind, dict(answers or {}), auth_mode, key=f"ep-key-{name}-{uuid.uuid4().hex}")
        self.endpoints[name] = endpoint
        return endpoint

    def http_client(self) -> Any:
        """An ``httpx2.Client`` answering serverless endpoints' chat API (the ``openai`` SDK's path)."""
        import httpx2

        return httpx2.Client(transport=httpx2.MockTransport(self._serverless_chat))

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
    def handle(self, request: requests.PreparedRequest) -> Answer:
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

    def _fault(self, fault: Fault) -> Answer:
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

    def _refuse(self, path: str, answer: Answer) -> Answer:
        body = answer[2]
        message = (
            body.decode(errors="replace")
            if isinstance(body, bytes)
            else str(body.get("message") or body.get("error", {}).get("message"))
        )
        self.rejections.append((path, message))
        return answer

    def _bearer_audience(self, rec: Recorded) -> str | None:
        auth = rec.headers.get("Authorization", "")
        return audience_of(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None

    def _route(self, rec: Recorded, host: str) -> Answer:
        if host.endswith(".blob.core.windows.net"):
            denied = self._storage_auth(rec, host)
            return self._refuse(rec.path, denied) if denied else self._blob(rec)
        if host.endswith(".inference.ml.azure.com"):
            return self._score(rec, host.split(".", 1)[0])
        audience = self._bearer_audience(rec)
        if host == "management.azure.com":
            if audience not in CONTRACT["audiences"]["arm"]:
                return self._refuse(rec.path, self._arm_unauthorized(rec, audience))
            return self._arm(rec)
        if audience not in CONTRACT["audiences"]["azureml"]:
            message = "The access token is invalid" if audience is None else f"Invalid token audience {audience!r}"
            if "/api/2.0/mlflow/" in rec.path:
                return self._refuse(rec.path, _mlflow_error(401, "UNAUTHENTICATED", message))
            return self._refuse(rec.path, _error(401, "AuthenticationFailed", message))
        return self._data_plane(rec)

    def _arm_unauthorized(self, rec: Recorded, audience: str | None) -> Answer:
        if audience is None:
            return _error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        allowed = ",".join(f"'{a}'" for a in CONTRACT["audiences"]["arm"])
        return _error(
            401,
            "InvalidAuthenticationTokenAudience",
            f"The access token has been obtained for wrong audience or resource '{audience}'. "
            f"It should exactly match with one of the allowed audiences {allowed}.",
        )

    def _storage_auth(self, rec: Recorded, host: str) -> Answer | None:
        """None when storage accepts the request's credential (a SAS or a bearer token)."""
        if "sig=" in rec.url:
            if SAS.split("sig=")[1] in rec.url:
                return None
            return _storage_error(403, "AuthenticationFailed", "Server failed to authenticate the request.")
        auth = rec.headers.get("Authorization", "")
        message = (
            "Server failed to authenticate the request. Please refer to the information in the www-authenticate header."
        )
        challenge = {
            "WWW-Authenticate": f"Bearer authorization_uri=https://login.microsoftonline.com/{TENANT}/oauth2/authorize "
            f"resource_id={STORAGE_AUDIENCE}"
        }
        if not auth.startswith("Bearer "):
            return _storage_error(401, "NoAuthenticationInformation", message, headers=challenge)
        audience = self._bearer_audience(rec)
        if audience in CONTRACT["audiences"]["storage"] or audience in (f"https://{host}", f"https://{host}/"):
            return None
        detail = "Audience validation failed. Audience did not match."
        return _storage_error(401, "InvalidAuthenticationInfo", message, detail, challenge)

    def _data_plane(self, rec: Recorded) -> Answer:
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
    def _arm(self, rec: Recorded) -> Answer:
        path = rec.path
        m = re.fullmatch(
            rf"/subscriptions/{SUB}/providers/Microsoft\.MachineLearningServices/locations/{LOCATION}/"
            r"(mfeOperationsStatus|mfeOperationResults)/([^/]+)",
            path,
        )
        if m:
            return self._operation(m.group(1), m.group(2))
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
        m = re.fullmatch(r"/(serverlessEndpoints|onlineEndpoints)/([^/]+)(/listKeys)?", rest)
        if m and rec.method in ("PUT", "DELETE") and not m.group(3):
            return self._endpoint_write(rec, m.group(1), m.group(2))
        if m:
            return self._endpoint_resource(rec, m.group(1), m.group(2), keys=bool(m.group(3)))
        m = re.fullmatch(r"/onlineEndpoints/([^/]+)/deployments/([^/]+)", rest)
        if m:
            return self._deployment_resource(rec, m.group(1), m.group(2))
        m = re.fullmatch(r"/onlineEndpoints/([^/]+)/deployments", rest)
        if m and rec.method == "GET":
            return self._online_deployments(m.group(1))
        return self._arm_assets(rec, rest)

    # -- endpoints (evaluation's chat) ---------------------------------------------------------
    def _endpoint_resource(self, rec: Recorded, collection: str, name: str, *, keys: bool) -> Answer:
        """``GET serverlessEndpoints/{name}`` / ``onlineEndpoints/{name}`` and their ``POST listKeys``,
        answered with the SDK's generated REST models (from the published spec), at the api-versions
        azure-ai-ml sends for each."""
        from azure.ai.ml._restclient.arm_ml_service import models as rest

        kind = "serverless" if collection == "serverlessEndpoints" else "online"
        expected = ENDPOINT_API_VERSIONS[kind]
        if rec.query.get("api-version") != expected:
            return self._refuse(rec.path, _error(400, "UserError", f"api-version {rec.query.get('api-version')}"))
        if (rec.method, keys) not in (("GET", False), ("POST", True)):
            return _error(405, "MethodNotAllowed", f"{rec.method} {rec.path}")
        endpoint = self._live(name)
        if endpoint is None or endpoint.kind != kind:
            label = "ServerlessEndpoint" if kind == "serverless" else "OnlineEndpoint"
            return _error(404, "UserError", f"{label} {name} not found in workspace {WS}.")
        if keys:
            if "key" not in endpoint.auth_mode.lower():
                return _error(400, "UserError", f"Endpoint {name} does not use key authentication.")
            return 200, {}, rest.EndpointAuthKeys(primary_key=endpoint.key, secondary_key=endpoint.key + "-2").as_dict()
        return 200, {}, self._endpoint_view(endpoint)

    def _endpoint_view(self, endpoint: Endpoint) -> dict[str, Any]:
        """An endpoint as ARM shows it, through the SDK's generated REST models."""
        from azure.ai.ml._restclient.arm_ml_service import models as rest

        name, kind = endpoint.name, endpoint.kind
        collection = "serverlessEndpoints" if kind == "serverless" else "onlineEndpoints"
        common: dict[str, Any] = {"id": f"{WS_PATH}/{collection}/{name}", "name": name, "location": LOCATION}
        if endpoint.tags:
            common["tags"] = dict(endpoint.tags)
        state = self._state(endpoint)
        if kind == "serverless":
            properties: Any = rest.ServerlessEndpointProperties(
                auth_mode=endpoint.auth_mode,
                inference_endpoint=rest.ServerlessInferenceEndpoint(
                    uri=f"https://{name}.{LOCATION}.models.ai.azure.com"
                ),
                model_settings=rest.ModelSettings(
                    model_id=endpoint.model or f"azureml://registries/azureml/models/{name}"
                ),
                provisioning_state=state,
                endpoint_state="Online" if state == "Succeeded" else "Offline",
            )
            body = rest.ServerlessEndpoint(properties=properties, **common).as_dict()
            body["type"] = "Microsoft.MachineLearningServices/workspaces/serverlessEndpoints"
        else:
            properties = rest.OnlineEndpointProperties(
                auth_mode=endpoint.auth_mode,
                scoring_uri=f"https://{name}.{LOCATION}.inference.ml.azure.com/score",
                provisioning_state=state,
                traffic={"blue": 100} if endpoint.traffic is None else dict(endpoint.traffic),
            )
            body = rest.OnlineEndpoint(properties=properties, **common).as_dict()
            body["type"] = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
        return body

    # -- endpoints written through ARM (deploy) ---------------------------------------------------
    def _live(self, name: str) -> Endpoint | None:
        """The endpoint ``name`` unless its deletion has finished (then it is gone)."""
        endpoint = self.endpoints.get(name)
        if endpoint is not None and endpoint.gone_at is not None and self.clock() >= endpoint.gone_at:
            del self.endpoints[name]
            return None
        return endpoint

    def _state(self, endpoint: Endpoint) -> str:
        if endpoint.gone_at is not None:
            return "Deleting"
        return endpoint.state if self.clock() < endpoint.ready_at else "Succeeded"

    def _async_headers(self, name: str, what: str, *, location: bool) -> dict[str, str]:
        """What ARM answers a long-running write with: where its status can be read."""
        op = uuid.uuid4().hex
        self.operations[op] = (name, what)
        base = f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/{LOCATION}"
        headers = {
            "Azure-AsyncOperation": f"{base}/mfeOperationsStatus/{op}?api-version=2024-01-01-preview",
            "x-ms-async-operation-timeout": "PT1H",
        }
        if location:
            headers |= {
                "Location": f"{base}/mfeOperationResults/{op}?api-version=2024-01-01-preview",
                "Retry-After": "10",
            }
        return headers

    def _operation(self, kind: str, op: str) -> Answer:
        """``GET mfeOperationsStatus/{id}`` (``{"status": ...}``) and ``mfeOperationResults/{id}``
        (202 while it runs, 200 when done), as ARM's async-operation pattern answers them."""
        if op not in self.operations:
            return _error(404, "NotFound", f"operation {op} not found")
        name, what = self.operations[op]
        endpoint = self._live(name)
        if what == "delete":
            done = endpoint is None
        elif endpoint is None:
            return 200, {}, {"status": "Failed", "error": {"code": "NotFound", "message": f"{name} is gone"}}
        else:
            deployment = endpoint.made.get(what.removeprefix("deployment:")) if what.startswith("deployment:") else None
            if deployment is not None and self.clock() >= deployment["ready_at"] and deployment["failure"]:
                return (
                    200,
                    {},
                    {"status": "Failed", "error": {"code": "DeploymentFailed", "message": deployment["failure"]}},
                )
            ready_at = deployment["ready_at"] if deployment is not None else endpoint.ready_at
            done = self.clock() >= ready_at
        if kind == "mfeOperationResults":
            return (200, {}, None) if done else (202, {"Retry-After": "10"}, None)
        return 200, {}, {"status": "Succeeded" if done else "InProgress", "name": op}

    def _endpoint_write(self, rec: Recorded, collection: str, name: str) -> Answer:
        """``PUT``/``DELETE`` of ``serverlessEndpoints/{name}`` or ``onlineEndpoints/{name}``."""
        from azure.ai.ml._restclient.arm_ml_service import models as rest

        kind = "serverless" if collection == "serverlessEndpoints" else "online"
        if rec.query.get("api-version") != ENDPOINT_API_VERSIONS[kind]:
            return self._refuse(rec.path, _error(400, "UserError", f"api-version {rec.query.get('api-version')}"))
        endpoint = self._live(name)
        if rec.method == "DELETE":
            if endpoint is None or endpoint.kind != kind:
                return 204, {}, None
            if endpoint.gone_at is None:
                endpoint.gone_at = self.clock() + self.delete_seconds
            return 202, self._async_headers(name, "delete", location=True), None
        try:
            check_rest_body(rec.body, rest.ServerlessEndpoint if kind == "serverless" else rest.OnlineEndpoint)
        except SchemaError as exc:
            return self._refuse(rec.path, _error(400, "UserError", str(exc), target=exc.path))
        props = rec.body["properties"]
        if endpoint is not None and (endpoint.kind != kind or endpoint.gone_at is not None):
            return _error(409, "Conflict", f"An endpoint named {name} already exists or is being deleted.")
        if kind == "serverless":
            model = props["modelSettings"]["modelId"]
            if endpoint is not None and endpoint.model != model:
                return _error(400, "UserError", "The model of a serverless endpoint cannot be changed.")
        if endpoint is not None:  # an update (of the traffic): ARM answers 200 and updates
            endpoint.tags = dict(rec.body.get("tags") or {})
            if kind == "online":
                endpoint.traffic = dict(props.get("traffic") or {})
            endpoint.state, endpoint.ready_at = "Updating", self.clock() + self.update_seconds
            return 200, self._async_headers(name, "update", location=False), self._endpoint_view(endpoint)
        endpoint = self.add_endpoint(name, kind, self.deploy_answers, auth_mode=props.get("authMode") or "Key")
        endpoint.tags = dict(rec.body.get("tags") or {})
        endpoint.state, endpoint.ready_at = "Creating", self.clock() + self.endpoint_seconds
        if kind == "serverless":
            endpoint.model = props["modelSettings"]["modelId"]
        else:
            endpoint.deployments, endpoint.traffic = (), dict(props.get("traffic") or {})
        return 201, self._async_headers(name, "create", location=False), self._endpoint_view(endpoint)

    def _deployment_resource(self, rec: Recorded, name: str, deployment: str) -> Answer:
        """``GET``/``PUT``/``DELETE`` of ``onlineEndpoints/{name}/deployments/{deployment}``."""
        from azure.ai.ml._restclient.arm_ml_service import models as rest

        if rec.query.get("api-version") != DEPLOYMENT_API_VERSION:
            return self._refuse(rec.path, _error(400, "UserError", f"api-version {rec.query.get('api-version')}"))
        endpoint = self._live(name)
        if endpoint is None or endpoint.kind != "online":
            return _error(404, "UserError", f"OnlineEndpoint {name} not found in workspace {WS}.")
        made = endpoint.made.get(deployment)
        if rec.method == "GET":
            if made is None:
                return _error(404, "UserError", f"Deployment {deployment} not found under endpoint {name}.")
            return 200, {}, self._deployment_view(name, deployment, made)
        if rec.method == "DELETE":
            if made is None:
                return 204, {}, None
            del endpoint.made[deployment]
            endpoint.deployments = tuple(d for d in endpoint.deployments if d != deployment)
            return 202, self._async_headers(name, "delete", location=True), None
        if rec.method != "PUT":
            return _error(405, "MethodNotAllowed", rec.method)
        try:
            check_rest_body(rec.body, rest.OnlineDeployment)
        except SchemaError as exc:
            return self._refuse(rec.path, _error(400, "UserError", str(exc), target=exc.path))
        if self._state(endpoint) != "Succeeded":
            return _error(409, "Conflict", f"Endpoint {name} is in provisioning state {self._state(endpoint)}.")
        props = rec.body["properties"]
        if made is not None:
            return 200, {}, self._deployment_view(name, deployment, made)
        made = endpoint.made[deployment] = {
            "model": props.get("model"),
            "instance_type": props.get("instanceType"),
            "capacity": (rec.body.get("sku") or {}).get("capacity", 1),
            "ready_at": self.clock() + self.deployment_seconds,
            "failure": self.deployment_failure,
            "tags": dict(rec.body.get("tags") or {}),
        }
        self.deployment_failure = None
        endpoint.deployments = (*endpoint.deployments, deployment)
        headers = self._async_headers(name, f"deployment:{deployment}", location=False)
        return 201, headers, self._deployment_view(name, deployment, made)

    def _deployment_view(self, name: str, deployment: str, made: Mapping[str, Any]) -> dict[str, Any]:
        from azure.ai.ml._restclient.arm_ml_service import models as rest

        state = "Creating"
        if self.clock() >= made["ready_at"]:
            state = "Failed" if made["failure"] else "Succeeded"
        return rest.OnlineDeployment(
            id=f"{WS_PATH}/onlineEndpoints/{name}/deployments/{deployment}",
            name=deployment,
            location=LOCATION,
            tags=dict(made["tags"]),
            properties=rest.ManagedOnlineDeployment(
                model=made["model"],
                instance_type=made["instance_type"],
                provisioning_state=state,
                scale_settings=rest.DefaultScaleSettings(),
            ),
            sku=rest.Sku(name="Default", capacity=made["capacity"]),
        ).as_dict()

    def _online_deployments(self, name: str) -> Answer:
        from azure.ai.ml._restclient.arm_ml_service import models as rest

        endpoint = self.endpoints.get(name)
        if endpoint is None or endpoint.kind != "online":
            return _error(404, "UserError", f"OnlineEndpoint {name} not found in workspace {WS}.")
        value = [
            rest.OnlineDeployment(
                id=f"{WS_PATH}/onlineEndpoints/{name}/deployments/{d}",
                name=d,
                location=LOCATION,
                properties=rest.ManagedOnlineDeployment(
                    model=f"azureml:{name}:1",
                    instance_type="Standard_NC24ads_A100_v4",
                    provisioning_state="Succeeded",
                    scale_settings=rest.DefaultScaleSettings(),
                ),
                sku=rest.Sku(name="Default", capacity=1),
            ).as_dict()
            for d in endpoint.deployments
        ]
        return 200, {}, {"value": value}

    def _score(self, rec: Recorded, name: str) -> Answer:
        """``POST <scoring uri>`` of a managed online endpoint: the model catalog's chat-completion
        scoring schema in, ``{"output": ...}`` out; the endpoint's key as a bearer token."""
        endpoint = self.endpoints.get(name)
        if endpoint is None or endpoint.kind != "online" or rec.method != "POST" or rec.path != "/score":
            return _error(404, "NotFound", f"no route for {rec.method} {rec.path}")
        if rec.headers.get("Authorization") != f"Bearer {endpoint.key}":
            return self._refuse(rec.path, (401, {}, {"message": "Key based authentication failed."}))
        target = rec.headers.get("azureml-model-deployment")
        if target is not None and target not in endpoint.deployments:
            return 404, {}, {"message": f"Deployment {target} not found for endpoint {name}"}
        body = rec.body if isinstance(rec.body, dict) else {}
        data = body.get("input_data")
        problem = None
        if set(body) != {"input_data"} or not isinstance(data, dict) or set(data) - {"input_string", "parameters"}:
            problem = "the body must be {'input_data': {'input_string': [...], 'parameters': {...}}}"
        elif not isinstance(data.get("input_string"), list) or not all(
            isinstance(m, dict) and set(m) == {"role", "content"} for m in data["input_string"]
        ):
            problem = "input_string must be a list of {'role', 'content'} messages"
        elif set(data.get("parameters") or {}) - SCORING_PARAMETERS:
            problem = f"unknown parameters {sorted(set(data['parameters']) - SCORING_PARAMETERS)}"
        elif (data.get("parameters") or {}).get("do_sample") and not (data.get("parameters") or {}).get("temperature"):
            problem = "`temperature` (=0) has to be a strictly positive float when sampling"
        if problem is not None:
            return self._refuse(rec.path, (400, {}, {"message": problem}))
        return 200, {}, {"output": endpoint.answer(data["input_string"])}

    def _serverless_chat(self, request: Any) -> Any:
        """``POST https://<name>.<region>.models.ai.azure.com/v1/chat/completions`` (OpenAI's shape,
        held to the ``openai`` SDK's own request and answer types; the endpoint key as bearer)."""
        import httpx2
        from openai.types.chat import ChatCompletion
        from openai.types.chat.completion_create_params import CompletionCreateParamsBase

        name = request.url.host.split(".", 1)[0]
        endpoint = self.endpoints.get(name)
        if endpoint is None or endpoint.kind != "serverless" or request.url.path != "/v1/chat/completions":
            return httpx2.Response(404, json={"error": {"code": "NotFound", "message": "Resource not found"}})
        if self.chat_faults:
            fault = self.chat_faults.pop(0)
            if fault == "drop":
                raise httpx2.ReadError("connection dropped", request=request)
            headers = {"Retry-After": "3"} if fault == 429 else {}
            return httpx2.Response(int(fault), headers=headers, json={"error": {"code": str(fault), "message": "x"}})
        if request.headers.get("authorization") != f"Bearer {endpoint.key}":
            self.rejections.append((request.url.path, "wrong or no key"))
            return httpx2.Response(401, json={"error": {"code": "Unauthorized", "message": "Access denied"}})
        body = json.loads(request.content)
        self.chat_requests.append(body)
        unknown = sorted(set(body) - set(CompletionCreateParamsBase.__annotations__))
        if unknown or "messages" not in body:
            self.rejections.append((request.url.path, f"unknown fields {unknown}"))
            return httpx2.Response(400, json={"error": {"code": "BadRequest", "message": f"unknown {unknown}"}})
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(self.clock()),
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": endpoint.answer(body["messages"])},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        }
        ChatCompletion.model_validate(payload)
        return httpx2.Response(200, json=payload)

    def _arm_assets(self, rec: Recorded, rest: str) -> Answer:
        if rest == "/datastores":
            return 200, {}, {"value": [self._datastore()]}
        if rest == "/datastores/workspaceblobstore":
            return 200, {}, self._datastore()
        if rest == "/datastores/workspaceblobstore/listSecrets":
            if self.datastore_credentials == "None":
                return _error(400, "UserError", "Datastore workspaceblobstore has no secrets (identity-based)")
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
                "credentials": {"credentialsType": self.datastore_credentials},
                "tags": {},
                "properties": {},
            },
        }

    def _data(self, rec: Recorded, name: str, version: str) -> Answer:
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

    def _workspace_model(self, name: str, version: str | None) -> Answer:
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

    def _marketplace(self, rec: Recorded, name: str) -> Answer:
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

    def _job(self, rec: Recorded, name: str, *, cancel: bool) -> Answer:
        if cancel:
            if name not in self.jobs:
                return _error(404, "UserError", f"Job {name} not found")
            if self._status(name) in ("Completed", "Failed", "Canceled"):
                return _error(400, "UserError", f"Job {name} is already in a terminal state")
            self.jobs[name].setdefault("cancel_at", self.clock())
            location = f"https://management.azure.com{WS_PATH}/operationResults/{uuid.uuid4()}"
            return 202, {"Location": location, "Retry-After": "10"}, None
        if rec.method == "PUT":
            return self._create_job(rec, name)
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

    def _create_job(self, rec: Recorded, name: str) -> Answer:
        if name in self.jobs:
            return _error(400, "UserError", f"A job with name {name} already exists and cannot be updated")
        try:
            check_job_body(rec.body)
        except SchemaError as exc:
            return self._refuse(rec.path, _error(400, "UserError", f"Invalid job definition: {exc}", exc.path))
        self.jobs[name] = {"body": rec.body, "created": self.clock(), "loss0": self.loss_start}
        outputs = rec.body["properties"].get("outputs") or {}
        registered = outputs.get("registered_model", {}).get("assetName")
        if registered:
            self.workspace_models.setdefault(registered, [])
        return 201, {}, self._job_view(name)

    def created_jobs(self) -> list[Recorded]:
        """Every PUT of a job that reached the service."""
        return [r for r in self.calls("PUT", r"/jobs/[^/]+$")]

    # -- run history --------------------------------------------------------------------------
    def _run(self, name: str) -> Answer:
        if name not in self.jobs:
            return _error(404, "UserError", f"Run {name} not found")
        status = self._status(name)
        started, ended = self._times(name)
        run: dict[str, Any] = {
            "runId": name,
            "status": status,
            "experimentId": self.experiment_id(name),
            "createdUtc": _iso(self.jobs[name]["created"]),
            "startTimeUtc": _iso(started) if started else None,
            "endTimeUtc": _iso(ended) if ended else None,
        }
        if status == "Failed":
            run["error"] = {"error": dict(self.failure), "time": _iso(ended or self.clock())}
        if started is not None and self.run_warnings:
            run["warnings"] = [{"source": "finetune", "message": m} for m in self.run_warnings]
        return 200, {}, run

    # -- MLflow -------------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        """The MLflow experiment of a job: one per experiment name."""
        experiment = str(self.jobs[name]["body"]["properties"].get("experimentName") or "Default")
        return "exp-" + uuid.uuid5(uuid.NAMESPACE_URL, experiment).hex[:12]

    def logged(self, name: str) -> dict[str, list[tuple[int, float, float]]]:
        """What the job's fine-tune run logged so far: metric key -> [(step, value, time)], one step
        per 10 s of running, as Hugging Face's Trainer logs through MLflow."""
        started, ended = self._times(name)
        if started is None:
            return {}
        now = min(self.clock(), ended) if ended else self.clock()
        steps = min(self.metric_steps, int((now - started) // 10))
        out: dict[str, list[tuple[int, float, float]]] = {}
        for k in range(1, steps + 1):
            at = started + 10 * k
            loss = round(self.jobs[name]["loss0"] * 0.8**k, 6)
            logged = {
                "loss": loss,
                "learning_rate": round(2e-4 * (1 - (k - 1) / self.metric_steps), 10),
                "epoch": k / 2,
                "grad_norm": round(1.5 / k, 6),
            }
            if k % self.eval_every == 0:
                logged |= {"eval_loss": round(loss + 0.15, 6), "eval_runtime": 3.5, "epoch": k / 2}
            for key, value in logged.items():
                out.setdefault(key, []).append((k, value, at))
        if steps == self.metric_steps:
            # Trainer.train() ends with a summary logged at the last step: train_loss is the run's mean.
            mean = round(sum(v for _, v, _ in out["loss"]) / steps, 6)
            for key, value in (("train_loss", mean), ("train_runtime", 10.0 * steps), ("total_flos", 1.25e12)):
                out.setdefault(key, []).append((steps, value, started + 10 * steps))
        return out

    def mlflow_runs(self) -> Iterator[dict[str, Any]]:
        """Every MLflow run in the workspace: each job's root run and, once it runs, its steps' runs."""
        for name in self.jobs:
            started, ended = self._times(name)
            status = {"Completed": "FINISHED", "Failed": "FAILED", "Canceled": "KILLED"}.get(
                self._status(name), "RUNNING"
            )
            yield self._mlflow_run(name, name, {}, status, self.jobs[name]["created"], ended)
            if started is None:
                continue
            yield self._mlflow_run(f"{name}_preprocess", name, {}, "FINISHED", started, started + 5)
            trained = started + 10 * self.metric_steps + 5
            yield self._mlflow_run(f"{name}_finetune", name, self.logged(name), status, started + 5, ended)
            if self.clock() >= trained:
                yield self._mlflow_run(f"{name}_register", name, {}, status, trained, ended)

    def _mlflow_run(
        self,
        run_id: str,
        root: str,
        history: Mapping[str, list[tuple[int, float, float]]],
        status: str,
        start: float,
        end: float | None,
    ) -> dict[str, Any]:
        tags = {"mlflow.rootRunId": root, "mlflow.runName": run_id}
        if run_id != root:
            tags["mlflow.parentRunId"] = root
        latest = [
            {"key": key, "value": points[-1][1], "step": points[-1][0], "timestamp": int(points[-1][2] * 1000)}
            for key, points in history.items()
        ]
        return {
            "info": {
                "run_id": run_id,
                "run_uuid": run_id,
                "run_name": run_id,
                "experiment_id": self.experiment_id(root),
                "status": status,
                "start_time": int(start * 1000),
                **({"end_time": int(end * 1000)} if end is not None else {}),
                "lifecycle_stage": "active",
            },
            "data": {"metrics": latest, "tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }

    def _mlflow(self, rec: Recorded, op: str) -> Answer:
        if op == "runs/get" and rec.method == "GET":
            run_id = rec.query.get("run_id", "")
            run = next((r for r in self.mlflow_runs() if r["info"]["run_id"] == run_id), None)
            if run is None:
                return _mlflow_error(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found.")
            return 200, {}, {"run": run}
        if op == "runs/search" and rec.method == "POST":
            return self._search(rec)
        if op == "metrics/get-history" and rec.method == "GET":
            return self._history(rec)
        return _mlflow_error(404, "ENDPOINT_NOT_FOUND", f"No API endpoint found for {rec.method} {op}")

    def _search(self, rec: Recorded) -> Answer:
        body = rec.body if isinstance(rec.body, dict) else {}
        try:
            clauses = parse_filter(str(body.get("filter") or ""))
            start = _offset(body.get("page_token"))
            limit = int(body.get("max_results") or 1000)
            if not 0 < limit <= 50000:
                raise ValueError(f"max_results {limit} is out of range (1..50000)")
            experiments = {str(e) for e in body.get("experiment_ids") or []}
            found = [r for r in self.mlflow_runs() if r["info"]["experiment_id"] in experiments]
            found = [r for r in found if all(_holds(c, _field(r, c)) for c in clauses)]
        except ValueError as exc:
            return self._refuse(rec.path, _mlflow_error(400, "INVALID_PARAMETER_VALUE", str(exc)))
        found.sort(key=lambda r: (-r["info"]["start_time"], r["info"]["run_id"]))
        size = min(limit, self.search_page_size or limit)
        page: dict[str, Any] = {"runs": found[start : start + size]} if found[start : start + size] else {}
        if start + size < len(found):
            page["next_page_token"] = _token(start + size)
        return 200, {}, page

    def _history(self, rec: Recorded) -> Answer:
        run_id, key = rec.query.get("run_id", ""), rec.query.get("metric_key", "")
        if not key:
            return self._refuse(rec.path, _mlflow_error(400, "INVALID_PARAMETER_VALUE", "metric_key is required"))
        run = next((r for r in self.mlflow_runs() if r["info"]["run_id"] == run_id), None)
        if run is None:
            return _mlflow_error(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found.")
        points = self.logged(run_id.removesuffix("_finetune")).get(key, []) if run_id.endswith("_finetune") else []
        try:
            start = _offset(rec.query.get("page_token"))
        except ValueError as exc:
            return self._refuse(rec.path, _mlflow_error(400, "INVALID_PARAMETER_VALUE", str(exc)))
        limit = int(rec.query.get("max_results") or 25000)
        size = min(limit, self.history_page_size or limit)
        chunk = [
            {"key": key, "value": value, "step": step, "timestamp": int(at * 1000)}
            for step, value, at in points[start : start + size]
        ]
        # Proto3 JSON leaves out an empty list: a metric the run never logged is an empty answer.
        page: dict[str, Any] = {"metrics": chunk} if chunk else {}
        if start + size < len(points):
            page["next_page_token"] = _token(start + size)
        return 200, {}, page

    # -- registry and blobs -------------------------------------------------------------------
    def _registry_model(self, rec: Recorded) -> Answer:
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

    def _blob(self, rec: Recorded) -> Answer:
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
        return _storage_error(404, "BlobNotFound", "The specified blob does not exist.")

    def uploads(self) -> list[Recorded]:
        return [r for r in self.requests if ".blob.core.windows.net" in r.url and r.method == "PUT"]


def _field(run: Mapping[str, Any], clause: Clause) -> Any:
    """The value a filter clause compares in ``run`` (None: the run has no such field)."""
    data, info = run["data"], run["info"]
    if clause.entity == "tags":
        return next((t["value"] for t in data.get("tags", []) if t["key"] == clause.key), None)
    if clause.entity == "params":
        return next((p["value"] for p in data.get("params", []) if p["key"] == clause.key), None)
    if clause.entity == "metrics":
        return next((m["value"] for m in data.get("metrics", []) if m["key"] == clause.key), None)
    names = {"run_id": "run_id", "run_name": "run_name", "status": "status", "start_time": "start_time"}
    if clause.key not in names:
        raise ValueError(f"unsupported attribute {clause.key!r}")
    return info.get(names[clause.key])
