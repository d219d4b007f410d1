"""Retry-After is honoured up to the caller's deadline on every adapter, and any cap is one setting.

For OpenAI, Azure OpenAI, Azure ML (reads through azure-core's policy, and the create) and Hugging
Face, against their fakes: a 429 asking for 90 s is slept in full within the 300 s deadline; the
same hint that would start the retry past the deadline ends the call with the RateLimitError, and
nothing is slept past it; ``retry_after_max`` caps a hint the same way everywhere; the older
settings that capped every wait still do so when a profile sets them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anytune import FineTuneJob
from anytune.errors import RateLimitError
from tests.conftest import FakeClock, chat_example, write_jsonl
from tests.providers.openai_fake import Fault, Flavour
from tests.providers.openai_support import (
    MODEL,
    chat_file,
    make_rig,
    services_keep_to_their_schemas,  # noqa: F401 (autouse: every fake held to its published schemas)
)

DEADLINE = 300.0
OPENAI_JOB = r"/fine_tuning/jobs/[^/]+"


def throttled(seconds: float, times: int = 1) -> dict[str, Any]:
    return {"status": 429, "headers": {"Retry-After": str(int(seconds))}, "times": times}


# -- OpenAI and Azure OpenAI -------------------------------------------------------------------------


@pytest.fixture(params=["openai", "azure"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return request.param  # type: ignore[no-any-return]


def openai_get(flavour: Flavour, tmp_path: Path, hints: list[float], **settings: Any) -> tuple[list[float], Any]:
    """Submit, then read the job once with ``hints`` as the 429s before it; the sleeps and the outcome."""
    rig = make_rig(tmp_path, flavour)
    provider = rig.provider(**settings)
    job = FineTuneJob.create(provider=provider, base_model=MODEL, training_file=chat_file(tmp_path / "t.jsonl"))
    rig.sleeps.clear()
    faults = [Fault("status", 429, headers={"retry-after": str(int(h))}) for h in hints]
    rig.service.inject("GET", OPENAI_JOB, *faults)
    try:
        outcome: Any = provider.get(job.id)
    except RateLimitError as exc:
        outcome = exc
    return list(rig.sleeps), outcome


def test_openai_honours_a_90s_retry_after_in_full(flavour: Flavour, tmp_path: Path) -> None:
    sleeps, outcome = openai_get(flavour, tmp_path, [90])
    assert not isinstance(outcome, RateLimitError)
    assert sleeps == [90.0]  # cut at max_backoff (30 s) before


def test_openai_a_hint_past_the_deadline_ends_the_call(flavour: Flavour, tmp_path: Path) -> None:
    sleeps, outcome = openai_get(flavour, tmp_path, [90] * 6)
    assert isinstance(outcome, RateLimitError) and outcome.retry_after == 90.0
    assert sleeps == [90.0, 90.0, 90.0]  # a fourth wait would start the retry at 360 s


def test_openai_a_single_hint_past_the_deadline_is_not_slept(flavour: Flavour, tmp_path: Path) -> None:
    sleeps, outcome = openai_get(flavour, tmp_path, [400])
    assert isinstance(outcome, RateLimitError) and outcome.retry_after == 400.0 and sleeps == []


def test_openai_retry_after_max_caps_hints(flavour: Flavour, tmp_path: Path) -> None:
    sleeps, outcome = openai_get(flavour, tmp_path, [90], retry_after_max=45)
    assert not isinstance(outcome, RateLimitError) and sleeps == [45.0]


def test_openai_old_max_backoff_still_caps_every_wait(flavour: Flavour, tmp_path: Path) -> None:
    sleeps, _ = openai_get(flavour, tmp_path, [90], max_backoff=20)
    assert sleeps == [20.0]


# -- Hugging Face ------------------------------------------------------------------------------------

HF_JOB = r"^/api/jobs/alice/[^/]+$"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    pytest.importorskip("huggingface_hub")
    from tests.providers.hf_support import install

    yield from install(monkeypatch, tmp_path, clock)


def hf_get(hub: Any, clock: FakeClock, tmp_path: Path, fault: dict[str, Any], **settings: Any) -> Any:
    from anytune.providers.huggingface import HuggingFaceSettings
    from tests.providers.hf_support import BASE_MODEL, provider

    hf = provider(hub, HuggingFaceSettings(**settings))
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(12)])
    job = FineTuneJob.create(provider=hf, base_model=BASE_MODEL, lora={"r": 8}, training_file=train)
    clock.sleeps.clear()
    hub.fail("GET", HF_JOB, **fault)
    try:
        return hf.get(job.id)
    except RateLimitError as exc:
        return exc


def test_huggingface_honours_a_90s_retry_after_in_full(hub: Any, clock: FakeClock, tmp_path: Path) -> None:
    outcome = hf_get(hub, clock, tmp_path, throttled(90))
    assert not isinstance(outcome, RateLimitError) and clock.sleeps == [90.0]


def test_huggingface_a_hint_past_the_deadline_ends_the_call(hub: Any, clock: FakeClock, tmp_path: Path) -> None:
    outcome = hf_get(hub, clock, tmp_path, throttled(90, times=10))
    assert isinstance(outcome, RateLimitError) and outcome.retry_after == 90.0
    assert clock.sleeps == [90.0, 90.0, 90.0] and sum(clock.sleeps) <= DEADLINE


def test_huggingface_retry_after_max_and_old_max_backoff_cap_hints(hub: Any, clock: FakeClock, tmp_path: Path) -> None:
    assert not isinstance(hf_get(hub, clock, tmp_path, throttled(90), retry_after_max=45), RateLimitError)
    assert clock.sleeps == [45.0]
    assert not isinstance(hf_get(hub, clock, tmp_path, throttled(90), max_backoff=20), RateLimitError)
    assert clock.sleeps == [20.0]


# -- Azure ML ----------------------------------------------------------------------------------------


@pytest.fixture
def azureml(clock: FakeClock, anytune_home: Path) -> Callable[..., Any]:
    """``make(**settings)``: a provider and its fake, both on the test's clock."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("azure.ai.ml")
    pytest.importorskip("azure.identity")
    from anytune.providers.azureml import AzureMLProvider, AzureMLSettings
    from tests.providers.azureml_fake import RG, SUB, WS, FakeAzureML, FakeCredential

    fake = FakeAzureML(clock)

    def make(**settings: Any) -> tuple[Any, Any]:
        provider = AzureMLProvider(
            AzureMLSettings(subscription_id=SUB, resource_group=RG, workspace=WS, **settings),
            home=anytune_home,
            credential=FakeCredential(clock),
            transport=fake.transport(),
            sleep=clock.sleep,
            clock=clock,
        )
        return provider, fake

    return make


