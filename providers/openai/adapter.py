"""The adapter both services share, and the two providers: :class:`OpenAIProvider` and
:class:`AzureOpenAIProvider` say only who and where (settings, URLs, how the client is built).

Reliability, and why:

* The SDK's own retries are off (``max_retries=0``) on every client: a create must never be
  repeated blindly, and one policy (:mod:`anytune._retry`) with an injectable sleep is easier to
  reason about and to test than two stacked ones.
* Reads retry on 408/429/5xx and connection errors, honouring ``Retry-After``, within a deadline.
* A create carries ``metadata["anytune.idempotency_key"]`` and goes through
  :func:`anytune._create_once.create_once`: after an ambiguous failure (timeout, dropped
  connection, 408, 5xx) the job may exist anyway, so the adapter looks it up before trying again:
  OpenAI's job list filters by that metadata; Azure's defines no filter, so there the adapter pages
  the list, and the tag is checked on our side everywhere.  Azure's dated api-versions keep no job
  metadata: there the suffix ends with a token
  derived from the key (:func:`~.mapping.suffix_token`), which those versions keep, and the
  lookup matches that.
* Azure OpenAI files are checked against the service's per-file limit before anything is uploaded.
* OpenAI's fine-tuning wind-down (:mod:`.wind_down`) is named in create refusals and in plan notes
  and validate warnings for base models near or past retirement; "today" is injectable.
* Events come newest first in pages; ``events(after=...)`` pages back until it meets the cursor and
  returns what is newer, oldest first, so polls and reconnects neither lose nor repeat an event.
"""

from __future__ import annotations

import abc
import builtins
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast

from anytune._base_model import looks_like_path
from anytune._boundary import boundary
from anytune._capabilities import Capabilities
from anytune._create_once import create_once
from anytune._deploy import Deployment
from anytune._files import FileDigest, file_digests
from anytune._provider import (
    IDEMPOTENCY_TAG,
    PlannedRequest,
    PlannedUpload,
    Provider,
    ProviderArgs,
    ProviderSettings,
    SubmitPlan,
)
from anytune._retry import RetryPolicy, retry_after_of, retry_call
from anytune._secrets import register_secret
from anytune._spec import JobSpec, Method
from anytune._types import Checkpoint, Event, FineTunedModel, JobRecord, JobStatus, MetricPoint
from anytune.errors import (
    ConfigError,
    InvalidRequestError,
    ModelNotAvailableError,
    NotSupportedError,
    PermissionDeniedError,
)

from .capabilities import AZURE_OPENAI_CAPABILITIES, OPENAI_CAPABILITIES, spec_problems
from .clients import (
    AZURE_V1_PATH,
    AzureOpenAISettings,
    ClientConfig,
    FamilySettings,
    OpenAISettings,
    azure_client,
    azure_client_config,
    client_timeout,
    import_openai,
    openai_client,
    openai_client_config,
)
from .deployments import AzureDeployments, AzureOpenAIDeploySettings, check_deploy_settings, resolve_scope
from .errors import WindDownRefusal, is_ambiguous, is_transient, translate_error
from .mapping import (
    MAX_USER_SUFFIX_WITH_TOKEN,
    as_dict,
    build_create_body,
    checkpoint_from_api,
    decode_result_file,
    event_from_api,
    job_carries_key,
    merge_points,
    parse_result_csv,
    record_from_job,
    split_body,
    to_number,
)
from .status import AZURE_STATUS, OPENAI_STATUS
from .uploads import Uploader, chat_data_file, needs_chat_conversion, planned_upload_requests
from .wind_down import equivalent_commands, retirement_warning, wind_down_refusal

if TYPE_CHECKING:
    import httpx2
    from openai import OpenAI
    from typing_extensions import Unpack

__all__ = ["AzureOpenAIProvider", "OpenAIProvider"]

T = TypeVar("T")
FamilyT = TypeVar("FamilyT", bound=FamilySettings)
logger = logging.getLogger("anytune.providers.openai")

_LOOKUP_MAX_PAGES = 10


