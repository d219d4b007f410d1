"""One pipeline from any source (a local file or folder, a Hub dataset) to OpenAI chat / DPO JSONL.

* :func:`to_canonical` yields ``(location, example)`` for each row of a source;
* :func:`write_canonical` writes the examples as JSONL, atomically: on any bad row nothing is
  written and every bad row (up to a cap) is reported; it returns the :class:`Conversion`, whose
  :attr:`~Conversion.locations` map each output line back to its row in the source;
* :func:`write_canonical_to` does the same into a stream (standard output);
* :func:`validate_source` converts into a temporary file validated as it is written
  (:class:`~anytune._data.validate.ValidatingWriter`) and reports every issue against the source
  (``train.csv:row 12: messages[1].content: content is empty``).

Sources are those of :mod:`anytune._data.sources`, shapes and options those of
:mod:`anytune._data.shapes`. Everything streams: memory does not grow with the number of rows
(the line map keeps one entry per run of consecutive rows).
"""

from __future__ import annotations

import bisect
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol, TypedDict

import orjson

from anytune._data.shapes import SHAPES, RowConverter, RowError, Shape, UnknownShapeError, unknown_shape_advice
from anytune._data.sources import BadRow, Location, Source, open_source
from anytune._data.validate import DatasetReport, DatasetRules, ValidatingWriter, ValidationIssue
from anytune._files import atomic_write
from anytune.errors import DataValidationError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Conversion",
    "LineMap",
    "ReadOptions",
    "SourceValidation",
    "remap_report",
    "to_canonical",
    "validate_source",
    "write_canonical",
    "write_canonical_to",
]

#: Bad rows listed at most by :func:`write_canonical` (all are counted).
MAX_REPORTED = 100


class LineMap:
    """Output line number (1-based) → the :class:`Location` of the row it came from.

    Stored as runs of consecutive rows of one file, so a million rows read without a gap take one
    entry.
    """

    def __init__(self) -> None:
        self._starts: list[int] = []  # the output line each run starts at
        self._runs: list[Location] = []  # the location of each run's first row
        self._count = 0
        self._last: Location | None = None

    def append(self, loc: Location) -> None:
        """Record that the next output line comes from ``loc``."""
        self._count += 1
        last = self._last
        if last is None or (last.file, last.unit, last.number + 1) != (loc.file, loc.unit, loc.number):
            self._starts.append(self._count)
            self._runs.append(loc)
        self._last = loc

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, line: int) -> Location:
        if not 1 <= line <= self._count:
            raise IndexError(f"line {line} is not among the {self._count} lines written")
        i = bisect.bisect_right(self._starts, line) - 1
        first = self._runs[i]
        return Location(first.file, first.unit, first.number + line - self._starts[i])


@dataclass
class Conversion:
    """What a conversion read and wrote.

    Attributes:
        source: the source as messages name it.
        shape: the shape the rows were read as (None when no row could be read).
        examples: examples written.
        locations: output line → source location.
        unused_columns: columns of the first row that nothing read (dropped from the examples).
        files: what was read, in order (the source's files).
        size: bytes on disk of what was read.
    """

    source: str
    shape: Shape | None
    examples: int
    locations: LineMap
    unused_columns: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    size: int = 0

    @property
    def name(self) -> str:
        """The source as messages name it (:attr:`source`)."""
        return self.source


@dataclass
class _Outcome:
    conversion: Conversion
    bad: int = 0
    rows: int = 0
    unit: str = "row"  # of the first bad row: "line" in JSON Lines
    problems: list[ValidationIssue] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class ReadOptions(TypedDict, total=False):
    """How a source is read: the keyword options of :func:`to_canonical`, :func:`write_canonical`,
    :func:`write_canonical_to` and :func:`validate_source`.

    Attributes:
        format: ``"auto"`` (the default: the first row's shape, which every row must share) or a
            shape of :data:`anytune._data.shapes.SHAPES`.
        columns: the shape's field ← the source's column, e.g. ``{"prompt": "question"}``.
        prompt_template, completion_template: ``str.format`` templates over the row's columns
            building a prompt/completion pair.
        text_template: one template in Olive's style, split at its last field into prompt and
            completion (:func:`anytune._data.shapes.split_text_template`).
        system: a system message put first in every example that has none.
        split: the split of a folder saved from a ``DatasetDict`` (default ``train``), or of a Hub
            dataset with an optional slice (``train[:4096]``, ``train[:10%]``).
        config, revision: a Hub dataset's config and revision (:func:`anytune._data.hub.open_hub`).
    """

    format: str
    columns: Mapping[str, str] | None
    prompt_template: str | None
    completion_template: str | None
    text_template: str | None
    system: str | None
    split: str | None
    config: str | None
    revision: str | None


