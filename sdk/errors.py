"""The one error tree of anytune.

Every exception anytune raises derives from :class:`AnytuneError`.  Usage mistakes, which the user
fixes before anything is sent, are kept apart from failures reported by a remote service::

    AnytuneError
    ├── UsageError                 the request cannot be sent as it stands; nothing was created
    │   ├── ConfigError            bad profile, setting or argument
    │   │   └── UnknownProviderError   provider name not registered ("did you mean ...?")
    │   ├── DataValidationError    a training/validation file has problems (carries every issue)
    │   ├── NotSupportedError      the spec asks for something the provider cannot do
    │   └── MissingDependencyError an optional extra is not installed (names the pip command)
    ├── JobNotFoundError           no job with that reference (locally or remotely)
    ├── WaitTimeoutError           ``wait(timeout=...)`` ran out before the job finished
    ├── StoreError                 the local job store cannot be read or written (exit 9):
    │                              disk full, locked, read-only, not a database; names its path
    └── ProviderError              the service (or local worker) answered with a failure
        ├── AuthenticationError    credentials missing, wrong or expired
        ├── PermissionDeniedError  credentials valid, access refused
        ├── QuotaExceededError     billing / quota / hard limit reached
        ├── RateLimitError         throttled; ``retry_after`` seconds when the service said
        ├── ServiceUnavailableError   5xx, timeouts, dropped connections after retries
        │   └── SubmitOutcomeUnknownError   a create may or may not have happened (exit 8);
        │                                   carries the idempotency key that resolves it
        ├── InvalidRequestError    the service rejected the request or a file
        ├── ModelNotAvailableError the base model cannot be fine-tuned there
        └── JobFailedError         the job ended failed or cancelled; carries its record

Adapters translate their SDK's exceptions into this tree at the boundary and raise ``from exc``.
Messages never contain secrets: every message passes through :func:`anytune._secrets.redact`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from anytune._secrets import redact

if TYPE_CHECKING:
    from anytune._data.validate import ValidationIssue
    from anytune._types import JobRecord

__all__ = [
    "AnytuneError",
    "AuthenticationError",
    "ConfigError",
    "DataValidationError",
    "InvalidRequestError",
    "JobFailedError",
    "JobNotFoundError",
    "MissingDependencyError",
    "ModelNotAvailableError",
    "NotSupportedError",
    "PermissionDeniedError",
    "ProviderError",
    "QuotaExceededError",
    "RateLimitError",
    "ServiceUnavailableError",
    "StoreError",
    "SubmitOutcomeUnknownError",
    "UnknownProviderError",
    "UsageError",
    "WaitTimeoutError",
]


class AnytuneError(Exception):
    """Base class of every anytune exception."""

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class UsageError(AnytuneError):
    """The request cannot be sent as it stands. Nothing was uploaded or created.

    Attributes:
        field: the argument or setting at fault, when one is (the message names it too).
    """

    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        if field is not None:
            self.field = field
        super().__init__(message)


class ConfigError(UsageError):
    """A profile, setting or argument is invalid.

    Attributes:
        field: dotted name of the offending setting, when known.
        source: where the value came from (file path, environment variable, argument).
    """

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None) -> None:
        self.field = field
        self.source = source
        where = ", ".join(p for p in (source, f"field {field!r}" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class UnknownProviderError(ConfigError):
    """No provider is registered under that name."""

    def __init__(self, name: str, suggestions: Sequence[str], known: Sequence[str]) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        hint = f" Did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(
            f"unknown provider {name!r}.{hint} Known providers: {', '.join(sorted(known))}.",
            field="provider",
        )


class DataValidationError(UsageError):
    """A dataset has problems. ``issues`` lists them, each with file, line and field.

    The message is complete on its own (its first line sums up, the next lines show the first
    issues); :attr:`headline` is that first line, for callers that list ``issues`` themselves.
    """

    def __init__(self, message: str, issues: Sequence[ValidationIssue] = ()) -> None:
        self.issues = list(issues)
        super().__init__(message)

    @property
    def headline(self) -> str:
        """The message's first line: what is wrong with which file, without the issues listed."""
        return self.message.split("\n", 1)[0]


