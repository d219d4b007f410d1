"""The Hugging Face job runs the library versions of the environment that submits it.

The pins are derived from this environment (``importlib.metadata``), not written down: a table tests
the pure derivation, and a dry run through the CLI shows the pins the job would get.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from anytune.providers.huggingface import (
    derive_pins,
    extra_requirements,
    hub_client_requirement,
    job_requirements,
    local_pins,
)
from tests.clitools import jobs_in_store, run_cli
from tests.conftest import chat_example, write_jsonl

REQUIRES_DIST = [
    "pydantic>=2.6",
    'tomli>=2; python_version < "3.11"',
    'huggingface_hub>=2; extra == "hf"',
    'torch>=2.1; extra == "local"',
    'transformers>=5; extra == "local"',
    'bitsandbytes>=0.43; platform_system != "Darwin" and extra == "local"',
    'anytune[azure,hf,local,openai]; extra == "all"',
    'anytune[hf]; extra == "local"',
]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("local", ["torch>=2.1", "transformers>=5", 'bitsandbytes>=0.43; platform_system != "Darwin"']),
        ("hf", ["huggingface_hub>=2"]),
        ("openai", []),
    ],
)
def test_an_extras_requirements_are_read_from_the_metadata(extra: str, expected: list[str]) -> None:
    assert extra_requirements(REQUIRES_DIST, extra) == expected


@pytest.mark.parametrize(
    ("declared", "installed", "expected"),
    [
        # The submitter's version, exactly.
        (["transformers>=5"], {"transformers": "5.24.0"}, ["transformers==5.24.0"]),
        # A CPU-only (or any local) build label is dropped: the job needs the CUDA build of the release.
        (["torch>=2.1"], {"torch": "2.13.0+cpu"}, ["torch==2.13.0"]),
        (["torch>=2.1"], {"torch": "2.13.0+cu128"}, ["torch==2.13.0"]),
        # Not installed here: the extra's declared range.
        (["peft>=0.12"], {}, ["peft>=0.12"]),
        # A development build (from git) is on no index: the declared range, not a pin the job cannot install.
        (["transformers>=5"], {"transformers": "5.25.0.dev0"}, ["transformers>=5"]),
        (["peft>=0.12"], {"peft": "0.18.0.dev0+g1234abc"}, ["peft>=0.12"]),
        # A release candidate is on the index: pinned.
        (["transformers>=5"], {"transformers": "5.25.0rc1"}, ["transformers==5.25.0rc1"]),
        # Names match whatever their spelling; the declared spelling and the marker stay.
        (["huggingface_hub>=2"], {"huggingface-hub": "2.4.0"}, ["huggingface_hub==2.4.0"]),
        (
            ['bitsandbytes>=0.43; platform_system != "Darwin"'],
            {"bitsandbytes": "0.50.2"},
            ['bitsandbytes==0.50.2; platform_system != "Darwin"'],
        ),
    ],
)
def test_pins_are_the_installed_versions(declared: list[str], installed: dict[str, str], expected: list[str]) -> None:
    assert derive_pins(declared, installed) == expected


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def test_the_job_pins_this_environments_versions() -> None:
    pins = local_pins()
    for name in ("torch", "transformers", "peft"):
        assert f"{name}=={_public(metadata.version(name))}" in pins
    assert not any("+" in p for p in pins)
    assert hub_client_requirement() == f"huggingface_hub=={metadata.version('huggingface_hub')}"


def test_the_requirements_setting_still_overrides_a_pin() -> None:
    changed = job_requirements(["torch==2.5.1", "trl>=0.12"], pins=["torch==2.13.0", "peft==0.21.2"])
    assert changed == ["torch==2.5.1", "peft==0.21.2", "trl>=0.12"]


def test_a_dry_run_shows_the_derived_pins(
    capsys: pytest.CaptureFixture[str], workdir: Path, anytune_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a dry run sends nothing, the base model's look-up included
    train = write_jsonl(workdir / "train.jsonl", [chat_example(i) for i in range(3)])
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "huggingface",
        "--base-model",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--training-file",
        str(train),
        "--dry-run",
    )
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    run_job = next(r for r in plan["requests"] if r["operation"] == "HfApi.run_job")
    command = run_job["body"]["command"]
    withs = [command[i + 1] for i, word in enumerate(command[:-1]) if word == "--with"]
    assert withs[0] == hub_client_requirement()
    assert f"transformers=={metadata.version('transformers')}" in withs
    assert f"torch=={_public(metadata.version('torch'))}" in withs
    assert jobs_in_store(anytune_home) == 0
