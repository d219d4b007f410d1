"""Hugging Face Hub datasets as a source: the real ``datasets`` and huggingface_hub against the HTTP
fake, served by :func:`tests.hubdata.serve_hub_datasets`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from anytune._data.hub import parse_split
from anytune._data.pipeline import validate_source, write_canonical
from anytune._data.sources import classify_source, open_source
from anytune._data.validate import DatasetRules
from anytune.errors import (
    ConfigError,
    DataValidationError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from tests.clitools import run_cli
from tests.conftest import FakeClock
from tests.hubdata import QA, REPO, serve_hub_datasets
from tests.hubdata import card as _card
from tests.hubdata import jsonl as _jsonl
from tests.providers.hf_fake import TOKEN, FakeHub

pytest.importorskip("datasets")


PC = {"prompt": "question", "completion": "answer"}


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[FakeHub]:
    """The fake Hub holding ``acme/qa`` (train: 20 rows, test: 3), read anonymously or with ``HF_TOKEN``."""
    with serve_hub_datasets(tmp_path, monkeypatch, clock) as fake:
        yield fake


def _rows(source: str = REPO, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(str(loc), row) for loc, row in open_source(source, **kwargs).rows()]  # type: ignore[misc]


# -- telling a path from a Hub id ---------------------------------------------------------------------
def test_classify_source_paths_ids_and_neither(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "qa").write_text("{}\n")
    assert classify_source("acme/qa") == "path"  # exists: a path, though it could be an id
    assert classify_source("acme/other") == "hub"
    assert classify_source("squad") == "hub"
    assert classify_source("missing/train.jsonl") == "path"  # a data file's extension
    assert classify_source("./acme/other") == "path"
    assert classify_source("a/b/c") == "path"
    assert classify_source(tmp_path / "nope") == "path"
    with pytest.raises(FileNotFoundError, match="neither an existing file or folder nor a Hub dataset id"):
        classify_source("not an id!")
    with pytest.raises(FileNotFoundError):
        classify_source("org/na--me")


def test_parse_split_syntax() -> None:
    assert str(parse_split("train[4096:4224]")) == "train[4096:4224]"
    assert parse_split("train[:10%]").needs_size and parse_split("train[-100:]").needs_size
    assert not parse_split("train[5:]").needs_size
    assert parse_split("train[10%:20%]").bounds(50) == (5, 10)
    assert parse_split("train[-3:]").bounds(20) == (17, 20)
    with pytest.raises(ConfigError, match="one split at a time"):
        parse_split("train+test")
    with pytest.raises(ConfigError, match="at most 100"):
        parse_split("train[:150%]")
    with pytest.raises(ConfigError, match="selects no rows"):
        parse_split("train[10:5]")


# -- reading ------------------------------------------------------------------------------------------
def test_absolute_slices_stream_and_number_rows_in_the_split(hub: FakeHub) -> None:
    src = open_source(REPO, split="train[4:7]")
    assert src.streaming and src.name == "acme/qa[train]"  # type: ignore[attr-defined]
    rows = _rows(split="train[4:7]")
    assert [loc for loc, _ in rows] == ["acme/qa[train]:row 5", "acme/qa[train]:row 6", "acme/qa[train]:row 7"]
    assert [r["id"] for _, r in rows] == [4, 5, 6]
    assert [r["id"] for _, r in _rows(split="train[:2]")] == [0, 1]
    assert len(_rows()) == 20  # the whole train split by default
    assert len(_rows(split="test")) == 3
    assert _rows(split="train[18:99]")[-1][0] == "acme/qa[train]:row 20"  # an end past the end is the end


def test_percentages_and_negative_bounds_without_sizes_are_prepared(hub: FakeHub) -> None:
    src = open_source(REPO, split="train[:10%]")
    assert not src.streaming  # type: ignore[attr-defined]
    assert [loc for loc, _ in _rows(split="train[:10%]")] == ["acme/qa[train]:row 1", "acme/qa[train]:row 2"]
    assert [r["id"] for _, r in _rows(split="train[-3:]")] == [17, 18, 19]
    assert [loc for loc, _ in _rows(split="train[50%:60%]")] == ["acme/qa[train]:row 11", "acme/qa[train]:row 12"]


def test_percentages_stream_when_the_card_gives_the_split_size(hub: FakeHub) -> None:
    files = {"data/train.jsonl": _jsonl(QA), "README.md": _card(sizes={"train": 20})}
    hub.add_repo("dataset", "acme/sized", files)
    src = open_source("acme/sized", split="train[-10%:]")
    assert src.streaming and src.rows_in_split == 20  # type: ignore[attr-defined]
    assert [r["id"] for _, r in _rows("acme/sized", split="train[-10%:]")] == [18, 19]


def test_config_chooses_the_files(hub: FakeHub) -> None:
    alpaca = [{"instruction": f"Add {i} and {i}.", "input": "", "output": str(2 * i)} for i in range(4)]
    configs = (
        "configs:\n- config_name: qa\n  data_files:\n  - split: train\n    path: qa/*.jsonl\n"
        "- config_name: alpaca\n  data_files:\n  - split: train\n    path: alpaca/*.jsonl\n"
    )
    files = {"qa/part.jsonl": _jsonl(QA[:5]), "alpaca/part.jsonl": _jsonl(alpaca), "README.md": _card(configs=configs)}
    hub.add_repo("dataset", "acme/multi", files)
    assert [r["output"] for _, r in _rows("acme/multi", config="alpaca", split="train[1:3]")] == ["2", "4"]
    assert len(_rows("acme/multi", config="qa")) == 5
    with pytest.raises(ConfigError, match="dataset acme/multi has no config 'nope'; its configs: qa, alpaca"):
        open_source("acme/multi", config="nope")


def test_revision_is_asked_for_and_an_unknown_one_refused(hub: FakeHub) -> None:
    head = hub.repos[("dataset", REPO)].head
    assert len(_rows(revision=head, split="train[:2]")) == 2
    assert hub.calls("GET", rf"^/api/datasets/{REPO}/revision/{head}$")
    with pytest.raises(ConfigError, match=r"dataset acme/qa has no revision 'v9' on hub\.test"):
        open_source(REPO, revision="v9")


def test_converted_to_canonical_chat_with_locations(hub: FakeHub, tmp_path: Path) -> None:
    out = tmp_path / "chat.jsonl"
    conversion = write_canonical(
        REPO, out, split="train[10:13]", columns={"prompt": "question", "completion": "answer"}
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert conversion.examples == 3 and conversion.source == "acme/qa[train]"
    assert lines[0] == {
        "messages": [{"role": "user", "content": "What is 10 plus 10?"}, {"role": "assistant", "content": "20."}]
    }
    assert str(conversion.locations[1]) == "acme/qa[train]:row 11"
    assert str(conversion.locations[3]) == "acme/qa[train]:row 13"


def test_a_bad_row_is_reported_with_dataset_split_and_row(hub: FakeHub) -> None:
    rows = [dict(r) for r in QA[:12]]
    rows[7]["answer"] = ""
    hub.add_repo("dataset", "acme/bad", {"data/train.jsonl": _jsonl(rows)})
    result = validate_source(
        "acme/bad",
        DatasetRules(min_examples=1),
        split="train[2:12]",
        columns={"prompt": "question", "completion": "answer"},
    )
    assert not result.report.ok
    where = [i.location for i in result.report.issues if i.severity == "error"]
    assert where and where[0].startswith("acme/bad[train]:row 8")


# -- refusals, before anything is read ----------------------------------------------------------------
def test_missing_dataset(hub: FakeHub) -> None:
    with pytest.raises(ConfigError, match=r"dataset acme/nope not found on hub\.test"):
        open_source("acme/nope")
    assert not hub.calls("GET", r"/resolve/")


def test_gated_dataset_says_to_accept_its_terms(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.add_repo("dataset", "acme/gated", {"data/train.jsonl": _jsonl(QA)}, gated=True)
    with pytest.raises(PermissionDeniedError) as info:
        open_source("acme/gated")
    text = str(info.value)
    assert "dataset acme/gated is gated" in text and "accept its terms" in text
    assert "http://hub.test/datasets/acme/gated" in text and "HF_TOKEN" in text
    assert TOKEN not in text and TOKEN not in repr(info.value)


def test_private_dataset_without_a_token(hub: FakeHub) -> None:
    hub.add_repo("dataset", "alice/secret", {"data/train.jsonl": _jsonl(QA)}, private=True)
    with pytest.raises(ConfigError, match=r"not found on hub\.test, or it is private and no token is set.*HF_TOKEN"):
        open_source("alice/secret")


def test_private_dataset_with_the_owners_token_reads(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.add_repo("dataset", "alice/secret", {"data/train.jsonl": _jsonl(QA)}, private=True)
    assert len(_rows("alice/secret", split="train[:3]")) == 3
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.calls("GET", "alice/secret"))


def test_unknown_split_lists_the_splits(hub: FakeHub) -> None:
    with pytest.raises(ConfigError, match="dataset acme/qa has no split 'validation'; its splits: train, test"):
        open_source(REPO, split="validation[:10]")


def test_slice_past_the_end_and_empty_split_name_the_split(hub: FakeHub) -> None:
    with pytest.raises(
        DataValidationError, match=r"split 'train' of dataset acme/qa has no row 31: train\[30:40\] starts past its end"
    ):
        _rows(split="train[30:40]")
    with pytest.raises(
        DataValidationError, match=r"split 'train' of dataset acme/qa has 20 rows: train\[100%:\] starts past its end"
    ):
        _rows(split="train[100%:]")
    import pyarrow as pa
    import pyarrow.parquet as pq

    empty = io.BytesIO()
    pq.write_table(pa.table({"question": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), empty)
    files = {"data/train.parquet": empty.getvalue(), "README.md": _card(sizes={"train": 0})}
    hub.add_repo("dataset", "acme/empty", files)
    with pytest.raises(DataValidationError, match="split 'train' of dataset acme/empty is empty"):
        open_source("acme/empty")  # the card says so: refused before a row is read
    # Without a size in the card, datasets fails to stream an empty Parquet file: named, with the split.
    hub.add_repo("dataset", "acme/empty2", {"data/train.parquet": empty.getvalue()})
    with pytest.raises(DataValidationError, match=r"split 'train' of dataset acme/empty2 (is empty|cannot be read)"):
        _rows("acme/empty2")


def test_unreachable_hub_is_named(hub: FakeHub) -> None:
    hub.fail("GET", rf"^/api/datasets/{REPO}$", exception=httpx2.ConnectError)
    with pytest.raises(ServiceUnavailableError, match=r"looking up dataset acme/qa: cannot reach hub\.test"):
        open_source(REPO)


def test_offline_reads_the_cache_or_says_offline_at_once(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"offline .*dataset acme/qa is not in the local datasets cache"):
        open_source(REPO)
    assert not hub.requests
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert len(_rows(split="train[-5:]")) == 5  # prepared: now in the datasets cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asked = len(hub.requests)
    rows = _rows(split="train[2:4]")
    assert [loc for loc, _ in rows] == ["acme/qa[train]:row 3", "acme/qa[train]:row 4"]
    assert len(hub.requests) == asked  # nothing asked of the Hub


# -- the CLI ------------------------------------------------------------------------------------------
def test_cli_convert_and_validate_a_hub_dataset(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "chat.jsonl"
    result = run_cli(
        capsys,
        "data",
        "convert",
        REPO,
        str(dst),
        "--split",
        "train[:12]",
        "--columns",
        "prompt=question,completion=answer",
    )
    assert result.code == 0, result.err
    assert "wrote 12 examples" in result.err and "columns not used: id" in result.err
    checked = run_cli(
        capsys,
        "data",
        "validate",
        REPO,
        "--split",
        "train[:12]",
        "--columns",
        "prompt=question,completion=answer",
        "--json",
    )
    assert checked.code == 0, checked.err
    report = json.loads(checked.out)
    assert report["ok"] and report["examples"] == 12 and report["file"] == "acme/qa[train]"


def test_cli_errors_name_the_dataset_and_never_the_token(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.add_repo("dataset", "acme/gated", {"data/train.jsonl": _jsonl(QA)}, gated=True)
    hub.fail("GET", r"^/api/datasets/acme/broken$", status=500, body={"error": f"internal error for token {TOKEN}"})
    for args in (
        ("data", "validate", "acme/gated", "--json"),
        ("data", "validate", "acme/gated"),
        ("data", "convert", "acme/gated", "out.jsonl"),
        ("data", "validate", "acme/broken", "--json"),
        ("data", "validate", "acme/nope", "--split", "train[:3]"),
        ("data", "validate", REPO, "--split", "nope[:3]", "--json"),
    ):
        result = run_cli(capsys, *args)
        assert result.code != 0, args
        assert TOKEN not in result.out + result.err, args
        assert args[2] in result.out + result.err, args
    result = run_cli(capsys, "data", "validate", "acme/gated")
    assert "gated" in result.err and "accept its terms" in result.err


def test_cli_refuses_config_for_a_local_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "qa.jsonl"
    src.write_bytes(_jsonl(QA[:2]))
    result = run_cli(capsys, "data", "convert", str(src), str(tmp_path / "out.jsonl"), "--config", "x")
    assert result.code == 2 and "a local source has no config" in result.err


def test_cli_neither_a_file_nor_an_id(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "data", "validate", "not an id!")
    assert result.code == 2
    assert "neither an existing file or folder nor a Hub dataset id" in result.err


# -- faults while the rows are read ---------------------------------------------------------------

_DATA_FILE = r"/resolve/[0-9a-f]{40}/data/train\.jsonl$"
_FAULTS: dict[str, dict[str, Any]] = {
    "500": {"status": 500},
    "503": {"status": 503},
    "429": {"status": 429, "headers": {"Retry-After": "3"}},
    "dropped": {"exception": httpx2.RemoteProtocolError},
    "timeout": {"exception": httpx2.ReadTimeout},
}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every wait huggingface_hub and datasets ask for (not slept: the test runs in moments)."""
    import time

    asked: list[float] = []
    monkeypatch.setattr(time, "sleep", asked.append)
    return asked


