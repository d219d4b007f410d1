"""Datasets: validation, token counting, billed-token and cost estimates, format conversion.

Importing this package is light: the tokenizers (bpe-openai, tokenizers) load on first count.
"""

from anytune._data.convert import convert_prompt_completion
from anytune._data.pricing import CostEstimate
from anytune._data.tokens import TokenCounter, counter_for
from anytune._data.validate import (
    DatasetReport,
    DatasetRules,
    Severity,
    TokenStats,
    ValidationIssue,
    check_dataset,
    validate_file,
)

__all__ = [
    "CostEstimate",
    "DatasetReport",
    "DatasetRules",
    "Severity",
    "TokenCounter",
    "TokenStats",
    "ValidationIssue",
    "check_dataset",
    "convert_prompt_completion",
    "counter_for",
    "validate_file",
]
