"""The ``anytune`` CLI, run as a user runs it, against the fake provider."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.clitools import fake_jobs, jobs_in_store, run_cli

SAMPLES = Path(__file__).parents[1] / "samples"
TRAIN = str(SAMPLES / "data" / "train.jsonl")
VALID = str(SAMPLES / "data" / "valid.jsonl")


def home() -> Path:
    return Path(os.environ["ANYTUNE_HOME"])


def create(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    result = run_cli(
        capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--training-file", TRAIN, *extra
    )
    assert result.code == 0, result.err
    return result.out.strip()


def test_create_from_flags_records_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    ref = create(
        capsys,
        "--validation-file",
        VALID,
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--learning-rate",
        "0.0002",
        "--max-steps",
        "50",
        "--max-length",
        "256",
        "--lora-r",
        "8",
        "--lora-alpha",
        "16",
        "--lora-dropout",
        "0.1",
        "--lora-target-modules",
        "q_proj,v_proj",
        "--quantization",
        "4bit",
        "--suffix",
        "bot",
        "--tag",
        "team=nlp",
        "--method",
        "sft",
    )
    assert ref.startswith("fake:fakejob-")
    listed = run_cli(capsys, "jobs", "list", "--json")
    (row,) = json.loads(listed.out)
    assert row["ref"] == ref
    spec = row["spec"]
    assert spec["hyperparameters"] == {
        "epochs": 2,
        "batch_size": 4,
        "learning_rate": 0.0002,
        "max_steps": 50,
        "max_length": 256,
    }
    assert spec["lora"] == {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
    assert spec["quantization"] == "4bit"
    assert spec["suffix"] == "bot"
    assert spec["tags"] == {"team": "nlp"}


def test_create_wait_json_reports_success(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "fake",
        "--base-model",
        "tiny",
        "--training-file",
        TRAIN,
        "--wait",
        "--json",
    )
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["status"] == "succeeded"
    assert record["fine_tuned_model"].startswith("ft:tiny:")


def test_dry_run_prints_plan_and_creates_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "jobs", "create", "-f", str(SAMPLES / "job.toml"), "--dry-run")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["provider"] == "fake"
    uploads = {u["purpose"]: u for u in plan["uploads"]}
    assert uploads["training"]["path"].endswith("train.jsonl")
    assert uploads["training"]["bytes"] == Path(TRAIN).stat().st_size
    assert len(uploads["training"]["sha256"]) == 64
    assert "validation" in uploads
    body = plan["requests"][0]["body"]
    assert body["hyperparameters"]["epochs"] == 3
    assert jobs_in_store(home()) == 0
    assert fake_jobs(home()) == 0


def test_yaml_and_toml_spec_files_agree(capsys: pytest.CaptureFixture[str]) -> None:
    a = json.loads(run_cli(capsys, "jobs", "create", "-f", str(SAMPLES / "job.toml"), "--dry-run").out)
    b = json.loads(run_cli(capsys, "jobs", "create", "-f", str(SAMPLES / "job.yaml"), "--dry-run").out)
    assert a["uploads"] == b["uploads"]
    assert a["requests"][0]["body"]["hyperparameters"] == b["requests"][0]["body"]["hyperparameters"]


def test_flags_override_spec_file(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "jobs", "create", "-f", str(SAMPLES / "job.toml"), "--epochs", "7", "--dry-run")
    assert json.loads(result.out)["requests"][0]["body"]["hyperparameters"]["epochs"] == 7


def test_get_wait_events_metrics_cancel(capsys: pytest.CaptureFixture[str]) -> None:
    ref = create(capsys)
    waited = run_cli(capsys, "jobs", "wait", ref)
    assert waited.code == 0, waited.err
    assert "succeeded" in waited.out
    got = json.loads(run_cli(capsys, "jobs", "get", ref, "--json").out)
    assert got["status"] == "succeeded" and got["step"] == 5
    lines = run_cli(capsys, "jobs", "events", ref, "--json").out.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["status"] for e in events if e["kind"] == "status"] == ["validating", "queued", "running", "succeeded"]
    assert len({e["id"] for e in events}) == len(events)
    after = run_cli(capsys, "jobs", "events", ref, "--json", "--after", events[2]["id"]).out.splitlines()
    assert [json.loads(x)["id"] for x in after] == [e["id"] for e in events[3:]]
    points = json.loads(run_cli(capsys, "jobs", "metrics", ref, "--json").out)
    assert [p["step"] for p in points] == [1, 2, 3, 4, 5]
    assert points == [e["metric"] for e in events if e["kind"] == "metric"]
    table = run_cli(capsys, "jobs", "metrics", ref).out
    assert "train loss" in table
    # One row per point, in step order, its loss at four significant figures.
    assert table_rows(table) == [
        [str(p["step"]), "-", f"{p['train_loss']:.4g}", "-" if p["valid_loss"] is None else f"{p['valid_loss']:.4g}"]
        for p in points
    ]
    # cancelling a finished job changes nothing
    assert json.loads(run_cli(capsys, "jobs", "cancel", ref, "--json").out)["status"] == "succeeded"


def table_rows(table: str) -> list[list[str]]:
    """The first four cells (step, epoch, train loss, valid loss) of each data row of a metrics table."""
    rows = [[cell.strip() for cell in line.strip().strip("│").split("│")] for line in table.splitlines()]
    return [row[:4] for row in rows if row[0].isdigit()]


def test_metrics_show_each_step_once_as_the_resumed_run_reported_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Step 3 diverged, the run went on from its step-2 checkpoint and reported step 3 again.
    spec = tmp_path / "resumed.yaml"
    spec.write_text(
        f"provider: fake\nbase_model: tiny\ntraining_file: {TRAIN}\nfake:\n  timeline:\n"
        "    - {at: 0, status: running}\n"
        "    - {at: 0.01, status: running, step: 1, train_loss: 2.0}\n"
        "    - {at: 0.02, status: running, step: 2, train_loss: 1.75, valid_loss: 1.9}\n"
        "    - {at: 0.03, status: running, step: 3, train_loss: 9.25}\n"
        "    - {at: 0.04, status: running, step: 3, train_loss: 1.5}\n"
        "    - {at: 0.05, status: running, step: 4, train_loss: 1.25}\n"
        "    - {at: 0.06, status: succeeded}\n"
    )
    ref = run_cli(capsys, "jobs", "create", "-f", str(spec), "--wait", "--json").out
    ref = json.loads(ref)["ref"]
    events = [json.loads(line) for line in run_cli(capsys, "jobs", "events", ref, "--json").out.splitlines()]
    assert [e["metric"]["step"] for e in events if e["kind"] == "metric"] == [1, 2, 3, 3, 4]
    points = json.loads(run_cli(capsys, "jobs", "metrics", ref, "--json").out)
    assert [(p["step"], p["train_loss"], p["valid_loss"]) for p in points] == [
        (1, 2.0, None),
        (2, 1.75, 1.9),
        (3, 1.5, None),
        (4, 1.25, None),
    ]
    table = run_cli(capsys, "jobs", "metrics", ref).out
    assert table_rows(table) == [
        ["1", "-", "2", "-"],
        ["2", "-", "1.75", "1.9"],
        ["3", "-", "1.5", "-"],
        ["4", "-", "1.25", "-"],
    ]
    assert "9.25" not in table


def test_cancel_running_job(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text(f"provider: fake\nbase_model: tiny\ntraining_file: {TRAIN}\nfake: {{seconds: 600}}\n")
    ref = run_cli(capsys, "jobs", "create", "-f", str(spec)).out.strip()
    cancelled = json.loads(run_cli(capsys, "jobs", "cancel", ref, "--json").out)
    assert cancelled["status"] == "cancelled"
    assert run_cli(capsys, "jobs", "wait", ref).code == 6


def test_failed_job_exits_6_with_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "fail.yaml"
    spec.write_text(
        f"provider: fake\nbase_model: tiny\ntraining_file: {TRAIN}\nfake: {{scenario: fail, seconds: 0.2}}\n"
    )
    result = run_cli(capsys, "jobs", "create", "-f", str(spec), "--wait")
    assert result.code == 6
    assert "failed" in result.err and "loss is NaN" in result.err


def test_wait_timeout_exits_5(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text(f"provider: fake\nbase_model: tiny\ntraining_file: {TRAIN}\nfake: {{seconds: 600}}\n")
    ref = run_cli(capsys, "jobs", "create", "-f", str(spec)).out.strip()
    result = run_cli(capsys, "jobs", "wait", ref, "--timeout", "0.2")
    assert result.code == 5
    assert "did not finish within 0.2 s" in result.err


def test_list_filters(capsys: pytest.CaptureFixture[str]) -> None:
    ref = create(capsys)
    run_cli(capsys, "jobs", "wait", ref)
    rows = json.loads(run_cli(capsys, "jobs", "list", "--json", "--status", "succeeded").out)
    assert [r["ref"] for r in rows] == [ref]
    assert json.loads(run_cli(capsys, "jobs", "list", "--json", "--provider", "openai").out) == []
    assert ref in run_cli(capsys, "jobs", "list").out


def test_errors_are_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "jobs", "get", "fake:fakejob-0000000000000000")
    assert result.code == 4
    assert result.err.strip().splitlines() == ["not found: no job 'fake:fakejob-0000000000000000'"]
    result = run_cli(capsys, "jobs", "get", "no-provider-prefix")
    assert result.code == 2 and "PROVIDER:JOB_ID" in result.err


def test_debug_shows_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "--debug", "jobs", "get", "fake:fakejob-0000000000000000")
    assert result.code == 4
    assert "Traceback" in result.err and "JobNotFoundError" in result.err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "jobs", "create", "--epochz", "3")
    assert result.code == 2
    assert "--epochz" in result.err


def test_providers_lists_fake_with_capabilities(capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r["name"]: r for r in json.loads(run_cli(capsys, "providers", "--json").out)}
    fake = rows["fake"]
    assert fake["installed"] is True
    assert fake["capabilities"]["methods"] == ["dpo", "sft"]
    assert "fake" in run_cli(capsys, "providers").out


def test_config_show_sources_and_masking(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "anytune.toml"
    shutil.copy(SAMPLES / "anytune.toml", cfg)
    monkeypatch.setenv("ANYTUNE_CONFIG", str(cfg))
    monkeypatch.setenv("ANYTUNE_FAKE_SPEED", "4")
    shown = json.loads(run_cli(capsys, "config", "show", "--json").out)
    assert shown["provider"] == "fake"
    assert shown["profile"] == "try-it"
    assert shown["settings"]["speed"] == 4.0
    assert shown["sources"]["settings.speed"] == "ANYTUNE_FAKE_SPEED"
    assert shown["spec_defaults"]["base_model"] == "tiny-chat"
    human = run_cli(capsys, "config", "show").out
    assert "ANYTUNE_FAKE_SPEED" in human and "try-it" in human


def test_switch_provider_by_profile_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "anytune.toml"
    shutil.copy(SAMPLES / "anytune.toml", cfg)
    monkeypatch.setenv("ANYTUNE_CONFIG", str(cfg))
    ok = run_cli(capsys, "jobs", "create", "--training-file", TRAIN, "--wait", "--json")
    assert json.loads(ok.out)["status"] == "succeeded"
    monkeypatch.setenv("ANYTUNE_PROFILE", "fails")
    failed = run_cli(capsys, "jobs", "create", "--training-file", TRAIN, "--wait", "--json")
    assert failed.code == 6
    assert json.loads(failed.out)["status"] == "failed"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "--version")
    assert result.code == 0 and result.out.startswith("anytune ")


def test_python_dash_m_and_console_script_agree() -> None:
    import subprocess
    import sys

    a = subprocess.run([sys.executable, "-m", "anytune", "--version"], capture_output=True, text=True, check=True)
    exe = Path(sys.executable).with_name("anytune")
    b = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert a.stdout == b.stdout != ""
