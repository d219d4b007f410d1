"""Kubernetes client and urllib3 exceptions -> anytune errors, and which failures a retry may fix.

The HTTP status picks the family (:func:`anytune._boundary.error_class_for_status`); the API server's
``Status`` object (``reason``, ``message``) refines it: a namespace that does not exist, a quota
exceeded (403 ``exceeded quota``), a job that is gone. Connection failures (refused, dropped, a
timeout) are urllib3's. The SDK's modules are looked up in ``sys.modules``, never imported.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from anytune._boundary import error_class_for_status
from anytune._netfail import classify
from anytune._retry import is_retryable_status, parse_retry_after
from anytune._secrets import redact, redact_value
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    JobNotFoundError,
    PermissionDeniedError,
    ProviderError,
    QuotaExceededError,
    ServiceUnavailableError,
)

__all__ = ["api_status", "is_ambiguous", "is_transient", "retry_after", "status_reason", "translate_error"]

_QUOTA = re.compile(r"exceeded quota|forbidden: exceeded|resourcequota", re.I)


def _api_exception() -> Any:
    module = sys.modules.get("kubernetes.client.exceptions")
    return getattr(module, "ApiException", None)


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of a client ``ApiException`` (0 or None: no answer)."""
    cls = _api_exception()
    if cls is not None and isinstance(exc, cls):
        status = getattr(exc, "status", None)
        return int(status) if isinstance(status, int) and status > 0 else None
    return None


def _body(exc: BaseException) -> dict[str, Any]:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        data = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def status_reason(exc: BaseException) -> str | None:
    """The ``reason`` of the API server's ``Status`` (``AlreadyExists``, ``NotFound``...)."""
    reason = _body(exc).get("reason")
    return str(reason) if reason else None


def _message(exc: BaseException) -> str:
    text = _body(exc).get("message") or getattr(exc, "reason", None) or str(exc).splitlines()[0]
    return redact(str(text))


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: 408/429/5xx, or no answer at all (refused, dropped, timed out)."""
    status = api_status(exc)
    if status is not None:
        return is_retryable_status(status)
    if isinstance(exc, AnytuneError):
        return False
    failure = classify(exc)
    return failure is not None and not failure.permanent


def is_ambiguous(exc: BaseException) -> bool:
    """A create that failed this way may have happened: no answer, 408, 5xx, or 409 (it exists)."""
    status = api_status(exc)
    if status is not None:
        return status in (408, 409) or status >= 500
    return not isinstance(exc, AnytuneError) and classify(exc) is not None


def retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None)
    return parse_retry_after(dict(headers)) if headers else None


def translate_error(
    exc: Exception, *, provider: str, what: str, job_ref: str | None = None, host: str | None = None
) -> AnytuneError | None:
    """The anytune error for a client or transport exception (None: not one of theirs)."""
    status = api_status(exc)
    if status is None:
        cls = _api_exception()
        failure = classify(exc, url=host)
        if failure is None and not (cls is not None and isinstance(exc, cls)):
            return None
        detail = failure.describe() if failure else _message(exc)
        return ServiceUnavailableError(f"{what}: cannot reach the Kubernetes API: {detail}", provider=provider)
    message = _message(exc)
    if status == 404 and job_ref is not None:
        return JobNotFoundError(job_ref, f"the cluster has no such Job ({message})")
    if status == 403 and _QUOTA.search(message):
        return QuotaExceededError(f"{what}: {message}", provider=provider, status_code=status)
    family = error_class_for_status(status)
    if family is AuthenticationError:
        text = f"{what}: the cluster refused the credentials ({message}): check the kubeconfig's user or token"
    elif family is PermissionDeniedError:
        text = f"{what}: forbidden: {message} (does the account have RBAC rights on this namespace?)"
    else:
        text = f"{what}: {message}"
    # The body is shown (--json, reprs): a webhook's or an admission's message may echo a value.
    error: ProviderError = family(text, provider=provider, status_code=status, body=redact_value(_body(exc)) or None)
    hint = retry_after(exc)
    if hint is not None and hasattr(error, "retry_after"):
        error.retry_after = hint
    return error
