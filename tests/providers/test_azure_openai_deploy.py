"""Deploying an Azure OpenAI fine-tuned model: the real ``azure-mgmt-cognitiveservices`` SDK against the
ARM fake (:mod:`tests.providers.azure_mgmt_fake`), chat through the deployment with the real ``openai``
SDK against the data-plane fake, faults on the way, and the pure mappers table-tested."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from urllib3.exceptions import ProtocolError

from anytune import FineTuneJob, JobStatus
from anytune._deploy import Deployment, default_name
from anytune._types import FineTunedModel
from anytune.errors import (
    AuthenticationError,
    ConfigError,
    NotSupportedError,
    QuotaExceededError,
    ServiceUnavailableError,
    UsageError,
    WaitTimeoutError,
)
from anytune.providers.openai import AzureOpenAIProvider
from anytune.providers.openai.deployments import (
    DEFAULT_CAPACITY,
    SKU_NAMES,
    AzureOpenAIDeploySettings,
    account_of,
    cost_notes,
    deployment_body,
    deployment_of,
    resolve_scope,
    status_of,
)
from anytune.testing import FakeClock
from tests.providers.azure_mgmt_fake import ACCOUNT, RG, SUB, FakeCognitiveServices, fault
from tests.providers.azureml_fake import ARM_AUDIENCE, FakeCredential, token_for
from tests.providers.openai_support import (
    AZURE_KEY,
    MODEL,
    QuickAzureOpenAIProvider,
    Rig,
    chat_file,
    make_rig,
    services_keep_to_their_schemas,  # noqa: F401 (autouse: the data-plane fake held to its schemas)
    settings,
)

pytest.importorskip("azure.mgmt.cognitiveservices")
pytest.importorskip("openai")

ARM_TOKEN = token_for(ARM_AUDIENCE)


class Dropped(requests.exceptions.ConnectionError):
    """The connection dropped after the request was sent (what requests raises: a ProtocolError inside)."""

    def __init__(self, *_: Any) -> None:
        super().__init__(ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer")))


class Setup:
    """The data-plane fake (jobs, chat), the ARM fake linked to it, the clock, a provider on both."""

    def __init__(self, tmp_path: Path, **arm: Any) -> None:
        self.clock = FakeClock()
        self.rig: Rig = make_rig(tmp_path, "azure")
        service = self.rig.service
        self.arm = FakeCognitiveServices(
            self.clock,
            serving=service.deployments,
            models=lambda: [str(j.obj.get("fine_tuned_model")) for j in service.jobs.values()],
            **arm,
        )
        self.credential = FakeCredential(self.clock)

    def provider(self, **extra: Any) -> AzureOpenAIProvider:
        values = settings("azure", **{"subscription_id": SUB, "resource_group": RG, **extra})
        wiring = {**self.rig.collaborators(), "sleep": self.clock.sleep, "clock": self.clock}
        return QuickAzureOpenAIProvider(
            QuickAzureOpenAIProvider.Settings.model_validate(values),
            azure_credential=self.credential,
            arm_transport=self.arm.transport(),
            **wiring,
        )

    def result(self, tmp_path: Path, provider: AzureOpenAIProvider | None = None) -> FineTunedModel:
        job = FineTuneJob.create(
            provider=provider or self.provider(), base_model=MODEL, training_file=chat_file(tmp_path / "t.jsonl")
        )
        assert job.wait().status is JobStatus.SUCCEEDED
        return job.result()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    made = Setup(tmp_path)
    yield made
    assert made.arm.violations == []


@pytest.fixture
def model(setup: Setup, tmp_path: Path) -> FineTunedModel:
    return setup.result(tmp_path)


def secrets_absent(*texts: str) -> None:
    for text in texts:
        assert ARM_TOKEN not in text and AZURE_KEY not in text


# -- the journey -----------------------------------------------------------------------------------------


def test_deploy_creates_with_the_documented_body_waits_until_ready_and_chats(
    setup: Setup, model: FineTunedModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    start = setup.clock()
    deployment = model.deploy()
    name = default_name(model.job_ref)
    [put] = setup.arm.calls("PUT")
    account = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.CognitiveServices/accounts/{ACCOUNT}"
    assert put.path == f"{account}/deployments/{name}"
    assert put.api_version == "2025-09-01"
    assert put.body == {
        "sku": {"name": "Standard", "capacity": 1},
        "properties": {"model": {"format": "OpenAI", "name": model.model_id, "version": "1"}},
    }
    assert deployment.created and deployment.ready and deployment.kind == "deployment"
    assert deployment.target == deployment.name == name and deployment.model == model.model_id
    assert deployment.url == "https://anytune-test.openai.azure.com"
    assert setup.clock() - start >= setup.arm.create_seconds  # it waited through Creating
    assert any("hourly hosting fee" in n for n in deployment.cost_notes)
    assert any("15 days" in n for n in deployment.cost_notes)
    # chat goes through the data plane by the deployment's name
    assert deployment.chat("What is 0 plus 0?", max_tokens=16) == "0 plus 0 is 0."
    assert model.chat("What is 1 plus 1?") == "1 plus 1 is 2."
    sent = setup.rig.service.requests("POST", r"(/deployments/[^/]+)?/chat/completions")
    assert {r.json["model"] for r in sent} == {name}
    # ARM is called with an ARM token only
    assert all(scopes == ("https://management.azure.com/.default",) for scopes in setup.credential.scopes)
    secrets_absent(repr(deployment), deployment.model_dump_json(), caplog.text)


def test_deploy_again_finds_it_without_a_second_create(setup: Setup, model: FineTunedModel) -> None:
    first = model.deploy()
    again = model.deploy()
    assert len(setup.arm.calls("PUT")) == 1
    assert again.name == first.name and not again.created and again.ready


def test_deploy_without_wait_returns_creating_then_a_later_deploy_waits(setup: Setup, model: FineTunedModel) -> None:
    creating = model.deploy("ft-nowait", wait=False)
    assert creating.status == "creating" and creating.created
    assert model.deployment("ft-nowait").status == "creating"  # type: ignore[union-attr]
    with pytest.raises(UsageError, match=r"is creating"):
        creating.chat("hi")
    ready = model.deploy("ft-nowait")
    assert ready.ready and not ready.created and len(setup.arm.calls("PUT")) == 1


def test_settings_reach_the_body(setup: Setup, model: FineTunedModel) -> None:
    model.deploy("ft-dev", sku="developer")
    model.deploy("ft-global", sku="globalstandard", capacity=5, rai_policy_name="Microsoft.DefaultV2")
    dev, glob = (r.body for r in setup.arm.calls("PUT"))
    assert dev["sku"] == {"name": "DeveloperTier", "capacity": 50}
    assert glob["sku"] == {"name": "GlobalStandard", "capacity": 5}
    assert glob["properties"]["raiPolicyName"] == "Microsoft.DefaultV2"
    assert any("24 hours" in n for n in model.deployment("ft-dev").cost_notes)  # type: ignore[union-attr]


def test_undeploy_deletes_waits_and_a_repeat_returns_none(setup: Setup, model: FineTunedModel) -> None:
    deployment = model.deploy("ft-gone")
    gone = deployment.undeploy()
    assert gone is not None and gone.status == "deleted" and gone.name == "ft-gone"
    assert len(setup.arm.calls("DELETE")) == 1
    assert "ft-gone" not in setup.arm.deployments and "ft-gone" not in setup.rig.service.deployments
    assert model.deployment("ft-gone") is None
    assert model.undeploy("ft-gone") is None
    assert len(setup.arm.calls("DELETE")) == 1  # nothing to delete: nothing sent
    with pytest.raises(UsageError, match="deploy it first"):
        model.chat("hi", name="ft-gone")


def test_a_name_serving_another_model_is_refused_before_any_write(setup: Setup, model: FineTunedModel) -> None:
    setup.arm.add("ft-theirs", "gpt-4o-mini-2024-07-18.ft-someone-else")
    for action in (lambda: model.deploy("ft-theirs"), lambda: model.undeploy("ft-theirs")):
        with pytest.raises(UsageError, match="someone-else") as caught:
            action()
        assert caught.value.field == "name" and str(model.model_id) in str(caught.value)
    assert setup.arm.calls("PUT") == [] and setup.arm.calls("DELETE") == []
    assert "ft-theirs" in setup.arm.deployments


@pytest.mark.parametrize(
    ("given", "field"),
    [({"sku": "provisioned"}, "sku"), ({"capacity": 0}, "capacity"), ({"replicas": 2}, "replicas")],
)
def test_bad_settings_are_refused_before_any_call(
    setup: Setup, model: FineTunedModel, given: dict[str, Any], field: str
) -> None:
    before = len(setup.arm.requests)
    with pytest.raises(UsageError) as caught:
        model.deploy("ft-bad", **given)
    assert caught.value.field == field  # type: ignore[attr-defined]
    assert len(setup.arm.requests) == before


def test_a_result_without_a_model_id_is_refused_before_anything_is_sent(setup: Setup) -> None:
    provider = setup.provider()
    bare = FineTunedModel(provider="azure-openai", job_ref="azure-openai:ftjob-abc").attach(provider)
    with pytest.raises(NotSupportedError, match="no fine-tuned model id"):
        bare.deploy()
    assert setup.arm.requests == []


@pytest.mark.parametrize(
    ("missing", "field"),
    [("subscription_id", "settings.subscription_id"), ("resource_group", "settings.resource_group")],
)
def test_missing_scope_is_a_config_error_before_any_call(
    setup: Setup, tmp_path: Path, missing: str, field: str
) -> None:
    model = setup.result(tmp_path)
    provider = setup.provider(**{missing: None})
    with pytest.raises(ConfigError, match="AZURE_") as caught:
        provider.deploy(model, "ft-x", AzureOpenAIDeploySettings(), wait=False, timeout=1)
    assert caught.value.field == field
    assert setup.arm.requests == []


def test_scope_from_the_environment_and_a_wrong_account(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", RG)
    values = settings("azure", account="not-my-account")
    wiring = {**setup.rig.collaborators(), "sleep": setup.clock.sleep, "clock": setup.clock}
    provider = QuickAzureOpenAIProvider(
        QuickAzureOpenAIProvider.Settings.model_validate(values),
        azure_credential=setup.credential,
        arm_transport=setup.arm.transport(),
        **wiring,
    )
    model = setup.result(tmp_path, provider)
    with pytest.raises(ConfigError, match="not-my-account") as caught:
        model.deploy("ft-x")
    assert caught.value.field == "settings.account"
    assert setup.arm.calls("PUT") == []


def test_through_the_job_reference_from_another_process(setup: Setup, model: FineTunedModel) -> None:
    deployment = model.deploy("ft-ref")
    again = FineTuneJob.get(model.job_ref, provider=setup.provider()).result()
    found = again.deployment("ft-ref")
    assert found is not None and found.ready and found.target == deployment.target
    assert again.chat("What is 2 plus 2?", name="ft-ref") == "2 plus 2 is 4."


# -- faults ----------------------------------------------------------------------------------------------


def test_429_with_retry_after_and_5xx_on_reads_are_retried(setup: Setup, model: FineTunedModel) -> None:
    setup.arm.inject(
        "GET",
        r"/deployments/",
        fault(status=429, headers={"Retry-After": "7"}),
        fault(status=503),
        fault(exception=Dropped),
    )
    deployment = model.deploy("ft-reads")
    assert deployment.ready and len(setup.arm.calls("PUT")) == 1
    assert 7.0 in setup.clock.sleeps


def test_a_throttled_create_is_retried_once_it_was_refused(setup: Setup, model: FineTunedModel) -> None:
    setup.arm.inject("PUT", r"/deployments/", fault(status=429, headers={"Retry-After": "3"}))
    assert model.deploy("ft-429").ready
    assert len(setup.arm.calls("PUT")) == 2 and 3.0 in setup.clock.sleeps
    assert len(setup.arm.deployments) == 1


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500, "after": True},
        {"exception": requests.exceptions.ReadTimeout, "after": True},
        {"exception": Dropped, "after": True},
    ],
)
def test_an_ambiguous_create_is_looked_up_and_not_sent_twice(
    setup: Setup, model: FineTunedModel, failure: dict[str, Any]
) -> None:
    setup.arm.inject("PUT", r"/deployments/", fault(**failure))
    deployment = model.deploy("ft-ambiguous")
    assert deployment.ready and deployment.created
    assert len(setup.arm.calls("PUT")) == 1 and list(setup.arm.deployments) == ["ft-ambiguous"]


def test_a_5xx_refused_create_is_retried_after_the_lookup(setup: Setup, model: FineTunedModel) -> None:
    setup.arm.inject("PUT", r"/deployments/", fault(status=502))
    assert model.deploy("ft-502").ready
    assert len(setup.arm.calls("PUT")) == 2 and len(setup.arm.deployments) == 1


def test_quota_is_not_retried_and_names_itself(setup: Setup, model: FineTunedModel) -> None:
    body = {"error": {"code": "InsufficientQuota", "message": "This operation require 50 new capacity in quota"}}
    setup.arm.inject("PUT", r"/deployments/", fault(status=400, body=body))
    with pytest.raises(QuotaExceededError, match=r"InsufficientQuota"):
        model.deploy("ft-quota")
    assert len(setup.arm.calls("PUT")) == 1


def test_a_wrong_audience_is_an_authentication_error_and_no_token_leaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path)
    setup.credential = FakeCredential(setup.clock, token=token_for("https://cognitiveservices.azure.com"))
    model = setup.result(tmp_path)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as caught:
        model.deploy("ft-auth")
    secrets_absent(str(caught.value), repr(caught.value), caplog.text, str(caught.value.__cause__))
    assert setup.arm.calls("PUT") == []


def test_a_create_that_never_left_is_sent_again(setup: Setup, model: FineTunedModel) -> None:
    setup.arm.inject("PUT", r"/deployments/", fault(exception=requests.exceptions.ConnectionError))
    assert model.deploy("ft-unsent").ready
    assert len(setup.arm.calls("PUT")) == 2 and len(setup.arm.deployments) == 1


def test_no_answer_at_all_ends_as_unavailable_after_the_retries(setup: Setup, model: FineTunedModel) -> None:
    setup.arm.inject("GET", r"/deployments/", fault(exception=requests.exceptions.ConnectionError, times=50))
    with pytest.raises(ServiceUnavailableError, match=r"management\.azure\.com"):
        model.deploy("ft-down")
    assert setup.arm.calls("PUT") == []


def test_a_timeout_leaves_it_deploying(tmp_path: Path) -> None:
    setup = Setup(tmp_path, create_seconds=3600.0)
    model = setup.result(tmp_path)
    with pytest.raises(WaitTimeoutError, match="still creating"):
        model.deploy("ft-slow", timeout=60)
    found = model.deployment("ft-slow")
    assert found is not None and found.status == "creating"
    assert len(setup.arm.calls("PUT")) == 1


def test_a_failed_deployment_is_returned_with_the_reason_and_can_be_undeployed(
    setup: Setup, model: FineTunedModel
) -> None:
    setup.arm.failing_models.add(str(model.model_id))
    failed = model.deploy("ft-fails")
    assert failed.status == "failed" and "Failed" in failed.extra["error"]
    assert model.undeploy("ft-fails") is not None


# -- the pure mappers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("Accepted", "creating"),
        ("Creating", "creating"),
        ("Moving", "creating"),
        ("Succeeded", "ready"),
        ("succeeded", "ready"),
        ("Failed", "failed"),
        ("Canceled", "failed"),
        ("Disabled", "failed"),
        ("Deleting", "deleting"),
        (None, "creating"),
        ("SomethingNew", "creating"),
    ],
)
def test_status_of(state: str | None, status: str) -> None:
    assert status_of(state) == status


@pytest.mark.parametrize(
    ("given", "body"),
    [
        ({}, {"sku": {"name": "Standard", "capacity": 1}}),
        ({"sku": "globalstandard"}, {"sku": {"name": "GlobalStandard", "capacity": 1}}),
        ({"sku": "developer"}, {"sku": {"name": "DeveloperTier", "capacity": 50}}),
        ({"sku": "standard", "capacity": 30}, {"sku": {"name": "Standard", "capacity": 30}}),
    ],
)
def test_deployment_body(given: dict[str, Any], body: dict[str, Any]) -> None:
    made = deployment_body("gpt-4.1-mini-2025-04-14.ft-abc123", AzureOpenAIDeploySettings(**given))
    assert made["sku"] == body["sku"]
    assert made["properties"] == {
        "model": {"format": "OpenAI", "name": "gpt-4.1-mini-2025-04-14.ft-abc123", "version": "1"}
    }
    assert set(SKU_NAMES) == set(DEFAULT_CAPACITY)


@pytest.mark.parametrize(
    ("endpoint", "account"),
    [
        ("https://myacct.openai.azure.com", "myacct"),
        ("https://myacct.openai.azure.com/", "myacct"),
        ("https://Other-1.cognitiveservices.azure.com", "other-1"),
        ("https://hub.services.ai.azure.com/", "hub"),
        ("https://proxy.example.com", None),
        (None, None),
    ],
)
def test_account_of(endpoint: str | None, account: str | None) -> None:
    assert account_of(endpoint) == account


def test_resolve_scope_names_the_missing_setting() -> None:
    s = AzureOpenAIProvider.Settings.model_validate({"endpoint": "https://proxy.example.com"})
    with pytest.raises(ConfigError) as caught:
        resolve_scope(s, {"AZURE_SUBSCRIPTION_ID": SUB, "AZURE_RESOURCE_GROUP": RG}, "https://proxy.example.com")
    assert caught.value.field == "settings.account"
    scope = resolve_scope(s, {"AZURE_SUBSCRIPTION_ID": SUB, "AZURE_RESOURCE_GROUP": RG}, "https://a.openai.azure.com")
    assert (scope.subscription_id, scope.resource_group, scope.account) == (SUB, RG, "a")


def test_deployment_of_an_arm_resource() -> None:
    resource = {
        "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a/deployments/d",
        "name": "d",
        "sku": {"name": "DeveloperTier", "capacity": 50},
        "properties": {"model": {"format": "OpenAI", "name": "m.ft-1", "version": "1"}, "provisioningState": "Failed"},
    }
    made = deployment_of(resource, provider="azure-openai", job_ref="azure-openai:ftjob-1", url="https://a")
    assert isinstance(made, Deployment)
    assert (made.name, made.target, made.model, made.status, made.kind) == ("d", "d", "m.ft-1", "failed", "deployment")
    assert made.extra["sku"] == "DeveloperTier" and "Failed" in made.extra["error"]
    assert made.cost_notes == cost_notes("developertier")
    assert all("24 hours" not in n for n in cost_notes("Standard"))
