"""The azureml provider through the real azure-ai-ml code path (MLClient -> operations -> REST),
against an in-memory Azure ML at the azure-core transport level (see ``azureml_fake.py``).

What reaches the fake is what would reach Azure: the tests assert the request bodies (model input,
data inputs, hyperparameters, compute / instance types, output), the whole lifecycle, failure,
cancellation and faults (429 with Retry-After, 5xx, timeouts) without duplicate jobs, and that no
token or SAS signature ever lands in logs, errors, events or the job store.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # Imported once, quietly: azure-ai-ml's marshmallow schemas emit deprecation warnings on import.
    warnings.simplefilter("ignore")
    pytest.importorskip("azure.ai.ml")
pytest.importorskip("azure.identity")

import requests

from anytune import FineTuneJob, JobStatus
from anytune._spec import JobSpec
from anytune._store import JobStore
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    JobFailedError,
    JobNotFoundError,
    ModelNotAvailableError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)
from anytune.providers.azureml import AzureMLProvider, AzureMLSettings, data_asset_name, job_name
from anytune.testing import ProviderContract
from tests.conftest import FakeClock, chat_example, write_jsonl
from tests.providers.azureml_fake import (
    FAILING,
    RG,
    SAS,
    SUB,
    TOKEN,
    WS,
    WS_PATH,
    FakeAzureML,
    FakeCredential,
)

SETTINGS = {"subscription_id": SUB, "resource_group": RG, "workspace": WS}
PHI = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/7"
JOB_PUT = r"/jobs/[^/]+$"

#: Builds a provider wired to the test's fake: ``make(registry=...)`` adds settings, ``make(store=...)``
#: replaces the job store.
MakeProvider = Callable[..., AzureMLProvider]


@pytest.fixture
def fake(clock: FakeClock) -> FakeAzureML:
    return FakeAzureML(clock)


@pytest.fixture
def credential(clock: FakeClock) -> FakeCredential:
    return FakeCredential(clock)


@pytest.fixture
def store(anytune_home: Path) -> JobStore:
    return JobStore(anytune_home / "jobs.db")


@pytest.fixture
def make(
    fake: FakeAzureML, clock: FakeClock, credential: FakeCredential, store: JobStore, anytune_home: Path
) -> MakeProvider:
    """The SDK's pipelines and the provider both sleep through the fake clock and send to the fake."""

    def build(*, store: JobStore = store, **settings: Any) -> AzureMLProvider:
        return AzureMLProvider(
            AzureMLSettings(**SETTINGS, **settings),
            store=store,
            home=anytune_home,
            credential=credential,
            transport=fake.transport(),
            sleep=clock.sleep,
            clock=clock,
        )

    return build


@pytest.fixture
def provider(make: MakeProvider) -> AzureMLProvider:
    return make()


@pytest.fixture
def train(tmp_path: Path) -> Path:
    rows = [chat_example(i) for i in range(12)]
    rows[0]["messages"][2]["weight"] = 1  # anytune-only key: dropped before upload
    return write_jsonl(tmp_path / "train.jsonl", rows)


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "valid.jsonl", [chat_example(100 + i) for i in range(4)])


def spec(train: Path, valid: Path | None = None, **fields: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"base_model": "Phi-3-mini-4k-instruct", "training_file": train, "validation_file": valid, **fields}
    )


def handle(job: FineTuneJob, clock: FakeClock, store: JobStore | None = None) -> FineTuneJob:
    """The same job with the test's clock and sleep (create() gives a real-time handle)."""
    return FineTuneJob(job.record, job._provider, store=store, sleep=clock.sleep, clock=clock)


def job_body(fake: FakeAzureML) -> dict[str, Any]:
    [put] = fake.created_jobs()
    body: dict[str, Any] = put.body
    return body


# -- the full lifecycle ------------------------------------------------------------------------


