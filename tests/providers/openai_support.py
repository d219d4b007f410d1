"""Helpers shared by the OpenAI / Azure OpenAI adapter tests: wiring the fake service into the
adapter's hooks, settings for each flavour, and a sleep recorder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from anytune.providers import openai as adapter
from tests.conftest import chat_example, write_jsonl
from tests.providers.openai_fake import FakeOpenAIService, Flavour

OPENAI_KEY = "sk-test-openai-key-0123456789abcdefABCD"
AZURE_KEY = "azkey0123456789abcdef0123456789ab"
ENTRA_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbnl0dW5lIn0.c2lnbmF0dXJlLWZha2UtdG9rZW4"
MODEL = "gpt-4o-mini-2024-07-18"
OPENAI_BASE = "https://api.openai.test/v1"
AZURE_ENDPOINT = "https://anytune-test.openai.azure.com"
API_VERSION = "2025-04-01-preview"


class Sleeps(list[float]):
    """Records every retry/back-off sleep instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        assert seconds >= 0
        self.append(seconds)


def install(
    monkeypatch: pytest.MonkeyPatch, root: Path, flavour: Flavour = "openai", **options: Any
) -> tuple[FakeOpenAIService, Sleeps]:
    """A fake service wired into the adapter: its http client, recorded sleeps, no jitter, no poll wait."""
    folder = root / f"fake-{flavour}"
    folder.mkdir(parents=True, exist_ok=True)
    service = FakeOpenAIService(folder, flavour, api_key=AZURE_KEY if flavour == "azure" else OPENAI_KEY, **options)
    service.entra_token = ENTRA_TOKEN
    sleeps = Sleeps()
    monkeypatch.setattr(adapter.HOOKS, "http_client", service.client)
    monkeypatch.setattr(adapter.HOOKS, "sleep", sleeps)
    monkeypatch.setattr(adapter.HOOKS, "rand", lambda: 0.0)
    monkeypatch.setattr(adapter.HOOKS, "azure_token_provider", lambda: lambda: ENTRA_TOKEN)
    # The job handle polls at the provider's interval with time.sleep: no waiting against a fake.
    monkeypatch.setattr(adapter._OpenAIAdapter, "poll_interval", 0.0)
    return service, sleeps


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
