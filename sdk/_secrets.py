"""Keep secrets out of every message, log line, repr and file anytune writes.

Configuration registers each secret value it resolves (:func:`register_secret`); :func:`redact`
replaces those values and anything shaped like a well-known credential.  Error messages, log
records (through :class:`RedactingFilter`) and everything written to the job store or event files
pass through it.
"""

from __future__ import annotations

import logging
import re
import threading

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


def mask(value: str | None) -> str:
    """Show that a secret is set without showing it: ``sk-p***7f`` style is too much, so ``***``."""
    return _MASK if value else ""


def redact(text: str) -> str:
    """Return ``text`` with every known secret and credential-shaped substring replaced."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, _MASK)
    return _PATTERNS.sub(_MASK, text)


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the formatted message of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class _RedactingHandler(logging.Handler):
    """Emits nothing; its filter redacts records of child loggers before they propagate further."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        pass


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Attach :class:`RedactingFilter` to the ``anytune`` logger, and a handler that redacts the
    records of its child loggers too (idempotent)."""
    target = logger or logging.getLogger("anytune")
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
    if not any(isinstance(h, _RedactingHandler) for h in target.handlers):
        target.addHandler(_RedactingHandler())
