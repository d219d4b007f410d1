"""Dataset validation: every problem with its line and field, token statistics, billed tokens, cost.

:func:`validate_file` streams the file once in constant memory (big files are split at line
boundaries and scanned by worker processes), checks each example against OpenAI's chat, DPO or
prompt/completion format, counts tokens the way OpenAI's cookbook does, and estimates the billed
tokens and the cost. :func:`check_dataset` does the same and raises
:class:`~anytune.errors.DataValidationError` when the file has errors.
"""

from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import errno
import math
import os
import stat
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from anytune._data import _scan
from anytune._data.formats import DatasetFormat
from anytune._data.pricing import (
    CostEstimate,
    billed_tokens,
    default_epochs,
    estimate_cost,
    max_tokens_per_example,
)
from anytune._data.tokens import counter_for, fast_count
from anytune.errors import AnytuneError, ConfigError, DataValidationError

__all__ = [
    "CostEstimate",
    "DatasetReport",
    "DatasetRules",
    "Severity",
    "TokenStats",
    "ValidatingWriter",
    "ValidationIssue",
    "check_dataset",
    "regular_file_size",
    "require_data_file",
    "token_stats",
    "validate_file",
]

Severity = Literal["error", "warning"]
_FORMATS: dict[str, DatasetFormat] = {
    "chat": "chat",
    "prompt_completion": "prompt_completion",
    "preference": "preference",
}


