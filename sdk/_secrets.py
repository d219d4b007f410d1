"""Keep secrets out of every message, log line, repr and file anytune writes.

Configuration registers each secret value it resolves (:func:`register_secret`); :func:`redact`
replaces those values, the values of every known provider variable (:data:`SECRET_ENV_VARS`, read
from the environment each time, whichever provider is active), passwords in URLs, and anything
shaped like a well-known credential.  Error messages, log records (through
:class:`RedactingFilter`), the uniform records providers return, everything written to the job
store or event files, and everything the CLI prints pass through it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

_MASK = "***"
_lock = threading.Lock()
_known: set[str] = set()

# Shapes of credentials that may reach a message before configuration has registered them
# (e.g. a key pasted into a base URL or echoed back by a service).
_PATTERNS = re.compile(
    r"(?:(?<![A-Za-z0-9])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,})"  # OpenAI keys
    r"|(?:(?<![A-Za-z0-9])hf_[A-Za-z0-9]{20,})"  # Hugging Face tokens
    r"|(?:(?<=Bearer )[A-Za-z0-9._\-+/=]{16,})"  # Authorization headers
    r"|(?:(?<=api-key: )[A-Za-z0-9]{16,})"  # Azure OpenAI key header
    r"|(?:eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})"  # JWTs (Entra ID)
)

# Passwords in URLs (``scheme://user:password@host``) and credentials in query strings (an Azure
# SAS signature, ``?api-key=``): the user and the parameter name stay, the value goes.
_URL_PASSWORD = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#]*:)[^\s/@?#]+(?=@)")
_QUERY_SECRET = re.compile(
    r"(?P<keep>[?&](?:sig|api-key|api_key|apikey|access_token|token|client_secret|password|secret)=)[^&\s#\"'<>]+",
    re.IGNORECASE,
)

#: Environment variables that hold a credential of a provider anytune knows (or of the SDKs and
#: tools it drives), masked whichever provider is active: an Azure key echoed in an OpenAI job's
#: error is as secret as the OpenAI key.  Read when text is redacted, so a value set after start-up
#: counts too, and no SDK has to be imported to know them.
SECRET_ENV_VARS: tuple[str, ...] = (
    "OPENAI_API_KEY",
    "OPENAI_ADMIN_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "AZURE_API_KEY",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_PASSWORD",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZUREML_ACCESS_TOKEN",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_TOKEN",
    "HF_API_TOKEN",
    "WANDB_API_KEY",
)

_SECRET_ENV_SET = frozenset(SECRET_ENV_VARS)
# Any other variable named like a credential (``GITHUB_TOKEN``, ``ANYTUNE_OPENAI_API_KEY``, a
# provider's own ``*_API_KEY``): its value is masked too.
_SECRET_ENV_NAME = re.compile(
    r"(?i)(?:^|_)(?:API_?KEY|ACCESS_KEY|ACCOUNT_KEY|(?:ACCESS_|AUTH_|AD_|SAS_)?TOKEN|SECRET|PASSWORD|PASSWD"
    r"|CONNECTION_STRING)$"
)

# Parts of a connection string (``AccountKey=...;SharedAccessSignature=...``) that are secrets.
_CONNECTION_SECRET_PARTS = ("accountkey=", "sharedaccesssignature=", "password=", "sharedaccesskey=")

# Names of settings whose values are secrets, wherever they appear.
SECRET_NAME = re.compile(r"(?i)(api[_-]?key|token|secret|password|passwd|credential|sas|auth)")


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`redact` masks it from now on."""
    if value and len(value) >= 6:  # shorter values would mask ordinary words
        with _lock:
            _known.add(value)


def is_secret_name(name: str) -> bool:
    """Whether a setting called ``name`` holds a secret (``api_key``, ``hf_token`` ...)."""
    return bool(SECRET_NAME.search(name)) and not name.lower().endswith(("_env", "_var"))


