"""An in-memory, stateful fake of OpenAI's and Azure OpenAI's fine-tuning HTTP API.

The real ``openai`` SDK talks to it through an ``httpx2`` transport (no socket is opened).  It serves
files, uploads (parts streamed to disk), fine-tuning jobs, events (newest first, paged), checkpoints
and result files.  It is held to the services' published descriptions, one per *surface*:

* ``openai``: OpenAI's OpenAPI description (``openai-finetuning-openapi.json`` beside this file, a
  copy of the project's ``../shared/openai-finetuning-openapi.json``; a test catches drift).
* ``v1``: Azure's ``{endpoint}/openai/v1/`` surface (api-version ``v1``, ``preview`` or none), which
  uses OpenAI's shapes with the components Azure's v1 description changes
  (``azure_openai_finetuning_schemas.json`` beside this file, transcribed from
  Azure/azure-rest-api-specs with the file and commit it was read from).
* a dated Azure api-version (``2024-10-21``, ``2025-04-01-preview``): that version's Swagger
  definitions, from the same file.

Every request is checked against its operation on the request's surface: the body (JSON or
multipart form) against the published schema *closed* (:func:`closed`: an object schema that
lists its properties accepts no other, which the descriptions leave open), the query against the
operation's parameters.  A field the surface does not define is refused with a 400 as the service
words it (OpenAI: ``Unrecognized request argument supplied: x`` for a top-level argument,
``Unknown parameter: 'a.b'.`` with ``code: unknown_parameter`` for a nested one); an operation the
surface does not have is a 404.  Every answer is built from what the service holds, rendered for
the request's surface (statuses, levels and fields as that surface names them; no nulls on the
Swagger 2.0 surfaces; request-only knobs such as Azure's ``trainingType`` never echoed), and checked
against the surface's closed schema.  Mismatches, and schema errors that are not unknown fields,
are recorded in ``violations`` (a test checks it is empty) rather than raised, because the SDK
would turn an exception into a retried connection error.

The Azure flavour also differs where the service does in practice: ``api-key`` or Entra ID bearer
auth; the job list's ``metadata`` filter ignored; files imported asynchronously (``pending`` ->
``processed``); result files base64-encoded; a ``trainingType`` required on create (its absence
answered, as the service does, with a misleading "base model does not support fine-tuning").

A job advances one step of its script each time it is read (``GET /fine_tuning/jobs/{id}``), so a
test controls time by polling.  Faults are injected per request (``inject``) or on every call
(``chaos``): an HTTP status (with headers such as Retry-After), a read timeout or a dropped
connection, either before the server acts or after it acted with the answer lost.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import itertools
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

import httpx2
import jsonschema

HERE = Path(__file__).resolve().parent
#: OpenAI's published description (the fine-tuning, files and uploads subset), vendored so that a
#: fresh clone has it; ``test_openai_schemas`` checks it still equals ../shared's copy.
SCHEMA_PATH = HERE / "openai-finetuning-openapi.json"
AZURE_SCHEMAS: dict[str, Any] = json.loads((HERE / "azure_openai_finetuning_schemas.json").read_text())
AZURE_V1_PREFIX = "/openai/v1"

Flavour = Literal["openai", "azure"]
FaultKind = Literal["status", "status_after", "timeout", "timeout_after", "drop", "drop_after", "connect"]

# -- the published schemas ------------------------------------------------------------------------

_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMA_ONE = ("items", "not", "additionalProperties")


def closed(schema: Any) -> Any:
    """A copy of ``schema`` in which every object schema that lists ``properties`` accepts no other
    (``additionalProperties: false`` unless it says otherwise).

    The published descriptions leave objects open, so a misspelt field would pass them; the services
    refuse it.  Sub-schemas are followed where JSON Schema nests them (properties, items, the
    combinators, additionalProperties); ``$ref`` targets are closed where they are defined.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {name: closed(sub) for name, sub in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            out[key] = [closed(sub) for sub in schema[key]]
    for key in _SUBSCHEMA_ONE:
        if isinstance(schema.get(key), dict):
            out[key] = closed(schema[key])
    return out


@dataclass(frozen=True)
class Operation:
    """What one operation of a surface takes and answers (schema names are the surface's own)."""

    query: frozenset[str] = frozenset()
    deep_query: frozenset[str] = frozenset()  # deepObject parameters, sent as name[key]
    body: str | None = None  # JSON body schema
    form: str | None = None  # multipart/form-data schema
    body_extras: frozenset[str] = frozenset()  # top-level fields the service takes in practice
    answer: str | None = None
    status: int = 200


class Surface:
    """One published description: named schemas (open and closed validators) and operations."""

    def __init__(self, name: str, root: dict[str, Any], prefix: str, operations: dict[str, Operation]) -> None:
        self.name, self.operations = name, operations
        self._root, self._prefix = root, prefix
        self._closed_root: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._validators: dict[tuple[str, bool], Any] = {}

    def _strict_root(self) -> dict[str, Any]:
        if self._closed_root is None:
            self._closed_root = {
                section: (
                    {name: closed(s) for name, s in schemas.items()}
                    if section == "definitions"
                    else {"schemas": {name: closed(s) for name, s in schemas["schemas"].items()}}
                )
                for section, schemas in self._root.items()
            }
        return self._closed_root

    def validator(self, schema: str, *, strict: bool) -> Any:
        with self._lock:
            found = self._validators.get((schema, strict))
            if found is None:
                root = self._strict_root() if strict else self._root
                # OpenAPI 3.0 / Swagger 2.0 schemas use draft-4 semantics (boolean exclusiveMinimum).
                found = jsonschema.Draft4Validator({"$ref": f"{self._prefix}{schema}", **root})
                self._validators[(schema, strict)] = found
            return found

    def errors(self, schema: str, instance: Any, *, strict: bool) -> list[Any]:
        found = self.validator(schema, strict=strict).iter_errors(instance)
        return sorted(found, key=lambda e: [str(part) for part in e.path])


def _ref_name(schema: Any) -> str | None:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    return str(ref).rsplit("/", 1)[-1] if ref else None


def _openai_operations(doc: dict[str, Any]) -> dict[str, Operation]:
    """The operations of OpenAI's description: query parameters, body and answer schemas."""
    operations: dict[str, Operation] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            params = [p for p in op.get("parameters", []) if p.get("in") == "query"]
            content = op.get("requestBody", {}).get("content", {})
            answer = op.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
            operations[f"{method.upper()} {path}"] = Operation(
                query=frozenset(p["name"] for p in params if p.get("style") != "deepObject"),
                deep_query=frozenset(p["name"] for p in params if p.get("style") == "deepObject"),
                body=_ref_name(content.get("application/json", {}).get("schema")),
                form=_ref_name(content.get("multipart/form-data", {}).get("schema")),
                answer=_ref_name(answer.get("schema")),
            )
    return operations


_CREATE = "POST /fine_tuning/jobs"


@functools.cache
def surface(name: str) -> Surface:
    """The published description of surface ``name``: ``openai``, ``v1`` or a dated api-version."""
    doc = json.loads(SCHEMA_PATH.read_text())
    operations = _openai_operations(doc)
    extras = frozenset(AZURE_SCHEMAS["in_practice"]["create_extra"])
    if name == "openai":
        return Surface(name, {"components": doc["components"]}, "#/components/schemas/", operations)
    if name == "v1":
        v1 = AZURE_SCHEMAS["v1"]
        # This version of the description lists no /uploads paths: they answer 404 there.
        operations = {key: op for key, op in operations.items() if not key.split()[1].startswith("/uploads")}
        components = copy.deepcopy(doc["components"])
        components["schemas"].update(v1["components"])
        for key, given in v1["operations"].items():
            operations[key] = replace(operations[key], query=frozenset(given["query"]), deep_query=frozenset())
        operations[_CREATE] = replace(operations[_CREATE], body_extras=extras)
        return Surface(name, {"components": components}, "#/components/schemas/", operations)
    version = AZURE_SCHEMAS["versions"][name]
    definitions = dict(version["definitions"])
    dated: dict[str, Operation] = {}
    for key, given in version["operations"].items():
        form = None
        if "form" in given:  # formData parameters, as an object schema of their names
            form = "form" + re.sub(r"\W+", "_", key)  # a name a JSON pointer can hold
            names = given["form"]
            definitions[form] = {
                "type": "object",
                "properties": {n: {} for n in names},
                "required": [n for n in names if "." not in n],
            }
        dated[key] = Operation(
            query=frozenset(given.get("query", ())),
            body=given.get("body"),
            form=form,
            body_extras=extras if key == _CREATE else frozenset(),
            answer=given.get("answer"),
            status=given.get("status", 200),
        )
    return Surface(name, {"definitions": definitions}, "#/definitions/", dated)


def _where(path: Iterable[Any]) -> str:
    """A JSON path as OpenAI words it: ``method.supervised.hyperparameters``, ``input[4].content``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_in(error: Any) -> list[str] | None:
    """The unknown fields an error of the closed schema names (None: the error is something else).

    Under ``oneOf``/``anyOf`` the branch whose only complaints are unknown fields is the one meant.
    """
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties") or {})
        return [_where([*error.absolute_path, name]) for name in error.instance if name not in known]
    if error.validator in ("oneOf", "anyOf") and error.context:
        branches: dict[Any, list[Any]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        for subs in branches.values():
            found = [_unknown_in(sub) for sub in subs]
            if all(f is not None for f in found):
                return [name for f in found for name in (f or [])]
    return None


def unknown_fields(surface_name: str, schema: str, instance: Any) -> list[str]:
    """Fields of ``instance`` that ``schema`` of the surface does not define, as dotted paths."""
    found: set[str] = set()
    for error in surface(surface_name).errors(schema, instance, strict=True):
        found.update(_unknown_in(error) or [])
    return sorted(found)


def _describe(error: Any) -> str:
    return f"{_where(error.absolute_path) or '(root)'}: {error.message}"


def problems(surface_name: str, schema: str, instance: Any) -> list[str]:
    """Everything ``instance`` breaks of ``schema`` on a surface, unknown fields included."""
    lax = [_describe(e) for e in surface(surface_name).errors(schema, instance, strict=False)]
    return lax + [f"{name}: not defined" for name in unknown_fields(surface_name, schema, instance)]


def answer_problems(surface_name: str, schema: str, answer: Any) -> list[str]:
    """What an answer breaks of the surface's closed schema (an answer carries only defined fields)."""
    return [_describe(e) for e in surface(surface_name).errors(schema, answer, strict=True)]


# -- what the fake holds, and how each surface shows it -------------------------------------------

#: The status names of the Swagger surfaces for OpenAI's (the rest are spelt alike).
_DATED_STATUS = {"validating_files": "created", "queued": "pending"}
#: OpenAI's published status enum predates the pause/resume endpoints that answer with these.
_PAUSE_STATUSES = ("paused", "pausing", "resuming")
_NUMBER = (int, float)


def _without_nulls(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Swagger 2.0 has no null: a value the service does not hold is left out."""
    return {k: v for k, v in obj.items() if v is not None}


def _copy(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy, as JSON (an answer shares nothing with what the service holds)."""
    copied: dict[str, Any] = json.loads(json.dumps(obj))
    return copied


def _numbers(hyper: Mapping[str, Any] | None) -> dict[str, Any]:
    """Hyperparameters the Swagger surfaces can show (numbers only: they have no "auto")."""
    return {k: v for k, v in (hyper or {}).items() if isinstance(v, _NUMBER) and not isinstance(v, bool)}


@dataclass
class Fault:
    kind: FaultKind = "status"
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclass
class _Rule:
    method: str
    path: re.Pattern[str]
    faults: list[Fault]


@dataclass
class Request:
    method: str
    path: str  # without the flavour prefix (/v1 or /openai)
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    fields: dict[str, str] = field(default_factory=dict)
    url: str = ""
    surface: str = "openai"  # "openai", Azure's "v1", or the dated api-version


@dataclass
class _Job:
    obj: dict[str, Any]  # what the service holds (OpenAI's names); each surface renders it
    script: list[Callable[[_Job], None]]
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    position: int = 0
    paused: bool = False


class _Reply(Exception):
    def __init__(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.status, self.payload, self.headers = status, payload, headers or {}


CHAOS_KINDS: tuple[Fault, ...] = (
    Fault("timeout"),
    Fault("status", 503),
    Fault("timeout_after"),
    Fault("status", 429, headers={"retry-after": "1"}),
    Fault("drop"),
    Fault("status", 500),
    Fault("drop_after"),
    Fault("status_after", 502),
    Fault("connect"),
    Fault("status", 429, headers={"retry-after-ms": "250"}),
)


class FakeOpenAIService:
    """See the module docstring.

    Args:
        root: a folder for uploaded content (parts and files live on disk, not in memory).
        flavour: ``openai`` or ``azure``.
        api_key: the key the service accepts; a wrong one gets a 401 that echoes it, as OpenAI does.
        steps: training steps in the default script.
    """

    def __init__(
        self,
        root: Path,
        flavour: Flavour = "openai",
        *,
        api_key: str = "sk-fake-key-0123456789abcdefgh",
        steps: int = 6,
    ) -> None:
        self.root = root
        self.flavour = flavour
        self.api_key = api_key
        self.entra_token: str | None = None
        self.steps = steps
        self.now = 1_700_000_000
        self.files: dict[str, dict[str, Any]] = {}
        self.file_paths: dict[str, Path] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.upload_parts: dict[str, dict[str, Path]] = {}
        self.jobs: dict[str, _Job] = {}
        #: Azure: deployment name -> model (a base or fine-tuned model); chat is served by deployment.
        self.deployments: dict[str, str] = {}
        self.log: list[Request] = []
        self.violations: list[str] = []
        #: (surface, operation, schema) of every request body and answer checked against a schema.
        self.checked: list[tuple[str, str, str]] = []
        #: (surface, operation, payload) of every JSON answer given.
        self.answers: list[tuple[str, str, Any]] = []
        self.unavailable_models: set[str] = set()
        #: Fine-tuned models deleted on the service: ``GET /models/{id}`` answers 404.
        self.deleted_models: set[str] = set()
        self.scenario = "succeed"  # the script of jobs that carry no metadata["scenario"]
        self.refuse_fine_tuning = False
        self.quota_exhausted = False
        self._rules: list[_Rule] = []
        self._chaos: tuple[Fault, ...] = ()
        self._chaos_last_failed: dict[tuple[Any, ...], bool] = {}
        self._chaos_counter = itertools.count()
        self.faults_fired = 0
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- wiring --------------------------------------------------------------------------------
    def client(self) -> httpx2.Client:
        """An ``httpx2.Client`` whose requests this fake answers (pass it as the SDK's http_client)."""
        return httpx2.Client(transport=_Transport(self))

    def inject(self, method: str, path: str, *faults: Fault) -> None:
        """Answer the next matching requests with ``faults``, one each, in order."""
        self._rules.append(_Rule(method.upper(), re.compile(path), list(faults)))

    def chaos(self, kinds: tuple[Fault, ...] = CHAOS_KINDS) -> None:
        """Make every call fail once before it succeeds, cycling through ``kinds``."""
        self._chaos = kinds

    def requests(self, method: str | None = None, path: str | None = None) -> list[Request]:
        return [
            r
            for r in self.log
            if (method is None or r.method == method) and (path is None or re.fullmatch(path, r.path))
        ]

    # -- helpers -------------------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        # Deliberately not sortable: clients must not order by id.
        n = next(self._ids)
        return f"{prefix}{hashlib.sha1(f'{prefix}{n}'.encode()).hexdigest()[:20]}"

    def _temp(self, prefix: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root, prefix=prefix)
        os.close(fd)
        return Path(name)

    def _tick(self) -> int:
        self.now += 1
        return self.now

    def _error(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> _Reply:
        if self.flavour == "azure":
            return _Reply(status, {"error": {"code": code or str(status), "message": message}}, headers)
        return _Reply(status, {"error": {"message": message, "type": kind, "param": param, "code": code}}, headers)

    # -- dispatch ------------------------------------------------------------------------------
    def handle(self, request: httpx2.Request) -> httpx2.Response:
        raw_path = request.url.path
        prefix = "/v1"
        if self.flavour == "azure":
            prefix = AZURE_V1_PREFIX if raw_path.startswith(AZURE_V1_PREFIX + "/") else "/openai"
        path = raw_path[len(prefix) :] if raw_path.startswith(prefix) else raw_path
        query = dict(
            parse_qsl(
                request.url.query.decode() if isinstance(request.url.query, bytes) else str(request.url.query),
                keep_blank_values=True,
            )
        )
        headers = {k.lower(): v for k, v in request.headers.items()}
        method = request.method.upper()
        fault = self._fault_for(method, path, query, headers)
        if fault is not None and fault.kind in ("timeout", "drop", "connect"):
            request.read()
            raise _transport_error(fault.kind, request)
        injected = None
        if fault is not None and fault.kind.startswith("status"):
            body = fault.body or {
                "error": {"message": f"injected {fault.status}", "type": "server_error", "param": None, "code": None}
            }
            injected = httpx2.Response(fault.status, json=body, headers=fault.headers)
            if fault.kind == "status":  # refused before acting
                request.read()
                return injected
        try:
            with self._lock:
                response = self._serve(request, method, path, query, headers)
        except _Reply as reply:
            response = httpx2.Response(reply.status, json=reply.payload, headers=reply.headers)
        if injected is not None:  # status_after: the server acted, then answered with an error
            return injected
        if fault is not None:  # *_after: the server acted, the answer is lost
            raise _transport_error(fault.kind.removesuffix("_after"), request)
        return response

    def _fault_for(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.faults and rule.method == method and rule.path.fullmatch(path):
                    self.faults_fired += 1
                    return rule.faults.pop(0)
            if not self._chaos:
                return None
            key = (method, path, tuple(sorted(query.items())), threading.get_ident(), headers.get("content-length"))
            if self._chaos_last_failed.get(key):
                self._chaos_last_failed[key] = False
                return None
            self._chaos_last_failed[key] = True
            self.faults_fired += 1
            return self._chaos[next(self._chaos_counter) % len(self._chaos)]

    def _authorised(self, headers: dict[str, str]) -> None:
        bearer = headers.get("authorization", "")
        token = bearer[7:] if bearer.lower().startswith("bearer ") else None
        if self.flavour == "azure":
            if headers.get("api-key") == self.api_key or (self.entra_token and token == self.entra_token):
                return
            raise self._error(401, "Access denied due to invalid subscription key or wrong API endpoint.", code="401")
        if token == self.api_key:
            return
        raise self._error(
            401,
            f"Incorrect API key provided: {token}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    def _serve(
        self, request: httpx2.Request, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> httpx2.Response:
        multipart = headers.get("content-type", "").startswith("multipart/form-data")
        req = Request(method, path, query, headers, url=str(request.url))
        if multipart:
            req.fields, uploaded = self._read_multipart(request, headers["content-type"])
        else:
            request.read()
            uploaded = None
            if request.content:
                req.json = json.loads(request.content)
        self.log.append(req)
        if self.flavour == "azure":
            req.surface = self._surface(request.url.path, query)
        self._authorised(headers)
        chat = _CHAT_PATH.fullmatch(path)
        if method == "POST" and chat is not None:
            return httpx2.Response(200, json=self._chat(req, chat.group(1)))
        if method == "GET" and self.flavour == "openai" and (model := _MODEL_PATH.fullmatch(path)) is not None:
            return httpx2.Response(200, json=self._model(model.group(1)))
        route = next(((r, m) for r in _ROUTES if r.method == method and (m := r.pattern.fullmatch(path))), None)
        if route is None:
            raise self._error(404, f"Invalid URL ({method} {path})")
        handler, match = route
        published = surface(req.surface)
        key = f"{method} {handler.template}"
        operation = published.operations.get(key)
        if operation is None:  # the surface does not have this operation
            if self.flavour == "azure":
                raise _Reply(404, {"error": {"code": "404", "message": "Resource not found"}})
            raise self._error(404, f"Invalid URL ({method} {path})")
        self._check_request(published, key, operation, req, uploaded)
        payload = handler.serve(self, req, uploaded, *match.groups())
        if isinstance(payload, bytes):
            return httpx2.Response(200, content=payload, headers={"content-type": "application/octet-stream"})
        if operation.answer is not None:
            self._check_answer(published, key, operation.answer, payload)
        return httpx2.Response(operation.status, json=payload)

    def _surface(self, raw_path: str, query: dict[str, str]) -> str:
        """The Azure surface a request addresses; 404 (as the service answers) for none."""
        version = query.get("api-version")
        if raw_path.startswith(AZURE_V1_PREFIX + "/"):
            if version in (None, "v1", "preview"):
                return "v1"
        elif version in AZURE_SCHEMAS["versions"]:
            return str(version)
        raise _Reply(404, {"error": {"code": "404", "message": "Resource not found"}})

    # -- chat completions (evaluation) ------------------------------------------------------------
    #: What a base model answers to everything (a fine-tuned one answers from its training file).
    BASE_ANSWER = "I do not know."

    def _chat(self, req: Request, deployment: str | None) -> dict[str, Any]:
        """``POST /chat/completions`` (Azure's dated surfaces: ``/deployments/{name}/chat/completions``).

        The shared description holds the fine-tuning API only, so this operation is held to the
        ``openai`` SDK's own types instead: the body's fields to ``CompletionCreateParamsBase`` (an
        unknown one refused as OpenAI words it), the answer to ``ChatCompletion``. A fine-tuned model
        this fake made answers with the assistant reply its training file gives for the same last
        user message (else :attr:`BASE_ANSWER`); the base models of its jobs answer
        :attr:`BASE_ANSWER`; any other model is unknown (404). On Azure ``model`` names a deployment
        (:attr:`deployments`).
        """
        from openai.types.chat import ChatCompletion
        from openai.types.chat.completion_create_params import CompletionCreateParamsBase

        body = req.json or {}
        allowed = set(CompletionCreateParamsBase.__annotations__)
        for name in sorted(set(body) - allowed):
            raise self._error(400, f"Unrecognized request argument supplied: {name}")
        for name in ("messages", "model"):
            if name not in body:
                self.violations.append(f"POST /chat/completions: required field {name!r} missing")
        model = str(body.get("model") or deployment or "")
        if self.flavour == "azure":
            name = deployment or model
            if name not in self.deployments:
                raise self._error(
                    404,
                    "The API deployment for this resource does not exist. If you created the deployment within the "
                    "last 5 minutes, please wait a moment and try again.",
                    code="DeploymentNotFound",
                )
            model = self.deployments[name]
        answer = self._answer(model, body.get("messages") or [])
        limit = body.get("max_completion_tokens")
        words = answer.split(" ")
        finish = "length" if isinstance(limit, int) and len(words) > limit else "stop"
        payload = {
            "id": self._id("chatcmpl-"),
            "object": "chat.completion",
            "created": self._tick(),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": " ".join(words[:limit] if limit else words),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": min(len(words), limit or len(words)),
                "total_tokens": 10,
            },
        }
        ChatCompletion.model_validate(payload)  # the SDK's own answer type
        missing = {n for n, f in ChatCompletion.model_fields.items() if f.is_required()} - set(payload)
        if missing:
            self.violations.append(f"POST /chat/completions answer lacks {sorted(missing)}")
        return payload

    def _model(self, model: str) -> dict[str, Any]:
        """``GET /models/{model}``, held to the ``openai`` SDK's ``Model`` type (the shared description
        has the fine-tuning API only): a succeeded job's fine-tuned model and its jobs' base models
        exist, anything else (a deleted model included, :attr:`deleted_models`) is OpenAI's 404."""
        from openai.types import Model

        created = next(
            (int(j.obj.get("finished_at") or 0) for j in self.jobs.values() if j.obj.get("fine_tuned_model") == model),
            None,
        )
        if created is None and any(j.obj.get("model") == model for j in self.jobs.values()):
            created = 0
        if created is None or model in self.deleted_models:
            raise self._error(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
        payload = {"id": model, "object": "model", "created": created, "owned_by": "user-fake" if created else "system"}
        Model.model_validate(payload)
        return payload

    def _answer(self, model: str, messages: list[dict[str, Any]]) -> str:
        question = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        for job in self.jobs.values():
            if job.obj.get("fine_tuned_model") == model:
                return self._memorised(job.obj["training_file"]).get(question, self.BASE_ANSWER)
        if any(job.obj.get("model") == model for job in self.jobs.values()):
            return self.BASE_ANSWER
        raise self._error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    def _memorised(self, file_id: str) -> dict[str, str]:
        found: dict[str, str] = {}
        path = self.file_paths.get(file_id)
        for line in path.read_text(encoding="utf-8").splitlines() if path else []:
            messages = json.loads(line).get("messages") or []
            users = [m for m in messages if m.get("role") == "user"]
            replies = [m for m in messages if m.get("role") == "assistant"]
            if users and replies:
                found.setdefault(str(users[-1]["content"]), str(replies[-1]["content"]))
        return found

    # -- holding requests and answers to the published descriptions ------------------------------
    def _check_request(
        self, published: Surface, key: str, operation: Operation, req: Request, uploaded: Path | None
    ) -> None:
        """Query parameters (recorded), then the body or form: unknown fields refused, other breaches
        recorded."""
        where = f"{published.name} {key}"
        for name in sorted(req.query):
            deep = re.fullmatch(r"(\w+)\[.+\]", name)
            if name == "api-version" and self.flavour == "azure":
                continue
            if name not in operation.query and not (deep and deep.group(1) in operation.deep_query):
                self.violations.append(f"{where}: query parameter {name!r} is not defined")
        schema = operation.body or operation.form
        if schema is None:
            return
        if operation.body is not None:
            instance = req.json
            if isinstance(instance, dict) and operation.body_extras:
                instance = {k: v for k, v in instance.items() if k not in operation.body_extras}
        else:
            instance = {k: v for k, v in req.fields.items() if not k.startswith("__")}
            if uploaded is not None:
                instance[req.fields.get("__field__", "file")] = "<binary>"
        self.checked.append((published.name, key, schema))
        unknown = unknown_fields(published.name, schema, instance)
        self.violations.extend(f"{where}: {_describe(e)}" for e in published.errors(schema, instance, strict=False))
        if unknown:
            self.violations.append(f"{where}: {', '.join(unknown)} not defined by {schema}")
            raise self._unknown_fields(unknown)

    def _unknown_fields(self, names: list[str]) -> _Reply:
        """A 400 as OpenAI words it: top-level arguments (the older wording, param and code null) first,
        else the first nested parameter (``code: unknown_parameter``).  Azure: its error shape, with
        the published ``invalidPayload`` code."""
        top = [n for n in names if "." not in n and "[" not in n]
        if top:
            noun = "argument" if len(top) == 1 else "arguments"
            message, param, code = f"Unrecognized request {noun} supplied: {', '.join(top)}", None, None
        else:
            message, param, code = f"Unknown parameter: '{names[0]}'.", names[0], "unknown_parameter"
        if self.flavour == "azure":
            code = "invalidPayload"
        return self._error(400, message, param=param, code=code)

    def _check_answer(self, published: Surface, key: str, schema: str, payload: Any) -> None:
        checkable = payload
        if published.name in ("openai", "v1") and schema in ("FineTuningJob", "ListPaginatedFineTuningJobsResponse"):
            checkable = _published_status(payload)
        self.checked.append((published.name, f"{key} answer", schema))
        self.answers.append((published.name, key, json.loads(json.dumps(payload))))
        self.violations.extend(
            f"{published.name} {key} answer: {p}" for p in answer_problems(published.name, schema, checkable)
        )

    def _read_multipart(self, request: httpx2.Request, content_type: str) -> tuple[dict[str, str], Path | None]:
        """Parse a multipart body as it streams: text fields in memory, the file field to disk."""
        reader = _MultipartReader(content_type, self._temp, self.violations)
        chunks: Iterator[bytes] = iter(request.stream)  # type: ignore[call-overload]
        for chunk in chunks:
            reader.feed(chunk)
            if reader.finished:
                break
        return reader.fields, reader.file_path

    # -- rendering: what the service holds, as each surface shows it -----------------------------
    @staticmethod
    def _dated(req: Request) -> bool:
        return req.surface not in ("openai", "v1")

    def _file_view(self, req: Request, obj: Mapping[str, Any]) -> dict[str, Any]:
        view = dict(obj)
        return _without_nulls(view) if self._dated(req) else view

    def _job_view(self, req: Request, job: _Job) -> dict[str, Any]:
        held = job.obj
        if not self._dated(req):
            status = held["status"]
            view = {
                "object": "fine_tuning.job",
                "id": held["id"],
                "model": held["model"],
                "created_at": held["created_at"],
                "finished_at": held["finished_at"],
                "fine_tuned_model": held["fine_tuned_model"],
                "organization_id": "org-fake",
                "result_files": list(held["result_files"]),
                "status": {"pausing": "paused", "resuming": "running"}.get(status, status),
                "validation_file": held["validation_file"],
                "training_file": held["training_file"],
                "hyperparameters": dict(held["hyperparameters"]),
                "trained_tokens": held["trained_tokens"],
                "error": held["error"],
                "seed": held["seed"],
                "estimated_finish": held["estimated_finish"],
                "integrations": held["integrations"] or ([] if req.surface == "openai" else None),
                "metadata": held["metadata"],
                "method": held["method"],
            }
            if req.surface == "v1":  # Azure's v1 job names the suffix it was created with
                view["user_provided_suffix"] = held["suffix"]
            return _copy(view)
        fields = set(AZURE_SCHEMAS["versions"][req.surface]["definitions"]["FineTuningJob"]["properties"])
        method = held["method"]
        kind = method["type"]
        view = {
            "object": "fine_tuning.job",
            "id": held["id"],
            "model": held["model"],
            "created_at": held["created_at"],
            "status": _DATED_STATUS.get(held["status"], held["status"]),
            "fine_tuned_model": held["fine_tuned_model"],
            "training_file": held["training_file"],
            "validation_file": held["validation_file"],
            "result_files": list(held["result_files"]),
            "finished_at": held["finished_at"],
            "trained_tokens": held["trained_tokens"],
            "error": held["error"],
            "estimated_finish": held["estimated_finish"],
            "hyperparameters": _numbers(held["hyperparameters"]),
            "suffix": held["suffix"],
            "seed": held["seed"],
            "integrations": held["integrations"],
            # The Swagger method subtypes: supervised carries only its type, DPO its hyperparameters.
            "method": {"type": kind}
            if kind != "dpo"
            else {
                "type": "dpo",
                "dpo": {"hyperparameters": _numbers((method.get("dpo") or {}).get("hyperparameters"))},
            },
        }
        return _copy({k: v for k, v in _without_nulls(view).items() if k in fields})

    def _event_view(self, req: Request, event: Mapping[str, Any]) -> dict[str, Any]:
        view = dict(event)
        if self._dated(req):  # LogLevel info/warning/error; no nulls
            return _without_nulls(view)
        view["level"] = {"warning": "warn"}.get(view["level"], view["level"])
        if view["data"] is None and req.surface == "openai":
            view["data"] = {}  # Azure's v1 leaves it null (its schema does not type it)
        return view

    # -- files -----------------------------------------------------------------------------------
    def _new_file(self, filename: str, path: Path, purpose: str) -> dict[str, Any]:
        file_id = self._id("file-")
        status = "pending" if self.flavour == "azure" and purpose == "fine-tune" else "processed"
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": path.stat().st_size,
            "created_at": self._tick(),
            "filename": filename,
            "purpose": purpose,
            "status": status,
        }
        self.files[file_id] = obj
        self.file_paths[file_id] = path
        return obj

    def _file(self, file_id: str) -> dict[str, Any]:
        if file_id not in self.files:
            raise self._error(404, f"No such File object: {file_id}", param="id")
        return self.files[file_id]

    def create_file(self, req: Request, uploaded: Path | None) -> Any:
        purpose = req.fields.get("purpose")
        if uploaded is None or not purpose:
            raise self._error(400, "file and purpose are required")
        obj = self._new_file(req.fields.get("__filename__") or "upload.jsonl", uploaded, purpose)
        return self._file_view(req, obj)

    def retrieve_file(self, req: Request, uploaded: Path | None, file_id: str) -> Any:
        obj = self._file(file_id)
        answer = self._file_view(req, obj)
        if obj["status"] == "pending":  # Azure imports asynchronously: processed on the next read
            obj["status"] = "processed"
        return answer

    def list_files(self, req: Request, uploaded: Path | None) -> Any:
        items = [f for f in self.files.values() if not req.query.get("purpose") or f["purpose"] == req.query["purpose"]]
        items.sort(key=lambda f: f["created_at"], reverse=req.query.get("order", "desc") == "desc")
        limit = int(req.query.get("limit", 10000))
        data = [self._file_view(req, f) for f in items[:limit]]
        if self._dated(req):  # FileList: no paging
            return {"object": "list", "data": data}
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else "",
            "last_id": data[-1]["id"] if data else "",
            "has_more": len(items) > limit,
        }

    def delete_file(self, req: Request, uploaded: Path | None, file_id: str) -> Any:
        self._file(file_id)
        del self.files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def file_content(self, req: Request, uploaded: Path | None, file_id: str) -> Any:
        self._file(file_id)
        return self.file_paths[file_id].read_bytes()

    # -- uploads ---------------------------------------------------------------------------------
    def _upload_view(self, req: Request, upload: Mapping[str, Any]) -> dict[str, Any]:
        view = dict(upload)
        if view.get("file") is not None:
            view["file"] = self._file_view(req, view["file"])
        return _without_nulls(view) if self._dated(req) else json.loads(json.dumps(view))

    def create_upload(self, req: Request, uploaded: Path | None) -> Any:
        upload_id = self._id("upload_")
        now = self._tick()
        obj = {
            "id": upload_id,
            "object": "upload",
            "bytes": req.json["bytes"],
            "created_at": now,
            "filename": req.json["filename"],
            "purpose": req.json["purpose"],
            "status": "pending",
            "expires_at": now + 3600,
        }
        self.uploads[upload_id] = obj
        self.upload_parts[upload_id] = {}
        return self._upload_view(req, obj)

    def _upload(self, upload_id: str) -> dict[str, Any]:
        if upload_id not in self.uploads:
            raise self._error(404, f"No such Upload: {upload_id}")
        return self.uploads[upload_id]

    def add_part(self, req: Request, uploaded: Path | None, upload_id: str) -> Any:
        upload = self._upload(upload_id)
        if uploaded is None:
            raise self._error(400, "data is required")
        if upload["status"] != "pending":
            raise self._error(400, f"Upload {upload_id} is {upload['status']}")
        part_id = self._id("part_")
        self.upload_parts[upload_id][part_id] = uploaded
        return {"id": part_id, "object": "upload.part", "created_at": self._tick(), "upload_id": upload_id}

    def complete_upload(self, req: Request, uploaded: Path | None, upload_id: str) -> Any:
        upload = self._upload(upload_id)
        if upload["status"] != "pending":
            raise self._error(400, f"Upload {upload_id} is already {upload['status']}.")
        parts = self.upload_parts[upload_id]
        missing = [p for p in req.json["part_ids"] if p not in parts]
        if missing:
            raise self._error(400, f"Unknown parts: {missing}")
        target = self._temp("file-")
        md5 = hashlib.md5()
        with target.open("wb") as out:
            for part_id in req.json["part_ids"]:
                with parts[part_id].open("rb") as src:
                    while block := src.read(1 << 16):
                        md5.update(block)
                        out.write(block)
        if target.stat().st_size != upload["bytes"]:
            raise self._error(400, f"Upload {upload_id}: got {target.stat().st_size} bytes, expected {upload['bytes']}")
        if req.json.get("md5") and req.json["md5"] != md5.hexdigest():
            raise self._error(400, "The md5 checksum does not match the uploaded bytes.")
        upload["status"] = "completed"
        upload["file"] = self._new_file(upload["filename"], target, upload["purpose"])
        return self._upload_view(req, upload)

    def cancel_upload(self, req: Request, uploaded: Path | None, upload_id: str) -> Any:
        upload = self._upload(upload_id)
        upload["status"] = "cancelled"
        return self._upload_view(req, upload)

    # -- jobs ------------------------------------------------------------------------------------
    def _job(self, job_id: str) -> _Job:
        if job_id not in self.jobs:
            raise self._error(
                404,
                f"Could not find fine-tune job: {job_id}",
                param="fine_tuning_job_id",
                code="fine_tune_not_found" if self.flavour == "openai" else "notFound",
            )
        return self.jobs[job_id]

    def _event(
        self, job: _Job, message: str, *, level: str = "info", kind: str = "message", data: dict[str, Any] | None = None
    ) -> None:
        """Record an event as the service holds it (level ``info``/``warning``/``error``; ``data``
        None for a message): each surface renders it (:meth:`_event_view`)."""
        job.events.append(
            {
                "object": "fine_tuning.job.event",
                "id": self._id("ftevent-"),
                "created_at": self._tick(),
                "level": level,
                "message": message,
                "type": kind,
                "data": data,
            }
        )

    def _check_training_type(self, body: dict[str, Any]) -> None:
        practice = AZURE_SCHEMAS["in_practice"]
        given = body.get("trainingType")
        if given is None:
            raise self._error(400, practice["missing_training_type_message"], code="invalidPayload")
        if str(given).lower() not in {t.lower() for t in practice["training_types"]}:
            raise self._error(400, f"Invalid trainingType {given!r}", code="invalidPayload")

    def _refusals(self, body: dict[str, Any]) -> None:
        """The account and model refusals the tests switch on."""
        if self.refuse_fine_tuning:
            raise self._error(
                403,
                "You are not allowed to create fine-tuning jobs: fine-tuning is not available to this organization.",
                kind="invalid_request_error",
            )
        if self.quota_exhausted:
            raise self._error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                code="insufficient_quota",
                kind="insufficient_quota",
            )
        if body["model"] in self.unavailable_models:
            raise self._error(
                400,
                f"Model {body['model']} is not available for fine-tuning or does not exist.",
                param="model",
                code="model_not_available",
            )
        for role in ("training_file", "validation_file"):
            file_id = body.get(role)
            if file_id is None:
                continue
            obj = self.files.get(file_id)
            if obj is None or obj["purpose"] != "fine-tune":
                raise self._error(400, f"invalid {role}: {file_id}", param=role, code="invalid_file")
            if obj["status"] == "pending":
                raise self._error(
                    400, f"{role} {file_id} is not ready: it is still being imported", param=role, code="fileNotReady"
                )

    @staticmethod
    def _held_method(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the method, the job's hyperparameters) as the service keeps them: what was asked, the
        rest "auto" (the service chooses).  Hyperparameters come from ``method.<type>`` or, where a
        surface has them there, the top-level ``hyperparameters``."""
        given = dict(body.get("method") or {"type": "supervised"})
        kind = given["type"]
        if kind == "reinforcement":
            return given, {}
        hyper = dict((given.get(kind) or {}).get("hyperparameters") or body.get("hyperparameters") or {})
        resolved = {name: hyper.get(name, "auto") for name in ("n_epochs", "batch_size", "learning_rate_multiplier")}
        extra = {k: v for k, v in hyper.items() if k not in resolved}
        return {"type": kind, kind: {"hyperparameters": {**resolved, **extra}}}, resolved

    def create_job(self, req: Request, uploaded: Path | None) -> Any:
        body = req.json
        if self.flavour == "azure":
            self._check_training_type(body)
        self._refusals(body)
        keeps_metadata = not self._dated(req)
        metadata = (body.get("metadata") or {}) if keeps_metadata else {}
        method, hyper = self._held_method(body)
        job_id = self._id("ftjob-")
        obj: dict[str, Any] = {
            "id": job_id,
            "model": body["model"],
            "created_at": self._tick(),
            "finished_at": None,
            "fine_tuned_model": None,
            "result_files": [],
            "status": "validating_files",
            "validation_file": body.get("validation_file"),
            "training_file": body["training_file"],
            "hyperparameters": hyper,
            "trained_tokens": None,
            "error": None,
            "seed": body.get("seed", 42),  # one is chosen when none is given
            "estimated_finish": None,
            "integrations": body.get("integrations"),
            "metadata": metadata or None,
            "method": method,
            "suffix": body.get("suffix"),
        }
        job = _Job(obj, self._script(metadata.get("scenario", self.scenario)))
        self.jobs[job_id] = job
        self._event(job, f"Validating training file: {body['training_file']}")
        return self._job_view(req, job)

    def _script(self, scenario: str) -> list[Callable[[_Job], None]]:
        steps = self.steps
        fail_at = steps // 2 if scenario == "fail" else None
        script: list[Callable[[_Job], None]] = []

        def status(name: str, message: str, level: str = "info") -> Callable[[_Job], None]:
            def apply(job: _Job) -> None:
                job.obj["status"] = name
                self._event(job, message, level=level)

            return apply

        script.append(
            status(
                "queued",
                "Files validated, moving job to queued state"
                if self.flavour == "openai"
                else "Job enqueued. Waiting for jobs ahead to complete.",
            )
        )
        script.append(status("running", "Fine-tuning job started"))
        script.append(
            lambda job: self._event(
                job, "Training file contains 2 examples over the token limit; they will be truncated.", level="warning"
            )
        )
        for step in range(1, steps + 1):
            if fail_at is not None and step > fail_at:
                break
            script.append(self._metric_step(step, steps))
            if step in (steps // 2, steps):
                script.append(self._checkpoint_step(step))
        if fail_at is not None:
            script.append(self._fail_step())
        else:
            script.append(self._succeed_step())
        return script

    @staticmethod
    def _loss(step: int) -> float:
        """The training loss at ``step``, at full precision (the result file's); events and
        checkpoints carry it rounded to 4 places, so a reader can tell which source a value came from."""
        return 2.0 * 0.8**step

    def _metric_step(self, step: int, total: int) -> Callable[[_Job], None]:
        def apply(job: _Job) -> None:
            data: dict[str, Any] = {
                "step": step,
                "train_loss": round(self._loss(step), 4),
                "train_mean_token_accuracy": round(0.5 + step / (4 * total), 4),
                "total_steps": total,
            }
            if step % 2 == 0:
                data["valid_loss"] = round(self._loss(step) * 1.1, 4)
                data["valid_mean_token_accuracy"] = round(0.45 + step / (4 * total), 4)
            message = f"Step {step}/{total}: training loss={data['train_loss']:.4f}"
            self._event(job, message, kind="metrics", data=data)

        return apply

    def _checkpoint_step(self, step: int) -> Callable[[_Job], None]:
        def apply(job: _Job) -> None:
            model = f"ft:{job.obj['model']}:org-fake::{job.obj['id'][-8:]}:ckpt-step-{step}"
            checkpoint = {
                "object": "fine_tuning.job.checkpoint",
                "id": self._id("ftckpt_"),
                "created_at": self._tick(),
                "fine_tuned_model_checkpoint": model,
                "fine_tuning_job_id": job.obj["id"],
                "step_number": step,
                "metrics": {
                    "step": float(step),
                    "train_loss": round(self._loss(step), 4),
                    "valid_loss": round(self._loss(step) * 1.1, 4),
                    "full_valid_loss": round(self._loss(step) * 1.05, 4),
                    "full_valid_mean_token_accuracy": 0.9,
                },
            }
            job.checkpoints.append(checkpoint)
            self._event(job, f"Checkpoint created at step {step}")

        return apply

    def _fail_step(self) -> Callable[[_Job], None]:
        def apply(job: _Job) -> None:
            job.obj["status"] = "failed"
            job.obj["finished_at"] = self._tick()
            job.obj["error"] = {
                "code": "invalid_training_file",
                "message": "The job failed due to an invalid training file: line 3 has no assistant message.",
                "param": "training_file",
            }
            self._event(job, "Job failed due to an invalid training file.", level="error")

        return apply

    def result_csv(self) -> str:
        """The result file a job of this service produces (before Azure's base64)."""
        rows = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,full_valid_loss"]
        for step in range(1, self.steps + 1):
            valid = f"{self._loss(step) * 1.1!r}" if step % 2 == 0 else ""
            full = f"{self._loss(step) * 1.05!r}" if step == self.steps else ""
            rows.append(
                f"{step},{self._loss(step)!r},{round(0.5 + step / (4 * self.steps), 4)},{valid},"
                f"{'0.8' if valid else ''},{full}"
            )
        return "\n".join(rows) + "\n"

    def _succeed_step(self) -> Callable[[_Job], None]:
        def apply(job: _Job) -> None:
            suffix = job.obj["suffix"] or ""
            if self.flavour == "azure":
                model = f"{job.obj['model']}.ft-{job.obj['id'][-12:]}" + (f"-{suffix}" if suffix else "")
            else:
                model = f"ft:{job.obj['model']}:org-fake:{suffix}:{job.obj['id'][-8:]}"
            content = self.result_csv().encode()
            if self.flavour == "azure":
                content = base64.b64encode(content)
            target = self._temp("result-")
            target.write_bytes(content)
            result = self._new_file("step_metrics.csv", target, "fine-tune-results")
            result["status"] = "processed"
            self._event(job, f"New fine-tuned model created: {model}")
            job.obj.update(
                {
                    "status": "succeeded",
                    "fine_tuned_model": model,
                    "finished_at": self._tick(),
                    "trained_tokens": 1234 * self.steps,
                    "result_files": [result["id"]],
                }
            )
            self._event(job, "The job has successfully completed")

        return apply

    def _advance(self, job: _Job) -> None:
        status = job.obj["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return
        if status == "pausing":
            job.obj["status"] = "paused"
            self._event(job, "Job paused")
            return
        if status == "resuming":
            job.obj["status"] = "running"
            self._event(job, "Job resumed")
            return
        if job.paused:
            return
        if job.position < len(job.script):
            job.script[job.position](job)
            job.position += 1

    def retrieve_job(self, req: Request, uploaded: Path | None, job_id: str) -> Any:
        job = self._job(job_id)
        self._advance(job)
        return self._job_view(req, job)

    def list_jobs(self, req: Request, uploaded: Path | None) -> Any:
        jobs = sorted(self.jobs.values(), key=lambda j: j.obj["created_at"], reverse=True)
        wanted = {m.group(1): v for k, v in req.query.items() if (m := re.fullmatch(r"metadata\[(.+)\]", k))}
        if wanted and self.flavour == "openai":  # Azure ignores the filter: the client must check
            jobs = [j for j in jobs if all((j.obj["metadata"] or {}).get(k) == v for k, v in wanted.items())]
        page, more = self._page(jobs, req)
        return {"object": "list", "data": [self._job_view(req, j) for j in page], "has_more": more}

    def _page(self, newest_first: list[Any], req: Request, default: int = 20) -> tuple[list[Any], bool]:
        start = 0
        after = req.query.get("after")
        if after:
            ids = [item.obj["id"] if isinstance(item, _Job) else item["id"] for item in newest_first]
            start = ids.index(after) + 1 if after in ids else len(ids)
        limit = int(req.query.get("limit", default))
        return newest_first[start : start + limit], start + limit < len(newest_first)

    def list_events(self, req: Request, uploaded: Path | None, job_id: str) -> Any:
        job = self._job(job_id)
        page, more = self._page(list(reversed(job.events)), req)
        return {"object": "list", "data": [self._event_view(req, e) for e in page], "has_more": more}

    def list_checkpoints(self, req: Request, uploaded: Path | None, job_id: str) -> Any:
        job = self._job(job_id)
        page, more = self._page(list(reversed(job.checkpoints)), req, default=10)
        body = {"object": "list", "data": json.loads(json.dumps(page)), "has_more": more}
        if not self._dated(req):  # the Swagger list has no first_id/last_id
            body.update({"first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None})
        return body

    def cancel_job(self, req: Request, uploaded: Path | None, job_id: str) -> Any:
        job = self._job(job_id)
        if job.obj["status"] in ("succeeded", "failed", "cancelled"):
            raise self._error(400, f"Job {job_id} has already {job.obj['status']}.")
        job.obj.update({"status": "cancelled", "finished_at": self._tick()})
        self._event(job, "Fine-tuning job cancelled")
        return self._job_view(req, job)

    def pause_job(self, req: Request, uploaded: Path | None, job_id: str) -> Any:
        job = self._job(job_id)
        if job.obj["status"] != "running":
            raise self._error(400, f"Job {job_id} cannot be paused while {job.obj['status']}.")
        job.paused = True
        if self._dated(req):  # the dated states: pausing, then paused
            job.obj["status"] = "pausing"
        else:
            job.obj["status"] = "paused"
            self._event(job, "Job paused")
        return self._job_view(req, job)

    def resume_job(self, req: Request, uploaded: Path | None, job_id: str) -> Any:
        job = self._job(job_id)
        if job.obj["status"] not in ("paused", "pausing"):
            raise self._error(400, f"Job {job_id} is not paused.")
        job.paused = False
        if self._dated(req):
            job.obj["status"] = "resuming"
        else:
            job.obj["status"] = "running"
            self._event(job, "Job resumed")
        return self._job_view(req, job)

    # -- views for tests -----------------------------------------------------------------------
    def job_events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.jobs[job_id].events)

    def content(self, file_id: str) -> bytes:
        return self.file_paths[file_id].read_bytes()


def _published_status(payload: Any) -> Any:
    """``payload`` with pause statuses read as ``running`` (OpenAI's published status enum predates
    the pause/resume endpoints that answer with them)."""
    if isinstance(payload, dict) and payload.get("object") == "list":
        return {**payload, "data": [_published_status(item) for item in payload["data"]]}
    if isinstance(payload, dict) and payload.get("status") in _PAUSE_STATUSES:
        return {**payload, "status": "running"}
    return payload


class _MultipartReader:
    """A streaming multipart/form-data parser: a state machine with one step per state.

    Each step consumes what it can from the buffer and says whether it made progress; when none
    can, the reader waits for the next chunk.  Text fields stay in memory, the file field goes to
    a temporary file as it arrives.
    """

    def __init__(self, content_type: str, temp: Callable[[str], Path], violations: list[str]) -> None:
        boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
        self.delimiter = b"\r\n--" + boundary
        self.temp, self.violations = temp, violations
        self.fields: dict[str, str] = {}
        self.file_path: Path | None = None
        self.finished = False
        self.buffer = b"\r\n"  # so the first delimiter looks like every other one
        self.state = "preamble"
        self.name = ""
        self.sink: Any = None
        self.value = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while not self.finished and self._STEPS[self.state](self):
            pass

    def _preamble(self) -> bool:
        at = self.buffer.find(self.delimiter + b"\r\n")
        if at < 0:
            return False
        self.buffer = self.buffer[at + len(self.delimiter) + 2 :]
        self.state = "headers"
        return True

    def _headers(self) -> bool:
        at = self.buffer.find(b"\r\n\r\n")
        if at < 0:
            return False
        head = self.buffer[:at].decode()
        self.buffer = self.buffer[at + 4 :]
        found = re.search(r'name="([^"]*)"', head)
        self.name = found.group(1) if found else ""
        if "filename=" in head:
            given = re.search(r'filename="([^"]*)"', head)
            self.fields["__filename__"] = given.group(1) if given else ""
            self.fields["__field__"] = self.name
            self.file_path = self.temp("part-")
            self.sink = self.file_path.open("wb")  # closed when its part ends
        else:
            self.sink, self.value = None, bytearray()
        self.state = "data"
        return True

    def _data(self) -> bool:
        """Emit everything but a possible partial delimiter at the end."""
        at = self.buffer.find(self.delimiter)
        if at < 0:
            keep = len(self.delimiter) + 4
            if len(self.buffer) > keep:
                self._emit(self.buffer[:-keep])
                self.buffer = self.buffer[-keep:]
            return False
        self._emit(self.buffer[:at])
        if self.sink is not None:
            self.sink.close()
        else:
            self.fields[self.name] = self.value.decode()
        self.buffer = self.buffer[at + len(self.delimiter) :]
        self.state = "after"
        return True

    def _after(self) -> bool:
        """After a delimiter: "--" ends the body, CRLF starts the next part."""
        if len(self.buffer) < 2:
            return False
        if self.buffer.startswith(b"--"):
            self.finished = True
        elif not self.buffer.startswith(b"\r\n"):
            self.violations.append("malformed multipart body")
            self.finished = True
        else:
            self.buffer = self.buffer[2:]
            self.state = "headers"
        return not self.finished

    def _emit(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.write(data)
        else:
            self.value.extend(data)

    _STEPS: ClassVar[dict[str, Callable[[_MultipartReader], bool]]] = {
        "preamble": _preamble,
        "headers": _headers,
        "data": _data,
        "after": _after,
    }


@dataclass(frozen=True)
class _Route:
    method: str
    template: str  # the path as OpenAI's description names it
    serve: Callable[..., Any]

    @property
    def pattern(self) -> re.Pattern[str]:
        return _PATTERNS[self.template]


_S = FakeOpenAIService
_ROUTES: list[_Route] = [
    _Route("POST", "/files", _S.create_file),
    _Route("GET", "/files", _S.list_files),
    _Route("GET", "/files/{file_id}", _S.retrieve_file),
    _Route("DELETE", "/files/{file_id}", _S.delete_file),
    _Route("GET", "/files/{file_id}/content", _S.file_content),
    _Route("POST", "/uploads", _S.create_upload),
    _Route("POST", "/uploads/{upload_id}/parts", _S.add_part),
    _Route("POST", "/uploads/{upload_id}/complete", _S.complete_upload),
    _Route("POST", "/uploads/{upload_id}/cancel", _S.cancel_upload),
    _Route("POST", "/fine_tuning/jobs", _S.create_job),
    _Route("GET", "/fine_tuning/jobs", _S.list_jobs),
    _Route("GET", "/fine_tuning/jobs/{fine_tuning_job_id}", _S.retrieve_job),
    _Route("GET", "/fine_tuning/jobs/{fine_tuning_job_id}/events", _S.list_events),
    _Route("GET", "/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", _S.list_checkpoints),
    _Route("POST", "/fine_tuning/jobs/{fine_tuning_job_id}/cancel", _S.cancel_job),
    _Route("POST", "/fine_tuning/jobs/{fine_tuning_job_id}/pause", _S.pause_job),
    _Route("POST", "/fine_tuning/jobs/{fine_tuning_job_id}/resume", _S.resume_job),
]
_CHAT_PATH = re.compile(r"(?:/deployments/([^/]+))?/chat/completions")
_MODEL_PATH = re.compile(r"/models/([^/]+)")
_PATTERNS: dict[str, re.Pattern[str]] = {
    route.template: re.compile(re.sub(r"\{[^}]+\}", "([^/]+)", route.template)) for route in _ROUTES
}


def _transport_error(kind: str, request: httpx2.Request) -> Exception:
    if kind == "timeout":
        return httpx2.ReadTimeout("injected read timeout", request=request)
    if kind == "connect":
        return httpx2.ConnectError("injected connection refused", request=request)
    return httpx2.RemoteProtocolError("Server disconnected without sending a response.", request=request)


class _Transport(httpx2.BaseTransport):
    """Hands each request to the fake without reading its body first (unlike MockTransport), so
    uploads stream and the test can measure the client's memory, not the fake's."""

    def __init__(self, service: FakeOpenAIService) -> None:
        self.service = service

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.service.handle(request)
