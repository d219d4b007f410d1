"""State that tells the truth: ``jobs list`` shows current state, ``cancel`` its effect, ``create
--wait`` where the result is; rows go when no job was made, and ``jobs delete`` / ``jobs prune``
remove the rest on request."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from anytune import AsyncFineTuneJob, FineTuneJob, JobRecord, JobSpec, JobStatus
from anytune._registry import ProviderEntry, register
from anytune._store import JobStore
from anytune.errors import AuthenticationError, ConfigError, JobNotFoundError, ServiceUnavailableError, UsageError
from anytune.providers.fake import FakeProvider
from tests.clitools import jobs_in_store, run_cli

SAMPLES = Path(__file__).parents[1] / "samples"
TRAIN = str(SAMPLES / "data" / "train.jsonl")

# A job that is queued for half a minute, then runs for an hour.
RUNS = {
    "timeline": [{"at": 0, "status": "queued"}, {"at": 30, "status": "running"}, {"at": 3600, "status": "succeeded"}]
}


def home() -> Path:
    return Path(os.environ["ANYTUNE_HOME"])


def create(provider: str = "fake", **fake: Any) -> FineTuneJob:
    """A fake job (by default: validating, then finished after a minute)."""
    return FineTuneJob.create(provider=provider, base_model="tiny", training_file=TRAIN, fake=fake or {"seconds": 60})


def advance(job: FineTuneJob, seconds: float = 120) -> None:
    """Let ``seconds`` pass for a fake job (its timeline counts from its creation time), unseen by
    anyone: the store keeps what it was told at creation."""
    path = home() / "fake" / f"{job.id}.json"
    state = json.loads(path.read_text())
    state["created_at"] -= seconds
    path.write_text(json.dumps(state))


def stored(ref: str) -> str:
    row = JobStore(home() / "jobs.db").get(ref)
    assert row is not None
    return row.status


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    result = run_cli(capsys, "jobs", "list", "--json", *args)
    assert result.code == 0, result.err
    rows: list[dict[str, Any]] = json.loads(result.out)
    return rows


# -- jobs list: current state ------------------------------------------------------------------------


def test_list_shows_a_finished_job_as_finished_and_saves_it(capsys: pytest.CaptureFixture[str]) -> None:
    job = create()
    assert job.record.status is JobStatus.VALIDATING and stored(job.ref) == "validating"
    advance(job)  # it finishes; nobody asked
    (row,) = listed(capsys)
    assert row["ref"] == job.ref and row["status"] == "succeeded" and row["stale"] is False
    assert row["record"]["fine_tuned_model"].startswith("ft:tiny:")
    assert stored(job.ref) == "succeeded"  # saved back: the offline view is current now too
    (row,) = listed(capsys, "--cached")
    assert row["status"] == "succeeded" and row["stale"] is False


def test_cached_lists_stored_rows_without_asking_and_marks_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = create()
    advance(job)

    def no_network(self: FakeProvider, job_id: str) -> JobRecord:
        raise AssertionError("--cached asked the provider")

    monkeypatch.setattr(FakeProvider, "get", no_network)
    (row,) = listed(capsys, "--cached")
    assert row["status"] == "validating" and row["stale"] is True and "cached" in row["stale_reason"]
    plain = run_cli(capsys, "jobs", "list", "--cached")
    assert plain.code == 0 and job.ref in plain.out and "validating (stale)" in plain.out
    assert "stored state" in plain.err


def test_status_filter_applies_to_the_state_now(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = create(**RUNS), create(**RUNS)
    done = create()
    assert stored(a.ref) == stored(b.ref) == "queued"
    for job in (a, b, done):
        advance(job)  # two jobs started running meanwhile, one finished
    assert {r["ref"] for r in listed(capsys, "--status", "running")} == {a.ref, b.ref}
    assert [r["ref"] for r in listed(capsys, "--status", "succeeded")] == [done.ref]
    assert listed(capsys, "--status", "queued") == []
    both = listed(capsys, "--status", "running,succeeded", "--limit", "2")
    assert [r["ref"] for r in both] == [done.ref, b.ref]  # newest first, limit after the filter


def test_api_list_refreshes_too_and_async_mirrors_it() -> None:
    job = create()
    advance(job)
    (cached,) = FineTuneJob.list(refresh=False)
    assert cached.status == "validating" and cached.stale
    (row,) = asyncio.run(AsyncFineTuneJob.list(status=JobStatus.SUCCEEDED))
    assert row.ref == job.ref and row.record is not None and row.record.status is JobStatus.SUCCEEDED
    assert [r.ref for r in FineTuneJob.list(status=["failed", JobStatus.SUCCEEDED])] == [job.ref]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--status", "runing"], "valid statuses: validating, queued, running"),
        (["--status", "running,bogus"], "'bogus'"),
        (["--provider", "opnai"], "valid providers: "),
    ],
)
def test_unknown_status_or_provider_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    for cached in ([], ["--cached"]):  # with or without a store
        result = run_cli(capsys, "jobs", "list", *args, *cached)
        assert result.code == 2, result.err
        assert named in result.err and "Traceback" not in result.err
        create()
    assert "openai" in run_cli(capsys, "jobs", "list", "--provider", "opnai").err


def test_api_rejects_an_unknown_status() -> None:
    with pytest.raises(ConfigError, match="unknown status 'done'"):
        FineTuneJob.list(status="done")


class HangingProvider(FakeProvider):
    """A fake whose service stops answering reads when told to."""

    name: ClassVar[str] = "hanging"
    hang: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    def get(self, job_id: str) -> JobRecord:
        if self.hang.is_set():
            self.release.wait(30)
        return super().get(job_id)


@pytest.fixture
def hanging() -> Iterator[type[HangingProvider]]:
    register(ProviderEntry("hanging", f"{__name__}:HangingProvider"))
    HangingProvider.hang.clear()
    HangingProvider.release.clear()
    yield HangingProvider
    HangingProvider.release.set()  # let the abandoned worker thread end


def test_a_provider_that_hangs_costs_only_its_rows_and_the_timeout(
    capsys: pytest.CaptureFixture[str], hanging: type[HangingProvider]
) -> None:
    stuck = create("hanging")
    fine = create()
    advance(stuck)
    advance(fine)
    hanging.hang.set()
    started = time.monotonic()
    result = run_cli(capsys, "jobs", "list", "--timeout", "0.5")
    took = time.monotonic() - started
    assert result.code == 0, result.err
    assert took < 3, took
    assert f"stale: {stuck.ref} shows its stored state: no answer within 0.5 s from hanging" in result.err
    rows = {r["ref"]: r for r in listed(capsys, "--timeout", "0.2")}
    assert rows[fine.ref]["status"] == "succeeded" and rows[fine.ref]["stale"] is False
    assert rows[stuck.ref]["status"] == "validating" and rows[stuck.ref]["stale"] is True
    assert "no answer within 0.2 s" in rows[stuck.ref]["stale_reason"]
    hanging.release.set()


def test_a_provider_that_fails_marks_its_rows_stale(capsys: pytest.CaptureFixture[str]) -> None:
    job = create(**RUNS)
    (home() / "fake" / f"{job.id}.json").unlink()  # gone from the service
    (row,) = listed(capsys)
    assert row["status"] == "queued" and row["stale"] is True and "no longer knows it" in row["stale_reason"]


def test_list_reads_a_store_it_cannot_write(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job = create()
    advance(job)
    monkeypatch.setattr(
        "anytune._store.default_connect", lambda path: sqlite3.connect(path, timeout=0.05, isolation_level=None)
    )
    monkeypatch.setattr("anytune._job._warned", set())
    holder = sqlite3.connect(home() / "jobs.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        (row,) = listed(capsys)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert row["ref"] == job.ref and row["status"] == "succeeded"
    assert "not saved" in caplog.text and stored(job.ref) == "validating"


def test_list_succeeded_local_run_stored_as_queued(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The reported case: a local run finished while the store still said ``queued``."""
    from anytune.local_backend.rundir import RunDir
    from anytune.providers.local import LocalProvider

    provider = LocalProvider()
    run = RunDir(provider.runs_dir / provider.job_id_for("k"))
    run.create(JobSpec(base_model="tiny", training_file=Path(TRAIN)), idempotency_key="k")
    JobStore(home() / "jobs.db").save(JobRecord(provider="local", id=run.id, status=JobStatus.QUEUED))
    adapter = tmp_path / "adapter"
    run.write_result({"adapter_path": str(adapter)})
    run.set_status(JobStatus.SUCCEEDED)  # the worker finished and exited
    (row,) = listed(capsys)
    assert row["ref"] == f"local:{run.id}" and row["status"] == "succeeded" and row["stale"] is False
    assert row["record"]["fine_tuned_model"] == str(adapter)
    assert [r["ref"] for r in listed(capsys, "--status", "queued")] == []


