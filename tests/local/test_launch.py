"""Several processes and machines: the spec's rules, the checks before launch and the launch commands.

All pure or dry-run: no worker starts here (the FSDP training itself is in test_fsdp.py).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from anytune import ConfigError, FineTuneJob, MissingDependencyError, NotSupportedError
from anytune._spec import LocalOptions, Quantization
from anytune.local_backend.launch import check_strategy, node_commands, worker_command
from tests.clitools import jobs_in_store, run_cli
from tests.conftest import chat_example, write_jsonl

# -- the spec's own rules (no machine facts) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "message"),
    [
        ({"nodes": 2}, "nodes=2 needs rdzv_endpoint"),
        ({"nodes": 2, "node_rank": 2, "rdzv_endpoint": "10.0.0.1:29400"}, "node_rank 2 is not one of the 2"),
        ({"node_rank": 1}, "node_rank 1 is not one of the 1"),
        ({"nodes": 0}, "greater than or equal to 1"),
        ({"node_rank": -1}, "greater than or equal to 0"),
        ({"nodes": 2, "rdzv_endpoint": "10.0.0.1"}, "must be host:port"),
        ({"nodes": 2, "rdzv_endpoint": "10.0.0.1:0"}, "must be host:port"),
        ({"nodes": 2, "rdzv_endpoint": "10.0.0.1:70000"}, "must be host:port"),
        ({"nodes": 2, "rdzv_endpoint": "a b:1"}, "must be host:port"),
        ({"strategy": "zero1"}, "'ddp', 'fsdp', 'zero2' or 'zero3'"),
        ({"activation_checkpointing": True, "gradient_checkpointing": False}, "one setting"),
    ],
)
def test_the_spec_refuses(local: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalOptions.model_validate(local)


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ({}, {"strategy": "ddp", "nodes": 1, "node_rank": 0, "rdzv_endpoint": None, "cpu_offload": False}),
        ({"nodes": 2, "node_rank": 1, "rdzv_endpoint": "node0:29400"}, {"nodes": 2, "node_rank": 1}),
        ({"nodes": 2, "rdzv_endpoint": "[::1]:29400"}, {"rdzv_endpoint": "[::1]:29400"}),
        ({"activation_checkpointing": True}, {"gradient_checkpointing": True}),
        ({"activation_checkpointing": False, "gradient_checkpointing": False}, {"gradient_checkpointing": False}),
        ({"strategy": "fsdp", "num_devices": 4, "nodes": 2, "rdzv_endpoint": "h:1"}, {"world_size": 8}),
    ],
)
def test_the_spec_takes(local: dict[str, Any], expected: dict[str, Any]) -> None:
    options = LocalOptions.model_validate(local)
    assert {k: getattr(options, k) for k in expected} == expected
    assert "activation_checkpointing" not in options.model_dump()  # recorded under one name


# -- what this machine can run (pure: the facts are arguments) ----------------------------------------

CPU = {"device": "cpu", "visible_cuda": None, "deepspeed_installed": True}
GPU2 = {"device": "cuda", "visible_cuda": 2, "deepspeed_installed": True}
GPU2_NO_DS = {**GPU2, "deepspeed_installed": False}


@pytest.mark.parametrize(
    ("local", "quantization", "machine", "error", "message"),
    [
        ({"strategy": "zero2", "num_devices": 2}, "none", {**CPU, "device": "mps"}, NotSupportedError, "MPS"),
        ({"strategy": "zero2"}, "none", {**CPU, "device": "mps"}, NotSupportedError, "runs on CUDA or the CPU"),
        ({"strategy": "zero3"}, "none", GPU2_NO_DS, MissingDependencyError, r"anytune\[deepspeed\]"),
        ({"strategy": "zero2", "cpu_offload": True}, "none", CPU, NotSupportedError, "keeps everything on cpu"),
        ({"num_devices": 4}, "none", GPU2, NotSupportedError, "num_devices=4 but this machine sees 2 CUDA"),
        ({"num_devices": 2}, "none", {**CPU, "device": "mps"}, NotSupportedError, "MPS runs one process"),
        ({"strategy": "fsdp", "num_devices": 2}, "8bit", GPU2, NotSupportedError, "cannot shard an 8-bit base"),
        ({"strategy": "fsdp", "num_devices": 2}, "8bit", CPU, NotSupportedError, "cannot shard an 8-bit base"),
        ({"cpu_offload": True}, "none", GPU2, NotSupportedError, "'ddp' on cuda shards nothing"),
        ({"strategy": "fsdp", "cpu_offload": True}, "none", CPU, NotSupportedError, "keeps everything on cpu"),
    ],
)
def test_a_set_up_this_machine_cannot_run_is_refused(
    local: dict[str, Any], quantization: str, machine: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        check_strategy(LocalOptions.model_validate(local), quantization=Quantization(quantization), **machine)
    if isinstance(info.value, NotSupportedError):
        assert info.value.field is not None and info.value.field.startswith("local."), info.value.field


@pytest.mark.parametrize(
    ("local", "quantization", "machine"),
    [
        ({}, "none", CPU),
        ({"num_devices": 2}, "4bit", CPU),  # DDP QLoRA on CPU: unchanged
        ({"strategy": "fsdp", "num_devices": 2}, "none", CPU),
        ({"strategy": "fsdp", "num_devices": 2}, "4bit", CPU),  # FSDP QLoRA
        ({"strategy": "fsdp", "num_devices": 2}, "4bit", GPU2),
        ({"strategy": "zero3", "num_devices": 2}, "4bit", GPU2),  # ZeRO QLoRA (tests/local/test_zero.py)
        ({"strategy": "zero2", "num_devices": 2}, "8bit", CPU),
        ({"strategy": "fsdp", "num_devices": 2, "cpu_offload": True}, "none", GPU2),
        ({"strategy": "zero2", "num_devices": 2}, "none", CPU),  # DeepSpeed's CPU accelerator, over gloo
        ({"strategy": "zero3", "num_devices": 2, "cpu_offload": True}, "none", GPU2),
        ({"num_devices": 8, "nodes": 2, "rdzv_endpoint": "h:1"}, "none", CPU),  # CPU processes are not counted
        ({"num_devices": 2}, "none", GPU2),
    ],
)
def test_a_set_up_this_machine_can_run_passes(
    local: dict[str, Any], quantization: str, machine: dict[str, Any]
) -> None:
    check_strategy(LocalOptions.model_validate(local), quantization=Quantization(quantization), **machine)


# -- launch commands ----------------------------------------------------------------------------------

RUN = Path("/runs/run-abc")
WORKER = ["-m", "anytune.local_backend.worker", str(RUN)]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["py", *WORKER]),
        ({"resume": True}, ["py", *WORKER, "--resume"]),
        (
            {"num_devices": 2},
            ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *WORKER],
        ),
        (
            {"num_devices": 4, "nodes": 2, "node_rank": 1, "rdzv_endpoint": "10.0.0.1:29400", "resume": True},
            [
                "py", "-m", "torch.distributed.run",
                "--nnodes", "2", "--node_rank", "1", "--nproc_per_node", "4",
                "--rdzv_backend", "c10d", "--rdzv_endpoint", "10.0.0.1:29400", "--rdzv_id", "run-abc",
                *WORKER, "--resume", "--node-rank", "1",
            ],
        ),
        (
            # One process per node is still a distributed job: torchrun, not a plain worker.
            {"nodes": 3, "node_rank": 2, "rdzv_endpoint": "h:1", "rdzv_id": "job-7"},
            [
                "py", "-m", "torch.distributed.run",
                "--nnodes", "3", "--node_rank", "2", "--nproc_per_node", "1",
                "--rdzv_backend", "c10d", "--rdzv_endpoint", "h:1", "--rdzv_id", "job-7",
                *WORKER, "--node-rank", "2",
            ],
        ),
    ],
)  # fmt: skip
def test_worker_command(kwargs: dict[str, Any], expected: list[str]) -> None:
    assert worker_command("py", RUN, **kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"nodes": 2}, "rendezvous endpoint"), ({"nodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"}, "node_rank 2")],
)
def test_worker_command_refuses(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        worker_command("py", RUN, **kwargs)


def test_node_commands_differ_only_in_the_node_rank() -> None:
    options = LocalOptions(num_devices=2, nodes=3, node_rank=1, rdzv_endpoint="10.0.0.1:29400")
    commands = node_commands("py", RUN, options)
    assert len(commands) == 3
    for rank, command in enumerate(commands):
        assert command[command.index("--node_rank") + 1] == str(rank)
        assert command[-2:] == ["--node-rank", str(rank)]
        assert command[command.index("--rdzv_id") + 1] == "run-abc"  # one rendezvous for all
    assert node_commands("py", RUN, LocalOptions()) == [["py", *WORKER]]


# -- through the provider: create fails with the reason, dry-run shows every node ---------------------


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


@pytest.mark.parametrize(
    ("local", "quantization", "error", "message"),
    [
        ({"device": "cpu", "nodes": 2}, "none", ConfigError, "needs rdzv_endpoint"),
        (
            {"device": "cpu", "strategy": "zero3", "num_devices": 2, "cpu_offload": True},
            "none",
            NotSupportedError,
            "cpu_offload",
        ),
        ({"device": "cpu", "strategy": "fsdp", "num_devices": 2}, "8bit", NotSupportedError, "cannot shard an 8-bit"),
        ({"device": "cpu", "strategy": "fsdp", "cpu_offload": True}, "none", NotSupportedError, "cpu_offload"),
    ],
)
def test_create_fails_with_the_reason_and_starts_nothing(
    model_dir: Path,
    train_file: Path,
    anytune_home: Path,
    local: dict[str, Any],
    quantization: str,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        FineTuneJob.create(
            provider="local",
            base_model=str(model_dir),
            training_file=train_file,
            quantization=quantization,
            local=local,
            validate_data=False,
        )
    assert not (anytune_home / "runs").exists()
    assert jobs_in_store(anytune_home) == 0


def test_dry_run_shows_the_launch_command_of_every_node(
    model_dir: Path, train_file: Path, anytune_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The new fields from a spec file's [local] table, one of them (by its FSDP name) from --set.
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(
        f"""provider = "local"
