"""The I/O-free polling core: back-off delays and the event cursor."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from anytune import Event, JobRecord, JobStatus, PollPolicy, WaitTimeoutError
from anytune._polling import EventCursor, Follower

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def ev(i: int) -> Event:
    return Event(id=f"{i:06d}", kind="log", time=T0, message=f"event {i}")


def test_delays_grow_then_cap() -> None:
    policy = PollPolicy(initial=1.0, maximum=5.0, factor=2.0)
    assert [policy.delay(a) for a in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert policy.delay(1000) == 5.0
    assert policy.delay(-3) == 1.0


def test_default_policy_is_sane() -> None:
    delays = [PollPolicy().delay(a) for a in range(30)]
    assert delays == sorted(delays)
    assert delays[0] > 0 and max(delays) == PollPolicy().maximum


def test_hint_replaces_the_initial_delay() -> None:
    policy = PollPolicy(initial=1.0, maximum=60.0, factor=2.0)
    assert policy.delay(0, hint=7.0) == 7.0
    assert policy.delay(1, hint=7.0) == 14.0
    assert policy.delay(10, hint=7.0) == 60.0


@pytest.mark.parametrize(("remaining", "expected"), [(10.0, 4.0), (2.5, 2.5), (0.0, 0.0), (-1.0, 0.0)])
def test_delay_never_passes_the_deadline(remaining: float, expected: float) -> None:
    policy = PollPolicy(initial=1.0, maximum=30.0, factor=2.0)
    assert policy.delay(2, remaining=remaining) == expected


def test_cursor_hands_out_each_event_once_in_order() -> None:
    cursor = EventCursor()
    assert cursor.last is None
    assert [e.id for e in cursor.accept([ev(1), ev(2), ev(3)])] == ["000001", "000002", "000003"]
    assert cursor.last == "000003"
    # A provider that re-sends after a reconnect: only the new ones come through.
    assert [e.id for e in cursor.accept([ev(2), ev(3), ev(4), ev(4), ev(5)])] == ["000004", "000005"]
    assert cursor.last == "000005"
    assert list(cursor.accept([])) == [] and cursor.last == "000005"


def test_cursor_starts_after_a_given_id() -> None:
    cursor = EventCursor(after="000007")
    assert cursor.last == "000007"
    assert [e.id for e in cursor.accept([ev(8)])] == ["000008"]


def test_cursor_memory_is_bounded() -> None:
    cursor = EventCursor(memory=3)
    list(cursor.accept(ev(i) for i in range(10)))
    assert [e.id for e in cursor.accept([ev(8), ev(9)])] == []  # still remembered
    assert len(cursor._seen) == len(cursor._seen_set) == 3
    assert cursor.last == "000009"


def _rec(status: JobStatus) -> JobRecord:
    return JobRecord(provider="fake", id="fakejob-1", status=status)


def test_follower_backs_off_while_idle_and_resets_on_events() -> None:
    now = [0.0]
    follow = Follower("fake:fakejob-1", PollPolicy(initial=1.0, maximum=8.0, factor=2.0), lambda: now[0], None, None)
    running = _rec(JobStatus.RUNNING)
    assert [follow.next_delay(running, False) for _ in range(4)] == [2.0, 4.0, 8.0, 8.0]
    assert follow.next_delay(running, True) == 1.0
    assert follow.next_delay(_rec(JobStatus.SUCCEEDED), False) is None


def test_follower_stops_at_the_deadline() -> None:
    now = [100.0]
    follow = Follower("fake:fakejob-1", PollPolicy(initial=1.0, maximum=8.0), lambda: now[0], 5.0, None)
    running = _rec(JobStatus.RUNNING)
    now[0] = 104.5
    assert follow.next_delay(running, False) == 0.5  # never sleeps past the deadline
    now[0] = 105.0
    with pytest.raises(WaitTimeoutError) as info:
        follow.next_delay(running, False)
    assert info.value.record is running and info.value.timeout == 5.0
    # A finished job is never a timeout, however late.
    assert follow.next_delay(_rec(JobStatus.FAILED), False) is None
