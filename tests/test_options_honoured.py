"""Options a provider accepts are honoured, or refused before anything happens (issue 10).

``output_name`` names the output only where the service registers a model or a repo under a name
(Azure ML, Hugging Face); elsewhere it is refused, naming the field and what to use instead.
``local.output_dir`` must be a new or empty folder (the finished job writes its adapter there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from anytune import ConfigError, FineTuneJob, JobSpec, NotSupportedError
from anytune._capabilities import problems
from anytune.local_backend.rundir import RunDir
from anytune.local_backend.worker import ExportingRunDir, classify, export_outputs
from anytune.providers.azureml.adapter import AzureMLProvider
from anytune.providers.huggingface.adapter import HuggingFaceProvider
from anytune.providers.local import LocalProvider
from tests.providers.openai_support import make_rig


def _spec(path: Path, **fields: Any) -> JobSpec:
    return JobSpec(base_model="tiny", training_file=path, **fields)


@pytest.mark.parametrize("flavour", ["openai", "azure"])
def test_openai_and_azure_openai_refuse_output_name_before_any_upload(
    flavour: Any, tmp_path: Path, chat_jsonl: Path
) -> None:
    rig = make_rig(tmp_path, flavour)
    with pytest.raises(NotSupportedError) as info:
        FineTuneJob.create(
            provider=rig.provider(), base_model="gpt-4o-mini-2024-07-18", training_file=chat_jsonl, output_name="mine"
        )
    error = info.value
    assert error.field == "output_name" and str(error).startswith("output_name:")
    assert "suffix" in str(error)  # what the service takes instead
    assert set(error.alternatives) == {"azureml", "huggingface"}
    assert rig.service.log == []
    assert FineTuneJob.list() == []


def test_fake_refuses_output_name(chat_jsonl: Path, anytune_home: Path) -> None:
    with pytest.raises(NotSupportedError) as info:
        FineTuneJob.create(provider="fake", base_model="tiny", training_file=chat_jsonl, output_name="mine")
    assert info.value.field == "output_name" and "suffix" in str(info.value)
    assert set(info.value.alternatives) == {"azureml", "huggingface"}
    assert FineTuneJob.list() == [] and not (anytune_home / "fake").exists()


@pytest.mark.parametrize("field", ["output_name", "suffix"])
def test_local_refuses_names_and_points_to_output_dir(chat_jsonl: Path, anytune_home: Path, field: str) -> None:
    with pytest.raises(NotSupportedError) as info:
        FineTuneJob.create(provider="local", base_model="tiny", training_file=chat_jsonl, **{field: "mine"})
    assert info.value.field == field and "local.output_dir" in str(info.value)
    assert FineTuneJob.list() == [] and not (anytune_home / "runs").exists()


@pytest.mark.parametrize("provider", [AzureMLProvider, HuggingFaceProvider])
def test_output_name_is_accepted_where_it_names_the_output(provider: Any, chat_jsonl: Path) -> None:
    assert provider.capabilities.output_name
    assert problems(_spec(chat_jsonl, output_name="mine"), provider.capabilities) == []


def test_local_output_dir_that_is_a_file_is_refused(chat_jsonl: Path, tmp_path: Path, anytune_home: Path) -> None:
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(
            provider="local", base_model="tiny", training_file=chat_jsonl, local={"output_dir": str(target)}
        )
    assert info.value.field == "local.output_dir" and "is a file" in str(info.value)
    assert FineTuneJob.list() == [] and not (anytune_home / "runs").exists()


def test_local_output_dir_that_is_not_empty_is_refused(chat_jsonl: Path, tmp_path: Path, anytune_home: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("earlier work")
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(
            provider="local", base_model="tiny", training_file=chat_jsonl, local={"output_dir": str(target)}
        )
    assert info.value.field == "local.output_dir" and "not empty" in str(info.value)
    assert (target / "keep.txt").read_text() == "earlier work"
    assert FineTuneJob.list() == [] and not (anytune_home / "runs").exists()


@pytest.mark.parametrize("make", ["absent", "empty"])
def test_local_output_dir_new_or_empty_passes_validation(chat_jsonl: Path, tmp_path: Path, make: str) -> None:
    target = tmp_path / "out"
    if make == "empty":
        target.mkdir()
    LocalProvider().validate(_spec(chat_jsonl, local={"output_dir": str(target)}))


def _finished_run(tmp_path: Path, chat_jsonl: Path, target: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.create(_spec(chat_jsonl, local={"output_dir": str(target)}), idempotency_key="k")
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    return run


def test_the_worker_exports_the_adapter_before_the_result_is_recorded(tmp_path: Path, chat_jsonl: Path) -> None:
    target = tmp_path / "out"
    run = ExportingRunDir(_finished_run(tmp_path, chat_jsonl, target).path)
    run.write_result({"adapter_path": str(run.adapter_dir), "merged_path": None, "steps": 2})
    assert (target / "adapter_config.json").read_text() == "{}"
    assert run.result() == {"adapter_path": str(target), "merged_path": None, "steps": 2}
    assert (run.adapter_dir / "adapter_config.json").is_file()


def test_a_folder_filled_while_the_job_ran_is_not_overwritten(tmp_path: Path, chat_jsonl: Path) -> None:
    target = tmp_path / "out"
    run = _finished_run(tmp_path, chat_jsonl, target)
    target.mkdir()
    (target / "other.txt").write_text("someone else's")
    with pytest.raises(ConfigError) as info:
        export_outputs(run, {"adapter_path": str(run.adapter_dir)})
    assert info.value.field == "local.output_dir" and str(run.adapter_dir) in str(info.value)
    assert [p.name for p in target.iterdir()] == ["other.txt"]
    assert classify(info.value).code == "invalid_config"


def test_hugging_face_jobs_keep_refusing_local_output_dir(chat_jsonl: Path, tmp_path: Path) -> None:
    with pytest.raises(NotSupportedError) as info:
        HuggingFaceProvider().validate(_spec(chat_jsonl, local={"output_dir": str(tmp_path / "out")}))
    assert info.value.field == "local.output_dir" and "hf.output_repo" in str(info.value)
