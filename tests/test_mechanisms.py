"""The mechanisms every adapter shares, tested once here: create-once, the error boundary and its
status table, wait-until, digests, timestamps, dataset shapes, device choice and capability ranges."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from anytune import JobSpec
from anytune._boundary import boundary, error_class_for_status, scrub_exception
from anytune._capabilities import Capabilities, Range, problems
from anytune._create_once import DEFAULT_SETTLE, create_once, outcome_unknown
from anytune._data.formats import example_format, file_format, prompt_completion_messages
from anytune._files import file_digest, file_digests
from anytune._retry import RetryPolicy
from anytune._secrets import register_secret
from anytune._timestamps import parse_timestamp
from anytune._waiting import wait_until
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
    ServiceUnavailableError,
)
from anytune.testing import FakeClock, FaultScript

# -- create-once ------------------------------------------------------------------------------------


class Lost(Exception):
    """The answer was lost after the service acted (or maybe before): ambiguous, transient."""


class Throttled(Exception):
    """A 429: refused before any work; transient, not ambiguous."""


class Conflict(Exception):
    """A 409: the name exists; ambiguous, not worth sending again."""


class Service:
    """A fake remote store of jobs keyed by idempotency key."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}

    def create(self, key: str) -> str:
        self.jobs.setdefault(key, f"job-{len(self.jobs) + 1}")
        return self.jobs[key]

    def lookup(self, key: str) -> str | None:
        return self.jobs.get(key)


def _run(service: Service, create: Any, lookup: Any, clock: FakeClock, attempts: int = 5) -> str:
    return create_once(
        create,
        lookup,
        is_ambiguous=lambda e: isinstance(e, (Lost, Conflict)),
        retry_on=lambda e: isinstance(e, (Lost, Throttled)),
        policy=RetryPolicy(max_attempts=attempts, jitter=0.0),
        sleep=clock.sleep,
        clock=clock.clock,
        rand=lambda: 0.0,
    )


@pytest.mark.parametrize(
    ("faults", "late", "created", "calls"),
    [
        ([], (), 1, 1),  # no fault: one create
        ([Throttled(), Throttled()], (), 1, 3),  # refused twice before any work, then created
        ([Lost()], (1,), 1, 1),  # created, answer lost: found by the lookup, never sent again
        ([Lost()], (), 1, 2),  # lost before the service acted: lookup finds nothing, sent again
        ([Lost(), Lost()], (1, 2), 1, 1),  # one job however many answers are lost
    ],
)
def test_create_once_never_makes_two_jobs(
    faults: list[Exception], late: tuple[int, ...], created: int, calls: int
) -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), faults).after(*late)
    assert _run(service, create, lambda: service.lookup("k"), clock) == "job-1"
    assert len(service.jobs) == created and create.calls == calls


def test_a_failing_lookup_never_lets_a_second_create_through() -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Lost()]).after(1)
    lookups = FaultScript(lambda: service.lookup("k"), [Throttled()] * 10)
    with pytest.raises(Throttled):
        _run(service, create, lookups, clock, attempts=4)
    assert create.calls == 1  # the fate stayed unknown: no second create
    assert lookups.calls == 3  # retried within the policy, not once more after giving up


def test_a_lookup_that_recovers_finds_the_job() -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Lost()]).after(1)
    lookups = FaultScript(lambda: service.lookup("k"), [Throttled()])
    assert _run(service, create, lookups, clock) == "job-1"
    assert create.calls == 1 and lookups.calls == 2


def test_a_conflict_is_looked_up_once_and_not_sent_again() -> None:
    service, clock = Service(), FakeClock()
    service.jobs["k"] = "job-earlier"
    create = FaultScript(lambda: service.create("k"), [Conflict()])
    assert _run(service, create, lambda: service.lookup("k"), clock) == "job-earlier"
    assert create.calls == 1


def test_giving_up_looks_once_more_for_the_last_attempt() -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Lost(), Lost(), Lost()]).after(3)
    assert _run(service, create, lambda: service.lookup("k"), clock, attempts=3) == "job-1"
    assert create.calls == 3 and len(service.jobs) == 1