class _OpenAIAdapter(Provider[FamilyT]):
    """Everything the two services share; subclasses say who and where (client, URLs, quirks).

    Args:
        settings, store, home, sleep, clock, rand: as for every :class:`~anytune._provider.Provider`.
        http_client: the ``httpx2.Client`` the SDK sends through (a proxy, a test transport);
            default: the SDK's own.
        today: today's date (UTC) for OpenAI's wind-down dates; default: the system clock.
    """

    flavour: ClassVar[Literal["openai", "azure"]]
    status_table: ClassVar[Mapping[str, JobStatus]]
    #: The anytune extra that installs the SDK.
    sdk_extra: ClassVar[str]
    #: Azure imports uploaded files asynchronously; a job created on a file still importing fails.
    wait_for_file_processing: ClassVar[bool] = False
    poll_interval: ClassVar[float] = 10.0
    job_id_pattern: ClassVar[str] = r"ftjob-[A-Za-z0-9_-]{1,128}"

    def __init__(
        self,
        settings: FamilyT | None = None,
        *,
        http_client: httpx2.Client | None = None,
        today: Callable[[], date] | None = None,
        **base: Unpack[ProviderArgs],
    ) -> None:
        super().__init__(settings, **base)
        self._http_client = http_client
        self.today: Callable[[], date] = today or (lambda: datetime.now(timezone.utc).date())
        self._config = self._resolve(os.environ)
        # Keys found in the environment were never seen by configuration: register them here so
        # that no message, log line or stored record can show them.
        register_secret(self._config.api_key)
        self._lock = threading.Lock()
        self._client_obj: OpenAI | None = None

    # -- who and where (subclasses) -------------------------------------------------------------
    @abc.abstractmethod
    def _resolve(self, env: Mapping[str, str]) -> ClientConfig: ...

    @abc.abstractmethod
    def _build_client(self, openai: Any, timeout: Any) -> OpenAI: ...

    @abc.abstractmethod
    def _url(self, path: str) -> str:
        """The full URL of an API path, for plans and messages."""

    # -- plumbing ------------------------------------------------------------------------------
    def _client(self) -> OpenAI:
        with self._lock:
            if self._client_obj is None:
                openai = import_openai(self.name, self.sdk_extra)
                self._client_obj = self._build_client(openai, client_timeout(self.settings))
            return self._client_obj

    @property
    def _policy(self) -> RetryPolicy:
        s = self.settings
        return s.retry_policy(max_attempts=s.max_attempts, deadline=s.retry_deadline, max_backoff=s.max_backoff)

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        """``fn`` under the read retry policy; SDK exceptions pass through untranslated."""
        return retry_call(
            fn,
            policy=self._policy,
            retry_on=is_transient,
            retry_after=retry_after_of,
            **self.timing,
            what=f"{self.name}: {what}",
        )

    def _boundary(
        self, what: str, *, job_id: str | None = None, creating: bool = False
    ) -> AbstractContextManager[None]:
        """Where SDK exceptions become anytune errors (raised ``from`` the scrubbed original)."""
        return boundary(
            functools.partial(
                translate_error, provider=self.name, flavour=self.flavour, what=what, job_id=job_id, creating=creating
            )
        )

    def _call(self, what: str, fn: Callable[[], T], *, job_id: str | None = None) -> T:
        with self._boundary(what, job_id=job_id):
            return self._retrying(what, fn)

    def _record(self, job: Any) -> JobRecord:
        return record_from_job(self.name, as_dict(job), self.status_table)

    # -- chat (evaluation) ------------------------------------------------------------------------
    def chat(
        self,
        model: str,
        messages: builtins.list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
    ) -> str:
        """One chat completion (``client.chat.completions.create``): on OpenAI ``model`` is a model id
        (a fine-tuned ``ft:...`` one included); on Azure OpenAI it is a deployment's name. Retried on
        408/429/5xx and connection failures like every read (a completion changes nothing on the
        service; it is billed per call, so ``anytune eval --dry-run`` counts the calls first)."""
        client = self._client()

        def call() -> Any:
            return client.chat.completions.create(
                model=model,
                messages=cast(Any, messages),
                max_completion_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
            )

        response = self._call(f"chat completion from {model}", call)
        choices = getattr(response, "choices", None) or []
        return str(choices[0].message.content or "") if choices else ""

    # -- validation and plan --------------------------------------------------------------------
    def validate(self, spec: JobSpec) -> None:
        """What the service refuses, in its own words: the capability table's hints and ranges, and
        the rules that are not data (metadata room, reinforcement, Azure's suffix rules)."""
        problems = spec_problems(spec, self.flavour) + self._version_problems(spec)
        for warning in self._warnings(spec):
            logger.warning("%s: %s", self.name, warning)
        if problems:
            field_name, reason, alternatives = problems[0]
            if len(problems) > 1:
                reason += "; also " + "; ".join(f"{f}: {r}" for f, r, _ in problems[1:])
            raise NotSupportedError(reason, field=field_name, provider=self.name, alternatives=alternatives)

    def check_base_model(self, spec: JobSpec, *, dry_run: bool = False) -> None:
        """Refuse a model in a local folder before anything is recorded or sent: the service
        fine-tunes the models it hosts, by name, and would only answer "model not found" after the
        uploads. A name is not looked up (the service checks its own names when the job is made)."""
        name = spec.base_model
        if looks_like_path(name) or ("/" in name and Path(name).expanduser().is_dir()):
            raise ConfigError(
                f"base model {name!r} is a local path, and {self.name} fine-tunes only the models it hosts, "
                "by name (such as gpt-4o-mini-2024-07-18): a model in a folder is trained by the local "
                "provider, or by huggingface once uploaded to the Hub",
                field="base_model",
            )

    def _version_problems(self, spec: JobSpec) -> builtins.list[tuple[str, str, tuple[str, ...]]]:
        """What the configured Azure api-version cannot carry (see :mod:`.versions`)."""
        out: builtins.list[tuple[str, str, tuple[str, ...]]] = []
        version = f"Azure OpenAI api-version {self._config.api_version}"
        methods = self._config.methods
        suffix = spec.suffix
        if not self._config.job_keeps_metadata and suffix is not None and len(suffix) > MAX_USER_SUFFIX_WITH_TOKEN:
            out.append(
                (
                    "suffix",
                    f"{version} keeps no job metadata, so anytune ends the suffix with '-' and a "
                    f"{40 - 1 - MAX_USER_SUFFIX_WITH_TOKEN}-character idempotency token: give at most "
                    f"{MAX_USER_SUFFIX_WITH_TOKEN} characters, or use api_version 'v1'",
                    (),
                )
            )
        if not self._config.takes_method:
            if spec.method is not Method.SFT:
                out.append(("method", f"{version} has no 'method' (supervised only): use api_version 'v1'", ()))
            options = spec.openai
            if options is not None and (options.wandb is not None or options.reinforcement is not None):
                name = "openai.wandb" if options.wandb is not None else "openai.reinforcement"
                out.append((name, f"{version} has no integrations or methods: use api_version 'v1'", ()))
        elif spec.openai is not None and spec.openai.reinforcement is not None and "reinforcement" not in methods:
            taken = " and ".join(sorted(methods))
            out.append(("openai.reinforcement", f"{version} takes the {taken} methods only: use api_version 'v1'", ()))
        return out

    def _planned_file(
        self, spec: JobSpec, path: Path, digest: FileDigest, requests: list[PlannedRequest], notes: list[str]
    ) -> str:
        """Plan the upload of one file (or its reuse); return the file id the body will carry."""
        if needs_chat_conversion(spec, path):
            notes.append(
                f"{path}: prompt/completion examples are converted to chat format before upload "
                "(size and digest above are of the original)"
            )
            requests.append(
                PlannedRequest(
                    operation=f"POST {self._url('/files')}",
                    body={"purpose": "fine-tune", "file": f"{path.stem}.chat.jsonl"},
                )
            )
            return f"<file id of {path.stem}.chat.jsonl>"
        reused = self.store.find_upload(self.name, self._config.scope, digest.sha256) if self.store else None
        if reused:
            notes.append(f"{path} was uploaded before as {reused}: reused if it still exists")
            return reused
        requests.extend(planned_upload_requests(path, digest, self._upload_settings(), self._url))
        return f"<file id of {path.name}>"

    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        """Uploads (file, size, sha256; Files or Uploads API, parts) and the exact create body.

        No network: the upload cache is read to show which files would be reused.
        """
        uploads: list[PlannedUpload] = []
        requests: list[PlannedRequest] = []
        notes: list[str] = []
        ids: dict[str, str] = {}
        for role, given in (("training_file", spec.training_file), ("validation_file", spec.validation_file)):
            if given is None:
                continue
            path = Path(given)
            digest = file_digests(path)
            self._check_size(role, path, digest.size)
            uploads.append(PlannedUpload(path=str(path), purpose="fine-tune", bytes=digest.size, sha256=digest.sha256))
            ids[role] = self._planned_file(spec, path, digest, requests, notes)
        body = self._create_body(spec, ids["training_file"], ids.get("validation_file"), idempotency_key)
        requests.append(PlannedRequest(operation=f"POST {self._url('/fine_tuning/jobs')}", body=body))
        if self._config.job_keeps_metadata:
            notes.append(
                f"the job carries metadata[{IDEMPOTENCY_TAG!r}]; after an ambiguous failure the adapter "
                "looks it up before creating again, so one submit makes at most one job"
            )
        else:
            notes.append(
                f"api-version {self._config.api_version} keeps no job metadata: the suffix ends with a token of "
                "the idempotency key, which the adapter looks up after an ambiguous failure, so one submit makes "
                "at most one job; tags are kept locally only"
            )
        notes.extend(self._warnings(spec))
        return SubmitPlan(provider=self.name, uploads=uploads, requests=requests, notes=notes)

    def _create_body(
        self, spec: JobSpec, training: str, validation: str | None, idempotency_key: str
    ) -> dict[str, Any]:
        return build_create_body(
            spec,
            training_file=training,
            validation_file=validation,
            idempotency_key=idempotency_key,
            flavour=self.flavour,
            keeps_metadata=self._config.job_keeps_metadata,
            training_type=getattr(self.settings, "training_type", None),
            takes_method=self._config.takes_method,
            supervised_in_method=self._config.supervised_in_method,
        )

    def notices(self, base_model: str) -> builtins.list[str]:
        """OpenAI's retirement of fine-tunes of ``base_model`` when past or near (OpenAI only:
        Azure OpenAI retires models on its own schedule)."""
        if self.flavour != "openai":
            return []
        warning = retirement_warning(base_model, self.today())
        return [warning] if warning else []

    def _warnings(self, spec: JobSpec) -> builtins.list[str]:
        return self.notices(spec.base_model)

    def _check_size(self, role: str, path: Path, size: int) -> None:
        """The service's per-file limit, checked before anything is uploaded."""
        limit = self.capabilities.max_file_bytes
        if limit is not None and size > limit:
            raise NotSupportedError(
                f"{path}: {size} bytes is over {self.capabilities.service}'s per-file limit of "
                f"{limit} bytes ({limit // 1024**2} MB); split the data or use fewer examples",
                field=role,
                provider=self.name,
            )

    # -- uploads --------------------------------------------------------------------------------
    def _upload_settings(self) -> FamilyT:
        """The settings uploads follow: where the service has no Uploads API, no file is over the
        threshold (the per-file limit was checked before anything was sent)."""
        if self._config.has_uploads_api:
            return self.settings
        return self.settings.model_copy(update={"upload_threshold_bytes": sys.maxsize})

    def _upload(self, spec: JobSpec, given: Path, role: str) -> str:
        """Upload ``given`` (or its chat conversion) once per account and content; its file id."""
        path = chat_data_file(spec, given, self.home / "cache" / "openai")
        with self._boundary(f"uploading {path.name}"):
            uploader = Uploader(
                provider=self.name,
                client=self._client(),
                settings=self._upload_settings(),
                scope=self._config.scope,
                store=self.store,
                retrying=self._retrying,
                wait_for_processing=self.wait_for_file_processing,
                sleep=self.sleep,
                clock=self.clock,
                file_list_query=self._config.file_list_query,
            )
            return uploader.upload(path, role)

    # -- create ------------------------------------------------------------------------------------
    def find(self, idempotency_key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        return self._find_job(idempotency_key)

    def _find_job(self, key: str) -> JobRecord | None:
        """The job carrying idempotency ``key``, if one was created (checked on our side too): by its
        metadata tag, or by the key's token in its suffix where the api-version keeps no metadata."""
        client = self._client()
        cutoff = time.time() - self.settings.lookup_window
        after: str | None = None
        for _ in range(_LOOKUP_MAX_PAGES):
            kwargs: dict[str, Any] = {"limit": 100}
            if self._config.filters_jobs_by_metadata:
                kwargs["metadata"] = {IDEMPOTENCY_TAG: key}
            if after is not None:
                kwargs["after"] = after
            page = self._call(
                "looking up the job by its idempotency tag", functools.partial(client.fine_tuning.jobs.list, **kwargs)
            )
            jobs = [as_dict(j) for j in page.data]
            for job in jobs:
                if job_carries_key(job, key):
                    return self._record(job)
            oldest = to_number(jobs[-1].get("created_at")) if jobs else None
            if not jobs or page.has_more is False or (oldest is not None and oldest < cutoff):
                return None
            after = str(jobs[-1]["id"])
        return None

    def _create_job(self, body: Mapping[str, Any], key: str, spec: JobSpec) -> JobRecord:
        """Create the job at most once for ``key``, whatever the network does."""
        client = self._client()
        known, extra = split_body(body)

        def create() -> JobRecord:
            return self._record(client.fine_tuning.jobs.create(**known, extra_body=extra or None))

        try:
            with self._boundary("creating the fine-tuning job", creating=True):
                return create_once(
                    create,
                    lambda: self._find_job(key),
                    is_ambiguous=is_ambiguous,
                    retry_on=is_transient,
                    policy=self._policy,
                    retry_after=retry_after_of,
                    settle=self.create_settle,
                    **self.timing,
                    what=f"{self.name}: creating the fine-tuning job",
                )
        except PermissionDeniedError as exc:
            raise self._refusal(exc, spec) from exc.__cause__

    def _refusal(self, exc: PermissionDeniedError, spec: JobSpec) -> PermissionDeniedError:
        """OpenAI's wind-down refusal with the phase in force and the same spec's equivalent commands
        (the boundary marks it ``wind_down``); any other refusal as it is."""
        if not isinstance(exc, WindDownRefusal):
            return exc
        message = wind_down_refusal(exc.service_message, self.today(), equivalent_commands(spec))
        return PermissionDeniedError(
            message,
            provider=self.name,
            status_code=exc.status_code,
            request_id=exc.request_id,
            body=exc.body,
        )

    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        """Upload (or reuse) the files and create the job, at most once for ``idempotency_key``."""
        existing = self._find_job(idempotency_key)  # a retried submit, from any process
        if existing is not None:
            return existing
        files = {"training_file": spec.training_path}
        if spec.validation_file is not None:
            files["validation_file"] = Path(spec.validation_file)
        for role, given in files.items():  # every file within the limit before any upload
            self._check_size(role, given, given.stat().st_size)
        training = self._upload(spec, files["training_file"], "training")
        validation = self._upload(spec, files["validation_file"], "validation") if "validation_file" in files else None
        body = self._create_body(spec, training, validation, idempotency_key)
        return self._create_job(body, idempotency_key, spec)

    # -- tracking ------------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        client = self._client()
        return self._record(
            self._call("reading the job", lambda: client.fine_tuning.jobs.retrieve(job_id), job_id=job_id)
        )

    def list(self, limit: int = 20) -> builtins.list[JobRecord]:
        client = self._client()
        page = self._call("listing jobs", lambda: client.fine_tuning.jobs.list(limit=limit))
        return [self._record(j) for j in page.data][:limit]

    def _raw_events_after(self, job_id: str, after: str | None) -> builtins.list[dict[str, Any]]:
        """Events newer than ``after`` (all when None or not found), newest first, no repeats."""
        client = self._client()
        size = self.settings.events_page_size
        newer: builtins.list[dict[str, Any]] = []
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": size}
            if cursor is not None:
                kwargs["after"] = cursor
            fetch = functools.partial(client.fine_tuning.jobs.list_events, job_id, **kwargs)
            page = self._call("listing events", fetch, job_id=job_id)
            items = [as_dict(e) for e in page.data]
            for item in items:
                event_id = str(item.get("id") or "")
                if after is not None and event_id == after:
                    return newer
                if event_id and event_id in seen:
                    continue
                seen.add(event_id)
                newer.append(item)
            more = page.has_more if page.has_more is not None else len(items) >= size
            if not items or not more:
                return newer
            cursor = str(items[-1].get("id"))

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        """Events oldest first, strictly after event ``after``: the service pages newest first, so
        this pages back until it meets ``after`` and returns what it passed, reversed."""
        raw = self._raw_events_after(job_id, after)
        return iter([event_from_api(item) for item in reversed(raw)])

    def checkpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        client = self._client()
        found: dict[int, Checkpoint] = {}
        cursor: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 100}
            if cursor is not None:
                kwargs["after"] = cursor
            fetch = functools.partial(client.fine_tuning.jobs.checkpoints.list, job_id, **kwargs)
            page = self._call("listing checkpoints", fetch, job_id=job_id)
            items = [as_dict(c) for c in page.data]
            for item in items:
                checkpoint = checkpoint_from_api(item)
                found[checkpoint.step] = checkpoint
            if not items or page.has_more is False or (page.has_more is None and len(items) < 100):
                break
            cursor = str(items[-1].get("id"))
        return [found[s] for s in sorted(found)]

    def _result_points(self, record: JobRecord) -> builtins.list[MetricPoint]:
        client = self._client()
        points: builtins.list[MetricPoint] = []
        for file_id in record.output.get("result_files") or []:
            content = self._call(
                "downloading the result file", functools.partial(lambda f: client.files.content(f).read(), str(file_id))
            )
            points.extend(parse_result_csv(decode_result_file(content)))
        return points

    def _metrics(self, record: JobRecord, checkpoints: Sequence[Checkpoint]) -> builtins.list[MetricPoint]:
        from_events = [e.metric for e in self.events(record.id) if e.metric is not None]
        from_checkpoints = [c.metrics for c in checkpoints if c.metrics is not None]
        return merge_points(from_events, from_checkpoints, self._result_points(record))

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        """Metric events, checkpoint metrics and the result-file CSV, merged by step."""
        return self._metrics(self.get(job_id), self.checkpoints(job_id))

    def result(self, record: JobRecord) -> FineTunedModel:
        checkpoints = self.checkpoints(record.id)
        points = self._metrics(record, checkpoints)
        return FineTunedModel(
            provider=record.provider,
            job_ref=record.ref,
            base_model=record.base_model,
            model_id=record.fine_tuned_model,
            checkpoints=tuple(checkpoints),
            final_metrics=points[-1] if points else None,
            trained_tokens=record.trained_tokens,
            extra={"result_files": list(record.output.get("result_files") or [])},
        )

    # -- control -----------------------------------------------------------------------------------
    def _control(
        self, verb: str, job_id: str, call: Callable[[], Any], settled: Callable[[JobRecord], bool]
    ) -> JobRecord:
        """cancel/pause/resume: retried like reads; a refusal because the job is already where we
        asked (an earlier attempt went through, or it ended) returns the job as it is."""
        try:
            return self._record(self._call(f"{verb} the job", call, job_id=job_id))
        except InvalidRequestError:
            record = self.get(job_id)
            if settled(record):
                return record
            raise

    def cancel(self, job_id: str) -> JobRecord:
        client = self._client()
        return self._control("cancelling", job_id, lambda: client.fine_tuning.jobs.cancel(job_id), lambda r: r.done)

    def _check_pausable(self, verb: str) -> None:
        if not self._config.can_pause:
            raise NotSupportedError(
                f"Azure OpenAI api-version {self._config.api_version} has no {verb} (its jobs never pause): "
                "use api_version 'v1'",
                field=verb,
                provider=self.name,
                alternatives=("openai",),
            )

    def pause(self, job_id: str) -> JobRecord:
        self._check_pausable("pause")
        client = self._client()
        return self._control(
            "pausing",
            job_id,
            lambda: client.fine_tuning.jobs.pause(job_id),
            lambda r: r.status is JobStatus.PAUSED or r.done,
        )

    def resume(self, job_id: str) -> JobRecord:
        self._check_pausable("resume")
        client = self._client()
        return self._control(
            "resuming",
            job_id,
            lambda: client.fine_tuning.jobs.resume(job_id),
            lambda r: r.status is not JobStatus.PAUSED,
        )


