"""Deploying an Azure ML result (serverless endpoint / managed online endpoint) through the real
azure-ai-ml and azure-core pipelines against the in-memory Azure ML (``azureml_fake.py``), whose
endpoint writes are held to azure-ai-ml's generated REST models and answered as ARM answers
long-running writes. Time is the fake clock: waiting never really sleeps."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pytest.importorskip("azure.ai.ml")
pytest.importorskip("azure.identity")

import requests

from anytune import FineTuneJob, JobStatus
from anytune._store import JobStore
from anytune._types import FineTunedModel
from anytune.errors import AnytuneError, NotSupportedError, UsageError, WaitTimeoutError
from anytune.providers.azureml import AzureMLProvider, AzureMLSettings
from anytune.providers.azureml import deploy as aml_deploy
from tests.conftest import FakeClock, chat_example, write_jsonl
from tests.providers.azureml_fake import (
    LOCATION,
    RG,
    SUB,
    WS,
    WS_GUID,
    WS_PATH,
    FakeAzureML,
    FakeCredential,
    SchemaError,
    check_rest_body,
)

SETTINGS = {"subscription_id": SUB, "resource_group": RG, "workspace": WS}
MODEL = "Phi-3-mini-4k-instruct-ft"
ASSET = f"{WS_PATH}/models/{MODEL}/versions/1"
URI = f"azureml://locations/{LOCATION}/workspaces/{WS_GUID}/models/{MODEL}/versions/1"
SERVERLESS = r"/serverlessEndpoints/ep-one$"
ONLINE = r"/onlineEndpoints/ep-one$"
DEPLOYMENT = r"/onlineEndpoints/ep-one/deployments/default$"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake(clock: FakeClock) -> Any:
    fake = FakeAzureML(clock)
    fake.deploy_answers = {"hi": "hello from the fine-tuned model"}
    yield fake
    assert not fake.rejections, fake.rejections


@pytest.fixture
def provider(fake: FakeAzureML, clock: FakeClock, anytune_home: Path) -> AzureMLProvider:
    return AzureMLProvider(
        AzureMLSettings(**SETTINGS),
        store=JobStore(anytune_home / "jobs.db"),
        home=anytune_home,
        credential=FakeCredential(clock),
        transport=fake.transport(),
        http_client=fake.http_client(),
        sleep=clock.sleep,
        clock=clock,
    )


def result(provider: AzureMLProvider, *, serverless: bool, job: str = "ftjob-1", model: str = MODEL) -> FineTunedModel:
    """A result as AzureMLProvider.result() makes it (see test_deploy_from_a_finished_job for the real one)."""
    from anytune.providers.azureml.mapping import deploy_hints

    asset = f"{WS_PATH}/models/{model}/versions/1"
    uri = f"azureml://locations/{LOCATION}/workspaces/{WS_GUID}/models/{model}/versions/1"
    return FineTunedModel(
        provider="azureml",
        job_ref=f"azureml:{job}",
        model_id=f"azureml:{model}:1",
        extra={
            "name": model,
            "version": "1",
            "asset_id": asset,
            "workspace_model_uri": uri,
            "deploy": deploy_hints(model, asset, uri, serverless=serverless),
        },
    ).attach(provider)


def writes(fake: FakeAzureML, pattern: str) -> list[Any]:
    return fake.calls("PUT", pattern)


# -- pure parts ----------------------------------------------------------------------------------


def test_bodies_are_what_azure_ai_ml_sends_and_what_the_spec_takes() -> None:
    from azure.ai.ml._restclient.arm_ml_service import models as rest
    from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint

    settings = aml_deploy.AzureMLDeploySettings(instance_type="Standard_NC48ads_A100_v4", instance_count=2)
    ours = aml_deploy.endpoint_body(LOCATION, "azureml:j", traffic={"default": 100})
    sdk = ManagedOnlineEndpoint(name="ep-one", auth_mode="key", tags={"anytune.job_ref": "azureml:j"})
    sdk.traffic = {"default": 100}
    assert ours == sdk._to_rest_online_endpoint(location=LOCATION).as_dict()
    ours = aml_deploy.deployment_body(LOCATION, ASSET, settings, "azureml:j")
    sdk_d = ManagedOnlineDeployment(
        name="default",
        endpoint_name="ep-one",
        model=ASSET,
        instance_type="Standard_NC48ads_A100_v4",
        instance_count=2,
        tags={"anytune.job_ref": "azureml:j"},
    )
    assert ours == sdk_d._to_rest_object(location=LOCATION).as_dict()
    check_rest_body(aml_deploy.endpoint_body(LOCATION, "j"), rest.OnlineEndpoint)
    check_rest_body(ours, rest.OnlineDeployment)
    # The fake's checker refuses what the spec does not take.
    for bad, model in (
        ({"location": "x", "properties": {"authMode": "Key", "nope": 1}}, rest.OnlineEndpoint),
        ({"properties": {"authMode": "Key"}}, rest.OnlineEndpoint),
        ({**ours, "properties": {**ours["properties"], "endpointComputeType": "Nope"}}, rest.OnlineDeployment),
        ({**ours, "sku": {"name": "Default", "capacity": "2"}}, rest.OnlineDeployment),
        ({**ours, "properties": {**ours["properties"], "provisioningState": "Succeeded"}}, rest.OnlineDeployment),
    ):
        with pytest.raises(SchemaError):
            check_rest_body(bad, model)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("Creating", "creating"),
        ("Updating", "creating"),
        ("Succeeded", "ready"),
        ("succeeded", "ready"),
        ("Failed", "failed"),
        ("Canceled", "failed"),
        ("Deleting", "deleting"),
        (None, "creating"),
    ],
)
def test_status_table(state: str | None, status: str) -> None:
    assert aml_deploy.status_of(state) == status


def test_model_ids_compare_whatever_their_form() -> None:
    assert aml_deploy.same_model(ASSET, f"azureml:{MODEL}:1")
    assert aml_deploy.same_model(URI, ASSET.upper().replace("/VERSIONS/", "/versions/"))
    assert not aml_deploy.same_model(ASSET, ASSET.replace("/versions/1", "/versions/2"))
    assert not aml_deploy.same_model(None, ASSET)


# -- serverless (MaaS) -----------------------------------------------------------------------------


def test_serverless_deploy_waits_chats_finds_and_undeploys(
    fake: FakeAzureML, provider: AzureMLProvider, clock: FakeClock
) -> None:
    model = result(provider, serverless=True)
    start = clock()
    deployment = model.deploy("ep-one")
    (put,) = writes(fake, SERVERLESS)
    assert put.api_version == "2024-01-01-preview"
    assert put.body["properties"] == {"modelSettings": {"modelId": URI}}
    assert put.body["sku"] == {"name": "Consumption"} and put.body["location"] == LOCATION
    assert put.body["tags"] == {"anytune.job_ref": "azureml:ftjob-1"}
    assert deployment.status == "ready" and deployment.created
    assert deployment.kind == "serverless-endpoint" and deployment.target == "ep-one" and deployment.model == URI
    assert deployment.url == f"https://ep-one.{LOCATION}.models.ai.azure.com"
    assert any("hourly" in note for note in deployment.cost_notes)
    assert clock() - start >= fake.endpoint_seconds  # waited through Creating, on the fake clock
    assert deployment.chat("hi") == "hello from the fine-tuned model"
    assert model.chat(HI, name="ep-one") == "hello from the fine-tuned model"

    again = model.deploy("ep-one")
    assert not again.created and again.status == "ready" and len(writes(fake, SERVERLESS)) == 1

    gone = model.undeploy("ep-one")
    assert gone is not None and gone.status == "deleted"
    (delete,) = fake.calls("DELETE", SERVERLESS)
    assert delete.api_version == "2024-01-01-preview"
    assert "ep-one" not in fake.endpoints  # waited until the delete finished
    assert model.undeploy("ep-one") is None and model.deployment("ep-one") is None
    assert len(fake.calls("DELETE", SERVERLESS)) == 1


def test_deploy_without_wait_returns_creating_and_a_later_deploy_waits(
    fake: FakeAzureML, provider: AzureMLProvider
) -> None:
    model = result(provider, serverless=True)
    first = model.deploy("ep-one", wait=False)
    assert first.status == "creating" and first.created
    with pytest.raises(UsageError, match="creating"):
        first.chat("hi")
    second = model.deploy("ep-one")
    assert second.status == "ready" and not second.created and len(writes(fake, SERVERLESS)) == 1


def test_a_timeout_is_wait_timeout_error_and_it_keeps_deploying(
    fake: FakeAzureML, provider: AzureMLProvider, clock: FakeClock
) -> None:
    model = result(provider, serverless=True)
    fake.endpoint_seconds = 3600
    start = clock()
    with pytest.raises(WaitTimeoutError, match="still"):
        model.deploy("ep-one", timeout=120)
    assert 120 <= clock() - start < 300
    assert fake.endpoints["ep-one"].state == "Creating"
    assert model.deployment("ep-one").status == "creating"  # type: ignore[union-attr]


def test_a_name_taken_by_another_model_is_refused_before_any_write(
    fake: FakeAzureML, provider: AzureMLProvider
) -> None:
    result(provider, serverless=True, job="other", model="someone-else").deploy("ep-one")
    puts = len(writes(fake, SERVERLESS))
    model = result(provider, serverless=True)
    with pytest.raises(UsageError, match="someone-else") as info:
        model.deploy("ep-one")
    assert info.value.field == "name" and "ep-one" in str(info.value)
    with pytest.raises(UsageError):
        model.undeploy("ep-one")
    assert len(writes(fake, SERVERLESS)) == puts and fake.calls("DELETE", SERVERLESS) == []


@pytest.mark.parametrize("setting", [{"instance_type": "Standard_NC24ads_A100_v4"}, {"instance_count": 2}])
def test_instance_settings_are_refused_for_a_serverless_result(
    fake: FakeAzureML, provider: AzureMLProvider, setting: dict[str, Any]
) -> None:
    with pytest.raises(UsageError, match="serverless") as info:
        result(provider, serverless=True).deploy("ep-one", **setting)
    assert info.value.field == next(iter(setting))
    assert fake.requests == []


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"instance_count": 0}, "instance_count"),
        ({"instance_type": "not a sku!"}, "instance_type"),
        ({"replicas": 2}, "replicas"),
    ],
)
def test_bad_settings_are_refused_before_any_call(
    fake: FakeAzureML, provider: AzureMLProvider, settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(UsageError) as info:
        result(provider, serverless=False).deploy("ep-one", **settings)
    assert info.value.field == field and fake.requests == []


def test_a_result_without_a_registered_model_is_refused(fake: FakeAzureML, provider: AzureMLProvider) -> None:
    bare = FineTunedModel(provider="azureml", job_ref="azureml:x", model_id="azureml:m:1").attach(provider)
    with pytest.raises(NotSupportedError):
        bare.deploy("ep-one")
    assert fake.requests == []


def test_throttled_and_failing_reads_and_create_make_one_endpoint(
    fake: FakeAzureML, provider: AzureMLProvider, clock: FakeClock
) -> None:
    model = result(provider, serverless=True)
    fake.fail("GET", SERVERLESS, status=429, headers={"Retry-After": "7"})
    fake.fail("GET", SERVERLESS, status=503)
    fake.fail("PUT", SERVERLESS, status=503, after=True)  # it was created; the answer says otherwise
    fake.fail("PUT", SERVERLESS, status=429, headers={"Retry-After": "5"})
    deployment = model.deploy("ep-one")
    assert deployment.status == "ready"
    assert 7.0 in clock.sleeps
    assert len(writes(fake, SERVERLESS)) == 1  # the lookup found the first: no second PUT
    assert list(fake.endpoints) == ["ep-one"]


def test_a_dropped_connection_on_the_create_is_looked_up_not_resent(
    fake: FakeAzureML, provider: AzureMLProvider
) -> None:
    model = result(provider, serverless=True)
    fake.fail("PUT", SERVERLESS, exception=requests.ConnectionError, after=True)
    assert model.deploy("ep-one").status == "ready"
    assert len(writes(fake, SERVERLESS)) == 1


def test_a_throttled_delete_is_retried(fake: FakeAzureML, provider: AzureMLProvider, clock: FakeClock) -> None:
    model = result(provider, serverless=True)
    model.deploy("ep-one")
    fake.fail("DELETE", SERVERLESS, status=429, headers={"Retry-After": "4"})
    assert model.undeploy("ep-one") is not None
    assert len(fake.calls("DELETE", SERVERLESS)) == 2 and 4.0 in clock.sleeps and "ep-one" not in fake.endpoints


def test_the_endpoint_key_never_shows(
    fake: FakeAzureML, provider: AzureMLProvider, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    model = result(provider, serverless=True)
    deployment = model.deploy("ep-one")
    key = fake.endpoints["ep-one"].key
    deployment.chat("hi")
    fake.chat_faults = [401]
    provider._chat.forget("ep-one")
    with pytest.raises(AnytuneError) as info:
        deployment.chat("hi")
    out = capsys.readouterr()
    for text in (
        caplog.text,
        str(info.value),
        repr(info.value),
        repr(deployment),
        deployment.model_dump_json(),
        out.out,
        out.err,
    ):
        assert key not in text


# -- managed online (MaaP) -------------------------------------------------------------------------


def test_managed_deploy_creates_endpoint_deployment_and_traffic(
    fake: FakeAzureML, provider: AzureMLProvider, clock: FakeClock
) -> None:
    model = result(provider, serverless=False)
    start = clock()
    deployment = model.deploy("ep-one", instance_type="Standard_NC48ads_A100_v4", instance_count=2)
    endpoint_puts = writes(fake, ONLINE)
    (deployment_put,) = writes(fake, DEPLOYMENT)
    assert [p.api_version for p in endpoint_puts] == ["2022-02-01-preview"] * 2
    assert endpoint_puts[0].body["properties"]["authMode"] == "Key"
    assert endpoint_puts[0].body["properties"]["traffic"] == {}
    assert endpoint_puts[1].body["properties"]["traffic"] == {"default": 100}  # after the deployment is ready
    assert deployment_put.api_version == "2023-04-01-preview"
    props = deployment_put.body["properties"]
    assert props["model"] == ASSET and props["instanceType"] == "Standard_NC48ads_A100_v4"
    assert props["endpointComputeType"] == "Managed" and deployment_put.body["sku"] == {
        "name": "Default",
        "capacity": 2,
    }
    assert clock() - start >= fake.endpoint_seconds + fake.deployment_seconds
    assert deployment.status == "ready" and deployment.created and deployment.kind == "online-endpoint"
    assert deployment.target == "ep-one/default" and deployment.model == ASSET
    assert deployment.url == f"https://ep-one.{LOCATION}.inference.ml.azure.com/score"
    assert deployment.extra["traffic"] == {"default": 100} and deployment.extra["instance_count"] == 2
    assert any("Standard_NC48ads_A100_v4 x 2" in note for note in deployment.cost_notes)
    assert deployment.chat("hi") == "hello from the fine-tuned model"
    assert fake.calls("POST", "^/score$")[-1].headers["azureml-model-deployment"] == "default"

    again = model.deploy("ep-one")
    assert not again.created and again.status == "ready"
    assert len(writes(fake, ONLINE)) == 2 and len(writes(fake, DEPLOYMENT)) == 1

    gone = model.undeploy("ep-one")
    assert gone is not None and gone.status == "deleted"
    (delete,) = fake.calls("DELETE", ONLINE)
    assert delete.api_version == "2022-02-01-preview" and "ep-one" not in fake.endpoints
    assert model.undeploy("ep-one") is None


def test_managed_deploy_without_wait_still_sends_the_deployment(fake: FakeAzureML, provider: AzureMLProvider) -> None:
    model = result(provider, serverless=False)
    first = model.deploy("ep-one", wait=False)
    assert first.status == "creating" and len(writes(fake, DEPLOYMENT)) == 1
    assert model.deploy("ep-one").status == "ready" and len(writes(fake, DEPLOYMENT)) == 1


def test_a_failed_deployment_is_returned_with_the_reason(fake: FakeAzureML, provider: AzureMLProvider) -> None:
    model = result(provider, serverless=False)
    fake.deployment_failure = "the container failed to start"
    deployment = model.deploy("ep-one")
    assert deployment.status == "failed"
    assert deployment.extra["error"] == "the container failed to start [DeploymentFailed]"
    assert model.deployment("ep-one").extra["error"].endswith("provisioning state Failed")  # type: ignore[union-attr]
    assert model.undeploy("ep-one") is not None and "ep-one" not in fake.endpoints


def test_a_managed_endpoint_of_another_model_is_refused(fake: FakeAzureML, provider: AzureMLProvider) -> None:
    result(provider, serverless=False, job="other", model="someone-else").deploy("ep-one")
    before = (len(writes(fake, ONLINE)), len(writes(fake, DEPLOYMENT)))
    model = result(provider, serverless=False)
    with pytest.raises(UsageError, match="someone-else"):
        model.deploy("ep-one")
    with pytest.raises(UsageError):
        model.undeploy("ep-one")
    fake.add_endpoint("users-own", "online", {})  # not made by anytune: no deployment of ours, no tag
    with pytest.raises(UsageError, match="not made by anytune"):
        model.deploy("users-own")
    with pytest.raises(UsageError, match="serverless"):
        fake.add_endpoint("a-serverless", "serverless", {})
        model.deploy("a-serverless")
    assert (len(writes(fake, ONLINE)), len(writes(fake, DEPLOYMENT))) == before
    assert fake.calls("DELETE", ONLINE) == []


def test_managed_create_rides_out_faults_without_a_second_deployment(
    fake: FakeAzureML, provider: AzureMLProvider
) -> None:
    model = result(provider, serverless=False)
    fake.fail("PUT", ONLINE, status=500, after=True)
    fake.fail("PUT", DEPLOYMENT, status=503, after=True)
    fake.fail("GET", DEPLOYMENT, status=429, headers={"Retry-After": "2"})
    assert model.deploy("ep-one").status == "ready"
    assert len(writes(fake, DEPLOYMENT)) == 1 and list(fake.endpoints["ep-one"].made) == ["default"]


def test_managed_timeout(fake: FakeAzureML, provider: AzureMLProvider, clock: FakeClock) -> None:
    fake.deployment_seconds = 7200
    with pytest.raises(WaitTimeoutError):
        result(provider, serverless=False).deploy("ep-one", timeout=600)
    assert fake.endpoints["ep-one"].made["default"]["ready_at"] > clock()


def test_arm_lro_routes_answer_as_arm_does(fake: FakeAzureML, provider: AzureMLProvider) -> None:
    """The writes are answered with ARM's async-operation headers, and those URLs answer."""
    result(provider, serverless=False).deploy("ep-one", wait=False)
    put = writes(fake, ONLINE)[0]
    session = fake.session()
    answer = next(r for r in fake.requests if r is put)
    assert answer.method == "PUT"
    op = next(iter(fake.operations))
    from tests.providers.azureml_fake import TOKEN

    url = (
        f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/"
        f"locations/{LOCATION}/mfeOperationsStatus/{op}?api-version=2024-01-01-preview"
    )
    status = session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert status["status"] in ("InProgress", "Succeeded")


