"""The provider registry: lookup, suggestions, missing extras, entry points, capability checks."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from anytune import (
    Capabilities,
    ConfigError,
    FineTuneJob,
    JobRecord,
    JobSpec,
    JobStatus,
    Method,
    MissingDependencyError,
    NotSupportedError,
    ProviderEntry,
    UnknownProviderError,
    UsageError,
    _registry,
    register,
)
from anytune.providers.fake import FakeProvider


class NoLoraProvider(FakeProvider):
    name: ClassVar[str] = "nolora"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({Method.SFT}),
        hyperparameters=frozenset({"epochs", "batch_size"}),
        lora=False,
        suffix=False,
        min_examples=1,
    )


class LoraProvider(FakeProvider):
    name: ClassVar[str] = "withlora"
    capabilities: ClassVar[Capabilities] = Capabilities(methods=frozenset({Method.SFT}), lora=True, min_examples=1)


@pytest.fixture
def submits(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Register the test providers and record every submit they receive."""
    calls: list[Any] = []
    register(ProviderEntry("nolora", f"{__name__}:NoLoraProvider"))
    register(ProviderEntry("withlora", f"{__name__}:LoraProvider"))

    def spy(self: FakeProvider, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        calls.append(spec)
        return FakeProvider.submit(self, spec, idempotency_key=idempotency_key)

    monkeypatch.setattr(NoLoraProvider, "submit", spy)
    return calls


def create(provider: str, training_file: Path, **fields: Any) -> FineTuneJob:
    return FineTuneJob.create(provider=provider, base_model="tiny", training_file=training_file, **fields)


# -- lookup ---------------------------------------------------------------------------------------


def test_unknown_provider_suggests_the_close_name(chat_jsonl: Path) -> None:
    with pytest.raises(UnknownProviderError) as info:
        create("fak", chat_jsonl)
    error = info.value
    assert isinstance(error, ConfigError) and error.field == "provider"
    assert error.name == "fak" and error.suggestions == ["fake"]
    assert "Did you mean 'fake'?" in str(error)
    assert "fake" in str(error).split("Known providers:")[1]


def test_unknown_provider_without_a_close_name(chat_jsonl: Path) -> None:
    with pytest.raises(UnknownProviderError) as info:
        create("zzzzzzzz", chat_jsonl)
    assert info.value.suggestions == [] and "Did you mean" not in str(info.value)


def test_runtime_registration_is_used_and_can_be_removed(submits: list[Any], chat_jsonl: Path) -> None:
    job = create("nolora", chat_jsonl, fake=None)
    assert job.provider == "nolora" and job.ref.startswith("nolora:")
    assert len(submits) == 1
    assert _registry.entries()["nolora"].target == f"{__name__}:NoLoraProvider"
    _registry.unregister("nolora")
    with pytest.raises(UnknownProviderError):
        create("nolora", chat_jsonl)


def test_registered_subclass_keeps_its_own_name(submits: list[Any], chat_jsonl: Path) -> None:
    job = create("nolora", chat_jsonl)
    again = FineTuneJob.get(job.ref)
    assert type(again._provider) is NoLoraProvider
    (row,) = FineTuneJob.list(provider="nolora")
    assert row.ref == job.ref


# -- missing dependencies ---------------------------------------------------------------------


def test_missing_required_module_names_the_extra(chat_jsonl: Path, anytune_home: Path) -> None:
    register(
        ProviderEntry(
            "needs-sdk", "anytune.providers.fake:FakeProvider", extra="acme", requires=("anytune_test_missing_sdk",)
        )
    )
    entry = _registry.entries()["needs-sdk"]
    assert entry.missing() == ["anytune_test_missing_sdk"] and not entry.installed

    with pytest.raises(MissingDependencyError) as info:
        create("needs-sdk", chat_jsonl)

    assert 'pip install "anytune[acme]"' in str(info.value)
    assert info.value.package == "anytune_test_missing_sdk" and info.value.extra == "acme"
    assert isinstance(info.value, ImportError) and isinstance(info.value, UsageError)
    assert FineTuneJob.list() == [] and not (anytune_home / "fake").exists()


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for throw-away modules and distributions."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        if name.startswith(("acme_", "broken_")):
            del sys.modules[name]


def test_provider_module_needing_a_missing_sdk(site_dir: Path) -> None:
    (site_dir / "broken_provider.py").write_text("import anytune_test_missing_sdk\n")
    register(ProviderEntry("broken", "broken_provider:Provider", extra="broken-extra"))
    with pytest.raises(MissingDependencyError) as info:
        _registry.load("broken")
    assert 'pip install "anytune[broken-extra]"' in str(info.value)
    with pytest.raises(MissingDependencyError):
        FineTuneJob.plan(provider="broken", base_model="m", training_file="x.jsonl", validate_data=False)


def test_listing_capabilities_survives_a_broken_provider(site_dir: Path) -> None:
    register(ProviderEntry("gone", "acme_no_such_module:Provider"))
    caps = _registry.capabilities()
    assert "fake" in caps and "gone" not in caps


# -- entry points -----------------------------------------------------------------------------


ACME_MODULE = """
from typing import ClassVar

from anytune.providers.fake import FakeProvider


class AcmeProvider(FakeProvider):
    name: ClassVar[str] = "acme"
"""


def test_third_party_provider_from_an_entry_point(
    site_dir: Path, chat_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (site_dir / "acme_anytune.py").write_text(textwrap.dedent(ACME_MODULE))
    dist = site_dir / "acme_anytune-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-anytune\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[anytune.providers]\nacme = acme_anytune:AcmeProvider\n")
    monkeypatch.setattr(_registry, "_entry_points_loaded", False)
    monkeypatch.setattr(_registry, "_extra", {})

    entry = _registry.entries()["acme"]
    assert entry.target == "acme_anytune:AcmeProvider"
    assert "entry point" in entry.origin

    job = FineTuneJob.create(provider="acme", base_model="tiny", training_file=chat_jsonl, fake={"seconds": 0.1})
    assert job.ref.startswith("acme:")
    assert job.wait().status is JobStatus.SUCCEEDED
    assert type(job._provider).__name__ == "AcmeProvider"


def test_runtime_registration_beats_an_entry_point(site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = site_dir / "acme_other-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-other\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[anytune.providers]\nacme2 = acme_other:Provider\n")
    monkeypatch.setattr(_registry, "_entry_points_loaded", False)
    monkeypatch.setattr(_registry, "_extra", {})
    register(ProviderEntry("acme2", "anytune.providers.fake:FakeProvider"))
    assert _registry.entries()["acme2"].target == "anytune.providers.fake:FakeProvider"


# -- capability checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"lora": {"r": 8}}, "lora"),
        ({"method": "dpo"}, "method"),
        ({"hyperparameters": {"learning_rate": 1e-4}}, "hyperparameters.learning_rate"),
        ({"suffix": "v1"}, "suffix"),
        ({"fake": {"seconds": 1}}, "fake"),
    ],
)
def test_unsupported_request_fails_before_submit(
    submits: list[Any], chat_jsonl: Path, anytune_home: Path, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(NotSupportedError) as info:
        create("nolora", chat_jsonl, **fields)  # data checks on: the capability check comes first
    error = info.value
    assert error.field == field and error.provider == "nolora"
    assert str(error).startswith(f"{field}:") and "nolora" in str(error)
    assert submits == []
    assert FineTuneJob.list() == [] and not (anytune_home / "fake").exists()


def test_not_supported_names_providers_that_can(submits: list[Any], chat_jsonl: Path) -> None:
    with pytest.raises(NotSupportedError) as info:
        create("nolora", chat_jsonl, lora={"r": 8})
    assert "withlora" in info.value.alternatives
    assert "nolora" not in info.value.alternatives and "fake" not in info.value.alternatives
    assert "withlora" in str(info.value)


def test_every_problem_is_listed(submits: list[Any], chat_jsonl: Path) -> None:
    with pytest.raises(NotSupportedError) as info:
        create("nolora", chat_jsonl, method="dpo", lora={"r": 8}, suffix="x")
    assert info.value.field == "method"
    assert "lora" in str(info.value) and "suffix" in str(info.value)


def test_plan_checks_capabilities_too(submits: list[Any], chat_jsonl: Path) -> None:
    with pytest.raises(NotSupportedError):
        FineTuneJob.plan(provider="nolora", base_model="tiny", training_file=chat_jsonl, lora={"r": 4})


def test_fake_provider_accepts_lora_and_dpo(chat_jsonl: Path) -> None:
    plan = FineTuneJob.plan(
        provider="fake",
        base_model="tiny",
        training_file=chat_jsonl,
        method="dpo",
        lora={"r": 4},
        quantization="4bit",
        validate_data=False,
    )
    assert plan.requests[0].body["method"] == "dpo"
