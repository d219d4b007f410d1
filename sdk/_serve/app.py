"""``anytune serve``: OpenAI's files, fine-tuning and chat-completions API in front of anytune.

Routes (as OpenAI publishes them; ``openai-finetuning-openapi.json`` for files and fine-tuning):
``/v1/files`` (upload, list, retrieve, content, delete), ``/v1/fine_tuning/jobs`` (create, list
with ``after``/``limit``/``metadata[k]``, retrieve, cancel, pause, resume, events, checkpoints),
``/v1/models`` and ``/v1/chat/completions`` (whole or server-sent events).

Every route needs a bearer key (:mod:`.keys`); a key sees only its own files, jobs and models
(another key's id is "not found"). Jobs run on the provider a model's prefix names
(``local:Qwen/Qwen2.5-0.5B-Instruct``) or on the server's own (its profile, else ``local``),
through :class:`anytune.FineTuneJob` like any application's: the same validation (its messages
name the uploaded file, line and field), the same job store, the same create-once. Errors are
OpenAI-shaped (``{"error": {...}}``) with the statuses the ``openai`` SDK maps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from anytune import FineTunedModel, FineTuneJob
from anytune._serve.chat import ChatRequest, ModelCache, OnnxAdapter, completion, stream_chunks, vllm_answerer
from anytune._serve.keys import KeyRing
from anytune._serve.limits import RateLimiter
from anytune._serve.mapping import (
    checkpoint_object,
    error_body,
    error_status,
    event_object,
    file_object,
    job_object,
    model_id,
    spec_fields,
    split_model,
)
from anytune._serve.state import FileRow, JobRow, ServeState
from anytune._serve.vllm_engine import VllmEngine, VllmOptions, vllm_usable
from anytune._types import JobStatus
from anytune.errors import AnytuneError

__all__ = ["ServeOptions", "create_app"]

logger = logging.getLogger("anytune.serve")

#: A file name as stored: its last path part, unsafe characters replaced (the suffix tells the
#: data reader the format, so it is kept).
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MODEL = re.compile(r"ft:(ftjob-[0-9a-f]+)(?::ckpt-step-(\d+))?")


@dataclass
class ServeOptions:
    """How the server runs jobs and guards itself.

    Args:
        provider: the provider of models without a prefix (default ``local``).
        profile: an ``anytune.toml`` profile whose provider, settings and spec defaults jobs use.
        max_upload_bytes: the largest file accepted (413 above it, nothing kept).
        requests_per_minute, burst: each key's request rate (429 with ``Retry-After`` above it).
        max_models: fine-tuned models held in memory at once for chat.
        max_tokens_cap: the most new tokens a chat completion may ask for.
        model_dirs: folders whose models may be named by path (resolved; Hub ids are always taken).
        onnx_dirs: ONNX exports (``anytune export --format onnx``, adapters kept apart) that answer
            for the jobs whose adapters they hold, with ONNX Runtime GenAI instead of transformers.
        engine: ``auto``, ``transformers`` or ``vllm`` (see :mod:`anytune._serve.vllm_engine`).
        vllm: the vLLM engine's options (default: ``max_loras`` = ``max_models``).
    """

    provider: str = "local"
    profile: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    requests_per_minute: float = 600.0
    burst: int = 60
    max_models: int = 2
    max_tokens_cap: int = 4096
    #: Folders whose models jobs may be trained from by path (``--model-dir``); Hub ids always.
    model_dirs: tuple[Path, ...] = ()
    #: ONNX Runtime GenAI exports (``--onnx``): a job whose adapter one holds answers from it.
    onnx_dirs: tuple[Path, ...] = ()
    #: What answers chat for models with weights: ``transformers`` (+ peft), ``vllm`` (multi-LoRA),
    #: or ``auto`` (vLLM when it is installed and a CUDA device is there).
    engine: Literal["auto", "transformers", "vllm"] = "auto"
    vllm: VllmOptions | None = None
    clock: Callable[[], float] = time.monotonic


class _Refusal(Exception):
    """An OpenAI-shaped refusal raised by a route."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.param, self.code = status, kind, param, code
        self.headers = dict(headers or {})


