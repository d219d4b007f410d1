"""Kubernetes: anytune's own trainer as a Job on the user's cluster (AKS, EKS, GKE, on-premises).

A pod runs exactly what the ``local`` provider runs (:func:`anytune.local_backend.train.run_training`)
through :mod:`anytune.local_backend.k8s_job`: it installs a wheel of the *running* anytune with the
pins of ``anytune[local]`` (:mod:`anytune.local_backend.jobpackage`, as on Hugging Face Jobs), reads
its inputs from the storage (a PersistentVolumeClaim, or an object store through fsspec), prints one
``ANYTUNE_METRIC`` line per logging step and writes the adapter to ``STORAGE/jobs/<job>/``.
Several nodes (``local.nodes``) run as an Indexed Job with a headless Service and torchrun's c10d
rendezvous on node 0.

Where things are:

* :mod:`.adapter` — :class:`KubernetesProvider`, the contract (checks, submit, reads, cancel);
* :mod:`.settings` — who and where: settings, storage, the ``ApiClient``;
* :mod:`.manifests` — the Job, Service and staged ConfigMaps (pure);
* :mod:`.status` — Job conditions and pod states -> anytune status (pure);
* :mod:`.errors` — client / urllib3 exceptions to anytune errors, retry predicates.

``mode = "kaito"`` creates a Kaito tuning Workspace instead (:mod:`.kaito_mode`: where the data
comes from, the checks naming settings, the record; :mod:`.kaito`: Kaito's presets, ConfigMap,
Workspace and status, pure). ``workload = "trainjob"`` / ``"pytorchjob"`` run the same container as a
Kubeflow Trainer ``TrainJob`` or a training-operator ``PyTorchJob`` (:func:`.manifests.kubeflow_manifest`
over the pure builders and status mappers of :mod:`.kubeflow`; the operator gives the rendezvous
through ``PET_*``); ``auto`` takes the first the cluster serves (:func:`.adapter.choose_workload`),
else a Job. Reads find a job's kind by reading its name as each kind in turn.
The ``kubernetes`` package is imported on first use: capabilities and dry-run plans never need it.
"""

from __future__ import annotations

from .adapter import KUBEFLOW_KINDS, KubernetesProvider, choose_workload
from .errors import is_ambiguous, is_transient, translate_error
from .manifests import (
    ANNOTATION_KEY,
    CONFIGMAP_PART,
    ENTRY_MODULE,
    JOB_LABEL,
    LABEL_KEY,
    MANAGED_LABEL,
    STAGED_LIMIT,
    STORAGE_MOUNT,
    Inputs,
    Manifests,
    StagedFile,
    build_manifests,
    configmaps_for,
    job_name,
    label_value,
    pod_spec_json,
)
from .settings import DEFAULT_IMAGE, NAME, KubernetesSettings, Storage, make_api_client, parse_storage
from .status import JOB_CONDITIONS, WAITING_REASONS, JobState, job_state

__all__ = [
    "ANNOTATION_KEY",
    "CONFIGMAP_PART",
    "DEFAULT_IMAGE",
    "ENTRY_MODULE",
    "JOB_CONDITIONS",
    "JOB_LABEL",
    "KUBEFLOW_KINDS",
    "LABEL_KEY",
    "MANAGED_LABEL",
    "NAME",
    "STAGED_LIMIT",
    "STORAGE_MOUNT",
    "WAITING_REASONS",
    "Inputs",
    "JobState",
    "KubernetesProvider",
    "KubernetesSettings",
    "Manifests",
    "StagedFile",
    "Storage",
    "build_manifests",
    "choose_workload",
    "configmaps_for",
    "is_ambiguous",
    "is_transient",
    "job_name",
    "job_state",
    "label_value",
    "make_api_client",
    "parse_storage",
    "pod_spec_json",
    "translate_error",
]
