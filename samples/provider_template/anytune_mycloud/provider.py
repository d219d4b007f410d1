"""The MyCloud provider: the contract on top of the service's client, with anytune's mechanisms.

What goes where, as in anytune's built-in providers:

* the status table and the record mapping are pure data and functions (table-tested);
* every client exception is translated in one ``boundary``;
* reads retry through ``retry_call``; the create goes through ``create_once`` with an idempotency
  tag, so a lost answer never makes a second job;
* collaborators (the client, the clock, sleep) come in through the constructor.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr

from anytune.errors import AnytuneError, JobNotFoundError, RateLimitError
from anytune.provider_kit import (
    IDEMPOTENCY_TAG,
    Capabilities,
    Event,
    JobRecord,
    JobSpec,
    JobStatus,
    Method,
    PlannedRequest,
    Provider,
    ProviderArgs,
    ProviderSettings,
    Range,
    RetryPolicy,
    SubmitPlan,
    boundary,
    create_once,
    error_class_for_status,
    parse_retry_after,
    parse_timestamp,
    planned_upload,
    register_secret,
    retry_call,
    utcnow,
)
from anytune_mycloud.service import FileMyCloud, MyCloudClient, MyCloudError

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")

NAME = "mycloud"

#: MyCloud's job states -> anytune's.
STATUS: Mapping[str, JobStatus] = {
    "QUEUED": JobStatus.QUEUED,
    "RUNNING": JobStatus.RUNNING,
    "DONE": JobStatus.SUCCEEDED,
    "FAILED": JobStatus.FAILED,
    "CANCELLED": JobStatus.CANCELLED,
}


class MyCloudSettings(ProviderSettings):
    """Who and where: from a profile, ``ANYTUNE_MYCLOUD_*`` variables or arguments."""

    api_key: SecretStr | None = None
    region: str = "eu-1"


class MyCloudOptions(BaseModel):
    """The ``options={"mycloud": {...}}`` section of a job spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    priority: Literal["low", "normal", "high"] = "normal"


def record_from_job(job: Mapping[str, Any]) -> JobRecord:
    """Pure: a MyCloud job as anytune's record."""
    raw = str(job.get("state") or "")
    return JobRecord(
        provider=NAME,
        id=str(job["id"]),
        status=STATUS.get(raw, JobStatus.RUNNING),
        raw_status=raw,
        base_model=job.get("model"),
        fine_tuned_model=job.get("output_model"),
        created_at=parse_timestamp(job.get("created"), unit="s"),
        raw=dict(job),
    )


def translate(exc: Exception) -> AnytuneError | None:
    """Pure: the anytune error for a client exception (None: not the client's)."""
    if not isinstance(exc, MyCloudError):
        return None
    cls = error_class_for_status(exc.status)
    if cls is RateLimitError:
        return RateLimitError(f"{NAME}: {exc.message}", retry_after=parse_retry_after(exc.headers), provider=NAME)
    return cls(f"{NAME}: {exc.message}", provider=NAME, status_code=exc.status)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, MyCloudError) and (exc.status in (408, 429) or exc.status >= 500)


def _retry_after(exc: BaseException) -> float | None:
    """The server's wait hint (Retry-After) carried by a client exception."""
    return parse_retry_after(exc.headers) if isinstance(exc, MyCloudError) else None


def _ambiguous(exc: BaseException) -> bool:
    # A 5xx or timeout may come after the service acted; a 429 is refused before any work.
    return isinstance(exc, MyCloudError) and (exc.status == 408 or exc.status >= 500)


class MyCloudProvider(Provider[MyCloudSettings]):
    """Fine-tuning on MyCloud."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({Method.SFT}),
        hyperparameters=frozenset({"epochs"}),
        ranges={"epochs": Range(low=1, high=10)},
        sections=frozenset({NAME}),
        min_examples=1,
        service="MyCloud",
    )
    Settings: ClassVar[type[ProviderSettings]] = MyCloudSettings
    Options: ClassVar[type[BaseModel] | None] = MyCloudOptions
    poll_interval: ClassVar[float] = 0.01

    def __init__(
        self,
        settings: MyCloudSettings | None = None,
        *,
        client: MyCloudClient | None = None,
        **base: Unpack[ProviderArgs],
    ) -> None:
        super().__init__(settings, **base)
        key = self.settings.api_key
        register_secret(key.get_secret_value() if key else None)
        # A real provider builds its SDK client from the settings here, without touching the network.
        self._client: MyCloudClient = client if client is not None else FileMyCloud(self.home / NAME)
        self._policy = RetryPolicy(max_attempts=4, initial_backoff=0.2, deadline=60.0)

    def _read(self, fn: Callable[[], T], *, job_id: str | None = None) -> T:
        """A read: retried on transient failures, translated at the boundary."""
        try:
            with boundary(translate):
                return retry_call(fn, policy=self._policy, retry_on=_transient, retry_after=_retry_after, **self.timing)
        except AnytuneError as exc:
            if job_id is not None and getattr(exc, "status_code", None) == 404:
                raise JobNotFoundError(f"{NAME}:{job_id}", "MyCloud does not know it") from exc
            raise

    def _body(self, spec: JobSpec, key: str) -> dict[str, Any]:
        options = self.options(spec) or MyCloudOptions()
        return {
            "model": spec.base_model,
            "training_file": str(spec.training_file),
            "epochs": spec.hyperparameters.epochs,
            "priority": options.priority,
            "tags": {**spec.tags, IDEMPOTENCY_TAG: key},
        }

    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        return SubmitPlan(
            provider=NAME,
            uploads=[planned_upload(Path(spec.training_file), "training")],
            requests=[PlannedRequest(operation="POST /jobs", body=self._body(spec, idempotency_key))],
        )

    def _find(self, key: str) -> JobRecord | None:
        mine = [j for j in self._read(lambda: self._client.list_jobs(tag=key)) if j["tags"].get(IDEMPOTENCY_TAG) == key]
        return record_from_job(mine[0]) if mine else None

    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        existing = self._find(idempotency_key)
        if existing is not None:
            return existing
        body = self._body(spec, idempotency_key)
        with boundary(translate):
            return create_once(
                lambda: record_from_job(self._client.create_job(body)),
                lambda: self._find(idempotency_key),
                is_ambiguous=_ambiguous,
                retry_on=_transient,
                policy=self._policy,
                retry_after=_retry_after,
                settle=self.create_settle,
                **self.timing,
                what=f"{NAME}: creating the job",
            )

    def get(self, job_id: str) -> JobRecord:
        return record_from_job(self._read(lambda: self._client.get_job(job_id), job_id=job_id))

    def cancel(self, job_id: str) -> JobRecord:
        with boundary(translate):
            return record_from_job(self._client.cancel_job(job_id))

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        for raw in self._read(lambda: self._client.job_events(job_id), job_id=job_id):
            event_id = f"{int(raw['seq']):08d}"
            if after is None or event_id > after:
                when = parse_timestamp(raw.get("at"), unit="s") or utcnow()
                yield Event(id=event_id, kind="log", time=when, message=str(raw["text"]))

    def find(self, idempotency_key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        return self._find(idempotency_key)

    def list(self, limit: int = 20) -> builtins.list[JobRecord]:
        return [record_from_job(j) for j in self._read(self._client.list_jobs)[:limit]]
