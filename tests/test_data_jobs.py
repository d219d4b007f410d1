"""Jobs train on any source: a ``data`` section, or a training_file in another shape, becomes the
canonical JSONL the provider receives, converted once into the cache under the anytune home; the
store keeps the spec as the user gave it; bad rows are named by source row and field before
anything is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from anytune import ConfigError, DataValidationError, FineTuneJob, JobSpec, JobStore
from anytune.providers.fake import FakeProvider
from tests.clitools import jobs_in_store, run_cli
from tests.conftest import FakeClock, write_csv, write_jsonl
from tests.hubdata import serve_hub_datasets

TEMPLATE = "### Question: {question} ### Answer: {answer}"


def qa_rows(n: int = 12, start: int = 0) -> list[dict[str, str]]:
    return [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."} for i in range(start, start + n)]


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the fake provider's submit received: the spec and the lines of each data file."""
    seen: list[dict[str, Any]] = []
    real = FakeProvider.submit

    def submit(self: FakeProvider, spec: JobSpec, *, idempotency_key: str) -> Any:
        files = {"training_file": spec.training_file, "validation_file": spec.validation_file}
        seen.append(
            {
                "spec": spec,
                **{
                    role: [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
                    for role, path in files.items()
                    if path is not None
                },
            }
        )
        return real(self, spec, idempotency_key=idempotency_key)

    monkeypatch.setattr(FakeProvider, "submit", submit)
    return seen


def stored_spec(home: Path, ref: str) -> dict[str, Any]:
    row = JobStore(home / "jobs.db").get(ref)
    assert row is not None
    return row.spec


def test_a_csv_with_a_template_trains_as_chat(
    tmp_path: Path, anytune_home: Path, received: list[dict[str, Any]]
) -> None:
    source = write_csv(tmp_path / "qa.csv", qa_rows())
    job = FineTuneJob.create(
        provider="fake", base_model="tiny", data={"source": str(source), "text_template": TEMPLATE}
    )
    (got,) = received
    assert got["spec"].data is None and got["spec"].training_file.parent == anytune_home / "data"
    assert len(got["training_file"]) == 12
    assert got["training_file"][0] == {
        "messages": [
            {"role": "user", "content": "### Question: What is 0 plus 0? ### Answer: "},
            {"role": "assistant", "content": "It is 0."},
        ]
    }
    # The store (what `jobs show` displays) keeps the user's data section, not the cache file.
    spec = stored_spec(anytune_home, job.ref)
    assert spec["data"] == {"source": str(source), "format": "auto", "text_template": TEMPLATE}
    assert "training_file" not in spec


def test_an_alpaca_training_file_is_converted_with_a_notice(
    tmp_path: Path, anytune_home: Path, received: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{"instruction": f"Add {i} and {i}.", "input": "", "output": str(2 * i)} for i in range(12)]
    train = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    with caplog.at_level("WARNING", logger="anytune.data"):
        job = FineTuneJob.create(provider="fake", base_model="tiny", training_file=train)
    assert "alpaca" in caplog.text and "not canonical JSONL" in caplog.text
    (got,) = received
    assert got["training_file"][1]["messages"] == [
        {"role": "user", "content": "Add 1 and 1."},
        {"role": "assistant", "content": "2"},
    ]
    assert stored_spec(anytune_home, job.ref)["training_file"] == str(train)


def test_a_folder_of_csv_files_as_training_file_is_converted(tmp_path: Path, received: list[dict[str, Any]]) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    write_csv(folder / "a.csv", [{"prompt": r["question"], "completion": r["answer"]} for r in qa_rows(6)])
    write_csv(folder / "b.csv", [{"prompt": r["question"], "completion": r["answer"]} for r in qa_rows(6, start=6)])
    FineTuneJob.create(provider="fake", base_model="tiny", training_file=folder)
    assert len(received[0]["training_file"]) == 12


def test_canonical_jsonl_is_used_as_it_is(chat_jsonl: Path, anytune_home: Path, received: list[dict[str, Any]]) -> None:
    FineTuneJob.create(provider="fake", base_model="tiny", training_file=chat_jsonl)
    assert received[0]["spec"].training_file == chat_jsonl
    assert not (anytune_home / "data").exists()


def test_a_parquet_file_with_a_column_mapping(tmp_path: Path, received: list[dict[str, Any]]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = qa_rows()
    source = tmp_path / "qa.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"q": r["question"], "a": r["answer"], "id": i} for i, r in enumerate(rows)]), source
    )
    FineTuneJob.create(
        provider="fake",
        base_model="tiny",
        data={"source": str(source), "columns": {"prompt": "q", "completion": "a"}},
    )
    assert received[0]["training_file"][3]["messages"] == [
        {"role": "user", "content": "What is 3 plus 3?"},
        {"role": "assistant", "content": "It is 6."},
    ]


def test_eval_split_of_a_saved_dataset_dict_becomes_the_validation_file(
    tmp_path: Path, received: list[dict[str, Any]]
) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(qa_rows(12)),
            "test": datasets.Dataset.from_list(qa_rows(3, start=50)),
        }
    ).save_to_disk(str(folder))
    plan = FineTuneJob.plan(
        provider="fake",
        base_model="tiny",
        data={"source": str(folder), "eval_split": "test", "columns": {"prompt": "question", "completion": "answer"}},
    )
    assert [u.purpose for u in plan.uploads] == ["training", "validation"]
    assert any("12 examples" in n for n in plan.notes) and any("3 examples" in n for n in plan.notes)
    FineTuneJob.create(
        provider="fake",
        base_model="tiny",
        data={"source": str(folder), "eval_split": "test", "columns": {"prompt": "question", "completion": "answer"}},
    )
    (got,) = received
    assert len(got["training_file"]) == 12 and len(got["validation_file"]) == 3
    assert got["validation_file"][0]["messages"][0]["content"] == "What is 50 plus 50?"


