"""The workload (pure): a spec and the settings -> the Job, its headless Service and staged ConfigMaps.

What a pod runs, and why this way: the image the user names (by default the one Hugging Face Jobs
uses, with ``uv``) installs a wheel of the *running* anytune and the pinned dependencies of
``anytune[local]`` (:mod:`anytune.local_backend.jobpackage`, shared with the Hugging Face provider)
and runs :mod:`anytune.local_backend.k8s_job`, which reads the inputs from the storage and writes the
adapter back there. The container's command is a three-line shell launcher (``uv``, else ``pip
install uv``); everything else is in ``args``, so the manifest shows exactly what runs.

* One node: a ``batch/v1`` Job, one pod, ``backoffLimit: 0`` (a failed pod is the job's failure; a
  resubmit under the same name continues from the last checkpoint on the storage).
* ``local.nodes`` > 1: an Indexed Job (``completionMode: Indexed``, ``completions = parallelism =
  nodes``) and a headless Service named like the Job; pod ``i`` is ``<job>-i.<job>`` in DNS (its
  ``subdomain``), every pod runs ``torch.distributed.run`` with ``--node_rank`` from its completion
  index and the c10d rendezvous at ``<job>-0.<job>:<rdzv_port>`` (the port of the spec's
  ``local.rdzv_endpoint`` when given, else ``rdzv_port``).
* Storage ``pvc://claim[/subpath]``: the claim is mounted at :data:`STORAGE_MOUNT`. The client cannot
  write a volume, so local inputs and the wheel travel in ConfigMaps (``binaryData``, content
  addressed, :data:`CONFIGMAP_PART` bytes each, :data:`STAGED_LIMIT` in all) that an init container
  copies onto the volume when absent. A ``pvc://`` training file already on the volume travels not.
* Storage an fsspec URL: submit uploads there; the pod's bootstrap stage fetches the wheel with
  fsspec, the trainer reads and writes through it, credentials from ``storage_secret``.

Secrets are referenced by name only (``secretKeyRef``, ``envFrom``): no value is ever in a manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anytune._provider import IDEMPOTENCY_TAG
from anytune._spec import JobSpec, LocalOptions
from anytune.errors import ConfigError
from anytune.local_backend.jobpackage import JOB_EXTRA, job_requirements

from .settings import KubernetesSettings, Storage

__all__ = [
    "ANNOTATION_KEY",
    "CONFIGMAP_PART",
    "ENTRY_MODULE",
    "JOB_LABEL",
    "LABEL_KEY",
    "MANAGED_LABEL",
    "STAGED_LIMIT",
    "STORAGE_MOUNT",
    "Inputs",
    "Manifests",
    "StagedFile",
    "build_manifests",
    "configmaps_for",
    "job_name",
    "kubeflow_manifest",
    "label_value",
    "pod_spec_json",
    "storage_requirements",
]

ENTRY_MODULE = "anytune.local_backend.k8s_job"
#: The idempotency key as a label (labels take no dots in this form); its value is the key when the
#: key is a valid label value, else a digest of it. The key itself is in the annotation.
LABEL_KEY = IDEMPOTENCY_TAG.replace(".", "-")
ANNOTATION_KEY = f"anytune.dev/{IDEMPOTENCY_TAG.split('.', 1)[1]}"
#: Every object anytune creates carries it: ``list`` selects on it.
MANAGED_LABEL = "app.kubernetes.io/managed-by"
#: Which job an object belongs to (the pods' Service selects on it).
JOB_LABEL = "anytune.dev/job"
STORAGE_MOUNT = "/anytune/storage"
STAGED_MOUNT = "/anytune/staged"
#: Bytes of one staged ConfigMap (a ConfigMap holds at most 1 MiB, metadata included).
CONFIGMAP_PART = 900 * 1024
#: Bytes staged through ConfigMaps for one job, in all: beyond, use an object-store URL or put the
#: file on the volume (``pvc://`` paths), so etcd is not used as a file store.
STAGED_LIMIT = 8 * 1024 * 1024
#: The container's command: run uv with the args, installing it with pip when the image has none.
LAUNCHER = (
    "set -e\n"
    'if command -v uv >/dev/null 2>&1; then exec uv "$@"; fi\n'
    "python3 -m pip install --quiet --disable-pip-version-check uv\n"
    'exec python3 -m uv "$@"\n'
)
WHEEL_PLACEHOLDER = "@ANYTUNE_WHEEL@"
#: The bootstrap stage for object-store storage: fetch the wheel through fsspec, then become the
#: trainer stage (``python -m uv run ...``) with the wheel's file URL in its requirement.
FETCH = (
    "import os, sys, tempfile, fsspec\n"
    "url, rest = sys.argv[1], sys.argv[sys.argv.index('--') + 1:]\n"
    "wheel = os.path.join(tempfile.mkdtemp(prefix='anytune-'), url.rsplit('/', 1)[-1])\n"
    "fsspec.core.url_to_fs(url)[0].get_file(fsspec.core.url_to_fs(url)[1], wheel)\n"
    f"args = [a.replace({WHEEL_PLACEHOLDER!r}, 'file://' + wheel) for a in rest]\n"
    "print('[anytune] installing the trainer:', os.path.basename(wheel), flush=True)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'uv', *args])\n"
)
#: fsspec's implementation package of each protocol (the pod installs it next to fsspec).
PROTOCOL_PACKAGES: Mapping[str, str] = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_CM_KEY = re.compile(r"[^-._a-zA-Z0-9]")


def job_name(key: str) -> str:
    """The Job's name from the idempotency key: ``anytune-<20 hex>``, a DNS-1123 label a retried
    submit gives again (pure). Pods add ``-<index>-<suffix>``, so it stays well under 63."""
    return "anytune-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def label_value(key: str) -> str:
    """The key as a label value: itself when valid (≤ 63, alphanumerics, ``-_.``), else a digest."""
    return key if _LABEL_VALUE.match(key) else "sha256-" + hashlib.sha256(key.encode()).hexdigest()[:48]


@dataclass(frozen=True)
class StagedFile:
    """A file an init container copies from ConfigMaps onto the volume (PVC storage)."""

    dest: str  # path under the storage root
    parts: tuple[str, ...]  # ConfigMap names, in order; each holds the part under ``key``
    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Inputs:
    """Where a job's inputs are, as paths under the storage root."""

    train: str
    valid: str | None
    wheel: str
    staged: tuple[StagedFile, ...] = ()


