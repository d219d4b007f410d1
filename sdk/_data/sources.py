"""Rows from local sources, streamed: JSONL, JSON, CSV/TSV, Parquet, folders.

:func:`open_source` looks at a path and returns a :class:`Source` whose :meth:`Source.rows` yields
``(location, row)`` pairs in source order, where ``row`` is a dict of column → value, or a
:class:`BadRow` when that one record cannot be read (the others still are). Locations are what a
user can act on, numbered from 1: ``data.jsonl:line 7`` (the file's line), ``train.csv:row 12``
(the row a spreadsheet shows: the header is row 1, so the first record is row 2), ``data.json:row
3``, ``data.parquet:row 3`` and ``folder/train:row 3`` (the third record).

Kinds, by extension: ``.jsonl`` / ``.ndjson``, ``.json``, ``.csv``, ``.tsv``, ``.parquet``; a folder
written by ``datasets.Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (a split is chosen,
``train`` by default); or a folder of data files of one kind, read in name order (its subfolders and
hidden files are not read). Memory stays flat whatever the size, except for ``.json``: a JSON
document is one value, parsed whole.

A name that is not an existing path may be a Hugging Face Hub dataset id (``org/name``):
:func:`classify_source` tells which, and :func:`open_source` hands a Hub id to
:func:`anytune._data.hub.open_hub` (a config, a revision, a split with a slice such as
``train[:4096]``; locations ``org/name[train]:row 4097``).

Parquet needs ``pyarrow``, and a ``datasets`` folder or a Hub dataset ``datasets``, both from
``anytune[data]``; they are imported only when such a source is read.
"""

from __future__ import annotations

import csv
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from anytune.errors import ConfigError, DataValidationError, MissingDependencyError

__all__ = [
    "KINDS",
    "BadRow",
    "Location",
    "Row",
    "Source",
    "SourceKind",
    "classify_source",
    "first_row",
    "open_source",
    "read_rows",
]

#: Data-file extensions and the kind each is read as.
KINDS: Final = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}
_ACCEPTED: Final = (
    ".jsonl or .ndjson (JSON Lines), .json, .csv, .tsv, .parquet, or a folder saved by datasets (save_to_disk) "
    "or holding data files of one of these kinds"
)
_BATCH: Final = 1024
#: Bytes a Parquet column chunk is read in (pyarrow's ``buffer_size``).
_PARQUET_BUFFER: Final = 1 << 20
#: What a source's name means: a local file or folder, or a Hub dataset id.
SourceKind = Literal["path", "hub"]
_BOM: Final = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Location:
    """Where a row is: ``file`` as given (a folder's member under the folder), its ``unit``
    (``line`` for JSON Lines, ``row`` for the rest) and 1-based ``number``."""

    file: str
    unit: Literal["line", "row"]
    number: int

    def __str__(self) -> str:
        return f"{self.file}:{self.unit} {self.number}"


@dataclass(frozen=True)
class BadRow:
    """A record that cannot be read as a row: not JSON, not an object, a CSV row of the wrong length."""

    code: str
    message: str
    field: str | None = None


Row = tuple[Location, "dict[str, Any] | BadRow"]


@dataclass(frozen=True)
class Source:
    """A source ready to read.

    Attributes:
        path: the path as given.
        kind: ``jsonl``, ``json``, ``csv``, ``tsv``, ``parquet`` or ``datasets``.
        name: how messages name it: ``path``, or ``path/split`` for a split of a DatasetDict.
        files: what is read, in order: the file, a folder's data files, or a dataset's folder.
        split: the split read from a DatasetDict folder.
    """

    path: str
    kind: str
    name: str
    files: tuple[str, ...]
    split: str | None = None
    _size: int = field(default=0, repr=False)

    @property
    def size(self) -> int:
        """Bytes on disk of what is read."""
        return self._size

    def rows(self) -> Iterator[Row]:
        """Every row, in order; a fatal problem (a file that is not what its name says) raises.

        Raises:
            DataValidationError: a file cannot be read as its kind (a JSON document that holds no
                records, a CSV header naming a column twice, a file that is not UTF-8 or not Parquet).
            MissingDependencyError: pyarrow or datasets is needed and not installed.
            OSError: a file cannot be read.
        """
        read = _READERS[self.kind]
        for name in self.files:
            yield from read(name)


# -- finding what a path is ----------------------------------------------------------------------


