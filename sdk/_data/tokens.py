"""Token counters: which tokenizer counts a dataset for a given provider and model.

The choice is a table (:data:`_RESOLVERS`), tried in order; the first resolver that answers wins:

1. the provider is OpenAI-hosted (``openai``, ``azure-openai``) -> OpenAI's encoding for the model;
2. the model name looks like an OpenAI model (``gpt-4o-mini``, ``o3-mini``, ``ft:gpt-...``) -> same;
3. the model is a local folder, or a Hugging Face repo id already in the Hub cache (found through
   huggingface_hub's ``try_to_load_from_cache``), holding a tokenizer:

   * with a chat template and ``transformers`` installed -> each chat example is counted as the
     trainer sees it: ``AutoTokenizer.apply_chat_template`` on its messages (and tools);
   * otherwise -> the model's own ``tokenizer.json`` for the text, with OpenAI's per-message
     overhead for the template's tokens: ``exact=False``, and the output says "approximate";
4. otherwise ``o200k_base`` as a clearly named approximation (``exact=False``).

Nothing is ever downloaded. The heavy libraries (``bpe_openai``, ``tokenizers``, ``transformers``,
``huggingface_hub``) are imported inside functions only, so ``import anytune`` stays light.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["ChatCount", "TokenCounter", "counter_for", "encoding_for_openai_model", "fast_count"]


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a piece of text.

    Attributes:
        name: what counts, e.g. ``"o200k_base"`` or ``"o200k_base (approximation for llama-3)"``.
        exact: whether the count is the model's own (False for approximations).
    """

    name: str
    exact: bool

    def count(self, text: str) -> int:
        """Return the number of tokens of ``text`` (no special tokens added)."""
        ...


# --- OpenAI encodings ---------------------------------------------------------------------------

#: Model-name prefix -> OpenAI encoding. Longest prefix wins; ``ft:`` prefixes are stripped first.
OPENAI_ENCODING_BY_PREFIX: dict[str, str] = {
    "gpt-4o": "o200k_base",
    "gpt-4.1": "o200k_base",
    "gpt-4.5": "o200k_base",
    "gpt-5": "o200k_base",
    "chatgpt-4o": "o200k_base",
    "o1": "o200k_base",
    "o3": "o200k_base",
    "o4": "o200k_base",
    "gpt-oss": "o200k_base",
    "gpt-4": "cl100k_base",
    "gpt-3.5": "cl100k_base",
    "gpt-35": "cl100k_base",
    "davinci-002": "cl100k_base",
    "babbage-002": "cl100k_base",
}
DEFAULT_OPENAI_ENCODING = "o200k_base"

# gpt-*, chatgpt-*, o1/o3/o4(-mini), davinci-002/babbage-002, and fine-tuned ids "ft:<base>:org::id".
_OPENAI_MODEL_RE = re.compile(r"^(ft:)?(gpt-|chatgpt-|o\d+($|-)|davinci-002|babbage-002)", re.IGNORECASE)


