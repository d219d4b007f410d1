"""The local trainer: LoRA / QLoRA supervised fine-tuning and DPO in a plain PyTorch loop.

:func:`run_training` is the entry point the worker calls. It reads the job's spec from its run
directory, trains, and writes everything through :class:`~anytune.local_backend.rundir.RunDir`:
status and progress, metric points, checkpoints (adapter, optimizer, scheduler, RNG states, data
position), and at the end a standard PEFT adapter folder and ``result.json``.

Why a custom loop rather than ``transformers.Trainer``: each step's examples are concatenated into
one row with no padding (see :mod:`.data` and :mod:`.model`), the language-model head runs only at
positions that carry a label, a step is split into micro-batches only as
``gradient_accumulation_steps`` asks or when it does not fit in memory (the loss stays the mean over
the whole step), and DPO's reference log-probabilities are computed once, up front, with the adapter
disabled (the reference model never changes). Those are the costs that dominate small-model and
big-vocabulary training.

Resuming: the examples of step ``s`` are a pure function of the seed and ``s``, and a checkpoint
stores everything else that changes (adapter weights, optimizer moments, scheduler, RNG states), so
a resumed run ends with the same number of optimizer steps, on the same data, as one that was never
interrupted.

Several processes (``torchrun`` / ``accelerate launch``, ``WORLD_SIZE > 1``), gloo on CPU and nccl
on CUDA; each rank takes every ``world``-th example of a step; node 0's first process alone writes
the run directory. ``local.strategy``:

- ``ddp``: DistributedDataParallel over the loss module (a full copy of the model per process).
- ``fsdp``: PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``) on each decoder layer, then on the
  loss module as the root, as peft and accelerate do for LoRA: every parameter (frozen base and
  adapter) is sharded over the processes; no mixed-precision policy (the trainer's autocast applies
  as on one device). Every rank runs the same number of forward passes (FSDP gathers the layers'
  weights at each one): a rank with fewer examples runs zero-weighted ones. Checkpoints and the final
  adapter gather the trainable parameters and the optimizer's state whole
  (``torch.distributed.checkpoint.state_dict``, full state dicts), so the adapter is a plain PEFT
  folder, as from one device, and a checkpoint resumes with any number of processes.
- ``zero2`` / ``zero3``: DeepSpeed ZeRO stage 2 (optimizer states and gradients sharded) or 3
  (parameters too). ``deepspeed.initialize`` wraps the loss module and the trainer's own AdamW with
  the config :func:`~anytune.local_backend.zero.deepspeed_config` maps from the spec; the loop is the
  same one: the trainer marks the accumulation boundary itself (a step's micro-batch count varies
  with what fits in memory), ``engine.backward`` takes the same scaled loss, ``engine.step`` clips
  and steps, the trainer's scheduler follows. DeepSpeed's CPU accelerator runs it over gloo without
  a GPU. Under stage 3 the frozen LM head's weight, which the fused head reads outside its module's
  forward, is registered with the root module so that ZeRO gathers it there. Checkpoints go through
  the engine's own ``save_checkpoint`` (per-process shards: resume with the same strategy and number
  of processes) beside a plain PEFT ``adapter/`` folder; the final adapter is gathered whole, the
  same PEFT folder one device writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from anytune._spec import JobSpec, LocalOptions, LoraConfig, Method
from anytune._types import Checkpoint, JobStatus, MetricPoint
from anytune.errors import ConfigError, MissingDependencyError
from anytune.local_backend import data as D
from anytune.local_backend.devices import device_kind
from anytune.local_backend.hparams import (
    BNB_OPTIMIZERS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_SEED,
    MAX_GRAD_NORM,
    TrainingPlan,
    check_optimizer,
    make_plan,
    plan_dict,
)
from anytune.local_backend.model import (
    HEAD_CHUNK_BYTES,
    LoadedModel,
    LossHead,
    activation_bytes_per_token,
    eval_mode,
    load_for_training,
    load_tokenizer,
    quiet_transformers,
    resolve_device,
    resolve_model_source,
    world_info,
)
from anytune.local_backend.rundir import (
    ADAPTER_TMP_PREFIX,
    CHECKPOINT_PREFIX,
    MERGED_TMP_PREFIX,
    RunDir,
    write_json_atomic,
)
from anytune.local_backend.tracking import TENSORBOARD_DIR, Trackers, check_trackers, open_trackers
from anytune.local_backend.zero import STAGES, deepspeed_config

__all__ = ["TrainingPlan", "run_training"]

STATUS_INTERVAL = 0.5
#: In an FSDP checkpoint: the adapter's parameters whole, keyed by their names in the model (what
#: ``set_model_state_dict`` loads back into shards), beside the plain PEFT ``adapter/`` folder.
FSDP_MODEL_FILE = "fsdp_trainable.pt"
#: In a ZeRO checkpoint: the folder the DeepSpeed engine writes (its tag folder ``ZERO_TAG`` inside).
ZERO_DIR = "deepspeed"
ZERO_TAG = "state"
"""Seconds between progress writes to status.json (each is an fsync'd file replace)."""


# -- processes -------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    owns_group: bool = False
    #: The global rank that writes the run directory: node 0's first process. Under torchrun's c10d
    #: rendezvous global ranks come in an order of c10d's own, so it need not be rank 0.
    writer: int = 0

    @property
    def main(self) -> bool:
        return self.rank == self.writer

    def max(self, value: int, device: torch.device) -> int:
        """The largest ``value`` over ranks (itself in one process)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Sum figures over ranks (a no-op in one process)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return [float(v) for v in t.tolist()]

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=self.writer)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out


def _init_dist(kind: str, node_rank: int = 0) -> _Dist:
    rank, local_rank, world = world_info()
    if world <= 1:
        return _Dist()
    owns = False
    if kind == "cuda":
        # NCCL collectives (and the object ones we use for RNG states) run on the current device.
        torch.cuda.set_device(local_rank % max(torch.cuda.device_count(), 1))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
        owns = True
    places: list[Any] = [None] * world
    torch.distributed.all_gather_object(places, (node_rank, local_rank))
    writers = [r for r, place in enumerate(places) if tuple(place) == (0, 0)]
    if len(writers) != 1:
        raise ConfigError(
            f"{len(writers)} processes claim to be node 0's first (node ranks given: "
            f"{sorted({p[0] for p in places})}); give each node its own local.node_rank / --node-rank",
            field="local.node_rank",
        )
    return _Dist(rank=rank, local_rank=local_rank, world=world, owns_group=owns, writer=writers[0])


def _cpu_threads(world: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, min(world, cores)))


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _rss_mib() -> float | None:
    """This process's resident memory now (Linux; None elsewhere): what it holds after sharding,
    which its peak (the whole base, loaded before it was sharded) does not show."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _fully_shard(head: torch.nn.Module, peft_model: Any, *, cpu_offload: bool) -> list[str]:
    """Apply FSDP2 to each decoder layer, then to ``head`` (the root); returns what was sharded.

    Layers are found as the decoder's ``layers`` list (Llama, Qwen, Mistral, Gemma, Phi...); a model
    without one is sharded as one unit (correct, but every forward gathers the whole model).
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    policy: OffloadPolicy = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    decoder = peft_model.get_base_model().get_decoder()
    layers = getattr(decoder, "layers", None)
    units: list[str] = []
    if isinstance(layers, torch.nn.ModuleList):
        for layer in layers:
            fully_shard(layer, offload_policy=policy)
        units.append(f"{len(layers)} decoder layers")
    fully_shard(head, offload_policy=policy)
    units.append("the root")
    return units


def _full_options(**extra: Any) -> Any:
    """Options for whole (unsharded) state dicts of the trainable parameters only.

    ``cpu_offload`` stays off: it keeps the gathered tensors on global rank 0 alone, and the writer
    is node 0's first process, which c10d need not make rank 0. An adapter is small enough for every
    rank to hold whole for a moment.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, ignore_frozen_params=True, **extra)


