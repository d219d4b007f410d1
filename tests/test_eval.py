"""``anytune eval`` / ``FineTuneJob.evaluate``: metrics, data, the fake provider end to end, the judge.

The fake's fine-tuned model has memorised its training file and its base model knows nothing, so
the numbers a user sees are known in advance. The judge is a real ``openai`` client talking to an
OpenAI-compatible chat endpoint on a loopback port.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anytune import EvalReport, FineTunedModel, FineTuneJob
from anytune._eval.judge import parse_score
from anytune._eval.metrics import exact_match, normalise, rouge_l, token_f1
from anytune.errors import NotSupportedError, ProviderError, UsageError
from tests.clitools import run_cli
from tests.conftest import write_jsonl
from tests.loopback import LoopbackServer, serving

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are in a week?", "A week has seven days."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("What is two plus three?", "Two plus three is five."),
    *((f"What is {n} times two?", f"{n} times two is {2 * n}.") for n in range(3, 11)),
]


def chat(question: str, answer: str, system: bool = True) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Answer briefly."}] if system else []
    return {"messages": [*messages, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def data(workdir: Path) -> Path:
    return write_jsonl(workdir / "heldout.jsonl", [chat(q, a) for q, a in QA])


@pytest.fixture
def fake_job(data: Path) -> FineTuneJob:
    job = FineTuneJob.create(
        provider="fake", base_model="tiny-chat", training_file=data, fake={"seconds": 0.0, "steps": 2}
    )
    job.wait(timeout=30)
    return job


# -- metrics (pure) -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reference", "em", "f1"),
    [
        ("The capital is Paris.", "the capital is paris", 1.0, 1.0),  # case, punctuation, articles
        ("Paris", "The capital of France is Paris.", 0.0, 2 * 0.2 / 1.2),  # 5 reference tokens: "the" goes
        ("", "", 1.0, 1.0),
        ("", "Paris", 0.0, 0.0),
        ("London", "Paris", 0.0, 0.0),
        ("paris paris", "paris", 0.0, 2 * 0.5 * 1.0 / 1.5),  # repeated tokens count once each
    ],
)
def test_exact_match_and_token_f1_follow_squads_definitions(answer: str, reference: str, em: float, f1: float) -> None:
    assert exact_match(answer, reference) == em
    assert token_f1(answer, reference) == pytest.approx(f1)


def test_normalise_and_rouge_l() -> None:
    assert normalise("  The  Cat, an apple!  ") == "cat apple"
    pytest.importorskip("rouge_score")
    assert rouge_l("Paris is the capital of France.", "The capital of France is Paris.") == pytest.approx(2 / 3)
    assert rouge_l("same words here", "same words here") == 1.0


@pytest.mark.parametrize(
    ("reply", "score"),
    [('{"score": 4, "reason": "close"}', 4.0), ("5", 5.0), ('Sure! {"score": "2"}', 2.0), ('{"score":1}', 1.0)],
)
def test_judge_scores_are_read_from_json_or_a_bare_digit(reply: str, score: float) -> None:
    assert parse_score(reply) == score


def test_a_judge_reply_without_a_score_is_an_error() -> None:
    with pytest.raises(ProviderError, match="holds no score"):
        parse_score("I think it is fine")


# -- the fake provider, end to end ----------------------------------------------------------------------


def test_the_fine_tuned_model_beats_its_base_and_the_report_is_kept_with_the_job(
    fake_job: FineTuneJob, data: Path
) -> None:
    report = fake_job.evaluate(str(data))
    assert report.examples == len(QA) == 12 and report.metrics == ("exact_match", "token_f1", "rouge_l")
    assert report.summary["fine-tuned"] == {"exact_match": 1.0, "token_f1": 1.0, "rouge_l": 1.0}
    assert report.summary["base"] == {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0}
    assert report.models == {"base": "tiny-chat", "fine-tuned": fake_job.result().model_id}
    assert report.settings.temperature == 0.0 and report.settings.max_new_tokens == 128
    row = report.rows[0]
    assert row.location.endswith("heldout.jsonl:line 1") and row.prompt == QA[0][0]
    assert row.answers == {"base": "I do not know.", "fine-tuned": QA[0][1]}
    again = FineTuneJob.get(fake_job.ref).evaluations()
    assert [r.model_dump() for r in again] == [report.model_dump()]


def test_cli_prints_the_table_the_differences_and_writes_json_and_a_picture(
    fake_job: FineTuneJob, data: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = run_cli(
        capsys,
        "eval",
        fake_job.ref,
        "--data",
        str(data),
        "--show-diff",
        "2",
        "--out",
        str(workdir / "report.json"),
        "--plot",
        str(workdir / "eval.png"),
    )
    assert done.code == 0, done.err
    assert re.search(r"token_f1\s*│\s*0\.000\s*│\s*1\.000\s*│\s*\+1\.000", done.out)
    assert done.out.count("reference:") == 2 and "I do not know." in done.out
    saved = EvalReport.model_validate_json((workdir / "report.json").read_text())
    assert saved.summary["fine-tuned"]["exact_match"] == 1.0
    assert (workdir / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    as_json = run_cli(capsys, "eval", fake_job.ref, "-d", str(data), "-m", "token_f1", "-n", "2", "--json")
    report = json.loads(as_json.out)
    assert report["examples"] == 2 and report["metrics"] == ["token_f1"] and len(report["rows"]) == 2


def test_dry_run_counts_the_calls_and_calls_nothing(
    fake_job: FineTuneJob, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from anytune.providers.fake import FakeProvider

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("a dry run called a model")

    monkeypatch.setattr(FakeProvider, "chat", refuse)
    done = run_cli(capsys, "eval", fake_job.ref, "--data", str(data), "--dry-run", "--json")
    assert done.code == 0, done.err
    plan = json.loads(done.out)
    costs = plan.pop("costs")
    assert plan == {
        "job": fake_job.ref,
        "examples": 12,
        "metrics": ["exact_match", "token_f1", "rouge_l"],
        "model_calls": 24,
        "judge_calls": 0,
        "usd": 0.0,  # the fake provider bills nothing
    }
    assert [(c["what"], c["calls"], c["max_output_tokens"]) for c in costs] == [
        ("fine-tuned", 12, 12 * 128),
        ("base", 12, 12 * 128),
    ]
    assert all(c["input_tokens"] > 12 * 7 for c in costs)  # every prompt counted, message overhead included
    # A dry run refuses what the run would refuse.
    refused = run_cli(capsys, "eval", fake_job.ref, "--data", str(data), "--dry-run", "-m", "loss")
    assert refused.code == 2 and "loss needs the model's weights" in refused.err
    assert FineTuneJob.get(fake_job.ref).evaluations() == []


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"messages": [{"role": "user", "content": "hi"}]}], "heldout-bad.jsonl:line 1: messages: no assistant turn"),
        (
            [
                {
                    "input": {"messages": [{"role": "user", "content": "q"}]},
                    "preferred_output": [],
                    "non_preferred_output": [],
                }
            ],
            "line 1",
        ),
    ],
)
def test_data_without_a_reference_answer_exits_3_naming_the_line(
    fake_job: FineTuneJob, workdir: Path, capsys: pytest.CaptureFixture[str], rows: list[dict[str, Any]], expected: str
) -> None:
    bad = write_jsonl(workdir / "heldout-bad.jsonl", [chat(*QA[0]), *rows])
    bad.write_text(bad.read_text().split("\n", 1)[1])  # the bad row first: line 1
    done = run_cli(capsys, "eval", fake_job.ref, "--data", str(bad))
    assert done.code == 3, done.err
    assert expected in done.err and "Traceback" not in done.err
    assert FineTuneJob.get(fake_job.ref).evaluations() == []


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["-m", "bleu"], 2, "unknown --metrics 'bleu'"),
        (["-m", "loss"], 2, "loss needs the model's weights"),
        (["-m", "judge"], 2, "--metrics judge needs --judge MODEL"),
        (["--data", "missing.jsonl"], 74, "missing.jsonl"),
        (["--plot", "eval.txt"], 2, "--plot eval.txt: name a .png"),
        (["--out", "."], 2, "--out . is a folder"),
    ],
)
def test_bad_requests_exit_with_a_clear_message_and_store_nothing(
    fake_job: FineTuneJob,
    data: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    expected: str,
) -> None:
    from anytune.providers.fake import FakeProvider

    calls: list[str] = []
    real_chat = FakeProvider.chat
    monkeypatch.setattr(
        FakeProvider, "chat", lambda self, model, *a, **k: calls.append(model) or real_chat(self, model, *a, **k)
    )
    base = ["--data", str(data)] if "--data" not in args else []
    done = run_cli(capsys, "eval", fake_job.ref, *base, *args)
    assert done.code == code, done.err
    assert expected in done.err and "Traceback" not in done.err
    assert FineTuneJob.get(fake_job.ref).evaluations() == [] and calls == []  # refused before any model call


def test_an_unfinished_job_is_refused(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = FineTuneJob.create(provider="fake", base_model="tiny-chat", training_file=data, fake={"seconds": 3600})
    done = run_cli(capsys, "eval", job.ref, "--data", str(data))
    assert done.code == 2 and "only a succeeded job's result can be evaluated" in done.err


def test_a_hosted_result_alone_points_to_the_job_handle(data: Path) -> None:
    hosted = FineTunedModel(provider="openai", job_ref="openai:ftjob-1", model_id="ft:gpt-4o-mini:org::x")
    with pytest.raises(NotSupportedError, match=r"FineTuneJob.get\('openai:ftjob-1'\).evaluate"):
        hosted.evaluate(str(data))
    with pytest.raises(UsageError, match=r"needs? the model's weights"):
        hosted.evaluate(str(data), metrics=["perplexity"])


def test_a_provider_without_a_chat_api_says_so(
    fake_job: FineTuneJob, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anytune._provider import Provider
    from anytune.providers.fake import FakeProvider

    monkeypatch.setattr(FakeProvider, "chat", Provider.chat)
    with pytest.raises(NotSupportedError, match="answering chat messages through this provider's API"):
        fake_job.evaluate(str(data))


# -- the judge ----------------------------------------------------------------------------------------------

JUDGE_KEY = "sk-judge-0123456789abcdef0123456789"


class JudgeHandler(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that grades 5 when the answer equals the reference, else 1;
    its first answer is a 429 with Retry-After, and a wrong key gets a 401."""

    calls: list[dict[str, Any]]
    lock = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found"}})
            return
        if self.headers.get("Authorization") != f"Bearer {JUDGE_KEY}":
            self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return
        with self.lock:
            self.calls.append(body)
            first = len(self.calls) == 1
        if first:
            self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"Retry-After": "0"})
            return
        prompt = body["messages"][0]["content"]
        reference = prompt.split("Reference answer:\n", 1)[1].split("\n\nAnswer to grade:", 1)[0]
        answer = prompt.split("Answer to grade:\n", 1)[1].split("\n\nScore 1 to 5", 1)[0]
        score = 5 if answer == reference else 1
        self._send(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": json.dumps({"score": score, "reason": "ok"})},
                        "finish_reason": "stop",
                    }
                ],
            },
        )


