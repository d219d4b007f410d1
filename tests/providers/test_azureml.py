"""The azureml provider through the real azure-ai-ml code path (MLClient -> operations -> REST),
against an in-memory Azure ML at the azure-core transport level (see ``azureml_fake.py``).

What reaches the fake is what would reach Azure: the tests assert the request bodies (model input,
data inputs, hyperparameters, compute / instance types, output), the whole lifecycle, failure,
cancellation and faults (429 with Retry-After, 5xx, timeouts) without duplicate jobs, and that no
token or SAS signature ever lands in logs, errors, events or the job store.

The fake holds every request to Azure's published contracts (``azureml_finetuning_contract.json``):
the job schema and the hyperparameter names of each deployment, the token audience of each host,
MLflow's search filter and paging. A refusal a test did not ask for fails it (the ``fake``
fixture); the tests marked "a wrong adapter" show each rule refusing what a wrong adapter sends.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable, Iterator
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
    InvalidRequestError,
    JobFailedError,
    JobNotFoundError,
    ModelNotAvailableError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)
from anytune.providers.azureml import AzureMLProvider, AzureMLSettings, data_asset_name, job_name
from anytune.providers.azureml import mapping as aml_mapping
from anytune.providers.azureml import workspace as aml_workspace
from anytune.testing import ProviderContract
from tests.conftest import FakeClock, chat_example, write_jsonl
from tests.providers.azureml_fake import (
    API,
    FAILING,
    RG,
    SAS,
    STORAGE_AUDIENCE,
    SUB,
    TOKEN,
    WS,
    WS_PATH,
    Clause,
    FakeAzureML,
    FakeCredential,
    audience_of,
    check_job_body,
    parse_filter,
    token_for,
)

SETTINGS = {"subscription_id": SUB, "resource_group": RG, "workspace": WS}
PHI = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/7"
JOB_PUT = r"/jobs/[^/]+$"

#: Builds a provider wired to the test's fake: ``make(registry=...)`` adds settings, ``make(store=...)``
#: replaces the job store.
MakeProvider = Callable[..., AzureMLProvider]


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeAzureML]:
    fake = FakeAzureML(clock)
    yield fake
    # A refusal nobody asked for: the adapter sent something the published contract does not allow.
    assert not fake.rejections, fake.rejections


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
            http_client=fake.http_client(),
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


def logged_at(logged: dict[str, list[tuple[int, float, float]]], key: str, step: int) -> float | None:
    """The value the fake's fine-tune run logged for ``key`` at ``step`` (None: not logged there)."""
    return next((value for s, value, _ in logged.get(key, []) if s == step), None)


#: MLflow key the Trainer logs -> the MetricPoint field it must land in.
FIELDS = {"loss": "train_loss", "eval_loss": "valid_loss", "learning_rate": "learning_rate", "epoch": "epoch"}


def assert_points_match(points: list[Any], logged: dict[str, list[tuple[int, float, float]]]) -> None:
    """Each point holds what was logged at its step, under the field its key maps to; anything else
    (grad_norm, eval_runtime, the run's summary) is in ``extra`` under its own key."""
    for p in points:
        for key, name in FIELDS.items():
            assert getattr(p, name) == logged_at(logged, key, p.step), (p.step, key)
        others = {k: logged_at(logged, k, p.step) for k in logged if k not in FIELDS}
        assert p.extra == {k: v for k, v in others.items() if v is not None}, p.step
    last, mean = points[-1], logged_at(logged, "train_loss", points[-1].step)
    if mean is not None:
        # The Trainer's closing summary (the run's mean loss, at the last step) does not replace that
        # step's own loss.
        assert last.train_loss == logged_at(logged, "loss", last.step) != mean
        assert last.extra["train_loss"] == mean


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
    # The fine-tune child run's MLflow histories, folded by step into the uniform fields.
    points = job.metrics()
    logged = fake.logged(created.id)
    assert [p.step for p in points] == [s for s, _, _ in logged["loss"]] == [1, 2, 3, 4]
    assert_points_match(points, logged)
    assert [m.split(":")[0] for m in seen if m.startswith("step ")] == ["step 1", "step 2", "step 3", "step 4"]

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
    assert [path for path, _ in fake.rejections] == [WS_PATH]  # refused at the first call, nothing after
    fake.rejections.clear()


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
    credential: FakeCredential,
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
    assert credential.issued == {TOKEN}  # the ARM scope everywhere (azure-ai-ml's and the data plane's)
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
    check_job_body(plan.requests[-1].body)  # what a dry run shows is a body the service takes


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


