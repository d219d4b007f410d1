"""The shared retry policy: Retry-After parsing, back-off, deadline, and the tenacity wiring."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from anytune._retry import RetryPolicy, is_retryable_status, parse_retry_after, retry_call

NOW = 1_700_000_000.0


def http_date(seconds_from_now: float) -> str:
    return format_datetime(
        datetime.fromtimestamp(NOW, tz=timezone.utc) + timedelta(seconds=seconds_from_now), usegmt=True
    )


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (200, False),
        (400, False),
        (401, False),
        (404, False),
        (408, True),
        (409, False),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
    ],
)
def test_retryable_statuses(code: int, retry: bool) -> None:
    assert is_retryable_status(code) is retry


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER": "0"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # milliseconds win: more precise
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # a bad header falls through
        ({"retry-after": "-4"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": http_date(30)}, 30.0),
        ({"retry-after": http_date(-30)}, 0.0),  # a date in the past means now
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=lambda: NOW) == expected


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_backoff=0.5, multiplier=2.0, max_backoff=10.0, jitter=0.5)
    no_jitter = [policy.backoff(n, 0.0) for n in range(8)]
    assert no_jitter == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    for n in range(8):
        low, high = policy.backoff(n, 0.999999), policy.backoff(n, 0.0)
        assert high / 2 - 1e-6 <= low <= high  # jitter takes off at most half


def test_delay_prefers_the_server_hint_but_caps_it() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=30.0)
    assert policy.delay(0, hint=7.0, rand=0.5) == 7.0
    assert policy.delay(3, hint=0.0, rand=0.5) == 0.0  # "come back now" is honoured too
    assert policy.delay(0, hint=3600.0, rand=0.0) == 30.0
    assert policy.delay(2, hint=None, rand=0.0) == 4.0


def test_gives_up_on_attempts_or_deadline() -> None:
    policy = RetryPolicy(max_attempts=3, deadline=10.0)
    assert not policy.gives_up(1, 0.0, 1.0)
    assert policy.gives_up(3, 0.0, 0.0)
    assert policy.gives_up(1, 9.5, 1.0)  # the retry would start after the deadline
    assert not policy.gives_up(2, 8.0, 1.9)


class Transient(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("transient")
        self.retry_after = retry_after


class Permanent(Exception):
    pass


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def run(fn: object, policy: RetryPolicy, rec: Recorder) -> object:
    return retry_call(
        fn,  # type: ignore[arg-type]
        policy=policy,
        retry_on=lambda e: isinstance(e, Transient),
        retry_after=lambda e: getattr(e, "retry_after", None),
        sleep=rec.sleep,
        clock=rec.clock,
        rand=lambda: 0.0,
    )


def failing(*errors: Exception, result: str = "ok") -> object:
    queue = list(errors)
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if queue:
            raise queue.pop(0)
        return result

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def test_retries_transient_errors_with_backoff_then_succeeds() -> None:
    rec = Recorder()
    fn = failing(Transient(), Transient(), Transient())
    assert run(fn, RetryPolicy(initial_backoff=0.5), rec) == "ok"
    assert rec.sleeps == [0.5, 1.0, 2.0]


def test_honours_retry_after_from_the_error() -> None:
    rec = Recorder()
    fn = failing(Transient(retry_after=7.0), Transient(retry_after=0.25))
    assert run(fn, RetryPolicy(), rec) == "ok"
    assert rec.sleeps == [7.0, 0.25]


def test_non_transient_errors_are_raised_at_once() -> None:
    rec = Recorder()
    fn = failing(Permanent("no"))
    with pytest.raises(Permanent):
        run(fn, RetryPolicy(), rec)
    assert rec.sleeps == []
    assert len(fn.calls) == 1  # type: ignore[attr-defined]


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    rec = Recorder()
    last = Transient()
    fn = failing(Transient(), Transient(), last)
    with pytest.raises(Transient) as info:
        run(fn, RetryPolicy(max_attempts=3), rec)
    assert info.value is last
    assert len(rec.sleeps) == 2


def test_never_sleeps_past_the_deadline() -> None:
    rec = Recorder()
    fn = failing(*[Transient(retry_after=4.0) for _ in range(10)])
    with pytest.raises(Transient):
        run(fn, RetryPolicy(max_attempts=50, deadline=10.0, max_backoff=30.0), rec)
    assert rec.sleeps == [4.0, 4.0]  # a third wait would end at 12 s, past the 10 s deadline
    assert rec.now <= 10.0


def test_azure_ms_header_and_exception_hint() -> None:
    from types import SimpleNamespace

    from anytune._retry import parse_retry_after, retry_after_of

    assert parse_retry_after({"x-ms-retry-after-ms": "1500"}) == 1.5
    exc = RuntimeError("throttled")
    exc.response = SimpleNamespace(headers={"Retry-After": "7"})  # type: ignore[attr-defined]
    assert retry_after_of(exc) == 7.0
    assert retry_after_of(RuntimeError("no response")) is None


def test_a_hint_is_honoured_in_full_when_the_policy_says_so() -> None:
    import math

    policy = RetryPolicy(max_backoff=30.0, retry_after_max=math.inf, deadline=300.0)
    assert policy.delay(0, hint=90.0, rand=0.0) == 90.0
    assert policy.delay(5, hint=None, rand=0.0) == 16.0  # our own back-off stays capped
    assert policy.delay(9, hint=None, rand=0.0) == 30.0
    assert RetryPolicy(max_backoff=30.0, retry_after_max=45.0).delay(0, hint=90.0, rand=0.0) == 45.0


def test_a_hint_up_to_the_deadline_is_slept_one_past_it_ends_the_call() -> None:
    import math

    policy = RetryPolicy(max_attempts=50, deadline=300.0, retry_after_max=math.inf)
    rec = Recorder()
    assert run(failing(Transient(retry_after=90.0)), policy, rec) == "ok"
    assert rec.sleeps == [90.0]
    rec = Recorder()
    last = Transient(retry_after=400.0)
    with pytest.raises(Transient) as info:
        run(failing(last), policy, rec)
    assert info.value is last and rec.sleeps == []


def test_retry_settings_mixin_and_the_older_cap() -> None:
    import math

    from pydantic import Field

    from anytune._provider import ProviderSettings
    from anytune._retry import RetrySettings

    class Settings(ProviderSettings, RetrySettings):
        _WAIT_CAP_SETTING = "max_backoff"
        max_backoff: float = Field(30.0, gt=0)

    assert Settings().hint_cap == math.inf  # the default max_backoff does not cut hints
    assert Settings(max_backoff=20).hint_cap == 20.0  # a profile that set it keeps its meaning
    assert Settings(max_backoff=20, retry_after_max=45).hint_cap == 45.0
    policy = Settings().retry_policy(max_attempts=3, deadline=10.0)
    assert (policy.max_attempts, policy.deadline, policy.retry_after_max) == (3, 10.0, math.inf)
    with pytest.raises(ValueError):
        Settings(retry_after_max=0)
