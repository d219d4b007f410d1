"""Hostile environments: unreadable data files and a job store that is full, locked, read-only or
corrupt. Each fails in one line naming the path and the cause, with a documented exit code, no
traceback and nothing recorded or sent; reading jobs keeps working when the store cannot be written.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anytune import ConfigError, FineTuneJob, JobRecord, JobStatus, JobStore, StoreError
from anytune._cli.main import EXIT_CODES
from anytune._data.convert import convert_prompt_completion
from anytune._data.validate import require_data_file, validate_file
from tests.clitools import Result, fake_jobs, jobs_in_store, run_cli
from tests.conftest import chat_example, write_jsonl

FAST = {"seconds": 0.1}
FULL = "database or disk is full"


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """Opening a FIFO blocks forever: a regression fails this module instead of hanging it."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("blocked: a data file was opened without checking it is a regular file")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# -- data files -----------------------------------------------------------------------------------


def _directory(tmp: Path) -> Path:
    (tmp / "data.jsonl").mkdir()
    return tmp / "data.jsonl"


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.jsonl")
    return tmp / "pipe.jsonl"


def _loop(tmp: Path) -> Path:
    (tmp / "a.jsonl").symlink_to(tmp / "b.jsonl")
    (tmp / "b.jsonl").symlink_to(tmp / "a.jsonl")
    return tmp / "a.jsonl"


def _too_long(tmp: Path) -> Path:
    return tmp / ("x" * 300 + ".jsonl")


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "directory": (_directory, "is a directory"),
    "fifo": (_fifo, "is a FIFO, not a regular file"),
    "symlink loop": (_loop, "too many levels of symbolic links"),
    "name too long": (_too_long, "file name too long"),
}


@pytest.fixture(params=sorted(BAD_FILES))
def bad_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    make, cause = BAD_FILES[request.param]
    return make(tmp_path), cause


def one_line(result: Result) -> str:
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


def test_validate_file_refuses_what_is_not_a_regular_file(bad_file: tuple[Path, str]) -> None:
    path, cause = bad_file
    with pytest.raises(OSError) as exc:
        validate_file(path)
    assert cause.lower() in str(exc.value).lower() and exc.value.filename == str(path)


def test_require_data_file_names_field_path_and_cause(bad_file: tuple[Path, str]) -> None:
    path, cause = bad_file
    with pytest.raises(ConfigError) as exc:
        require_data_file(path, "training_file")
    assert exc.value.field == "training_file"
    assert str(path) in str(exc.value) and cause in str(exc.value)


def test_data_validate_cli_fails_in_one_line(capsys: pytest.CaptureFixture[str], bad_file: tuple[Path, str]) -> None:
    path, _ = bad_file
    result = run_cli(capsys, "data", "validate", str(path))
    assert result.code in (2, 74)  # configuration error / I/O error, both in the documented table
    assert str(path) in one_line(result)


def test_data_validate_cli_names_the_cause(capsys: pytest.CaptureFixture[str], bad_file: tuple[Path, str]) -> None:
    path, cause = bad_file
    result = run_cli(capsys, "data", "validate", str(path))
    assert result.code == 2
    assert one_line(result) == f"configuration error: field 'FILE': {path}: {cause}"


@pytest.mark.parametrize("field", ["training_file", "validation_file"])
def test_jobs_create_cli_refuses_a_bad_data_file(
    capsys: pytest.CaptureFixture[str],
    anytune_home: Path,
    chat_jsonl: Path,
    bad_file: tuple[Path, str],
    field: str,
) -> None:
    path, cause = bad_file
    files = {"training_file": chat_jsonl, "validation_file": chat_jsonl, field: path}
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "fake",
        "--base-model",
        "tiny",
        "--training-file",
        str(files["training_file"]),
        "--validation-file",
        str(files["validation_file"]),
    )
    assert result.code == 2
    assert one_line(result) == f"configuration error: field {field!r}: {path}: {cause}"
    assert jobs_in_store(anytune_home) == 0 and fake_jobs(anytune_home) == 0


def test_create_refuses_a_bad_data_file(anytune_home: Path, bad_file: tuple[Path, str]) -> None:
    path, cause = bad_file
    with pytest.raises(ConfigError) as exc:
        FineTuneJob.create(provider="fake", base_model="tiny", training_file=path, fake=FAST)
    assert exc.value.field == "training_file"
    assert str(exc.value) == f"field 'training_file': {path}: {cause}"
    assert jobs_in_store(anytune_home) == 0 and fake_jobs(anytune_home) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_data_file(capsys: pytest.CaptureFixture[str], anytune_home: Path, chat_jsonl: Path) -> None:
    chat_jsonl.chmod(0)
    with pytest.raises(ConfigError, match="permission denied"):
        FineTuneJob.create(provider="fake", base_model="tiny", training_file=chat_jsonl, fake=FAST)
    result = run_cli(capsys, "data", "validate", str(chat_jsonl))
    assert result.code in (2, 74) and str(chat_jsonl) in one_line(result)
    assert jobs_in_store(anytune_home) == 0


