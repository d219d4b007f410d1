"""The first examples of a source as the model will see them, with what is learned marked.

:func:`preview` reads only the first ``n`` examples of any source :func:`~anytune._data.pipeline.to_canonical`
reads (a 1 GB CSV is not read to show three rows) and returns each as :class:`PreviewExample`:

* with a base model, each sequence is rendered, tokenized and labelled by the local trainer's own
  code (:data:`TRAINER_PREVIEW`, imported on first use: ``anytune.local_backend`` and the ML stack
  are never imported otherwise), so the tokens marked learned are exactly those the trainer puts
  loss on: the chat template's text, the end-of-turn token, a cut at ``max_length``;
* without one, the canonical messages, role by role, the learned ones marked by the trainer's rule
  (assistant messages whose ``weight`` is not 0; for preference pairs, the chosen and rejected
  answers).
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from anytune.errors import ConfigError, DataValidationError, MissingDependencyError

__all__ = ["TRAINER_PREVIEW", "PreviewExample", "Rendered", "Segment", "message_text", "preview"]

#: The trainer's side of the preview: ``module:function`` taking ``(examples, *, base_model,
#: chat_template, max_length)`` where ``examples`` are ``(where, canonical example)`` pairs, and
#: returning, per example, its sequences as ``{name: Rendered}`` and notes on what the trainer does.
#: A dotted path imported on first use, like :data:`anytune._types.ADAPTER_LOADER`, so the core
#: never imports the trainer.
TRAINER_PREVIEW = "anytune.local_backend.preview:render_examples"
#: What the trainer's preview imports: the ``anytune[local]`` extra installs them.
_TRAINER_NEEDS = ("numpy", "torch", "transformers")


@dataclass(frozen=True)
class Segment:
    """A run of text that is learned or not.

    Attributes:
        text: the text, as the model sees it (with a base model: the chat template's rendering).
        learned: whether the trainer puts loss on it.
        role: the message's role (without a base model; None with one).
        cut: past ``max_length``: the trainer never sees it.
    """

    text: str
    learned: bool
    role: str | None = None
    cut: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "learned": self.learned, "role": self.role, "cut": self.cut}


@dataclass(frozen=True)
class Rendered:
    """One sequence: its segments and, with a base model, its token counts.

    Attributes:
        segments: the text in order, learned runs apart.
        tokens: tokens of the whole rendering (None without a tokenizer).
        learned_tokens: tokens the trainer puts loss on, after any cut (None without a tokenizer).
        cut_at: the token where ``max_length`` cuts (None: not cut).
    """

    segments: tuple[Segment, ...]
    tokens: int | None = None
    learned_tokens: int | None = None
    cut_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "segments": [s.to_json() for s in self.segments],
            "tokens": self.tokens,
            "learned_tokens": self.learned_tokens,
            "cut_at": self.cut_at,
        }


@dataclass(frozen=True)
class PreviewExample:
    """One example of the source, as previewed.

    Attributes:
        location: the row it came from (``train.csv:row 2``).
        method: ``sft`` (one sequence) or ``dpo`` (a chosen and a rejected sequence).
        sequences: ``{"text": ...}`` for SFT; ``{"chosen": ..., "rejected": ...}`` for DPO, and,
            without a tokenizer, ``"prompt"`` first (the answers then hold only the answers).
        notes: what the trainer does with it beyond the marks (a cut, nothing to learn).
    """

    location: str
    method: Literal["sft", "dpo"]
    sequences: dict[str, Rendered]
    notes: tuple[str, ...] = field(default=())

    @property
    def tokens(self) -> int | None:
        counts = [r.tokens for r in self.sequences.values()]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    @property
    def learned_tokens(self) -> int | None:
        counts = [r.learned_tokens for r in self.sequences.values()]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    def to_json(self) -> dict[str, Any]:
        """``location``, ``method``, ``notes``, ``tokens`` and ``learned_tokens`` (null without a
        tokenizer); SFT: the sequence's ``segments`` and ``cut_at``; DPO: ``chosen`` and
        ``rejected`` (and ``prompt``) as objects with those keys."""
        data: dict[str, Any] = {"location": self.location, "method": self.method}
        if self.method == "sft":
            data |= self.sequences["text"].to_json()
        else:
            data |= {name: r.to_json() for name, r in self.sequences.items()}
            data |= {"tokens": self.tokens, "learned_tokens": self.learned_tokens}
        return data | {"notes": list(self.notes)}


# -- without a tokenizer: the messages ------------------------------------------------------------


def message_text(message: Mapping[str, Any]) -> str:
    """A message's content as one text: its text parts, and its tool calls one a line."""
    content = message.get("content")
    if isinstance(content, str):
        parts = [content]
    elif isinstance(content, list):
        parts = [str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content]
    else:
        parts = [] if content is None else [str(content)]
    for call in message.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            parts.append(f"→ {fn.get('name')}({fn.get('arguments', '')})")
    return "\n".join(p for p in parts if p)


def _learned(message: Mapping[str, Any]) -> bool:
    # The trainer's rule (anytune.local_backend.data._learned); tests/local check the two agree.
    return message.get("role") == "assistant" and message.get("weight", 1) != 0


def _messages(value: Any, where: str, field: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise DataValidationError(f"{where}: {field} must be a list of messages")
    return value


def _segments(messages: Sequence[Mapping[str, Any]], learned: Callable[[Mapping[str, Any]], bool]) -> Rendered:
    return Rendered(tuple(Segment(message_text(m), learned(m), str(m.get("role"))) for m in messages))


def _answer(message: Mapping[str, Any]) -> bool:
    # A preference answer: every assistant message of it is learned (weight plays no part in DPO).
    return message.get("role") == "assistant"


def _as_messages(where: str, example: Mapping[str, Any]) -> PreviewExample:
    if "messages" in example:
        text = _segments(_messages(example["messages"], where, "messages"), _learned)
        notes = () if any(s.learned and s.text for s in text.segments) else (_NOTHING,)
        return PreviewExample(where, "sft", {"text": text}, notes)
    inp = example.get("input")
    prompt = _messages(inp.get("messages") if isinstance(inp, dict) else None, where, "input.messages")
    sequences = {"prompt": _segments(prompt, lambda _: False)}
    for name, key in (("chosen", "preferred_output"), ("rejected", "non_preferred_output")):
        sequences[name] = _segments(_messages(example.get(key), where, key), _answer)
    return PreviewExample(where, "dpo", sequences)


_NOTHING = "nothing to learn (no assistant message with a weight other than 0): the trainer leaves it out"


# -- the trainer's view ---------------------------------------------------------------------------


_Render = Callable[..., list[tuple[dict[str, Rendered], tuple[str, ...]]]]


def _trainer_preview() -> _Render:
    for package in _TRAINER_NEEDS:
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, "local", "anytune data preview with a base model")
    module, _, name = TRAINER_PREVIEW.partition(":")
    try:
        loaded: _Render = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise
        raise MissingDependencyError(exc.name or "?", "local", "anytune data preview with a base model") from exc
    return loaded


def preview(
    source: str | os.PathLike[str],
    *,
    n: int = 3,
    base_model: str | None = None,
    chat_template: str | None = None,
    max_length: int | None = None,
    **reading: Any,
) -> list[PreviewExample]:
    """The first ``n`` examples of ``source`` as the model will see them.

    Args:
        source: what :func:`~anytune._data.pipeline.to_canonical` reads; only the rows up to the
            ``n``-th example are read.
        n: examples to show.
        base_model: a local model folder or a Hub model id (checked as a job's base model is:
            :func:`anytune._base_model.check_base_model`); its tokenizer and chat template render
            the examples, and the trainer's labelling marks them.
        chat_template: a Jinja chat template, or a file holding one, instead of the tokenizer's
            (the local trainer's ``local.chat_template``).
        max_length: the trainer's ``max_length``: where it cuts (needs ``base_model``; None: the
            trainer's default for that model, as a job without ``hyperparameters.max_length``).
        **reading: :func:`~anytune._data.pipeline.to_canonical`'s options (``format``, ``columns``,
            templates, ``system``, ``split``).

    Raises:
        ConfigError: bad options (``n`` below 1, ``max_length`` without a base model), a base
            model that does not exist or has no usable tokenizer or chat template.
        DataValidationError: a row among the first ``n`` cannot be converted, the source has no
            rows, or the chat template fails on an example.
        MissingDependencyError: a base model without ``anytune[local]``; Parquet or ``datasets``
            without ``anytune[data]``.
        OSError: the source cannot be read.
    """
    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}", field="n")
    if max_length is not None and max_length < 1:
        raise ConfigError(f"--max-length must be at least 1, got {max_length}", field="max_length")
    if base_model is None and (max_length is not None or chat_template is not None):
        option = "--max-length" if max_length is not None else "--chat-template"
        raise ConfigError(f"{option} needs --base-model: tokens come from the model's tokenizer", field="base_model")
    render = None
    if base_model is not None:  # before the source is read: a wrong option fails first
        render = _trainer_preview()
        from anytune._base_model import check_base_model

        check_base_model(base_model, provider="local")
    from anytune._data.pipeline import to_canonical

    rows = to_canonical(source, **reading)
    try:
        examples = [(str(loc), example) for loc, example in itertools.islice(rows, n)]
    finally:
        if isinstance(rows, Generator):
            rows.close()  # the rest of the source is never read (its files closed now)
    if render is None or base_model is None:
        return [_as_messages(where, example) for where, example in examples]
    shown = render(examples, base_model=base_model, chat_template=chat_template, max_length=max_length)
    out = []
    for (where, example), (sequences, notes) in zip(examples, shown, strict=True):
        method: Literal["sft", "dpo"] = "sft" if "messages" in example else "dpo"
        out.append(PreviewExample(where, method, sequences, notes))
    return out
