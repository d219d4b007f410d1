"""What the CLI prints is data, never markup; secrets never reach the terminal.

Text from datasets, file names, providers and exceptions goes through one function
(``anytune._cli._common.safe``) on every command: Rich markup in it is printed literally, terminal
control characters are neutralised, and secrets are masked, in plain and ``--json`` output alike.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from anytune import FineTuneJob, JobRecord, ProviderEntry, ProviderError, register
from anytune.providers.fake import FakeProvider
from tests.clitools import Result, run_cli
from tests.conftest import chat_example, write_jsonl

MARKUP = "[/bold] [bold red]styled[/] [link=file:///etc]x[/link]"
CONTROL = "\x1b[2J\x1b]0;title\x07\r\x08\x9b"
PROVIDER_KEYS = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AZURE_CLIENT_SECRET")


def opaque(label: str) -> str:
    """A secret no pattern recognises: only knowing the variable can hide it."""
    return f"{label}-PLANTED-{uuid.uuid4().hex[:12]}"


def assert_clean(result: Result) -> None:
    """No traceback, no Rich error, no raw control character on either stream."""
    for stream in (result.out, result.err):
        assert "Traceback" not in stream and "MarkupError" not in stream, stream
        assert not any(ch in stream for ch in "\x1b\x07\x08\r\x9b"), repr(stream)


def assert_hidden(secrets: Any, *haystacks: object) -> None:
    for secret in secrets:
        for hay in haystacks:
            text = hay.decode(errors="replace") if isinstance(hay, bytes) else str(hay)
            assert secret not in text, f"secret leaked into: {text[:400]}"


def files_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def fake_spec(tmp_path: Path, train: Path, timeline: list[dict[str, Any]], **extra: Any) -> Path:
    spec = {"provider": "fake", "base_model": "tiny", "training_file": str(train), "fake": {"timeline": timeline}}
    path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(json.dumps(spec | extra), encoding="utf-8")  # JSON is YAML
    return path


class NoisyProvider(FakeProvider):
    """The fake provider, plus what real SDKs do: debug logs with credentials in them, and errors."""

    name: ClassVar[str] = "noisy"
    logged: ClassVar[list[str]] = []
    fail_with: ClassVar[BaseException | None] = None

    def get(self, job_id: str) -> JobRecord:
        for logger, text in zip(
            ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy", "urllib3.connectionpool"),
            self.logged,
            strict=False,
        ):
            logging.getLogger(logger).debug("noisy-log %s: sending %s", logger, text)
        if self.fail_with is not None:
            raise self.fail_with
        return super().get(job_id)


@pytest.fixture
def noisy(chat_jsonl: Path) -> Iterator[str]:
    register(ProviderEntry("noisy", f"{__name__}:NoisyProvider"))
    job = FineTuneJob.create(provider="noisy", base_model="tiny", training_file=chat_jsonl, fake={"seconds": 0})
    yield job.ref
    NoisyProvider.logged = []
    NoisyProvider.fail_with = None


# -- markup and control characters are printed literally -------------------------------------------


def test_markup_and_control_characters_in_a_role_print_literally(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = [chat_example(i) for i in range(12)]
    rows[3]["messages"][0]["role"] = MARKUP + CONTROL
    data = write_jsonl(tmp_path / "roles.jsonl", rows)
    result = run_cli(capsys, "data", "validate", str(data))
    assert result.code == 3  # invalid data
    assert_clean(result)
    assert "[/bold] [bold red]styled[/]" in result.err
    assert "roles.jsonl:4" in result.err


def test_markup_in_a_file_name_prints_literally(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = run_cli(capsys, "data", "validate", str(tmp_path / "[/bold]missing.jsonl"))
    assert missing.code == 2
    assert_clean(missing)
    assert missing.err.strip().splitlines() == [
        f"configuration error: field 'FILE': file not found: {tmp_path}/[/bold]missing.jsonl"
    ]

    named = write_jsonl(tmp_path / "[bold red]train.jsonl", [chat_example(i) for i in range(12)])
    ok = run_cli(capsys, "data", "validate", str(named))
    assert ok.code == 0, ok.err
    assert_clean(ok)
    assert "[bold red]train.jsonl" in ok.out

    src = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(3)])
    dst = tmp_path / "[red]out\x1b[2J.jsonl"
    converted = run_cli(capsys, "data", "convert", str(src), str(dst))
    assert converted.code == 0, converted.err
    assert_clean(converted)
    assert "[red]out\\x1b[2J.jsonl" in converted.err and dst.is_file()


def test_markup_in_a_provider_error_prints_literally(capsys: pytest.CaptureFixture[str], noisy: str) -> None:
    NoisyProvider.fail_with = ProviderError(f"service said {MARKUP}{CONTROL}", provider="noisy", status_code=500)
    result = run_cli(capsys, "jobs", "get", noisy)
    assert result.code == 1  # provider error
    assert_clean(result)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("provider error: noisy: service said [/bold] [bold red]styled[/]")

    NoisyProvider.fail_with = RuntimeError(f"unexpected {MARKUP}")
    result = run_cli(capsys, "jobs", "get", noisy)
    assert result.code == 70  # internal error
    assert_clean(result)
    assert "unexpected [/bold]" in result.err


def test_markup_and_control_characters_from_a_job_print_literally(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, chat_jsonl: Path
) -> None:
    timeline = [
        {"at": 0, "status": "running", "message": f"log {MARKUP} {CONTROL}"},
        {"at": 0, "status": "failed", "message": f"failed {MARKUP}", "error": f"boom {MARKUP} {CONTROL}"},
    ]
    spec = fake_spec(tmp_path, chat_jsonl, timeline, base_model=f"model{MARKUP}")
    created = run_cli(capsys, "jobs", "create", "-f", str(spec))
    assert created.code == 0, created.err
    assert_clean(created)
    ref = created.out.strip()
    for args, code in (
        (("jobs", "wait", ref), 6),
        (("jobs", "get", ref), 0),
        (("jobs", "events", ref), 0),
        (("jobs", "list"), 0),
        (("jobs", "cancel", ref), 0),
    ):
        result = run_cli(capsys, *args)
        assert result.code == code, (args, result.err)
        assert_clean(result)
        assert "[/bold] [bold red]styled[/]" in result.out + result.err, args
    events = run_cli(capsys, "jobs", "events", ref).out
    assert "log [/bold] [bold red]styled[/]" in events and "\\x1b[2J" in events


# -- secrets are masked on every path ---------------------------------------------------------------


def echoing_timeline(secrets: dict[str, str]) -> list[dict[str, Any]]:
    echoed = " ".join(f"{name}={value}" for name, value in secrets.items())
    return [
        {"at": 0, "status": "running", "message": f"request headers {echoed}"},
        {"at": 0, "status": "failed", "message": f"refused {echoed}", "error": f"invalid credentials {echoed}"},
    ]


def plain_and_json_outputs(capsys: pytest.CaptureFixture[str], ref: str) -> list[Result]:
    results = []
    for command in (("events", ref), ("get", ref), ("wait", ref), ("list",)):
        for json_flag in ((), ("--json",)):
            results.append(run_cli(capsys, "jobs", *command, *json_flag))
    return results


def test_key_a_service_echoes_is_masked_in_every_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, chat_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {name: opaque(name.lower()) for name in PROVIDER_KEYS}
    # Created before the variables exist: the service's own state holds the key as it echoed it.
    ref = run_cli(capsys, "jobs", "create", "-f", str(fake_spec(tmp_path, chat_jsonl, echoing_timeline(secrets))))
    assert ref.code == 0, ref.err
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)

    results = plain_and_json_outputs(capsys, ref.out.strip())
    assert [r.code for r in results] == [0, 0, 0, 0, 6, 6, 0, 0]
    for result in results:
        assert_hidden(secrets.values(), result.out, result.err)
    assert "invalid credentials OPENAI_API_KEY=***" in results[3].out  # jobs get --json
    assert "request headers OPENAI_API_KEY=***" in results[0].out  # jobs events

    job = FineTuneJob.get(ref.out.strip())
    assert job.record.error is not None
    assert_hidden(secrets.values(), job.events(), job.record, job.record.error.message)
    assert_hidden(secrets.values(), [row.record for row in FineTuneJob.list()])


def test_azure_key_echoed_in_another_providers_job_is_masked_in_the_store(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    chat_jsonl: Path,
    anytune_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    azure = opaque("azure")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", azure)
    spec = fake_spec(tmp_path, chat_jsonl, echoing_timeline({"api-key": azure}))
    created = run_cli(capsys, "jobs", "create", "-f", str(spec), "--wait")
    assert created.code == 6
    listed, listed_json = run_cli(capsys, "jobs", "list"), run_cli(capsys, "jobs", "list", "--json")
    assert json.loads(listed_json.out)[0]["record"]["error"]["message"] == "invalid credentials api-key=***"
    assert_hidden([azure], created.out, created.err, listed.out, listed_json.out, files_under(anytune_home))


def test_password_in_a_url_is_masked(capsys: pytest.CaptureFixture[str], noisy: str) -> None:
    NoisyProvider.fail_with = ProviderError(
        "cannot reach http://deploy:hunter2-PLANTED@proxy.example:8080/v1", provider="noisy", status_code=502
    )
    result = run_cli(capsys, "jobs", "get", noisy)
    assert result.code == 1
    assert "http://deploy:***@proxy.example:8080/v1" in result.err
    assert "hunter2" not in result.err


def test_debug_logs_of_every_library_are_masked(
    capsys: pytest.CaptureFixture[str], noisy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf, openai = opaque("hf"), opaque("openai")
    monkeypatch.setenv("HF_TOKEN", hf)
    monkeypatch.setenv("OPENAI_API_KEY", openai)
    NoisyProvider.logged = [f"token={hf}", f"key={openai}", f"api-key: {openai}", f"Bearer {hf}"]
    result = run_cli(capsys, "--debug", "jobs", "get", noisy)
    assert result.code == 0, result.err
    for logger in ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy", "urllib3.connectionpool"):
        assert f"noisy-log {logger}: sending" in result.err  # the logs are shown ...
    assert_hidden([hf, openai], result.out, result.err)  # ... with the secrets masked
    assert "token=***" in result.err


def test_debug_traceback_masks_chained_exceptions(
    capsys: pytest.CaptureFixture[str], noisy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = opaque("hf")
    monkeypatch.setenv("HF_TOKEN", hf)
    try:
        try:
            raise ConnectionError(f"401 for token {hf} [/bold]\x1b[2J")
        except ConnectionError as cause:
            raise ProviderError("could not read the job", provider="noisy") from cause
    except ProviderError as exc:
        NoisyProvider.fail_with = exc
    result = run_cli(capsys, "--debug", "jobs", "get", noisy)
    assert result.code == 1
    assert "Traceback" in result.err and "ConnectionError" in result.err and "401 for token ***" in result.err
    assert_hidden([hf], result.out, result.err)
    assert "\x1b" not in result.err