def test_serverless_job_end_to_end(
    fake: FakeAzureML, clock: FakeClock, train: Path, valid: Path, store: JobStore, provider: AzureMLProvider
) -> None:
    created = FineTuneJob.create(
        provider=provider,
        base_model="Phi-3-mini-4k-instruct",
        training_file=train,
        validation_file=valid,
        suffix="support",
        hyperparameters={"epochs": 3, "learning_rate": 2e-4, "batch_size": 8},
        tags={"team": "nlp"},
    )
    assert created.ref.startswith("azureml:anytune-")
    assert created.record.status is JobStatus.QUEUED and created.record.raw_status == "NotStarted"

    body = job_body(fake)
    put = fake.created_jobs()[0]
    assert put.api_version == "2024-10-01-preview"
    assert put.path == f"{WS_PATH}/jobs/{created.id}"
    props = body["properties"]
    details = props["fineTuningDetails"]
    assert props["jobType"] == "FineTuning"
    assert details["modelProvider"] == "Custom"
    assert details["taskType"] == "chatCompletion"
    assert details["model"] == {"jobInputType": "mlflow_model", "uri": PHI}
    train_asset = fake.calls("PUT", r"/data/[^/]+/versions/1$")[0]
    valid_asset = fake.calls("PUT", r"/data/[^/]+/versions/1$")[1]
    assert details["trainingData"] == {
        "jobInputType": "uri_file",
        "uri": train_asset.path.removesuffix("/versions/1") + "/versions/1",
    }
    assert details["validationData"]["uri"].endswith(valid_asset.path.split("/data/")[1])
    assert details["hyperParameters"] == {
        "num_train_epochs": "3",
        "learning_rate": "0.0002",
        "per_device_train_batch_size": "8",
    }
    assert props["outputs"]["registered_model"] == {
        "jobOutputType": "mlflow_model",
        "assetName": f"Phi-3-mini-4k-instruct-support-{created.id[8:16]}",
    }
    assert "computeId" not in props and "resources" not in props and "queueSettings" not in props
    assert props["experimentName"] == "anytune"
    assert props["tags"]["team"] == "nlp"
    assert props["tags"]["anytune.idempotency_key"] == store.list()[0].idempotency_key
    assert created.id == job_name(props["tags"]["anytune.idempotency_key"])

    # Data: converted (weight dropped), uploaded to the default blob datastore, registered as uri_file.
    blob = fake.uploads()[0]
    lines = [json.loads(x) for x in blob.body.splitlines()]
    assert len(lines) == 12 and "weight" not in lines[0]["messages"][2]
    assert train_asset.body["properties"]["dataType"] == "uri_file"
    assert train_asset.body["properties"]["dataUri"].startswith(
        "azureml://datastores/workspaceblobstore/paths/anytune/"
    )
    assert train_asset.body["properties"]["tags"]["anytune.sha256"] in blob.path

    job = handle(created, clock, store)
    seen: list[str] = []
    final = job.wait(on_event=lambda e: seen.append(e.message))
    assert final.status is JobStatus.SUCCEEDED and final.raw_status == "Completed"
    assert final.started_at is not None and final.finished_at is not None
    statuses = [e.raw["status"] for e in job.events() if e.kind == "status"]
    assert statuses[0] == "NotStarted" and statuses[-1] == "Completed" and "Running" in statuses
    assert len(statuses) == len(set(statuses))
    points = job.metrics()
    assert [p.step for p in points] == [1, 2, 3, 4]
    assert points[-1].train_loss is not None and points[-1].train_loss < points[0].train_loss
    assert points[0].learning_rate == pytest.approx(2e-4)
    assert any(m.startswith("step 4") for m in seen)

    model = job.result()
    name = props["outputs"]["registered_model"]["assetName"]
    assert model.model_id == f"azureml:{name}:1"
    assert model.extra["asset_id"] == f"{WS_PATH}/models/{name}/versions/1"
    deploy = model.extra["deploy"]
    assert deploy["recommended"] == "serverless_endpoint"
    assert deploy["serverless_endpoint"]["model_id"].startswith("azureml://locations/eastus/workspaces/")
    assert model.final_metrics is not None and model.final_metrics.step == 4
    assert store.get(created.ref) is not None and store.get(created.ref).status == "succeeded"  # type: ignore[union-attr]
    assert len(fake.jobs) == 1


