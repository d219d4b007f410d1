"""The CLI reaches what the Python API does: every spec field (``--set``), the common knobs as
flags, "did you mean" for a misspelt field wherever a spec comes from, pause/resume, QLoRA defaults,
and ``data convert`` to standard output with ordinary file permissions."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from anytune import (
    Capabilities,
    ConfigError,
    FineTuneJob,
    JobRecord,
    JobStatus,
    NotSupportedError,
    ProviderEntry,
    register,
)
from anytune.providers.fake import FakeProvider
from tests.clitools import Result, fake_jobs, jobs_in_store, run_cli

SAMPLES = Path(__file__).parents[1] / "samples"
TRAIN = str(SAMPLES / "data" / "train.jsonl")


def home() -> Path:
    return Path(os.environ["ANYTUNE_HOME"])


def create(capsys: pytest.CaptureFixture[str], *extra: str) -> Result:
    return run_cli(
        capsys, "jobs", "create", "--provider", "fake", "--base-model", "tiny", "--training-file", TRAIN, *extra
    )


def stored_spec(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    (row,) = json.loads(run_cli(capsys, "jobs", "list", "--json").out)
    spec: dict[str, Any] = row["spec"]
    return spec


def refused(result: Result, *needles: str) -> None:
    """Exit 2, one line naming the problem, nothing created."""
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1, result.err
    for needle in needles:
        assert needle in result.err, f"{needle!r} not in {result.err!r}"
    assert jobs_in_store(home()) == 0 and fake_jobs(home()) == 0


# -- --set ------------------------------------------------------------------------------------------


def test_set_reaches_any_field_without_a_spec_file(capsys: pytest.CaptureFixture[str]) -> None:
    timeline = '[{"at": 0, "status": "running"}, {"at": 0.01, "status": "succeeded"}]'
    result = create(
        capsys,
        "--set",
        "hyperparameters.warmup_steps=10",
        "--set",
        "hyperparameters.learning_rate=1e-4",
        "--set",
        "lora.target_modules=q_proj,v_proj",
        "--set",
        "lora.use_rslora=true",
        "--set",
        "quantization=4bit",
        "--set",
        "tags.team=x",
        "--set",
        "tags.version=2",
        "--set",
        f"fake.timeline={timeline}",
    )
    assert result.code == 0, result.err
    spec = stored_spec(capsys)
    assert spec["hyperparameters"] == {"warmup_steps": 10, "learning_rate": 1e-4}
    assert spec["lora"] == {"target_modules": ["q_proj", "v_proj"], "use_rslora": True}
    assert spec["quantization"] == "4bit"
    assert spec["tags"] == {"team": "x", "version": "2"}
    assert [s["status"] for s in spec["fake"]["timeline"]] == ["running", "succeeded"]


def test_set_overrides_the_spec_file_and_flags_add_to_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(
        f'provider = "fake"\nbase_model = "tiny"\ntraining_file = "{TRAIN}"\n'
        "[hyperparameters]\nepochs = 1\nseed = 3\n[fake]\nseconds = 0\n",
        encoding="utf-8",
    )
    result = run_cli(
        capsys, "jobs", "create", "-f", str(spec_file), "--set", "hyperparameters.epochs=4", "--batch-size", "8"
    )
    assert result.code == 0, result.err
    assert stored_spec(capsys)["hyperparameters"] == {"epochs": 4, "seed": 3, "batch_size": 8}


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--set", "hyperparameters.epochs=2", "--epochs", "3"), ("hyperparameters.epochs", "--set and by a flag")),
        (("--set", "lora={r = 4}", "--lora-r", "8"), ("lora.r", "--set and by a flag")),
        (("--set", "tags={}", "--tag", "a=b"), ("tags", "--set and by a flag")),
        (("--set", "hyperparameters.warmup_step=3"), ("hyperparameters.warmup_step", "did you mean warmup_steps?")),
        (("--set", "warmup_steps=3"), ("did you mean hyperparameters.warmup_steps?",)),
        (("--set", "local.devcie=cpu"), ("local.devcie", "did you mean device?")),
        (("--set", "lora.r=abc"), ("lora.r", "valid integer")),
        (("--set", "provider=openai"), ("use --provider",)),
        (("--set", "local.device"), ("--set", "expected KEY=VALUE")),
        (("--set", "lora=8", "--set", "lora.r=4"), ("lora is set to 8",)),
    ],
)
def test_bad_set_fails_cleanly(capsys: pytest.CaptureFixture[str], args: tuple[str, ...], needles: tuple[str]) -> None:
    refused(create(capsys, *args), *needles)


# -- flags ------------------------------------------------------------------------------------------


def test_new_hyperparameter_flags(capsys: pytest.CaptureFixture[str]) -> None:
    result = create(
        capsys,
        "--warmup-steps",
        "10",
        "--gradient-accumulation-steps",
        "4",
        "--weight-decay",
        "0.01",
        "--lr-scheduler",
        "cosine",
        "--optimizer",
        "adamw_torch",
        "--validation-split",
        "0.1",
        "--report-to",
        "tensorboard",
        "--report-to",
        "mlflow",
        "--set",
        "fake.seconds=0",
    )
    assert result.code == 0, result.err
    spec = stored_spec(capsys)
    assert spec["hyperparameters"] == {
        "warmup_steps": 10,
        "gradient_accumulation_steps": 4,
        "weight_decay": 0.01,
        "lr_scheduler": "cosine",
        "optimizer": "adamw_torch",
        "validation_split": 0.1,
    }
    assert spec["report_to"] == ["tensorboard", "mlflow"]


def test_beta_flag_for_dpo(capsys: pytest.CaptureFixture[str]) -> None:
    result = create(capsys, "--method", "dpo", "--beta", "0.2", "--no-validate-data", "--dry-run")
    assert result.code == 0, result.err
    body = json.loads(result.out)["requests"][0]["body"]
    assert body["method"] == "dpo" and body["hyperparameters"] == {"beta": 0.2}


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--lr-scheduler", "cosin"), ("hyperparameters.lr_scheduler",)),
        (("--optimizer", "sgd"), ("hyperparameters.optimizer",)),
        (("--validation-split", "1.5"), ("hyperparameters.validation_split",)),
        (("--warmup-steps", "5", "--warmup-ratio", "0.1"), ("warmup_ratio or warmup_steps",)),
        (("--beta", "0.1"), ("beta", "dpo")),
    ],
)
def test_bad_flag_values_fail_cleanly(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], needles: tuple[str]
) -> None:
    refused(create(capsys, *args), *needles)


# -- did you mean, wherever a spec comes from -------------------------------------------------------


def test_misspelt_field_in_a_spec_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(
        f"provider: fake\nbase_model: tiny\ntraining_file: {TRAIN}\nhyperparameters:\n  warmup_step: 10\n",
        encoding="utf-8",
    )
    refused(
        run_cli(capsys, "jobs", "create", "-f", str(spec_file)),
        "field 'hyperparameters.warmup_step'",
        "did you mean warmup_steps?",
    )


def test_misspelt_field_in_profile_defaults(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_dir / "anytune.toml"
    config.write_text('[profiles.dev]\nprovider = "fake"\nspec = { lora = { dropuot = 0.1 } }\n', encoding="utf-8")
    monkeypatch.setenv("ANYTUNE_CONFIG", str(config))
    refused(
        run_cli(capsys, "jobs", "create", "--profile", "dev", "--base-model", "tiny", "--training-file", TRAIN),
        "profile 'dev'",
        "lora.dropuot",
        "did you mean dropout?",
    )


def test_misspelt_keyword_in_python(chat_jsonl: Path) -> None:
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(
            provider="fake", base_model="tiny", training_file=chat_jsonl, hyperparameters={"warmup_step": 3}
        )
    assert info.value.field == "hyperparameters.warmup_step"
    assert "did you mean warmup_steps?" in str(info.value)
    with pytest.raises(ConfigError, match=r"did you mean hyperparameters\.epochs\?"):
        FineTuneJob.plan(provider="fake", base_model="tiny", training_file=chat_jsonl, epochs=3)
    assert FineTuneJob.list() == []


# -- quantization without lora ----------------------------------------------------------------------


def test_quantization_alone_trains_with_the_lora_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    result = create(capsys, "--quantization", "4bit", "--set", "fake.seconds=0")
    assert result.code == 0, result.err
    spec = stored_spec(capsys)
    assert spec["quantization"] == "4bit" and spec["lora"] == {}


@pytest.mark.parametrize("provider", ["openai", "azureml"])
def test_quantization_alone_is_refused_for_quantization_where_it_is_not_offered(
    provider: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        provider,
        "--base-model",
        "gpt-4o-mini-2024-07-18",
        "--training-file",
        TRAIN,
        "--quantization",
        "4bit",
        "--dry-run",
    )
    # Which providers are listed depends on which ones this process has loaded (kubernetes among them
    # once its tests ran): the two that always can are named.
    refused(result, "not supported: quantization:", "Providers that can: huggingface, ")
    assert "local" in result.err.split("Providers that can:")[1]


# -- pause and resume -------------------------------------------------------------------------------


class PausableProvider(FakeProvider):
    """A fake whose jobs can be paused and resumed (it remembers the calls)."""

    name: ClassVar[str] = "pausable"
    capabilities: ClassVar[Capabilities] = FakeProvider.capabilities.model_copy(update={"pause": True})
    calls: ClassVar[list[tuple[str, str]]] = []

    def pause(self, job_id: str) -> JobRecord:
        self.calls.append(("pause", job_id))
        return self.get(job_id).model_copy(update={"status": JobStatus.PAUSED, "raw_status": "paused"})

    def resume(self, job_id: str) -> JobRecord:
        self.calls.append(("resume", job_id))
        return self.get(job_id)


@pytest.fixture
def pausable() -> Iterator[list[tuple[str, str]]]:
    register(ProviderEntry("pausable", f"{__name__}:PausableProvider"))
    PausableProvider.calls = []
    yield PausableProvider.calls


def test_pause_and_resume_a_job(pausable: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    made = run_cli(
        capsys, "jobs", "create", "-p", "pausable", "--base-model", "tiny", "--training-file", TRAIN, "--set",
        "fake.seconds=60",
    )  # fmt: skip
    assert made.code == 0, made.err
    ref = made.out.strip()
    paused = run_cli(capsys, "jobs", "pause", ref, "--json")
    assert paused.code == 0, paused.err
    assert json.loads(paused.out)["status"] == "paused"
    assert json.loads(paused.out)["ref"] == ref  # what the next command takes, like create/get/cancel
    (row,) = FineTuneJob.list(refresh=False)
    assert row.status == "paused"  # the store keeps the state the command saw
    resumed = run_cli(capsys, "jobs", "resume", ref)
    assert resumed.code == 0, resumed.err
    assert "running" in resumed.out or "queued" in resumed.out or "validating" in resumed.out
    paused_again = run_cli(capsys, "jobs", "pause", ref)
    assert paused_again.code == 0, paused_again.err
    resumed_json = run_cli(capsys, "jobs", "resume", ref, "--json")
    assert resumed_json.code == 0, resumed_json.err
    assert json.loads(resumed_json.out)["ref"] == ref
    job_id = ref.split(":", 1)[1]
    assert pausable == [("pause", job_id), ("resume", job_id), ("pause", job_id), ("resume", job_id)]


@pytest.mark.parametrize(
    ("verb", "can"), [("pause", "azure-openai, openai"), ("resume", "azure-openai, local, openai")]
)
def test_a_provider_that_cannot_pause_says_who_can(verb: str, can: str, capsys: pytest.CaptureFixture[str]) -> None:
    made = create(capsys, "--set", "fake.seconds=60")
    assert made.code == 0, made.err
    result = run_cli(capsys, "jobs", verb, made.out.strip())
    assert result.code == 2, result.err
    assert "not supported" in result.err and "fake cannot do this" in result.err
    assert f"Providers that can: {can}." in result.err
    assert "Traceback" not in result.err


def test_python_pause_names_the_providers_that_can(chat_jsonl: Path) -> None:
    job = FineTuneJob.create(provider="fake", base_model="tiny", training_file=chat_jsonl, fake={"seconds": 60})
    with pytest.raises(NotSupportedError) as info:
        job.pause()
    assert info.value.field == "pause" and info.value.provider == "fake"
    assert info.value.alternatives == ["azure-openai", "openai"]


# -- data convert -----------------------------------------------------------------------------------


def _prompt_completion(path: Path, rows: int = 3) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(rows)), encoding="utf-8"
    )
    return path


def test_convert_to_standard_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _prompt_completion(tmp_path / "pc.jsonl")
    result = run_cli(capsys, "data", "convert", str(src), "-", "--system", "Be brief.")
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [m["messages"][1]["content"] for m in lines] == ["q0", "q1", "q2"]
    assert lines[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "wrote 3 examples to standard output" in result.err
    assert not (tmp_path / "-").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pc.jsonl"]


def test_convert_to_standard_output_writes_nothing_for_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _prompt_completion(tmp_path / "pc.jsonl", rows=30)
    with src.open("a", encoding="utf-8") as f:
        f.write('{"prompt": "only a prompt"}\n')
    result = run_cli(capsys, "data", "convert", str(src), "-")
    assert result.code == 3
    assert result.out == ""
    assert "pc.jsonl:31: completion" in result.err and "nothing written" in result.err


def test_convert_to_a_terminal_shows_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "pc.jsonl"
    src.write_text(json.dumps({"prompt": "q\u009b2J", "completion": "a"}, ensure_ascii=False) + "\n", encoding="utf-8")
    capsys.readouterr()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    result = run_cli(capsys, "data", "convert", str(src), "-")
    assert result.code == 0, result.err
    assert "\u009b" not in result.out and "\\x9b2J" in result.out


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_converted_file_gets_ordinary_permissions(
    umask: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _prompt_completion(tmp_path / "pc.jsonl")
    dst = tmp_path / "chat.jsonl"
    old = os.umask(umask)
    try:
        result = run_cli(capsys, "data", "convert", str(src), str(dst))
    finally:
        os.umask(old)
    assert result.code == 0, result.err
    assert stat.S_IMODE(dst.stat().st_mode) == 0o666 & ~umask


def test_overwritten_file_keeps_its_permissions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _prompt_completion(tmp_path / "pc.jsonl")
    dst = tmp_path / "chat.jsonl"
    dst.write_text("old\n", encoding="utf-8")
    dst.chmod(0o640)
    result = run_cli(capsys, "data", "convert", str(src), str(dst), "--force")
    assert result.code == 0, result.err
    assert stat.S_IMODE(dst.stat().st_mode) == 0o640 and dst.read_text(encoding="utf-8").count("\n") == 3
