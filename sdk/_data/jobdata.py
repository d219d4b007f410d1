"""The files a job trains on: a spec's ``data`` section, or data files in another shape, as canonical JSONL.

:func:`materialise` turns a :class:`~anytune._spec.JobSpec` into the spec a provider receives:

* a ``data`` section is converted (:func:`anytune._data.pipeline.write_canonical`): its ``split``
  becomes ``training_file``, its ``eval_split`` ``validation_file``, and the section is dropped;
* a ``training_file`` / ``validation_file`` that is not JSON Lines (CSV/TSV, JSON, Parquet, a folder)
  or whose rows are in a recognised non-canonical shape (Alpaca, ShareGPT, TRL...) is converted
  the same way (``format="auto"``), with a notice; canonical JSONL is used as it is.

Converted files live in a cache under the anytune home, ``<home>/data/<key>.jsonl``, where the key
is the sha256 of the source's identity and the options: a local source's identity is its absolute
path with the size and modification time of each file read, so an edited file converts again and an
unchanged one is reused (an upload of the same bytes is then deduplicated by the provider's upload
cache, which keys on content). A Hub dataset's identity is its id, configuration, revision and split;
it is reused only when pinned to a commit (a 40-hex revision), since a branch may move; otherwise it
is converted each time into ``<home>/data/hub-<sha256 of the content>.jsonl``, so the same rows
leave one file.

Whether ``data.source`` is a path or a Hub id: a path when it exists (``~`` expanded), or when it
is written as one (``./x``, ``../x``, ``/x``, two or more ``/``) or ends in a data file's extension
(``.csv``...); anything else (``org/name``) is a Hub dataset id, passed through unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from anytune._data.sources import KINDS
from anytune._spec import DataSpec, JobSpec
from anytune.errors import ConfigError

__all__ = ["Materialised", "is_hub_id", "materialise", "needs_conversion"]

logger = logging.getLogger("anytune.data")

#: Bumped when the conversion's output for the same input changes: old cache entries are then ignored.
_CACHE_VERSION: Final = 1
_COMMIT: Final = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Materialised:
    """One data file a job's provider receives in place of what the user gave.

    Attributes:
        role: ``training_file`` or ``validation_file``.
        field: the spec field the source came from (``data.source``, ``training_file``...).
        source: the source as given (a path or a Hub id).
        path: the canonical JSONL file.
        examples: examples in it.
        shape: the shape its rows were read as.
        reused: whether the file was already in the cache.
        options: the conversion's keyword arguments (to convert again, e.g. to map issues back).
    """

    role: str
    field: str
    source: str
    path: Path
    examples: int
    shape: str | None
    reused: bool
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """``"data.source train.csv (split train), read as prompt/completion: 20 examples"``."""
        split = self.options.get("split")
        read_as = f", read as {self.shape}" if self.shape else ""
        on = f" (split {split})" if split else ""
        return f"{self.field} {self.source}{on}{read_as}: {self.examples} examples in {self.path}"


def is_hub_id(source: str) -> bool:
    """Whether ``source`` names a Hugging Face Hub dataset rather than a local file or folder: the
    one rule of :func:`anytune._data.sources.classify_source` (a name that is neither is a path,
    which opening then reports as missing)."""
    from anytune._data.sources import classify_source

    try:
        return classify_source(os.path.expanduser(source)) == "hub"
    except FileNotFoundError:
        return False


def needs_conversion(path: str | os.PathLike[str]) -> bool:
    """Whether a ``training_file`` / ``validation_file`` is to be converted before training: a
    folder, a data file that is not JSON Lines, or JSON Lines whose first row is in a recognised
    shape other than the canonical ones. Anything unreadable is left to the data checks."""
    from anytune._data.shapes import detect_shape, is_canonical
    from anytune._data.sources import first_row

    name = os.fspath(path)
    if os.path.isdir(name):
        return True
    if KINDS.get(os.path.splitext(name)[1].lower()) in ("json", "csv", "tsv", "parquet"):
        return True
    if not os.path.isfile(name):
        # A FIFO or a device: opening it would wait for a writer, for ever; the data checks refuse it.
        return False
    try:
        row = first_row(name)
    except OSError:
        return False
    if row is None:
        return False
    shape = detect_shape(row)
    return shape is not None and not is_canonical(row, shape)


def _options(data: DataSpec) -> dict[str, Any]:
    """The conversion's keyword arguments a data section sets (None left out)."""
    given = {
        "format": data.format,
        "columns": data.columns,
        "prompt_template": data.prompt_template,
        "completion_template": data.completion_template,
        "text_template": data.text_template,
        "system": data.system,
        "config": data.config,
        "revision": data.revision,
    }
    return {k: v for k, v in given.items() if v is not None}


def _local_identity(source: str) -> list[Any]:
    """The absolute path with the size and modification time of each file under it."""
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.isdir(path):
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]
    files: list[Any] = [path]
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            member = os.path.join(root, name)
            st = os.stat(member)
            files.append([os.path.relpath(member, path), st.st_size, st.st_mtime_ns])
    return files


