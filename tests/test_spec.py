"""``JobSpec`` validation, directly and through ``FineTuneJob`` (errors name the field)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from anytune import (
    ConfigError,
    FakeOptions,
    FineTuneJob,
    Hyperparameters,
    JobSpec,
    LoraConfig,
    Method,
    Quantization,
)

BASE: dict[str, Any] = {"base_model": "tiny", "training_file": "train.jsonl"}


def spec(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({**BASE, **fields})


def error_locs(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in exc.errors()]


def test_minimal_spec_defaults() -> None:
    s = spec()
    assert s.method is Method.SFT and s.quantization is Quantization.NONE
    assert s.training_file == Path("train.jsonl")
    assert s.lora is None and s.hyperparameters == Hyperparameters()
    assert s.section_names() == []
    assert s.to_json_dict() == {"base_model": "tiny", "training_file": "train.jsonl"}


def test_spec_round_trips_through_json() -> None:
    s = spec(
        method="dpo",
        hyperparameters={"epochs": 2, "beta": 0.1},
        lora={"r": 8},
        quantization="4bit",
        tags={"team": "nlp"},
        fake={"scenario": "fail"},
    )
    assert JobSpec.model_validate(s.to_json_dict()) == s
    assert s.section_names() == ["fake"]


def test_both_learning_rates_is_an_error() -> None:
    with pytest.raises(ValidationError, match="learning_rate or learning_rate_multiplier"):
        Hyperparameters(learning_rate=1e-4, learning_rate_multiplier=2.0)
    with pytest.raises(ValidationError, match="warmup_ratio or warmup_steps"):
        Hyperparameters(warmup_ratio=0.1, warmup_steps=10)


@pytest.mark.parametrize(
    ("values", "loc"),
    [
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": 1.5}, "learning_rate"),
        ({"batch_size": -1}, "batch_size"),
        ({"max_length": 4}, "max_length"),
    ],
)
def test_hyperparameter_bounds(values: dict[str, Any], loc: str) -> None:
    with pytest.raises(ValidationError) as info:
        Hyperparameters.model_validate(values)
    assert error_locs(info.value) == [loc]


def test_quantization_without_lora_uses_the_lora_defaults() -> None:
    qlora = spec(quantization="4bit")
    assert qlora.lora == LoraConfig() and qlora.to_json_dict()["lora"] == {}
    assert spec(quantization="8bit", lora={"r": 4}).lora == LoraConfig(r=4)
    assert spec(quantization="none").lora is None and spec().lora is None


def test_beta_only_for_dpo() -> None:
    with pytest.raises(ValidationError, match="dpo"):
        spec(hyperparameters={"beta": 0.1})
    assert spec(method="dpo", hyperparameters={"beta": 0.1}).hyperparameters.beta == 0.1


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"epochs": 3}, "epochs"),
        ({"hyperparameters": {"epoch": 3}}, "hyperparameters.epoch"),
        ({"lora": {"rank": 8}}, "lora.rank"),
        ({"fake": {"scenaro": "fail"}}, "fake.scenaro"),
    ],
)
def test_unknown_field_is_named(fields: dict[str, Any], loc: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**fields)
    assert loc in error_locs(info.value)


@pytest.mark.parametrize("suffix", ["", "has space", "x" * 65, "semi;colon", "ünï"])
def test_bad_suffix(suffix: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(suffix=suffix)
    assert error_locs(info.value) == ["suffix"]


def test_good_suffix() -> None:
    assert spec(suffix="my-model_v1.2").suffix == "my-model_v1.2"


def test_target_modules_from_a_comma_string() -> None:
    assert LoraConfig(target_modules="q_proj, v_proj,,o_proj ").target_modules == ["q_proj", "v_proj", "o_proj"]
    assert LoraConfig().target_modules == "all-linear"
    assert LoraConfig(target_modules="all-linear").target_modules == "all-linear"
    with pytest.raises(ValidationError, match="at least one module"):
        LoraConfig(target_modules=" , ")


def test_lora_alpha_defaults_to_twice_r() -> None:
    assert LoraConfig(r=8).effective_alpha == 16
    assert LoraConfig(r=8, alpha=8).effective_alpha == 8


def test_tags_rules() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        spec(tags={"anytune.idempotency_key": "x"})
    with pytest.raises(ValidationError, match="at most 16"):
        spec(tags={f"k{i}": "v" for i in range(17)})


def test_fake_timeline_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="time order"):
        FakeOptions(timeline=[{"at": 2, "status": "running"}, {"at": 1, "status": "succeeded"}])
    with pytest.raises(ValidationError, match="at least one"):
        FakeOptions(timeline=[])


def test_spec_is_immutable() -> None:
    s = spec()
    with pytest.raises(ValidationError):
        s.base_model = "other"  # type: ignore[misc]


# -- through FineTuneJob: ConfigError naming field and source ---------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"epochs": 3}, "epochs", "unknown field"),
        ({"hyperparameters": {"epoch": 3}}, "hyperparameters.epoch", "unknown field"),
        (
            {"hyperparameters": {"learning_rate": 1e-4, "learning_rate_multiplier": 2}},
            "hyperparameters",
            "learning_rate or learning_rate_multiplier",
        ),
        ({"suffix": "bad suffix!"}, "suffix", "suffix"),
        ({"quantization": "3bit"}, "quantization", "'none', '4bit' or '8bit'"),
        ({"lora": {"target_modules": ""}}, "lora.target_modules", "at least one module"),
    ],
)
def test_create_reports_spec_errors_as_config_errors(
    chat_jsonl: Path, anytune_home: Path, fields: dict[str, Any], field: str | None, text: str
) -> None:
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(provider="fake", base_model="tiny", training_file=chat_jsonl, **fields)
    assert info.value.field == field
    assert text in str(info.value)
    assert FineTuneJob.list() == [] and not (anytune_home / "fake").exists()


def test_missing_base_model_is_named(chat_jsonl: Path) -> None:
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(provider="fake", training_file=chat_jsonl)
    assert info.value.field == "base_model" and "required" in str(info.value)


def test_argument_source_is_named(chat_jsonl: Path) -> None:
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(
            {"base_model": "m", "training_file": str(chat_jsonl)}, provider="fake", hyperparameters={"epochs": 0}
        )
    assert info.value.source == "argument"
    assert "hyperparameters.epochs" in str(info.value)


def test_spec_object_and_keyword_overrides(chat_jsonl: Path) -> None:
    base = JobSpec(base_model="tiny", training_file=chat_jsonl, hyperparameters=Hyperparameters(epochs=2, batch_size=8))
    plan = FineTuneJob.plan(base, provider="fake", hyperparameters={"epochs": 4})
    assert plan.requests[0].body["hyperparameters"] == {"epochs": 4, "batch_size": 8}
