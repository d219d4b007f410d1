"""huggingface_hub and httpx2 exceptions -> anytune errors, and which failures a retry may fix.

The HTTP status picks the family (:func:`anytune._boundary.error_class_for_status`); what only the Hub
says refines it: a gated or missing base model, no payment method or credits (a 402, or a 400/403/429
whose message says so) versus throttling, a job that does not exist, a flavor the Hub does not know.
The SDK's modules are looked up in ``sys.modules``, never imported: an exception of theirs can only
exist once they are loaded.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from anytune._boundary import error_class_for_status
from anytune._netfail import NetFailure, classify
from anytune._retry import is_retryable_status, retry_after_of
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    JobNotFoundError,
    ModelNotAvailableError,
    PermissionDeniedError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)

from .hub import LOGIN_HINT

__all__ = ["is_ambiguous", "is_transient", "known_flavors", "translate_error"]

_QUOTA_TEXT = re.compile(r"payment|billing|credit|quota|insufficient|balance|subscri|pre-?paid|pro plan", re.I)
_FLAVOR_TEXT = re.compile(r"flavou?r|hardware", re.I)

#: What each error family says about the Hub's message (the family comes from the status).
_FAMILY_MESSAGES: Mapping[type[ProviderError], str] = {
    AuthenticationError: "the Hub rejected the token ({message}): " + LOGIN_HINT,
    PermissionDeniedError: "permission denied: {message} (does the token have write access to this namespace?)",
    RateLimitError: "throttled: {message}",
    ServiceUnavailableError: "the Hub failed: {message} (after retries)",
}


def _hub_errors() -> Any:
    return sys.modules.get("huggingface_hub.errors")


def _httpx2() -> Any:
    return sys.modules.get("httpx2")


def _status_of(exc: BaseException) -> int | None:
    errors = _hub_errors()
    if errors is not None and isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code
        return int(status) if status is not None else None
    return None


def _server_message(exc: BaseException) -> str:
    text = getattr(exc, "server_message", None) or ""
    if not text:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        text = lines[0] if lines else type(exc).__name__
    return str(text).strip()


def _is_quota(status: int, message: str) -> bool:
    return status == 402 or (status in (400, 403, 429) and _QUOTA_TEXT.search(message) is not None)


def _carried(exc: BaseException) -> BaseException:
    """The Hub or transport error behind ``exc``, else ``exc``.

    huggingface_hub raises a failed LFS upload (the PUT to storage, a part, the verify call) as
    ``RuntimeError("Error while uploading 'PATH' to the Hub.")`` raised from the HTTP or transport
    error: that error is what happened.
    """
    errors, httpx2 = _hub_errors(), _httpx2()
    found = (getattr(errors, "HfHubHTTPError", None), getattr(httpx2, "TransportError", None))
    known: tuple[type[BaseException], ...] = tuple(t for t in found if t is not None)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, known):
            return current
        seen.add(id(current))
        current = current.__cause__
    return exc


def is_transient(exc: BaseException) -> bool:
    """Retry predicate: connection errors, timeouts, 408, 429 (unless it means quota) and 5xx."""
    exc = _carried(exc)
    httpx2 = _httpx2()
    if httpx2 is not None and isinstance(exc, httpx2.TransportError):
        failure = classify(exc)  # no network, no such host, refused, TLS: a retry cannot fix those
        return failure is None or not failure.permanent
    status = _status_of(exc)
    if status is None:
        return False
    if status == 429 and _QUOTA_TEXT.search(_server_message(exc)):
        return False
    return is_retryable_status(status)


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed create may have happened anyway (the server may have acted before the
    dropped connection, the timeout, the 408 or the 5xx). A refused connection sent nothing."""
    httpx2 = _httpx2()
    if httpx2 is not None and isinstance(exc, httpx2.TransportError):
        return not isinstance(exc, httpx2.ConnectError)
    status = _status_of(exc)
    return status is not None and (status == 408 or status >= 500)


def known_flavors() -> list[str]:
    """The Jobs flavors this huggingface_hub knows (empty without it)."""
    try:
        from huggingface_hub import JobHardware
    except ImportError:
        return []
    return [h.value for h in JobHardware]


