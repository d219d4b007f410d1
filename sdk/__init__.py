"""anytune: one ``FineTuneJob`` API to fine-tune language models anywhere.

    from anytune import FineTuneJob

    job = FineTuneJob.create(provider="local", base_model="Qwen/Qwen2.5-0.5B-Instruct",
                             training_file="train.jsonl", lora={"r": 16})
    for event in job.stream():
        print(event)
    model = job.result()

Importing anytune is cheap: provider SDKs, torch and transformers load only when a provider or
the local backend is used.
"""

from anytune import errors
from anytune._capabilities import Capabilities
from anytune._eval.judge import OpenAIJudge
from anytune._eval.report import EvalReport, GenerationSettings
from anytune._job import AsyncFineTuneJob, FineTuneJob
from anytune._polling import PollPolicy
from anytune._provider import (
    PlannedRequest,
    PlannedUpload,
    Provider,
    ProviderSettings,
    SubmitPlan,
)
from anytune._registry import ProviderEntry, register
from anytune._spec import (
    AzureMLOptions,
    AzureOpenAIOptions,
    AzureOptions,
    DataSpec,
    FakeOptions,
    FakeStep,
    HFOptions,
    Hyperparameters,
    JobSpec,
    LocalOptions,
    LoraConfig,
    Method,
    OpenAIOptions,
    Quantization,
    WandbIntegration,
)
from anytune._store import JobStore, StoredJob
from anytune._types import (
    TERMINAL_STATUSES,
    Checkpoint,
    Event,
    Export,
    FineTunedModel,
    JobError,
    JobRecord,
    JobStatus,
    MetricPoint,
)
from anytune._version import __version__
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    DataValidationError,
    InvalidRequestError,
    JobFailedError,
    JobNotFoundError,
    MissingDependencyError,
    ModelNotAvailableError,
    NotSupportedError,
    PermissionDeniedError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
    StoreError,
    SubmitOutcomeUnknownError,
    UnknownProviderError,
    UsageError,
    WaitTimeoutError,
)

__all__ = [
    "TERMINAL_STATUSES",
    "AnytuneError",
    "AsyncFineTuneJob",
    "AuthenticationError",
    "AzureMLOptions",
    "AzureOpenAIOptions",
    "AzureOptions",
    "Capabilities",
    "Checkpoint",
    "ConfigError",
    "DataSpec",
    "DataValidationError",
    "EvalReport",
    "Event",
    "Export",
    "FakeOptions",
    "FakeStep",
    "FineTuneJob",
    "FineTunedModel",
    "GenerationSettings",
    "HFOptions",
    "Hyperparameters",
    "InvalidRequestError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "JobStore",
    "LocalOptions",
    "LoraConfig",
    "Method",
    "MetricPoint",
    "MissingDependencyError",
    "ModelNotAvailableError",
    "NotSupportedError",
    "OpenAIJudge",
    "OpenAIOptions",
    "PermissionDeniedError",
    "PlannedRequest",
    "PlannedUpload",
    "PollPolicy",
    "Provider",
    "ProviderEntry",
    "ProviderError",
    "ProviderSettings",
    "Quantization",
    "QuotaExceededError",
    "RateLimitError",
    "ServiceUnavailableError",
    "StoreError",
    "StoredJob",
    "SubmitOutcomeUnknownError",
    "SubmitPlan",
    "UnknownProviderError",
    "UsageError",
    "WaitTimeoutError",
    "WandbIntegration",
    "__version__",
    "errors",
    "register",
]

from anytune._secrets import install_log_filter as _install_log_filter

_install_log_filter()
del _install_log_filter