def _base_model_name(model: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:org::abc`` -> ``gpt-4o-mini-2024-07-18``; other names unchanged."""
    if model.startswith("ft:"):
        return model[3:].split(":", 1)[0]
    return model


def encoding_for_openai_model(model: str | None) -> str:
    """Name of the OpenAI encoding used by ``model`` (``o200k_base`` when unknown)."""
    if not model:
        return DEFAULT_OPENAI_ENCODING
    base = _base_model_name(model).lower()
    best = ""
    for prefix in OPENAI_ENCODING_BY_PREFIX:
        if base.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return OPENAI_ENCODING_BY_PREFIX[best] if best else DEFAULT_OPENAI_ENCODING


@functools.lru_cache(maxsize=4)
def _encoding(name: str) -> Any:
    """bpe-openai's tiktoken-compatible ``Encoding`` (bundled data, no download).

    Imported at first use: ``import bpe_openai`` builds its model and encoding tables in Python
    (about 1.3 s and 75 MiB on an idle core), a cost only a dataset counted with an OpenAI encoding
    pays, once per process: validation forks its workers after loading, so they share it.
    """
    import bpe_openai

    return bpe_openai.get_encoding(name)


#: bpe-openai refuses one call over 1,000,000 characters or 200,000 tokens: longer text is counted in
#: pieces of at most this many characters (4 bytes each at worst, one token per byte at worst).
_PIECE_CHARS = 40_000


def _pieces(text: str) -> list[str]:
    """``text`` cut before a whitespace character where it can be, where a word-level pre-tokenizer
    cuts too (so the pieces' counts add up to the whole's)."""
    out: list[str] = []
    start = 0
    while len(text) - start > _PIECE_CHARS:
        stop = start + _PIECE_CHARS
        cut = max(text.rfind(" ", start + 1, stop), text.rfind("\n", start + 1, stop))
        if cut <= start:
            cut = stop
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


class BpeOpenAICounter:
    """OpenAI encodings through bpe-openai's ``Encoding`` (bundled data, no download)."""

    #: Worker processes may be forked after loading: the tables are read-only and shared.
    fork_safe = True

    def __init__(self, encoding: str, *, exact: bool = True, label: str | None = None) -> None:
        self.encoding = encoding
        self.exact = exact
        self.name = label or encoding
        # The public ``encode_ordinary``: the fastest public way to count (the token list is built
        # and dropped). encode_to_numpy and encode(disallowed_special=()) count alike but are about
        # 1.2-1.45x slower, the batch call over 2x slower on 2 cores; the private Rust counter that
        # skips the list (about 1.3x faster) is not part of bpe-openai's API, so anytune does not
        # bind to it. Looking the encoding up here also checks its name, with the public error.
        self._encode: Callable[[str], list[int]] = _encoding(encoding).encode_ordinary

    def count(self, text: str) -> int:
        """Count tokens of ``text`` as ordinary text (special-token strings are not special)."""
        if len(text) <= _PIECE_CHARS:
            return len(self._encode(text))
        return sum(len(self._encode(piece)) for piece in _pieces(text))

    def __repr__(self) -> str:
        return f"BpeOpenAICounter({self.name!r}, exact={self.exact})"


class HFTokenizerCounter:
    """A Hugging Face ``tokenizer.json`` through the ``tokenizers`` library, without a chat template:
    the text is the model's own count, the template's tokens are estimated (``exact=False``)."""

    # The tokenizers library runs its own thread pool, which does not survive fork().
    fork_safe = False

    def __init__(self, path: Path, label: str) -> None:
        from tokenizers import Tokenizer  # heavy, optional: imported only here

        self._tok = Tokenizer.from_file(str(path))
        self.name = label
        self.exact = False

    def count(self, text: str) -> int:
        """Count tokens of ``text`` without the special tokens a template would add."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def __repr__(self) -> str:
        return f"HFTokenizerCounter({self.name!r})"


class ChatCount:
    """A counting callable (``count(text)``) that also counts a whole chat example (``chat``).

    The dataset scanner calls ``chat(messages, tools)`` for each chat example where the callable
    has it, and uses its answer (None: the template could not render this example) as the
    example's count instead of its per-message estimate.
    """

    def __init__(
        self, count: Callable[[str], int], chat: Callable[[Sequence[Mapping[str, Any]], Any], int | None]
    ) -> None:
        self._count = count
        self.chat = chat

    def __call__(self, text: str) -> int:
        return self._count(text)


class ChatTemplateCounter:
    """A Hugging Face tokenizer with its chat template (``transformers.AutoTokenizer``).

    A chat example counts as ``apply_chat_template(messages, tools=tools, tokenize=True)``: the
    tokens the trainer feeds the model, template and special tokens included.
    """

    # The tokenizers library runs its own thread pool, which does not survive fork().
    fork_safe = False
    exact = True

    def __init__(self, tokenizer: Any, label: str) -> None:
        self._tok = tokenizer
        # The Rust tokenizer underneath, for the per-string counts of the checks (much faster).
        self._fast = getattr(tokenizer, "backend_tokenizer", None)
        self.name = label

    @classmethod
    def load(cls, folder: Path, label: str) -> ChatTemplateCounter | None:
        """The counter for the tokenizer saved in ``folder``; None without transformers or a template."""
        try:
            from transformers import AutoTokenizer  # heavy, optional: imported only here
        except ImportError:
            return None
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception:  # a broken folder fails anywhere in transformers: count without its template
            return None
        if not getattr(tokenizer, "chat_template", None) or not _template_compiles(tokenizer):
            return None
        return cls(tokenizer, label)

    def count(self, text: str) -> int:
        """Count tokens of ``text`` without the special tokens a template would add."""
        if self._fast is not None:
            return len(self._fast.encode(text, add_special_tokens=False).ids)
        return len(self._tok.encode(text, add_special_tokens=False))

    def count_chat(self, messages: Sequence[Mapping[str, Any]], tools: Any = None) -> int | None:
        """Tokens of one chat example through the chat template; None when the template refuses it
        (a role order it does not accept, content it cannot render): the estimate then stands."""
        try:
            ids = self._tok.apply_chat_template(
                list(messages),
                tools=tools if isinstance(tools, list) and tools else None,
                tokenize=True,
                return_dict=False,
            )
        except Exception:  # a template raises whatever its author chose (jinja2, TemplateError...)
            return None
        return len(ids) if isinstance(ids, list) else None

    def __repr__(self) -> str:
        return f"ChatTemplateCounter({self.name!r})"


def _template_compiles(tokenizer: Any) -> bool:
    """False when the chat template is not valid Jinja: it renders no example at all, so counting
    through it would call estimates exact. A template that refuses one conversation still counts."""
    try:
        from jinja2 import TemplateSyntaxError
    except ImportError:
        return True
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    except TemplateSyntaxError:
        return False
    except Exception:  # refused for this conversation (a role order...): examples are tried one by one
        return True
    return True


def fast_count(counter: TokenCounter) -> Callable[[str], int]:
    """The callable the scanner counts with: ``counter.count``, carrying ``chat`` (a whole example
    through the model's chat template) where the counter has a template."""
    chat = getattr(counter, "count_chat", None)
    return ChatCount(counter.count, chat) if callable(chat) else counter.count


# --- resolvers ----------------------------------------------------------------------------------

Resolver = Callable[[str | None, str | None], TokenCounter | None]

#: Providers whose models use OpenAI's encodings.
OPENAI_PROVIDERS = frozenset({"openai", "azure-openai"})


def _by_openai_provider(provider: str | None, model: str | None) -> TokenCounter | None:
    if provider not in OPENAI_PROVIDERS:
        return None
    return BpeOpenAICounter(encoding_for_openai_model(model))


def _by_openai_model_name(provider: str | None, model: str | None) -> TokenCounter | None:
    if not model or not _OPENAI_MODEL_RE.match(model):
        return None
    return BpeOpenAICounter(encoding_for_openai_model(model))


#: Files that make a folder a Hugging Face tokenizer.
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def _cached_snapshot(repo_id: str) -> Path | None:
    """The Hub cache's snapshot folder holding ``repo_id``'s tokenizer, read through huggingface_hub
    (which knows the cache's layout and ``HF_HUB_CACHE`` / ``HF_HOME``); nothing is downloaded."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # no Hub client, so no Hub cache to read
        return None
    for filename in _TOKENIZER_FILES:
        try:
            found = try_to_load_from_cache(repo_id, filename)
        except ValueError:  # not a repo id huggingface_hub accepts (HFValidationError)
            return None
        if isinstance(found, str):  # not None (unknown) nor the "known not to exist" marker
            return Path(found).parent
    return None


def _tokenizer_folder(model: str) -> Path | None:
    """``model`` as a local folder holding a tokenizer, or a repo id whose tokenizer is in the Hub cache."""
    direct = Path(model).expanduser()
    if any((direct / name).is_file() for name in _TOKENIZER_FILES):
        return direct
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return _cached_snapshot(model)
    return None


def _by_local_tokenizer(provider: str | None, model: str | None) -> TokenCounter | None:
    if not model:
        return None
    folder = _tokenizer_folder(model)
    if folder is None:
        return None
    counter = ChatTemplateCounter.load(folder, label=f"chat template of {model}")
    if counter is not None:
        return counter
    if not (folder / "tokenizer.json").is_file():
        return None
    try:
        return HFTokenizerCounter(
            folder / "tokenizer.json", label=f"tokenizer.json of {model}, without its chat template"
        )
    except ImportError:  # tokenizers not installed: fall through to the approximation
        return None
    except Exception:  # a tokenizer.json the tokenizers library cannot read: approximate instead
        return None


def _approximation(provider: str | None, model: str | None) -> TokenCounter:
    target = model or provider or "an unspecified model"
    return BpeOpenAICounter(DEFAULT_OPENAI_ENCODING, exact=False, label=f"o200k_base (approximation for {target})")


#: Tried in order; the first that returns a counter wins. The last always answers.
_RESOLVERS: tuple[Resolver, ...] = (
    _by_openai_provider,
    _by_openai_model_name,
    _by_local_tokenizer,
    _approximation,
)


@functools.lru_cache(maxsize=16)
def counter_for(provider: str | None, model: str | None) -> TokenCounter:
    """Return the token counter for ``model`` on ``provider`` (cached; loading takes about a second).

    Args:
        provider: provider name (``"openai"``, ``"azure-openai"``, ``"local"``, ...) or None.
        model: base model name, local model folder, Hugging Face repo id, or None.

    Returns:
        A :class:`TokenCounter`; ``exact`` is False when it is an approximation.
    """
    for resolve in _RESOLVERS:
        counter = resolve(provider, model)
        if counter is not None:
            return counter
    raise AssertionError("unreachable: the last resolver always answers")  # pragma: no cover
