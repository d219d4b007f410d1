"""Faults between the adapter and the service: throttling with Retry-After, 5xx bursts, read
timeouts and dropped connections on every call, create included.  Whatever happens, the job
completes, the service holds exactly one job, and no event is lost or repeated.  Also: planted
secrets never reach logs, errors or the job store."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest

from anytune import FineTuneJob, JobStatus, JobStore, ServiceUnavailableError
from anytune._provider import IDEMPOTENCY_TAG
from tests.providers.openai_fake import CHAOS_KINDS, Fault, Flavour
from tests.providers.openai_support import (
    MODEL,
    Rig,
    chat_file,
    make_rig,
    services_keep_to_their_schemas,  # noqa: F401 (autouse: every fake held to its published schemas)
    settings,
)

S = JobStatus
JOB = r"/fine_tuning/jobs/[^/]+"
EVENTS = r"/fine_tuning/jobs/[^/]+/events"


@pytest.fixture(params=["openai", "azure"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def train(tmp_path: Path) -> Path:
    return chat_file(tmp_path / "train.jsonl", n=30)


def run_to_end(rig: Rig, train: Path, **options: object) -> FineTuneJob:
    """Create, follow to the end, fetch the result; check the invariants every fault test shares."""
    service = rig.service
    job = FineTuneJob.create(provider=rig.provider(**options), base_model=MODEL, training_file=train)
    seen = []
    record = job.wait(on_event=seen.append)
    assert record.status is S.SUCCEEDED
    assert len(service.jobs) == 1, "a fault made the adapter create a second job"
    assert [e.id for e in seen] == [e["id"] for e in service.job_events(job.id)], "an event was lost or repeated"
    model = job.result()
    assert model.model_id and [c.step for c in model.checkpoints] == [3, 6]
    assert [m.step for m in job.metrics()] == [1, 2, 3, 4, 5, 6]
    assert service.violations == []
    return job


def test_429_with_retry_after_is_honoured(flavour: Flavour, tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, flavour)
    service, sleeps = rig.service, rig.sleeps
    service.inject("GET", JOB, Fault("status", 429, headers={"retry-after": "7"}))
    service.inject("GET", EVENTS, Fault("status", 429, headers={"retry-after-ms": "1500"}))
    run_to_end(rig, train)
    assert 7.0 in sleeps and 1.5 in sleeps
    assert service.faults_fired == 2


def test_retry_after_beyond_the_cap_is_capped(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    service, sleeps = rig.service, rig.sleeps
    service.inject("GET", JOB, Fault("status", 429, headers={"retry-after": "3600"}))
    run_to_end(rig, train, max_backoff=20.0)
    assert max(sleeps) == 20.0


def test_5xx_bursts(flavour: Flavour, tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, flavour)
    service, sleeps = rig.service, rig.sleeps
    burst = (Fault("status", 500), Fault("status", 502), Fault("status", 503), Fault("status", 503))
    service.inject("GET", JOB, *burst)
    service.inject("GET", EVENTS, *burst)
    service.inject("POST", "/files", Fault("status", 503), Fault("status", 502))
    service.inject("GET", r"/fine_tuning/jobs/[^/]+/checkpoints", Fault("status", 500))
    service.inject("GET", r"/files/[^/]+/content", Fault("status", 503))
    run_to_end(rig, train)
    assert service.faults_fired == 12
    assert {0.5, 1.0, 2.0, 4.0} <= set(sleeps)  # exponential back-off (jitter is zeroed in tests)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("timeout"),
        Fault("timeout_after"),
        Fault("drop"),
        Fault("drop_after"),
        Fault("connect"),
        Fault("status", 503),
        Fault("status_after", 500),
        Fault("status", 429, headers={"retry-after": "2"}),
        Fault("status", 408),
    ],
    ids=lambda f: f"{f.kind}-{f.status}" if f.kind.startswith("status") else f.kind,
)
def test_create_is_never_duplicated(flavour: Flavour, fault: Fault, tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, flavour)
    service = rig.service
    service.inject("POST", "/fine_tuning/jobs", fault)
    job = run_to_end(rig, train)
    # The log holds requests the server acted on: one create, whether the first attempt was refused
    # before acting (and retried) or acted with its answer lost (and found by the lookup).
    assert len(service.requests("POST", "/fine_tuning/jobs")) == 1
    lookups = service.requests("GET", "/fine_tuning/jobs")
    ambiguous = fault.kind != "status" or fault.status != 429
    assert len(lookups) == (2 if ambiguous else 1)  # the one before submitting, and one after an ambiguous failure
    stored = FineTuneJob.list()[0]
    assert service.jobs[job.id].obj["metadata"][IDEMPOTENCY_TAG] == stored.idempotency_key
    # OpenAI filters the list by the tag; Azure's list takes no filter, so the adapter checks each job.
    filtered = {f"metadata[{IDEMPOTENCY_TAG}]": stored.idempotency_key} if flavour == "openai" else {}
    assert all(
        {k: v for k, v in r.query.items() if k != "api-version"} == {"limit": "100", **filtered} for r in lookups
    )


def test_the_last_attempt_is_looked_up_too(flavour: Flavour, tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, flavour)
    service = rig.service
    # Attempt 1 fails before the server acts; attempt 2 creates the job but its answer is lost and
    # no attempt is left: the adapter looks the tag up once more instead of reporting a failure.
    service.inject("POST", "/fine_tuning/jobs", Fault("timeout"), Fault("timeout_after"))
    run_to_end(rig, train, max_attempts=2)
    assert len(service.requests("POST", "/fine_tuning/jobs")) == 1


def test_a_create_that_keeps_failing_is_reported_and_recorded(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    service, sleeps = rig.service, rig.sleeps
    service.inject("POST", "/fine_tuning/jobs", *[Fault("status", 503)] * 3)
    with pytest.raises(ServiceUnavailableError) as info:
        FineTuneJob.create(provider=rig.provider(max_attempts=3), base_model=MODEL, training_file=train)
    assert not type(info.value).__module__.startswith("openai")
    assert type(info.value.__cause__).__module__.startswith("openai")  # chained, for debugging
    assert info.value.status_code == 503 and service.jobs == {}
    assert len(sleeps) == 2
    stored = FineTuneJob.list()[0]
    assert stored.status == "submit_failed" and "ServiceUnavailableError" in (stored.submit_error or "")


def test_reads_that_keep_failing_raise_a_service_error(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    service = rig.service
    job = FineTuneJob.create(provider=rig.provider(max_attempts=2), base_model=MODEL, training_file=train)
    service.inject("GET", JOB, Fault("timeout"), Fault("drop"))
    with pytest.raises(ServiceUnavailableError):
        job.refresh()
    assert job.refresh().status is not S.SUCCEEDED  # and it recovers on the next call


@pytest.mark.parametrize("uploads_api", [False, True], ids=["files-api", "uploads-api"])
def test_every_call_fails_once(flavour: Flavour, uploads_api: bool, tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, flavour)
    service, sleeps = rig.service, rig.sleeps
    service.chaos()
    options: dict[str, object] = {"max_attempts": 4}
    if uploads_api:
        options.update(upload_threshold_bytes=1024, upload_part_bytes=1024, upload_concurrency=3)
        if flavour == "azure":
            options["api_version"] = "2025-04-01-preview"  # Azure's v1 has no Uploads API
    run_to_end(rig, train, **options)
    assert service.faults_fired >= len(CHAOS_KINDS)
    assert len(service.requests("POST", "/fine_tuning/jobs")) == 1
    if uploads_api:
        [upload] = service.uploads.values()
        assert upload["status"] == "completed"
        assert service.content(upload["file"]["id"]) == train.read_bytes()
    assert 1.0 in sleeps and 0.25 in sleeps  # Retry-After and retry-after-ms from the throttled answers


def test_planted_secrets_stay_secret(
    flavour: Flavour,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    train: Path,
    anytune_home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    planted = "plantedSecretValue4f9a2c7e1b"  # no well-known key shape: only registration can mask it
    rig = make_rig(tmp_path, flavour)
    service = rig.service
    service.api_key = planted
    variable = "AZURE_OPENAI_API_KEY" if flavour == "azure" else "OPENAI_API_KEY"
    monkeypatch.setenv(variable, planted)
    base = settings(flavour)
    base.pop("api_key")
    caplog.set_level(logging.DEBUG)
    service.chaos()  # retries log too

    job = FineTuneJob.create(provider=rig.provider(base), base_model=MODEL, training_file=train)
    job.wait()
    job.result()
    service.api_key = "rotated-key-the-client-does-not-have"
    with pytest.raises(Exception) as info:  # the service echoes the rejected key back
        job.refresh()

    if flavour == "openai":
        assert "Incorrect API key provided: ***" in str(info.value)  # echoed back, and masked
    printed = "".join(traceback.format_exception(info.value))  # the chained SDK error included
    assert planted not in printed and planted not in repr(info.value)
    assert planted not in caplog.text
    assert planted not in repr(job.record) and planted not in repr(job._provider)
    JobStore(anytune_home / "jobs.db").close()
    for path in anytune_home.rglob("*"):
        if path.is_file():
            assert planted.encode() not in path.read_bytes(), path
