"""The local job store: every job created through anytune, across processes and crashes.

SQLite in WAL mode under ``ANYTUNE_HOME`` (default: the user data dir).  A row is written
*before* submission (status ``submitting``, with the idempotency key) and completed after, so a
crash between the two leaves a trace the adapter can reconcile by looking the key up remotely.
A submission whose fate is unknown (an ambiguous failure the lookup could not settle) is kept as
``unknown`` with its key, never as failed: :meth:`JobStore.unresolved` lists such rows, and
``FineTuneJob.reconcile`` resolves them by looking the key up (found: the job; surely absent:
``submit_failed``).
A submission refused before anything was sent leaves no row (:meth:`JobStore.discard_submit`);
rows go otherwise only on request (:meth:`JobStore.delete`, :meth:`JobStore.prune`), never the jobs.
Every write is one short ``BEGIN IMMEDIATE`` transaction; ``busy_timeout`` makes concurrent
processes queue instead of failing.  Everything stored passes through :func:`redact`.

Every SQLite or OS failure (disk full, still locked after the busy timeout, not a database,
malformed, read-only) comes out as one :class:`~anytune.errors.StoreError` naming the store's
path and the cause.  A store that cannot be written still reads: an existing store is opened
without writing anything (the schema is only created when missing), and one whose file or folder
is read-only is opened read-only.
"""

from __future__ import annotations

import builtins
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from anytune._secrets import redact, redact_value
from anytune._types import JobRecord, JobStatus, utcnow
from anytune.errors import ConfigError, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    idempotency_key TEXT PRIMARY KEY,
    ref             TEXT UNIQUE,
    provider        TEXT NOT NULL,
    job_id          TEXT,
    profile         TEXT,
    settings        TEXT,
    spec            TEXT NOT NULL,
    status          TEXT NOT NULL,
    raw_status      TEXT,
    record          TEXT,
    submit_error    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_provider ON jobs(provider, created_at);
CREATE TABLE IF NOT EXISTS uploads (
    provider   TEXT NOT NULL,
    scope      TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    remote_id  TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (provider, scope, sha256)
);
-- Evaluations of a job's result (anytune eval): the report as JSON, newest last.
CREATE TABLE IF NOT EXISTS evaluations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ref        TEXT NOT NULL,
    created_at TEXT NOT NULL,
    report     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_ref ON evaluations(ref, id);
"""

SUBMITTING = "submitting"
SUBMIT_FAILED = "submit_failed"
#: The create may or may not have happened; resolved by looking the idempotency key up.
UNKNOWN = "unknown"

#: Every status a row can have: a job's (:class:`JobStatus`) or a submission's own.
ROW_STATUSES: tuple[str, ...] = (*(s.value for s in JobStatus), SUBMITTING, SUBMIT_FAILED, UNKNOWN)
#: Rows whose job may still change: a submission in flight or of unknown fate, a job not finished.
UNFINISHED: frozenset[str] = frozenset({*(s.value for s in JobStatus if not s.is_terminal), SUBMITTING, UNKNOWN})


def row_statuses(
    value: str | JobStatus | Iterable[str | JobStatus] | None, *, field: str = "status"
) -> frozenset[str] | None:
    """The row statuses a filter names (a status, comma-separated ones, or several), checked.

    Returns:
        The statuses, or None for no filter (``value`` None or empty).

    Raises:
        ConfigError: a name that is no status, naming the valid ones.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str | JobStatus) else builtins.list(value)
    names = {
        part.strip().lower()
        for item in items
        for part in (item.value if isinstance(item, JobStatus) else str(item)).split(",")
        if part.strip()
    }
    wrong = sorted(names - set(ROW_STATUSES))
    if wrong:
        raise ConfigError(
            f"unknown status {', '.join(map(repr, wrong))}; valid statuses: {', '.join(ROW_STATUSES)}", field=field
        )
    return frozenset(names) or None


class StoredJob(BaseModel):
    """One row of the job store."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    idempotency_key: str
    ref: str | None
    provider: str
    job_id: str | None
    profile: str | None
    settings: dict[str, Any]
    spec: dict[str, Any]
    status: str
    raw_status: str | None
    record: JobRecord | None
    submit_error: str | None
    created_at: datetime
    updated_at: datetime
    #: Set by a listing that refreshes (``FineTuneJob.list``), never stored: the provider could
    #: not be asked (``stale_reason`` says why), so ``status`` and ``record`` are the last known
    #: state, which the job may have left. False for a state just fetched, or a final one.
    stale: bool = False
    stale_reason: str | None = None

    @property
    def unfinished(self) -> bool:
        """Whether the job (or its submission) may still change: see :data:`UNFINISHED`."""
        return self.status in UNFINISHED

    # A row written before a variable was known to hold a secret still comes back masked.
    _redact = field_validator("spec", "settings", "submit_error")(redact_value)


def _dumps(value: Any) -> str:
    return redact(orjson.dumps(value, default=str).decode())


def stored_form(value: Any) -> Any:
    """``value`` as the store keeps it (JSON, redacted): compare it with a stored row's ``spec``."""
    return orjson.loads(_dumps(value))