@dataclass(frozen=True)
class Manifests:
    """Everything ``submit`` creates, in creation order: ConfigMaps, the Service, the Job."""

    job: dict[str, Any]
    service: dict[str, Any] | None = None
    configmaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])

    def all(self) -> list[dict[str, Any]]:
        return [*self.configmaps, *([self.service] if self.service else []), self.job]


def configmaps_for(
    files: Sequence[tuple[str, str, bytes]], *, namespace: str, part: int = CONFIGMAP_PART, limit: int = STAGED_LIMIT
) -> tuple[list[dict[str, Any]], list[StagedFile]]:
    """ConfigMaps holding ``files`` (``(dest under the storage root, file name, bytes)``), content
    addressed (``anytune-blob-<sha>-<i>``: the same bytes are one set of objects for every job).

    Raises:
        ConfigError: more than ``limit`` bytes in all, naming the files and what to do instead.
    """
    total = sum(len(data) for _, _, data in files)
    if total > limit:
        names = ", ".join(f"{name} ({len(data)} bytes)" for _, name, data in files)
        raise ConfigError(
            f"a pvc:// storage receives local files through ConfigMaps, {limit // (1024 * 1024)} MiB at most in "
            f"all; these are {total} bytes: {names}. Use an object-store URL as the storage (s3://, gs://, "
            "abfs://), or copy the file onto the volume and give its pvc://<claim>/<path> as the training file",
            field="settings.storage",
        )
    maps: list[dict[str, Any]] = []
    staged: list[StagedFile] = []
    for dest, name, data in files:
        digest = hashlib.sha256(data).hexdigest()
        key = _CM_KEY.sub("-", name)[:200] or "file"
        parts = []
        for i in range(max(1, -(-len(data) // part))):
            cm = f"anytune-blob-{digest[:24]}-{i}"
            parts.append(cm)
            maps.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": cm,
                        "namespace": namespace,
                        "labels": {MANAGED_LABEL: "anytune", "anytune.dev/blob": digest[:63]},
                    },
                    "binaryData": {key: _b64(data[i * part : (i + 1) * part])},
                }
            )
        staged.append(StagedFile(dest=dest, parts=tuple(parts), key=key, sha256=digest, size=len(data)))
    return maps, staged


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _nodes(spec: JobSpec) -> int:
    return (spec.local or LocalOptions()).nodes


