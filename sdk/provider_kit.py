"""Everything needed to write a provider, in one public module.

A provider outside anytune imports from here and nowhere private::

    from anytune.provider_kit import (
        Capabilities, Provider, ProviderSettings, boundary, create_once, error_class_for_status,
    )

What each piece is for:

* the contract: :class:`Provider` (generic over its settings) and the collaborators its
  constructor takes (:class:`ProviderArgs`), :class:`ProviderSettings`,
  :class:`Capabilities` with :class:`Range` bounds and refusal hints, :class:`SubmitPlan` and its
  parts, :class:`UploadCache`;
* the uniform types a provider returns: :class:`JobRecord`, :class:`JobStatus`, :class:`Event`,
  :class:`MetricPoint`, :class:`Checkpoint`, :class:`JobError`, :class:`FineTunedModel`;
* the mechanisms every built-in adapter uses, written once: :func:`create_once` with
  :data:`IDEMPOTENCY_TAG` (never two jobs for one key), :func:`retry_call` and :class:`RetryPolicy`
  for reads, :func:`retry_after_of`, :func:`boundary` with :func:`error_class_for_status` (one error
  tree, secrets scrubbed from the chained cause), :func:`wait_until`, :func:`file_digest`,
  :func:`planned_upload`, :func:`parse_timestamp`, :func:`redact` / :func:`register_secret`.

Test a provider with :mod:`anytune.testing` (the contract suite, a fake clock, the fake provider).
CONTRIBUTING.md walks through writing one.
"""

from __future__ import annotations

from anytune._boundary import STATUS_ERRORS, boundary, error_class_for_status, scrub_exception
from anytune._capabilities import Capabilities, Range
from anytune._create_once import DEFAULT_SETTLE, create_once, outcome_unknown
from anytune._files import FileDigest, file_digest, file_digests
from anytune._provider import (
    IDEMPOTENCY_TAG,
    PlannedRequest,
    PlannedUpload,
    Provider,
    ProviderArgs,
    ProviderSettings,
    SubmitPlan,
    UploadCache,
    planned_upload,
)
from anytune._retry import (
    RetryPolicy,
    RetrySettings,
    is_retryable_status,
    parse_retry_after,
    retry_after_of,
    retry_call,
)
from anytune._secrets import redact, register_secret
from anytune._spec import JobSpec, Method, Quantization
from anytune._timestamps import parse_timestamp
from anytune._types import (
    Checkpoint,
    Event,
    FineTunedModel,
    JobError,
    JobRecord,
    JobStatus,
    MetricPoint,
    utcnow,
)
from anytune._waiting import wait_until

__all__ = [
    "DEFAULT_SETTLE",
    "IDEMPOTENCY_TAG",
    "STATUS_ERRORS",
    "Capabilities",
    "Checkpoint",
    "Event",
    "FileDigest",
    "FineTunedModel",
    "JobError",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "Method",
    "MetricPoint",
    "PlannedRequest",
    "PlannedUpload",
    "Provider",
    "ProviderArgs",
    "ProviderSettings",
    "Quantization",
    "Range",
    "RetryPolicy",
    "RetrySettings",
    "SubmitPlan",
    "UploadCache",
    "boundary",
    "create_once",
    "error_class_for_status",
    "file_digest",
    "file_digests",
    "is_retryable_status",
    "outcome_unknown",
    "parse_retry_after",
    "parse_timestamp",
    "planned_upload",
    "redact",
    "register_secret",
    "retry_after_of",
    "retry_call",
    "scrub_exception",
    "utcnow",
    "wait_until",
]
