"""The base and the fine-tuned model as evaluation answerers, from weights: one base model loaded
once, the adapter switched on for ``fine-tuned`` and off for ``base`` (peft's ``disable_adapter``).

Loss is the trainer's own definition: mean cross-entropy over the tokens of the assistant turns,
the conversation rendered with the model's chat template (:func:`~.data.encode_conversation`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anytune.local_backend.inference import LoadedModel, answer_text, prompt_text

if TYPE_CHECKING:
    from anytune._eval.report import GenerationSettings
    from anytune._types import FineTunedModel

__all__ = ["WeightsAnswerer", "answerers_for", "lm_eval_scores", "padding_groups"]


@dataclass
class WeightsAnswerer:
    """One role (adapter on or off) of a loaded base + adapter, a batch of examples at a time."""

    loaded: LoadedModel
    adapter: bool
    name: str

    def _switch(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if self.adapter else self.loaded.model.disable_adapter()

    def answer(self, prompts: Sequence[Sequence[Mapping[str, Any]]], settings: GenerationSettings) -> list[str]:
        """Greedy (or seeded sampling) answers to a batch of prompts, padded on the left as
        transformers' batched generation wants."""
        import torch

        tokenizer = self.loaded.tokenizer
        texts = [prompt_text(tokenizer, messages) for messages in prompts]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            batch = tokenizer(texts, return_tensors="pt", add_special_tokens=False, padding=True)
        finally:
            tokenizer.padding_side = side
        batch = batch.to(self.loaded.device)
        options: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": settings.temperature > 0,
            "pad_token_id": pad_id,
        }
        if settings.temperature > 0:
            options["temperature"] = settings.temperature
            torch.manual_seed(settings.seed)
        with torch.inference_mode(), self._switch():
            output = self.loaded.model.generate(**batch, **options)
        return [answer_text(tokenizer, row) for row in output[:, batch["input_ids"].shape[1] :]]

    def loss(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[tuple[float, int] | None]:
        """Summed cross-entropy over each conversation's assistant tokens. Sequences of like length
        run together (:func:`padding_groups`: padding is compute thrown away); the head runs on the
        assistant positions only (as the trainer's label-only head does), so no batch holds its full
        ``tokens x vocabulary`` logits."""
        from anytune.local_backend.data import encode_conversation

        encoded = [
            encode_conversation(self.loaded.tokenizer, list(m), where="evaluation example") for m in conversations
        ]
        out: list[tuple[float, int] | None] = [None] * len(encoded)
        for group in padding_groups([len(e) for e in encoded]):
            for i, measured in zip(group, self._group_loss([encoded[i] for i in group]), strict=True):
                out[i] = measured
        return out

    def _group_loss(self, encoded: Sequence[Any]) -> list[tuple[float, int] | None]:
        import torch

        width = max(len(e) for e in encoded)
        pad = self.loaded.tokenizer.pad_token_id or 0
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        learn = torch.zeros((len(encoded), width), dtype=torch.bool)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.as_tensor(e.input_ids, dtype=torch.long)
            attention[i, : len(e)] = 1
            learn[i, : len(e)] = torch.as_tensor(e.learn)
        ids, attention, learn = (t.to(self.loaded.device) for t in (ids, attention, learn))
        base = self.loaded.model.get_base_model()
        # learn[j] marks token j as a target, predicted from position j - 1.
        predicts = learn[:, 1:]
        targets = ids[:, 1:][predicts]
        with torch.inference_mode(), self._switch():
            hidden = base.get_decoder()(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1]
            logits = base.get_output_embeddings()(hidden[predicts]).float()
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        out: list[tuple[float, int] | None] = []
        start = 0
        for row in predicts:
            n = int(row.sum())
            out.append((float(nll[start : start + n].sum()), n) if n else None)
            start += n
        return out


def padding_groups(lengths: Sequence[int], slack: float = 0.1) -> list[list[int]]:
    """Indices of ``lengths`` in groups that pad to their longest member with at most ``slack`` of
    their real tokens added (shortest first; a sequence alone is a group of one)."""
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if current and lengths[i] * (len(current) + 1) > (1 + slack) * (real + lengths[i]):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        groups.append(current)
    return groups


def answerers_for(
    model: FineTunedModel, *, device: str | None = None, base_model: str | None = None
) -> dict[str, WeightsAnswerer]:
    """``base`` and ``fine-tuned`` for a result with weights (a local adapter, a Hub adapter)."""
    reuse = isinstance(model._loaded, LoadedModel) and device is None and base_model is None
    loaded = model._loaded if reuse else model.load(device=device, base_model=base_model)
    assert isinstance(loaded, LoadedModel)
    where = model.adapter_path or (f"{model.hub_repo}@{model.revision}" if model.revision else model.hub_repo)
    return {
        "base": WeightsAnswerer(loaded, adapter=False, name=str(loaded.base_model)),
        "fine-tuned": WeightsAnswerer(loaded, adapter=True, name=f"{loaded.base_model} + {where}"),
    }


def _task_metrics(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """lm-eval's ``results`` (``{"task": {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}}``) as
    ``{"task": {"acc": 0.5}}``: the numbers, under the metric's name, standard errors left out."""
    out: dict[str, dict[str, float]] = {}
    for task, values in results.items():
        metrics: dict[str, float] = {}
        for key, value in values.items():
            name, _, filt = str(key).partition(",")
            if not filt or name.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metrics[name if filt == "none" else f"{name}[{filt}]"] = float(value)
        out[str(task)] = metrics
    return out


def lm_eval_scores(
    model: FineTunedModel,
    tasks: Sequence[str],
    *,
    include: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    base_model: str | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """EleutherAI's lm-evaluation-harness tasks on the base model and on base + adapter
    (``lm_eval.simple_evaluate`` with its ``hf`` model and ``peft=``), ``{role: {task: {metric: value}}}``.

    ``include`` is a folder of task definitions of your own (lm-eval's ``include_path``); ``limit``
    caps the documents per task.

    Raises:
        MissingDependencyError: lm-eval is not installed (``anytune[lm-eval]``).
    """
    import importlib.util

    from anytune.errors import MissingDependencyError
    from anytune.local_backend.devices import device_kind
    from anytune.local_backend.inference import adapter_base, hub_adapter_folder
    from anytune.local_backend.model import resolve_model_source

    if importlib.util.find_spec("lm_eval") is None:
        raise MissingDependencyError("lm-eval", "lm-eval", "lm-evaluation-harness tasks")
    import lm_eval
    from lm_eval.tasks import TaskManager

    adapter = (
        Path(model.adapter_path)
        if model.adapter_path is not None
        else hub_adapter_folder(str(model.hub_repo), model.revision)
    )
    base = resolve_model_source(base_model or adapter_base(adapter) or str(model.base_model))
    manager = TaskManager(include_path=include) if include else TaskManager()
    where = device_kind(device)
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for role, extra in (("base", {}), ("fine-tuned", {"peft": str(adapter)})):
        args = {"pretrained": base, "dtype": "float32" if where == "cpu" else "auto", "device": where, **extra}
        out = lm_eval.simple_evaluate(
            model="hf", model_args=args, tasks=list(tasks), task_manager=manager, limit=limit, batch_size=batch_size
        )
        scores[role] = _task_metrics((out or {}).get("results") or {})
    return scores
