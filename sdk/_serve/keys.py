"""API keys of ``anytune serve``: read, stored hashed, compared in constant time.

Keys come from ``ANYTUNE_SERVE_API_KEYS`` (comma-separated) and the ``[serve] api_keys`` list of
the configuration file. Only their SHA-256 digests are kept in memory after start; a request's
bearer token is hashed and compared with every digest through :func:`hmac.compare_digest` (the
time taken does not depend on where a guess first differs). A key's *owner* is the first 16 hex
digits of its digest: it names the files, jobs and models the key sees, and no secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from anytune.errors import ConfigError

__all__ = ["ENV_KEYS", "KeyRing", "keys_from"]

#: The environment variable holding the server's API keys, comma-separated.
ENV_KEYS = "ANYTUNE_SERVE_API_KEYS"
#: Shortest key accepted: a guessable key is no key.
MIN_KEY_CHARS = 16


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def keys_from(env: Mapping[str, str], configured: Iterable[str] = ()) -> list[str]:
    """The keys of the environment and the configuration, in that order, without repeats.

    Raises:
        ConfigError: no key at all (the server never runs open), or one too short.
    """
    keys = [k.strip() for k in env.get(ENV_KEYS, "").split(",") if k.strip()]
    keys += [str(k).strip() for k in configured if str(k).strip()]
    if not keys:
        raise ConfigError(
            f"anytune serve needs at least one API key: set {ENV_KEYS} (comma-separated) or [serve] api_keys "
            "in anytune.toml",
            field="serve.api_keys",
        )
    short = [i for i, k in enumerate(keys, 1) if len(k) < MIN_KEY_CHARS]
    if short:
        raise ConfigError(
            f"API key #{short[0]} is shorter than {MIN_KEY_CHARS} characters: use long random keys "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            field="serve.api_keys",
        )
    return list(dict.fromkeys(keys))


class KeyRing:
    """The digests of the accepted keys; :meth:`owner` answers who a bearer token is."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(k) for k in keys)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._digests)} keys)"

    def owner(self, token: str | None) -> str | None:
        """The owner id of ``token``, or None when it is no accepted key. Every digest is compared
        (no early exit), each in constant time."""
        if not token:
            return None
        given = _digest(token)
        found: bytes | None = None
        for digest in self._digests:
            if hmac.compare_digest(given, digest):
                found = digest
        return found.hex()[:16] if found is not None else None
