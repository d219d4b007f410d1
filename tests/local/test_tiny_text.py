"""The smoke-size model answers in text: no U+FFFD, no control characters, base and fine-tuned alike.

Its weights are random and its byte-level vocabulary holds every byte, so unrestricted it would pick
lone bytes of multi-byte characters and control characters; ``anytune demo`` showed a column of
replacement characters. The model's generation config keeps it to tokens that are text by themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anytune._cli.demo_cmd import _printable

pytest.importorskip("torch")
pytest.importorskip("peft")
# Builds a model and generates on the CPU: some seconds.
pytestmark = pytest.mark.slow

# Non-ASCII text, so that the vocabulary learns pieces of multi-byte characters too.
TEXTS = [
    "Café au lait — naïve résumé, ☃ snow and 東京.",
    "What is the capital of France? The capital of France is Paris.",
    "Name a primary colour. Red is a primary colour, and so is blue.",
] * 4
PROMPTS = ["What is the capital of France?", "Name a colour.", "Café?", "Hi"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from anytune.local_backend.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny-text")
    return build_tiny_model(folder, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, texts=TEXTS, seed=3)


def is_text(answer: str) -> bool:
    return "\ufffd" not in answer and all(c.isprintable() or c == "\n" for c in answer)


def test_the_tiny_model_never_generates_bytes_that_are_not_text(tiny: Path) -> None:
    from transformers import AutoTokenizer

    from anytune.local_backend.tiny import non_text_tokens

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    banned = json.loads((tiny / "generation_config.json").read_text())["bad_words_ids"]
    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    assert banned == [[i] for i in non_text_tokens(tokenizer, vocab)]
    flat = {i for (i,) in banned}
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") not in flat  # answers can still end
    lone = tokenizer.convert_tokens_to_ids("Ã")  # byte 0xC3 alone: the first half of é, à, ...
    assert lone in flat and tokenizer.decode([lone]) == "\ufffd"
    assert set(range(len(tokenizer), vocab)) <= flat  # the padding rows are no tokens at all
    assert tokenizer.convert_tokens_to_ids("Paris") not in flat


def test_base_and_fine_tuned_answers_are_text(tiny: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from anytune.local_backend.inference import load

    # An adapter as the trainer writes one (its weights moved off zero, as training would).
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny),
        LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "adapter")
    loaded = load(tmp_path / "adapter", base_model=str(tiny), device="cpu")
    answers = [loaded.generate(p, max_new_tokens=40, adapter=adapter) for p in PROMPTS for adapter in (False, True)]
    assert all(is_text(a) for a in answers), answers
    assert sum(len(a) for a in answers) > 40  # it did say something
    assert _printable("bell\x07 and\x1b[2J") == "bell\\x07 and\\x1b[2J"  # what a real model emits is shown
