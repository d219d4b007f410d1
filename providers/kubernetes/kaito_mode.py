"""``mode = "kaito"``: the job as a Kaito tuning ``Workspace`` (pure parts: where the data comes
from, the checks with the setting names they concern, the manifests, the record).

Kaito's tuning pod reads its data by URL, from a volume or from an image; anytune's spec names a
*local* training file (every spec is checked and converted locally first). The mapping, in order:

* ``kaito_input_url`` (an http(s) URL of the same data), ``kaito_input_volume`` (a core/v1
  VolumeSource) or ``kaito_input_image``: Kaito reads that; the local training_file is only
  checked. ``kaito_dataset_file`` names the file inside a volume or image.
* none of them: the local training_file is uploaded, content addressed, to the object-store
  ``storage`` (``STORAGE/inputs/<sha256>/<name>``, through fsspec) and Kaito downloads it from
  ``kaito_storage_url`` + the same path, the https address that storage is readable at. A
  presigned URL is never made: it is a credential, and the Workspace is readable by anyone who
  can list workspaces. Without ``kaito_storage_url`` the job is refused before anything is made.

The adapter goes to ``kaito_output_image`` (pushed with the Secret ``kaito_output_secret``) or to
``kaito_output_volume``. Secrets are named, never read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from anytune._spec import JobSpec
from anytune._timestamps import parse_timestamp
from anytune._types import JobError, JobRecord, JobStatus
from anytune.errors import ConfigError, NotSupportedError

from .conditions import condition_true
from .kaito import (
    KAITO_API_VERSION,
    KaitoData,
    KaitoPreset,
    check_kaito,
    configmap_manifest,
    resolve_preset,
    workspace_manifest,
    workspace_status,
)
from .manifests import ANNOTATION_KEY, JOB_LABEL, LABEL_KEY, MANAGED_LABEL, job_name, label_value
from .settings import NAME, KubernetesSettings, parse_storage

__all__ = [
    "KAITO_GROUP",
    "KAITO_PLURAL",
    "KAITO_VERSION",
    "KaitoPlan",
    "kaito_data",
    "kaito_plan",
    "require_kaito_settings",
    "setting_field",
    "workspace_record",
]

KAITO_GROUP, KAITO_VERSION = KAITO_API_VERSION.split("/")
KAITO_PLURAL = "workspaces"
_SECTION = "kaito"
# kaito.py names a setting ``kaito.<its KaitoData field>``; the settings that feed each one.
_SETTINGS = {
    "input_urls": "kaito_input_url",
    "input_volume": "kaito_input_volume",
    "input_image": "kaito_input_image",
    "dataset_file": "kaito_dataset_file",
    "output_volume": "kaito_output_volume",
    "output_image_push_secret": "kaito_output_secret",
    "instance_type": "kaito_instance_type",
    "preset": "kaito_preset",
}


def setting_field(field: str) -> str:
    """kaito.py's ``kaito.<name>`` as the setting the user writes (``settings.kaito_input_url``);
    spec fields (``method``, ``lora.r``) as they are (pure)."""
    if not field.startswith(f"{_SECTION}."):
        return field
    name = field.split(".", 1)[1]
    return f"settings.{_SETTINGS.get(name, 'kaito_' + name)}"


@dataclass(frozen=True)
class KaitoPlan:
    """What a Kaito submit creates: the tuning ConfigMap, then the Workspace; ``upload`` is the
    training file for the object store (``(relative path, bytes)``) when Kaito fetches it from there."""

    name: str
    configmap: dict[str, Any]
    workspace: dict[str, Any]
    upload: tuple[str, bytes] | None
    secrets: tuple[tuple[str, str], ...]  # (setting, Secret name) that must exist


def kaito_data(
    spec: JobSpec, settings: KubernetesSettings, *, read: bool = True
) -> tuple[KaitoData, tuple[str, bytes] | None]:
    """Where the workspace reads the data and writes the adapter, and the upload that needs (reads
    the training file only when it is to be uploaded, and ``read``: a check needs its name only).

    Raises:
        ConfigError: no input Kaito's pod can reach (see the module's docstring).
    """
    s = settings
    upload: tuple[str, bytes] | None = None
    urls: tuple[str, ...] = (s.kaito_input_url,) if s.kaito_input_url else ()
    if not (urls or s.kaito_input_volume is not None or s.kaito_input_image):
        storage = parse_storage(s.storage) if s.storage else None
        base = (s.kaito_storage_url or "").rstrip("/")
        if storage is None or storage.is_volume or not base:
            raise ConfigError(
                "Kaito's tuning pod reads its data from a URL, a volume or an image, not from this machine: set "
                "kaito_input_url (an http(s) URL of the training file), kaito_input_volume or kaito_input_image, "
                "or an object-store storage with kaito_storage_url (the https address the pod reads that storage "
                "at) to have training_file uploaded there",
                field="settings.kaito_input_url",
            )
        if not base.lower().startswith("https://"):
            raise ConfigError(f"{base!r} is not an https address of the storage", field="settings.kaito_storage_url")
        path = spec.training_path
        data = path.read_bytes() if read else b""
        rel = f"inputs/{hashlib.sha256(data).hexdigest()[:24] if read else 'sha256'}/{path.name}"
        urls = (f"{base}/{rel}",)
        upload = (rel, data) if read else None
    return (
        KaitoData(
            input_urls=urls,
            input_volume=s.kaito_input_volume,
            input_image=s.kaito_input_image,
            input_image_pull_secrets=tuple(s.kaito_input_pull_secrets),
            dataset_file=s.kaito_dataset_file,
            output_volume=s.kaito_output_volume,
            output_image=s.kaito_output_image,
            output_image_push_secret=s.kaito_output_secret,
        ),
        upload,
    )


def require_kaito_settings(spec: JobSpec, settings: KubernetesSettings, data: KaitoData) -> KaitoPreset:
    """The preset, or an error for the first problem Kaito would have, naming the setting or spec
    field (:func:`.kaito.check_kaito`, the others listed after it) (pure).

    Raises:
        ConfigError: a setting (preset, node size, data locations).
        NotSupportedError: a spec field Kaito cannot honour (DPO, a validation_file...).
    """
    if settings.hub_token_secret and settings.hub_token_key != "HF_TOKEN":
        # Kaito's modelAccessSecret is read for the key HF_TOKEN only.
        raise ConfigError(
            f"Kaito reads the Hub token from the key HF_TOKEN of {settings.hub_token_secret!r}, not "
            f"{settings.hub_token_key!r}: store it under HF_TOKEN",
            field="settings.hub_token_key",
        )
    found = check_kaito(
        spec, preset=settings.kaito_preset, instance_type=settings.kaito_instance_type, data=data, section=_SECTION
    )
    if found:
        first = found[0]
        reason = first.reason
        if len(found) > 1:
            reason += "; also " + "; ".join(f"{setting_field(p.field)}: {p.reason}" for p in found[1:])
        if first.setting:
            raise ConfigError(reason, field=setting_field(first.field))
        raise NotSupportedError(reason, field=first.field, provider=NAME, alternatives=["kubernetes (mode trainer)"])
    chosen = resolve_preset(settings.kaito_preset or spec.base_model)
    assert chosen is not None  # check_kaito refused an unknown preset
    return chosen


def kaito_plan(spec: JobSpec, key: str, settings: KubernetesSettings) -> KaitoPlan:
    """The ConfigMap and Workspace for ``spec`` under the name the idempotency key gives (pure but
    for reading the training file when it is to be uploaded).

    Raises:
        ConfigError, NotSupportedError: as :func:`require_kaito_settings` and :func:`kaito_data`.
    """
    s = settings
    data, upload = kaito_data(spec, s)
    require_kaito_settings(spec, s, data)
    name = job_name(key)
    config = f"{name}-tuning"
    labels = {MANAGED_LABEL: "anytune", LABEL_KEY: label_value(key), JOB_LABEL: name}
    annotations = {ANNOTATION_KEY: key, "anytune.dev/base-model": spec.base_model}
    common: dict[str, Any] = {
        "namespace": s.namespace,
        "labels": labels,
        "instance_type": s.kaito_instance_type,
        "data": data,
        "preset": s.kaito_preset,
        "section": _SECTION,
    }
    configmap = configmap_manifest(spec, config, **common)
    workspace = workspace_manifest(
        spec,
        name=name,
        config=config,
        node_labels=s.node_selector or None,
        annotations=annotations,
        model_access_secret=s.hub_token_secret,
        **common,
    )
    secrets = [
        ("settings.kaito_output_secret", s.kaito_output_secret),
        ("settings.hub_token_secret", s.hub_token_secret),
        *(("settings.kaito_input_pull_secrets", p) for p in s.kaito_input_pull_secrets),
    ]
    return KaitoPlan(
        name=name,
        configmap=configmap,
        workspace=workspace,
        upload=upload,
        secrets=tuple((f, n) for f, n in secrets if n),
    )


def output_of(workspace: Mapping[str, Any]) -> dict[str, Any]:
    """Where the workspace writes the adapter: ``{"image": ref}`` or ``{"volume": VolumeSource}``."""
    out = ((workspace.get("tuning") or {}).get("output")) or {}
    if out.get("image"):
        return {"image": str(out["image"])}
    return {"volume": out.get("volumeSource")} if out.get("volumeSource") else {}


def workspace_record(
    workspace: Mapping[str, Any], lines: list[str] | None = None, *, error_log_lines: int = 20
) -> JobRecord:
    """A Workspace read back as a job record (pure): its status, the adapter's place once it
    succeeded, the controller's words (and the pod's last log lines) when it failed."""
    meta = workspace.get("metadata") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    status, message = workspace_status(workspace)
    annotations = meta.get("annotations") or {}
    output = {"namespace": ns, "workspace": name, **output_of(workspace)}
    if message:
        output["message"] = message
    error = None
    if status is JobStatus.FAILED:
        text = message or "the tuning job failed"
        if lines and error_log_lines:
            text += "\nlast log lines:\n" + "\n".join(lines[-error_log_lines:])
        error = JobError(message=text, code="kaito_tuning_failed")
    elif status is JobStatus.CANCELLED:
        error = JobError(message="the job was cancelled (its Workspace deleted; outputs kept)", code="cancelled")
    done = condition_true(workspace, "WorkspaceSucceeded")
    started = condition_true(workspace, "JobStarted")
    claim = ((output.get("volume") or {}).get("persistentVolumeClaim") or {}).get("claimName")
    where = output.get("image") or (f"pvc://{claim}" if claim else None)
    model = where if status is JobStatus.SUCCEEDED else None
    raw_status = str((workspace.get("status") or {}).get("state") or "")
    return JobRecord(
        provider=NAME,
        id=f"{ns}/{name}",
        status=status,
        raw_status=raw_status,
        base_model=annotations.get("anytune.dev/base-model"),
        fine_tuned_model=model,
        created_at=parse_timestamp(meta.get("creationTimestamp")),
        started_at=parse_timestamp(started.get("lastTransitionTime")) if started else None,
        finished_at=parse_timestamp(done.get("lastTransitionTime")) if done else None,
        error=error,
        output=output,
        raw={
            "metadata": {"name": name, "namespace": ns, "labels": meta.get("labels") or {}, "annotations": annotations},
            "labels": meta.get("labels") or {},
            "status": workspace.get("status") or {},
            # Where the adapter goes (names only: a push Secret's name, never its value): a cancel keeps it.
            "tuning": {"output": (workspace.get("tuning") or {}).get("output") or {}},
        },
    )
