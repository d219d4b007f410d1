"""The ``kubernetes`` provider: the contract, on the user's own cluster (a Job, or a Kubeflow
TrainJob or PyTorchJob: ``workload``).

Reliability, and why:

* The workload's name is derived from the idempotency key (:func:`.manifests.job_name`): a create that
  fails ambiguously (dropped connection, 408, 5xx) or answers 409 ``AlreadyExists`` is resolved by
  reading that name (:func:`anytune._create_once.create_once`), never by a second create.
* Everything a bad setting would break is checked before anything is created: the namespace, the
  PersistentVolumeClaim, the Secrets named (their existence only: the body is never parsed), a node
  that can hold the GPUs asked for, the size of what a volume would receive through ConfigMaps.
* Reads retry on 408/429/5xx and connection errors, honouring ``Retry-After``, within a deadline.
* Every client and urllib3 exception becomes an anytune error at :func:`anytune._boundary.boundary`,
  which scrubs it before chaining; pod logs are redacted as they are read.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from anytune._boundary import Translate, boundary
from anytune._capabilities import Capabilities
from anytune._create_once import create_once
from anytune._provider import (
    PlannedRequest,
    PlannedUpload,
    Provider,
    ProviderArgs,
    ProviderSettings,
    SubmitPlan,
)
from anytune._retry import RetryPolicy, retry_call
from anytune._secrets import redact
from anytune._spec import JobSpec, LocalOptions, Method, Quantization
from anytune._timestamps import parse_timestamp
from anytune._types import Event, FineTunedModel, JobError, JobRecord, JobStatus, MetricPoint
from anytune._waiting import wait_until
from anytune.errors import (
    AnytuneError,
    ConfigError,
    InvalidRequestError,
    JobNotFoundError,
    NotSupportedError,
    ProviderError,
)
from anytune.local_backend.joblog import ERROR_PREFIX, LOG_ERROR_PREFIX, RESULT_PREFIX, WARNING_PREFIX, parse_line
from anytune.local_backend.jobpackage import build_wheel

from .errors import api_status, is_ambiguous, is_transient, retry_after, translate_error
from .kaito_mode import (
    KAITO_GROUP,
    KAITO_PLURAL,
    KAITO_VERSION,
    KaitoPlan,
    kaito_data,
    kaito_plan,
    output_of,
    require_kaito_settings,
    workspace_record,
)
from .kubeflow import PYTORCH_CONTAINER, TRAINER_NODE, pytorchjob_status, trainjob_status
from .manifests import (
    ANNOTATION_KEY,
    JOB_LABEL,
    LABEL_KEY,
    MANAGED_LABEL,
    STORAGE_MOUNT,
    Inputs,
    Manifests,
    StagedFile,
    build_manifests,
    configmaps_for,
    job_name,
    kubeflow_manifest,
)
from .settings import (
    NAME,
    ApiClientFactory,
    KubernetesSettings,
    Storage,
    import_kubernetes,
    make_api_client,
    refuse_client_folder,
)
from .settings import parse_storage as _parse_storage
from .status import JobState, job_state

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from typing_extensions import Unpack

__all__ = ["KUBEFLOW_KINDS", "KubernetesProvider", "choose_workload", "recreatable"]

T = TypeVar("T")

#: Kubeflow workload kinds (``workload`` setting) -> the API group that serves them.
KUBEFLOW_KINDS: Mapping[str, str] = {"trainjob": "trainer.kubeflow.org", "pytorchjob": "kubeflow.org"}
#: Workload kinds this adapter creates.
IMPLEMENTED_WORKLOADS: frozenset[str] = frozenset({"job", "trainjob", "pytorchjob"})
#: A Kubeflow kind -> (group, version, plural, object kind, the trainer container's name).
KUBEFLOW_APIS: Mapping[str, tuple[str, str, str, str, str]] = {
    "trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob", TRAINER_NODE),
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", PYTORCH_CONTAINER),
}
_BY_KIND = {api[3]: kind for kind, api in KUBEFLOW_APIS.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_TERMINAL_SRC = "9"


def choose_workload(setting: str, served_groups: frozenset[str], implemented: frozenset[str]) -> str:
    """The workload kind to create (pure): ``job``/``trainjob``/``pytorchjob`` as set, or for
    ``auto`` the first Kubeflow kind both implemented and served by the cluster, else ``job``.

    Raises:
        NotSupportedError: a kind set explicitly that is not implemented, or not served.
    """
    if setting == "auto":
        for kind, group in KUBEFLOW_KINDS.items():
            if kind in implemented and group in served_groups:
                return kind
        return "job"
    if setting not in implemented:
        raise NotSupportedError(
            f"workload {setting!r} is not wired yet: use workload 'job' (an Indexed Job for several nodes)",
            field="settings.workload",
            provider=NAME,
        )
    needed = KUBEFLOW_KINDS.get(setting)
    if needed is not None and needed not in served_groups:
        raise NotSupportedError(
            f"workload {setting!r} needs the Kubeflow API group {needed}, which this cluster does not serve",
            field="settings.workload",
            provider=NAME,
        )
    return setting


def _tomb_metadata(ns: str, name: str, tomb: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata of a deleted workload, as its cancel record (``<name>-cancelled``) kept it."""
    meta = tomb.get("metadata") or {}
    return {
        "name": name,
        "namespace": ns,
        "labels": meta.get("labels") or {},
        "annotations": meta.get("annotations") or {},
        "creationTimestamp": (tomb.get("data") or {}).get("created"),
    }


def _eid(t: datetime | None, src: str, index: int) -> str:
    """Event ids sort as strings in time order, ties by source then position (stable across reads)."""
    micros = int(((t or _EPOCH) - _EPOCH).total_seconds() * 1_000_000)
    return f"{max(micros, 0):017d}-{src}{index:07d}"


def _split_stamp(line: str) -> tuple[datetime | None, str]:
    """A log line read with ``timestamps=true``: (its time, its text)."""
    stamp, sep, text = line.partition(" ")
    when = parse_timestamp(stamp) if sep else None
    return (when, text) if when is not None else (None, line)


def _level(text: str) -> Literal["info", "warning", "error"]:
    if text.startswith((LOG_ERROR_PREFIX, ERROR_PREFIX, "Traceback (most recent call last)")):
        return "error"
    return "warning" if text.startswith(WARNING_PREFIX) else "info"


#: Fields the API server adds to a Job (and its pod template) that a create must not send again.
_SERVER_LABELS = ("controller-uid", "job-name", "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name")


def recreatable(job: Mapping[str, Any]) -> dict[str, Any]:
    """A Job read back, as a create request for the same Job (pure): without its status, server
    metadata, generated selector and the controller's labels."""
    if not job:
        return {}
    meta = job.get("metadata") or {}
    keep = ("name", "namespace", "labels", "annotations")
    if job.get("kind") in _BY_KIND:  # a Kubeflow object: its spec is what was sent
        return {
            "apiVersion": job.get("apiVersion"),
            "kind": job.get("kind"),
            "metadata": {k: meta[k] for k in keep if meta.get(k) is not None},
            "spec": dict(job.get("spec") or {}),
        }
    spec = {k: v for k, v in (job.get("spec") or {}).items() if k not in ("selector", "manualSelector")}
    template = dict(spec.get("template") or {})
    tmeta = dict(template.get("metadata") or {})
    tmeta["labels"] = {k: v for k, v in (tmeta.get("labels") or {}).items() if k not in _SERVER_LABELS}
    template["metadata"] = tmeta
    spec["template"] = template
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {k: meta[k] for k in keep if meta.get(k) is not None},
        "spec": spec,
    }