def test_managed_job_on_a_cluster(fake: FakeAzureML, provider: AzureMLProvider, train: Path) -> None:
    fake.add_compute("gpu-cluster")
    record = provider.submit(
        spec(
            train,
            azure={"deployment": "managed", "compute": "gpu-cluster", "job_tier": "spot"},
            hyperparameters={"epochs": 1, "max_length": 1024, "seed": 7, "warmup_steps": 10},
            lora={"r": 8, "alpha": 16, "dropout": 0.1},
            output_name="my-model",
        ),
        idempotency_key="managed-1",
    )
    props = job_body(fake)["properties"]
    assert props["computeId"] == f"{WS_PATH}/computes/gpu-cluster"
    assert props["queueSettings"] == {"jobTier": "Spot"}
    assert "resources" not in props
    assert props["fineTuningDetails"]["hyperParameters"] == {
        "num_train_epochs": "1",
        "max_seq_length": "1024",
        "seed": "7",
        "warmup_steps": "10",
        "apply_lora": "true",
        "lora_r": "8",
        "lora_alpha": "16",
        "lora_dropout": "0.1",
    }
    assert props["outputs"]["registered_model"]["assetName"] == "my-model"
    assert "validationData" not in props["fineTuningDetails"]
    assert record.id == job_name("managed-1")
    # The cluster was checked before anything was uploaded.
    order = [r.path for r in fake.requests]
    assert order.index(f"{WS_PATH}/computes/gpu-cluster") < next(
        i for i, r in enumerate(fake.requests) if ".blob." in r.url
    )


def test_managed_job_on_instance_types(fake: FakeAzureML, provider: AzureMLProvider, train: Path) -> None:
    provider.submit(
        spec(train, azure={"deployment": "managed", "instance_type": "Standard_NC24ads_A100_v4"}),
        idempotency_key="managed-2",
    )
    props = job_body(fake)["properties"]
    assert props["resources"] == {"instanceTypes": ["Standard_NC24ads_A100_v4"]}
    assert "computeId" not in props


def test_the_azureml_section_works_like_the_older_azure_one(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path
) -> None:
    options = {"deployment": "managed", "instance_type": "Standard_NC24ads_A100_v4", "job_tier": "basic"}
    provider.submit(spec(train, azureml=options), idempotency_key="section")
    props = job_body(fake)["properties"]
    assert props["resources"] == {"instanceTypes": ["Standard_NC24ads_A100_v4"]}
    assert props["queueSettings"] == {"jobTier": "Basic"}
    assert props["tags"]["anytune.deployment"] == "managed"


def test_missing_cluster_is_a_clear_error_before_any_upload(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path
) -> None:
    fake.add_compute("cpu-small")
    with pytest.raises(ConfigError, match=r"compute cluster 'gpu-cluster' does not exist.*cpu-small") as err:
        provider.submit(spec(train, azure={"deployment": "managed", "compute": "gpu-cluster"}), idempotency_key="k")
    assert err.value.field == "azure.compute"
    assert not fake.uploads() and not fake.created_jobs()


def test_text_completion_task_converts_chat_data(fake: FakeAzureML, provider: AzureMLProvider, train: Path) -> None:
    provider.submit(spec(train, azure={"task": "text-completion"}), idempotency_key="tc")
    assert job_body(fake)["properties"]["fineTuningDetails"]["taskType"] == "textCompletion"
    first = json.loads(fake.uploads()[0].body.splitlines()[0])
    assert first == {"prompt": "You answer in one short sentence.\n\nWhat is 0 plus 0?", "completion": "0 plus 0 is 0."}


# -- marketplace -------------------------------------------------------------------------------

LLAMA = {"base_model": "Meta-Llama-3-8B-Instruct"}


def test_marketplace_model_needs_the_opt_in(fake: FakeAzureML, provider: AzureMLProvider, train: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="accept_marketplace_terms"):
        provider.submit(spec(train, **LLAMA, azure={"registry": "azureml-meta"}), idempotency_key="m1")
    assert not fake.calls("PUT", "marketplaceSubscriptions") and not fake.uploads() and not fake.created_jobs()


