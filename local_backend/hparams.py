"""What the local trainer will use: every hyperparameter with its default applied, without torch.

One resolution for the three places that show or use it: ``--dry-run`` (the local provider's plan),
the trainer (:class:`TrainingPlan`) and ``result.json``. Light on purpose: nothing here imports
torch, transformers or bitsandbytes at module level, so the submitting process can plan a run.

Batches: ``batch_size`` examples go through one forward pass (fewer when they would not fit in
memory); ``gradient_accumulation_steps`` such micro-batches make one optimizer step, whose loss is
the mean over every label of the step. A step of ``batch_size * gradient_accumulation_steps``
examples with no accumulation computes the same update.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anytune._spec import JobSpec, LocalOptions, LoraConfig
from anytune.errors import DataValidationError, MissingDependencyError, NotSupportedError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_SEED",
    "TrainingPlan",
    "check_optimizer",
    "check_validation_split",
    "default_max_length",
    "make_plan",
    "resolved_settings",
    "split_validation",
]

DEFAULT_LEARNING_RATE = 2e-4
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_LENGTH = 1024
DEFAULT_SEED = 42
DEFAULT_BETA = 0.1
DEFAULT_WARMUP_RATIO = 0.03
DEFAULT_WEIGHT_DECAY = 0.0
DEFAULT_SCHEDULER = "linear"
DEFAULT_OPTIMIZER = "adamw_torch"
MAX_GRAD_NORM = 1.0
#: Optimizers that come from bitsandbytes, by spec name: (class in ``bitsandbytes.optim``).
BNB_OPTIMIZERS = {"adamw_8bit": "AdamW8bit", "paged_adamw_8bit": "PagedAdamW8bit"}

_OPTIMIZER_FIELD = "hyperparameters.optimizer"


@dataclass(frozen=True)
class TrainingPlan:
    """Resolved hyperparameters: every default applied, so the result says what actually ran.

    ``batch_size`` is the examples of one micro-batch, ``step_examples`` those of one optimizer
    step (``batch_size * gradient_accumulation_steps``, at most the whole file).
    """

    method: str
    epochs: int
    batch_size: int
    gradient_accumulation_steps: int
    step_examples: int
    learning_rate: float
    lr_scheduler: str
    optimizer: str
    weight_decay: float
    max_length: int
    seed: int
    beta: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    logging_steps: int
    eval_steps: int | None
    save_steps: int | None

    def epoch_end(self, done: int) -> bool:
        """Whether ``done`` completed steps end an epoch."""
        return done % self.steps_per_epoch == 0

    def eval_due(self, done: int) -> bool:
        if done == self.total_steps:
            return True
        return done % self.eval_steps == 0 if self.eval_steps else self.epoch_end(done)

    def save_due(self, done: int) -> bool:
        if done == self.total_steps:
            return False  # the final adapter is written anyway
        return done % self.save_steps == 0 if self.save_steps else self.epoch_end(done)

    def micro_batches(self, indices: Sequence[int]) -> list[list[int]]:
        """A step's examples in micro-batches of ``batch_size``."""
        b = self.batch_size
        return [list(indices[k : k + b]) for k in range(0, len(indices), b)]


def make_plan(spec: JobSpec, num_examples: int, max_length: int) -> TrainingPlan:
    """The plan for ``num_examples`` training examples (after any validation split)."""
    hp = spec.hyperparameters
    local = spec.local or LocalOptions()
    batch = min(hp.batch_size or DEFAULT_BATCH_SIZE, num_examples)
    accumulation = hp.gradient_accumulation_steps or 1
    step_examples = min(batch * accumulation, num_examples)
    per_epoch = math.ceil(num_examples / step_examples)
    epochs = hp.epochs or DEFAULT_EPOCHS
    total = hp.max_steps if hp.max_steps is not None else epochs * per_epoch
    if hp.warmup_steps is not None:
        warmup = hp.warmup_steps
    else:
        warmup = round((hp.warmup_ratio if hp.warmup_ratio is not None else DEFAULT_WARMUP_RATIO) * total)
    lr = hp.learning_rate or DEFAULT_LEARNING_RATE * (hp.learning_rate_multiplier or 1.0)
    return TrainingPlan(
        method=spec.method.value,
        epochs=math.ceil(total / per_epoch),
        batch_size=batch,
        gradient_accumulation_steps=accumulation,
        step_examples=step_examples,
        learning_rate=lr,
        lr_scheduler=hp.lr_scheduler or DEFAULT_SCHEDULER,
        optimizer=hp.optimizer or DEFAULT_OPTIMIZER,
        weight_decay=hp.weight_decay if hp.weight_decay is not None else DEFAULT_WEIGHT_DECAY,
        max_length=max_length,
        seed=hp.seed if hp.seed is not None else DEFAULT_SEED,
        beta=hp.beta or DEFAULT_BETA,
        steps_per_epoch=per_epoch,
        total_steps=total,
        warmup_steps=min(warmup, total),
        logging_steps=local.logging_steps,
        eval_steps=local.eval_steps,
        save_steps=local.save_steps,
    )


