"""``anytune push REF --repo OWNER/NAME``: a succeeded local job's adapter, published to the Hub.

The real huggingface_hub client talks to the fake Hub (tests/providers/hf_fake.py) served on a
loopback port and given as ``HF_ENDPOINT``, as a user's environment would name another Hub. The
local job is a run directory in the state the trainer leaves it (adapter folder, result, metrics),
written without training.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from anytune import FineTunedModel, JobSpec, JobStatus, MetricPoint
from anytune.errors import NotSupportedError, UsageError
from anytune.local_backend.rundir import RunDir
from anytune.providers.local import LocalProvider
from tests.clitools import run_cli
from tests.conftest import FakeClock, chat_example, write_jsonl
from tests.providers.hf_fake import TOKEN, USER, FakeHub
from tests.providers.hf_support import install

BASE = "Qwen/Qwen2.5-0.5B-Instruct"
ADAPTER_FILES = {
    "adapter_config.json": b'{"peft_type": "LORA", "r": 8}',
    "adapter_model.safetensors": b"\x00weights\x01" * 8,
    "tokenizer.json": b'{"version": "1.0"}',
    "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
    "README.md": b"peft's placeholder card",
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock) -> Iterator[FakeHub]:
    """The fake Hub on a loopback port, as ``HF_ENDPOINT``; ``HF_TOKEN`` set, the login cache isolated.

    huggingface_hub reads ``HF_ENDPOINT`` once, when imported (before this test), into
    ``constants.ENDPOINT``, where its own first-use request (``/api/agent-harnesses``) goes: that
    constant is pointed at the fake too, as a process started with ``HF_ENDPOINT`` set would have it.
    """
    from huggingface_hub import constants

    for hub in install(monkeypatch, tmp_path, clock):
        with hub.serve() as url:
            monkeypatch.setenv("HF_ENDPOINT", url)
            monkeypatch.setattr(constants, "ENDPOINT", url)
            yield hub


def _run(workdir: Path, status: JobStatus, key: str = "k") -> RunDir:
    """A local run as the worker leaves it; ``status`` SUCCEEDED gives the full adapter folder."""
    provider = LocalProvider()
    train = write_jsonl(workdir / "train.jsonl", [chat_example(i) for i in range(3)])
    spec = JobSpec(
        base_model=BASE,
        training_file=train,
        hyperparameters={"epochs": 2, "learning_rate": 2e-4, "batch_size": 4},
        lora={"r": 8, "alpha": 16},
    )
    run = RunDir(provider.runs_dir / provider.job_id_for(key))
    run.create(spec, idempotency_key=key)
    if status is JobStatus.SUCCEEDED:
        run.adapter_dir.mkdir(parents=True, exist_ok=True)
        for name, data in ADAPTER_FILES.items():
            (run.adapter_dir / name).write_bytes(data)
        (run.adapter_dir / "anytune_spec.json").write_text(json.dumps(spec.model_dump(mode="json")))
        for step, loss in ((1, 2.5), (2, 1.25)):
            run.log_metric(MetricPoint(step=step, train_loss=loss, valid_loss=loss + 0.5))
        run.write_result(
            {
                "adapter_path": str(run.adapter_dir),
                "final_train_loss": 1.25,
                "final_valid_loss": 1.75,
                "steps": 2,
                "train_tokens": 321,
            }
        )
        run.set_status(JobStatus.SUCCEEDED, step=2, total_steps=2)
    elif status is not JobStatus.QUEUED:
        run.set_status(status)
    return run


def _hub_calls(hub: FakeHub) -> list[str]:
    return [f"{r.method} {r.path}" for r in hub.requests if r.path != "/api/agent-harnesses"]


def test_push_publishes_the_adapter_and_a_model_card_in_one_commit(
    capsys: pytest.CaptureFixture[str], hub: FakeHub, workdir: Path
) -> None:
    run = _run(workdir, JobStatus.SUCCEEDED)
    result = run_cli(capsys, "push", f"local:{run.id}", "--repo", f"{USER}/tiny-adapter")
    assert result.code == 0, result.err

    repo = hub.repos[("model", f"{USER}/tiny-adapter")]
    assert repo.private and len(repo.commits) == 1
    for name, data in ADAPTER_FILES.items():
        if name != "README.md":
            assert repo.files[name] == data, name
    card = repo.files["README.md"].decode()
    assert card.startswith("---\nbase_model: Qwen/Qwen2.5-0.5B-Instruct\nlibrary_name: peft")
    for shown in ("| final train loss | 1.2500 |", "| final validation loss | 1.7500 |", "| steps | 2 |"):
        assert shown in card
    assert "| training tokens | 321 |" in card and "| lora.r | 8 |" in card and "| learning_rate | 0.0002 |" in card
    assert [json.loads(line)["step"] for line in repo.files["metrics.jsonl"].decode().splitlines()] == [1, 2]
    spec = json.loads(repo.files["anytune_spec.json"])
    assert spec["training_file"] == "train.jsonl"  # the file's name, not where the user keeps it
    assert json.loads(repo.files["anytune_result.json"])["final_train_loss"] == 1.25
    assert str(workdir) not in repo.files["anytune_result.json"].decode()

    # The URL and the revision, each on a line of its own; the token nowhere.
    url, revision = result.out.split()
    assert url.endswith(f"/{USER}/tiny-adapter") and revision == repo.head
    assert TOKEN not in result.out + result.err
    assert sum(1 for call in _hub_calls(hub) if "/commit/" in call) == 1


def test_without_the_trainers_figures_the_card_shows_the_standing_last_point(
    capsys: pytest.CaptureFixture[str], hub: FakeHub, workdir: Path
) -> None:
    """A result.json with no final losses (a trainer that did not say): the card's figures come from
    the metrics, the last step's last report (step 3 again after a resume), not the first report."""
    run = _run(workdir, JobStatus.SUCCEEDED)
    run.write_result({"adapter_path": str(run.adapter_dir), "train_tokens": 321})
    run.log_metric(MetricPoint(step=3, train_loss=9.0))
    run.log_metric(MetricPoint(step=3, train_loss=0.5, valid_loss=0.75))
    result = run_cli(capsys, "push", f"local:{run.id}", "--repo", f"{USER}/from-metrics")
    assert result.code == 0, result.err
    card = hub.repos[("model", f"{USER}/from-metrics")].files["README.md"].decode()
    for shown in ("| final train loss | 0.5000 |", "| final validation loss | 0.7500 |", "| steps | 3 |"):
        assert shown in card, card
    assert "9.0000" not in card