def test_marketplace_subscription_is_created_first_with_the_opt_in(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock
) -> None:
    provider.submit(
        spec(train, **LLAMA, azure={"registry": "azureml-meta", "accept_marketplace_terms": True}), idempotency_key="m2"
    )
    [sub] = fake.calls("PUT", "/marketplaceSubscriptions/")
    assert sub.path.endswith("/marketplaceSubscriptions/Meta-Llama-3-8B-Instruct")
    assert sub.body == {"properties": {"modelId": "azureml://registries/azureml-meta/models/Meta-Llama-3-8B-Instruct"}}
    assert fake.requests.index(sub) < fake.requests.index(fake.created_jobs()[0])
    assert fake.marketplace["Meta-Llama-3-8B-Instruct"]["status"] == "Subscribed"
    assert clock.sleeps  # waited (instantly) for the subscription to become active
    details = job_body(fake)["properties"]["fineTuningDetails"]
    assert details["model"]["uri"] == "azureml://registries/azureml-meta/models/Meta-Llama-3-8B-Instruct/versions/9"


def test_an_active_subscription_is_reused(fake: FakeAzureML, train: Path, make: MakeProvider) -> None:
    fake.marketplace["Meta-Llama-3-8B-Instruct"] = {"modelId": "x", "status": "Subscribed", "polls": 0}
    provider = make(registry="azureml-meta")
    provider.submit(spec(train, **LLAMA), idempotency_key="m3")
    assert not fake.calls("PUT", "/marketplaceSubscriptions/")
    assert len(fake.created_jobs()) == 1


# -- uploads and idempotency -------------------------------------------------------------------


def test_same_content_is_uploaded_once(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, anytune_home: Path, make: MakeProvider
) -> None:
    first = provider.submit(spec(train), idempotency_key="a")
    second = provider.submit(spec(train), idempotency_key="b")
    assert first.id != second.id and len(fake.jobs) == 2
    assert len(fake.uploads()) == 1 and len(fake.calls("PUT", r"/data/")) == 1
    bodies = [b.body["properties"]["fineTuningDetails"]["trainingData"]["uri"] for b in fake.created_jobs()]
    assert bodies[0] == bodies[1]
    # Another machine (empty job store) finds the content-addressed asset in the workspace.
    other = make(store=JobStore(anytune_home / "other.db"))
    other.submit(spec(train), idempotency_key="c")
    assert len(fake.uploads()) == 1 and len(fake.calls("PUT", r"/data/")) == 1


def test_a_retried_submit_finds_the_job_instead_of_creating_another(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path
) -> None:
    first = provider.submit(spec(train), idempotency_key="same-key")
    again = provider.submit(spec(train), idempotency_key="same-key")
    assert again.id == first.id
    assert len(fake.created_jobs()) == 1 and len(fake.jobs) == 1


def test_create_that_timed_out_after_taking_effect_is_found_not_duplicated(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path
) -> None:
    fake.fail("PUT", JOB_PUT, exception=requests.exceptions.ReadTimeout, after=True)
    record = provider.submit(spec(train), idempotency_key="ambiguous")
    assert record.id in fake.jobs
    assert len(fake.created_jobs()) == 1 and len(fake.jobs) == 1  # never sent twice


def test_create_that_failed_before_taking_effect_is_sent_again_after_a_lookup(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock
) -> None:
    fake.fail("PUT", JOB_PUT, status=503)
    record = provider.submit(spec(train), idempotency_key="retry")
    assert len(fake.created_jobs()) == 2 and list(fake.jobs) == [record.id]
    lookups = fake.calls("GET", rf"/jobs/{record.id}$")
    assert fake.requests.index(lookups[-1]) < fake.requests.index(fake.created_jobs()[1])
    assert clock.sleeps


def test_create_throttled_honours_retry_after(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock
) -> None:
    fake.fail("PUT", JOB_PUT, status=429, headers={"Retry-After": "7"})
    provider.submit(spec(train), idempotency_key="throttled")
    assert 7.0 in clock.sleeps
    assert len(fake.jobs) == 1


def test_create_that_keeps_failing_gives_up_without_a_job(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path
) -> None:
    fake.fail("PUT", JOB_PUT, status=500, times=10)
    with pytest.raises(ServiceUnavailableError) as err:
        provider.submit(spec(train), idempotency_key="down")
    assert err.value.status_code == 500
    assert len(fake.created_jobs()) == 3 and not fake.jobs  # create_attempts, each after a lookup


