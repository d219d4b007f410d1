"""Never two jobs, and never a lie about whether a job exists.

A create that fails ambiguously (the answer lost after the service may have acted) is looked up by
its idempotency key. When that lookup fails too, the job is recorded as ``unknown`` (not "not
submitted") and :class:`SubmitOutcomeUnknownError` says so; a repeated create with the same key,
``FineTuneJob.reconcile()`` or ``anytune jobs reconcile`` resolves it, never a blind second create.

``FlakyFake`` is the fake service behind the real create-once mechanism, with scripted faults on
its create and on its lookup, the way an adapter meets them (the create's SDK error translated at
the boundary; the lookup's already an anytune error after its own read retries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from anytune import (
    AsyncFineTuneJob,
    ConfigError,
    FineTuneJob,
    JobRecord,
    JobSpec,
    JobStore,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
)
from anytune._boundary import boundary
from anytune._cli import reconcile_cmd
from anytune._create_once import DEFAULT_SETTLE, create_once
from anytune._retry import RetryPolicy
from anytune.errors import AnytuneError, NotSupportedError
from anytune.providers.fake import FakeProvider
from anytune.testing import FakeClock, FaultScript


class Lost(ConnectionError):
    """The SDK's dropped connection: the service may have acted."""


def _translate(exc: Exception) -> AnytuneError | None:
    return ServiceUnavailableError("connection lost", provider="fake") if isinstance(exc, Lost) else None


def unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("listing jobs failed", provider="fake", status_code=503)


