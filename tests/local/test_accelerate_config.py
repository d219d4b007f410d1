"""``local.accelerate_config``: an accelerate YAML read onto the local fields (pure table tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from anytune import ConfigError, FineTuneJob
from anytune._spec import LocalOptions
from anytune.local_backend.accelerate_config import apply_accelerate_config
from tests.clitools import jobs_in_store, run_cli
from tests.conftest import chat_example, write_jsonl

#: What ``accelerate config`` writes for two machines of four GPUs with DeepSpeed ZeRO-3.
DEEPSPEED_2X4 = {
    "compute_environment": "LOCAL_MACHINE",
    "distributed_type": "DEEPSPEED",
    "deepspeed_config": {
        "zero_stage": 3,
        "offload_optimizer_device": "cpu",
        "offload_param_device": "cpu",
        "zero3_init_flag": False,
    },
    "num_machines": 2,
    "num_processes": 8,
    "machine_rank": 1,
    "main_process_ip": "10.0.0.1",
    "main_process_port": 29500,
    "mixed_precision": "bf16",
    "rdzv_backend": "static",
    "same_network": True,
    "use_cpu": False,
}


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _apply(tmp_path: Path, config: dict[str, Any], **local: Any) -> LocalOptions:
    options = LocalOptions.model_validate({"accelerate_config": str(_write(tmp_path, config)), **local})
    return apply_accelerate_config(options)


@pytest.mark.parametrize(
    ("config", "local", "expected"),
    [
        (
            DEEPSPEED_2X4,
            {},
            {
                "strategy": "zero3",
                "cpu_offload": True,
                "nodes": 2,
                "num_devices": 4,
                "node_rank": 1,
                "rdzv_endpoint": "10.0.0.1:29500",
            },
        ),
        (
            {"distributed_type": "FSDP", "num_processes": 2, "fsdp_config": {"fsdp_activation_checkpointing": True}},
            {},
            {"strategy": "fsdp", "num_devices": 2, "nodes": 1, "gradient_checkpointing": True},
        ),
        (
            {"distributed_type": "MULTI_CPU", "num_processes": 2, "use_cpu": True},
            {},
            {"strategy": "ddp", "device": "cpu"},
        ),
        (
            {"distributed_type": "NO", "mixed_precision": "no"},
            {"num_devices": 1},
            {"num_devices": 1, "strategy": "ddp"},
        ),
        # A field the spec sets to what the file says is no conflict; one the file does not give stays.
        (
            {"distributed_type": "FSDP", "num_processes": 2},
            {"num_devices": 2, "logging_steps": 3},
            {"logging_steps": 3},
        ),
    ],
)
def test_the_file_fills_the_local_fields(
    tmp_path: Path, config: dict[str, Any], local: dict[str, Any], expected: dict[str, Any]
) -> None:
    options = _apply(tmp_path, config, **local)
    assert {k: getattr(options, k) for k in expected} == expected
    assert options.accelerate_config is None  # read: the run keeps the fields, not the file


def test_a_deepspeed_file_it_names_becomes_local_deepspeed_config(tmp_path: Path) -> None:
    config = {"distributed_type": "DEEPSPEED", "deepspeed_config": {"deepspeed_config_file": "ds.json"}}
    options = _apply(tmp_path, config)
    assert (options.strategy, options.deepspeed_config) == ("zero2", tmp_path / "ds.json")


@pytest.mark.parametrize(
    ("config", "local", "field", "message"),
    [
        (DEEPSPEED_2X4, {"num_devices": 2}, "local.num_devices", "num_processes gives local.num_devices = 4"),
        (DEEPSPEED_2X4, {"strategy": "fsdp"}, "local.strategy", "zero_stage gives local.strategy = 'zero3'"),
        (
            {"distributed_type": "DEEPSPEED", "deepspeed_config": {"zero_stage": 1}},
            {},
            "deepspeed_config.zero_stage",
            "stage 2 or 3",
        ),
        ({"distributed_type": "TPU"}, {}, "distributed_type", "no local counterpart"),
        ({"mixed_precision": "fp16"}, {}, "mixed_precision", "fp16"),
        ({"num_machines": 2, "num_processes": 4}, {}, "main_process_ip", "need main_process_ip"),
        (
            {"num_machines": 2, "num_processes": 3, "main_process_ip": "h", "main_process_port": 1},
            {},
            "num_processes",
            "evenly",
        ),
    ],
)
def test_a_conflict_or_a_value_without_counterpart_names_the_key(
    tmp_path: Path, config: dict[str, Any], local: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _apply(tmp_path, config, **local)
    assert info.value.field == field
    assert info.value.source == str(tmp_path / "accelerate.yaml")


@pytest.mark.parametrize(
    ("content", "message"), [(None, "cannot read"), ("a: [1", "not valid YAML"), ("- 1", "mapping")]
)
def test_a_missing_or_bad_file_names_it(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "accelerate.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        apply_accelerate_config(LocalOptions(accelerate_config=path))
    assert info.value.source == str(path)


def test_dry_run_shows_the_fields_the_file_gave_and_create_starts_nothing_on_a_conflict(
    tmp_path: Path, anytune_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 128}))
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(4)])
    _write(tmp_path, {"distributed_type": "FSDP", "num_processes": 2, "use_cpu": True})
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(
        f'provider = "local"\nbase_model = "{model}"\ntraining_file = "{train}"\n\n'
        '[local]\naccelerate_config = "accelerate.yaml"\n'  # relative: to the spec file's folder
    )
    result = run_cli(capsys, "jobs", "create", "-f", str(spec_file), "--no-validate-data", "--dry-run")
    assert result.code == 0, result.err
    body = json.loads(result.out)["requests"][0]["body"]
    assert (body["strategy"], body["num_devices"], body["device"]) == ("fsdp", 2, "cpu")
    assert "accelerate_config" not in body["spec"]["local"]
    with pytest.raises(ConfigError, match=r"local\.strategy = 'ddp' was set too"):
        FineTuneJob.create(
            provider="local",
            base_model=str(model),
            training_file=train,
            local={"accelerate_config": str(tmp_path / "accelerate.yaml"), "strategy": "ddp"},
            validate_data=False,
        )
    assert jobs_in_store(anytune_home) == 0


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        # Hand-edited files: each was an internal error (exit 70) with Python's own text.
        ("num_processes: two\n", "num_processes", "must be an integer, not 'two'"),
        ("num_machines: two\n", "num_machines", "must be an integer"),
        ("num_processes: 1.5\n", "num_processes", "must be an integer"),
        (
            "num_machines: 2\nmachine_rank: x\nmain_process_ip: h\nmain_process_port: 1\nnum_processes: 4\n",
            "machine_rank",
            "must be an integer",
        ),
        ("distributed_type: DEEPSPEED\ndeepspeed_config: zero3\n", "deepspeed_config", "mapping"),
        ("distributed_type: FSDP\nfsdp_config: [1]\n", "fsdp_config", "mapping"),
        # Was refused as pydantic's dump under local.accelerate_config: now the key.
        ("num_processes: 0\n", "num_processes", "at least 1"),
    ],
)
def test_a_hand_edited_value_of_the_wrong_type_names_the_key(
    tmp_path: Path, text: str, field: str, message: str
) -> None:
    path = tmp_path / "accelerate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        apply_accelerate_config(LocalOptions(accelerate_config=path))
    assert (info.value.field, info.value.source) == (field, str(path))


def test_an_unquoted_mixed_precision_no_is_no(tmp_path: Path) -> None:
    # YAML 1.1 reads it as false: it was refused as "mixed_precision 'false'".
    path = tmp_path / "accelerate.yaml"
    path.write_text("mixed_precision: no\nnum_processes: 2\n")
    assert apply_accelerate_config(LocalOptions(accelerate_config=path)).num_devices == 2