@pytest.mark.parametrize(
    ("fault", "expected_sleeps"),
    [
        ({"status": 429, "headers": {"Retry-After": "3"}, "times": 2}, [3.0, 3.0]),
        ({"status": 503, "times": 2}, None),
        ({"exception": requests.exceptions.ConnectionError, "times": 1}, None),
        ({"exception": requests.exceptions.ReadTimeout, "times": 2}, None),
    ],
    ids=["429-retry-after", "503", "connection-error", "read-timeout"],
)
def test_reads_are_retried(
    fake: FakeAzureML,
    provider: AzureMLProvider,
    train: Path,
    clock: FakeClock,
    fault: dict[str, Any],
    expected_sleeps: list[float] | None,
) -> None:
    record = provider.submit(spec(train), idempotency_key="reads")
    clock.sleeps.clear()
    before = len(fake.calls("GET", rf"/jobs/{record.id}$"))
    fake.fail("GET", rf"/jobs/{record.id}$", **fault)
    assert provider.get(record.id).id == record.id
    # One get is two reads (the generic and the fine-tuning api-version); each fault costs one more.
    assert len(fake.calls("GET", rf"/jobs/{record.id}$")) - before == 2 + fault["times"]
    if expected_sleeps is not None:
        assert clock.sleeps[: len(expected_sleeps)] == expected_sleeps
    assert len(fake.jobs) == 1


def test_reads_give_up_with_a_provider_error(fake: FakeAzureML, provider: AzureMLProvider, train: Path) -> None:
    record = provider.submit(spec(train), idempotency_key="give-up")
    fake.fail("GET", rf"/jobs/{record.id}$", status=503, times=50)
    with pytest.raises(ServiceUnavailableError) as err:
        provider.get(record.id)
    assert not type(err.value).__module__.startswith("azure")
    fake.faults.clear()
    fake.fail("GET", rf"/jobs/{record.id}$", status=429, headers={"Retry-After": "2"}, times=50)
    with pytest.raises(RateLimitError) as throttled:
        provider.get(record.id)
    assert throttled.value.retry_after == 2.0


# -- failure and cancellation ------------------------------------------------------------------


def test_failed_job_carries_the_service_error(
    fake: FakeAzureML, clock: FakeClock, train: Path, provider: AzureMLProvider
) -> None:
    fake.default_script = FAILING
    job = handle(
        FineTuneJob.create(provider=provider, base_model="Phi-3-mini-4k-instruct", training_file=train),
        clock,
    )
    final = job.wait()
    assert final.status is JobStatus.FAILED and final.raw_status == "Failed"
    assert final.error is not None and "CUDA out of memory" in final.error.message
    assert final.error.code == "UserError"
    with pytest.raises(JobFailedError, match="CUDA out of memory") as err:
        job.result()
    assert err.value.record.id == job.id
    last = [e for e in job.events() if e.kind == "status"][-1]
    assert last.level == "error" and last.status is JobStatus.FAILED


def test_cancel(fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock) -> None:
    record = provider.submit(spec(train), idempotency_key="cancel-me")
    clock.advance(40)
    assert provider.get(record.id).status is JobStatus.RUNNING
    after = provider.cancel(record.id)
    assert len(fake.calls("POST", rf"/jobs/{record.id}/cancel$")) == 1
    assert after.raw_status == "CancelRequested" and not after.done
    clock.advance(10)
    final = provider.get(record.id)
    assert final.status is JobStatus.CANCELLED and final.error is not None
    assert provider.cancel(record.id).status is JobStatus.CANCELLED  # a finished job is not asked again
    assert len(fake.calls("POST", r"/cancel$")) == 1
    job = FineTuneJob(final, provider, sleep=clock.sleep, clock=clock)
    with pytest.raises(JobFailedError):
        job.result()


# -- errors at the boundary --------------------------------------------------------------------


class _RefusingCredential:
    """Entra ID refused the sign-in (a wrong client secret, say)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        raise ClientAuthenticationError("ClientSecretCredential: AADSTS7000215: Invalid client secret provided")


class _AbsentCredential:
    """Nothing to sign in with on this machine (not logged in, no variables set)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.identity import CredentialUnavailableError

        raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")


