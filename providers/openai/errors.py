"""Error translation for both services: the shared status table picks the family, the error body
(code, type, param, message) refines it with what only these services say.

Used through :func:`anytune._boundary.boundary` by the adapter; also the retry predicates
(:func:`is_transient`) and the create-once question (:func:`is_ambiguous`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import orjson

from anytune._boundary import error_class_for_status, sign_in_not_set_up
from anytune._netfail import NetFailure, classify
from anytune._retry import is_retryable_status, retry_after_of
from anytune._secrets import redact
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

from .wind_down import wind_down_refusal

__all__ = ["WindDownRefusal", "is_ambiguous", "is_transient", "openai_module", "translate_error"]

_QUOTA_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded", "quotaexceeded", "billing_not_active"}
)
# Text only as a fallback for services that send no code.  Azure's throttling message links to a
# "quotaincrease" page, so a bare "quota" must not count: throttling is retried, quota is not.
_QUOTA_TEXT = re.compile(
    r"insufficient[ _]quota|exceeded your current quota|check your plan and billing|billing hard limit|"
    r"quota (is |has been )?exceeded|maximum number of (active|running|concurrent)",
    re.I,
)
#: Statuses a quota or billing refusal comes with.
_QUOTA_STATUSES = frozenset({400, 403, 429})
_MODEL_CODES = frozenset(
    {
        "model_not_available",
        "invalid_model",
        "model_not_found",
        "unsupported_model",
        "modelnotavailable",
        "invalidmodel",
    }
)
_MODEL_TEXT = re.compile(
    r"not available for fine-?tuning|does not support fine-?tuning|cannot be fine-?tuned|"
    r"model .{0,80}(not (available|supported|found)|does not exist)|unsupported model",
    re.I,
)
_MODEL_STATUSES = frozenset({400, 404, 422})
_FILE_PARAMS = frozenset({"training_file", "validation_file"})

#: The message of each error family the body does not refine (the others are built below).
_FAMILY_MESSAGES: Mapping[type[ProviderError], str] = {
    AuthenticationError: "{what}: credentials rejected: {message}",
    PermissionDeniedError: "{what}: permission denied: {message}",
    ServiceUnavailableError: "{what}: the service failed: {message} (after retries)",
}


def openai_module() -> Any:
    """The openai SDK if something imported it (no SDK loaded: no SDK exception to look at)."""
    return sys.modules.get("openai")


@dataclass(frozen=True)
class _Context:
    provider: str
    flavour: str
    what: str
    job_id: str | None
    creating: bool


@dataclass(frozen=True)
class _Body:
    """What an SDK status error says: code and type lower-cased, message and param as sent."""

    code: str
    kind: str
    message: str
    param: str

    @classmethod
    def of(cls, exc: BaseException) -> _Body:
        body = getattr(exc, "body", None)
        if isinstance(body, Mapping):
            return cls(
                str(body.get("code") or "").lower(),
                str(body.get("type") or "").lower(),
                str(body.get("message") or ""),
                str(body.get("param") or ""),
            )
        return cls("", "", str(getattr(exc, "message", "") or exc), "")

    @property
    def quota(self) -> bool:
        return self.code in _QUOTA_CODES or self.kind in _QUOTA_CODES or bool(_QUOTA_TEXT.search(self.message))

    @property
    def model(self) -> bool:
        return self.param == "model" or self.code in _MODEL_CODES or bool(_MODEL_TEXT.search(self.message))


def is_transient(exc: BaseException) -> bool:
    """Retry predicate: connection errors (but for no network, no such host, refused and TLS errors,
    which a retry seconds later cannot fix), timeouts, 408, 429 (unless it means quota) and 5xx."""
    openai = openai_module()
    if openai is None:
        return False
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is one too
        return not _permanent_network_failure(exc)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429 and _Body.of(exc).quota:
            return False
        return is_retryable_status(exc.status_code)
    return False


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed write may have happened anyway: the server may have acted before the
    timeout, the dropped connection, the 408 or the 5xx.  A 429 is refused before any work."""
    openai = openai_module()
    if openai is None:
        return False
    if isinstance(exc, openai.APIConnectionError):
        # No network, no such host, refused, TLS: the request never reached the service.
        return not _permanent_network_failure(exc)
    return isinstance(exc, openai.APIStatusError) and (exc.status_code == 408 or exc.status_code >= 500)


def _redacted_body(body: Any) -> Any:
    """The error body for the anytune error, every secret masked."""
    if body is None:
        return None
    try:
        return orjson.loads(redact(orjson.dumps(body, default=str).decode()))
    except (TypeError, orjson.JSONDecodeError):
        return redact(str(body))


