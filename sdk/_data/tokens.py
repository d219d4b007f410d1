"""Token counters: which tokenizer counts a dataset for a given provider and model.

The choice is a table (:data:`_RESOLVERS`), tried in order; the first resolver that answers wins:

1. the provider is OpenAI-hosted (``openai``, ``azure-openai``) -> OpenAI's encoding for the model;
2. the model name looks like an OpenAI model (``gpt-4o-mini``, ``o3-mini``, ``ft:gpt-...``) -> same;
3. the model is a local directory (or a Hugging Face cache entry) holding ``tokenizer.json``
   -> the model's own tokenizer through the ``tokenizers`` library, when installed;
4. otherwise ``o200k_base`` as a clearly named approximation (``exact=False``).

Nothing is ever downloaded. The heavy libraries (``bpe_openai``, ``tokenizers``) are imported inside
functions only, so ``import anytune`` stays light.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

__all__ = ["TokenCounter", "counter_for", "encoding_for_openai_model", "fast_count"]


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


def _load_bpe_bindings() -> ModuleType:
    """Load bpe-openai's Rust extension module.

    Importing the ``bpe_openai`` package runs its ``__init__``, which builds Python dictionaries of
    every bundled encoding's merge table (about 70 MB of memory and a noticeable delay) that counting
    never uses. The Rust module alone holds everything ``count`` needs, so it is loaded directly from
    the package folder; any surprise falls back to the ordinary import.
    """
    name = "bpe_openai._bindings"
    if name in sys.modules:
        return sys.modules[name]
    try:
        spec = importlib.util.find_spec("bpe_openai")  # locates the package without importing it
        folders = list(spec.submodule_search_locations or []) if spec else []
        for folder in folders:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                candidate = os.path.join(folder, "_bindings" + suffix)
                if os.path.isfile(candidate):
                    loader = importlib.machinery.ExtensionFileLoader(name, candidate)
                    mspec = importlib.util.spec_from_file_location(name, candidate, loader=loader)
                    if mspec is None:
                        continue
                    module = importlib.util.module_from_spec(mspec)
                    # Registered under its real name: a PyO3 module initialises once per process,
                    # so a later `import bpe_openai` must find this one.
                    sys.modules[name] = module
                    loader.exec_module(module)
                    return module
    except (ImportError, OSError, ValueError):
        sys.modules.pop(name, None)
    return importlib.import_module(name)


@functools.lru_cache(maxsize=4)
def _bpe_tokenizer(encoding: str) -> Any:
    return _load_bpe_bindings().tokenizer_for_encoding(encoding)


class BpeOpenAICounter:
    """OpenAI encodings through bpe-openai's Rust tokenizer (bundled data, no download)."""

    #: Worker processes may be forked after loading: the Rust tables are read-only and shared.
    fork_safe = True

    def __init__(self, encoding: str, *, exact: bool = True, label: str | None = None) -> None:
        self.encoding = encoding
        self.exact = exact
        self.name = label or encoding
        self._tok = _bpe_tokenizer(encoding)

    def count(self, text: str) -> int:
        """Count tokens of ``text`` as ordinary text (special-token strings are not special)."""
        return int(self._tok.count(text))

    @property
    def raw_count(self) -> Callable[[str], int]:
        """The Rust ``count`` itself, without a Python frame in between (hot loops use this)."""
        fn: Callable[[str], int] = self._tok.count
        return fn

    def __repr__(self) -> str:
        return f"BpeOpenAICounter({self.name!r}, exact={self.exact})"


class HFTokenizerCounter:
    """A Hugging Face ``tokenizer.json`` through the ``tokenizers`` library."""

    # The tokenizers library runs its own thread pool, which does not survive fork().
    fork_safe = False

    def __init__(self, path: Path, label: str) -> None:
        from tokenizers import Tokenizer  # heavy, optional: imported only here

        self._tok = Tokenizer.from_file(str(path))
        self.name = label
        self.exact = True

    def count(self, text: str) -> int:
        """Count tokens of ``text`` without the special tokens a template would add."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def __repr__(self) -> str:
        return f"HFTokenizerCounter({self.name!r})"


def fast_count(counter: TokenCounter) -> Callable[[str], int]:
    """The fastest callable counting with ``counter`` (the raw Rust one where there is one)."""
    raw = getattr(counter, "raw_count", None)
    return raw if callable(raw) else counter.count


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


def _hf_cache_dirs() -> list[Path]:
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"])]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return [Path(home) / "hub"]


def _local_tokenizer_json(model: str) -> Path | None:
    """``model`` as a local folder with tokenizer.json, or a repo id already in the HF cache."""
    direct = Path(model).expanduser()
    if (direct / "tokenizer.json").is_file():
        return direct / "tokenizer.json"
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        for cache in _hf_cache_dirs():
            snapshots = cache / ("models--" + model.replace("/", "--")) / "snapshots"
            if snapshots.is_dir():
                for snap in sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
                    if (snap / "tokenizer.json").is_file():
                        return snap / "tokenizer.json"
    return None


def _by_local_tokenizer(provider: str | None, model: str | None) -> TokenCounter | None:
    if not model:
        return None
    path = _local_tokenizer_json(model)
    if path is None:
        return None
    try:
        return HFTokenizerCounter(path, label=f"tokenizer.json of {model}")
    except ImportError:  # tokenizers not installed: fall through to the approximation
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