def _not_found(what: str, ident: str, param: str | None = None) -> _Refusal:
    return _Refusal(404, f"No such {what}: {ident!r}", param=param, code="not_found")


def create_app(keys: KeyRing, state: ServeState, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI application; ``anytune serve`` runs it with uvicorn."""
    server = _Server(keys, state, options or ServeOptions())
    app = FastAPI(title="anytune", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(_Refusal, _on_refusal)
    app.add_exception_handler(AnytuneError, _on_anytune)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_crash)
    routes: list[tuple[str, str, Callable[..., Any]]] = [
        ("POST", "/v1/files", server.upload),
        ("GET", "/v1/files", server.list_files),
        ("GET", "/v1/files/{file_id}", server.retrieve_file),
        ("GET", "/v1/files/{file_id}/content", server.file_content),
        ("DELETE", "/v1/files/{file_id}", server.delete_file),
        ("POST", "/v1/fine_tuning/jobs", server.create_job),
        ("GET", "/v1/fine_tuning/jobs", server.list_jobs),
        ("GET", "/v1/fine_tuning/jobs/{job_id}", server.retrieve_job),
        ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", server.cancel_job),
        ("POST", "/v1/fine_tuning/jobs/{job_id}/pause", server.pause_job),
        ("POST", "/v1/fine_tuning/jobs/{job_id}/resume", server.resume_job),
        ("GET", "/v1/fine_tuning/jobs/{job_id}/events", server.job_events),
        ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints", server.job_checkpoints),
        ("GET", "/v1/models", server.list_models),
        ("GET", "/v1/models/{name:path}", server.retrieve_model),
        ("POST", "/v1/chat/completions", server.chat),
    ]
    for method, path, endpoint in routes:
        app.add_api_route(path, endpoint, methods=[method])
    app.state.server = server
    return app


# -- errors: always OpenAI's shape, never a traceback or a secret ------------------------------
def _refuse(exc: _Refusal) -> JSONResponse:
    body = error_body(str(exc), kind=exc.kind, param=exc.param, code=exc.code)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def _on_refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Refusal)
    return _refuse(exc)


async def _on_anytune(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AnytuneError)
    server: _Server = request.app.state.server
    return _refuse(server.refusal_of(exc))


async def _on_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = (exc.errors() or [{}])[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    return _refuse(_Refusal(400, f"{where or 'request'}: {first.get('msg', 'invalid')}", param=where or None))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return _refuse(_Refusal(exc.status_code, str(exc.detail)))


async def _on_crash(request: Request, exc: Exception) -> Response:
    # The type only: a library's message may quote a request or a credential.
    logger.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    return _refuse(_Refusal(500, "the server failed to answer this request", kind="server_error"))


class _Server:
    """The routes' logic: every one authenticates first and sees only its owner's objects."""

    def __init__(self, keys: KeyRing, state: ServeState, options: ServeOptions) -> None:
        self.keys = keys
        self.state = state
        self.opts = options
        self.limiter = RateLimiter(options.requests_per_minute, options.burst, clock=options.clock)
        self.models = ModelCache(options.max_models)
        engine = options.engine if options.engine != "auto" else ("vllm" if vllm_usable() else "transformers")
        #: vLLM's multi-LoRA engine when chosen: adapters of one base share its one copy.
        self.vllm = VllmEngine(options.vllm or VllmOptions(max_loras=options.max_models)) if engine == "vllm" else None
        #: The ONNX exports opened so far (one base model each, however many adapters it serves).
        self._exports: dict[Path, tuple[Any, threading.Lock]] = {}
        self._exports_lock = threading.Lock()
        self._create_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # -- auth and rate limit -------------------------------------------------------------------
    def owner_of(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        owner = self.keys.owner(token)
        if owner is None:
            message = (
                "Incorrect API key provided." if token else "You didn't provide an API key (Authorization: Bearer KEY)."
            )
            raise _Refusal(401, message, code="invalid_api_key")
        wait = self.limiter.take(owner)
        if wait > 0:
            raise _Refusal(
                429,
                "Rate limit reached for requests: try again later",
                kind="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            )
        return owner

    @staticmethod
    async def json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except RecursionError:
            raise _Refusal(400, "the request body nests too deeply") from None
        except ValueError as exc:
            where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise _Refusal(400, f"the request body is not valid JSON{where}") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "the request body must be a JSON object")
        return body

    # -- files ---------------------------------------------------------------------------------
    @staticmethod
    def file_json(row: FileRow) -> dict[str, Any]:
        return file_object(row.id, row.filename, row.bytes, row.purpose, row.created_at)

    async def upload(self, request: Request) -> Any:
        owner = self.owner_of(request)
        limit = self.opts.max_upload_bytes + 64 * 1024  # the file plus the form's own bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._too_large()
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise _Refusal(400, "upload a file as multipart/form-data (fields file and purpose)", param="file")

        async def counted() -> AsyncGenerator[bytes, None]:
            # Chunked uploads carry no length: the bytes are counted as they come, and the read
            # stops past the limit (starlette would spool a file part of any size to disk first).
            seen = 0
            async for chunk in request.stream():
                seen += len(chunk)
                if seen > limit:
                    raise self._too_large()
                yield chunk

        try:
            form = await MultiPartParser(request.headers, counted(), max_part_size=64 * 1024).parse()
        except MultiPartException as exc:
            raise _Refusal(400, f"the upload is not a readable multipart form: {exc.message}", param="file") from None
        try:
            upload, purpose = form.get("file"), form.get("purpose")
            if purpose is None or not isinstance(purpose, str):
                raise _Refusal(400, "Missing required parameter: 'purpose'.", param="purpose")
            if purpose != "fine-tune":
                raise _Refusal(400, f"purpose {purpose!r} is not offered here: use fine-tune", param="purpose")
            if upload is None or isinstance(upload, str):
                raise _Refusal(400, "Missing required parameter: 'file'.", param="file")
            return await run_in_threadpool(self._store_upload, owner, upload, purpose)
        finally:
            await form.close()

    def _too_large(self) -> _Refusal:
        return _Refusal(
            413,
            f"the file is larger than this server accepts ({self.opts.max_upload_bytes} bytes)",
            param="file",
            code="file_too_large",
        )

    def _store_upload(self, owner: str, upload: Any, purpose: str) -> dict[str, Any]:
        name = _stored_name(str(upload.filename or ""))
        file_id, folder = self.state.new_file_path()
        folder.mkdir(parents=True)
        target = folder / name
        size = 0
        try:
            with target.open("wb") as out:
                while chunk := upload.file.read(1 << 20):
                    size += len(chunk)
                    if size > self.opts.max_upload_bytes:
                        raise self._too_large()
                    out.write(chunk)
            return self.file_json(self.state.add_file(file_id, owner, name, size, purpose, target))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def list_files(
        self,
        request: Request,
        purpose: str | None = None,
        limit: int = 10000,
        order: str = "desc",
        after: str | None = None,
    ) -> Any:
        owner = self.owner_of(request)
        if order not in ("asc", "desc"):
            raise _Refusal(400, "order must be asc or desc", param="order")
        rows = self.state.files(owner, purpose)
        if order == "asc":
            rows.reverse()
        page, more = _page(rows, after, limit, key=lambda r: r.id)
        return _bounded_list([self.file_json(r) for r in page], more)

    def own_file(self, owner: str, file_id: str, param: str | None = None) -> FileRow:
        row = self.state.file(owner, file_id)
        if row is None:
            raise _not_found("file", file_id, param)
        return row

    def retrieve_file(self, request: Request, file_id: str) -> Any:
        return self.file_json(self.own_file(self.owner_of(request), file_id))

    def file_content(self, request: Request, file_id: str) -> Any:
        row = self.own_file(self.owner_of(request), file_id)
        with open(row.path, "rb") as f:
            return Response(f.read(), media_type="application/octet-stream")

    def delete_file(self, request: Request, file_id: str) -> Any:
        owner = self.owner_of(request)
        row = self.own_file(owner, file_id)
        for job in self.state.jobs(owner):
            uses = file_id in (job.request.get("training_file"), job.request.get("validation_file"))
            if uses and not self.handle(job).record.done:
                raise _Refusal(
                    409, f"file {file_id} is used by {job.id}, which has not ended: cancel it or wait", param="file_id"
                )
        if not self.state.delete_file(owner, file_id):
            raise _not_found("file", file_id)
        shutil.rmtree(_folder_of(row), ignore_errors=True)
        return {"id": file_id, "object": "file", "deleted": True}

    # -- fine-tuning jobs ----------------------------------------------------------------------
    @staticmethod
    def handle(row: JobRow) -> FineTuneJob:
        job = FineTuneJob.get(row.ref)
        if not job.record.done:
            job.refresh()
        return job

    def job_json(self, row: JobRow, job: FineTuneJob | None = None) -> dict[str, Any]:
        job = job if job is not None else self.handle(row)
        answer = job_object(row.id, row.request, job.record, row.created_at)
        if answer["error"] is not None:
            answer["error"]["message"] = self.scrub(answer["error"]["message"])
        return answer

    def own_job(self, owner: str, job_id: str) -> JobRow:
        row = self.state.job(owner, job_id)
        if row is None:
            raise _not_found("fine-tuning job", job_id, "fine_tuning_job_id")
        return row

    async def create_job(self, request: Request) -> Any:
        owner = self.owner_of(request)
        body = await self.json_body(request)
        for name in ("model", "training_file"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise _Refusal(
                    400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
                )
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items())
        ):
            raise _Refusal(
                400, "metadata maps at most 16 keys (64 characters) to strings (512 characters)", param="metadata"
            )
        idempotency = request.headers.get("idempotency-key") or (metadata or {}).get("idempotency_key")
        return await run_in_threadpool(self._create, owner, body, idempotency)

    def _create_lock(self, key: str, keyed: bool) -> threading.Lock:
        if not keyed:  # a fresh key: nobody else creates under it
            return threading.Lock()
        with self._locks_lock:
            return self._create_locks.setdefault(key, threading.Lock())

    def _create(self, owner: str, body: dict[str, Any], idempotency: str | None) -> dict[str, Any]:
        # Without a key every create is a new job; with one, the owner's key names one job forever.
        idem = idempotency or f"auto-{time.time_ns()}-{threading.get_ident()}"
        key = "srv-" + hashlib.sha256(f"{owner}:{idem}".encode()).hexdigest()[:40]
        # The same key at once: one create, the others find its row.
        with self._create_lock(key, idempotency is not None):
            earlier = self.state.job_by_key(owner, idem)
            if earlier is not None:
                return self.job_json(earlier)
            training = self.own_file(owner, str(body["training_file"]), "training_file")
            validation = (
                self.own_file(owner, str(body["validation_file"]), "validation_file")
                if body.get("validation_file")
                else None
            )
            provider, base = split_model(str(body["model"]), self.opts.provider)
            self._check_model_path(base)
            fields = spec_fields(body, training.path, validation.path if validation else None)
            profile = self.opts.profile if provider == self.opts.provider else None
            try:
                job = FineTuneJob.create(
                    provider=None if profile else provider,
                    profile=profile,
                    base_model=base,
                    idempotency_key=key,
                    **fields,
                )
            except AnytuneError as exc:
                raise self.refusal_of(exc, [training] + ([validation] if validation else [])) from None
            request = {k: body.get(k) for k in _KEPT_FIELDS}
            made = JobRow(
                "ftjob-" + hashlib.sha256(key.encode()).hexdigest()[:24],
                owner,
                job.ref,
                idem,
                request,
                int(time.time()),
            )
            return self.job_json(self.state.add_job(made), job)

    def _check_model_path(self, base: str) -> None:
        """A base model in a folder of this machine is trained only from the folders the server was
        told to offer (``--model-dir``): a key holder may not read the server's disk through it."""
        if not (base.startswith(("/", ".", "~")) or "\\" in base or Path(base).is_absolute()):
            return  # a Hub id
        where = Path(base).expanduser()
        try:
            resolved = where.resolve()
        except (OSError, RuntimeError):
            resolved = where
        if not any(resolved.is_relative_to(d) for d in self.opts.model_dirs):
            raise _Refusal(
                400,
                "a base model in a folder must lie under a folder this server offers (anytune serve --model-dir DIR); "
                "name a Hugging Face model id instead",
                param="model",
                code="model_not_offered",
            )

    def scrub(self, text: str) -> str:
        """``text`` without this machine's paths: the server's home and working folder."""
        for root, label in ((str(self.state.root.parent), "ANYTUNE_HOME"), (os.getcwd(), ".")):
            if len(root) > 1:
                text = text.replace(root, label)
        return text

    def refusal_of(self, exc: AnytuneError, uploads: Sequence[FileRow] = ()) -> _Refusal:
        """An anytune error as the API answers it: status and type mapped, ``Retry-After`` kept, the
        stored copies of ``uploads`` named as the user knows them, no path of this machine."""
        status, kind, code = error_status(exc)
        headers = {}
        retry_after = getattr(exc, "retry_after", None)
        if status == 429 and retry_after:
            headers["Retry-After"] = str(int(retry_after) + 1)
        message = str(exc)
        for row in uploads:
            if row.path in message:
                message = message.replace(row.path, row.filename) + f" ({row.filename} is {row.id})"
        param = getattr(exc, "field", None)
        return _Refusal(status, self.scrub(message), kind=kind, param=param, code=code, headers=headers)

    def list_jobs(self, request: Request, after: str | None = None, limit: int = 20) -> Any:
        owner = self.owner_of(request)
        wanted = {
            k[len("metadata[") : -1]: v
            for k, v in request.query_params.items()
            if k.startswith("metadata[") and k.endswith("]")
        }
        rows = [
            r
            for r in self.state.jobs(owner)
            if all((r.request.get("metadata") or {}).get(k) == v for k, v in wanted.items())
        ]
        page, more = _page(rows, after, limit, key=lambda r: r.id)
        return {"object": "list", "data": [self.job_json(r) for r in page], "has_more": more}

    def retrieve_job(self, request: Request, job_id: str) -> Any:
        return self.job_json(self.own_job(self.owner_of(request), job_id))

    def _act(self, request: Request, job_id: str, action: str) -> Any:
        row = self.own_job(self.owner_of(request), job_id)
        job = FineTuneJob.get(row.ref)
        getattr(job, action)()
        return self.job_json(row, job)

    def cancel_job(self, request: Request, job_id: str) -> Any:
        return self._act(request, job_id, "cancel")

    def pause_job(self, request: Request, job_id: str) -> Any:
        return self._act(request, job_id, "pause")

    def resume_job(self, request: Request, job_id: str) -> Any:
        return self._act(request, job_id, "resume")

    def job_events(self, request: Request, job_id: str, after: str | None = None, limit: int = 20) -> Any:
        row = self.own_job(self.owner_of(request), job_id)
        events = [event_object(e) for e in reversed(self.handle(row).events())]  # newest first, as OpenAI lists
        page, more = _page(events, after, limit, key=lambda e: str(e["id"]))
        return {"object": "list", "data": page, "has_more": more}

    def job_checkpoints(self, request: Request, job_id: str, after: str | None = None, limit: int = 10) -> Any:
        row = self.own_job(self.owner_of(request), job_id)
        points = sorted(self.handle(row).checkpoints(), key=lambda c: c.step, reverse=True)
        page, more = _page([checkpoint_object(row.id, c) for c in points], after, limit, key=lambda c: str(c["id"]))
        return _bounded_list(page, more)

    # -- models and chat -----------------------------------------------------------------------
    @staticmethod
    def model_json(row: JobRow) -> dict[str, Any]:
        return {"id": model_id(row.id), "object": "model", "created": row.created_at, "owned_by": "anytune"}

    def succeeded(self, owner: str) -> list[JobRow]:
        return [r for r in self.state.jobs(owner) if self.handle(r).record.status is JobStatus.SUCCEEDED]

    def list_models(self, request: Request) -> Any:
        rows = self.succeeded(self.owner_of(request))
        bases = {str(r.request.get("model")): r.created_at for r in reversed(rows) if _has_weights(r)}
        data = [self.model_json(r) for r in rows]
        data += [{"id": b, "object": "model", "created": at, "owned_by": "system"} for b, at in bases.items()]
        return {"object": "list", "data": data}

    def served(self, owner: str, name: str) -> tuple[JobRow, int | None, bool]:
        """The job that answers for ``name``, the checkpoint step, and whether its adapter is on: a
        fine-tuned model (``ft:JOB[:ckpt-step-N]``), or the base model one of the key's succeeded jobs
        was trained from (the model it named, with or without its provider prefix), which answers
        from that job's loaded model with the adapter off: no second copy of the base."""
        match = _MODEL.fullmatch(name)
        if match is not None:
            row = self.state.job(owner, match.group(1))
            if row is not None:
                return row, int(match.group(2)) if match.group(2) else None, True
        else:
            trained = [r for r in self.succeeded(owner) if _answers_as_base(r, name)]
            if trained:
                loaded = [r for r in trained if self.models.holds(model_id(r.id))]
                return (loaded or trained)[0], None, False
        raise _Refusal(
            404,
            f"The model `{name}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )

    def retrieve_model(self, request: Request, name: str) -> Any:
        row, step, adapter = self.served(self.owner_of(request), name)
        if not adapter:
            return {"id": name, "object": "model", "created": row.created_at, "owned_by": "system"}
        job = self.handle(row)
        if step is not None and all(c.step != step for c in job.checkpoints()):
            raise _Refusal(
                404, f"The model `{name}` does not exist: no checkpoint at step {step}.", code="model_not_found"
            )
        if job.record.status is not JobStatus.SUCCEEDED:
            raise _Refusal(
                404, f"The model `{name}` does not exist yet: its job has not succeeded.", code="model_not_found"
            )
        return {**self.model_json(row), "id": name}

    def result_for(self, row: JobRow, step: int | None) -> FineTunedModel:
        job = self.handle(row)
        if job.record.status is not JobStatus.SUCCEEDED:
            raise _Refusal(
                404,
                f"The model `{model_id(row.id)}` is not ready: its job is {job.record.status}.",
                param="model",
                code="model_not_found",
            )
        model = job.result()
        if step is None:
            return model
        found = next((c for c in job.checkpoints() if c.step == step and c.path), None)
        if found is None:
            raise _Refusal(404, f"job {row.id} has no checkpoint at step {step}", param="model", code="model_not_found")
        # A local checkpoint keeps its adapter in ``adapter/`` beside the optimizer state.
        folder = Path(found.path or "")
        adapter = folder / "adapter" if (folder / "adapter" / "adapter_config.json").is_file() else folder
        return FineTunedModel(
            provider=model.provider, job_ref=model.job_ref, base_model=model.base_model, adapter_path=str(adapter)
        )

    def onnx_adapter(self, model: FineTunedModel) -> OnnxAdapter | None:
        """The job's adapter in one of the ``--onnx`` exports, the export opened once (ONNX Runtime
        GenAI); None when none holds it (transformers answers)."""
        for folder in self.opts.onnx_dirs:
            with self._exports_lock:
                if folder not in self._exports:
                    self._exports[folder] = (model.load(format="onnx", path=str(folder)), threading.Lock())
                export, lock = self._exports[folder]
            name = export.adapter_for(model.job_ref)
            if name is not None:
                return OnnxAdapter(export, name, lock)
        return None

    async def chat(self, request: Request) -> Any:
        owner = self.owner_of(request)
        body = await self.json_body(request)
        parsed = _chat_request(body, self.opts.max_tokens_cap)
        row, step, adapter = self.served(owner, parsed.model)
        if not adapter:
            parsed = replace(parsed, adapter=False)

        def load() -> Any:  # only for a model not in memory yet
            model = self.result_for(row, step)
            if not model.has_weights:
                raise _Refusal(
                    400,
                    f"{parsed.model} was trained on {model.provider}: call it through that service",
                    param="model",
                    code="model_not_served",
                )
            exported = self.onnx_adapter(model) if step is None else None
            if exported is not None:
                return exported
            return model.load() if self.vllm is None else vllm_answerer(self.vllm, model)

        key = model_id(row.id) if step is None else parsed.model
        entry = await run_in_threadpool(self.models.get, key, load)
        if not parsed.stream:
            return await run_in_threadpool(completion, entry, parsed)

        def events() -> Iterator[str]:
            try:
                for chunk in stream_chunks(entry, parsed):
                    yield f"data: {json.dumps(chunk)}\n\n"
            except Exception as exc:  # mid-stream: the status is already sent; say it in the stream
                logger.error("chat stream failed: %s", type(exc).__name__)
                yield f"data: {json.dumps(error_body('generation failed', kind='server_error'))}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


#: The create request's fields kept with the job (what the job object echoes).
_KEPT_FIELDS = ("model", "training_file", "validation_file", "seed", "suffix", "metadata", "method", "hyperparameters")


def _bounded_list(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    """A list answer that names its first and last ids (files, checkpoints)."""
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}


def _stored_name(given: str) -> str:
    """The name an upload is kept under: its last path part, unsafe characters replaced, at most
    120 characters, its suffix kept (the data reader goes by it)."""
    raw = given.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    stem, dot, suffix = raw.rpartition(".")
    if not dot:
        stem, suffix = raw, ""
    stem = _UNSAFE.sub("_", stem).strip("_")[:100] or "upload"
    suffix = _UNSAFE.sub("_", suffix).strip("_")[:16]
    return f"{stem}.{suffix}" if suffix else stem


def _folder_of(row: FileRow) -> Path:
    return Path(row.path).parent


def _page(items: list[Any], after: str | None, limit: int, *, key: Callable[[Any], str]) -> tuple[list[Any], bool]:
    """The items after the one whose key is ``after`` (all when None), at most ``limit``."""
    if limit < 1:
        raise _Refusal(400, "limit must be at least 1", param="limit")
    start = 0
    if after is not None:
        keys = [key(i) for i in items]
        if after not in keys:
            raise _Refusal(400, f"after={after!r} names nothing in this list", param="after")
        start = keys.index(after) + 1
    page = items[start : start + limit]
    return page, start + limit < len(items)


#: Providers whose results the chat route answers for (their weights are reachable).
_WEIGHTED = ("local", "huggingface")


def _has_weights(row: JobRow) -> bool:
    return row.ref.partition(":")[0] in _WEIGHTED


def _answers_as_base(row: JobRow, name: str) -> bool:
    """Whether ``name`` calls the base model of ``row``'s job (pure): the model the job was created
    with, as written, or without its provider prefix; another provider's prefix never matches."""
    if not _has_weights(row):
        return False
    asked = str(row.request.get("model") or "")
    return name == asked or (split_model(name, "")[0] == "" and name == split_model(asked, "")[1])


def _chat_request(body: Mapping[str, Any], cap: int) -> ChatRequest:
    """A chat completion's fields, checked.

    Raises:
        _Refusal: a missing or malformed field, naming it.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Refusal(400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Refusal(400, "messages must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise _Refusal(400, f"messages[{i}].role must be system, user or assistant", param=f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):
            m = {**m, "content": "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))}
            messages[i] = m
        elif not isinstance(content, str):
            raise _Refusal(400, f"messages[{i}].content must be text", param=f"messages[{i}].content")
    if body.get("n") not in (None, 1):
        raise _Refusal(400, "n must be 1 here", param="n")
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    tokens = 256 if tokens is None else tokens
    if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= cap:
        raise _Refusal(400, f"max_tokens must be an integer from 1 to {cap}", param="max_tokens")
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise _Refusal(400, "temperature must be a number from 0 to 2", param="temperature")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
        raise _Refusal(400, "seed must be an integer from 0 to 2**63 - 1", param="seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise _Refusal(400, "stream must be true or false", param="stream")
    return ChatRequest(model, [dict(m) for m in messages], tokens, float(temperature), seed, bool(stream))
