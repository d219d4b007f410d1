"""An in-memory, stateful fake of OpenAI's and Azure OpenAI's fine-tuning HTTP API.

The real ``openai`` SDK talks to it through an ``httpx2`` transport (no socket is opened).  It serves
files, uploads (parts streamed to disk), fine-tuning jobs, events (newest first, paged), checkpoints
and result files, and answers with the shapes of OpenAI's published OpenAPI description
(``../shared/openai-finetuning-openapi.json``): requests the adapter sends and the OpenAI-flavour
answers are validated against it, and every mismatch is recorded in ``violations`` (a test checks
it is empty) rather than raised, because the SDK would turn an exception into a retried
connection error.

The Azure flavour differs where the service does: ``api-key`` or Entra ID bearer auth; statuses
``created``/``pending`` and ``pausing``/``resuming``; event level ``warning``; nulls where OpenAI
has values; files imported asynchronously (``pending`` -> ``processed``); result files
base64-encoded; the ``metadata`` filter of the job list ignored; create answered with 201; a
``trainingType`` required (its absence answered, as the service does, with a misleading "base model
does not support fine-tuning").  Two surfaces, each held to Azure's published description of it:

* ``/openai/v1/...`` (api-version ``v1``/``preview`` or none): OpenAI's shapes, ``metadata`` kept.
* ``/openai/...?api-version=<dated>`` (``2024-10-21``, ``2025-04-01-preview``): the create body and
  the job hold only the fields of that version's ``FineTuningJobCreation`` / ``FineTuningJob``
  (``azure_openai_finetuning_schemas.json`` beside this file: no ``metadata``; ``suffix`` kept); a
  body field the version does not define, or a missing required one, is a violation.

A job advances one step of its script each time it is read (``GET /fine_tuning/jobs/{id}``), so a
test controls time by polling.  Faults are injected per request (``inject``) or on every call
(``chaos``): an HTTP status (with headers such as Retry-After), a read timeout or a dropped
connection, either before the server acts or after it acted with the answer lost.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

import httpx2
import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "shared" / "openai-finetuning-openapi.json"
if not SCHEMA_PATH.is_file():  # checkout layouts differ; fall back to the documented shared folder
    SCHEMA_PATH = Path("/work/shared/openai-finetuning-openapi.json")

AZURE_SCHEMAS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "azure_openai_finetuning_schemas.json").read_text()
)
AZURE_V1_PREFIX = "/openai/v1"

Flavour = Literal["openai", "azure"]
FaultKind = Literal["status", "status_after", "timeout", "timeout_after", "drop", "drop_after", "connect"]


class _Schemas:
    """Validators for ``#/components/schemas/<name>`` of the OpenAPI document, built once."""

    _lock = threading.Lock()
    _doc: dict[str, Any] | None = None
    _validators: ClassVar[dict[str, jsonschema.protocols.Validator]] = {}

    @classmethod
    def errors(cls, name: str, instance: Any) -> list[str]:
        with cls._lock:
            if cls._doc is None:
                cls._doc = json.loads(SCHEMA_PATH.read_text())
            validator = cls._validators.get(name)
            if validator is None:
                root = {"$ref": f"#/components/schemas/{name}", "components": cls._doc["components"]}
                # OpenAPI 3.0 schemas use draft-4 semantics (boolean exclusiveMinimum).
                validator = jsonschema.Draft4Validator(root)
                cls._validators[name] = validator
        return [f"{name}: {'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(instance)]


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
    surface: str = ""  # Azure: "v1", or the dated api-version


@dataclass
class _Job:
    obj: dict[str, Any]
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
        self.log: list[Request] = []
        self.violations: list[str] = []
        self.unavailable_models: set[str] = set()
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

    def _check(self, name: str, instance: Any) -> None:
        self.violations.extend(_Schemas.errors(name, instance))

    def _answer(self, name: str, instance: Any) -> Any:
        # Azure answers with nulls the OpenAI schema does not allow: check the OpenAI flavour only.
        if self.flavour == "openai":
            self._check(name, instance)
        return instance

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
        for pattern, verb, handler in _ROUTES:
            match = pattern.fullmatch(path)
            if match and verb == method:
                status, payload = handler(self, req, uploaded, *match.groups())
                if isinstance(payload, bytes):
                    binary = {"content-type": "application/octet-stream"}
                    return httpx2.Response(status, content=payload, headers=binary)
                return httpx2.Response(status, json=payload)
        raise self._error(404, f"Invalid URL ({method} {path})")

    def _surface(self, raw_path: str, query: dict[str, str]) -> str:
        """The Azure surface a request addresses; 404 (as the service answers) for none."""
        version = query.get("api-version")
        if raw_path.startswith(AZURE_V1_PREFIX + "/"):
            if version in (None, "v1", "preview"):
                return "v1"
        elif version in AZURE_SCHEMAS["versions"]:
            return str(version)
        raise _Reply(404, {"error": {"code": "404", "message": "Resource not found"}})

    def _dated(self, req: Request) -> dict[str, Any] | None:
        """The published schema fragments of the request's dated api-version (None: OpenAI, v1)."""
        fragments: dict[str, Any] | None = AZURE_SCHEMAS["versions"].get(req.surface)
        return fragments

    def _check_dated_body(self, fragments: dict[str, Any], body: dict[str, Any], version: str) -> None:
        creation = fragments["FineTuningJobCreation"]
        allowed = set(creation["properties"]) | set(AZURE_SCHEMAS["in_practice"]["create_extra"])
        self.violations.extend(
            f"{version} FineTuningJobCreation: {name!r} is not defined" for name in sorted(set(body) - allowed)
        )
        self.violations.extend(
            f"{version} FineTuningJobCreation: {name!r} is required"
            for name in creation["required"]
            if name not in body
        )

    def _dated_job(self, fragments: dict[str, Any], obj: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """The job as the dated version keeps it: its FineTuningJob's fields, suffix included."""
        shaped = {**obj, "organisation_id": None, "suffix": body.get("suffix")}
        kept = set(fragments["FineTuningJob"]["properties"]) | set(AZURE_SCHEMAS["in_practice"]["job_extra"])
        return {k: v for k, v in shaped.items() if k in kept}

    def _check_training_type(self, body: dict[str, Any]) -> None:
        practice = AZURE_SCHEMAS["in_practice"]
        given = body.get("trainingType")
        if given is None:
            raise self._error(400, practice["missing_training_type_message"], code="invalidPayload")
        if str(given).lower() not in {t.lower() for t in practice["training_types"]}:
            raise self._error(400, f"Invalid trainingType {given!r}", code="invalidPayload")

    def _read_multipart(self, request: httpx2.Request, content_type: str) -> tuple[dict[str, str], Path | None]:
        """Parse a multipart body as it streams: text fields in memory, the file field to disk."""
        reader = _MultipartReader(content_type, self._temp, self.violations)
        chunks: Iterator[bytes] = iter(request.stream)  # type: ignore[call-overload]
        for chunk in chunks:
            reader.feed(chunk)
            if reader.finished:
                break
        return reader.fields, reader.file_path

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

    def create_file(self, req: Request, uploaded: Path | None) -> tuple[int, Any]:
        if uploaded is None or req.fields.get("purpose") not in (
            "fine-tune",
            "batch",
            "assistants",
            "vision",
            "user_data",
            "evals",
        ):
            self.violations.append(f"POST /files without file or valid purpose: {req.fields}")
            raise self._error(400, "file and purpose are required")
        obj = self._new_file(req.fields.get("__filename__") or "upload.jsonl", uploaded, req.fields["purpose"])
        return 200, self._answer("OpenAIFile", dict(obj))

    def retrieve_file(self, req: Request, uploaded: Path | None, file_id: str) -> tuple[int, Any]:
        obj = self._file(file_id)
        answer = dict(obj)
        if obj["status"] == "pending":  # Azure imports asynchronously: processed on the next read
            obj["status"] = "processed"
        return 200, self._answer("OpenAIFile", answer)

    def list_files(self, req: Request, uploaded: Path | None) -> tuple[int, Any]:
        items = [f for f in self.files.values() if not req.query.get("purpose") or f["purpose"] == req.query["purpose"]]
        items.sort(key=lambda f: f["created_at"], reverse=req.query.get("order", "desc") == "desc")
        limit = int(req.query.get("limit", 10000))
        data = items[:limit]
        body = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else "",
            "last_id": data[-1]["id"] if data else "",
            "has_more": len(items) > limit,
        }
        return 200, self._answer("ListFilesResponse", body)

    def delete_file(self, req: Request, uploaded: Path | None, file_id: str) -> tuple[int, Any]:
        self._file(file_id)
        del self.files[file_id]
        return 200, {"id": file_id, "object": "file", "deleted": True}

    def file_content(self, req: Request, uploaded: Path | None, file_id: str) -> tuple[int, Any]:
        self._file(file_id)
        return 200, self.file_paths[file_id].read_bytes()

    # -- uploads ---------------------------------------------------------------------------------
    def create_upload(self, req: Request, uploaded: Path | None) -> tuple[int, Any]:
        self._check("CreateUploadRequest", req.json)
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
        return 200, self._answer("Upload", dict(obj))

    def _upload(self, upload_id: str) -> dict[str, Any]:
        if upload_id not in self.uploads:
            raise self._error(404, f"No such Upload: {upload_id}")
        return self.uploads[upload_id]

    def add_part(self, req: Request, uploaded: Path | None, upload_id: str) -> tuple[int, Any]:
        upload = self._upload(upload_id)
        if uploaded is None:
            self.violations.append("POST /uploads/{id}/parts without a data file field")
            raise self._error(400, "data is required")
        if upload["status"] != "pending":
            raise self._error(400, f"Upload {upload_id} is {upload['status']}")
        part_id = self._id("part_")
        self.upload_parts[upload_id][part_id] = uploaded
        body = {"id": part_id, "object": "upload.part", "created_at": self._tick(), "upload_id": upload_id}
        return 200, self._answer("UploadPart", body)

    def complete_upload(self, req: Request, uploaded: Path | None, upload_id: str) -> tuple[int, Any]:
        self._check("CompleteUploadRequest", req.json)
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
        return 200, self._answer("Upload", json.loads(json.dumps(upload)))

    def cancel_upload(self, req: Request, uploaded: Path | None, upload_id: str) -> tuple[int, Any]:
        upload = self._upload(upload_id)
        upload["status"] = "cancelled"
        return 200, self._answer("Upload", dict(upload))

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
        if data is None:
            data = {} if self.flavour == "openai" else None  # Azure sends null
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

    def _status(self, name: str) -> str:
        if self.flavour == "azure":
            return {"validating_files": "created", "queued": "pending"}.get(name, name)
        return name

    def create_job(self, req: Request, uploaded: Path | None) -> tuple[int, Any]:
        body = req.json
        dated = self._dated(req)
        if dated is not None:
            self._check_dated_body(dated, body, req.surface)
        else:
            self._check("CreateFineTuningJobRequest", body)
        if self.flavour == "azure":
            self._check_training_type(body)
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
        metadata = body.get("metadata") or {}
        method = body.get("method") or {"type": "supervised"}
        kind = method["type"]
        hyper = dict((method.get(kind) or {}).get("hyperparameters") or {})
        job_id = self._id("ftjob-")
        obj: dict[str, Any] = {
            "object": "fine_tuning.job",
            "id": job_id,
            "model": body["model"],
            "created_at": self._tick(),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": "org-fake",
            "result_files": [],
            "status": self._status("validating_files"),
            "validation_file": body.get("validation_file"),
            "training_file": body["training_file"],
            "hyperparameters": {
                name: hyper.get(name, "auto") for name in ("n_epochs", "batch_size", "learning_rate_multiplier")
            },
            "trained_tokens": None,
            "error": None,
            "seed": body.get("seed", 42),
            "estimated_finish": None,
            "integrations": body.get("integrations") or [],
            "metadata": metadata or None,
            "method": method,
        }
        if self.flavour == "azure":
            obj.update(
                {
                    "organization_id": None,
                    "seed": body.get("seed"),
                    "integrations": body.get("integrations"),
                    "hyperparameters": {
                        "n_epochs": hyper.get("n_epochs"),
                        "batch_size": hyper.get("batch_size"),
                        "learning_rate_multiplier": hyper.get("learning_rate_multiplier"),
                    },
                    "trainingType": body.get("trainingType", "standard"),
                    "user_provided_suffix": body.get("suffix"),
                }
            )
        if dated is not None:
            obj = self._dated_job(dated, obj, body)
            obj["hyperparameters"] = body.get("hyperparameters") or obj.get("hyperparameters")
        job = _Job(obj, self._script(metadata.get("scenario", self.scenario), body))
        self.jobs[job_id] = job
        self._event(job, f"Validating training file: {body['training_file']}")
        return (201 if self.flavour == "azure" else 200), self._answer("FineTuningJob", json.loads(json.dumps(obj)))

    def _script(self, scenario: str, body: dict[str, Any]) -> list[Callable[[_Job], None]]:
        steps = self.steps
        fail_at = steps // 2 if scenario == "fail" else None
        script: list[Callable[[_Job], None]] = []

        def status(name: str, message: str, level: str = "info") -> Callable[[_Job], None]:
            def apply(job: _Job) -> None:
                job.obj["status"] = self._status(name)
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
        warn = "warning" if self.flavour == "azure" else "warn"
        script.append(
            lambda job: self._event(
                job, "Training file contains 2 examples over the token limit; they will be truncated.", level=warn
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
            script.append(self._succeed_step(body))
        return script

    @staticmethod
    def _loss(step: int) -> float:
        return round(2.0 * 0.8**step, 4)

    def _metric_step(self, step: int, total: int) -> Callable[[_Job], None]:
        def apply(job: _Job) -> None:
            data: dict[str, Any] = {
                "step": step,
                "train_loss": self._loss(step),
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
                    "train_loss": self._loss(step),
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

    def _succeed_step(self, body: dict[str, Any]) -> Callable[[_Job], None]:
        def apply(job: _Job) -> None:
            suffix = body.get("suffix") or ""
            if self.flavour == "azure":
                model = f"{job.obj['model']}.ft-{job.obj['id'][-12:]}" + (f"-{suffix}" if suffix else "")
            else:
                model = f"ft:{job.obj['model']}:org-fake:{suffix}:{job.obj['id'][-8:]}"
            rows = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,full_valid_loss"]
            for step in range(1, self.steps + 1):
                valid = f"{round(self._loss(step) * 1.1, 4)}" if step % 2 == 0 else ""
                full = f"{round(self._loss(step) * 1.05, 4)}" if step == self.steps else ""
                rows.append(
                    f"{step},{self._loss(step)},{round(0.5 + step / (4 * self.steps), 4)},{valid},"
                    f"{'0.8' if valid else ''},{full}"
                )
            content = ("\n".join(rows) + "\n").encode()
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

    def _job_answer(self, job: _Job) -> Any:
        answer = json.loads(json.dumps(job.obj))
        if self.flavour == "openai" and answer["status"] in ("paused", "pausing", "resuming"):
            # The published status enum predates the pause/resume endpoints that return these.
            self._check("FineTuningJob", {**answer, "status": "running"})
            return answer
        return self._answer("FineTuningJob", answer)

    def retrieve_job(self, req: Request, uploaded: Path | None, job_id: str) -> tuple[int, Any]:
        job = self._job(job_id)
        self._advance(job)
        return 200, self._job_answer(job)

    def list_jobs(self, req: Request, uploaded: Path | None) -> tuple[int, Any]:
        jobs = sorted(self.jobs.values(), key=lambda j: j.obj["created_at"], reverse=True)
        dated = self._dated(req)
        if dated is not None:
            self.violations.extend(
                f"{req.surface} GET /fine_tuning/jobs: query parameter {name!r} is not defined"
                for name in sorted(set(req.query) - set(dated["list_query"]))
            )
        wanted = {m.group(1): v for k, v in req.query.items() if (m := re.fullmatch(r"metadata\[(.+)\]", k))}
        if wanted and self.flavour == "openai":  # Azure ignores the filter: the client must check
            jobs = [j for j in jobs if all((j.obj["metadata"] or {}).get(k) == v for k, v in wanted.items())]
        page, more = self._page([j.obj for j in jobs], req)
        body = {"object": "list", "data": json.loads(json.dumps(page)), "has_more": more}
        return 200, self._answer("ListPaginatedFineTuningJobsResponse", body)

    def _page(self, newest_first: list[dict[str, Any]], req: Request, default: int = 20) -> tuple[list[Any], bool]:
        start = 0
        after = req.query.get("after")
        if after:
            ids = [item["id"] for item in newest_first]
            start = ids.index(after) + 1 if after in ids else len(ids)
        limit = int(req.query.get("limit", default))
        return newest_first[start : start + limit], start + limit < len(newest_first)

    def list_events(self, req: Request, uploaded: Path | None, job_id: str) -> tuple[int, Any]:
        job = self._job(job_id)
        page, more = self._page(list(reversed(job.events)), req)
        body = {"object": "list", "data": json.loads(json.dumps(page)), "has_more": more}
        return 200, self._answer("ListFineTuningJobEventsResponse", body)

    def list_checkpoints(self, req: Request, uploaded: Path | None, job_id: str) -> tuple[int, Any]:
        job = self._job(job_id)
        page, more = self._page(list(reversed(job.checkpoints)), req, default=10)
        body = {
            "object": "list",
            "data": json.loads(json.dumps(page)),
            "has_more": more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
        return 200, self._answer("ListFineTuningJobCheckpointsResponse", body)

    def cancel_job(self, req: Request, uploaded: Path | None, job_id: str) -> tuple[int, Any]:
        job = self._job(job_id)
        if job.obj["status"] in ("succeeded", "failed", "cancelled"):
            raise self._error(400, f"Job {job_id} has already {job.obj['status']}.")
        job.obj.update({"status": "cancelled", "finished_at": self._tick()})
        self._event(job, "Fine-tuning job cancelled")
        return 200, self._job_answer(job)

    def pause_job(self, req: Request, uploaded: Path | None, job_id: str) -> tuple[int, Any]:
        job = self._job(job_id)
        if job.obj["status"] != "running":
            raise self._error(400, f"Job {job_id} cannot be paused while {job.obj['status']}.")
        job.paused = True
        if self.flavour == "azure":
            job.obj["status"] = "pausing"
        else:
            job.obj["status"] = "paused"
            self._event(job, "Job paused")
        return 200, self._job_answer(job)

    def resume_job(self, req: Request, uploaded: Path | None, job_id: str) -> tuple[int, Any]:
        job = self._job(job_id)
        if job.obj["status"] not in ("paused", "pausing"):
            raise self._error(400, f"Job {job_id} is not paused.")
        job.paused = False
        if self.flavour == "azure":
            job.obj["status"] = "resuming"
        else:
            job.obj["status"] = "running"
            self._event(job, "Job resumed")
        return 200, self._job_answer(job)

    # -- views for tests -----------------------------------------------------------------------
    def job_events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.jobs[job_id].events)

    def content(self, file_id: str) -> bytes:
        return self.file_paths[file_id].read_bytes()


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


_Handler = Callable[..., tuple[int, Any]]
_ROUTES: list[tuple[re.Pattern[str], str, _Handler]] = [
    (re.compile(p), m, h)
    for p, m, h in (
        (r"/files", "POST", FakeOpenAIService.create_file),
        (r"/files", "GET", FakeOpenAIService.list_files),
        (r"/files/([^/]+)", "GET", FakeOpenAIService.retrieve_file),
        (r"/files/([^/]+)", "DELETE", FakeOpenAIService.delete_file),
        (r"/files/([^/]+)/content", "GET", FakeOpenAIService.file_content),
        (r"/uploads", "POST", FakeOpenAIService.create_upload),
        (r"/uploads/([^/]+)/parts", "POST", FakeOpenAIService.add_part),
        (r"/uploads/([^/]+)/complete", "POST", FakeOpenAIService.complete_upload),
        (r"/uploads/([^/]+)/cancel", "POST", FakeOpenAIService.cancel_upload),
        (r"/fine_tuning/jobs", "POST", FakeOpenAIService.create_job),
        (r"/fine_tuning/jobs", "GET", FakeOpenAIService.list_jobs),
        (r"/fine_tuning/jobs/([^/]+)", "GET", FakeOpenAIService.retrieve_job),
        (r"/fine_tuning/jobs/([^/]+)/events", "GET", FakeOpenAIService.list_events),
        (r"/fine_tuning/jobs/([^/]+)/checkpoints", "GET", FakeOpenAIService.list_checkpoints),
        (r"/fine_tuning/jobs/([^/]+)/cancel", "POST", FakeOpenAIService.cancel_job),
        (r"/fine_tuning/jobs/([^/]+)/pause", "POST", FakeOpenAIService.pause_job),
        (r"/fine_tuning/jobs/([^/]+)/resume", "POST", FakeOpenAIService.resume_job),
    )
]


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
