"""The pre-flight check of a base model: a local folder that holds a model, or a Hub id that resolves.

Providers call it from :meth:`~anytune.Provider.check_base_model`, before a job is recorded or
started: a typo, a missing folder or an offline machine is reported at once, instead of by a worker
that fails a minute later.

* A name that exists on disk, or looks like a path (``/``, ``./``, ``../``, ``~``, a drive letter,
  more than one ``/``), is a folder: it must exist and hold ``config.json``. A LoRA adapter's folder
  (``adapter_config.json`` alone) is refused, naming the model it adapts: training goes on a model.
* Anything else is a Hugging Face Hub model id, looked up once, with a short timeout and no retry
  (a retry loop is the minute-long spinner this check replaces). With ``HF_HUB_OFFLINE`` set, the
  local Hub cache answers instead (``try_to_load_from_cache``); where the service downloads the
  model itself (``use_cache=False``), offline is refused.

``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and the cache variables are read at each check, not when
huggingface_hub was imported, so what the worker will see is what is checked. huggingface_hub is
imported on first use only: ``import anytune`` never loads it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    MissingDependencyError,
    ModelNotAvailableError,
    ProviderError,
    ServiceUnavailableError,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_HUB_TIMEOUT",
    "HubClient",
    "check_base_model",
    "check_hub_model",
    "check_model_folder",
    "describe_unreachable",
    "hub_endpoint",
    "hub_host",
    "hub_offline",
    "is_repo_id",
    "looks_like_path",
    "model_folder",
]

FIELD = "base_model"
DEFAULT_ENDPOINT = "https://huggingface.co"
#: Seconds the one look-up of a Hub id waits: long enough for a slow link, short enough to say
#: "offline" before the user reaches for Ctrl-C.
DEFAULT_HUB_TIMEOUT = 8.0
#: huggingface_hub's words for true (``constants._is_true``).
_TRUE = frozenset({"1", "ON", "YES", "TRUE"})
#: huggingface_hub's repo id rule (``utils.validate_repo_id``), kept here so that telling a path
#: from an id needs no import.
_REPO_ID = re.compile(r"(\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b")
_FOLDER_HINT = "a folder holding a Hugging Face model (config.json, weights, tokenizer) or a Hub model id"


class HubClient(Protocol):
    """What the check uses of ``huggingface_hub.HfApi``; a provider passes its own client."""

    endpoint: str

    def model_info(self, repo_id: str, *, timeout: float | None = None) -> Any: ...

    def auth_check(self, repo_id: str, *, repo_type: str | None = None) -> None: ...


# -- telling a folder from a Hub id ---------------------------------------------------------------
def is_repo_id(name: str) -> bool:
    """Whether ``name`` is a valid Hub repo id (``org/name`` or ``name``), by huggingface_hub's rule."""
    return bool(_REPO_ID.fullmatch(name)) and "--" not in name and ".." not in name and not name.endswith(".git")


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is written as a file system path (whether or not it exists), not a Hub id."""
    return (
        name.startswith(("/", "./", "../", "~", "\\", ".\\", "..\\"))
        or name in (".", "..")
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or (len(name) > 1 and name[1] == ":")  # C:\models\...
    )


def model_folder(name: str) -> Path | None:
    """The folder ``name`` means (``~`` expanded), or None when it is a Hub model id.

    A name that exists on disk is a folder even when it could be an id (``org/model`` checked out
    next to you); one that does not exist is a folder only when written as a path.
    """
    path = Path(name).expanduser()
    try:
        exists = path.exists()
    except OSError:
        exists = True  # unreadable: check_model_folder says why
    return path if exists or looks_like_path(name) else None


def _shown(path: Path, name: str) -> str:
    """``name`` as given, with the absolute path it resolved to when that says more."""
    absolute = str(path.absolute())
    return repr(name) if absolute == name else f"{name!r} ({absolute})"


def _adapted_model(adapter_config: Path) -> str | None:
    try:
        data = json.loads(adapter_config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = data.get("base_model_name_or_path") if isinstance(data, dict) else None
    return base if isinstance(base, str) and base else None


def check_model_folder(path: Path, name: str | None = None) -> Path:
    """``path`` as an absolute folder that holds a Hugging Face model.

    Raises:
        ConfigError: on field ``base_model``, naming the path: it does not exist, is a file, holds
            an adapter rather than a model, holds no ``config.json``, or cannot be read.
    """
    shown = _shown(path, name if name is not None else str(path))
    try:
        if not path.exists():
            raise ConfigError(f"base model path {shown} does not exist; give {_FOLDER_HINT}", field=FIELD)
        if not path.is_dir():
            raise ConfigError(f"base model path {shown} is a file; give {_FOLDER_HINT}", field=FIELD)
        if (path / "config.json").is_file():
            return path.resolve()
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            base = _adapted_model(adapter)
            give = f"the model it adapts ({base!r})" if base else "the model it adapts"
            raise ConfigError(
                f"base model folder {shown} holds a LoRA adapter (adapter_config.json), not a model: give {give}, "
                "or a folder with the adapter merged into its model",
                field=FIELD,
            )
        raise ConfigError(
            f"base model folder {shown} holds no config.json: it is not a Hugging Face model folder", field=FIELD
        )
    except OSError as exc:
        raise ConfigError(f"cannot read base model path {shown}: {exc.strerror or exc}", field=FIELD) from None


# -- the Hub --------------------------------------------------------------------------------------
def hub_offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether huggingface_hub (and transformers) will run offline: ``HF_HUB_OFFLINE``, else
    ``TRANSFORMERS_OFFLINE``, read now (huggingface_hub reads them once, at import)."""
    env = os.environ if environ is None else environ
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def hub_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The Hub's URL: ``HF_ENDPOINT`` (read now), else huggingface.co."""
    env = os.environ if environ is None else environ
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_host(endpoint: str) -> str:
    """How messages name the Hub at ``endpoint``: its host (and port)."""
    return urlsplit(endpoint).netloc or endpoint