def _run_settled(create: Any, lookup: Any, clock: FakeClock, attempts: int = 4, settle: float = 0.0) -> str:
    return create_once(
        create,
        lookup,
        is_ambiguous=lambda e: isinstance(e, (Lost, Conflict)),
        retry_on=lambda e: isinstance(e, (Lost, Throttled)),  # the SDK's errors, as an adapter's are
        policy=RetryPolicy(max_attempts=attempts, jitter=0.0, deadline=60.0),
        settle=settle,
        sleep=clock.sleep,
        clock=clock.clock,
        rand=lambda: 0.0,
    )


def unavailable() -> ServiceUnavailableError:
    # What an adapter's lookup raises once its own read retries are spent: a translated 503.
    return ServiceUnavailableError("listing jobs failed", provider="acme", status_code=503)


def test_an_unavailable_lookup_is_retried_and_finds_the_job() -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Lost()]).after(1)
    lookups = FaultScript(lambda: service.lookup("k"), [unavailable(), unavailable()])
    assert _run_settled(create, lookups, clock) == "job-1"
    assert create.ran == 1 and lookups.calls == 3  # retried within the policy; never sent again


def test_a_throttled_lookup_waits_as_the_service_says() -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Lost()]).after(1)
    lookups = FaultScript(lambda: service.lookup("k"), [RateLimitError("slow down", retry_after=7.0)])
    assert _run_settled(create, lookups, clock) == "job-1"
    assert clock.sleeps == [0.5, 7.0]


def test_a_lookup_failing_to_the_end_leaves_the_outcome_unknown() -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Lost()]).after(1)
    lookups = FaultScript(lambda: service.lookup("k"), [unavailable()] * 10)
    with pytest.raises(ServiceUnavailableError) as caught:
        _run_settled(create, lookups, clock, attempts=4)
    assert outcome_unknown(caught.value)
    assert create.calls == 1 and lookups.calls == 3 and sum(clock.sleeps) <= 60.0
    # An adapter's boundary chains its translation from the marked error: still unknown.
    with pytest.raises(ServiceUnavailableError) as translated, boundary(lambda e: unavailable()):
        _run_settled(
            FaultScript(lambda: service.create("k2"), [Lost()]).after(1),
            FaultScript(lambda: service.lookup("k2"), [Throttled()] * 10),
            clock,
        )
    assert outcome_unknown(translated.value)


def test_the_last_lookup_failing_leaves_the_outcome_unknown() -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Conflict()])  # not worth a retry: one last look
    lookups = FaultScript(lambda: service.lookup("k"), [unavailable()])
    with pytest.raises(ServiceUnavailableError) as caught:
        _run_settled(create, lookups, clock)
    assert outcome_unknown(caught.value) and create.calls == 1


@pytest.mark.parametrize(
    ("faults", "late"),
    [
        ([Throttled()] * 4, ()),  # refused every time before any work
        ([Lost()] * 4, ()),  # lost every time before the service acted: each lookup answered "none"
    ],
)
def test_a_create_that_surely_failed_is_not_unknown(faults: list[Exception], late: tuple[int, ...]) -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), faults).after(*late)
    with pytest.raises(Exception) as caught:
        _run_settled(create, lambda: service.lookup("k"), clock)
    assert not outcome_unknown(caught.value) and service.jobs == {}


class LaggingService(Service):
    """A service whose list misses a job for ``lag`` reads after it was written."""

    def __init__(self, lag: int) -> None:
        super().__init__()
        self.lag = lag

    def lookup(self, key: str) -> str | None:
        if key in self.jobs and self.lag > 0:
            self.lag -= 1
            return None
        return super().lookup(key)


@pytest.mark.parametrize("lag", [1, 2])
def test_a_list_lagging_its_writes_never_lets_a_second_create_through(lag: int) -> None:
    service, clock = LaggingService(lag), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Lost()]).after(1)
    assert _run_settled(create, lambda: service.lookup("k"), clock, settle=DEFAULT_SETTLE) == "job-1"
    assert create.ran == 1  # the service acted once: one job
    assert sum(clock.sleeps) <= 0.5 + 2 * DEFAULT_SETTLE  # the back-off, then polls within the window


