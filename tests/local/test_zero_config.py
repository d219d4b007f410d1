"""The DeepSpeed config a zero2/zero3 job runs with: the spec's mapping, the user's file merged in.

Pure table tests (no process group, no training); the check against DeepSpeed's own config classes
runs where DeepSpeed is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from anytune import ConfigError, FineTuneJob
from anytune._spec import JobSpec, LocalOptions
from anytune.local_backend.zero import check_with_deepspeed, deepspeed_config, load_user_config
from tests.clitools import jobs_in_store
from tests.conftest import chat_example, write_jsonl

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def _spec(hyper: dict[str, Any] | None = None, **local: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": "m",
            "training_file": "t.jsonl",
            "hyperparameters": hyper or {},
            "local": {"device": "cpu", "num_devices": 2, **local},
        }
    )


def _map(spec: JobSpec, world: int = 2, **kwargs: Any) -> dict[str, Any]:
    assert spec.local is not None
    return deepspeed_config(spec, spec.local, world, **kwargs)


@pytest.mark.parametrize(
    ("hyper", "local", "world", "expected"),
    [
        (
            {"batch_size": 4},
            {"strategy": "zero2"},
            2,
            {
                "train_batch_size": 4,
                "train_micro_batch_size_per_gpu": 2,
                "gradient_accumulation_steps": 1,
                "gradient_clipping": 1.0,
                "zero_optimization": {"stage": 2},
                "bf16": {"enabled": False},
                "fp16": {"enabled": False},
            },
        ),
        (
            {"batch_size": 8, "gradient_accumulation_steps": 4},
            {"strategy": "zero3"},
            4,
            {
                "train_batch_size": 32,
                "train_micro_batch_size_per_gpu": 2,
                "gradient_accumulation_steps": 4,
                "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
            },
        ),
        (
            {},  # the trainer's default batch (8)
            {"strategy": "zero2", "cpu_offload": True},
            2,
            {"train_batch_size": 8, "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}},
        ),
        (
            {"batch_size": 2},
            {"strategy": "zero3", "cpu_offload": True},
            2,
            {
                "zero_optimization": {
                    "stage": 3,
                    "offload_optimizer": {"device": "cpu"},
                    "offload_param": {"device": "cpu"},
                    "stage3_gather_16bit_weights_on_model_save": True,
                },
                "zero_force_ds_cpu_optimizer": False,
            },
        ),
    ],
)
def test_the_spec_maps_to(hyper: dict[str, Any], local: dict[str, Any], world: int, expected: dict[str, Any]) -> None:
    config = _map(_spec(hyper, **local), world)
    assert {k: config[k] for k in expected} == expected
    assert config["train_batch_size"] == (
        config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * world
    )


def test_the_trainers_resolved_batch_wins_over_the_specs() -> None:
    config = _map(_spec({"batch_size": 8}, strategy="zero2"), batch_size=4, gradient_accumulation_steps=3)
    assert (config["train_batch_size"], config["train_micro_batch_size_per_gpu"]) == (12, 2)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        # The user's keys win, section by section: the stage stays, an extra ZeRO knob is added.
        ({"zero_optimization": {"overlap_comm": True}}, {"zero_optimization": {"stage": 3, "overlap_comm": True}}),
        ({"gradient_clipping": 0.5, "wall_clock_breakdown": True}, {"gradient_clipping": 0.5}),
        ({"bf16": {"enabled": True}}, {"bf16": {"enabled": True}}),
        # Repeating what the spec says, or accelerate's "auto", is no conflict.
        ({"train_batch_size": 4, "gradient_accumulation_steps": "auto"}, {"train_batch_size": 4}),
        ({"zero_optimization": {"stage": 3}}, {"zero_optimization": {"stage": 3}}),
    ],
)
def test_the_users_config_is_merged_over_the_mapping(user: dict[str, Any], expected: dict[str, Any]) -> None:
    config = _map(_spec({"batch_size": 4}, strategy="zero3", deepspeed_config=user))
    for key, value in expected.items():
        assert config[key] == value if not isinstance(value, dict) else value.items() <= config[key].items()
    assert config["gradient_accumulation_steps"] == 1


@pytest.mark.parametrize(
    ("user", "field", "message"),
    [
        ({"train_batch_size": 16}, "train_batch_size", "is 16 there but the spec makes it 4"),
        ({"train_micro_batch_size_per_gpu": 1}, "train_micro_batch_size_per_gpu", "makes it 2"),
        ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps", "makes it 1"),
        ({"zero_optimization": {"stage": 2}}, "zero_optimization.stage", "local.strategy 'zero3' is stage 3"),
        ({"optimizer": {"type": "Adam"}}, "optimizer", "hyperparameters.optimizer"),
        ({"scheduler": {"type": "WarmupLR"}}, "scheduler", "hyperparameters.lr_scheduler"),
    ],
)
def test_a_key_the_spec_decides_cannot_be_changed(user: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _map(_spec({"batch_size": 4}, strategy="zero3", deepspeed_config=user))
    assert info.value.field == field


def test_a_file_is_named_in_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "ds.json"
    good.write_text(json.dumps({"train_batch_size": 99}))
    with pytest.raises(ConfigError, match="train_batch_size") as info:
        _map(_spec({"batch_size": 4}, strategy="zero2", deepspeed_config=str(good)))
    assert info.value.source == str(good)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the DeepSpeed config"), ("{not json", "not valid JSON"), ("[1, 2]", "JSON object, not list")],
)
def test_a_missing_or_bad_file_is_a_config_error_naming_it(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "ds.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_user_config(path)
    assert info.value.source == str(path) and info.value.field == "local.deepspeed_config"


def test_an_uneven_batch_and_a_non_zero_strategy_are_refused() -> None:
    with pytest.raises(ConfigError, match="batch_size 3 is not a multiple of the 2 processes") as info:
        _map(_spec({"batch_size": 3}, strategy="zero2"))
    assert info.value.field == "hyperparameters.batch_size"
    with pytest.raises(ValueError, match="deepspeed_config is DeepSpeed's; it applies to strategy zero2 or zero3"):
        LocalOptions.model_validate({"strategy": "fsdp", "deepspeed_config": {"zero_optimization": {}}})


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="DeepSpeed is not installed: its config classes cannot check")
@pytest.mark.parametrize(
    ("local", "user", "message"),
    [
        ({"strategy": "zero2"}, None, None),
        ({"strategy": "zero3", "cpu_offload": True}, None, None),
        ({"strategy": "zero3"}, {"zero_optimization": {"overlap_comm": True, "reduce_bucket_size": 1000}}, None),
        (
            {"strategy": "zero3"},
            {"zero_optimization": {"no_such_knob": 1}},
            "'zero_optimization.no_such_knob'.*Extra inputs",
        ),
        ({"strategy": "zero2"}, {"zero_optimization": {"offload_optimizer": {"device": "disk"}}}, "offload_optimizer"),
        ({"strategy": "zero2"}, {"bf16": {"enabled": "maybe"}}, "enabled"),
    ],
)
def test_deepspeeds_own_config_classes_check_the_result(
    local: dict[str, Any], user: dict[str, Any] | None, message: str | None
) -> None:
    spec = _spec({"batch_size": 4}, **local, **({"deepspeed_config": user} if user else {}))
    config = _map(spec)
    if message is None:
        assert check_with_deepspeed(config, 2) is True
        return
    with pytest.raises(ConfigError, match=message):
        check_with_deepspeed(config, 2, source="ds.json")


# -- through create and the CLI --------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """Enough of a model folder for the checks before launch (they read config.json only)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 128}))
    return folder


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(4)])