def describe_unreachable(host: str, exc: BaseException) -> tuple[str, bool]:
    """Why ``host`` could not be reached (:func:`anytune._netfail.classify`'s words), and whether the
    machine looks offline (not when something answered: refused, TLS: a wrong HF_ENDPOINT, a proxy)."""
    from anytune._netfail import classify

    failure = classify(exc, url=f"http://{host}")
    said = failure.describe() if failure is not None else f"cannot reach {host}: {type(exc).__name__}"
    return said, failure is None or failure.kind not in ("refused", "tls")


def _cache_dir() -> str | None:
    """The Hub cache the worker will read, from the variables as they are now (None: huggingface_hub's)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return None


def _cached(repo_id: str) -> bool:
    """Whether the local Hub cache holds the model's ``config.json`` (no network, no folder scan)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=_cache_dir(), repo_type="model")
    return isinstance(found, str)


def _default_client(provider: str) -> HubClient:
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise MissingDependencyError("huggingface_hub", "hf", f"looking a base model up for {provider!r}") from exc
    from anytune._version import __version__

    client: HubClient = HfApi(endpoint=hub_endpoint(), library_name="anytune", library_version=__version__)
    return client


def _offline_error(repo_id: str, *, use_cache: bool) -> ConfigError:
    if not use_cache:
        return ConfigError(
            f"HF_HUB_OFFLINE is set, so base model {repo_id!r} cannot be looked up on the Hub, where this job "
            "downloads it: unset HF_HUB_OFFLINE to submit",
            field=FIELD,
        )
    where = _cache_dir() or "the default Hub cache"
    return ConfigError(
        f"offline (HF_HUB_OFFLINE is set) and base model {repo_id!r} is not in the local Hub cache ({where}): "
        f"download it once while online (`hf download {repo_id}`), or give a local model folder",
        field=FIELD,
    )


def _unreachable(repo_id: str, host: str, exc: BaseException, *, provider: str, use_cache: bool) -> AnytuneError:
    said, offline = describe_unreachable(host, exc)
    hint = "check the connection (or HF_ENDPOINT)"
    if use_cache:
        hint = (
            f"{repo_id!r} is in the local Hub cache: set HF_HUB_OFFLINE=1 to train from it"
            if _cached(repo_id)
            else f"{repo_id!r} is not in the local Hub cache either: download it while online, or give a local folder"
        )
    said += "; this machine looks offline" if offline else ""
    return ServiceUnavailableError(f"looking up base model {repo_id!r}: {said}. {hint}", provider=provider)


