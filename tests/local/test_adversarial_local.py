"""Edge cases of the local backend found by trying to break it: tiny files with a validation split,
model folders with a broken tokenizer, and what the CLI leaves behind when it refuses a job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from anytune import JobStatus, MetricPoint
from tests.clitools import jobs_in_store, run_cli
from tests.local import trainer_helpers as H
from tests.providers.hf_fake import USER, FakeHub
from tests.test_push import _run as succeeded_run
from tests.test_push import hub  # noqa: F401  (the fake Hub fixture)

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.build(tmp_path_factory.mktemp("tiny") / "model")


def _runs(home: Path) -> list[Path]:
    runs = home / "runs"
    return sorted(runs.iterdir()) if runs.exists() else []


# -- validation_split of a file too small to split --------------------------------------------------


def test_validation_split_of_a_one_example_file_is_refused_before_the_job_exists(
    capsys: pytest.CaptureFixture[str], anytune_home: Path, workdir: Path, model_dir: Path
) -> None:
    """The worker could only fail: say so at create (exit 3, naming file and field), leave nothing."""
    one = H.chat_file(workdir / "one.jsonl", n=1)
    args = ["jobs", "create", "-p", "local", "--base-model", str(model_dir), "--training-file", str(one)]
    result = run_cli(capsys, *args, "--validation-split", "0.5", "--set", "local.device=cpu")
    assert result.code == 3, result.err
    assert "one.jsonl" in result.err and "validation_split" in result.err and "2 examples" in result.err
    assert "Traceback" not in result.err
    assert _runs(anytune_home) == [] and jobs_in_store(anytune_home) == 0


@pytest.mark.parametrize(("content", "code", "says"), [(None, 2, "file not found"), ("", 3, "no examples")])
def test_validation_split_leaves_a_missing_or_empty_file_to_the_data_checks(
    capsys: pytest.CaptureFixture[str], workdir: Path, model_dir: Path, content: str | None, code: int, says: str
) -> None:
    data = workdir / "data.jsonl"
    if content is not None:
        data.write_text(content)
    args = ["jobs", "create", "-p", "local", "--base-model", str(model_dir), "--training-file", str(data)]
    result = run_cli(capsys, *args, "--validation-split", "0.5", "--set", "local.device=cpu")
    assert result.code == code and says in result.err, result.err


def test_validation_split_with_a_validation_file_is_not_counted_against_the_training_file(
    capsys: pytest.CaptureFixture[str], workdir: Path, model_dir: Path
) -> None:
    """The small-file check only concerns a split of the training file (dry run: nothing starts)."""
    two = H.chat_file(workdir / "two.jsonl", n=2)
    args = ["jobs", "create", "-p", "local", "--base-model", str(model_dir), "--training-file", str(two)]
    result = run_cli(capsys, *args, "--validation-split", "0.5", "--set", "local.device=cpu", "--dry-run", "--json")
    assert result.code == 0, result.err


# -- token counts of a model folder with a broken tokenizer -----------------------------------------


def _broken(model_dir: Path, tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    folder = tmp_path / name
    shutil.copytree(model_dir, folder)
    for filename, text in files.items():
        (folder / filename).write_text(text)
    return folder


@pytest.mark.parametrize(
    ("name", "files", "tokenizer"),
    [
        ("config-not-an-object", {"tokenizer_config.json": "[1, 2]"}, "tokenizer.json of"),
        ("tokenizer-json-cut-short", {"tokenizer.json": '{"version": '}, "approximation"),
        ("both-garbage", {"tokenizer_config.json": "nope", "tokenizer.json": "nope"}, "approximation"),
    ],
)
def test_a_broken_tokenizer_folder_is_counted_approximately_not_an_internal_error(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    workdir: Path,
    model_dir: Path,
    name: str,
    files: dict[str, str],
    tokenizer: str,
) -> None:
    folder = _broken(model_dir, tmp_path, name, files)
    data = H.chat_file(workdir / "train.jsonl", n=12)
    result = run_cli(capsys, "data", "validate", str(data), "-p", "local", "-m", str(folder), "--json")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    report = json.loads(result.out)
    assert tokenizer in report["tokenizer"] and report["tokens_exact"] is False
    assert report["tokens"]["total"] > 0


def test_a_chat_template_that_is_not_valid_jinja_does_not_claim_exact_counts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, workdir: Path, model_dir: Path
) -> None:
    """A template that renders no example at all: every count is an estimate, and the report says so."""
    broken = "{% for m in messages %}{{ m.content "
    folder = _broken(model_dir, tmp_path, "bad-template", {"chat_template.jinja": broken})
    config = json.loads((folder / "tokenizer_config.json").read_text())
    if "chat_template" in config:
        (folder / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": broken}))
    data = H.chat_file(workdir / "train.jsonl", n=12)
    result = run_cli(capsys, "data", "validate", str(data), "-p", "local", "-m", str(folder), "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["tokens_exact"] is False and "without its chat template" in report["tokenizer"]


# -- push after a resumed run -----------------------------------------------------------------------


def test_push_publishes_one_point_per_step_after_a_resume(
    capsys: pytest.CaptureFixture[str],
    hub: FakeHub,  # noqa: F811
    workdir: Path,
) -> None:
    """A run killed after step 4 with its checkpoint at step 2 logs steps 3 and 4 again when resumed:
    the published metrics.jsonl (one point per logging step, says the card) has each step once."""
    run = succeeded_run(workdir, JobStatus.SUCCEEDED)
    for step, loss in ((3, 9.0), (4, 9.0), (3, 1.0), (4, 0.5)):
        run.log_metric(MetricPoint(step=step, train_loss=loss))
    result = run_cli(capsys, "push", f"local:{run.id}", "--repo", f"{USER}/resumed")
    assert result.code == 0, result.err
    lines = hub.repos[("model", f"{USER}/resumed")].files["metrics.jsonl"].decode().splitlines()
    points = [json.loads(line) for line in lines]
    assert [p["step"] for p in points] == [1, 2, 3, 4]
    assert [p["train_loss"] for p in points[2:]] == [1.0, 0.5]  # the resumed run's word


@pytest.mark.parametrize(("n", "share", "held"), [(3, 0.5, 1), (5, 0.5, 2), (2, 0.5, 1), (10, 0.05, 1), (24, 0.25, 6)])
def test_validation_split_never_holds_out_more_than_its_share(n: int, share: float, held: int) -> None:
    from anytune.local_backend.hparams import split_validation

    train, valid = split_validation(n, share, seed=7)
    assert len(valid) == held and len(train) == n - held
    assert sorted(train + valid) == list(range(n))