def test_the_last_lookup_settles_too() -> None:
    service, clock = LaggingService(1), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Conflict()]).after(1)
    assert _run_settled(create, lambda: service.lookup("k"), clock, settle=DEFAULT_SETTLE) == "job-1"


def test_a_settled_absence_is_sent_again_once() -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Lost()])  # lost before the service acted
    lookups = FaultScript(lambda: service.lookup("k"), [])
    assert _run_settled(create, lookups, clock, settle=4.0) == "job-1"
    assert create.calls == 2 and create.ran == 1
    assert 2 <= lookups.calls <= 5  # looked again over the window, a few polls, not a busy loop
    assert sum(clock.sleeps) - 0.5 <= 4.0 * 1.5


def test_create_once_waits_as_the_policy_says() -> None:
    service, clock = Service(), FakeClock()
    create = FaultScript(lambda: service.create("k"), [Throttled(), Throttled()])
    _run(service, create, lambda: service.lookup("k"), clock)
    assert clock.sleeps == [0.5, 1.0]


# -- the boundary and the status table ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "family"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, InvalidRequestError),
        (408, ServiceUnavailableError),
        (409, InvalidRequestError),
        (418, InvalidRequestError),
        (429, RateLimitError),
        (500, ServiceUnavailableError),
        (503, ServiceUnavailableError),
        (None, ProviderError),
    ],
)
def test_status_table(status: int | None, family: type[ProviderError]) -> None:
    assert error_class_for_status(status) is family


class SdkError(Exception):
    def __init__(self, message: str, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.body = body


def _translate(exc: Exception) -> AnytuneError | None:
    return InvalidRequestError(f"refused: {exc}") if isinstance(exc, SdkError) else None


def test_boundary_translates_chains_and_scrubs_the_whole_chain() -> None:
    secret = "sk-boundary-" + "x" * 24
    register_secret(secret)
    with pytest.raises(InvalidRequestError) as caught, boundary(_translate):
        try:
            raise ConnectionError(f"retrying with key {secret}")
        except ConnectionError as low:
            raise SdkError(f"bad key {secret}", {"error": {"message": f"key {secret}"}}) from low
    cause = caught.value.__cause__
    assert isinstance(cause, SdkError)
    for text in (str(caught.value), str(cause), cause.message, json.dumps(cause.body), str(cause.__cause__)):
        assert secret not in text


def test_boundary_lets_anytune_errors_and_foreign_bugs_through() -> None:
    with pytest.raises(KeyError), boundary(_translate):
        raise KeyError("a bug stays a bug")
    with pytest.raises(RateLimitError), boundary(_translate):
        raise RateLimitError("already ours")


def test_scrub_survives_read_only_attributes_and_cycles() -> None:
    class ReadOnly(Exception):
        @property
        def message(self) -> str:
            return "fixed"

    exc = ReadOnly("sk-cycle-" + "y" * 24)
    exc.__context__ = exc
    scrub_exception(exc)
    assert "yyyy" not in str(exc)


# -- wait-until ------------------------------------------------------------------------------------


def test_wait_until_backs_off_and_returns_the_ready_answer() -> None:
    clock, answers = FakeClock(), iter(["pending", "pending", "running", "processed"])
    got = wait_until(
        lambda: next(answers),
        lambda s: s == "processed",
        timeout=100,
        on_timeout=lambda s: TimeoutError(s),
        sleep=clock.sleep,
        clock=clock.clock,
    )
    assert got == "processed" and clock.sleeps == [1.0, 1.5, 2.25]


def test_wait_until_times_out_with_the_last_answer() -> None:
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="still pending"):
        wait_until(
            lambda: "pending",
            lambda s: False,
            timeout=10,
            on_timeout=lambda s: TimeoutError(f"still {s}"),
            sleep=clock.sleep,
            clock=clock.clock,
        )
    assert sum(clock.sleeps) >= 10 and max(clock.sleeps) <= 30


# -- files, timestamps, shapes -----------------------------------------------------------------------


def test_digests_stream_the_file(tmp_path: Path) -> None:
    data = b"abc\n" * 300_000
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    assert file_digest(path, chunk=4096) == (len(data), hashlib.sha256(data).hexdigest())
    both = file_digests(path, chunk=4096)
    assert (both.size, both.sha256, both.md5) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        hashlib.md5(data).hexdigest(),
    )