def _cache_key(source: str, hub: bool, options: Mapping[str, Any]) -> str | None:
    """The cache key of a conversion; None when its result cannot be reused (a Hub dataset not pinned
    to a commit)."""
    if hub:
        if not _COMMIT.fullmatch(str(options.get("revision") or "")):
            return None
        identity: Any = ["hub", source]
    else:
        identity = ["local", _local_identity(source)]
    blob = orjson.dumps([_CACHE_VERSION, identity, dict(sorted(options.items()))], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


def _write_canonical(source: str, out: Path, options: Mapping[str, Any], field: str) -> tuple[int, str | None]:
    """Convert ``source`` into ``out``; (examples, shape)."""
    from anytune._data.pipeline import write_canonical

    try:
        conversion = write_canonical(source, out, field=field, **options)
    except FileNotFoundError as exc:
        raise ConfigError(f"file not found: {exc.filename or source}", field=field) from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{source}: is a directory", field=field) from exc
    return conversion.examples, conversion.shape


def _convert(home: Path, role: str, field: str, source: str, options: dict[str, Any]) -> Materialised:
    hub = is_hub_id(source)
    if not hub:
        for name in ("config", "revision"):
            if name in options:
                raise ConfigError(f"{source} is a local source; data.{name} applies to Hub datasets", field=field)
        if not os.path.exists(os.path.expanduser(source)):
            raise ConfigError(f"file not found: {source}", field=field)
    key = _cache_key(source, hub, options)
    folder = home / "data"
    folder.mkdir(parents=True, exist_ok=True)
    if key is not None:
        path, meta = folder / f"{key}.jsonl", folder / f"{key}.json"
        try:
            known = orjson.loads(meta.read_bytes())
            if path.is_file():
                return Materialised(role, field, source, path, int(known["examples"]), known["shape"], True, options)
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # not converted yet, or an entry left half-written: convert again
        examples, shape = _write_canonical(source, path, options, field)
        _write_meta(meta, source, examples, shape)
        return Materialised(role, field, source, path, examples, shape, False, options)
    # Not reusable: converted each time, then named by its content, so converting the same rows
    # again leaves one file (and the same bytes for a provider's upload cache).
    fd, name = tempfile.mkstemp(prefix=".hub-", suffix=".jsonl", dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        examples, shape = _write_canonical(source, tmp, options, field)
        digest = hashlib.sha256()
        with tmp.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        path = folder / f"hub-{digest.hexdigest()}.jsonl"
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Materialised(role, field, source, path, examples, shape, False, options)


def _write_meta(meta: Path, source: str, examples: int, shape: str | None) -> None:
    from anytune._files import atomic_write

    with atomic_write(meta, prefix=".anytune-data-", suffix=".json.tmp") as f:
        f.write(orjson.dumps({"source": source, "examples": examples, "shape": shape}))


def materialise(spec: JobSpec, home: Path) -> tuple[JobSpec, list[Materialised]]:
    """The spec a provider receives: every data source as a canonical JSONL file (module docstring).

    Args:
        spec: the spec as the user gave it.
        home: the anytune home (the cache is its ``data`` folder).

    Returns:
        The spec with ``training_file`` / ``validation_file`` the canonical files and no ``data``
        section (``spec`` itself when nothing needed converting), and what was converted.

    Raises:
        ConfigError: a source that does not exist, options that do not fit together or do not fit
            the source; naming the field.
        DataValidationError: rows that cannot be converted, each named by file, row and field; a
            shape that is not recognised; an empty split.
        MissingDependencyError: Parquet, ``datasets`` folders or Hub datasets without ``anytune[data]``.
        OSError: the source cannot be read or the cache written.
    """
    done: list[Materialised] = []
    if spec.data is not None:
        options = _options(spec.data)
        split = {"split": spec.data.split} if spec.data.split is not None else {}
        done.append(_convert(home, "training_file", "data.source", spec.data.source, options | split))
        if spec.data.eval_split is not None:
            evaluation = options | {"split": spec.data.eval_split}
            done.append(_convert(home, "validation_file", "data.eval_split", spec.data.source, evaluation))
    else:
        for role, given in (("training_file", spec.training_file), ("validation_file", spec.validation_file)):
            if given is not None and os.path.exists(given) and needs_conversion(given):
                made = _convert(home, role, role, os.fspath(given), {"format": "auto"})
                logger.warning(
                    "%s %s is not canonical JSONL: converted (%s, %d examples) to %s",
                    role,
                    given,
                    made.shape or "auto",
                    made.examples,
                    made.path,
                )
                done.append(made)
    if not done:
        return spec, done
    update: dict[str, Any] = {m.role: m.path for m in done}
    if spec.data is not None:
        update["data"] = None
    return spec.model_copy(update=update), done
