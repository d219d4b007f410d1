"""Token counting (against an independent per-message count), statistics, epochs, prices, cost."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anytune._data import pricing
from anytune._data.tokens import BpeOpenAICounter, HFTokenizerCounter, TokenCounter, counter_for
from anytune._data.validate import DatasetRules, token_stats, validate_file

CORPUS = Path(__file__).parent / "data_corpus"


@pytest.fixture(scope="module")
def enc() -> Any:
    bpe_openai = pytest.importorskip("bpe_openai")
    return bpe_openai.get_encoding("o200k_base")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def expected_tokens(ex: dict[str, Any], enc: Any) -> int:
    """OpenAI cookbook's num_tokens_from_messages, written independently with the Python Encoding."""

    def n(text: str) -> int:
        return len(enc.encode(text, disallowed_special=()))

    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in ex["messages"]:
        total += 3
        for key, value in message.items():
            if key == "content" and isinstance(value, list):
                total += sum(n(p["text"]) for p in value if p.get("type") == "text")
            else:
                total += sum(n(s) for s in _strings(value))
            if key == "name":
                total += 1
    if "tools" in ex:
        total += n(json.dumps(ex["tools"], separators=(",", ":"), ensure_ascii=False))
    return total


def test_total_tokens_equal_independent_per_message_count(enc: Any, tmp_path: Path) -> None:
    path = CORPUS / "valid_chat.jsonl"
    expected = [expected_tokens(json.loads(line), enc) for line in path.read_text("utf-8").splitlines()]
    report = validate_file(path, DatasetRules(provider="openai", model="gpt-4o-mini"))
    assert report.tokens is not None
    assert report.tokens.total == sum(expected)
    assert (report.tokens.min, report.tokens.max) == (min(expected), max(expected))

    # and on varied generated text, through the parallel scan as well
    rng = random.Random(5)
    words = ["hello", "world", "naïve", "数据", "🙂", "12345", "foo_bar", "\n\n", "<|endoftext|>", "  "]
    exs = []
    for _ in range(200):
        exs.append(
            {
                "messages": [
                    {"role": "system", "content": "Shared system prompt."},
                    {"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(1, 50)))},
                    {"role": "assistant", "content": " ".join(rng.choices(words, k=rng.randint(1, 90)))},
                ]
            }
        )
    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps(e, ensure_ascii=rng.random() < 0.5) + "\n" for e in exs), "utf-8")
    report = validate_file(data, DatasetRules(provider="openai", model="gpt-4o"))
    assert report.tokens is not None
    assert report.tokens.total == sum(expected_tokens(e, enc) for e in exs)


def test_counters_from_table(tmp_path: Path) -> None:
    c = counter_for("openai", "gpt-4o-mini-2024-07-18")
    assert isinstance(c, BpeOpenAICounter) and isinstance(c, TokenCounter)
    assert (c.name, c.exact) == ("o200k_base", True)
    assert counter_for("azure-openai", "gpt-35-turbo").name == "cl100k_base"
    assert counter_for(None, "gpt-4.1-mini").name == "o200k_base"
    assert counter_for(None, "o3-mini").name == "o200k_base"
    assert counter_for("huggingface", "ft:gpt-3.5-turbo-0125:org::x1").name == "cl100k_base"
    approx = counter_for("local", "meta-llama/Llama-3.2-1B")
    assert approx.exact is False and "approximation" in approx.name and "Llama-3.2-1B" in approx.name
    assert counter_for("openai", None).count("hello world") == 2


def _tiny_tokenizer(folder: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "user": 3, "assistant": 4}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))