def azureml_submit(provider: Any, tmp_path: Path, key: str) -> Any:
    from anytune._spec import JobSpec

    train = write_jsonl(tmp_path / f"{key}.jsonl", [chat_example(i) for i in range(12)])
    return provider.submit(
        JobSpec.model_validate({"base_model": "Phi-3-mini-4k-instruct", "training_file": train}), idempotency_key=key
    )


def azureml_get(make: Callable[..., Any], clock: FakeClock, tmp_path: Path, fault: dict[str, Any], **s: Any) -> Any:
    provider, fake = make(**s)
    record = azureml_submit(provider, tmp_path, "reads")
    clock.sleeps.clear()
    fake.fail("GET", rf"/jobs/{record.id}$", **fault)
    try:
        return provider.get(record.id)
    except RateLimitError as exc:
        return exc


def test_azureml_reads_honour_a_90s_retry_after_in_full(
    azureml: Callable[..., Any], clock: FakeClock, tmp_path: Path
) -> None:
    outcome = azureml_get(azureml, clock, tmp_path, throttled(90))
    assert not isinstance(outcome, RateLimitError)
    assert clock.sleeps == [90.0]  # cut at retry_backoff_max (60 s) before


def test_azureml_reads_end_when_the_hint_passes_the_deadline(
    azureml: Callable[..., Any], clock: FakeClock, tmp_path: Path
) -> None:
    outcome = azureml_get(azureml, clock, tmp_path, throttled(90, times=10))
    assert isinstance(outcome, RateLimitError) and outcome.retry_after == 90.0
    assert clock.sleeps == [90.0, 90.0, 90.0] and sum(clock.sleeps) <= DEADLINE


