"""``AsyncFineTuneJob`` on the fake provider, driven by ``asyncio.run`` (no pytest-asyncio)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from anytune import (
    AsyncFineTuneJob,
    Event,
    FakeOptions,
    FakeStep,
    FineTuneJob,
    JobFailedError,
    JobSpec,
    JobStatus,
    JobStore,
    WaitTimeoutError,
)
from anytune.providers.fake import FakeProvider, FakeSettings
from tests.conftest import FakeClock


async def acreate(training_file: Path, **fields: object) -> AsyncFineTuneJob:
    fields.setdefault("fake", {"seconds": 0.1})
    return await AsyncFineTuneJob.create(provider="fake", base_model="tiny", training_file=training_file, **fields)


def test_create_stream_result(chat_jsonl: Path) -> None:
    async def main() -> tuple[AsyncFineTuneJob, list[Event], object]:
        job = await acreate(chat_jsonl)
        events = [event async for event in job.stream()]
        return job, events, await job.result()

    job, events, model = asyncio.run(main())

    statuses = [e.status for e in events if e.kind == "status"]
    assert statuses == [JobStatus.VALIDATING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    ids = [e.id for e in events]
    assert ids == sorted(set(ids))
    assert job.record.status is JobStatus.SUCCEEDED
    assert model.model_id == job.record.fine_tuned_model and model.job_ref == job.ref  # type: ignore[attr-defined]
    (row,) = FineTuneJob.list()
    assert row.ref == job.ref and row.status == "succeeded"


def test_wait_with_callback_metrics_and_checkpoints(chat_jsonl: Path) -> None:
    async def main() -> None:
        job = await acreate(chat_jsonl)
        seen: list[Event] = []
        record = await job.wait(on_event=seen.append)
        assert record.status is JobStatus.SUCCEEDED
        assert await job.done() and await job.status() is JobStatus.SUCCEEDED
        assert seen == await job.events()
        assert [m.step for m in await job.metrics()] == [1, 2, 3, 4, 5]
        assert [c.step for c in await job.checkpoints()] == [5]
        later = await job.events(after=seen[3].id)
        assert later == seen[4:]

    asyncio.run(main())


def test_failed_job(chat_jsonl: Path) -> None:
    async def main() -> None:
        job = await acreate(chat_jsonl, fake={"scenario": "fail", "seconds": 0.1})
        record = await job.wait()
        assert record.status is JobStatus.FAILED and record.error is not None
        with pytest.raises(JobFailedError) as info:
            await job.result()
        assert info.value.record.error == record.error

    asyncio.run(main())


def test_cancel(chat_jsonl: Path) -> None:
    async def main() -> None:
        job = await acreate(chat_jsonl, fake={"seconds": 120})
        assert (await job.cancel()).status is JobStatus.CANCELLED
        assert (await job.wait(timeout=30)).status is JobStatus.CANCELLED
        with pytest.raises(JobFailedError):
            await job.result()
        (row,) = await AsyncFineTuneJob.list(status=JobStatus.CANCELLED)
        assert row.ref == job.ref

    asyncio.run(main())


def test_get_reattaches_to_a_sync_job(chat_jsonl: Path) -> None:
    job = FineTuneJob.create(provider="fake", base_model="tiny", training_file=chat_jsonl, fake={"seconds": 0.1})

    async def main() -> JobStatus:
        again = await AsyncFineTuneJob.get(job.ref)
        assert again.ref == job.ref
        return (await again.wait(timeout=30)).status

    assert asyncio.run(main()) is JobStatus.SUCCEEDED


def test_stream_resume_and_timeout_on_a_fake_clock(anytune_home: Path, chat_jsonl: Path, clock: FakeClock) -> None:
    provider = FakeProvider(FakeSettings(), home=anytune_home, clock=clock)
    steps = [
        FakeStep(at=0, status="running"),
        FakeStep(at=1, status="running", step=1, train_loss=1.0),
        FakeStep(at=20, status="succeeded"),
    ]
    spec = JobSpec(base_model="tiny", training_file=chat_jsonl, fake=FakeOptions(timeline=steps))
    record = provider.submit(spec, idempotency_key="async-key")
    store = JobStore(anytune_home / "jobs.db")

    async def main() -> None:
        job = AsyncFineTuneJob(record, provider, store=store, sleep=clock.async_sleep, clock=clock)
        with pytest.raises(WaitTimeoutError) as info:
            await job.wait(timeout=5)
        assert info.value.record is not None and info.value.record.status is JobStatus.RUNNING
        assert sum(clock.sleeps) == pytest.approx(5)
        first = await job.events()
        rest = [e async for e in job.stream(after=first[-1].id)]
        assert [e.status for e in rest] == [JobStatus.SUCCEEDED]
        assert (await job.result()).model_id is not None

    asyncio.run(main())
    assert clock.now - clock.start >= 20


def test_async_metrics_keep_one_point_per_step_like_the_sync_handle(
    anytune_home: Path, chat_jsonl: Path, clock: FakeClock
) -> None:
    """Step 2 reported again after a resume: the curve keeps the later report, in step order."""
    provider = FakeProvider(FakeSettings(), home=anytune_home, clock=clock)
    steps = [
        FakeStep(at=0, status="running"),
        FakeStep(at=1, status="running", step=1, train_loss=2.0),
        FakeStep(at=2, status="running", step=2, train_loss=7.0),
        FakeStep(at=3, status="running", step=2, train_loss=1.5, valid_loss=1.75),
        FakeStep(at=4, status="succeeded"),
    ]
    spec = JobSpec(base_model="tiny", training_file=chat_jsonl, fake=FakeOptions(timeline=steps))
    record = provider.submit(spec, idempotency_key="async-resumed")
    store = JobStore(anytune_home / "jobs.db")

    async def main() -> None:
        job = AsyncFineTuneJob(record, provider, store=store, sleep=clock.async_sleep, clock=clock)
        await job.wait()
        points = await job.metrics()
        assert [(p.step, p.train_loss, p.valid_loss) for p in points] == [(1, 2.0, None), (2, 1.5, 1.75)]
        assert (await job.result()).final_metrics == points[-1]
        assert points == FineTuneJob(record, provider, store=store, sleep=clock.sleep, clock=clock).metrics()

    asyncio.run(main())