def split_validation(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) indices of ``n`` examples, ``share`` of them held out (pure, seeded).

    At least one example goes each way; the draw depends only on (n, share, seed), so a resumed run
    holds out the same examples. Indices keep file order on both sides.

    Raises:
        ValueError: fewer than two examples.
    """
    if n < 2:
        raise ValueError(f"validation_split needs at least 2 examples to split, the file has {n}")
    # Never more than the share (rounded down: 3 examples at 0.5 keep 2 for training), never none.
    held = min(n - 1, max(1, math.floor(n * share)))
    chosen = set(random.Random(f"anytune-validation:{seed}").sample(range(n), held))
    return [i for i in range(n) if i not in chosen], sorted(chosen)


def check_validation_split(spec: JobSpec) -> None:
    """Refuse a ``validation_split`` of a training file too small to split, before the run exists.

    The worker checks again after tokenization (examples it drops can leave too few); this catches
    the file that can never be split, so the mistake leaves no job behind.

    Raises:
        DataValidationError: the file has fewer than two examples.
    """
    share = spec.hyperparameters.validation_split
    if share is None or spec.validation_file is not None:
        return
    lines = _count_lines(spec.training_path)
    if lines == 0:
        return  # a missing or empty file: the data checks say so, in their own words
    try:
        split_validation(lines, share, DEFAULT_SEED)
    except ValueError as exc:
        raise DataValidationError(f"{spec.training_file}: hyperparameters.validation_split: {exc}") from None


def _model_max_length(base_model: str) -> int | None:
    """The model's context length when ``base_model`` is a local folder (its config.json); else None."""
    try:
        config = json.loads((Path(base_model).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return None
    limit = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return int(limit) if isinstance(limit, int) and limit > 0 else None


def _count_lines(path: Path) -> int:
    """Non-blank lines of a JSONL file: its examples before tokenization (0 if unreadable)."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def _lora(lora: LoraConfig) -> dict[str, Any]:
    return {
        "r": lora.r,
        "alpha": lora.effective_alpha,
        "dropout": lora.dropout,
        "target_modules": lora.target_modules,
        "use_rslora": lora.use_rslora,
        "use_dora": lora.use_dora,
    }


def _max_length(spec: JobSpec) -> tuple[int, str]:
    """The max_length the trainer will use, and where it comes from."""
    if spec.hyperparameters.max_length is not None:
        return spec.hyperparameters.max_length, "spec"
    return default_max_length(spec.base_model)


def default_max_length(base_model: str) -> tuple[int, str]:
    """The max_length the trainer uses when the spec sets none, and where it comes from:
    :data:`DEFAULT_MAX_LENGTH`, or the model's ``max_position_embeddings`` when lower."""
    limit = _model_max_length(base_model)
    if limit is not None and limit < DEFAULT_MAX_LENGTH:
        return limit, "the model's max_position_embeddings"
    if limit is None and not Path(base_model).expanduser().is_dir():
        return DEFAULT_MAX_LENGTH, "default (lower if the model's max_position_embeddings is)"
    return DEFAULT_MAX_LENGTH, "default"


def _validation(spec: JobSpec, lines: int, seed: int) -> tuple[dict[str, Any] | None, int]:
    """What the run validates on, and how many training examples are left."""
    split = spec.hyperparameters.validation_split
    if spec.validation_file is not None:
        return {"file": str(spec.validation_file)}, lines
    if split is None:
        return None, lines
    held = len(split_validation(lines, split, seed)[1]) if lines >= 2 else 0
    return {"split": split, "seed": seed, "examples": held}, lines - held


def resolved_settings(spec: JobSpec, *, device: str) -> dict[str, Any]:
    """Every value the trainer will use for ``spec``, as ``--dry-run`` shows it (JSON-ready).

    Step counts come from the training file's line count: examples the trainer leaves out (too long
    with ``local.truncation='drop'``, or with nothing to learn) lower them; the run's result records
    the exact figures. ``max_length`` defaults to 1024, or the model's own limit when lower (known
    here for a local model folder; for a Hub id, when the worker loads its config).
    """
    hp = spec.hyperparameters
    local = spec.local or LocalOptions()
    seed = hp.seed if hp.seed is not None else DEFAULT_SEED
    max_length, max_length_from = _max_length(spec)
    validation, examples = _validation(spec, _count_lines(spec.training_path), seed)
    plan = make_plan(spec, max(examples, 1), max_length)
    out: dict[str, Any] = {
        "method": plan.method,
        "epochs": plan.epochs,
        "max_steps": hp.max_steps,
        "examples": examples,
        "batch_size": plan.batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "step_examples": plan.step_examples,
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "learning_rate": plan.learning_rate,
        "lr_scheduler": plan.lr_scheduler,
        "warmup_ratio": None if hp.warmup_steps is not None else (hp.warmup_ratio or DEFAULT_WARMUP_RATIO),
        "warmup_steps": plan.warmup_steps,
        "optimizer": plan.optimizer,
        "weight_decay": plan.weight_decay,
        "max_grad_norm": MAX_GRAD_NORM,
        "max_length": max_length,
        "max_length_from": max_length_from,
        "seed": plan.seed,
        "beta": plan.beta if plan.method == "dpo" else None,
        "lora": _lora(spec.lora or LoraConfig()),
        "quantization": spec.quantization.value,
        "validation": validation,
        "device": device,
        "num_devices": local.num_devices,
        "strategy": local.strategy,
        "nodes": local.nodes,
        "packing": local.packing,
        "truncation": local.truncation,
        "gradient_checkpointing": "auto" if local.gradient_checkpointing is None else local.gradient_checkpointing,
        "logging_steps": plan.logging_steps,
        "eval_steps": plan.eval_steps or "every epoch",
        "save_steps": plan.save_steps or "every epoch",
        "report_to": list(spec.report_to),
    }
    return {k: v for k, v in out.items() if v is not None}


def check_optimizer(optimizer: str | None, device: str) -> None:
    """Make sure an 8-bit optimizer can run here: bitsandbytes installed and stepping on ``device``.

    A tiny optimizer step on the device, so a machine where bitsandbytes cannot run fails before any
    work (and the submitting process can say so before it starts a worker). ``adamw_torch`` needs
    nothing.

    Raises:
        MissingDependencyError: bitsandbytes is not installed.
        NotSupportedError: it is installed but cannot run its 8-bit optimizers on ``device``.
    """
    name = BNB_OPTIMIZERS.get(optimizer or "")
    if name is None:
        return
    purpose = f"hyperparameters.optimizer={optimizer!r}"
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError as exc:
        raise MissingDependencyError("bitsandbytes", "local", purpose) from exc
    import warnings

    try:
        param = torch.nn.Parameter(torch.zeros(4096, device=device))
        param.grad = torch.ones_like(param)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # paged optimizers warn on CPU, and fall back to unpaged
            getattr(bnb.optim, name)([param], lr=1e-3).step()
    except Exception as exc:
        raise NotSupportedError(
            f"bitsandbytes {getattr(bnb, '__version__', '?')} cannot run {optimizer} on {device} here "
            f"({type(exc).__name__}: {exc}); use optimizer 'adamw_torch' or a device bitsandbytes supports",
            field=_OPTIMIZER_FIELD,
            provider="local",
        ) from exc


def plan_dict(plan: TrainingPlan) -> dict[str, Any]:
    """The plan as a JSON-ready dict (what the run records as its resolved hyperparameters)."""
    return asdict(plan)
