"""Training and inference prices, per-example token limits and OpenAI's billed-token heuristic.

Everything here is data plus small pure functions. Prices change: each table records the date it was
checked (:data:`PRICE_AS_OF`) and every estimate carries it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel

__all__ = [
    "INFERENCE_PRICES",
    "MAX_TOKENS_PER_EXAMPLE",
    "PRICE_AS_OF",
    "TRAINING_PRICES",
    "CallCost",
    "CostEstimate",
    "InferencePrice",
    "ModelPrice",
    "billed_tokens",
    "default_epochs",
    "estimate_cost",
    "inference_cost",
    "max_tokens_per_example",
    "price_for",
]

#: When the OpenAI prices below were last checked against https://openai.com/api/pricing/.
PRICE_AS_OF = "2025-06-01"


@dataclass(frozen=True)
class ModelPrice:
    """Training price of one model family."""

    snapshot: str  # the fine-tunable snapshot the family resolves to
    usd_per_million: float


#: OpenAI training prices (USD per 1M training tokens), keyed by model family prefix.
#: A model matches the longest family that is its whole name or is followed by ``-`` (a snapshot).
TRAINING_PRICES: dict[str, dict[str, ModelPrice]] = {
    "openai": {
        "gpt-4o-mini": ModelPrice("gpt-4o-mini-2024-07-18", 3.00),
        "gpt-4o": ModelPrice("gpt-4o-2024-08-06", 25.00),
        "gpt-4.1": ModelPrice("gpt-4.1-2025-04-14", 25.00),
        "gpt-4.1-mini": ModelPrice("gpt-4.1-mini-2025-04-14", 5.00),
        "gpt-4.1-nano": ModelPrice("gpt-4.1-nano-2025-04-14", 1.50),
        "gpt-3.5-turbo": ModelPrice("gpt-3.5-turbo-0125", 8.00),
    },
}


@dataclass(frozen=True)
class InferencePrice:
    """Chat-completion prices of one model family (USD per 1M tokens): the base model's and those of
    models fine-tuned from it (OpenAI bills fine-tuned models at their own, higher rate)."""

    input: float
    output: float
    tuned_input: float
    tuned_output: float


#: OpenAI inference prices (standard tier), same family matching as :data:`TRAINING_PRICES`.
#: Azure OpenAI's depend on region and deployment type, Azure ML's on the model's offer: unknown here.
INFERENCE_PRICES: dict[str, dict[str, InferencePrice]] = {
    "openai": {
        "gpt-4o-mini": InferencePrice(0.15, 0.60, 0.30, 1.20),
        "gpt-4o": InferencePrice(2.50, 10.00, 3.75, 15.00),
        "gpt-4.1": InferencePrice(2.00, 8.00, 3.00, 12.00),
        "gpt-4.1-mini": InferencePrice(0.40, 1.60, 0.80, 3.20),
        "gpt-4.1-nano": InferencePrice(0.10, 0.40, 0.20, 0.80),
        "gpt-3.5-turbo": InferencePrice(0.50, 1.50, 3.00, 6.00),
    },
}

#: Providers that never bill for training tokens, with the reason shown to users.
FREE_PROVIDERS: dict[str, str] = {
    "local": "runs on your own hardware",
    "fake": "the no-network fake provider",
}

#: Longest training example (tokens) per OpenAI model family; same matching as prices.
MAX_TOKENS_PER_EXAMPLE: dict[str, int] = {
    "gpt-4o-mini": 65536,
    "gpt-4o": 65536,
    "gpt-4.1": 65536,
    "gpt-4.1-mini": 65536,
    "gpt-4.1-nano": 65536,
    "gpt-3.5-turbo": 16385,
    "gpt-35-turbo": 16385,  # Azure OpenAI's spelling
}

#: Providers where :data:`MAX_TOKENS_PER_EXAMPLE` applies.
OPENAI_HOSTED = frozenset({"openai", "azure-openai"})

# OpenAI cookbook ("Data preparation and analysis for chat model fine-tuning") defaults.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


class CostEstimate(BaseModel):
    """What a training run is expected to cost, before anything is uploaded."""

    provider: str
    model: str
    epochs: int
    billed_tokens: int
    usd_per_million: float
    usd: float
    price_as_of: str
    note: str = ""


def _family_match(table: Iterable[str], model: str) -> str | None:
    """Longest key of ``table`` that is ``model`` or a ``-``-separated prefix of it."""
    name = model.lower()
    if name.startswith("ft:"):  # continued training: ft:<base>:<org>::<id>
        name = name[3:].split(":", 1)[0]
    best: str | None = None
    for family in table:
        if (name == family or name.startswith(family + "-")) and (best is None or len(family) > len(best)):
            best = family
    return best


def price_for(provider: str, model: str) -> ModelPrice | None:
    """Training price of ``model`` on ``provider``, or None when unknown."""
    table = TRAINING_PRICES.get(provider)
    if not table:
        return None
    family = _family_match(table, model)
    return table[family] if family else None


def max_tokens_per_example(provider: str | None, model: str | None) -> int | None:
    """The service's per-example token limit, or None when it is not known."""
    if provider not in OPENAI_HOSTED or not model:
        return None
    family = _family_match(MAX_TOKENS_PER_EXAMPLE, model)
    return MAX_TOKENS_PER_EXAMPLE[family] if family else None