def rendezvous(name: str, spec: JobSpec, settings: KubernetesSettings) -> str:
    """``<job>-0.<job>:<port>``: node 0's name in the headless Service's DNS."""
    given = (spec.local or LocalOptions()).rdzv_endpoint
    port = given.rsplit(":", 1)[1] if given else str(settings.rdzv_port)
    return f"{name}-0.{name}:{port}"


def pod_spec_json(spec: JobSpec, name: str, settings: KubernetesSettings, *, operator: bool = False) -> str:
    """The spec a pod trains with: what the user set, without the local file paths (the pod copies
    the files) and the ``hf`` section; a multi-node job's rendezvous is the Service's (an
    ``operator``'s pods get theirs from the Kubeflow operator instead)."""
    data = spec.model_dump(
        mode="json", exclude_none=True, exclude_defaults=True, exclude={"training_file", "validation_file", "hf"}
    )
    data["base_model"] = spec.base_model
    if _nodes(spec) > 1:
        local = data.setdefault("local", {})
        local.pop("node_rank", None)
        if operator:
            local.pop("rdzv_endpoint", None)
        else:
            local["rdzv_endpoint"] = rendezvous(name, spec, settings)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _installed_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def storage_requirements(storage: Storage) -> list[str]:
    """What the pod installs to reach an object store: fsspec and the protocol's package, at this
    environment's versions when installed here."""
    if storage.is_volume:
        return []
    names = ["fsspec"] + ([PROTOCOL_PACKAGES[storage.protocol]] if storage.protocol in PROTOCOL_PACKAGES else [])
    out = []
    for n in names:
        version = _installed_version(n)
        out.append(f"{n}=={version}" if version else n)
    return out


def _storage_root(storage: Storage) -> str:
    return STORAGE_MOUNT if storage.is_volume else str(storage.url)


