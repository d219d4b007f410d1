"""The job specification: what to fine-tune, on what data, how.

Everything here is pure data (pydantic models) so that a spec can be built from Python, a CLI, a
TOML/YAML file or a profile, stored, shown with ``--dry-run`` and checked against a provider's
capabilities before anything leaves the machine.
"""

from __future__ import annotations

import enum
import itertools
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from anytune.errors import ConfigError


class Method(str, enum.Enum):
    """Training method. ``sft`` takes chat (or prompt/completion) data, ``dpo`` preference pairs."""

    SFT = "sft"
    DPO = "dpo"

    def __str__(self) -> str:
        return self.value


class Quantization(str, enum.Enum):
    """Base-model quantization for adapter training (``4bit`` is QLoRA)."""

    NONE = "none"
    INT4 = "4bit"
    INT8 = "8bit"

    def __str__(self) -> str:
        return self.value


class _Section(BaseModel):
    # forbid: a misspelt option must fail loudly, naming itself, not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Hyperparameters(_Section):
    """Training hyperparameters. ``None`` leaves the choice to the provider."""

    epochs: int | None = Field(None, ge=1, le=100)
    batch_size: int | None = Field(None, ge=1, le=4096)
    learning_rate: float | None = Field(None, gt=0, lt=1)
    learning_rate_multiplier: float | None = Field(None, gt=0, le=100)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0)
    max_steps: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=8, le=1_048_576)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    beta: float | None = Field(None, gt=0, le=10, description="DPO beta")
    gradient_accumulation_steps: int | None = Field(
        None, ge=1, le=1024, description="micro-batches of batch_size per optimizer step"
    )
    weight_decay: float | None = Field(None, ge=0, lt=1, description="AdamW's decoupled weight decay")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] | None = Field(
        None, description="learning-rate schedule after warm-up"
    )
    optimizer: Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit"] | None = Field(
        None, description="8-bit variants need bitsandbytes"
    )
    validation_split: float | None = Field(
        None, gt=0, le=0.5, description="share of the training file held out for validation (seeded)"
    )

    @model_validator(mode="after")
    def _one_learning_rate(self) -> Hyperparameters:
        if self.learning_rate is not None and self.learning_rate_multiplier is not None:
            raise ValueError("give learning_rate or learning_rate_multiplier, not both")
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            raise ValueError("give warmup_ratio or warmup_steps, not both")
        return self


class LoraConfig(_Section):
    """Low-rank adapter settings. ``alpha`` defaults to ``2 * r``."""

    r: int = Field(16, ge=1, le=1024)
    alpha: int | None = Field(None, ge=1, le=4096)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_rslora: bool = False
    use_dora: bool = False

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all-linear":
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("target_modules must name at least one module, or be 'all-linear'")
        return value

    @property
    def effective_alpha(self) -> int:
        return self.alpha if self.alpha is not None else 2 * self.r


class WandbIntegration(_Section):
    project: str
    entity: str | None = None
    name: str | None = None
    tags: list[str] = Field(default_factory=list)


class OpenAIOptions(_Section):
    """Options only OpenAI (and Azure OpenAI) understand."""

    wandb: WandbIntegration | None = None
    reinforcement: dict[str, Any] | None = Field(
        None, description="passed through as method.reinforcement for reinforcement fine-tuning"
    )


class AzureOpenAIOptions(_Section):
    """Options only Azure OpenAI understands (section ``azure_openai``)."""

    training_type: Literal["standard", "globalstandard", "developer"] | None = None


class AzureMLOptions(_Section):
    """Options only Azure Machine Learning understands (section ``azureml``)."""

    deployment: Literal["serverless", "managed"] | None = None
    compute: str | None = None
    instance_type: str | None = None
    instance_count: int | None = Field(None, ge=1)
    experiment_name: str | None = None
    registry: str | None = Field(None, description="registry of the base model, e.g. azureml-meta")
    model_version: str | None = Field(None, description="base model version (default: latest)")
    task: Literal["chat-completion", "text-completion"] | None = None
    job_tier: Literal["spot", "basic", "standard", "premium"] | None = None
    accept_marketplace_terms: bool | None = Field(
        None, description="subscribe to the model's Azure Marketplace offer when it needs one"
    )


class AzureOptions(AzureMLOptions):
    """Options for Azure OpenAI and Azure Machine Learning together: the older combined section.

    Still read by both providers; new specs use ``azure_openai`` and ``azureml``, which hold only
    what each service understands. A spec gives the combined section or its provider's own, not both.
    """

    # Azure OpenAI only (the other fields are Azure Machine Learning's):
    training_type: Literal["standard", "globalstandard", "developer"] | None = None


class HFOptions(_Section):
    """Options for Hugging Face Jobs."""

    flavor: str = "a10g-small"
    timeout: str = "2h"
    namespace: str | None = None
    dataset_repo: str | None = None
    output_repo: str | None = None
    private: bool = True