def test_convert_refuses_a_fifo_and_writes_nothing(tmp_path: Path) -> None:
    src, dst = _fifo(tmp_path), tmp_path / "chat.jsonl"
    with pytest.raises(OSError, match="FIFO, not a regular file"):
        convert_prompt_completion(src, dst)
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe.jsonl"]


def test_convert_on_a_full_disk_names_the_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(3)])
    dst = tmp_path / "chat.jsonl"

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    result = run_cli(capsys, "data", "convert", str(src), str(dst))
    assert result.code == 74
    line = one_line(result)
    assert line.startswith("I/O error:") and "No space left on device" in line and str(dst) in line
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pc.jsonl"]


def test_exit_codes_of_store_and_os_errors_are_in_the_table() -> None:
    table = {cls: code for cls, _, code in EXIT_CODES}
    assert table[StoreError] == 9 and table[OSError] == 74


# -- the job store --------------------------------------------------------------------------------

_WRITES = ("BEGIN", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "REPLACE")


class _FullDisk(sqlite3.Connection):
    """A connection whose every write fails as SQLite's does when the disk is full."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith(_WRITES):
            raise sqlite3.OperationalError(FULL)
        return super().execute(sql, *args)

    def executescript(self, script: str) -> sqlite3.Cursor:
        raise sqlite3.OperationalError(FULL)


def full_disk(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=1, isolation_level=None, factory=_FullDisk)


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1, isolation_level=None)


def record(job_id: str) -> JobRecord:
    return JobRecord(provider="fake", id=job_id, status=JobStatus.RUNNING, raw_status="running")


@pytest.fixture
def finished_job(anytune_home: Path, chat_jsonl: Path) -> str:
    job = FineTuneJob.create(provider="fake", base_model="tiny", training_file=chat_jsonl, fake=FAST)
    job.wait()
    JobStore(anytune_home / "jobs.db").close()
    return job.ref


@pytest.mark.parametrize("connect", [full_disk, read_only], ids=["full disk", "read-only"])
def test_store_reads_when_it_cannot_write(
    anytune_home: Path, finished_job: str, connect: Callable[[Path], sqlite3.Connection]
) -> None:
    path = anytune_home / "jobs.db"
    store = JobStore(path, connect=connect)
    row = store.get(finished_job)
    assert row is not None and [r.ref for r in store.list()] == [finished_job]
    with pytest.raises(StoreError) as exc:
        store.save(record("fakejob-0000000000000001"))
    assert exc.value.path == str(path) and str(exc.value).startswith(f"job store {path}: ")
    with pytest.raises(StoreError):
        store.begin_submit(provider="fake", profile=None, spec={}, key="k")
    assert store.by_key("k") is None and store.get(finished_job) == row


def test_create_fails_loudly_before_sending_when_the_store_is_full(anytune_home: Path, chat_jsonl: Path) -> None:
    JobStore(anytune_home / "jobs.db").close()
    store = JobStore(anytune_home / "jobs.db", connect=full_disk)
    with pytest.raises(StoreError, match=FULL):
        FineTuneJob.create(provider="fake", base_model="tiny", training_file=chat_jsonl, fake=FAST, store=store)
    assert jobs_in_store(anytune_home) == 0 and fake_jobs(anytune_home) == 0


@pytest.fixture
def unwritable(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """Every store opened from now on cannot be written (how: the test's parameter)."""
    how: str = request.param
    if how == "full disk":
        monkeypatch.setattr("anytune._store.default_connect", full_disk)
    else:  # a read-only file or folder: opening read-write fails, the store falls back to read-only

        def refused(path: Path) -> sqlite3.Connection:
            conn = read_only(path)
            try:
                conn.execute("PRAGMA user_version=1")  # SQLite's own SQLITE_READONLY error
            finally:
                conn.close()
            raise AssertionError("a read-only connection wrote")

        monkeypatch.setattr("anytune._store.default_connect", refused)
    monkeypatch.setattr("anytune._job._warned", set())
    return how


@pytest.mark.parametrize("unwritable", ["full disk", "read-only"], indirect=True)
def test_reading_a_job_works_when_the_store_cannot_be_written(
    finished_job: str, unwritable: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="anytune.store"):
        job = FineTuneJob.get(finished_job)
        assert job.record.status is JobStatus.SUCCEEDED
        assert job.refresh().status is JobStatus.SUCCEEDED
        assert job.events() and job.metrics()
        assert [r.ref for r in FineTuneJob.list()] == [finished_job]
    warnings = [r.getMessage() for r in caplog.records if r.name == "anytune.store"]
    assert len(warnings) == 1 and "jobs.db" in warnings[0]  # once, naming the store


@pytest.mark.parametrize("unwritable", ["full disk", "read-only"], indirect=True)
def test_read_commands_work_when_the_store_cannot_be_written(
    capsys: pytest.CaptureFixture[str], finished_job: str, unwritable: str
) -> None:
    for args in (["get", finished_job], ["events", finished_job], ["metrics", finished_job], ["list"]):
        result = run_cli(capsys, "jobs", *args, "--json")
        assert result.code == 0, (args, result.err)
        assert "Traceback" not in result.err and result.out.strip()


@pytest.mark.parametrize("unwritable", ["full disk", "read-only"], indirect=True)
def test_jobs_create_fails_in_one_line_when_the_store_cannot_be_written(
    capsys: pytest.CaptureFixture[str], anytune_home: Path, finished_job: str, unwritable: str, chat_jsonl: Path
) -> None:
    sent = fake_jobs(anytune_home)
    result = run_cli(
        capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--training-file", str(chat_jsonl)
    )
    assert result.code == 9
    line = one_line(result)
    assert line.startswith(f"job store error: job store {anytune_home / 'jobs.db'}: ")
    assert (FULL if unwritable == "full disk" else "read-only") in line
    assert fake_jobs(anytune_home) == sent and jobs_in_store(anytune_home) == 1


@pytest.mark.parametrize(
    "garbage", [b"this is not a database\n" * 100, b"SQLite format 3\x00" + b"\xff" * 4000], ids=["text", "malformed"]
)
def test_corrupt_store_fails_in_one_line(
    capsys: pytest.CaptureFixture[str], anytune_home: Path, chat_jsonl: Path, garbage: bytes
) -> None:
    path = anytune_home / "jobs.db"
    path.write_bytes(garbage)
    for args in (
        ["list"],
        ["get", "fake:fakejob-0000000000000001"],
        ["create", "--provider", "fake", "--base-model", "tiny", "--training-file", str(chat_jsonl)],
    ):
        result = run_cli(capsys, "jobs", *args)
        assert result.code == 9, (args, result.err)
        line = one_line(result)
        assert line.startswith(f"job store error: job store {path}: "), line
        assert "not a database" in line or "malformed" in line
    assert fake_jobs(anytune_home) == 0 and path.read_bytes() == garbage


def test_locked_store_fails_in_one_line_and_still_reads(
    capsys: pytest.CaptureFixture[str],
    anytune_home: Path,
    finished_job: str,
    chat_jsonl: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def impatient(path: Path) -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=0.05, isolation_level=None)

    monkeypatch.setattr("anytune._store.default_connect", impatient)
    monkeypatch.setattr("anytune._job._warned", set())
    holder = sqlite3.connect(anytune_home / "jobs.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process is writing, and stays
    try:
        sent = fake_jobs(anytune_home)
        result = run_cli(
            capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--training-file", str(chat_jsonl)
        )
        assert result.code == 9
        assert "database is locked" in one_line(result) and str(anytune_home / "jobs.db") in result.err
        assert fake_jobs(anytune_home) == sent
        for args in (["get", finished_job], ["list"]):
            assert run_cli(capsys, "jobs", *args, "--json").code == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert jobs_in_store(anytune_home) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the mode")
def test_read_only_folder(capsys: pytest.CaptureFixture[str], anytune_home: Path, finished_job: str) -> None:
    anytune_home.chmod(0o555)
    (anytune_home / "jobs.db").chmod(0o444)
    try:
        for args in (["get", finished_job], ["list"]):
            assert run_cli(capsys, "jobs", *args, "--json").code == 0
    finally:
        anytune_home.chmod(0o755)


def test_corrupt_store_is_not_a_traceback_for_the_api(anytune_home: Path) -> None:
    (anytune_home / "jobs.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="file is not a database"):
        FineTuneJob.list()


def test_chat_example_helper_still_valid(tmp_path: Path) -> None:
    assert validate_file(write_jsonl(tmp_path / "ok.jsonl", [chat_example(i) for i in range(12)])).ok


@pytest.mark.parametrize("unwritable", ["full disk"], indirect=True)
def test_async_reads_work_when_the_store_cannot_be_written(finished_job: str, unwritable: str) -> None:
    import asyncio

    from anytune import AsyncFineTuneJob

    async def read() -> JobStatus:
        job = await AsyncFineTuneJob.get(finished_job)
        await job.events()
        return (await job.refresh()).status

    assert asyncio.run(read()) is JobStatus.SUCCEEDED


def test_list_without_a_store_creates_nothing(capsys: pytest.CaptureFixture[str], anytune_home: Path) -> None:
    result = run_cli(capsys, "jobs", "list", "--json")
    assert result.code == 0 and result.out.strip() == "[]"
    assert FineTuneJob.list() == [] and not (anytune_home / "jobs.db").exists()


def test_a_job_is_read_when_the_store_cannot_even_be_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chat_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A home where no store can be made (here: under a file) still reads jobs, with one warning."""
    from anytune import FineTuneJob, JobStatus
    from anytune.providers.fake import FakeProvider

    fake = FakeProvider(home=tmp_path / "service")
    job = FineTuneJob.create(provider=fake, base_model="tiny", training_file=chat_jsonl, fake={"seconds": 0})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("ANYTUNE_HOME", str(blocker / "home"))
    with caplog.at_level("WARNING", logger="anytune.store"):
        again = FineTuneJob.get(job.ref, provider=FakeProvider(home=tmp_path / "service"))
        assert again.wait(timeout=10).status is JobStatus.SUCCEEDED
        assert [e.id for e in again.events()] == [e.id for e in job.events()]
    assert sum("not saved" in r.getMessage() for r in caplog.records) == 1