def _open(
    source: str | os.PathLike[str], options: ReadOptions, field: str | None = None
) -> tuple[Source, RowConverter]:
    """The source and the converter ``options`` describe; the options are checked first, so a bad
    one is refused before the source is touched."""
    unknown = sorted(set(options) - set(ReadOptions.__annotations__))
    if unknown:  # what a keyword argument the function does not take raised before: a typo stays loud
        raise TypeError(f"unexpected reading option(s): {', '.join(unknown)}")
    conv = RowConverter(
        options.get("format", "auto"),
        columns=options.get("columns"),
        prompt_template=options.get("prompt_template"),
        completion_template=options.get("completion_template"),
        text_template=options.get("text_template"),
        system=options.get("system"),
    )
    src = open_source(
        source, split=options.get("split"), field=field, config=options.get("config"), revision=options.get("revision")
    )
    return src, conv


def _issue(loc: Location, code: str, message: str, where: str | None) -> ValidationIssue:
    return ValidationIssue(file=loc.file, line=loc.number, field=where, code=code, message=message, location=str(loc))


def _examples(
    src: Source, conv: RowConverter, first: list[str] | None = None
) -> Iterator[tuple[Location, dict[str, Any] | ValidationIssue]]:
    """Each row's example, or the issue that stops it; an unreadable first row's shape raises.

    ``first`` receives the columns of the first row read."""
    for loc, row in src.rows():
        if isinstance(row, BadRow):
            yield loc, _issue(loc, row.code, row.message, row.field)
            continue
        if first is not None and not first:
            first.extend(str(k) for k in row)
        try:
            yield loc, conv(row)
        except UnknownShapeError:
            advice = unknown_shape_advice(conv.renamed(row), src.name)
            issue = _issue(loc, "unknown_shape", advice, None)
            raise DataValidationError(f"{src.name}: cannot tell the shape of its rows\n  {issue}", [issue]) from None
        except RowError as exc:
            yield loc, _issue(loc, exc.code, exc.message, exc.field)


class _Lines(Protocol):
    def write(self, data: bytes, /) -> object: ...


def _run(src: Source, conv: RowConverter, out: _Lines, *, max_issues: int, keep_writing: bool) -> _Outcome:
    """Convert every row of ``src`` into ``out``; after a bad row, write on only if ``keep_writing``."""
    lines = LineMap()
    outcome = _Outcome(Conversion(src.name, None, 0, lines, files=src.files, size=src.size))
    columns: list[str] = []
    for loc, item in _examples(src, conv, columns):
        outcome.rows += 1
        if isinstance(item, dict):
            if outcome.bad and not keep_writing:
                continue
            try:
                data = orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
            except orjson.JSONEncodeError as exc:
                item = _issue(loc, "bad_value", f"a value cannot be written as JSON: {exc}", None)
            else:
                out.write(data)  # one whole line per write (what a ValidatingWriter takes)
                lines.append(loc)
                continue
        outcome.bad += 1
        if outcome.bad == 1:
            outcome.unit = loc.unit
        outcome.counts[item.code] = outcome.counts.get(item.code, 0) + 1
        if len(outcome.problems) < max_issues:
            outcome.problems.append(item)
    outcome.conversion.shape = conv.shape
    outcome.conversion.examples = len(lines)
    if conv.shape is not None:
        used = conv.used_columns()
        outcome.conversion.unused_columns = tuple(c for c in columns if c not in used)
    return outcome


def _refuse(outcome: _Outcome, untouched: str) -> DataValidationError:
    bad, unit = outcome.bad, outcome.unit
    shown = "\n".join(f"  {issue}" for issue in outcome.problems[:5])
    more = f"\n  ... and {bad - 5} more" if bad > 5 else ""
    return DataValidationError(
        f"{outcome.conversion.source}: {bad} {unit}{'s' if bad != 1 else ''} cannot be converted ({untouched}):\n"
        f"{shown}{more}",
        outcome.problems,
    )


