"""DeepSpeed ZeRO (``local.strategy`` ``zero2`` / ``zero3``): the DeepSpeed config a job runs with.

Pure and light on purpose (nothing here imports torch or DeepSpeed at import time): the submitting
process, ``--dry-run`` and the worker build the same config from the spec, so what ``--dry-run``
shows is what the engine gets.

The mapping: ``zero_optimization.stage`` from the strategy; ``local.cpu_offload`` as
``offload_optimizer`` (and, for stage 3, ``offload_param``) on the CPU; the batch keys from
``hyperparameters.batch_size`` (the examples of one micro-batch over all processes) and
``gradient_accumulation_steps``; ``gradient_clipping`` the trainer's own; for stage 3 the 16-bit
weights gathered on save, so a saved module is whole. DeepSpeed's own ``bf16`` / ``fp16`` stay off:
the trainer runs its own autocast (bf16 on CUDA where supported, float32 elsewhere) with float32
adapter weights, as under DDP and FSDP, so one loop trains alike under every strategy.

``local.deepspeed_config`` (a DeepSpeed JSON file, or an inline table in a spec file) is merged over
the mapped config, its keys winning, except those the spec decides: the batch keys and the ZeRO
stage may repeat the mapped value, not change it, and ``optimizer`` / ``scheduler`` are the
trainer's (``hyperparameters.optimizer`` / ``lr_scheduler``). The result is checked against
DeepSpeed's own config classes where DeepSpeed is installed (each section is a pydantic model that
refuses unknown keys; DeepSpeed itself ignores unknown top-level keys, and so does this check).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from anytune._spec import JobSpec, LocalOptions
from anytune._specfile import deep_merge
from anytune.errors import ConfigError
from anytune.local_backend.hparams import DEFAULT_BATCH_SIZE, MAX_GRAD_NORM

__all__ = ["BATCH_KEYS", "STAGES", "check_with_deepspeed", "deepspeed_config", "load_user_config"]

FIELD = "local.deepspeed_config"
#: ``local.strategy`` -> ZeRO stage.
STAGES = {"zero2": 2, "zero3": 3}
#: Keys that follow from the spec: a user's config may repeat them, not change them.
BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
#: Sections the trainer owns: it passes its own optimizer and steps its own scheduler.
OWNED = {"optimizer": "hyperparameters.optimizer", "scheduler": "hyperparameters.lr_scheduler"}
#: DeepSpeed prints a line every this many steps by default; the trainer logs its own progress.
QUIET_STEPS = 1 << 30


def load_user_config(source: Path | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The user's DeepSpeed config: an inline table as it is, or a JSON file read.

    Raises:
        ConfigError: the file is missing or unreadable, not JSON, or not a JSON object (names the file).
    """
    if source is None:
        return None
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    path = Path(source).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the DeepSpeed config: {exc.strerror or exc}", field=FIELD, source=str(path)
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", field=FIELD, source=str(path)
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"a DeepSpeed config is a JSON object, not {type(data).__name__}", field=FIELD, source=str(path)
        )
    return data


def _where(options: LocalOptions) -> str | None:
    given = options.deepspeed_config
    return str(given) if isinstance(given, Path) else None