def test_push_public_and_json(capsys: pytest.CaptureFixture[str], hub: FakeHub, workdir: Path) -> None:
    run = _run(workdir, JobStatus.SUCCEEDED)
    result = run_cli(capsys, "push", f"local:{run.id}", "--repo", f"{USER}/open", "--public", "--json")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    repo = hub.repos[("model", f"{USER}/open")]
    assert not repo.private
    assert shown["revision"] == repo.head and shown["repo"] == f"{USER}/open"
    assert set(shown["files"]) == set(repo.files)


@pytest.mark.parametrize("repo", ["bad--name", f"{USER}/a..b", "a/b/c", f"{USER}/-x", f"{USER}/x.git", "", "a b"])
def test_a_bad_repo_name_is_refused_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str], hub: FakeHub, workdir: Path, repo: str
) -> None:
    run = _run(workdir, JobStatus.SUCCEEDED)
    result = run_cli(capsys, "push", f"local:{run.id}", "--repo", repo)
    assert result.code == 2 and "is not a Hub repo id" in result.err, result.err
    assert _hub_calls(hub) == []


def test_an_unknown_job_is_not_found(capsys: pytest.CaptureFixture[str], hub: FakeHub) -> None:
    result = run_cli(capsys, "push", "local:run-0123456789abcdef", "--repo", f"{USER}/x")
    assert result.code == 4, result.err
    assert _hub_calls(hub) == []


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.CANCELLED])
def test_an_unfinished_or_unsuccessful_job_is_refused(
    capsys: pytest.CaptureFixture[str], hub: FakeHub, workdir: Path, status: JobStatus
) -> None:
    run = _run(workdir, status)
    result = run_cli(capsys, "push", f"local:{run.id}", "--repo", f"{USER}/x")
    assert result.code == 2, result.err
    assert f"is {status.value}: only a succeeded job's result can be pushed" in result.err
    assert _hub_calls(hub) == []


def test_no_token_names_hf_token_and_sends_nothing(
    capsys: pytest.CaptureFixture[str], hub: FakeHub, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    run = _run(workdir, JobStatus.SUCCEEDED)
    result = run_cli(capsys, "push", f"local:{run.id}", "--repo", f"{USER}/x")
    assert result.code == 2 and "HF_TOKEN" in result.err, result.err
    assert _hub_calls(hub) == []


def test_a_token_the_hub_refuses_is_an_authentication_error_and_stays_masked(
    capsys: pytest.CaptureFixture[str], hub: FakeHub, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "hf_WRONGtokenZyXwVuTsRqPoNmLkJiHg9876"
    monkeypatch.setenv("HF_TOKEN", wrong)
    run = _run(workdir, JobStatus.SUCCEEDED)
    result = run_cli(capsys, "push", f"local:{run.id}", "--repo", f"{USER}/x")
    assert result.code == 7, result.err
    assert wrong not in result.out + result.err
    assert ("model", f"{USER}/x") not in hub.repos


def test_a_hugging_face_jobs_result_says_where_it_is() -> None:
    model = FineTunedModel(
        provider="huggingface", job_ref="huggingface:alice/abc", hub_repo="alice/adapter", revision="0123abc"
    )
    with pytest.raises(UsageError, match=r"on the Hub already: alice/adapter at revision 0123abc"):
        model.push_to_hub("alice/copy")
    hosted = FineTunedModel(provider="openai", job_ref="openai:ftjob-1", model_id="ft:gpt-4o-mini:org::x")
    with pytest.raises(NotSupportedError, match="no adapter weights here"):
        hosted.push_to_hub("alice/copy")


def test_a_storage_failure_during_the_lfs_upload_is_a_clear_error_and_publishes_nothing(
    capsys: pytest.CaptureFixture[str], hub: FakeHub, workdir: Path
) -> None:
    # The weights go through LFS; huggingface_hub raises a failed storage PUT as
    # RuntimeError("Error while uploading ...") from the HTTP error, which must not reach the user
    # as an internal error.
    hub.fail("PUT", r"^/__storage/", status=403, body={"error": "Request has expired"})
    run = _run(workdir, JobStatus.SUCCEEDED)
    result = run_cli(capsys, "push", f"local:{run.id}", "--repo", f"{USER}/tiny-adapter")
    assert result.code == 1, result.err  # the service refused: a provider error
    assert "adapter_model.safetensors" in result.err and "Request has expired" in result.err
    assert result.err.count("HTTP 403") == 1 and "Traceback" not in result.err
    assert "\r" not in result.err  # huggingface_hub's bar stays off where stderr is not a terminal
    assert TOKEN not in result.out + result.err
    repo = hub.repos.get(("model", f"{USER}/tiny-adapter"))
    assert repo is None or not repo.commits
