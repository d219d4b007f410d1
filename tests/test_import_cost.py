"""``import anytune`` stays cheap: no provider SDK, ML stack, CLI toolkit or event loop is loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "torch",
    "transformers",
    "peft",
    "openai",
    "huggingface_hub",
    "bpe_openai",
    "tokenizers",
    "tiktoken",
    "bitsandbytes",
    "accelerate",
    "httpx",
    "httpx2",
    "requests",
)
LIGHT_BUT_AVOIDABLE = ("typer", "rich", "asyncio", "yaml", "tenacity", "filelock", "platformdirs")


def modules_after(code: str) -> set[str]:
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(proc.stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    return modules_after("import anytune")


@pytest.mark.parametrize("module", HEAVY)
def test_import_does_not_load_heavy_modules(loaded: set[str], module: str) -> None:
    assert not {m for m in loaded if m == module or m.startswith(module + ".")}


def test_import_does_not_load_azure(loaded: set[str]) -> None:
    assert not {m for m in loaded if m == "azure" or m.startswith(("azure.", "azure_"))}


@pytest.mark.parametrize("module", LIGHT_BUT_AVOIDABLE)
def test_import_does_not_load_cli_or_async_machinery(loaded: set[str], module: str) -> None:
    assert module not in loaded


def test_looking_at_the_fake_provider_stays_light() -> None:
    loaded = modules_after("import anytune\nfrom anytune import _registry\n_registry.load('fake')")
    assert not {m for m in loaded for heavy in HEAVY if m == heavy or m.startswith(heavy + ".")}
    assert "asyncio" not in loaded
