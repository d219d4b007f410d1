"""``FineTuneJob``: the handle to one fine-tuning job, on any provider.

Creating a job resolves configuration, validates the spec against the provider's capabilities and
the data files line by line, records the job in the store, and only then calls the provider.  A
handle is cheap: it holds the last known :class:`JobRecord` and talks to the provider on demand.
Its ``ref`` (``provider:id``) re-attaches from any process with :meth:`FineTuneJob.get`.

``AsyncFineTuneJob`` offers the same methods as coroutines.  Both shells share the I/O-free pieces
(:mod:`anytune._polling`, :func:`_prepare`'s pure parts) and differ only in how they wait and call.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError

from anytune import _registry
from anytune._capabilities import Capabilities, check_spec
from anytune._config import ResolvedConfig, resolve
from anytune._create_once import outcome_unknown
from anytune._netfail import classify
from anytune._polling import Follower, PollPolicy
from anytune._provider import Provider, SubmitPlan, _to_thread
from anytune._refresh import DEFAULT_TIMEOUT, fetch_all
from anytune._secrets import holds_secret
from anytune._spec import JobSpec, Method
from anytune._specfile import build_spec
from anytune._store import SUBMIT_FAILED, JobStore, StoredJob, row_statuses, stored_form
from anytune._types import (
    Checkpoint,
    Event,
    FineTunedModel,
    JobRecord,
    JobStatus,
    MetricPoint,
    parse_ref,
    utcnow,
)
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    JobFailedError,
    JobNotFoundError,
    NotSupportedError,
    ProviderError,
    StoreError,
    SubmitOutcomeUnknownError,
    UsageError,
)

if TYPE_CHECKING:
    from anytune._data.jobdata import Materialised
    from anytune._data.validate import DatasetRules
    from anytune._eval.report import EvalReport

OnEvent = Callable[[Event], object]
logger = logging.getLogger("anytune.store")
_warned: set[str] = set()


def _warn_unsaved(exc: StoreError) -> None:
    """One warning per store that cannot be written: reads go on without recording."""
    if exc.path not in _warned:
        _warned.add(exc.path)
        logger.warning("%s; jobs are read but their state is not saved", exc.message)


def _save_quietly(store: JobStore | None, record: JobRecord, profile: str | None = None) -> None:
    """Keep the store current on a read path; a store that cannot be written (read-only, full,
    locked) costs a warning, once per store, never the read."""
    if store is None:
        return
    try:
        store.save(record, profile=profile)
    except StoreError as exc:
        _warn_unsaved(exc)


def require_succeeded(record: JobRecord, action: str) -> None:
    """Refuse to use the result of a job that has not succeeded (``action``: "evaluated", "exported"...).

    Raises:
        UsageError: naming the job's status and what to do (wait for it, or nothing to use).
    """
    if record.status is not JobStatus.SUCCEEDED:
        hint = f"wait for it with `anytune jobs wait {record.ref}`" if not record.done else "nothing was trained"
        raise UsageError(
            f"job {record.ref} is {record.status.value}: only a succeeded job's result can be {action} ({hint})"
        )


def _evaluate_job(
    provider: Provider[Any], record: JobRecord, store: JobStore | None, data: str, options: Mapping[str, Any]
) -> EvalReport:
    """Evaluate a succeeded job's result against its base (see :meth:`FineTuneJob.evaluate`) and keep
    the report with the job in the store (a store that cannot be written costs a warning)."""
    from anytune._eval.report import GenerationSettings
    from anytune._eval.run import evaluate_model

    require_succeeded(record, "evaluated")
    model = provider.result(record)
    generation = {
        k: options[k] for k in ("max_new_tokens", "temperature", "seed", "batch_size") if options.get(k) is not None
    }
    report = evaluate_model(
        model,
        data,
        metrics=options.get("metrics"),
        chat=provider.chat,
        base_model_id=record.base_model or model.base_model,
        call_as=options.get("call_as"),
        lm_eval_tasks=options.get("lm_eval_tasks") or (),
        lm_eval_include=options.get("lm_eval_include"),
        max_examples=options.get("max_examples"),
        settings=GenerationSettings(**generation),
        judge=options.get("judge"),
        device=options.get("device"),
        onnx=options.get("onnx"),
        progress=options.get("progress"),
    )
    if store is not None:
        try:
            store.save_evaluation(record.ref, report.model_dump(mode="json"))
        except StoreError as exc:
            _warn_unsaved(exc)
    return report


def _resolve_submission(store: JobStore | None, provider: Provider[Any], record: JobRecord) -> None:
    """A job read by reference may be one whose submission was recorded with an unknown outcome:
    the key the service kept on it links them (best-effort, like every save on a read path)."""
    key = provider.submitted_under(record)
    if key is None or store is None:
        return
    try:
        if store.resolve_unknown(key, record):
            logger.info("%s resolves the submission %s recorded with an unknown outcome", record.ref, key)
    except StoreError:
        pass  # the save below warns once about a store that cannot be written


def _store_for(config: ResolvedConfig | None) -> JobStore:
    from anytune._home import anytune_home

    home = config.home if config is not None else anytune_home()
    return JobStore(home / "jobs.db")


#: ``provider=`` takes a name (or profile name), or a provider instance built by the caller with
#: its own collaborators (HTTP client, credential, clock): the one seam for injecting them.
ProviderArg = str | Provider[Any] | None


def _provider_for(config: ResolvedConfig, store: JobStore | None, given: ProviderArg = None) -> Provider[Any]:
    if isinstance(given, Provider):
        if given.store is None:
            given.store = store
        return given
    cls = _registry.load(config.provider)
    return cls(config.settings, store=store, home=config.home)


def _resolve_for(provider: ProviderArg, profile: str | None, settings: Mapping[str, Any] | None) -> ResolvedConfig:
    if isinstance(provider, Provider):
        if settings:
            raise ConfigError("settings= configures a provider by name; an instance brings its own", field="settings")
        return resolve(provider=provider.name, profile=profile, provider_class=type(provider))
    return resolve(provider=provider, profile=profile, settings=settings)


@dataclass(frozen=True)
class _Prepared:
    """A create made ready: ``spec`` is the user's (what the store keeps and ``jobs show`` shows),
    ``submitted`` what the provider receives (its data converted to canonical JSONL files)."""

    config: ResolvedConfig
    spec: JobSpec
    provider: Provider[Any]
    store: JobStore
    settings: dict[str, Any]
    submitted: JobSpec
    converted: tuple[Materialised, ...] = ()


def _check_files(spec: JobSpec, provider: Provider[Any], converted: Iterable[Materialised] = ()) -> None:
    """Every data check, before anything is uploaded or created; issues in a converted file are
    told against the source row they came from."""
    from anytune._data.validate import DatasetRules, check_dataset

    caps = provider.capabilities
    sources = {m.role: m for m in converted}
    for role, path, minimum in (
        ("training_file", spec.training_file, caps.min_examples),
        ("validation_file", spec.validation_file, 1),
    ):
        if path is None:
            continue
        rules = DatasetRules(
            provider=provider.name,
            model=spec.base_model,
            method="dpo" if spec.method is Method.DPO else "sft",
            max_tokens_per_example=spec.hyperparameters.max_length,
            min_examples=minimum,
            epochs=spec.hyperparameters.epochs,
        )
        made = sources.get(role)
        if made is None:
            check_dataset(path, rules)
        else:
            _check_converted(made, rules)


def _check_converted(made: Materialised, rules: DatasetRules) -> None:
    """Validate a converted file; on errors, raise them named by the source's rows and fields."""
    import tempfile

    from anytune._data.pipeline import remap_report, write_canonical
    from anytune._data.validate import validate_file
    from anytune.errors import DataValidationError

    report = validate_file(made.path, rules)
    if report.ok:
        return
    # The line map is not cached with the file: convert once more (the same rows, the same order)
    # to tell each issue against the row it came from.
    with tempfile.TemporaryDirectory(prefix="anytune-remap-") as tmp:
        conversion = write_canonical(made.source, Path(tmp) / "canonical.jsonl", **made.options)
    report = remap_report(report, conversion, rules)
    raise DataValidationError(report.summary(), [i for i in report.issues if i.severity == "error"])