def test_the_same_source_is_converted_once_and_an_edited_one_again(
    tmp_path: Path, anytune_home: Path, received: list[dict[str, Any]]
) -> None:
    source = write_csv(tmp_path / "qa.csv", qa_rows())
    data = {"source": str(source), "prompt_template": "Q: {question}", "completion_template": "{answer}"}
    FineTuneJob.create(provider="fake", base_model="tiny", data=data)
    first = received[0]["spec"].training_file
    stamp = first.stat().st_mtime_ns
    FineTuneJob.create(provider="fake", base_model="tiny", data=data)
    assert received[1]["spec"].training_file == first and first.stat().st_mtime_ns == stamp  # reused
    assert len(list((anytune_home / "data").glob("*.jsonl"))) == 1

    write_csv(source, qa_rows(13))
    os.utime(source, ns=(stamp + 10**9, stamp + 10**9))  # an edit within the clock's tick still counts
    FineTuneJob.create(provider="fake", base_model="tiny", data=data)
    assert received[2]["spec"].training_file != first
    assert len(received[2]["training_file"]) == 13


def test_jobs_created_at_once_from_one_source_share_one_converted_file(tmp_path: Path, anytune_home: Path) -> None:
    # Four `anytune jobs create` processes at the same moment, as a script launching a sweep does:
    # each gets its job, the conversion's cache ends with one whole file and no temporary left.
    source = write_csv(tmp_path / "qa.csv", qa_rows())
    argv = [sys.executable, "-m", "anytune", "jobs", "create", "--provider", "fake", "--base-model", "tiny"]
    argv += ["--dataset", str(source), "--template", TEMPLATE, "--json"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, [err for _, err in outs]
    assert len({json.loads(out)["ref"] for out, _ in outs}) == 4
    files = sorted(p.name for p in (anytune_home / "data").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".jsonl"), files
    lines = (anytune_home / "data" / files[1]).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["messages"][1]["content"] for line in lines] == [r["answer"] for r in qa_rows()]
    assert jobs_in_store(anytune_home) == 4