def test_local_tokenizer_json_without_a_template_is_an_approximation(tmp_path: Path) -> None:
    model_dir = tmp_path / "my-model"
    _tiny_tokenizer(model_dir)
    c = counter_for("local", str(model_dir))
    # The text is the model's own count; the template's tokens are estimated (no template to apply).
    assert isinstance(c, HFTokenizerCounter) and c.exact is False
    assert c.count("hello world hello zzz") == 4
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "hello"}]}
        )
        + "\n"
    )
    report = validate_file(data, DatasetRules(provider="local", model=str(model_dir), min_examples=1))
    # 3 priming + (3 + 1 role + 2) + (3 + 1 role + 1)
    assert report.tokens is not None and report.tokens.total == 14
    assert not report.tokens_exact and report.tokenizer.startswith("tokenizer.json of")
    assert report.cost is not None and report.cost.usd == 0 and "free" in report.cost.note


# The Hub cache (found through huggingface_hub, chat templates applied): tests/test_tokens_chat_template.py.


@pytest.mark.parametrize("length", [10, 39_999, 40_001, 1_500_000])
def test_openai_counts_equal_bpe_openais_public_encoding(length: int, enc: Any) -> None:
    """Counted through bpe-openai's public ``Encoding``; text longer than one call takes is counted in
    pieces cut at whitespace, adding up to the count of the whole."""
    words = "naïve 数据 hello, world! " * (length // 20 + 1)
    text = words[:length]
    # Independently: pieces of about 300,000 characters (one call takes under 1,000,000), each cut
    # before a space, as a word-level pre-tokenizer cuts.
    cuts = [0] + [text.index(" ", i) for i in range(300_000, len(text), 300_000)] + [len(text)]
    expected = sum(len(enc.encode_ordinary(text[a:b])) for a, b in itertools.pairwise(cuts))
    assert counter_for("openai", None).count(text) == expected


_AWKWARD = [
    "",
    " ",
    "hello <|endoftext|> world <|fim_prefix|>",  # special-token strings are ordinary text here
    "ça va? 日本語のテキスト 🤖🤖 \u200b\ufeff",
    "\n\n\t  x\r\n",
    "a" * 5000,
    "'s 't 're 've 'm 'll 'd  1234567 3.14159",
]


def test_counts_equal_the_public_encoding(enc: Any) -> None:
    """The counter counts as ``encode_ordinary`` does: special-token strings are ordinary text."""
    rng = random.Random(3)
    texts = _AWKWARD + [
        "".join(rng.choice("ab cé日\n🤖<|>.,'") for _ in range(rng.randint(0, 300))) for _ in range(300)
    ]
    counter = BpeOpenAICounter("o200k_base")
    assert [counter.count(t) for t in texts] == [len(enc.encode_ordinary(t)) for t in texts]


_PRIVATE_BPE = re.compile(r"bpe_openai\._|from\s+bpe_openai\S*\s+import\s+\(?\s*_")


def test_the_package_uses_only_bpe_openai_public_api() -> None:
    """Counting goes through bpe-openai's public ``Encoding`` API only: a private module (its
    ``_bindings``) may change or go in any release."""
    root = Path(__file__).parents[1]
    found = [
        f"{path.relative_to(root)}:{n}"
        for folder in ("sdk", "providers", "local_backend")
        for path in sorted((root / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _PRIVATE_BPE.search(line)
    ]
    assert found == []


# --- statistics ---------------------------------------------------------------------------------


def _nearest_rank(sorted_values: list[int], p: int) -> int:
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


@pytest.mark.parametrize("seed", range(5))
def test_token_stats_exact_from_counter(seed: int) -> None:
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(5, 1.2)) + 1 for _ in range(rng.randint(1, 3000))]
    stats = token_stats(Counter(values))
    assert stats is not None
    s = sorted(values)
    assert stats.examples == len(s) and stats.total == sum(s)
    assert (stats.min, stats.max) == (s[0], s[-1])
    assert stats.mean == pytest.approx(sum(s) / len(s))
    for p in (50, 90, 95, 99):
        assert getattr(stats, f"p{p}") == _nearest_rank(s, p), p


def test_token_stats_edge_cases() -> None:
    assert token_stats({}) is None
    one = token_stats({42: 1})
    assert one is not None and one.p50 == one.p99 == one.min == one.max == 42


# --- epochs, limits, prices, cost -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "epochs"),
    [(1, 25), (3, 25), (10, 10), (33, 3), (34, 3), (100, 3), (8333, 3), (8334, 2), (10000, 2), (30000, 1)],
)
def test_default_epochs_cookbook(n: int, epochs: int) -> None:
    assert pricing.default_epochs(n) == epochs