def _check_files_exist(spec: JobSpec) -> None:
    """Each data file is a readable regular file: else one ConfigError naming field, path and cause."""
    from anytune._data.validate import require_data_file

    for field, path in (("training_file", spec.training_file), ("validation_file", spec.validation_file)):
        if path is not None:
            require_data_file(path, field)


def _prepare(
    spec: JobSpec | Mapping[str, Any] | None,
    fields: Mapping[str, Any],
    *,
    provider: ProviderArg,
    profile: str | None,
    settings: Mapping[str, Any] | None,
    validate_data: bool,
    store: JobStore | None,
    dry_run: bool = False,
) -> _Prepared:
    config = _resolve_for(provider, profile, settings)
    given: Mapping[str, Any] = spec.model_dump(exclude_unset=True) if isinstance(spec, JobSpec) else spec or {}
    built = build_spec(
        (f"profile {config.profile!r}" if config.profile else "defaults", config.spec_defaults),
        ("spec", given),
        ("argument", fields),
    )
    the_store = store or _store_for(config)
    impl = _provider_for(config, the_store, provider)
    # The provider's own rules first: they can say what the service takes instead (e.g. OpenAI's
    # learning_rate_multiplier for an absolute learning rate); the generic capability table second.
    impl.options(built)
    if built.quantization not in impl.capabilities.quantization:
        # Before the provider's own rules, which would refuse the LoRA defaults it implies instead.
        check_spec(built, config.provider, impl.capabilities, _registry.capabilities())
    # Every source becomes canonical JSONL before the provider sees the spec (a data section, a
    # CSV, Parquet, folder or Alpaca training_file...); the store keeps the spec as the user gave it.
    from anytune._data.jobdata import materialise

    ready, converted = materialise(built, config.home)
    _check_files_exist(ready)
    impl.validate(ready)
    check_spec(ready, config.provider, impl.capabilities, _registry.capabilities())
    # Before the dataset checks (which may count tokens with the model's tokenizer): a missing
    # folder, an unknown id or an offline machine is said at once, before anything is recorded.
    impl.check_base_model(ready, dry_run=dry_run)
    if validate_data:
        _check_files(ready, impl, converted)
    # Explicit settings are kept with the job (secrets left out) so another process can re-attach;
    # for an instance, what it was built with beyond the defaults.
    explicit = impl.settings.model_dump(exclude_defaults=True) if isinstance(provider, Provider) else settings
    kept = {
        k: v for k, v in (explicit or {}).items() if not holds_secret(impl.settings, k) and not isinstance(v, SecretStr)
    }
    return _Prepared(config, built, impl, the_store, kept, ready, tuple(converted))


def _new_key() -> str:
    return uuid.uuid4().hex


_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _key_for(given: str | None) -> str:
    """The idempotency key of a create: the caller's (checked), else a fresh one."""
    if given is None:
        return _new_key()
    if not isinstance(given, str) or not _KEY.fullmatch(given):
        raise ConfigError(
            f"expected 1 to 64 letters, digits, '-' or '_', got {given!r}", field="idempotency_key", source="argument"
        )
    return given


def _submit_locally_recorded(prep: _Prepared, key: str, explicit: bool = False) -> StoredJob | None:
    """Record the submission before it is sent; with a caller's key, the row an earlier create with
    that key left (None when there is none: a new row is written)."""
    spec = prep.spec.to_json_dict()
    existing = prep.store.by_key(key) if explicit else None
    if existing is None:
        prep.store.begin_submit(
            provider=prep.config.provider, profile=prep.config.profile, spec=spec, key=key, settings=prep.settings
        )
        return None
    if existing.provider != prep.config.provider or existing.spec != stored_form(spec):
        raise ConfigError(
            f"idempotency key {key!r} already belongs to another job ({existing.provider}, created "
            f"{existing.created_at:%Y-%m-%d %H:%M} UTC with a different spec); repeat that spec or use a new key",
            field="idempotency_key",
            source="argument",
        )
    return existing


