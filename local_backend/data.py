"""From JSONL files to training tensors: chat template, exact assistant-only labels, packing.

Three input formats are read, each line a JSON object:

* chat (canonical): ``{"messages": [...], "tools": [...]?}``; assistant messages may carry ``weight``
  (``0`` = context only, not learned);
* prompt/completion: ``{"prompt": str, "completion": str}``, read as a user and an assistant message;
* preference (DPO): ``{"input": {"messages": [...], "tools"?}, "preferred_output": [...],
  "non_preferred_output": [...]}``.

**Labels are exact.** Each conversation is rendered once with the chat template; the character span
of every learned assistant message is found by rendering prefixes of the conversation
(``messages[:i]`` with the generation prompt, where the assistant's text starts, and ``messages[:i+1]``,
where its turn ends) and the tokens whose first character falls in a span are the targets. The
end-of-turn token is inside the span, so the model learns to stop, whatever the pad token is: labels
are never derived from ``input_ids != pad_id`` (with ``pad == eos`` that rule would unlearn EOS).
Whitespace the template puts after the end-of-turn token is not learned.

**No compute on padding.** A step's examples are laid out by :func:`collate` in one of three ways:
``varlen`` concatenates them into one row (position ids restart at each sequence; the attention
function of :mod:`.model` attends within each sequence only), ``packed`` puts them into rows of at
most ``max_length`` tokens by best-fit-decreasing (transformers builds block-diagonal masks from the
restarting position ids), ``padded`` is one right-padded row per sequence. In every layout the loss
positions are gathered up front (:attr:`MicroBatch.pred_index`), so the language-model head runs
only where a label exists.

**Deterministic order.** The examples of optimizer step ``s`` depend only on the seed and ``s``
(:func:`step_examples`), so a resumed run consumes exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from anytune._data.formats import example_format, prompt_completion_messages
from anytune.errors import ConfigError, DataValidationError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Encoded",
    "Example",
    "Layout",
    "MicroBatch",
    "TokenizedData",
    "collate",
    "encode_conversation",
    "epoch_order",
    "hold_out",
    "load_dataset",
    "pack_best_fit",
    "split_micro_batches",
    "step_examples",
]

Method = Literal["sft", "dpo"]
Layout = Literal["varlen", "packed", "padded"]
Truncation = Literal["truncate", "drop"]


@dataclass(frozen=True)
class Encoded:
    """One tokenized sequence. ``learn[j]`` is True when token ``j`` is a target (predicted at ``j-1``)."""

    input_ids: np.ndarray[Any, np.dtype[np.int32]]
    learn: np.ndarray[Any, np.dtype[np.bool_]]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_targets(self) -> int:
        return int(self.learn.sum())


@dataclass(frozen=True)
class Example:
    """A training unit: one sequence (SFT) or a (chosen, rejected) pair (DPO); ``line`` is 1-based."""

    seqs: tuple[Encoded, ...]
    line: int

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.seqs)


@dataclass
class TokenizedData:
    """A tokenized file and what happened to over-long or unlearnable examples."""

    path: str
    method: Method
    examples: list[Example]
    truncated: int = 0
    dropped: int = 0
    empty: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_tokens(self) -> int:
        return sum(e.num_tokens for e in self.examples)

    def fingerprint(self) -> str:
        """Hash of every token and label: a resumed run checks it still trains on the same data."""
        h = hashlib.sha256(self.method.encode())
        for ex in self.examples:
            for s in ex.seqs:
                h.update(s.input_ids.tobytes())
                h.update(np.packbits(s.learn).tobytes())
        return h.hexdigest()[:16]


# -- reading ----------------------------------------------------------------------------------------


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import orjson

        loads: Any = orjson.loads
    except ImportError:  # pragma: no cover - orjson is a core dependency
        loads = json.loads
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise DataValidationError(f"{path}: no such file") from None
    with f:
        for ln, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = loads(raw)
            except ValueError as exc:
                raise DataValidationError(f"{path}:{ln}: not valid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise DataValidationError(f"{path}:{ln}: each line must be a JSON object")
            yield ln, obj


_WRONG_FORMAT = {
    ("sft", "preference"): "holds preference pairs (input/preferred_output/non_preferred_output), which are "
    "DPO data: set method='dpo', or give chat data for method 'sft'",
    ("dpo", "chat"): "holds chat examples ('messages'), but method 'dpo' needs preference pairs "
    "(input/preferred_output/non_preferred_output)",
    ("dpo", "prompt_completion"): "holds prompt/completion examples, but method 'dpo' needs preference pairs "
    "(input/preferred_output/non_preferred_output)",
}


def _clean_message(msg: Any, where: str) -> dict[str, Any]:
    """A message as chat templates expect it: no ``weight``, tool-call arguments as objects."""
    if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
        raise DataValidationError(f"{where}: each message must be an object with a 'role'")
    out = {k: v for k, v in msg.items() if k != "weight"}
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        fixed = []
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                # OpenAI sends arguments as a JSON string; Hugging Face templates expect an object.
                with contextlib.suppress(ValueError):
                    parsed = json.loads(fn["arguments"])
                    if isinstance(parsed, dict):
                        call = {**call, "function": {**fn, "arguments": parsed}}
            fixed.append(call)
        out["tool_calls"] = fixed
    return out


def _learned(msg: Mapping[str, Any]) -> bool:
    return msg.get("role") == "assistant" and msg.get("weight", 1) != 0


# -- encoding ---------------------------------------------------------------------------------------


class _Renderer:
    """Renders conversations with a tokenizer's chat template (or an explicit one)."""

    def __init__(self, tokenizer: Any, chat_template: str | None) -> None:
        self.tokenizer = tokenizer
        self.template = chat_template

    def __call__(self, messages: Sequence[Mapping[str, Any]], tools: Any, *, generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(
            list(messages),
            tools=tools or None,
            chat_template=self.template,
            add_generation_prompt=generation_prompt,
            tokenize=False,
        )
        return str(text)


def _spans(
    render: _Renderer, messages: Sequence[Mapping[str, Any]], learn_flags: Sequence[bool], tools: Any, where: str
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each learned assistant turn."""
    full = render(messages, tools, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, flag in enumerate(learn_flags):
        if not flag:
            continue
        before = render(messages[:i], tools, generation_prompt=True)
        through = render(messages[: i + 1], tools, generation_prompt=False)
        if not (through.startswith(before) and full.startswith(through)):
            raise DataValidationError(
                f"{where}: the chat template does not render message {i} as an extension of the messages "
                "before it, so the assistant's tokens cannot be located exactly; give a prefix-stable template "
                "in local.chat_template"
            )
        end = len(through.rstrip())
        if end > len(before):
            spans.append((len(before), end))
    return full, spans


def encode_conversation(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Any = None,
    learn: Sequence[bool] | None = None,
    chat_template: str | None = None,
    where: str = "example",
) -> Encoded:
    """Tokenize one conversation and mark exactly the tokens of its learned assistant turns.

    Args:
        tokenizer: a fast tokenizer (offsets are needed).
        messages: the conversation (``weight`` keys allowed).
        tools: tool definitions passed to the template.
        learn: which messages are learned; default: assistant messages whose ``weight`` is not 0.
        chat_template: overrides the tokenizer's template.
        where: names the example in error messages.

    Raises:
        DataValidationError: the template fails on the example or is not prefix-stable.
    """
    flags = list(learn) if learn is not None else [_learned(m) for m in messages]
    clean = [_clean_message(m, where) for m in messages]
    render = _Renderer(tokenizer, chat_template)
    return _encode_many(tokenizer, render, [(clean, flags, tools, where)])[0]


def _encode_many(
    tokenizer: Any, render: _Renderer, items: Sequence[tuple[list[dict[str, Any]], list[bool], Any, str]]
) -> list[Encoded]:
    texts: list[str] = []
    spans: list[list[tuple[int, int]]] = []
    for messages, flags, tools, where in items:
        try:
            text, sp = _spans(render, messages, flags, tools, where)
        except DataValidationError:
            raise
        except Exception as exc:  # jinja2's TemplateError, raise_exception() in templates, ...
            raise DataValidationError(f"{where}: the chat template failed on this example: {exc}") from exc
        texts.append(text)
        spans.append(sp)
    # One batched call: the Rust tokenizer parallelises over texts.
    # verbose=False: texts longer than the model's limit are expected here; truncation comes later.
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    out: list[Encoded] = []
    for (_, _, _, where), ids, offsets, sp in zip(items, enc["input_ids"], enc["offset_mapping"], spans, strict=True):
        arr = np.asarray(ids, dtype=np.int32)
        learn = np.zeros(arr.shape[0], dtype=np.bool_)
        if sp and arr.shape[0]:
            starts = np.asarray([o[0] for o in offsets], dtype=np.int64)
            ends = np.asarray([o[1] for o in offsets], dtype=np.int64)
            nonempty = ends > starts
            for a, b in sp:
                hit = nonempty & (starts >= a) & (starts < b)
                if not hit.any():
                    raise DataValidationError(
                        f"{where}: no token maps to an assistant message's text (the tokenizer gives no "
                        "character offsets for it); this tokenizer cannot be used for assistant-only loss"
                    )
                learn |= hit
            learn[0] = False  # the first token has no context to be predicted from
        out.append(Encoded(arr, learn))
    return out


def _fit(seq: Encoded, max_length: int) -> Encoded:
    return Encoded(seq.input_ids[:max_length].copy(), seq.learn[:max_length].copy())


def load_dataset(
    path: str | Path,
    tokenizer: Any,
    *,
    method: Method,
    max_length: int,
    truncation: Truncation = "truncate",
    chat_template: str | None = None,
    chunk: int = 512,
) -> TokenizedData:
    """Read, render, tokenize and label a JSONL file.

    Sequences longer than ``max_length`` are cut to it (``truncate``, counted in ``truncated``) or
    left out (``drop``, counted in ``dropped``); an example left with nothing to learn (every
    assistant message has ``weight: 0``, or truncation cut all of them) is left out and counted in
    ``empty``. DPO pairs are truncated or dropped as a unit.

    Raises:
        DataValidationError: bad JSON, a line of the wrong format for ``method`` (naming the right
            one), a template failure, or no example left to train on.
    """
    p = Path(path)
    render = _Renderer(tokenizer, chat_template)
    data = TokenizedData(path=str(p), method=method, examples=[])
    pending: list[tuple[int, list[tuple[list[dict[str, Any]], list[bool], Any, str]]]] = []

    def flush() -> None:
        flat = [item for _, group in pending for item in group]
        if not flat:
            return
        encoded = iter(_encode_many(tokenizer, render, flat))
        for ln, group in pending:
            seqs = tuple(next(encoded) for _ in group)
            _admit(data, Example(seqs, ln), max_length, truncation)
        pending.clear()

    for ln, obj in _iter_jsonl(p):
        where = f"{p}:{ln}"
        fmt = example_format(obj)
        problem = _WRONG_FORMAT.get((method, fmt))
        if problem:
            raise DataValidationError(f"{where}: {p.name} {problem}")
        if fmt == "unknown":
            expected = (
                "'messages' (chat) or 'prompt'/'completion'"
                if method == "sft"
                else ("'input', 'preferred_output' and 'non_preferred_output'")
            )
            raise DataValidationError(f"{where}: unrecognised example; expected {expected}")
        pending.append((ln, _items(obj, fmt, where)))
        if len(pending) >= chunk:
            flush()
    flush()
    if data.truncated:
        data.notes.append(f"{p.name}: {data.truncated} example(s) longer than max_length={max_length} truncated")
    if data.dropped:
        data.notes.append(f"{p.name}: {data.dropped} example(s) longer than max_length={max_length} dropped")
    if data.empty:
        data.notes.append(f"{p.name}: {data.empty} example(s) with nothing to learn left out")
    if not data.examples:
        raise DataValidationError(f"{p}: no example left to train on ({'; '.join(data.notes) or 'empty file'})")
    return data


def _items(obj: Mapping[str, Any], fmt: str, where: str) -> list[tuple[list[dict[str, Any]], list[bool], Any, str]]:
    if fmt == "prompt_completion":
        prompt, completion = obj.get("prompt"), obj.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataValidationError(f"{where}: prompt and completion must be strings")
        return [(prompt_completion_messages(prompt, completion), [False, True], None, where)]
    if fmt == "chat":
        raw = obj.get("messages")
        if not isinstance(raw, list) or not raw:
            raise DataValidationError(f"{where}: 'messages' must be a non-empty list")
        msgs = [_clean_message(m, f"{where}: messages[{i}]") for i, m in enumerate(raw)]
        return [(msgs, [_learned(m) for m in raw], obj.get("tools"), where)]
    # preference
    inp = obj.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("messages"), list):
        raise DataValidationError(f"{where}: 'input' must be an object with 'messages'")
    prompt = [_clean_message(m, f"{where}: input.messages[{i}]") for i, m in enumerate(inp["messages"])]
    pair = []
    for key in ("preferred_output", "non_preferred_output"):
        out = obj.get(key)
        if not isinstance(out, list) or not out:
            raise DataValidationError(f"{where}: '{key}' must be a non-empty list of assistant messages")
        completion = [_clean_message(m, f"{where}: {key}[{i}]") for i, m in enumerate(out)]
        flags = [False] * len(prompt) + [m.get("role") == "assistant" for m in completion]
        pair.append((prompt + completion, flags, inp.get("tools"), where))
    return pair


def _admit(data: TokenizedData, ex: Example, max_length: int, truncation: Truncation) -> None:
    if any(len(s) > max_length for s in ex.seqs):
        if truncation == "drop":
            data.dropped += 1
            return
        data.truncated += 1
        ex = Example(tuple(_fit(s, max_length) for s in ex.seqs), ex.line)
    if any(s.num_targets == 0 for s in ex.seqs):
        data.empty += 1
        return
    data.examples.append(ex)


def hold_out(data: TokenizedData, share: float, seed: int) -> tuple[TokenizedData, TokenizedData]:
    """Split ``data`` into (training, validation), ``share`` of its examples held out (seeded).

    The draw depends only on the number of examples, ``share`` and ``seed`` (see
    :func:`~anytune.local_backend.hparams.split_validation`), so a resumed run trains on the same side.

    Raises:
        DataValidationError: fewer than two examples to split.
    """
    from anytune.local_backend.hparams import split_validation

    try:
        train, valid = split_validation(len(data), share, seed)
    except ValueError as exc:
        raise DataValidationError(f"{data.path}: hyperparameters.validation_split: {exc}") from None
    kept = TokenizedData(
        path=data.path,
        method=data.method,
        examples=[data.examples[i] for i in train],
        truncated=data.truncated,
        dropped=data.dropped,
        empty=data.empty,
        notes=data.notes,
    )
    held = TokenizedData(
        path=f"{data.path} (validation split)", method=data.method, examples=[data.examples[i] for i in valid]
    )
    return kept, held


# -- order ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"anytune:{seed}:{epoch}").shuffle(order)
    return tuple(order)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the ``n`` examples in ``epoch``: a pure function of (seed, epoch).

    Python's ``random`` seeded with a string is stable across Python versions and platforms, so a run
    resumed elsewhere or later sees the same order.
    """
    return list(_epoch_order(n, seed, epoch))


def step_examples(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the examples optimizer step ``step`` (0-based) trains on.

    An epoch has ``ceil(n / batch_size)`` steps; its last batch may be smaller.
    """
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_epoch)
    return list(_epoch_order(n, seed, epoch)[k * batch_size : (k + 1) * batch_size])


# -- layout -----------------------------------------------------------------------------------------


@dataclass
class MicroBatch:
    """One forward pass worth of tensors.

    ``pred_index`` are flat positions (into ``input_ids.view(-1)``) whose hidden state predicts
    ``targets``; ``target_seq`` gives, per target, the index of its sequence (DPO sums per
    sequence). ``num_tokens`` counts real (non-padding) input tokens.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    cu_seqlens: tuple[int, ...] | None
    pred_index: torch.Tensor
    targets: torch.Tensor
    target_seq: torch.Tensor
    num_seqs: int
    num_tokens: int

    @property
    def num_targets(self) -> int:
        return int(self.targets.shape[0])

    def to(self, device: torch.device) -> MicroBatch:
        nb = device.type == "cuda"
        return MicroBatch(
            input_ids=self.input_ids.to(device, non_blocking=nb),
            position_ids=self.position_ids.to(device, non_blocking=nb),
            attention_mask=None if self.attention_mask is None else self.attention_mask.to(device, non_blocking=nb),
            cu_seqlens=self.cu_seqlens,
            pred_index=self.pred_index.to(device, non_blocking=nb),
            targets=self.targets.to(device, non_blocking=nb),
            target_seq=self.target_seq.to(device, non_blocking=nb),
            num_seqs=self.num_seqs,
            num_tokens=self.num_tokens,
        )


def pack_best_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing: indices of ``lengths`` grouped into rows of ``capacity``.

    Each item goes into the open row with the least room that still fits it (a new row if none),
    longest items first; that leaves little room unused, hence little padding.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rooms: list[tuple[int, int]] = []  # (room left, row id), sorted
    rows: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item of length {n} exceeds the row capacity {capacity}")
        pos = bisect.bisect_left(rooms, (n, -1))
        if pos < len(rooms):
            room, row = rooms.pop(pos)
            rows[row].append(i)
            bisect.insort(rooms, (room - n, row))
        else:
            rows.append([i])
            bisect.insort(rooms, (capacity - n, len(rows) - 1))
    return rows


def split_micro_batches(examples: Sequence[Example], max_tokens: int) -> list[list[Example]]:
    """Split a step's examples into forward passes of at most ``max_tokens`` tokens each.

    Gradient accumulation only happens when a step does not fit: a single chunk otherwise. An
    example (a DPO pair included) is never split.
    """
    chunks: list[list[Example]] = []
    current: list[Example] = []
    used = 0
    for ex in sorted(examples, key=lambda e: -e.num_tokens):
        n = ex.num_tokens
        if current and used + n > max_tokens:
            chunks.append(current)
            current, used = [], 0
        current.append(ex)
        used += n
    if current:
        chunks.append(current)
    return chunks


def collate(seqs: Sequence[Encoded], layout: Layout, *, pad_id: int, row_capacity: int) -> MicroBatch:
    """Lay out sequences for one forward pass (see the module docstring for the three layouts).

    Args:
        seqs: the sequences, in the order ``target_seq`` numbers them.
        layout: ``varlen`` (one row), ``packed`` (rows of ``row_capacity``) or ``padded``.
        pad_id: filler for padding positions (never a target, never attended by real tokens).
        row_capacity: longest row in the ``packed`` layout (the run's ``max_length``).
    """
    import torch

    lengths = [len(s) for s in seqs]
    if layout == "varlen":
        rows = [list(range(len(seqs)))]
    elif layout == "packed":
        rows = pack_best_fit(lengths, max(row_capacity, max(lengths)))
    else:
        rows = [[i] for i in sorted(range(len(seqs)), key=lambda i: -lengths[i])]
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    pos = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64) if layout == "padded" else None
    pred: list[np.ndarray[Any, Any]] = []
    tgt: list[np.ndarray[Any, Any]] = []
    owner: list[np.ndarray[Any, Any]] = []
    cu = [0]
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            s, n = seqs[i], lengths[i]
            ids[r, offset : offset + n] = s.input_ids
            pos[r, offset : offset + n] = np.arange(n)
            if mask is not None:
                mask[r, offset : offset + n] = 1
            j = np.flatnonzero(s.learn)
            pred.append(r * width + offset + j - 1)
            tgt.append(s.input_ids[j].astype(np.int64))
            owner.append(np.full(j.shape[0], i, dtype=np.int64))
            offset += n
            cu.append(cu[-1] + n)
        if offset < width:
            # Padding gets its own restarting positions, so in the packed layout it forms a separate
            # block that no real token attends to.
            pos[r, offset:] = np.arange(width - offset)
    return MicroBatch(
        input_ids=torch.from_numpy(ids),
        position_ids=torch.from_numpy(pos),
        attention_mask=None if mask is None else torch.from_numpy(mask),
        cu_seqlens=tuple(cu) if layout == "varlen" else None,
        pred_index=torch.from_numpy(np.concatenate(pred)),
        targets=torch.from_numpy(np.concatenate(tgt)),
        target_seq=torch.from_numpy(np.concatenate(owner)),
        num_seqs=len(seqs),
        num_tokens=sum(lengths),
    )


def check_format(path: str | Path, method: Method) -> None:
    """Fail fast, before the model loads, when a file's first example is of the wrong format."""
    p = Path(path)
    for ln, obj in _iter_jsonl(p):
        problem = _WRONG_FORMAT.get((method, example_format(obj)))
        if problem:
            raise DataValidationError(f"{p}:{ln}: {p.name} {problem}")
        return
    raise DataValidationError(f"{p}: the file holds no example")


def resolve_chat_template(value: str | None) -> str | None:
    """``local.chat_template`` may be a Jinja template or the path of a file holding one."""
    if value is None:
        return None
    if "{" not in value:
        candidate = Path(value).expanduser()
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
        raise ConfigError(f"{value!r} is neither a Jinja chat template nor a file", field="local.chat_template")
    return value
