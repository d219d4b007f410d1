"""The kubernetes provider in ``mode = "kaito"``: the real ``kubernetes`` client against the HTTP fake
of the API server playing Kaito (its webhook wants the tuning ConfigMap first; its controller runs a
Job named after the Workspace and moves the Workspace's status).

A workspace followed to its result, the manifests against the Kaito CRD's schema (strict) and
Kaito's ConfigMap rules, create-once, read faults, every bad input refused with nothing created,
secrets by name only, cancel, and resume refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes")
pytest.importorskip("fsspec")

from anytune import JobSpec, JobStatus
from anytune.errors import ConfigError, NotSupportedError, RateLimitError
from anytune.providers.kubernetes import KubernetesProvider, job_name
from anytune.providers.kubernetes.kaito_mode import kaito_plan, setting_field
from anytune.testing import FakeClock
from tests.conftest import chat_example, write_jsonl
from tests.providers import k8s_fake
from tests.providers.k8s_fake import FakeCluster, Script, api_client_factory, fake_cluster, kaito_statuses
from tests.providers.test_kubernetes_crs import WORKSPACE, _errors, _kaito_accepts

TOKEN = "hf_KaitoSECRETtokenVALUE0123456789abcd"
PUSH = "acr-push-CREDENTIALvalue-0123456789"
A100 = "Standard_NC24ads_A100_v4"
URL = "https://example.com/data/train.jsonl"
IMAGE = "myregistry.azurecr.io/adapters/phi3:v1"
WS = ("kaito.sh", "v1beta1", "default", "workspaces")


@pytest.fixture
def cluster() -> Iterator[tuple[FakeCluster, str]]:
    c = FakeCluster()
    c.serve("batch", "v1")
    c.serve("kaito.sh", "v1beta1", "v1alpha1")
    c.secrets[("default", "hf")] = {"HF_TOKEN": TOKEN}
    c.secrets[("default", "acr-push")] = {".dockerconfigjson": PUSH}
    with fake_cluster(c) as served:
        yield served


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(url: str, tmp: Path, clock: FakeClock, **settings: Any) -> KubernetesProvider:
    fields = {
        "mode": "kaito",
        "kaito_instance_type": A100,
        "kaito_input_url": URL,
        "kaito_output_image": IMAGE,
        "kaito_output_secret": "acr-push",
        "hub_token_secret": "hf",
    } | settings
    return k8s_fake.make_provider(url, tmp, clock, **fields)


@pytest.fixture
def provider(cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock) -> KubernetesProvider:
    return make(cluster[1], tmp_path, clock)


def _spec(tmp: Path, **fields: Any) -> JobSpec:
    train = write_jsonl(tmp / "train.jsonl", [chat_example(i) for i in range(4)])
    return JobSpec(**{"base_model": "phi-3-mini-4k-instruct", "training_file": train, **fields})


@pytest.fixture
def spec(tmp_path: Path) -> JobSpec:
    return _spec(tmp_path)


def _workspace(fake: FakeCluster, name: str) -> dict[str, Any]:
    return fake.custom[(*WS, name)]


# -- a workspace end to end ------------------------------------------------------------------------


def test_submit_follow_and_result(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    name = job_name("kaito-e2e")
    fake.scripts[name] = Script(lines=["{'loss': 1.9, 'epoch': 0.5}", "{'loss': 1.2, 'epoch': 1.0}"])
    record = provider.submit(spec, idempotency_key="kaito-e2e")
    assert record.id == f"default/{name}" and record.status is JobStatus.QUEUED
    assert provider.submitted_under(record) == "kaito-e2e"
    # The ConfigMap first (Kaito's webhook reads it when the Workspace arrives), then the Workspace.
    assert fake.created() == [
        "/api/v1/namespaces/default/configmaps",
        "/apis/kaito.sh/v1beta1/namespaces/default/workspaces",
    ]
    ws = _workspace(fake, name)
    assert ws["tuning"]["config"] == f"{name}-tuning" and ws["tuning"]["input"] == {"urls": [URL]}
    assert ws["tuning"]["output"] == {"image": IMAGE, "imagePushSecret": "acr-push"}
    assert ws["resource"]["instanceType"] == A100
    seen = [provider.get(record.id) for _ in range(3)]
    assert [r.status for r in seen] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    assert seen[0].output["message"] == "provisioning"
    final = seen[-1]
    assert final.fine_tuned_model == IMAGE and final.finished_at is not None
    events = list(provider.events(record.id))
    assert (events[0].kind, events[0].status) == ("status", JobStatus.QUEUED)
    assert (events[-1].kind, events[-1].status) == ("status", JobStatus.SUCCEEDED)
    messages = [e.message for e in events]
    assert f"{name}: SuccessfulCreate: Created pod: {name}-0-abcde" in messages  # the tuning Job's events
    assert "{'loss': 1.2, 'epoch': 1.0}" in messages  # the trainer's log, read from the container named so
    log_reads = [p for m, p in fake.requests if m == "GET" and p.endswith("/log")]
    assert log_reads and all(f"/pods/{name}-0-abcde/" in p for p in log_reads)
    model = provider.result(final)
    assert model.model_id == IMAGE and model.adapter_path is None
    assert "image" in model.extra["note"] and model.extra["image"] == IMAGE
    assert provider.metrics(record.id) == []
    assert [r.id for r in provider.list()] == [record.id]
    # Submitting again under the same key finds the workspace: nothing more is created.
    again = provider.submit(spec, idempotency_key="kaito-e2e")
    assert again.id == record.id and len(fake.created()) == 2


def test_plan_is_the_configmap_and_workspace_valid_for_kaito(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock
) -> None:
    fake, url = cluster
    spec = _spec(tmp_path, quantization="4bit", hyperparameters={"epochs": 2, "learning_rate": 1e-4})
    plan = make(url, tmp_path, clock).plan(spec, idempotency_key="plan")
    assert fake.requests == []  # a dry run makes no call
    configmap, workspace = (r.body for r in plan.requests)
    assert [r.operation for r in plan.requests] == [
        "POST /api/v1/namespaces/default/configmaps",
        "POST /apis/kaito.sh/v1beta1/namespaces/default/workspaces",
    ]
    assert _errors(WORKSPACE, workspace) == []
    sections = _kaito_accepts(configmap, workspace["tuning"]["method"])
    assert workspace["tuning"]["method"] == "qlora" and sections["TrainingArguments"]["num_train_epochs"] == 2
    assert plan.uploads == [] and A100 in plan.notes[0] and IMAGE in plan.notes[0]


def test_a_local_file_goes_to_the_storage_kaito_reads_by_https(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    fake, url = cluster
    base = "https://acct.blob.core.windows.net/public"
    provider = make(
        url,
        tmp_path,
        clock,
        kaito_input_url=None,
        storage=f"file://{tmp_path}/bucket",
        kaito_storage_url=base,
        kaito_output_image=None,
        kaito_output_secret=None,
        kaito_output_volume={"persistentVolumeClaim": {"claimName": "adapters"}},
    )
    plan = provider.plan(spec, idempotency_key="up")
    assert len(plan.uploads) == 1 and plan.uploads[0].path.startswith(f"file://{tmp_path}/bucket/inputs/")
    assert fake.requests == [] and not (tmp_path / "bucket").exists()  # planning uploads nothing
    record = provider.submit(spec, idempotency_key="up")
    uploaded = [p for p in (tmp_path / "bucket").rglob("*") if p.is_file()]
    assert len(uploaded) == 1 and uploaded[0].read_bytes() == Path(str(spec.training_file)).read_bytes()
    rel = uploaded[0].relative_to(tmp_path / "bucket").as_posix()
    ws = _workspace(fake, job_name("up"))
    assert ws["tuning"]["input"] == {"urls": [f"{base}/{rel}"]}
    assert _errors(WORKSPACE, ws | {"metadata": {"name": "x", "namespace": "default"}}) == []
    for _ in range(3):
        record = provider.get(record.id)
    assert record.status is JobStatus.SUCCEEDED and record.fine_tuned_model == "pvc://adapters"
    assert "mount" in provider.result(record).extra["note"]


def test_a_failed_workspace_carries_kaitos_words_and_the_log_tail(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    name = job_name("fails")
    fake.statuses[name] = kaito_statuses("failed")
    fake.scripts[name] = Script(outcome="failed", lines=["loading", "torch.OutOfMemoryError: CUDA out of memory"])
    record = provider.submit(spec, idempotency_key="fails")
    for _ in range(3):
        record = provider.get(record.id)
    assert record.status is JobStatus.FAILED and record.error is not None
    assert "tuning job failed" in record.error.message and "CUDA out of memory" in record.error.message


# -- create once, faults ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [("after", 409), ("after", 503), ("drop",)])
def test_an_ambiguous_create_is_looked_up(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec, fault: tuple[Any, ...]
) -> None:
    fake, _ = cluster
    # "after": the workspace is made but the answer is an error (409 from a racing retry, a 503);
    # "drop": no answer at all, before it is made. Either way a lookup settles it: one workspace.
    fake.fault("POST", r"/workspaces$", *fault)
    record = provider.submit(spec, idempotency_key="once")
    assert record.id == f"default/{job_name('once')}"
    assert [k for k in fake.custom if k[:4] == WS] == [(*WS, job_name("once"))]


def test_a_configmap_left_by_an_earlier_try_is_used(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    fake.fault("POST", r"/configmaps$", "after", 503)  # made, but the answer lost: the retry meets 409
    provider.submit(spec, idempotency_key="cm")
    assert len([k for k in fake.objects if k[0] == "configmaps"]) == 1 and len(fake.custom) == 1


def test_reads_retry_429_and_5xx(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], clock: FakeClock, spec: JobSpec
) -> None:
    fake, _ = cluster
    record = provider.submit(spec, idempotency_key="reads")
    fake.fault("GET", r"/workspaces/anytune-", "status", 429, {"Retry-After": "7"})
    fake.fault("GET", r"/workspaces/anytune-", "status", 503)
    fake.fault("GET", r"/pods$", "status", 500)
    assert provider.get(record.id).status is JobStatus.QUEUED
    assert any(s >= 7 for s in clock.sleeps)
    for _ in range(10):
        fake.fault("GET", r"/workspaces/anytune-", "status", 429, {"Retry-After": "1"})
    with pytest.raises(RateLimitError):
        provider.get(record.id)


# -- bad input: a clear error, nothing created -----------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "spec_fields", "error", "field", "words"),
    [
        ({}, {"base_model": "llama-3.1-8b-instruct"}, NotSupportedError, "base_model", "cannot fine-tune"),
        ({}, {"base_model": "phi-9"}, NotSupportedError, "base_model", "Kaito fine-tunes: mistral-7b"),
        ({"kaito_preset": "nope-7b"}, {}, ConfigError, "settings.kaito_preset", "not a preset"),
        ({}, {"method": "dpo"}, NotSupportedError, "method", "SFT"),
        ({"kaito_instance_type": "Standard_NC24ads_A100"}, {}, ConfigError, "settings.kaito_instance_type", "mean"),
        ({"kaito_instance_type": None}, {}, ConfigError, "settings.kaito_instance_type", "node size"),
        ({"kaito_input_url": None}, {}, ConfigError, "settings.kaito_input_url", "not from this machine"),
        ({"kaito_input_url": "ftp://x/t.jsonl"}, {}, ConfigError, "settings.kaito_input_url", "http(s)"),
        ({"kaito_output_secret": None}, {}, ConfigError, "settings.kaito_output_secret", "push credentials"),
        ({"hub_token_key": "token"}, {}, ConfigError, "settings.hub_token_key", "HF_TOKEN"),
        (
            {"kaito_input_url": None, "storage": "s3://b/p", "kaito_storage_url": "http://b.example.com/p"},
            {},
            ConfigError,
            "settings.kaito_storage_url",
            "https",
        ),
    ],
)
def test_what_kaito_cannot_do_is_refused_before_any_call(
    cluster: tuple[FakeCluster, str],
    tmp_path: Path,
    clock: FakeClock,
    settings: dict[str, Any],
    spec_fields: dict[str, Any],
    error: type[Exception],
    field: str,
    words: str,
) -> None:
    fake, url = cluster
    provider = make(url, tmp_path, clock, **settings)
    spec = _spec(tmp_path, **spec_fields)
    for attempt in (provider.validate, lambda s: provider.submit(s, idempotency_key="bad")):
        with pytest.raises(error) as caught:
            attempt(spec)
        assert getattr(caught.value, "field", None) == field and words in str(caught.value)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"namespace": "nowhere"}, "settings.namespace", "does not exist"),
        ({"kaito_output_secret": "missing-push"}, "settings.kaito_output_secret", "does not exist"),
        ({"hub_token_secret": "missing-hf"}, "settings.hub_token_secret", "does not exist"),
        ({"not_installed": True}, "settings.mode", "Kaito is not installed"),
        ({"only_v1alpha1": True}, "settings.mode", "Kaito is not installed"),
    ],
)
def test_what_the_cluster_lacks_is_refused_with_nothing_created(
    cluster: tuple[FakeCluster, str],
    tmp_path: Path,
    clock: FakeClock,
    spec: JobSpec,
    change: dict[str, Any],
    field: str,
    words: str,
) -> None:
    fake, url = cluster
    if change.pop("not_installed", False):
        fake.groups.remove("kaito.sh")
    if change.pop("only_v1alpha1", False):
        fake.versions["kaito.sh"] = ["v1alpha1"]
    with pytest.raises(ConfigError) as caught:
        make(url, tmp_path, clock, **change).submit(spec, idempotency_key="lacks")
    assert caught.value.field == field and words in str(caught.value)
    assert fake.created() == []


def test_the_webhook_would_refuse_a_workspace_without_its_configmap(
    cluster: tuple[FakeCluster, str], tmp_path: Path, clock: FakeClock, spec: JobSpec
) -> None:
    """The fake plays Kaito's webhook: the order ConfigMap-then-Workspace is what makes the submit work."""
    fake, url = cluster
    plan = kaito_plan(spec, "order", make(url, tmp_path, clock).settings)
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client_factory(url)())
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_custom_object("kaito.sh", "v1beta1", "default", "workspaces", plan.workspace)
    assert caught.value.status == 400 and "not found" in str(caught.value.body)
    assert fake.custom == {}