class ValidationIssue(BaseModel):
    """One problem in a dataset file.

    Attributes:
        file: the file as given.
        line: 1-based line number, or None for file-level problems (``too_few_examples``). For a
            source read by rows (CSV, JSON, Parquet, a ``datasets`` folder), the 1-based row that
            ``location`` names.
        field: JSON path inside the example, e.g. ``"messages[2].content"``, or None.
        code: stable snake_case code, e.g. ``"bad_json"``, ``"unknown_role"``.
        message: human-readable explanation.
        severity: ``"error"`` (the provider would reject the file) or ``"warning"``.
        location: where the example came from when the file validated was converted from another
            source (``"train.csv:row 12"``, ``"data.jsonl:line 7"``), else None (and left out of
            the JSON form, which stays what it was before sources other than JSONL were read).
    """

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None
    field: str | None
    code: str
    message: str
    severity: Severity = "error"
    location: str | None = None

    @model_serializer(mode="wrap")
    def _without_empty_location(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("location", 0) is None:
            del data["location"]
        return data

    def __str__(self) -> str:
        if self.location is not None:
            where = self.location
        else:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return text if self.severity == "error" else f"{text} (warning)"


class TokenStats(BaseModel):
    """Distribution of tokens per example; percentiles are exact (nearest rank)."""

    examples: int
    total: int
    min: int
    max: int
    mean: float
    p50: int
    p90: int
    p95: int
    p99: int


class DatasetRules(BaseModel):
    """What the dataset is checked against.

    Attributes:
        provider: provider name; picks the tokenizer, token limit and price.
        model: base model; picks the tokenizer (its own where available), limit and price.
        method: ``"sft"`` (chat or prompt/completion examples) or ``"dpo"`` (preference examples).
        max_tokens_per_example: limit per example; None uses the provider's known limit, if any.
        min_examples: fewer examples without errors than this is an error.
        epochs: epochs for the billed-token estimate; None uses OpenAI's default heuristic.
    """

    provider: str | None = None
    model: str | None = None
    method: Literal["sft", "dpo"] = "sft"
    max_tokens_per_example: int | None = Field(default=None, gt=0)
    min_examples: int = Field(default=10, ge=0)
    epochs: int | None = Field(default=None, gt=0)


class DatasetReport(BaseModel):
    """The result of :func:`validate_file`.

    Attributes:
        file: the file as given.
        method: ``"sft"`` or ``"dpo"``.
        format: the format of the first example (``"unknown"`` when no line parsed).
        examples: non-blank lines (each is meant to be one example).
        valid_examples: examples without errors.
        issues: the first ``max_issues`` issues, in file order, then file-level ones.
        issue_counts: every issue counted by code, including those past ``max_issues``.
        errors, warnings: totals by severity, including those past ``max_issues``.
        tokens: tokens per example (None when no example could be counted).
        tokenizer: what counted, e.g. ``"o200k_base"``.
        tokens_exact: False when the tokenizer is an approximation for the model.
        epochs_estimate: ``rules.epochs`` or OpenAI's default for this many examples.
        billed_tokens_estimate: tokens billed over all epochs (per-example limit applied).
        cost: the estimate, or None when the price is unknown.
        bytes: file size.
        seconds: time taken.
        workers: processes that scanned the file (1: in-process).
    """

    file: str
    method: str
    format: DatasetFormat
    examples: int
    valid_examples: int = 0
    issues: list[ValidationIssue]
    issue_counts: dict[str, int]
    errors: int
    warnings: int
    tokens: TokenStats | None
    tokenizer: str
    tokens_exact: bool
    epochs_estimate: int | None
    billed_tokens_estimate: int | None
    cost: CostEstimate | None
    bytes: int
    seconds: float
    workers: int = 1

    @property
    def ok(self) -> bool:
        """True when the file has no errors (warnings allowed)."""
        return self.errors == 0

    def summary(self, limit: int = 5) -> str:
        """A few lines naming the file, the error count by code and the first issues."""
        if self.ok:
            head = f"{self.file}: OK, {self.examples} examples"
            if self.warnings:
                head += f", {self.warnings} warning{'s' if self.warnings != 1 else ''}"
            return head
        by_code = ", ".join(f"{n} {code}" for code, n in sorted(self.issue_counts.items(), key=lambda kv: -kv[1]))
        lines = [f"{self.file}: {self.errors} error{'s' if self.errors != 1 else ''} ({by_code})"]
        first = [i for i in self.issues if i.severity == "error"][:limit]
        lines += [f"  {issue}" for issue in first]
        if self.errors > len(first):
            lines.append(f"  ... and {self.errors - len(first)} more")
        return "\n".join(lines)


def token_stats(length_counts: Mapping[int, int]) -> TokenStats | None:
    """Exact statistics from a Counter of example lengths (memory: one entry per distinct length).

    Percentiles use the nearest-rank definition: the smallest length with at least
    ``ceil(p/100 * N)`` examples at or below it.
    """
    items = sorted((n, c) for n, c in length_counts.items() if c > 0)
    if not items:
        return None
    examples = sum(c for _, c in items)
    total = sum(n * c for n, c in items)
    targets = {p: max(1, math.ceil(p / 100 * examples)) for p in (50, 90, 95, 99)}
    found: dict[int, int] = {}
    seen = 0
    for n, c in items:
        seen += c
        for p, rank in targets.items():
            if p not in found and seen >= rank:
                found[p] = n
        if len(found) == len(targets):
            break
    return TokenStats(
        examples=examples,
        total=total,
        min=items[0][0],
        max=items[-1][0],
        mean=total / examples,
        p50=found[50],
        p90=found[90],
        p95=found[95],
        p99=found[99],
    )


def _chunk_results(
    path: str,
    size: int,
    rules: DatasetRules,
    config: _scan.ScanConfig,
    count: Callable[[str], int],
    fork_safe: bool,
    emit: _scan.Emit | None,
) -> tuple[Iterable[_scan.ChunkResult], int]:
    """Chunk results in file order, and the number of processes producing them."""
    workers = _workers_for(size, fork_safe)
    if workers <= 1:
        return [_scan.scan_range(path, 0, None, config, count, emit)], 1
    return _parallel(path, size, workers, rules, config, fork_safe), workers


def _parallel(
    path: str, size: int, workers: int, rules: DatasetRules, config: _scan.ScanConfig, fork_safe: bool
) -> Generator[_scan.ChunkResult, None, None]:
    chunks = _scan.plan_chunks(size, workers)
    pool = _pool(path, min(workers, len(chunks)), rules, config, fork_safe)
    try:
        for future in [pool.submit(_scan.scan_chunk, bounds) for bounds in chunks]:
            yield _chunk_result(future)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pool(
    path: str, workers: int, rules: DatasetRules, config: _scan.ScanConfig, fork_safe: bool
) -> concurrent.futures.ProcessPoolExecutor:
    """``workers`` processes scanning byte ranges of ``path`` (:func:`_scan.scan_chunk`), started now:
    forked when the tokenizer allows it and this process has no other threads, spawned otherwise.

    An executor rather than a ``multiprocessing.Pool``: a worker that dies (killed, out of memory)
    fails the validation (:func:`_chunk_result`) where a pool would wait for its result forever."""
    import multiprocessing

    method = "fork" if fork_safe and _scan.fork_is_safe() else "spawn"
    pool = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_scan.init_worker,
        initargs=(path, config, rules.provider, rules.model),
    )
    pool.submit(int)  # starts the processes (forked ones: before this process reads on and starts threads)
    return pool