# -- from a real job ---------------------------------------------------------------------------------


def test_deploy_from_a_finished_job(
    fake: FakeAzureML, provider: AzureMLProvider, clock: FakeClock, tmp_path: Path
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(12)])
    created = FineTuneJob.create(provider=provider, base_model="Phi-3-mini-4k-instruct", training_file=train)
    job = FineTuneJob(created.record, created._provider, sleep=clock.sleep, clock=clock)
    assert job.wait().status is JobStatus.SUCCEEDED
    model = job.result()
    deployment = model.deploy()  # the default name, derived from the job
    assert deployment.kind == "serverless-endpoint" and deployment.ready
    put = writes(fake, r"/serverlessEndpoints/[^/]+$")[0]
    assert put.body["properties"]["modelSettings"]["modelId"] == model.extra["workspace_model_uri"]
    assert model.chat("hi") == "hello from the fine-tuned model"
    assert model.deploy().created is False
    assert model.undeploy() is not None and model.deployment() is None


def _foreign_endpoint(fake: Any, asset: str) -> Any:
    """A managed online endpoint the user made by hand (no anytune tag): ``default`` serves the same
    registered model, ``blue`` serves another one and takes all the traffic."""
    ep = fake.add_endpoint("users-ep", "online", {})
    ep.deployments = ("default", "blue")
    for name, model in (("default", asset), ("blue", asset.replace("Phi-3-mini-4k-instruct-ft", "their-model"))):
        ep.made[name] = {
            "model": model,
            "instance_type": "Standard_NC24ads_A100_v4",
            "capacity": 1,
            "ready_at": 0.0,
            "failure": None,
            "tags": {},
        }
    return ep