@pytest.mark.slow  # a real `anytune` process that imports DeepSpeed (~6 s)
@pytest.mark.skipif(not HAS_DEEPSPEED, reason="zero2/zero3 are refused at create without DeepSpeed")
def test_dry_run_shows_the_deepspeed_config_from_a_spec_files_file(
    model_dir: Path, train_file: Path, anytune_home: Path, tmp_path: Path
) -> None:
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"overlap_comm": True}}))
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(
        f"""provider = "local"
base_model = "{model_dir}"
training_file = "{train_file}"

[hyperparameters]
batch_size = 4

[local]
device = "cpu"
strategy = "zero3"
num_devices = 2
deepspeed_config = "{tmp_path / "ds.json"}"
"""
    )
    # A real process: DeepSpeed's logger writes to stdout, which must stay the plan's JSON alone.
    env = {**os.environ, "ANYTUNE_HOME": str(anytune_home)}
    env.pop("DS_ACCELERATOR", None)
    command = [
        sys.executable,
        "-m",
        "anytune",
        "jobs",
        "create",
        "-f",
        str(spec_file),
        "--no-validate-data",
        "--dry-run",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)["requests"][0]["body"]
    config = body["deepspeed_config"]
    assert config["zero_optimization"] == {
        "stage": 3,
        "stage3_gather_16bit_weights_on_model_save": True,
        "overlap_comm": True,
    }
    assert (config["train_batch_size"], config["train_micro_batch_size_per_gpu"]) == (4, 2)
    # The run records the file's content, not its path: it keeps what it started with.
    assert body["spec"]["local"]["deepspeed_config"] == {"zero_optimization": {"overlap_comm": True}}
    assert not (anytune_home / "runs").exists()


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="zero2/zero3 are refused at create without DeepSpeed")
@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("missing.json", "cannot read the DeepSpeed config"),
        ({"train_batch_size": 64}, "'train_batch_size' is 64 there"),
        ({"zero_optimization": {"no_such_knob": 1}}, "no_such_knob"),
    ],
)
def test_create_refuses_a_bad_deepspeed_config_and_starts_nothing(
    model_dir: Path, train_file: Path, anytune_home: Path, tmp_path: Path, user: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        FineTuneJob.create(
            provider="local",
            base_model=str(model_dir),
            training_file=train_file,
            hyperparameters={"batch_size": 4},
            local={
                "device": "cpu",
                "strategy": "zero2",
                "num_devices": 2,
                "deepspeed_config": str(tmp_path / user) if isinstance(user, str) else user,
            },
            validate_data=False,
        )
    assert not (anytune_home / "runs").exists()
    assert jobs_in_store(anytune_home) == 0
