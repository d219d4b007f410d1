"""Kubeflow training operators (pure): ``TrainJob`` and ``PyTorchJob`` manifests and their statuses.

Two generations of the same project (``kubeflow/trainer``, formerly ``kubeflow/training-operator``):

- **Kubeflow Trainer v2**, ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``), release v2.3.0
  (commit 658725bdae5c7e3a0854d93ac6ff492e109a22ab): ``pkg/apis/trainer/v1alpha1/trainjob_types.go``,
  the CRD ``manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml``, the webhook rules in
  ``pkg/runtime/framework/plugins/jobset/jobset.go`` (``Validate``: a runtime patch's manager is a
  domain-prefixed path; it may name only replicated jobs and containers the runtime has; it may not
  set env on the ``node`` container, whose env comes from ``trainer.env``) and the status the
  controller copies from its JobSet (``JobSet.Status``: ``Complete``, ``Failed``, plus
  ``Suspended``). A TrainJob names a runtime (``runtimeRef``, the ``torch-distributed``
  ClusterTrainingRuntime by default: ``charts/kubeflow-trainer/files/runtimes/torch-distributed.yaml``,
  one replicated job ``node`` whose container is ``node``) and overrides the trainer; pod-level
  settings travel in ``runtimePatches``, which cannot set a priority class. That field is
  v2.2's: v2.0 called it ``podSpecOverrides`` and v2.1 ``podTemplateOverrides``, and an API server
  with an older CRD drops an unknown field without a word, so a caller should check the served
  CRD has ``spec.runtimePatches`` before relying on node selectors, volumes or tolerations.
- **training-operator v1**, ``PyTorchJob`` (``kubeflow.org/v1``), release v1.9.4 (commit
  4445c12aa62e4345b0c2c6ac9b215a70eca46ed7): ``pkg/apis/kubeflow.org/v1/pytorch_types.go`` and
  ``common_types.go``, the CRD ``manifests/base/crds/kubeflow.org_pytorchjobs.yaml``, the webhook
  ``pkg/webhooks/pytorch/pytorchjob_webhook.go`` (name a DNS-1035 label, a ``Master`` with exactly
  one replica, a container named ``pytorch`` in each replica, ``elasticPolicy`` only with
  ``Worker`` replicas). Conditions: Created, Running, Restarting, Succeeded, Suspended, Failed.

Both operators start ``torchrun``-ready pods: the node count, processes per node, node rank and
rendezvous address arrive as ``PET_*`` environment variables (and ``MASTER_ADDR``/``MASTER_PORT``),
so the command is a plain ``torchrun ...`` without rendezvous flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from anytune._types import JobStatus
from anytune.errors import ConfigError

from .conditions import check_dns_label, condition, condition_true, is_deleting

__all__ = [
    "DEFAULT_RUNTIME",
    "PATCH_MANAGER",
    "PYTORCHJOB_API_VERSION",
    "PYTORCH_CONTAINER",
    "TRAINER_NODE",
    "TRAINJOB_API_VERSION",
    "pytorchjob_manifest",
    "pytorchjob_status",
    "trainjob_manifest",
    "trainjob_status",
]

TRAINJOB_API_VERSION = "trainer.kubeflow.org/v1alpha1"
PYTORCHJOB_API_VERSION = "kubeflow.org/v1"
#: The ClusterTrainingRuntime Kubeflow Trainer installs for PyTorch.
DEFAULT_RUNTIME = "torch-distributed"
#: The replicated job, and its container, that trains in the torch runtimes.
TRAINER_NODE = "node"
#: The container the training-operator requires in every PyTorchJob replica.
PYTORCH_CONTAINER = "pytorch"
#: Who owns anytune's runtime patch (the webhook wants a domain-prefixed path, as Kueue's
#: ``kueue.x-k8s.io/manager``).
PATCH_MANAGER = "anytune.dev/kubernetes"

_DOMAIN_PATH = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$"
)


def _env(env: Sequence[Mapping[str, Any]], field: str) -> list[dict[str, Any]]:
    """Environment entries as given (``{"name", "value"}`` or ``{"name", "valueFrom"}``), names unique.

    Secrets travel as ``valueFrom.secretKeyRef``, never as values: the caller builds those.
    """
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in env:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError("every environment variable needs a name", field=field)
        if name in seen:  # the CRDs key env by name (listType=map): a repeat is refused
            raise ConfigError(f"environment variable {name!r} is given twice", field=field)
        seen.add(name)
        out.append(dict(item))
    return out


def _positive(value: int | None, field: str, what: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{what} must be at least 1, not {value}", field=field)


def _pod_metadata(labels: Mapping[str, str], annotations: Mapping[str, str] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _object_metadata(
    name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None
) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, **_pod_metadata(labels, annotations)}


def _trainjob_pod_patch(
    *,
    node_selector: Mapping[str, str] | None,
    tolerations: Sequence[Mapping[str, Any]],
    service_account: str | None,
    volumes: Sequence[Mapping[str, Any]],
    volume_mounts: Sequence[Mapping[str, Any]],
    image_pull_secrets: Sequence[str],
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if service_account:
        spec["serviceAccountName"] = service_account
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if volumes:
        spec["volumes"] = [dict(v) for v in volumes]
    if image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in image_pull_secrets]
    if volume_mounts:
        spec["containers"] = [{"name": TRAINER_NODE, "volumeMounts": [dict(m) for m in volume_mounts]}]
    return spec


def trainjob_manifest(
    *,
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    image: str,
    command: Sequence[str],
    args: Sequence[str] = (),
    env: Sequence[Mapping[str, Any]] = (),
    resources: Mapping[str, Any] | None = None,
    num_nodes: int = 1,
    procs_per_node: int | None = None,
    runtime: str = DEFAULT_RUNTIME,
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime",
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    priority_class: str | None = None,
    service_account: str | None = None,
    volumes: Sequence[Mapping[str, Any]] = (),
    volume_mounts: Sequence[Mapping[str, Any]] = (),
    image_pull_secrets: Sequence[str] = (),
    annotations: Mapping[str, str] | None = None,
    active_deadline_seconds: int | None = None,
    patch_manager: str = PATCH_MANAGER,
    field_prefix: str = "kubernetes.",
) -> dict[str, Any]:
    """A Kubeflow Trainer v2 ``TrainJob`` running ``command`` on ``num_nodes`` pods (pure).

    Args:
        name: the TrainJob's name (a DNS-1035 label of at most 63 characters: the CRD's rule).
        namespace: its namespace (a ``TrainingRuntime`` must be in the same one).
        labels: on the TrainJob and on its pods (through the runtime patch), so pods can be found.
        image: the trainer image; ``command`` and ``args`` its entry point.
        env: the trainer container's environment (``trainer.env``; the runtime's own is merged in).
        resources: ``resourcesPerNode`` (``{"limits": {"nvidia.com/gpu": 1}, "requests": {...}}``).
        num_nodes: pods; ``procs_per_node``: processes each (torch's default: one per GPU).
        runtime, runtime_kind: the training runtime referenced.
        node_selector, tolerations, service_account, volumes, volume_mounts, image_pull_secrets:
            pod settings, sent as the runtime patch owned by ``patch_manager``.
        priority_class: refused: Trainer v2.3's runtime patches cannot set ``priorityClassName``.
        annotations: on the TrainJob and its pods.
        active_deadline_seconds: the TrainJob's time limit.
        field_prefix: prefix of the setting names errors give.

    Raises:
        ConfigError: a name, count or setting the operator would refuse; nothing is created.
    """
    check_dns_label(name, field=f"{field_prefix}name", kind="TrainJob")
    _positive(num_nodes, f"{field_prefix}num_nodes", "num_nodes")
    _positive(procs_per_node, f"{field_prefix}procs_per_node", "procs_per_node")
    _positive(active_deadline_seconds, f"{field_prefix}active_deadline_seconds", "active_deadline_seconds")
    if priority_class:
        raise ConfigError(
            "a Kubeflow Trainer TrainJob cannot set a priority class (its runtime patches do not carry "
            "priorityClassName): set it in the training runtime's pod template, give the workload a Kueue "
            "priority, or use the PyTorchJob operator",
            field=f"{field_prefix}priority_class",
        )
    if not _DOMAIN_PATH.match(patch_manager) or len(patch_manager) > 253:
        raise ConfigError(f"{patch_manager!r} is not a domain-prefixed path (example.com/name)", field="patch_manager")
    if not command:
        raise ConfigError("the trainer needs a command", field=f"{field_prefix}command")
    trainer: dict[str, Any] = {"image": image, "command": list(command), "numNodes": num_nodes}
    if args:
        trainer["args"] = list(args)
    if env:
        trainer["env"] = _env(env, f"{field_prefix}env")
    if resources:
        trainer["resourcesPerNode"] = dict(resources)
    if procs_per_node is not None:
        trainer["numProcPerNode"] = procs_per_node
    pod_spec = _trainjob_pod_patch(
        node_selector=node_selector,
        tolerations=tolerations,
        service_account=service_account,
        volumes=volumes,
        volume_mounts=volume_mounts,
        image_pull_secrets=image_pull_secrets,
    )
    pod_template: dict[str, Any] = {"metadata": _pod_metadata(labels, annotations)}
    if pod_spec:
        pod_template["spec"] = pod_spec
    spec: dict[str, Any] = {
        "runtimeRef": {"name": runtime, "apiGroup": "trainer.kubeflow.org", "kind": runtime_kind},
        "trainer": trainer,
        "runtimePatches": [
            {
                "manager": patch_manager,
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [{"name": TRAINER_NODE, "template": {"spec": {"template": pod_template}}}]
                        }
                    }
                },
            }
        ],
    }
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {
        "apiVersion": TRAINJOB_API_VERSION,
        "kind": "TrainJob",
        "metadata": _object_metadata(name, namespace, labels, annotations),
        "spec": spec,
    }


def _pytorch_pod(
    *,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None,
    container: Mapping[str, Any],
    node_selector: Mapping[str, str] | None,
    tolerations: Sequence[Mapping[str, Any]],
    priority_class: str | None,
    service_account: str | None,
    volumes: Sequence[Mapping[str, Any]],
    image_pull_secrets: Sequence[str],
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [dict(container)]}
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if priority_class:
        spec["priorityClassName"] = priority_class
    if service_account:
        spec["serviceAccountName"] = service_account
    if volumes:
        spec["volumes"] = [dict(v) for v in volumes]
    if image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in image_pull_secrets]
    return {"metadata": _pod_metadata(labels, annotations), "spec": spec}


def pytorchjob_manifest(
    *,
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    image: str,
    command: Sequence[str],
    args: Sequence[str] = (),
    env: Sequence[Mapping[str, Any]] = (),
    resources: Mapping[str, Any] | None = None,
    num_nodes: int = 1,
    procs_per_node: int | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    priority_class: str | None = None,
    service_account: str | None = None,
    volumes: Sequence[Mapping[str, Any]] = (),
    volume_mounts: Sequence[Mapping[str, Any]] = (),
    image_pull_secrets: Sequence[str] = (),
    annotations: Mapping[str, str] | None = None,
    restart_policy: Literal["Never", "OnFailure", "Always", "ExitCode"] = "OnFailure",
    backoff_limit: int | None = None,
    active_deadline_seconds: int | None = None,
    elastic_min_nodes: int | None = None,
    max_restarts: int | None = None,
    container_extra: Mapping[str, Any] | None = None,
    field_prefix: str = "kubernetes.",
) -> dict[str, Any]:
    """A training-operator v1 ``PyTorchJob``: a ``Master`` and ``num_nodes - 1`` ``Worker`` pods (pure).

    Each pod runs one container named ``pytorch`` with ``image``, ``command``, ``args``, ``env``,
    ``resources`` and ``volume_mounts``; ``procs_per_node`` is ``spec.nprocPerNode`` (torchrun's
    ``--nproc-per-node``; default ``auto``). ``elastic_min_nodes`` makes the job elastic: Worker
    pods only (between ``elastic_min_nodes`` and ``num_nodes``), rendezvous through c10d, restarted
    at most ``max_restarts`` times, as the operator's ``elasticPolicy`` takes it.
    ``container_extra``: further container fields (``envFrom``, ``imagePullPolicy``), as given.

    Raises:
        ConfigError: a name, count or setting the operator would refuse; nothing is created.
    """
    check_dns_label(name, field=f"{field_prefix}name", kind="PyTorchJob")
    _positive(num_nodes, f"{field_prefix}num_nodes", "num_nodes")
    _positive(procs_per_node, f"{field_prefix}procs_per_node", "procs_per_node")
    _positive(active_deadline_seconds, f"{field_prefix}active_deadline_seconds", "active_deadline_seconds")
    if backoff_limit is not None and backoff_limit < 0:
        raise ConfigError(f"backoff_limit cannot be negative ({backoff_limit})", field=f"{field_prefix}backoff_limit")
    if elastic_min_nodes is not None and not 1 <= elastic_min_nodes <= num_nodes:
        raise ConfigError(
            f"elastic_min_nodes must be between 1 and num_nodes ({num_nodes}), not {elastic_min_nodes}",
            field=f"{field_prefix}elastic_min_nodes",
        )
    if max_restarts is not None and elastic_min_nodes is None:
        raise ConfigError(
            "max_restarts applies to an elastic job (elastic_min_nodes)", field=f"{field_prefix}max_restarts"
        )
    if not command:
        raise ConfigError("the trainer needs a command", field=f"{field_prefix}command")
    container: dict[str, Any] = {"name": PYTORCH_CONTAINER, "image": image, "command": list(command)}
    if args:
        container["args"] = list(args)
    if env:
        container["env"] = _env(env, f"{field_prefix}env")
    if resources:
        container["resources"] = dict(resources)
    if volume_mounts:
        container["volumeMounts"] = [dict(m) for m in volume_mounts]
    container = {**dict(container_extra or {}), **container}
    template = _pytorch_pod(
        labels=labels,
        annotations=annotations,
        container=container,
        node_selector=node_selector,
        tolerations=tolerations,
        priority_class=priority_class,
        service_account=service_account,
        volumes=volumes,
        image_pull_secrets=image_pull_secrets,
    )
    replicas: dict[str, Any] = {}
    if elastic_min_nodes is None:
        replicas["Master"] = {"replicas": 1, "restartPolicy": restart_policy, "template": template}
        if num_nodes > 1:
            replicas["Worker"] = {"replicas": num_nodes - 1, "restartPolicy": restart_policy, "template": template}
    else:
        replicas["Worker"] = {"replicas": num_nodes, "restartPolicy": restart_policy, "template": template}
    # Pods still running when the job ends (workers of a failed job) go, freeing their GPUs;
    # finished pods stay, so their logs remain readable.
    run_policy: dict[str, Any] = {"cleanPodPolicy": "Running"}
    if backoff_limit is not None:
        run_policy["backoffLimit"] = backoff_limit
    if active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = active_deadline_seconds
    spec: dict[str, Any] = {
        "runPolicy": run_policy,
        "pytorchReplicaSpecs": replicas,
        "nprocPerNode": str(procs_per_node) if procs_per_node is not None else "auto",
    }
    if elastic_min_nodes is not None:
        elastic: dict[str, Any] = {"rdzvBackend": "c10d", "minReplicas": elastic_min_nodes, "maxReplicas": num_nodes}
        if max_restarts is not None:
            elastic["maxRestarts"] = max_restarts
        spec["elasticPolicy"] = elastic
    return {
        "apiVersion": PYTORCHJOB_API_VERSION,
        "kind": "PyTorchJob",
        "metadata": _object_metadata(name, namespace, labels, annotations),
        "spec": spec,
    }


def _words(cond: Mapping[str, Any] | None) -> str | None:
    if cond is None:
        return None
    text = str(cond.get("message") or "").strip()
    reason = str(cond.get("reason") or "").strip()
    if text and reason and reason not in text:
        return f"{reason}: {text}"
    return text or reason or None


def _job_counts(obj: Mapping[str, Any], key: str, counters: Sequence[str]) -> int:
    """Sum of ``counters`` over the per-job (TrainJob) or per-replica (PyTorchJob) statuses."""
    status = obj.get("status") or {}
    items = status.get(key) if isinstance(status, Mapping) else None
    if isinstance(items, Mapping):
        items = list(items.values())
    total = 0
    for item in items if isinstance(items, Sequence) else ():
        if isinstance(item, Mapping):
            total += sum(int(item.get(c) or 0) for c in counters)
    return total


def trainjob_status(obj: Mapping[str, Any]) -> tuple[JobStatus, str | None]:
    """The uniform status of a ``TrainJob`` and the operator's words for it (pure).

    ``Complete`` and ``Failed`` are the JobSet's outcome copied over (``Failed`` also says
    ``DeadlineExceeded`` or ``TrainingRuntimeNotSupported``); ``Suspended`` is paused. Before
    either, the job runs once a pod of it is active or ready, and is queued until then. A TrainJob
    being deleted before it finished is cancelled: cancelling deletes it.
    """
    done = condition_true(obj, "Complete")
    if done is not None:
        return JobStatus.SUCCEEDED, _words(done)
    failed = condition_true(obj, "Failed")
    if failed is not None:
        return JobStatus.FAILED, _words(failed)
    if is_deleting(obj):
        return JobStatus.CANCELLED, "the TrainJob is being deleted"
    suspended = condition_true(obj, "Suspended")
    if suspended is not None:
        return JobStatus.PAUSED, _words(suspended)
    if _job_counts(obj, "jobsStatus", ("active", "ready")) > 0:
        return JobStatus.RUNNING, None
    return JobStatus.QUEUED, _words(condition(obj, "Suspended"))


def pytorchjob_status(obj: Mapping[str, Any]) -> tuple[JobStatus, str | None]:
    """The uniform status of a ``PyTorchJob`` and the operator's words for it (pure).

    The training-operator keeps one condition per type and flips the earlier ones to False as the
    job moves on (Created -> Running -> Succeeded or Failed; Restarting while a pod restarts;
    Suspended). A job being deleted before it finished is cancelled: cancelling deletes it.
    """
    for kind, status in (("Succeeded", JobStatus.SUCCEEDED), ("Failed", JobStatus.FAILED)):
        cond = condition_true(obj, kind)
        if cond is not None:
            return status, _words(cond)
    if is_deleting(obj):
        return JobStatus.CANCELLED, "the PyTorchJob is being deleted"
    suspended = condition_true(obj, "Suspended")
    if suspended is not None:
        return JobStatus.PAUSED, _words(suspended)
    for kind in ("Restarting", "Running"):
        cond = condition_true(obj, kind)
        if cond is not None:
            return JobStatus.RUNNING, _words(cond)
    if _job_counts(obj, "replicaStatuses", ("active",)) > 0:
        return JobStatus.RUNNING, None
    return JobStatus.QUEUED, _words(condition_true(obj, "Created"))