def test_sign_in_failure_is_an_authentication_error(
    train: Path, store: JobStore, anytune_home: Path, fake: FakeAzureML
) -> None:
    provider = AzureMLProvider(
        AzureMLSettings(**SETTINGS),
        store=store,
        home=anytune_home,
        credential=_RefusingCredential(),
        transport=fake.transport(),
    )
    with pytest.raises(AuthenticationError, match="az login"):
        provider.submit(spec(train), idempotency_key="k")


def test_no_credential_here_is_a_config_error(
    train: Path, store: JobStore, anytune_home: Path, fake: FakeAzureML
) -> None:
    provider = AzureMLProvider(
        AzureMLSettings(**SETTINGS),
        store=store,
        home=anytune_home,
        credential=_AbsentCredential(),
        transport=fake.transport(),
    )
    with pytest.raises(ConfigError, match="az login") as err:
        provider.submit(spec(train), idempotency_key="k")
    assert err.value.field == "settings.identity" and not fake.jobs


def test_rejected_token_is_an_authentication_error(
    train: Path, store: JobStore, anytune_home: Path, fake: FakeAzureML, clock: FakeClock
) -> None:
    stale = "eyJ" + "x" * 30 + ".eyJ" + "y" * 30 + ".zzzzzzzzzzzzzz"
    provider = AzureMLProvider(
        AzureMLSettings(**SETTINGS),
        store=store,
        home=anytune_home,
        credential=FakeCredential(clock, token=stale),
        transport=fake.transport(),
        sleep=clock.sleep,
    )
    with pytest.raises(AuthenticationError) as err:
        provider.get("anytune-0123")
    assert err.value.status_code == 401


def test_missing_workspace_is_a_config_error(fake: FakeAzureML, provider: AzureMLProvider, train: Path) -> None:
    fake.workspace_exists = False
    with pytest.raises(ConfigError, match=f"workspace '{WS}' was not found"):
        provider.submit(spec(train), idempotency_key="k")


def test_quota_error_on_create(fake: FakeAzureML, provider: AzureMLProvider, train: Path) -> None:
    fake.fail(
        "PUT",
        JOB_PUT,
        status=400,
        body={"error": {"code": "QuotaExceeded", "message": "Not enough quota for Standard_NC24ads_A100_v4 in eastus"}},
    )
    with pytest.raises(QuotaExceededError, match="Not enough quota"):
        provider.submit(spec(train), idempotency_key="quota")
    assert not fake.jobs


@pytest.mark.parametrize(
    ("base_model", "match"),
    [("No-Such-Model", "not in registry 'azureml'"), ("bert-base-uncased", "cannot be fine-tuned for chat-completion")],
)
def test_invalid_model(fake: FakeAzureML, provider: AzureMLProvider, train: Path, base_model: str, match: str) -> None:
    with pytest.raises(ModelNotAvailableError, match=match):
        provider.submit(spec(train, base_model=base_model), idempotency_key="model")
    assert not fake.uploads()


@pytest.mark.parametrize(
    ("base_model", "match"),
    [("No-Such-Model", "not in registry 'azureml'"), ("bert-base-uncased", "cannot be fine-tuned for chat-completion")],
)
def test_create_checks_the_model_before_anything_is_recorded(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, anytune_home: Path, base_model: str, match: str
) -> None:
    """The registry is asked during create's pre-flight: no row in the store, no upload, no job."""
    with pytest.raises(ModelNotAvailableError, match=match):
        FineTuneJob.create(provider=provider, base_model=base_model, training_file=train)
    assert not fake.uploads() and not fake.jobs
    assert FineTuneJob.list(refresh=False) == []


def test_unknown_job_is_not_found(provider: AzureMLProvider) -> None:
    with pytest.raises(JobNotFoundError):
        provider.get("anytune-000000000000000000000000")


# -- secrets -----------------------------------------------------------------------------------


