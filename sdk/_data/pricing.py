"""Training prices, per-example token limits and OpenAI's billed-token heuristic.

Everything here is data plus small pure functions. Prices change: each table records the date it was
checked (:data:`PRICE_AS_OF`) and every estimate carries it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel

__all__ = [
    "MAX_TOKENS_PER_EXAMPLE",
    "PRICE_AS_OF",
    "TRAINING_PRICES",
    "CostEstimate",
    "ModelPrice",
    "billed_tokens",
    "default_epochs",
    "estimate_cost",
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
