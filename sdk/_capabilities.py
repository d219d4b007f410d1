"""What a provider can do, and the pure check of a spec against it.

The check runs before any side effect: a spec that asks for something the provider cannot do
fails here, naming the field and the providers that can.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from anytune._spec import TRACKERS, JobSpec, LoraConfig, Method, Quantization
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
        "gradient_accumulation_steps",
        "weight_decay",
        "lr_scheduler",
        "optimizer",
        "validation_split",
    )
)
ALL_LORA_FIELDS: frozenset[str] = frozenset(LoraConfig.model_fields)
ALL_TRACKERS: frozenset[str] = frozenset(TRACKERS)


class Range(BaseModel):
    """The values a service accepts for one number: ``low``..``high``, each end closed unless marked open."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int | float):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            if self.low_open or self.high_open:
                return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            return f"{self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"{'above' if self.low_open else 'at least'} {self.low:g}"
        return f"{'below' if self.high_open else 'at most'} {self.high:g}" if self.high is not None else "any value"


class Capabilities(BaseModel):
    """Declared by every provider class; pure data, readable without the provider's SDK.

    Besides what a provider can do, the table says how to tell a user it cannot: ``ranges`` bound
    numeric hyperparameters (``{"epochs": Range(low=1, high=50)}``), and ``hints`` replace the
    generic refusal of a field with what the service takes instead (``{"hyperparameters.learning_rate":
    "set learning_rate_multiplier"}``). An adapter's ``validate`` keeps only rules that are not data.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    methods: frozenset[Method] = frozenset({Method.SFT})
    hyperparameters: frozenset[str] = ALL_HYPERPARAMETERS
    lora: bool = False
    lora_fields: frozenset[str] = ALL_LORA_FIELDS
    quantization: frozenset[Quantization] = frozenset({Quantization.NONE})
    data_formats: frozenset[str] = frozenset({"chat"})
    sections: frozenset[str] = frozenset()
    #: Experiment trackers (``report_to``) the provider's trainer logs to; hosted services log to none.
    trackers: frozenset[str] = frozenset()
    suffix: bool = True
    #: Whether the provider names its output after ``output_name`` (a registered model, a Hub repo).
    output_name: bool = False
    pause: bool = False
    min_examples: int = 10
    max_file_bytes: int | None = None
    notes: str = ""
    ranges: dict[str, Range] = Field(default_factory=dict)
    hints: dict[str, str] = Field(default_factory=dict)
    #: The service's name in messages ("OpenAI"); defaults to the provider's name.
    service: str | None = None
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
            "report_to": sorted(self.trackers),
            "pause": self.pause,
        }


def _why(caps: Capabilities, field: str, default: str) -> str:
    return caps.hints.get(field, default)


def _hyperparameter_problems(spec: JobSpec, caps: Capabilities) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    hp = spec.hyperparameters.model_dump(exclude_none=True)
    # What cannot be set at all comes before what is set out of range: it is the bigger change.
    for name in hp:
        if name not in caps.hyperparameters:
            field = f"hyperparameters.{name}"
            out.append((field, _why(caps, field, f"{name} cannot be set")))
    for name, value in hp.items():
        if name in caps.hyperparameters and name in caps.ranges and value not in caps.ranges[name]:
            bounds = caps.ranges[name].describe()
            out.append(
                (f"hyperparameters.{name}", f"{caps.service or 'the service'} accepts {name} in {bounds}, not {value}")
            )
    return out


def problems(spec: JobSpec, caps: Capabilities) -> list[tuple[str, str]]:
    """Every (field, reason) the provider cannot honour, in spec order (pure)."""
    out: list[tuple[str, str]] = []
    if spec.method not in caps.methods:
        out.append(("method", _why(caps, "method", f"method {spec.method.value!r} is not offered")))
    out.extend(_hyperparameter_problems(spec, caps))
    # Quantization before lora: it implies the adapter (a quantized spec without a lora section
    # gets the LoRA defaults), so a provider that cannot quantize is refused for that first.
    if spec.quantization not in caps.quantization:
        out.append(
            (
                "quantization",
                _why(caps, "quantization", f"quantization {spec.quantization.value!r} is not available"),
            )
        )
    if spec.lora is not None:
        if not caps.lora:
            out.append(
                ("lora", _why(caps, "lora", "LoRA settings are not accepted; the service chooses its own adapter"))
            )
        else:
            for name in spec.lora.model_dump(exclude_defaults=True):
                if name not in caps.lora_fields:
                    out.append((f"lora.{name}", f"lora.{name} cannot be set"))
    refused = [t for t in spec.report_to if t not in caps.trackers]
    if refused:
        what = ", ".join(refused)
        out.append(("report_to", _why(caps, "report_to", f"the trainer cannot report to {what}")))
    if spec.suffix is not None and not caps.suffix:
        out.append(("suffix", _why(caps, "suffix", "a model name suffix cannot be set")))
    if spec.output_name is not None and not caps.output_name:
        instead = "; set suffix to add your own part to the name it gives" if caps.suffix else ""
        service = caps.service or "the service"
        out.append(("output_name", _why(caps, "output_name", f"{service} names the output itself{instead}")))
    for section in spec.section_names():
        if section not in caps.sections:
            out.append((section, _why(caps, section, f"the {section!r} options section is not read")))
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
    found = problems(spec, caps)
    if not found:
        return
    field, reason = found[0]
    if len(found) > 1:
        reason += "; also " + "; ".join(f"{f}: {r}" for f, r in found[1:])
    alternatives = [
        name
        for name, other in sorted((others or {}).items())
        if name not in (provider, "fake") and not any(f == field for f, _ in problems(spec, other))
    ]
    raise NotSupportedError(reason, field=field, provider=provider, alternatives=alternatives)