def test_tokens_and_sas_never_reach_logs_errors_events_or_the_store(
    fake: FakeAzureML,
    clock: FakeClock,
    train: Path,
    valid: Path,
    caplog: pytest.LogCaptureFixture,
    anytune_home: Path,
    provider: AzureMLProvider,
) -> None:
    caplog.set_level(logging.DEBUG)
    sig = SAS.split("sig=")[1]
    job = handle(
        FineTuneJob.create(
            provider=provider,
            base_model="Phi-3-mini-4k-instruct",
            training_file=train,
            validation_file=valid,
        ),
        clock,
    )
    job.wait()
    job.result()
    fake.fail(
        "GET",
        r"/jobs/",
        status=500,
        times=50,
        body={"error": {"code": "Internal", "message": f"upstream said Bearer {TOKEN} and sig={sig}"}},
    )
    with pytest.raises(AnytuneError) as err:
        job.refresh()
    assert fake.uploads()[0].url.count(sig) == 1  # the SAS did reach the storage account
    texts = [caplog.text, str(err.value), repr(err.value)]
    for path in anytune_home.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    for text in texts:
        assert TOKEN not in text
        assert sig not in text


# -- events, listing, re-attaching -------------------------------------------------------------


def test_events_resume_after_a_cursor_with_stable_ids(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock, make: MakeProvider
) -> None:
    fake.run_warnings = ["Validation data not given: 10% of the training data is held out"]
    record = provider.submit(spec(train), idempotency_key="events")
    for _ in range(12):
        clock.advance(10)
        provider.get(record.id)
    events = list(provider.events(record.id))
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {e.kind for e in events} == {"status", "metric", "log"}
    [log] = [e for e in events if e.kind == "log"]
    assert log.level == "warning" and "held out" in log.message
    middle = ids[len(ids) // 2]
    assert [e.id for e in provider.events(record.id, after=middle)] == [i for i in ids if i > middle]
    # Another process (a new provider over the same home) sees the same ids.
    other = make()
    assert [e.id for e in other.events(record.id)] == ids


def test_list_and_reattach(fake: FakeAzureML, provider: AzureMLProvider, train: Path, make: MakeProvider) -> None:
    record = provider.submit(spec(train), idempotency_key="listed")
    assert [r.id for r in provider.list()] == [record.id]
    job = FineTuneJob.get(record.ref, provider=make())
    assert job.id == record.id and job.record.status is JobStatus.QUEUED


def test_plan_sends_nothing_and_matches_what_submit_sends(
    fake: FakeAzureML, train: Path, valid: Path, provider: AzureMLProvider
) -> None:
    plan = FineTuneJob.plan(
        provider=provider,
        base_model=PHI,
        training_file=train,
        validation_file=valid,
        hyperparameters={"epochs": 2},
    )
    assert not fake.requests
    assert [u.purpose for u in plan.uploads] == ["training", "validation"]
    planned = plan.requests[-1].body["properties"]
    name = data_asset_name("anytune", plan.uploads[0].sha256)
    assert planned["fineTuningDetails"]["trainingData"]["uri"] == f"azureml:{name}:1"
    provider.submit(spec(train, valid, base_model=PHI, hyperparameters={"epochs": 2}), idempotency_key="p")
    sent = job_body(fake)["properties"]
    assert sent["fineTuningDetails"]["trainingData"]["uri"] == f"{WS_PATH}/data/{name}/versions/1"
    for key in ("model", "hyperParameters", "taskType"):
        assert planned["fineTuningDetails"][key] == sent["fineTuningDetails"][key]
    assert planned["outputs"]["registered_model"]["jobOutputType"] == "mlflow_model"


def test_an_unavailable_metrics_store_does_not_stop_the_event_stream(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock
) -> None:
    record = provider.submit(spec(train), idempotency_key="no-metrics")
    fake.fail("GET", r"/mlflow/", status=503, times=1000)
    clock.advance(60)
    provider.get(record.id)
    events = list(provider.events(record.id))
    assert [e.raw["status"] for e in events if e.kind == "status"] == ["NotStarted", "Running"]
    assert not [e for e in events if e.kind == "metric"]


# -- the contract suite ------------------------------------------------------------------------


class TestAzureMLContract(ProviderContract):
    """anytune's provider contract, on the fake workspace; jobs run through a short script."""

    @pytest.fixture
    def provider(self, make: MakeProvider, fake: FakeAzureML) -> AzureMLProvider:
        fake.default_script = ((0, "NotStarted"), (0.2, "Running"), (0.4, "Completed"))
        fake.cancel_seconds = 0.2
        return make()

    @pytest.fixture
    def spec(self, train: Path) -> JobSpec:
        return JobSpec(base_model="Phi-3-mini-4k-instruct", training_file=train)