def trainer_args(
    spec: JobSpec,
    name: str,
    inputs: Inputs,
    storage: Storage,
    settings: KubernetesSettings,
    *,
    pins: Sequence[str] | None = None,
    operator: bool = False,
) -> list[str]:
    """The ``uv`` arguments of the container (the launcher runs ``uv "$@"``).

    ``operator``: a Kubeflow operator runs the pods and sets ``PET_NNODES``, ``PET_NODE_RANK``,
    ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT``, which ``torch.distributed.run`` reads itself: a
    multi-node command then carries no rendezvous flags, and the node rank is ``$(PET_NODE_RANK)``."""
    root = _storage_root(storage)
    entry = ["--storage", root, "--job", name, "--train", inputs.train]
    if inputs.valid is not None:
        entry += ["--valid", inputs.valid]
    entry += ["--spec", pod_spec_json(spec, name, settings, operator=operator)]
    local = spec.local or LocalOptions()
    nodes = local.nodes
    extras = ",".join([JOB_EXTRA, *spec.report_to])
    wheel = f"file://{STORAGE_MOUNT}/{inputs.wheel}" if storage.is_volume else WHEEL_PLACEHOLDER
    trainer = ["run", "--no-project", "--python", settings.python, "--with", f"anytune[{extras}] @ {wheel}"]
    for requirement in [*job_requirements(settings.requirements, pins=pins), *storage_requirements(storage)]:
        trainer += ["--with", requirement]
    trainer.append("python")
    if nodes > 1 or local.num_devices > 1:
        launch = ["-m", "torch.distributed.run", "--nproc_per_node", str(local.num_devices)]
        # Under an operator torchrun reads the node count, rank and master address from its PET_* env.
        if nodes > 1 and not operator:
            launch += [
                "--nnodes",
                str(nodes),
                # Kubernetes expands $(VAR) from the container's env: the pod's completion index.
                "--node_rank",
                "$(ANYTUNE_NODE_RANK)",
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                rendezvous(name, spec, settings),
                "--rdzv_id",
                name,
            ]
        elif nodes == 1:
            launch.insert(2, "--standalone")
        trainer += launch
    trainer += ["-m", ENTRY_MODULE, *entry]
    if nodes > 1:
        trainer += ["--node-rank", "$(PET_NODE_RANK)" if operator else "$(ANYTUNE_NODE_RANK)"]
    if storage.is_volume:
        return trainer
    stage = ["run", "--no-project", "--python", settings.python]
    for requirement in [*storage_requirements(storage), "uv"]:
        stage += ["--with", requirement]
    return [*stage, "python", "-c", FETCH, f"{storage.url}/{inputs.wheel}", "--", *trainer]


def _env(settings: KubernetesSettings, nodes: int, operator: bool = False) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HF_HUB_DISABLE_PROGRESS_BARS", "value": "1"},
        {"name": "UV_NO_PROGRESS", "value": "1"},
    ]
    if nodes > 1 and not operator:  # an operator's pods are not an Indexed Job's: PET_NODE_RANK instead
        env.append(
            {
                "name": "ANYTUNE_NODE_RANK",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
                },
            }
        )
    if settings.hub_token_secret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": settings.hub_token_secret, "key": settings.hub_token_key}},
            }
        )
    return env


def _resources(settings: KubernetesSettings) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if settings.cpu:
        requests["cpu"] = settings.cpu
    if settings.memory:
        requests["memory"] = settings.memory
    if settings.gpus:
        # An extended resource is requested in limits (requests default to them).
        limits[settings.gpu_resource] = str(settings.gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _init_container(staged: Sequence[StagedFile], image: str) -> dict[str, Any]:
    lines = ["set -e"]
    for i, f in enumerate(staged):
        dest = f"{STORAGE_MOUNT}/{f.dest}"
        sources = " ".join(f"{STAGED_MOUNT}/{i}/{j}/{f.key}" for j in range(len(f.parts)))
        # Written whole under a temporary name, then renamed: a half-copied input is never used.
        lines.append(
            f'if [ ! -f "{dest}" ]; then mkdir -p "$(dirname "{dest}")"; '
            f'cat {sources} > "{dest}.part"; mv "{dest}.part" "{dest}"; fi'
        )
    mounts: list[dict[str, Any]] = [{"name": "storage", "mountPath": STORAGE_MOUNT}]
    mounts += [
        {"name": f"staged-{i}-{j}", "mountPath": f"{STAGED_MOUNT}/{i}/{j}", "readOnly": True}
        for i, f in enumerate(staged)
        for j in range(len(f.parts))
    ]
    return {
        "name": "stage-inputs",
        "image": image,
        "command": ["/bin/sh", "-c", "\n".join(lines)],
        "volumeMounts": mounts,
    }


def _container(
    spec: JobSpec,
    name: str,
    settings: KubernetesSettings,
    storage: Storage,
    inputs: Inputs,
    pins: Sequence[str] | None,
    operator: bool = False,
) -> dict[str, Any]:
    nodes = _nodes(spec)
    container: dict[str, Any] = {
        "name": "trainer",
        "image": settings.image,
        "command": ["/bin/sh", "-c", LAUNCHER, "anytune-launch"],
        "args": trainer_args(spec, name, inputs, storage, settings, pins=pins, operator=operator),
        "env": _env(settings, nodes, operator),
        "resources": _resources(settings),
        "volumeMounts": [],
    }
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    if settings.storage_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.storage_secret}}]
    if storage.is_volume:
        mount: dict[str, Any] = {"name": "storage", "mountPath": STORAGE_MOUNT}
        if storage.subpath:
            mount["subPath"] = storage.subpath
        container["volumeMounts"].append(mount)
    if settings.shm_size:
        container["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
    if nodes > 1 and not operator:
        container["ports"] = [{"name": "rdzv", "containerPort": _port(name, spec, settings)}]
    return container


def _port(name: str, spec: JobSpec, settings: KubernetesSettings) -> int:
    return int(rendezvous(name, spec, settings).rsplit(":", 1)[1])


def _volumes(settings: KubernetesSettings, storage: Storage, inputs: Inputs) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = []
    if storage.is_volume:
        volumes.append({"name": "storage", "persistentVolumeClaim": {"claimName": storage.claim}})
    if settings.shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}})
    volumes += [
        {"name": f"staged-{i}-{j}", "configMap": {"name": cm}}
        for i, f in enumerate(inputs.staged)
        for j, cm in enumerate(f.parts)
    ]
    return volumes


