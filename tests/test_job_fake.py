"""The job handle end to end on the fake provider: lifecycle, failure, cancel, timeouts, reattach."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from anytune import (
    ConfigError,
    DataValidationError,
    Event,
    FakeOptions,
    FakeStep,
    FineTunedModel,
    FineTuneJob,
    JobFailedError,
    JobNotFoundError,
    JobSpec,
    JobStatus,
    JobStore,
    ProviderError,
    WaitTimeoutError,
)
from anytune.providers.fake import FakeProvider, FakeSettings
from tests.conftest import FakeClock, NetworkBlocked, run_python

FAST = {"seconds": 0.1}


def create(training_file: Path, **fields: object) -> FineTuneJob:
    fields.setdefault("fake", FAST)
    return FineTuneJob.create(provider="fake", base_model="tiny", training_file=training_file, **fields)


def scripted(
    home: Path, training_file: Path, clock: FakeClock, steps: list[FakeStep], key: str = "key-1"
) -> FineTuneJob:
    """A fake job on a fake clock: every answer depends only on how far the clock was moved."""
    store = JobStore(home / "jobs.db")
    provider = FakeProvider(FakeSettings(), store=store, home=home, clock=clock)
    spec = JobSpec(base_model="tiny", training_file=training_file, fake=FakeOptions(timeline=steps))
    record = provider.submit(spec, idempotency_key=key)
    store.save(record)
    return FineTuneJob(record, provider, store=store, sleep=clock.sleep, clock=clock)


TIMELINE = [
    FakeStep(at=0, status="queued", message="waiting for capacity"),
    FakeStep(at=1, status="running", message="training started"),
    FakeStep(at=2, status="running", step=1, train_loss=1.0),
    FakeStep(at=3, status="running", step=2, train_loss=0.5, valid_loss=0.6),
    FakeStep(at=4, status="running", message="halfway there"),
    FakeStep(at=5, status="failed", message="job failed", error="CUDA out of memory"),
]


def status_sequence(events: list[Event]) -> list[JobStatus | None]:
    return [e.status for e in events if e.kind == "status"]


def assert_ordered_unique(events: list[Event]) -> None:
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), f"duplicate events: {ids}"
    assert ids == sorted(ids)
    times = [e.time for e in events]
    assert times == sorted(times)


def test_network_guard_fails_on_real_hosts(network_guard: list[object]) -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("192.0.2.1", 443), timeout=0.01)
    assert network_guard == [("192.0.2.1", 443)]
    network_guard.clear()  # the attempt was the point of this test


# -- lifecycle ------------------------------------------------------------------------------------


def test_succeeding_job_goes_through_every_state_in_order(chat_jsonl: Path) -> None:
    job = create(chat_jsonl)
    assert job.ref == f"fake:{job.id}"
    assert job.provider == "fake"
    seen: list[Event] = []

    record = job.wait(on_event=seen.append)

    assert record.status is JobStatus.SUCCEEDED
    assert job.done() and job.status() is JobStatus.SUCCEEDED
    assert status_sequence(seen) == [JobStatus.VALIDATING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    assert [e.metric.step for e in seen if e.metric is not None] == [1, 2, 3, 4, 5]
    assert seen[-1].kind == "status" and seen[-1].status is JobStatus.SUCCEEDED
    assert_ordered_unique(seen)
    assert seen == job.events()  # the callback saw exactly the job's events, once each


def test_metrics_checkpoints_and_result(chat_jsonl: Path) -> None:
    job = create(chat_jsonl, suffix="demo")
    job.wait()

    metrics = job.metrics()
    assert [m.step for m in metrics] == [1, 2, 3, 4, 5]
    # Each point is the one its metric event carried (the curve is the events', not made up).
    assert metrics == [e.metric for e in job.events() if e.metric is not None]
    checkpoints = job.checkpoints()
    assert checkpoints and all(c.metrics is not None and c.metrics.valid_loss for c in checkpoints)
    assert [c.step for c in checkpoints] == sorted(c.step for c in checkpoints)

    model = job.result()
    assert isinstance(model, FineTunedModel)
    assert model.provider == "fake" and model.job_ref == job.ref and model.base_model == "tiny"
    assert model.model_id == job.record.fine_tuned_model
    assert model.model_id is not None and job.id in model.model_id and "demo" in model.model_id
    assert model.final_metrics == metrics[-1]
    assert model.checkpoints == tuple(checkpoints)
    assert job.record.started_at is not None and job.record.finished_at is not None
    assert job.record.created_at <= job.record.started_at <= job.record.finished_at


def test_result_waits_for_the_job(chat_jsonl: Path) -> None:
    job = create(chat_jsonl)
    assert not job.record.done
    model = job.result()
    assert model.model_id is not None
    assert job.record.status is JobStatus.SUCCEEDED


def test_failed_job_wait_returns_record_and_result_raises(chat_jsonl: Path) -> None:
    job = create(chat_jsonl, fake={"scenario": "fail", "seconds": 0.1})
    seen: list[Event] = []

    record = job.wait(on_event=seen.append)  # wait() never raises for an ended job

    assert record.status is JobStatus.FAILED
    assert record.error is not None and "diverged" in record.error.message
    assert record.fine_tuned_model is None
    assert status_sequence(seen)[-1] is JobStatus.FAILED
    assert seen[-1].level == "error" and "diverged" in seen[-1].message
    with pytest.raises(JobFailedError) as info:
        job.result()
    assert isinstance(info.value, ProviderError)
    assert info.value.record.error == record.error
    assert info.value.record.ref == job.ref
    assert "diverged" in str(info.value) and job.ref in str(info.value)


def test_scripted_timeline_is_followed_step_by_step(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    job = scripted(anytune_home, chat_jsonl, clock, TIMELINE)
    assert job.status() is JobStatus.QUEUED

    clock.advance(2.5)
    assert job.status() is JobStatus.RUNNING
    assert job.record.step == 1 and job.record.total_steps == 2
    assert [e.message for e in job.events()] == ["waiting for capacity", "training started", "step 1"]

    record = job.wait()

    assert record.status is JobStatus.FAILED
    assert record.error is not None and record.error.message == "CUDA out of memory"
    assert record.finished_at is not None and record.created_at is not None
    assert (record.finished_at - record.created_at).total_seconds() == pytest.approx(5)
    events = job.events()
    assert [e.kind for e in events] == ["status", "status", "metric", "metric", "log", "status"]
    assert events[-1].message == "job failed: CUDA out of memory"
    created = record.created_at
    assert [(m.step, m.train_loss, m.valid_loss, (m.time - created).total_seconds()) for m in job.metrics()] == [
        (1, 1.0, None, pytest.approx(2)),
        (2, 0.5, 0.6, pytest.approx(3)),
    ]
    assert [c.step for c in job.checkpoints()] == [2]
    with pytest.raises(JobFailedError, match="CUDA out of memory"):
        job.result()


#: A run that diverged at step 3 and went on from its step-2 checkpoint: step 3 is reported twice,
#: the second report after the first, and the last report of a step is the one that stands.
RESUMED = [
    FakeStep(at=0, status="running", message="training started"),
    FakeStep(at=1, status="running", step=1, train_loss=2.0),
    FakeStep(at=2, status="running", step=2, train_loss=1.8, valid_loss=1.9),
    FakeStep(at=3, status="running", step=3, train_loss=9.0, valid_loss=9.5),
    FakeStep(at=4, status="running", message="resumed from the checkpoint at step 2"),
    FakeStep(at=5, status="running", step=3, train_loss=1.5),
    FakeStep(at=6, status="running", step=4, train_loss=1.2, valid_loss=1.4),
    FakeStep(at=7, status="succeeded", message="job succeeded"),
]


def test_metrics_keep_one_point_per_step_in_step_order_the_latest_report_standing(
    anytune_home: Path, chat_jsonl: Path, clock: FakeClock
) -> None:
    job = scripted(anytune_home, chat_jsonl, clock, RESUMED)
    record = job.wait()
    assert record.status is JobStatus.SUCCEEDED

    # The events are the history: both reports of step 3, in the order they came.
    assert [(e.metric.step, e.metric.train_loss) for e in job.events() if e.metric] == [
        (1, 2.0),
        (2, 1.8),
        (3, 9.0),
        (3, 1.5),
        (4, 1.2),
    ]
    # The metrics are the curve: each step once, in step order, the resumed run's step 3.
    metrics = job.metrics()
    assert [(m.step, m.train_loss, m.valid_loss) for m in metrics] == [
        (1, 2.0, None),
        (2, 1.8, 1.9),
        (3, 1.5, None),
        (4, 1.2, 1.4),
    ]
    assert metrics[2].time is not None and record.created_at is not None
    assert (metrics[2].time - record.created_at).total_seconds() == pytest.approx(5)
    model = job.result()
    assert model.final_metrics == metrics[-1]
    # Checkpoints follow the standing points: the diverged step 3 had a validation loss, the resumed
    # step 3 has none, so it is no checkpoint; each checkpoint carries its step's standing point.
    assert [c.step for c in model.checkpoints] == [2, 4]
    assert [c.metrics for c in model.checkpoints] == [metrics[1], metrics[3]]


def test_cancel_mid_run_stops_the_job_and_its_events(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    job = scripted(anytune_home, chat_jsonl, clock, TIMELINE)
    clock.advance(2.5)

    record = job.cancel()

    assert record.status is JobStatus.CANCELLED
    events = job.events()
    assert events[-1].kind == "status" and events[-1].status is JobStatus.CANCELLED
    assert [e.metric.step for e in events if e.metric] == [1]
    clock.advance(100)  # long past the scripted failure
    assert job.refresh().status is JobStatus.CANCELLED
    assert job.events() == events
    assert job.wait().status is JobStatus.CANCELLED
    assert job.cancel().finished_at == record.finished_at  # cancelling again changes nothing
    with pytest.raises(JobFailedError) as info:
        job.result()
    assert info.value.record.status is JobStatus.CANCELLED


def test_cancel_after_the_end_keeps_the_outcome(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    job = scripted(anytune_home, chat_jsonl, clock, TIMELINE)
    job.wait()
    assert job.cancel().status is JobStatus.FAILED


def test_cancel_in_real_time(chat_jsonl: Path) -> None:
    job = create(chat_jsonl, fake={"scenario": "slow", "seconds": 10})
    assert job.cancel().status is JobStatus.CANCELLED
    assert job.wait(timeout=30).status is JobStatus.CANCELLED
    assert status_sequence(job.events())[-1] is JobStatus.CANCELLED


def test_wait_timeout_raises_and_job_keeps_running(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    steps = [FakeStep(at=0, status="running"), FakeStep(at=10, status="succeeded")]
    job = scripted(anytune_home, chat_jsonl, clock, steps)

    with pytest.raises(WaitTimeoutError) as info:
        job.wait(timeout=3)

    assert isinstance(info.value, TimeoutError)
    assert info.value.timeout == 3 and info.value.ref == job.ref
    assert info.value.record is not None and info.value.record.status is JobStatus.RUNNING
    assert clock.sleeps and sum(clock.sleeps) == pytest.approx(3)  # slept up to the deadline, not past
    assert "running" in str(info.value)

    assert job.wait().status is JobStatus.SUCCEEDED  # waiting again picks up where it left
    assert clock.now - clock.start >= 10


def test_result_timeout(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    job = scripted(anytune_home, chat_jsonl, clock, [FakeStep(at=50, status="succeeded")])
    with pytest.raises(WaitTimeoutError):
        job.result(timeout=1)


def test_polling_backs_off_while_nothing_happens(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    steps = [FakeStep(at=0, status="running"), FakeStep(at=60, status="succeeded")]
    job = scripted(anytune_home, chat_jsonl, clock, steps)
    job.wait()
    quiet = clock.sleeps[1:]
    assert quiet == sorted(quiet) and quiet[-1] > quiet[0]
    assert max(clock.sleeps) <= 30


def test_stream_resumes_after_an_event(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    job = scripted(anytune_home, chat_jsonl, clock, TIMELINE)
    everything = list(job.stream())
    assert len(everything) == 6
    assert_ordered_unique(everything)

    resumed = list(job.stream(after=everything[2].id))

    assert resumed == everything[3:]
    assert job.events(after=everything[2].id) == everything[3:]
    assert list(job.stream(after=everything[-1].id)) == []


def test_stream_in_two_sessions_has_no_gap_or_duplicate(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    job = scripted(anytune_home, chat_jsonl, clock, TIMELINE)
    first: list[Event] = []
    with pytest.raises(WaitTimeoutError):
        for event in job.stream(timeout=2.5):
            first.append(event)
    assert first
    second = list(job.stream(after=first[-1].id))
    assert [e.id for e in first + second] == [e.id for e in job.events()]


# -- attach, idempotency, plan ----------------------------------------------------------------------


def test_get_reattaches_in_the_same_process(chat_jsonl: Path) -> None:
    job = create(chat_jsonl)
    again = FineTuneJob.get(job.ref)
    assert again.ref == job.ref
    assert again.wait().status is JobStatus.SUCCEEDED
    assert again.result().model_id == job.result().model_id


def test_get_unknown_or_malformed_reference(chat_jsonl: Path) -> None:
    with pytest.raises(JobNotFoundError) as info:
        FineTuneJob.get("fake:fakejob-0000000000000000")
    assert info.value.ref == "fake:fakejob-0000000000000000"
    with pytest.raises(JobNotFoundError):
        FineTuneJob.get("fake:../../etc/passwd")
    with pytest.raises(ConfigError) as bad:
        FineTuneJob.get("fakejob-123")
    assert bad.value.field == "ref"


def test_reattach_and_wait_from_another_process(chat_jsonl: Path) -> None:
    job = create(chat_jsonl, fake={"seconds": 0.3})
    code = (
        "from anytune import FineTuneJob\n"
        f"job = FineTuneJob.get({job.ref!r})\n"
        "record = job.wait(timeout=30)\n"
        "print(record.status.value, job.result().model_id)\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    status, model_id = proc.stdout.split()
    assert status == "succeeded"
    assert model_id == job.result().model_id
    (row,) = FineTuneJob.list()
    assert row.ref == job.ref and row.status == "succeeded"


def test_reattach_uses_the_settings_the_job_was_created_with(chat_jsonl: Path) -> None:
    """A job created with explicit settings is followed from another process without repeating them."""
    job = FineTuneJob.create(
        provider="fake",
        settings={"fine_tuned_prefix": "custom", "speed": 2.0},
        base_model="tiny",
        training_file=chat_jsonl,
        fake={"seconds": 0.3},
    )
    proc = run_python(
        "from anytune import FineTuneJob\n"
        f"job = FineTuneJob.get({job.ref!r})\n"
        "print(job.wait(timeout=30).fine_tuned_model)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("custom:tiny:")
    (row,) = FineTuneJob.list()
    assert row.settings == {"fine_tuned_prefix": "custom", "speed": 2.0}


def test_cancel_from_another_process(chat_jsonl: Path) -> None:
    job = create(chat_jsonl, fake={"seconds": 120})
    proc = run_python(f"from anytune import FineTuneJob\nprint(FineTuneJob.get({job.ref!r}).cancel().status.value)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cancelled"
    assert job.wait(timeout=30).status is JobStatus.CANCELLED
    with pytest.raises(JobFailedError):
        job.result()


def test_submit_with_the_same_key_returns_the_same_job(anytune_home: Path, chat_jsonl: Path) -> None:
    provider = FakeProvider(FakeSettings(), home=anytune_home)
    spec = JobSpec(base_model="tiny", training_file=chat_jsonl, fake=FakeOptions(seconds=60))

    first = provider.submit(spec, idempotency_key="retry-me")
    second = provider.submit(spec, idempotency_key="retry-me")
    other = provider.submit(spec, idempotency_key="another-key")

    assert first.id == second.id != other.id
    assert first.created_at == second.created_at
    assert sorted(p.name for p in (anytune_home / "fake").iterdir()) == sorted([f"{first.id}.json", f"{other.id}.json"])
    assert {r.id for r in provider.list()} == {first.id, other.id}


def test_each_create_is_a_new_job(chat_jsonl: Path) -> None:
    a, b = create(chat_jsonl), create(chat_jsonl)
    assert a.ref != b.ref
    assert {row.ref for row in FineTuneJob.list()} == {a.ref, b.ref}


def test_plan_has_no_side_effect(anytune_home: Path, chat_jsonl: Path, valid_jsonl: Path) -> None:
    plan = FineTuneJob.plan(
        provider="fake",
        base_model="tiny",
        training_file=chat_jsonl,
        validation_file=valid_jsonl,
        hyperparameters={"epochs": 2},
    )
    assert plan.provider == "fake"
    assert [u.purpose for u in plan.uploads] == ["training", "validation"]
    assert plan.uploads[0].bytes == chat_jsonl.stat().st_size and len(plan.uploads[0].sha256) == 64
    assert plan.requests[0].body["hyperparameters"] == {"epochs": 2}
    assert not (anytune_home / "fake").exists()
    assert FineTuneJob.list() == []


def test_fake_state_file_is_plain_json(anytune_home: Path, chat_jsonl: Path) -> None:
    job = create(chat_jsonl)
    state = json.loads((anytune_home / "fake" / f"{job.id}.json").read_text())
    assert state["id"] == job.id and state["base_model"] == "tiny"
    assert not list((anytune_home / "fake").glob("*.tmp"))


# -- data checks happen before anything is created --------------------------------------------------


def test_bad_data_fails_before_submit(anytune_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    submitted: list[object] = []
    monkeypatch.setattr(FakeProvider, "submit", lambda self, spec, **kw: submitted.append(spec))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')

    with pytest.raises(DataValidationError) as info:
        create(bad)

    assert info.value.issues and {i.line for i in info.value.issues if i.line} >= {1, 2}
    assert str(bad) in str(info.value)
    assert submitted == [] and FineTuneJob.list() == [] and not (anytune_home / "fake").exists()


def test_missing_data_file_names_the_field(tmp_path: Path, chat_jsonl: Path) -> None:
    with pytest.raises(ConfigError) as info:
        create(tmp_path / "nope.jsonl")
    assert info.value.field == "training_file" and "nope.jsonl" in str(info.value)
    with pytest.raises(ConfigError) as info:
        create(chat_jsonl, validation_file=tmp_path / "nope2.jsonl")
    assert info.value.field == "validation_file"
    assert FineTuneJob.list() == []