def _empty(src: Source, untouched: str) -> DataValidationError:
    what = f"split {src.split!r} of {src.path} is empty" if src.split else f"{src.name} has no rows"
    return DataValidationError(f"{what} ({untouched})")


def to_canonical(
    source: str | os.PathLike[str], **options: Unpack[ReadOptions]
) -> Iterator[tuple[Location, dict[str, Any]]]:
    """The canonical example of each row of ``source``, with the row's location, in order.

    Args:
        source: a data file or folder, or a Hub dataset id (:func:`anytune._data.sources.open_source`).
        options: how to read it (:class:`ReadOptions`).

    Raises:
        ConfigError: options that do not fit together, a source that is not a data file or folder.
        DataValidationError: at the first row that cannot be converted, naming its location and
            field; or when the source has no rows.
        MissingDependencyError: Parquet or ``datasets`` without ``anytune[data]``.
        OSError: the source cannot be read.
    """
    src, conv = _open(source, options)
    empty = True
    for loc, item in _examples(src, conv):
        empty = False
        if isinstance(item, ValidationIssue):
            raise DataValidationError(f"a row cannot be converted: {item}", [item])
        yield loc, item
    if empty:
        raise _empty(src, "nothing to convert")


def write_canonical(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    max_issues: int = MAX_REPORTED,
    field: str | None = None,
    **options: Unpack[ReadOptions],
) -> Conversion:
    """Write ``source`` as canonical JSONL (OpenAI chat, or DPO for preference shapes) to ``out``.

    ``options`` say how to read ``source`` (:class:`ReadOptions`). ``out`` is written through a temporary file renamed
    over it only when every row converted: on a bad row nothing is written, every row is still
    read, and the error lists the bad rows (up to ``max_issues``; all are counted). ``out`` gets
    the permissions of the file it replaces, or a new file's. ``field`` names the argument
    ``source`` came from in configuration errors (``"training_file"``).

    Returns:
        The :class:`Conversion`: the shape read, the examples written and, in ``locations``, the
        source location of each output line (to report issues found later against the source).

    Raises:
        ConfigError: options that do not fit together, a source that is not a data file or folder.
        DataValidationError: some rows cannot be converted (``exc.issues``, each with its
            ``location``), the rows' shape is not recognised, or the source has no rows.
        MissingDependencyError: Parquet or ``datasets`` without ``anytune[data]``.
        OSError: the source cannot be read, or ``out`` cannot be written (``out`` is untouched).
    """
    src, conv = _open(source, options, field)
    with atomic_write(out, prefix=".anytune-convert-", suffix=".jsonl.tmp") as fout:
        return _write(src, conv, fout, max_issues, f"{os.fspath(out)} not written")


def write_canonical_to(
    source: str | os.PathLike[str], stream: IO[bytes], *, max_issues: int = MAX_REPORTED, **options: Unpack[ReadOptions]
) -> Conversion:
    """Like :func:`write_canonical`, writing to the binary ``stream`` (standard output, a pipe). The
    examples are held in a temporary file until every row converted: a bad source writes nothing.

    Raises:
        The errors of :func:`write_canonical`; ``OSError`` also when ``stream`` cannot be written.
    """
    src, conv = _open(source, options)
    with tempfile.TemporaryFile() as spool:
        conversion = _write(src, conv, spool, max_issues, "nothing written")
        spool.seek(0)
        shutil.copyfileobj(spool, stream)
    stream.flush()
    return conversion


def _write(src: Source, conv: RowConverter, out: IO[bytes], max_issues: int, untouched: str) -> Conversion:
    outcome = _run(src, conv, out, max_issues=max(1, max_issues), keep_writing=False)
    if outcome.bad:
        raise _refuse(outcome, untouched)
    if not outcome.rows:
        raise _empty(src, untouched)
    return outcome.conversion


class SourceValidation(NamedTuple):
    """:func:`validate_source`'s result: the report, and how the source was read."""

    report: DatasetReport
    shape: Shape | None
    unused_columns: tuple[str, ...]


def _method_mismatch(src: Source, shape: Shape, method: str) -> DataValidationError:
    info = SHAPES[shape]
    kind = "preference (DPO)" if info.method == "dpo" else "supervised (SFT)"
    return DataValidationError(
        f"{src.name} reads as {info.describe()}, {kind} data, not {method} data: validate it with "
        f"--method {info.method} (method={info.method!r}), or name another shape with --format"
    )