def test_azureml_reads_follow_retry_after_max_and_the_old_cap(
    azureml: Callable[..., Any], clock: FakeClock, tmp_path: Path
) -> None:
    assert not isinstance(azureml_get(azureml, clock, tmp_path, throttled(90), retry_after_max=45), RateLimitError)
    assert clock.sleeps == [45.0]
    assert not isinstance(azureml_get(azureml, clock, tmp_path, throttled(90), retry_backoff_max=20), RateLimitError)
    assert clock.sleeps == [20.0]


def test_azureml_create_honours_a_90s_retry_after_and_the_deadline(
    azureml: Callable[..., Any], clock: FakeClock, tmp_path: Path
) -> None:
    provider, fake = azureml()
    fake.fail("PUT", r"/jobs/[^/]+$", **throttled(90))
    azureml_submit(provider, tmp_path, "create")
    assert 90.0 in clock.sleeps and len(fake.jobs) == 1

    provider, fake = azureml(retry_after_max=45)
    fake.fail("PUT", r"/jobs/[^/]+$", **throttled(90))
    clock.sleeps.clear()
    azureml_submit(provider, tmp_path, "capped")
    assert 45.0 in clock.sleeps and 90.0 not in clock.sleeps

    provider, fake = azureml()
    fake.fail("PUT", r"/jobs/[^/]+$", **throttled(400, times=5))
    clock.sleeps.clear()
    with pytest.raises(RateLimitError):
        azureml_submit(provider, tmp_path, "past")
    assert all(s < 400 for s in clock.sleeps)


# -- the setting, the same on every adapter ----------------------------------------------------------


def test_retry_after_max_is_one_setting_with_one_meaning() -> None:
    import math

    from anytune._retry import RetrySettings
    from anytune.providers.openai.clients import AzureOpenAISettings, OpenAISettings

    classes: list[type[Any]] = [OpenAISettings, AzureOpenAISettings]
    for module, name in (
        ("anytune.providers.azureml.workspace", "AzureMLSettings"),
        ("anytune.providers.huggingface.hub", "HuggingFaceSettings"),
    ):
        classes.append(getattr(pytest.importorskip(module), name))
    for cls in classes:
        assert issubclass(cls, RetrySettings)
        assert (
            cls.model_fields["retry_after_max"].description == RetrySettings.model_fields["retry_after_max"].description
        )
        assert cls().hint_cap == math.inf
        assert cls(retry_after_max=45).hint_cap == 45.0
        policy = cls(retry_after_max=45).retry_policy(max_backoff=5.0)
        assert policy.delay(0, hint=90.0, rand=0.0) == 45.0 and policy.delay(0, hint=None, rand=0.0) == 0.5


def test_old_setting_names_still_load_through_the_configuration(tmp_path: Path) -> None:
    from anytune._config import resolve
    from tests.providers.openai_support import QuickOpenAIProvider

    env = {
        "ANYTUNE_OPENAI_MAX_BACKOFF": "20",
        "ANYTUNE_OPENAI_MAX_ATTEMPTS": "3",
        "ANYTUNE_OPENAI_RETRY_DEADLINE": "99",
    }
    resolved = resolve(provider="openai", env=env, cwd=tmp_path, provider_class=QuickOpenAIProvider)
    s: Any = resolved.settings
    assert (s.max_attempts, s.retry_deadline, s.hint_cap) == (3, 99.0, 20.0)
    env["ANYTUNE_OPENAI_RETRY_AFTER_MAX"] = "45"
    resolved = resolve(provider="openai", env=env, cwd=tmp_path, provider_class=QuickOpenAIProvider)
    assert resolved.settings.hint_cap == 45.0  # type: ignore[attr-defined]
