"""One clear message, early: each data issue printed once, one exit-status table (the README's is
the code's), missing credentials are configuration (2) and rejected ones authentication (7),
third-party chatter kept out of the user's way, and ``config show`` that never fails."""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from anytune._cli.main import EXIT_CODES
from anytune._quiet import DEBUG_ENV, QUIET_LIBRARY_ENV, demote_warnings, quiet_worker
from tests.clitools import jobs_in_store, run_cli
from tests.conftest import chat_example, write_jsonl

README = Path(__file__).resolve().parent.parent / "README.md"

# -- 1. each data issue once ----------------------------------------------------------------------


@pytest.fixture
def bad_pc(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": 1, "completion": "x"}\n{"bad json\n{"prompt": "p"}\n', encoding="utf-8")
    return path


def _issue_lines(err: str) -> list[str]:
    return [line.strip() for line in err.splitlines() if re.search(r"bad\.jsonl:\d", line)]


def test_convert_prints_each_issue_once(capsys: pytest.CaptureFixture[str], bad_pc: Path, tmp_path: Path) -> None:
    result = run_cli(capsys, "data", "convert", str(bad_pc), str(tmp_path / "out.jsonl"))
    assert result.code == 3
    lines = _issue_lines(result.err)
    assert lines and len(lines) == len(set(lines))
    assert any("bad.jsonl:1: prompt" in line for line in lines) and any("bad.jsonl:2" in line for line in lines)
    assert result.err.startswith("invalid data:") and "3 lines cannot be converted" in result.err


def test_jobs_create_prints_each_issue_once(capsys: pytest.CaptureFixture[str], bad_pc: Path) -> None:
    result = run_cli(capsys, "jobs", "create", "-p", "fake", "--base-model", "tiny", "--training-file", str(bad_pc))
    assert result.code == 3
    lines = _issue_lines(result.err)
    assert lines and len(lines) == len(set(lines))
    assert result.err.count("must be a string") == 1


# -- 3. one exit-status table ---------------------------------------------------------------------


def _readme_exit_table() -> dict[int, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Use from the command line", 1)[1].split("\n## ", 1)[0]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.+?) \|$", section, re.M)}


def test_readme_exit_table_matches_the_code() -> None:
    documented = _readme_exit_table()
    in_code = {code for _, _, code in EXIT_CODES}
    assert set(documented) == in_code | {0}, "README's exit-status table and EXIT_CODES differ"
    assert {70, 130, 2, 7} <= in_code


def test_missing_credentials_exit_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached login either
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    cases = {"openai:ftjob-abc": "OPENAI_API_KEY", "huggingface:alice/abc": "HF_TOKEN"}
    for ref, variable in cases.items():
        result = run_cli(capsys, "jobs", "get", ref)
        assert result.code == 2, result.err
        assert result.err.startswith("configuration error:") and variable in result.err


@pytest.mark.parametrize(
    ("provider", "base_model", "missing"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "OPENAI_API_KEY"),
        ("azure-openai", "gpt-4o-mini-2024-07-18", "AZURE_OPENAI_ENDPOINT"),
        ("huggingface", "Qwen/Qwen2.5-0.5B-Instruct", "HF_TOKEN"),
    ],
)
def test_a_create_without_credentials_exits_2_and_records_nothing(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    anytune_home: Path,
    provider: str,
    base_model: str,
    missing: str,
) -> None:
    if provider == "huggingface":  # nor the developer's `hf auth login` (read from a path fixed at import)
        constants = pytest.importorskip("huggingface_hub.constants")
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    train = str(Path(__file__).parents[1] / "samples" / "data" / "train.jsonl")
    result = run_cli(capsys, "jobs", "create", "-p", provider, "--base-model", base_model, "--training-file", train)
    assert result.code == 2, result.err
    last = result.err.strip().splitlines()[-1]  # after anytune's own notices (a model's retirement date)
    assert last.startswith("configuration error: field 'settings.") and missing in last, result.err
    assert "Traceback" not in result.err
    assert jobs_in_store(anytune_home) == 0


# -- 4. third-party chatter -----------------------------------------------------------------------


def test_demoted_warnings_reach_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    demote_warnings("tests.chatter", r"experimental")
    logger = logging.getLogger("tests.chatter")
    with caplog.at_level(logging.DEBUG):
        logger.warning("Class X: This is an experimental class, and may change at any time.")
        logger.warning("something else")
    levels = {r.getMessage()[:8]: r.levelno for r in caplog.records}
    assert levels == {"Class X:": logging.DEBUG, "somethin": logging.WARNING}


def test_azure_ml_chatter_is_not_printed_unless_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """azure-ai-ml prints through its own stderr handler: its experimental notes and activity log
    are dropped there, and kept with ANYTUNE_DEBUG (what ``--debug`` sets)."""
    pytest.importorskip("azure.ai.ml")
    import io

    from anytune.providers.azureml.workspace import quiet_azure_logs

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    azure_ml = logging.getLogger("azure.ai.ml")
    monkeypatch.setattr(azure_ml, "handlers", [handler])
    quiet_azure_logs()
    experimental = logging.getLogger("azure.ai.ml._utils._experimental")
    activity = logging.getLogger("azure.ai.ml._telemetry.azure.ai.ml.operations._job_operations")
    for child in (experimental, activity):  # each with the SDK's console handler, whatever earlier tests did
        monkeypatch.setattr(child, "handlers", [handler])
        monkeypatch.setattr(child, "propagate", False)
        monkeypatch.setattr(child, "level", logging.NOTSET)
    experimental.warning("Class FineTuningJob: This is an experimental class, and may change at any time.")
    activity.error("ActivityCompleted: Activity=Job.Get, HowEnded=Failure")
    assert stream.getvalue() == ""
    monkeypatch.setenv(DEBUG_ENV, "1")
    activity.error("ActivityCompleted: Activity=Job.Get, HowEnded=Failure")
    assert "ActivityCompleted" in stream.getvalue()


def test_cli_drops_third_party_log_records_unless_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library's warning during a command (here: while the fake provider reads a job) is not shown;
    ``--debug`` shows it."""
    from anytune.providers import fake

    original = fake.FakeProvider.get

    def chatty(self: Any, job_id: str) -> Any:
        logging.getLogger("somelib.client").error("ActivityCompleted: HowEnded=Failure")
        warnings.warn("call_me_differently is deprecated", FutureWarning, stacklevel=1)
        return original(self, job_id)

    monkeypatch.setattr(fake.FakeProvider, "get", chatty)
    created = run_cli(capsys, "jobs", "create", "-p", "fake", "--base-model", "tiny", "--training-file", _train())
    ref = created.out.split()[0] if created.out else ""
    ref = next((w for w in created.out.split() if w.startswith("fake:")), ref)
    quiet = run_cli(capsys, "jobs", "get", ref)
    assert quiet.code == 0 and "ActivityCompleted" not in quiet.err and "deprecated" not in quiet.err
    loud = run_cli(capsys, "--debug", "jobs", "get", ref)
    assert "ActivityCompleted" in loud.err


def _train() -> str:
    return str(write_jsonl(Path.cwd() / "train.jsonl", [chat_example(i) for i in range(12)]))


def test_worker_quiets_libraries_unless_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {"TRANSFORMERS_VERBOSITY": "info"}  # a user's own choice is kept
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert quiet_worker(env)
        warnings.warn("`foo` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("old", DeprecationWarning, stacklevel=1)
        warnings.warn("the job's own notice", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["the job's own notice"]
    assert env["TRANSFORMERS_VERBOSITY"] == "info" and env["BITSANDBYTES_NOWELCOME"] == "1"
    assert set(QUIET_LIBRARY_ENV) <= set(env)
    debug = {DEBUG_ENV: "1"}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert not quiet_worker(debug)
        warnings.warn("`foo` is deprecated", FutureWarning, stacklevel=1)
    assert len(seen) == 1 and debug == {DEBUG_ENV: "1"}


@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "debug"])
def test_the_hugging_face_job_quiets_libraries_unless_debug(
    debug: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The job's log is what `anytune jobs events` shows: like the local worker's, no library notes."""
    from anytune.local_backend import hf_job

    for name in QUIET_LIBRARY_ENV:  # absent, and absent again after the test whatever main sets
        monkeypatch.setenv(name, "-")
        monkeypatch.delenv(name)
    if debug:
        monkeypatch.setenv(DEBUG_ENV, "1")
    else:
        monkeypatch.delenv(DEBUG_ENV, raising=False)

    def download(repo: str, path: str, folder: Path) -> Path:
        warnings.warn("resume_download is deprecated", FutureWarning, stacklevel=1)  # as huggingface_hub would
        raise OSError("no network here")

    monkeypatch.setattr(hf_job, "_download", download)
    argv = ["--dataset-repo", "me/data", "--train", "train.jsonl", "--output-repo", "me/out", "--spec", "{}"]
    with warnings.catch_warnings(record=True) as seen:  # main's filters end with the test
        warnings.simplefilter("always")
        code = hf_job.main([*argv, "--workdir", str(tmp_path)])
    assert code == 1 and "could not prepare the job: OSError: no network here" in capsys.readouterr().out
    assert [str(w.message) for w in seen] == (["resume_download is deprecated"] if debug else [])
    assert (os.environ.get("TRANSFORMERS_VERBOSITY") == "error") is not debug


@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "debug"])
def test_quiet_transformers_lets_everything_through_under_debug(debug: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    from anytune.local_backend.model import quiet_transformers

    if debug:
        monkeypatch.setenv(DEBUG_ENV, "1")
    else:
        monkeypatch.delenv(DEBUG_ENV, raising=False)
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet_transformers():
                warnings.warn("`foo` is deprecated", FutureWarning, stacklevel=1)
                inside = hf_logging.get_verbosity()
    finally:
        hf_logging.set_verbosity(before)
    assert (len(seen) == 1) is debug
    assert (inside == hf_logging.INFO) is debug


# -- 5. config show never fails -------------------------------------------------------------------

SECRET = "sk-DISTINCTIVEfakeKEY0123456789wxyz"
HF_SECRET = "hf_ANOTHERdistinctiveTOKEN987654qrst"


def test_config_show_with_no_config_at_all(capsys: pytest.CaptureFixture[str], config_dir: Path) -> None:
    result = run_cli(capsys, "config", "show", "--json")
    assert result.code == 0
    view = json.loads(result.out)
    assert view["provider"] is None and view["error"] is None
    searched = {e["kind"]: e for e in view["searched"]}
    assert searched["user"]["path"] == str(config_dir / "anytune.toml") and not searched["user"]["found"]
    assert not searched["project"]["found"]
    assert {c["provider"] for c in view["credentials"]} == {"openai", "azure-openai", "huggingface", "azureml"}
    human = run_cli(capsys, "config", "show")
    assert human.code == 0 and "not found" in human.out and "ANYTUNE_HOME" in human.out


def test_config_show_masks_keys_found_anywhere(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_TEAM_KEY", SECRET)
    monkeypatch.setenv("ANYTUNE_OPENAI_API_KEY_ENV", "MY_TEAM_KEY")  # a key found through api_key_env
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    result = run_cli(capsys, "config", "show", "--json")
    creds = {c["provider"]: c for c in json.loads(result.out)["credentials"]}
    assert creds["openai"]["found"] and creds["openai"]["value"] == "sk-…wxyz"
    assert "MY_TEAM_KEY" in creds["openai"]["source"]
    assert creds["huggingface"]["found"] and creds["huggingface"]["source"] == "HF_TOKEN"
    human = run_cli(capsys, "config", "show")
    for shown in (result.out + result.err, human.out + human.err):
        assert SECRET not in shown and HF_SECRET not in shown
        assert SECRET[3:-4] not in shown and HF_SECRET[3:-4] not in shown


def test_config_show_reports_a_broken_file_and_the_rest(
    capsys: pytest.CaptureFixture[str], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "anytune.toml").write_text('default_profile = "x"\n[profiles.x]\nprovider = "fake"\nbogus = 1\n')
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    result = run_cli(capsys, "config", "show", "--json")
    assert result.code == 2
    view = json.loads(result.out)
    assert "profiles.x.bogus" in view["error"] and "configuration error" in result.err
    project = next(e for e in view["searched"] if e["kind"] == "project")
    assert project["found"] and "unknown field" in project["error"]
    assert next(c for c in view["credentials"] if c["provider"] == "openai")["found"]
    human = run_cli(capsys, "config", "show")
    assert human.code == 2 and "invalid" in human.out and SECRET not in human.out + human.err