class OpenAIProvider(_OpenAIAdapter[OpenAISettings]):
    """OpenAI's fine-tuning API (``api.openai.com`` or any ``base_url`` speaking it)."""

    name: ClassVar[str] = "openai"
    flavour: ClassVar[Literal["openai", "azure"]] = "openai"
    sdk_extra: ClassVar[str] = "openai"
    status_table: ClassVar[Mapping[str, JobStatus]] = OPENAI_STATUS
    Settings: ClassVar[type[ProviderSettings]] = OpenAISettings
    capabilities: ClassVar[Capabilities] = OPENAI_CAPABILITIES

    def _resolve(self, env: Mapping[str, str]) -> ClientConfig:
        return openai_client_config(self.settings, env)

    def _url(self, path: str) -> str:
        return f"{self._config.base_url}{path}"

    def _build_client(self, openai: Any, timeout: Any) -> OpenAI:
        return openai_client(openai, self._config, http_client=self._http_client, timeout=timeout)

    # -- deploy: OpenAI serves fine-tuned models as they are ------------------------------------------
    def deploy(self, model: FineTunedModel, name: str, settings: Any, *, wait: bool, timeout: float) -> Deployment:
        """Nothing to create: OpenAI serves a fine-tuned model once its job succeeds. Checks that the
        model is there to call (``models.retrieve``; a deleted one is refused)."""
        found = self.deployment(model, name)
        if found is None:
            raise ModelNotAvailableError(
                f"model {model.model_id!r} of {model.job_ref} is not available on OpenAI (deleted, or another "
                "organisation's)",
                provider=self.name,
            )
        return found

    def deployment(self, model: FineTunedModel, name: str) -> Deployment | None:
        """The fine-tuned model as a deployment of itself (ready while ``models.retrieve`` finds it);
        ``name`` plays no part: OpenAI calls the model by its id."""
        import openai

        if not model.model_id:
            raise NotSupportedError(
                f"{model.job_ref} has no fine-tuned model id to call", field="deploy", provider=self.name
            )
        model_id = model.model_id
        client = self._client()
        with self._boundary(f"read model {model_id}"):
            try:
                self._retrying(f"read model {model_id}", lambda: client.models.retrieve(model_id))
            except openai.NotFoundError:
                return None
        return Deployment(
            provider=self.name,
            job_ref=model.job_ref,
            name=model_id,
            kind="model",
            target=model_id,
            model=model_id,
            status="ready",
            url=self._config.base_url or "https://api.openai.com/v1",
            cost_notes=openai_cost_notes(model_id),
        )

    def undeploy(self, model: FineTunedModel, name: str) -> Deployment | None:
        """Nothing to remove (no deployment, no hosting charge): None. Deleting the fine-tuned model
        itself is a different, irreversible act this does not take."""
        logger.info(
            "%s: %s is served without a deployment and costs nothing while unused; nothing to undeploy",
            self.name,
            model.model_id,
        )
        return None


