"""Evaluating an OpenAI or Azure OpenAI job: the real ``openai`` SDK calls chat completions on the HTTP
fake for the fine-tuned model and its base, with faults on the way; Azure serves them by deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anytune import FineTuneJob, JobStatus
from anytune.errors import ModelNotAvailableError, ProviderError, UsageError
from tests.conftest import chat_example, write_jsonl
from tests.providers.openai_fake import Fault, Flavour
from tests.providers.openai_support import (
    AZURE_KEY,
    MODEL,
    OPENAI_KEY,
    Rig,
    chat_file,
    make_rig,
    services_keep_to_their_schemas,  # noqa: F401 (autouse: every fake held to its published schemas)
)

pytest.importorskip("openai")


@pytest.fixture(params=["openai", "azure"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def rig(flavour: Flavour, tmp_path: Path) -> Iterator[Rig]:
    yield make_rig(tmp_path, flavour)


@pytest.fixture
def job(rig: Rig, tmp_path: Path) -> FineTuneJob:
    created = FineTuneJob.create(
        provider=rig.provider(), base_model=MODEL, training_file=chat_file(tmp_path / "t.jsonl")
    )
    assert created.wait().status is JobStatus.SUCCEEDED
    return created


@pytest.fixture
def heldout(tmp_path: Path) -> Path:
    # Four examples of the training file (the fake's fine-tuned model knows them), two it never saw.
    return write_jsonl(tmp_path / "heldout.jsonl", [chat_example(i) for i in (0, 1, 2, 3, 500, 501)])


def deploy(rig: Rig, job: FineTuneJob) -> dict[str, str]:
    """On Azure, models are called by deployment: name one for each (what `deploy` will do)."""
    if rig.flavour != "azure":
        return {}
    rig.service.deployments.update({"ft-deployment": str(job.result().model_id), "base-deployment": MODEL})
    return {"fine-tuned": "ft-deployment", "base": "base-deployment"}


def test_the_fine_tuned_model_and_its_base_answer_through_chat_completions(
    rig: Rig, job: FineTuneJob, heldout: Path
) -> None:
    report = job.evaluate(str(heldout), max_new_tokens=16, call_as=deploy(rig, job) or None)
    assert report.summary["fine-tuned"]["exact_match"] == pytest.approx(4 / 6)
    assert report.summary["base"]["exact_match"] == 0.0
    sent = rig.service.requests("POST", r"(/deployments/[^/]+)?/chat/completions")
    assert len(sent) == 12
    first = sent[0].json
    assert first["max_completion_tokens"] == 16 and first["temperature"] == 0.0 and first["seed"] == 0
    assert first["messages"][-1] == {"role": "user", "content": "What is 0 plus 0?"}
    called = {r.json["model"] for r in sent}
    expected = {"ft-deployment", "base-deployment"} if rig.flavour == "azure" else {MODEL, job.result().model_id}
    assert called == expected
    assert rig.service.violations == []


def test_429_and_5xx_on_chat_are_retried_with_the_shared_policy(rig: Rig, job: FineTuneJob, heldout: Path) -> None:
    rig.service.inject(
        "POST",
        r"(/deployments/[^/]+)?/chat/completions",
        Fault(status=429, headers={"Retry-After": "2"}),
        Fault(status=503),
        Fault(kind="timeout"),
    )
    report = job.evaluate(str(heldout), metrics=["exact_match"], max_examples=2, call_as=deploy(rig, job) or None)
    assert report.examples == 2 and rig.service.faults_fired == 3
    assert 2.0 in rig.sleeps  # the server's Retry-After, honoured


def test_a_model_the_service_does_not_serve_is_a_clear_error_and_nothing_is_stored(
    rig: Rig, job: FineTuneJob, heldout: Path
) -> None:
    names = {"fine-tuned": "no-such-deployment", "base": "no-such-base"}
    with pytest.raises((ModelNotAvailableError, ProviderError)) as info:
        job.evaluate(str(heldout), call_as=names)
    message = str(info.value)
    assert "no-such" in message or "does not exist" in message
    assert OPENAI_KEY not in message and AZURE_KEY not in message
    assert job.evaluations() == []


def test_loss_is_refused_for_a_hosted_model_before_any_call(rig: Rig, job: FineTuneJob, heldout: Path) -> None:
    with pytest.raises(UsageError, match=r"needs? the model's weights"):
        job.evaluate(str(heldout), metrics=["loss"])
    assert rig.service.requests("POST", r"(/deployments/[^/]+)?/chat/completions") == []


def test_a_dry_run_prices_the_calls_from_the_published_rates_and_sends_none(
    tmp_path: Path, heldout: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from anytune._data.pricing import INFERENCE_PRICES
    from anytune._data.tokens import counter_for
    from anytune._eval.run import read_examples
    from tests.clitools import run_cli
    from tests.providers.openai_support import register_by_name

    rig = make_rig(tmp_path, "openai")
    register_by_name(monkeypatch, rig)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    job = FineTuneJob.create(provider="openai", base_model=MODEL, training_file=chat_file(tmp_path / "t.jsonl"))
    assert job.wait().status is JobStatus.SUCCEEDED

    done = run_cli(capsys, "eval", job.ref, "--data", str(heldout), "--dry-run", "--max-new-tokens", "20", "--json")
    assert done.code == 0, done.err
    plan = json.loads(done.out)
    assert rig.service.requests("POST", "/chat/completions") == []  # nothing called
    # Prompt tokens as OpenAI's cookbook counts chat messages, with the model's own encoding.
    count = counter_for("openai", MODEL).count
    prompt = sum(sum(count(str(m["content"])) + 4 for m in ex.prompt) + 3 for ex in read_examples(heldout))
    price = INFERENCE_PRICES["openai"]["gpt-4o-mini"]
    tuned, base = plan["costs"]
    assert (tuned["what"], tuned["model"], tuned["input_tokens"], tuned["max_output_tokens"]) == (
        "fine-tuned",
        job.result().model_id,
        prompt,
        6 * 20,
    )
    assert tuned["usd"] == pytest.approx((prompt * price.tuned_input + 120 * price.tuned_output) / 1e6)
    assert base["usd"] == pytest.approx((prompt * price.input + 120 * price.output) / 1e6)
    assert plan["usd"] == pytest.approx(tuned["usd"] + base["usd"])

    plain = run_cli(capsys, "eval", job.ref, "--data", str(heldout), "--dry-run", "--judge", "gpt-4o-mini")
    assert plain.code == 0, plain.err
    assert "12 model calls, 12 judge calls" in plain.err and "cost: at most $" in plain.err
    assert OPENAI_KEY not in plain.err + plain.out
    assert rig.service.requests("POST", "/chat/completions") == []


def test_a_dry_run_says_when_a_price_is_not_known(
    tmp_path: Path, heldout: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from anytune._eval.judge import OpenAIJudge
    from anytune._eval.run import plan_evaluation

    rig = make_rig(tmp_path, "azure")
    job = FineTuneJob.create(provider=rig.provider(), base_model=MODEL, training_file=chat_file(tmp_path / "t.jsonl"))
    assert job.wait().status is JobStatus.SUCCEEDED
    judge = OpenAIJudge("llama3", base_url="http://127.0.0.1:11434/v1", api_key="k")
    names = {"fine-tuned": "ft", "base": "b"}
    plan = plan_evaluation(job.result(), heldout, metrics=["exact_match", "judge"], judge=judge, call_as=names)
    # Azure OpenAI bills by region and deployment type, a self-hosted judge not at all: unknown, not guessed.
    assert [c["usd"] for c in plan["costs"]] == [None, None, None] and plan["usd"] is None
    assert plan["judge_calls"] == 12