def _pod(
    spec: JobSpec, name: str, settings: KubernetesSettings, storage: Storage, inputs: Inputs, pins: Sequence[str] | None
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [_container(spec, name, settings, storage, inputs, pins)],
        "terminationGracePeriodSeconds": settings.grace_period,
    }
    if inputs.staged:
        init = _init_container(inputs.staged, settings.image)
        if storage.subpath:
            init["volumeMounts"][0]["subPath"] = storage.subpath
        pod["initContainers"] = [init]
    volumes = _volumes(settings, storage, inputs)
    if volumes:
        pod["volumes"] = volumes
    optional = {
        "nodeSelector": dict(settings.node_selector) or None,
        "tolerations": [dict(t) for t in settings.tolerations] or None,
        "priorityClassName": settings.priority_class,
        "serviceAccountName": settings.service_account,
        "subdomain": name if _nodes(spec) > 1 else None,
    }
    pod.update({k: v for k, v in optional.items() if v is not None})
    return pod


def _service(name: str, namespace: str, labels: Mapping[str, str], port: int) -> dict[str, Any]:
    """The headless Service that gives each pod of an Indexed Job a DNS name (``<job>-<i>.<job>``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "clusterIP": "None",
            # Node 0's name resolves before its pod is ready: the rendezvous starts first.
            "publishNotReadyAddresses": True,
            "selector": {JOB_LABEL: name},
            "ports": [{"name": "rdzv", "port": port}],
        },
    }


def _metadata(
    spec: JobSpec, key: str, settings: KubernetesSettings, storage: Storage
) -> tuple[dict[str, str], dict[str, str]]:
    """The labels and annotations of every workload (and its pods): what get/find/list read back."""
    labels = {MANAGED_LABEL: "anytune", LABEL_KEY: label_value(key), JOB_LABEL: job_name(key)}
    labels.update({f"anytune.dev/tag-{k}"[:63]: v for k, v in sorted(spec.tags.items()) if _LABEL_VALUE.match(v)})
    annotations = {ANNOTATION_KEY: key, "anytune.dev/base-model": spec.base_model}
    if settings.storage:
        annotations["anytune.dev/storage"] = storage.shown
    return labels, annotations


def build_manifests(
    spec: JobSpec,
    key: str,
    settings: KubernetesSettings,
    storage: Storage,
    inputs: Inputs,
    *,
    configmaps: Sequence[dict[str, Any]] = (),
    pins: Sequence[str] | None = None,
) -> Manifests:
    """The objects ``submit`` creates for ``spec`` under ``key`` (pure; ``pins`` default to this
    environment's, :func:`anytune.local_backend.jobpackage.local_pins`)."""
    name = job_name(key)
    ns = settings.namespace
    nodes = _nodes(spec)
    labels, annotations = _metadata(spec, key, settings, storage)
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
            "spec": _pod(spec, name, settings, storage, inputs, pins),
        },
    }
    service = None
    if nodes > 1:
        job_spec.update({"completionMode": "Indexed", "completions": nodes, "parallelism": nodes})
        service = _service(name, ns, labels, _port(name, spec, settings))
    if settings.active_deadline:
        job_spec["activeDeadlineSeconds"] = settings.active_deadline
    if settings.ttl_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = settings.ttl_after_finished
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": job_spec,
    }
    return Manifests(job=job, service=service, configmaps=list(configmaps))