class NotSupportedError(UsageError):
    """The spec asks for something the provider cannot do.

    Attributes:
        field: dotted spec field, e.g. ``"lora.r"`` or ``"hyperparameters.learning_rate"``.
        provider: the provider that refused.
        alternatives: providers that can do it.
    """

    def __init__(self, message: str, *, field: str, provider: str, alternatives: Sequence[str] = ()) -> None:
        self.field = field
        self.provider = provider
        self.alternatives = list(alternatives)
        alt = f" Providers that can: {', '.join(self.alternatives)}." if self.alternatives else ""
        super().__init__(f"{field}: {message} ({provider} cannot do this).{alt}")


class MissingDependencyError(UsageError, ImportError):
    """An optional dependency is missing; ``extra`` names what to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f'Install it with: pip install "anytune[{extra}]"'
        )


class JobNotFoundError(AnytuneError):
    """No job is known under that reference."""

    def __init__(self, ref: str, detail: str = "") -> None:
        self.ref = ref
        super().__init__(f"no job {ref!r}" + (f": {detail}" if detail else ""))


class WaitTimeoutError(AnytuneError, TimeoutError):
    """``wait(timeout=...)`` ran out; the job keeps running and can be waited on again."""

    def __init__(
        self, ref: str, timeout: float, record: JobRecord | None = None, *, message: str | None = None
    ) -> None:
        self.ref = ref
        self.timeout = timeout
        self.record = record
        last = f" (last status: {record.status.value})" if record is not None else ""
        super().__init__(message or f"job {ref} did not finish within {timeout:g} s{last}")


class StoreError(AnytuneError):
    """The local job store (``jobs.db`` under ``ANYTUNE_HOME``) cannot be read or written.

    The disk is full, another process held its lock past the busy timeout, the file or its folder
    is read-only, or the file is not a database (or is damaged). Reading a job (``get``,
    ``events``, ``metrics``, ``list``) still works when only writing fails; creating a job does not
    (nothing is sent when its record cannot be written first).

    Attributes:
        path: the store's file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(message)


class ProviderError(AnytuneError):
    """A remote service, or the local worker, reported a failure.

    Attributes:
        provider: provider name.
        status_code: HTTP status when there was one.
        request_id: the service's request id, for support tickets.
        body: the (redacted) error body, when the service sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        prefix = f"{provider}: " if provider else ""
        suffix = f" (HTTP {status_code})" if status_code else ""
        suffix += f" [request id {request_id}]" if request_id else ""
        super().__init__(f"{prefix}{message}{suffix}")


class AuthenticationError(ProviderError):
    """Credentials are missing, wrong or expired."""


class PermissionDeniedError(ProviderError):
    """Credentials are valid but the action is not allowed."""


class QuotaExceededError(ProviderError):
    """A billing, quota or hard limit was reached."""


class RateLimitError(ProviderError):
    """The service throttled the request; ``retry_after`` is its hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServiceUnavailableError(ProviderError):
    """The service failed (5xx), timed out or dropped the connection, after retries."""


class SubmitOutcomeUnknownError(ServiceUnavailableError):
    """A create failed in a way that leaves unknown whether the service made the job.

    The failure was ambiguous (a dropped connection, a timeout, a 5xx) and looking the job up by
    its idempotency key failed too. Nothing was sent twice. The job store keeps the job as
    ``unknown`` with the key; resolve it with ``FineTuneJob.create(..., idempotency_key=key)``
    (the same spec: finds the job or creates it once), ``FineTuneJob.reconcile()`` or
    ``anytune jobs reconcile``.

    Attributes:
        idempotency_key: the key the job was (or was not) created under.
    """

    def __init__(self, message: str, *, idempotency_key: str, **kwargs: Any) -> None:
        self.idempotency_key = idempotency_key
        super().__init__(
            f"{message}; whether the job was created is unknown (idempotency key {idempotency_key}). "
            "Nothing was sent twice: run 'anytune jobs reconcile', or create again with "
            "idempotency_key=" + repr(idempotency_key),
            **kwargs,
        )


class InvalidRequestError(ProviderError):
    """The service rejected the request or one of its files."""


class ModelNotAvailableError(ProviderError):
    """The base model cannot be fine-tuned with this provider (or this account)."""


class JobFailedError(ProviderError):
    """The job ended ``failed`` or ``cancelled``; ``record`` holds its last state and error."""

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        err = record.error
        detail = f": {err.message}" + (f" [{err.code}]" if err.code else "") if err else ""
        super().__init__(f"job {record.ref} {record.status.value}{detail}", provider=record.provider)
