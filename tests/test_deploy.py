"""Deploying a fine-tuned model and calling it: the uniform rules (names, settings, messages), the
fake provider's deployments end to end through ``FineTunedModel`` and the CLI, and OpenAI, which
serves its fine-tuned models without a deployment (the real ``openai`` SDK against the HTTP fake).

The hosted providers' deployments are tested beside their adapters (tests/providers/test_*_deploy.py).
"""

from __future__ import annotations

import copy
import json
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from anytune import FineTunedModel, FineTuneJob, JobStatus
from anytune._cli.deploy_cmd import settings_of
from anytune._deploy import Deployment, as_messages, check_name, check_settings, default_name, wait_until
from anytune.errors import ModelNotAvailableError, UsageError, WaitTimeoutError
from tests.clitools import run_cli
from tests.conftest import write_jsonl

QA = [
    ("What is the capital of France?", "Paris."),
    ("How many days are in a week?", "Seven."),
    *((f"What is {n} times two?", f"{2 * n}.") for n in range(3, 11)),
]


def chat_row(question: str, answer: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def fast_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYTUNE_FAKE_SPEED", "1000")


@pytest.fixture
def job(workdir: Path, fast_fake: None) -> FineTuneJob:
    data = write_jsonl(workdir / "train.jsonl", [chat_row(q, a) for q, a in QA])
    created = FineTuneJob.create(provider="fake", base_model="tiny-chat", training_file=data)
    assert created.wait(timeout=30).status is JobStatus.SUCCEEDED
    return created


# -- the rules every provider shares (pure) ------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "openai:ftjob-abc123DEF456ghi789jkl",
        "azureml:fine_tune_job__Very_Long_NAME_with_underscores_2026",
        "local:20261203-101010-abcdef",
        "huggingface:6750e1f2a3b4c5d6e7f80912",
        "fake:fakejob-0",
        "x:---",
    ],
)
def test_the_default_name_is_stable_short_and_taken_by_every_service(ref: str) -> None:
    name = default_name(ref)
    assert name == default_name(ref)
    assert check_name(name) == name
    assert len(name) <= 32


def test_two_jobs_whose_ids_end_alike_get_different_names() -> None:
    a = default_name("azureml:project-one-" + "x" * 30)
    b = default_name("azureml:project-two-" + "x" * 30)
    assert a != b


@pytest.mark.parametrize("name", ["A-upper", "1digit-first", "ab", "end-", "double--dash", "x" * 33, "under_score"])
def test_names_some_service_refuses_are_refused_first(name: str) -> None:
    with pytest.raises(UsageError, match="deployment name") as exc:
        check_name(name)
    assert exc.value.field == "name"


def test_messages_are_checked_before_any_call() -> None:
    assert as_messages("hi") == [{"role": "user", "content": "hi"}]
    with pytest.raises(UsageError) as exc:
        as_messages([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])
    assert exc.value.field == "messages[1].role"
    with pytest.raises(UsageError, match="last message"):
        as_messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(UsageError) as exc:
        as_messages([{"role": "user", "content": 3}])
    assert exc.value.field == "messages[0].content"
    with pytest.raises(UsageError, match="last message"):
        as_messages([])


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    capacity: int = 1


def test_a_bad_or_unknown_setting_names_itself_and_what_is_taken() -> None:
    assert check_settings(_Settings, {"capacity": 3}, "p").capacity == 3
    with pytest.raises(UsageError, match="capacity") as exc:
        check_settings(_Settings, {"capacity": "many"}, "p")
    assert exc.value.field == "capacity"
    with pytest.raises(UsageError, match=r"sku.*takes: capacity") as exc:
        check_settings(_Settings, {"sku": "x"}, "p")
    assert exc.value.field == "sku"


def test_cli_settings_take_numbers_and_booleans_and_keep_text() -> None:
    assert settings_of(["capacity=2", "public=true", "region=eu-west-1", "ratio=0.5", "sku=007"]) == {
        "capacity": 2,
        "public": True,
        "region": "eu-west-1",
        "ratio": 0.5,
        "sku": "007",  # not JSON: kept as written (pydantic coerces where a number is wanted)
    }
    with pytest.raises(UsageError, match="KEY=VALUE"):
        settings_of(["capacity"])


