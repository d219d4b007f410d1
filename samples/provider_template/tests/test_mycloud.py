"""The template provider's own tests: anytune's contract suite, the pure pieces, and faults.

A provider author keeps this file: the contract suite checks what anytune relies on, the rest
checks the service's quirks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anytune_mycloud import FileMyCloud, MyCloudError, MyCloudProvider, MyCloudSettings
from anytune_mycloud.provider import STATUS, record_from_job, translate

from anytune import FineTuneJob, JobSpec, JobStatus
from anytune.errors import AuthenticationError, ConfigError, NotSupportedError, ServiceUnavailableError
from anytune.testing import FakeClock, FaultScript, ProviderContract


def _examples(path: Path) -> Path:
    with path.open("w") as f:
        for i in range(3):
            messages = [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.fixture
def service(tmp_path: Path) -> FileMyCloud:
    return FileMyCloud(tmp_path / "service")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(service: FileMyCloud, clock: FakeClock, tmp_path: Path) -> MyCloudProvider:
    return MyCloudProvider(MyCloudSettings(), client=service, home=tmp_path, sleep=clock.sleep, clock=clock.clock)


@pytest.fixture
def spec(tmp_path: Path) -> JobSpec:
    return JobSpec(base_model="mc-small", training_file=_examples(tmp_path / "train.jsonl"))


class TestMyCloudContract(ProviderContract):
    """Everything anytune relies on, run on MyCloud."""


@pytest.mark.parametrize(("raw", "status"), [*STATUS.items(), ("SOMETHING_NEW", JobStatus.RUNNING)])
def test_status_table(raw: str, status: JobStatus) -> None:
    assert record_from_job({"id": "mc-1", "state": raw}).status is status


@pytest.mark.parametrize(
    ("code", "name"), [(401, "AuthenticationError"), (429, "RateLimitError"), (503, "ServiceUnavailableError")]
)
def test_errors_translate_by_status(code: int, name: str) -> None:
    mapped = translate(MyCloudError(code, "no"))
    assert type(mapped).__name__ == name


def test_a_lost_answer_to_create_makes_one_job(provider: MyCloudProvider, service: FileMyCloud, spec: JobSpec) -> None:
    # The service creates the job, then the answer is lost (503): the provider must find it, not create again.
    flaky = FaultScript(service.create_job, [MyCloudError(503, "gateway")]).after(1)
    service.create_job = flaky  # type: ignore[method-assign]
    record = provider.submit(spec, idempotency_key="k1")
    assert flaky.ran == 1 and len(service.list_jobs()) == 1
    assert record.id == service.list_jobs()[0]["id"]


def test_reads_retry_then_give_up_with_one_clear_error(
    provider: MyCloudProvider, service: FileMyCloud, clock: FakeClock
) -> None:
    failing = FaultScript(service.list_jobs, [MyCloudError(503, "down")] * 10)
    service.list_jobs = failing  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailableError):
        provider.list()
    assert failing.calls == 4 and len(clock.sleeps) == 3


def test_retry_after_is_honoured(provider: MyCloudProvider, service: FileMyCloud, clock: FakeClock) -> None:
    throttled = FaultScript(service.list_jobs, [MyCloudError(429, "slow down", {"Retry-After": "7"})])
    service.list_jobs = throttled  # type: ignore[method-assign]
    assert provider.list() == []
    assert clock.sleeps == [7.0]


def test_a_key_echoed_by_the_service_is_never_shown(service: FileMyCloud, clock: FakeClock, tmp_path: Path) -> None:
    key = "mc-secret-" + "k" * 24
    provider = MyCloudProvider(MyCloudSettings(api_key=key), client=service, home=tmp_path, sleep=clock.sleep)
    service.list_jobs = FaultScript(service.list_jobs, [MyCloudError(401, f"key {key} is revoked")] * 3)  # type: ignore[method-assign]
    with pytest.raises(AuthenticationError) as caught:
        provider.list()
    shown = [str(caught.value), repr(caught.value), str(caught.value.__cause__), repr(provider)]
    assert all(key not in text for text in shown)


def test_options_section_is_typed(provider: MyCloudProvider, spec: JobSpec, service: FileMyCloud) -> None:
    bad = spec.model_copy(update={"options": {"mycloud": {"priority": "urgent"}}})
    with pytest.raises(ConfigError) as caught:
        FineTuneJob.create(bad, provider=provider)
    assert caught.value.field == "options.mycloud.priority"
    assert service.list_jobs() == []


def test_ranges_come_from_the_capability_table(provider: MyCloudProvider, spec: JobSpec) -> None:
    with pytest.raises(NotSupportedError, match="MyCloud accepts epochs in 1 to 10, not 20"):
        FineTuneJob.create(spec, provider=provider, hyperparameters={"epochs": 20})


def test_through_fine_tune_job(provider: MyCloudProvider, spec: JobSpec, clock: FakeClock, tmp_path: Path) -> None:
    job = FineTuneJob.create(spec, provider=provider, options={"mycloud": {"priority": "high"}})
    final = job.wait(timeout=60)
    assert final.status is JobStatus.SUCCEEDED
    model: Any = job.result()
    assert model.model_id == f"mc-small-ft-{job.id}"
