"""Who and where: the ``kubernetes`` provider's settings, its storage, and the client built from them.

Settings come from a profile, ``ANYTUNE_KUBERNETES_<SETTING>`` variables or ``settings=``, like every
provider's. The cluster is the user's kubeconfig (``kubeconfig``, ``context``; else ``KUBECONFIG`` and
``~/.kube/config``, as kubectl reads them) or, inside a pod, the service account's in-cluster config.
Secrets never pass through here: a Hub token or storage keys live in Kubernetes Secrets the pod
references by name (``hub_token_secret``, ``storage_secret``).

The ``kubernetes`` package is imported on first use: capabilities and dry-run plans never need it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from anytune._base_model import looks_like_path
from anytune._provider import ProviderSettings
from anytune._retry import RetrySettings
from anytune._secrets import install_log_filter
from anytune.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "DEFAULT_IMAGE",
    "NAME",
    "PVC_SCHEME",
    "ApiClientFactory",
    "KubernetesSettings",
    "Storage",
    "import_kubernetes",
    "make_api_client",
    "parse_storage",
    "refuse_client_folder",
]

NAME = "kubernetes"
#: The image a pod runs by default: the one Hugging Face Jobs uses (Debian, Python 3.12 and uv).
#: uv installs torch from PyPI, whose Linux wheels carry CUDA: the pod gets the same pinned torch,
#: transformers and peft as a local run, on the GPU it is given. Any image with ``uv`` or ``pip``
#: works (a PyTorch CUDA image, a mirror of this one in a private registry).
DEFAULT_IMAGE = "ghcr.io/astral-sh/uv:python3.12-bookworm"
PVC_SCHEME = "pvc://"
#: Makes the configured ``kubernetes.client.ApiClient`` every call goes through (tests: the fake's).
ApiClientFactory = Callable[[], "ApiClient"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://.+")
#: A core/v1 Toleration's fields and the values the API server takes (checked here, so a typo is a
#: ConfigError naming the setting before anything is created, not a 422 after the inputs are staged).
_TOLERATION_FIELDS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})
_TOLERATION_OPERATORS = frozenset({"Exists", "Equal"})
_TOLERATION_EFFECTS = frozenset({"", "NoSchedule", "PreferNoSchedule", "NoExecute"})


def _check_toleration(toleration: dict[str, Any]) -> None:
    unknown = sorted(set(toleration) - _TOLERATION_FIELDS)
    if unknown:
        raise ValueError(f"unknown toleration field(s) {unknown}: a toleration takes {sorted(_TOLERATION_FIELDS)}")
    for name in ("key", "operator", "value", "effect"):
        if name in toleration and not isinstance(toleration[name], str):
            raise ValueError(f"toleration {name!r} must be a string, not {type(toleration[name]).__name__}")
    operator = toleration.get("operator", "Equal")
    if operator not in _TOLERATION_OPERATORS:
        raise ValueError(f"toleration operator {operator!r} is not one of {sorted(_TOLERATION_OPERATORS)}")
    if operator == "Exists" and toleration.get("value"):
        raise ValueError("a toleration with operator 'Exists' takes no value")
    if toleration.get("effect", "") not in _TOLERATION_EFFECTS:
        raise ValueError(f"toleration effect {toleration['effect']!r} is not one of {sorted(_TOLERATION_EFFECTS)}")
    seconds = toleration.get("tolerationSeconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
        raise ValueError(f"toleration 'tolerationSeconds' must be an integer, not {seconds!r}")


@dataclass(frozen=True)
class Storage:
    """Where a job's inputs and outputs live: a PersistentVolumeClaim (``claim``, ``subpath``) or an
    fsspec URL (``url``); ``shown`` is the setting as the user wrote it."""

    shown: str
    claim: str | None = None
    subpath: str = ""
    url: str | None = None

    @property
    def is_volume(self) -> bool:
        return self.claim is not None

    @property
    def protocol(self) -> str:
        return (self.url or "").split("://", 1)[0]


def parse_storage(value: str, field: str = "settings.storage") -> Storage:
    """``pvc://<claim>[/subpath]`` or an fsspec URL (``s3://bucket/prefix``, ``file:///path``) (pure).

    Raises:
        ConfigError: naming ``field``, when it is neither.
    """
    text = value.strip()
    if text.startswith(PVC_SCHEME):
        claim, _, sub = text[len(PVC_SCHEME) :].partition("/")
        sub = sub.strip("/")
        if not _DNS_SUBDOMAIN.match(claim) or ".." in sub.split("/"):
            raise ConfigError(
                f"{value!r} is not pvc://<claim>[/subpath]: a claim name is lowercase letters, digits, '-' and '.'"
                ", and the subpath may not climb out with '..'",
                field=field,
            )
        return Storage(shown=text, claim=claim, subpath=sub)
    if _URL.match(text) and "://" in text and text.split("://", 1)[1].strip("/"):
        return Storage(shown=text.rstrip("/"), url=text.rstrip("/"))
    raise ConfigError(
        f"{value!r} is not a storage: give pvc://<claim>[/subpath] (a PersistentVolumeClaim in the namespace) "
        "or an fsspec URL such as s3://bucket/prefix, gs://bucket/prefix or abfs://container/prefix",
        field=field,
    )


class KubernetesSettings(ProviderSettings, RetrySettings):
    """``kubernetes`` settings (profiles, ``ANYTUNE_KUBERNETES_<SETTING>``, arguments).

    ``mode``: ``trainer`` runs anytune's own trainer as a Kubernetes workload; ``kaito`` creates a
    Kaito tuning ``Workspace`` (AKS). ``workload`` (trainer mode): ``job`` (a batch/v1 Job; an Indexed
    Job with a headless Service for several nodes), ``trainjob`` / ``pytorchjob`` (Kubeflow), or
    ``auto`` (the Kubeflow kind the cluster serves, else a Job).
    """

    _WAIT_CAP_SETTING = "max_backoff"
    #: Names of Kubernetes Secrets and of a key in one: the values stay in the cluster, never read here.
    secret_references: ClassVar[frozenset[str]] = frozenset(
        {"hub_token_secret", "hub_token_key", "storage_secret", "kaito_output_secret", "kaito_input_pull_secrets"}
    )

    mode: Literal["trainer", "kaito"] = Field("trainer", description="trainer (anytune's trainer) or kaito")
    kubeconfig: str | None = Field(None, description="kubeconfig file (default KUBECONFIG, then ~/.kube/config)")
    context: str | None = Field(None, description="kubeconfig context (default: its current context)")
    in_cluster: bool | None = Field(
        None, description="use the pod's service account (default: when KUBERNETES_SERVICE_HOST is set)"
    )
    namespace: str = Field("default", description="namespace the workloads are created in")
    image: str = Field(DEFAULT_IMAGE, description="container image with uv or pip (and Python 3.10+)")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    python: str = Field("3.12", description="Python version uv runs the trainer with")
    requirements: list[str] = Field(
        default_factory=list, description="pip requirements replacing (by name) or adding to the pinned ones"
    )
    gpus: int = Field(1, ge=0, le=64, description="GPUs per pod (0: a CPU pod)")
    gpu_resource: str = Field("nvidia.com/gpu", description="the extended resource GPUs are requested as")
    cpu: str | None = Field(None, description="CPU request per pod, e.g. '8'")
    memory: str | None = Field(None, description="memory request per pod, e.g. '64Gi'")
    shm_size: str | None = Field("16Gi", description="size of /dev/shm (data loader workers, NCCL); None: image's")
    node_selector: dict[str, str] = Field(default_factory=dict, description="pod nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="pod tolerations")
    priority_class: str | None = Field(None, description="priorityClassName of the pods")
    service_account: str | None = Field(None, description="serviceAccountName of the pods")
    storage: str | None = Field(None, description="pvc://<claim>[/subpath] or an fsspec URL (s3://bucket/prefix)")
    hub_token_secret: str | None = Field(
        None, description="Secret holding HF_TOKEN (gated or private base models), referenced by name"
    )
    hub_token_key: str = Field("HF_TOKEN", description="key of the token in hub_token_secret")
    storage_secret: str | None = Field(
        None, description="Secret whose keys become the pod's environment (AWS_ACCESS_KEY_ID...), by name"
    )
    workload: Literal["auto", "job", "trainjob", "pytorchjob"] = "auto"
    rdzv_port: int = Field(29400, gt=0, lt=65536, description="port of the rendezvous on node 0 (several nodes)")
    active_deadline: int | None = Field(None, gt=0, description="seconds a Job may run (activeDeadlineSeconds)")
    grace_period: int = Field(
        300, ge=0, description="seconds a deleted pod has to stop at a step boundary (terminationGracePeriodSeconds)"
    )
    ttl_after_finished: int | None = Field(
        None, ge=0, description="seconds after which Kubernetes deletes a finished Job (outputs stay)"
    )
    # Kaito (mode = "kaito"): read by the Kaito mapping.
    kaito_instance_type: str | None = Field(None, description="Kaito: the GPU VM size (e.g. Standard_NC24ads_A100_v4)")
    kaito_output_image: str | None = Field(None, description="Kaito: the image the adapter is pushed as")
    kaito_output_secret: str | None = Field(None, description="Kaito: imagePullSecret to push the output image")
    kaito_output_volume: dict[str, Any] | None = Field(
        None, description="Kaito: a core/v1 VolumeSource the adapter is written to instead of an image"
    )
    kaito_preset: str | None = Field(None, description="Kaito: the tuning preset (default: base_model)")
    kaito_input_url: str | None = Field(
        None, description="Kaito: an http(s) URL of the training file the tuning pod downloads"
    )
    kaito_input_volume: dict[str, Any] | None = Field(
        None, description="Kaito: a core/v1 VolumeSource holding the training file (mounted at /mnt/data)"
    )
    kaito_input_image: str | None = Field(None, description="Kaito: an image whose /data holds the training file")
    kaito_input_pull_secrets: list[str] = Field(default_factory=list, description="Kaito: pull Secrets of that image")
    kaito_dataset_file: str | None = Field(
        None, description="Kaito: the training file's path inside the input volume or image"
    )
    kaito_storage_url: str | None = Field(
        None,
        description="Kaito: the https address the object-store storage is readable at by the pod "
        "(a public container): the local training_file is uploaded there",
    )
    max_attempts: int = Field(6, ge=1, le=50, description="attempts per call, the first included")
    retry_deadline: float = Field(300.0, gt=0, description="seconds after which no retry is started")
    max_backoff: float = Field(30.0, gt=0, description="cap on our own back-off")
    request_timeout: float = Field(30.0, gt=0, description="seconds one API call may take")
    error_log_lines: int = Field(20, ge=0, le=1000, description="log lines a failed job's error carries")

    @field_validator(
        "namespace", "service_account", "priority_class", "hub_token_secret", "storage_secret", "kaito_output_secret"
    )
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes name (lowercase letters, digits, '-' and '.')")
        return value

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for toleration in value:
            _check_toleration(toleration)
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_storage(value)
            except ConfigError as exc:  # pydantic reports a ValueError as the setting's error
                raise ValueError(str(exc).split(": ", 1)[-1]) from None
        return value


def refuse_client_folder(base_model: str, mount: str) -> None:
    """Refuse a base model that is a folder on this machine: the pod cannot read it (pure but for a
    stat). A path that is not here passes: it may be on the storage volume (under ``mount``) or in
    the image.

    Raises:
        ConfigError: naming ``base_model``, before anything is created or uploaded.
    """
    path = Path(base_model).expanduser()
    if base_model.startswith(mount.rstrip("/") + "/") or not (looks_like_path(base_model) or path.is_dir()):
        return
    if path.exists():
        raise ConfigError(
            f"{base_model!r} is a folder on this machine, which a pod cannot read: give a Hub model id, or copy "
            f"the folder to the storage volume and name it as the pod sees it ({mount}/<path>)",
            field="base_model",
        )


def import_kubernetes(provider: str) -> None:
    """Import the official client, or say which extra installs it; its log lines are redacted from now on.

    Raises:
        MissingDependencyError: ``anytune[kubernetes]`` is not installed.
    """
    try:
        import kubernetes  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("kubernetes", "kubernetes", f"the {provider!r} provider") from exc
    install_log_filter(logging.getLogger("kubernetes"))
    install_log_filter(logging.getLogger("urllib3"))


def make_api_client(settings: KubernetesSettings) -> ApiClient:
    """An ``ApiClient`` from the in-cluster config or the kubeconfig, as kubectl would pick.

    Raises:
        ConfigError: no configuration could be loaded (no kubeconfig, an unknown context).
    """
    import yaml
    from kubernetes import client, config

    in_cluster = settings.in_cluster
    if in_cluster is None:
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    configuration = client.Configuration()
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=settings.kubeconfig, context=settings.context, client_configuration=configuration
            )
    except (config.ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
        where = "the pod's service account" if in_cluster else (settings.kubeconfig or "KUBECONFIG / ~/.kube/config")
        # A YAML error's text may quote the file (a token in it): say only what and where.
        why = f"not YAML ({type(exc).__name__}{_yaml_where(exc)})" if isinstance(exc, yaml.YAMLError) else str(exc)
        raise ConfigError(
            f"no Kubernetes configuration from {where}: {why} (set kubeconfig/context, or in_cluster)",
            field="settings.kubeconfig",
        ) from None
    # One retry policy: the adapter's (retry_call, create_once), not urllib3's own on top of it.
    configuration.retries = False
    return client.ApiClient(configuration)


def _yaml_where(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