def _failed_submit(store: JobStore, key: str, earlier: StoredJob | None, exc: BaseException) -> BaseException | None:
    """Record a submission that raised; the error to raise instead of ``exc`` (None: ``exc``).

    A create whose fate is unknown (``create_once`` could not tell) is kept as ``unknown`` and
    reported as :class:`SubmitOutcomeUnknownError`, never as "not submitted": a second create
    with a new key would make a second job. So is one interrupted mid-submit, and one repeated
    under a key whose fate was already unknown.
    """
    text = f"{type(exc).__name__}: {exc}"
    if outcome_unknown(exc):
        store.mark_unknown(key, text)
        unknown = SubmitOutcomeUnknownError(exc.message if isinstance(exc, AnytuneError) else text, idempotency_key=key)
        if isinstance(exc, ProviderError):
            unknown.provider, unknown.status_code, unknown.request_id = exc.provider, exc.status_code, exc.request_id
        return unknown
    if not isinstance(exc, Exception) or (earlier is not None and earlier.status != SUBMIT_FAILED):
        store.mark_unknown(key, text)
    elif earlier is None and _sent_nothing(exc):
        # Refused on this side (no key, no endpoint, an option the service lacks): no job exists
        # or ever will under this key, so no row is left to clutter ``jobs list``.
        store.discard_submit(key)
    else:
        store.fail_submit(key, text)
    return None


def _sent_nothing(exc: Exception) -> bool:
    """Whether a failed submit surely created nothing, so its row can go: a usage error (the error
    tree's promise: nothing was uploaded or created), credentials missing or refused on this side
    (an authentication error without an HTTP status: no service answered), or a service that was
    never reached (no network, no such host, connection refused, TLS failed: nothing was sent).
    Anything else may have reached the service (a timeout, a connection dropped after sending)
    and keeps its row as ``submit_failed``."""
    if outcome_unknown(exc):
        return False
    if isinstance(exc, UsageError):
        return True
    if not isinstance(exc, ProviderError) or exc.status_code is not None or exc.request_id is not None:
        return False  # a service answered: it may have acted
    if isinstance(exc, AuthenticationError):
        return True
    failure = classify(exc)  # the SDK's error is chained below the adapter's translation
    return failure is not None and failure.permanent


def _reconcile_row(store: JobStore, row: StoredJob, provider: Provider[Any] | None) -> None:
    """Resolve one submission whose fate is unknown by looking its key up."""
    key = row.idempotency_key
    try:
        impl = provider if provider is not None else _provider_for_row(row, store)
        found = impl.find(key, spec=_stored_spec(row))
    except NotSupportedError:
        store.mark_unknown(
            key, f"{row.provider} cannot look a job up by its key: create it again with idempotency_key={key!r}"
        )
        return
    except AnytuneError as exc:
        store.mark_unknown(key, f"still unknown: {type(exc).__name__}: {exc}")
        return
    if found is None:
        store.fail_submit(key, f"not submitted: {row.provider} has no job under idempotency key {key}")
    else:
        store.complete_submit(key, found)


def _stored_spec(row: StoredJob) -> JobSpec | None:
    """The spec a stored submission was made with, when it still reads as one."""
    try:
        return JobSpec.model_validate(row.spec)
    except ValidationError:
        return None


def _provider_for_row(row: StoredJob, store: JobStore) -> Provider[Any]:
    """The provider a stored submission was made with (its profile and settings, when still valid)."""
    try:
        config = resolve(provider=row.provider, profile=row.profile, settings=row.settings)
    except ConfigError:
        if row.profile is None:
            raise
        config = resolve(provider=row.provider, settings=row.settings)  # the profile is gone or changed
    return _provider_for(config, store)


def _able_to(action: str, caps: Capabilities) -> bool:
    """Whether a provider's capabilities say it can ``pause`` or ``resume`` a job."""
    return caps.pause or (action == "resume" and bool(caps.extra.get("resume")))


def _not_offered(action: str, exc: NotSupportedError) -> NotSupportedError:
    """The provider's refusal to pause/resume, naming the providers that can (pure but for the
    registry's capability tables, which need no provider SDK)."""
    if exc.alternatives:
        return exc
    others = sorted(_registry.capabilities().items())
    can = [name for name, caps in others if name not in (exc.provider, "fake") and _able_to(action, caps)]
    doing = {"pause": "pausing", "resume": "resuming"}[action]
    return NotSupportedError(
        f"{doing} a job is not offered", field=exc.field or action, provider=exc.provider, alternatives=can
    )


def _after_cancel(answer: JobRecord, read: Callable[[], JobRecord]) -> JobRecord:
    """The state to report after a cancel: the provider's answer when final, else the state read
    once more (the answer may describe the job as it was before the request took effect)."""
    if answer.done:
        return answer
    try:
        return read()
    except AnytuneError:
        return answer  # the cancel was sent; its answer is the best we know


def _outcome(record: JobRecord) -> None:
    """Raise for a job that ended without a result (shared by sync and async ``result``)."""
    if record.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise JobFailedError(record)


def _store_for_reading(config: ResolvedConfig) -> JobStore | None:
    """The job store for a read path, or None when none exists and none can be made there (a
    read-only home): reading a job never depends on recording it. A store that exists but fails
    (corrupt, locked) is reported: that is worth knowing."""
    try:
        return _store_for(config)
    except StoreError as exc:
        if (config.home / "jobs.db").exists():
            raise
        _warn_unsaved(exc)
        return None


def _stored_row(ref: str) -> StoredJob | None:
    path = _home() / "jobs.db"
    if not path.exists():
        return None  # no store yet: nothing to re-use, and reading must not create one
    return JobStore(path).get(ref)


def _attach_config(
    ref: str, profile: str | None, settings: Mapping[str, Any] | None, given: Provider[Any] | None = None
) -> tuple[ResolvedConfig, JobStore | None, str]:
    try:
        provider_name, job_id = parse_ref(ref)
    except ValueError as exc:
        raise ConfigError(str(exc), field="ref") from exc
    if given is not None:
        if given.name != provider_name:
            raise ConfigError(f"{ref} is a {provider_name!r} job, not one of {given.name!r}", field="provider")
        config = _resolve_for(given, profile, settings)
        return config, _store_for_reading(config), job_id
    row = _stored_row(ref)
    if row is not None:
        # Re-use what the job was created with (endpoint, workspace...); explicit arguments win.
        settings = {**row.settings, **(settings or {})}
        if profile is None and row.profile is not None:
            try:
                config = resolve(provider=provider_name, profile=row.profile, settings=settings)
                return config, _store_for_reading(config), job_id
            except ConfigError:
                pass  # the profile is gone or changed: fall back to the environment
    config = resolve(provider=provider_name, profile=profile, settings=settings)
    return config, _store_for_reading(config), job_id