class FlakyFake(FakeProvider):
    """The fake service, created once through ``create_once``; ``made`` counts jobs it made."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        creates: Iterable[BaseException | None] = (),
        late: Iterable[int] = (),
        lookups: Iterable[BaseException | None] = (),
        lag: int = 0,
        settle: float = 0.0,
    ) -> None:
        super().__init__(sleep=clock.sleep, clock=clock)
        self.creates = FaultScript(self._create, list(creates)).after(*late)
        self.lookups = FaultScript(self._lookup, list(lookups))
        self.lag, self.settle, self.made = lag, settle, 0

    def _create(self, spec: JobSpec, key: str) -> JobRecord:
        if FakeProvider.find(self, key) is None:
            self.made += 1
        return FakeProvider.submit(self, spec, idempotency_key=key)

    def _lookup(self, key: str) -> JobRecord | None:
        found = FakeProvider.find(self, key)
        if found is not None and self.lag > 0:  # the list has not caught up with the write
            self.lag -= 1
            return None
        return found

    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        key = idempotency_key
        existing = self.lookups(key)  # a retried submit, as every adapter looks first
        if existing is not None:
            return existing
        with boundary(_translate):
            return create_once(
                lambda: self.creates(spec, key),
                lambda: self.lookups(key),
                is_ambiguous=lambda e: isinstance(e, Lost),
                retry_on=lambda e: isinstance(e, Lost),
                policy=RetryPolicy(max_attempts=4, jitter=0.0, deadline=120.0),
                settle=self.settle,
                **self.timing,
            )


def create(provider: Any, training_file: Path, **fields: Any) -> FineTuneJob:
    fields.setdefault("fake", {"seconds": 0.1})
    return FineTuneJob.create(provider=provider, base_model="tiny", training_file=training_file, **fields)


def store(home: Path) -> JobStore:
    return JobStore(home / "jobs.db")


def test_unavailable_lookups_after_an_ambiguous_create_are_retried(
    anytune_home: Path, chat_jsonl: Path, clock: FakeClock
) -> None:
    # The create went through but its answer was lost; the list answers 503 twice, then works.
    fake = FlakyFake(clock, creates=[Lost()], late=[1], lookups=[None, unavailable(), unavailable()])
    job = create(fake, chat_jsonl)
    assert fake.made == 1 and fake.creates.calls == 1
    assert fake.lookups.calls == 4  # before the create, then retried within the deadline
    (row,) = store(anytune_home).list()
    assert row.ref == job.ref and row.status == job.record.status.value


def test_a_lookup_that_keeps_failing_records_the_job_unknown_and_reconcile_finds_it(
    anytune_home: Path, chat_jsonl: Path, clock: FakeClock
) -> None:
    fake = FlakyFake(clock, creates=[Lost()], late=[1], lookups=[None] + [unavailable()] * 3)
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        create(fake, chat_jsonl)
    error = caught.value
    assert isinstance(error, ServiceUnavailableError) and error.provider == "fake"
    assert "unknown" in str(error) and error.idempotency_key in str(error)
    assert fake.made == 1 and fake.creates.calls == 1  # no second create while the fate was unknown

    (row,) = store(anytune_home).list()
    assert row.status == "unknown" and row.ref is None
    assert row.idempotency_key == error.idempotency_key
    assert row.submit_error is not None and "listing jobs failed" in row.submit_error

    # The service has recovered: reconcile (through the registry's fake provider) finds the job.
    (resolved,) = FineTuneJob.reconcile()
    assert resolved.ref == f"fake:{FakeProvider.job_id_for(error.idempotency_key)}"
    assert resolved.status not in ("unknown", "submit_failed") and resolved.submit_error is None
    assert FineTuneJob.get(resolved.ref).ref == resolved.ref
    assert FineTuneJob.reconcile() == []  # nothing left to resolve
    assert fake.made == 1


def test_a_repeated_create_with_the_key_resolves_an_unknown_outcome(
    anytune_home: Path, chat_jsonl: Path, clock: FakeClock
) -> None:
    fake = FlakyFake(clock, creates=[Lost()], late=[1], lookups=[None] + [unavailable()] * 3)
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        create(fake, chat_jsonl)
    job = create(fake, chat_jsonl, idempotency_key=caught.value.idempotency_key)
    assert fake.made == 1 and fake.creates.calls == 1  # found by its key, not made again
    (row,) = store(anytune_home).list()
    assert row.ref == job.ref and row.status == job.record.status.value


def test_reconcile_marks_surely_absent_jobs_not_submitted(
    anytune_home: Path, chat_jsonl: Path, clock: FakeClock
) -> None:
    # The connection dropped before the service acted, and the lookup could not tell.
    fake = FlakyFake(clock, creates=[Lost()], lookups=[None] + [unavailable()] * 3)
    with pytest.raises(SubmitOutcomeUnknownError):
        create(fake, chat_jsonl)
    assert fake.made == 0
    jobs = store(anytune_home)
    jobs.begin_submit(provider="fake", profile=None, spec={"base_model": "tiny"}, key="stale-1")

    (absent,) = FineTuneJob.reconcile()  # a submission still "submitting" is not an abandoned one
    assert absent.status == "submit_failed" and absent.ref is None
    assert absent.submit_error is not None and absent.submit_error.startswith("not submitted")
    (stale,) = FineTuneJob.reconcile(stale_after=0)
    assert stale.idempotency_key == "stale-1" and stale.status == "submit_failed"
    assert FineTuneJob.reconcile(stale_after=0) == []


def test_reconcile_keeps_unknown_what_it_cannot_tell(
    anytune_home: Path, chat_jsonl: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FlakyFake(clock, creates=[Lost()], late=[1], lookups=[None] + [unavailable()] * 3)
    with pytest.raises(SubmitOutcomeUnknownError):
        create(fake, chat_jsonl)

    seen: list[JobSpec | None] = []

    def down(self: FakeProvider, key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        seen.append(spec)
        raise unavailable()

    monkeypatch.setattr(FakeProvider, "find", down)
    (row,) = FineTuneJob.reconcile(provider="fake")
    assert row.status == "unknown" and row.submit_error is not None and "still unknown" in row.submit_error
    assert [s.base_model if s else None for s in seen] == ["tiny"]  # looked up with its spec

    def not_offered(self: FakeProvider, key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        raise NotSupportedError("no lookup", field="find", provider="fake")

    monkeypatch.setattr(FakeProvider, "find", not_offered)
    (row,) = FineTuneJob.reconcile()
    assert row.status == "unknown" and row.submit_error is not None and "idempotency_key=" in row.submit_error
    assert FineTuneJob.reconcile(provider="openai") == []  # other providers' rows only


def test_a_list_lagging_one_read_makes_no_second_job(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    fake = FlakyFake(clock, creates=[Lost()], late=[1], lag=1, settle=DEFAULT_SETTLE)
    job = create(fake, chat_jsonl)
    assert fake.made == 1 and fake.creates.calls == 1
    assert job.id == FakeProvider.job_id_for(store(anytune_home).list()[0].idempotency_key)


def test_repeating_a_create_with_the_same_key_returns_the_same_job(anytune_home: Path, chat_jsonl: Path) -> None:
    first = create("fake", chat_jsonl, idempotency_key="nightly-2026-12-02")
    again = create("fake", chat_jsonl, idempotency_key="nightly-2026-12-02")
    assert again.ref == first.ref
    assert len(store(anytune_home).list()) == 1 and len(list((anytune_home / "fake").glob("*.json"))) == 1


def test_a_key_is_checked_before_anything_is_sent(anytune_home: Path, chat_jsonl: Path) -> None:
    create("fake", chat_jsonl, idempotency_key="k-1")
    with pytest.raises(ConfigError, match="idempotency_key") as caught:
        create("fake", chat_jsonl, idempotency_key="k-1", suffix="other")
    assert "another job" in str(caught.value)
    with pytest.raises(ConfigError, match="idempotency_key"):
        create("fake", chat_jsonl, idempotency_key="no spaces allowed")
    assert len(store(anytune_home).list()) == 1 and len(list((anytune_home / "fake").glob("*.json"))) == 1


def test_an_interrupted_submit_is_unknown_not_failed(
    anytune_home: Path, chat_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: FakeProvider, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(FakeProvider, "submit", interrupted)
        create("fake", chat_jsonl)
    (row,) = store(anytune_home).list()
    assert row.status == "unknown"
    (row,) = FineTuneJob.reconcile()
    assert row.status == "submit_failed"


def test_async_create_records_unknown_and_reconciles(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    fake = FlakyFake(clock, creates=[Lost()], late=[1], lookups=[None] + [unavailable()] * 3)

    async def main() -> list[Any]:
        with pytest.raises(SubmitOutcomeUnknownError):
            await AsyncFineTuneJob.create(provider=fake, base_model="tiny", training_file=chat_jsonl)
        return await AsyncFineTuneJob.reconcile(provider=fake)

    (row,) = asyncio.run(main())
    assert row.ref is not None and fake.made == 1


def test_the_reconcile_command(
    anytune_home: Path, chat_jsonl: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a group, as `jobs` is
    reconcile_cmd.register(app)
    runner = CliRunner()
    assert runner.invoke(app, ["reconcile"]).exit_code == 0

    fake = FlakyFake(clock, creates=[Lost()], late=[1], lookups=[None] + [unavailable()] * 3)
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        create(fake, chat_jsonl)

    def down(self: FakeProvider, key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        raise unavailable()

    with monkeypatch.context() as patched:
        patched.setattr(FakeProvider, "find", down)
        still = runner.invoke(app, ["reconcile"])
    assert still.exit_code == reconcile_cmd.STILL_UNKNOWN_EXIT, still.output
    assert "still unknown" in still.output and caught.value.idempotency_key in still.output
    result = runner.invoke(app, ["reconcile", "--json"])
    assert result.exit_code == 0, result.output
    assert caught.value.idempotency_key in result.output and '"ref": "fake:fakejob-' in result.output


def test_getting_the_job_by_reference_resolves_an_unknown_outcome(
    anytune_home: Path, chat_jsonl: Path, clock: FakeClock
) -> None:
    fake = FlakyFake(clock, creates=[Lost()], late=[1], lookups=[None] + [unavailable()] * 3)
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        create(fake, chat_jsonl)
    key = caught.value.idempotency_key
    ref = f"fake:{FakeProvider.job_id_for(key)}"
    # The user finds the job in the service's console and attaches to it by reference.
    job = FineTuneJob.get(ref)
    assert job.ref == ref
    (row,) = store(anytune_home).list()
    assert (row.idempotency_key, row.ref, row.submit_error) == (key, ref, None)
    assert row.status != "unknown"
    assert FineTuneJob.reconcile() == []


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"metadata": {"anytune.idempotency_key": "k1"}}, "k1"),  # OpenAI, the fake
        ({"tags": {"anytune.idempotency_key": "k2", "other": "x"}}, "k2"),  # Azure ML
        ({"labels": {"anytune-idempotency_key": "k3"}}, "k3"),  # Hugging Face Jobs
        ({"metadata": {"user": "x"}}, None),
        ({"metadata": "not a mapping"}, None),
        ({}, None),
    ],
)
def test_the_key_a_service_kept_is_read_from_its_record(raw: dict[str, Any], key: str | None) -> None:
    from anytune import JobRecord, JobStatus

    record = JobRecord(provider="fake", id="fakejob-1", status=JobStatus.RUNNING, raw=raw)
    assert FakeProvider().submitted_under(record) == key