def test_bad_rows_exit_3_naming_row_and_field_and_record_nothing(
    tmp_path: Path, anytune_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = qa_rows()
    rows[4]["answer"] = ""  # row 6 of the file: the header is row 1
    source = write_csv(tmp_path / "file.csv", rows)
    before = jobs_in_store(anytune_home)
    result = run_cli(
        capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--dataset", str(source),
        "--template", TEMPLATE,
    )  # fmt: skip
    assert result.code == 3, result.err
    assert "file.csv:row 6" in result.err and "messages[1].content" in result.err
    assert jobs_in_store(anytune_home) == before

    # A row that cannot be read at all (a missing template field) is named the same way.
    template = "### Question: {question} ### Answer: {reply}"
    with pytest.raises(DataValidationError) as exc:
        FineTuneJob.create(provider="fake", base_model="tiny", data={"source": str(source), "text_template": template})
    assert "file.csv:row 2" in str(exc.value) and "reply" in str(exc.value)
    assert jobs_in_store(anytune_home) == before


def test_training_file_and_data_source_together_exit_2(
    tmp_path: Path, chat_jsonl: Path, anytune_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "qa.csv", qa_rows())
    result = run_cli(
        capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--training-file", str(chat_jsonl),
        "--dataset", str(source),
    )  # fmt: skip
    assert result.code == 2 and "not both" in result.err
    assert jobs_in_store(anytune_home) == 0
    with pytest.raises(ConfigError, match="training_file or a data section"):
        FineTuneJob.create(provider="fake", base_model="tiny")


def test_data_options_without_a_source_say_so(chat_jsonl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(
        capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--training-file", str(chat_jsonl),
        "--split", "train",
    )  # fmt: skip
    assert result.code == 2 and "data.split without data.source" in result.err


def test_a_data_validation_split_points_to_the_one_setting() -> None:
    with pytest.raises(ConfigError, match=r"hyperparameters\.validation_split"):
        FineTuneJob.plan(provider="fake", base_model="tiny", data={"source": "x.csv", "validation_split": 0.1})


def test_cli_flags_and_set_fill_the_data_section(
    tmp_path: Path, anytune_home: Path, capsys: pytest.CaptureFixture[str], received: list[dict[str, Any]]
) -> None:
    source = write_csv(tmp_path / "qa.csv", [{"q": r["question"], "a": r["answer"]} for r in qa_rows()])
    result = run_cli(
        capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--dataset", str(source),
        "--columns", "prompt=q,completion=a", "--format", "prompt-completion", "--dry-run",
    )  # fmt: skip
    assert result.code == 0, result.err
    notes = json.loads(result.out)["notes"]
    assert "columns={'prompt': 'q', 'completion': 'a'}" in notes[0] and "12 examples" in notes[1]

    # --set reaches the data section, and a flag for the same field is an error.
    result = run_cli(
        capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--set", f"data.source={source}",
        "--set", "data.columns=prompt=q,completion=a", "--set", "data.system=Be brief.",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert received[-1]["training_file"][0]["messages"][0] == {"role": "system", "content": "Be brief."}
    clash = run_cli(
        capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--dataset", str(source),
        "--set", "data.split=train", "--split", "train",
    )  # fmt: skip
    assert clash.code == 2 and "data.split" in clash.err


@pytest.mark.parametrize(
    ("provider", "model", "extra"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", ()),
        ("azure-openai", "gpt-4o-mini-2024-07-18", ()),
        ("azureml", "Phi-4-mini-instruct", ()),
        ("huggingface", "Qwen/Qwen2.5-0.5B-Instruct", ("--set", "hf.namespace=acme")),
    ],
)
def test_hosted_dry_runs_plan_on_the_converted_data_and_send_nothing(
    tmp_path: Path,
    anytune_home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    provider: str,
    model: str,
    extra: tuple[str, ...],
) -> None:
    hub = ExitStack()
    if provider == "huggingface":  # its dry run looks the base model up on the (fake) Hub
        pytest.importorskip("datasets")
        fake = hub.enter_context(serve_hub_datasets(tmp_path, monkeypatch, clock))
        fake.add_repo("model", model, {"config.json": b"{}"})
    source = write_csv(tmp_path / "qa.csv", [{"q": r["question"], "a": r["answer"]} for r in qa_rows()])
    result = run_cli(
        capsys, "jobs", "create", "--provider", provider, "--base-model", model, "--dataset", str(source),
        "--columns", "prompt=q,completion=a", *extra, "--dry-run", "--json",
    )  # fmt: skip
    hub.close()
    assert result.code == 0, result.err
    converted = next(n for n in json.loads(result.out)["notes"] if n.startswith("converted data.source"))
    assert "read as prompt_completion: 12 examples in " in converted
    canonical = Path(converted.rsplit(" in ", 1)[1])
    lines = [json.loads(line) for line in canonical.read_text(encoding="utf-8").splitlines()]
    assert lines[3] == {
        "messages": [{"role": "user", "content": "What is 3 plus 3?"}, {"role": "assistant", "content": "It is 6."}]
    }
    assert jobs_in_store(anytune_home) == 0


def test_a_relative_source_in_a_spec_file_resolves_against_the_file(
    tmp_path: Path, workdir: Path, capsys: pytest.CaptureFixture[str], received: list[dict[str, Any]]
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    write_csv(project / "data" / "qa.csv", qa_rows())
    spec = project / "job.toml"
    spec.write_text(
        'provider = "fake"\nbase_model = "tiny"\n[data]\nsource = "data/qa.csv"\n'
        f"text_template = {json.dumps(TEMPLATE)}\n",
        encoding="utf-8",
    )
    assert Path.cwd() == workdir != project
    result = run_cli(capsys, "jobs", "create", "-f", str(spec))
    assert result.code == 0, result.err
    assert len(received[0]["training_file"]) == 12

    # A Hub id is not a path, even in a spec file.
    from anytune._specfile import relative_to_file

    assert relative_to_file({"data": {"source": "org/name"}}, project)["data"]["source"] == "org/name"
    assert relative_to_file({"data": {"source": "./x.csv"}}, project)["data"]["source"] == str(project / "x.csv")


def test_a_missing_local_source_is_a_config_error(tmp_path: Path, anytune_home: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as exc:
        FineTuneJob.create(provider="fake", base_model="tiny", data={"source": str(tmp_path / "nope.csv")})
    assert exc.value.field == "data.source"
    assert jobs_in_store(anytune_home) == 0


def test_openai_uploads_the_converted_canonical_jsonl(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    from tests.providers.openai_support import MODEL, make_rig

    rig = make_rig(tmp_path)
    source = write_csv(tmp_path / "qa.csv", qa_rows())
    data = {"source": str(source), "text_template": TEMPLATE}
    plan = FineTuneJob.plan(provider=rig.provider(), base_model=MODEL, data=data)
    (upload,) = plan.uploads
    assert upload.path.endswith(".jsonl") and upload.purpose == "fine-tune"
    FineTuneJob.create(provider=rig.provider(), base_model=MODEL, data=data)
    (path,) = rig.service.file_paths.values()
    lines = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 12
    assert all(set(line) == {"messages"} for line in lines)
    assert lines[0]["messages"][1] == {"role": "assistant", "content": "It is 0."}
    assert rig.service.violations == []


def test_a_hub_id_is_passed_through_and_reused_only_when_pinned_to_a_commit(
    monkeypatch: pytest.MonkeyPatch, anytune_home: Path, received: list[dict[str, Any]]
) -> None:
    from anytune._data import jobdata, pipeline

    calls: list[tuple[str, dict[str, Any]]] = []

    def convert(source: str, out: Path, **options: Any) -> Any:
        calls.append((source, options))
        lines = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
        Path(out).write_text("".join(json.dumps(line) + "\n" for line in lines * 12), encoding="utf-8")
        return pipeline.Conversion(source, "chat", 12, pipeline.LineMap())

    monkeypatch.setattr(pipeline, "write_canonical", convert)
    assert jobdata.is_hub_id("org/name") and not jobdata.is_hub_id("./org/name") and not jobdata.is_hub_id("x.csv")
    data = {"source": "org/name", "config": "main", "split": "train[:12]"}
    for _ in range(2):
        FineTuneJob.create(provider="fake", base_model="tiny", data=data)
    assert [c[0] for c in calls] == ["org/name", "org/name"]  # a branch may move: converted each time
    assert received[0]["spec"].training_file == received[1]["spec"].training_file  # ... named by content
    assert len(list((anytune_home / "data").iterdir())) == 1
    assert calls[0][1] == {"format": "auto", "config": "main", "split": "train[:12]", "field": "data.source"}
    pinned = data | {"revision": "0123456789abcdef0123456789abcdef01234567"}
    for _ in range(2):
        FineTuneJob.create(provider="fake", base_model="tiny", data=pinned)
    assert len(calls) == 3  # pinned to a commit: converted once, then reused
    assert calls[2][1]["revision"] == pinned["revision"]
    assert received[-1]["spec"].training_file == received[-2]["spec"].training_file