#: Opens the SQLite connection of a store at a path: the seam tests use to simulate a full disk.
Connect = Callable[[Path], sqlite3.Connection]


def default_connect(path: Path) -> sqlite3.Connection:
    """A read-write connection (autocommit; transactions are explicit) that waits up to 30 s for a lock."""
    return sqlite3.connect(path, timeout=30, isolation_level=None)


def read_only_connect(path: Path) -> sqlite3.Connection:
    """A connection that never writes, for a store whose file is read-only."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None)


def immutable_connect(path: Path) -> sqlite3.Connection:
    """A connection for a store in a read-only folder, where SQLite cannot create the WAL's shared
    memory file: it reads the database file as it is (what the last checkpoint wrote)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True, timeout=30, isolation_level=None)


def _unwritable(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the store's file or folder cannot be written (not: locked, corrupt)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN"))


def _cause(exc: BaseException) -> str:
    """The cause of a store failure in a few words (OS errors without the repeated path)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = str(exc) or type(exc).__name__
    if "readonly" in text or "read-only" in text:
        return f"{text} (the store's file or folder is read-only)"
    if "locked" in text:
        return f"{text} (another process kept it locked past the busy timeout; try again)"
    return text


class JobStore:
    """Job store at ``path`` (a SQLite file). Safe to share between threads and processes.

    Args:
        path: the SQLite file (created with its folder when missing).
        connect: opens a connection to ``path`` (default :func:`default_connect`); a test passes
            one whose writes fail to simulate a full disk.

    Raises:
        StoreError: the store cannot be opened or read (not a database, malformed, locked, no
            permission); the message names the path and the cause. Writes raise it too.
    """

    def __init__(self, path: Path, *, connect: Connect | None = None) -> None:
        self.path = path
        self._connect = connect if connect is not None else default_connect
        self._local = threading.local()
        with self._errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn()

    def __repr__(self) -> str:
        return f"JobStore({str(self.path)!r})"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Every SQLite or OS failure becomes one :class:`StoreError` naming the path and the cause."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"job store {self.path}: {_cause(exc)}", path=str(self.path)) from exc

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._open(self._connect)
            except sqlite3.OperationalError as exc:
                if self._connect is not default_connect or not self.path.is_file() or not _unwritable(exc):
                    raise
                try:
                    conn = self._open(read_only_connect)  # the file is read-only
                except sqlite3.OperationalError as again:
                    if not _unwritable(again):
                        raise
                    conn = self._open(immutable_connect)  # and so is its folder
            self._local.conn = conn
        return conn

    def _open(self, connect: Connect) -> sqlite3.Connection:
        """Open and prepare a connection; writes nothing to a store that is already set up."""
        conn = connect(self.path)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=NORMAL")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            if not {"jobs", "uploads"} <= tables:
                # executescript manages its own transaction; IF NOT EXISTS makes racing creators harmless.
                conn.executescript(_SCHEMA)
            elif "evaluations" not in tables:  # stores written before evaluations were kept
                with contextlib.suppress(sqlite3.OperationalError):  # read-only: evaluations() answers none
                    conn.executescript(_SCHEMA)
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
            if "settings" not in columns:  # stores written before settings were kept
                conn.execute("ALTER TABLE jobs ADD COLUMN settings TEXT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _query(self, sql: str, args: Any = ()) -> builtins.list[sqlite3.Row]:
        with self._errors():
            return self._conn().execute(sql, args).fetchall()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._errors():
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- submission ---------------------------------------------------------------------------
    def begin_submit(
        self,
        *,
        provider: str,
        profile: str | None,
        spec: dict[str, Any],
        key: str,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Record that a job is about to be submitted under idempotency ``key``.

        ``settings`` are the explicit, non-secret provider settings it was created with, so that
        ``FineTuneJob.get(ref)`` in another process reaches the same endpoint or workspace.
        """
        now = utcnow().isoformat()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (idempotency_key, provider, profile, settings, spec, status, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, provider, profile, _dumps(settings or {}), _dumps(spec), SUBMITTING, now, now),
            )

    def complete_submit(self, key: str, record: JobRecord) -> None:
        with self._tx() as db:
            # A job re-attached by ref (``get``) before its submission was resolved was stored as an
            # external row; the submission's row is the one to keep.
            db.execute(
                "DELETE FROM jobs WHERE ref=? AND idempotency_key<>? AND idempotency_key LIKE 'external:%'",
                (record.ref, key),
            )
            db.execute(
                "UPDATE jobs SET ref=?, job_id=?, status=?, raw_status=?, record=?, submit_error=NULL,"
                " updated_at=? WHERE idempotency_key=?",
                (
                    record.ref,
                    record.id,
                    record.status.value,
                    record.raw_status,
                    _dumps(record.model_dump(mode="json")),
                    utcnow().isoformat(),
                    key,
                ),
            )

    def resolve_unknown(self, key: str, record: JobRecord) -> bool:
        """If the submission under ``key`` has an unknown outcome (or never finished recording),
        ``record`` is its job: link them. Returns whether a row was resolved."""
        row = self.by_key(key)
        if row is None or row.ref is not None or row.provider != record.provider:
            return False
        self.complete_submit(key, record)
        return True

    def fail_submit(self, key: str, error: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status=?, submit_error=?, updated_at=? WHERE idempotency_key=?",
                (SUBMIT_FAILED, redact(error), utcnow().isoformat(), key),
            )

    def mark_unknown(self, key: str, error: str) -> None:
        """The submission under ``key`` may or may not have created a job: keep it to resolve."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status=?, submit_error=?, updated_at=? WHERE idempotency_key=? AND ref IS NULL",
                (UNKNOWN, redact(error), utcnow().isoformat(), key),
            )

    def unresolved(self, *, provider: str | None = None, stale_after: float = 3600.0) -> builtins.list[StoredJob]:
        """Submissions whose fate is not known, oldest first: ``unknown`` rows, and ``submitting``
        rows older than ``stale_after`` seconds (the process that wrote them died mid-submit; a
        younger one may still be submitting)."""
        cutoff = (utcnow() - timedelta(seconds=stale_after)).isoformat()
        sql = "SELECT * FROM jobs WHERE ref IS NULL AND (status=? OR (status=? AND updated_at<?))"
        args: builtins.list[str] = [UNKNOWN, SUBMITTING, cutoff]
        if provider:
            sql, args = sql + " AND provider=?", [*args, provider]
        rows = self._query(sql + " ORDER BY created_at, rowid", args)
        return [_row(r, self.path) for r in rows]

    # -- state --------------------------------------------------------------------------------
    def save(self, record: JobRecord, *, profile: str | None = None) -> None:
        """Store the last known state of a job; adds a row for jobs created elsewhere."""
        now = utcnow().isoformat()
        payload = _dumps(record.model_dump(mode="json"))
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status=?, raw_status=?, record=?, updated_at=? WHERE ref=?",
                (record.status.value, record.raw_status, payload, now, record.ref),
            )
            if cur.rowcount == 0:
                db.execute(
                    "INSERT INTO jobs (idempotency_key, ref, provider, job_id, profile, spec, status,"
                    " raw_status, record, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        f"external:{record.ref}",
                        record.ref,
                        record.provider,
                        record.id,
                        profile,
                        "{}",
                        record.status.value,
                        record.raw_status,
                        payload,
                        now,
                        now,
                    ),
                )

    def get(self, ref: str) -> StoredJob | None:
        rows = self._query("SELECT * FROM jobs WHERE ref=?", (ref,))
        return _row(rows[0], self.path) if rows else None

    def by_key(self, key: str) -> StoredJob | None:
        rows = self._query("SELECT * FROM jobs WHERE idempotency_key=?", (key,))
        return _row(rows[0], self.path) if rows else None

    def list(
        self,
        *,
        provider: str | None = None,
        status: str | Collection[str] | None = None,
        limit: int | None = 50,
        created_before: datetime | None = None,
    ) -> builtins.list[StoredJob]:
        """Stored rows, newest first.

        Args:
            provider: only this provider's.
            status: only rows in this status (or in any of these).
            limit: at most this many (None: all).
            created_before: only rows created before this time.
        """
        sql, args = _where(provider, status, created_before)
        sql = "SELECT * FROM jobs" + sql + " ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, limit]
        return [_row(r, self.path) for r in self._query(sql, args)]

    def providers(self) -> set[str]:
        """The providers that have rows here."""
        return {str(r[0]) for r in self._query("SELECT DISTINCT provider FROM jobs")}

    # -- evaluations ---------------------------------------------------------------------------
    def save_evaluation(self, ref: str, report: Mapping[str, Any]) -> None:
        """Keep an evaluation report (a JSON-able mapping) with job ``ref``."""
        created = str(report.get("created_at") or datetime.now(timezone.utc).isoformat())
        with self._tx() as db:
            db.execute(
                "INSERT INTO evaluations (ref, created_at, report) VALUES (?, ?, ?)", (ref, created, _dumps(report))
            )

    def evaluations(self, ref: str) -> builtins.list[dict[str, Any]]:
        """The evaluation reports kept with job ``ref``, oldest first."""
        with self._errors():
            try:
                rows = self._conn().execute("SELECT report FROM evaluations WHERE ref=? ORDER BY id", (ref,)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                return []  # an older store that could not be upgraded (read-only)
        return [orjson.loads(r[0]) for r in rows]

    # -- removal ------------------------------------------------------------------------------
    def delete(self, ref: str) -> StoredJob | None:
        """Remove the row of job ``ref`` and its evaluations (only rows: the job itself is not touched).

        Returns:
            The row removed, or None when there was none.
        """
        with self._tx() as db:
            rows = db.execute("SELECT * FROM jobs WHERE ref=?", (ref,)).fetchall()
            db.execute("DELETE FROM jobs WHERE ref=?", (ref,))
            db.execute("DELETE FROM evaluations WHERE ref=?", (ref,))
        return _row(rows[0], self.path) if rows else None

    def prune(
        self,
        *,
        status: Collection[str],
        created_before: datetime | None = None,
        provider: str | None = None,
        dry_run: bool = False,
    ) -> builtins.list[StoredJob]:
        """Remove the rows in one of ``status`` (required: nothing is pruned by default), created
        before ``created_before`` when given; ``dry_run`` only lists them. Newest first.

        Selection and removal are one transaction: a row that changes status meanwhile (a job
        refreshed by another process) is judged by the status it has when removed.
        """
        if not status:
            return []
        where, args = _where(provider, status, created_before)
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM jobs{where} ORDER BY created_at DESC, rowid DESC", args).fetchall()
            if not dry_run:
                db.execute(f"DELETE FROM jobs{where}", args)
                db.executemany("DELETE FROM evaluations WHERE ref=?", [(r["ref"],) for r in rows if r["ref"]])
        return [_row(r, self.path) for r in rows]

    def discard_submit(self, key: str) -> bool:
        """Remove the row of a submission that surely sent nothing (it failed before any request).

        Only a row still ``submitting`` with no job is removed; returns whether one was.
        """
        with self._tx() as db:
            cur = db.execute("DELETE FROM jobs WHERE idempotency_key=? AND ref IS NULL AND status=?", (key, SUBMITTING))
            return cur.rowcount > 0

    # -- uploads (content-addressed reuse) ----------------------------------------------------
    def find_upload(self, provider: str, scope: str, sha256: str) -> str | None:
        rows = self._query(
            "SELECT remote_id FROM uploads WHERE provider=? AND scope=? AND sha256=?", (provider, scope, sha256)
        )
        return str(rows[0]["remote_id"]) if rows else None

    def record_upload(self, provider: str, scope: str, sha256: str, remote_id: str, size: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?)",
                (provider, scope, sha256, remote_id, size, utcnow().isoformat()),
            )

    def forget_upload(self, provider: str, scope: str, sha256: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM uploads WHERE provider=? AND scope=? AND sha256=?", (provider, scope, sha256))


def _where(
    provider: str | None, status: str | Collection[str] | None, created_before: datetime | None
) -> tuple[str, builtins.list[Any]]:
    """The WHERE clause (with its leading space, or empty) and arguments of a row selection."""
    clauses: builtins.list[str] = []
    args: builtins.list[Any] = []
    if provider:
        clauses.append("provider=?")
        args.append(provider)
    if status is not None:
        statuses = [status] if isinstance(status, str) else sorted(status)
        clauses.append(f"status IN ({', '.join('?' * len(statuses))})" if statuses else "0")
        args.extend(statuses)
    if created_before is not None:
        # Stored times are UTC ISO strings: compare like with like (a naive time is taken as UTC).
        if created_before.tzinfo is None:
            created_before = created_before.replace(tzinfo=timezone.utc)
        clauses.append("created_at<?")
        args.append(created_before.astimezone(timezone.utc).isoformat())
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _row(row: sqlite3.Row, path: Path) -> StoredJob:
    """The row as a :class:`StoredJob`.

    Raises:
        StoreError: the row is damaged (a column that does not parse), naming the row.
    """
    try:
        return _parse_row(row)
    except ValueError as exc:  # bad JSON, a record or date that does not parse
        which = row["ref"] or f"the submission with key {row['idempotency_key']}"
        cause = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc) or type(exc).__name__
        raise StoreError(f"job store {path}: the row of {which} is damaged ({cause})", path=str(path)) from exc


def _parse_row(row: sqlite3.Row) -> StoredJob:
    record = JobRecord.model_validate_json(row["record"]) if row["record"] else None
    return StoredJob(
        idempotency_key=row["idempotency_key"],
        ref=row["ref"],
        provider=row["provider"],
        job_id=row["job_id"],
        profile=row["profile"],
        settings=orjson.loads(row["settings"]) if row["settings"] else {},
        spec=orjson.loads(row["spec"]),
        status=row["status"],
        raw_status=row["raw_status"],
        record=record,
        submit_error=row["submit_error"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )
