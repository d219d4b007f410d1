"""Who and where: the settings, the Hub endpoint, the token, and the ``HfApi`` client built from them.

huggingface_hub is imported here on first use only: capabilities and dry-run plans never need it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr

from anytune._base_model import DEFAULT_HUB_TIMEOUT
from anytune._provider import ProviderSettings
from anytune._retry import RetrySettings
from anytune._secrets import install_log_filter, register_secret
from anytune.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    import httpx2
    from huggingface_hub import HfApi

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_IMAGE",
    "LOGIN_HINT",
    "NAME",
    "HttpClientFactory",
    "HuggingFaceSettings",
    "import_hub",
    "make_api",
    "resolve_endpoint",
    "resolve_token",
]

NAME = "huggingface"
DEFAULT_ENDPOINT = "https://huggingface.co"
#: huggingface_hub's default image for uv jobs: Debian with Python 3.12 and uv.
DEFAULT_IMAGE = "ghcr.io/astral-sh/uv:python3.12-bookworm"
LOGIN_HINT = "log in with `hf auth login`, or set HF_TOKEN or the profile's token setting"

#: Makes the ``httpx2.Client`` huggingface_hub sends through (a proxy, certificates, a test transport).
HttpClientFactory = Callable[[], "httpx2.Client"]


class HuggingFaceSettings(ProviderSettings, RetrySettings):
    """``huggingface`` settings (profiles, ``ANYTUNE_HUGGINGFACE_<SETTING>``, arguments).

    Unset values come from huggingface_hub's own sources: the token from ``HF_TOKEN`` (or the
    variable named by ``token_env``) and then the cached login of ``hf auth login``; the endpoint
    from ``HF_ENDPOINT``.  ``retry_after_max`` (from :class:`~anytune._retry.RetrySettings`) caps a
    server's ``Retry-After``; unset, it is honoured up to ``retry_deadline``.
    """

    _WAIT_CAP_SETTING = "max_backoff"

    token: SecretStr | None = None
    token_env: str | None = Field(None, description="environment variable holding the token")
    endpoint: str | None = Field(None, description="Hub URL (default HF_ENDPOINT, then huggingface.co)")
    namespace: str | None = Field(None, description="user or organisation running jobs (default: the token's user)")
    image: str = Field(DEFAULT_IMAGE, description="Docker image with uv and Python")
    python: str = Field("3.12", description="Python version uv runs the trainer with")
    requirements: list[str] = Field(
        default_factory=list, description="pip requirements replacing (by name) or adding to the pinned ones"
    )
    max_attempts: int = Field(6, ge=1, le=50, description="attempts per call, the first included")
    retry_deadline: float = Field(300.0, gt=0, description="seconds after which no retry is started")
    max_backoff: float = Field(
        30.0, gt=0, description="cap on our own back-off; when set (and retry_after_max is not), on Retry-After too"
    )
    error_log_lines: int = Field(20, ge=0, le=1000, description="log lines a failed job's error carries")
    hub_timeout: float = Field(
        DEFAULT_HUB_TIMEOUT, gt=0, description="seconds the base model's look-up before a create may take"
    )


def resolve_endpoint(settings: HuggingFaceSettings) -> str:
    """The Hub URL: the setting, else ``HF_ENDPOINT`` (read now, as huggingface_hub's users expect), else the Hub."""
    return (settings.endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_token(settings: HuggingFaceSettings, provider: str) -> str:
    """The token, found like huggingface_hub finds it, and registered for redaction.

    Order: ``settings.token``, the variable ``settings.token_env`` names, then huggingface_hub's
    ``get_token`` (``HF_TOKEN``, then the cached login of ``hf auth login``).

    Raises:
        ConfigError: no token anywhere (a setting to make, exit 2; a token the Hub refuses is an
            ``AuthenticationError``).
    """
    token = settings.token.get_secret_value() if settings.token is not None else None
    if not token and settings.token_env:
        token = os.environ.get(settings.token_env) or None
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        also = f" or {settings.token_env}" if settings.token_env else ""
        raise ConfigError(
            f"no Hugging Face token for {provider!r}: log in with `hf auth login`, set HF_TOKEN{also}, or set "
            "the profile's token (ANYTUNE_HUGGINGFACE_TOKEN)",
            field="settings.token",
        )
    # Found outside configuration: make sure no message, log line or stored record shows it.
    register_secret(token)
    return token


def import_hub(provider: str) -> None:
    """Import huggingface_hub, or say which extra installs it; its log lines are redacted from now on.

    Raises:
        MissingDependencyError: ``anytune[hf]`` is not installed.
    """
    try:
        import huggingface_hub  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("huggingface_hub", "hf", f"the {provider!r} provider") from exc
    install_log_filter(logging.getLogger("huggingface_hub"))


def make_api(*, endpoint: str, token: str | None, http_client_factory: HttpClientFactory | None = None) -> HfApi:
    """The ``HfApi`` every call goes through.

    huggingface_hub 2.x sends every request through one process-wide ``httpx2.Client`` (``HfApi``
    has no client of its own), so a given ``http_client_factory`` is installed with its public
    ``set_client_factory``: it then serves every huggingface_hub call of this process. Without one,
    the process's configured client stays as it is.
    """
    import huggingface_hub

    from anytune._version import __version__

    if http_client_factory is not None:
        huggingface_hub.set_client_factory(http_client_factory)
    return huggingface_hub.HfApi(endpoint=endpoint, token=token, library_name="anytune", library_version=__version__)
