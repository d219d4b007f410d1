"""``local.accelerate_config``: an ``accelerate config`` YAML file, read onto the ``local`` fields.

Light on purpose (PyYAML only, no torch): the submitting process maps the file before anything
exists, and the run records the mapped fields, not the file's path.

What is read (the rest of accelerate's file, such as ``compute_environment`` or ``tpu_*``, has no
local counterpart and is left alone):

=============================================  ===========================================================
accelerate                                     ``local``
=============================================  ===========================================================
``distributed_type``                           ``strategy``: ``MULTI_GPU`` / ``MULTI_CPU`` ddp, ``FSDP``
                                               fsdp, ``DEEPSPEED`` zero2 / zero3 (by ``zero_stage``);
                                               ``NO`` one process
``num_machines``                               ``nodes``
``num_processes`` (all machines together)      ``num_devices`` (per machine): ``num_processes / nodes``
``machine_rank``                               ``node_rank``
``main_process_ip`` + ``main_process_port``    ``rdzv_endpoint`` (several machines)
``use_cpu``                                    ``device = "cpu"``
``mixed_precision``                            checked: ``no`` and ``bf16`` (the trainer's own autocast:
                                               bf16 on CUDA where supported); ``fp16`` is refused
``fsdp_config.fsdp_offload_params``            ``cpu_offload``
``fsdp_config.fsdp_activation_checkpointing``  ``gradient_checkpointing``
``deepspeed_config.zero_stage``                ``strategy`` zero2 / zero3 (0 and 1 are refused)
``deepspeed_config.offload_optimizer_device``  ``cpu_offload`` (``cpu``; ``nvme`` is refused)
``deepspeed_config.offload_param_device``      ``cpu_offload`` (the same)
``deepspeed_config.deepspeed_config_file``     ``deepspeed_config`` (relative: to the YAML's folder)
=============================================  ===========================================================

A field the spec sets too must agree with the file: a conflict is a ConfigError naming both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from anytune._spec import LocalOptions
from anytune.errors import ConfigError

__all__ = ["apply_accelerate_config", "read_accelerate_config"]

FIELD = "local.accelerate_config"
_STRATEGY = {"MULTI_GPU": "ddp", "MULTI_CPU": "ddp", "MULTI_XPU": "ddp", "FSDP": "fsdp"}


def read_accelerate_config(path: Path) -> dict[str, Any]:
    """The YAML file as a mapping.

    Raises:
        ConfigError: missing, unreadable, not YAML, or not a mapping (names the file).
    """
    import yaml

    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the accelerate config: {exc.strerror or exc}", field=FIELD, source=str(path)
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", field=FIELD, source=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"an accelerate config is a YAML mapping, not {type(data).__name__}", field=FIELD, source=str(path)
        )
    return data


def _deepspeed(ds: dict[str, Any], folder: Path, bad: Callable[[str, str], ConfigError]) -> dict[str, tuple[str, Any]]:
    """The fields of accelerate's ``deepspeed_config`` section."""
    out: dict[str, tuple[str, Any]] = {}
    stage = ds.get("zero_stage", 2)
    if stage not in (2, 3):
        raise bad("deepspeed_config.zero_stage", f"ZeRO stage {stage!r}: the local trainer runs stage 2 or 3")
    out["strategy"] = ("deepspeed_config.zero_stage", f"zero{stage}")
    offload = {ds.get("offload_optimizer_device", "none"), ds.get("offload_param_device", "none")} - {"none", None}
    if offload - {"cpu"}:
        raise bad("deepspeed_config.offload_optimizer_device", f"offload to {sorted(offload)}: the CPU only")
    if offload:
        out["cpu_offload"] = ("deepspeed_config.offload_*_device", True)
    file = ds.get("deepspeed_config_file")
    if file:
        path = Path(str(file)).expanduser()
        out["deepspeed_config"] = (
            "deepspeed_config.deepspeed_config_file",
            path if path.is_absolute() else folder / path,
        )
    return out


def _section(config: dict[str, Any], key: str, bad: Callable[[str, str], ConfigError]) -> dict[str, Any]:
    """A nested section (``deepspeed_config``, ``fsdp_config``): a mapping, or absent."""
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise bad(key, f"{key} is a mapping of accelerate's keys, not {type(value).__name__} {value!r}")
    return value