#: How the local trainer spreads one job over several processes (``local.strategy``).
Strategy = Literal["ddp", "fsdp", "zero2", "zero3"]
STRATEGIES: tuple[str, ...] = ("ddp", "fsdp", "zero2", "zero3")

_ENDPOINT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})$")


class LocalOptions(_Section):
    """Options for the local backend.

    Several processes: ``num_devices`` per machine, on ``nodes`` machines that meet at
    ``rdzv_endpoint`` (``host:port`` of a machine every node can reach, usually node 0's), this
    machine being ``node_rank``. ``strategy`` says how they share the work: ``ddp`` (a full copy of
    the model on each process), ``fsdp`` (PyTorch FSDP2: parameters, gradients and optimizer states
    sharded), ``zero2`` / ``zero3`` (DeepSpeed ZeRO stage 2 / 3; CUDA, or the CPU over gloo).
    ``cpu_offload`` keeps sharded parameters (and ZeRO's optimizer states) in CPU memory between
    uses (on CUDA). ``deepspeed_config`` (zero2/zero3): a DeepSpeed JSON file, or an inline table,
    merged over the config the spec maps to (its keys win, except the batch keys and the stage,
    which the spec decides). ``accelerate_config``: an ``accelerate config`` YAML file read for the
    fields above (processes, machines, rendezvous, strategy, offload); a field set here too must
    agree with it. ``activation_checkpointing`` is accepted
    as another name of ``gradient_checkpointing`` (the name FSDP and DeepSpeed use): one setting,
    recorded as ``gradient_checkpointing``.
    """

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    num_devices: int = Field(1, ge=1, description="processes (devices) on each node")
    strategy: Strategy = "ddp"
    nodes: int = Field(1, ge=1, description="machines taking part; more than one needs rdzv_endpoint")
    node_rank: int = Field(0, ge=0, description="this machine's place among the nodes, 0 .. nodes-1")
    rdzv_endpoint: str | None = Field(
        None, description="host:port where the nodes meet (torchrun's c10d rendezvous), e.g. 10.0.0.1:29400"
    )
    cpu_offload: bool = False
    deepspeed_config: Path | dict[str, Any] | None = Field(
        None, description="zero2/zero3: a DeepSpeed JSON file or an inline table, merged over the mapped config"
    )
    accelerate_config: Path | None = Field(
        None,
        description="an accelerate config (YAML) whose processes, machines, rendezvous, FSDP and DeepSpeed "
        "settings fill the fields above that the spec leaves unset",
    )
    output_dir: Path | None = None
    packing: bool = True
    truncation: Literal["truncate", "drop"] = "truncate"
    gradient_checkpointing: bool | None = None
    logging_steps: int = Field(10, ge=1)
    eval_steps: int | None = Field(None, ge=1)
    save_steps: int | None = Field(None, ge=1)
    merge: bool = False
    chat_template: str | None = None
    queue: Literal["auto", "device", "none"] | None = Field(
        None,
        description="wait for the device while another local job uses it: auto (GPU/MPS, not CPU), "
        "device (every device, CPU too), none; default: the provider's queue setting (auto)",
    )

    @model_validator(mode="before")
    @classmethod
    def _activation_checkpointing(cls, data: Any) -> Any:
        """``activation_checkpointing`` is ``gradient_checkpointing`` under FSDP's and DeepSpeed's name."""
        if not isinstance(data, dict) or "activation_checkpointing" not in data:
            return data
        data = dict(data)
        value = data.pop("activation_checkpointing")
        given = data.get("gradient_checkpointing")
        if given is not None and value is not None and given != value:
            raise ValueError(
                "activation_checkpointing and gradient_checkpointing are one setting; "
                f"they were given as {value!r} and {given!r}: give one"
            )
        if given is None:
            data["gradient_checkpointing"] = value
        return data

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _ENDPOINT.match(value.strip())
        if match is None or not 0 < int(match.group(1)) < 65536:
            raise ValueError(f"rdzv_endpoint must be host:port (e.g. 10.0.0.1:29400), not {value!r}")
        return value.strip()

    @model_validator(mode="after")
    def _nodes(self) -> LocalOptions:
        if self.node_rank >= self.nodes:
            raise ValueError(
                f"node_rank {self.node_rank} is not one of the {self.nodes} node(s): it counts from 0 to nodes-1"
            )
        if self.nodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(
                f"nodes={self.nodes} needs rdzv_endpoint (host:port of a machine every node reaches, "
                "usually node 0's), where the nodes meet"
            )
        return self

    @model_validator(mode="after")
    def _deepspeed_only(self) -> LocalOptions:
        if self.deepspeed_config is not None and self.strategy not in ("zero2", "zero3"):
            raise ValueError(
                f"deepspeed_config is DeepSpeed's; it applies to strategy zero2 or zero3, not {self.strategy!r}"
            )
        return self

    @property
    def world_size(self) -> int:
        """Processes in the whole job: ``num_devices`` on each of ``nodes`` machines."""
        return self.num_devices * self.nodes


