"""Hugging Face Jobs: anytune's own trainer on Hugging Face hardware, the adapter pushed to the Hub.

A job runs exactly what the ``local`` provider runs (chat template, assistant-only loss, LoRA/QLoRA,
DPO: :func:`anytune.local_backend.train.run_training`), on the flavor ``hf.flavor`` asks for.
``submit`` uploads the data and a wheel of the *running* anytune to a private dataset repo, then
starts a job whose two ``uv run`` stages fetch the wheel and run
:mod:`anytune.local_backend.hf_job`: it trains, prints one ``ANYTUNE_METRIC {json}`` line per
logging step (:mod:`anytune.local_backend.joblog`), and pushes the adapter, tokenizer, metrics,
resolved spec and result to the output model repo (private unless ``hf.private`` is false) in one
commit, whose revision it prints on an ``ANYTUNE_RESULT`` line.

Where things are:

* :mod:`.adapter` — :class:`HuggingFaceProvider`, the contract (submit, reads, cancel, create-once);
* :mod:`.hub` — who and where: settings, endpoint, token, the ``HfApi`` client;
* :mod:`.request` — the job request (pure): repo names, the ``uv`` command, labels, ``run_job`` arguments;
* :mod:`.records` — a job read back (pure): ``JobView``, uniform record, events and error;
* :mod:`.status` — the Jobs stage table;
* :mod:`.endpoints` — deploy on Inference Endpoints (pure): settings, the create request, endpoint -> ``Deployment``;
* :mod:`.wheel` and :mod:`.uploads` — the data plane: the trainer wheel, content-addressed uploads;
* :mod:`.errors` — huggingface_hub / httpx2 exceptions to anytune errors, retry predicates.

huggingface_hub is imported on first use: capabilities and dry-run plans never need it.
"""

from __future__ import annotations

from anytune.local_backend.joblog import (
    ERROR_PREFIX,
    LOG_ERROR_PREFIX,
    METRIC_PREFIX,
    RESULT_PREFIX,
    WARNING_PREFIX,
    LineKind,
    parse_line,
)

from .adapter import HuggingFaceProvider
from .endpoints import HuggingFaceDeploySettings
from .errors import is_ambiguous, is_transient, known_flavors, translate_error
from .hub import DEFAULT_ENDPOINT, DEFAULT_IMAGE, NAME, HuggingFaceSettings
from .records import TERMINAL_EVENT_ID, JobView, job_events, record_from_view, view_from_info
from .request import (
    BOOTSTRAP,
    ENTRY_MODULE,
    HUB_DISTRIBUTION,
    JOB_EXTRA,
    LABEL_KEY,
    WHEEL_PLACEHOLDER,
    JobFiles,
    build_job_request,
    default_dataset_repo,
    default_output_repo,
    derive_pins,
    entry_args,
    extra_requirements,
    hub_client_requirement,
    job_command,
    job_labels,
    job_requirements,
    job_spec_json,
    local_pins,
)
from .status import HF_STAGE, map_stage
from .uploads import DATA_DIR, WHEEL_DIR, data_path, wheel_path
from .wheel import build_wheel, package_files

__all__ = [
    "BOOTSTRAP",
    "DATA_DIR",
    "DEFAULT_ENDPOINT",
    "DEFAULT_IMAGE",
    "ENTRY_MODULE",
    "ERROR_PREFIX",
    "HF_STAGE",
    "HUB_DISTRIBUTION",
    "JOB_EXTRA",
    "LABEL_KEY",
    "LOG_ERROR_PREFIX",
    "METRIC_PREFIX",
    "NAME",
    "RESULT_PREFIX",
    "TERMINAL_EVENT_ID",
    "WARNING_PREFIX",
    "WHEEL_DIR",
    "WHEEL_PLACEHOLDER",
    "HuggingFaceDeploySettings",
    "HuggingFaceProvider",
    "HuggingFaceSettings",
    "JobFiles",
    "JobView",
    "LineKind",
    "build_job_request",
    "build_wheel",
    "data_path",
    "default_dataset_repo",
    "default_output_repo",
    "derive_pins",
    "entry_args",
    "extra_requirements",
    "hub_client_requirement",
    "is_ambiguous",
    "is_transient",
    "job_command",
    "job_events",
    "job_labels",
    "job_requirements",
    "job_spec_json",
    "known_flavors",
    "local_pins",
    "map_stage",
    "package_files",
    "parse_line",
    "record_from_view",
    "translate_error",
    "view_from_info",
    "wheel_path",
]
