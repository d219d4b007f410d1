"""The kubernetes provider's Kubeflow workloads (``workload = "trainjob"``, ``"pytorchjob"``, and
``"auto"``): the real ``kubernetes`` client against the HTTP fake of the API server playing the
operators (a child Job whose pods carry the labels the object gives them; scripted statuses).

Each kind followed to its result, auto's choice, the objects against the published CRD schemas
(strict), create-once, read faults, bad input refused with nothing created, secrets by name only,
cancel and resume.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes")
pytest.importorskip("fsspec")

from anytune import JobSpec, JobStatus, LocalOptions
from anytune.errors import ConfigError, NotSupportedError
from anytune.providers.kubernetes import KubernetesProvider, job_name
from anytune.testing import FakeClock
from tests.conftest import chat_example, write_jsonl
from tests.providers import k8s_fake
from tests.providers.k8s_fake import FakeCluster, Script, fake_cluster, kubeflow_statuses
from tests.providers.test_kubernetes_crs import PYTORCHJOB, TRAINJOB, _errors, _load

TOKEN = "hf_KubeflowSECRETtokenVALUE0123456789ab"
TJ = ("trainer.kubeflow.org", "v1alpha1", "default", "trainjobs")
PJ = ("kubeflow.org", "v1", "default", "pytorchjobs")
KINDS = {"trainjob": TJ, "pytorchjob": PJ}
TRAINJOB_CRD = "trainjobs.trainer.kubeflow.org"


def _crd(runtime_patches: bool = True) -> dict[str, Any]:
    schema = json.loads(json.dumps(_load("trainjob.json")["openAPIV3Schema"]))
    if not runtime_patches:  # Kubeflow Trainer v2.1 called it podTemplateOverrides
        schema["properties"]["spec"]["properties"].pop("runtimePatches")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": TRAINJOB_CRD},
        "spec": {
            "group": "trainer.kubeflow.org",
            "versions": [{"name": "v1alpha1", "schema": {"openAPIV3Schema": schema}}],
        },
    }


def _serve(fake: FakeCluster, *kinds: str, runtime_patches: bool = True) -> None:
    if "trainjob" in kinds:
        fake.serve("trainer.kubeflow.org", "v1alpha1")
        fake.crds[TRAINJOB_CRD] = _crd(runtime_patches)
    if "pytorchjob" in kinds:
        fake.serve("kubeflow.org", "v1")


@pytest.fixture
def cluster() -> Iterator[tuple[FakeCluster, str]]:
    c = FakeCluster()
    c.gpu_node("gpu-1", 8)
    c.pvcs.add(("default", "data"))
    c.serve("batch", "v1")
    c.secrets[("default", "hf")] = {"HF_TOKEN": TOKEN}
    c.secrets[("default", "s3")] = {"AWS_SECRET_ACCESS_KEY": "s3-SECRET-value"}
    with fake_cluster(c) as served:
        yield served


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(url: str, tmp: Path, clock: FakeClock, **settings: Any) -> KubernetesProvider:
    fields = {"storage": f"file://{tmp}/bucket", "hub_token_secret": "hf"} | settings
    return k8s_fake.make_provider(url, tmp, clock, **fields)


def _spec(tmp: Path, **fields: Any) -> JobSpec:
    train = write_jsonl(tmp / "train.jsonl", [chat_example(i) for i in range(4)])
    return JobSpec(**{"base_model": "acme/tiny-chat", "training_file": train, **fields})


@pytest.fixture
def spec(tmp_path: Path) -> JobSpec:
    return _spec(tmp_path)


def _object(fake: FakeCluster, kind: str, key: str) -> dict[str, Any]:
    return fake.custom[(*KINDS[kind], job_name(key))]


def _as_sent(obj: dict[str, Any]) -> dict[str, Any]:
    """An object read back from the fake, without what the API server added."""
    meta = {k: v for k, v in obj["metadata"].items() if k not in ("uid", "creationTimestamp")}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


# -- each kind end to end --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["trainjob", "pytorchjob"])
def test_submit_follow_and_result(
    kind: str, cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    _serve(fake, "trainjob", "pytorchjob")
    provider = make(url, tmp_path, clock, workload=kind)
    record = provider.submit(spec, idempotency_key=f"e2e-{kind}")
    name = job_name(f"e2e-{kind}")
    assert record.id == f"default/{name}" and record.status is JobStatus.QUEUED
    assert provider.submitted_under(record) == f"e2e-{kind}"
    group, version, _, plural = KINDS[kind]
    assert fake.created() == [f"/apis/{group}/{version}/namespaces/default/{plural}"]  # no Service, no ConfigMap
    obj = _object(fake, kind, f"e2e-{kind}")
    assert _errors(TRAINJOB if kind == "trainjob" else PYTORCHJOB, _as_sent(obj)) == []
    seen = [provider.get(record.id) for _ in range(3)]
    assert [r.status for r in seen] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    final = seen[-1]
    assert final.fine_tuned_model == f"file://{tmp_path}/bucket/jobs/{name}/adapter" and final.finished_at is not None
    assert provider.metrics(record.id)[-1].step == 2
    events = list(provider.events(record.id))
    assert (events[0].status, events[-1].status) == (JobStatus.QUEUED, JobStatus.SUCCEEDED)
    assert any(e.kind == "metric" for e in events)
    result = provider.result(final)
    assert result.model_id.endswith(f"/jobs/{name}/adapter") and result.extra["result"]["train_tokens"] == 40
    assert provider.find(f"e2e-{kind}") is not None
    assert [r.id for r in provider.list()] == [record.id]


def test_a_failed_pytorchjob_says_why(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    _serve(fake, "pytorchjob")
    name = job_name("broken")
    fake.statuses[name] = kubeflow_statuses("pytorchjob", "failed")
    fake.scripts[name] = Script(
        "failed", ["step one", 'ANYTUNE_ERROR {"message": "CUDA out of memory", "code": "oom"}']
    )
    provider = make(url, tmp_path, clock, workload="pytorchjob")
    record = provider.submit(spec, idempotency_key="broken")
    for _ in range(3):
        record = provider.get(record.id)
    assert record.status is JobStatus.FAILED and record.error is not None
    assert record.error.code == "oom" and "CUDA out of memory" in record.error.message


# -- auto ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("served", "runtime_patches", "storage", "chosen"),
    [
        (("trainjob", "pytorchjob"), True, "object", "trainjob"),
        (("trainjob", "pytorchjob"), False, "object", "pytorchjob"),  # Trainer before v2.2: passed over
        (("pytorchjob",), True, "object", "pytorchjob"),
        ((), True, "object", "job"),
        (("trainjob", "pytorchjob"), True, "pvc", "job"),  # neither operator object stages files
    ],
)
def test_auto_prefers_trainjob_then_pytorchjob_then_job(
    cluster: tuple[FakeCluster, str],
    tmp_path: Path,
    clock: FakeClock,
    spec: JobSpec,
    served: tuple[str, ...],
    runtime_patches: bool,
    storage: str,
    chosen: str,
) -> None:
    fake, url = cluster
    _serve(fake, *served, runtime_patches=runtime_patches)
    settings = {"storage": "pvc://data"} if storage == "pvc" else {}
    record = make(url, tmp_path, clock, **settings).submit(spec, idempotency_key="auto")
    made = [p.rsplit("/", 1)[-1] for p in fake.created() if not p.endswith("/configmaps")]
    assert made[-1] == {"trainjob": "trainjobs", "pytorchjob": "pytorchjobs", "job": "jobs"}[chosen]
    assert record.id == f"default/{job_name('auto')}"


# -- the objects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["trainjob", "pytorchjob"])
@pytest.mark.parametrize("nodes", [1, 3])
def test_plan_prints_the_object_offline_and_it_matches_the_crd(
    kind: str, nodes: int, cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock
) -> None:
    fake, url = cluster
    # The endpoint's host is ignored under an operator (its PET_MASTER_ADDR is the rendezvous).
    local = LocalOptions(nodes=nodes, num_devices=2, rdzv_endpoint="node0:29500" if nodes > 1 else None)
    spec = _spec(tmp_path, local=local)
    settings: dict[str, Any] = {"workload": kind, "gpus": 2, "shm_size": "8Gi", "node_selector": {"pool": "a100"}}
    if kind == "pytorchjob":
        settings |= {"storage_secret": "s3", "priority_class": "high", "image_pull_policy": "Always"}
    plan = make(url, tmp_path, clock, **settings).plan(spec, idempotency_key="plan")
    assert fake.requests == []
    (request,) = plan.requests
    group, version, _, plural = KINDS[kind]
    assert request.operation == f"POST /apis/{group}/{version}/namespaces/default/{plural}"
    obj = request.body
    assert _errors(TRAINJOB if kind == "trainjob" else PYTORCHJOB, obj) == []
    if kind == "trainjob":
        trainer = obj["spec"]["trainer"]
        args, env = trainer["args"], trainer["env"]
        assert trainer["numNodes"] == nodes and trainer["numProcPerNode"] == 2
        assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "2"}}
    else:
        replicas = obj["spec"]["pytorchReplicaSpecs"]
        assert replicas["Master"]["replicas"] == 1 and replicas.get("Worker", {}).get("replicas", 0) == nodes - 1
        (container,) = replicas["Master"]["template"]["spec"]["containers"]
        args, env = container["args"], container["env"]
        assert container["envFrom"] == [{"secretRef": {"name": "s3"}}] and container["imagePullPolicy"] == "Always"
        assert replicas["Master"]["template"]["spec"]["priorityClassName"] == "high"
        assert obj["spec"]["runPolicy"]["backoffLimit"] == 0
    # The operator gives the rendezvous (PET_*): no rendezvous flags, no completion-index env.
    assert not any(a.startswith("--rdzv") or a == "--nnodes" for a in args)
    assert all(e["name"] != "ANYTUNE_NODE_RANK" for e in env)
    assert ("$(PET_NODE_RANK)" in args) == (nodes > 1)
    assert "rdzv_endpoint" not in json.loads(args[args.index("--spec") + 1]).get("local", {})
    # Secrets by reference only.
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}} in env
    assert TOKEN not in json.dumps(obj) and "s3-SECRET-value" not in json.dumps(obj)


# -- create once, read faults ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["trainjob", "pytorchjob"])
def test_409_on_create_makes_one_object(
    kind: str, cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    _serve(fake, kind)
    plural = KINDS[kind][3]
    fake.fault("POST", rf"/{plural}$", "after", 409)  # created, and the answer says it exists
    record = make(url, tmp_path, clock, workload=kind).submit(spec, idempotency_key="conflict")
    assert record.id.endswith(job_name("conflict"))
    assert [k for k in fake.custom if k[3] == plural] == [(*KINDS[kind], job_name("conflict"))]


def test_a_lost_create_answer_makes_one_object(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    _serve(fake, "pytorchjob")
    fake.fault("POST", r"/pytorchjobs$", "drop")
    make(url, tmp_path, clock, workload="pytorchjob").submit(spec, idempotency_key="lost")
    assert list(fake.custom) == [(*PJ, job_name("lost"))]


@pytest.mark.parametrize("kind", ["trainjob", "pytorchjob"])
def test_reads_retry_429_and_5xx(
    kind: str, cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    _serve(fake, kind)
    provider = make(url, tmp_path, clock, workload=kind)
    record = provider.submit(spec, idempotency_key="faults")
    plural = KINDS[kind][3]
    fake.fault("GET", rf"/{plural}/anytune-", "status", 429, {"Retry-After": "7"})
    fake.fault("GET", rf"/{plural}/anytune-", "status", 503)
    fake.fault("GET", r"/apis$", "status", 503)
    assert provider.get(record.id).status is JobStatus.QUEUED
    assert 7.0 in clock.sleeps


# -- bad input: nothing created --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("served", "runtime_patches", "settings", "error", "field", "words"),
    [
        ((), True, {"workload": "trainjob"}, NotSupportedError, "settings.workload", "does not serve"),
        ((), True, {"workload": "pytorchjob"}, NotSupportedError, "settings.workload", "does not serve"),
        (("trainjob",), False, {"workload": "trainjob"}, ConfigError, "settings.workload", "runtimePatches"),
        (
            ("trainjob",),
            True,
            {"workload": "trainjob", "priority_class": "high"},
            ConfigError,
            "settings.priority_class",
            "priority class",
        ),
        (
            ("trainjob",),
            True,
            {"workload": "trainjob", "storage_secret": "s3"},
            ConfigError,
            "settings.storage_secret",
            "service account",
        ),
        (
            ("trainjob",),
            True,
            {"workload": "trainjob", "storage": "pvc://data"},
            ConfigError,
            "settings.storage",
            "init container",
        ),
        (
            ("pytorchjob",),
            True,
            {"workload": "pytorchjob", "storage": "pvc://data"},
            ConfigError,
            "settings.storage",
            "init container",
        ),
        (
            ("pytorchjob",),
            True,
            {"workload": "pytorchjob", "hub_token_secret": "nope"},
            ConfigError,
            "settings.hub_token_secret",
            "nope",
        ),
    ],
)
def test_bad_input_creates_nothing(
    cluster: tuple[FakeCluster, str],
    tmp_path: Path,
    clock: FakeClock,
    spec: JobSpec,
    served: tuple[str, ...],
    runtime_patches: bool,
    settings: dict[str, Any],
    error: type[Exception],
    field: str,
    words: str,
) -> None:
    fake, url = cluster
    _serve(fake, *served, runtime_patches=runtime_patches)
    provider = make(url, tmp_path, clock, **settings)
    with pytest.raises(error) as caught:
        provider.submit(spec, idempotency_key="bad")
    assert getattr(caught.value, "field", None) == field and words in str(caught.value)
    if isinstance(caught.value, ConfigError) and field != "settings.workload" and "hub_token" not in field:
        with pytest.raises(ConfigError, match=words):  # what the object cannot carry: validate says so too
            provider.validate(spec)
    assert fake.created() == [] and not (tmp_path / "bucket").exists()


def test_a_served_group_without_the_version_is_refused(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    fake.serve("kubeflow.org", "v2beta1")  # the MPI operator's group, another version
    with pytest.raises(ConfigError, match="not version v1"):
        make(url, tmp_path, clock, workload="pytorchjob").submit(spec, idempotency_key="v")
    assert fake.created() == []


# -- cancel and resume -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["trainjob", "pytorchjob"])
def test_cancel_then_resume_creates_the_object_again(
    kind: str, cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    _serve(fake, kind)
    provider = make(url, tmp_path, clock, workload=kind)
    record = provider.submit(spec, idempotency_key="resume")
    sent = {k: v for k, v in _object(fake, kind, "resume").items() if k in ("apiVersion", "kind", "spec")}
    cancelled = provider.cancel(record.id)
    assert cancelled.status is JobStatus.CANCELLED and fake.custom == {}
    assert ("configmaps", "default", f"{job_name('resume')}-cancelled") in fake.objects
    assert provider.get(record.id).status is JobStatus.CANCELLED
    again = provider.resume(record.id)
    assert again.id == record.id and again.status is not JobStatus.CANCELLED
    remade = _object(fake, kind, "resume")
    assert {k: v for k, v in remade.items() if k in ("apiVersion", "kind", "spec")} == sent
    assert ("configmaps", "default", f"{job_name('resume')}-cancelled") not in fake.objects


def test_resume_of_a_failed_trainjob_deletes_and_recreates_it(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    _serve(fake, "trainjob")
    name = job_name("failed")
    fake.statuses[name] = kubeflow_statuses("trainjob", "failed")
    fake.scripts[name] = Script("failed", ["x"])
    provider = make(url, tmp_path, clock, workload="trainjob")
    record = provider.submit(spec, idempotency_key="failed")
    for _ in range(3):
        record = provider.get(record.id)
    assert record.status is JobStatus.FAILED and "jobset failed" in (record.error.message if record.error else "")
    provider.resume(record.id)
    assert ("DELETE", f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/default/trainjobs/{name}") in fake.requests
    assert (*TJ, name) in fake.custom
