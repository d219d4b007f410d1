"""The adapter merged into its base's weights, saved in Hugging Face format (transformers + peft).

A QLoRA base that was *saved* quantized (a bitsandbytes checkpoint) is dequantised first: merging
LoRA deltas into 4-bit weights would round them away, and the result must load with plain
transformers, without bitsandbytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DTYPES", "load_merged", "save_merged"]

DTYPES = ("auto", "float32", "float16", "bfloat16")


def _torch_dtype(dtype: str) -> Any:
    import torch

    return "auto" if dtype == "auto" else getattr(torch, dtype)


def load_merged(adapter: Path, base_model: str, *, dtype: str = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)``: ``base_model`` with ``adapter`` merged in, on the CPU, in eval mode.

    ``dtype="auto"`` keeps the checkpoint's own dtype (a bfloat16 base merges in bfloat16).
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from anytune.local_backend.model import quiet_transformers, resolve_model_source

    base = resolve_model_source(base_model)
    with quiet_transformers():
        model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=_torch_dtype(dtype))
        if getattr(model.config, "quantization_config", None) is not None:
            model = model.dequantize()
        peft_model = PeftModel.from_pretrained(model, str(adapter))
        # safe_merge checks every merged weight for NaNs before it replaces the original.
        merged = peft_model.merge_and_unload(safe_merge=True)
        # The local backend saves the tokenizer (chat template included) next to the adapter.
        tok_source = str(adapter) if (adapter / "tokenizer_config.json").is_file() else base
        tokenizer = AutoTokenizer.from_pretrained(tok_source)
    merged.eval()
    if getattr(merged.config, "quantization_config", None) is not None:
        # dequantize() keeps the attribute on some versions: the saved model must not claim it.
        del merged.config.quantization_config
    return merged, tokenizer


def save_merged(adapter: Path, base_model: str, out: Path, *, dtype: str = "auto") -> list[str]:
    """Merge and save into ``out`` (safetensors, config, generation config, tokenizer).

    Returns:
        The names of the files written.
    """
    from anytune.local_backend.model import quiet_transformers

    model, tokenizer = load_merged(adapter, base_model, dtype=dtype)
    with quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return sorted(p.name for p in out.iterdir())
