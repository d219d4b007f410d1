"""The kubernetes provider: the real ``kubernetes`` client against an HTTP fake of the API server.

The contract suite, a job followed to its result, create-once (409 and lost answers), read faults,
bad input refused before anything is created, secrets never shown, cancel, multi-node manifests, and
the manifests checked field by field against the Kubernetes OpenAPI models the client ships.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes")
pytest.importorskip("fsspec")

from anytune import FineTuneJob, JobSpec, JobStatus, LocalOptions
from anytune.errors import ConfigError, JobNotFoundError, RateLimitError, ServiceUnavailableError
from anytune.providers.kubernetes import (
    KubernetesProvider,
    KubernetesSettings,
    build_manifests,
    configmaps_for,
    job_name,
    job_state,
    label_value,
    parse_storage,
)
from anytune.providers.kubernetes.manifests import Inputs
from anytune.testing import FakeClock, ProviderContract
from tests.conftest import chat_example, write_jsonl
from tests.providers import k8s_fake
from tests.providers.k8s_fake import FakeCluster, Script, api_client_factory, fake_cluster

TOKEN = "hf_K8sSECRETtokenVALUE0123456789abcd"


@pytest.fixture
def cluster() -> Iterator[tuple[FakeCluster, str]]:
    c = FakeCluster()
    c.gpu_node("gpu-1", 8, {"pool": "a100"})
    c.pvcs.add(("default", "data"))
    c.secrets[("default", "hf")] = {"HF_TOKEN": TOKEN}
    with fake_cluster(c) as served:
        yield served


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(url: str, tmp: Path, clock: FakeClock, **settings: Any) -> KubernetesProvider:
    fields = {"storage": f"file://{tmp}/bucket", "hub_token_secret": "hf"} | settings
    return k8s_fake.make_provider(url, tmp, clock, **fields)


@pytest.fixture
def provider(cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock) -> KubernetesProvider:
    return make(cluster[1], tmp_path, clock)


@pytest.fixture
def spec(tmp_path: Path) -> JobSpec:
    return JobSpec(
        base_model="acme/tiny-chat",
        training_file=write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(4)]),
    )


class TestKubernetesContract(ProviderContract):
    @pytest.fixture
    def missing_job_id(self) -> str:
        return "default/anytune-missing"


# -- a job end to end ------------------------------------------------------------------------------


def test_submit_follow_metrics_and_result(provider: KubernetesProvider, spec: JobSpec, tmp_path: Path) -> None:
    record = provider.submit(spec, idempotency_key="e2e")
    assert record.id == f"default/{job_name('e2e')}" and record.status is JobStatus.QUEUED
    assert provider.submitted_under(record) == "e2e"
    # The inputs and the wheel went to the object store, content addressed.
    uploaded = sorted(
        p.relative_to(tmp_path / "bucket").as_posix() for p in (tmp_path / "bucket").rglob("*") if p.is_file()
    )
    assert [p.split("/")[0] for p in uploaded] == ["inputs", "wheels"]
    seen = [provider.get(record.id) for _ in range(3)]
    assert [r.status for r in seen] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    final = seen[-1]
    assert final.fine_tuned_model == f"file://{tmp_path}/bucket/jobs/{job_name('e2e')}/adapter"
    assert [p.step for p in provider.metrics(record.id)] == [1, 2]
    kinds = [(e.kind, e.status) for e in provider.events(record.id)]
    assert kinds[0] == ("status", JobStatus.QUEUED) and kinds[-1] == ("status", JobStatus.SUCCEEDED)
    assert any(
        e.message.endswith("SuccessfulCreate: Created pod: " + job_name("e2e") + "-0-abcde")
        for e in provider.events(record.id)
    )
    # What the pod wrote (here, by hand) is loaded from the object store.
    adapter = tmp_path / "bucket" / "jobs" / job_name("e2e") / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    model = provider.result(final)
    assert model.model_id == final.fine_tuned_model and model.trained_tokens == 40
    assert model.adapter_path is not None and (Path(model.adapter_path) / "adapter_config.json").is_file()
    assert model.final_metrics is not None and model.final_metrics.step == 2


def test_through_fine_tune_job(provider: KubernetesProvider, spec: JobSpec) -> None:
    job = FineTuneJob.create(spec, provider=provider)
    assert [job.refresh().status for _ in range(3)][-1] is JobStatus.SUCCEEDED
    assert job.result().model_id == f"{job.record.output['location']}/adapter"


def test_a_failed_job_carries_the_trainers_error(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    fake.scripts[job_name("bad")] = Script(
        "failed", ["[anytune] start", 'ANYTUNE_ERROR {"message": "CUDA out of memory", "code": "out_of_memory"}']
    )
    record = provider.submit(spec, idempotency_key="bad")
    for _ in range(3):
        record = provider.get(record.id)
    assert record.status is JobStatus.FAILED
    assert (
        record.error is not None
        and record.error.code == "out_of_memory"
        and "CUDA out of memory" in record.error.message
    )


@pytest.mark.parametrize(
    ("outcome", "status", "reason"),
    [("unschedulable", JobStatus.QUEUED, "Unschedulable"), ("image", JobStatus.QUEUED, "ImagePullBackOff")],
)
def test_a_waiting_pod_says_why(
    provider: KubernetesProvider,
    cluster: tuple[FakeCluster, str],
    spec: JobSpec,
    outcome: str,
    status: JobStatus,
    reason: str,
) -> None:
    cluster[0].scripts[job_name("wait")] = Script(outcome)
    record = provider.submit(spec, idempotency_key="wait")
    record = provider.get(record.id)
    assert record.status is status and record.raw_status == reason and reason in record.output["message"]


# -- create once -----------------------------------------------------------------------------------


def test_409_on_create_looks_the_job_up(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    fake.fault("POST", r"/jobs$", "after", 409)  # created, and the answer says it exists
    fake.fault("GET", r"/jobs/anytune-", "status", 404)  # the pre-check sees nothing yet
    record = provider.submit(spec, idempotency_key="conflict")
    assert record.id.endswith(job_name("conflict")) and len(fake.jobs()) == 1


def test_a_lost_answer_makes_one_job(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    fake.fault("POST", r"/jobs$", "after", 503)
    record = provider.submit(spec, idempotency_key="lost")
    assert len(fake.jobs()) == 1 and record.id.endswith(job_name("lost"))
    assert [p for p in fake.created() if p.endswith("/jobs")] == ["/apis/batch/v1/namespaces/default/jobs"]


def test_a_dropped_create_is_looked_up(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    fake.fault("POST", r"/jobs$", "drop")
    provider.submit(spec, idempotency_key="dropped")
    assert len(fake.jobs()) == 1


# -- read faults -----------------------------------------------------------------------------------


def test_429_retry_after_is_honoured(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], clock: FakeClock
) -> None:
    cluster[0].fault("GET", r"/jobs$", "status", 429, {"Retry-After": "7"})
    assert provider.list() == []
    assert clock.sleeps == [7.0]


def test_5xx_and_drops_are_retried(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], clock: FakeClock
) -> None:
    cluster[0].fault("GET", r"/jobs$", "status", 503)
    cluster[0].fault("GET", r"/jobs$", "drop")
    assert provider.list() == []
    assert len(clock.sleeps) == 2


def test_reads_give_up_with_one_clear_error(provider: KubernetesProvider, cluster: tuple[FakeCluster, str]) -> None:
    for _ in range(10):
        cluster[0].fault("GET", r"/jobs$", "status", 503)
    with pytest.raises(ServiceUnavailableError, match="listing jobs"):
        provider.list()


def test_throttled_to_the_end_is_a_rate_limit(provider: KubernetesProvider, cluster: tuple[FakeCluster, str]) -> None:
    for _ in range(10):
        cluster[0].fault("GET", r"/jobs$", "status", 429, {"Retry-After": "1"})
    with pytest.raises(RateLimitError):
        provider.list()


def test_unknown_job(provider: KubernetesProvider) -> None:
    with pytest.raises(JobNotFoundError):
        provider.get("default/anytune-nothing")


# -- bad input: a clear error, nothing created ------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ({"namespace": "nowhere"}, "settings.namespace", "namespace 'nowhere' does not exist"),
        ({"storage": "pvc://missing"}, "settings.storage", "PersistentVolumeClaim 'missing' does not exist"),
        ({"hub_token_secret": "nope"}, "settings.hub_token_secret", "Secret 'nope' does not exist"),
        ({"storage_secret": "s3-keys"}, "settings.storage_secret", "Secret 's3-keys' does not exist"),
        ({"gpus": 16}, "settings.gpus", "has 16 nvidia.com/gpu allocatable (the most is 8)"),
        ({"node_selector": {"pool": "h100"}}, "settings.gpus", "matching nodeSelector"),
    ],
)
def test_bad_cluster_input_creates_nothing(
    cluster: tuple[FakeCluster, str],
    tmp_path: Path,
    clock: FakeClock,
    spec: JobSpec,
    settings: dict[str, Any],
    field: str,
    words: str,
) -> None:
    fake, url = cluster
    provider = make(url, tmp_path, clock, **settings)
    with pytest.raises(ConfigError, match=re.escape(words)) as caught:
        provider.submit(spec, idempotency_key="bad-input")
    assert caught.value.field == field
    assert fake.created() == [] and not (tmp_path / "bucket").exists()


@pytest.mark.parametrize("storage", ["bucket/prefix", "pvc://Bad_Claim", "s3://", "pvc://data/../etc"])
def test_malformed_storage_is_a_setting_error(storage: str) -> None:
    with pytest.raises(ValueError, match="storage"):
        KubernetesSettings(storage=storage)


def test_no_storage_is_refused_before_any_call(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    provider = KubernetesProvider(KubernetesSettings(), api_client_factory=api_client_factory(url), home=tmp_path)
    with pytest.raises(ConfigError, match="needs a storage"):
        provider.submit(spec, idempotency_key="x")
    assert fake.requests == []


def test_pvc_inputs_beyond_the_cap_are_refused_before_anything(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock
) -> None:
    fake, url = cluster
    rows = [chat_example(i) | {"pad": "x" * 4000} for i in range(2500)]
    big = JobSpec(base_model="acme/tiny-chat", training_file=write_jsonl(tmp_path / "big.jsonl", rows))
    provider = make(url, tmp_path, clock, storage="pvc://data")
    with pytest.raises(ConfigError, match="object-store URL") as caught:
        provider.submit(big, idempotency_key="big")
    assert caught.value.field == "settings.storage" and fake.created() == []


def test_pvc_storage_stages_inputs_in_configmaps(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    record = make(url, tmp_path, clock, storage="pvc://data/anytune").submit(spec, idempotency_key="pvc")
    maps = [o for (plural, _, _), o in fake.objects.items() if plural == "configmaps"]
    assert len(maps) == 2  # the training file and the wheel
    job = next(iter(fake.jobs()))
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["volumeMounts"][0] == {
        "name": "storage",
        "mountPath": "/anytune/storage",
        "subPath": "anytune",
    }
    assert record.output["location"] == f"pvc://data/anytune/jobs/{job_name('pvc')}"


# -- secrets ---------------------------------------------------------------------------------------


def test_a_hub_token_never_shows(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, _ = cluster
    fake.scripts[job_name("secret")] = Script(
        "failed", [f"token is {TOKEN}", 'ANYTUNE_ERROR {"message": "boom ' + TOKEN + '", "code": "x"}']
    )
    plan = provider.plan(spec, idempotency_key="secret")
    record = provider.submit(spec, idempotency_key="secret")
    for _ in range(3):
        record = provider.get(record.id)
    shown = [plan.model_dump_json(), record.model_dump_json(), repr(provider), str(fake.jobs())]
    shown += [e.model_dump_json() for e in provider.events(record.id)]
    shown.append(capsys.readouterr().out)
    assert all(TOKEN not in text for text in shown)
    env = fake.jobs()[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}} in env


# -- cancel ----------------------------------------------------------------------------------------


def test_cancel_deletes_the_job_and_leaves_outputs(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec, tmp_path: Path
) -> None:
    fake, _ = cluster
    record = provider.submit(spec, idempotency_key="cancel")
    outputs = sorted((tmp_path / "bucket").rglob("*"))
    after = provider.cancel(record.id)
    assert after.status is JobStatus.CANCELLED and fake.jobs() == []
    assert ("DELETE", f"/apis/batch/v1/namespaces/default/jobs/{job_name('cancel')}") in fake.requests
    assert sorted((tmp_path / "bucket").rglob("*")) == outputs
    assert provider.get(record.id).status is JobStatus.CANCELLED
    assert provider.find("cancel") is not None


# -- manifests (pure) ------------------------------------------------------------------------------


def _inputs() -> Inputs:
    return Inputs(train="inputs/abc/train.jsonl", valid=None, wheel="wheels/def/anytune-0-py3-none-any.whl")


def test_multi_node_manifests(spec: JobSpec) -> None:
    two = (
        spec.model_copy(update={"local": spec.local.__class__(nodes=2, num_devices=4, rdzv_endpoint="x:29500")})
        if spec.local
        else JobSpec.model_validate(
            spec.model_dump() | {"local": {"nodes": 2, "num_devices": 4, "rdzv_endpoint": "x:29500"}}
        )
    )
    settings = KubernetesSettings(storage="s3://b/p", gpus=4)
    m = build_manifests(two, "key", settings, parse_storage("s3://b/p"), _inputs(), pins=["torch==2.5.0"])
    name = job_name("key")
    assert (
        m.job["spec"]["completionMode"] == "Indexed"
        and m.job["spec"]["completions"] == 2 == m.job["spec"]["parallelism"]
    )
    assert m.job["spec"]["template"]["spec"]["subdomain"] == name
    assert m.service is not None and m.service["spec"]["clusterIP"] == "None" and m.service["metadata"]["name"] == name
    args = m.job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"{name}-0.{name}:29500" in args and "$(ANYTUNE_NODE_RANK)" in args
    assert args[args.index("--nproc_per_node") + 1] == "4" and args[args.index("--nnodes") + 1] == "2"
    validate(m.job, "V1Job")
    validate(m.service, "V1Service")


def test_one_node_manifest_settings_and_schema(spec: JobSpec) -> None:
    settings = KubernetesSettings(
        storage="pvc://data",
        node_selector={"pool": "a100"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        priority_class="high",
        service_account="trainer",
        storage_secret="keys",
        cpu="8",
        memory="64Gi",
        gpus=2,
    )
    maps, staged = configmaps_for([("inputs/a/t.jsonl", "t.jsonl", b"{}\n")], namespace="default")
    inputs = Inputs(train="inputs/a/t.jsonl", valid=None, wheel="wheels/w.whl", staged=tuple(staged))
    m = build_manifests(spec, "k" * 200, settings, parse_storage("pvc://data"), inputs, configmaps=maps, pins=[])
    assert len(m.job["metadata"]["name"]) <= 63 and m.job["metadata"]["labels"][
        "anytune-idempotency_key"
    ] == label_value("k" * 200)
    pod = m.job["spec"]["template"]["spec"]
    assert m.job["spec"]["backoffLimit"] == 0 and m.service is None
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi"},
        "limits": {"nvidia.com/gpu": "2"},
    }
    assert (
        pod["nodeSelector"] == {"pool": "a100"}
        and pod["priorityClassName"] == "high"
        and pod["serviceAccountName"] == "trainer"
    )
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "keys"}}]
    validate(m.job, "V1Job")
    for cm in maps:
        validate(cm, "V1ConfigMap")


def test_schema_check_catches_a_misspelt_field(spec: JobSpec) -> None:
    m = build_manifests(spec, "k", KubernetesSettings(storage="s3://b"), parse_storage("s3://b"), _inputs(), pins=[])
    m.job["spec"]["template"]["spec"]["nodeSelektor"] = {}
    with pytest.raises(AssertionError, match="nodeSelektor"):
        validate(m.job, "V1Job")


@pytest.mark.parametrize(
    ("job", "pods", "status"),
    [
        ({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, [], JobStatus.SUCCEEDED),
        ({"status": {"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}}, [], JobStatus.SUCCEEDED),
        (
            {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}},
            [],
            JobStatus.FAILED,
        ),
        ({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}, [], JobStatus.FAILED),
        ({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}}, [], JobStatus.PAUSED),
        ({"status": {"conditions": [{"type": "Complete", "status": "False"}]}}, [], JobStatus.QUEUED),
        ({"status": {"active": 1}}, [{"status": {"phase": "Running"}}], JobStatus.RUNNING),
        ({"status": {}}, [{"status": {"phase": "Pending"}}], JobStatus.QUEUED),
        (
            {"status": {}},
            [{"status": {"containerStatuses": [{"state": {"waiting": {"reason": "InvalidImageName"}}}]}}],
            JobStatus.FAILED,
        ),
        (
            {"status": {}},
            [{"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ErrImagePull"}}}]}}],
            JobStatus.QUEUED,
        ),
    ],
)
def test_status_table(job: dict[str, Any], pods: list[dict[str, Any]], status: JobStatus) -> None:
    assert job_state(job, pods).status is status


# -- the OpenAPI check -----------------------------------------------------------------------------


def validate(obj: Any, model: str, where: str = "") -> None:
    """Every field of ``obj`` is one the Kubernetes OpenAPI model ``model`` declares, recursively
    (the ``kubernetes`` client's generated models: ``openapi_types`` and ``attribute_map``)."""
    import kubernetes.client as k8s

    if model in ("str", "int", "bool", "float", "object", "datetime", "bytes") or obj is None:
        return
    if model.lower().startswith("list["):
        assert isinstance(obj, list), f"{where}: want a list"
        for i, item in enumerate(obj):
            validate(item, model[5:-1], f"{where}[{i}]")
        return
    if model.lower().startswith(("dict(", "dict[")):
        assert isinstance(obj, dict), f"{where}: want a map"
        inner = model[5:-1].split(", ", 1)[1]
        for k, v in obj.items():
            validate(v, inner, f"{where}.{k}")
        return
    cls = getattr(k8s, model)
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    assert isinstance(obj, dict), f"{where}: want an object ({model})"
    for key, value in obj.items():
        assert key in by_json, f"{where}.{key}: not a field of {model}"
        validate(value, cls.openapi_types[by_json[key]], f"{where}.{key}")


# -- resume, workloads, modes ----------------------------------------------------------------------


def test_resume_creates_a_cancelled_job_again(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    record = provider.submit(spec, idempotency_key="resume")
    provider.cancel(record.id)
    assert fake.jobs() == []
    again = provider.resume(record.id)
    assert again.id == record.id and again.status is not JobStatus.CANCELLED
    job = fake.jobs()[0]
    assert job["metadata"]["name"] == job_name("resume") and "selector" not in job["spec"]
    assert ("configmaps", "default", f"{job_name('resume')}-cancelled") not in fake.objects


def test_resume_refuses_a_running_or_succeeded_job(provider: KubernetesProvider, spec: JobSpec) -> None:
    from anytune.errors import InvalidRequestError

    record = provider.submit(spec, idempotency_key="busy")
    provider.get(record.id)
    with pytest.raises(InvalidRequestError, match="still"):
        provider.resume(record.id)
    provider.get(record.id)
    with pytest.raises(InvalidRequestError, match="already succeeded"):
        provider.resume(record.id)


def test_resume_of_a_failed_job(provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec) -> None:
    fake, _ = cluster
    fake.scripts[job_name("failed")] = Script("failed", ['ANYTUNE_ERROR {"message": "node lost", "code": "x"}'])
    record = provider.submit(spec, idempotency_key="failed")
    for _ in range(3):
        record = provider.get(record.id)
    assert record.status is JobStatus.FAILED
    provider.resume(record.id)
    assert (
        len(fake.jobs()) == 1
        and ("DELETE", f"/apis/batch/v1/namespaces/default/jobs/{job_name('failed')}") in fake.requests
    )


@pytest.mark.parametrize(
    ("setting", "groups", "implemented", "chosen"),
    [
        ("auto", frozenset(), frozenset({"job"}), "job"),
        ("auto", frozenset({"trainer.kubeflow.org"}), frozenset({"job"}), "job"),
        ("auto", frozenset({"trainer.kubeflow.org"}), frozenset({"job", "trainjob"}), "trainjob"),
        ("auto", frozenset({"kubeflow.org"}), frozenset({"job", "trainjob", "pytorchjob"}), "pytorchjob"),
        ("job", frozenset({"kubeflow.org"}), frozenset({"job", "pytorchjob"}), "job"),
        ("pytorchjob", frozenset({"kubeflow.org"}), frozenset({"job", "pytorchjob"}), "pytorchjob"),
    ],
)
def test_choose_workload(setting: str, groups: frozenset[str], implemented: frozenset[str], chosen: str) -> None:
    from anytune.providers.kubernetes import choose_workload

    assert choose_workload(setting, groups, implemented) == chosen


@pytest.mark.parametrize(
    ("setting", "groups", "implemented", "words"),
    [
        ("trainjob", frozenset({"trainer.kubeflow.org"}), frozenset({"job"}), "not wired yet"),
        ("pytorchjob", frozenset(), frozenset({"job", "pytorchjob"}), "does not serve"),
    ],
)
def test_choose_workload_refusals(
    setting: str, groups: frozenset[str], implemented: frozenset[str], words: str
) -> None:
    from anytune.errors import NotSupportedError
    from anytune.providers.kubernetes import choose_workload

    with pytest.raises(NotSupportedError, match=words):
        choose_workload(setting, groups, implemented)


def test_served_groups_come_from_the_cluster(provider: KubernetesProvider, cluster: tuple[FakeCluster, str]) -> None:
    cluster[0].groups = ["batch", "kubeflow.org"]
    assert provider.served_groups() == frozenset({"batch", "kubeflow.org"})


@pytest.mark.parametrize(("settings", "field"), [({"workload": "trainjob"}, "settings.workload")])
def test_a_kubeflow_kind_not_served_creates_nothing(
    cluster: tuple[FakeCluster, str],
    tmp_path: Path,
    clock: FakeClock,
    spec: JobSpec,
    settings: dict[str, Any],
    field: str,
) -> None:
    from anytune.errors import NotSupportedError

    fake, url = cluster
    with pytest.raises(NotSupportedError) as caught:
        make(url, tmp_path, clock, **settings).submit(spec, idempotency_key="mode")
    assert caught.value.field == field and fake.created() == []


def test_plan_prints_the_manifests_without_a_call(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    plan = make(url, tmp_path, clock, storage="pvc://data").plan(spec, idempotency_key="plan")
    assert fake.requests == []
    kinds = [r.body["kind"] for r in plan.requests]
    assert kinds == ["ConfigMap", "ConfigMap", "Job"]
    assert all(
        v.startswith("<") for r in plan.requests if r.body["kind"] == "ConfigMap" for v in r.body["binaryData"].values()
    )
    assert plan.requests[-1].operation == "POST /apis/batch/v1/namespaces/default/jobs"


def test_settings_come_from_the_environment_and_profiles(tmp_path: Path) -> None:
    from anytune._config import resolve

    (tmp_path / "anytune.toml").write_text(
        '[profiles.cluster]\nprovider = "kubernetes"\n[profiles.cluster.settings]\n'
        'storage = "pvc://data"\nnode_selector = { pool = "a100" }\n'
    )
    env = {"ANYTUNE_KUBERNETES_NAMESPACE": "ml", "ANYTUNE_KUBERNETES_GPUS": "4"}
    resolved = resolve(provider="cluster", env=env, cwd=tmp_path)
    s = resolved.settings
    assert isinstance(s, KubernetesSettings)
    assert (s.namespace, s.gpus, s.storage, s.node_selector) == ("ml", 4, "pvc://data", {"pool": "a100"})
    with pytest.raises(ConfigError, match="storage"):
        resolve(provider="kubernetes", env={"ANYTUNE_KUBERNETES_STORAGE": "bucket"}, cwd=tmp_path)


def test_a_dropped_log_read_is_read_again(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    record = provider.submit(spec, idempotency_key="log-drop")
    for _ in range(3):
        provider.get(record.id)
    fresh = make(cluster[1], Path(provider.home).parent, FakeClock())
    fake.fault("GET", r"/log$", "drop")
    fake.fault("GET", r"/log$", "status", 500)
    assert [p.step for p in fresh.metrics(record.id)] == [1, 2]


def test_scheduling_warnings_are_events(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    cluster[0].scripts[job_name("sched")] = Script("unschedulable")
    record = provider.submit(spec, idempotency_key="sched")
    warnings = [e for e in provider.events(record.id) if e.level == "warning"]
    assert [e.raw["reason"] for e in warnings] == ["FailedScheduling"]
    assert "Insufficient nvidia.com/gpu" in warnings[0].message


def test_a_5xx_on_a_staged_configmap_is_retried(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    fake.fault("POST", r"/configmaps$", "after", 503)  # created, answer lost: the retry's 409 is success
    make(url, tmp_path, clock, storage="pvc://data").submit(spec, idempotency_key="cm")
    assert len([k for k in fake.objects if k[0] == "configmaps"]) == 2 and len(fake.jobs()) == 1


def test_the_fake_streams_followed_logs_and_can_cut_them(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    """The fake's ``follow=true`` stream, through the real client: whole, then cut short."""
    from kubernetes import client

    fake, url = cluster
    record = provider.submit(spec, idempotency_key="follow")
    for _ in range(3):
        provider.get(record.id)
    core = client.CoreV1Api(api_client_factory(url)())
    pod = f"{job_name('follow')}-0-abcde"
    whole = core.read_namespaced_pod_log(pod, "default", follow=True, _preload_content=False)
    assert len(whole.data.decode().splitlines()) == 4
    fake.cut_follow = 2
    cut = core.read_namespaced_pod_log(pod, "default", follow=True, _preload_content=False)
    with pytest.raises(Exception, match=r"(?i)prematurely|connection|protocol|incomplete"):
        list(cut.stream(64))


def test_more_gpu_pods_than_the_cluster_holds_are_refused(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    three = spec.model_copy(update={"local": LocalOptions(nodes=3, num_devices=4, rdzv_endpoint="n:29400")})
    with pytest.raises(ConfigError, match=re.escape("3 pods of 4 nvidia.com/gpu do not fit")) as caught:
        make(url, tmp_path, clock, gpus=4).submit(three, idempotency_key="three")
    assert caught.value.field == "local.nodes" and fake.created() == []
    two = spec.model_copy(update={"local": LocalOptions(nodes=2, num_devices=4, rdzv_endpoint="n:29400")})
    make(url, tmp_path, clock, gpus=4).submit(two, idempotency_key="two")
    assert fake.jobs()[0]["spec"]["completions"] == 2
    assert [k[2] for k in fake.objects if k[0] == "services"] == [job_name("two")]


def test_a_job_deleted_after_it_succeeded_reads_succeeded_from_its_result_file(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec, tmp_path: Path
) -> None:
    # ttl_after_finished (or a kubectl delete) removes the finished Job; its pod wrote the adapter and,
    # last, anytune_result.json to the storage, which says it succeeded, even over a cancel record
    # left by a cancel whose delete failed.
    fake, _ = cluster
    record = provider.submit(spec, idempotency_key="ttl")
    name = job_name("ttl")
    for _ in range(3):
        provider.get(record.id)
    # The cluster forgets the Job, as its TTL controller does.
    for key in [k for k in fake.objects if k[0] == "jobs" and k[2] == name]:
        del fake.objects[key]
    with pytest.raises(JobNotFoundError):
        provider.get(record.id)  # nothing on the storage yet: nothing to say it ever ran
    folder = tmp_path / "bucket" / "jobs" / name
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "anytune_result.json").write_text(json.dumps({"train_tokens": 40}))
    gone = provider.get(record.id)
    assert gone.status is JobStatus.SUCCEEDED and gone.fine_tuned_model == f"file://{folder}/adapter"
    model = provider.result(gone)
    assert model.trained_tokens == 40 and model.adapter_path is not None
    assert (Path(model.adapter_path) / "adapter_config.json").is_file()


def test_concurrent_results_download_the_adapter_once_into_place(
    provider: KubernetesProvider, spec: JobSpec, tmp_path: Path
) -> None:
    # Each download fills a folder of its own and renames it into place: two result() calls at once
    # (threads of one process) both get the whole adapter, and no scratch folder is left behind.
    import threading

    record = provider.submit(spec, idempotency_key="twice")
    for _ in range(3):
        record = provider.get(record.id)
    adapter = tmp_path / "bucket" / "jobs" / job_name("twice") / "adapter"
    adapter.mkdir(parents=True)
    for i in range(20):
        (adapter / f"shard-{i}.bin").write_bytes(bytes(1000))
    (adapter / "adapter_config.json").write_text("{}")
    paths: list[str | None] = []
    threads = [threading.Thread(target=lambda: paths.append(provider.result(record).adapter_path)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 4 and len(set(paths)) == 1 and paths[0] is not None
    folder = Path(paths[0])
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in adapter.iterdir())
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
