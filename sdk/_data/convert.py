"""Conversions into the canonical chat JSONL format."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import IO, TYPE_CHECKING, Any

import orjson

from anytune._data._scan import deep_issue
from anytune._data.formats import prompt_completion_messages
from anytune._files import atomic_write
from anytune.errors import DataValidationError

if TYPE_CHECKING:
    from anytune._data.validate import ValidationIssue

__all__ = ["convert_prompt_completion", "convert_prompt_completion_to"]

_PC_KEYS = frozenset({"prompt", "completion", "metadata"})
_MAX_REPORTED = 20


def _line_problems(obj: Any) -> list[tuple[str | None, str, str]]:
    """(field, code, message) for each reason a parsed line cannot be converted."""
    if type(obj) is not dict:
        return [(None, "not_object", "each line must be a JSON object")]
    deep = deep_issue(obj)
    if deep is not None:
        return [(deep[0], "too_deep", deep[1])]
    problems: list[tuple[str | None, str, str]] = []
    for key in ("prompt", "completion"):
        value = obj.get(key)
        if value is None:
            problems.append((key, "missing_field", f"{key} is missing"))
        elif type(value) is not str:
            problems.append((key, "bad_content", f"{key} must be a string"))
        elif not value or value.isspace():
            problems.append((key, "empty_content", f"{key} is empty"))
    for key in obj:
        if key not in _PC_KEYS:
            problems.append((str(key), "unknown_key", f"unknown key {key!r} in prompt/completion example"))
    return problems


def _convert(src_name: str, fout: IO[bytes], system: str | None) -> tuple[int, int, list[ValidationIssue]]:
    """Write each line of ``src_name`` as chat JSONL to ``fout``; (written, bad lines, issues).

    After the first bad line nothing more is written, but every line is still read, to report
    them all."""
    from anytune._data.validate import ValidationIssue

    issues: list[ValidationIssue] = []
    bad = 0
    written = 0
    with open(src_name, "rb") as fin:
        for ln, raw in enumerate(fin, 1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                problems: list[tuple[str | None, str, str]] = [(None, "bad_json", f"not valid JSON: {exc}")]
            else:
                problems = _line_problems(obj)
            if problems:
                bad += 1
                for where, code, message in problems:
                    if len(issues) < _MAX_REPORTED:
                        issues.append(ValidationIssue(file=src_name, line=ln, field=where, code=code, message=message))
                continue
            if bad:
                continue  # keep scanning to report every bad line, but stop writing
            example: dict[str, Any] = {
                "messages": prompt_completion_messages(obj["prompt"], obj["completion"], system=system)
            }
            if "metadata" in obj:
                example["metadata"] = obj["metadata"]
            fout.write(orjson.dumps(example))
            fout.write(b"\n")
            written += 1
    return written, bad, issues


def _check_inputs(src_name: str, system: str | None) -> None:
    from anytune._data.validate import regular_file_size

    if system is not None and (not system or system.isspace()):
        raise DataValidationError("convert_prompt_completion: system message is empty")
    regular_file_size(src_name)  # a directory, FIFO or device is refused before anything is written


def _refuse(src_name: str, bad: int, issues: list[ValidationIssue], untouched: str) -> DataValidationError:
    shown = "\n".join(f"  {issue}" for issue in issues[:5])
    return DataValidationError(
        f"{src_name}: {bad} line{'s' if bad != 1 else ''} cannot be converted to chat format ({untouched}):\n{shown}",
        issues,
    )


def convert_prompt_completion(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, system: str | None = None
) -> int:
    """Convert ``{"prompt", "completion"}`` JSONL into chat JSONL.

    Each line becomes ``{"messages": [system?, {"role": "user", "content": prompt},
    {"role": "assistant", "content": completion}]}`` (``metadata`` is kept). Blank lines are skipped.
    The output is written to a temporary file next to ``dst`` and renamed over it only when every
    line converted, so a failure never leaves a partial or clobbered ``dst``. ``src`` and ``dst`` may
    be the same file. ``dst`` gets the permissions of the file it replaces, or a new file's (the
    umask applies: typically 0o644).

    Args:
        src: prompt/completion JSONL.
        dst: where to write the chat JSONL.
        system: optional system message put first in every example.

    Returns:
        The number of examples written.

    Raises:
        DataValidationError: some lines cannot be converted; the message names their lines and
            ``exc.issues`` lists them (``dst`` is untouched).
        OSError: ``src`` is not a readable regular file (a directory, a FIFO...), or ``dst``
            cannot be written (a full disk, a read-only folder); ``dst`` is untouched.
    """
    src_name, dst_name = os.fspath(src), os.fspath(dst)
    _check_inputs(src_name, system)
    with atomic_write(dst_name, prefix=".anytune-convert-", suffix=".jsonl.tmp") as fout:
        written, bad, issues = _convert(src_name, fout, system)
        if bad:
            raise _refuse(src_name, bad, issues, f"{dst_name} not written")
    return written


def convert_prompt_completion_to(src: str | os.PathLike[str], out: IO[bytes], *, system: str | None = None) -> int:
    """Like :func:`convert_prompt_completion`, writing the chat JSONL to the binary stream ``out``
    (standard output, a pipe). The result is held in a temporary file until every line converted,
    so a bad input writes nothing to ``out``.

    Raises:
        DataValidationError: some lines cannot be converted (nothing is written).
        OSError: ``src`` is not a readable regular file, or ``out`` cannot be written.
    """
    src_name = os.fspath(src)
    _check_inputs(src_name, system)
    with tempfile.TemporaryFile() as spool:
        written, bad, issues = _convert(src_name, spool, system)
        if bad:
            raise _refuse(src_name, bad, issues, "nothing written")
        spool.seek(0)
        shutil.copyfileobj(spool, out)
    out.flush()
    return written