# -- the published contract: the job body --------------------------------------------------------

JOBS_API = "2024-10-01-preview"


def arm_put(fake: FakeAzureML, name: str, body: Any) -> requests.Response:
    """A job PUT straight to the fake, as a wrong adapter would send it."""
    url = f"https://management.azure.com{WS_PATH}/jobs/{name}?api-version={JOBS_API}"
    return fake.session().put(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture(scope="module")
def adapter_body(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The body the adapter PUTs for a serverless job, captured once (a submit takes a second)."""
    clock = FakeClock()
    fake = FakeAzureML(clock)
    home = tmp_path_factory.mktemp("azureml-home")
    provider = AzureMLProvider(
        AzureMLSettings(**SETTINGS),
        store=JobStore(home / "jobs.db"),
        home=home,
        credential=FakeCredential(clock),
        transport=fake.transport(),
        sleep=clock.sleep,
        clock=clock,
    )
    train = write_jsonl(home / "train.jsonl", [chat_example(i) for i in range(12)])
    provider.submit(spec(train, hyperparameters={"epochs": 2}), idempotency_key="sent")
    return job_body(fake)


@pytest.fixture
def sent(adapter_body: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(adapter_body)


HP = "$.properties.fineTuningDetails.hyperParameters"
WRONG_BODIES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "unknown property": (
        lambda p: p["fineTuningDetails"].update(hyperparameters={"num_train_epochs": "1"}),
        "$.properties.fineTuningDetails.hyperparameters",
    ),
    "no outputs": (lambda p: p.pop("outputs"), "$.properties.outputs"),
    "no training data": (
        lambda p: p["fineTuningDetails"].pop("trainingData"),
        "$.properties.fineTuningDetails.trainingData",
    ),
    "unknown input type": (
        lambda p: p["fineTuningDetails"]["trainingData"].update(jobInputType="file"),
        "$.properties.fineTuningDetails.trainingData.jobInputType",
    ),
    "empty model uri": (
        lambda p: p["fineTuningDetails"]["model"].update(uri=""),
        "$.properties.fineTuningDetails.model.uri",
    ),
    "unknown task": (
        lambda p: p["fineTuningDetails"].update(taskType="chat"),
        "$.properties.fineTuningDetails.taskType",
    ),
    "number hyperparameter": (
        lambda p: p["fineTuningDetails"].update(hyperParameters={"num_train_epochs": 2}),
        f"{HP}.num_train_epochs",
    ),
    "unknown job tier": (lambda p: p.update(queueSettings={"jobTier": "Gold"}), "$.properties.queueSettings.jobTier"),
    "Azure OpenAI names": (lambda p: p["fineTuningDetails"].update(hyperParameters={"n_epochs": "2"}), HP),
    "managed-only name on serverless": (
        lambda p: p["fineTuningDetails"].update(hyperParameters={"max_steps": "9"}),
        HP,
    ),
}


@pytest.mark.parametrize("case", list(WRONG_BODIES))
def test_a_wrong_job_body_is_refused_like_the_service_does(fake: FakeAzureML, sent: dict[str, Any], case: str) -> None:
    """A wrong adapter: each body is the adapter's own with one thing broken."""
    assert arm_put(fake, "anytune-control", sent).status_code == 201  # the adapter's body as sent is accepted
    mutate, target = WRONG_BODIES[case]
    body = copy.deepcopy(sent)
    mutate(body["properties"])
    answer = arm_put(fake, "anytune-wrong", body)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "UserError" and answer.json()["error"]["target"] == target
    assert "anytune-wrong" not in fake.jobs
    assert [path for path, _ in fake.rejections] == [f"{WS_PATH}/jobs/anytune-wrong"]
    fake.rejections.clear()


def test_managed_hyperparameters_are_accepted_with_compute_only(fake: FakeAzureML, sent: dict[str, Any]) -> None:
    body = copy.deepcopy(sent)
    body["properties"]["fineTuningDetails"]["hyperParameters"] = {"max_steps": "9", "lora_r": "8"}
    assert arm_put(fake, "anytune-serverless", body).status_code == 400
    body["properties"]["resources"] = {"instanceTypes": ["Standard_NC24ads_A100_v4"]}
    assert arm_put(fake, "anytune-managed", body).status_code == 201
    fake.rejections.clear()


@pytest.mark.parametrize("deployment", ["serverless", "managed"])
def test_every_hyperparameter_the_adapter_maps_is_one_the_service_takes(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, deployment: str
) -> None:
    values = {
        "epochs": 1,
        "batch_size": 2,
        "learning_rate": 1e-5,
        "warmup_steps": 3,
        "max_steps": 7,
        "max_length": 512,
        "seed": 5,
    }
    options = {"deployment": deployment} | (
        {"instance_type": "Standard_NC24ads_A100_v4"} if deployment == "managed" else {}
    )
    fields: dict[str, Any] = {
        "azureml": options,
        "hyperparameters": {k: values[k] for k in aml_mapping.HYPERPARAMETERS[deployment]},
    }
    if deployment == "managed":
        fields["lora"] = {"r": 4}
    record = provider.submit(spec(train, **fields), idempotency_key=deployment)
    assert record.id in fake.jobs  # accepted (the fixture fails the test on any refusal)
    sent = job_body(fake)["properties"]["fineTuningDetails"]["hyperParameters"]
    assert len(sent) == len(fields["hyperparameters"]) + (4 if deployment == "managed" else 0)


def test_a_wrong_hyperparameter_table_fails_at_the_service(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong adapter: serverless epochs mapped to Azure OpenAI's name."""
    wrong = dict(aml_mapping.HYPERPARAMETERS["serverless"]) | {"epochs": "n_epochs"}
    monkeypatch.setitem(aml_mapping.HYPERPARAMETERS, "serverless", wrong)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="n_epochs") as err:
        provider.submit(spec(train, hyperparameters={"epochs": 2}), idempotency_key="wrong-table")
    assert err.value.status_code == 400
    assert not fake.jobs and len(fake.created_jobs()) == 1  # refused, and not sent again
    fake.rejections.clear()


# -- the published contract: a token's audience, per host ---------------------------------------


def test_each_host_gets_a_token_for_its_own_audience(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, credential: FakeCredential, clock: FakeClock
) -> None:
    """An identity-based datastore: storage takes a bearer token, which must be storage's."""
    fake.datastore_credentials = "None"
    record = provider.submit(spec(train), idempotency_key="audiences")
    clock.advance(60)
    provider.get(record.id)
    provider.metrics(record.id)
    [upload] = fake.uploads()
    assert "sig=" not in upload.url
    assert audience_of(upload.headers["Authorization"].removeprefix("Bearer ")) == STORAGE_AUDIENCE
    arm_and_data_plane = {r.headers["Authorization"] for r in fake.requests if ".blob." not in r.url}
    assert arm_and_data_plane == {f"Bearer {TOKEN}"}
    assert {s for scopes in credential.scopes for s in scopes} == {
        "https://management.azure.com/.default",
        "https://storage.azure.com/.default",
    }


def test_a_token_for_another_audience_is_refused_by_arm(
    fake: FakeAzureML, train: Path, store: JobStore, anytune_home: Path, clock: FakeClock
) -> None:
    """A wrong adapter: a storage token sent to ARM."""
    provider = AzureMLProvider(
        AzureMLSettings(**SETTINGS),
        store=store,
        home=anytune_home,
        credential=FakeCredential(clock, token=token_for(STORAGE_AUDIENCE)),
        transport=fake.transport(),
        sleep=clock.sleep,
        clock=clock,
    )
    with pytest.raises(AuthenticationError, match="wrong audience") as err:
        provider.submit(spec(train), idempotency_key="k")
    assert err.value.status_code == 401
    assert not fake.uploads() and not fake.jobs
    fake.rejections.clear()


def test_the_data_plane_refuses_a_token_for_another_audience(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong adapter: run history and MLflow asked with a scope that is not Azure ML's."""
    record = provider.submit(spec(train), idempotency_key="data-plane")
    clock.advance(60)
    monkeypatch.setattr(aml_workspace, "ARM_SCOPE", "https://storage.azure.com/.default")
    other = AzureMLProvider(
        AzureMLSettings(**SETTINGS),
        home=provider.home,
        credential=FakeCredential(clock),
        transport=fake.transport(),
        sleep=clock.sleep,
        clock=clock,
    )
    with pytest.raises(AuthenticationError) as err:
        other.get(record.id)  # the job itself comes from ARM; its run details from the data plane
    assert err.value.status_code == 401
    assert fake.rejections and all(p.startswith(("/history/", "/discovery")) for p, _ in fake.rejections)
    fake.rejections.clear()


def test_storage_refuses_a_token_for_another_audience(
    fake: FakeAzureML, train: Path, store: JobStore, anytune_home: Path, clock: FakeClock
) -> None:
    """A wrong adapter: the ARM token sent to an identity-based datastore."""
    fake.datastore_credentials = "None"
    provider = AzureMLProvider(
        AzureMLSettings(**SETTINGS),
        store=store,
        home=anytune_home,
        credential=FakeCredential(clock, token=TOKEN),
        transport=fake.transport(),
        sleep=clock.sleep,
        clock=clock,
    )
    with pytest.raises(AuthenticationError) as err:
        provider.submit(spec(train), idempotency_key="k")
    assert err.value.status_code == 401
    assert fake.uploads() and not fake.data and not fake.jobs
    assert all("Audience validation failed" in message for _, message in fake.rejections)
    fake.rejections.clear()


# -- the published contract: run history and metrics ----------------------------------------------


def test_metrics_are_the_jobs_own_when_its_experiment_holds_others(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock
) -> None:
    """runs/search honours its filter: another job's runs in the same experiment stay out."""
    first = provider.submit(spec(train), idempotency_key="first")
    clock.advance(15)
    fake.loss_start = 5.0
    second = provider.submit(spec(train), idempotency_key="second")
    clock.advance(100)
    assert fake.experiment_id(first.id) == fake.experiment_id(second.id)
    for record in (first, second):
        points = provider.metrics(record.id)
        assert [p.step for p in points] == [1, 2, 3, 4]
        assert_points_match(points, fake.logged(record.id))
    searches = fake.calls("POST", r"/runs/search$")
    assert {s.body["filter"] for s in searches} == {f"tags.mlflow.rootRunId = '{r.id}'" for r in (first, second)}


def test_every_page_of_runs_and_of_metric_history_is_read(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock
) -> None:
    """One run per search page and one point per history page: nothing is left on a later page."""
    fake.search_page_size = 1
    fake.history_page_size = 1
    record = provider.submit(spec(train), idempotency_key="pages")
    clock.advance(150)
    points = provider.metrics(record.id)
    assert [p.step for p in points] == [1, 2, 3, 4]
    assert_points_match(points, fake.logged(record.id))
    # register, finetune, preprocess, root (newest first): one page each, the fine-tune run on the second.
    assert len(fake.calls("POST", r"/runs/search$")) == 4
    pages = fake.calls("GET", r"/metrics/get-history$")
    assert sum(1 for r in pages if r.query["metric_key"] == "loss") == 4


def test_only_the_metrics_a_run_logged_are_asked_for_each_once(
    fake: FakeAzureML, provider: AzureMLProvider, train: Path, clock: FakeClock
) -> None:
    record = provider.submit(spec(train), idempotency_key="keys")
    clock.advance(55)  # two steps logged: no summary yet
    points = provider.metrics(record.id)
    logged = fake.logged(record.id)
    assert [p.step for p in points] == [1, 2]
    assert_points_match(points, logged)
    asked = [(r.query["run_id"], r.query["metric_key"]) for r in fake.calls("GET", r"/metrics/get-history$")]
    assert sorted(asked) == sorted((f"{record.id}_finetune", key) for key in logged)  # no other run, no repeat


def test_an_unknown_metric_or_run_gets_what_mlflow_answers(
    fake: FakeAzureML, sent: dict[str, Any], clock: FakeClock
) -> None:
    name = "anytune-run"
    assert arm_put(fake, name, sent).status_code == 201
    clock.advance(60)
    base = f"{API}/mlflow/v1.0{WS_PATH}/api/2.0/mlflow"
    session, auth = fake.session(), {"Authorization": f"Bearer {TOKEN}"}

    def history(run_id: str, key: str) -> requests.Response:
        return session.get(f"{base}/metrics/get-history", params={"run_id": run_id, "metric_key": key}, headers=auth)

    assert [m["step"] for m in history(f"{name}_finetune", "loss").json()["metrics"]] == [1, 2, 3]
    assert history(f"{name}_finetune", "bleu").json() == {}  # never logged: an empty answer, not values
    missing = history("nope", "loss")
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    search = {"experiment_ids": [fake.experiment_id(name)], "filter": "tags.x == 'y'"}
    refused = session.post(f"{base}/runs/search", json=search, headers=auth)
    assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    fake.rejections.clear()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tags.mlflow.rootRunId = 'job-1'", [Clause("tags", "mlflow.rootRunId", "=", "job-1")]),
        (
            "tags.`mlflow.rootRunId` = 'a' and attributes.status != \"FAILED\"",
            [
                Clause("tags", "mlflow.rootRunId", "=", "a"),
                Clause("attributes", "status", "!=", "FAILED"),
            ],
        ),
        (
            "metrics.loss < 0.5 AND params.\"lr\" LIKE '2%'",
            [
                Clause("metrics", "loss", "<", 0.5),
                Clause("params", "lr", "LIKE", "2%"),
            ],
        ),
        ("", []),
    ],
)
def test_the_fake_reads_mlflows_filter_grammar(text: str, expected: list[Clause]) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    "text", ["tags.x == 'y'", "tags.x = y", "metrics.loss = 'low'", "tags.x = 'a' OR tags.y = 'b'", "nope.x = 'a'"]
)
def test_the_fake_refuses_what_mlflows_filter_grammar_does_not_allow(text: str) -> None:
    with pytest.raises(ValueError):
        parse_filter(text)


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