def test_azureml_undeploy_does_not_delete_a_users_endpoint_with_other_deployments(
    fake: FakeAzureML, provider: AzureMLProvider
) -> None:
    """An endpoint anytune did not make (no ``anytune.job_ref`` tag) is the user's, even when its
    ``default`` deployment serves the same model: undeploy refuses rather than delete it and its
    ``blue`` deployment."""
    _foreign_endpoint(fake, ASSET)
    model = result(provider, serverless=False)
    with pytest.raises(UsageError, match="not made by anytune"):
        model.undeploy("users-ep")
    assert "users-ep" in fake.endpoints, "the user's endpoint and its 'blue' deployment were deleted"
    assert fake.calls("DELETE", r"/onlineEndpoints/users-ep$") == []


def test_azureml_deploy_does_not_take_over_a_users_endpoint(fake: FakeAzureML, provider: AzureMLProvider) -> None:
    """deploy never rewrites a foreign endpoint (its traffic would all go to ``default``)."""
    _foreign_endpoint(fake, ASSET)
    model = result(provider, serverless=False)
    with pytest.raises(UsageError, match="not made by anytune"):
        model.deploy("users-ep")
    assert fake.calls("PUT", r"/onlineEndpoints/users-ep$") == [], "the user's endpoint was rewritten"
