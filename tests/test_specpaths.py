"""Spec fields by dotted path: how ``--set`` reads its values, and "did you mean" for misspelt fields."""

from __future__ import annotations

from typing import Any

import pytest

from anytune import ConfigError
from anytune._specpaths import apply_sets, leaf_paths, parse_set, suggest_field, unknown_field_message


@pytest.mark.parametrize(
    ("item", "path", "value"),
    [
        # numbers, booleans, lists and tables are read as JSON or TOML literals
        ("hyperparameters.warmup_steps=10", ["hyperparameters", "warmup_steps"], 10),
        ("hyperparameters.learning_rate=1e-4", ["hyperparameters", "learning_rate"], 1e-4),
        ("hf.private=false", ["hf", "private"], False),
        ('lora.target_modules=["q_proj", "v_proj"]', ["lora", "target_modules"], ["q_proj", "v_proj"]),
        ("lora={r = 8, alpha = 16}", ["lora"], {"r": 8, "alpha": 16}),
        ('lora={"r": 8}', ["lora"], {"r": 8}),
        ('fake.timeline=[{"at": 0, "status": "failed"}]', ["fake", "timeline"], [{"at": 0, "status": "failed"}]),
        ("options.acme.level=3", ["options", "acme", "level"], 3),
        # anything else is text
        ("lora.target_modules=q_proj,v_proj", ["lora", "target_modules"], "q_proj,v_proj"),
        ("base_model=org/model-7b", ["base_model"], "org/model-7b"),
        ("hf.timeout=2h", ["hf", "timeout"], "2h"),
        ("options.acme.when=2024-01-01", ["options", "acme", "when"], "2024-01-01"),
        ("options.acme.two=1\nx = 2", ["options", "acme", "two"], "1\nx = 2"),
        # a field that only takes text gets the text as it is, even when it reads as a number
        ("tags.version=2", ["tags", "version"], "2"),
        ("tags.flag=true", ["tags", "flag"], "true"),
        ("suffix=123", ["suffix"], "123"),
        ("local.device=cpu", ["local", "device"], "cpu"),
        ("quantization=4bit", ["quantization"], "4bit"),
        ("training_file=1.jsonl", ["training_file"], "1.jsonl"),
        ("suffix=", ["suffix"], ""),
        ("tags.note=a=b", ["tags", "note"], "a=b"),
        (" hf . flavor =a10g-small", ["hf", "flavor"], "a10g-small"),
    ],
)
def test_parse_set(item: str, path: list[str], value: Any) -> None:
    assert parse_set(item) == (path, value)


@pytest.mark.parametrize(
    ("item", "text", "field"),
    [
        ("local.device", "expected KEY=VALUE", None),
        ("=cpu", "dotted field name", None),
        ("local..device=cpu", "dotted field name", None),
        ("local.=cpu", "dotted field name", None),
        ("provider=openai", "use --provider", "provider"),
        ("profile=dev", "use --profile", "profile"),
        ("settings.api_key=x", "not a spec field", "settings"),
        ("idempotency_key=abc", "not a spec field", "idempotency_key"),
    ],
)
def test_parse_set_refuses(item: str, text: str, field: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        parse_set(item)
    assert text in str(info.value) and info.value.source == "--set" and info.value.field == field


def test_apply_sets_edits_a_copy_in_order() -> None:
    base = {"base_model": "m", "hyperparameters": {"epochs": 1}, "lora": {"r": 4}}
    out = apply_sets(
        ["hyperparameters.epochs=2", "hyperparameters.seed=7", "lora={alpha = 8}", "lora.r=16", "tags.a=x", "seed=1"],
        base,
    )
    assert out == {
        "base_model": "m",
        "hyperparameters": {"epochs": 2, "seed": 7},
        "lora": {"alpha": 8, "r": 16},
        "tags": {"a": "x"},
        "seed": 1,
    }
    assert base == {"base_model": "m", "hyperparameters": {"epochs": 1}, "lora": {"r": 4}}
    assert apply_sets(["suffix=a", "suffix=b"]) == {"suffix": "b"}


def test_apply_sets_refuses_to_go_through_a_value() -> None:
    with pytest.raises(ConfigError, match=r"lora is set to 8, not a table") as info:
        apply_sets(["lora=8", "lora.r=4"])
    assert info.value.field == "lora.r"


def test_leaf_paths() -> None:
    assert leaf_paths({"a": 1, "b": {"c": [1], "d": {}}, "e": {"f": {"g": None}}}) == {
        ("a",),
        ("b", "c"),
        ("b", "d"),
        ("e", "f", "g"),
    }


@pytest.mark.parametrize(
    ("loc", "guess"),
    [
        (("hyperparameters", "warmup_step"), "warmup_steps"),
        (("hyperparameters", "epoch"), "epochs"),
        (("hyperparameter",), "hyperparameters"),
        (("local", "devcie"), "device"),
        (("lora", "rank"), None),
        (("lora", "alpa"), "alpha"),
        (("fake", "timeline", 0, "stauts"), "status"),
        (("warmup_steps",), "hyperparameters.warmup_steps"),
        (("flavor",), "hf.flavor"),
        (("zzzz",), None),
        ((), None),
        (("options", "acme", "x"), None),
    ],
)
def test_suggest_field(loc: tuple[str | int, ...], guess: str | None) -> None:
    assert suggest_field(loc) == guess
    expected = f"unknown field (did you mean {guess}?)" if guess else "unknown field"
    assert unknown_field_message(loc) == expected