def test_billed_tokens_caps_each_example() -> None:
    assert pricing.billed_tokens({10: 2, 100: 1}, epochs=3, max_tokens=50) == (10 * 2 + 50) * 3
    assert pricing.billed_tokens({10: 2, 100: 1}, epochs=1, max_tokens=None) == 120


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("gpt-4o-mini-2024-07-18", 3.00),
        ("gpt-4o-mini", 3.00),
        ("gpt-4o-2024-08-06", 25.00),
        ("gpt-4.1-2025-04-14", 25.00),
        ("gpt-4.1-mini-2025-04-14", 5.00),
        ("gpt-4.1-nano-2025-04-14", 1.50),
        ("gpt-3.5-turbo", 8.00),
        ("gpt-3.5-turbo-0125", 8.00),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", 3.00),
        ("gpt-4oo", None),
        ("gpt-9", None),
    ],
)
def test_price_table(model: str, price: float | None) -> None:
    found = pricing.price_for("openai", model)
    assert (found.usd_per_million if found else None) == price


def test_max_tokens_table() -> None:
    assert pricing.max_tokens_per_example("openai", "gpt-4o-mini-2024-07-18") == 65536
    assert pricing.max_tokens_per_example("openai", "gpt-4.1-nano") == 65536
    assert pricing.max_tokens_per_example("openai", "gpt-3.5-turbo-0125") == 16385
    assert pricing.max_tokens_per_example("azure-openai", "gpt-35-turbo") == 16385
    assert pricing.max_tokens_per_example("local", "gpt-4o") is None
    assert pricing.max_tokens_per_example("openai", None) is None


def test_cost_estimate_gpt_4o_mini() -> None:
    report = validate_file(CORPUS / "valid_chat.jsonl", DatasetRules(provider="openai", model="gpt-4o-mini-2024-07-18"))
    assert report.tokens is not None and report.cost is not None
    assert report.epochs_estimate == 8  # 12 examples: min(25, 100 // 12)
    assert report.billed_tokens_estimate == report.tokens.total * 8
    cost = report.cost
    assert (cost.provider, cost.model, cost.epochs) == ("openai", "gpt-4o-mini-2024-07-18", 8)
    assert cost.usd_per_million == 3.00
    assert cost.usd == pytest.approx(report.tokens.total * 8 * 3.00 / 1e6)
    assert cost.price_as_of == pricing.PRICE_AS_OF

    fixed = validate_file(
        CORPUS / "valid_chat.jsonl",
        DatasetRules(provider="openai", model="gpt-4o-mini", epochs=2, max_tokens_per_example=60),
    )
    assert fixed.epochs_estimate == 2 and fixed.tokens is not None
    assert fixed.billed_tokens_estimate == 2 * sum(min(60, n) for n in _lengths(CORPUS / "valid_chat.jsonl"))


def _lengths(path: Path) -> list[int]:
    enc = pytest.importorskip("bpe_openai").get_encoding("o200k_base")
    return [expected_tokens(json.loads(line), enc) for line in path.read_text("utf-8").splitlines()]


def test_cost_unknown_or_free() -> None:
    path = CORPUS / "valid_chat.jsonl"
    assert validate_file(path).cost is None  # no provider
    assert validate_file(path, DatasetRules(provider="azure-openai", model="gpt-4o-mini")).cost is None
    assert validate_file(path, DatasetRules(provider="openai", model="davinci-002")).cost is None
    fake = validate_file(path, DatasetRules(provider="fake", model="anything")).cost
    assert fake is not None and fake.usd == 0 and fake.note.startswith("free")


def test_local_tokenizer_without_tokenizers_library_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = tmp_path / "other-model"
    _tiny_tokenizer(model_dir)
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed
    c = counter_for("local", str(model_dir))
    assert c.exact is False and "approximation" in c.name