def _home() -> Path:
    from anytune._home import anytune_home

    return anytune_home()


# -- listing, deleting and pruning stored jobs -------------------------------------------------------
#: Rows a listing asks their provider about: jobs that were not finished when last seen.
_REFRESHABLE = frozenset(s.value for s in JobStatus if not s.is_terminal)
#: What ``prune`` removes unless told otherwise: jobs that ended without a result, and submissions
#: that surely made no job. Never a job that may still run, nor one whose creation is unknown.
PRUNE_DEFAULT: tuple[str, ...] = (JobStatus.FAILED.value, JobStatus.CANCELLED.value, SUBMIT_FAILED)


def _existing_store() -> JobStore | None:
    """The job store for reading, or None when there is none yet (reading never creates one)."""
    path = _home() / "jobs.db"
    return JobStore(path) if path.exists() else None


def _check_provider_filter(provider: str | None, store: JobStore | None) -> None:
    """A provider filter names a registered provider, or one that has rows in the store."""
    if not provider:
        return
    known = set(_registry.entries()) | (store.providers() if store is not None else set())
    if provider not in known:
        raise ConfigError(
            f"unknown provider {provider!r}; valid providers: {', '.join(sorted(known))}", field="provider"
        )


def _lane(row: StoredJob) -> tuple[str, str | None, str]:
    """Rows refreshed through one provider instance: same provider, profile and settings."""
    return row.provider, row.profile, repr(sorted(row.settings.items()))


def _refreshed(store: JobStore, rows: builtins.list[StoredJob], timeout: float | None) -> builtins.list[StoredJob]:
    """``rows`` with every unfinished job's state fetched again (concurrently, by provider, within
    ``timeout`` seconds) and saved (best effort); a job whose provider did not answer keeps its
    stored state, marked ``stale`` with the reason."""
    todo = [r for r in rows if r.ref is not None and r.job_id is not None and r.status in _REFRESHABLE]
    if not todo:
        return rows
    providers: dict[tuple[str, str | None, str], Provider[Any]] = {}

    def fetch(row: StoredJob) -> JobRecord:
        impl = providers.get(_lane(row))
        if impl is None:  # built in the worker: a provider that is slow to set up holds only its lane
            impl = providers.setdefault(_lane(row), _provider_for_row(row, store))
        assert row.job_id is not None
        return impl.get(row.job_id)

    answers = fetch_all(todo, fetch, lane=_lane, timeout=timeout, describe=lambda row: row.provider)
    now: dict[str, StoredJob] = {}
    for row, answer in zip(todo, answers, strict=True):
        record = answer.value
        if record is None:
            now[row.idempotency_key] = row.model_copy(update={"stale": True, "stale_reason": answer.error})
            continue
        _save_quietly(store, record)
        update = {"status": record.status.value, "raw_status": record.raw_status, "record": record}
        now[row.idempotency_key] = row.model_copy(update={**update, "updated_at": utcnow()})
    return [now.get(r.idempotency_key, r) for r in rows]


def _as_cached(row: StoredJob) -> StoredJob:
    if row.ref is None or row.status not in _REFRESHABLE:
        return row
    return row.model_copy(update={"stale": True, "stale_reason": "not refreshed (cached view)"})


def _list_jobs(
    provider: str | None,
    status: JobStatus | str | Iterable[JobStatus | str] | None,
    limit: int | None,
    refresh: bool,
    timeout: float | None,
) -> builtins.list[StoredJob]:
    wanted = row_statuses(status)
    store = _existing_store()
    _check_provider_filter(provider, store)
    if store is None:
        return []
    if not refresh:
        return [_as_cached(r) for r in store.list(provider=provider, status=wanted, limit=limit)]
    if wanted is None:
        return _refreshed(store, store.list(provider=provider, limit=limit), timeout)
    # The filter applies to the state now: an unfinished row may have reached a wanted status.
    rows = _refreshed(store, store.list(provider=provider, status=wanted | _REFRESHABLE, limit=None), timeout)
    rows = [r for r in rows if r.status in wanted]
    return rows if limit is None else rows[:limit]


def _delete_job(ref: str, force: bool, timeout: float | None) -> StoredJob:
    try:
        parse_ref(ref)
    except ValueError as exc:
        raise ConfigError(str(exc), field="ref") from exc
    store = _existing_store()
    row = store.get(ref) if store is not None else None
    if store is None or row is None:
        raise JobNotFoundError(ref, "the job store has no such job")
    if row.status in _REFRESHABLE and not force:
        (row,) = _refreshed(store, [row], timeout)  # it may have finished since it was last seen
        if row.status in _REFRESHABLE:
            seen = f"was {row.status} when last seen ({row.stale_reason})" if row.stale else f"is {row.status}"
            raise UsageError(
                f"job {ref} {seen}: deleting its row does not stop it, and anytune would lose track of it; "
                f"cancel it first (anytune jobs cancel {ref}), or delete the row anyway with force (--force)"
            )
    removed = store.delete(ref)
    if removed is None:
        raise JobNotFoundError(ref, "the job store has no such job")  # another process deleted it
    return removed


def _prune_jobs(
    status: JobStatus | str | Iterable[JobStatus | str],
    older_than: timedelta | float | None,
    provider: str | None,
    dry_run: bool,
) -> builtins.list[StoredJob]:
    wanted = row_statuses(status)
    if not wanted:
        raise ConfigError("name at least one status to prune", field="status")
    try:
        age = timedelta(seconds=older_than) if isinstance(older_than, int | float) else older_than
    except (OverflowError, ValueError) as exc:  # inf, nan, or past timedelta's range
        raise ConfigError(f"expected a finite age of 0 or more, got {older_than}", field="older_than") from exc
    if age is not None and age < timedelta(0):
        raise ConfigError(f"expected an age of 0 or more, got {age}", field="older_than")
    store = _existing_store()
    _check_provider_filter(provider, store)
    if store is None:
        return []
    try:
        before = utcnow() - age if age is not None else None
    except OverflowError:  # older than the calendar goes: no row is that old
        return []
    return store.prune(status=wanted, created_before=before, provider=provider, dry_run=dry_run)