# -- evaluation through deployed endpoints -----------------------------------------------------


@pytest.fixture
def finished(
    fake: FakeAzureML, clock: FakeClock, train: Path, provider: AzureMLProvider, store: JobStore
) -> FineTuneJob:
    created = FineTuneJob.create(provider=provider, base_model="Phi-3-mini-4k-instruct", training_file=train)
    job = handle(created, clock, store)
    assert job.wait().status is JobStatus.SUCCEEDED
    return job


@pytest.fixture
def heldout(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "heldout.jsonl", [chat_example(i) for i in (0, 1, 2, 500)])


def _answers(indices: tuple[int, ...]) -> dict[str, str]:
    """What a model that learnt ``chat_example(i)`` for these ``i`` answers."""
    out = {}
    for i in indices:
        messages = chat_example(i)["messages"]
        out[messages[-2]["content"]] = messages[-1]["content"]
    return out


@pytest.mark.parametrize("kind", ["serverless", "online"])
def test_evaluation_calls_the_endpoints_the_models_are_deployed_to(
    fake: FakeAzureML, finished: FineTuneJob, heldout: Path, kind: str
) -> None:
    fake.add_endpoint("ft-phi", kind, _answers((0, 1, 2)))
    fake.add_endpoint("phi-base", kind, {})
    report = finished.evaluate(
        str(heldout),
        metrics=["exact_match", "token_f1"],
        max_new_tokens=24,
        call_as={"fine-tuned": "ft-phi", "base": "phi-base"},
    )
    assert report.summary["fine-tuned"]["exact_match"] == pytest.approx(3 / 4)
    assert report.summary["base"]["exact_match"] == 0.0
    assert finished.evaluations()[0].summary == report.summary  # kept with the job
    if kind == "serverless":
        assert len(fake.chat_requests) == 8
        first = fake.chat_requests[0]
        assert first["max_tokens"] == 24 and first["temperature"] == 0.0 and first["seed"] == 0
        assert first["messages"][-1] == {"role": "user", "content": "What is 0 plus 0?"}
        assert len(fake.calls("POST", r"/serverlessEndpoints/ft-phi/listKeys$")) == 1  # keys fetched once
        assert len(fake.calls("GET", r"/serverlessEndpoints/ft-phi$")) == 1  # the endpoint looked up once
    else:
        scored = fake.calls("POST", r"^/score$")
        assert len(scored) == 8
        # Looked up once, not per example (azure-ai-ml's get_keys reads the endpoint a second time).
        assert len(fake.calls("GET", r"/onlineEndpoints/ft-phi$")) == 2
        assert scored[0].body["input_data"]["parameters"] == {"max_new_tokens": 24, "do_sample": False}


