"""What ``anytune serve`` keeps beyond the job store: uploaded files and which key owns which job.

One SQLite database and one folder under ``ANYTUNE_HOME/serve`` (a restart loses nothing: the jobs
themselves are in the job store, and local workers run detached). Every read is scoped by owner:
another key's id is "not found", never "forbidden" (its existence is not told either).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FileRow", "JobRow", "ServeState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, filename TEXT NOT NULL, bytes INTEGER NOT NULL,
    purpose TEXT NOT NULL, created_at INTEGER NOT NULL, path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_owner ON files (owner, created_at);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, ref TEXT NOT NULL, idempotency TEXT NOT NULL,
    request TEXT NOT NULL, created_at INTEGER NOT NULL, UNIQUE (owner, idempotency)
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
"""


@dataclass(frozen=True)
class FileRow:
    id: str
    owner: str
    filename: str
    bytes: int
    purpose: str
    created_at: int
    path: str


@dataclass(frozen=True)
class JobRow:
    """A job made through the server: its OpenAI-style id, the anytune job behind it, the request."""

    id: str
    owner: str
    ref: str
    idempotency: str
    request: dict[str, Any]
    created_at: int


class ServeState:
    """The server's files and job ownership (thread-safe: one connection behind a lock)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(root / "serve.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- files ------------------------------------------------------------------------------
    def new_file_path(self) -> tuple[str, Path]:
        """A fresh file id and where its content goes (written by the caller, then :meth:`add_file`)."""
        file_id = "file-" + secrets.token_hex(12)
        return file_id, self.files_dir / file_id

    def add_file(self, file_id: str, owner: str, filename: str, size: int, purpose: str, path: Path) -> FileRow:
        row = FileRow(file_id, owner, filename, size, purpose, int(time.time()), str(path))
        with self._tx() as db:
            db.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.owner, row.filename, row.bytes, row.purpose, row.created_at, row.path),
            )
        return row

    def file(self, owner: str, file_id: str) -> FileRow | None:
        with self._lock:
            got = self._db.execute("SELECT * FROM files WHERE id = ? AND owner = ?", (file_id, owner)).fetchone()
        return FileRow(*got) if got else None

    def files(self, owner: str, purpose: str | None = None) -> list[FileRow]:
        """The owner's files, newest first."""
        query = "SELECT * FROM files WHERE owner = ?" + (" AND purpose = ?" if purpose else "")
        args = (owner, purpose) if purpose else (owner,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at DESC, rowid DESC", args).fetchall()
        return [FileRow(*r) for r in rows]

    def delete_file(self, owner: str, file_id: str) -> bool:
        with self._tx() as db:
            got = db.execute("SELECT path FROM files WHERE id = ? AND owner = ?", (file_id, owner)).fetchone()
            if got is None:
                return False
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        with suppress(FileNotFoundError):
            os.unlink(got[0])
        return True

    # -- jobs -------------------------------------------------------------------------------
    def add_job(self, row: JobRow) -> JobRow:
        """Record ``row``; when the owner already made a job under the same idempotency key, that
        row is kept and returned instead."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
                (row.id, row.owner, row.ref, row.idempotency, json.dumps(row.request), row.created_at),
            )
            got = db.execute(
                "SELECT * FROM jobs WHERE owner = ? AND idempotency = ?", (row.owner, row.idempotency)
            ).fetchone()
        return _job(got)

    def job(self, owner: str, job_id: str) -> JobRow | None:
        with self._lock:
            got = self._db.execute("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
        return _job(got) if got else None

    def job_by_key(self, owner: str, idempotency: str) -> JobRow | None:
        with self._lock:
            got = self._db.execute(
                "SELECT * FROM jobs WHERE owner = ? AND idempotency = ?", (owner, idempotency)
            ).fetchone()
        return _job(got) if got else None

    def jobs(self, owner: str) -> list[JobRow]:
        """The owner's jobs, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE owner = ? ORDER BY created_at DESC, rowid DESC", (owner,)
            ).fetchall()
        return [_job(r) for r in rows]

    def all_jobs(self) -> list[JobRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs").fetchall()
        return [_job(r) for r in rows]


def _job(row: Any) -> JobRow:
    return JobRow(row[0], row[1], row[2], row[3], json.loads(row[4]), int(row[5]))