def _translate(exc: Exception, repo_id: str, host: str, *, provider: str, use_cache: bool) -> AnytuneError | None:
    """The anytune error for a failed look-up (None: not one of the Hub's or the transport's)."""
    import huggingface_hub.errors as hub_errors

    if isinstance(exc, hub_errors.OfflineModeIsEnabled):
        # huggingface_hub was imported with HF_HUB_OFFLINE set, and still counts as offline.
        if use_cache and _cached(repo_id):
            return None
        return _offline_error(repo_id, use_cache=use_cache)
    if isinstance(exc, hub_errors.GatedRepoError):
        return ModelNotAvailableError(
            f"base model {repo_id!r} is gated: it needs a token (HF_TOKEN, or `hf auth login`) of an account "
            f"that has accepted its conditions on {host}",
            provider=provider,
        )
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return ConfigError(
            f"no such model on {host}: {repo_id!r} (check the id; a private model needs a token that can see it, "
            "HF_TOKEN or `hf auth login`)",
            field=FIELD,
        )
    if isinstance(exc, hub_errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            return AuthenticationError(
                f"looking up base model {repo_id!r}: {host} refused the token: log in again (`hf auth login`) "
                "or set HF_TOKEN",
                provider=provider,
                status_code=status,
            )
        family = ServiceUnavailableError if status is None or status >= 500 else ProviderError
        return family(f"looking up base model {repo_id!r} on {host} failed", provider=provider, status_code=status)
    import httpx2

    if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
        return _unreachable(repo_id, host, exc, provider=provider, use_cache=use_cache)
    return None


def check_hub_model(
    repo_id: str,
    *,
    provider: str,
    client: HubClient | None = None,
    timeout: float = DEFAULT_HUB_TIMEOUT,
    use_cache: bool = True,
) -> None:
    """Make sure the Hub id ``repo_id`` names a model this job can start from.

    Online: one ``model_info`` call within ``timeout`` seconds (and, for a gated model, one
    ``auth_check`` with the token). Offline (``HF_HUB_OFFLINE``): the local cache must hold the
    model, or, with ``use_cache=False`` (the service downloads it), the check refuses at once.

    Args:
        repo_id: the Hub model id.
        provider: the provider asking, for the errors.
        client: the Hub client (default: an ``HfApi`` on ``HF_ENDPOINT`` with huggingface_hub's token).
        timeout: seconds the look-up may take.
        use_cache: whether the local Hub cache serves the job (a local trainer) or not (a remote one).

    Raises:
        ConfigError: not a model id, no such model, or offline and not cached.
        ModelNotAvailableError: gated, and the token has no access.
        AuthenticationError: the Hub refused the token.
        ServiceUnavailableError: the Hub could not be reached in time (named, with the offline hint).
    """
    if not is_repo_id(repo_id):
        raise ConfigError(
            f"{repo_id!r} is neither an existing folder nor a Hub model id; give {_FOLDER_HINT}", field=FIELD
        )
    if hub_offline():
        if use_cache and _cached(repo_id):
            return
        raise _offline_error(repo_id, use_cache=use_cache)
    from anytune._boundary import boundary

    hub = client if client is not None else _default_client(provider)
    host = hub_host(hub.endpoint)

    def translate(exc: Exception) -> AnytuneError | None:
        return _translate(exc, repo_id, host, provider=provider, use_cache=use_cache)

    import huggingface_hub.errors as hub_errors

    try:
        with boundary(translate):
            info = hub.model_info(repo_id, timeout=timeout)
            if getattr(info, "gated", False):
                hub.auth_check(repo_id, repo_type="model")
    except hub_errors.OfflineModeIsEnabled:
        return  # offline since huggingface_hub's import, and the cache holds the model (see _translate)
    files = [getattr(s, "rfilename", None) for s in getattr(info, "siblings", None) or []]
    if files and "config.json" not in files:
        raise ConfigError(
            f"{repo_id!r} on {host} has no config.json: it is not a transformers model this trainer can load",
            field=FIELD,
        )


def check_base_model(
    name: str,
    *,
    provider: str,
    client: HubClient | None = None,
    timeout: float = DEFAULT_HUB_TIMEOUT,
    folders: bool = True,
    use_cache: bool = True,
) -> None:
    """A local folder or a Hub id, checked as :func:`check_model_folder` or :func:`check_hub_model` do.

    Args:
        folders: whether a local folder can serve this job (False: the job runs elsewhere, and a
            path is refused at once).
    """
    path = model_folder(name)
    if path is None:
        check_hub_model(name, provider=provider, client=client, timeout=timeout, use_cache=use_cache)
    elif not folders:
        raise ConfigError(
            f"base model {name!r} is a local path, and a {provider} job runs remotely: give a Hub model id "
            "(upload the folder first with `hf upload`)",
            field=FIELD,
        )
    else:
        check_model_folder(path, name)
