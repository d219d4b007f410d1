"""How a local job is launched over several processes and machines, and whether this machine can.

Pure and light on purpose: nothing here imports torch, so the submitting process (and ``--dry-run``)
can build the launch commands and refuse a strategy the machine cannot run before any run directory
exists. The caller gathers the machine's facts (the resolved device, how many CUDA devices are
visible, whether DeepSpeed is installed) and passes them in; the rules are a table-tested function.

One process: ``python -m anytune.local_backend.worker RUN_DIR``. Several on one machine:
``torch.distributed.run --standalone`` (a rendezvous on a free local port, so two jobs never
collide). Several machines: ``torch.distributed.run`` with torchrun's c10d rendezvous at
``local.rdzv_endpoint``, the job's id as the rendezvous id, one command per node; the worker gets
``--node-rank R`` because c10d hands out global ranks in an order of its own (it ignores torchrun's
``--node_rank``), and the run directory's single writer must be the first process of node 0, the
machine whose run directory the job's owner reads.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from anytune._spec import LocalOptions, Quantization
from anytune.errors import MissingDependencyError, NotSupportedError

__all__ = [
    "DEEPSPEED_EXTRA",
    "NODE_RANK_ARG",
    "WORKER_MODULE",
    "check_strategy",
    "node_commands",
    "shell_line",
    "worker_command",
]

WORKER_MODULE = "anytune.local_backend.worker"
#: The worker's argument naming the node it runs on (multi-node runs only).
NODE_RANK_ARG = "--node-rank"
#: The extra that installs DeepSpeed for ``local.strategy`` ``zero2`` / ``zero3``.
DEEPSPEED_EXTRA = "deepspeed"
# zero2/zero3 run on CUDA (nccl) and on the CPU: DeepSpeed's CPU accelerator falls back to gloo when
# oneCCL's bindings are absent (tested on two CPU processes, tests/local/test_zero.py).


def worker_command(
    python: str,
    run_path: Path,
    *,
    num_devices: int = 1,
    resume: bool = False,
    nodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
) -> list[str]:
    """The command line that runs a job's worker on node ``node_rank``.

    Args:
        python: the interpreter (with ``anytune[local]`` installed).
        run_path: the run directory (on a multi-node job, the same path on every node).
        num_devices: processes on this node.
        resume: continue from the last complete checkpoint.
        nodes: machines taking part; above one, ``rdzv_endpoint`` is required.
        node_rank: this machine's place, 0 .. nodes-1.
        rdzv_endpoint: ``host:port`` of the c10d rendezvous (multi-node).
        rdzv_id: the rendezvous id, the same on every node (default: the run directory's name).

    Raises:
        ValueError: ``nodes > 1`` without an endpoint, or ``node_rank`` out of range.
    """
    if not 0 <= node_rank < nodes:
        raise ValueError(f"node_rank {node_rank} is not one of the {nodes} node(s)")
    tail = ["-m", WORKER_MODULE, str(run_path), *(["--resume"] if resume else [])]
    if nodes > 1:
        if not rdzv_endpoint:
            raise ValueError(f"{nodes} nodes need a rendezvous endpoint (host:port)")
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            str(nodes),
            "--node_rank",
            str(node_rank),
            "--nproc_per_node",
            str(num_devices),
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            rdzv_endpoint,
            "--rdzv_id",
            rdzv_id or run_path.name,
            *tail,
            NODE_RANK_ARG,
            str(node_rank),
        ]
    if num_devices > 1:
        # --standalone: a single-node rendezvous on a free port, so two jobs never collide.
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(num_devices), *tail]
    return [python, *tail]


def node_commands(python: str, run_path: Path, options: LocalOptions, *, resume: bool = False) -> list[list[str]]:
    """The launch command of every node, node_rank 0 first (one command for a one-node job)."""
    return [
        worker_command(
            python,
            run_path,
            num_devices=options.num_devices,
            resume=resume,
            nodes=options.nodes,
            node_rank=rank,
            rdzv_endpoint=options.rdzv_endpoint,
        )
        for rank in range(options.nodes)
    ]


def shell_line(command: list[str]) -> str:
    """``command`` as one line a user pastes into a shell (or an ``srun`` script)."""
    return shlex.join(command)


def check_strategy(
    options: LocalOptions,
    *,
    quantization: Quantization,
    device: str,
    visible_cuda: int | None,
    deepspeed_installed: bool = False,
) -> None:
    """Refuse, before launch, a distributed set-up this machine cannot run (pure: facts are arguments).

    Args:
        options: the spec's ``local`` section.
        quantization: the spec's quantization.
        device: the resolved device kind (``cuda``, ``cpu``, ``mps``), never ``auto``.
        visible_cuda: CUDA devices this process sees (None: not counted, the device is not cuda).
        deepspeed_installed: whether ``import deepspeed`` would find the package.

    Raises:
        NotSupportedError: the strategy, device count or combination cannot run here; the message
            says why and what would.
        MissingDependencyError: zero2/zero3 without DeepSpeed installed (names the extra).
    """
    strategy = options.strategy

    def refuse(message: str, field: str = "local.strategy") -> NotSupportedError:
        return NotSupportedError(message, field=field, provider="local")

    if device == "cuda" and visible_cuda is not None and options.num_devices > visible_cuda:
        raise refuse(
            f"num_devices={options.num_devices} but this machine sees {visible_cuda} CUDA device(s) "
            "(CUDA_VISIBLE_DEVICES counts); lower local.num_devices",
            "local.num_devices",
        )
    if device == "mps" and options.world_size > 1:
        raise refuse("several processes need CUDA or the CPU (gloo); MPS runs one process", "local.num_devices")
    # ZeRO over a 4-bit or 8-bit base trains like over a plain one: measured on 2 CPU processes,
    # ZeRO-2 and ZeRO-3 with either base give one process's losses (tests/local/test_zero.py).
    if strategy in ("zero2", "zero3") and device not in ("cuda", "cpu"):
        raise refuse(f"strategy {strategy!r} (DeepSpeed ZeRO) runs on CUDA or the CPU; this job runs on {device}")
    # FSDP2 shards a 4-bit base's packed weights like any frozen tensor (bitsandbytes' quant-storage
    # dtype); an 8-bit base's Int8Params lose their quantisation state when sharded (measured:
    # "'Parameter' object has no attribute 'CB'" on the first forward).
    if strategy == "fsdp" and quantization is Quantization.INT8:
        raise refuse(
            "strategy 'fsdp' cannot shard an 8-bit base (bitsandbytes' Int8Params lose their state when "
            "sharded); use quantization '4bit' (QLoRA) with fsdp, or strategy 'ddp' for 8-bit"
        )
    if options.cpu_offload and (strategy == "ddp" or device != "cuda"):
        why = "shards nothing to offload" if strategy == "ddp" else f"keeps everything on {device} already"
        raise refuse(
            f"local.cpu_offload moves sharded parameters to CPU memory (fsdp, zero2, zero3 on CUDA); "
            f"strategy {strategy!r} on {device} {why}",
            "local.cpu_offload",
        )
    # Last: what could not run anyway is said first, rather than asking for a package in vain.
    if strategy in ("zero2", "zero3") and not deepspeed_installed:
        raise MissingDependencyError("deepspeed", DEEPSPEED_EXTRA, f"local.strategy={strategy!r}")
