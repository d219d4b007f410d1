"""A job reference's id is checked against its service's shape before it reaches a URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from anytune import AsyncFineTuneJob, FineTuneJob
from anytune.errors import JobNotFoundError
from tests.clitools import run_cli
from tests.providers import hf_support
from tests.providers.openai_support import make_rig

HOSTILE = ["../../files", "ftjob-1/../../files", "ftjob-%2e%2e", "ftjob 1", "ftjob-", "ftjob-\n1"]


@pytest.mark.parametrize("job_id", HOSTILE)
def test_an_openai_id_that_is_not_a_job_id_never_reaches_the_service(tmp_path: Path, job_id: str) -> None:
    rig = make_rig(tmp_path, "openai")
    with pytest.raises(JobNotFoundError, match="not a openai job id"):
        FineTuneJob.get(f"openai:{job_id}", provider=rig.provider())
    assert rig.service.log == []


def test_the_async_handle_checks_too(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    with pytest.raises(JobNotFoundError):
        asyncio.run(AsyncFineTuneJob.get("azure-openai:../../files", provider=rig.provider()))
    assert rig.service.log == []


@pytest.mark.parametrize("job_id", ["../x", "user/../x", "user/x/y", "user/x%2f", "..", "user/"])
def test_a_hugging_face_id_that_is_not_namespace_slash_id_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, job_id: str
) -> None:
    from anytune.testing import FakeClock

    hub_iter = hf_support.install(monkeypatch, tmp_path, FakeClock())
    hub = next(hub_iter)
    with pytest.raises(JobNotFoundError):
        FineTuneJob.get(f"huggingface:{job_id}", provider=hf_support.provider(hub))
    assert hub.calls("GET", r"/api/jobs") == []
    hub_iter.close()


@pytest.mark.parametrize("ref", ["fake:../x", "local:../../etc", "azureml:a/b", "azureml:x y"])
def test_the_default_shape_admits_no_slash_percent_or_space(ref: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "jobs", "get", ref)
    assert result.code == 4
    assert "not a" in result.err or "no job" in result.err
    assert "Traceback" not in result.err


def test_the_cli_refuses_a_traversal_with_exit_4(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "a" * 32)
    result = run_cli(capsys, "jobs", "get", "openai:../../files")
    assert result.code == 4 and "not a openai job id" in result.err