def translate_error(
    exc: BaseException,
    *,
    provider: str,
    what: str,
    job_ref: str | None = None,
    flavor: str | None = None,
    base_model: str | None = None,
) -> AnytuneError | None:
    """The anytune error for a huggingface_hub or httpx2 exception, or None for anything else.

    The status code picks the family; the server's message refines it (no payment method or quota
    vs throttling; an unknown flavor); the context names the job, flavor or base model concerned.
    A failed LFS upload is translated from the HTTP or transport error it carries, naming the file.
    """
    carried = _carried(exc)
    if carried is not exc:
        what = f"{what} ({str(exc).rstrip('.')})"
        exc = carried
    errors = _hub_errors()
    if errors is not None and isinstance(exc, errors.HfHubHTTPError):
        return _http_error(
            exc, errors, provider=provider, what=what, job_ref=job_ref, flavor=flavor, base_model=base_model
        )
    return _client_error(exc, errors, provider=provider, what=what)


def _client_error(exc: BaseException, errors: Any, *, provider: str, what: str) -> AnytuneError | None:
    """An error raised on this side: no token, a timeout or dropped connection, an invalid repo id."""
    httpx2 = _httpx2()
    if errors is not None and isinstance(exc, errors.LocalTokenNotFoundError):
        # Missing here, not refused there: configuration (exit 2), like a missing OpenAI key.
        return ConfigError(f"{what}: no Hugging Face token found: {LOGIN_HINT}", field="settings.token")
    if httpx2 is not None and isinstance(exc, httpx2.TransportError):
        timeout = isinstance(exc, httpx2.TimeoutException)
        failure = classify(exc) or NetFailure("timeout" if timeout else "connect")
        retried = "" if failure.permanent else " (after retries)"
        return ServiceUnavailableError(f"{what}: {failure.describe()}{retried}", provider=provider)
    if errors is None:
        return None
    if isinstance(exc, errors.HFValidationError):
        return ConfigError(f"{what}: {exc}")
    if type(exc).__module__.startswith("huggingface_hub"):
        return ProviderError(f"{what}: {type(exc).__name__}: {exc}", provider=provider)
    return None


def _http_error(
    exc: BaseException,
    errors: Any,
    *,
    provider: str,
    what: str,
    job_ref: str | None,
    flavor: str | None,
    base_model: str | None,
) -> AnytuneError:
    """An answer of the Hub: refined by what only the Hub says, else the status's family."""
    status = _status_of(exc) or 0
    message = _server_message(exc)
    common: dict[str, Any] = {
        "provider": provider,
        "status_code": status or None,
        "request_id": getattr(exc, "request_id", None),
    }
    if base_model is not None and isinstance(exc, errors.GatedRepoError):
        return ModelNotAvailableError(
            f"{what}: {base_model} is gated: accept its conditions on the Hub with this account first", **common
        )
    if base_model is not None and isinstance(exc, errors.RepositoryNotFoundError):
        return ModelNotAvailableError(
            f"{what}: base model {base_model!r} not found on the Hub (or not visible to this token)", **common
        )
    if _is_quota(status, message):
        return QuotaExceededError(
            f"{what}: {message}. Hugging Face Jobs need a payment method or credits on the account that runs "
            "them (https://huggingface.co/settings/billing)",
            **common,
        )
    if status == 404 and job_ref is not None:
        return JobNotFoundError(job_ref, message)
    if flavor is not None and status in (400, 422) and _FLAVOR_TEXT.search(message):
        return InvalidRequestError(
            f"{what}: hf.flavor {flavor!r} was refused ({message}). Known flavors: "
            f"{', '.join(known_flavors()) or 'see `hf jobs hardware`'}",
            **common,
        )
    family = error_class_for_status(status)
    text = f"{what}: " + _FAMILY_MESSAGES.get(family, "{message}").format(message=message)
    if family is RateLimitError:
        return RateLimitError(text, retry_after=retry_after_of(exc), **common)
    return family(text, **common)
