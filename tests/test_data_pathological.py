"""Pathological datasets stay bounded: deep nesting is an issue (not a crash), a huge line is read
once and by one byte range only, and runs of blank lines cost no per-line parsing."""

from __future__ import annotations

import io
import itertools
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from anytune import DataValidationError, FineTuneJob
from anytune._data import _scan
from anytune._data.convert import convert_prompt_completion
from anytune._data.validate import DatasetRules, check_dataset, validate_file
from tests.clitools import fake_jobs, jobs_in_store, run_cli

ONE = DatasetRules(min_examples=1)
GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _deep_json(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _call(arguments: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
        ]
    }


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- deep nesting ---------------------------------------------------------------------------------

ARGS = "messages[1].tool_calls[0].function.arguments"


DEEP = "__deep__"


def _dumps(example: dict[str, Any], depth: int = 500) -> str:
    """``example`` as a JSON line, its ``"__deep__"`` string replaced by arrays ``depth`` levels deep.

    Written as text: the test process keeps its default recursion limit, as a user's does.
    """
    return json.dumps(example).replace(json.dumps(DEEP), _deep_json(depth))


def _deep_lines() -> list[tuple[str, str]]:
    """(line, field it must name): each nested a few hundred levels somewhere else."""
    tools = dict(GOOD, tools=[{"type": "function", "function": {"name": "f", "parameters": {"p": DEEP}}}])
    return [
        (_dumps(_call({"location": DEEP})), ARGS),
        (json.dumps(_call(_deep_json(500))), ARGS),  # valid OpenAI shape: arguments is a JSON string
        (_dumps(tools), "tools[0].function.parameters"),
        (_dumps(dict(GOOD, metadata={"a": DEEP})), "metadata"),
        (_dumps({"messages": [{"role": "user", "content": [DEEP]}, GOOD["messages"][1]]}), "messages[0].content[0]"),
    ]


def test_deep_nesting_is_one_issue_with_line_and_field(tmp_path: Path) -> None:
    cases = _deep_lines()
    lines = [json.dumps(GOOD)]
    for line, _ in cases:
        lines += [line, json.dumps(GOOD)]
    report = validate_file(_write(tmp_path / "deep.jsonl", lines), ONE)
    got = [(i.line, i.field, i.code) for i in report.issues]
    assert got == [(2 + 2 * k, field, "too_deep") for k, (_, field) in enumerate(cases)], got
    # The run went on: every other line was checked and counted.
    assert report.examples == len(lines) and report.valid_examples == len(cases) + 1
    # ... and counted: the example whose arguments string is too deep still has its tokens.
    assert report.tokens is not None and report.tokens.examples == len(cases) + 2
    assert "64 levels" in report.issues[0].message


def test_depth_limit_is_exact(tmp_path: Path) -> None:
    # The example object is level 1, its "metadata" value level 2: MAX_DEPTH - 1 arrays fit.
    ok = dict(GOOD, metadata=_nested(_scan.MAX_DEPTH - 1))
    deep = dict(GOOD, metadata=_nested(_scan.MAX_DEPTH))
    args_ok = _call(_deep_json(_scan.MAX_DEPTH))  # the parsed arguments are level 1 themselves
    args_deep = _call(_deep_json(_scan.MAX_DEPTH + 1))
    report = validate_file(_write(tmp_path / "d.jsonl", [json.dumps(x) for x in (ok, deep, args_ok, args_deep)]), ONE)
    assert [(i.line, i.field, i.code) for i in report.issues] == [(2, "metadata", "too_deep"), (4, ARGS, "too_deep")]


def test_deep_path_is_iterative() -> None:
    value = _nested(100_000)  # far beyond the interpreter's recursion limit
    path = _scan.deep_path({"metadata": value}, 64)
    assert path is not None and len(path) == 64 and path[0] == "metadata"
    assert _scan.deep_path({"metadata": value}, 200_000) is None
    assert _scan.deep_field(["messages", 1, "tool_calls", 0, "function", "arguments", 0, 0]) == ARGS
    assert _scan.deep_field(["metadata", "messages", 0]) == "metadata"
    assert _scan.deep_field(["labels", 0, 0]) == "labels"


