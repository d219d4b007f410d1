"""Azure ML's errors in anytune's tree: the shared status table, refined by what Azure says.

The HTTP status picks the family (:func:`anytune._boundary.error_class_for_status`); the error's
code or message refines it where Azure ML says more than the status (quota and capacity,
marketplace and "not supported for fine-tuning" models, a workspace or resource group that does not
exist). azure-identity's sign-in failures and transport failures (no answer at all) are recognised
by their class names, so nothing here imports an Azure SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from anytune._boundary import Translate, error_class_for_status, sign_in_not_set_up
from anytune._netfail import NetFailure, classify
from anytune._retry import retry_after_of
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ModelNotAvailableError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    from anytune.providers.azureml.workspace import Workspace

NAME = "azureml"

#: Substrings of an error's code or message that decide its class before the HTTP status does.
CODE_RULES: tuple[tuple[str, type[ProviderError]], ...] = (
    ("quota", QuotaExceededError),
    ("insufficientcapacity", QuotaExceededError),
    ("marketplace", ModelNotAvailableError),
    ("not supported for fine", ModelNotAvailableError),
    ("notsupportedforfinetuning", ModelNotAvailableError),
    ("modelnotsupported", ModelNotAvailableError),
    ("unsupportedmodel", ModelNotAvailableError),
)
#: Codes of a 404 that mean the workspace itself (or its resource group, subscription) is missing.
MISSING_SCOPE = ("resourcegroupnotfound", "subscriptionnotfound", "workspacenotfound", "invalidsubscriptionid")
_SIGN_IN = frozenset({"ClientAuthenticationError", "CredentialUnavailableError"})
_NO_ANSWER = frozenset({"ServiceRequestError", "ServiceResponseError", "RequestException"})


def _describe(exc: BaseException) -> tuple[int | None, str, str, Mapping[str, str] | None]:
    """(status, code, message, headers) of an azure-core/azure-ai-ml exception."""
    status = getattr(exc, "status_code", None)
    err = getattr(exc, "error", None)
    code = str(getattr(err, "code", None) or getattr(exc, "error_code", None) or "")
    message = str(getattr(err, "message", None) or getattr(exc, "message", None) or exc)
    headers = getattr(getattr(exc, "response", None), "headers", None)
    return (status if isinstance(status, int) else None), code, message.strip(), headers


def _request_id(headers: Mapping[str, str] | None) -> str | None:
    if headers is None:
        return None
    return headers.get("x-ms-request-id") or headers.get("x-request-id")


def _error_class(status: int | None, text: str) -> type[ProviderError]:
    """The code rules first, then the shared status table; client-side validation is invalid."""
    found = next((cls for needle, cls in CODE_RULES if needle in text), None)
    if found is not None:
        return found
    # No status: client-side validation in azure-ai-ml (ValidationException, UserErrorException...).
    return error_class_for_status(status) if status is not None else InvalidRequestError


def map_error(exc: BaseException, *, action: str, workspace: Workspace | None = None) -> AnytuneError:
    """The anytune error for an exception raised by azure-core, azure-identity or azure-ai-ml."""
    kind = type(exc).__name__
    names = {c.__name__ for c in type(exc).__mro__}
    if names & _SIGN_IN and sign_in_not_set_up(exc):
        # Nothing to sign in with here: configuration (exit 2), not a refusal by Entra ID (exit 7).
        return ConfigError(
            f"{action}: no Azure credential found ({kind}): sign in with `az login`, or set the 'identity' "
            "setting (ANYTUNE_AZUREML_IDENTITY) to the credential you use (environment, managed, cli...)",
            field="settings.identity",
        )
    if names & _SIGN_IN:
        return AuthenticationError(
            f"{action}: Azure sign-in failed ({kind}): {exc}. Sign in with `az login`, or set the "
            "'identity' setting to the credential you use",
            provider=NAME,
            status_code=getattr(exc, "status_code", None),
        )
    status, code, message, headers = _describe(exc)
    text = f"{code} {message}".lower()
    if workspace is not None and status == 404 and any(c in text for c in MISSING_SCOPE):
        return ConfigError(
            f"workspace {workspace.name!r} (resource group {workspace.resource_group!r}, subscription "
            f"{workspace.subscription_id!r}) was not found: {message}",
            field="settings.workspace",
        )
    if status is None and names & _NO_ANSWER:
        # No answer: which host, and why (no network, DNS, refused, TLS, dropped, timeout).
        failure = classify(exc) or NetFailure("connect")
        retried = "" if failure.permanent else " (after retries)"
        return ServiceUnavailableError(f"{action}: {failure.describe()}{retried}", provider=NAME)
    cls = _error_class(status, text)
    detail = f"{action}: {message}" + (f" [{code}]" if code and code not in message else "")
    if cls is ModelNotAvailableError and "marketplace" in text:
        detail += ". Accept the model's marketplace terms with accept_marketplace_terms=true"
    kwargs: dict[str, Any] = {"provider": NAME, "status_code": status, "request_id": _request_id(headers)}
    if cls is RateLimitError:
        return RateLimitError(detail, retry_after=retry_after_of(exc), **kwargs)
    return cls(detail, **kwargs)


def is_azure(exc: BaseException) -> bool:
    """Whether an exception comes from the Azure SDKs or the HTTP stack below them."""
    return type(exc).__module__.startswith(("azure.", "msrest", "requests", "urllib3", "marshmallow"))


class NotFound(AnytuneError):
    """Internal: a lookup found nothing (never leaves the package)."""

    def __init__(self) -> None:
        super().__init__("not found")


def azure_errors(
    action: str,
    *,
    workspace: Callable[[], Workspace | None] = lambda: None,
    not_found: Callable[[], AnytuneError] | None = None,
) -> Translate:
    """The ``translate`` of :func:`anytune._boundary.boundary` for one Azure call.

    Args:
        action: what was being done, for the message ("get job x").
        workspace: the workspace in force, asked only when an error needs it.
        not_found: the error a 404 means for this call (default: :func:`map_error`'s).
    """

    def translate(exc: Exception) -> AnytuneError | None:
        if not is_azure(exc):
            return None  # a programming error is never disguised as a service failure
        if not_found is not None and getattr(exc, "status_code", None) == 404:
            return not_found()
        return map_error(exc, action=action, workspace=workspace())

    return translate


# -- what the shared retry and create-once mechanisms ask of an Azure ML error (pure) ------------------


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed create may have created the resource anyway: no answer, throttled, or a
    conflict (another attempt got there first)."""
    if isinstance(exc, ServiceUnavailableError | RateLimitError):
        return True
    return isinstance(exc, InvalidRequestError) and exc.status_code == 409


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ServiceUnavailableError | RateLimitError)


def retry_hint(exc: BaseException) -> float | None:
    """The service's Retry-After, carried by a throttled call's error."""
    return exc.retry_after if isinstance(exc, RateLimitError) else None