# An absolute slice streams; a percentage of a split of unknown size is prepared in the datasets cache.
@pytest.mark.parametrize("split", ["train[:5]", "train[:25%]"], ids=["streamed", "prepared"])
@pytest.mark.parametrize("fault", sorted(_FAULTS))
def test_a_hub_that_keeps_failing_a_read_is_named_within_a_minute(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, sleeps: list[float], fault: str, split: str
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.fail("GET", _DATA_FILE, times=1000, **_FAULTS[fault])
    with pytest.raises((ServiceUnavailableError, RateLimitError)) as info:
        validate_source(REPO, DatasetRules(min_examples=1), split=split, columns=PC)
    message = str(info.value)
    assert message.startswith(f"huggingface: reading dataset {REPO}") and "hub.test" in message
    assert TOKEN not in message
    expected = {
        "500": "failed (HTTP 500)",
        "503": "failed (HTTP 503)",
        "429": "rate-limiting this client and still was after retries; try again after 3 s (HTTP 429)",
        "dropped": "the connection was dropped",
        "timeout": "no answer in time",
    }[fault]
    assert expected in message
    if fault == "429":
        assert isinstance(info.value, RateLimitError) and info.value.retry_after == 3
    # huggingface_hub's back-off alone (the Hub's Retry-After honoured): datasets alone would add up
    # to 20 x 60 s on a throttled read.
    assert 0 < sum(sleeps) <= 30, sleeps


@pytest.mark.parametrize("split", ["train[:5]", "train[:25%]"], ids=["streamed", "prepared"])
@pytest.mark.parametrize("fault", sorted(_FAULTS))
def test_a_read_that_fails_once_is_retried_and_reads_every_row(
    hub: FakeHub, sleeps: list[float], fault: str, split: str
) -> None:
    hub.fail("GET", _DATA_FILE, times=1, **_FAULTS[fault])
    report = validate_source(REPO, DatasetRules(min_examples=1), split=split, columns=PC).report
    assert report.ok and report.examples == 5
    assert sum(sleeps) <= 10, sleeps


def test_cli_says_the_hub_is_throttling_in_one_line(
    hub: FakeHub, sleeps: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    hub.fail("GET", _DATA_FILE, times=1000, **_FAULTS["429"])
    result = run_cli(
        capsys, "data", "validate", REPO, "--split", "train[:5]", "--columns", "prompt=question,completion=answer"
    )
    assert result.code == 1, result.err
    assert result.err.strip().splitlines() == [
        f"provider error: huggingface: reading dataset {REPO}: hub.test is rate-limiting this client and still was "
        "after retries; try again after 3 s (HTTP 429)"
    ]