def test_beyond_the_parser_limit_is_bad_json(tmp_path: Path) -> None:
    line = '{"messages": ' + _deep_json(5000) + "}"
    report = validate_file(_write(tmp_path / "d.jsonl", [line, json.dumps(GOOD)]), ONE)
    assert [(i.line, i.code) for i in report.issues] == [(1, "bad_json")]


def test_deep_nesting_through_check_dataset_cli_and_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], anytune_home: Path
) -> None:
    path = _write(tmp_path / "deep.jsonl", [json.dumps(GOOD)] * 3 + [_deep_lines()[0][0]] + [json.dumps(GOOD)] * 8)
    where = f"{path}:4: {ARGS}:"
    with pytest.raises(DataValidationError) as info:
        check_dataset(path)
    assert where in str(info.value)
    assert [(i.line, i.field, i.code) for i in info.value.issues] == [(4, ARGS, "too_deep")]

    result = run_cli(capsys, "data", "validate", str(path))
    assert result.code == 3, result.err
    assert where in result.err and "Traceback" not in result.err + result.out

    with pytest.raises(DataValidationError) as info:
        FineTuneJob.create(provider="fake", base_model="tiny", training_file=path, fake={"seconds": 0.1})
    assert where in str(info.value)
    assert jobs_in_store(anytune_home) == 0 and fake_jobs(anytune_home) == 0


def test_convert_rejects_deep_metadata(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "pc.jsonl",
        [json.dumps({"prompt": "p", "completion": "c"}), _dumps({"prompt": "p", "completion": "c", "metadata": DEEP})],
    )
    dst = tmp_path / "chat.jsonl"
    with pytest.raises(DataValidationError) as info:
        convert_prompt_completion(src, dst)
    assert [(i.line, i.field, i.code) for i in info.value.issues] == [(2, "metadata", "too_deep")]
    assert not dst.exists()


# --- byte ranges: bounded reads ---------------------------------------------------------------------


