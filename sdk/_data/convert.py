"""Conversions into the canonical chat JSONL format."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

import orjson

from anytune._data._scan import deep_issue
from anytune._data.formats import prompt_completion_messages
from anytune.errors import DataValidationError

__all__ = ["convert_prompt_completion"]

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


def convert_prompt_completion(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, system: str | None = None
) -> int:
    """Convert ``{"prompt", "completion"}`` JSONL into chat JSONL.

    Each line becomes ``{"messages": [system?, {"role": "user", "content": prompt},
    {"role": "assistant", "content": completion}]}`` (``metadata`` is kept). Blank lines are skipped.
    The output is written to a temporary file next to ``dst`` and renamed over it only when every
    line converted, so a failure never leaves a partial or clobbered ``dst``. ``src`` and ``dst`` may
    be the same file.

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
    from anytune._data.validate import ValidationIssue, regular_file_size

    src_name, dst_name = os.fspath(src), os.fspath(dst)
    if system is not None and (not system or system.isspace()):
        raise DataValidationError("convert_prompt_completion: system message is empty")
    regular_file_size(src_name)  # a directory, FIFO or device is refused before anything is written
    issues: list[ValidationIssue] = []
    bad = 0
    written = 0
    folder = os.path.dirname(os.path.abspath(dst_name))
    fd, tmp = tempfile.mkstemp(prefix=".anytune-convert-", suffix=".jsonl.tmp", dir=folder)
    try:
        with open(src_name, "rb") as fin, os.fdopen(fd, "wb") as fout:
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
                            issues.append(
                                ValidationIssue(file=src_name, line=ln, field=where, code=code, message=message)
                            )
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
            if not bad:
                fout.flush()
                os.fsync(fout.fileno())
        if bad:
            shown = "\n".join(f"  {issue}" for issue in issues[:5])
            raise DataValidationError(
                f"{src_name}: {bad} line{'s' if bad != 1 else ''} cannot be converted to chat format "
                f"({dst_name} not written):\n{shown}",
                issues,
            )
        os.replace(tmp, dst_name)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # A failed write (a full disk) names no file: name the one being written.
            raise OSError(exc.errno, exc.strerror, dst_name) from exc
        raise
    return written