def test_a_named_deployment_behind_an_online_endpoint_gets_the_header(
    fake: FakeAzureML, provider: AzureMLProvider
) -> None:
    fake.add_endpoint("ep", "online", {"hi": "hello"}).deployments = ("blue", "green")
    reply = provider.chat("ep/green", [{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.7, seed=1)
    assert reply == "hello"
    sent = fake.calls("POST", r"^/score$")[-1]
    assert sent.headers["azureml-model-deployment"] == "green"
    assert sent.body["input_data"]["parameters"] == {"max_new_tokens": 8, "do_sample": True, "temperature": 0.7}
    with pytest.raises(AnytuneError, match="red") as info:  # a deployment the endpoint does not have
        provider.chat("ep/red", [{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.0, seed=1)
    assert "not found" in str(info.value) and "Traceback" not in str(info.value)


@pytest.mark.parametrize("name", ["no-such-endpoint", "no-such/deployment"])
def test_an_endpoint_that_does_not_exist_is_a_clear_error_and_nothing_is_stored(
    fake: FakeAzureML, finished: FineTuneJob, heldout: Path, name: str
) -> None:
    with pytest.raises(ConfigError, match=r"no (serverless or )?(managed online )?endpoint named 'no-such") as info:
        finished.evaluate(str(heldout), call_as={"fine-tuned": name, "base": name})
    assert info.value.field == "deployment" and WS in str(info.value)
    assert finished.evaluations() == [] and fake.calls("POST", "/score") == []


def test_without_endpoint_names_the_registered_model_is_not_called(
    fake: FakeAzureML, finished: FineTuneJob, heldout: Path
) -> None:
    # A registered model is not served: its asset id is no endpoint name, refused before any call.
    with pytest.raises(ConfigError) as info:
        finished.evaluate(str(heldout))
    assert info.value.field == "deployment" and "deploy" in str(info.value)
    assert fake.calls("POST", "/score") == [] and fake.chat_requests == [] and finished.evaluations() == []


def test_serverless_chat_rides_out_429_5xx_and_drops(
    fake: FakeAzureML, provider: AzureMLProvider, clock: FakeClock
) -> None:
    fake.add_endpoint("ep", "serverless", {"hi": "hello"})
    fake.chat_faults = [429, 503, "drop"]
    before = clock()
    reply = provider.chat("ep", [{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.0, seed=0)
    assert reply == "hello" and fake.chat_faults == []
    assert clock() - before >= 3.0  # the endpoint's Retry-After was honoured


def test_online_scoring_rides_out_429_and_5xx(fake: FakeAzureML, provider: AzureMLProvider) -> None:
    fake.add_endpoint("ep", "online", {"hi": "hello"})
    fake.fail("POST", r"^/score$", status=429, headers={"Retry-After": "1"}, times=1)
    fake.fail("POST", r"^/score$", status=503, times=1)
    reply = provider.chat("ep", [{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.0, seed=0)
    assert reply == "hello" and len(fake.calls("POST", r"^/score$")) == 3


def test_endpoint_keys_never_reach_logs_errors_or_the_store(
    fake: FakeAzureML, finished: FineTuneJob, heldout: Path, caplog: pytest.LogCaptureFixture, anytune_home: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    tuned = fake.add_endpoint("ft-phi", "serverless", _answers((0,)))
    base = fake.add_endpoint("phi-base", "online", {})
    finished.evaluate(str(heldout), metrics=["exact_match"], call_as={"fine-tuned": "ft-phi", "base": "phi-base"})
    fake.chat_faults = [401]
    with pytest.raises(AnytuneError) as info:
        finished.evaluate(str(heldout), metrics=["exact_match"], call_as={"fine-tuned": "ft-phi", "base": "phi-base"})
    texts = [caplog.text, str(info.value), repr(info.value)]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in anytune_home.rglob("*") if p.is_file()]
    for text in texts:
        assert tuned.key not in text and base.key not in text


def test_an_answer_outside_the_scoring_shape_is_a_clear_error(fake: FakeAzureML, provider: AzureMLProvider) -> None:
    from anytune.errors import ProviderError
    from anytune.providers.azureml.endpoints import score_answer

    assert score_answer('{"output": "yes"}', endpoint="ep") == "yes"
    for text in ('[{"0": "yes"}]', "not json", '{"output": 3}'):
        with pytest.raises(ProviderError, match="chat-completion scoring shape"):
            score_answer(text, endpoint="ep")
