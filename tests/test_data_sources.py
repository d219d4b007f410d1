"""Local sources read as rows with a location a user can act on, and the pipeline from any source to
canonical JSONL: atomic writes, every bad row reported, validation told against the source.

Parquet and ``datasets`` folders are built in fixtures; their tests are skipped where pyarrow or
datasets is not installed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anytune._data import sources
from anytune._data.pipeline import LineMap, to_canonical, validate_source, write_canonical
from anytune._data.sources import BadRow, Location, first_row, open_source
from anytune._data.validate import DatasetRules, validate_file
from anytune.errors import AnytuneError, ConfigError, DataValidationError, MissingDependencyError
from tests.conftest import write_csv, write_jsonl

QA = [
    {"question": "What is 1 plus 1?", "answer": "2."},
    {"question": "What is 2 plus 2?", "answer": "4."},
    {"question": "What is 3 plus 3?", "answer": "6."},
]
PC = {"prompt": "question", "completion": "answer"}
EXPECTED = [
    {"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
    for r in QA
]


def _parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    return path


def _saved(path: Path, rows: list[dict[str, Any]]) -> Path:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def _saved_dict(path: Path, splits: dict[str, list[dict[str, Any]]]) -> Path:
    datasets = pytest.importorskip("datasets")
    parts = {name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path


# Each maker writes QA under tmp and returns the source and the location of each row.
Made = tuple[Path, list[str]]


def _make_jsonl(tmp: Path) -> Made:
    path = tmp / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in QA[:2]) + "\n\n" + json.dumps(QA[2]) + "\n", encoding="utf-8")
    return path, [f"{path}:line 1", f"{path}:line 2", f"{path}:line 4"]


def _make_ndjson(tmp: Path) -> Made:
    path = write_jsonl(tmp / "qa.ndjson", QA)
    return path, [f"{path}:line {i}" for i in (1, 2, 3)]


def _make_json_array(tmp: Path) -> Made:
    path = tmp / "qa.json"
    path.write_text(json.dumps(QA, indent=2), encoding="utf-8")
    return path, [f"{path}:row {i}" for i in (1, 2, 3)]


def _make_json_object(tmp: Path) -> Made:
    path = tmp / "qa.json"
    path.write_text(json.dumps({"version": 2, "data": QA}), encoding="utf-8")
    return path, [f"{path}:row {i}" for i in (1, 2, 3)]


def _make_json_columns(tmp: Path) -> Made:
    path = tmp / "qa.json"
    path.write_text(json.dumps({k: [r[k] for r in QA] for k in QA[0]}), encoding="utf-8")
    return path, [f"{path}:row {i}" for i in (1, 2, 3)]


def _make_csv(tmp: Path) -> Made:
    path = write_csv(tmp / "qa.csv", QA)
    return path, [f"{path}:row {i}" for i in (2, 3, 4)]


def _make_tsv(tmp: Path) -> Made:
    path = write_csv(tmp / "qa.tsv", QA, "\t")
    return path, [f"{path}:row {i}" for i in (2, 3, 4)]


def _make_parquet(tmp: Path) -> Made:
    path = _parquet(tmp / "qa.parquet", QA)  # two row groups: the count runs across them
    return path, [f"{path}:row {i}" for i in (1, 2, 3)]


def _make_saved(tmp: Path) -> Made:
    path = _saved(tmp / "saved", QA)
    return path, [f"{path}:row {i}" for i in (1, 2, 3)]


def _make_saved_dict(tmp: Path) -> Made:
    path = _saved_dict(tmp / "saved_dict", {"train": QA, "test": QA[:1]})
    return path, [f"{path / 'train'}:row {i}" for i in (1, 2, 3)]


def _make_folder(tmp: Path) -> Made:
    folder = tmp / "parts"
    folder.mkdir()
    write_csv(folder / "b.csv", QA[2:])
    write_csv(folder / "a.csv", QA[:2])
    (folder / ".hidden.csv").write_text("junk\n", encoding="utf-8")
    (folder / "README.md").write_text("# about\n", encoding="utf-8")
    return folder, [f"{folder / 'a.csv'}:row 2", f"{folder / 'a.csv'}:row 3", f"{folder / 'b.csv'}:row 2"]


MAKERS: dict[str, Callable[[Path], Made]] = {
    "jsonl": _make_jsonl,
    "ndjson": _make_ndjson,
    "json array": _make_json_array,
    "json object of records": _make_json_object,
    "json columns": _make_json_columns,
    "csv": _make_csv,
    "tsv": _make_tsv,
    "parquet": _make_parquet,
    "datasets folder": _make_saved,
    "datasets DatasetDict folder": _make_saved_dict,
    "folder of csv files": _make_folder,
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_every_source_reads_the_same_rows_with_their_locations(kind: str, tmp_path: Path) -> None:
    path, where = MAKERS[kind](tmp_path)
    rows = list(open_source(path).rows())
    assert [str(loc) for loc, _ in rows] == where
    assert [row for _, row in rows] == QA
    converted = list(to_canonical(path, columns=PC))
    assert [example for _, example in converted] == EXPECTED
    assert [str(loc) for loc, _ in converted] == where


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_write_canonical_maps_each_output_line_to_its_source_row(kind: str, tmp_path: Path) -> None:
    path, where = MAKERS[kind](tmp_path)
    out = tmp_path / "out" / "chat.jsonl"
    out.parent.mkdir()
    conversion = write_canonical(path, out, columns=PC)
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == EXPECTED
    assert conversion.examples == 3 and conversion.shape == "prompt_completion"
    assert [str(conversion.locations[i]) for i in (1, 2, 3)] == where
    assert sorted(p.name for p in out.parent.iterdir()) == ["chat.jsonl"]


def test_source_facts(tmp_path: Path) -> None:
    path, _ = _make_csv(tmp_path)
    src = open_source(path)
    assert (src.kind, src.name, src.files, src.size) == ("csv", str(path), (str(path),), path.stat().st_size)
    folder, _ = _make_folder(tmp_path)
    assert open_source(folder).files == (str(folder / "a.csv"), str(folder / "b.csv"))


def test_csv_rows_are_counted_as_a_spreadsheet_shows_them(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    # A quoted field spanning two lines is one row; a blank line is a (skipped) row; a BOM is not data.
    path.write_text('\ufeffprompt,completion\n"two\nlines",a\n\nx,"b, with a comma"\n', encoding="utf-8")
    rows = [(str(loc), row) for loc, row in open_source(path).rows()]
    assert rows == [
        (f"{path}:row 2", {"prompt": "two\nlines", "completion": "a"}),
        (f"{path}:row 4", {"prompt": "x", "completion": "b, with a comma"}),
    ]


def test_csv_fields_longer_than_the_csv_modules_default_limit(tmp_path: Path) -> None:
    long = "x" * 200_000
    path = write_csv(tmp_path / "long.csv", [{"prompt": long, "completion": "y"}])
    [(_, example)] = list(to_canonical(path))
    assert example["messages"][0]["content"] == long


def test_jsonl_bad_lines_are_rows_the_others_still_read(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"prompt": "p", "completion": "c"}\n{nope\n[1]\n{"prompt": "q", "completion": "d"}\n'
    )
    rows = list(open_source(path).rows())
    assert [str(loc) for loc, _ in rows] == [f"{path}:line {i}" for i in (1, 2, 3, 4)]
    assert isinstance(rows[1][1], BadRow) and rows[1][1].code == "bad_json"
    assert isinstance(rows[2][1], BadRow) and rows[2][1].code == "not_object"
    assert "got an array" in rows[2][1].message


def test_first_row_peeks_in_bounded_memory(tmp_path: Path) -> None:
    assert first_row(write_jsonl(tmp_path / "a.jsonl", [{"a": 1}, {"b": 2}])) == {"a": 1}
    blank_first = tmp_path / "b.jsonl"
    blank_first.write_text('\n  \n{"b": 2}', encoding="utf-8")
    assert first_row(blank_first) == {"b": 2}
    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps({"x": "y" * (sources.PEEK_BYTES + 10)}) + "\n", encoding="utf-8")
    assert first_row(huge) is None  # not read twice
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{nope\n", encoding="utf-8")
    assert first_row(broken) is None


def test_line_map_keeps_runs_not_rows() -> None:
    lines = LineMap()
    for n in range(1, 1001):
        lines.append(Location("a.csv", "row", n + 1))
    lines.append(Location("a.csv", "row", 1005))  # after skipped or bad rows
    lines.append(Location("b.csv", "row", 2))
    lines.append(Location("b.csv", "row", 3))
    assert len(lines) == 1003 and len(lines._runs) == 3
    assert str(lines[1]) == "a.csv:row 2" and str(lines[1000]) == "a.csv:row 1001"
    assert str(lines[1001]) == "a.csv:row 1005" and str(lines[1003]) == "b.csv:row 3"
    with pytest.raises(IndexError):
        lines[1004]
    with pytest.raises(IndexError):
        lines[0]


# -- bad input: each message names the file, the row or line, and the field ---------------------


def _refused(call: Callable[[], object]) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        call()
    return info.value


def test_mixed_shapes_name_the_row_and_both_shapes(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [{"instruction": "i", "output": "o"}, {"instruction": "j", "output": "p"}, {"messages": [{"role": "user"}]}],
    )
    out = tmp_path / "out.jsonl"
    error = _refused(lambda: write_canonical(path, out))
    assert error.headline == f"{path}: 1 line cannot be converted ({out} not written):"
    [issue] = error.issues
    assert issue.location == f"{path}:line 3" and issue.code == "mixed_shapes"
    assert "OpenAI chat (messages)" in issue.message and "Alpaca (instruction/input/output)" in issue.message
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["mixed.jsonl"]


def test_missing_mapped_column_names_row_field_and_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", [{"question": "q", "reply": "a"}])
    error = _refused(lambda: list(to_canonical(path, columns=PC)))
    assert str(error).startswith(f"a row cannot be converted: {path}:row 2: answer: column 'answer'")
    assert "its columns: question, reply" in str(error)


def test_template_field_absent_names_row_field_and_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", QA)
    error = _refused(lambda: write_canonical(path, tmp_path / "o.jsonl", text_template="Q: {question} A: {answr}"))
    assert len(error.issues) == 3 and "3 rows cannot be converted" in error.headline
    first = error.issues[0]
    assert (first.location, first.field, first.code) == (f"{path}:row 2", "answr", "missing_column")
    assert "{answr} is not a column" in first.message and "its columns: question, answer" in first.message
    assert not (tmp_path / "o.jsonl").exists()


def test_every_bad_row_is_counted_and_the_first_ones_listed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", [{"question": "q", "answer": ""}] * 2 + QA)
    (tmp_path / "qa.csv").write_text(path.read_text(encoding="utf-8") + "x\ny\nz\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    out.write_text("precious\n", encoding="utf-8")
    error = _refused(lambda: write_canonical(path, out, columns=PC, max_issues=2))
    assert "3 rows cannot be converted" in error.headline
    assert [i.location for i in error.issues] == [f"{path}:row 7", f"{path}:row 8"]
    assert error.issues[0].field == "answer" and error.issues[0].code == "ragged_row"
    assert out.read_text(encoding="utf-8") == "precious\n"


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("e.jsonl", "", "e.jsonl has no rows"),
        ("e.jsonl", "\n\n", "e.jsonl has no rows"),
        ("e.csv", "", "e.csv has no rows"),
        ("e.csv", "prompt,completion\n", "e.csv has no rows"),
        ("e.json", "[]", "e.json has no rows"),
    ],
)
def test_empty_sources(name: str, content: str, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert fragment in str(_refused(lambda: write_canonical(path, tmp_path / "o.jsonl")))
    assert fragment in str(_refused(lambda: list(to_canonical(path))))
    assert not (tmp_path / "o.jsonl").exists()


def test_empty_split(tmp_path: Path) -> None:
    path = _saved_dict(tmp_path / "dd", {"train": QA, "test": []})
    error = _refused(lambda: write_canonical(path, tmp_path / "o.jsonl", split="test"))
    assert str(error) == f"split 'test' of {path} is empty ({tmp_path / 'o.jsonl'} not written)"


def test_split_that_does_not_exist_lists_the_splits(tmp_path: Path) -> None:
    path = _saved_dict(tmp_path / "dd", {"validation": QA, "test": QA})
    with pytest.raises(ConfigError) as info:
        open_source(path)
    assert (
        str(info.value)
        == f"{path} has no split 'train'; its splits: validation, test (choose one with --split (split=))"
    )
    with pytest.raises(ConfigError, match="no split 'dev'; its splits: validation, test"):
        open_source(path, split="dev")
    assert [str(loc) for loc, _ in open_source(path, split="test").rows()] == [
        f"{path / 'test'}:row {i}" for i in (1, 2, 3)
    ]


@pytest.mark.parametrize(
    ("name", "ext"), [("data.txt", "extension '.txt'"), ("data", "no extension"), ("d.xlsx", "extension '.xlsx'")]
)
def test_unknown_extension_names_the_file_and_the_kinds_accepted(name: str, ext: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text('{"prompt": "p", "completion": "c"}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        write_canonical(path, tmp_path / "o.jsonl")
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read a file with {ext}; accepted: .jsonl or .ndjson")
    assert all(kind in message for kind in (".json", ".csv", ".tsv", ".parquet", "save_to_disk"))
    assert not (tmp_path / "o.jsonl").exists()


def test_csv_ragged_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("prompt,completion\na,b\nc\nd,e,f\n", encoding="utf-8")
    rows = list(open_source(path).rows())
    short, long = rows[1][1], rows[2][1]
    assert isinstance(short, BadRow) and isinstance(long, BadRow)
    assert str(rows[1][0]) == f"{path}:row 3" and short.field == "completion"
    assert short.message == "row has 1 field, the header has 2: column 'completion' is missing"
    assert str(rows[2][0]) == f"{path}:row 4" and long.field is None and "3 fields" in long.message
    error = _refused(lambda: write_canonical(path, tmp_path / "o.jsonl"))
    assert str(error.issues[0]) == (
        f"{path}:row 3: completion: row has 1 field, the header has 2: column 'completion' is missing"
    )


def test_csv_header_naming_a_column_twice(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("prompt,prompt\na,b\n", encoding="utf-8")
    assert (
        str(_refused(lambda: list(open_source(path).rows())))
        == f"{path}:row 1: column 'prompt' appears twice in the header"
    )


def test_csv_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("prompt,completion\nd\xe9j\xe0,vu\n".encode("latin-1"))
    assert f"{path}: not UTF-8 text (near row 2)" in str(_refused(lambda: list(open_source(path).rows())))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"a": 1, "b": "x"}', "a JSON object that holds no records; expected an array of records"),
        ('{"train": [{"a": 1}], "test": [{"a": 2}]}', "holds 2 arrays of records (train, test)"),
        ('{"prompt": ["a", "b"], "completion": ["c"]}', "columns have different lengths (prompt: 2, completion: 1)"),
        ('"just text"', "the JSON document is a string, not an array of records"),
        ('{"a": 1}\n{"a": 2}\n', "not valid JSON"),
    ],
)
def test_json_that_holds_no_records(content: str, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(content, encoding="utf-8")
    message = str(_refused(lambda: list(open_source(path).rows())))
    assert message.startswith(f"{path}: ") and fragment in message


def test_json_lines_named_json_says_so(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.json", QA)
    assert "it looks like JSON Lines (one object per line): name it .jsonl" in str(
        _refused(lambda: list(open_source(path).rows()))
    )


def test_json_array_items_that_are_not_objects(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"prompt": "p", "completion": "c"}, 3]), encoding="utf-8")
    error = _refused(lambda: write_canonical(path, tmp_path / "o.jsonl"))
    assert str(error.issues[0]) == f"{path}:row 2: each record must be a JSON object, got a number"


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"a.csv": "prompt,completion\np,c\n", "b.jsonl": "{}\n"}, "a folder mixing kinds of data files"),
        ({"notes.txt": "x"}, "a folder with no data files (found: notes.txt)"),
    ],
)
def test_folders_that_cannot_be_read(files: dict[str, str], fragment: str, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        open_source(folder)
    assert str(info.value).startswith(f"{folder}: {fragment}")


def test_an_empty_folder_is_refused_as_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        open_source(tmp_path, field="FILE")
    assert str(info.value) == f"field 'FILE': {tmp_path}: is a directory"


def test_split_asked_of_a_source_without_splits(tmp_path: Path) -> None:
    path, _ = _make_csv(tmp_path)
    with pytest.raises(ConfigError, match="a data file has no splits"):
        open_source(path, split="train")
    folder, _ = _make_folder(tmp_path)
    with pytest.raises(ConfigError, match="a folder of data files has no splits"):
        open_source(folder, split="train")


def test_not_a_parquet_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "bad.parquet"
    path.write_text("not parquet", encoding="utf-8")
    assert f"{path}: not a readable Parquet file" in str(_refused(lambda: list(open_source(path).rows())))


@pytest.mark.parametrize(
    ("module", "maker", "purpose"),
    [
        ("pyarrow", _make_parquet, "reading Parquet files"),
        ("datasets", _make_saved, "reading a folder saved by datasets"),
    ],
)
def test_a_missing_extra_names_the_install_command(
    module: str, maker: Callable[[Path], Made], purpose: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = maker(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError) as info:
        list(open_source(path).rows())
    assert info.value.extra == "data"
    assert str(info.value) == (
        f"{purpose} needs the '{module}' package, which is not installed. "
        'Install it with: pip install "anytune[data]"'
    )


def test_arrow_nulls_do_not_reach_the_examples(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "name": "bot"}]},
        {"messages": [{"role": "user", "content": "hey"}, {"role": "assistant", "content": "hello"}]},
    ]
    path = _parquet(tmp_path / "chat.parquet", rows)
    assert [example for _, example in to_canonical(path)] == rows


def test_unknown_first_row_lists_the_columns_and_the_options(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", QA)
    error = _refused(lambda: write_canonical(path, tmp_path / "o.jsonl"))
    assert error.headline == f"{path}: cannot tell the shape of its rows"
    [issue] = error.issues
    assert issue.location == f"{path}:row 2" and issue.code == "unknown_shape"
    assert "its columns (question, answer) match no known shape" in issue.message
    assert f"`anytune data convert {path} OUT --columns prompt=question,completion=answer`" in issue.message
    assert "--format" in issue.message and not (tmp_path / "o.jsonl").exists()


def test_conversion_reports_the_columns_it_did_not_read(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [{"id": "1", "instruction": "i", "input": "", "output": "o", "text": "t"}])
    conversion = write_canonical(path, tmp_path / "o.jsonl")
    assert conversion.shape == "alpaca" and conversion.unused_columns == ("id", "text")


def test_a_value_json_cannot_hold_is_a_bad_row(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"prompt": ["p"], "completion": ["c"], "metadata": pa.array([b"\xff"], pa.binary())})
    pq.write_table(table, tmp_path / "b.parquet")
    error = _refused(lambda: write_canonical(tmp_path / "b.parquet", tmp_path / "o.jsonl"))
    assert error.issues[0].code == "bad_value" and error.issues[0].location == f"{tmp_path / 'b.parquet'}:row 1"


# -- validation against the source ----------------------------------------------------------------


def test_validate_source_reports_issues_against_the_source_rows(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(12)]
    rows[4]["answer"] = " "
    path = write_csv(tmp_path / "qa.csv", rows)
    with path.open("a", encoding="utf-8") as f:
        f.write("only one field\n")
    result = validate_source(path, columns=PC)
    report = result.report
    assert result.shape == "prompt_completion" and report.file == str(path) and report.bytes == path.stat().st_size
    assert [(str(i), i.code) for i in report.issues] == [
        (f"{path}:row 6: messages[1].content: content is empty", "empty_content"),
        (f"{path}:row 14: answer: row has 1 field, the header has 2: column 'answer' is missing", "ragged_row"),
    ]
    assert report.errors == 2 and report.examples == 13 and report.valid_examples == 11
    dumped = report.model_dump(mode="json")["issues"][0]
    assert dumped["location"] == f"{path}:row 6" and dumped["line"] == 6 and dumped["file"] == str(path)


def test_validate_source_with_every_row_bad_is_not_called_empty(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("prompt,completion\nx\ny\n", encoding="utf-8")
    report = validate_source(path).report
    assert sorted(report.issue_counts) == ["ragged_row", "too_few_examples"]
    assert str(report.issues[-1]) == f"{path}: 0 valid examples; at least 10 required"


def test_validate_source_of_preference_data_for_sft_says_which_method(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pref.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3)
    error = _refused(lambda: validate_source(path))
    assert "reads as TRL preference (prompt/chosen/rejected), preference (DPO) data" in str(error)
    assert "--method dpo" in str(error)
    report = validate_source(path, DatasetRules(method="dpo", min_examples=3)).report
    assert report.ok and report.format == "preference"


def _qa_with_problems(tmp_path: Path, n: int = 600) -> Path:
    """A CSV of ``n`` question/answer rows, some bad at conversion (ragged) and some at validation
    (an empty answer, one too long), spread over every chunk the parallel tests cut."""
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}. " * (1 + i % 7)} for i in range(n)]
    for i in range(3, n, 97):
        rows[i]["answer"] = " "
    rows[n // 2]["answer"] = "long " * 400
    path = write_csv(tmp_path / "qa.csv", rows)
    text = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for k in range(len(text) - 1, 1, -151):
        text.insert(k, "a row with one field\n")
    path.write_text("".join(text), encoding="utf-8")
    return path


@pytest.fixture
def parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation with two worker processes and small chunks, whatever the file's size."""
    from anytune._data import _scan, validate

    monkeypatch.setattr(_scan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(_scan, "MIN_CHUNK_BYTES", 4096)
    monkeypatch.setattr(validate, "OVERLAP_CHUNK_BYTES", 4096)
    monkeypatch.setenv("ANYTUNE_DATA_WORKERS", "2")


@pytest.mark.parametrize("fork", [True, False], ids=["fork", "spawn"])
def test_validating_while_converting_reports_what_one_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    from anytune._data import _scan

    path = _qa_with_problems(tmp_path)
    rules = DatasetRules(provider="openai", model="gpt-4o-mini", max_tokens_per_example=300)
    single = validate_source(path, rules, columns=PC, max_issues=10_000).report
    assert single.workers == 1
    assert {"ragged_row", "empty_content", "too_many_tokens"} <= set(single.issue_counts)

    monkeypatch.setattr(_scan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(_scan, "MIN_CHUNK_BYTES", 4096)
    monkeypatch.setattr("anytune._data.validate.OVERLAP_CHUNK_BYTES", 4096)
    monkeypatch.setenv("ANYTUNE_DATA_WORKERS", "2")
    if not fork:
        monkeypatch.setattr(_scan, "fork_is_safe", lambda: False)
    multi = validate_source(path, rules, columns=PC, max_issues=10_000).report
    assert multi.workers == 2
    assert multi.model_dump(exclude={"seconds", "workers"}) == single.model_dump(exclude={"seconds", "workers"})
    first = min((i for i in multi.issues if i.code == "empty_content"), key=lambda i: i.line or 0)
    assert first.location == f"{path}:row 5"  # the header is row 1, so the fourth answer is row 5
    capped = validate_source(path, rules, columns=PC, max_issues=4).report
    assert capped.issues == single.issues[:4] and capped.issue_counts == single.issue_counts


def _killed(bounds: tuple[int, int]) -> object:
    os.kill(os.getpid(), signal.SIGKILL)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers inherit the patched task")
def test_a_worker_that_dies_fails_the_validation_instead_of_waiting_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: None
) -> None:
    import multiprocessing

    from anytune._data import _scan

    monkeypatch.setattr(_scan, "scan_chunk", _killed)  # what an out-of-memory kill does to a worker
    path = _qa_with_problems(tmp_path)
    chat = [{"role": "user", "content": "What is 1 plus 1?"}, {"role": "assistant", "content": "It is 2."}]
    canonical = write_jsonl(tmp_path / "c.jsonl", [{"messages": chat}] * 400)
    for run in (
        lambda: validate_source(path, columns=PC),
        lambda: validate_file(canonical),
    ):
        with pytest.raises(AnytuneError, match=r"validation worker process ended abruptly.*ANYTUNE_DATA_WORKERS=1"):
            run()
        assert multiprocessing.active_children() == []


def test_a_refused_validation_leaves_no_worker_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: None
) -> None:
    import multiprocessing

    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(400)]
    rows += [{"prompt": "p", "chosen": "a", "rejected": "b"}]  # another shape: a bad row
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(DataValidationError):
        validate_source(path, DatasetRules(method="dpo"), format="prompt-completion")
    assert multiprocessing.active_children() == []