base_model = "{model_dir}"
training_file = "{train_file}"

[local]
device = "cpu"
strategy = "fsdp"
num_devices = 2
nodes = 2
rdzv_endpoint = "10.0.0.1:29400"
"""
    )
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "-f",
        str(spec_file),
        "--set",
        "local.activation_checkpointing=true",
        "--no-validate-data",
        "--dry-run",
    )
    assert result.code == 0, result.err
    body = json.loads(result.out)["requests"][0]["body"]
    assert (body["strategy"], body["nodes"], body["world_size"]) == ("fsdp", 2, 4)
    assert [n["node_rank"] for n in body["launch"]] == [0, 1]
    assert body["command"] == body["launch"][0]["command"]
    for rank, node in enumerate(body["launch"]):
        command = node["command"]
        assert shlex.split(node["shell"]) == command
        assert command[1:3] == ["-m", "torch.distributed.run"]
        assert command[command.index("--node_rank") + 1] == str(rank)
        assert command[command.index("--rdzv_endpoint") + 1] == "10.0.0.1:29400"
        assert command[command.index("--rdzv_id") + 1] == Path(body["run_dir"]).name
    assert body["spec"]["local"]["gradient_checkpointing"] is True
    assert body["resolved"]["strategy"] == "fsdp"
    notes = json.loads(result.out)["notes"]
    assert any("srun" in n and "shared filesystem" in n for n in notes), notes
    assert not (anytune_home / "runs").exists()
