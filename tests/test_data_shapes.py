"""Row shapes: detection, conversion into OpenAI chat / DPO, column mappings, templates, and the
messages that say what a row looks like and which option reads it. Pure functions, table-tested."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from anytune._data.shapes import (
    SHAPES,
    RowConverter,
    RowError,
    UnknownShapeError,
    describe_mismatch,
    detect_shape,
    is_canonical,
    parse_columns,
    split_text_template,
    template_fields,
)
from anytune._data.validate import DatasetRules, validate_file
from anytune.errors import ConfigError

U = {"role": "user", "content": "What is 1 plus 1?"}
A = {"role": "assistant", "content": "2."}
B = {"role": "assistant", "content": "3."}
S = {"role": "system", "content": "Be brief."}

# -- detection ------------------------------------------------------------------------------------

DETECT: list[tuple[dict[str, Any], str | None]] = [
    ({"messages": [U, A]}, "chat"),
    # UltraChat's columns: a prompt next to the conversation; the conversation wins.
    ({"prompt": "x", "prompt_id": "1", "messages": [U, A]}, "chat"),
    ({"input": {"messages": [U]}, "preferred_output": [A], "non_preferred_output": [B]}, "preference"),
    ({"prompt": "q", "chosen": "a", "rejected": "b"}, "trl_preference"),
    ({"chosen": [U, A], "rejected": [U, B]}, "trl_preference"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, "sharegpt"),
    ({"instruction": "i", "input": "x", "output": "o"}, "alpaca"),
    ({"instruction": "i", "output": "o"}, "alpaca"),
    ({"prompt": "p", "completion": "c"}, "prompt_completion"),
    ({"prompt": [U], "completion": [A]}, "prompt_completion"),
    # Arrow-backed sources fill absent columns with null: a null column is no column.
    ({"messages": None, "prompt": "p", "completion": "c"}, "prompt_completion"),
    ({"instruction": "i", "output": None, "text": "t"}, None),
    ({"question": "q", "answer": "a"}, None),
    ({"prompt": "only a prompt"}, None),
    ({}, None),
]


@pytest.mark.parametrize(("row", "shape"), DETECT)
def test_detect_shape(row: dict[str, Any], shape: str | None) -> None:
    assert detect_shape(row) == shape


@pytest.mark.parametrize(
    ("row", "shape", "canonical"),
    [
        ({"messages": [U, A]}, "chat", True),
        ({"input": {"messages": [U]}, "preferred_output": [A]}, "preference", True),
        ({"prompt": "p", "completion": "c"}, "prompt_completion", True),
        ({"prompt": 1, "completion": "c"}, "prompt_completion", True),  # the validator says what is wrong
        ({"prompt": [U], "completion": [A]}, "prompt_completion", False),
        ({"instruction": "i", "output": "o"}, "alpaca", False),
    ],
)
def test_is_canonical(row: dict[str, Any], shape: Any, canonical: bool) -> None:
    assert is_canonical(row, shape) is canonical


# -- conversion -----------------------------------------------------------------------------------

CONVERT: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    # (case, converter options, row, canonical example)
    ("chat as is", {}, {"messages": [U, A]}, {"messages": [U, A]}),
    (
        "chat: nulls Arrow added dropped, tools kept, other columns dropped",
        {},
        {"messages": [{**U, "name": None}, {**A, "tool_calls": None}], "tools": None, "id": 7, "metadata": {"k": 1}},
        {"messages": [U, A], "metadata": {"k": 1}},
    ),
    ("chat + system", {"system": "Be brief."}, {"messages": [U, A]}, {"messages": [S, U, A]}),
    ("chat with its own system", {"system": "Other."}, {"messages": [S, U, A]}, {"messages": [S, U, A]}),
    (
        "OpenAI DPO as is",
        {},
        {"input": {"messages": [U], "tools": None}, "preferred_output": [A], "non_preferred_output": [B]},
        {"input": {"messages": [U]}, "preferred_output": [A], "non_preferred_output": [B]},
    ),
    (
        "prompt/completion text",
        {"system": "Be brief."},
        {"prompt": U["content"], "completion": A["content"], "metadata": {"id": 1}},
        {"messages": [S, U, A], "metadata": {"id": 1}},
    ),
    ("prompt/completion messages (TRL)", {}, {"prompt": [S, U], "completion": [A]}, {"messages": [S, U, A]}),
    (
        "TRL preference, explicit text prompt",
        {},
        {"prompt": U["content"], "chosen": A["content"], "rejected": B["content"]},
        {"input": {"messages": [U]}, "preferred_output": [A], "non_preferred_output": [B]},
    ),
    (
        "TRL preference, explicit conversational prompt",
        {"system": "Be brief."},
        {"prompt": [U], "chosen": [A], "rejected": [B]},
        {"input": {"messages": [S, U]}, "preferred_output": [A], "non_preferred_output": [B]},
    ),
    (
        "TRL preference, implicit prompt: the shared prefix",
        {},
        {"chosen": [S, U, A, U, A], "rejected": [S, U, A, U, B]},
        {"input": {"messages": [S, U, A, U]}, "preferred_output": [A], "non_preferred_output": [B]},
    ),
    (
        "Alpaca with input",
        {},
        {"instruction": "Add the numbers.", "input": "1 and 1", "output": "2"},
        {
            "messages": [
                {"role": "user", "content": "Add the numbers.\n\n1 and 1"},
                {"role": "assistant", "content": "2"},
            ]
        },
    ),
    (
        "Alpaca, empty input",
        {"system": "Be brief."},
        {"instruction": "Say hi.", "input": "", "output": "hi", "text": "ignored"},
        {"messages": [S, {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]},
    ),
    (
        "Alpaca, no input column",
        {},
        {"instruction": "Say hi.", "output": "hi"},
        {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]},
    ),
    (
        "ShareGPT",
        {},
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": U["content"]},
                {"from": "gpt", "value": A["content"]},
                {"from": "user", "value": "And 1 plus 2?"},
                {"from": "assistant", "value": "3."},
            ]
        },
        {"messages": [S, U, A, {"role": "user", "content": "And 1 plus 2?"}, B]},
    ),
    (
        "columns mapping to prompt/completion",
        {"columns": {"prompt": "question", "completion": "answer"}},
        {"question": U["content"], "answer": A["content"], "id": "x"},
        {"messages": [U, A]},
    ),
    (
        "columns mapping renames another shape's fields",
        {"columns": {"instruction": "q", "output": "a"}, "format": "alpaca"},
        {"q": "Say hi.", "a": "hi"},
        {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]},
    ),
    (
        "columns mapping may swap names",
        {"columns": {"prompt": "completion", "completion": "prompt"}},
        {"prompt": A["content"], "completion": U["content"]},
        {"messages": [U, A]},
    ),
    (
        "prompt and completion templates",
        {"prompt_template": "Q: {question} ({topic})", "completion_template": "{answer}!"},
        {"question": "1+1?", "topic": "sums", "answer": "2"},
        {"messages": [{"role": "user", "content": "Q: 1+1? (sums)"}, {"role": "assistant", "content": "2!"}]},
    ),
    (
        "a prompt template, the completion from its column",
        {"prompt_template": "Q: {question}", "columns": {"completion": "answer"}},
        {"question": "1+1?", "answer": "2"},
        {"messages": [{"role": "user", "content": "Q: 1+1?"}, {"role": "assistant", "content": "2"}]},
    ),
    (
        "Olive's text template: the completion is the last field onward",
        {"text_template": "### Question: {prompt} ### Answer: {response}"},
        {"prompt": "1+1?", "response": "2"},
        {
            "messages": [
                {"role": "user", "content": "### Question: 1+1? ### Answer: "},
                {"role": "assistant", "content": "2"},
            ]
        },
    ),
    (
        "a text template whose only field opens it: all of it is learned",
        {"text_template": "{text}", "system": "Be brief."},
        {"text": "Once upon a time."},
        {"messages": [S, {"role": "assistant", "content": "Once upon a time."}]},
    ),
    (
        "numbers from Parquet fill templates",
        {"text_template": "{a} plus {b} is {total:d}."},
        {"a": 1, "b": 1, "total": 2},
        {"messages": [{"role": "user", "content": "1 plus 1 is "}, {"role": "assistant", "content": "2."}]},
    ),
]


@pytest.mark.parametrize(("case", "options", "row", "expected"), CONVERT, ids=[c[0] for c in CONVERT])
def test_convert(case: str, options: dict[str, Any], row: dict[str, Any], expected: dict[str, Any]) -> None:
    assert RowConverter(**options)(row) == expected


def test_every_shape_converts_to_what_the_validator_accepts(tmp_path: Path) -> None:
    by_method: dict[str, list[dict[str, Any]]] = {"sft": [], "dpo": []}
    for _, options, row, _ in CONVERT:
        converter = RowConverter(**options)
        example = converter(row)
        assert converter.method is not None
        by_method[converter.method].append(example)
    assert len(by_method["dpo"]) == 4
    for method, examples in by_method.items():
        path = tmp_path / f"{method}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
        report = validate_file(path, DatasetRules(method=method, min_examples=0))
        assert report.ok and report.warnings == 0, [str(i) for i in report.issues]


def test_the_shape_table_covers_every_shape_once() -> None:
    assert list(SHAPES) == ["chat", "preference", "trl_preference", "sharegpt", "alpaca", "prompt_completion"]
    assert {info.method for info in SHAPES.values()} == {"sft", "dpo"}
    assert all(info.name == name for name, info in SHAPES.items())


# -- rows that cannot be converted ----------------------------------------------------------------

BAD: list[tuple[str, dict[str, Any], dict[str, Any], str, str | None, tuple[str, ...]]] = [
    # (case, options, row, code, field, fragments of the message)
    (
        "text prompt, message-list completion",
        {},
        {"prompt": "p", "completion": [A]},
        "bad_value",
        "completion",
        ("both be text or both be message lists", "prompt as text", "completion as a list"),
    ),
    (
        "TRL implicit prompt with text answers",
        {},
        {"chosen": "a", "rejected": "b", "id": 1},
        "missing_column",
        "prompt",
        ("prompt cannot be told apart", "--columns prompt=COL", "columns: chosen, rejected, id"),
    ),
    (
        "TRL implicit prompt sharing nothing",
        {},
        {"chosen": [U, A], "rejected": [S, U, B]},
        "bad_value",
        "chosen[0]",
        ("share no prompt",),
    ),
    (
        "TRL implicit prompt, identical conversations",
        {},
        {"chosen": [U, A], "rejected": [U, A]},
        "bad_value",
        "rejected",
        ("do not differ",),
    ),
    (
        "ShareGPT speaker",
        {},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]},
        "unknown_role",
        "conversations[1].from",
        ("unknown speaker 'bot'", "human, user, gpt, assistant, system"),
    ),
    (
        "ShareGPT value",
        {},
        {"conversations": [{"from": "human", "value": None}]},
        "bad_value",
        "conversations[0].value",
        ("value must be text, got null",),
    ),
    ("Alpaca output", {}, {"instruction": "i", "output": 3}, "bad_value", "output", ("output must be text",)),
    (
        "mapped column absent",
        {"columns": {"prompt": "question", "completion": "answer"}},
        {"question": "q", "reply": "a"},
        "missing_column",
        "answer",
        ("column 'answer' (mapped to completion) is not in this row", "its columns: question, reply"),
    ),
    (
        "template field absent",
        {"prompt_template": "Q: {question}", "completion_template": "{answr}"},
        {"question": "q", "answer": "a"},
        "missing_column",
        "answr",
        ("completion_template field {answr} is not a column", "its columns: question, answer"),
    ),
    (
        "text template field null",
        {"text_template": "Q: {question} A: {answer}"},
        {"question": "q", "answer": None},
        "missing_column",
        "answer",
        ("text_template field {answer} is null",),
    ),
    (
        "template format spec that does not fit the value",
        {"text_template": "{q} {a:d}"},
        {"q": "x", "a": "not a number"},
        "template_error",
        None,
        ("text_template cannot be filled",),
    ),
    (
        "no template and no column for the other side",
        {"prompt_template": "Q: {question}"},
        {"question": "q", "answer": "a"},
        "missing_column",
        "completion",
        ("no completion_template and no completion column", "columns: question, answer"),
    ),
    (
        "explicit format, a row of another known shape",
        {"format": "alpaca"},
        {"messages": [U, A]},
        "mixed_shapes",
        None,
        ("this row is OpenAI chat (messages)", "read as Alpaca (instruction/input/output)"),
    ),
    (
        "explicit format, a row of no known shape",
        {"format": "alpaca"},
        {"question": "q", "answer": "a"},
        "missing_column",
        "instruction",
        ("not Alpaca (instruction/input/output)", "'instruction' is missing", "columns: question, answer"),
    ),
]


@pytest.mark.parametrize(("case", "options", "row", "code", "field", "fragments"), BAD, ids=[c[0] for c in BAD])
def test_bad_rows(
    case: str, options: dict[str, Any], row: dict[str, Any], code: str, field: str | None, fragments: tuple[str, ...]
) -> None:
    with pytest.raises(RowError) as info:
        RowConverter(**options)(row)
    assert (info.value.code, info.value.field) == (code, field), info.value.message
    for fragment in fragments:
        assert fragment in info.value.message


def test_auto_takes_the_first_rows_shape_and_refuses_a_mix() -> None:
    convert = RowConverter()
    convert({"instruction": "i", "output": "o"})
    assert convert.shape == "alpaca" and convert.method == "sft"
    convert({"instruction": "j", "input": "x", "output": "p"})
    with pytest.raises(RowError) as info:
        convert({"messages": [U, A]})
    assert info.value.code == "mixed_shapes"
    assert "OpenAI chat (messages)" in info.value.message and "Alpaca (instruction/input/output)" in info.value.message


def test_auto_refuses_a_first_row_of_no_known_shape_and_says_what_reads_it() -> None:
    with pytest.raises(UnknownShapeError) as info:
        RowConverter()({"question": "q", "answer": "a", "id": 1})
    message = info.value.message
    assert "its columns (question, answer, id) match no known shape" in message
    assert "--columns prompt=question,completion=answer" in message and "--format" in message


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field", "fragment"),
    [
        ({"text_template": "{a}", "prompt_template": "{b}"}, "text_template", "not both"),
        ({"text_template": "{a}", "format": "alpaca"}, "format", "templates build prompt/completion rows"),
        ({"system": "  "}, "system", "empty"),
        ({"format": "jsonl"}, "format", "expected one of auto, chat, prompt_completion"),
        ({"text_template": "Q: {question"}, "text_template", "not a valid template"),
        ({"prompt_template": "Q: {}", "completion_template": "{a}"}, "prompt_template", "must name columns"),
        ({"completion_template": "{0}"}, "completion_template", "must name columns"),
        ({"text_template": "no fields at all"}, "text_template", "has no {field}"),
        ({"columns": {"prompt": ""}}, "columns", "maps field names to column names"),
    ],
)
def test_options_that_do_not_fit_are_refused_before_any_row(options: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        RowConverter(**options)
    assert info.value.field == field and fragment in str(info.value)


def test_format_names_are_forgiving() -> None:
    assert RowConverter("Prompt-Completion").shape == "prompt_completion"
    assert RowConverter(" ALPACA ").shape == "alpaca"


@pytest.mark.parametrize(
    ("text", "mapping"),
    [
        ("prompt=question,completion=answer", {"prompt": "question", "completion": "answer"}),
        (" prompt = q , completion=a ", {"prompt": "q", "completion": "a"}),
        ("instruction=my col", {"instruction": "my col"}),
    ],
)
def test_parse_columns(text: str, mapping: dict[str, str]) -> None:
    assert parse_columns(text) == mapping


@pytest.mark.parametrize("text", ["prompt", "prompt=", "=q", "prompt=q,,completion=a", "prompt=a,prompt=b"])
def test_parse_columns_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_columns(text)
    assert info.value.field == "columns"


# -- templates ------------------------------------------------------------------------------------

SPLITS = [
    ("### Question: {prompt} ### Answer: {response}", "### Question: {prompt} ### Answer: ", "{response}"),
    ("{prompt}\n\nAnswer: {response}\n", "{prompt}\n\nAnswer: ", "{response}\n"),
    ("{text}", "", "{text}"),
    ("Answer: {response}", "Answer: ", "{response}"),
    # The last field decides, whatever the literal text around it; escaped braces stay escaped.
    ("Q {{x}}: {q!r} A: {a[0]} ({a[1]:>3})", "Q {{x}}: {q!r} A: {a[0]} (", "{a[1]:>3})"),
]


@pytest.mark.parametrize(("template", "head", "tail"), SPLITS)
def test_split_text_template(template: str, head: str, tail: str) -> None:
    assert split_text_template(template) == (head, tail)


@pytest.mark.parametrize("template", [t for t, _, _ in SPLITS])
def test_split_parts_rejoin_into_the_whole_text(template: str) -> None:
    row = {"prompt": "p{x}", "response": "r}", "text": "t", "q": "q", "a": ["a0", "a1"]}
    head, tail = split_text_template(template)
    assert head.format_map(row) + tail.format_map(row) == template.format_map(row)


def test_template_fields() -> None:
    assert template_fields("{a} {b.c} {d[0]} {a} {{e}}") == ["a", "b", "d"]


def test_used_columns() -> None:
    convert = RowConverter(columns={"prompt": "question"}, completion_template="{answer} ({why})")
    assert convert.used_columns() == {"question", "answer", "why", "metadata"}
    alpaca = RowConverter()
    alpaca({"instruction": "i", "output": "o", "text": "t"})
    assert alpaca.used_columns() == {"instruction", "input", "output"}


# -- explaining a mismatch ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "wanted", "expected"),
    [
        (
            {"instruction": "i", "input": "", "output": "o"},
            "chat",
            "this looks like Alpaca (instruction/input/output), not OpenAI chat (messages): use --format alpaca, "
            "or `anytune data convert data.jsonl OUT --format alpaca`",
        ),
        (
            {"conversations": []},
            "chat",
            "this looks like ShareGPT (conversations of from/value), not OpenAI chat (messages): use --format "
            "sharegpt, or `anytune data convert data.jsonl OUT --format sharegpt`",
        ),
        (
            {"prompt": "q", "chosen": "a", "rejected": "b"},
            "preference",
            "this looks like TRL preference (prompt/chosen/rejected), not OpenAI DPO "
            "(input/preferred_output/non_preferred_output): use --format trl_preference, or `anytune data convert "
            "data.jsonl OUT --format trl_preference`",
        ),
        ({"messages": []}, "chat", None),
    ],
)
def test_describe_mismatch(row: dict[str, Any], wanted: Any, expected: str | None) -> None:
    assert describe_mismatch(row, wanted, source="data.jsonl") == expected


def test_describe_mismatch_of_unknown_columns_names_the_mapping() -> None:
    message = describe_mismatch({"Question": "q", "Response": "a"}, "chat", source="qa.jsonl")
    assert message is not None
    assert message.startswith("this is not OpenAI chat (messages): its columns (Question, Response)")
    assert "`anytune data convert qa.jsonl OUT --columns prompt=Question,completion=Response`" in message
    generic = describe_mismatch({"x": 1, "y": 2}, "chat")
    assert generic is not None and "--columns prompt=COL,completion=COL" in generic and "--template" in generic
