"""The real openai SDK against the HTTP fake, through ``FineTuneJob``: the whole life of a job on
OpenAI and on Azure OpenAI, DPO, pause/resume, cancel, failure, paged events, checkpoints, the
result file, uploads (Files and Uploads API, reuse, bounded memory), the dry-run plan,
configuration from the SDK's variables, and errors."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anytune import (
    AsyncFineTuneJob,
    AuthenticationError,
    ConfigError,
    Event,
    FineTuneJob,
    JobFailedError,
    JobNotFoundError,
    JobStatus,
    ModelNotAvailableError,
    NotSupportedError,
    PermissionDeniedError,
    QuotaExceededError,
)
from anytune._provider import IDEMPOTENCY_TAG
from anytune.providers.openai import DEFAULT_AZURE_API_VERSION
from tests.conftest import chat_example, write_jsonl
from tests.providers.openai_fake import FakeOpenAIService, Flavour
from tests.providers.openai_support import (
    API_VERSION,
    AZURE_ENDPOINT,
    AZURE_KEY,
    ENTRA_TOKEN,
    MODEL,
    OPENAI_KEY,
    Rig,
    chat_file,
    make_rig,
    preference_file,
    provider_name,
    register_by_name,
    services_keep_to_their_schemas,  # noqa: F401 (autouse: every fake held to its published schemas)
)

S = JobStatus


@pytest.fixture(params=["openai", "azure"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def rig(flavour: Flavour, tmp_path: Path) -> Iterator[Rig]:
    wired = make_rig(tmp_path, flavour)
    yield wired
    assert wired.service.violations == []  # every request and answer matched the published schemas


@pytest.fixture
def service(rig: Rig) -> FakeOpenAIService:
    return rig.service


@pytest.fixture
def train(tmp_path: Path) -> Path:
    return chat_file(tmp_path / "train.jsonl")


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    return chat_file(tmp_path / "valid.jsonl", n=4, offset=100)


def create(rig: Rig, training_file: Path, *, options: dict[str, Any] | None = None, **fields: Any) -> FineTuneJob:
    fields.setdefault("base_model", MODEL)
    return FineTuneJob.create(provider=rig.provider(**(options or {})), training_file=training_file, **fields)


def statuses(events: list[Event]) -> list[JobStatus | None]:
    return [e.status for e in events if e.kind == "status"]


def poll_until(job: FineTuneJob, status: JobStatus, limit: int = 50) -> None:
    for _ in range(limit):
        if job.refresh().status is status:
            return
    raise AssertionError(f"{job.ref} never reached {status}")


def result_rows(service: FakeOpenAIService, job_id: str) -> list[dict[str, str]]:
    """The rows of the result file the service holds for the job (Azure's is base64)."""
    [file_id] = service.jobs[job_id].obj["result_files"]
    raw = service.content(file_id)
    text = base64.b64decode(raw).decode() if service.flavour == "azure" else raw.decode()
    return list(csv.DictReader(io.StringIO(text)))


def created_body(service: FakeOpenAIService) -> dict[str, Any]:
    [request] = service.requests("POST", "/fine_tuning/jobs")
    body: dict[str, Any] = request.json
    return body


# -- the whole life of a job ---------------------------------------------------------------------------


def test_full_lifecycle(flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path, valid: Path) -> None:
    extra: dict[str, Any] = {"azure": {"training_type": "globalstandard"}} if flavour == "azure" else {}
    job = create(
        rig,
        train,
        validation_file=valid,
        suffix="demo",
        tags={"team": "nlp"},
        hyperparameters={"epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5, "seed": 7},
        **extra,
    )

    assert job.ref == f"{provider_name(flavour)}:{job.id}" and job.id in service.jobs
    assert job.record.status is S.VALIDATING
    assert job.record.raw_status == "validating_files"  # Azure's v1 surface speaks OpenAI's statuses
    body = created_body(service)
    stored = FineTuneJob.list(refresh=False)[0]  # the row as stored (a refresh would build a new client)
    assert body["metadata"] == {"team": "nlp", IDEMPOTENCY_TAG: stored.idempotency_key}
    assert body["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5}},
    }
    assert (body["suffix"], body["seed"], body["model"]) == ("demo", 7, MODEL)
    assert {body["training_file"], body["validation_file"]} <= set(service.files)
    if flavour == "azure":
        assert body["trainingType"] == "globalstandard"
        assert all(r.query.get("api-version") == API_VERSION for r in service.log)
        assert all(r.headers.get("api-key") == AZURE_KEY and "authorization" not in r.headers for r in service.log)
        assert all(r.url.startswith(f"{AZURE_ENDPOINT}/openai/") for r in service.log)
    else:
        assert all(r.headers["authorization"] == f"Bearer {OPENAI_KEY}" for r in service.log)
        assert "trainingType" not in body

    seen: list[Event] = []
    record = job.wait(on_event=seen.append)

    assert record.status is S.SUCCEEDED and job.done()
    assert statuses(seen) == [S.VALIDATING, S.QUEUED, S.RUNNING, S.SUCCEEDED]
    assert [e.id for e in seen] == [e["id"] for e in service.job_events(job.id)]  # none lost, none repeated
    assert [e.metric.step for e in seen if e.metric is not None] == [1, 2, 3, 4, 5, 6]
    assert [e.level for e in seen if "token limit" in e.message] == ["warning"]
    assert seen == job.events()

    model = job.result()
    assert model.model_id == service.jobs[job.id].obj["fine_tuned_model"] == record.fine_tuned_model
    assert model.job_ref == job.ref and model.base_model == MODEL and model.trained_tokens == 1234 * 6
    assert [c.step for c in model.checkpoints] == [3, 6]
    assert all(c.model and c.model.endswith(f"ckpt-step-{c.step}") for c in model.checkpoints)
    assert all(c.metrics is not None and "full_valid_loss" in c.metrics.extra for c in model.checkpoints)
    # The metrics are the adapter's merge of three sources: events and checkpoints (values rounded to
    # 4 places) and the result file (full precision; base64 on Azure), which wins where it has one.
    rows = result_rows(service, job.id)
    final = model.final_metrics
    assert final is not None and final.step == int(rows[-1]["step"])
    assert (final.train_loss, final.valid_loss, final.extra["full_valid_loss"]) == tuple(
        float(rows[-1][name]) for name in ("train_loss", "valid_loss", "full_valid_loss")
    )
    event_data = {e["data"]["step"]: e["data"] for e in service.job_events(job.id) if e["type"] == "metrics"}
    assert final.train_loss != event_data[6]["train_loss"]  # the file's value, not the event's
    metrics = job.metrics()
    assert [m.step for m in metrics] == [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [m.train_loss for m in metrics] == [float(r["train_loss"]) for r in rows]
    assert [m.step for m in metrics if m.valid_loss is not None] == [2, 3, 4, 6]
    held = {c["step_number"]: c["metrics"] for c in service.jobs[job.id].checkpoints}
    assert metrics[2].valid_loss == held[3]["valid_loss"]  # step 3: only its checkpoint has one

    assert FineTuneJob.list()[0].status == "succeeded"
    again = FineTuneJob.get(job.ref, provider=rig.provider())  # re-attach, as another process would
    assert again.record.status is S.SUCCEEDED and again.result().model_id == model.model_id


def test_azure_with_entra_id(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    service = rig.service
    job = FineTuneJob.create(
        provider=rig.provider({"endpoint": AZURE_ENDPOINT, "auth": "entra"}),
        base_model=MODEL,
        training_file=train,
    )
    assert job.wait().status is S.SUCCEEDED
    assert all(r.headers.get("authorization") == f"Bearer {ENTRA_TOKEN}" for r in service.log)
    assert not any("api-key" in r.headers for r in service.log)
    assert all(r.query["api-version"] == DEFAULT_AZURE_API_VERSION for r in service.log)  # the default
    assert all(r.url.startswith(f"{AZURE_ENDPOINT}/openai/v1/") for r in service.log)
    assert service.violations == []


def test_dpo(flavour: Flavour, rig: Rig, service: FakeOpenAIService, tmp_path: Path) -> None:
    prefs = preference_file(tmp_path / "prefs.jsonl")
    job = create(rig, prefs, method="dpo", hyperparameters={"epochs": 2, "beta": 0.2})
    assert created_body(service)["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "beta": 0.2}}}
    uploaded = service.content(created_body(service)["training_file"]).decode().splitlines()
    assert json.loads(uploaded[0])["preferred_output"]  # sent as it is: the service's own format
    assert job.wait().status is S.SUCCEEDED
    assert job.result().model_id


def test_pause_and_resume(flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path) -> None:
    job = create(rig, train)
    poll_until(job, S.RUNNING)

    paused = job.pause()

    assert paused.status is S.PAUSED
    assert paused.raw_status == "paused"  # Azure's dated two-step pause: test_openai_versions_and_wind_down
    steps_before = len(job.metrics())
    for _ in range(5):
        assert job.refresh().status is S.PAUSED
    assert job.record.raw_status == "paused"
    assert len(job.metrics()) == steps_before  # nothing trains while paused
    assert job.pause().status is S.PAUSED  # pausing again changes nothing

    resumed = job.resume()

    assert resumed.status is S.RUNNING
    assert job.wait().status is S.SUCCEEDED
    assert [m.step for m in job.metrics()] == [1, 2, 3, 4, 5, 6]


def test_cancel(flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path) -> None:
    job = create(rig, train)
    poll_until(job, S.RUNNING)

    record = job.cancel()

    assert record.status is S.CANCELLED and service.jobs[job.id].obj["status"] == "cancelled"
    assert job.wait().status is S.CANCELLED
    assert job.events()[-1].status is S.CANCELLED
    assert job.cancel().status is S.CANCELLED  # the service refuses a second cancel; the state is what counts
    with pytest.raises(JobFailedError) as info:
        job.result()
    assert info.value.record.status is S.CANCELLED


def test_cancel_after_the_end_keeps_the_outcome(
    flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path
) -> None:
    job = create(rig, train)
    assert job.wait().status is S.SUCCEEDED
    assert job.cancel().status is S.SUCCEEDED


def test_failure_carries_the_service_error(flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path) -> None:
    job = create(rig, train, tags={"scenario": "fail"})
    seen: list[Event] = []

    record = job.wait(on_event=seen.append)

    assert record.status is S.FAILED
    assert record.error is not None
    assert (record.error.code, record.error.param) == ("invalid_training_file", "training_file")
    assert "line 3" in record.error.message
    assert seen[-1].status is S.FAILED and seen[-1].level == "error"
    with pytest.raises(JobFailedError, match="line 3"):
        job.result()


def test_events_are_paged_and_resumed_without_gaps(tmp_path: Path, train: Path, flavour: Flavour) -> None:
    rig = make_rig(tmp_path, flavour, steps=14)
    service = rig.service
    job = create(rig, train, options={"events_page_size": 3})
    first: list[Event] = []
    for _ in range(9):  # part of the run, as one session saw it
        job.refresh()
        first.extend(e for e in job.events(after=first[-1].id if first else None))
    requests_before = len(service.requests("GET", r"/fine_tuning/jobs/[^/]+/events"))

    # Another session resumes from the cursor, with the settings the job was created with.
    second = FineTuneJob.get(job.ref, provider=rig.provider(events_page_size=3))
    rest = list(second.stream(after=first[-1].id))

    everything = [e["id"] for e in service.job_events(job.id)]
    assert len(everything) > 20
    assert [e.id for e in first + rest] == everything
    assert [e.id for e in job.events()] == everything
    assert len(service.requests("GET", r"/fine_tuning/jobs/[^/]+/events")) - requests_before > 1
    middle = everything[10]
    assert [e.id for e in job.events(after=middle)] == everything[11:]
    assert job.events(after=everything[-1]) == []


def test_checkpoints_in_step_order(flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path) -> None:
    job = create(rig, train)
    job.wait()
    checkpoints = job.checkpoints()
    assert [c.step for c in checkpoints] == [3, 6]
    held = service.jobs[job.id].checkpoints  # the service answers newest first
    assert [c.id for c in checkpoints] == [c["id"] for c in held]
    for checkpoint, raw in zip(checkpoints, held, strict=True):  # each mapped from its own object
        assert checkpoint.metrics is not None and checkpoint.model == raw["fine_tuned_model_checkpoint"]
        assert (checkpoint.metrics.step, checkpoint.metrics.train_loss, checkpoint.metrics.valid_loss) == (
            raw["step_number"],
            raw["metrics"]["train_loss"],
            raw["metrics"]["valid_loss"],
        )
        assert checkpoint.metrics.extra == {
            k: raw["metrics"][k] for k in ("full_valid_loss", "full_valid_mean_token_accuracy")
        }


# -- uploads ----------------------------------------------------------------------------------------------


def test_the_same_content_is_uploaded_once(
    flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path, valid: Path, tmp_path: Path
) -> None:
    create(rig, train, validation_file=valid)
    copy = tmp_path / "elsewhere.jsonl"
    copy.write_bytes(train.read_bytes())  # same content, other name: still the same upload

    create(rig, copy, validation_file=valid)

    assert len(service.requests("POST", "/files")) == 2
    [first, second] = [r.json for r in service.requests("POST", "/fine_tuning/jobs")]
    assert (first["training_file"], first["validation_file"]) == (second["training_file"], second["validation_file"])

    del service.files[first["training_file"]]  # removed on the service: uploaded again
    create(rig, train, validation_file=valid)
    assert len(service.requests("POST", "/files")) == 3


def test_large_file_goes_through_the_uploads_api_with_bounded_memory(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    service = rig.service
    path = tmp_path / "big.jsonl"
    line = (json.dumps(chat_example(7)) + "\n").encode()
    with path.open("wb") as f:
        for _ in range((24 << 20) // len(line) + 1):
            f.write(line)
    size = path.stat().st_size
    part = 1 << 20
    provider = rig.provider(upload_threshold_bytes=part, upload_part_bytes=part, upload_concurrency=4)

    tracemalloc.start()
    try:
        job = FineTuneJob.create(provider=provider, base_model=MODEL, training_file=path, validate_data=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < size / 6, f"peak {peak} bytes for a {size}-byte file"
    assert service.requests("POST", "/files") == []
    [upload] = service.uploads.values()
    assert upload["status"] == "completed" and upload["bytes"] == size
    assert len(service.requests("POST", r"/uploads/[^/]+/parts")) == -(-size // part)
    [complete] = service.requests("POST", r"/uploads/[^/]+/complete")
    assert complete.json["md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    file_id = created_body(service)["training_file"]
    assert file_id == upload["file"]["id"]
    assert hashlib.sha256(service.content(file_id)).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert job.wait().status is S.SUCCEEDED
    assert service.violations == []


def test_prompt_completion_is_converted_to_chat(
    flavour: Flavour, rig: Rig, service: FakeOpenAIService, tmp_path: Path
) -> None:
    rows = [{"prompt": f"What is {i} plus {i}?", "completion": f"{2 * i}."} for i in range(12)]
    source = write_jsonl(tmp_path / "pc.jsonl", rows)
    create(rig, source)
    uploaded = service.content(created_body(service)["training_file"]).decode().splitlines()
    assert json.loads(uploaded[0])["messages"][-1] == {"role": "assistant", "content": "0."}


# -- plan -------------------------------------------------------------------------------------------------


def test_plan_lists_uploads_and_the_exact_body_without_network(
    flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path, valid: Path
) -> None:
    fields: dict[str, Any] = {"validation_file": valid, "hyperparameters": {"epochs": 2}, "suffix": "plan"}
    options = {"upload_threshold_bytes": 1000, "upload_part_bytes": 1024}

    plan = FineTuneJob.plan(provider=rig.provider(**options), base_model=MODEL, training_file=train, **fields)

    assert service.log == []  # nothing was sent
    assert [(u.path, u.bytes, u.sha256) for u in plan.uploads] == [
        (str(p), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) for p in (train, valid)
    ]
    operations = [r.operation.split("?")[0] for r in plan.requests]
    if flavour == "azure":
        # Azure's v1 has no Uploads API: the file over the threshold goes whole through /files.
        root = f"{AZURE_ENDPOINT}/openai/v1"
        assert operations == [f"POST {root}/files", f"POST {root}/files", f"POST {root}/fine_tuning/jobs"]
    else:
        root = "https://api.openai.test/v1"
        assert operations == [
            f"POST {root}/uploads",
            f"POST {root}/uploads/<upload id>/parts",
            f"POST {root}/uploads/<upload id>/complete",
            f"POST {root}/files",
            f"POST {root}/fine_tuning/jobs",
        ]
        parts = plan.requests[1].body["parts"]
        assert parts == -(-train.stat().st_size // 1024)
        assert plan.requests[2].body["md5"] == hashlib.md5(train.read_bytes()).hexdigest()
    planned = plan.requests[-1].body

    create(rig, train, options=options, **fields)

    sent = created_body(service)
    assert planned["training_file"] == "<file id of train.jsonl>"
    assert planned["metadata"][IDEMPOTENCY_TAG] == "<assigned at submit>"
    files = {"training_file": sent["training_file"], "validation_file": sent["validation_file"]}
    assert {**planned, **files, "metadata": sent["metadata"]} == sent


def test_plan_shows_reuse(flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path) -> None:
    create(rig, train)
    plan = FineTuneJob.plan(provider=rig.provider(), base_model=MODEL, training_file=train)
    file_id = created_body(service)["training_file"]
    assert plan.requests[-1].body["training_file"] == file_id
    assert any(file_id in note for note in plan.notes)
    assert [r.operation.split("?")[0].rsplit("/", 2)[-2:] for r in plan.requests] == [["fine_tuning", "jobs"]]


# -- configuration ---------------------------------------------------------------------------------------


def test_openai_standard_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    service = rig.service
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example.test/v1")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-from-env")
    job = FineTuneJob.create(provider=rig.provider({}), base_model=MODEL, training_file=train)
    assert job.wait().status is S.SUCCEEDED
    assert all(r.url.startswith("https://gateway.example.test/v1/") for r in service.log)
    assert all(r.headers.get("openai-organization") == "org-from-env" for r in service.log)


def test_azure_standard_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    service = rig.service
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", AZURE_ENDPOINT)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    job = FineTuneJob.create(provider=rig.provider({}), base_model=MODEL, training_file=train)
    assert job.wait().status is S.SUCCEEDED
    assert {r.query["api-version"] for r in service.log} == {"2024-10-21"}
    assert all(r.headers.get("api-key") == AZURE_KEY for r in service.log)


def test_a_named_key_variable_from_a_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, train: Path, workdir: Path
) -> None:
    register_by_name(monkeypatch, make_rig(tmp_path, "openai"))  # a profile names the provider
    (workdir / "anytune.toml").write_text(
        '[profiles.team]\nprovider = "openai"\n'
        f'settings = {{ api_key_env = "TEAM_OPENAI_KEY", base_url = "https://api.openai.test/v1" }}\n'
        f'spec = {{ base_model = "{MODEL}" }}\n'
    )
    monkeypatch.setenv("TEAM_OPENAI_KEY", OPENAI_KEY)
    job = FineTuneJob.create(provider="team", training_file=train)
    assert job.wait().status is S.SUCCEEDED
    assert FineTuneJob.list()[0].profile == "team"


def test_missing_key_fails_before_anything_is_sent(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    service = rig.service
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        FineTuneJob.create(provider=rig.provider({}), base_model=MODEL, training_file=train)
    assert service.log == []
    assert FineTuneJob.list() == []  # refused before sending: no job, so no row


def test_unsupported_fields_fail_before_anything_is_sent(
    flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path
) -> None:
    with pytest.raises(NotSupportedError) as info:
        create(rig, train, hyperparameters={"learning_rate": 1e-4})
    assert info.value.field == "hyperparameters.learning_rate"
    with pytest.raises(NotSupportedError) as lora:
        create(rig, train, lora={"r": 8})
    assert lora.value.field == "lora" and "LoRA" in str(lora.value)
    assert service.log == []


# -- errors -------------------------------------------------------------------------------------------------


def test_wrong_key(flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path) -> None:
    service.api_key = "the-key-the-service-expects-0000"
    with pytest.raises(AuthenticationError) as info:
        create(rig, train)
    assert info.value.status_code == 401
    assert (AZURE_KEY if flavour == "azure" else OPENAI_KEY) not in str(info.value)


def test_openai_refusing_fine_tuning(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    service, sleeps = rig.service, rig.sleeps
    service.refuse_fine_tuning = True
    with pytest.raises(PermissionDeniedError) as info:
        create(rig, train)
    message = str(info.value)
    assert "winding down" in message and "azure-openai" in message and "'local'" in message
    assert sleeps == [] and service.jobs == {}


def test_model_not_available(flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path) -> None:
    service.unavailable_models.add("gpt-4o-2024-05-13")
    with pytest.raises(ModelNotAvailableError):
        create(rig, train, base_model="gpt-4o-2024-05-13")


def test_quota_is_not_retried(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    service, sleeps = rig.service, rig.sleeps
    service.quota_exhausted = True
    with pytest.raises(QuotaExceededError, match="quota"):
        create(rig, train)
    assert sleeps == [] and len(service.requests("POST", "/fine_tuning/jobs")) == 1


def test_unknown_job(flavour: Flavour, rig: Rig, service: FakeOpenAIService) -> None:
    with pytest.raises(JobNotFoundError) as info:
        FineTuneJob.get(f"{provider_name(flavour)}:ftjob-nope", provider=rig.provider())
    assert info.value.ref == f"{provider_name(flavour)}:ftjob-nope"


@pytest.mark.parametrize(
    ("script", "provider"), [("openai_quickstart.py", "openai"), ("azure_openai.py", "azure-openai")]
)
def test_samples_dry_run_offline(script: str, provider: str) -> None:
    sample = Path(__file__).resolve().parents[2] / "samples" / script
    proc = subprocess.run(
        [sys.executable, str(sample), "--dry-run"], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["provider"] == provider
    assert [Path(u["path"]).name for u in plan["uploads"]] == ["train.jsonl", "valid.jsonl"]
    assert "/fine_tuning/jobs" in plan["requests"][-1]["operation"]


def test_async_handle(flavour: Flavour, rig: Rig, service: FakeOpenAIService, train: Path) -> None:
    async def scenario() -> tuple[JobStatus, str | None, int]:
        job = await AsyncFineTuneJob.create(provider=rig.provider(), base_model=MODEL, training_file=train)
        record = await job.wait()
        model = await job.result()
        return record.status, model.model_id, len(await job.events())

    status, model_id, events = asyncio.run(scenario())
    assert status is S.SUCCEEDED and model_id and events == len(next(iter(service.jobs.values())).events)