def _chunk_result(future: concurrent.futures.Future[_scan.ChunkResult]) -> _scan.ChunkResult:
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool as exc:
        raise _worker_died() from exc


def _worker_died() -> AnytuneError:
    return AnytuneError(
        "a dataset validation worker process ended abruptly (killed, or out of memory); "
        "ANYTUNE_DATA_WORKERS=1 validates in this process"
    )


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def regular_file_size(path: str | os.PathLike[str]) -> int:
    """The size of ``path`` when it is a readable regular file (symlinks followed).

    Checked with ``os.stat`` before anything opens the file, so a FIFO, a device or a directory
    is refused instead of blocking or failing half-way; a symlink loop raises ``ELOOP``.

    Raises:
        OSError: the file is missing, not a regular file, or cannot be read; ``strerror`` says
            why ("is a directory", "is a FIFO, not a regular file", "Permission denied", ...)
            and ``filename`` is ``path``.
    """
    fname = os.fspath(path)
    mode = os.stat(fname).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", fname)
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise OSError(errno.EINVAL, f"is {kind}, not a regular file", fname)
    with open(fname, "rb") as f:  # a regular file: opening it never blocks; raises without permission
        return os.fstat(f.fileno()).st_size


def require_data_file(path: str | os.PathLike[str], field: str) -> int:
    """:func:`regular_file_size`, each failure one :class:`ConfigError` naming ``field``, the path
    and the cause ("file not found", "is a FIFO, not a regular file", "file name too long")."""
    try:
        return regular_file_size(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"file not found: {os.fspath(path)}", field=field) from exc
    except OSError as exc:
        cause = exc.strerror or str(exc)
        raise ConfigError(f"{os.fspath(path)}: {cause[:1].lower()}{cause[1:]}", field=field) from exc


def validate_file(
    path: str | os.PathLike[str],
    rules: DatasetRules | None = None,
    *,
    max_issues: int = 1000,
    on_issue: Callable[[ValidationIssue], None] | None = None,
) -> DatasetReport:
    """Check a JSONL dataset, count its tokens and estimate what training on it costs.

    The file is streamed once; memory does not grow with its size (a single huge line costs a small
    multiple of its length, once). Big files are scanned by worker processes over byte ranges (set
    ``ANYTUNE_DATA_WORKERS=1`` to stay in-process). Arrays and objects nested more than 64 levels
    deep in an example, or in a tool call's ``arguments``, are an error (``too_deep``) naming the
    line and the field.

    Args:
        path: the JSONL file.
        rules: provider, model, method and limits to check against (defaults: SFT, no provider).
        max_issues: keep at most this many issues in the report; all are still counted.
        on_issue: called with each kept issue, in file order, as soon as it is known.

    Returns:
        A :class:`DatasetReport`; ``report.ok`` is False when there are errors.

    Raises:
        OSError: the file is missing, is not a regular file (a directory, a FIFO...) or cannot be
            read (see :func:`regular_file_size`).
    """
    t0 = time.perf_counter()
    rules = rules or DatasetRules()
    fname = os.fspath(path)
    size = regular_file_size(fname)
    setup = _Setup(rules, max_issues)
    acc = _Accumulator(fname, max(0, max_issues), on_issue)
    emit: _scan.Emit | None = None
    if on_issue is not None:  # in-process scans report issues the moment they are found
        emit = acc.keep
    results, workers = _chunk_results(
        fname, size, rules, setup.config, fast_count(setup.counter), getattr(setup.counter, "fork_safe", False), emit
    )
    try:
        for res in results:
            acc.add(res, issues_already_kept=emit is not None and workers == 1)
    finally:
        if isinstance(results, Generator):  # stops the worker pool even when on_issue raised
            results.close()
    return setup.report(acc, size, workers, t0)