def test_waiting_ends_when_settled_or_raises_at_the_deadline() -> None:
    now = [0.0]
    states = iter(["creating", "creating", "ready"])

    def read() -> Deployment:
        return Deployment(provider="p", job_ref="p:j", name="n", kind="k", target="t", model="m", status=next(states))

    def sleep(seconds: float) -> None:
        now[0] += seconds

    done = wait_until(
        read, settled=lambda d: d is not None and d.ready, sleep=sleep, clock=lambda: now[0], timeout=60, what="x"
    )
    assert done is not None and done.ready and now[0] == 20.0

    with pytest.raises(WaitTimeoutError, match="still creating after 25 s"):
        wait_until(
            lambda: Deployment(
                provider="p", job_ref="p:j", name="n", kind="k", target="t", model="m", status="creating"
            ),
            settled=lambda d: False,
            sleep=sleep,
            clock=lambda: now[0],
            timeout=25,
            what="deployment n",
        )


# -- the fake provider end to end ----------------------------------------------------------------------


def test_deploy_chat_and_undeploy_through_the_fine_tuned_model(job: FineTuneJob) -> None:
    model = job.result()
    assert model.deployment() is None
    with pytest.raises(UsageError, match="deploy it first"):
        model.chat("What is the capital of France?")

    first = model.deploy()
    assert first.created and first.ready and first.name == default_name(job.ref)
    assert first.chat("What is the capital of France?") == "Paris."
    assert model.chat([{"role": "user", "content": "How many days are in a week?"}]) == "Seven."

    again = job.result().deploy()  # another handle, the same job: found, not made twice
    assert not again.created and again.name == first.name
    assert len(list((job._provider.home / "fake" / "deployments").glob("*.json"))) == 1

    gone = first.undeploy()
    assert gone is not None and gone.status == "deleted"
    assert model.undeploy() is None  # a repeat is harmless
    with pytest.raises(UsageError, match="deploy it first"):
        model.chat("What is the capital of France?")


def test_a_name_serving_another_model_is_refused_and_left_alone(job: FineTuneJob, workdir: Path) -> None:
    other_data = write_jsonl(workdir / "other.jsonl", [chat_row(f"Q{n}?", "A.") for n in range(10)])
    other = FineTuneJob.create(provider="fake", base_model="tiny-chat", training_file=other_data)
    other.wait(timeout=30)
    other.result().deploy("shared-name")
    with pytest.raises(UsageError, match="serves") as exc:
        job.result().deploy("shared-name")
    assert exc.value.field == "name"
    with pytest.raises(UsageError, match="serves"):
        job.result().undeploy("shared-name")
    assert other.result().deployment("shared-name") is not None


def test_bad_settings_and_names_create_nothing(job: FineTuneJob) -> None:
    model = job.result()
    with pytest.raises(UsageError, match="capacity"):
        model.deploy(capacity=2)  # the fake takes no settings
    with pytest.raises(UsageError, match="deployment name"):
        model.deploy("Bad_Name")
    assert not (job._provider.home / "fake" / "deployments").exists()


def test_a_result_made_by_hand_says_where_to_get_one() -> None:
    model = FineTunedModel(provider="fake", job_ref="fake:fakejob-0", model_id="ft:x")
    with pytest.raises(UsageError, match=r"FineTuneJob.get\(ref\).result\(\)"):
        model.deploy()
    with pytest.raises(UsageError, match="not made by deploy"):
        Deployment(provider="p", job_ref="p:j", name="n", kind="k", target="t", model="m", status="ready").chat("x")


