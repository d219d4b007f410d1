"""The trainer's side of ``anytune data preview``: a few examples labelled exactly as training labels them.

Each example goes through the functions :func:`~anytune.local_backend.data.load_dataset` uses,
in the same order: the tokenizer of :func:`~anytune.local_backend.model.load_tokenizer` (with
``local.chat_template`` resolved by :func:`~anytune.local_backend.data.resolve_chat_template`),
the example's sequences and learned messages (``_items``), rendering, tokenization and labels
(``_encode_many``), and the cut at ``max_length`` (``_admit``, ``truncation="truncate"``). The
preview adds only the character offsets of the tokens, to show the text each token covers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from anytune._data.formats import example_format
from anytune._data.preview import Rendered, Segment
from anytune.errors import DataValidationError
from anytune.local_backend import data as D
from anytune.local_backend.hparams import default_max_length
from anytune.local_backend.model import load_tokenizer

__all__ = ["render_examples"]

#: Sequence names of one example, by the trainer's format (the trainer's order of ``_items``).
_NAMES = {"chat": ("text",), "prompt_completion": ("text",), "preference": ("chosen", "rejected")}


def _token_segments(
    text: str, offsets: Sequence[tuple[int, int]], learn: np.ndarray[Any, Any], keep: int
) -> list[Segment]:
    """``text`` cut at token starts into runs of tokens alike (learned or not, cut or not).

    Token ``j`` covers ``text`` from its start to the next token's: the text between tokens (what
    a tokenizer's offsets leave out) goes with the token before it, the text before the first with
    the first, so the segments put together are ``text`` exactly.
    """
    bounds: list[int] = []
    last = 0
    for j, (start, end) in enumerate(offsets):
        last = 0 if j == 0 else (max(last, start) if end > start else last)
        bounds.append(last)
    bounds.append(len(text))
    segments: list[Segment] = []
    for j in range(len(offsets)):
        piece = text[bounds[j] : bounds[j + 1]]
        learned, cut = bool(learn[j]) and j < keep, j >= keep
        if segments and (segments[-1].learned, segments[-1].cut) == (learned, cut):
            segments[-1] = Segment(segments[-1].text + piece, learned, cut=cut)
        elif piece:
            segments.append(Segment(piece, learned, cut=cut))
    if not offsets and text:
        segments.append(Segment(text, False))
    return segments


def render_examples(
    examples: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    base_model: str,
    chat_template: str | None = None,
    max_length: int | None = None,
) -> list[tuple[dict[str, Rendered], tuple[str, ...]]]:
    """Render, tokenize and label canonical examples as the local trainer does.

    Args:
        examples: ``(where, example)``: an OpenAI chat, prompt/completion or DPO example, and how
            errors name it.
        base_model: a local model folder or a Hub id (its tokenizer is loaded).
        chat_template: ``local.chat_template``: a Jinja template or a file holding one.
        max_length: the trainer's ``max_length`` (None: the trainer's default for ``base_model``,
            :func:`anytune.local_backend.hparams.default_max_length`).

    Returns:
        Per example, its sequences by name (``text``; or ``chosen`` and ``rejected``) and notes on
        what the trainer does with it (a cut, nothing left to learn).

    Raises:
        ConfigError: the tokenizer cannot be loaded, is not fast, or has no chat template.
        DataValidationError: an example the trainer refuses, or the template fails on it.
    """
    template = D.resolve_chat_template(chat_template)
    tokenizer = load_tokenizer(base_model, template)
    render = D._Renderer(tokenizer, template)
    limit = max_length if max_length is not None else default_max_length(base_model)[0]
    out: list[tuple[dict[str, Rendered], tuple[str, ...]]] = []
    for where, example in examples:
        fmt = example_format(example)
        if fmt not in _NAMES:
            raise DataValidationError(f"{where}: unrecognised example; expected chat, prompt/completion or DPO")
        items = D._items(example, fmt, where)
        encoded = D._encode_many(tokenizer, render, items)
        # What the trainer keeps of it: the cut at max_length, or nothing at all.
        kept = D.TokenizedData(path=where, method="dpo" if fmt == "preference" else "sft", examples=[])
        D._admit(kept, D.Example(tuple(encoded), 0), limit, "truncate")
        texts = [D._spans(render, messages, flags, tools, w)[0] for messages, flags, tools, w in items]
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        sequences: dict[str, Rendered] = {}
        for name, text, ids, offsets, seq in zip(
            _NAMES[fmt], texts, enc["input_ids"], enc["offset_mapping"], encoded, strict=True
        ):
            if list(ids) != seq.input_ids.tolist():  # pragma: no cover - the same call on the same text
                raise AssertionError(f"{where}: the preview's tokens differ from the trainer's")
            keep = min(len(seq), limit)
            sequences[name] = Rendered(
                tuple(_token_segments(text, offsets, seq.learn, keep)),
                tokens=len(seq),
                learned_tokens=int(seq.learn[:keep].sum()),
                cut_at=keep if keep < len(seq) else None,
            )
        notes = []
        if kept.truncated:
            longest = max(len(s) for s in encoded)
            notes.append(f"cut at max_length={limit}: {longest - limit} of {longest} tokens not seen")
        if kept.empty:
            notes.append(
                "nothing left to learn" + (" after the cut" if kept.truncated else "") + ": the trainer leaves it out"
            )
        out.append((sequences, tuple(notes)))
    return out