def deepspeed_config(
    spec: JobSpec,
    options: LocalOptions,
    world_size: int,
    *,
    batch_size: int | None = None,
    gradient_accumulation_steps: int | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config of ``spec`` over ``world_size`` processes, the user's merged in.

    Args:
        spec: the job (its hyperparameters give the batch keys).
        options: its ``local`` section (strategy, cpu_offload, deepspeed_config).
        world_size: processes in the whole job.
        batch_size, gradient_accumulation_steps: the trainer's resolved values (its plan caps the
            batch at the number of examples); default: the spec's, or the trainer's defaults.

    Raises:
        ConfigError: the strategy is not ZeRO; the batch does not split evenly over the processes;
            the user's config changes a key the spec decides, or sets the optimizer / scheduler
            (each names the key, and the file when there is one); the user's file cannot be read.
    """
    stage = STAGES.get(options.strategy)
    if stage is None:
        raise ConfigError(f"strategy {options.strategy!r} is not DeepSpeed ZeRO (zero2, zero3)", field="local.strategy")
    hp = spec.hyperparameters
    batch = batch_size or hp.batch_size or DEFAULT_BATCH_SIZE
    accumulation = gradient_accumulation_steps or hp.gradient_accumulation_steps or 1
    if batch % world_size:
        # DeepSpeed's bookkeeping needs train_batch_size = micro x accumulation x processes exactly.
        raise ConfigError(
            f"DeepSpeed ZeRO splits each micro-batch evenly over the processes: batch_size {batch} is not a "
            f"multiple of the {world_size} processes; pick a multiple of {world_size}",
            field="hyperparameters.batch_size",
        )
    zero: dict[str, Any] = {"stage": stage}
    if options.cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu"}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    mapped: dict[str, Any] = {
        "train_batch_size": batch * accumulation,
        "train_micro_batch_size_per_gpu": batch // world_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": MAX_GRAD_NORM,
        "zero_optimization": zero,
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        # The trainer's torch AdamW steps offloaded states too (DeepSpeed's CPU Adam is a compiled op).
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": QUIET_STEPS,
    }
    user = load_user_config(options.deepspeed_config)
    if not user:
        return mapped
    where = _where(options)
    for key, owner in OWNED.items():
        if key in user:
            raise ConfigError(
                f"{key!r}: the local trainer passes its own {key} ({owner}); remove the section",
                field=key,
                source=where,
            )
    for key in BATCH_KEYS:
        if key in user and user[key] != "auto" and user[key] != mapped[key]:
            raise ConfigError(
                f"{key!r} is {user[key]!r} there but the spec makes it {mapped[key]!r} (hyperparameters.batch_size "
                f"{batch}, gradient_accumulation_steps {accumulation}, {world_size} processes); "
                "remove it or make them agree",
                field=key,
                source=where,
            )
    given = user.get("zero_optimization")
    if isinstance(given, Mapping) and "stage" in given and given["stage"] != stage:
        raise ConfigError(
            f"'zero_optimization.stage' is {given['stage']!r} there but local.strategy {options.strategy!r} is stage "
            f"{stage}; remove it or change local.strategy",
            field="zero_optimization.stage",
            source=where,
        )
    # "auto" (accelerate's and transformers' placeholder) means: what the spec says.
    user = {k: v for k, v in user.items() if not (k in BATCH_KEYS and v == "auto")}
    # The user's config is a private copy (load_user_config): its values need no further copying.
    return deep_merge(mapped, user)


def check_with_deepspeed(
    config: Mapping[str, Any], world_size: int, *, source: str | None = None, device: str = "cpu"
) -> bool:
    """Parse ``config`` with DeepSpeed's own config classes; False (nothing checked) without DeepSpeed.

    Raises:
        ConfigError: DeepSpeed refuses it (an unknown key of a section, a wrong type); names the key.
    """
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        return False
    with _quiet_deepspeed(device):
        return _check(config, world_size, source)


@contextlib.contextmanager
def _quiet_deepspeed(device: str) -> Iterator[None]:
    """DeepSpeed's logger writes to stdout, where ``--dry-run`` prints its JSON: bind it to stderr
    (its handler takes the stream current at import), and name the accelerator so that DeepSpeed
    does not guess and warn. The variable is put back: the job's worker sets its own."""
    before = os.environ.get("DS_ACCELERATOR")
    if before is None:
        os.environ["DS_ACCELERATOR"] = "cuda" if device == "cuda" else "cpu"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if before is None:
            os.environ.pop("DS_ACCELERATOR", None)


def _check(config: Mapping[str, Any], world_size: int, source: str | None) -> bool:
    from deepspeed.runtime.config import DeepSpeedConfig

    # Offline there is no process group: DeepSpeed counts one process, so check the batch keys as
    # they read on one (they were checked over world_size when mapped).
    one = dict(config)
    if isinstance(one.get("train_batch_size"), int):
        one["train_batch_size"] = one["train_batch_size"] // max(world_size, 1)
    try:
        DeepSpeedConfig(one)
    except Exception as exc:  # pydantic's ValidationError, DeepSpeed's AssertionError / ValueError
        errors = getattr(exc, "errors", None)
        if callable(errors):
            first = errors()[0]
            loc = [str(p) for p in first.get("loc", ())]
            # A section's model does not know its own key: find the section that holds the bad key.
            section_key = next((k for k, v in one.items() if isinstance(v, Mapping) and loc and loc[0] in v), None)
            key = ".".join([section_key, *loc] if section_key else loc)
            section = str(getattr(exc, "title", type(exc).__name__))
            raise ConfigError(
                f"DeepSpeed refuses {key!r} ({section}): {first.get('msg')}", field=key or FIELD, source=source
            ) from None
        raise ConfigError(f"DeepSpeed refuses the config: {exc}", field=FIELD, source=source) from None
    return True