def test_deploying_without_waiting_returns_creating_and_chat_waits_for_ready(
    job: FineTuneJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anytune.providers.fake import FakeProvider

    monkeypatch.setattr(FakeProvider, "DEPLOY_SECONDS", 1e9)  # never ready
    model = FineTuneJob.get(job.ref).result()
    pending = model.deploy(wait=False)
    assert pending.status == "creating" and pending.created
    with pytest.raises(UsageError, match="is creating"):
        pending.chat("What is the capital of France?")
    with pytest.raises(WaitTimeoutError, match="still creating"):
        FineTuneJob.get(job.ref).result().deploy(timeout=0.01)


def test_concurrent_deploys_of_one_job_make_one_deployment(job: FineTuneJob) -> None:
    results: list[Deployment] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            results.append(FineTuneJob.get(job.ref).result().deploy())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {d.name for d in results} == {default_name(job.ref)}
    assert len(list((job._provider.home / "fake" / "deployments").glob("*.json"))) == 1


# -- the CLI --------------------------------------------------------------------------------------------


def test_cli_deploys_chats_and_undeploys(job: FineTuneJob, capsys: pytest.CaptureFixture[str]) -> None:
    made = run_cli(capsys, "deploy", job.ref)
    assert made.code == 0, made.err
    assert "created" in made.err and "cost:" in made.err
    target = made.out.strip()
    assert target.startswith("ft:")

    found = run_cli(capsys, "deploy", job.ref, "--json")
    assert found.code == 0
    shown = json.loads(found.out)
    assert shown["created"] is False and shown["status"] == "ready" and shown["target"] == target

    said = run_cli(capsys, "chat", job.ref, "What is the capital of France?")
    assert said.code == 0 and said.out.strip() == "Paris."
    said = run_cli(capsys, "chat", job.ref, "How many days are in a week?", "--system", "Be brief.", "--json")
    assert json.loads(said.out) == {"job": job.ref, "reply": "Seven."}

    gone = run_cli(capsys, "undeploy", job.ref)
    assert gone.code == 0 and "deleted" in gone.err
    again = run_cli(capsys, "undeploy", job.ref, "--json")
    assert again.code == 0 and json.loads(again.out) == {"deleted": None}
    late = run_cli(capsys, "chat", job.ref, "What is the capital of France?")
    assert late.code == 2 and "deploy it first" in late.err and "Traceback" not in late.err


def test_cli_refuses_bad_input_before_anything(job: FineTuneJob, capsys: pytest.CaptureFixture[str]) -> None:
    for args, needle in [
        (("deploy", job.ref, "--set", "capacity"), "KEY=VALUE"),
        (("deploy", job.ref, "--set", "capacity=2"), "capacity"),
        (("deploy", job.ref, "--name", "Bad_Name"), "deployment name"),
        (("deploy", "fake:fakejob-nope"), "fakejob-nope"),
    ]:
        result = run_cli(capsys, *args)
        assert result.code != 0 and needle in result.err, (args, result.err)
        assert "Traceback" not in result.err
    assert not (job._provider.home / "fake" / "deployments").exists()


def test_cli_refuses_a_job_that_has_not_succeeded(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(workdir / "t.jsonl", [chat_row(q, a) for q, a in QA])
    failing = FineTuneJob.create(provider="fake", base_model="tiny-chat", training_file=data, fake={"scenario": "slow"})
    result = run_cli(capsys, "deploy", failing.ref)
    assert result.code == 2 and "only a succeeded job" in result.err


# -- OpenAI: served as they are ------------------------------------------------------------------------


def test_openai_serves_fine_tuned_models_without_a_deployment(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    from tests.providers.openai_support import chat_file, make_rig

    rig = make_rig(tmp_path, "openai")
    job = FineTuneJob.create(
        provider=rig.provider(), base_model="gpt-4o-mini-2024-07-18", training_file=chat_file(tmp_path / "t.jsonl")
    )
    assert job.wait().status is JobStatus.SUCCEEDED
    model = job.result()
    served = model.deploy()
    assert served.kind == "model" and served.target == model.model_id and served.ready and not served.created
    assert any("no hosting charge" in n for n in served.cost_notes)
    assert any("per 1M input" in n for n in served.cost_notes)  # gpt-4o-mini's fine-tuned rate is known
    assert model.chat("never seen") == rig.service.BASE_ANSWER
    creates = [r for r in rig.service.log if r.method in ("POST", "PUT", "DELETE") and "chat" not in r.path]
    assert model.undeploy() is None  # nothing is removed (deleting the model is not undeploying it)
    assert [r for r in rig.service.log if r.method in ("POST", "PUT", "DELETE") and "chat" not in r.path] == creates

    rig.service.deleted_models.add(str(model.model_id))
    assert model.deployment() is None
    with pytest.raises(ModelNotAvailableError, match="not available"):
        model.deploy()


# -- found by adversarial review -----------------------------------------------------------------------


def test_cli_deploy_that_ends_failed_exits_non_zero_and_says_why(
    job: FineTuneJob,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment that ends ``failed`` (Azure OpenAI provisioning Failed, an Azure ML container that
    does not start, a failed HF endpoint) is printed as "created NAME ...: failed", its target on
    stdout, exit 0, and the reason (``extra["error"]``) is not shown: ``anytune deploy REF && anytune
    chat REF ...`` carries on. ``anytune jobs wait`` exits 6 for a job that did not succeed."""
    from anytune.providers.fake import FakeProvider

    original = FakeProvider._deployment_of

    def failing(self: FakeProvider, state: dict[str, Any]) -> Any:
        return original(self, state).model_copy(update={"status": "failed", "extra": {"error": "container crashed"}})

    monkeypatch.setattr(FakeProvider, "_deployment_of", failing)
    made = run_cli(capsys, "deploy", job.ref)
    assert made.code != 0, f"exit 0 for a failed deployment: {made.err}"
    assert "container crashed" in made.err


def test_a_nan_timeout_is_refused_instead_of_waiting_forever(
    job: FineTuneJob,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``deploy(timeout=float("nan"))`` (or ``anytune deploy REF --timeout nan``, which typer takes):
    ``_deploy.wait_until`` computes ``left = nan``, ``nan <= 0`` is False, so a deployment that never
    gets ready is waited on forever (Hugging Face, Azure OpenAI and the fake use this loop)."""
    from anytune.providers.fake import FakeProvider

    monkeypatch.setattr(FakeProvider, "DEPLOY_SECONDS", 1e9)  # never ready
    model = job.result()
    sleeps = [0]

    def sleep(seconds: float) -> None:
        sleeps[0] += 1
        if sleeps[0] > 200:
            raise AssertionError("still waiting after 200 polls: a NaN timeout never ends")

    model._provider.sleep = sleep
    with pytest.raises((UsageError, WaitTimeoutError)):
        model.deploy(timeout=float("nan"))


def test_a_negative_timeout_is_refused_before_anything_is_created(job: FineTuneJob) -> None:
    """``deploy(timeout=-5)`` / ``--timeout -5`` first creates the (billed) deployment, then raises
    WaitTimeoutError "still creating after -5 s" (exit 5): bad input should be a UsageError with
    nothing created, like a bad name or setting."""
    model = job.result()
    with pytest.raises(UsageError):
        model.deploy("neg-timeout", timeout=-5)
    assert not (job._provider.home / "fake" / "deployments" / "neg-timeout.json").exists()


def test_a_job_result_pickles_and_deep_copies(job: FineTuneJob) -> None:
    """``FineTuneJob.result()`` now attaches the provider as a private attribute, which pydantic
    pickles and deep-copies with the model: the provider holds a ``threading.local`` so
    ``pickle.dumps(result)`` / ``copy.deepcopy(result)`` raise TypeError (they worked before; a
    result passed to a process pool, joblib or a cache breaks)."""
    model = job.result()
    again = pickle.loads(pickle.dumps(model))
    assert again.model_id == model.model_id
    assert copy.deepcopy(model).model_id == model.model_id


def test_a_job_result_equals_its_json_round_trip(job: FineTuneJob) -> None:
    """pydantic's ``==`` compares private attributes too: a result from a job no longer equals the
    same result read back from its JSON (``model_dump_json``), only because one has a provider."""
    model = job.result()
    assert FineTunedModel.model_validate_json(model.model_dump_json()) == model


def test_a_provider_taking_no_settings_says_so(job: FineTuneJob) -> None:
    """On a provider without deploy settings the refusal ends "(settings fake takes: )": an empty
    list instead of "takes none"."""
    with pytest.raises(UsageError) as caught:
        job.result().deploy(capacity=2)
    assert "takes: )" not in str(caught.value), str(caught.value)
