"""Where a provider's SDK exceptions become anytune errors: one status table, one boundary.

Every adapter translates at its boundary with :func:`boundary`, passing its own ``translate``
function. That function usually starts from :func:`error_class_for_status` (the HTTP status picks
the family) and refines it with what only its service says (quota versus throttling in a 429 body,
"model not available" codes, a missing workspace). The boundary then scrubs the SDK exception, and
everything chained below it, before chaining it as ``__cause__``: a printed traceback shows the
whole chain, and services echo rejected keys back in their error messages.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping

from anytune._secrets import redact_value
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
    ServiceUnavailableError,
)

__all__ = [
    "STATUS_ERRORS",
    "Translate",
    "boundary",
    "error_class_for_status",
    "scrub_exception",
    "sign_in_not_set_up",
]

#: HTTP status -> the error family it means on every service; adapters refine from the body.
STATUS_ERRORS: Mapping[int, type[ProviderError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: InvalidRequestError,
    408: ServiceUnavailableError,
    409: InvalidRequestError,
    413: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitError,
}

#: An adapter's translation: the anytune error for a foreign exception, or None to let it pass.
Translate = Callable[[Exception], AnytuneError | None]


def error_class_for_status(status: int | None) -> type[ProviderError]:
    """The error family of an HTTP status: the table, else 5xx -> unavailable, other 4xx -> invalid."""
    if status is None:
        return ProviderError
    found = STATUS_ERRORS.get(status)
    if found is not None:
        return found
    return ServiceUnavailableError if status >= 500 else InvalidRequestError


# azure-identity's words for a credential that was not tried because nothing is set up here.
_NOT_SET_UP = re.compile(
    r"unavailable|not installed|to be installed|not found|could not be found|not logged in|az login|"
    r"no accounts? (were )?found|not (fully )?configured|please run|no credential",
    re.I,
)


def sign_in_not_set_up(exc: BaseException) -> bool:
    """Whether an azure-identity failure means "no credential here" rather than "refused by Entra ID".

    ``CredentialUnavailableError``: the credential had nothing to try (not signed in, variables
    unset). A chain (``DefaultAzureCredential``) raises ``ClientAuthenticationError`` listing each
    credential it tried; when every one of them was unavailable, nothing was refused either. No
    credential at all is configuration (exit 2); a token or secret the service refused is
    authentication (exit 7). Recognised by class name: the core never imports azure-identity.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "CredentialUnavailableError" in names:
        return True
    if "ClientAuthenticationError" not in names or getattr(exc, "status_code", None) is not None:
        return False
    _, found, attempts = str(exc).partition("Attempted credentials:")
    lines = [line for line in attempts.splitlines() if line.startswith("\t")]  # one per credential tried
    return bool(found) and bool(lines) and all(_NOT_SET_UP.search(line) for line in lines)


def scrub_exception(exc: BaseException) -> None:
    """Redact an exception and every exception chained below it, in place.

    Covers ``args`` and the attributes SDKs keep their server's words in (``message``, ``body``,
    ``reason``); an attribute an SDK makes read-only holds nothing of ours and is left.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(redact_value(a) for a in current.args)
        for name in ("message", "body", "reason"):
            value = getattr(current, name, None)
            if isinstance(value, str | Mapping | list):
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(current, name, redact_value(value))
        current = current.__cause__ or current.__context__


@contextlib.contextmanager
def boundary(translate: Translate) -> Iterator[None]:
    """Translate foreign exceptions raised inside the block, raising ``from`` the scrubbed original.

    anytune errors pass unchanged; an exception ``translate`` does not recognise (returns None)
    passes too, so programming errors are never disguised as service failures.
    """
    try:
        yield
    except AnytuneError:
        raise
    except Exception as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        scrub_exception(exc)
        raise mapped from exc
