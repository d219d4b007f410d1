"""The contract every provider implements, and the request plan ``--dry-run`` prints.

A provider takes and returns anytune types only; everything about its service (SDK, endpoints,
status names, error classes) stays inside its module.  Sync methods are the contract; the async
ones default to running the sync ones in a worker thread, and a provider whose SDK is natively
async may override them.
"""

from __future__ import annotations

import abc
import builtins
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypedDict, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from anytune._capabilities import Capabilities
from anytune._deploy import Deployment, NoSettings
from anytune._files import file_digest
from anytune._secrets import holds_secret, mask
from anytune._spec import JobSpec
from anytune._types import Checkpoint, Event, FineTunedModel, JobRecord, MetricPoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")

IDEMPOTENCY_TAG = "anytune.idempotency_key"
#: The tag as a label, for services whose labels take no dots.
_LABEL_TAG = IDEMPOTENCY_TAG.replace(".", "-")


async def _to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    # Imported on first use: asyncio costs ~25 ms, too much for `import anytune`.
    import asyncio

    return await asyncio.to_thread(func, *args, **kwargs)


class ProviderSettings(BaseModel):
    """Base of each provider's typed settings (from profiles, ``ANYTUNE_<PROVIDER>_*`` and arguments).

    Secrets are ``SecretStr`` fields, or referenced by the name of an environment variable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    #: Settings named like secrets that only name one held elsewhere (``hub_token_secret``: a
    #: Kubernetes Secret's name): shown and kept with the job like any setting, never masked.
    secret_references: ClassVar[frozenset[str]] = frozenset()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask(value) if name and isinstance(value, str) and holds_secret(self, name) else value


class PlannedUpload(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    path: str
    purpose: str
    bytes: int
    sha256: str


class PlannedRequest(BaseModel):
    """One provider-native call ``submit`` would make, e.g. ``POST /v1/fine_tuning/jobs``."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    operation: str
    body: dict[str, Any] = Field(default_factory=dict)


class SubmitPlan(BaseModel):
    """What ``submit`` would do, computed without any network call or side effect."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    provider: str
    uploads: list[PlannedUpload] = Field(default_factory=list)
    requests: list[PlannedRequest] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def planned_upload(path: Path, purpose: str) -> PlannedUpload:
    size, digest = file_digest(path)
    return PlannedUpload(path=str(path), purpose=purpose, bytes=size, sha256=digest)


def _clock_following(sleep: Callable[[float], None]) -> tuple[Callable[[float], None], Callable[[], float]]:
    """A sleep that counts what it slept, and a monotonic clock that adds that count.

    A caller that injects a sleep alone (a test skipping the waits) means the waits to pass: with
    the real clock, a deadline measured in slept time would never come, and a wait loop would spin.
    """
    slept = [0.0]

    def counting_sleep(seconds: float) -> None:
        slept[0] += max(0.0, seconds)
        sleep(seconds)

    return counting_sleep, lambda: time.monotonic() + slept[0]


class UploadCache(Protocol):
    """Where a provider remembers what it uploaded, so the same content is not sent twice.

    ``scope`` is the account the upload belongs to (endpoint, workspace, namespace), ``sha256``
    the content. anytune's :class:`~anytune.JobStore` is one; a provider needs nothing else of it.
    """

    def find_upload(self, provider: str, scope: str, sha256: str) -> str | None: ...

    def record_upload(self, provider: str, scope: str, sha256: str, remote_id: str, size: int) -> None: ...

    def forget_upload(self, provider: str, scope: str, sha256: str) -> None: ...


SettingsT = TypeVar("SettingsT", bound=ProviderSettings)


class Timing(TypedDict):
    """A provider's time sources, in the keywords ``retry_call``, ``create_once`` take."""

    sleep: Callable[[float], None]
    clock: Callable[[], float]
    rand: Callable[[], float]


