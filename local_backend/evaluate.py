"""The base and the fine-tuned model as evaluation answerers, from weights: one base model loaded
once, the adapter switched on for ``fine-tuned`` and off for ``base`` (peft's ``disable_adapter``).

Loss is the trainer's own definition: mean cross-entropy over the tokens of the assistant turns,
the conversation rendered with the model's chat template (:func:`~.data.encode_conversation`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anytune.local_backend.inference import LoadedModel, generate

if TYPE_CHECKING:
    from anytune._eval.report import GenerationSettings
    from anytune._types import FineTunedModel

__all__ = ["WeightsAnswerer", "answerers_for"]


@dataclass
class WeightsAnswerer:
    """One role (adapter on or off) of a loaded base + adapter."""

    loaded: LoadedModel
    adapter: bool
    name: str

    def answer(self, messages: Sequence[Mapping[str, Any]], settings: GenerationSettings) -> str:
        import torch

        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
        return generate(
            self.loaded,
            list(messages),
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            adapter=self.adapter,
        )

    def loss(self, messages: Sequence[Mapping[str, Any]]) -> tuple[float, int] | None:
        import torch

        from anytune.local_backend.data import encode_conversation

        encoded = encode_conversation(self.loaded.tokenizer, list(messages), where="evaluation example")
        if encoded.num_targets == 0:
            return None
        ids = torch.as_tensor(encoded.input_ids, dtype=torch.long, device=self.loaded.device)[None]
        learn = torch.as_tensor(encoded.learn, device=self.loaded.device)
        switch = contextlib.nullcontext() if self.adapter else self.loaded.model.disable_adapter()
        with torch.inference_mode(), switch:
            logits = self.loaded.model(input_ids=ids).logits[0, :-1].float()
        # learn[j] marks token j as a target, predicted at position j - 1.
        targets = ids[0, 1:]
        mask = learn[1:]
        nll = torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum")
        return float(nll), int(mask.sum())


def answerers_for(
    model: FineTunedModel, *, device: str | None = None, base_model: str | None = None
) -> dict[str, WeightsAnswerer]:
    """``base`` and ``fine-tuned`` for a result with weights (a local adapter, a Hub adapter)."""
    loaded = (
        model._loaded if isinstance(model._loaded, LoadedModel) else model.load(device=device, base_model=base_model)
    )
    assert isinstance(loaded, LoadedModel)
    where = model.adapter_path or (f"{model.hub_repo}@{model.revision}" if model.revision else model.hub_repo)
    return {
        "base": WeightsAnswerer(loaded, adapter=False, name=str(loaded.base_model)),
        "fine-tuned": WeightsAnswerer(loaded, adapter=True, name=f"{loaded.base_model} + {where}"),
    }