def kubeflow_manifest(
    kind: str,
    spec: JobSpec,
    key: str,
    settings: KubernetesSettings,
    storage: Storage,
    inputs: Inputs,
    *,
    pins: Sequence[str] | None = None,
) -> Manifests:
    """The ``TrainJob`` (``kind`` ``trainjob``) or ``PyTorchJob`` (``pytorchjob``) that runs the same
    container as :func:`build_manifests`'s Job (pure): no Service (the operator gives the rendezvous)
    and no ConfigMaps.

    Raises:
        ConfigError: what the operator's object cannot carry: a ``pvc://`` storage (its inputs are
            staged by an init container, which neither builder has), and for a TrainJob a priority
            class, a storage Secret (``envFrom``) or an image pull policy (its trainer has neither).
    """
    from .kubeflow import pytorchjob_manifest, trainjob_manifest

    title = {"trainjob": "TrainJob", "pytorchjob": "PyTorchJob"}[kind]
    if storage.is_volume:
        raise ConfigError(
            f"a {title} cannot use a pvc:// storage: its inputs are staged onto the volume by an init container, "
            "which the Kubeflow operators' objects do not carry. Use an object-store URL as the storage (s3://, "
            "gs://, abfs://), or workload 'job'",
            field="settings.storage",
        )
    if kind == "trainjob":
        for field_name, value in (
            ("storage_secret", settings.storage_secret),
            ("image_pull_policy", settings.image_pull_policy),
        ):
            if value:
                raise ConfigError(
                    f"a TrainJob's trainer cannot carry {field_name} (Kubeflow Trainer's trainer has neither envFrom "
                    "nor imagePullPolicy): give the pods the storage credentials through their service account "
                    "(workload identity), or use workload 'pytorchjob' or 'job'",
                    field=f"settings.{field_name}",
                )
    name = job_name(key)
    nodes = _nodes(spec)
    labels, annotations = _metadata(spec, key, settings, storage)
    container = _container(spec, name, settings, storage, inputs, pins, operator=True)
    common: dict[str, Any] = {
        "name": name,
        "namespace": settings.namespace,
        "labels": labels,
        "annotations": annotations,
        "image": container["image"],
        "command": container["command"],
        "args": container["args"],
        "env": container["env"],
        "resources": container["resources"] or None,
        "num_nodes": nodes,
        "procs_per_node": (spec.local or LocalOptions()).num_devices,
        "node_selector": dict(settings.node_selector) or None,
        "tolerations": [dict(t) for t in settings.tolerations],
        "priority_class": settings.priority_class,
        "service_account": settings.service_account,
        "volumes": _volumes(settings, storage, inputs),
        "volume_mounts": container["volumeMounts"],
        "active_deadline_seconds": settings.active_deadline or None,
        "field_prefix": "settings.",
    }
    if kind == "trainjob":
        job = trainjob_manifest(**common)
    else:
        extra: dict[str, Any] = {k: container[k] for k in ("envFrom", "imagePullPolicy") if k in container}
        # No retry, as the Job's backoffLimit 0: a resumed job continues from its checkpoint instead.
        job = pytorchjob_manifest(**common, restart_policy="Never", backoff_limit=0, container_extra=extra)
    return Manifests(job=job)
