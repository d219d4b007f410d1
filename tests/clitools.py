"""Running the real ``anytune`` CLI in-process and looking at what it left behind."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from anytune._cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """Run ``anytune ARGS`` as a user would (exit status included), capturing its output."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    code = exc.value.code
    return Result(code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err)


def jobs_in_store(home: Path) -> int:
    """Rows in the job store (0 when it was never created)."""
    db = home / "jobs.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def fake_jobs(home: Path) -> int:
    folder = home / "fake"
    return len(list(folder.glob("fakejob-*.json"))) if folder.is_dir() else 0
