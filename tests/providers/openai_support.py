"""Helpers shared by the OpenAI / Azure OpenAI adapter tests: providers wired to the fake service
(its HTTP client, recorded sleeps, no jitter, an Entra ID token), settings for each flavour, and
a sleep recorder.

Tests build a provider with :meth:`Rig.provider` and pass it to ``FineTuneJob.create(provider=...)``
or ``FineTuneJob.get(ref, provider=...)``.  Where a test must go by name (a profile, the CLI),
:func:`register_by_name` points the registry row at a subclass that wires itself to the fake.

Every fake service a test makes is held to its published description: a test module imports
:func:`services_keep_to_their_schemas` (an autouse fixture), which fails the test if any request
the adapter sent or any answer the fake gave broke the schema of its surface.  A test that breaks
one on purpose says so by clearing ``violations`` after checking them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from anytune import _registry
from anytune._registry import ProviderEntry
from anytune.providers.openai import AzureOpenAIProvider, OpenAIProvider
from tests.conftest import chat_example, write_jsonl
from tests.providers.openai_fake import FakeOpenAIService, Flavour

OPENAI_KEY = "sk-test-openai-key-0123456789abcdefABCD"
AZURE_KEY = "azkey0123456789abcdef0123456789ab"
ENTRA_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbnl0dW5lIn0.c2lnbmF0dXJlLWZha2UtdG9rZW4"
MODEL = "gpt-4o-mini-2024-07-18"
OPENAI_BASE = "https://api.openai.test/v1"
AZURE_ENDPOINT = "https://anytune-test.openai.azure.com"
API_VERSION = "v1"  # the default surface, {endpoint}/openai/v1/
#: A reinforcement grader as OpenAI's reference shows it (StringCheckGrader).
STRING_CHECK_GRADER = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


class Sleeps(list[float]):
    """Records every retry/back-off sleep instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        assert seconds >= 0
        self.append(seconds)


# The job handle polls at the provider's interval with time.sleep: no waiting against a fake. The
# fake's list never lags its writes, so no settle window either (tests/test_mechanisms.py and
# tests/test_submit_outcome.py cover a lagging list).
class QuickOpenAIProvider(OpenAIProvider):
    poll_interval: ClassVar[float] = 0.0
    create_settle: ClassVar[float] = 0.0


class QuickAzureOpenAIProvider(AzureOpenAIProvider):
    poll_interval: ClassVar[float] = 0.0
    create_settle: ClassVar[float] = 0.0


@dataclass
class Rig:
    """A fake service, and what a provider needs to talk to it."""

    service: FakeOpenAIService
    sleeps: Sleeps

    @property
    def flavour(self) -> Flavour:
        return self.service.flavour

    def collaborators(self) -> dict[str, Any]:
        """The fake's HTTP client, the sleep recorder, no jitter, and (Azure) an Entra ID token."""
        wiring: dict[str, Any] = {"http_client": self.service.client(), "sleep": self.sleeps, "rand": lambda: 0.0}
        if self.flavour == "azure":
            wiring["azure_token_provider"] = lambda: ENTRA_TOKEN
        return wiring

    def provider(self, given: Mapping[str, Any] | None = None, **extra: Any) -> OpenAIProvider | AzureOpenAIProvider:
        """A provider wired to the fake, with settings ``given`` as they are, else ``settings(flavour, **extra)``."""
        values = dict(given) if given is not None else settings(self.flavour, **extra)
        if self.flavour == "azure":
            return QuickAzureOpenAIProvider(
                QuickAzureOpenAIProvider.Settings.model_validate(values), **self.collaborators()
            )
        return QuickOpenAIProvider(QuickOpenAIProvider.Settings.model_validate(values), **self.collaborators())


#: The rigs made by the running test (checked and forgotten when it ends).
_MADE: list[Rig] = []


def make_rig(root: Path, flavour: Flavour = "openai", **options: Any) -> Rig:
    """A fake service (``options`` go to it) and the wiring for providers that talk to it."""
    folder = root / f"fake-{flavour}"
    folder.mkdir(parents=True, exist_ok=True)
    service = FakeOpenAIService(folder, flavour, api_key=AZURE_KEY if flavour == "azure" else OPENAI_KEY, **options)
    service.entra_token = ENTRA_TOKEN
    rig = Rig(service, Sleeps())
    _MADE.append(rig)
    return rig


@pytest.fixture(autouse=True)
def services_keep_to_their_schemas() -> Iterator[None]:
    """Fail the test if a fake service it made saw a request, or gave an answer, that its surface's
    published description does not allow (import this fixture into a test module to apply it)."""
    start = len(_MADE)
    yield
    made, _MADE[start:] = _MADE[start:], []
    broken = [v for rig in made for v in rig.service.violations]
    assert broken == [], "requests or answers off the published schemas:\n" + "\n".join(broken)


class RegisteredOpenAIProvider(QuickOpenAIProvider):
    """What ``provider="openai"`` builds after :func:`register_by_name`: wired to the class's rig."""

    rig: ClassVar[Rig | None] = None

    def __init__(self, settings: Any = None, **kwargs: Any) -> None:
        assert self.rig is not None, "register_by_name() first"
        super().__init__(settings, **{**self.rig.collaborators(), **kwargs})


def register_by_name(monkeypatch: pytest.MonkeyPatch, rig: Rig) -> None:
    """Make ``provider="openai"`` (and profiles naming it) build providers wired to ``rig``.

    The registration ends with the test (conftest isolates the registry).
    """
    assert rig.flavour == "openai", "only the openai flavour is registered by name"
    monkeypatch.setattr(RegisteredOpenAIProvider, "rig", rig)
    _registry.register(
        ProviderEntry("openai", f"{__name__}:RegisteredOpenAIProvider", extra="openai", requires=("openai",))
    )


def provider_name(flavour: Flavour) -> str:
    return "azure-openai" if flavour == "azure" else "openai"


def settings(flavour: Flavour, **extra: Any) -> dict[str, Any]:
    if flavour == "azure":
        base: dict[str, Any] = {"api_key": AZURE_KEY, "endpoint": AZURE_ENDPOINT, "api_version": API_VERSION}
    else:
        base = {"api_key": OPENAI_KEY, "base_url": OPENAI_BASE}
    return {**base, **extra}


def chat_file(path: Path, n: int = 12, offset: int = 0) -> Path:
    return write_jsonl(path, [chat_example(offset + i) for i in range(n)])


def preference_file(path: Path, n: int = 12) -> Path:
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"What is {i} times 2?"}]},
            "preferred_output": [{"role": "assistant", "content": f"{i} times 2 is {2 * i}."}],
            "non_preferred_output": [{"role": "assistant", "content": "I do not know."}],
        }
        for i in range(n)
    ]
    return write_jsonl(path, rows)