class FakeStep(_Section):
    """One scripted step of a fake job: at ``at`` seconds after creation, the job shows ``status``."""

    at: float = Field(ge=0)
    status: Literal["validating", "queued", "running", "paused", "succeeded", "failed", "cancelled"]
    message: str = ""
    train_loss: float | None = None
    valid_loss: float | None = None
    step: int | None = None
    error: str | None = None


class FakeOptions(_Section):
    """Script for the ``fake`` provider: a preset scenario, or an explicit timeline."""

    scenario: Literal["succeed", "fail", "slow"] = "succeed"
    timeline: list[FakeStep] | None = None
    steps: int = Field(5, ge=1, le=10_000, description="training steps in preset scenarios")
    seconds: float = Field(0.5, ge=0, description="duration of preset scenarios")

    @field_validator("timeline")
    @classmethod
    def _ordered(cls, value: list[FakeStep] | None) -> list[FakeStep] | None:
        if value is not None:
            if not value:
                raise ValueError("timeline needs at least one step")
            if any(b.at < a.at for a, b in itertools.pairwise(value)):
                raise ValueError("timeline steps must be in time order")
        return value


class DataSpec(_Section):
    """Where the training data comes from when it is not a canonical JSONL file (section ``data``).

    ``source`` is a local data file or folder (JSONL, JSON, CSV/TSV, Parquet, a ``datasets``
    folder) or a Hugging Face Hub dataset id (``org/name``); it is converted to canonical JSONL
    before anything is recorded or uploaded (see ``anytune data convert``, which takes the same
    options). A relative ``source`` in a spec file is a path when it exists next to the file or is
    written as one (``./data.csv``); anything else is a Hub id.

    A share of the training rows held out for validation is ``hyperparameters.validation_split``
    (seeded by ``hyperparameters.seed``): one setting for every data source, not a second one here.
    """

    source: str = Field(min_length=1, description="a data file or folder, or a Hub dataset id (org/name)")
    config: str | None = Field(None, min_length=1, description="the Hub dataset's configuration (subset)")
    revision: str | None = Field(None, min_length=1, description="the Hub dataset's revision (branch, tag, commit)")
    split: str | None = Field(
        None, min_length=1, description="the split trained on: train, train[:4096], train[:10%] (default train)"
    )
    eval_split: str | None = Field(None, min_length=1, description="a split of the source used as validation_file")
    format: str = Field("auto", min_length=1, description="auto, or a shape: chat, alpaca, sharegpt...")
    columns: dict[str, str] | None = Field(None, description="the shape's field <- the source's column")
    prompt_template: str | None = None
    completion_template: str | None = None
    text_template: str | None = Field(None, description="one template, split at its last field: prompt | completion")
    system: str | None = Field(None, description="a system message put first in every example without one")

    @model_validator(mode="before")
    @classmethod
    def _one_validation_split(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("validation_split", "seed"):
                if key in data:
                    raise ValueError(
                        f"data.{key}: a held-out share of the training rows is hyperparameters.validation_split "
                        "(seeded by hyperparameters.seed), for every data source; set it there"
                    )
        return data

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        if isinstance(value, str):  # "prompt=q,completion=a", as a flag or --set gives it
            from anytune._data.shapes import parse_columns

            try:
                return parse_columns(value)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        from anytune._data.shapes import normalise_format

        try:
            return normalise_format(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None


_SUFFIX = re.compile(r"^[A-Za-z0-9_\-.]{1,64}$")

#: Experiment trackers the local trainer (locally or on Hugging Face Jobs) can log to.
Tracker = Literal["tensorboard", "mlflow", "wandb", "trackio"]
TRACKERS: tuple[str, ...] = ("tensorboard", "mlflow", "wandb", "trackio")


def _quantized(value: Any) -> bool:
    """Whether a raw ``quantization`` value asks for one (a bad value is left to field validation)."""
    try:
        return value is not None and Quantization(value) is not Quantization.NONE
    except (ValueError, TypeError):
        return False


class JobSpec(BaseModel):
    """Everything a provider needs to run one fine-tuning job.

    Provider-only options live in typed sections: ``openai``, ``azure_openai``, ``azureml``
    (``azure`` is the older combined Azure section), ``hf``, ``local`` and ``fake``; a provider
    outside anytune reads ``options[<its name>]``, validated against its ``Options`` model. A
    provider refuses a section it does not read (see ``Capabilities.sections``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    base_model: str = Field(min_length=1)
    training_file: Path | None = None
    validation_file: Path | None = None
    data: DataSpec | None = None
    method: Method = Method.SFT
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    lora: LoraConfig | None = None
    quantization: Quantization = Quantization.NONE
    suffix: str | None = None
    output_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    report_to: list[Tracker] = Field(
        default_factory=list, description="experiment trackers the trainer logs to (local and huggingface)"
    )

    openai: OpenAIOptions | None = None
    azure_openai: AzureOpenAIOptions | None = None
    azureml: AzureMLOptions | None = None
    azure: AzureOptions | None = None
    hf: HFOptions | None = None
    local: LocalOptions | None = None
    fake: FakeOptions | None = None
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="sections of providers outside anytune, by provider name"
    )

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, value: str | None) -> str | None:
        if value is not None and not _SUFFIX.match(value):
            raise ValueError("suffix may hold 1-64 letters, digits, '-', '_' or '.'")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 16:
            raise ValueError("at most 16 tags")
        for k, v in value.items():
            if not k or len(k) > 64 or len(v) > 512:
                raise ValueError(f"tag {k!r}: keys need 1-64 characters, values at most 512")
            if k.startswith("anytune."):
                raise ValueError(f"tag {k!r}: the 'anytune.' prefix is reserved")
            try:  # a shell hands undecodable bytes over as surrogates; no service or store takes them
                (k + v).encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"tag {k!r}: keys and values must be valid text (undecodable bytes)") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _data_has_a_source(cls, data: Any) -> Any:
        section = data.get("data") if isinstance(data, dict) else None
        if isinstance(section, dict) and section.get("source") is None:
            given = ", ".join(f"data.{k}" for k in section) or "an empty data section"
            raise ValueError(
                f"{given} without data.source: the data section's options apply to its source (--dataset); "
                "a training_file in another shape is converted as it is (format auto)"
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _qlora_defaults(cls, data: Any) -> Any:
        # Quantization trains an adapter on a quantized base (QLoRA): without a lora section, the
        # LoRA defaults. Set here, before validation, so the stored and dry-run spec show it.
        if isinstance(data, dict) and data.get("lora") is None and _quantized(data.get("quantization")):
            data = {**data, "lora": {}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.hyperparameters.beta is not None and self.method is not Method.DPO:
            raise ValueError("hyperparameters.beta only applies to method 'dpo'")
        return self

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, value: Any) -> Any:
        if isinstance(value, str):  # "tensorboard,mlflow", as a flag or a profile gives it
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            value = list(dict.fromkeys(value))  # each tracker once, in the order given
        return value

    @model_validator(mode="after")
    def _one_validation_source(self) -> JobSpec:
        if self.validation_file is not None and self.hyperparameters.validation_split is not None:
            raise ValueError(
                "give validation_file or hyperparameters.validation_split (a share of training_file), not both"
            )
        eval_split = self.data.eval_split if self.data is not None else None
        if eval_split is not None:
            if self.validation_file is not None:
                raise ValueError("give validation_file or data.eval_split, not both")
            if self.hyperparameters.validation_split is not None:
                raise ValueError("give data.eval_split or hyperparameters.validation_split, not both")
        return self

    @model_validator(mode="after")
    def _one_training_source(self) -> JobSpec:
        if self.training_file is None and self.data is None:
            raise ValueError("give training_file or a data section with its source (data.source, --dataset)")
        if self.training_file is not None and self.data is not None:
            raise ValueError(
                "give training_file or data.source (--dataset), not both: a data section replaces training_file"
            )
        return self

    @property
    def training_path(self) -> Path:
        """``training_file``, which every spec a provider receives has: :meth:`FineTuneJob.create`
        converts a ``data`` section into it before calling the provider.

        Raises:
            ConfigError: the spec has a ``data`` section that was not converted.
        """
        if self.training_file is None:
            raise ConfigError(
                "this spec's data section is not converted yet: submit it through FineTuneJob.create",
                field="training_file",
            )
        return self.training_file

    @model_validator(mode="after")
    def _one_azure_section(self) -> JobSpec:
        if self.azure is not None:
            for name in ("azure_openai", "azureml"):
                if getattr(self, name) is not None:
                    raise ValueError(f"give {name} or the older combined azure section, not both")
        return self

    def section_names(self) -> list[str]:
        """Provider sections the spec sets (built-in ones, then ``options`` keys)."""
        return [s for s in SECTIONS if getattr(self, s) is not None] + sorted(self.options)

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict holding only what the user set (what the job store keeps)."""
        dumped = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        dumped["base_model"] = self.base_model
        if self.training_file is not None:
            dumped["training_file"] = str(self.training_file)
        if self.data is not None:
            dumped["data"] = self.data.model_dump(mode="json", exclude_none=True)
        return dumped


SECTIONS: tuple[str, ...] = ("openai", "azure_openai", "azureml", "azure", "hf", "local", "fake")