# -- cancel: the state after the cancel ------------------------------------------------------------


class EchoCancelProvider(FakeProvider):
    """Answers a cancel with the job as it was before the request (as some services do)."""

    name: ClassVar[str] = "echo"

    def cancel(self, job_id: str) -> JobRecord:
        before = self.get(job_id)
        super().cancel(job_id)
        return before


class SlowCancelProvider(FakeProvider):
    """Stops jobs in the background: after a cancel the job runs on, saying it is cancelling."""

    name: ClassVar[str] = "slowcancel"

    def _marker(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.cancelling"

    def cancel(self, job_id: str) -> JobRecord:
        self._marker(job_id).touch()
        return super().get(job_id)

    def get(self, job_id: str) -> JobRecord:
        record = super().get(job_id)
        if self._marker(job_id).exists():
            return record.model_copy(update={"raw_status": "cancel_requested"})
        return record


@pytest.fixture
def cancel_providers() -> None:
    register(ProviderEntry("echo", f"{__name__}:EchoCancelProvider"))
    register(ProviderEntry("slowcancel", f"{__name__}:SlowCancelProvider"))


@pytest.mark.usefixtures("cancel_providers")
def test_cancel_returns_the_state_after_the_cancel(capsys: pytest.CaptureFixture[str]) -> None:
    job = create("echo", **RUNS)
    assert job.cancel().status is JobStatus.CANCELLED
    other = create("echo", **RUNS)
    result = run_cli(capsys, "jobs", "cancel", other.ref, "--json")
    assert result.code == 0
    assert json.loads(result.out)["status"] == "cancelled" and stored(other.ref) == "cancelled"
    third = asyncio.run(AsyncFineTuneJob.get(create("echo", **RUNS).ref))
    assert asyncio.run(third.cancel()).status is JobStatus.CANCELLED


@pytest.mark.usefixtures("cancel_providers")
def test_cancel_that_takes_effect_later_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    job = create("slowcancel", **RUNS)
    advance(job, 60)
    record = json.loads(run_cli(capsys, "jobs", "cancel", job.ref, "--json").out)
    assert (record["ref"], record["status"], record["raw_status"]) == (job.ref, "running", "cancel_requested")
    plain = run_cli(capsys, "jobs", "cancel", job.ref)
    assert plain.code == 0
    assert "running (cancel_requested)" in plain.out
    said = "cancel requested: slowcancel still reports running (cancel_requested); follow it with: anytune jobs wait"
    assert f"{said} {job.ref}" in plain.err


# -- create: ref in JSON, where the result is ------------------------------------------------------


def test_create_json_and_get_json_carry_the_ref(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "jobs", "create", "-p", "fake", "--base-model", "tiny", "--training-file", TRAIN, "--json")
    assert result.code == 0, result.err
    created = json.loads(result.out)
    assert created["ref"] == f"fake:{created['id']}"
    got = json.loads(run_cli(capsys, "jobs", "get", created["ref"], "--json").out)
    assert got["ref"] == created["ref"]


def test_create_wait_ends_with_where_the_result_is(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("jobs", "create", "-p", "fake", "--base-model", "tiny", "--training-file", TRAIN, "--wait")
    result = run_cli(capsys, *args)
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    ref = lines[-3].split()[0]
    assert lines[-2] == f"result of {ref}"
    assert lines[-1].split() == ["model", "id", f"ft:tiny:anytune:{ref.removeprefix('fake:')}"]
    waited = json.loads(run_cli(capsys, *args, "--json").out)
    assert waited["status"] == "succeeded" and waited["ref"].startswith("fake:")
    assert waited["result"]["model_id"] == waited["fine_tuned_model"]
    assert waited["result"]["job_ref"] == waited["ref"]


def test_create_wait_on_a_failed_job_ends_with_the_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "fail.yaml"
    spec.write_text(
        f"provider: fake\nbase_model: tiny\ntraining_file: {TRAIN}\nfake: {{scenario: fail, seconds: 0.1}}\n"
    )
    result = run_cli(capsys, "jobs", "create", "-f", str(spec), "--wait")
    assert result.code == 6
    assert result.err.strip().splitlines()[-1] == "job failed training diverged: loss is NaN"
    assert "result of" not in result.out
    waited = json.loads(run_cli(capsys, "jobs", "create", "-f", str(spec), "--wait", "--json").out)
    assert waited["status"] == "failed" and "result" not in waited
    assert waited["error"]["message"] == "training diverged: loss is NaN"


# -- failed submits: a row only when the service may have been reached ----------------------------


def _translated(cause: Exception) -> ServiceUnavailableError:
    """What an adapter raises for a connection-level failure: no status, the SDK's error below."""
    try:
        raise ServiceUnavailableError(f"cannot reach the service: {cause}", provider="fake") from cause
    except ServiceUnavailableError as exc:
        return exc


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("no API key: set OPENAI_API_KEY", field="api_key"),
        AuthenticationError("no Hugging Face token", provider="fake"),
        _translated(ConnectionRefusedError(111, "Connection refused")),
        _translated(socket.gaierror(socket.EAI_NONAME, "Name or service not known")),
    ],
    ids=["config", "no-credentials", "refused", "dns"],
)
def test_a_submit_refused_before_sending_leaves_no_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def refuse(self: FakeProvider, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        raise error

    monkeypatch.setattr(FakeProvider, "submit", refuse)
    result = run_cli(capsys, "jobs", "create", "-p", "fake", "--base-model", "tiny", "--training-file", TRAIN)
    assert result.code in (1, 2, 7)  # a network failure is a provider error (1)
    assert jobs_in_store(home()) == 0
    assert listed(capsys) == []


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("invalid API key", provider="fake", status_code=401),
        ServiceUnavailableError("upstream timed out", provider="fake", status_code=503),
        RuntimeError("a bug in the adapter"),
        _translated(TimeoutError("timed out")),
        _translated(ConnectionResetError(104, "Connection reset by peer")),
    ],
    ids=["refused-key", "unavailable", "bug", "timeout", "dropped"],
)
def test_a_submit_that_may_have_reached_the_service_keeps_its_row(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def refuse(self: FakeProvider, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        raise error

    monkeypatch.setattr(FakeProvider, "submit", refuse)
    with pytest.raises(type(error)):
        create()
    (row,) = FineTuneJob.list()
    assert row.status == "submit_failed" and row.ref is None


def test_a_repeated_key_keeps_the_row_of_its_earlier_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[Exception] = [ServiceUnavailableError("down", provider="fake", status_code=503), ConfigError("no key")]

    def refuse(self: FakeProvider, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        raise errors.pop(0)

    monkeypatch.setattr(FakeProvider, "submit", refuse)
    for expected in (ServiceUnavailableError, ConfigError):
        with pytest.raises(expected):
            FineTuneJob.create(provider="fake", base_model="tiny", training_file=TRAIN, idempotency_key="same-key")
    (row,) = FineTuneJob.list()
    assert row.idempotency_key == "same-key" and row.status == "submit_failed"


# -- jobs delete ---------------------------------------------------------------------------------


def test_delete_removes_a_finished_job_from_the_list_only(capsys: pytest.CaptureFixture[str]) -> None:
    job = create()
    advance(job)
    result = run_cli(capsys, "jobs", "delete", job.ref)
    assert result.code == 0, result.err
    assert result.out.strip() == f"deleted {job.ref} from the job store"
    assert listed(capsys) == []
    assert FineTuneJob.get(job.ref).record.status is JobStatus.SUCCEEDED  # the job itself is still there


def test_delete_refuses_an_unfinished_job_unless_forced(capsys: pytest.CaptureFixture[str]) -> None:
    job = create(**RUNS)
    result = run_cli(capsys, "jobs", "delete", job.ref)
    assert result.code == 2
    assert "cancel it first" in result.err and f"anytune jobs cancel {job.ref}" in result.err
    assert jobs_in_store(home()) == 1
    with pytest.raises(UsageError, match=r"is (queued|running): deleting its row does not stop it"):
        FineTuneJob.delete(job.ref)
    forced = run_cli(capsys, "jobs", "delete", job.ref, "--force", "--json")
    assert forced.code == 0 and json.loads(forced.out)["ref"] == job.ref
    assert jobs_in_store(home()) == 0
    assert FineTuneJob.get(job.ref).record.status is JobStatus.QUEUED  # not cancelled


def test_delete_of_a_job_that_finished_since_it_was_last_seen_needs_no_force(
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = create()
    assert stored(job.ref) == "validating"
    advance(job)
    assert asyncio.run(AsyncFineTuneJob.delete(job.ref)).ref == job.ref


def test_delete_of_a_local_job_keeps_its_run_directory(capsys: pytest.CaptureFixture[str]) -> None:
    from anytune.local_backend.rundir import RunDir
    from anytune.providers.local import LocalProvider

    provider = LocalProvider()
    run = RunDir(provider.runs_dir / provider.job_id_for("k"))
    run.create(JobSpec(base_model="tiny", training_file=Path(TRAIN)), idempotency_key="k")
    run.set_status(JobStatus.FAILED, error={"message": "boom", "code": "x"})
    JobStore(home() / "jobs.db").save(provider.get(run.id))
    result = run_cli(capsys, "jobs", "delete", f"local:{run.id}")
    assert result.code == 0, result.err
    assert f"its run directory is kept: {run.path}" in result.err
    assert run.exists()


@pytest.mark.parametrize(
    ("ref", "code", "message"),
    [
        ("fake:fakejob-0000000000000000", 4, "not found: no job 'fake:fakejob-0000000000000000'"),
        ("no-provider-prefix", 2, "PROVIDER:JOB_ID"),
    ],
)
def test_delete_of_an_unknown_or_malformed_ref(
    capsys: pytest.CaptureFixture[str], ref: str, code: int, message: str
) -> None:
    for _ in range(2):  # without a store, then with one
        result = run_cli(capsys, "jobs", "delete", ref)
        assert result.code == code and message in result.err and "Traceback" not in result.err
        create()
    with pytest.raises(JobNotFoundError):
        FineTuneJob.delete("fake:fakejob-0000000000000000")


# -- jobs prune ----------------------------------------------------------------------------------


def _age_row(ref_or_key: str, days: float) -> None:
    """Make a stored row look created ``days`` ago."""
    with sqlite3.connect(home() / "jobs.db") as db:
        db.execute(
            "UPDATE jobs SET created_at=datetime(created_at, ?) || '+00:00' WHERE ref=? OR idempotency_key=?",
            (f"-{days} days", ref_or_key, ref_or_key),
        )


@pytest.fixture
def mixed_store(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Rows of every kind, all ten days old: ref (or key) by kind."""
    kinds: dict[str, str] = {}
    failed, queued, done = create(scenario="fail", seconds=60), create(**RUNS), create()
    cancelled = create(**RUNS)
    cancelled.cancel()
    advance(failed)
    advance(done)
    FineTuneJob.list()  # saves the states now
    kinds.update(failed=failed.ref, queued=queued.ref, cancelled=cancelled.ref, succeeded=done.ref)

    def refuse(self: FakeProvider, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        raise ServiceUnavailableError("down", provider="fake", status_code=503)

    with monkeypatch.context() as patched, pytest.raises(ServiceUnavailableError):
        patched.setattr(FakeProvider, "submit", refuse)
        FineTuneJob.create(provider="fake", base_model="tiny", training_file=TRAIN, idempotency_key="refused")
    kinds["submit_failed"] = "refused"
    store = JobStore(home() / "jobs.db")
    store.begin_submit(provider="fake", profile=None, spec={}, key="lost")
    store.mark_unknown("lost", "timed out")
    kinds["unknown"] = "lost"
    for key in kinds.values():
        _age_row(key, 10)
    return kinds


def _keys(rows: list[dict[str, Any]]) -> set[str]:
    return {r["ref"] or r["idempotency_key"] for r in rows}


def test_prune_by_default_removes_failed_cancelled_and_refused_only(
    capsys: pytest.CaptureFixture[str], mixed_store: dict[str, str]
) -> None:
    dry = run_cli(capsys, "jobs", "prune", "--older-than", "7d", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    gone = {mixed_store[k] for k in ("failed", "cancelled", "submit_failed")}
    assert _keys(json.loads(dry.out)) == gone
    assert jobs_in_store(home()) == 6  # a dry run removes nothing
    plain = run_cli(capsys, "jobs", "prune", "--older-than", "7d", "--dry-run")
    assert "would remove 3 job(s)" in plain.err and mixed_store["failed"] in plain.out
    result = run_cli(capsys, "jobs", "prune", "--older-than", "7d")
    assert result.code == 0 and "removed 3 job(s)" in result.err
    left = {r.ref or r.idempotency_key for r in FineTuneJob.list(refresh=False)}
    assert left == {mixed_store[k] for k in ("queued", "succeeded", "unknown")}


def test_prune_respects_the_age(capsys: pytest.CaptureFixture[str], mixed_store: dict[str, str]) -> None:
    young = create(scenario="fail", seconds=60)
    advance(young)
    FineTuneJob.list()
    assert young.ref not in _keys(json.loads(run_cli(capsys, "jobs", "prune", "--older-than", "2w", "--json").out))
    assert jobs_in_store(home()) == 7  # nothing is two weeks old
    removed = FineTuneJob.prune(older_than=timedelta(days=7))
    assert young.ref not in {r.ref for r in removed} and len(removed) == 3
    assert [r.ref for r in FineTuneJob.prune(status="failed")] == [young.ref]  # no age: any age


def test_prune_takes_unfinished_and_unknown_rows_only_when_named(
    capsys: pytest.CaptureFixture[str], mixed_store: dict[str, str]
) -> None:
    result = run_cli(capsys, "jobs", "prune", "--status", "unknown,queued", "--json")
    assert result.code == 0, result.err
    assert _keys(json.loads(result.out)) == {mixed_store["unknown"], mixed_store["queued"]}
    removed = asyncio.run(AsyncFineTuneJob.prune(status=["succeeded"], provider="fake"))
    assert [r.ref for r in removed] == [mixed_store["succeeded"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "7x"], "expected an age such as 90s, 30m, 12h, 7d or 2w, got '7x'"),
        (["--older-than", "-3d"], "got '-3d'"),
        (["--older-than", "7"], "got '7'"),
        (["--status", "failed,finished"], "unknown status 'finished'; valid statuses:"),
        (["--status", ""], "name at least one status"),
        (["--provider", "nobody"], "unknown provider 'nobody'"),
    ],
)
def test_prune_bad_input_is_a_usage_error_and_removes_nothing(
    capsys: pytest.CaptureFixture[str], mixed_store: dict[str, str], args: list[str], message: str
) -> None:
    result = run_cli(capsys, "jobs", "prune", *args)
    assert result.code == 2, result.err
    assert message in result.err and "Traceback" not in result.err
    assert jobs_in_store(home()) == 6


def test_prune_api_rejects_a_negative_age() -> None:
    with pytest.raises(ConfigError, match="age of 0 or more"):
        FineTuneJob.prune(older_than=-1)
