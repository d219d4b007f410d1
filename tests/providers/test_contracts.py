"""The contract suite (anytune.testing.ProviderContract) on the built-in providers, each against its
fake service: what anytune relies on holds for every one of them, not only for the template."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anytune import JobSpec
from anytune._provider import Provider
from anytune.testing import FakeClock, ProviderContract
from tests.conftest import chat_example, write_jsonl
from tests.providers import hf_support
from tests.providers.hf_fake import FakeHub
from tests.providers.openai_support import make_rig


def _train(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(12)])


class TestOpenAIContract(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path) -> Provider[Any]:
        return make_rig(tmp_path, "openai").provider()

    @pytest.fixture
    def spec(self, tmp_path: Path) -> JobSpec:
        return JobSpec(base_model="gpt-4o-mini-2024-07-18", training_file=_train(tmp_path))

    @pytest.fixture
    def missing_job_id(self) -> str:
        return "ftjob-doesnotexist"


class TestAzureOpenAIContract(TestOpenAIContract):
    @pytest.fixture
    def provider(self, tmp_path: Path) -> Provider[Any]:
        return make_rig(tmp_path, "azure").provider()


class TestHuggingFaceContract(ProviderContract):
    @pytest.fixture
    def hub(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
        hub_iter = hf_support.install(monkeypatch, tmp_path, FakeClock())
        hub = next(hub_iter)
        hub.auto_run = True  # jobs move on as they are read, as a real job does in time
        yield hub
        hub_iter.close()

    @pytest.fixture
    def provider(self, hub: FakeHub) -> Provider[Any]:
        return hf_support.provider(hub)

    @pytest.fixture
    def spec(self, tmp_path: Path) -> JobSpec:
        return JobSpec(base_model=hf_support.BASE_MODEL, training_file=_train(tmp_path))

    @pytest.fixture
    def missing_job_id(self) -> str:
        return "anytune-user/0000000000000000000000aa"