class ProviderArgs(TypedDict, total=False):
    """The collaborators every provider's constructor takes (see :class:`Provider`).

    A subclass adds its service's own and passes these on unchanged::

        def __init__(self, settings=None, *, client=None, **base: Unpack[ProviderArgs]) -> None:
            super().__init__(settings, **base)
    """

    store: UploadCache | None
    home: Path | None
    sleep: Callable[[float], None] | None
    clock: Callable[[], float] | None
    rand: Callable[[], float] | None


class Provider(abc.ABC, Generic[SettingsT]):
    """One fine-tuning service behind the uniform API.

    Subclasses set ``name``, ``capabilities`` and ``Settings``, and implement the abstract methods.
    Constructing a provider must not touch the network: clients are made on first use.

    Collaborators come in through the constructor, never through module globals: ``store`` (an
    upload cache), ``home``, and the time sources ``sleep``, ``clock`` and ``rand`` that retries
    and waits use. Subclasses add their service's own (an HTTP client or transport, a
    credential) as further keyword arguments.

    Args:
        settings: the typed settings (default: ``Settings()``).
        store: where uploads are remembered (default: none, every upload is sent).
        home: anytune's home directory (default: ``ANYTUNE_HOME``).
        sleep: how retries and waits sleep (inject a recorder in tests).
        clock: a monotonic clock for deadlines (given a ``sleep`` alone, the clock advances by what
            it slept, so injected waits still reach their deadlines).
        rand: the jitter source in [0, 1).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    Settings: ClassVar[type[ProviderSettings]] = ProviderSettings
    #: Seconds between polls the provider suggests when the service gives no hint.
    poll_interval: ClassVar[float] = 5.0
    #: What this service's job ids look like (a regular expression matched in full). A reference
    #: is checked against it before its id reaches a URL: ``openai:../../files`` must never
    #: become ``GET /v1/fine_tuning/jobs/../../files``. The default admits no ``/``, ``%`` or space.
    job_id_pattern: ClassVar[str] = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}"
    #: Seconds a create-once lookup that finds nothing is repeated before the job counts as
    #: surely absent: a service's list may lag its writes (``create_once(settle=...)``).
    create_settle: ClassVar[float] = 5.0
    #: The typed options section of a provider outside anytune: ``JobSpec.options[name]`` is
    #: validated against it (list ``name`` in ``capabilities.sections`` too).
    Options: ClassVar[type[BaseModel] | None] = None
    #: The settings ``FineTunedModel.deploy(**settings)`` takes on this provider (an instance type,
    #: a capacity...), validated before anything is sent.
    DeploySettings: ClassVar[type[BaseModel]] = NoSettings

    def __init__(self, settings: SettingsT | None = None, **base: Unpack[ProviderArgs]) -> None:
        from anytune._home import anytune_home

        store, home = base.get("store"), base.get("home")
        sleep, clock, rand = base.get("sleep"), base.get("clock"), base.get("rand")
        self.settings: SettingsT = settings if settings is not None else cast(SettingsT, self.Settings())
        self.store = store
        #: anytune's home directory (``ANYTUNE_HOME``): run directories, caches.
        self.home = home if home is not None else anytune_home()
        if sleep is not None and clock is None:
            sleep, clock = _clock_following(sleep)
        self.sleep: Callable[[float], None] = sleep if sleep is not None else time.sleep
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.rand: Callable[[], float] = rand if rand is not None else random.random

    def __repr__(self) -> str:
        # Settings reprs mask SecretStr fields; never show more than that.
        return f"{type(self).__name__}({self.settings!r})"

    def notices(self, base_model: str) -> builtins.list[str]:
        """Advice about a base model before anything is sent: a retirement near or past, say.

        Never a refusal (``validate`` refuses); ``plan`` notes and ``anytune data validate
        --provider`` show these. Default: none.
        """
        return []

    def submitted_under(self, record: JobRecord) -> str | None:
        """The idempotency key a job was created under, read from the record the service sent.

        Services keep anytune's tag where they keep user data: ``metadata`` (OpenAI), ``tags``
        (Azure ML) or ``labels`` (Hugging Face Jobs, where dots become dashes). A provider whose
        service keeps it elsewhere overrides this. ``FineTuneJob.get`` uses it to resolve a
        submission recorded with an unknown outcome.
        """
        raw = record.raw if isinstance(record.raw, dict) else {}
        for where, tag in (("metadata", IDEMPOTENCY_TAG), ("tags", IDEMPOTENCY_TAG), ("labels", _LABEL_TAG)):
            kept = raw.get(where)
            key = kept.get(tag) if isinstance(kept, dict) else None
            if isinstance(key, str) and key:
                return key
        return None

    def check_job_id(self, job_id: str) -> None:
        """Refuse a job id that is not of this service's shape, before any call.

        Raises:
            JobNotFoundError: naming the reference and the shape expected.
        """
        import re

        if not re.fullmatch(self.job_id_pattern, job_id):
            from anytune._types import format_ref
            from anytune.errors import JobNotFoundError

            raise JobNotFoundError(format_ref(self.name, job_id), f"not a {self.name} job id")

    @property
    def timing(self) -> Timing:
        """The injected time sources, for ``retry_call(fn, ..., **self.timing)`` and ``create_once``."""
        return {"sleep": self.sleep, "clock": self.clock, "rand": self.rand}

    def options(self, spec: JobSpec) -> Any:
        """This provider's ``options`` section, validated against :attr:`Options` (None when unset).

        Raises:
            ConfigError: naming the field of the section that is wrong.
        """
        raw = spec.options.get(self.name)
        if raw is None or self.Options is None:
            return None
        from pydantic import ValidationError

        from anytune.errors import ConfigError

        try:
            return self.Options.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in ("options", self.name, *err["loc"]))
            raise ConfigError(f"{where}: {err['msg']}", field=where) from None

    # -- the contract -------------------------------------------------------------------------
    def validate(self, spec: JobSpec) -> None:
        """Provider-specific checks beyond :class:`Capabilities` (pure; raise ``NotSupportedError``)."""

    def check_base_model(self, spec: JobSpec, *, dry_run: bool = False) -> None:
        """Refuse a base model the job could not start from, before anything is recorded or sent.

        ``create`` and ``plan`` call it after :meth:`validate` and the capability checks. Unlike
        ``validate`` it may look outside: a local folder must exist and hold a model, a model id
        may be looked up once with a short timeout (never a retry loop: an offline machine is
        reported at once). ``anytune._base_model.check_base_model`` does this for Hugging Face
        models. Default: nothing (the service checks its own model names when the job is created).

        Args:
            spec: the validated spec.
            dry_run: called for ``plan``: a provider whose look-up needs a network the plan does
                not (HF_HUB_OFFLINE set) may skip it instead of refusing.

        Raises:
            ConfigError: on field ``base_model``, naming the path or id and what is wrong.
            ProviderError: the look-up failed (unreachable, refused token, gated model).
        """

    @abc.abstractmethod
    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        """The provider-native requests ``submit`` would send; no network, no side effect."""

    @abc.abstractmethod
    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        """Upload what is needed and create the job. Never creates two jobs for one key."""

    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord:
        """The job's current state."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> JobRecord:
        """Ask the service to stop the job; returns the state after the request."""

    @abc.abstractmethod
    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        """Events oldest first, strictly after the event with id ``after``."""

    @abc.abstractmethod
    def list(self, limit: int = 20) -> list[JobRecord]:
        """Jobs the service knows, newest first."""

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        """Metric points in step order; by default, those carried by events."""
        points = {e.metric.step: e.metric for e in self.events(job_id) if e.metric is not None}
        return [points[s] for s in sorted(points)]

    def checkpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        """Checkpoints in step order; by default, those carried by events."""
        found = {e.checkpoint.step: e.checkpoint for e in self.events(job_id) if e.checkpoint is not None}
        return [found[s] for s in sorted(found)]

    def result(self, record: JobRecord) -> FineTunedModel:
        """What a succeeded job produced (called only for succeeded records)."""
        points = self.metrics(record.id)
        return FineTunedModel(
            provider=record.provider,
            job_ref=record.ref,
            base_model=record.base_model,
            model_id=record.fine_tuned_model,
            checkpoints=tuple(self.checkpoints(record.id)),
            final_metrics=points[-1] if points else None,
            trained_tokens=record.trained_tokens,
        )

    def find(self, idempotency_key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        """The job created under ``idempotency_key``, or None when the service surely has none.

        ``FineTuneJob.reconcile`` resolves submissions whose fate is unknown with it. Optional: a
        provider that cannot look a key up raises ``NotSupportedError`` (the default), and its
        unknown submissions are resolved by creating again with the same key instead.

        Args:
            idempotency_key: the key the job was submitted under.
            spec: the spec it was submitted with, when known: where the lookup depends on it (a
                namespace or workspace the spec chose), look there, and without it answer None
                only where the job surely cannot be.

        Raises:
            ProviderError: the service could not tell (the fate stays unknown).
        """
        from anytune.errors import NotSupportedError

        raise NotSupportedError(
            "looking a job up by its idempotency key is not offered", field="find", provider=self.name
        )

    def pause(self, job_id: str) -> JobRecord:
        from anytune.errors import NotSupportedError

        raise NotSupportedError("pausing is not offered", field="pause", provider=self.name)

    def resume(self, job_id: str) -> JobRecord:
        from anytune.errors import NotSupportedError

        raise NotSupportedError("resuming is not offered", field="resume", provider=self.name)

    def chat(
        self,
        model: str,
        messages: builtins.list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
    ) -> str:
        """One chat completion from ``model`` (a base model or a fine-tuned model this provider serves),
        for evaluation: the assistant's reply text. Hosted providers call their service's chat API.

        Raises:
            NotSupportedError: the provider cannot serve chat completions here.
        """
        from anytune.errors import NotSupportedError

        raise NotSupportedError(
            "answering chat messages through this provider's API is not offered", field="evaluate", provider=self.name
        )

    # -- deploy ---------------------------------------------------------------------------------
    def deploy(self, model: FineTunedModel, name: str, settings: Any, *, wait: bool, timeout: float) -> Deployment:
        """Make ``model`` callable under ``name``: the deployment of that name when it exists (serving
        this model; another model under the name is refused), else a new one; never a second.
        ``settings`` is a validated :attr:`DeploySettings`. With ``wait``, returns once it is ready
        (or failed) or raises ``WaitTimeoutError`` after ``timeout`` seconds (it keeps deploying).

        Raises:
            NotSupportedError: this provider cannot deploy models.
        """
        from anytune.errors import NotSupportedError

        raise NotSupportedError("deploying a fine-tuned model is not offered", field="deploy", provider=self.name)

    def deployment(self, model: FineTunedModel, name: str) -> Deployment | None:
        """The deployment ``name`` of ``model`` as it is now, or None when there is none."""
        return None

    def undeploy(self, model: FineTunedModel, name: str) -> Deployment | None:
        """Delete the deployment ``name`` (what keeps being billed); waits until it is gone.
        Returns what was deleted, None when there was nothing to delete (a repeat is harmless)."""
        from anytune.errors import NotSupportedError

        raise NotSupportedError("deploying a fine-tuned model is not offered", field="undeploy", provider=self.name)

    # -- async shells ---------------------------------------------------------------------------
    async def asubmit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        return await _to_thread(self.submit, spec, idempotency_key=idempotency_key)

    async def aget(self, job_id: str) -> JobRecord:
        return await _to_thread(self.get, job_id)

    async def acancel(self, job_id: str) -> JobRecord:
        return await _to_thread(self.cancel, job_id)

    async def aevents(self, job_id: str, after: str | None = None) -> builtins.list[Event]:
        return await _to_thread(lambda: list(self.events(job_id, after)))

    async def ametrics(self, job_id: str) -> builtins.list[MetricPoint]:
        return await _to_thread(self.metrics, job_id)

    async def acheckpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        return await _to_thread(self.checkpoints, job_id)

    async def aresult(self, record: JobRecord) -> FineTunedModel:
        return await _to_thread(self.result, record)

    async def afind(self, idempotency_key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        return await _to_thread(self.find, idempotency_key, spec=spec)

    async def alist(self, limit: int = 20) -> builtins.list[JobRecord]:
        return await _to_thread(self.list, limit)
