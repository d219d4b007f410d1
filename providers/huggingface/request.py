"""The job request (pure): repo names, the job's two-stage ``uv`` command, labels, ``run_job`` arguments.

How the job gets anytune's trainer, and why this way: anytune need not be on PyPI, and a user's
local changes should run remotely as they run locally, so the job installs a wheel of the *running*
anytune (see :mod:`.wheel`), uploaded to the dataset repo next to the data. The job uses the stock
``uv`` image and runs two ``uv run`` stages: a tiny bootstrap with only ``huggingface_hub`` downloads
the wheel (the token comes from the job *secret* ``HF_TOKEN``) and replaces itself (``exec``) with
``uv run --with "anytune[local] @ file://...whl" --with torch==... python -m
anytune.local_backend.hf_job ...``: the trainer with pinned dependencies.

The pins are derived, not written down: each dependency of ``anytune[local]`` at the version the
submitting environment has installed (:func:`local_pins`), so a job runs the transformers, peft,
torch... a local run would; a package not installed here keeps the extra's declared range. The
``requirements`` setting replaces any pin by name.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anytune._provider import IDEMPOTENCY_TAG
from anytune._quiet import DEBUG_ENV, debug_requested
from anytune._spec import HFOptions, JobSpec
from anytune.errors import ConfigError
from anytune.local_backend.jobpackage import (
    JOB_EXTRA,
    derive_pins,
    extra_requirements,
    installed_pins,
    job_requirements,
    local_pins,
    requirement_name,
)

from .hub import DEFAULT_ENDPOINT, HuggingFaceSettings

__all__ = [
    "BOOTSTRAP",
    "ENTRY_MODULE",
    "HUB_DISTRIBUTION",
    "JOB_EXTRA",
    "LABEL_KEY",
    "WHEEL_PLACEHOLDER",
    "JobFiles",
    "build_job_request",
    "check_hf_options",
    "default_dataset_repo",
    "default_output_repo",
    "derive_pins",
    "entry_args",
    "extra_requirements",
    "hub_client_requirement",
    "job_command",
    "job_labels",
    "job_requirements",
    "job_spec_json",
    "local_pins",
    "sanitize_label",
    "tracker_env",
]

#: Job labels allow letters, digits, '-' and '_' only, so the tag's dot becomes a dash.
LABEL_KEY = IDEMPOTENCY_TAG.replace(".", "-")
#: The bootstrap stage's only requirement, fetching the wheel; pinned like the others when installed.
HUB_DISTRIBUTION = "huggingface_hub"
ENTRY_MODULE = "anytune.local_backend.hf_job"
WHEEL_PLACEHOLDER = "@ANYTUNE_WHEEL@"

#: The bootstrap: fetch the wheel from the dataset repo (authenticated by the HF_TOKEN secret), then
#: become the training stage with the wheel's file URL in its requirement. Short on purpose: it is
#: shown in the job's command on the Hub.
BOOTSTRAP = (
    "import os, sys, tempfile\n"
    "from huggingface_hub import hf_hub_download\n"
    "repo, path = sys.argv[1], sys.argv[2]\n"
    "rest = sys.argv[sys.argv.index('--') + 1:]\n"
    "wheel = hf_hub_download(repo, path, repo_type='dataset', local_dir=tempfile.mkdtemp(prefix='anytune-'))\n"
    "url = 'file://' + os.path.abspath(wheel)\n"
    f"args = [a.replace({WHEEL_PLACEHOLDER!r}, url) if a.startswith('anytune[') else a for a in rest]\n"
    "print('[anytune] installing the trainer:', os.path.basename(wheel), flush=True)\n"
    "os.execvp(args[0], args)\n"
)

# -- names ------------------------------------------------------------------------------------------

_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_TIMEOUT = re.compile(r"^\d+(\.\d+)?[smhd]?$")


def sanitize_label(value: str, limit: int = 100) -> str:
    """A label key or value: letters, digits, '-' and '_' only, at most ``limit`` characters."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", value)[:limit] or "-"