# -- secrets, cancel, resume -----------------------------------------------------------------------


def test_secrets_travel_by_name_only(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    plan = provider.plan(spec, idempotency_key="secret")
    record = provider.submit(spec, idempotency_key="secret")
    ws = _workspace(fake, job_name("secret"))
    assert ws["tuning"]["preset"]["presetOptions"] == {"modelAccessSecret": "hf"}
    shown = json.dumps([list(fake.custom.values()), list(fake.objects.values()), plan.model_dump(mode="json")])
    shown += json.dumps(record.model_dump(mode="json"))
    shown += repr(provider) + repr(record) + "".join(e.message for e in provider.events(record.id))
    assert TOKEN not in shown and PUSH not in shown
    # Existence checks never read a Secret's body into anything the provider keeps.
    assert ("GET", "/api/v1/namespaces/default/secrets/hf") in fake.requests


def test_cancel_deletes_the_workspace_and_keeps_outputs(
    provider: KubernetesProvider, cluster: tuple[FakeCluster, str], spec: JobSpec
) -> None:
    fake, _ = cluster
    record = provider.submit(spec, idempotency_key="stop")
    provider.get(record.id)
    cancelled = provider.cancel(record.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.error is not None
    assert not [k for k in fake.custom if k[:4] == WS]
    assert ("configmaps", "default", f"{job_name('stop')}-tuning") in fake.objects  # the tuning config stays
    again = provider.get(record.id)
    assert again.status is JobStatus.CANCELLED and again.output["image"] == IMAGE
    assert provider.cancel(record.id).status is JobStatus.CANCELLED  # twice is harmless
    found = provider.find("stop")
    assert found is not None and found.status is JobStatus.CANCELLED
    with pytest.raises(NotSupportedError, match="cannot continue"):
        provider.resume(record.id)


def test_setting_fields_name_what_the_user_writes() -> None:
    assert setting_field("kaito.input_urls") == "settings.kaito_input_url"
    assert setting_field("kaito.output_image_push_secret") == "settings.kaito_output_secret"
    assert setting_field("kaito.instance_type") == "settings.kaito_instance_type"
    assert setting_field("lora.r") == "lora.r"


def test_the_sample_dry_run_prints_the_workspace_offline(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    sample = Path(__file__).resolve().parents[2] / "samples" / "kaito_tuning.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANYTUNE_HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    argv = ["--dry-run", "--input-url", URL, "--output-image", IMAGE, "--push-secret", "acr-push"]
    proc = subprocess.run([sys.executable, str(sample), *argv], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    configmap, workspace = (r["body"] for r in plan["requests"])
    assert _errors(WORKSPACE, workspace) == []
    assert _kaito_accepts(configmap, "lora")["DatasetConfig"]["train_test_split"] == 0.9
    assert workspace["tuning"]["preset"]["name"] == "phi-3-mini-4k-instruct"
