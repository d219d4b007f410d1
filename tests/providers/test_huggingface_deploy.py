"""Deploying a Hugging Face result on an Inference Endpoint, through the real huggingface_hub client
against the HTTP-level fake (``hf_fake``: the Inference Endpoints API at api.endpoints.huggingface.cloud,
and a running endpoint's TGI Messages API that checks the bearer token and the adapter id).

What reaches the fake is what would reach Hugging Face: the create body (TGI image, base model as the
repository, the adapter pinned at its revision in LORA_ADAPTERS, the token only as a secret, scaling),
the waits, chat through the deployment, the delete, and faults on reads and on the create.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("huggingface_hub")

import httpx2

from anytune import FineTuneJob
from anytune._types import FineTunedModel
from anytune.errors import NotSupportedError, UsageError, WaitTimeoutError
from anytune.providers.huggingface import HuggingFaceProvider
from anytune.providers.huggingface.endpoints import (
    DEFAULT_TGI_IMAGE,
    ENDPOINT_STATUS,
    HuggingFaceDeploySettings,
    adapter_of,
    chat_model_of,
    cost_notes,
    create_arguments,
)
from tests.conftest import FakeClock, chat_example, write_jsonl
from tests.providers.hf_fake import ENDPOINTS_HOST, TOKEN, USER, FakeHub, Recorded
from tests.providers.hf_support import BASE_MODEL, install, provider

ADAPTER_REPO = f"{USER}/qwen-ft"
REVISION = "0123456789abcdef0123456789abcdef01234567"
NAME = "ft-demo"
ENDPOINT_PATH = rf"^/v2/endpoint/{USER}/{NAME}$"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock) -> Iterator[FakeHub]:
    yield from install(monkeypatch, tmp_path, clock)


@pytest.fixture
def hf(hub: FakeHub) -> HuggingFaceProvider:
    return provider(hub)


def result(hf: HuggingFaceProvider, repo: str = ADAPTER_REPO, revision: str | None = REVISION) -> FineTunedModel:
    model = FineTunedModel(
        provider="huggingface",
        job_ref="huggingface:alice/68abc",
        base_model=BASE_MODEL,
        hub_repo=repo,
        revision=revision,
    )
    return model.attach(hf)


def endpoint_calls(hub: FakeHub, method: str | None = None) -> list[Recorded]:
    return [r for r in hub.requests if ENDPOINTS_HOST in r.url and (method is None or r.method == method)]


# -- pure parts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("pending", "creating"),
        ("initializing", "creating"),
        ("updating", "creating"),
        ("running", "ready"),
        ("scaledToZero", "ready"),
        ("paused", "failed"),
        ("failed", "failed"),
        ("updateFailed", "failed"),
    ],
)
def test_state_table(state: str, status: str) -> None:
    assert ENDPOINT_STATUS[state] == status


def test_every_huggingface_hub_state_is_mapped() -> None:
    from huggingface_hub import InferenceEndpointStatus

    assert {s.value for s in InferenceEndpointStatus} == set(ENDPOINT_STATUS)


def test_settings_defaults_and_checks() -> None:
    s = HuggingFaceDeploySettings()
    assert (s.vendor, s.region, s.accelerator, s.instance_type, s.instance_size) == (
        "aws",
        "us-east-1",
        "gpu",
        "nvidia-l4",
        "x1",
    )
    assert (s.min_replica, s.max_replica, s.scale_to_zero_timeout, s.endpoint_type) == (0, 1, 15, "authenticated")
    assert HuggingFaceDeploySettings(endpoint_type="protected").endpoint_type == "authenticated"
    assert HuggingFaceDeploySettings(endpoint_type="public").endpoint_type == "public"  # only when asked for
    for bad in ({"min_replica": 2, "max_replica": 1}, {"endpoint_type": "private"}, {"instance_size": "big"}):
        with pytest.raises(ValueError):
            HuggingFaceDeploySettings(**bad)


def test_create_arguments_pin_the_adapter_on_its_base(hf: HuggingFaceProvider) -> None:
    args = create_arguments(result(hf), NAME, HuggingFaceDeploySettings(), "alice")
    assert args["repository"] == BASE_MODEL
    assert args["env"]["LORA_ADAPTERS"] == f"{ADAPTER_REPO}@{REVISION}"
    assert args["custom_image"] == {"tgi": {"url": DEFAULT_TGI_IMAGE, "healthRoute": "/health", "port": 80}}
    assert args["scale_to_zero_timeout"] == 15 and args["type"] == "authenticated"
    kept = create_arguments(result(hf), NAME, HuggingFaceDeploySettings(min_replica=1, max_replica=2), "alice")
    assert kept["scale_to_zero_timeout"] is None  # no scale to zero with a replica kept
    assert chat_model_of({"model": {"env": {"LORA_ADAPTERS": f"{ADAPTER_REPO}@{REVISION}"}}}) == ADAPTER_REPO
    assert chat_model_of({"model": {}}) == "tgi"


def test_cost_notes_name_the_price_and_how_to_stop() -> None:
    compute = {"instanceType": "nvidia-l4", "instanceSize": "x1", "scaling": {"minReplica": 0, "maxReplica": 1}}
    notes = " ".join(cost_notes(compute, "aws", None, "unused"))
    assert "$0.8 per replica-hour" in notes and "per minute" in notes
    assert "scales to zero after 15 minutes" in notes and "cold start" in notes and "undeploy()" in notes


def test_a_result_without_an_adapter_revision_cannot_deploy(hf: HuggingFaceProvider, hub: FakeHub) -> None:
    with pytest.raises(NotSupportedError, match="revision"):
        result(hf, revision=None).deploy(NAME)
    with pytest.raises(NotSupportedError):
        adapter_of(FineTunedModel(provider="huggingface", job_ref="huggingface:x"))
    assert endpoint_calls(hub) == []


# -- the lifecycle ------------------------------------------------------------------------------------


def test_deploy_waits_chats_and_undeploys(hf: HuggingFaceProvider, hub: FakeHub, clock: FakeClock) -> None:
    hub.auto_deploy = True
    model = result(hf)
    deployed = model.deploy(NAME, timeout=600)
    assert deployed.status == "ready" and deployed.created and deployed.kind == "inference-endpoint"
    assert deployed.target == f"{USER}/{NAME}" and deployed.model == f"{ADAPTER_REPO}@{REVISION}"
    assert deployed.url is not None and deployed.url.endswith(".us-east-1.aws.endpoints.huggingface.cloud")
    assert any("$0.8 per replica-hour (Inference Endpoints hardware API)" in n for n in deployed.cost_notes)
    # The create: what huggingface_hub sends, the fake checked it against the API's fields.
    (create,) = endpoint_calls(hub, "POST")
    assert create.path == f"/v2/endpoint/{USER}"
    body = create.json()
    assert body["name"] == NAME and body["type"] == "authenticated"
    assert body["provider"] == {"vendor": "aws", "region": "us-east-1"}
    assert body["compute"] == {
        "accelerator": "gpu",
        "instanceType": "nvidia-l4",
        "instanceSize": "x1",
        "scaling": {"minReplica": 0, "maxReplica": 1, "scaleToZeroTimeout": 15},
    }
    assert body["model"]["repository"] == BASE_MODEL and body["model"]["framework"] == "pytorch"
    assert body["model"]["task"] == "text-generation"
    assert body["model"]["image"] == {"tgi": {"url": DEFAULT_TGI_IMAGE, "healthRoute": "/health", "port": 80}}
    assert body["model"]["env"] == {"LORA_ADAPTERS": f"{ADAPTER_REPO}@{REVISION}", "MODEL_ID": "/repository"}
    assert body["model"]["secrets"] == {"HF_TOKEN": TOKEN}  # the private adapter repo's download, as a secret only
    assert TOKEN not in str(body["model"]["env"])
    # Waited on the injected clock (pending -> initializing -> running), no real sleep.
    assert clock.sleeps and all(s <= HuggingFaceProvider.deploy_poll_interval for s in clock.sleeps)
    # Chat through the deployment: the endpoint's TGI, the adapter as the model, the token as bearer.
    assert deployed.chat("hello", max_tokens=16, seed=3) == f"[{ADAPTER_REPO}] hello"
    assert model.chat([{"role": "user", "content": "again"}], name=NAME) == f"[{ADAPTER_REPO}] again"
    (served, sent), _ = hub.chats
    assert served == NAME and sent["model"] == ADAPTER_REPO
    assert (sent["max_tokens"], sent["seed"], sent["temperature"]) == (16, 3, 0.0)
    chat_requests = [r for r in hub.requests if r.path == "/v1/chat/completions"]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in chat_requests)
    # The endpoint URL is resolved once per name, not per call.
    reads_before = len(endpoint_calls(hub, "GET"))
    hf.chat(deployed.target, [{"role": "user", "content": "x"}], max_tokens=8, temperature=0.0, seed=0)
    assert len(endpoint_calls(hub, "GET")) == reads_before
    # Deploy again finds it: no second create.
    again = model.deploy(NAME)
    assert not again.created and again.status == "ready" and len(endpoint_calls(hub, "POST")) == 1
    # Undeploy deletes and waits until it is gone; again: nothing to do.
    gone = model.undeploy(NAME)
    assert gone is not None and gone.status == "deleted" and gone.name == NAME
    assert len(endpoint_calls(hub, "DELETE")) == 1 and not hub.endpoints
    assert model.undeploy(NAME) is None and model.deployment(NAME) is None
    with pytest.raises(UsageError, match="deploy"):
        model.chat("hi", name=NAME)


def test_deploy_through_a_job_result(hub: FakeHub, tmp_path: Path) -> None:
    hub.auto_run = hub.auto_deploy = True
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(8)])
    job = FineTuneJob.create(provider=provider(hub), training_file=train, base_model=BASE_MODEL, lora={"r": 8})
    job.wait()
    model = job.result()  # attached to its provider
    deployed = model.deploy()  # the default name, derived from the job
    assert deployed.status == "ready" and deployed.name.startswith("ft-")
    assert deployed.model == f"{model.hub_repo}@{model.revision}"
    assert model.chat("hi").endswith("] hi")
    assert model.deployment() is not None
    assert model.undeploy() is not None and model.deployment() is None


def test_deploy_without_waiting_then_later_ready(hf: HuggingFaceProvider, hub: FakeHub) -> None:
    model = result(hf)
    first = model.deploy(NAME, wait=False)
    assert first.status == "creating" and first.url is None
    with pytest.raises(UsageError, match="creating"):
        first.chat("hi")
    with pytest.raises(UsageError, match="not running"):
        hf.chat(first.target, [{"role": "user", "content": "x"}], max_tokens=8, temperature=0.0, seed=0)
    hub.set_state(NAME, "running")
    assert model.deployment(NAME).status == "ready"  # type: ignore[union-attr]
    assert len(endpoint_calls(hub, "POST")) == 1


def test_wait_times_out_and_it_keeps_deploying(hf: HuggingFaceProvider, hub: FakeHub, clock: FakeClock) -> None:
    model = result(hf)
    start = clock()
    with pytest.raises(WaitTimeoutError, match="still creating"):
        model.deploy(NAME, timeout=120)
    assert clock() - start >= 120 and hub.endpoint(NAME).state == "pending"
    assert model.deployment(NAME).status == "creating"  # type: ignore[union-attr]


def test_a_failed_endpoint_is_returned_with_the_reason(hf: HuggingFaceProvider, hub: FakeHub) -> None:
    model = result(hf)
    model.deploy(NAME, wait=False)
    hub.set_state(NAME, "failed", "Server message: adapter weights do not match the base model")
    failed = model.deploy(NAME)
    assert failed.status == "failed" and "do not match" in failed.extra["error"]
    assert model.undeploy(NAME) is not None  # so that it can be removed


def test_a_scaled_to_zero_endpoint_is_ready_and_wakes_on_chat(
    hf: HuggingFaceProvider, hub: FakeHub, clock: FakeClock
) -> None:
    hub.auto_deploy = True
    model = result(hf)
    model.deploy(NAME)
    hub.set_state(NAME, "scaledToZero")
    asleep = model.deployment(NAME)
    assert asleep is not None and asleep.status == "ready" and asleep.extra["state"] == "scaledToZero"
    assert model.chat("wake up", name=NAME) == f"[{ADAPTER_REPO}] wake up"  # 503 while waking, retried
    assert 30.0 in clock.sleeps  # its Retry-After


# -- refusals before any write -------------------------------------------------------------------------


def test_a_name_taken_by_another_model_is_refused(hf: HuggingFaceProvider, hub: FakeHub) -> None:
    hub.auto_deploy = True
    result(hf, repo=f"{USER}/other-ft").deploy(NAME)
    creates = len(endpoint_calls(hub, "POST"))
    mine = result(hf)
    with pytest.raises(UsageError, match="other-ft") as caught:
        mine.deploy(NAME)
    assert caught.value.field == "name" and ADAPTER_REPO in str(caught.value)
    with pytest.raises(UsageError):
        mine.undeploy(NAME)
    with pytest.raises(UsageError):
        mine.deployment(NAME)
    assert len(endpoint_calls(hub, "POST")) == creates and endpoint_calls(hub, "DELETE") == []


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"instance_size": "huge"}, "instance_size"),
        ({"endpoint_type": "private"}, "endpoint_type"),
        ({"vendor": "ovh"}, "vendor"),
        ({"min_replica": 3, "max_replica": 1}, "settings"),
        ({"scale_to_zero_timeout": 0}, "scale_to_zero_timeout"),
        ({"flavor": "a10g-small"}, "flavor"),
    ],
)
def test_bad_settings_are_refused_before_any_call(
    hf: HuggingFaceProvider, hub: FakeHub, settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(UsageError) as caught:
        result(hf).deploy(NAME, **settings)
    assert caught.value.field == field
    assert endpoint_calls(hub) == []


def test_a_bad_name_is_refused_before_any_call(hf: HuggingFaceProvider, hub: FakeHub) -> None:
    with pytest.raises(UsageError) as caught:
        result(hf).deploy("Bad_Name")
    assert caught.value.field == "name" and endpoint_calls(hub) == []


def test_hardware_not_offered_is_refused_before_the_create(hf: HuggingFaceProvider, hub: FakeHub) -> None:
    with pytest.raises(UsageError, match="nvidia-l4 x1") as caught:
        result(hf).deploy(NAME, instance_type="nvidia-b200")
    assert caught.value.field == "instance_type"
    assert endpoint_calls(hub, "POST") == []


# -- faults ---------------------------------------------------------------------------------------------


def test_throttled_and_failing_reads_and_create_are_retried_without_a_second_endpoint(
    hf: HuggingFaceProvider, hub: FakeHub, clock: FakeClock
) -> None:
    hub.auto_deploy = True
    hub.fail("GET", ENDPOINT_PATH, status=429, headers={"Retry-After": "7"})
    hub.fail("GET", ENDPOINT_PATH, status=503)
    hub.fail("POST", rf"^/v2/endpoint/{USER}$", status=429, headers={"Retry-After": "11"})
    # The create went through, its answer was lost: looked up by name, never sent again.
    hub.fail("POST", rf"^/v2/endpoint/{USER}$", status=502, after=True)
    deployed = result(hf).deploy(NAME)
    assert deployed.status == "ready"
    assert len(hub.endpoints) == 1 and 7.0 in clock.sleeps and 11.0 in clock.sleeps
    posts = endpoint_calls(hub, "POST")
    assert len(posts) == 2  # the throttled one (not created) and the one whose answer was lost


def test_a_dropped_connection_on_create_is_looked_up_not_resent(hf: HuggingFaceProvider, hub: FakeHub) -> None:
    hub.auto_deploy = True
    hub.fail("POST", rf"^/v2/endpoint/{USER}$", exception=httpx2.RemoteProtocolError, after=True)
    hub.fail("GET", ENDPOINT_PATH, exception=httpx2.ReadError)  # and a dropped read
    deployed = result(hf).deploy(NAME)
    assert deployed.status == "ready" and len(hub.endpoints) == 1
    assert len(endpoint_calls(hub, "POST")) == 1


def test_a_dropped_delete_that_went_through_is_not_an_error(hf: HuggingFaceProvider, hub: FakeHub) -> None:
    hub.auto_deploy = True
    model = result(hf)
    model.deploy(NAME)
    hub.delete_lag = 0
    hub.fail("DELETE", ENDPOINT_PATH, exception=httpx2.RemoteProtocolError, after=True)
    gone = model.undeploy(NAME)
    assert gone is not None and gone.status == "deleted" and not hub.endpoints


def test_chat_is_retried_on_throttling_and_server_errors(
    hf: HuggingFaceProvider, hub: FakeHub, clock: FakeClock
) -> None:
    hub.auto_deploy = True
    model = result(hf)
    model.deploy(NAME)
    hub.fail("POST", r"^/v1/chat/completions$", status=429, headers={"Retry-After": "5"})
    hub.fail("POST", r"^/v1/chat/completions$", status=500)
    hub.fail("POST", r"^/v1/chat/completions$", exception=httpx2.ReadTimeout)
    assert model.chat("hi", name=NAME) == f"[{ADAPTER_REPO}] hi"
    assert 5.0 in clock.sleeps and len(hub.chats) == 1


# -- secrets --------------------------------------------------------------------------------------------


def test_the_token_never_shows(hf: HuggingFaceProvider, hub: FakeHub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hub.auto_deploy = True
    model = result(hf)
    deployed = model.deploy(NAME)
    texts = [repr(deployed), deployed.model_dump_json(), repr(hf), model.chat("hi", name=NAME)]
    hub.fail("POST", r"^/v1/chat/completions$", status=401, times=10)
    hub.tokens.clear()  # the token revoked: every call is refused
    hf._endpoints.clear()
    for call in (lambda: model.chat("hi", name=NAME), lambda: model.deploy(NAME), lambda: model.undeploy(NAME)):
        with pytest.raises(Exception) as caught:
            call()
        texts += [str(caught.value), repr(caught.value)]
    texts.append(caplog.text)
    assert all(TOKEN not in text for text in texts)


def test_hf_undeploy_from_a_fresh_process_finds_an_endpoint_deployed_with_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: Any
) -> None:
    """An endpoint deployed into an organisation (``--set namespace=acme``) is found by a later
    process's ``deployment``/``undeploy``, which are not told the namespace (it is noted at deploy)."""
    pytest.importorskip("huggingface_hub")
    from tests.providers.hf_support import install, provider
    from tests.providers.test_huggingface_deploy import NAME, result

    gen = install(monkeypatch, tmp_path, clock)
    hub = next(gen)
    try:
        hub.auto_deploy = True
        deployed = result(provider(hub)).deploy(NAME, namespace="acme")
        assert deployed.ready and deployed.target == f"acme/{NAME}"

        later = result(provider(hub))  # what `anytune undeploy REF` builds in a new process
        assert later.deployment(NAME) is not None, "the billed endpoint acme/ft-demo is not found"
        gone = later.undeploy(NAME)
        assert gone is not None and not hub.endpoints, f"still billing: {list(hub.endpoints)}"
    finally:
        gen.close()