class WindDownRefusal(PermissionDeniedError):
    """OpenAI refused to create a job for the organisation (the wind-down of self-serve
    fine-tuning); ``service_message`` is what the service said.  The adapter, which knows the spec
    and today's date, replaces it with the phase in force and the equivalent commands."""

    def __init__(self, message: str, *, service_message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.service_message = service_message


def wind_down_message(service_message: str, today: date | None = None) -> str:
    """OpenAI's refusal to create a job, with the wind-down phase and where to go instead."""
    if "scope" in service_message.lower():
        return (
            f"the API key may not create fine-tuning jobs ({service_message}); use a key with the "
            "fine-tuning write permission"
        )
    return wind_down_refusal(service_message, today or datetime.now(timezone.utc).date())


def _azure_identity_error(exc: BaseException, ctx: _Context) -> AnytuneError:
    name = type(exc).__name__
    if sign_in_not_set_up(exc):
        # Nothing to sign in with here: configuration (exit 2), not a refusal by Entra ID (exit 7).
        return ConfigError(
            f"{ctx.what}: no Azure credential found for Entra ID sign-in: sign in (`az login`, managed "
            "identity), or set AZURE_OPENAI_API_KEY / settings.api_key",
            field="settings.api_key",
        )
    if "Authentication" in name or "Credential" in name:
        return AuthenticationError(
            f"{ctx.what}: Entra ID sign-in failed ({exc}). Sign in (`az login`, managed identity) or set "
            "AZURE_OPENAI_API_KEY / settings.api_key",
            provider=ctx.provider,
        )
    return ProviderError(f"{ctx.what}: {name}: {exc}", provider=ctx.provider)


def _transport_error(exc: BaseException, openai: Any, ctx: _Context) -> AnytuneError:
    """No answer: which host could not be reached and why (DNS, refused, TLS, timeout...)."""
    failure = classify(exc) or NetFailure("timeout" if isinstance(exc, openai.APITimeoutError) else "connect")
    retried = "" if failure.permanent else " (after retries)"
    return ServiceUnavailableError(f"{ctx.what}: {failure.describe()}{retried}", provider=ctx.provider)


def _permanent_network_failure(exc: BaseException) -> bool:
    """A failure a retry seconds later cannot fix: no network, no such host, refused, TLS."""
    failure = classify(exc)
    return failure is not None and failure.permanent


def _invalid_request(status: int, body: _Body, message: str, common: dict[str, Any], ctx: _Context) -> AnytuneError:
    """Refine a rejected request: the base model, a missing job, a rejected file."""
    if status in _MODEL_STATUSES and body.model:
        return ModelNotAvailableError(f"{ctx.what}: the base model cannot be fine-tuned here: {message}", **common)
    if status == 404 and ctx.job_id is not None:
        hint = " (if every call fails like this, check endpoint and api_version)" if ctx.flavour == "azure" else ""
        return JobNotFoundError(f"{ctx.provider}:{ctx.job_id}", f"{message}{hint}")
    if body.param in _FILE_PARAMS or "file" in body.code:
        return InvalidRequestError(
            f"{ctx.what}: the service rejected {body.param or 'a data file'}: {message}", **common
        )
    return InvalidRequestError(f"{ctx.what}: {message}", **common)


def _status_error(exc: Any, ctx: _Context) -> AnytuneError:
    status: int = exc.status_code
    body = _Body.of(exc)
    message = body.message or f"HTTP {status}"
    common: dict[str, Any] = {
        "provider": ctx.provider,
        "status_code": status,
        "request_id": exc.request_id,
        "body": _redacted_body(exc.body),
    }
    family = error_class_for_status(status)
    if status in _QUOTA_STATUSES and body.quota:
        return QuotaExceededError(f"{ctx.what}: quota or billing limit reached: {message}", **common)
    if family is RateLimitError:
        return RateLimitError(f"{ctx.what}: throttled: {message}", retry_after=retry_after_of(exc), **common)
    if family is PermissionDeniedError and ctx.creating and ctx.flavour == "openai":
        if "scope" in message.lower():
            return PermissionDeniedError(wind_down_message(message), **common)
        return WindDownRefusal(wind_down_message(message), service_message=message, **common)
    if family is InvalidRequestError:
        return _invalid_request(status, body, message, common, ctx)
    template = _FAMILY_MESSAGES.get(family, "{what}: {message}")
    return family(template.format(what=ctx.what, message=message), **common)


def translate_error(
    exc: BaseException,
    *,
    provider: str,
    flavour: str,
    what: str,
    job_id: str | None = None,
    creating: bool = False,
) -> AnytuneError | None:
    """The anytune error for an SDK (or azure-identity) exception, or None for anything else.

    One table for both services: the status code picks the family, the error body's code, type,
    param and message refine it (quota vs throttling, invalid file, model not available, OpenAI's
    refusal of fine-tuning to organisations without access).
    """
    ctx = _Context(provider, flavour, what, job_id, creating)
    if type(exc).__module__.startswith("azure."):
        return _azure_identity_error(exc, ctx)
    openai = openai_module()
    if openai is None or not isinstance(exc, openai.OpenAIError):
        return None
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is one too
        return _transport_error(exc, openai, ctx)
    if not isinstance(exc, openai.APIStatusError):
        return ProviderError(f"{what}: {exc}", provider=provider)
    return _status_error(exc, ctx)
