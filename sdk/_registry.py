"""Where providers are found: a table of dotted paths, imported only when used.

Built-in providers are rows of :data:`BUILTIN`; third parties add theirs through the
``anytune.providers`` entry-point group (``name = "package.module:ProviderClass"``) or, at run time,
:func:`register`.  Looking a provider up never imports its SDK; loading one whose extra is missing
raises :class:`MissingDependencyError` with the pip command.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from anytune.errors import MissingDependencyError, UnknownProviderError

if TYPE_CHECKING:
    from anytune._capabilities import Capabilities
    from anytune._provider import Provider

ENTRY_POINT_GROUP = "anytune.providers"


@dataclass(frozen=True)
class ProviderEntry:
    """One row of the registry.

    Attributes:
        name: what users write in ``provider=`` and profiles.
        target: ``"module:Class"`` of the :class:`Provider` subclass.
        extra: the ``anytune[...]`` extra that installs its dependencies (``None``: nothing needed).
        requires: import names that must be importable for the provider to run.
        summary: one line for ``anytune providers``.
    """

    name: str
    target: str
    extra: str | None = None
    requires: tuple[str, ...] = ()
    summary: str = ""
    origin: str = field(default="builtin", compare=False)

    def missing(self) -> list[str]:
        """Required modules that are not installed (checked without importing them)."""
        return [m for m in self.requires if not _importable(m)]

    @property
    def installed(self) -> bool:
        return not self.missing()


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing ("azure.ai.ml")
        return False


BUILTIN: tuple[ProviderEntry, ...] = (
    ProviderEntry(
        "fake",
        "anytune.providers.fake:FakeProvider",
        summary="No network, deterministic, scriptable; for tests and demos.",
    ),
    ProviderEntry(
        "local",
        "anytune.providers.local:LocalProvider",
        extra="local",
        requires=("torch", "transformers", "peft"),
        summary="LoRA/QLoRA with transformers + peft on this machine's GPU or CPU, as a detached job.",
    ),
    ProviderEntry(
        "azureml",
        "anytune.providers.azureml:AzureMLProvider",
        extra="azure",
        requires=("azure.ai.ml", "azure.identity"),
        summary="Azure Machine Learning: serverless (MaaS) or managed compute (MaaP) fine-tuning.",
    ),
    ProviderEntry(
        "openai",
        "anytune.providers.openai:OpenAIProvider",
        extra="openai",
        requires=("openai",),
        summary="OpenAI fine-tuning API (supervised, DPO, reinforcement) through the official SDK.",
    ),
    ProviderEntry(
        "azure-openai",
        "anytune.providers.openai:AzureOpenAIProvider",
        extra="azure",
        requires=("openai", "azure.identity"),
        summary="Azure OpenAI fine-tuning: the OpenAI adapter with endpoint, api-version, key or Entra ID.",
    ),
    ProviderEntry(
        "huggingface",
        "anytune.providers.huggingface:HuggingFaceProvider",
        extra="hf",
        requires=("huggingface_hub",),
        summary="Hugging Face Jobs running anytune's LoRA/QLoRA trainer; the adapter is pushed to a Hub repo.",
    ),
    ProviderEntry(
        "kubernetes",
        "anytune.providers.kubernetes:KubernetesProvider",
        extra="kubernetes",
        requires=("kubernetes", "fsspec"),
        summary="anytune's LoRA/QLoRA trainer as a Kubernetes Job on your cluster; adapter on a volume or bucket.",
    ),
)

_lock = threading.Lock()
_extra: dict[str, ProviderEntry] = {}
_entry_points_loaded = False


def register(entry: ProviderEntry) -> None:
    """Add (or replace) a provider at run time."""
    with _lock:
        _extra[entry.name] = entry


def unregister(name: str) -> None:
    with _lock:
        _extra.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    from importlib.metadata import entry_points  # ~20 ms: only when a provider is looked up

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _extra:
            _extra[ep.name] = ProviderEntry(ep.name, ep.value, origin=f"entry point ({ep.group})")
    _entry_points_loaded = True


def entries() -> dict[str, ProviderEntry]:
    """Every known provider by name: built-ins, then entry points, then run-time registrations."""
    with _lock:
        _load_entry_points()
        table = {e.name: e for e in BUILTIN}
        table.update(_extra)
    return table


def entry(name: str) -> ProviderEntry:
    """The registry row for ``name``.

    Raises:
        UnknownProviderError: with close matches ("did you mean ...?").
    """
    table = entries()
    try:
        return table[name]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), list(table), n=2, cutoff=0.5)
        raise UnknownProviderError(name, close, list(table)) from None


def load(name: str) -> type[Provider[Any]]:
    """Import and return the provider class registered as ``name``.

    Raises:
        UnknownProviderError: no such provider.
        MissingDependencyError: its extra is not installed.
    """
    row = entry(name)
    missing = row.missing()
    if missing:
        raise MissingDependencyError(missing[0], row.extra or name, f"the {name!r} provider")
    return provider_class(row)


def provider_class(row: ProviderEntry) -> type[Provider[Any]]:
    """Import the provider class without checking its extra (provider modules import SDKs lazily)."""
    name = row.name
    module_name, _, attr = row.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise  # the provider module itself is missing: a packaging bug, not a user mistake
        raise MissingDependencyError(exc.name or "?", row.extra or name, f"the {name!r} provider") from exc
    cls: type[Provider[Any]] = getattr(module, attr)
    return cls


def capabilities() -> dict[str, Capabilities]:
    """Capabilities of every provider that can be loaded (used to suggest alternatives)."""
    out: dict[str, Capabilities] = {}
    for name, row in entries().items():
        try:
            # Provider modules import their SDK lazily, so this works without the extra installed.
            out[name] = provider_class(row).capabilities
        except Exception:
            continue
    return out