def openai_cost_notes(model_id: str) -> tuple[str, ...]:
    """What calling an OpenAI fine-tuned model costs (pure): per token only, at the fine-tuned rate
    of :data:`~anytune._data.pricing.INFERENCE_PRICES` where the family is known."""
    from anytune._data.pricing import PRICE_AS_OF, inference_cost

    notes = ["No deployment and no hosting charge: OpenAI bills each call per token, at the fine-tuned model's rate."]
    per_million = inference_cost("openai", "", model_id, calls=1, input_tokens=1_000_000, max_output_tokens=0).usd
    per_million_out = inference_cost("openai", "", model_id, calls=1, input_tokens=0, max_output_tokens=1_000_000).usd
    if per_million is not None and per_million_out is not None:
        notes.append(
            f"USD {per_million:.2f} per 1M input and {per_million_out:.2f} per 1M output tokens "
            f"(OpenAI's published prices as of {PRICE_AS_OF})."
        )
    return tuple(notes)


class AzureOpenAIProvider(_OpenAIAdapter[AzureOpenAISettings]):
    """Azure OpenAI's fine-tuning API: the same shapes on ``{endpoint}/openai/...?api-version=``.

    Deploying (:meth:`deploy`) makes a model deployment, an Azure Resource Manager resource of the
    account, through ``azure-mgmt-cognitiveservices`` (:mod:`.deployments`): it signs in with Entra
    ID whatever ``auth`` says (ARM takes no API key), and needs ``subscription_id`` and
    ``resource_group`` (settings or ``AZURE_SUBSCRIPTION_ID`` / ``AZURE_RESOURCE_GROUP``).

    Args:
        azure_token_provider: returns an Entra ID bearer token; replaces azure-identity's
            ``DefaultAzureCredential`` when Entra ID is used (no API key).
        azure_credential: an azure-core ``TokenCredential`` for Azure Resource Manager (deployments);
            default: azure-identity's ``DefaultAzureCredential``.
        arm_transport: an azure-core ``HttpTransport`` the management client sends through (a proxy,
            a test's fake); default: azure-core's.
        settings, store, home, sleep, clock, rand, http_client: as for :class:`OpenAIProvider`.
    """

    name: ClassVar[str] = "azure-openai"
    flavour: ClassVar[Literal["openai", "azure"]] = "azure"
    sdk_extra: ClassVar[str] = "azure"
    status_table: ClassVar[Mapping[str, JobStatus]] = AZURE_STATUS
    wait_for_file_processing: ClassVar[bool] = True
    Settings: ClassVar[type[ProviderSettings]] = AzureOpenAISettings
    capabilities: ClassVar[Capabilities] = AZURE_OPENAI_CAPABILITIES
    DeploySettings: ClassVar[type[AzureOpenAIDeploySettings]] = AzureOpenAIDeploySettings
    #: Seconds between reads while a deployment is created or deleted (it takes minutes).
    deploy_poll_interval: ClassVar[float] = 15.0

    def __init__(
        self,
        settings: AzureOpenAISettings | None = None,
        *,
        http_client: httpx2.Client | None = None,
        azure_token_provider: Callable[[], str] | None = None,
        azure_credential: Any = None,
        arm_transport: Any = None,
        today: Callable[[], date] | None = None,
        **base: Unpack[ProviderArgs],
    ) -> None:
        super().__init__(settings, http_client=http_client, today=today, **base)
        self._token_provider = azure_token_provider
        self._azure_credential = azure_credential
        self._arm_transport = arm_transport
        self._deployments_obj: AzureDeployments | None = None

    def _resolve(self, env: Mapping[str, str]) -> ClientConfig:
        return azure_client_config(self.settings, env)

    def _url(self, path: str) -> str:
        endpoint = self._config.base_url or "<AZURE_OPENAI_ENDPOINT>"
        prefix = AZURE_V1_PATH if self._config.azure_v1 else "/openai"
        return f"{endpoint}{prefix}{path}?api-version={self._config.api_version}"

    def _build_client(self, openai: Any, timeout: Any) -> OpenAI:
        return azure_client(
            openai, self._config, http_client=self._http_client, timeout=timeout, token_provider=self._token_provider
        )

    # -- deploy: a model deployment (ARM), called through chat completions by its name -------------------
    def _deployments(self) -> AzureDeployments:
        """The account's deployments client (made on first use; the scope is checked first).

        Raises:
            ConfigError: subscription, resource group or account not set (nothing sent).
        """
        with self._lock:
            if self._deployments_obj is None:
                self._deployments_obj = AzureDeployments(
                    provider=self.name,
                    scope=resolve_scope(self.settings, os.environ, self._config.base_url),
                    url=self._config.base_url,
                    credential=self._azure_credential,
                    transport=self._arm_transport,
                    policy=self._policy,
                    sleep=self.sleep,
                    clock=self.clock,
                    rand=self.rand,
                    poll_interval=self.deploy_poll_interval,
                    settle=self.create_settle,
                )
            return self._deployments_obj

    def deploy(self, model: FineTunedModel, name: str, settings: Any, *, wait: bool, timeout: float) -> Deployment:
        """Create (or find) the deployment ``name`` serving ``model.model_id``; ``chat(name, ...)`` calls it.

        Raises:
            NotSupportedError: the result has no fine-tuned model id.
            UsageError: a bad setting, or ``name`` serves another model (nothing is sent).
            ConfigError: subscription, resource group or account missing (nothing is sent).
            WaitTimeoutError: still creating at the deadline (it carries on).
        """
        checked = check_deploy_settings(settings)
        return self._deployments().deploy(model, name, checked, wait=wait, timeout=timeout)

    def deployment(self, model: FineTunedModel, name: str) -> Deployment | None:
        return self._deployments().deployment(model, name)

    def undeploy(self, model: FineTunedModel, name: str) -> Deployment | None:
        """Delete the deployment (its hourly hosting fee stops) and wait until it is gone."""
        from anytune._deploy import DEFAULT_TIMEOUT

        return self._deployments().undeploy(model, name, timeout=DEFAULT_TIMEOUT)