def holds_secret(settings: Any, name: str) -> bool:
    """Whether the setting ``name`` of ``settings`` (a settings class or instance) holds a secret.

    A settings class lists in ``secret_references`` the settings named like secrets that only *name*
    one held elsewhere (a Kubernetes Secret, a key in it): their values are shown, kept with the job
    and never registered for redaction (registering ``HF_TOKEN``, a key's name, would mask that word
    in every output).
    """
    return name not in getattr(settings, "secret_references", frozenset()) and is_secret_name(name)


def mask(value: str | None) -> str:
    """Show that a secret is set without showing it: ``sk-p***7f`` style is too much, so ``***``."""
    return _MASK if value else ""


def _env_secrets(env: Mapping[str, str]) -> set[str]:
    """The values of the credential variables set in ``env``, and the secret parts of each."""
    found: set[str] = set()
    for name, value in env.items():
        if not value or len(value) < 6 or not (name.upper() in _SECRET_ENV_SET or _SECRET_ENV_NAME.search(name)):
            continue
        found.add(value)
        for part in value.split(";"):
            if part.lower().startswith(_CONNECTION_SECRET_PARTS):
                secret = part.split("=", 1)[1]
                if len(secret) >= 6:
                    found.add(secret)
    return found


def _environment_key() -> int | None:
    """A cheap fingerprint of the process environment (``os.environ`` decodes on every access)."""
    data = getattr(os.environ, "_data", None)
    try:
        return hash(tuple(data.items())) if isinstance(data, dict) else None
    except RuntimeError:  # changed by another thread meanwhile: no fingerprint, read it all
        return None


_cache: dict[str, Any] = {}


def known_secrets() -> list[str]:
    """Every secret :func:`redact` masks by value now, longest first: the registered ones and the
    values of the credential variables in the environment at this moment."""
    key = (_environment_key(), len(_known))
    with _lock:
        if key[0] is not None and _cache.get("key") == key:
            cached: list[str] = _cache["secrets"]
            return cached
        known = set(_known)
    secrets = sorted(known | _env_secrets(os.environ), key=len, reverse=True)
    with _lock:
        _cache.update(key=key, secrets=secrets)
    return secrets


def redact(text: str) -> str:
    """Return ``text`` with every known secret and credential-shaped substring replaced."""
    if not text:
        return text
    for secret in known_secrets():
        if secret in text:
            text = text.replace(secret, _MASK)
    text = _URL_PASSWORD.sub(_keep_name, text)
    text = _QUERY_SECRET.sub(_keep_name, text)
    return _PATTERNS.sub(_MASK, text)


def _keep_name(match: re.Match[str]) -> str:
    return match["keep"] + _MASK


def redact_value(value: Any) -> Any:
    """``value`` with every string in it redacted (dicts, lists and tuples walked; keys kept)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the formatted message of every record it sees, and the
    traceback and stack it carries (formatted here, so a handler's formatter reuses the clean text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as logging does
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(record.exc_text or _FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


class _RedactingHandler(logging.Handler):
    """Emits nothing; its filter redacts records of child loggers before they propagate further."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        pass


def redacting_handler(handler: logging.Handler) -> logging.Handler:
    """``handler`` with :class:`RedactingFilter` attached (idempotent): a handler's filters see
    every record it is given, from any library's logger, before it formats one."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
    return handler


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Redact every record that reaches ``logger`` (default ``anytune``) or its child loggers,
    before any handler formats it (idempotent).

    The logger gets :class:`RedactingFilter` (records logged on it), each handler already on it
    gets one too, and a redacting handler goes first in its list, so records from child loggers
    are clean before the handlers after it (a console handler added later included) see them.
    """
    target = logger or logging.getLogger("anytune")
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
    for handler in target.handlers:
        if not isinstance(handler, _RedactingHandler):
            redacting_handler(handler)
    if not any(isinstance(h, _RedactingHandler) for h in target.handlers):
        target.handlers.insert(0, _RedactingHandler())
