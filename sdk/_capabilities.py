"""What a provider can do, and the pure check of a spec against it.

The check runs before any side effect: a spec that asks for something the provider cannot do
fails here, naming the field and the providers that can.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from anytune._spec import JobSpec, LoraConfig, Method, Quantization
from anytune.errors import NotSupportedError

ALL_HYPERPARAMETERS: frozenset[str] = frozenset(
    (
        "epochs",
        "batch_size",
        "learning_rate",
        "learning_rate_multiplier",
        "warmup_ratio",
        "warmup_steps",
        "max_steps",
        "max_length",
        "seed",
        "beta",
    )
)
ALL_LORA_FIELDS: frozenset[str] = frozenset(LoraConfig.model_fields)


class Capabilities(BaseModel):
    """Declared by every provider class; pure data, readable without the provider's SDK."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    methods: frozenset[Method] = frozenset({Method.SFT})
    hyperparameters: frozenset[str] = ALL_HYPERPARAMETERS
    lora: bool = False
    lora_fields: frozenset[str] = ALL_LORA_FIELDS
    quantization: frozenset[Quantization] = frozenset({Quantization.NONE})
    data_formats: frozenset[str] = frozenset({"chat"})
    sections: frozenset[str] = frozenset()
    suffix: bool = True
    pause: bool = False
    min_examples: int = 10
    max_file_bytes: int | None = None
    notes: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready view for ``anytune providers``."""
        return {
            "methods": sorted(m.value for m in self.methods),
            "hyperparameters": sorted(self.hyperparameters),
            "lora": self.lora,
            "quantization": sorted(q.value for q in self.quantization),
            "data_formats": sorted(self.data_formats),
            "sections": sorted(self.sections),
            "pause": self.pause,
        }


def _problems(spec: JobSpec, caps: Capabilities) -> list[tuple[str, str]]:
    """Every (field, reason) the provider cannot honour, in spec order."""
    out: list[tuple[str, str]] = []
    if spec.method not in caps.methods:
        out.append(("method", f"method {spec.method.value!r} is not offered"))
    hp = spec.hyperparameters.model_dump(exclude_none=True)
    for name in hp:
        if name not in caps.hyperparameters:
            out.append((f"hyperparameters.{name}", f"{name} cannot be set"))
    if spec.lora is not None:
        if not caps.lora:
            out.append(("lora", "LoRA settings are not accepted; the service chooses its own adapter"))
        else:
            for name in spec.lora.model_dump(exclude_defaults=True):
                if name not in caps.lora_fields:
                    out.append((f"lora.{name}", f"lora.{name} cannot be set"))
    if spec.quantization not in caps.quantization:
        out.append(("quantization", f"quantization {spec.quantization.value!r} is not available"))
    if spec.suffix is not None and not caps.suffix:
        out.append(("suffix", "a model name suffix cannot be set"))
    for section in spec.section_names():
        if section not in caps.sections:
            out.append((section, f"the {section!r} options section is not read"))
    return out


def check_spec(
    spec: JobSpec,
    provider: str,
    caps: Capabilities,
    others: Mapping[str, Capabilities] | None = None,
) -> None:
    """Raise :class:`NotSupportedError` for the first thing ``provider`` cannot do.

    Args:
        spec: the validated spec.
        provider: the chosen provider's name.
        caps: its capabilities.
        others: capabilities of the other registered providers, to name alternatives.

    Raises:
        NotSupportedError: naming the field; its message lists every further problem too.
    """
    problems = _problems(spec, caps)
    if not problems:
        return
    field, reason = problems[0]
    if len(problems) > 1:
        reason += "; also " + "; ".join(f"{f}: {r}" for f, r in problems[1:])
    alternatives = [
        name
        for name, other in sorted((others or {}).items())
        if name not in (provider, "fake") and not any(f == field for f, _ in _problems(spec, other))
    ]
    raise NotSupportedError(reason, field=field, provider=provider, alternatives=alternatives)