# -- streaming ------------------------------------------------------------------------------------


def test_conversion_memory_does_not_grow_with_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "answer"])
        writer.writerows([f"question number {i} " * 3, f"answer {i}"] for i in range(40_000))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        conversion = write_canonical(path, tmp_path / "out.jsonl", columns=PC)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert conversion.examples == 40_000 and len(conversion.locations._runs) == 1
    assert peak < size / 4, (peak, size)


_RSS_GROWTH = """
import sys
from anytune._data.sources import open_source

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))

rows, early, peak = 0, 0, 0
for _ in open_source(sys.argv[1]).rows():
    rows += 1
    if rows % 1024 == 0:
        early = early or (rss_mib() if rows >= 40_960 else 0)
        peak = max(peak, rss_mib())
print(rows, early, peak)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_parquet_reading_memory_does_not_grow_with_the_rows(tmp_path: Path) -> None:
    # pyarrow's memory is not Python's (tracemalloc does not see it): the resident size of a process
    # reading 160,000 rows (~260 MB of Parquet, 80 row groups), once warmed up and at its peak.
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import random

    rng = random.Random(3)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(20_000)]

    def texts(median_words: float) -> list[str]:
        return [" ".join(rng.choices(words, k=int(rng.lognormvariate(median_words, 1)))) for _ in range(2000)]

    group = pa.table({"question": texts(3.8), "answer": texts(4.7)})
    path = tmp_path / "big.parquet"
    with pq.ParquetWriter(path, group.schema) as writer:
        for _ in range(80):
            writer.write_table(group)
    out = subprocess.run([sys.executable, "-c", _RSS_GROWTH, str(path)], capture_output=True, text=True, check=True)
    rows, early, peak = map(int, out.stdout.split())
    assert rows == 160_000 and path.stat().st_size > 200_000_000
    # Before: pyarrow's read-ahead cache kept what it fetched, and the peak grew by ~130 MiB here.
    assert peak - early < 50, (early, peak)


def test_reading_sources_imports_nothing_heavy() -> None:
    code = (
        "import anytune._data.pipeline, anytune._data.sources, anytune._data.shapes, sys, json; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert not [m for m in loaded if m.split(".")[0] in ("pyarrow", "datasets", "pandas")]
