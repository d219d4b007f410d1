"""Try a fine-tuned adapter at once: load it on its base model and generate, with plain transformers + peft.

``FineTunedModel.load()`` and ``FineTunedModel.generate()`` call into this module; nothing here is
anytune-specific beyond finding the base model, so an adapter written by the local backend loads
exactly as ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)`` would.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anytune.errors import ConfigError, MissingDependencyError
from anytune.local_backend.devices import device_kind

if TYPE_CHECKING:
    from anytune._types import FineTunedModel

Messages = Sequence[Mapping[str, Any]]
Prompt = str | Messages


def _require() -> None:
    import importlib.util

    for module in ("torch", "transformers", "peft"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(module, "local", "loading a fine-tuned adapter")


def adapter_base(adapter: str | Path) -> str | None:
    """The base model an adapter directory records (``base_model_name_or_path``), if any."""
    config = Path(adapter) / "adapter_config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    base = data.get("base_model_name_or_path")
    return str(base) if base else None


def hub_adapter_folder(repo: str, revision: str | None) -> Path:
    """A Hub repo's adapter, downloaded into the Hub cache (``HF_ENDPOINT`` read now, as ``push``
    reads it). Loading and exporting read the adapter from this folder, one way for both.

    Raises:
        ConfigError: the repo holds no ``adapter_config.json`` at its top level.
    """
    import os

    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id=repo, revision=revision, endpoint=os.environ.get("HF_ENDPOINT") or None))
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(
            f"Hub repo {repo} holds no adapter_config.json at its top level: not a PEFT adapter", field="hub_repo"
        )
    return folder


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A plain string becomes one user message; a message list is used as given."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


@dataclass
class LoadedModel:
    """A base model with the adapter applied, its tokenizer and device. ``model`` is a ``PeftModel``."""

    model: Any
    tokenizer: Any
    device: str
    adapter_path: str | None = None
    base_model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def generate(
        self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0, adapter: bool = True, **kwargs: Any
    ) -> str:
        """Answer ``prompt`` (a string, or chat messages) and return the new text.

        Args:
            prompt: a user message, or a list of ``{"role", "content"}`` messages.
            max_new_tokens: at most this many new tokens.
            temperature: 0 decodes greedily (reproducible); above 0 samples.
            adapter: ``False`` answers with the base model alone (the adapter switched off).
            kwargs: passed to ``model.generate``.
        """
        return generate(self, prompt, max_new_tokens=max_new_tokens, temperature=temperature, adapter=adapter, **kwargs)


def load(
    adapter_path: str | Path | None = None,
    *,
    base_model: str | None = None,
    hub_repo: str | None = None,
    revision: str | None = None,
    device: str | None = None,
) -> LoadedModel:
    """Load ``base_model`` (default: the one the adapter records) and apply the adapter.

    Args:
        adapter_path: a local PEFT adapter directory.
        base_model: the base model id or folder, when the adapter does not record it (or to override).
        hub_repo: a Hub repository holding the adapter instead of ``adapter_path``.
        revision: the Hub revision of ``hub_repo``.
        device: ``cpu``, ``cuda``, ``mps`` or ``auto`` (default).

    Raises:
        MissingDependencyError: transformers, peft or torch is not installed.
        ConfigError: neither an adapter nor a base model to load.
    """
    _require()
    from anytune.local_backend.model import quiet_transformers

    with quiet_transformers():
        return _load(adapter_path, base_model=base_model, hub_repo=hub_repo, revision=revision, device=device)


def _load(
    adapter_path: str | Path | None,
    *,
    base_model: str | None,
    hub_repo: str | None,
    revision: str | None,
    device: str | None,
) -> LoadedModel:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if adapter_path is None:
        if hub_repo is None:
            raise ConfigError("nothing to load: give an adapter path or a Hub repository", field="adapter_path")
        adapter_path = hub_adapter_folder(hub_repo, revision)
    source = str(adapter_path)
    base = base_model or adapter_base(adapter_path)
    if base is None:
        raise ConfigError(
            f"the adapter at {source} does not record its base model: pass base_model=", field="base_model"
        )
    where = _available(device_kind(device))
    dtype = torch.bfloat16 if where == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    # The local backend saves the tokenizer (chat template included) next to the adapter.
    tok_source = source if (Path(source) / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tok_source)
    peft_model = PeftModel.from_pretrained(model, source)
    peft_model.to(where)
    peft_model.eval()
    return LoadedModel(
        model=peft_model,
        tokenizer=tokenizer,
        device=where,
        adapter_path=str(adapter_path),
        base_model=base,
    )


def _available(where: str) -> str:
    """``where`` when this machine has it (``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    Raises:
        ConfigError: another name, or a device torch cannot use here.
    """
    import torch

    kind = where.split(":", 1)[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {where!r}: choose cpu, cuda, cuda:N, mps or auto", field="device")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device cuda is not available here (no CUDA device, or torch built without CUDA)", field="device"
        )
    mps = getattr(torch.backends, "mps", None)
    if kind == "mps" and (mps is None or not mps.is_available()):
        raise ConfigError("device mps is not available here", field="device")
    return where


def load_result(model: FineTunedModel, *, device: str | None = None, base_model: str | None = None) -> LoadedModel:
    """What :meth:`anytune.FineTunedModel.load` calls (see ``anytune._types.ADAPTER_LOADER``)."""
    # The base the adapter records wins over ``base_model`` (what the job was given).
    recorded = adapter_base(model.adapter_path) if model.adapter_path is not None else None
    return load(
        model.adapter_path,
        base_model=base_model or recorded or model.base_model,
        hub_repo=model.hub_repo,
        revision=model.revision,
        device=device,
    )


def prompt_text(tokenizer: Any, prompt: Prompt) -> str:
    """``prompt`` as the model is asked it: the chat template with the assistant's turn opened; with
    no template, the plain concatenation of the contents (the only honest prompt). Shared by every
    way anytune generates (here, evaluation, ONNX exports)."""
    messages = as_messages(prompt)
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return "\n".join(str(m.get("content") or "") for m in messages) + "\n"


def answer_text(tokenizer: Any, new_ids: Any) -> str:
    """The generated ids as text, special tokens dropped. max_new_tokens can cut a multi-byte
    character in two: its first bytes alone are no text, so a trailing U+FFFD goes."""
    return str(tokenizer.decode(new_ids, skip_special_tokens=True)).rstrip("\ufffd").strip()


def generate(
    loaded: LoadedModel,
    prompt: Prompt,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    adapter: bool = True,
    **kwargs: Any,
) -> str:
    """See :meth:`LoadedModel.generate`."""
    import torch

    tokenizer = loaded.tokenizer
    inputs = tokenizer(prompt_text(tokenizer, prompt), return_tensors="pt", add_special_tokens=False).to(loaded.device)
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": temperature > 0,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }
    if temperature > 0:
        options["temperature"] = temperature
    options.update(kwargs)
    switch = contextlib.nullcontext() if adapter else loaded.model.disable_adapter()
    with torch.inference_mode(), switch:
        output = loaded.model.generate(**inputs, **options)
    return answer_text(tokenizer, output[0, inputs["input_ids"].shape[1] :])