def _kind(path: str, field: str | None) -> str:
    ext = os.path.splitext(path)[1].lower()
    kind = KINDS.get(ext)
    if kind is None:
        what = f"extension {ext!r}" if ext else "no extension"
        raise ConfigError(f"{path}: cannot read a file with {what}; accepted: {_ACCEPTED}", field=field)
    return kind


def _folder_size(folder: str) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _dataset_dict(path: str, split: str | None, field: str | None) -> Source:
    try:
        with open(os.path.join(path, "dataset_dict.json"), "rb") as f:
            splits = orjson.loads(f.read())["splits"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataValidationError(f"{path}: dataset_dict.json cannot be read: {exc}") from exc
    wanted = split or "train"
    if wanted not in splits:
        how = "choose one with --split (split=)" if split is None else "choose one of them"
        raise ConfigError(
            f"{path} has no split {wanted!r}; its splits: {', '.join(map(str, splits))} ({how})", field=field
        )
    folder = os.path.join(path, wanted)
    return Source(path, "datasets", folder, (folder,), wanted, _folder_size(folder))


def _data_folder(path: str, split: str | None, field: str | None) -> Source:
    entries = sorted(os.listdir(path))
    if not entries:
        # The same words as for a data file that turns out to be a directory (require_data_file).
        raise ConfigError(f"{path}: is a directory", field=field)
    files = [n for n in entries if not n.startswith(".") and os.path.isfile(os.path.join(path, n))]
    by_kind: dict[str, list[str]] = {}
    for name in files:
        kind = KINDS.get(os.path.splitext(name)[1].lower())
        if kind is not None:
            by_kind.setdefault(kind, []).append(name)
    if not by_kind:
        shown = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "")
        raise ConfigError(f"{path}: a folder with no data files (found: {shown}); accepted: {_ACCEPTED}", field=field)
    if len(by_kind) > 1:
        mix = "; ".join(f"{kind}: {', '.join(names[:3])}" for kind, names in sorted(by_kind.items()))
        raise ConfigError(f"{path}: a folder mixing kinds of data files ({mix}); keep one kind", field=field)
    if split is not None:
        raise ConfigError(f"{path}: a folder of data files has no splits (split {split!r})", field=field)
    kind, names = next(iter(by_kind.items()))
    members = tuple(os.path.join(path, n) for n in names)
    return Source(path, kind, path, members, None, sum(os.stat(m).st_size for m in members))


def classify_source(text: str | os.PathLike[str]) -> SourceKind:
    """Whether ``text`` names a local file or folder (``"path"``) or a Hub dataset (``"hub"``).

    The rule: a name that exists on disk is a path, even when it could be an id (``org/name``
    checked out next to you). Otherwise a name written as a path (``./``, ``/``, ``~``, more than
    one ``/``, a drive letter) or ending in a data file's extension (``train.jsonl``) is a path,
    missing; any other name that is a valid Hub repo id (``org/name``, or a bare ``name``) is a Hub
    dataset id.

    Raises:
        FileNotFoundError: neither an existing path nor a valid Hub dataset id (``filename`` is
            ``text``, ``strerror`` says both).
    """
    from anytune._base_model import is_repo_id, looks_like_path

    name = os.fspath(text)
    if isinstance(text, os.PathLike):
        return "path"  # a Path object is a path, whatever its text
    try:
        if os.path.lexists(name):
            return "path"
    except (OSError, ValueError):
        return "path"  # unreadable or an odd name: opening it says why
    if looks_like_path(name) or os.path.splitext(name)[1].lower() in KINDS:
        return "path"
    if is_repo_id(name):
        return "hub"
    raise FileNotFoundError(errno.ENOENT, "neither an existing file or folder nor a Hub dataset id (org/name)", name)