def metric_points(lines: Sequence[str]) -> list[MetricPoint]:
    """One metric point per step (a repeated step keeps its last), in step order."""
    points = {p.step: p for kind, p in (parse_line(_split_stamp(x)[1]) for x in lines) if kind == "metric"}
    return [points[s] for s in sorted(points)]


def _last(lines: Sequence[str], kind: str) -> Any:
    for line in reversed(lines):
        found, payload = parse_line(_split_stamp(line)[1])
        if found == kind:
            return payload
    return None


class KubernetesProvider(Provider[KubernetesSettings]):
    """anytune's trainer as a Kubernetes Job, inputs and adapter on a volume or an object store.

    Args:
        settings: the typed settings (default: ``KubernetesSettings()``).
        api_client_factory: makes the configured ``kubernetes.client.ApiClient`` (default: from the
            in-cluster config or the kubeconfig, :func:`.settings.make_api_client`).
        store, home, sleep, clock, rand: as every provider's.
    """

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({Method.SFT, Method.DPO}),
        lora=True,
        quantization=frozenset(Quantization),
        data_formats=frozenset({"chat", "prompt_completion", "preference"}),
        # The pods run the local trainer: its options section applies (nodes, num_devices, packing...).
        sections=frozenset({"local"}),
        output_name=False,
        pause=False,
        min_examples=1,
        notes="anytune's trainer as a Kubernetes Job; adapter on a PersistentVolumeClaim or an object store",
        service="Kubernetes",
        extra={"storage": "pvc://<claim>[/subpath] or an fsspec URL", "nodes": "local.nodes (Indexed Job)"},
    )
    Settings: ClassVar[type[ProviderSettings]] = KubernetesSettings
    poll_interval: ClassVar[float] = 10.0
    #: ``NAMESPACE/NAME``.
    job_id_pattern: ClassVar[str] = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
    #: The Job is read by name, which the API server answers consistently: no settle window.
    create_settle: ClassVar[float] = 0.0

    def __init__(
        self,
        settings: KubernetesSettings | None = None,
        *,
        api_client_factory: ApiClientFactory | None = None,
        **base: Unpack[ProviderArgs],
    ) -> None:
        super().__init__(settings, **base)
        self._factory = api_client_factory
        self._lock = threading.Lock()
        self._api_obj: ApiClient | None = None
        self._logs: dict[str, list[str]] = {}
        self._final_logs: set[str] = set()

    # -- plumbing -------------------------------------------------------------------------------
    def _api(self) -> ApiClient:
        with self._lock:
            if self._api_obj is None:
                import_kubernetes(self.name)
                self._api_obj = self._factory() if self._factory is not None else make_api_client(self.settings)
            return self._api_obj

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._api())

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self._api())

    @property
    def _policy(self) -> RetryPolicy:
        s = self.settings
        return s.retry_policy(max_attempts=s.max_attempts, deadline=s.retry_deadline, max_backoff=s.max_backoff)

    def _translator(self, what: str, job_ref: str | None = None) -> Translate:
        def translate(exc: Exception) -> AnytuneError | None:
            return translate_error(exc, provider=self.name, what=what, job_ref=job_ref)

        return translate

    def _call(self, what: str, fn: Callable[[], T], *, job_ref: str | None = None) -> T:
        """One API call: retried while transient, its failure translated."""
        with boundary(self._translator(what, job_ref)):
            return retry_call(
                fn, policy=self._policy, retry_on=is_transient, retry_after=retry_after, **self.timing, what=what
            )

    def _read_or_none(self, what: str, fn: Callable[[], T]) -> T | None:
        """A read whose 404 means "there is none"."""

        def read() -> T | None:
            try:
                return fn()
            except Exception as exc:
                if api_status(exc) == 404:
                    return None
                raise

        return self._call(what, read)

    def _dict(self, obj: Any) -> dict[str, Any]:
        data = self._api().sanitize_for_serialization(obj)
        return data if isinstance(data, dict) else {}

    @property
    def _timeout(self) -> float:
        return self.settings.request_timeout

    # -- validation and plan --------------------------------------------------------------------
    def _storage(self) -> Storage:
        if not self.settings.storage:
            raise ConfigError(
                "the kubernetes provider needs a storage for inputs and the adapter: set storage to "
                "pvc://<claim>[/subpath] or an object-store URL such as s3://bucket/prefix",
                field="settings.storage",
            )
        return _parse_storage(self.settings.storage)

    def validate(self, spec: JobSpec) -> None:
        if self.settings.mode == "kaito":
            # The class's capabilities are the trainer's (a ClassVar, one per provider, as Azure ML's
            # serverless and managed share one): Kaito's narrower ones are enforced here, before
            # anything is created (SFT only, its presets, node sizes, data and output places).
            require_kaito_settings(spec, self.settings, kaito_data(spec, self.settings, read=False)[0])
            return
        refuse_client_folder(spec.base_model, STORAGE_MOUNT)
        local = spec.local or LocalOptions()
        if local.output_dir is not None:
            raise NotSupportedError(
                "the adapter goes to the storage (STORAGE/jobs/<job>/adapter)",
                field="local.output_dir",
                provider=self.name,
                alternatives=["local"],
            )
        if local.device == "mps":
            raise NotSupportedError("a pod runs on CUDA or CPU", field="local.device", provider=self.name)
        gpus = self.settings.gpus
        if gpus and local.num_devices > gpus:
            raise ConfigError(
                f"local.num_devices {local.num_devices} processes per pod need as many GPUs; the pod asks for "
                f"{gpus} (settings.gpus)",
                field="local.num_devices",
            )
        if local.device == "cuda" and not gpus:
            raise ConfigError("local.device cuda needs settings.gpus >= 1", field="settings.gpus")
        kind = self.settings.workload
        if kind in KUBEFLOW_APIS and self.settings.storage:
            # What the operator's object cannot carry (a pvc:// storage; a TrainJob's priority class,
            # storage Secret, pull policy), refused here too: the builder's checks are pure.
            kubeflow_manifest(kind, spec, "validate", self.settings, self._storage(), Inputs("train", None, "wheel"))

    @property
    def _kaito(self) -> bool:
        return self.settings.mode == "kaito"

    def _refuse_other_modes(self) -> None:
        choose_workload(self.settings.workload, frozenset(), IMPLEMENTED_WORKLOADS)

    def _inputs(
        self, spec: JobSpec, storage: Storage, wheel: tuple[str, bytes]
    ) -> tuple[Inputs, list[dict[str, Any]], list[tuple[str, str, bytes]]]:
        """Where the inputs go under the storage root (content addressed), for a volume the
        ConfigMaps that carry them, and the files themselves; no I/O beyond reading the local files."""
        files: list[tuple[str, str, bytes]] = []
        paths: dict[str, str] = {}
        for role, path in (("train", spec.training_file), ("valid", spec.validation_file)):
            if path is None:
                continue
            data = Path(path).read_bytes()
            rel = f"inputs/{hashlib.sha256(data).hexdigest()[:24]}/{Path(path).name}"
            paths[role] = rel
            files.append((rel, Path(path).name, data))
        wheel_name, wheel_bytes = wheel
        wheel_rel = f"wheels/{hashlib.sha256(wheel_bytes).hexdigest()[:24]}/{wheel_name}"
        files.append((wheel_rel, wheel_name, wheel_bytes))
        configmaps: list[dict[str, Any]] = []
        staged: list[StagedFile] = []
        if storage.is_volume:
            configmaps, staged = configmaps_for(files, namespace=self.settings.namespace)
        inputs = Inputs(train=paths["train"], valid=paths.get("valid"), wheel=wheel_rel, staged=tuple(staged))
        return inputs, configmaps, files

    def _manifests(
        self, spec: JobSpec, key: str, kind: str = "job"
    ) -> tuple[Manifests, Storage, list[tuple[str, str, bytes]]]:
        storage = self._storage()
        if kind != "job" and storage.is_volume:  # refused before the wheel is built
            kubeflow_manifest(kind, spec, key, self.settings, storage, Inputs("", None, ""))
        inputs, configmaps, files = self._inputs(spec, storage, build_wheel())
        if kind != "job":
            return kubeflow_manifest(kind, spec, key, self.settings, storage, inputs), storage, files
        manifests = build_manifests(spec, key, self.settings, storage, inputs, configmaps=configmaps)
        return manifests, storage, files

    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        if self._kaito:
            return self._kaito_submit_plan(kaito_plan(spec, idempotency_key, self.settings))
        # Offline: "auto" shows the Job (at submit it becomes a TrainJob or PyTorchJob when the cluster
        # serves one), a Kubeflow kind set explicitly shows that object.
        kind = self.settings.workload if self.settings.workload in KUBEFLOW_APIS else "job"
        manifests, storage, files = self._manifests(spec, idempotency_key, kind)
        ns = self.settings.namespace
        requests = []
        for obj in manifests.all():
            if kind != "job":
                group, version, plural, _, _ = KUBEFLOW_APIS[kind]
                requests.append(
                    PlannedRequest(operation=f"POST /apis/{group}/{version}/namespaces/{ns}/{plural}", body=obj)
                )
                continue
            shown = obj
            if obj["kind"] == "ConfigMap":  # the bytes are the uploads below, not something to read
                shown = {**obj, "binaryData": {k: f"<{len(v) * 3 // 4} bytes>" for k, v in obj["binaryData"].items()}}
            path = {"ConfigMap": "api/v1", "Service": "api/v1", "Job": "apis/batch/v1"}[obj["kind"]]
            plural = obj["kind"].lower() + "s"
            requests.append(PlannedRequest(operation=f"POST /{path}/namespaces/{ns}/{plural}", body=shown))
        uploads = [
            PlannedUpload(
                path=f"{storage.shown}/{rel}",
                purpose="staged in ConfigMaps" if storage.is_volume else "uploaded through fsspec",
                bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
            for rel, _, data in files
        ]
        outputs = f"{storage.shown}/jobs/{manifests.name}/"
        title = manifests.job["kind"]
        notes = [f"{title} {ns}/{manifests.name}; outputs at {outputs} (adapter/, anytune_result.json)"]
        if self.settings.workload == "auto":
            notes.append(
                "workload auto: submit creates a TrainJob, else a PyTorchJob, when the cluster serves one "
                "(with an object-store storage), else this Job"
            )
        nodes = (spec.local or LocalOptions()).nodes
        if nodes > 1 and kind != "job":
            notes.append(f"{nodes} pods; the Kubeflow operator gives them the rendezvous (PET_* environment)")
        elif nodes > 1:
            notes.append(
                f"{nodes} pods (Indexed Job) meet at {manifests.name}-0.{manifests.name} through a headless Service; "
                "a pvc:// storage must be ReadWriteMany"
            )
        return SubmitPlan(provider=self.name, uploads=uploads, requests=requests, notes=notes)

    def served_groups(self) -> frozenset[str]:
        """The API groups the cluster serves (``GET /apis``): where ``workload = "auto"`` looks
        for the Kubeflow operators (:func:`choose_workload`)."""
        return frozenset(self.served_versions())

    def served_versions(self) -> dict[str, frozenset[str]]:
        """Each API group the cluster serves (``GET /apis``, one call) -> its served versions."""
        from kubernetes import client

        apis = client.ApisApi(self._api())
        found = self._call(
            "listing the cluster's API groups", lambda: apis.get_api_versions(_request_timeout=self._timeout)
        )
        return {str(g.name): frozenset(str(v.version) for v in g.versions or []) for g in found.groups or []}

    def _workload(self, storage: Storage) -> str:
        """The workload kind to create; the cluster is asked only when a Kubeflow kind could be chosen.

        ``auto`` passes over a kind whose API version is not served, a TrainJob CRD without
        ``runtimePatches`` (Trainer before v2.2) and, as neither operator object stages files onto a
        volume, every Kubeflow kind for a ``pvc://`` storage; a kind set explicitly is refused for those.
        """
        setting = self.settings.workload
        if setting == "job" or (setting == "auto" and storage.is_volume):
            return "job"
        versions = self.served_versions()
        usable: set[str] = set()
        for kind, (group, version, _, title, _) in KUBEFLOW_APIS.items():
            if setting not in ("auto", kind) or group not in versions:
                continue  # an explicit kind not served: choose_workload says so
            explicit = setting == kind
            if version not in versions[group]:
                if explicit:
                    raise ConfigError(
                        f"this cluster serves {group} but not version {version}, which anytune's {title} uses "
                        f"(it serves {', '.join(sorted(versions[group]))}): upgrade the Kubeflow operator",
                        field="settings.workload",
                    )
                continue
            if kind == "trainjob" and not self._trainjob_has_runtime_patches():
                if explicit:
                    raise ConfigError(
                        "this cluster's TrainJob CRD has no spec.runtimePatches (Kubeflow Trainer before v2.2): "
                        "the pods' volumes, node selector and labels would be dropped without a word. Upgrade "
                        "Kubeflow Trainer to v2.2 or later, or use workload 'pytorchjob' or 'job'",
                        field="settings.workload",
                    )
                continue
            usable.add(group)
        return choose_workload(setting, frozenset(usable), IMPLEMENTED_WORKLOADS)

    def _trainjob_has_runtime_patches(self) -> bool:
        """The served ``trainjobs.trainer.kubeflow.org`` CRD's schema has ``spec.runtimePatches``."""
        from kubernetes import client

        ext = client.ApiextensionsV1Api(self._api())
        group, version = KUBEFLOW_APIS["trainjob"][:2]

        def read() -> dict[str, Any]:
            # Raw JSON: the client's model of a CRD's schema is not needed, only a key of it.
            response = ext.read_custom_resource_definition(
                f"trainjobs.{group}", _preload_content=False, _request_timeout=self._timeout
            )
            data = json.loads(response.data or b"{}")
            return data if isinstance(data, dict) else {}

        crd = self._read_or_none("reading the TrainJob CRD", read) or {}
        for served in (crd.get("spec") or {}).get("versions") or []:
            if served.get("name") != version:
                continue
            schema = (served.get("schema") or {}).get("openAPIV3Schema") or {}
            spec = ((schema.get("properties") or {}).get("spec") or {}).get("properties") or {}
            return "runtimePatches" in spec
        return False

    # -- checks before anything is created -------------------------------------------------------
    def _check_namespace(self) -> None:
        core, ns = self._core(), self.settings.namespace
        if (
            self._read_or_none("reading the namespace", lambda: core.read_namespace(ns, _request_timeout=self._timeout))
            is None
        ):
            raise ConfigError(f"namespace {ns!r} does not exist in the cluster", field="settings.namespace")

    def _check_secrets(self, secrets: Sequence[tuple[str, str | None]]) -> None:
        """Each named Secret exists in the namespace; ``secrets`` is (setting, name) pairs."""
        core, ns = self._core(), self.settings.namespace
        for field, secret in secrets:
            if secret is None:
                continue

            def read(name: str = secret) -> bool:
                # Existence only: the body (the secret's values) is never parsed.
                response = core.read_namespaced_secret(name, ns, _preload_content=False, _request_timeout=self._timeout)
                response.release_conn()
                return True

            if self._read_or_none(f"looking up Secret {secret}", read) is None:
                raise ConfigError(f"Secret {secret!r} does not exist in namespace {ns!r}", field=field)

    def _check_cluster(self, storage: Storage, pods: int = 1) -> None:
        core, ns, s = self._core(), self.settings.namespace, self.settings
        self._check_namespace()
        if storage.claim is not None:
            claim = storage.claim
            found = self._read_or_none(
                "reading the PersistentVolumeClaim",
                lambda: core.read_namespaced_persistent_volume_claim(claim, ns, _request_timeout=self._timeout),
            )
            if found is None:
                raise ConfigError(
                    f"PersistentVolumeClaim {claim!r} does not exist in namespace {ns!r}", field="settings.storage"
                )
        self._check_secrets(
            [("settings.hub_token_secret", s.hub_token_secret), ("settings.storage_secret", s.storage_secret)]
        )
        if s.gpus:
            self._check_gpus(core, pods)

    def _check_gpus(self, core: Any, pods: int) -> None:
        """Some schedulable nodes matching ``node_selector`` can hold ``pods`` pods of ``gpus`` each
        (allocatable, not what is free now: a busy cluster queues the job, an impossible one is refused)."""
        s = self.settings
        nodes = self._call("listing nodes", lambda: core.list_node(_request_timeout=self._timeout))
        held = []
        for node in nodes.items:
            labels = node.metadata.labels or {}
            if any(labels.get(k) != v for k, v in s.node_selector.items()) or (node.spec and node.spec.unschedulable):
                continue
            allocatable = (node.status.allocatable or {}) if node.status else {}
            try:
                held.append(int(str(allocatable.get(s.gpu_resource, "0"))))
            except ValueError:
                continue
        where = f" matching nodeSelector {s.node_selector}" if s.node_selector else ""
        best = max(held, default=0)
        if best < s.gpus:
            raise ConfigError(
                f"no schedulable node{where} has {s.gpus} {s.gpu_resource} allocatable (the most is {best}): lower "
                "gpus, change node_selector, or add GPU nodes",
                field="settings.gpus",
            )
        if sum(h // s.gpus for h in held) < pods:
            raise ConfigError(
                f"{pods} pods of {s.gpus} {s.gpu_resource} do not fit on the schedulable nodes{where} "
                f"({sum(held)} {s.gpu_resource} allocatable in all): lower local.nodes or gpus",
                field="local.nodes",
            )

    # -- submit ---------------------------------------------------------------------------------
    def _upload(self, storage: Storage, files: Sequence[tuple[str, str, bytes]]) -> None:
        """Object-store storage: each input and the wheel, once per content (skipped when present)."""
        import fsspec.core

        with boundary(self._translator(f"uploading the inputs to {storage.shown}")):
            fs, root = fsspec.core.url_to_fs(str(storage.url))
            for rel, _, data in files:
                target = f"{str(root).rstrip('/')}/{rel}"
                if fs.exists(target):
                    continue
                fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                fs.pipe_file(target, data)

    def _create_named(self, what: str, create: Callable[[], Any]) -> None:
        """Create an object whose name says what it is; 409 (already there) is what was wanted."""

        def once() -> None:
            try:
                create()
            except Exception as exc:
                if api_status(exc) != 409:
                    raise

        self._call(what, once)

    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        if self._kaito:
            return self._kaito_submit(spec, idempotency_key)
        kind = self._workload(self._storage())
        if kind != "job":
            return self._kubeflow_submit(spec, idempotency_key, kind)
        manifests, storage, files = self._manifests(spec, idempotency_key)  # bad input raises here
        name, ns = manifests.name, self.settings.namespace
        existing = self._read_job(name)
        if existing is not None:
            return self._record(existing)
        self._check_cluster(storage, (spec.local or LocalOptions()).nodes)
        core, batch = self._core(), self._batch()
        if not storage.is_volume:
            self._upload(storage, files)
        for cm in manifests.configmaps:

            def create_map(body: dict[str, Any] = cm) -> Any:
                return core.create_namespaced_config_map(ns, body, _request_timeout=self._timeout)

            self._create_named(f"creating ConfigMap {cm['metadata']['name']}", create_map)
        if manifests.service is not None:
            svc = manifests.service
            self._create_named(
                f"creating Service {name}",
                lambda: core.create_namespaced_service(ns, svc, _request_timeout=self._timeout),
            )

        def create() -> Any:
            return batch.create_namespaced_job(ns, manifests.job, _request_timeout=self._timeout)

        with boundary(self._translator(f"creating Job {ns}/{name}")):
            job = create_once(
                create,
                lambda: self._read_job(name, raw=True),
                is_ambiguous=is_ambiguous,
                retry_on=is_transient,
                policy=self._policy,
                retry_after=retry_after,
                settle=self.create_settle,
                **self.timing,
                what=f"{self.name}: creating Job {ns}/{name}",
            )
        return self._record(self._dict(job) if not isinstance(job, dict) else job)

    def _kubeflow_submit(self, spec: JobSpec, key: str, kind: str) -> JobRecord:
        manifests, storage, files = self._manifests(spec, key, kind)  # bad input raises here
        name, ns = manifests.name, self.settings.namespace
        existing = self._read_workload(ns, name)
        if existing is not None:
            return self._record(existing)
        self._check_cluster(storage, (spec.local or LocalOptions()).nodes)
        self._upload(storage, files)
        made = self._create_workload(ns, manifests.job, f"creating {manifests.job['kind']} {ns}/{name}")
        return self._record(made)

    def _create_workload(self, ns: str, manifest: dict[str, Any], what: str) -> dict[str, Any]:
        """Create a Job or a Kubeflow object once: an ambiguous failure or a 409 is resolved by reading it."""
        name = str(manifest["metadata"]["name"])
        kind = _BY_KIND.get(str(manifest.get("kind")), "job")
        if kind == "job":
            batch = self._batch()

            def create() -> Any:
                return batch.create_namespaced_job(ns, manifest, _request_timeout=self._timeout)

        else:
            api, (group, version, plural, _, _) = self._custom(), KUBEFLOW_APIS[kind]

            def create() -> Any:
                return api.create_namespaced_custom_object(
                    group, version, ns, plural, manifest, _request_timeout=self._timeout
                )

        with boundary(self._translator(what)):
            made = create_once(
                create,
                lambda: self._read_kind(ns, name, kind),
                is_ambiguous=is_ambiguous,
                retry_on=is_transient,
                policy=self._policy,
                retry_after=retry_after,
                settle=self.create_settle,
                **self.timing,
                what=f"{self.name}: {what}",
            )
        found = made if isinstance(made, dict) else self._dict(made)
        return {"kind": manifest.get("kind"), **found}

    def _read_kind(self, ns: str, name: str, kind: str) -> dict[str, Any] | None:
        """The workload ``name`` of ``kind`` (``job`` or a Kubeflow kind), ``None`` when absent or not served."""
        if kind == "job":
            job = self._read_job(name, namespace=ns)
            return {"kind": "Job", **job} if job is not None else None
        api, (group, version, plural, title, _) = self._custom(), KUBEFLOW_APIS[kind]
        found = self._read_or_none(
            f"reading {title} {ns}/{name}",
            lambda: api.get_namespaced_custom_object(group, version, ns, plural, name, _request_timeout=self._timeout),
        )
        return dict(found) if isinstance(found, Mapping) else None

    def _read_workload(self, ns: str, name: str) -> dict[str, Any] | None:
        """The workload ``name`` whatever its kind: the kind set first, then Job, TrainJob, PyTorchJob
        (the name is the idempotency key's, so one kind at most holds it)."""
        setting = self.settings.workload
        first = [setting] if setting in KUBEFLOW_APIS else []
        for kind in dict.fromkeys([*first, "job", *KUBEFLOW_APIS]):
            found = self._read_kind(ns, name, kind)
            if found is not None:
                return found
        return None

    def _delete_workload(self, ns: str, name: str, kind: str) -> None:
        if kind == "job":
            self._delete_job(ns, name)
            return
        api, (group, version, plural, title, _) = self._custom(), KUBEFLOW_APIS[kind]
        # Background: the operator's pods get SIGTERM and their grace period, as a Job's.
        self._call(
            f"deleting {title} {ns}/{name}",
            self._ignore_404(
                lambda: api.delete_namespaced_custom_object(
                    group, version, ns, plural, name, propagation_policy="Background", _request_timeout=self._timeout
                )
            ),
        )

    # -- reads ----------------------------------------------------------------------------------
    def _split(self, job_id: str) -> tuple[str, str]:
        self.check_job_id(job_id)
        ns, _, name = job_id.partition("/")
        return ns, name

    def _read_job(self, name: str, *, raw: bool = False, namespace: str | None = None) -> Any:
        ns = namespace or self.settings.namespace
        batch = self._batch()
        found = self._read_or_none(
            f"reading Job {ns}/{name}", lambda: batch.read_namespaced_job(name, ns, _request_timeout=self._timeout)
        )
        if found is None:
            return None
        return found if raw else self._dict(found)

    def _pods(self, ns: str, name: str, selector: str | None = None) -> list[dict[str, Any]]:
        core = self._core()
        chosen = selector or f"{JOB_LABEL}={name}"
        pods = self._call(
            "listing the job's pods",
            lambda: core.list_namespaced_pod(ns, label_selector=chosen, _request_timeout=self._timeout),
        )
        found = [self._dict(p) for p in pods.items]
        # Node 0 (a PyTorchJob's master) first: its log is the job's; then by creation.
        return sorted(
            found,
            key=lambda p: (
                ((p.get("metadata") or {}).get("labels") or {}).get("training.kubeflow.org/replica-type", "master")
                != "master",
                ((p.get("metadata") or {}).get("annotations") or {}).get(
                    "batch.kubernetes.io/job-completion-index", "0"
                ),
                (p.get("metadata") or {}).get("creationTimestamp") or "",
            ),
        )

    def _tombstone(self, ns: str, name: str) -> dict[str, Any] | None:
        core = self._core()
        found = self._read_or_none(
            "reading the cancel record",
            lambda: core.read_namespaced_config_map(f"{name}-cancelled", ns, _request_timeout=self._timeout),
        )
        return self._dict(found) if found is not None else None

    def _state(self, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] | None) -> JobState:
        kind = _BY_KIND.get(str(job.get("kind")))
        if kind is None:
            return job_state(job, pods or [])
        status, words = (trainjob_status if kind == "trainjob" else pytorchjob_status)(job)
        if status is JobStatus.QUEUED:  # why its pods wait (unschedulable, an image not pulled), as a Job's
            waiting = job_state({}, pods or [])
            if waiting.status is JobStatus.FAILED or waiting.message:
                return waiting
        raw = status.value
        for c in (job.get("status") or {}).get("conditions") or []:
            if str(c.get("status")) == "True":
                raw = str(c.get("type"))
        error = JobError(message=words or "the job failed", code="job_failed") if status is JobStatus.FAILED else None
        return JobState(status, raw, words, error)

    def _record(
        self,
        job: Mapping[str, Any],
        pods: Sequence[Mapping[str, Any]] | None = None,
        lines: Sequence[str] | None = None,
    ) -> JobRecord:
        meta = job.get("metadata") or {}
        status = job.get("status") or {}
        state = self._state(job, pods)
        ns, name = meta.get("namespace") or self.settings.namespace, meta.get("name", "")
        annotations = meta.get("annotations") or {}
        storage = annotations.get("anytune.dev/storage")
        log = list(lines or [])
        result = _last(log, "result") if log else None
        points = metric_points(log)
        error = state.error
        if state.status is JobStatus.FAILED:
            trainer = _last(log, "error")
            if isinstance(trainer, dict) and trainer.get("message"):
                error = JobError(message=redact(str(trainer["message"])), code=str(trainer.get("code") or "job_failed"))
            tail = [_split_stamp(x)[1] for x in log if parse_line(_split_stamp(x)[1])[0] != "metric"]
            if error is not None and tail and self.settings.error_log_lines:
                shown = "\n".join(tail[-self.settings.error_log_lines :])
                error = JobError(message=f"{error.message}\nlast log lines:\n{shown}", code=error.code)
        finished = None
        for c in status.get("conditions") or []:
            if c.get("type") in ("Complete", "Succeeded", "Failed") and str(c.get("status")) == "True":
                finished = parse_timestamp(c.get("lastTransitionTime"))
        location = f"{storage}/jobs/{name}" if storage else None
        output: dict[str, Any] = {"namespace": ns, "job": name, "location": location}
        if state.message:
            output["message"] = state.message
        if isinstance(result, dict):
            output["adapter"] = result.get("adapter")
        trained = result.get("result", {}).get("train_tokens") if isinstance(result, dict) else None
        return JobRecord(
            provider=self.name,
            id=f"{ns}/{name}",
            status=state.status,
            raw_status=state.raw_status,
            base_model=annotations.get("anytune.dev/base-model"),
            fine_tuned_model=f"{location}/adapter" if location and state.status is JobStatus.SUCCEEDED else None,
            created_at=parse_timestamp(meta.get("creationTimestamp")),
            started_at=parse_timestamp(status.get("startTime")),
            finished_at=parse_timestamp(status.get("completionTime")) or finished,
            error=error,
            step=points[-1].step if points else None,
            trained_tokens=trained if isinstance(trained, int) else None,
            output={k: v for k, v in output.items() if v is not None},
            raw={
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": meta.get("labels") or {},
                    "annotations": annotations,
                },
                "labels": meta.get("labels") or {},
                "status": status,
            },
        )

    def _cancelled_record(self, ns: str, name: str, tomb: Mapping[str, Any]) -> JobRecord:
        data = tomb.get("data") or {}
        job = {"metadata": _tomb_metadata(ns, name, tomb), "status": {}}
        record = self._record(job)
        return record.model_copy(
            update={
                "status": JobStatus.CANCELLED,
                "raw_status": "Deleted",
                "finished_at": parse_timestamp(data.get("cancelled")),
                "error": JobError(message="the job was cancelled (its Job deleted; outputs kept)", code="cancelled"),
            }
        )

    def _lines(
        self, ns: str, name: str, pods: Sequence[Mapping[str, Any]], terminal: bool, container: str = "trainer"
    ) -> list[str]:
        """Node 0's log so far, each line with its time: the longest read kept, read no more once the
        job has ended and its log was read whole."""
        key = f"{ns}/{name}"
        if key in self._final_logs or not pods:
            return list(self._logs.get(key, []))
        pod = str((pods[0].get("metadata") or {}).get("name"))
        phase = (pods[0].get("status") or {}).get("phase")
        if phase == "Pending":
            return list(self._logs.get(key, []))
        core = self._core()

        def read() -> list[str]:
            text = core.read_namespaced_pod_log(
                pod, ns, container=container, timestamps=True, _request_timeout=self._timeout
            )
            # A pod may print anything, a token included: nothing read leaves here unredacted.
            return [redact(x) for x in str(text or "").splitlines()]

        try:
            lines = self._call("reading the pod's log", read)
        except ProviderError as exc:
            if exc.status_code in (400, 404):  # not started yet, or the pod is gone: nothing more to read
                lines = []
            else:
                raise
        if len(lines) >= len(self._logs.get(key, [])):
            self._logs[key] = lines
        if terminal:
            self._final_logs.add(key)
        return list(self._logs.get(key, []))

    def _kube_events(self, ns: str, names: Sequence[str]) -> list[dict[str, Any]]:
        core = self._core()
        out: list[dict[str, Any]] = []
        for obj in names:

            def read(involved: str = obj) -> Any:
                return core.list_namespaced_event(
                    ns, field_selector=f"involvedObject.name={involved}", _request_timeout=self._timeout
                )

            found = self._call("listing Kubernetes events", read)
            out += [self._dict(e) for e in found.items]
        return out

    def _snapshot(self, job_id: str) -> tuple[JobRecord, list[str], list[dict[str, Any]], dict[str, Any] | None]:
        ns, name = self._split(job_id)
        job = self._read_workload(ns, name)
        if job is None:
            # Gone: deleted after it finished (ttl_after_finished, or by hand), or cancelled. The
            # result file on the storage says it finished, whatever a cancel record says.
            finished = self._finished_on_storage(ns, name)
            if finished is not None:
                return finished
            tomb = self._tombstone(ns, name)
            if tomb is None:
                raise JobNotFoundError(f"{self.name}:{job_id}", "the cluster has no such Job")
            return self._cancelled_record(ns, name, tomb), list(self._logs.get(job_id, [])), [], None
        pods = self._pods(ns, name)
        state = self._state(job, pods)
        kind = _BY_KIND.get(str(job.get("kind")))
        container = KUBEFLOW_APIS[kind][4] if kind else "trainer"
        lines = self._lines(ns, name, pods, state.status.is_terminal, container=container)
        return self._record(job, pods, lines), lines, pods, job

    def _finished_on_storage(
        self, ns: str, name: str
    ) -> tuple[JobRecord, list[str], list[dict[str, Any]], dict[str, Any] | None] | None:
        """A Job deleted after it succeeded, read back from the ``anytune_result.json`` its pod wrote
        last to an object-store storage (None: no such file, or a volume this machine cannot read)."""
        storage = str(self.settings.storage or "")
        if not storage or _parse_storage(storage).is_volume:
            return None
        import fsspec.core

        location = f"{storage.rstrip('/')}/jobs/{name}"
        with boundary(self._translator(f"reading {location}/anytune_result.json")):
            fs, path = fsspec.core.url_to_fs(f"{location}/anytune_result.json")
            if not fs.exists(path):
                return None
            outcome = json.loads(fs.cat_file(path))
        written = {"location": location, "adapter": f"{location}/adapter", "result": outcome}
        lines = [RESULT_PREFIX + json.dumps(written, default=str)]
        record = JobRecord(
            provider=self.name,
            id=f"{ns}/{name}",
            status=JobStatus.SUCCEEDED,
            raw_status="Deleted",
            fine_tuned_model=f"{location}/adapter",
            output={"namespace": ns, "job": name, "location": location, "adapter": f"{location}/adapter"},
        )
        return record, lines, [], None

    def get(self, job_id: str) -> JobRecord:
        return self._kaito_snapshot(job_id)[0] if self._kaito else self._snapshot(job_id)[0]

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        snap = self._kaito_snapshot if self._kaito else self._snapshot
        record, lines, pods, job = snap(job_id)
        ns, name = self._split(job_id)
        kube = self._kube_events(ns, [name, *[str((p.get("metadata") or {}).get("name")) for p in pods]]) if job else []
        events = self._events(record, lines, kube)
        if after is not None and not (len(after) == 26 and after[17] == "-"):
            after = None  # not one of ours: everything (the caller's cursor drops what it has seen)
        for event in events:
            if after is None or event.id > after:
                yield event

    def _events(self, record: JobRecord, lines: Sequence[str], kube: Sequence[Mapping[str, Any]]) -> list[Event]:
        t0 = record.created_at or _EPOCH
        events = [Event(id=_eid(t0, "0", 0), kind="status", time=t0, status=JobStatus.QUEUED, message="Job created")]
        last = t0
        if record.started_at is not None or lines:
            ts = record.started_at or t0
            events.append(
                Event(id=_eid(ts, "0", 1), kind="status", time=ts, status=JobStatus.RUNNING, message="Job started")
            )
        for i, e in enumerate(kube):
            when = parse_timestamp(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")) or t0
            involved = (e.get("involvedObject") or {}).get("name", "")
            level = "warning" if e.get("type") == "Warning" else "info"
            text = redact(f"{involved}: {e.get('reason')}: {e.get('message')}")
            events.append(
                Event(
                    id=_eid(when, "1", i),
                    kind="log",
                    time=when,
                    message=text,
                    level=level,
                    raw={"reason": e.get("reason")},
                )
            )
        for i, line in enumerate(lines):
            stamped, text = _split_stamp(line)
            when = stamped or last
            last = max(last, when)
            kind, payload = parse_line(text)
            if kind == "metric":
                point: MetricPoint = payload
                events.append(
                    Event(id=_eid(when, "2", i), kind="metric", time=when, metric=point, message=f"step {point.step}")
                )
                continue
            if kind == "result":
                text = f"adapter written to {payload.get('adapter')}"
            elif kind == "error":
                text = f"training failed: {payload.get('message')}"
            events.append(
                Event(
                    id=_eid(when, "2", i),
                    kind="log",
                    time=when,
                    message=text,
                    level="error" if kind == "error" else _level(text),
                )
            )
        if record.status.is_terminal:
            end = max([record.finished_at or last, last, *(e.time for e in events)])
            events.append(
                Event(
                    id=_eid(end, _TERMINAL_SRC, 0),
                    kind="status",
                    time=end,
                    status=record.status,
                    message=f"job {record.status.value}"
                    + (f": {record.error.message.splitlines()[0]}" if record.error else ""),
                    level="error" if record.status is JobStatus.FAILED else "info",
                )
            )
        return sorted(events, key=lambda e: e.id)

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        if self._kaito:  # Kaito's trainer prints transformers' own log lines, not anytune's metric lines
            self._kaito_snapshot(job_id)
            return []
        return metric_points(self._snapshot(job_id)[1])

    def find(self, idempotency_key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        name = job_name(idempotency_key)
        if self._kaito:
            ns = self.settings.namespace
            ws = self._read_workspace(ns, name)
            if ws is not None:
                return workspace_record(ws)
            tomb = self._tombstone(ns, name)
            return self._kaito_cancelled(ns, name, tomb) if tomb is not None else None
        job = self._read_workload(self.settings.namespace, name)
        if job is None:
            ns = self.settings.namespace
            tomb = self._tombstone(ns, name)
            return self._cancelled_record(ns, name, tomb) if tomb is not None else None
        return self._record(job)

    def submitted_under(self, record: JobRecord) -> str | None:
        meta = record.raw.get("metadata") if isinstance(record.raw, dict) else None
        key = ((meta or {}).get("annotations") or {}).get(ANNOTATION_KEY)
        return str(key) if key else super().submitted_under(record)

    def cancel(self, job_id: str) -> JobRecord:
        ns, name = self._split(job_id)
        record = self.get(job_id)
        if record.status.is_terminal:
            return record
        if self._kaito:
            # Kaito's Job and pods belong to the Workspace (owner references) and go with it; the
            # tuning ConfigMap and whatever reached the output image or volume stay.
            self._record_cancel(ns, name, record, {"tuning": json.dumps(record.raw.get("tuning") or {})})
            api = self._custom()
            self._call(
                f"deleting Workspace {ns}/{name}",
                self._ignore_404(
                    lambda: api.delete_namespaced_custom_object(
                        KAITO_GROUP, KAITO_VERSION, ns, KAITO_PLURAL, name, _request_timeout=self._timeout
                    )
                ),
            )
            return self.get(job_id)
        job = self._read_workload(ns, name)
        core = self._core()
        # What resume() creates again: the pod then continues from the last checkpoint.
        self._record_cancel(ns, name, record, {"manifest": json.dumps(recreatable(job or {}))})
        kind = _BY_KIND.get(str((job or {}).get("kind")), "job")
        self._delete_workload(ns, name, kind)
        if kind != "job":
            return self.get(job_id)
        self._call(
            f"deleting Service {ns}/{name}",
            self._ignore_404(lambda: core.delete_namespaced_service(name, ns, _request_timeout=self._timeout)),
        )
        return self.get(job_id)

    def _record_cancel(self, ns: str, name: str, record: JobRecord, data: Mapping[str, str]) -> None:
        """The record of a cancel (a ConfigMap ``<name>-cancelled``), written before the delete: the
        object is gone a moment later, and get() must still say why."""
        core = self._core()
        meta = record.raw.get("metadata") or {}
        tomb = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{name}-cancelled",
                "namespace": ns,
                "labels": {
                    k: v for k, v in (meta.get("labels") or {}).items() if k in (MANAGED_LABEL, LABEL_KEY, JOB_LABEL)
                },
                "annotations": meta.get("annotations") or {},
            },
            "data": {
                "created": record.created_at.isoformat() if record.created_at else "",
                "cancelled": datetime.now(timezone.utc).isoformat(),
                **data,
            },
        }
        self._create_named(
            "recording the cancel", lambda: core.create_namespaced_config_map(ns, tomb, _request_timeout=self._timeout)
        )

    def resume(self, job_id: str) -> JobRecord:
        """Create a cancelled or failed Job again under its name: its pod continues from the last
        complete checkpoint on the storage (:mod:`anytune.local_backend.k8s_job`).

        Raises:
            InvalidRequestError: the job is still running, or already succeeded.
            JobNotFoundError: no such Job, and no record of its cancel.
        """
        if self._kaito:
            raise NotSupportedError(
                "Kaito's tuning trainer starts from the base model every time: a cancelled or failed Workspace "
                "cannot continue; submit the job again under a new idempotency key",
                field="settings.mode",
                provider=self.name,
            )
        ns, name = self._split(job_id)
        ref = f"{self.name}:{job_id}"
        core = self._core()
        job = self._read_workload(ns, name)
        tomb = None
        if job is not None:
            state = self._state(job, self._pods(ns, name))
            if state.status is JobStatus.SUCCEEDED:
                raise InvalidRequestError(
                    f"job {ref} already succeeded; there is nothing to resume", provider=self.name
                )
            if not state.status.is_terminal:
                raise InvalidRequestError(
                    f"job {ref} is still {state.status.value}: cancel it first", provider=self.name
                )
            manifest = recreatable(job)
            kind = _BY_KIND.get(str(job.get("kind")), "job")
            self._delete_workload(ns, name, kind)
            wait_until(
                lambda: self._read_kind(ns, name, kind),
                lambda found: found is None,
                timeout=self.settings.retry_deadline,
                on_timeout=lambda _: ProviderError(
                    f"{job.get('kind')} {ns}/{name} is still being deleted; resume again in a moment",
                    provider=self.name,
                ),
                sleep=self.sleep,
                clock=self.clock,
            )
        else:
            tomb = self._tombstone(ns, name)
            if tomb is None:
                raise JobNotFoundError(ref, "the cluster has no such Job")
            manifest = json.loads((tomb.get("data") or {}).get("manifest") or "{}")
            if not manifest:
                raise JobNotFoundError(ref, "its cancel record holds no manifest to create it again")
        self._create_workload(ns, manifest, f"creating {manifest.get('kind', 'Job')} {ns}/{name} again")
        if tomb is not None:
            self._call(
                "removing the cancel record",
                self._ignore_404(lambda: core.delete_namespaced_config_map(f"{name}-cancelled", ns)),
            )
        self._logs.pop(job_id, None)
        self._final_logs.discard(job_id)
        return self.get(job_id)

    @staticmethod
    def _ignore_404(fn: Callable[[], Any]) -> Callable[[], None]:
        """A delete retried like a read: a 404 means an earlier attempt went through."""

        def run() -> None:
            try:
                fn()
            except Exception as exc:
                if api_status(exc) != 404:
                    raise

        return run

    def _delete_job(self, ns: str, name: str) -> None:
        batch = self._batch()
        # Background: the pods get SIGTERM and their grace period (a checkpoint at the step boundary).
        self._call(
            f"deleting Job {ns}/{name}",
            self._ignore_404(
                lambda: batch.delete_namespaced_job(
                    name, ns, propagation_policy="Background", _request_timeout=self._timeout
                )
            ),
        )

    def list(self, limit: int = 20) -> builtins.list[JobRecord]:
        if self._kaito:
            return self._kaito_list(limit)
        batch, ns = self._batch(), self.settings.namespace
        found = self._call(
            "listing jobs",
            lambda: batch.list_namespaced_job(
                ns, label_selector=f"{MANAGED_LABEL}=anytune", _request_timeout=self._timeout
            ),
        )
        jobs = [{"kind": "Job", **self._dict(j)} for j in found.items]
        api = self._custom()
        for group, version, plural, title, _ in KUBEFLOW_APIS.values():

            def listed(g: str = group, v: str = version, p: str = plural) -> Any:
                return api.list_namespaced_custom_object(
                    g, v, ns, p, label_selector=f"{MANAGED_LABEL}=anytune", _request_timeout=self._timeout
                )

            more = self._read_or_none(f"listing {title}s", listed) or {}  # 404: the kind is not served
            jobs += [dict(i) for i in more.get("items") or []]
        jobs.sort(key=lambda j: (j.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)
        return [self._record(j) for j in jobs[:limit]]

    def result(self, record: JobRecord) -> FineTunedModel:
        if self._kaito:
            return self._kaito_result(record)
        current, lines, _, _ = self._snapshot(record.id)
        written = _last(lines, "result")
        location = current.output.get("location")
        if not isinstance(written, dict) or not location:
            raise ProviderError(
                f"job {record.ref} completed but its log holds no ANYTUNE_RESULT line (where the adapter was written)",
                provider=self.name,
            )
        points = metric_points(lines)
        outcome = written.get("result") if isinstance(written.get("result"), dict) else {}
        adapter = f"{location}/adapter"
        extra: dict[str, Any] = {"location": location, "adapter": adapter, "result": outcome}
        local = self._fetch_adapter(str(self.settings.storage or ""), location)
        if local is None:
            on_volume = _parse_storage(str(self.settings.storage or location)).is_volume
            extra["note"] = (
                f"the adapter is on the volume ({adapter}); mount the claim to load it"
                if on_volume
                else f"no adapter found at {adapter}"
            )
        trained = (outcome or {}).get("train_tokens")
        return FineTunedModel(
            provider=self.name,
            job_ref=record.ref,
            base_model=current.base_model or record.base_model,
            model_id=adapter,
            adapter_path=str(local) if local is not None else None,
            final_metrics=points[-1] if points else None,
            trained_tokens=trained if isinstance(trained, int) else None,
            extra=extra,
        )

    def _fetch_adapter(self, storage_setting: str, location: str) -> Path | None:
        """An object-store adapter, downloaded once under ANYTUNE_HOME; None for a volume."""
        if not storage_setting or _parse_storage(storage_setting).is_volume:
            return None
        import fsspec.core

        digest = hashlib.sha256(location.encode()).hexdigest()[:24]
        dest = self.home / "kubernetes" / "adapters" / digest
        if (dest / "adapter_config.json").is_file():
            return dest
        import shutil
        import tempfile

        with boundary(self._translator(f"downloading the adapter from {location}")):
            fs, root = fsspec.core.url_to_fs(f"{location}/adapter")
            if not fs.exists(root):
                return None
            # A folder of its own per download (a fixed ".part" name was shared by two concurrent
            # result() calls, and kept the files of an interrupted one), renamed into place whole.
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
            try:
                for found in sorted(fs.find(root)):
                    target = tmp / str(found)[len(str(root)) :].lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fs.get_file(found, str(target))
                tmp.rename(dest)
            except OSError:
                # Another download finished first: its folder is the same adapter, and may be in use.
                if not (dest / "adapter_config.json").is_file():
                    shutil.rmtree(dest, ignore_errors=True)  # not an adapter folder: replace it
                    tmp.rename(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    # -- mode "kaito": a Kaito tuning Workspace -------------------------------------------------
    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self._api())

    def _read_workspace(self, ns: str, name: str) -> dict[str, Any] | None:
        api = self._custom()
        found = self._read_or_none(
            f"reading Workspace {ns}/{name}",
            lambda: api.get_namespaced_custom_object(
                KAITO_GROUP, KAITO_VERSION, ns, KAITO_PLURAL, name, _request_timeout=self._timeout
            ),
        )
        return dict(found) if isinstance(found, Mapping) else None

    def _kaito_submit_plan(self, plan: KaitoPlan) -> SubmitPlan:
        ns = self.settings.namespace
        requests = [
            PlannedRequest(operation=f"POST /api/v1/namespaces/{ns}/configmaps", body=plan.configmap),
            PlannedRequest(
                operation=f"POST /apis/{KAITO_GROUP}/{KAITO_VERSION}/namespaces/{ns}/{KAITO_PLURAL}",
                body=plan.workspace,
            ),
        ]
        uploads = []
        if plan.upload is not None:
            rel, data = plan.upload
            uploads.append(
                PlannedUpload(
                    path=f"{self._storage().shown}/{rel}",
                    purpose="uploaded through fsspec; Kaito's pod downloads it from "
                    + str(plan.workspace["tuning"]["input"]["urls"][0]),
                    bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
        out = output_of(plan.workspace)
        where = f"the image {out['image']}" if "image" in out else f"the volume {out.get('volume')}"
        notes = [
            f"Kaito Workspace {ns}/{plan.name} after its ConfigMap {plan.configmap['metadata']['name']} "
            f"(Kaito's webhook reads it); one node of {plan.workspace['resource']['instanceType']}; "
            f"the adapter goes to {where}"
        ]
        return SubmitPlan(provider=self.name, uploads=uploads, requests=requests, notes=notes)

    def _kaito_submit(self, spec: JobSpec, key: str) -> JobRecord:
        plan = kaito_plan(spec, key, self.settings)  # bad input raises here, before any call
        ns, name = self.settings.namespace, plan.name
        existing = self._read_workspace(ns, name)
        if existing is not None:
            return workspace_record(existing)
        self._check_namespace()
        if KAITO_VERSION not in self.served_versions().get(KAITO_GROUP, frozenset()):
            raise ConfigError(
                f"Kaito is not installed in this cluster: it serves no {KAITO_GROUP}/{KAITO_VERSION} API. Install "
                "Kaito (v0.12 or later; on AKS the AI toolchain operator add-on) or use mode 'trainer'",
                field="settings.mode",
            )
        self._check_secrets(plan.secrets)
        if plan.upload is not None:
            rel, data = plan.upload
            self._upload(self._storage(), [(rel, rel.rsplit("/", 1)[-1], data)])
        core, api = self._core(), self._custom()
        cm = plan.configmap
        # The ConfigMap first: Kaito's webhook refuses a Workspace whose tuning config is missing.
        self._create_named(
            f"creating ConfigMap {cm['metadata']['name']}",
            lambda: core.create_namespaced_config_map(ns, cm, _request_timeout=self._timeout),
        )

        def create() -> Any:
            return api.create_namespaced_custom_object(
                KAITO_GROUP, KAITO_VERSION, ns, KAITO_PLURAL, plan.workspace, _request_timeout=self._timeout
            )

        with boundary(self._translator(f"creating Workspace {ns}/{name}")):
            made = create_once(
                create,
                lambda: self._read_workspace(ns, name),
                is_ambiguous=is_ambiguous,
                retry_on=is_transient,
                policy=self._policy,
                retry_after=retry_after,
                settle=self.create_settle,
                **self.timing,
                what=f"{self.name}: creating Workspace {ns}/{name}",
            )
        return workspace_record(dict(made))

    def _kaito_snapshot(
        self, job_id: str
    ) -> tuple[JobRecord, builtins.list[str], builtins.list[dict[str, Any]], dict[str, Any] | None]:
        ns, name = self._split(job_id)
        ws = self._read_workspace(ns, name)
        if ws is None:
            tomb = self._tombstone(ns, name)
            if tomb is None:
                raise JobNotFoundError(f"{self.name}:{job_id}", "the cluster has no such Kaito Workspace")
            return self._kaito_cancelled(ns, name, tomb), list(self._logs.get(job_id, [])), [], None
        terminal = workspace_record(ws).status.is_terminal
        # Kaito runs a batch/v1 Job named after the workspace, its trainer container named so too.
        pods = self._pods(ns, name, selector=f"job-name={name}")
        lines = self._lines(ns, name, pods, terminal, container=name)
        record = workspace_record(
            ws, [_split_stamp(x)[1] for x in lines], error_log_lines=self.settings.error_log_lines
        )
        return record, lines, pods, ws

    def _kaito_cancelled(self, ns: str, name: str, tomb: Mapping[str, Any]) -> JobRecord:
        data = tomb.get("data") or {}
        gone = {
            "metadata": {**_tomb_metadata(ns, name, tomb), "deletionTimestamp": data.get("cancelled")},
            "tuning": json.loads(data.get("tuning") or "{}"),
        }
        record = workspace_record(gone)
        return record.model_copy(
            update={"raw_status": "Deleted", "finished_at": parse_timestamp(data.get("cancelled"))}
        )

    def _kaito_list(self, limit: int) -> builtins.list[JobRecord]:
        api, ns = self._custom(), self.settings.namespace
        found = self._call(
            "listing Kaito workspaces",
            lambda: api.list_namespaced_custom_object(
                KAITO_GROUP,
                KAITO_VERSION,
                ns,
                KAITO_PLURAL,
                label_selector=f"{MANAGED_LABEL}=anytune",
                _request_timeout=self._timeout,
            ),
        )
        items = [dict(i) for i in (found or {}).get("items") or []]
        items.sort(key=lambda w: (w.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)
        return [workspace_record(w) for w in items[:limit]]

    def _kaito_result(self, record: JobRecord) -> FineTunedModel:
        current = self.get(record.id)
        if current.status is not JobStatus.SUCCEEDED or not current.output:
            raise ProviderError(
                f"job {record.ref} is {current.status.value}: Kaito wrote no adapter", provider=self.name
            )
        image, volume = current.output.get("image"), current.output.get("volume")
        # Kaito packs the adapter into an OCI image (or leaves it on the volume): nothing is loaded here.
        note = (
            f"Kaito pushed the adapter as the image {image}: reference it from a Kaito inference Workspace "
            "(inference.adapters) or pull it with an OCI client"
            if image
            else f"the adapter is on the output volume {volume}: mount it to load it"
        )
        return FineTunedModel(
            provider=self.name,
            job_ref=record.ref,
            base_model=current.base_model or record.base_model,
            model_id=current.fine_tuned_model,
            adapter_path=None,
            extra={k: v for k, v in {"image": image, "volume": volume, "note": note}.items() if v is not None},
        )
