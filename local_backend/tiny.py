"""Build a small causal language model and its tokenizer on the spot, with nothing downloaded.

Tests, ``anytune demo`` and the benchmark need a real Hugging Face model directory (config, weights,
a fast tokenizer with a chat template) without network access. :func:`build_tiny_model` makes one:
a randomly initialised Llama- or Qwen2-shaped decoder and a byte-level BPE tokenizer trained with
the ``tokenizers`` library on the given texts, with ChatML special tokens and a ChatML template.

The pad token is deliberately the EOS token (``<|im_end|>``, also the end-of-turn token), as in many
real chat models: it exercises the rule that labels never come from ``input_ids != pad_id``, which
would silently stop the model from learning to end its turns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["CHATML_TEMPLATE", "build_tiny_model", "default_texts", "non_text_tokens"]

CHATML_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{%- if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif -%}"
    "Tools: {{ tools | tojson }}<|im_end|>\n"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (tools and loop.first and message['role'] == 'system') %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] %}{{ message['content'] }}{% endif %}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{%- for call in message['tool_calls'] %}"
    "{{ '<tool_call>' + (call['function'] | tojson) + '</tool_call>' }}"
    "{%- endfor %}{%- endif %}"
    "{{ '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)
"""ChatML, as Qwen2 models use it, with a minimal rendering of tools and tool calls."""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

_BUILTIN_TEXT = (
    "You are a helpful assistant. Answer in one short sentence.",
    "What is the capital of France? The capital of France is Paris.",
    "How many days are in a week? A week has seven days.",
    "Name a primary colour. Red is a primary colour.",
    "What is two plus three? Two plus three is five.",
    "Describe the sea in a few words. The sea is wide, blue and salty.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
)

_SAMPLE_TRAIN = Path(__file__).resolve().parents[1] / "samples" / "data" / "train.jsonl"


def default_texts() -> list[str]:
    """Texts to train the tokenizer on: the messages of ``samples/data/train.jsonl`` if present.

    Falls back to a small built-in text so that the builder works from an installed wheel too.
    """
    texts: list[str] = []
    if _SAMPLE_TRAIN.is_file():
        for line in _SAMPLE_TRAIN.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(str(m.get("content") or "") for m in json.loads(line).get("messages", []))
    return texts or list(_BUILTIN_TEXT)


def _train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The role names and template pieces are part of every rendered conversation: train on them too.
    corpus = [*texts, "system\nuser\nassistant\ntool\n<tool_call></tool_call>"]
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def _is_text(piece: str) -> bool:
    return bool(piece) and "\ufffd" not in piece and all(c.isprintable() or c == "\n" for c in piece)


def non_text_tokens(tokenizer: Any, n_vocab: int) -> list[int]:
    """Ids of ``[0, n_vocab)`` that do not decode to printable text on their own: lone bytes of
    multi-byte characters, control characters, and the padding rows past the vocabulary. Special
    tokens stay (the end-of-turn token ends an answer)."""
    special = set(tokenizer.all_special_ids)
    size = len(tokenizer)
    return [
        i
        for i in range(n_vocab)
        if i not in special and (i >= size or not _is_text(tokenizer.decode([i], skip_special_tokens=False)))
    ]


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def build_tiny_model(
    path: str | Path,
    *,
    arch: Literal["llama", "qwen2", "qwen3"] = "llama",
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    texts: Sequence[str] | None = None,
    vocab_size: int = 4096,
    seed: int = 0,
    tie_word_embeddings: bool | None = None,
) -> Path:
    """Build and save a randomly initialised causal LM and a trained tokenizer in Hugging Face format.

    The defaults give a ~5M-parameter model that trains visibly on two CPU cores in a minute or two.
    Grouped-query attention (``num_kv_heads < num_heads``) is on by default because real models use
    it and the trainer's attention path must handle it.

    Args:
        path: folder to write (created; existing files of the same names are replaced).
        arch: ``"llama"`` (untied embeddings by default), ``"qwen2"`` (tied, q/k/v biases) or
            ``"qwen3"`` (tied, q/k norms, no biases, Qwen3's head size of 128).
        hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size: the decoder's shape;
            ``intermediate_size`` defaults to ``~2.7 * hidden_size`` rounded up to a multiple of 64
            (bitsandbytes' CPU 4-bit kernels need output sizes divisible by 32).
        max_position_embeddings: longest sequence the config allows.
        texts: what to train the tokenizer on; default :func:`default_texts`.
        vocab_size: upper bound of the vocabulary (BPE stops earlier on a small corpus).
        seed: makes weights and tokenizer reproducible.
        tie_word_embeddings: override the architecture's default.

    Returns:
        ``Path(path)``, loadable with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM
    from transformers import PreTrainedTokenizerFast as _Fast

    PreTrainedTokenizerFast: Any = _Fast

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer(texts if texts is not None else default_texts(), vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        model_max_length=max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    bos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # Round the embedding size up so that matrix shapes stay friendly to vectorised kernels.
    n_vocab = _round_up(len(tokenizer), 64)
    common: dict[str, Any] = {
        "vocab_size": n_vocab,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "intermediate_size": intermediate_size or _round_up(int(hidden_size * 8 / 3), 64),
        "max_position_embeddings": max_position_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
    }
    if arch == "llama":
        config: Any = LlamaConfig(tie_word_embeddings=bool(tie_word_embeddings), **common)
        model_cls: Any = LlamaForCausalLM
    elif arch == "qwen2":
        tie = True if tie_word_embeddings is None else tie_word_embeddings
        config = Qwen2Config(tie_word_embeddings=tie, use_sliding_window=False, **common)
        model_cls = Qwen2ForCausalLM
    elif arch == "qwen3":
        tie = True if tie_word_embeddings is None else tie_word_embeddings
        # head_dim stays Qwen3's 128 whatever the width, as every Qwen3 checkpoint has it (and as
        # transformers' GGUF reader assumes: it does not read the key length).
        config = Qwen3Config(tie_word_embeddings=tie, use_sliding_window=False, **common)
        model_cls = Qwen3ForCausalLM
    else:
        raise ValueError(f"arch must be 'llama', 'qwen2' or 'qwen3', not {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
        # transformers' default init (std 0.02) keeps logits within about +-1 for a narrow model, and
        # the final norm is frozen under LoRA: the adapter could then barely sharpen any prediction.
        # A unit-variance head (std 1/sqrt(hidden)), as a trained model would have, lets it learn.
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0.0, hidden_size**-0.5)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    # Random weights pick any token, and a byte-level vocabulary holds all 256 bytes: alone, half of
    # them are pieces of multi-byte characters or control characters, which decode to U+FFFD or move
    # the cursor. Generation keeps to tokens that are text by themselves (saved in
    # generation_config.json, so base and fine-tuned model alike, through any loader).
    model.generation_config.bad_words_ids = [[i] for i in non_text_tokens(tokenizer, n_vocab)]
    from anytune.local_backend.model import quiet_transformers

    with quiet_transformers():  # a one-shard save of a tiny model needs no progress bar
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