class _Handle:
    """What the sync and async handles share: identity, the last known record, the poll policy."""

    def __init__(
        self,
        record: JobRecord,
        provider: Provider[Any],
        *,
        store: JobStore | None,
        clock: Callable[[], float],
        poll: PollPolicy | None,
    ) -> None:
        self._record = record
        self._provider = provider
        self._store = store
        self._clock = clock
        self._poll = poll or PollPolicy(initial=provider.poll_interval, maximum=max(30.0, provider.poll_interval))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ref} {self._record.status.value}>"

    @property
    def ref(self) -> str:
        """``provider:id``; pass it to ``get`` from any process."""
        return self._record.ref

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def provider(self) -> str:
        return self._record.provider

    @property
    def record(self) -> JobRecord:
        """The last known state (no I/O); ``refresh()`` fetches a new one."""
        return self._record

    def _follow(self, timeout: float | None, after: str | None) -> Follower:
        return Follower(self.ref, self._poll, self._clock, timeout, after)


class FineTuneJob(_Handle):
    """A handle to one fine-tuning job.

    Create one with :meth:`create`, re-attach with :meth:`get`, enumerate with :meth:`list`.

    Args:
        record: the last known state.
        provider: the provider instance that serves it.
        store: the job store to keep current.
        sleep: how to wait between polls (inject a fake in tests).
        clock: a monotonic clock for deadlines.
        poll: the back-off policy; by default the provider's suggested interval.
    """

    def __init__(
        self,
        record: JobRecord,
        provider: Provider[Any],
        *,
        store: JobStore | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        poll: PollPolicy | None = None,
    ) -> None:
        super().__init__(record, provider, store=store, clock=clock, poll=poll)
        self._sleep = sleep

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        spec: JobSpec | Mapping[str, Any] | None = None,
        *,
        provider: ProviderArg = None,
        profile: str | None = None,
        settings: Mapping[str, Any] | None = None,
        validate_data: bool = True,
        store: JobStore | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> FineTuneJob:
        """Validate everything, record the job, submit it, and return at once.

        Args:
            spec: a :class:`JobSpec` or mapping; keyword ``fields`` (``base_model=``,
                ``training_file=``, ``hyperparameters=``, ``lora=``...) override it.
            provider: a provider name or a profile name; default from the environment/profile.
            profile: a profile from ``anytune.toml``.
            settings: provider settings that override the profile's.
            validate_data: run the dataset checks (on by default; off only for data the provider
                checks itself).
            store: a job store (default: the one under ``ANYTUNE_HOME``).
            idempotency_key: the key the job is created under (1 to 64 letters, digits, ``-``,
                ``_``; default: a fresh one). A create repeated with the same key and spec never
                makes a second job: it returns the job the first one made, or creates it once.
                Pass ``SubmitOutcomeUnknownError.idempotency_key`` to settle a create whose
                outcome was unknown.

        Raises:
            ConfigError, NotSupportedError, DataValidationError: before anything is sent (a
                ConfigError too for a key already used with another spec).
            SubmitOutcomeUnknownError: the create failed ambiguously and the lookup could not
                tell whether the job exists; it is stored as ``unknown`` (see :meth:`reconcile`).
            ProviderError: the service refused.
        """
        prep = _prepare(
            spec,
            fields,
            provider=provider,
            profile=profile,
            settings=settings,
            validate_data=validate_data,
            store=store,
        )
        key = _key_for(idempotency_key)
        earlier = _submit_locally_recorded(prep, key, explicit=idempotency_key is not None)
        try:
            if earlier is not None and earlier.job_id is not None:
                record = prep.provider.get(earlier.job_id)  # created before under this key
            else:
                record = prep.provider.submit(prep.submitted, idempotency_key=key)
        except BaseException as exc:
            instead = _failed_submit(prep.store, key, earlier, exc)
            if instead is not None:
                raise instead from exc
            raise
        prep.store.complete_submit(key, record)
        return cls(record, prep.provider, store=prep.store)

    @classmethod
    def reconcile(
        cls,
        *,
        provider: str | Provider[Any] | None = None,
        store: JobStore | None = None,
        stale_after: float = 3600.0,
    ) -> builtins.list[StoredJob]:
        """Resolve submissions whose outcome is unknown by looking their idempotency keys up.

        A create that failed ambiguously, and whose lookup failed too, is stored as ``unknown``
        (so is a ``submitting`` row older than ``stale_after`` seconds: its process died). For
        each, the provider's :meth:`~anytune.Provider.find` decides: found, the row becomes that
        job; surely absent, ``submit_failed`` ("not submitted"); the lookup failing or not
        offered, it stays ``unknown`` with the reason in ``submit_error``. Nothing is created.

        Args:
            provider: only this provider's submissions (a name), or an instance to look up with.
            store: a job store (default: the one under ``ANYTUNE_HOME``).
            stale_after: seconds after which a ``submitting`` row counts as abandoned.

        Returns:
            The rows looked at, as they are now (oldest first).
        """
        the_store = store or JobStore(_home() / "jobs.db")
        instance: Provider[Any] | None = None
        name: str | None = None
        if isinstance(provider, Provider):
            instance, name = provider, provider.name
        else:
            name = provider
        done: builtins.list[StoredJob] = []
        for row in the_store.unresolved(provider=name, stale_after=stale_after):
            _reconcile_row(the_store, row, instance)
            now = the_store.by_key(row.idempotency_key)
            done.append(now if now is not None else row)
        return done

    @classmethod
    def plan(
        cls,
        spec: JobSpec | Mapping[str, Any] | None = None,
        *,
        provider: ProviderArg = None,
        profile: str | None = None,
        settings: Mapping[str, Any] | None = None,
        validate_data: bool = True,
        **fields: Any,
    ) -> SubmitPlan:
        """Dry run: validate everything and return the provider-native requests ``create`` would
        send (uploads by file, size and sha256). Nothing is sent or recorded; the only network
        call is the provider's read-only look-up of the base model (a Hub id), skipped offline
        where the service would download the model itself."""
        prep = _prepare(
            spec,
            fields,
            provider=provider,
            profile=profile,
            settings=settings,
            validate_data=validate_data,
            store=None,
            dry_run=True,
        )
        plan = prep.provider.plan(prep.submitted, idempotency_key="<assigned at submit>")
        if not prep.converted:
            return plan
        notes = [f"converted {m.describe()}" for m in prep.converted]
        if prep.spec.data is not None:
            section = prep.spec.data.model_dump(mode="json", exclude_none=True)
            notes.insert(0, "data: " + ", ".join(f"{k}={v!r}" for k, v in section.items()))
        return plan.model_copy(update={"notes": [*notes, *plan.notes]})

    @classmethod
    def get(
        cls,
        ref: str,
        *,
        profile: str | None = None,
        settings: Mapping[str, Any] | None = None,
        provider: Provider[Any] | None = None,
    ) -> FineTuneJob:
        """Re-attach to a job by reference (``openai:ftjob-...``, ``fake:fakejob-...``).

        Args:
            ref: ``provider:id``.
            profile: a profile from ``anytune.toml``.
            settings: provider settings that override those the job was created with.
            provider: a provider instance to use instead of one built from configuration.

        Raises:
            JobNotFoundError: neither the provider nor the store knows it.
        """
        config, store, job_id = _attach_config(ref, profile, settings, provider)
        impl = _provider_for(config, store, provider)
        impl.check_job_id(job_id)
        record = impl.get(job_id)
        _resolve_submission(store, impl, record)
        _save_quietly(store, record, config.profile)
        return cls(record, impl, store=store)

    @classmethod
    def list(
        cls,
        *,
        provider: str | None = None,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        limit: int | None = 50,
        refresh: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> builtins.list[StoredJob]:
        """Jobs created through anytune on this machine, newest first, in their current state.

        Every job that was not finished when last seen is asked of its provider again (all at
        once, each provider in its own lane, ``timeout`` seconds in all) and the answer saved to
        the job store (best effort: a store that cannot be written costs a warning). A job whose
        provider did not answer in time, or failed, keeps its stored state with ``stale`` set and
        ``stale_reason`` saying why. Submissions without a job (``submitting``, ``unknown``,
        ``submit_failed``) are listed as stored. Reading never creates a store.

        Args:
            provider: only this provider's jobs (a registered provider name).
            status: only jobs in this status now (or any of several: a list, or comma-separated);
                job statuses and ``submitting``, ``submit_failed``, ``unknown``.
            limit: at most this many rows (None: all).
            refresh: False for the offline view: stored states only, nothing asked (unfinished
                jobs are marked ``stale``).
            timeout: seconds to wait for the providers (None: no limit).

        Raises:
            ConfigError: an unknown status or provider (the message lists the valid ones).
        """
        return _list_jobs(provider, status, limit, refresh, timeout)

    @classmethod
    def delete(cls, ref: str, *, force: bool = False, timeout: float | None = DEFAULT_TIMEOUT) -> StoredJob:
        """Remove job ``ref`` from the job store: ``list`` no longer shows it, ``get(ref)`` still
        works. The job itself is not touched: nothing is cancelled, no file or folder removed (a
        local run directory stays where ``record.output["run_dir"]`` says).

        Args:
            ref: ``provider:id``.
            force: remove the row of a job that is not finished too (it keeps running untracked).
            timeout: seconds to ask the provider whether a job last seen unfinished has finished.

        Returns:
            The row removed.

        Raises:
            JobNotFoundError: the store has no such job.
            UsageError: the job is not finished (cancel it first) and ``force`` is False.
        """
        return _delete_job(ref, force, timeout)

    @classmethod
    def prune(
        cls,
        *,
        status: JobStatus | str | Iterable[JobStatus | str] = PRUNE_DEFAULT,
        older_than: timedelta | float | None = None,
        provider: str | None = None,
        dry_run: bool = False,
    ) -> builtins.list[StoredJob]:
        """Remove the job store's rows in one of ``status``, created more than ``older_than`` ago.

        Rows are judged by their stored state (``list`` brings it up to date). By default only
        jobs that failed or were cancelled and submissions that made no job go; a job that may
        still run, or a submission of unknown outcome, goes only when its status is named.

        Args:
            status: the statuses to remove (default :data:`PRUNE_DEFAULT`).
            older_than: only rows created at least this long ago (seconds or a timedelta).
            provider: only this provider's rows.
            dry_run: list what would go; remove nothing.

        Returns:
            The rows removed (or that would be), newest first.

        Raises:
            ConfigError: an unknown status or provider, no status, a negative age.
        """
        return _prune_jobs(status, older_than, provider, dry_run)

    # -- state ----------------------------------------------------------------------------------
    def _remember(self, record: JobRecord) -> JobRecord:
        self._record = record
        _save_quietly(self._store, record)
        return record

    def refresh(self) -> JobRecord:
        """Fetch the current state from the provider (and update the job store)."""
        return self._remember(self._provider.get(self.id))

    def status(self) -> JobStatus:
        """The current status (fetched; a finished job is not asked again)."""
        return self._record.status if self._record.done else self.refresh().status

    def done(self) -> bool:
        """Whether the job reached a terminal status."""
        return self.status().is_terminal

    def events(self, after: str | None = None) -> builtins.list[Event]:
        """Events so far, oldest first (``after``: resume past that event id)."""
        return list(self._provider.events(self.id, after))

    def metrics(self) -> builtins.list[MetricPoint]:
        return self._provider.metrics(self.id)

    def checkpoints(self) -> builtins.list[Checkpoint]:
        return self._provider.checkpoints(self.id)

    def cancel(self) -> JobRecord:
        """Ask the provider to stop the job; returns its state after the request.

        A provider that stops jobs at once reports ``cancelled``. One that stops them in the
        background (the local worker stops at its next step; Azure ML's ``CancelRequested``)
        reports what it says meanwhile, read again after the request, raw status included:
        :meth:`wait` follows it to ``cancelled``. A finished job stays as it was.
        """
        return self._remember(_after_cancel(self._provider.cancel(self.id), lambda: self._provider.get(self.id)))

    def pause(self) -> JobRecord:
        """Ask the provider to pause the job (a hosted job that can continue later with :meth:`resume`).

        Raises:
            NotSupportedError: the provider cannot pause jobs (the message names those that can).
        """
        try:
            record = self._provider.pause(self.id)
        except NotSupportedError as exc:
            raise _not_offered("pause", exc) from exc
        return self._remember(record)

    def resume(self) -> JobRecord:
        """Continue a job: a paused hosted job where it stopped; a stopped local run (its worker
        killed, or cancelled) from its last checkpoint.

        Raises:
            NotSupportedError: the provider cannot resume jobs (the message names those that can).
            InvalidRequestError: the job is still running or already succeeded.
        """
        try:
            record = self._provider.resume(self.id)
        except NotSupportedError as exc:
            raise _not_offered("resume", exc) from exc
        return self._remember(record)

    # -- following ------------------------------------------------------------------------------
    def stream(self, *, timeout: float | None = None, after: str | None = None) -> Iterator[Event]:
        """Yield events oldest first as they happen, until the job finishes.

        Raises:
            WaitTimeoutError: ``timeout`` seconds passed first.
        """
        follow = self._follow(timeout, after)
        while True:
            record = self.refresh()
            new = list(follow.cursor.accept(self._provider.events(self.id, follow.cursor.last)))
            yield from new
            delay = follow.next_delay(record, bool(new))
            if delay is None:
                return
            self._sleep(delay)

    def wait(self, timeout: float | None = None, on_event: OnEvent | None = None) -> JobRecord:
        """Block until the job finishes and return its final record, whatever the outcome.

        Args:
            timeout: seconds to wait at most (``None``: no limit).
            on_event: called with each new event, oldest first.

        Raises:
            WaitTimeoutError: the job was still running at the deadline (it keeps running).
        """
        for event in self.stream(timeout=timeout):
            if on_event is not None:
                on_event(event)
        return self._record

    def result(self, timeout: float | None = None) -> FineTunedModel:
        """Wait for the job and return what it produced.

        Raises:
            JobFailedError: the job failed or was cancelled (carries the provider's error).
            WaitTimeoutError: ``timeout`` passed first.
        """
        record = self._record if self._record.done else self.wait(timeout)
        _outcome(record)
        return self._provider.result(record).attach(self._provider)

    def evaluate(
        self,
        data: str,
        *,
        metrics: Sequence[str] | None = None,
        max_examples: int | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        call_as: Mapping[str, str] | None = None,
        lm_eval_tasks: Sequence[str] = (),
        lm_eval_include: str | None = None,
        judge: Any | None = None,
        device: str | None = None,
        onnx: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> EvalReport:
        """The base model and the fine-tuned model side by side on the held-out examples of ``data``,
        kept with the job in the job store (``evaluations()``; ``anytune eval``).

        Results with weights (local, Hugging Face Jobs) are loaded here and give loss and
        perplexity too; hosted models answer through their provider's chat API (``chat``), the
        fine-tuned model and the job's base model alike; ``call_as`` names them for that API
        (``{"fine-tuned": "my-ft-deployment", "base": "my-base-deployment"}`` on Azure OpenAI,
        which serves models by deployment). See :meth:`FineTunedModel.evaluate` for the other
        arguments (``onnx``: evaluate the result's ONNX export in that folder); ``progress(done,
        total)`` is called after each batch.

        Raises:
            UsageError: the job has not succeeded; a metric this result cannot give.
            NotSupportedError: the provider cannot answer chat messages here.
            DataValidationError: the data, naming location and field.
        """
        return _evaluate_job(
            self._provider,
            self._record,
            self._store,
            data,
            {
                "metrics": metrics,
                "max_examples": max_examples,
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "seed": seed,
                "batch_size": batch_size,
                "call_as": call_as,
                "lm_eval_tasks": lm_eval_tasks,
                "lm_eval_include": lm_eval_include,
                "judge": judge,
                "device": device,
                "onnx": onnx,
                "progress": progress,
            },
        )

    def evaluations(self) -> builtins.list[EvalReport]:
        """The evaluation reports kept with this job, oldest first (none without a job store)."""
        from anytune._eval.report import EvalReport

        return [] if self._store is None else [EvalReport.model_validate(r) for r in self._store.evaluations(self.ref)]


class AsyncFineTuneJob(_Handle):
    """The coroutine twin of :class:`FineTuneJob` (same methods, ``await``-ed)."""

    def __init__(
        self,
        record: JobRecord,
        provider: Provider[Any],
        *,
        store: JobStore | None = None,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        poll: PollPolicy | None = None,
    ) -> None:
        import asyncio

        super().__init__(record, provider, store=store, clock=clock, poll=poll)
        self._sleep = sleep or asyncio.sleep

    @classmethod
    async def create(
        cls,
        spec: JobSpec | Mapping[str, Any] | None = None,
        *,
        provider: ProviderArg = None,
        profile: str | None = None,
        settings: Mapping[str, Any] | None = None,
        validate_data: bool = True,
        store: JobStore | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> AsyncFineTuneJob:
        """See :meth:`FineTuneJob.create`."""
        prep = await _to_thread(
            _prepare,
            spec,
            fields,
            provider=provider,
            profile=profile,
            settings=settings,
            validate_data=validate_data,
            store=store,
        )
        key = _key_for(idempotency_key)
        earlier = await _to_thread(_submit_locally_recorded, prep, key, idempotency_key is not None)
        try:
            if earlier is not None and earlier.job_id is not None:
                record = await prep.provider.aget(earlier.job_id)  # created before under this key
            else:
                record = await prep.provider.asubmit(prep.submitted, idempotency_key=key)
        except BaseException as exc:
            instead = await _to_thread(_failed_submit, prep.store, key, earlier, exc)
            if instead is not None:
                raise instead from exc
            raise
        await _to_thread(prep.store.complete_submit, key, record)
        return cls(record, prep.provider, store=prep.store)

    @classmethod
    async def reconcile(
        cls,
        *,
        provider: str | Provider[Any] | None = None,
        store: JobStore | None = None,
        stale_after: float = 3600.0,
    ) -> builtins.list[StoredJob]:
        """See :meth:`FineTuneJob.reconcile`."""
        return await _to_thread(FineTuneJob.reconcile, provider=provider, store=store, stale_after=stale_after)

    @classmethod
    async def plan(
        cls,
        spec: JobSpec | Mapping[str, Any] | None = None,
        *,
        provider: ProviderArg = None,
        profile: str | None = None,
        settings: Mapping[str, Any] | None = None,
        validate_data: bool = True,
        **fields: Any,
    ) -> SubmitPlan:
        """See :meth:`FineTuneJob.plan` (run in a thread: it reads and checks the data files)."""
        return await _to_thread(
            FineTuneJob.plan,
            spec,
            provider=provider,
            profile=profile,
            settings=settings,
            validate_data=validate_data,
            **fields,
        )

    @classmethod
    async def get(
        cls,
        ref: str,
        *,
        profile: str | None = None,
        settings: Mapping[str, Any] | None = None,
        provider: Provider[Any] | None = None,
    ) -> AsyncFineTuneJob:
        """See :meth:`FineTuneJob.get`."""
        config, store, job_id = await _to_thread(_attach_config, ref, profile, settings, provider)
        impl = _provider_for(config, store, provider)
        impl.check_job_id(job_id)
        record = await impl.aget(job_id)
        await _to_thread(_resolve_submission, store, impl, record)
        await _to_thread(_save_quietly, store, record, config.profile)
        return cls(record, impl, store=store)

    @classmethod
    async def list(
        cls,
        *,
        provider: str | None = None,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        limit: int | None = 50,
        refresh: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> builtins.list[StoredJob]:
        """See :meth:`FineTuneJob.list`."""
        return await _to_thread(_list_jobs, provider, status, limit, refresh, timeout)

    @classmethod
    async def delete(cls, ref: str, *, force: bool = False, timeout: float | None = DEFAULT_TIMEOUT) -> StoredJob:
        """See :meth:`FineTuneJob.delete`."""
        return await _to_thread(_delete_job, ref, force, timeout)

    @classmethod
    async def prune(
        cls,
        *,
        status: JobStatus | str | Iterable[JobStatus | str] = PRUNE_DEFAULT,
        older_than: timedelta | float | None = None,
        provider: str | None = None,
        dry_run: bool = False,
    ) -> builtins.list[StoredJob]:
        """See :meth:`FineTuneJob.prune`."""
        return await _to_thread(_prune_jobs, status, older_than, provider, dry_run)

    async def _remember(self, record: JobRecord) -> JobRecord:
        self._record = record
        if self._store is not None:
            await _to_thread(_save_quietly, self._store, record)
        return record

    async def refresh(self) -> JobRecord:
        return await self._remember(await self._provider.aget(self.id))

    async def status(self) -> JobStatus:
        return self._record.status if self._record.done else (await self.refresh()).status

    async def done(self) -> bool:
        return (await self.status()).is_terminal

    async def events(self, after: str | None = None) -> builtins.list[Event]:
        return await self._provider.aevents(self.id, after)

    async def metrics(self) -> builtins.list[MetricPoint]:
        return await self._provider.ametrics(self.id)

    async def checkpoints(self) -> builtins.list[Checkpoint]:
        return await self._provider.acheckpoints(self.id)

    async def cancel(self) -> JobRecord:
        """See :meth:`FineTuneJob.cancel`."""
        answer = await self._provider.acancel(self.id)
        if not answer.done:
            with contextlib.suppress(AnytuneError):  # as in _after_cancel
                answer = await self._provider.aget(self.id)
        return await self._remember(answer)

    async def pause(self) -> JobRecord:
        """See :meth:`FineTuneJob.pause`."""
        try:
            record = await _to_thread(self._provider.pause, self.id)
        except NotSupportedError as exc:
            raise await _to_thread(_not_offered, "pause", exc) from exc
        return await self._remember(record)

    async def resume(self) -> JobRecord:
        """See :meth:`FineTuneJob.resume`."""
        try:
            record = await _to_thread(self._provider.resume, self.id)
        except NotSupportedError as exc:
            raise await _to_thread(_not_offered, "resume", exc) from exc
        return await self._remember(record)

    async def stream(self, *, timeout: float | None = None, after: str | None = None) -> AsyncIterator[Event]:
        follow = self._follow(timeout, after)
        while True:
            record = await self.refresh()
            new = list(follow.cursor.accept(await self._provider.aevents(self.id, follow.cursor.last)))
            for event in new:
                yield event
            delay = follow.next_delay(record, bool(new))
            if delay is None:
                return
            await self._sleep(delay)

    async def wait(self, timeout: float | None = None, on_event: OnEvent | None = None) -> JobRecord:
        async for event in self.stream(timeout=timeout):
            if on_event is not None:
                on_event(event)
        return self._record

    async def result(self, timeout: float | None = None) -> FineTunedModel:
        record = self._record if self._record.done else await self.wait(timeout)
        _outcome(record)
        return (await self._provider.aresult(record)).attach(self._provider)

    async def evaluate(
        self,
        data: str,
        *,
        metrics: Sequence[str] | None = None,
        max_examples: int | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        call_as: Mapping[str, str] | None = None,
        lm_eval_tasks: Sequence[str] = (),
        lm_eval_include: str | None = None,
        judge: Any | None = None,
        device: str | None = None,
        onnx: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> EvalReport:
        """See :meth:`FineTuneJob.evaluate` (run in a worker thread)."""
        options = {
            "metrics": metrics,
            "max_examples": max_examples,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "seed": seed,
            "batch_size": batch_size,
            "call_as": call_as,
            "lm_eval_tasks": lm_eval_tasks,
            "lm_eval_include": lm_eval_include,
            "judge": judge,
            "device": device,
            "onnx": onnx,
            "progress": progress,
        }
        return await _to_thread(_evaluate_job, self._provider, self._record, self._store, data, options)

    async def evaluations(self) -> builtins.list[EvalReport]:
        """See :meth:`FineTuneJob.evaluations`."""
        from anytune._eval.report import EvalReport

        if self._store is None:
            return []
        rows = await _to_thread(self._store.evaluations, self.ref)
        return [EvalReport.model_validate(r) for r in rows]
