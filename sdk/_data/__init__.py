"""Datasets: validation, token counting, billed-token and cost estimates, format conversion.

Sources (JSONL, JSON, CSV/TSV, Parquet, ``datasets`` folders) and shapes (OpenAI chat and DPO,
prompt/completion, TRL, Alpaca, ShareGPT, mapped columns, templates) go through one pipeline into
the canonical examples: :func:`to_canonical`, :func:`write_canonical`, :func:`validate_source`.

Importing this package is light: the tokenizers (bpe-openai, tokenizers) load on first count,
pyarrow and datasets when a Parquet file or a saved dataset is read.
"""

from anytune._data.convert import convert_prompt_completion
from anytune._data.pipeline import Conversion, SourceValidation, to_canonical, validate_source, write_canonical
from anytune._data.pricing import CostEstimate
from anytune._data.shapes import describe_mismatch, detect_shape
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
    "Conversion",
    "CostEstimate",
    "DatasetReport",
    "DatasetRules",
    "Severity",
    "SourceValidation",
    "TokenCounter",
    "TokenStats",
    "ValidationIssue",
    "check_dataset",
    "convert_prompt_completion",
    "counter_for",
    "describe_mismatch",
    "detect_shape",
    "to_canonical",
    "validate_file",
    "validate_source",
    "write_canonical",
]