class _Setup:
    """What a validation checks against, and the report it ends with: shared by :func:`validate_file`
    and :class:`ValidatingWriter`."""

    def __init__(self, rules: DatasetRules, max_issues: int) -> None:
        self.rules = rules
        self.counter = counter_for(rules.provider, rules.model)
        self.limit = rules.max_tokens_per_example or max_tokens_per_example(rules.provider, rules.model)
        label = f" for {rules.model}" if rules.model and rules.max_tokens_per_example is None else ""
        self.config = _scan.ScanConfig(
            method=rules.method, max_tokens=self.limit, max_issues=max(0, max_issues), limit_label=label
        )

    def report(self, acc: _Accumulator, size: int, workers: int, t0: float) -> DatasetReport:
        rules = self.rules
        fmt = acc.file_level_checks(rules.min_examples)
        stats = token_stats(acc.lengths)
        epochs = billed = None
        cost = None
        if stats is not None:
            epochs = rules.epochs or default_epochs(stats.examples)
            billed = billed_tokens(acc.lengths, epochs, self.limit)
            cost = estimate_cost(rules.provider, rules.model, epochs, billed)
        return DatasetReport(
            file=acc.fname,
            method=rules.method,
            format=fmt,
            examples=acc.examples,
            valid_examples=acc.valid,
            issues=acc.kept,
            issue_counts=acc.counts,
            errors=acc.errors,
            warnings=acc.warnings,
            tokens=stats,
            tokenizer=self.counter.name,
            tokens_exact=self.counter.exact,
            epochs_estimate=epochs,
            billed_tokens_estimate=billed,
            cost=cost,
            bytes=size,
            seconds=time.perf_counter() - t0,
            workers=workers,
        )