# -- the trainer -----------------------------------------------------------------------------------


@dataclass
class _Progress:
    """Where training stands: what a checkpoint restores and the final result reports."""

    done: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    base_valid: float | None = None
    last_valid: dict[str, float] | None = None
    last_point: MetricPoint | None = None


@dataclass
class _Window:
    """Figures accumulated between two logged points.

    Sums that live on the device stay there until the point is logged: reading one (``float(t)``)
    would make the host wait for the GPU after every step instead of queueing the next one.
    """

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    weight: float = 0.0
    targets: float = 0.0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        current = self.sums.get(key)
        self.sums[key] = value if current is None else current + value

    def host(self) -> dict[str, float]:
        """The device sums as numbers (one transfer)."""
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).tolist() if keys else []
        return dict(zip(keys, values, strict=True))


class _Trainer:
    def __init__(self, run: RunDir, spec: JobSpec, dist: _Dist) -> None:
        self.run = run
        self.spec = spec
        self.dist = dist
        self.local = spec.local or LocalOptions()
        self.dpo = spec.method is Method.DPO
        self.started = time.perf_counter()
        self.trackers = Trackers()

    # -- reporting (rank 0 only) --
    def status(self, raw: str, message: str) -> None:
        if self.dist.main:
            self.run.set_status(JobStatus.RUNNING, raw=raw, message=message)

    def log(self, message: str, level: str = "info") -> None:
        if self.dist.main:
            self.run.emit("log", message, level=level)

    # -- setup --
    def setup(self) -> None:
        spec = self.spec
        method: D.Method = "dpo" if self.dpo else "sft"
        if self.dist.main:
            check_trackers(spec.report_to)  # before any work: a missing package is a setup mistake
        D.check_format(spec.training_path, method)
        if spec.validation_file is not None:
            D.check_format(spec.validation_file, method)
        template = D.resolve_chat_template(self.local.chat_template)
        tokenizer = load_tokenizer(spec.base_model, template)
        max_length = spec.hyperparameters.max_length or self._default_max_length()
        self.train_data = D.load_dataset(
            spec.training_path,
            tokenizer,
            method=method,
            max_length=max_length,
            truncation=self.local.truncation,
            chat_template=template,
        )
        self.valid_data = (
            D.load_dataset(
                spec.validation_file,
                tokenizer,
                method=method,
                max_length=max_length,
                truncation=self.local.truncation,
                chat_template=template,
            )
            if spec.validation_file is not None
            else None
        )
        for d in (self.train_data, self.valid_data):
            for note in d.notes if d else ():
                self.log(note, level="warning")
        self._split_validation()
        self.plan = make_plan(spec, len(self.train_data), max_length)
        self.device = resolve_device(self.local.device, local_rank=self.dist.local_rank)
        check_optimizer(self.plan.optimizer, self.device.type)
        if self.device.type == "cpu":
            torch.set_num_threads(_cpu_threads(self.dist.world))
        self.status("loading", f"loading {spec.base_model} on {self.device.type}")
        # The adapter's initial weights come from the global RNG: seed it so that a run (and a resumed
        # run, which reloads them from its checkpoint anyway) is reproducible.
        torch.manual_seed(self.plan.seed)
        self.lm: LoadedModel = load_for_training(spec, self.device, max_length=max_length)
        self.pad_id = int(self.lm.tokenizer.pad_token_id if self.lm.tokenizer.pad_token_id is not None else 0)
        self.head = LossHead(self.lm.model)
        self._decide_memory()
        first = D.collate(
            self.train_data.examples[0].seqs, self.lm.layout, pad_id=self.pad_id, row_capacity=max_length
        ).to(self.device)
        with self.autocast():
            self.head.self_check(first)
        self.module: torch.nn.Module = self.head
        self.fsdp = self.dist.world > 1 and self.local.strategy == "fsdp"
        self.engine: Any = None  # the DeepSpeed engine under zero2/zero3
        zero = self.dist.world > 1 and self.local.strategy in STAGES
        if self.fsdp:
            # In place: the head (and each layer) becomes its FSDP class; self.module is self.head.
            units = _fully_shard(self.head, self.lm.model, cpu_offload=self.local.cpu_offload)
            self.log(f"FSDP2 over {self.dist.world} processes: sharded {', '.join(units)}")
        elif self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.module = DistributedDataParallel(self.head, device_ids=ids)
        # Only the adapter trains: walking every frozen parameter at each step (to clip) costs time.
        self.params = [p for p in self.head.parameters() if p.requires_grad]
        self.optimizer = self._optimizer()
        if zero:
            self._zero_initialize()
        self.scheduler = self._scheduler()
        self._indexes: dict[int, dict[int, int]] = {}
        self.ref_train: torch.Tensor | None = None
        self.ref_valid: torch.Tensor | None = None

    def _zero_initialize(self) -> None:
        """Wrap the loss module and the optimizer in a DeepSpeed ZeRO engine (``self.module``)."""
        # DeepSpeed picks its accelerator when first imported: the job's device, not a guess (a CPU
        # job on a machine with a GPU would otherwise get the CUDA accelerator).
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if self.device.type == "cuda" else "cpu")
        try:
            import deepspeed
        except ImportError as exc:
            raise MissingDependencyError("deepspeed", "deepspeed", f"local.strategy={self.local.strategy!r}") from exc
        plan = self.plan
        config = deepspeed_config(
            self.spec,
            self.local,
            self.dist.world,
            batch_size=plan.batch_size,
            gradient_accumulation_steps=plan.gradient_accumulation_steps,
        )
        stage = STAGES[self.local.strategy]
        if stage == 3:
            # The fused head reads the frozen head's weight without calling the head module, whose
            # hooks are where ZeRO-3 gathers it: register it with the root module instead.
            head = self.lm.model.get_base_model().get_output_embeddings()
            if head is not None:
                deepspeed.zero.register_external_parameter(self.head, head.weight)
        with quiet_transformers():
            engine, _, _, _ = deepspeed.initialize(model=self.head, optimizer=self.optimizer, config=config)
        self.engine = self.module = engine
        offload = " (optimizer states offloaded to the CPU)" if self.local.cpu_offload else ""
        self.log(f"DeepSpeed ZeRO-{stage} over {self.dist.world} processes{offload}")

    def _split_validation(self) -> None:
        """Hold out ``validation_split`` of the training examples (seeded), and say how many."""
        share = self.spec.hyperparameters.validation_split
        if share is None:
            return
        seed = self.spec.hyperparameters.seed
        total = len(self.train_data)
        self.train_data, self.valid_data = D.hold_out(self.train_data, share, DEFAULT_SEED if seed is None else seed)
        self.log(
            f"validation split: {len(self.valid_data)} of {total} training examples held out for validation "
            f"({share:g}, seeded), {len(self.train_data)} left to train on"
        )

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW (torch's, or bitsandbytes' 8-bit / paged 8-bit), weight decay on matrices only.

        One-dimensional parameters (biases, norms, DoRA magnitudes) take no decay, as in
        transformers' Trainer: shrinking a scale towards zero is not regularisation.
        """
        plan = self.plan
        decay = [p for p in self.params if p.ndim >= 2]
        rest = [p for p in self.params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": plan.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        bnb_class = BNB_OPTIMIZERS.get(plan.optimizer)
        if bnb_class is None:
            fused = self.device.type in ("cuda", "cpu")
            return torch.optim.AdamW(groups, lr=plan.learning_rate, fused=fused)
        import bitsandbytes as bnb

        if plan.optimizer.startswith("paged_") and self.device.type != "cuda":
            self.log(
                f"{plan.optimizer}: bitsandbytes pages optimizer states on CUDA only; on {self.device.type} "
                "they stay in ordinary memory (8-bit all the same)",
                level="warning",
            )
            # Said once above; bitsandbytes would repeat it for every parameter.
            warnings.filterwarnings("ignore", message="Paged optimizers are not supported", category=UserWarning)
        optimizer: torch.optim.Optimizer = getattr(bnb.optim, bnb_class)(groups, lr=plan.learning_rate)
        return optimizer

    def _scheduler(self) -> Any:
        """transformers' schedule of that name: warm-up, then linear or cosine decay, or constant."""
        from transformers import get_scheduler

        plan = self.plan
        return get_scheduler(
            plan.lr_scheduler,
            self.optimizer,
            num_warmup_steps=plan.warmup_steps,
            num_training_steps=plan.total_steps,
        )

    def _default_max_length(self) -> int:
        from transformers import AutoConfig

        with quiet_transformers():
            cfg = AutoConfig.from_pretrained(resolve_model_source(self.spec.base_model))
        limit = getattr(cfg, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
        return int(min(DEFAULT_MAX_LENGTH, limit))

    def _decide_memory(self) -> None:
        """Pick the tokens per forward pass, and gradient checkpointing when it is left to us.

        Checkpointing costs about a third more compute, so it is only turned on (on CUDA, when
        ``local.gradient_checkpointing`` is unset) if the largest step would not fit otherwise; on
        CPU and MPS memory is rarely the limit and it stays off unless asked for.
        """
        elem = 2 if self.lm.autocast_dtype is not None else 4
        per_token = activation_bytes_per_token(self.lm.model.get_base_model(), dtype_bytes=elem)
        vocab = int(getattr(self.lm.model.get_base_model().config, "vocab_size", 32000))
        # DPO keeps fp32 logits, their softmax and gradient at label positions; SFT's fused head holds
        # one chunk of them at a time (taken off the budget) and a hidden-sized gradient per target.
        head = 3 * 4 * vocab if self.dpo else 0
        per_token += head
        budget = int(_available_bytes(self.device) * (0.6 if self.device.type == "cuda" else 0.4))
        budget -= 0 if self.dpo else 3 * HEAD_CHUNK_BYTES
        largest = self._largest_step_tokens()
        wanted = self.local.gradient_checkpointing
        if wanted is None:
            wanted = self.device.type == "cuda" and largest * per_token > budget
        if wanted:
            self.lm.enable_gradient_checkpointing()
            layers = int(getattr(self.lm.model.get_base_model().config, "num_hidden_layers", 12))
            per_token = (per_token - head) // max(layers, 1) * 2 + head
        self.max_tokens = max(self.plan.max_length * (2 if self.dpo else 1), min(budget // max(per_token, 1), 1 << 17))

    def _largest_step_tokens(self) -> int:
        """Tokens of the largest micro-batch (one rank's share) of the first two epochs."""
        n, plan = len(self.train_data), self.plan
        lengths = [e.num_tokens for e in self.train_data.examples]
        largest = 0
        for epoch in range(min(plan.epochs, 2)):
            order = D.epoch_order(n, plan.seed, epoch)
            for k in range(plan.steps_per_epoch):
                step = order[k * plan.step_examples : (k + 1) * plan.step_examples]
                for micro in plan.micro_batches(step):
                    largest = max(largest, sum(lengths[i] for i in micro))
        return math.ceil(largest / self.dist.world)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.lm.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.lm.autocast_dtype)

    # -- forward passes --
    def _batches(self, examples: Sequence[D.Example]) -> Iterator[tuple[list[D.Example], D.MicroBatch]]:
        for chunk in D.split_micro_batches(examples, self.max_tokens):
            seqs = [s for ex in chunk for s in ex.seqs]
            yield (
                chunk,
                D.collate(seqs, self.lm.layout, pad_id=self.pad_id, row_capacity=self.plan.max_length).to(self.device),
            )

    def _even(
        self, batches: Sequence[tuple[list[D.Example], D.MicroBatch]], data: D.TokenizedData
    ) -> list[tuple[list[D.Example], D.MicroBatch, float]]:
        """``batches`` with a weight each (1.0), padded under FSDP to the same count on every rank.

        FSDP gathers each layer's weights at every forward pass, a collective every rank must join:
        a rank with fewer micro-batches runs the first example of ``data`` at weight 0 instead.
        """
        out = [(chunk, mb, 1.0) for chunk, mb in batches]
        if not (self.fsdp or self.engine is not None):
            return out
        most = self.dist.max(len(out), self.device)
        if len(out) < most:
            chunk, mb = next(self._batches(data.examples[:1]))
            out += [(chunk, mb, 0.0)] * (most - len(out))
        return out

    def _seq_logps(self, mb: D.MicroBatch, logits: torch.Tensor) -> torch.Tensor:
        token_logp = -F.cross_entropy(logits, mb.targets, reduction="none")
        return torch.zeros(mb.num_seqs, dtype=token_logp.dtype, device=token_logp.device).index_add_(
            0, mb.target_seq, token_logp
        )

    @torch.no_grad()
    def reference_logps(self, data: D.TokenizedData) -> torch.Tensor:
        """Sequence log-probs of every (chosen, rejected) pair under the base model, computed once."""
        out = torch.zeros(len(data), 2, dtype=torch.float32)
        index = {id(ex): i for i, ex in enumerate(data.examples)}
        mine = data.examples[self.dist.rank :: self.dist.world]
        with eval_mode(self.head), self.lm.model.disable_adapter():
            for chunk, mb, keep in self._even(list(self._batches(mine)), data):
                with self.autocast():
                    logps = self._seq_logps(mb, self.head(mb)).float().cpu().view(-1, 2)
                if keep == 0.0:
                    continue  # a pass that only keeps this rank in step with the others
                for ex, row in zip(chunk, logps, strict=True):
                    out[index[id(ex)]] = row
        if self.dist.world > 1:
            t = out.to(self.device)
            torch.distributed.all_reduce(t)
            out = t.cpu()
        return out

    def _dpo_terms(self, mb: D.MicroBatch, logits: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pol = self._seq_logps(mb, logits).view(-1, 2)
        ref = ref.to(pol.device)
        chosen = self.plan.beta * (pol[:, 0] - ref[:, 0])
        rejected = self.plan.beta * (pol[:, 1] - ref[:, 1])
        losses = -F.logsigmoid(chosen - rejected)
        return losses, chosen.detach(), rejected.detach()

    def _ref_rows(self, chunk: Sequence[D.Example], table: torch.Tensor, data: D.TokenizedData) -> torch.Tensor:
        """The precomputed reference log-probs of ``chunk``'s pairs."""
        index = self._indexes.get(id(data))
        if index is None:
            index = self._indexes[id(data)] = {id(ex): i for i, ex in enumerate(data.examples)}
        return table[[index[id(ex)] for ex in chunk]]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """Mean validation loss (token-weighted for SFT, per pair for DPO) over the whole file."""
        if self.valid_data is None:
            return None
        loss = weight = correct = targets = chosen_sum = margin_sum = acc = 0.0
        with eval_mode(self.head):
            mine = self.valid_data.examples[self.dist.rank :: self.dist.world]
            for chunk, mb, keep in self._even(list(self._batches(mine)), self.valid_data):
                with self.autocast():
                    out = self.head(mb, loss=not self.dpo)
                if keep == 0.0:
                    continue  # a pass that only keeps this rank in step with the others
                if self.dpo:
                    assert self.ref_valid is not None
                    logits = out
                    losses, c, r = self._dpo_terms(mb, logits, self._ref_rows(chunk, self.ref_valid, self.valid_data))
                    loss += float(losses.sum())
                    weight += len(chunk)
                    acc += float((c > r).float().sum())
                    margin_sum += float((c - r).sum())
                    chosen_sum += float(c.sum())
                else:
                    total, hits = out
                    loss += float(total)
                    weight += mb.num_targets
                    correct += float(hits)
                    targets += mb.num_targets
        loss, weight, correct, targets, acc, margin_sum = self.dist.sum(
            [loss, weight, correct, targets, acc, margin_sum], self.device
        )
        out = {"loss": loss / max(weight, 1.0)}
        if self.dpo:
            out["rewards/accuracy"] = acc / max(weight, 1.0)
            out["rewards/margin"] = margin_sum / max(weight, 1.0)
        else:
            out["token_accuracy"] = correct / max(targets, 1.0)
        return out

    def train_step(self, step: int, window: _Window) -> None:
        """One optimizer step on the examples of ``step``.

        They go through ``gradient_accumulation_steps`` micro-batches of ``batch_size`` (each split
        further only if it does not fit in memory); every rank takes its share of each micro-batch.
        The loss is the mean over all the step's labels (pairs, for DPO), whatever the split.
        """
        plan = self.plan
        indices = D.step_examples(len(self.train_data), plan.step_examples, plan.seed, step)
        examples = [self.train_data.examples[i] for i in indices]
        if self.dpo:
            denominator = float(len(examples))
        else:
            denominator = float(sum(s.num_targets for ex in examples for s in ex.seqs))
        rank, world = self.dist.rank, self.dist.world
        parts = [[examples[j] for j in part][rank::world] for part in plan.micro_batches(range(len(examples)))]
        scale = 1.0
        if not any(parts):  # fewer examples than ranks: take part in the gradient exchange with a zero loss
            parts, scale = [examples[:1]], 0.0
        chunks = self._even([chunk for part in parts if part for chunk in self._batches(part)], self.train_data)
        for k, (chunk, mb, weight) in enumerate(chunks):
            sync = k == len(chunks) - 1 or self.dist.world == 1
            unit = scale * weight  # 0 for a pass that only keeps this rank in step
            ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if self.fsdp:
                # FSDP2: reduce-scatter the gradients after the last micro-batch only.
                self.head.set_requires_gradient_sync(sync)  # type: ignore[operator]
            elif self.engine is not None:
                # Ours to say, not DeepSpeed's counter: a step's micro-batch count varies.
                self.engine.set_gradient_accumulation_boundary(sync)
            else:
                ctx = contextlib.nullcontext() if sync else self.module.no_sync()  # type: ignore[operator]
            with ctx:
                with self.autocast():
                    out = self.module(mb, loss=not self.dpo)
                if self.dpo:
                    assert self.ref_train is not None
                    logits = out
                    losses, c, r = self._dpo_terms(mb, logits, self._ref_rows(chunk, self.ref_train, self.train_data))
                    total = losses.sum()
                    window.add("rewards/chosen", c.sum() * unit)
                    window.add("rewards/rejected", r.sum() * unit)
                    window.add("rewards/accuracy", (c > r).float().sum() * unit)
                    window.add("rewards/margin", (c - r).sum() * unit)
                    window.weight += len(chunk) * unit
                else:
                    # Summed cross-entropy and arg-max hits, through the fused head (no full logits).
                    total, correct = out
                    window.add("correct", correct * unit)
                    window.targets += mb.num_targets * unit
                    window.weight += mb.num_targets * unit
                window.add("loss", total * unit)
                window.tokens += int(mb.num_tokens * unit)
                # DDP, FSDP and ZeRO average gradients over ranks; the loss is a mean over the whole step's labels.
                scaled = total * (unit * self.dist.world / denominator)
                if self.engine is not None:
                    self.engine.backward(scaled, scale_wrt_gas=False)  # scaled already
                else:
                    scaled.backward()  # type: ignore[no-untyped-call]
        if self.engine is not None:
            self.engine.step()  # clips (gradient_clipping), steps, zeroes the gradients
            self.scheduler.step()
            return
        torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # -- checkpoints --
    def _trainable_state(self) -> dict[str, torch.Tensor] | None:
        """Under FSDP and ZeRO-3, the adapter's parameters gathered whole, on the CPU (a collective:
        every rank calls it); None otherwise, where the model's own parameters are whole already."""
        if self.engine is not None and STAGES[self.local.strategy] == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(self.params, modifier_rank=None):
                return {k: p.detach().cpu().clone() for k, p in self.lm.model.named_parameters() if p.requires_grad}
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(self.lm.model, options=_full_options())
        return {k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state to save: under FSDP gathered whole and keyed by parameter name (a
        collective), so that any number of processes can load it."""
        if not self.fsdp:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state: dict[str, Any] = get_optimizer_state_dict(self.head, self.optimizer, options=_full_options())
        return state

    def save_checkpoint(self, done: int, state: dict[str, Any]) -> Path | None:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        rngs = self.dist.gather(rng)
        trainable = self._trainable_state()
        optimizer: dict[str, Any] | None = None
        tmp: Path | None = None
        if self.engine is not None:
            # The engine's own checkpoint: each process writes its shards into the writer's folder.
            tmp = self.dist.broadcast(self.run.new_checkpoint_tmp(done) if self.dist.main else None)
            assert tmp is not None
            self.engine.save_checkpoint(
                str(tmp / ZERO_DIR), tag=ZERO_TAG, save_latest=False, exclude_frozen_parameters=True
            )
            self.dist.barrier()
        else:
            optimizer = self._optimizer_state()
        path: Path | None = None
        if self.dist.main:
            tmp = tmp or self.run.new_checkpoint_tmp(done)
            # A plain PEFT adapter either way: under FSDP from the gathered state.
            self.lm.model.save_pretrained(tmp / "adapter", state_dict=trainable)
            if self.fsdp:
                torch.save(trainable, tmp / FSDP_MODEL_FILE)
            if optimizer is not None:
                torch.save(optimizer, tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(rngs, tmp / "rng.pt")
            write_json_atomic(tmp / "state.json", state)
            path = self.run.commit_checkpoint(tmp, done)
            self.run.emit(
                "checkpoint",
                f"checkpoint at step {done}",
                checkpoint=Checkpoint(
                    step=done,
                    path=str(path),
                    metrics=state.get("last_point") and MetricPoint.model_validate(state["last_point"]),
                ),
            )
        self.dist.barrier()
        return path

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state: dict[str, Any] = json.loads((path / "state.json").read_text())
        if state.get("train_fingerprint") != self.train_data.fingerprint():
            raise ConfigError(
                f"cannot resume from {path}: the training data or its tokenization changed since the checkpoint",
                field="training_file",
            )
        plan = self.plan
        # Checkpoints written before gradient accumulation existed ran one micro-batch per step.
        before = {"gradient_accumulation_steps": 1, "step_examples": state.get("batch_size")}
        for key in (
            "total_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "step_examples",
            "seed",
            "steps_per_epoch",
        ):
            was = state.get(key, before.get(key))
            if was != getattr(plan, key):
                raise ConfigError(f"cannot resume from {path}: {key} was {was}, now {getattr(plan, key)}")
        was_fsdp = (path / FSDP_MODEL_FILE).is_file()
        was_zero = (path / ZERO_DIR).is_dir()
        if was_zero != (self.engine is not None) or (self.fsdp and not was_fsdp):
            # The optimizer's state is keyed by parameter name in an FSDP checkpoint (which therefore
            # loads anywhere, one process included), by position otherwise, and in per-process shards
            # of DeepSpeed's own format under ZeRO.
            now = self.local.strategy if self.fsdp or self.engine is not None else "ddp or one process"
            raise ConfigError(
                f"cannot resume from {path}: it was saved with strategy {state.get('strategy', 'ddp')!r} "
                f"{'over several processes' if was_fsdp or was_zero else ''}, and this run uses "
                f"{now}; resume with the strategy it was saved with",
                field="local.strategy",
            )
        if self.engine is not None:
            saved = (state.get("strategy"), state.get("world_size"))
            if saved != (self.local.strategy, self.dist.world):
                raise ConfigError(
                    f"cannot resume from {path}: its DeepSpeed shards are of strategy {saved[0]!r} over {saved[1]} "
                    f"processes, and this run is {self.local.strategy!r} over {self.dist.world}; resume with those",
                    field="local.num_devices",
                )
            loaded, _ = self.engine.load_checkpoint(
                str(path / ZERO_DIR),
                tag=ZERO_TAG,
                load_module_strict=False,  # the frozen base was not saved: it comes from the base model
                load_optimizer_states=True,
                load_lr_scheduler_states=False,  # the trainer's scheduler is saved on its own
            )
            if loaded is None:
                raise ConfigError(f"cannot resume from {path}: DeepSpeed found no checkpoint in {path / ZERO_DIR}")
        elif was_fsdp:
            from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

            # Whole tensors keyed by name, every rank loading them: under FSDP each keeps its own
            # shard, otherwise the whole; so any number of processes (one included) resumes it.
            trainable = torch.load(path / FSDP_MODEL_FILE, map_location="cpu", weights_only=True)
            set_model_state_dict(self.lm.model, trainable, options=_full_options(strict=False))
            optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
            set_optimizer_state_dict(self.head, self.optimizer, optimizer_state, options=_full_options())
        else:
            weights = load_file(str(path / "adapter" / "adapter_model.safetensors"), device=str(self.device))
            set_peft_model_state_dict(self.lm.model, weights)
            self.optimizer.load_state_dict(
                torch.load(path / "optimizer.pt", map_location=self.device, weights_only=True)
            )
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rngs = torch.load(path / "rng.pt", weights_only=False)
        rng = rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        return state

    # -- the run --
    def _begin(self, resume: bool) -> _Progress:
        """Seeds, DPO reference log-probabilities, then the last checkpoint's progress or a fresh start."""
        plan, run = self.plan, self.run
        torch.manual_seed(plan.seed)
        random.seed(plan.seed)
        progress = _Progress()
        checkpoint = run.last_checkpoint() if resume else None
        if self.dpo:
            self.status("reference", "computing reference log-probabilities")
            self.ref_train = self.reference_logps(self.train_data)
            self.ref_valid = self.reference_logps(self.valid_data) if self.valid_data else None
        if checkpoint is not None:
            state = self.load_checkpoint(checkpoint)
            progress.done, progress.tokens_seen = int(state["step"]), int(state["tokens_seen"])
            progress.train_seconds = float(state["train_seconds"])
            progress.base_valid = state.get("base_valid_loss")
            progress.last_valid = state.get("last_valid")
            self.log(f"resumed from checkpoint at step {progress.done} of {plan.total_steps}")
        else:
            if resume:
                self.log("no complete checkpoint to resume from: starting from the first step", level="warning")
            if self.valid_data is not None:
                self.status("evaluating", "measuring the base model's validation loss")
                result = self.evaluate()
                progress.base_valid = result["loss"] if result else None
        return progress

    def _state_dict(self, p: _Progress) -> dict[str, Any]:
        """What a checkpoint records besides the weights, to resume exactly."""
        plan = self.plan
        return {
            "step": p.done,
            "tokens_seen": p.tokens_seen,
            "train_seconds": p.train_seconds,
            "base_valid_loss": p.base_valid,
            "last_valid": p.last_valid,
            "train_fingerprint": self.train_data.fingerprint(),
            "total_steps": plan.total_steps,
            "batch_size": plan.batch_size,
            "gradient_accumulation_steps": plan.gradient_accumulation_steps,
            "step_examples": plan.step_examples,
            "seed": plan.seed,
            "steps_per_epoch": plan.steps_per_epoch,
            "world_size": self.dist.world,
            "strategy": self.local.strategy if self.dist.world > 1 else None,
            "last_point": p.last_point.model_dump(mode="json") if p.last_point else None,
        }

    def _stop_cancelled(self, p: _Progress) -> dict[str, Any]:
        """Keep a checkpoint of the last step (unless one exists) and record the cancellation."""
        run, dist, total = self.run, self.dist, self.plan.total_steps
        last = run.last_checkpoint() if dist.main else None
        if p.done > 0 and dist.broadcast(last is None or last.name != f"{CHECKPOINT_PREFIX}{p.done}"):
            self.save_checkpoint(p.done, self._state_dict(p))
        if dist.main:
            run.set_status(
                JobStatus.CANCELLED,
                raw="cancelled",
                message=f"cancelled at step {p.done} of {total}; checkpoint kept",
            )
        return {"status": "cancelled", "steps": p.done, "total_steps": total}

    def train(self, resume: bool) -> dict[str, Any]:
        plan, run, dist = self.plan, self.run, self.dist
        p = self._begin(resume)
        self._start_trackers(p.done)
        accumulation = (
            f" x {plan.gradient_accumulation_steps} accumulated" if plan.gradient_accumulation_steps > 1 else ""
        )
        self.status(
            "training",
            f"training {plan.total_steps} steps ({plan.epochs} epoch(s), batch {plan.batch_size}{accumulation},"
            f" {len(self.train_data)} examples) on {self.device.type}, layout {self.lm.layout}",
        )
        window = _Window()
        self.head.train()
        last_update = 0.0
        mark = time.perf_counter()
        while p.done < plan.total_steps:
            if self._cancel_requested():
                return self._stop_cancelled(p)
            lr = float(self.scheduler.get_last_lr()[0])
            self.train_step(p.done, window)
            p.done += 1
            eval_now = plan.eval_due(p.done)
            save_now = plan.save_due(p.done)
            # A checkpoint also closes the logging window, so its figures (tokens seen) are complete.
            log_now = p.done % plan.logging_steps == 0 or eval_now or save_now or p.done == plan.total_steps
            if log_now or save_now:
                # Only here does the host wait for the device: the time until now was training.
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                elapsed = time.perf_counter() - mark
                window.seconds += elapsed
                p.train_seconds += elapsed
            if log_now:
                valid = self.evaluate() if eval_now else None
                if valid is not None:
                    p.last_valid = valid
                p.last_point, p.tokens_seen = self._log_point(p.done, window, lr, valid, p.tokens_seen)
                window = _Window()
            if dist.main and (log_now or save_now or time.monotonic() - last_update >= STATUS_INTERVAL):
                run.update(step=p.done, total_steps=plan.total_steps)
                last_update = time.monotonic()
            if save_now:
                self.save_checkpoint(p.done, self._state_dict(p))
            if log_now or save_now:
                mark = time.perf_counter()
        return self.finish(p.done, p.tokens_seen, p.train_seconds, p.base_valid, p.last_valid, p.last_point)

    def _start_trackers(self, done: int) -> None:
        """Open the ``report_to`` trackers (rank 0) with the resolved hyperparameters as their config."""
        if not self.spec.report_to or not self.dist.main:
            return
        trackers = open_trackers(
            self.spec.report_to,
            run_dir=self.run.path,
            run_id=self.run.id,
            resume_step=done,
            warn=lambda message: self.log(message, level="warning"),
        )
        config = plan_dict(self.plan) | {
            "base_model": self.spec.base_model,
            "lora": (self.spec.lora or LoraConfig()).model_dump(mode="json"),
            "quantization": self.spec.quantization.value,
            "examples": len(self.train_data),
            "validation_examples": len(self.valid_data) if self.valid_data is not None else None,
            "device": self.device.type,
            "world_size": self.dist.world,
        }
        trackers.start(config)
        self.trackers = trackers
        where = (
            f" (TensorBoard logs in {self.run.path / TENSORBOARD_DIR})" if "tensorboard" in self.spec.report_to else ""
        )
        self.log(f"reporting to {', '.join(self.spec.report_to)}{where}")

    def _cancel_requested(self) -> bool:
        flag = float(self.run.cancel_requested()) if self.dist.main else 0.0
        return self.dist.sum([flag], self.device)[0] > 0

    def _log_point(
        self, done: int, w: _Window, lr: float, valid: dict[str, float] | None, tokens_seen: int
    ) -> tuple[MetricPoint, int]:
        sums = w.host()
        loss, correct = sums.pop("loss", 0.0), sums.pop("correct", 0.0)
        keys = sorted(sums)
        figures = self.dist.sum(
            [loss, w.weight, correct, w.targets, float(w.tokens), *(sums[k] for k in keys)], self.device
        )
        loss, weight, correct, targets, tokens = figures[:5]
        tokens_seen += int(tokens)
        extra = {k: v / max(weight, 1.0) for k, v in zip(keys, figures[5:], strict=True)}
        if valid is not None:
            extra.update({f"valid_{k}": v for k, v in valid.items() if k.startswith("rewards/")})
        point = MetricPoint(
            step=done,
            epoch=round(done / self.plan.steps_per_epoch, 4),
            train_loss=loss / max(weight, 1.0),
            valid_loss=valid["loss"] if valid else None,
            token_accuracy=None if self.dpo else correct / max(targets, 1.0),
            valid_token_accuracy=valid.get("token_accuracy") if valid else None,
            learning_rate=lr,
            tokens_seen=tokens_seen,
            tokens_per_second=round(tokens / w.seconds, 1) if w.seconds > 0 else None,
            time=datetime.now(timezone.utc),
            extra=extra,
        )
        if self.dist.main:
            self.run.log_metric(point)
            self.trackers.log(point)
        return point, tokens_seen

    def finish(
        self,
        done: int,
        tokens_seen: int,
        train_seconds: float,
        base_valid: float | None,
        last_valid: dict[str, float] | None,
        last_point: MetricPoint | None,
    ) -> dict[str, Any]:
        run, dist = self.run, self.dist
        result: dict[str, Any] = {}
        trainable = self._trainable_state()  # every rank: under FSDP gathering is a collective
        # Each rank's own peak (what sharding saves shows per process, not in rank 0's figure alone).
        rss_per_rank = dist.gather((_peak_rss_mib(), _rss_mib()))
        if dist.main:
            self.status("saving", "saving the adapter")
            self._save_adapter(trainable)
            merged = self._save_merged() if self.local.merge else None
            plan = self.plan
            result = {
                "adapter_path": str(run.adapter_dir),
                "merged_path": str(merged) if merged else None,
                "base_model": self.spec.base_model,
                "method": plan.method,
                "train_tokens": tokens_seen,
                "train_seconds": round(train_seconds, 3),
                "tokens_per_second": round(tokens_seen / train_seconds, 1) if train_seconds > 0 else None,
                "wall_seconds": round(time.perf_counter() - self.started, 3),
                "peak_rss_mib": _peak_rss_mib(),
                "final_train_loss": last_point.train_loss if last_point else None,
                "final_valid_loss": last_valid["loss"] if last_valid else None,
                "base_valid_loss": base_valid,
                "steps": done,
                "total_steps": plan.total_steps,
                "epochs": plan.epochs,
                "batch_size": plan.batch_size,
                "gradient_accumulation_steps": plan.gradient_accumulation_steps,
                "learning_rate": plan.learning_rate,
                "lr_scheduler": plan.lr_scheduler,
                "warmup_steps": plan.warmup_steps,
                "optimizer": plan.optimizer,
                "weight_decay": plan.weight_decay,
                "seed": plan.seed,
                "max_length": plan.max_length,
                "examples": len(self.train_data),
                "validation_examples": len(self.valid_data) if self.valid_data is not None else None,
                "truncated": self.train_data.truncated,
                "dropped": self.train_data.dropped,
                "empty": self.train_data.empty,
                "device": self.device.type,
                "world_size": dist.world,
                "strategy": self.local.strategy if dist.world > 1 else None,
                "peak_rss_mib_per_rank": [peak for peak, _ in rss_per_rank],
                "final_rss_mib_per_rank": [now for _, now in rss_per_rank],
                "layout": self.lm.layout,
                "gradient_checkpointing": self.lm.gradient_checkpointing,
                "quantization": self.spec.quantization.value,
                "report_to": list(self.spec.report_to),
            }
            if self.device.type == "cuda":
                result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            if last_point and last_point.extra:
                result["final_metrics"] = dict(last_point.extra)
            run.write_result(result)
            before = f"{base_valid:.4f} -> " if base_valid is not None else ""
            after = f"; validation loss {before}{last_valid['loss']:.4f}" if last_valid else ""
            run.set_status(
                JobStatus.SUCCEEDED,
                raw="succeeded",
                message=f"finished {done} steps{after}",
                step=done,
                total_steps=self.plan.total_steps,
            )
        dist.barrier()
        return result

    def _save_adapter(self, trainable: dict[str, torch.Tensor] | None) -> None:
        """Write the final PEFT adapter; ``trainable``: its parameters gathered whole (FSDP), or None."""
        run = self.run
        tmp = run.path / f"{ADAPTER_TMP_PREFIX}{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.lm.model.save_pretrained(tmp, state_dict=trainable)
        self.lm.tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "anytune_spec.json", self.spec.model_dump(mode="json"))
        points = run.metrics()  # one per step: a resumed run logs the steps after its checkpoint again
        if points:
            lines = (json.dumps(p.model_dump(mode="json"), separators=(",", ":")) + "\n" for p in points)
            (tmp / "metrics.jsonl").write_text("".join(lines))
        if run.adapter_dir.exists():
            shutil.rmtree(run.adapter_dir)
        os.replace(tmp, run.adapter_dir)

    def _save_merged(self) -> Path:
        """Merge the adapter into a fresh, unquantized copy of the base and save it with the tokenizer."""
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        run = self.run
        dtype = self.lm.autocast_dtype or torch.float32
        with quiet_transformers():
            base = AutoModelForCausalLM.from_pretrained(self.lm.source, dtype=dtype)
            merged = PeftModel.from_pretrained(base, str(run.adapter_dir)).merge_and_unload()
        tmp = run.path / f"{MERGED_TMP_PREFIX}{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        merged.save_pretrained(tmp)
        self.lm.tokenizer.save_pretrained(tmp)
        if run.merged_dir.exists():
            shutil.rmtree(run.merged_dir)
        os.replace(tmp, run.merged_dir)
        return Path(run.merged_dir)


def run_training(run: RunDir, *, resume: bool = False, node_rank: int = 0) -> dict[str, Any]:
    """Train the job of ``run`` and record everything in its run directory.

    Args:
        run: the job's run directory (``spec.json`` written by the provider).
        resume: continue from ``run.last_checkpoint()`` (from the start when there is none).
        node_rank: this machine's node on a multi-node job (node 0's first process writes).

    Returns:
        The result dict written to ``result.json`` (on rank 0; ``{}`` on other ranks), or
        ``{"status": "cancelled", ...}`` when a cancel was requested (a checkpoint is kept).

    Raises:
        ConfigError, DataValidationError, NotSupportedError, MissingDependencyError: bad input,
            raised before training starts where possible.
    """
    spec = run.spec()
    dist = _init_dist(device_kind((spec.local or LocalOptions()).device), node_rank)
    if resume and dist.main:
        # Resuming is an explicit request to go on: a cancel left over from the interrupted run is void.
        run.cancel_file.unlink(missing_ok=True)
    dist.barrier()
    trainer = _Trainer(run, spec, dist)
    outcome = "failed"
    try:
        trainer.setup()
        result = trainer.train(resume)
        outcome = "cancelled" if result.get("status") == "cancelled" else "succeeded"
        return result
    finally:
        trainer.trackers.finish(outcome)
        if dist.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m anytune.local_backend.train RUN_DIR [--resume]``: train in this process.

    Meant for launchers (``torchrun --nproc_per_node N -m anytune.local_backend.train RUN_DIR``) and
    debugging; the local provider runs :mod:`.worker`, which adds signal handling and failure records.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m anytune.local_backend.train")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--node-rank", dest="node_rank", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_training(RunDir(args.run_dir), resume=args.resume, node_rank=args.node_rank)
    if result:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