def _repo_name(value: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-.")
    return name[:96] or "anytune"


def _qualified(repo: str, namespace: str) -> str:
    return repo if "/" in repo else f"{namespace}/{repo}"


def _check_repo_id(value: str, field: str) -> None:
    parts = value.split("/")
    if len(parts) > 2 or not all(_REPO_PART.match(p) for p in parts):
        raise ConfigError(
            f"{value!r} is not a Hub repo id (NAME or NAMESPACE/NAME: letters, digits, '-', '_', '.')", field=field
        )


def check_hf_options(options: HFOptions) -> None:
    """The ``hf`` section's values the Hub would refuse: the timeout's form, repo ids, the namespace.

    Raises:
        ConfigError: naming the field.
    """
    if not _TIMEOUT.match(options.timeout):
        raise ConfigError(f"{options.timeout!r} is not a duration such as 90m, 2h or 3600", field="hf.timeout")
    for field, value in (
        ("hf.namespace", options.namespace),
        ("hf.dataset_repo", options.dataset_repo),
        ("hf.output_repo", options.output_repo),
    ):
        if value is not None:
            _check_repo_id(value, field)
    if options.namespace is not None and "/" in options.namespace:
        raise ConfigError("a namespace is one user or organisation name", field="hf.namespace")


def default_output_repo(spec: JobSpec, namespace: str, key: str) -> str:
    """``hf.output_repo`` (a bare name goes under ``namespace``), else a name from the spec that a
    retried submit (same idempotency key) gives again."""
    options = spec.hf or HFOptions()
    if options.output_repo:
        return _qualified(options.output_repo, namespace)
    if spec.output_name:
        return f"{namespace}/{_repo_name(spec.output_name)}"
    base = spec.base_model.rstrip("/").split("/")[-1]
    return f"{namespace}/{_repo_name(f'{base}-{spec.suffix or spec.method.value}-{key[:8]}')}"


def default_dataset_repo(spec: JobSpec, namespace: str) -> str:
    """``hf.dataset_repo`` (a bare name goes under ``namespace``), else ``<namespace>/anytune-datasets``."""
    options = spec.hf or HFOptions()
    return _qualified(options.dataset_repo, namespace) if options.dataset_repo else f"{namespace}/anytune-datasets"


# -- the command ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFiles:
    """Where a job's inputs live in the dataset repo."""

    dataset_repo: str
    train: str
    valid: str | None
    wheel: str


@functools.lru_cache(maxsize=1)
def hub_client_requirement() -> str:
    """The bootstrap's one requirement: the submitter's huggingface_hub version (it is installed
    wherever a job is submitted), else the ``hf`` extra's range."""
    name = requirement_name(HUB_DISTRIBUTION)
    found = [p for p in installed_pins("hf") if requirement_name(p) == name]
    return found[0] if found else HUB_DISTRIBUTION


#: What each tracker of ``report_to`` reads from the environment that a job takes from the submitter's.
#: Settings only: a credential (``WANDB_API_KEY``) would show in the job's definition.
TRACKER_ENV: Mapping[str, tuple[str, ...]] = {
    "mlflow": ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"),
    "wandb": ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_MODE"),
    "trackio": ("TRACKIO_PROJECT", "TRACKIO_SPACE_ID"),
}


def tracker_env(report_to: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The trackers' settings set in ``environ``, for the job's environment (pure)."""
    return {name: environ[name] for t in report_to for name in TRACKER_ENV.get(t, ()) if environ.get(name)}


def job_spec_json(spec: JobSpec) -> str:
    """The spec the job trains with: what the user set, without the local file paths (the job
    downloads the files) and without the ``hf`` section (it concerns the submitter only)."""
    data = spec.model_dump(
        mode="json", exclude_none=True, exclude_defaults=True, exclude={"training_file", "validation_file", "hf"}
    )
    data["base_model"] = spec.base_model
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def job_command(
    spec: JobSpec,
    files: JobFiles,
    *,
    output_repo: str,
    private: bool,
    python: str = "3.12",
    requirements: Sequence[str] = (),
) -> list[str]:
    """The job's command: bootstrap (fetch the wheel), then the trainer with pinned dependencies."""
    entry = ["--dataset-repo", files.dataset_repo, "--train", files.train]
    if files.valid is not None:
        entry += ["--valid", files.valid]
    entry += ["--output-repo", output_repo, "--private" if private else "--public", "--spec", job_spec_json(spec)]
    # report_to's trackers: anytune has one extra per tracker, named after it, holding its package.
    extras = ",".join([JOB_EXTRA, *spec.report_to])
    trainer = ["uv", "run", "--no-project", "--python", python, "--with", f"anytune[{extras}] @ {WHEEL_PLACEHOLDER}"]
    for requirement in job_requirements(requirements):
        trainer += ["--with", requirement]
    trainer += ["python", "-m", ENTRY_MODULE, *entry]
    return [
        "uv",
        "run",
        "--no-project",
        "--python",
        python,
        "--with",
        hub_client_requirement(),
        "python",
        "-c",
        BOOTSTRAP,
        files.dataset_repo,
        files.wheel,
        "--",
        *trainer,
    ]


def entry_args(command: Sequence[str]) -> list[str]:
    """The arguments of ``python -m anytune.local_backend.hf_job`` inside a job command."""
    for i in range(len(command) - 1):
        if command[i] == "-m" and command[i + 1] == ENTRY_MODULE:
            return list(command[i + 2 :])
    return []


def job_labels(spec: JobSpec, key: str) -> dict[str, str]:
    """The spec's tags, the method, and the idempotency label a retried create looks up."""
    labels = {sanitize_label(f"anytune-tag-{k}"): sanitize_label(v) for k, v in sorted(spec.tags.items())}
    labels.update({LABEL_KEY: sanitize_label(key), "anytune-method": spec.method.value})
    return labels


def build_job_request(
    spec: JobSpec,
    key: str,
    files: JobFiles,
    *,
    namespace: str,
    output_repo: str,
    settings: HuggingFaceSettings,
    endpoint: str,
) -> dict[str, Any]:
    """The keyword arguments of ``HfApi.run_job`` except ``secrets`` (added at submit time only)."""
    options = spec.hf or HFOptions()
    env = {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "UV_NO_PROGRESS": "1"}
    if endpoint.rstrip("/") != DEFAULT_ENDPOINT:
        env["HF_ENDPOINT"] = endpoint
    env.update(tracker_env(spec.report_to, os.environ))
    if debug_requested(os.environ):  # `anytune --debug`: the job's log keeps its libraries' notes too
        env[DEBUG_ENV] = "1"
    return {
        "image": settings.image,
        "command": job_command(
            spec,
            files,
            output_repo=output_repo,
            private=options.private,
            python=settings.python,
            requirements=settings.requirements,
        ),
        "env": env,
        "flavor": options.flavor,
        "timeout": options.timeout,
        "labels": job_labels(spec, key),
        "name": sanitize_label(f"anytune-{output_repo.split('/')[-1]}", 64),
        "namespace": namespace,
    }