class ValidatingWriter:
    """A JSON Lines file validated while it is written: one pass where writing then validating takes two.

    Each stretch of :data:`OVERLAP_CHUNK_BYTES` of complete lines goes to a worker process as soon as
    it is on disk, so the workers count tokens while the writer produces the next lines: a
    conversion's CPU work overlaps validation's instead of leaving the other cores idle before it.
    With one worker (an ``expected_size`` too small to share, one CPU, a daemonic process) the
    file is validated in-process once closed. Either way the report is :func:`validate_file`'s on
    the finished file.

    Use it as a context manager (leaving it stops the workers); :meth:`write` whole lines, then
    :meth:`report`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        rules: DatasetRules | None = None,
        *,
        expected_size: int,
        max_issues: int = 1000,
    ) -> None:
        self._t0 = time.perf_counter()
        self._path = os.fspath(path)
        self._rules = rules or DatasetRules()
        self._max_issues = max_issues
        self._file = open(self._path, "wb")  # noqa: SIM115 - closed by report() or close()
        self._written = self._handed = 0
        # Chunks handed over and not merged yet, in file order; merged as soon as they are done, so
        # memory holds a few results whatever the file's size.
        self._pending: collections.deque[concurrent.futures.Future[_scan.ChunkResult]] = collections.deque()
        self._acc = _Accumulator(self._path, max(0, max_issues), None)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._setup = _Setup(self._rules, max_issues)
        fork_safe = bool(getattr(self._setup.counter, "fork_safe", False))
        self._workers = _workers_for(expected_size, fork_safe)
        if self._workers > 1:
            # Started before the caller reads anything: forked while this process has no other threads.
            self._pool = _pool(self._path, self._workers, self._rules, self._setup.config, fork_safe)

    def write(self, lines: bytes) -> None:
        """Append ``lines``: one or more whole lines, the last ending in a newline."""
        self._file.write(lines)
        self._written += len(lines)
        if self._pool is not None and self._written - self._handed >= OVERLAP_CHUNK_BYTES:
            self._hand_over()

    def _hand_over(self) -> None:
        assert self._pool is not None  # only called with workers
        self._file.flush()  # the workers read the file itself
        bounds = (self._handed, self._written)
        try:
            self._pending.append(self._pool.submit(_scan.scan_chunk, bounds))
        except concurrent.futures.process.BrokenProcessPool as exc:  # a worker died on an earlier chunk
            raise _worker_died() from exc
        self._handed = self._written
        self._merge(keep=IN_FLIGHT_PER_WORKER * self._workers)

    def _merge(self, keep: int) -> None:
        """Merge the finished chunks at the head of the queue; wait for the head while more than
        ``keep`` are in flight (a writer faster than the workers waits, instead of queueing)."""
        while self._pending and (self._pending[0].done() or len(self._pending) > keep):
            self._acc.add(_chunk_result(self._pending.popleft()), issues_already_kept=False)

    def report(self) -> DatasetReport:
        """Close the file and validate what is left; the report of the whole file."""
        if self._pool is None:
            self._file.close()
            return validate_file(self._path, self._rules, max_issues=self._max_issues)
        if self._written > self._handed:
            self._hand_over()
        self._file.close()
        self._merge(keep=0)
        self.close()
        return self._setup.report(self._acc, self._written, self._workers, self._t0)

    def close(self) -> None:
        """Stop the workers and close the file (what :meth:`report` does not need again)."""
        self._file.close()
        if self._pool is not None:
            # Chunks not yet started are dropped; the ones running (a few MB each) end first.
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ValidatingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Bytes of complete lines a :class:`ValidatingWriter` gathers before handing them to a worker.
OVERLAP_CHUNK_BYTES = 4 * 1024 * 1024
#: Chunks a :class:`ValidatingWriter` lets wait per worker before the writer waits for them.
IN_FLIGHT_PER_WORKER = 2


def _workers_for(size: int, fork_safe: bool) -> int:
    """Worker processes for ``size`` bytes (:func:`_scan.plan_workers`); 1 in a daemonic process,
    which may not have children."""
    import multiprocessing

    workers = _scan.plan_workers(size, fork_safe)
    return 1 if workers > 1 and multiprocessing.current_process().daemon else workers


class _Accumulator:
    """Merges chunk results in file order; keeps the first ``max_issues`` issues as models."""

    def __init__(self, fname: str, max_issues: int, on_issue: Callable[[ValidationIssue], None] | None) -> None:
        self.fname = fname
        self.max_issues = max_issues
        self.on_issue = on_issue
        self.kept: list[ValidationIssue] = []
        self.counts: dict[str, int] = {}
        self.lengths: dict[int, int] = {}
        self.formats: dict[str, list[int]] = {}  # format -> [first line, count]
        self.examples = self.valid = self.errors = self.warnings = 0
        self.offset = 0  # lines in the chunks merged so far

    def keep(self, item: _scan.IssueTuple, shift: int = 0) -> None:
        if len(self.kept) >= self.max_issues:
            return
        line, where, code, message, severity = item
        issue = ValidationIssue(
            file=self.fname,
            line=None if line is None else line + shift,
            field=where,
            code=code,
            message=message,
            severity="warning" if severity == "warning" else "error",
        )
        self.kept.append(issue)
        if self.on_issue is not None:
            self.on_issue(issue)

    def add(self, res: _scan.ChunkResult, *, issues_already_kept: bool) -> None:
        if not issues_already_kept:
            for item in res.issues:
                self.keep(item, self.offset)
        for code, n in res.counts.items():
            self.counts[code] = self.counts.get(code, 0) + n
        for n, c in res.lengths.items():
            self.lengths[n] = self.lengths.get(n, 0) + c
        for kind, (first, n) in res.formats.items():
            if kind in self.formats:
                self.formats[kind][1] += n
            else:
                self.formats[kind] = [first + self.offset, n]
        self.examples += res.examples
        self.valid += res.valid
        self.errors += res.errors
        self.warnings += res.warnings
        self.offset += res.lines

    def _file_issue(self, line: int | None, code: str, message: str) -> None:
        self.counts[code] = self.counts.get(code, 0) + 1
        self.errors += 1
        self.keep((line, None, code, message, "error"))

    def file_level_checks(self, min_examples: int) -> DatasetFormat:
        """Add mixed_formats / empty_file / too_few_examples; return the file's format."""
        fmt: DatasetFormat = "unknown"
        if self.formats:
            ordered = sorted(self.formats.items(), key=lambda kv: kv[1][0])
            first_fmt = ordered[0][0]
            fmt = _FORMATS.get(first_fmt, "unknown")
            if len(ordered) > 1:
                other, (other_line, _) = ordered[1]
                mix = ", ".join(f"{n} {name}" for name, (_, n) in ordered)
                self._file_issue(
                    other_line,
                    "mixed_formats",
                    f"file mixes example formats ({mix}); first {other} example here, file starts with {first_fmt}",
                )
        if self.examples == 0:
            self._file_issue(None, "empty_file", "file has no examples")
        elif self.valid < min_examples:
            self._file_issue(
                None,
                "too_few_examples",
                f"{self.valid} valid example{'s' if self.valid != 1 else ''}; at least {min_examples} required",
            )
        return fmt


def check_dataset(path: str | os.PathLike[str], rules: DatasetRules | None = None) -> DatasetReport:
    """Validate ``path`` and raise when it has errors.

    Returns:
        The report when the file has no errors (it may have warnings).

    Raises:
        DataValidationError: the file has errors; the message names the file, the counts by code and
            the first issues with line and field; ``exc.issues`` holds the kept issues.
    """
    report = validate_file(path, rules)
    if not report.ok:
        raise DataValidationError(report.summary(), [i for i in report.issues if i.severity == "error"])
    return report