@pytest.fixture
def judge_server() -> Iterator[LoopbackServer]:
    pytest.importorskip("openai")
    handler = type("Handler", (JudgeHandler,), {"calls": []})
    with serving(LoopbackServer(handler)) as server:
        yield server


def test_the_judge_grades_both_models_through_an_openai_compatible_endpoint(
    fake_job: FineTuneJob,
    data: Path,
    judge_server: LoopbackServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANYTUNE_JUDGE_API_KEY", JUDGE_KEY)
    done = run_cli(
        capsys,
        "eval",
        fake_job.ref,
        "-d",
        str(data),
        "--judge",
        "grader-1",
        "--judge-base-url",
        f"{judge_server.url}/v1",
        "--json",
    )
    assert done.code == 0, done.err
    report = json.loads(done.out)
    assert report["summary"]["fine-tuned"]["judge"] == 5.0 and report["summary"]["base"]["judge"] == 1.0
    assert report["judge"] == {
        "model": "grader-1",
        "host": judge_server.url.split("//")[1],
        "rubric_version": "1",
        "temperature": 0,
    }
    calls = judge_server.RequestHandlerClass.calls  # type: ignore[attr-defined]
    assert len(calls) == 1 + 24  # the 429 was retried, then one call per answer
    assert all(c["temperature"] == 0 and c["model"] == "grader-1" for c in calls)
    stored = FineTuneJob.get(fake_job.ref).evaluations()[0].model_dump_json()
    assert JUDGE_KEY not in done.out + done.err + stored


def test_a_judge_that_refuses_the_key_exits_7_without_echoing_it(
    fake_job: FineTuneJob,
    data: Path,
    judge_server: LoopbackServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = "sk-wrong-0123456789abcdef0123456789"
    monkeypatch.setenv("ANYTUNE_JUDGE_API_KEY", wrong)
    done = run_cli(
        capsys, "eval", fake_job.ref, "-d", str(data), "--judge", "g", "--judge-base-url", f"{judge_server.url}/v1"
    )
    assert done.code == 7, done.err
    assert wrong not in done.out + done.err
    assert FineTuneJob.get(fake_job.ref).evaluations() == []


def test_credentials_in_the_judge_url_are_never_shown_or_stored(
    fake_job: FineTuneJob,
    data: Path,
    judge_server: LoopbackServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANYTUNE_JUDGE_API_KEY", JUDGE_KEY)
    url = judge_server.url.replace("http://", "http://judge-user:URLSECRET123@") + "/v1"
    # The URL's credentials replace the key (HTTP basic auth): this judge refuses them, exit 7.
    live = run_cli(capsys, "eval", fake_job.ref, "-d", str(data), "-n", "1", "--judge", "g", "--judge-base-url", url)
    dead = run_cli(
        capsys,
        "eval",
        fake_job.ref,
        "-d",
        str(data),
        "-n",
        "1",
        "--judge",
        "g",
        "--judge-base-url",
        "http://u:URLSECRET123@127.0.0.1:9/v1",
    )
    assert (live.code, dead.code) == (7, 1)
    assert "URLSECRET123" not in live.out + live.err + dead.out + dead.err
    assert f"the judge ({judge_server.url.split('//')[1]})" in live.err
    from anytune._eval.judge import OpenAIJudge

    assert OpenAIJudge("g", base_url=url, api_key="k").describe()["host"] == judge_server.url.split("//")[1]


def test_a_judge_without_a_key_is_refused_before_any_call(
    fake_job: FineTuneJob, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = run_cli(capsys, "eval", fake_job.ref, "-d", str(data), "--judge", "g")
    assert done.code == 2 and "ANYTUNE_JUDGE_API_KEY" in done.err


def test_deleting_a_job_forgets_its_evaluations(fake_job: FineTuneJob, data: Path) -> None:
    fake_job.evaluate(str(data), metrics=["exact_match"], max_examples=2)
    store = fake_job._store
    assert store is not None and len(store.evaluations(fake_job.ref)) == 1
    FineTuneJob.delete(fake_job.ref)
    assert store.evaluations(fake_job.ref) == []


def test_a_store_from_before_evaluations_is_upgraded_when_opened(data: Path, anytune_home: Path) -> None:
    """Stores written by earlier versions have no evaluations table: opening one adds it, so delete,
    prune and evaluate keep working."""
    import sqlite3

    job = FineTuneJob.create(provider="fake", base_model="tiny-chat", training_file=data, fake={"seconds": 0.0})
    job.wait(timeout=30)
    store_path = anytune_home / "jobs.db"
    with sqlite3.connect(store_path) as db:
        db.execute("DROP TABLE evaluations")
    again = FineTuneJob.get(job.ref)
    assert again.evaluations() == []
    again.evaluate(str(data), metrics=["exact_match"], max_examples=1)
    assert len(FineTuneJob.get(job.ref).evaluations()) == 1
    FineTuneJob.prune(status=["succeeded"])
    with sqlite3.connect(store_path) as db:
        assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 0  # pruned with its job
