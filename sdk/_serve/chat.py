"""Chat completions of ``anytune serve``: fine-tuned models loaded on demand, least recently used
evicted, answers whole or streamed token by token.

A model is a result with weights (a local run, a Hugging Face Jobs adapter): its base model with
the adapter, loaded through :meth:`FineTunedModel.load` (transformers + peft, on the device the
machine has). A loaded model answers one request at a time (its lock): generation already uses
every core, and peft's adapter switch is not thread-safe.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChatRequest", "ModelCache", "OnnxAdapter", "completion", "stream_chunks", "vllm_answerer"]


@dataclass(frozen=True)
class ChatRequest:
    """What a chat completion asks (checked by the route): messages and generation settings.
    ``adapter`` False answers with the base model alone (the fine-tuned model's adapter switched off)."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float
    seed: int | None
    stream: bool = False
    adapter: bool = True


@dataclass
class _Entry:
    loaded: Any  # FineTunedModel.load()'s model (generate() and its tokenizer), or an OnnxAdapter
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class OnnxAdapter:
    """One job's adapter in an ONNX Runtime GenAI export (``FineTunedModel.load(format="onnx")``):
    every job whose adapter the export holds answers from the one base model loaded once; ``lock``
    is the export's (its adapters are loaded into it on first use)."""

    export: Any
    name: str
    lock: threading.Lock

    @property
    def tokenizer(self) -> Any:
        return self.export.tokenizer

    def generate(self, prompt: Any, *, adapter: bool = True, **options: Any) -> str:
        text: str = self.export.generate(prompt, adapter=self.name if adapter else False, **options)
        return text

    def stream(self, prompt: Any, *, adapter: bool = True, **options: Any) -> Iterator[str]:
        pieces: Iterator[str] = self.export.stream(prompt, adapter=self.name if adapter else False, **options)
        return pieces


class ModelCache:
    """At most ``size`` loaded models; the least recently used is dropped for a new one."""

    def __init__(self, size: int = 2) -> None:
        self.size = max(1, size)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def holds(self, key: str) -> bool:
        """Whether ``key`` is loaded now (without touching its place in the order)."""
        with self._lock:
            return key in self._entries

    def get(self, key: str, load: Callable[[], Any]) -> _Entry:
        """The entry of ``key``, loaded by ``load()`` on first use (once, however many ask at once)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    return entry
            loaded = load()  # weights into memory now, outside the cache lock
            entry = _Entry(loaded, getattr(loaded, "lock", None) or threading.Lock())
            with self._lock:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
                self._loading.pop(key, None)
            return entry


#: torch's seed is the process's: seeded sampling runs one at a time across models.
_SEEDED = threading.Lock()


def _options(request: ChatRequest) -> dict[str, Any]:
    options: dict[str, Any] = {"max_new_tokens": request.max_tokens, "temperature": request.temperature}
    if not request.adapter:
        options["adapter"] = False
    return options


@contextlib.contextmanager
def _seeded(request: ChatRequest) -> Iterator[None]:
    """Sampling reproducible for ``request.seed`` (nothing to do when greedy)."""
    if request.temperature <= 0 or request.seed is None:
        yield
        return
    import torch

    with _SEEDED:
        torch.manual_seed(request.seed)
        yield


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prompt_tokens(loaded: Any, messages: Sequence[Mapping[str, Any]]) -> int:
    from anytune.local_backend.inference import prompt_text

    return _count(loaded.tokenizer, prompt_text(loaded.tokenizer, messages))


def completion(entry: _Entry, request: ChatRequest) -> dict[str, Any]:
    """A whole ``chat.completion``."""
    with entry.lock:
        loaded = entry.loaded
        with _seeded(request):
            seed = {"seed": request.seed} if hasattr(loaded, "stream") else {}
            text = loaded.generate(request.messages, **seed, **_options(request))
        counted = getattr(loaded, "last", None)  # the engine's own count (vLLM), else counted here
        prompt = counted[0] if counted else _prompt_tokens(loaded, request.messages)
        used = counted[1] if counted else _count(loaded.tokenizer, text)
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if used >= request.max_tokens else "stop",
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": used, "total_tokens": prompt + used},
    }


def stream_chunks(entry: _Entry, request: ChatRequest) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk`` objects as the tokens come (transformers' TextIteratorStreamer,
    generation in a thread): the role first, then the text, then the finish reason."""
    from transformers import TextIteratorStreamer

    base = {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion.chunk", "created": int(time.time())}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "model": request.model, "choices": [choice]}

    with entry.lock:
        loaded = entry.loaded
        if hasattr(loaded, "stream"):  # ONNX Runtime GenAI (token by token) or vLLM (whole): their own streams
            yield chunk({"role": "assistant", "content": ""})
            said: list[str] = []
            for piece in _as_answer_text(loaded.stream(request.messages, seed=request.seed, **_options(request))):
                said.append(piece)
                yield chunk({"content": piece})
            used = _count(loaded.tokenizer, "".join(said))
            yield chunk({}, "length" if used >= request.max_tokens else "stop")
            return
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with _seeded(request):
                    loaded.generate(request.messages, streamer=streamer, **_options(request))
            except BaseException as exc:  # re-raised in the consumer's thread below
                failure.append(exc)
                streamer.end()  # type: ignore[no-untyped-call]

        worker = threading.Thread(target=run, name="anytune-serve-generate", daemon=True)
        worker.start()
        yield chunk({"role": "assistant", "content": ""})
        pieces: list[str] = []
        for piece in _as_answer_text(streamer):
            pieces.append(piece)
            yield chunk({"content": piece})
        worker.join()
        if failure:
            raise failure[0]
        used = _count(loaded.tokenizer, "".join(pieces))
    yield chunk({}, "length" if used >= request.max_tokens else "stop")


def _as_answer_text(pieces: Iterator[str]) -> Iterator[str]:
    """The streamed pieces as the whole answer reads (``answer_text``: no leading or trailing
    whitespace, no trailing half character): leading whitespace is dropped, and trailing whitespace
    or U+FFFD is held back until more text follows it."""
    held = ""
    started = False
    for piece in pieces:
        text = held + piece
        if not started:
            text = text.lstrip()
            if not text:
                continue
            started = True
        body = text.rstrip()
        while body.endswith("\ufffd"):
            body = body[:-1].rstrip()
        held = text[len(body) :]
        if body:
            yield body


def vllm_answerer(engine: Any, model: Any) -> Any:
    """``model`` (a result with weights) on the vLLM engine: its adapter folder (a Hub adapter is
    fetched at its revision first) over the base model the adapter records."""
    from anytune.local_backend.inference import adapter_base, hub_adapter_folder

    folder = model.adapter_path or str(hub_adapter_folder(model.hub_repo, model.revision))
    return engine.answerer(adapter_base(folder) or model.base_model, folder)