def open_source(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    field: str | None = None,
    config: str | None = None,
    revision: str | None = None,
) -> Source:
    """What ``path`` is and how to read it; nothing is read yet but folder listings and metadata
    (for a Hub dataset: the pre-flight look-up and its data files' listing).

    Args:
        path: a data file, a folder, or a Hub dataset id (see the module's docstring and
            :func:`classify_source`).
        split: the split of a folder saved from a ``DatasetDict`` (default ``train``); of a Hub
            dataset, with an optional slice (``train[:4096]``, ``train[:10%]``; default ``train``).
        field: the argument ``path`` came from, for the messages (``"FILE"``, ``"training_file"``).
        config: a Hub dataset's config (default: its default one).
        revision: a Hub dataset's branch, tag or commit (default ``main``).

    Raises:
        ConfigError: an extension that is not a data file's (the message lists those accepted), a
            folder without data files or mixing kinds, a split that does not exist (its splits are
            listed) or a split asked of a source that has none, a config or revision given for a
            local source; for a Hub dataset, those of :func:`anytune._data.hub.open_hub`.
        ProviderError: a Hub dataset that is gated or a Hub that cannot be reached
            (:func:`anytune._data.hub.open_hub`).
        OSError: ``path`` is missing, not a regular file (a FIFO, a device) or cannot be read;
            ``FileNotFoundError`` for a name that is neither a path nor a Hub dataset id.
    """
    from anytune._data.validate import regular_file_size

    name = os.fspath(path)
    if classify_source(path) == "hub":
        from anytune._data.hub import open_hub

        return open_hub(name, split=split, config=config, revision=revision)
    for option, value in (("config", config), ("revision", revision)):
        if value is not None:
            raise ConfigError(
                f"{name}: a local source has no {option} ({option} {value!r}); it is for Hub datasets", field=option
            )
    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, "dataset_dict.json")):
            return _dataset_dict(name, split, field)
        if any(os.path.isfile(os.path.join(name, f)) for f in ("dataset_info.json", "state.json")):
            if split is not None:
                raise ConfigError(f"{name}: a single saved dataset has no splits (split {split!r})", field=field)
            return Source(name, "datasets", name, (name,), None, _folder_size(name))
        return _data_folder(name, split, field)
    kind = _kind(name, field)
    size = regular_file_size(name)
    if split is not None:
        raise ConfigError(f"{name}: a data file has no splits (split {split!r})", field=field)
    return Source(name, kind, name, (name,), None, size)


def read_rows(
    path: str | os.PathLike[str], *, split: str | None = None, config: str | None = None, revision: str | None = None
) -> Iterator[Row]:
    """``open_source(path, split=split, config=config, revision=revision).rows()``."""
    return open_source(path, split=split, config=config, revision=revision).rows()


#: How much of a JSON Lines file :func:`first_row` reads at most.
PEEK_BYTES: Final = 1 << 20


