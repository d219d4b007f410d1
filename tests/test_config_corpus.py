"""Malformed spec files and profiles: each fails with a clear error naming the file and the line or
field, exits non-zero, and creates nothing (no job-store row, no fake job)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.clitools import fake_jobs, jobs_in_store, run_cli

CORPUS = Path(__file__).parent / "config_corpus"
SAMPLE_TRAIN = Path(__file__).parents[1] / "samples" / "data" / "train.jsonl"

# file -> substrings the one-line error must contain (besides the file name where noted)
SPEC_FILES: dict[str, tuple[str, ...]] = {
    "bad_toml_syntax.toml": ("bad_toml_syntax.toml", "invalid TOML", "line 4"),
    "unknown_spec_field.toml": ("epochz", "unknown field"),
    "epochs_zero.toml": ("hyperparameters.epochs", "greater than or equal to 1"),
    "two_learning_rates.toml": ("hyperparameters", "learning_rate or learning_rate_multiplier"),
    "bad_quantization.toml": ("quantization", "'none', '4bit' or '8bit'"),
    "bad_method.toml": ("method", "'sft' or 'dpo'"),
    "provider_typo.toml": ("fakee", "Did you mean 'fake'"),
    "bad_suffix.toml": ("suffix",),
    "lora_r_zero.toml": ("lora.r", "greater than or equal to 1"),
    "lora_unknown_key.toml": ("lora.rank", "unknown field"),
    "not_a_mapping.yaml": ("not_a_mapping.yaml", "mapping"),
    "bad_yaml_syntax.yaml": ("bad_yaml_syntax.yaml:", "invalid YAML"),
    "missing_base_model.yaml": ("base_model", "required"),
    "missing_training_file.yaml": ("training_file", "does_not_exist.jsonl"),
    "unknown_section_option.yaml": ("fake.scenario",),
    "section_for_other_provider.yaml": ("hf", "fake cannot do this"),
    "reserved_tag.yaml": ("tags", "reserved"),
    "beta_without_dpo.yaml": ("beta", "dpo"),
    "wrong_extension.json": ("wrong_extension.json", ".toml, .yaml or .yml"),
    "unknown_setting.toml": ("settings.sped", "unknown field"),
}

PROFILE_FILES: dict[str, tuple[str, ...]] = {
    "bad_profile_key.toml": ("bad_profile_key.toml", "profiles.dev.setings", "unknown field"),
    "bad_toml.toml": ("bad_toml.toml", "invalid TOML", "line 2"),
    "bad_setting_value.toml": ("settings.speed", "greater than 0"),
    "profile_missing_provider.toml": ("profiles.dev.provider", "required"),
    "bad_spec_default.toml": ("hyperparameters.epochs", "profile 'dev'"),
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    shutil.copytree(CORPUS, folder)
    shutil.copy(SAMPLE_TRAIN, folder / "train.jsonl")
    return folder


def _home() -> Path:
    return Path(os.environ["ANYTUNE_HOME"])


@pytest.mark.parametrize("name", sorted(SPEC_FILES))
def test_bad_spec_file_fails_cleanly(name: str, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "jobs", "create", "-f", str(corpus / name))
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    for needle in SPEC_FILES[name]:
        assert needle in result.err, f"{needle!r} not in {result.err!r}"
    assert jobs_in_store(_home()) == 0
    assert fake_jobs(_home()) == 0


@pytest.mark.parametrize("name", sorted(PROFILE_FILES))
def test_bad_profile_fails_cleanly(
    name: str, corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYTUNE_CONFIG", str(corpus / "profiles" / name))
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "--profile",
        "dev",
        "--base-model",
        "tiny",
        "--training-file",
        str(corpus / "train.jsonl"),
    )
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    for needle in PROFILE_FILES[name]:
        assert needle in result.err, f"{needle!r} not in {result.err!r}"
    assert jobs_in_store(_home()) == 0
    assert fake_jobs(_home()) == 0


def test_corpus_is_complete() -> None:
    """Every file in the corpus has an expectation (a new bad file must say what it proves)."""
    on_disk = {p.name for p in CORPUS.glob("*.*")} | {p.name for p in (CORPUS / "profiles").glob("*.toml")}
    assert on_disk == set(SPEC_FILES) | set(PROFILE_FILES)