EPOCH_2024 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1704164645, "auto", EPOCH_2024),
        (1704164645.0, "s", EPOCH_2024),
        (1704164645000, "auto", EPOCH_2024),
        (1704164645000, "ms", EPOCH_2024),
        ("2024-01-02T03:04:05Z", "auto", EPOCH_2024),
        ("2024-01-02T03:04:05+00:00", "auto", EPOCH_2024),
        ("2024-01-02T03:04:05", "auto", EPOCH_2024),
        (datetime(2024, 1, 2, 3, 4, 5), "auto", EPOCH_2024),
        (None, "auto", None),
        (True, "auto", None),
        (float("nan"), "auto", None),
        (float("inf"), "s", None),
        (1e300, "s", None),
        ("yesterday", "auto", None),
        ("", "auto", None),
        ([], "auto", None),
    ],
)
def test_parse_timestamp(value: object, unit: str, expected: datetime | None) -> None:
    assert parse_timestamp(value, unit=unit) == expected


@pytest.mark.parametrize(
    ("obj", "strict", "loose"),
    [
        ({"messages": []}, "chat", "chat"),
        ({"input": {}, "preferred_output": [], "non_preferred_output": []}, "preference", "preference"),
        ({"input": {}}, "unknown", "preference"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion", "prompt_completion"),
        ({"prompt": "p"}, "unknown", "prompt_completion"),
        ({"text": "t"}, "unknown", "unknown"),
    ],
)
def test_example_format(obj: dict[str, Any], strict: str, loose: str) -> None:
    assert example_format(obj) == strict and example_format(obj, loose=True) == loose


def test_file_format_reads_the_first_example(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('\n\n{"prompt": "p", "completion": "c"}\n{"messages": []}\n')
    assert file_format(path) == "prompt_completion"
    path.write_text("not json\n")
    assert file_format(path) == "unknown"
    path.write_text("")
    assert file_format(path) == "unknown"


def test_prompt_completion_as_chat() -> None:
    assert prompt_completion_messages("p", "c", system="s") == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "p"},
        {"role": "assistant", "content": "c"},
    ]


# -- capability ranges and hints ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rng", "inside", "outside", "text"),
    [
        (Range(low=1, high=50), [1, 50, 25.5], [0, 51, "3"], "1 to 50"),
        (Range(low=0, high=2, low_open=True), [0.1, 2], [0, 2.01], "(0, 2]"),
        (Range(low=1), [1, 1e9], [0.5], "at least 1"),
        (Range(high=10, high_open=True), [-5, 9.99], [10], "below 10"),
    ],
)
def test_range(rng: Range, inside: list[Any], outside: list[Any], text: str) -> None:
    assert all(v in rng for v in inside) and not any(v in rng for v in outside)
    assert rng.describe() == text


def test_problems_use_ranges_and_hints(tmp_path: Path) -> None:
    caps = Capabilities(
        hyperparameters=frozenset({"epochs"}),
        ranges={"epochs": Range(low=1, high=10)},
        hints={"hyperparameters.learning_rate": "set learning_rate_multiplier instead"},
        service="Acme",
    )
    spec = JobSpec(
        base_model="m", training_file=tmp_path / "t.jsonl", hyperparameters={"epochs": 20, "learning_rate": 1e-4}
    )
    # What cannot be set at all comes first, then what is out of range.
    assert problems(spec, caps) == [
        ("hyperparameters.learning_rate", "set learning_rate_multiplier instead"),
        ("hyperparameters.epochs", "Acme accepts epochs in 1 to 10, not 20"),
    ]


# -- the constructor seam ------------------------------------------------------------------------------


def test_a_sleep_injected_alone_moves_the_providers_clock(tmp_path: Path) -> None:
    from anytune.providers.azureml import AzureMLProvider

    slept: list[float] = []
    provider = AzureMLProvider(home=tmp_path, sleep=slept.append)
    before = provider.clock()
    provider.sleep(120.0)
    assert slept == [120.0]
    assert provider.clock() - before >= 120.0  # a deadline in slept time is reached, no spinning
    timing = provider.timing
    assert timing["sleep"] is provider.sleep and timing["clock"] is provider.clock
