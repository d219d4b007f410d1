"""Generation metrics on an assistant answer against the reference answer: pure functions, the same
definitions whichever provider produced the answer.

- ``exact_match``: 1.0 when the normalised answer equals the normalised reference.
- ``token_f1``: the harmonic mean of token precision and recall after normalisation (SQuAD's
  definition: lower case, punctuation and English articles removed, whitespace collapsed).
- ``rouge_l``: ROUGE-L F-measure, through Google's ``rouge-score`` package (``anytune[eval]``), its
  default tokenizer, no stemming.

Loss and perplexity need the model's weights and are computed by whoever holds them
(``anytune.local_backend.evaluate``); ``judge`` is an LLM's grade (:mod:`anytune._eval.judge`).
"""

from __future__ import annotations

import collections
import functools
import re
import string
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["GENERATION_METRICS", "METRICS", "WEIGHT_METRICS", "exact_match", "normalise", "rouge_l", "token_f1"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match(answer: str, reference: str) -> float:
    return float(normalise(answer) == normalise(reference))


def token_f1(answer: str, reference: str) -> float:
    """Token-overlap F1 of the normalised texts; two empty texts agree (1.0)."""
    ours, theirs = normalise(answer).split(), normalise(reference).split()
    if not ours or not theirs:
        return float(ours == theirs)
    common = sum((collections.Counter(ours) & collections.Counter(theirs)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(ours), common / len(theirs)
    return 2 * precision * recall / (precision + recall)


@functools.lru_cache(maxsize=1)
def _rouge() -> Any:
    from anytune.errors import MissingDependencyError

    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise MissingDependencyError("rouge-score", "eval", "the rouge_l metric") from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(answer: str, reference: str) -> float:
    return float(_rouge().score(reference, answer)["rougeL"].fmeasure)


#: Metrics computed from the answer text, for every provider.
GENERATION_METRICS: Mapping[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
}
#: Metrics that need the weights (local runs, Hugging Face Jobs results).
WEIGHT_METRICS = ("loss", "perplexity")
#: Every metric name ``metrics=`` takes; ``judge`` needs a judge model.
METRICS = (*WEIGHT_METRICS, *GENERATION_METRICS, "judge")