class Recording(io.RawIOBase):
    """A binary file that records the size of every read and readline it answers."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)
        self.sizes: list[int] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, n: int | None = -1) -> bytes:
        out = self._f.read(n)
        self.sizes.append(len(out))
        return out

    def readline(self, n: int | None = -1) -> bytes:
        out = self._f.readline(n)
        self.sizes.append(len(out))
        return out

    def readinto(self, b: Any) -> int:
        out = self.read(len(b))
        b[: len(out)] = out
        return len(out)

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


@pytest.mark.parametrize("final_newline", [True, False])
def test_a_long_line_is_read_once_by_one_range(monkeypatch: pytest.MonkeyPatch, final_newline: bool) -> None:
    block = 64
    monkeypatch.setattr(_scan, "READ_BLOCK", block, raising=False)
    long = b'{"messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}\n'
    short = [b'{"n": %d}\n' % i for i in range(40)]
    data = b"".join(short[:20]) + long + b"".join(short[20:])
    if not final_newline:
        data = b"".join(short[:20]) + long.rstrip(b"\n")
    expected = data.splitlines(keepends=True)
    for n in (1, 2, 3, 7, 40, 200):
        bounds = [len(data) * k // n for k in range(n + 1)]
        got: list[bytes] = []
        big_reads = 0
        for a, b in itertools.pairwise(bounds):
            f = Recording(data)
            got.extend(_scan.iter_range(f, a, b))
            # Only the range owning the long line reads more than a block, and only that line, once.
            large = [s for s in f.sizes if s > block]
            assert large in ([], [len(long) - (not final_newline)]), (n, a, f.sizes)
            big_reads += len(large)
            # A range reads about its own bytes plus the line it owns: never the rest of the file.
            owned = 2 * len(long) if large else 0
            assert sum(f.sizes) <= 2 * (b - a) + owned + 3 * block, (n, a, f.sizes)
        assert got == expected, n
        assert big_reads == 1, n


def test_plan_chunks_cover_the_file_once() -> None:
    for size, workers in ((10, 4), (50 * 1024 * 1024, 8), (3 * 1024 * 1024 + 7, 2)):
        chunks = _scan.plan_chunks(size, workers)
        assert chunks[0][0] == 0 and chunks[-1][1] == size
        assert all(a < b for a, b in chunks)
        assert all(x[1] == y[0] for x, y in itertools.pairwise(chunks))


def test_parallel_scan_of_a_long_line_equals_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scan, "READ_BLOCK", 1024, raising=False)
    long = dict(GOOD, messages=[{"role": "user", "content": "word " * 20_000}, GOOD["messages"][1]])
    lines = [json.dumps(GOOD)] * 50 + [json.dumps(long)] + [json.dumps(GOOD), "", "{broken"] * 30
    path = _write(tmp_path / "long.jsonl", lines)
    single = validate_file(path, ONE)
    monkeypatch.setattr(_scan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(_scan, "MIN_CHUNK_BYTES", 4096)
    monkeypatch.setenv("ANYTUNE_DATA_WORKERS", "2")
    multi = validate_file(path, ONE)
    assert multi.workers == 2
    assert multi.model_dump(exclude={"seconds", "workers"}) == single.model_dump(exclude={"seconds", "workers"})
    assert single.examples == 111 and single.issue_counts == {"blank_line": 30, "bad_json": 30}


# --- blank lines in bulk ----------------------------------------------------------------------------


def test_runs_of_blank_lines_are_not_parsed_line_by_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blanks = ["", "  ", "\t", "\r", ""] * 400  # 2000 blank lines, whitespace-only ones included
    lines = [json.dumps(GOOD), *blanks, json.dumps(GOOD), *blanks[:10], "{broken", json.dumps(GOOD)]
    path = _write(tmp_path / "blank.jsonl", lines)
    calls = 0
    real = orjson.loads

    def counting(raw: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(raw)

    monkeypatch.setattr(orjson, "loads", counting)
    report = validate_file(path, ONE, max_issues=5)
    monkeypatch.undo()
    # One parse per example, one per run of blank lines (the first of the run).
    assert calls <= 4 + 2, calls
    assert report.issue_counts == {"blank_line": 2010, "bad_json": 1}
    assert report.warnings == 2010 and report.errors == 1 and report.examples == 4
    assert [i.line for i in report.issues] == [2, 3, 4, 5, 6]
    full = validate_file(path, ONE, max_issues=10_000)
    assert [i.line for i in full.issues if i.code == "bad_json"] == [len(lines) - 1]
    assert [i.line for i in full.issues if i.code == "blank_line"] == [
        n for n, text in enumerate(lines, 1) if not text.strip()
    ]


def test_blank_runs_across_blocks_and_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scan, "READ_BLOCK", 256, raising=False)
    lines = [json.dumps(GOOD)] + [""] * 3000 + [json.dumps(GOOD)] + ["   "] * 1000 + [json.dumps(GOOD)]
    path = _write(tmp_path / "b.jsonl", lines)
    size = os.path.getsize(path)
    config = _scan.ScanConfig(max_issues=0)
    for n in (1, 3, 17):
        total = _scan.ChunkResult()
        bounds = [size * k // n for k in range(n + 1)]
        for a, b in itertools.pairwise(bounds):
            res = _scan.scan_range(str(path), a, b, config, len)
            total.lines += res.lines
            total.examples += res.examples
            total.warnings += res.warnings
        assert (total.lines, total.examples, total.warnings) == (len(lines), 3, 4000), n
