"""Hostile input through the CLI: each case once crashed (exit 70) or printed something other than
what was given; each must now be one clear line with the README's exit status."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from anytune import FineTuneJob
from anytune.errors import ConfigError
from tests.clitools import run_cli

TRAIN = str(Path(__file__).parents[1] / "samples" / "data" / "train.jsonl")


def _create(capsys: pytest.CaptureFixture[str]) -> str:
    result = run_cli(capsys, "jobs", "create", "-p", "fake", "--base-model", "tiny", "--training-file", TRAIN)
    assert result.code == 0, result.err
    return result.out.strip()


def test_a_config_file_that_is_not_utf8_is_a_config_error(capsys: pytest.CaptureFixture[str], config_dir: Path) -> None:
    (config_dir / "anytune.toml").write_bytes(b"\xff\xfe[profiles]\n")
    shown = run_cli(capsys, "config", "show")
    assert shown.code == 2
    assert "not UTF-8" in shown.err and "Traceback" not in shown.err
    created = run_cli(capsys, "jobs", "create", "-p", "fake", "--base-model", "tiny", "--training-file", TRAIN)
    assert created.code == 2 and "not UTF-8" in created.err


@pytest.mark.parametrize("age", ["999999d", "99999999999w"])
def test_prune_with_a_huge_age_is_no_crash(capsys: pytest.CaptureFixture[str], age: str) -> None:
    _create(capsys)
    result = run_cli(capsys, "jobs", "prune", "--older-than", age, "--dry-run")
    assert result.code in (0, 2), result.err
    assert "internal error" not in result.err


@pytest.mark.parametrize("age", [float("inf"), float("nan"), 1e300])
def test_prune_api_refuses_an_age_it_cannot_count(age: float) -> None:
    with pytest.raises(ConfigError, match="older_than"):
        FineTuneJob.prune(older_than=age, dry_run=True)


def test_prune_api_with_an_age_older_than_the_calendar_removes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    _create(capsys)
    assert FineTuneJob.prune(status="succeeded,validating,queued,running", older_than=1e12) == []


def test_a_damaged_store_row_is_a_store_error_naming_it(capsys: pytest.CaptureFixture[str], anytune_home: Path) -> None:
    ref = _create(capsys)
    with sqlite3.connect(anytune_home / "jobs.db") as db:
        db.execute("UPDATE jobs SET record='{garbage' WHERE ref=?", (ref,))
    for args in (("jobs", "list"), ("jobs", "list", "--cached"), ("jobs", "get", ref)):
        result = run_cli(capsys, *args)
        assert result.code == 9, (args, result.err)
        assert ref in result.err and "damaged" in result.err
        assert len(result.err.strip().splitlines()) == 1


def test_emoji_codes_in_text_are_printed_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "jobs", "get", "fake:a:b")
    assert result.code == 4
    assert "fake:a:b" in result.err


def test_a_ref_with_undecodable_bytes_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    _create(capsys)
    ref = b"fake:\xff".decode("utf-8", "surrogateescape")  # how Python passes such an argument
    for command in ("get", "delete", "cancel"):
        result = run_cli(capsys, "jobs", command, ref)
        assert result.code == 2, (command, result.err)
        assert "not valid text" in result.err


def test_a_tag_with_undecodable_bytes_is_refused_before_anything_is_recorded(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = b"team=\xff".decode("utf-8", "surrogateescape")  # what argv holds for such bytes
    result = run_cli(
        capsys, "jobs", "create", "-p", "fake", "--base-model", "tiny", "--training-file", TRAIN, "--tag", bad
    )
    assert result.code == 2, result.err
    assert "valid text" in result.err
    assert run_cli(capsys, "jobs", "list", "--json").out.strip() == "[]"