def default_epochs(n_examples: int) -> int:
    """Epochs OpenAI picks when none are given (the cookbook's heuristic)."""
    if n_examples <= 0:
        return TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def billed_tokens(length_counts: Mapping[int, int], epochs: int, max_tokens: int | None) -> int:
    """``sum(min(max_tokens, n) for each example) * epochs`` from a Counter of example lengths."""
    if max_tokens is None:
        per_epoch = sum(n * c for n, c in length_counts.items())
    else:
        per_epoch = sum(min(max_tokens, n) * c for n, c in length_counts.items())
    return per_epoch * epochs


def estimate_cost(provider: str | None, model: str | None, epochs: int, billed: int) -> CostEstimate | None:
    """Cost of training ``billed`` tokens (already multiplied by epochs); None when unknown."""
    if provider is None:
        return None
    if provider in FREE_PROVIDERS:
        return CostEstimate(
            provider=provider,
            model=model or "",
            epochs=epochs,
            billed_tokens=billed,
            usd_per_million=0.0,
            usd=0.0,
            price_as_of=PRICE_AS_OF,
            note=f"free: {FREE_PROVIDERS[provider]}",
        )
    if not model:
        return None
    price = price_for(provider, model)
    if price is None:
        return None
    return CostEstimate(
        provider=provider,
        model=model,
        epochs=epochs,
        billed_tokens=billed,
        usd_per_million=price.usd_per_million,
        usd=round(billed * price.usd_per_million / 1_000_000, 6),
        price_as_of=PRICE_AS_OF,
        note=f"priced as {price.snapshot}",
    )


class CallCost(BaseModel):
    """What a batch of chat calls to one model may cost: ``usd`` is an upper bound (every answer as
    long as ``max_output_tokens`` allows), None where the price is not known."""

    what: str
    model: str
    calls: int
    input_tokens: int
    max_output_tokens: int
    usd: float | None
    price_as_of: str = PRICE_AS_OF


def inference_cost(
    provider: str, what: str, model: str, *, calls: int, input_tokens: int, max_output_tokens: int
) -> CallCost:
    """The cost of ``calls`` chat completions from ``model`` on ``provider`` (see :class:`CallCost`).
    A fine-tuned id (``ft:<base>:...``) is priced at its base family's fine-tuned rate."""
    usd: float | None = None
    if provider in FREE_PROVIDERS:
        usd = 0.0
    else:
        table = INFERENCE_PRICES.get(provider) or {}
        family = _family_match(table, model)
        if family is not None:
            price = table[family]
            tuned = model.lower().startswith("ft:")
            per_in, per_out = (price.tuned_input, price.tuned_output) if tuned else (price.input, price.output)
            usd = (input_tokens * per_in + max_output_tokens * per_out) / 1_000_000
    return CallCost(
        what=what,
        model=model,
        calls=calls,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
        usd=usd,
    )