def _order(files: tuple[str, ...]) -> Any:
    index = {name: i for i, name in enumerate(files)}

    def key(issue: ValidationIssue) -> tuple[int, int, int]:
        if issue.line is None:
            return (1, 0, 0)
        return (0, index.get(issue.file, 0), issue.line)

    return key


def remap_report(
    report: DatasetReport, conversion: Conversion, rules: DatasetRules, *, max_issues: int = 1000
) -> DatasetReport:
    """``report``, of the file :func:`write_canonical` wrote, told against the source it converted:
    each issue's file, line and ``location`` become the source row's (``train.csv:row 12``)."""
    return _remap(report, conversion, _Outcome(conversion), rules, max(0, max_issues))


def _remap(
    report: DatasetReport, src: Source | Conversion, outcome: _Outcome, rules: DatasetRules, max_issues: int
) -> DatasetReport:
    """``report`` (on the converted file) told against the source, the conversion's problems merged in."""
    lines = outcome.conversion.locations
    issues = list(outcome.problems)
    counts = dict(report.issue_counts)
    errors = report.errors + outcome.bad
    for code, n in outcome.counts.items():
        counts[code] = counts.get(code, 0) + n
    for issue in report.issues:
        if issue.line is not None:
            loc = lines[issue.line]
            issues.append(issue.model_copy(update={"file": loc.file, "line": loc.number, "location": str(loc)}))
        elif issue.code == "empty_file" and outcome.bad:
            # Every row was bad: the source is not empty, it has no valid example.
            counts.pop("empty_file")
            errors -= 1
            if rules.min_examples > 0:
                update = {
                    "file": src.name,
                    "code": "too_few_examples",
                    "message": f"0 valid examples; at least {rules.min_examples} required",
                }
                issues.append(issue.model_copy(update=update))
                counts["too_few_examples"] = counts.get("too_few_examples", 0) + 1
                errors += 1
        else:
            issues.append(issue.model_copy(update={"file": src.name}))
    issues.sort(key=_order(src.files))
    return report.model_copy(
        update={
            "file": src.name,
            "issues": issues[:max_issues],
            "issue_counts": counts,
            "errors": errors,
            "examples": report.examples + outcome.bad,
            "bytes": src.size,
        }
    )


def validate_source(
    source: str | os.PathLike[str],
    rules: DatasetRules | None = None,
    *,
    max_issues: int = 1000,
    field: str | None = None,
    **options: Unpack[ReadOptions],
) -> SourceValidation:
    """Validate any source: convert it (in a temporary folder), validate, report against the source.

    ``options`` say how to read ``source`` (:class:`ReadOptions`); ``field`` names the argument
    ``source`` came from in configuration errors. Rows that cannot be converted are issues of the report like the
    validator's own (codes such as ``missing_column``, ``mixed_shapes``, ``ragged_row``); every
    issue's ``location`` names the row (``train.csv:row 12``) and ``field`` the place in the
    converted example (``messages[1].content``) or the source's column.

    Returns:
        The report (``report.file`` is the source, ``report.format`` the canonical format the rows
        became), the shape the rows were read as, and the columns nothing read.

    Raises:
        ConfigError: options that do not fit together, a source that is not a data file or folder.
        DataValidationError: the rows' shape is not recognised, or it is preference data for
            ``method="sft"`` (or the reverse).
        MissingDependencyError: Parquet or ``datasets`` without ``anytune[data]``.
        OSError: the source cannot be read.
    """
    rules = rules or DatasetRules()
    src, conv = _open(source, options, field)
    with tempfile.TemporaryDirectory(prefix="anytune-validate-") as tmp:
        # Validated while it is written: worker processes count the tokens of the converted lines
        # while this process converts the next rows.
        path = os.path.join(tmp, "canonical.jsonl")
        with ValidatingWriter(path, rules, expected_size=src.size, max_issues=max_issues) as out:
            outcome = _run(src, conv, out, max_issues=max(0, max_issues), keep_writing=True)
            if conv.shape is not None and conv.method != rules.method:
                raise _method_mismatch(src, conv.shape, rules.method)
            report = out.report()
    report = _remap(report, src, outcome, rules, max(0, max_issues))
    return SourceValidation(report, conv.shape, outcome.conversion.unused_columns)
