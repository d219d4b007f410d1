"""GGUF for llama.cpp and Ollama, written with the ``gguf`` package (llama.cpp's own Python library).

llama.cpp's ``convert_hf_to_gguf.py`` is a script of the llama.cpp repository, not an installable
library; its library half is the ``gguf`` package, which holds the tensor-name tables per
architecture (:class:`gguf.TensorNameMap`), the metadata keys, the vocabulary readers
(:class:`gguf.SpecialVocab`), the quantisers and the writer. This module does what the script does
for the architectures in :data:`ARCHITECTURES` and nothing else: a model outside them, a rope
scaling the script would rewrite, or a tokenizer whose pre-tokenizer llama.cpp would not recognise
is refused before any work, and the merged export (a Hugging Face folder) is the way to use the
script itself.

The input is a merged Hugging Face folder (see :mod:`.merged`), read from its safetensors files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anytune.errors import MissingDependencyError, NotSupportedError

__all__ = ["ARCHITECTURES", "OUTTYPES", "GgufArch", "check_model", "pre_tokenizer", "require", "write_gguf"]

#: ``--outtype`` values, as llama.cpp's converter names them.
OUTTYPES = ("f32", "f16", "bf16", "q8_0")


@dataclass(frozen=True)
class GgufArch:
    """How one Hugging Face ``model_type`` becomes GGUF (as llama.cpp's converter does it)."""

    #: llama.cpp's architecture name (``general.architecture``), also the ``gguf.MODEL_ARCH`` member's name.
    name: str
    #: Llama's q/k weights are stored for the rotate-half rope; llama.cpp's kernels want the
    #: interleaved layout, so its converter permutes them (``LlamaModel.permute``).
    permute_qk: bool


#: Hugging Face ``model_type`` → GGUF architecture. Mistral converts as Llama, as in llama.cpp.
ARCHITECTURES: Mapping[str, GgufArch] = {
    "llama": GgufArch("llama", permute_qk=True),
    "mistral": GgufArch("llama", permute_qk=True),
    "qwen2": GgufArch("qwen2", permute_qk=False),
    "qwen3": GgufArch("qwen3", permute_qk=False),
}

# The pre-tokenizer regular expressions llama.cpp recognises by name (llama-vocab.cpp), as tokenizer.json
# writes them; a ByteLevel pre-tokenizer with its own regex is GPT-2's.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_KNOWN_SPLITS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


def require() -> None:
    """Raise :class:`MissingDependencyError` unless the ``gguf`` package is installed."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("gguf", "gguf", "exporting to GGUF")


def _refuse(message: str) -> NotSupportedError:
    return NotSupportedError(message, field="format", provider="the GGUF export")


def pre_tokenizer(tokenizer_json: Mapping[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (``tokenizer.ggml.pre``).

    Raises:
        NotSupportedError: not a byte-level BPE tokenizer, or a pre-tokenizer llama.cpp does not know
            (llama.cpp would split text differently from the model's own tokenizer).
    """
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        kind = "SentencePiece-style BPE with byte fallback" if model.get("byte_fallback") else model.get("type")
        raise _refuse(
            "GGUF export handles byte-level BPE tokenizers (GPT-2, Llama 3, Qwen); this model's tokenizer is "
            f"{kind or 'unknown'}"
        )
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if step.get("type") == "ByteLevel" and step.get("use_regex", True):
            return "gpt-2"
        if step.get("type") == "Split":
            pattern = (step.get("pattern") or {}).get("Regex")
            if pattern in _KNOWN_SPLITS:
                return _KNOWN_SPLITS[pattern]
    raise _refuse(
        "this tokenizer's pre-tokenizer is not one llama.cpp recognises (GPT-2, Llama 3 or Qwen2 style): a GGUF "
        "would tokenize text differently from the model"
    )


def check_model(config: Mapping[str, Any], tokenizer_json: Mapping[str, Any] | None) -> GgufArch:
    """The GGUF architecture for a base model, or a refusal naming what is not supported.

    Raises:
        NotSupportedError: the architecture, its rope scaling or its tokenizer.
    """
    model_type = str(config.get("model_type") or "unknown")
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise _refuse(
            f"GGUF export is not supported for this architecture ({model_type}); supported: "
            f"{', '.join(sorted(ARCHITECTURES))}. Export --format merged and convert that folder with llama.cpp's "
            "convert_hf_to_gguf.py"
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type != "default":
        raise _refuse(
            f"GGUF export handles the default rope only; this model uses {rope_type!r} rope scaling. Export "
            "--format merged and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    if tokenizer_json is not None:
        pre_tokenizer(tokenizer_json)
    return arch


def _permute(weights: Any, n_head: int) -> Any:
    """llama.cpp's ``LlamaModel.permute``: rotate-half rope rows to interleaved pairs."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(folder: Path) -> Iterator[tuple[str, Any]]:
    """``(name, float32 numpy array)`` for every tensor of the folder's safetensors files."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield name, f.get_tensor(name).float().numpy()


def _vocab(folder: Path, n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens and their types, padded to the embedding size (llama.cpp's ``get_vocab_base``)."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _encode(data: Any, outtype: str) -> tuple[Any, Any]:
    """``(data, raw_dtype)`` for the writer (which derives a packed tensor's shape from its bytes);
    1-D tensors stay float32, as llama.cpp keeps them."""
    import gguf
    import numpy as np

    if outtype == "f32" or data.ndim <= 1:
        return data.astype(np.float32), None
    if outtype == "f16":
        return data.astype(np.float16), None
    qtype = gguf.GGMLQuantizationType.BF16 if outtype == "bf16" else gguf.GGMLQuantizationType.Q8_0
    if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return data.astype(np.float16), None  # rows that do not fill whole blocks: llama.cpp's fallback
    return gguf.quants.quantize(data, qtype), qtype


_FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}  # gguf.LlamaFileType


def write_gguf(folder: Path, target: Path, *, outtype: str = "f16", name: str | None = None) -> None:
    """Convert the merged Hugging Face model in ``folder`` into one GGUF file ``target``."""
    import gguf

    config: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tok_file = folder / "tokenizer.json"
    tokenizer_json = json.loads(tok_file.read_text(encoding="utf-8")) if tok_file.is_file() else None
    if tokenizer_json is None:
        raise _refuse("GGUF export needs a fast tokenizer (tokenizer.json) next to the model")
    arch = check_model(config, tokenizer_json)
    n_layers = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    n_vocab = int(config["vocab_size"])
    rope = config.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.name.upper()], n_layers)
    tied = bool(config.get("tie_word_embeddings"))

    writer = gguf.GGUFWriter(str(target), arch.name)
    writer.add_type(gguf.GGUFType.MODEL)
    if name:
        writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(_FILE_TYPES[outtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types = _vocab(folder, n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab).add_to_gguf(writer, quiet=True)

    for hf_name, data in _tensors(folder):
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads a tied head from token_embd
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise _refuse(f"tensor {hf_name} has no GGUF name for {arch.name}: this model variant is not supported")
        if arch.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, n_head)
        elif arch.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, n_kv)
        packed, dtype = _encode(data, outtype)
        writer.add_tensor(gguf_name, packed, raw_dtype=dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
