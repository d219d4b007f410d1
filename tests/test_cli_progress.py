"""Progress off a terminal: plain lines at most every few seconds, not a redrawn view nor a line per step."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from anytune import Event, JobRecord, JobStatus, MetricPoint
from anytune._cli._progress import ProgressLines, duration
from tests.clitools import run_cli
from tests.conftest import FakeClock, chat_example, write_jsonl

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
PROGRESS = re.compile(r"^\d\d:\d\d:\d\d progress   step (\d+)/(\d+) \(\d+%\), loss [\d.]+")


def metric(step: int, seconds: float, *, tokens: int | None = None, loss: float = 1.0) -> Event:
    when = T0 + timedelta(seconds=seconds)
    point = MetricPoint(step=step, train_loss=loss, tokens_seen=tokens, time=when)
    return Event(id=f"{step:08d}", kind="metric", time=when, metric=point, message=f"step {step}")


def record(total: int | None = 100) -> JobRecord:
    return JobRecord(provider="fake", id="fakejob-1", status=JobStatus.RUNNING, raw_status="running", total_steps=total)


def test_progress_lines_are_throttled_and_say_step_loss_speed_and_eta() -> None:
    clock = FakeClock()
    lines = ProgressLines(interval=5.0, clock=clock)
    printed: list[str] = []
    for step in range(1, 51):  # one step a second, 100 tokens a step
        clock.advance(1.0)
        printed += lines.feed(metric(step, step, tokens=100 * step, loss=2.0 / step), record())
    assert len(printed) == 10  # the first at once, then every 5 s: not one per step
    assert printed[0].startswith("12:00:01 progress   step 1/100 (1%), loss 2.0000")
    assert printed[-1] == "12:00:46 progress   step 46/100 (46%), loss 0.0435, 100 tok/s, ETA 54s"
    # At the end, the last figures once more (they changed since), then nothing new.
    assert lines.finish(record()) == ["12:00:50 progress   step 50/100 (50%), loss 0.0400, 100 tok/s, ETA 50s"]
    assert lines.finish(record()) == []


def test_other_events_print_as_they_come_and_a_zero_interval_prints_every_step() -> None:
    lines = ProgressLines(interval=0, clock=FakeClock())
    status = Event(id="1", kind="status", time=T0, status=JobStatus.QUEUED, message="waiting for cuda:0 (held by x)")
    assert lines.feed(status) == ["12:00:00 status     waiting for cuda:0 (held by x)"]
    shown = [lines.feed(metric(s, s * 10.0), record(total=None)) for s in (1, 2)]
    assert shown == [["12:00:10 progress   step 1, loss 1.0000"], ["12:00:20 progress   step 2, loss 1.0000"]]
    control = Event(id="2", kind="log", time=T0, message="bell\x07[red]x[/]")
    assert lines.feed(control) == ["12:00:00 log        bell\\x07[red]x[/]"]
    assert ProgressLines().finish() == []  # nothing reported, nothing to repeat


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (45, "45s"), (185, "3m05s"), (7620, "2h07m")])
def test_durations_are_short(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.fixture
def fake_spec(tmp_path: Path) -> Path:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(10)])
    spec = tmp_path / "job.yaml"
    spec.write_text(f"provider: fake\nbase_model: tiny\ntraining_file: {train}\nfake: {{steps: 200, seconds: 1.5}}\n")
    return spec


def test_wait_off_a_terminal_prints_a_few_progress_lines(capsys: pytest.CaptureFixture[str], fake_spec: Path) -> None:
    created = run_cli(capsys, "jobs", "create", "-f", str(fake_spec), "--wait", "--progress-interval", "0.25")
    assert created.code == 0, created.err
    lines = created.out.splitlines()
    progress = [m for m in map(PROGRESS.match, lines) if m]
    assert 2 <= len(progress) <= 12, created.out  # 200 steps in about a second: a handful of lines
    assert progress[-1].groups() == ("200", "200")
    assert not [line for line in lines if " metric " in line]  # no line per step
    assert any("status     training started" in line for line in lines)
    assert "\x1b[" not in created.out  # plain text, no cursor movement
    ref = next(m[1] for m in map(re.compile(r"^(fake:\S+) succeeded$").match, lines) if m)

    # The final figures come before the job's final word.
    assert lines.index(progress[-1].string) < next(
        i for i, line in enumerate(lines) if "status     job succeeded" in line
    )

    # Joined after the end, the history comes in one go: the first figures and the final ones.
    again = run_cli(capsys, "jobs", "wait", ref)
    assert again.code == 0, again.err
    final = [m for m in map(PROGRESS.match, again.out.splitlines()) if m]
    assert [m.groups() for m in final] == [("1", "200"), ("200", "200")]


def test_the_interval_comes_from_the_environment_and_must_not_be_negative(
    capsys: pytest.CaptureFixture[str], fake_spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYTUNE_PROGRESS_INTERVAL", "0")
    created = run_cli(capsys, "jobs", "create", "-f", str(fake_spec), "--wait")
    assert created.code == 0, created.err
    assert len([m for m in map(PROGRESS.match, created.out.splitlines()) if m]) > 12  # every batch of steps
    bad = run_cli(capsys, "jobs", "wait", "fake:fakejob-x", "--progress-interval", "-1")
    assert bad.code == 2 and "progress-interval" in bad.err
