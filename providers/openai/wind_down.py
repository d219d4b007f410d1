"""OpenAI's wind-down of self-serve fine-tuning, as data, and what to say about it (pure).

Dates as reported on OpenAI's deprecations page: organisations that never fine-tuned lost job
creation on 2026-05-07, organisations without recent fine-tuned inference on 2026-07-02, and every
organisation on 2027-01-06; fine-tunes of gpt-4o, gpt-4o-mini, gpt-4.1 and gpt-4.1-mini retire on
2027-01-14.  Existing jobs stay readable (get, events, metrics, result, cancel).

One table (:data:`PHASES`, :data:`MODEL_RETIREMENTS`); the create refusal and the plan/validate
warnings read it, and "today" is always passed in (the adapter takes an injectable ``today``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from anytune._spec import JobSpec

__all__ = [
    "MODEL_RETIREMENTS",
    "NEAR_DAYS",
    "PHASES",
    "Phase",
    "current_phase",
    "equivalent_commands",
    "retirement_warning",
    "wind_down_refusal",
]


@dataclass(frozen=True)
class Phase:
    """From ``starts`` on, ``who`` can no longer create fine-tuning jobs on OpenAI."""

    starts: date
    name: str
    who: str


#: The phases, oldest first.
PHASES: tuple[Phase, ...] = (
    Phase(date(2026, 5, 7), "phase 1", "organisations that never fine-tuned"),
    Phase(date(2026, 7, 2), "phase 2", "organisations without recent fine-tuned model inference"),
    Phase(date(2027, 1, 6), "phase 3", "every organisation (no new jobs)"),
)

#: Base models whose fine-tunes retire, and when (a name matches itself and its dated snapshots).
MODEL_RETIREMENTS: tuple[tuple[str, date], ...] = (
    ("gpt-4.1-mini", date(2027, 1, 14)),
    ("gpt-4.1", date(2027, 1, 14)),
    ("gpt-4o-mini", date(2027, 1, 14)),
    ("gpt-4o", date(2027, 1, 14)),
)

#: A retirement this many days ahead (or fewer) is "near".
NEAR_DAYS = 180


def current_phase(today: date) -> Phase | None:
    """The latest phase that has started by ``today`` (None before the first)."""
    started = [p for p in PHASES if p.starts <= today]
    return started[-1] if started else None


def _retirement(model: str) -> date | None:
    """The retirement date of ``model``'s fine-tunes: the name or a dated snapshot of it, also as the
    base of a fine-tuned model (``ft:<base>:...``, continued fine-tuning)."""
    base = model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 1 else model
    for name, when in MODEL_RETIREMENTS:
        if re.fullmatch(re.escape(name) + r"(-\d{4}-\d{2}-\d{2})?", base):
            return when
    return None


def retirement_warning(model: str, today: date, service: str = "OpenAI") -> str | None:
    """A warning when ``model``'s fine-tunes have retired or retire within :data:`NEAR_DAYS`."""
    when = _retirement(model)
    if when is None:
        return None
    days = (when - today).days
    if days < 0:
        return f"{service} fine-tunes of {model} retired on {when.isoformat()}: a model trained now cannot be used"
    if days <= NEAR_DAYS:
        return (
            f"{service} fine-tunes of {model} retire on {when.isoformat()} ({days} days from now): "
            "plan for a base model that stays supported"
        )
    return None


def _flag(name: str, value: object) -> list[str]:
    return [] if value is None else [name, str(value)]


def equivalent_commands(spec: JobSpec) -> tuple[str, str]:
    """``anytune jobs create`` for the same data on ``azure-openai`` and on ``local``.

    The Azure command keeps the base model (Azure OpenAI fine-tunes the same families); the local
    one leaves ``--base-model`` for the user to pick an open model, since OpenAI's weights are not
    available locally.
    """
    hp = spec.hyperparameters
    data = ["--training-file", str(spec.training_path)]
    if spec.validation_file is not None:
        data += ["--validation-file", str(Path(spec.validation_file))]
    common = data + _flag("--method", spec.method.value) + _flag("--epochs", hp.epochs) + _flag("--seed", hp.seed)
    azure = [
        *("anytune", "jobs", "create", "--provider", "azure-openai", "--base-model", spec.base_model),
        *common,
        *_flag("--learning-rate-multiplier", hp.learning_rate_multiplier),
        *_flag("--batch-size", hp.batch_size),
        *_flag("--suffix", spec.suffix),
    ]
    local = ["anytune", "jobs", "create", "--provider", "local", "--base-model", "<open model id>", *common]
    return shlex.join(azure), shlex.join(local).replace("'<open model id>'", "<open model id>")


def wind_down_refusal(service_message: str, today: date, commands: Sequence[str] = ()) -> str:
    """OpenAI's refusal to create a job: the phase in force, and the same job elsewhere."""
    phase = current_phase(today)
    if phase is None:
        where = "OpenAI is winding down self-serve fine-tuning (first cut-off 2026-05-07)"
    else:
        where = (
            f"OpenAI is winding down self-serve fine-tuning: since {phase.starts.isoformat()} ({phase.name}) "
            f"{phase.who} can no longer create jobs"
        )
        if phase is not PHASES[-1]:
            where += f"; from {PHASES[-1].starts.isoformat()} no organisation can"
    message = (
        f"OpenAI refused to create the fine-tuning job ({service_message or 'permission denied'}). {where}. "
        "Existing jobs stay readable (get, events, metrics, result, cancel)."
    )
    message += (
        " Run the same spec with provider='azure-openai' (the same API on your Azure subscription) "
        "or provider='local' (LoRA on your own GPU or CPU)"
    )
    if commands:
        message += ": " + " | ".join(commands)
    return message
