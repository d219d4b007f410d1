"""The kit for providers outside anytune: a provider packaged on its own (samples/provider_template),
found through the ``anytune.providers`` entry-point group, passes the contract suite and runs jobs
by name exactly like a built-in one."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import anytune.provider_kit
import anytune.testing
from anytune import FineTuneJob, JobSpec, JobStatus, _registry
from anytune._provider import Provider
from anytune.providers.fake import FakeProvider
from anytune.testing import ProviderContract
from tests.test_exported_members import isort_key

TEMPLATE = Path(__file__).parents[1] / "samples" / "provider_template"


def _entry_point_of_template() -> str:
    text = (TEMPLATE / "pyproject.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("mycloud = "))
    return line.split("=", 1)[1].strip().strip('"')


@pytest.fixture
def installed_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Install the template as pip would for discovery: its package and a dist-info with its entry points."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "anytune_mycloud").symlink_to(TEMPLATE / "anytune_mycloud")
    dist = site / "anytune_mycloud-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: anytune-mycloud\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[anytune.providers]\nmycloud = {_entry_point_of_template()}\n")
    monkeypatch.syspath_prepend(str(site))
    for name in [m for m in sys.modules if m.startswith("anytune_mycloud")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(_registry, "_entry_points_loaded", False)
    monkeypatch.setattr(_registry, "_extra", {})
    return "mycloud"


def _examples(tmp_path: Path, n: int = 12) -> Path:
    path = tmp_path / "train.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_entry_point_names_the_provider(installed_template: str) -> None:
    entry = _registry.entries()[installed_template]
    assert "entry point" in entry.origin
    assert _registry.load(installed_template).__name__ == "MyCloudProvider"


def test_a_job_by_name_through_the_entry_point(installed_template: str, tmp_path: Path) -> None:
    job = FineTuneJob.create(
        provider=installed_template, base_model="mc-small", training_file=_examples(tmp_path), options={"mycloud": {}}
    )
    assert job.ref.startswith("mycloud:mc-")
    assert job.wait(timeout=60).status is JobStatus.SUCCEEDED
    # Another handle, as another process would make it, re-attaches by reference.
    again = FineTuneJob.get(job.ref)
    assert again.status() is JobStatus.SUCCEEDED
    assert [r.ref for r in FineTuneJob.list()] == [job.ref]


class TestEntryPointProviderContract(ProviderContract):
    """The contract suite on the provider as the registry loads it (from the entry point)."""

    @pytest.fixture
    def provider(self, installed_template: str, tmp_path: Path) -> Provider[Any]:
        cls = _registry.load(installed_template)
        return cls(home=tmp_path / "home")

    @pytest.fixture
    def spec(self, tmp_path: Path) -> JobSpec:
        return JobSpec(base_model="mc-small", training_file=_examples(tmp_path))


class TestFakeProviderContract(ProviderContract):
    """The fake users test their applications with keeps the same contract."""

    @pytest.fixture
    def provider(self, tmp_path: Path) -> Provider[Any]:
        return FakeProvider(home=tmp_path / "home")

    @pytest.fixture
    def spec(self, tmp_path: Path) -> JobSpec:
        return JobSpec(base_model="tiny", training_file=_examples(tmp_path), fake={"seconds": 0.2})

    @pytest.fixture
    def missing_job_id(self) -> str:
        return "fakejob-0000000000000000"


class TestFakeProviderResumedContract(TestFakeProviderContract):
    """A scripted run that went back to its step-2 checkpoint and reported steps 2 and 3 again: the
    contract's one point (and one checkpoint) per step, in step order, is anytune's work here."""

    @pytest.fixture
    def spec(self, tmp_path: Path) -> JobSpec:
        timeline = [
            {"at": 0.0, "status": "running"},
            {"at": 0.02, "status": "running", "step": 1, "train_loss": 2.0},
            {"at": 0.04, "status": "running", "step": 2, "train_loss": 1.8, "valid_loss": 1.9},
            {"at": 0.06, "status": "running", "step": 3, "train_loss": 9.0},
            {"at": 0.08, "status": "running", "step": 2, "train_loss": 1.7, "valid_loss": 1.85},
            {"at": 0.1, "status": "running", "step": 3, "train_loss": 1.5, "valid_loss": 1.6},
            {"at": 0.12, "status": "succeeded"},
        ]
        return JobSpec(base_model="tiny", training_file=_examples(tmp_path), fake={"timeline": timeline})


@pytest.mark.parametrize("module", [anytune.provider_kit, anytune.testing])
def test_kit_modules_export_a_sorted_resolving_all(module: Any) -> None:
    assert module.__all__ == sorted(module.__all__, key=isort_key)
    fresh = importlib.reload(module) if module is anytune.provider_kit else module
    for name in fresh.__all__:
        assert getattr(fresh, name) is not None


def test_the_kit_is_enough_to_write_the_template() -> None:
    """The template imports anytune only through public modules: the kit is complete."""
    for path in (TEMPLATE / "anytune_mycloud").glob("*.py"):
        for line in path.read_text().splitlines():
            if line.startswith(("from anytune", "import anytune")) and not line.startswith("from anytune_mycloud"):
                module = line.split()[1]
                assert not any(part.startswith("_") for part in module.split(".")), f"{path.name}: {line}"


# -- a provider instance as the seam ------------------------------------------------------------------


def test_an_instance_is_used_as_given_and_its_jobs_are_stored(tmp_path: Path, anytune_home: Path) -> None:
    mine = FakeProvider(home=tmp_path / "elsewhere")
    job = FineTuneJob.create(provider=mine, base_model="tiny", training_file=_examples(tmp_path), fake={"seconds": 0})
    assert job._provider is mine and (tmp_path / "elsewhere" / "fake").is_dir()
    assert [r.ref for r in FineTuneJob.list()] == [job.ref]  # the default store was lent to it
    assert FineTuneJob.get(job.ref, provider=mine).wait(timeout=10).status is JobStatus.SUCCEEDED


def test_settings_beside_an_instance_are_refused_before_anything_happens(tmp_path: Path) -> None:
    from anytune.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        FineTuneJob.create(
            provider=FakeProvider(), settings={"speed": 2.0}, base_model="t", training_file=_examples(tmp_path)
        )
    assert caught.value.field == "settings"
    assert FineTuneJob.list() == []


def test_an_instance_of_another_provider_cannot_attach_to_a_job() -> None:
    from anytune.errors import ConfigError

    with pytest.raises(ConfigError, match="is a 'openai' job") as caught:
        FineTuneJob.get("openai:ftjob-abc", provider=FakeProvider())
    assert caught.value.field == "provider"


def test_an_options_section_for_another_provider_is_refused(tmp_path: Path) -> None:
    from anytune.errors import NotSupportedError

    with pytest.raises(NotSupportedError) as caught:
        FineTuneJob.create(
            provider="fake",
            base_model="t",
            training_file=_examples(tmp_path),
            options={"mycloud": {"priority": "high"}},
        )
    assert caught.value.field == "mycloud"
    assert FineTuneJob.list() == []


def test_one_azure_section_at_a_time(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="give azureml or the older combined azure section"):
        JobSpec(base_model="m", training_file=tmp_path / "t.jsonl", azure={}, azureml={"deployment": "managed"})


def test_an_instances_settings_are_kept_for_reattaching_by_reference(tmp_path: Path) -> None:
    from anytune.providers.fake import FakeSettings
    from anytune.testing import FakeSettings as Exported

    assert Exported is FakeSettings
    mine = FakeProvider(FakeSettings(speed=4.0))
    job = FineTuneJob.create(provider=mine, base_model="tiny", training_file=_examples(tmp_path), fake={"seconds": 0})
    row = FineTuneJob.list()[0]
    assert row.ref == job.ref and row.settings == {"speed": 4.0}
    again = FineTuneJob.get(job.ref)  # by reference alone, as another process would
    assert again._provider.settings == FakeSettings(speed=4.0)
