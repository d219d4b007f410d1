"""What OpenAI and Azure OpenAI accept, as data, and the spec check built on it.

The capability tables carry the services' numeric ranges and, for each field they refuse, what to
say instead of the generic refusal (the core's :func:`~anytune._capabilities.problems` reads both).
:func:`spec_problems` adds the rules that are not data: metadata room for the idempotency tag,
reinforcement's method, Azure's suffix alphabet and the Azure ML fields of the combined section.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from anytune._capabilities import Capabilities, Range, problems
from anytune._spec import JobSpec, Method, Quantization

__all__ = ["AZURE_MAX_FILE_BYTES", "AZURE_OPENAI_CAPABILITIES", "OPENAI_CAPABILITIES", "spec_problems"]

Flavour = Literal["openai", "azure"]

#: Where to go for what the hosted services refuse (adapter settings, quantization, ...).
_ALTERNATIVES_FOR_ADAPTERS = ("local", "huggingface")

#: What the services accept (OpenAPI ranges), checked before anything is uploaded.
_RANGES: Mapping[str, Range] = {
    "epochs": Range(low=1, high=50),
    "batch_size": Range(low=1, high=256),
    "beta": Range(low=0, high=2, low_open=True),
}


def _hints(service: str) -> dict[str, str]:
    """What the service takes instead, for each field it refuses."""
    hints = {
        "hyperparameters.learning_rate": f"{service} does not take an absolute learning rate; set "
        "learning_rate_multiplier (a factor on the service's own default) instead",
        "lora": f"{service} does not take LoRA settings: the service chooses how the model is adapted",
        "quantization": f"{service} trains on its own hardware and takes no quantization setting",
    }
    for name in (
        "warmup_ratio",
        "warmup_steps",
        "max_steps",
        "max_length",
        "gradient_accumulation_steps",
        "weight_decay",
        "lr_scheduler",
        "optimizer",
    ):
        hints[f"hyperparameters.{name}"] = f"{service} does not take {name}"
    hints["hyperparameters.validation_split"] = (
        f"{service} does not split the training file; give a validation_file instead"
    )
    hints["report_to"] = (
        f"{service} reports to no tracker anytune runs; for Weights & Biases set openai.wandb "
        "(the service's own integration)"
    )
    return hints


def _family(service: str, *, sections: frozenset[str], notes: str, max_file_bytes: int | None = None) -> Capabilities:
    return Capabilities(
        methods=frozenset({Method.SFT, Method.DPO}),
        hyperparameters=frozenset({"epochs", "batch_size", "learning_rate_multiplier", "seed", "beta"}),
        lora=False,
        quantization=frozenset({Quantization.NONE}),
        data_formats=frozenset({"chat", "prompt_completion", "preference"}),
        sections=sections,
        suffix=True,
        pause=True,
        min_examples=10,
        max_file_bytes=max_file_bytes,
        notes=notes,
        ranges=dict(_RANGES),
        hints=_hints(service),
        service=service,
    )


OPENAI_CAPABILITIES = _family(
    "OpenAI",
    sections=frozenset({"openai"}),
    max_file_bytes=8 * 1024**3,  # the Uploads API limit
    notes="hosted; supervised, DPO and reinforcement (openai.reinforcement); epochs, batch size, "
    "learning-rate multiplier, seed; W&B via openai.wandb",
)

#: Azure OpenAI's limit on one training or validation file (checked before any upload).
AZURE_MAX_FILE_BYTES = 512 * 1024**2

#: Azure OpenAI reads its own ``azure_openai`` section and, as before, the older combined ``azure``
#: one (training_type only) and ``openai`` (W&B, reinforcement).
AZURE_OPENAI_CAPABILITIES = _family(
    "Azure OpenAI",
    sections=frozenset({"openai", "azure_openai", "azure"}),
    max_file_bytes=AZURE_MAX_FILE_BYTES,
    notes="hosted on your Azure subscription; azure_openai.training_type standard (default)/globalstandard/"
    "developer; files up to 512 MB each; API key or Entra ID",
)

_CAPABILITIES: Mapping[Flavour, Capabilities] = {"openai": OPENAI_CAPABILITIES, "azure": AZURE_OPENAI_CAPABILITIES}

#: Fields of the combined ``azure`` section that only Azure Machine Learning reads.
_AZURE_ML_FIELDS = ("deployment", "compute", "instance_type", "instance_count", "experiment_name")
_AZURE_SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,40}")

Problem = tuple[str, str, tuple[str, ...]]


def _said_by_the_table(field: str, caps: Capabilities) -> bool:
    """A refusal the table words itself: a hint, or a range."""
    return field in caps.hints or (field.startswith("hyperparameters.") and field.split(".", 1)[1] in caps.ranges)


def _service_rules(spec: JobSpec, service: str, flavour: Flavour) -> list[Problem]:
    """The rules that are not data."""
    out: list[Problem] = []
    if len(spec.tags) > 15:
        out.append(
            (
                "tags",
                f"{service} metadata holds 16 entries and anytune uses one for its idempotency "
                "tag: give at most 15 tags",
                (),
            )
        )
    if spec.openai is not None and spec.openai.reinforcement is not None and spec.method is not Method.SFT:
        out.append(
            (
                "openai.reinforcement",
                "openai.reinforcement makes the method 'reinforcement'; "
                f"it cannot be combined with method {spec.method.value!r}",
                (),
            )
        )
    if flavour == "azure":
        out.extend(_azure_rules(spec))
    return out


def _azure_rules(spec: JobSpec) -> list[Problem]:
    out: list[Problem] = []
    if spec.suffix is not None and not _AZURE_SUFFIX.fullmatch(spec.suffix):
        out.append(("suffix", "Azure OpenAI suffixes hold 1-40 letters, digits, '-' or '_' (no '.')", ()))
    if spec.azure is not None:
        for name in _AZURE_ML_FIELDS:
            if getattr(spec.azure, name) is not None:
                out.append(
                    (
                        f"azure.{name}",
                        f"azure.{name} applies to Azure Machine Learning, not to "
                        "Azure OpenAI (only azure.training_type does)",
                        ("azureml",),
                    )
                )
    return out


def spec_problems(spec: JobSpec, flavour: Flavour) -> list[Problem]:
    """Every (field, reason, alternatives) the service cannot honour, in spec order.

    The table's own refusals (hints and ranges, in the service's words) come first, then the rules
    that are not data.  Refusals the table has no words for (a section the service does not read)
    are left to the core's capability check, which names the providers that can.
    """
    caps = _CAPABILITIES[flavour]
    out: list[Problem] = [
        (field, reason, _ALTERNATIVES_FOR_ADAPTERS if field in caps.hints else ())
        for field, reason in problems(spec, caps)
        if _said_by_the_table(field, caps)
    ]
    out.extend(_service_rules(spec, caps.service or flavour, flavour))
    return out