def _int(
    config: dict[str, Any], key: str, default: int, bad: Callable[[str, str], ConfigError], *, least: int = 0
) -> int:
    """An integer key (a hand-edited file may hold 'two' or 1.5): refused naming the key, not a traceback."""
    value = config.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().lstrip("-").isdigit():
        raise bad(key, f"{key} must be an integer, not {value!r}")
    number = int(value)
    if number < least:
        raise bad(key, f"{key} must be at least {least}, not {number}")
    return number


def _mapped(config: dict[str, Any], folder: Path, source: str) -> dict[str, tuple[str, Any]]:
    """``local`` field -> (the accelerate key it came from, its value)."""

    def bad(key: str, message: str) -> ConfigError:
        return ConfigError(message, field=key, source=source)

    out: dict[str, tuple[str, Any]] = {}
    kind = str(config.get("distributed_type", "NO")).upper()
    fsdp = _section(config, "fsdp_config", bad)
    if kind == "DEEPSPEED":
        out |= _deepspeed(_section(config, "deepspeed_config", bad), folder, bad)
    elif kind in _STRATEGY:
        out["strategy"] = ("distributed_type", _STRATEGY[kind])
    elif kind != "NO":
        raise bad("distributed_type", f"distributed_type {kind!r} has no local counterpart (ddp, fsdp, zero2, zero3)")
    if kind == "FSDP":
        if "fsdp_offload_params" in fsdp:
            out["cpu_offload"] = ("fsdp_config.fsdp_offload_params", bool(fsdp["fsdp_offload_params"]))
        if "fsdp_activation_checkpointing" in fsdp:
            out["gradient_checkpointing"] = (
                "fsdp_config.fsdp_activation_checkpointing",
                bool(fsdp["fsdp_activation_checkpointing"]),
            )
    machines = _int(config, "num_machines", 1, bad) or 1
    if machines > 1:
        out["nodes"] = ("num_machines", machines)
        out["node_rank"] = ("machine_rank", _int(config, "machine_rank", 0, bad))
        ip, port = config.get("main_process_ip"), config.get("main_process_port")
        if not ip or not port:
            raise bad("main_process_ip", f"{machines} machines need main_process_ip and main_process_port")
        out["rdzv_endpoint"] = ("main_process_ip:main_process_port", f"{ip}:{port}")
    if "num_processes" in config:
        total = _int(config, "num_processes", 1, bad, least=1)
        if total % machines:
            raise bad("num_processes", f"num_processes {total} does not split evenly over {machines} machines")
        out["num_devices"] = ("num_processes", total // machines)
    if config.get("use_cpu"):
        out["device"] = ("use_cpu", "cpu")
    precision = config.get("mixed_precision", "no")
    # YAML 1.1 reads an unquoted ``mixed_precision: no`` as false (accelerate writes it quoted).
    precision = "no" if precision in (False, None) else str(precision).lower()
    if precision not in ("no", "bf16"):
        raise bad(
            "mixed_precision",
            f"mixed_precision {precision!r}: the local trainer runs float32, or bf16 autocast on CUDA (no, bf16)",
        )
    return out


def apply_accelerate_config(options: LocalOptions) -> LocalOptions:
    """``options`` with the fields its ``accelerate_config`` gives filled in (itself without one).

    Raises:
        ConfigError: the file cannot be read; a value has no local counterpart; a field the spec
            set explicitly differs from the file's (names both).
    """
    if options.accelerate_config is None:
        return options
    path = Path(options.accelerate_config).expanduser()
    mapped = _mapped(read_accelerate_config(path), path.parent, str(path))
    given = options.model_fields_set
    update: dict[str, Any] = {}
    for name, (key, value) in mapped.items():
        current = getattr(options, name)
        if name in given and current is not None and current != value:
            raise ConfigError(
                f"the accelerate config's {key} gives local.{name} = {value!r}, but local.{name} = {current!r} "
                "was set too; remove one of them",
                field=f"local.{name}",
                source=str(path),
            )
        update[name] = value
    data = options.model_dump(exclude_unset=True) | update
    data.pop("accelerate_config", None)  # read: the run keeps the fields, not the file
    try:
        return LocalOptions.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError: e.g. node_rank out of range
        raise ConfigError(f"the fields it gives are not valid together: {exc}", field=FIELD, source=str(path)) from None
