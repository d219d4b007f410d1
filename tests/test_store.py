"""The local job store: what is recorded, listing, submit bookkeeping, concurrency, no secrets."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from anytune import FineTuneJob, JobRecord, JobStatus, JobStore, ServiceUnavailableError
from anytune.providers.fake import FakeProvider

SECRET = "sk-test-PLANTED0123456789abcdef"


def create(training_file: Path, **fields: object) -> FineTuneJob:
    fields.setdefault("fake", {"seconds": 0.1})
    return FineTuneJob.create(provider="fake", base_model="tiny", training_file=training_file, **fields)


def record(job_id: str, status: JobStatus = JobStatus.RUNNING, provider: str = "fake") -> JobRecord:
    return JobRecord(provider=provider, id=job_id, status=status, raw_status=status.value)


def test_created_job_is_recorded_with_its_spec_and_state(anytune_home: Path, chat_jsonl: Path) -> None:
    job = create(chat_jsonl, hyperparameters={"epochs": 2}, suffix="v1", tags={"team": "nlp"})
    store = JobStore(anytune_home / "jobs.db")

    row = store.get(job.ref)
    assert row is not None
    assert row.provider == "fake" and row.job_id == job.id and row.ref == job.ref
    assert row.spec["base_model"] == "tiny"
    assert row.spec["hyperparameters"] == {"epochs": 2}
    assert row.spec["suffix"] == "v1" and row.spec["tags"] == {"team": "nlp"}
    assert row.submit_error is None
    assert row.record is not None and row.record.id == job.id
    assert row.created_at.tzinfo is not None and row.created_at <= row.updated_at
    assert store.by_key(row.idempotency_key) == row

    job.wait()
    done = store.get(job.ref)
    assert done is not None
    assert done.status == "succeeded" and done.raw_status == "succeeded"
    assert done.record is not None and done.record.fine_tuned_model == job.record.fine_tuned_model
    assert done.updated_at >= row.updated_at and done.created_at == row.created_at


def test_list_filters_by_provider_and_status(chat_jsonl: Path) -> None:
    ok = create(chat_jsonl)
    ok.wait()
    running = create(chat_jsonl, fake={"seconds": 120})
    bad = create(chat_jsonl, fake={"scenario": "fail", "seconds": 0.1})
    bad.wait()

    assert [r.ref for r in FineTuneJob.list()] == [bad.ref, running.ref, ok.ref]  # newest first
    assert [r.ref for r in FineTuneJob.list(provider="fake", limit=2)] == [bad.ref, running.ref]
    assert FineTuneJob.list(provider="openai") == []
    assert [r.ref for r in FineTuneJob.list(status="succeeded")] == [ok.ref]
    assert [r.ref for r in FineTuneJob.list(status=JobStatus.FAILED)] == [bad.ref]
    assert FineTuneJob.list(status=JobStatus.CANCELLED) == []
    running.cancel()
    assert [r.ref for r in FineTuneJob.list(status="cancelled")] == [running.ref]


def test_submit_rows(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    store.begin_submit(provider="fake", profile="dev", spec={"base_model": "m"}, key="k1")
    store.begin_submit(provider="fake", profile=None, spec={"base_model": "m"}, key="k2")

    pending = store.by_key("k1")
    assert pending is not None
    assert pending.status == "submitting" and pending.ref is None and pending.profile == "dev"

    store.complete_submit("k1", record("fakejob-1"))
    store.fail_submit("k2", "ServiceUnavailableError: 503 from upstream")

    done = store.by_key("k1")
    assert done is not None and done.ref == "fake:fakejob-1" and done.status == "running"
    assert done.record == record("fakejob-1").model_copy(update={"updated_at": done.record.updated_at})
    failed = store.by_key("k2")
    assert failed is not None and failed.status == "submit_failed" and failed.ref is None
    assert failed.submit_error == "ServiceUnavailableError: 503 from upstream"
    assert {r.idempotency_key for r in store.list()} == {"k1", "k2"}
    assert store.get("fake:nope") is None and store.by_key("nope") is None


def test_unknown_submissions_are_kept_until_resolved(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    for key in ("lost", "fresh", "done"):
        store.begin_submit(provider="fake", profile=None, spec={"base_model": "m"}, key=key)
    store.mark_unknown("lost", "ServiceUnavailableError: listing jobs failed (HTTP 503)")
    store.complete_submit("done", record("fakejob-done"))
    store.mark_unknown("done", "too late: a known job stays known")

    lost = store.by_key("lost")
    assert lost is not None and lost.status == "unknown" and lost.ref is None
    assert lost.submit_error == "ServiceUnavailableError: listing jobs failed (HTTP 503)"
    done = store.by_key("done")
    assert done is not None and done.status == "running"
    # A young "submitting" row may belong to a process still submitting; an old one was abandoned.
    assert [r.idempotency_key for r in store.unresolved()] == ["lost"]
    assert [r.idempotency_key for r in store.unresolved(stale_after=0)] == ["lost", "fresh"]
    assert store.unresolved(provider="openai") == []

    # The job was re-attached by ref before the submission was resolved: one row is kept.
    store.save(record("fakejob-lost"))
    store.complete_submit("lost", record("fakejob-lost"))
    rows = [r for r in store.list() if r.ref == "fake:fakejob-lost"]
    assert [r.idempotency_key for r in rows] == ["lost"]


def test_save_adds_jobs_created_elsewhere_and_updates_known_ones(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    store.save(record("ftjob-1", provider="openai"), profile="prod")
    store.save(record("ftjob-1", JobStatus.SUCCEEDED, provider="openai"))

    (row,) = store.list()
    assert row.ref == "openai:ftjob-1" and row.provider == "openai" and row.profile == "prod"
    assert row.status == "succeeded"


def test_failed_submit_is_recorded(anytune_home: Path, chat_jsonl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: FakeProvider, spec: object, *, idempotency_key: str) -> JobRecord:
        raise ServiceUnavailableError("upstream timed out", provider="fake", status_code=503)

    monkeypatch.setattr(FakeProvider, "submit", refuse)
    with pytest.raises(ServiceUnavailableError):
        create(chat_jsonl)

    (row,) = JobStore(anytune_home / "jobs.db").list()
    assert row.status == "submit_failed" and row.ref is None
    assert row.submit_error is not None and "upstream timed out" in row.submit_error
    assert row.spec["base_model"] == "tiny"


def test_store_is_shared_between_handles(tmp_path: Path) -> None:
    a, b = JobStore(tmp_path / "jobs.db"), JobStore(tmp_path / "jobs.db")
    a.save(record("fakejob-a"))
    assert b.get("fake:fakejob-a") is not None
    row = b.get("fake:fakejob-a")
    assert row is not None and row.created_at <= datetime.now(timezone.utc)


def _writer(path: str, worker: int, count: int) -> None:
    store = JobStore(Path(path))
    for i in range(count):
        key = f"w{worker}-{i}"
        store.begin_submit(provider="fake", profile=None, spec={"i": i}, key=key)
        store.complete_submit(key, record(f"fakejob-{worker}-{i}"))
        store.save(record(f"fakejob-{worker}-{i}", JobStatus.SUCCEEDED))
    store.close()


def test_concurrent_writers_from_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    JobStore(path).close()
    workers, count = 4, 40
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers

    rows = JobStore(path).list(limit=10_000)
    assert len(rows) == workers * count
    assert {r.ref for r in rows} == {f"fake:fakejob-{w}-{i}" for w in range(workers) for i in range(count)}
    assert all(r.status == "succeeded" for r in rows)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_no_secret_reaches_the_database(anytune_home: Path, chat_jsonl: Path) -> None:
    job = create(chat_jsonl, tags={"note": f"key={SECRET}", "owner": "me"})
    job.wait()
    JobStore(anytune_home / "jobs.db").close()

    blobs = b"".join(p.read_bytes() for p in anytune_home.glob("jobs.db*"))
    assert SECRET.encode() not in blobs
    assert b"PLANTED0123456789" not in blobs
    row = JobStore(anytune_home / "jobs.db").get(job.ref)
    assert row is not None and row.spec["tags"]["owner"] == "me"


def test_ordinary_values_are_stored_verbatim(anytune_home: Path, chat_jsonl: Path) -> None:
    # Words that merely contain "sk-" or "hf_" are not credentials and must survive redaction.
    job = create(chat_jsonl, suffix="mask-detection-v1", tags={"project": "task-classification-model-v2"})
    job.wait()
    row = JobStore(anytune_home / "jobs.db").get(job.ref)
    assert row is not None
    assert row.spec["suffix"] == "mask-detection-v1"
    assert row.spec["tags"] == {"project": "task-classification-model-v2"}
    assert row.record is not None and row.record.fine_tuned_model == job.result().model_id
    assert "mask-detection-v1" in (row.record.fine_tuned_model or "")