def first_row(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The first non-blank line of a JSON Lines file as an object, when it is one and starts within
    its first :data:`PEEK_BYTES` (a huge or broken first line is not read twice: None)."""
    with open(path, "rb") as f:
        block = f.read(PEEK_BYTES)
    complete = len(block) < PEEK_BYTES
    if block.startswith(_BOM):
        block = block[len(_BOM) :]
    lines = block.split(b"\n")
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        if i == len(lines) - 1 and not complete:
            return None
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return obj if type(obj) is dict else None
    return None


# -- the readers ---------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _jsonl(path: str) -> Iterator[Row]:
    with open(path, "rb") as f:
        for ln, raw in enumerate(f, 1):
            if ln == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if not raw.strip():
                continue
            where = Location(path, "line", ln)
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield where, BadRow("bad_json", f"not valid JSON: {exc}")
                continue
            if type(obj) is not dict:
                yield where, BadRow("not_object", f"each line must be a JSON object, got {_type_name(obj)}")
                continue
            yield where, obj


def _records_in(path: str, doc: dict[str, Any]) -> list[Any] | dict[str, list[Any]]:
    """The records of a JSON object: its one array of objects, or its columns of equal length."""
    arrays = {k: v for k, v in doc.items() if isinstance(v, list)}
    of_records = [k for k, v in arrays.items() if v and all(isinstance(x, dict) for x in v)]
    if len(of_records) == 1:
        return arrays[of_records[0]]
    if len(of_records) > 1:
        raise DataValidationError(
            f"{path}: the JSON object holds {len(of_records)} arrays of records ({', '.join(of_records)}); "
            "keep one, or write them as JSON Lines"
        )
    if doc and len(arrays) == len(doc):
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) == 1:
            return arrays
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in arrays.items())
        raise DataValidationError(f"{path}: the JSON object's columns have different lengths ({sizes})")
    raise DataValidationError(
        f"{path}: a JSON object that holds no records; expected an array of records ([{{...}}, ...]), an "
        'object holding one array of records ({"data": [{...}, ...]}) or columns of equal length '
        '({"prompt": [...], "completion": [...]})'
    )


def _json(path: str) -> Iterator[Row]:
    # A JSON document is one value: it is parsed whole (JSON Lines is the streaming form).
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        hint = ""
        first = data.split(b"\n", 1)[0]
        if b"\n" in data.strip():
            try:
                orjson.loads(first)
            except orjson.JSONDecodeError:
                pass
            else:
                hint = "; it looks like JSON Lines (one object per line): name it .jsonl"
        raise DataValidationError(f"{path}: not valid JSON: {exc}{hint}") from exc
    del data
    if isinstance(doc, dict):
        records = _records_in(path, doc)
    elif isinstance(doc, list):
        records = doc
    else:
        raise DataValidationError(f"{path}: the JSON document is {_type_name(doc)}, not an array of records")
    if isinstance(records, dict):  # columns
        names = list(records)
        for i in range(len(records[names[0]])):
            yield Location(path, "row", i + 1), {n: records[n][i] for n in names}
        return
    for i, record in enumerate(records, 1):
        where = Location(path, "row", i)
        if type(record) is not dict:
            yield where, BadRow("not_object", f"each record must be a JSON object, got {_type_name(record)}")
        else:
            yield where, record


def _raise_csv_limit() -> None:
    # The csv module refuses fields over 128 KiB by default; a training example can be longer.
    limit = 1 << 30
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)


def _csv(path: str, delimiter: str) -> Iterator[Row]:
    _raise_csv_limit()
    number = 1
    with open(path, encoding="utf-8-sig", newline="") as f:
        try:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            seen: set[str] = set()
            for name in header:
                if name in seen:
                    raise DataValidationError(f"{path}:row 1: column {name!r} appears twice in the header")
                seen.add(name)
            for record in reader:
                number += 1
                if not record:  # a blank line: a blank row in a spreadsheet
                    continue
                where = Location(path, "row", number)
                if len(record) != len(header):
                    yield where, _ragged(header, record)
                    continue
                yield where, dict(zip(header, record, strict=True))
        except csv.Error as exc:
            raise DataValidationError(f"{path}:row {number + 1}: not readable as CSV: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"{path}: not UTF-8 text (near row {number + 1}): {exc.reason}") from exc


def _ragged(header: list[str], record: list[str]) -> BadRow:
    n = len(record)
    message = f"row has {n} field{'s' if n != 1 else ''}, the header has {len(header)}"
    if n < len(header):
        return BadRow("ragged_row", f"{message}: column {header[n]!r} is missing", header[n])
    return BadRow("ragged_row", f"{message}: values past the last column ({header[-1]!r})")


def _tsv(path: str) -> Iterator[Row]:
    return _csv(path, "\t")


def _comma(path: str) -> Iterator[Row]:
    return _csv(path, ",")


def _parquet(path: str) -> Iterator[Row]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError("pyarrow", "data", "reading Parquet files") from exc
    number = 0
    try:
        # Without pre_buffer: pyarrow's read-ahead cache keeps every column chunk it fetched for
        # the file's lifetime (a 1 M-row file's peak memory grew 3x over a 100 k-row one's);
        # buffered reads take each column chunk 1 MiB at a time instead of whole.
        parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=_PARQUET_BUFFER)
        for batch in parquet.iter_batches(batch_size=_BATCH):
            for row in batch.to_pylist():
                number += 1
                yield Location(path, "row", number), row
    except pa.ArrowException as exc:
        raise DataValidationError(f"{path}: not a readable Parquet file (after row {number}): {exc}") from exc


def _saved_without_data(folder: str) -> bool:
    """Whether ``state.json`` says the saved dataset has no data files (it was saved empty)."""
    try:
        with open(os.path.join(folder, "state.json"), "rb") as f:
            state = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(state, dict) and state.get("_data_files") == []


def _datasets(folder: str) -> Iterator[Row]:
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependencyError("datasets", "data", "reading a folder saved by datasets") from exc
    if _saved_without_data(folder):
        return  # datasets itself fails to load a dataset saved with no rows
    try:
        dataset = datasets.load_from_disk(folder)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataValidationError(f"{folder}: cannot be read as a saved dataset: {exc}") from exc
    if not isinstance(dataset, datasets.Dataset):  # pragma: no cover - a DatasetDict is opened by split
        raise DataValidationError(f"{folder}: holds splits; pass one (--split)")
    number = 0
    # Arrow batches, memory-mapped from the dataset's files: memory does not grow with its size.
    for batch in dataset.with_format("arrow").iter(batch_size=_BATCH):
        for row in batch.to_pylist():
            number += 1
            yield Location(folder, "row", number), row


_READERS: Final = {
    "jsonl": _jsonl,
    "json": _json,
    "csv": _comma,
    "tsv": _tsv,
    "parquet": _parquet,
    "datasets": _datasets,
}
