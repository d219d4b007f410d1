"""The huggingface provider through the real huggingface_hub client, against an HTTP-level fake Hub.

What reaches the fake is what would reach the Hub: the tests assert the dataset upload (private
repo, content-addressed, never sent twice), the job spec (image, uv command, flavor, timeout, the
token as a secret only, the idempotency label), the lifecycle, log streaming across a dropped
connection, failure with the last log lines, cancel, 429/5xx faults without duplicate jobs, error
mapping, and that the token never lands in logs, errors, events, the job store or the job's env.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pkgutil
import traceback
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("huggingface_hub")

import httpx2

import anytune
import anytune.local_backend
import anytune.providers
from anytune import FineTuneJob, JobSpec, JobStatus
from anytune._store import JobStore
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    JobFailedError,
    JobNotFoundError,
    ModelNotAvailableError,
    NotSupportedError,
    PermissionDeniedError,
    QuotaExceededError,
    ServiceUnavailableError,
)
from anytune.providers import huggingface as hf
from anytune.providers.huggingface import (
    DEFAULT_IMAGE,
    LABEL_KEY,
    JobView,
    job_events,
    map_stage,
    parse_line,
    record_from_view,
)
from tests.conftest import FakeClock, chat_example, run_python, write_jsonl
from tests.providers.hf_fake import LFS_THRESHOLD, MODEL_LFS_PATTERNS, TOKEN, USER, FakeHub, Job, upload_mode
from tests.providers.hf_support import BASE_MODEL, install, provider

S = JobStatus


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock) -> Iterator[FakeHub]:
    yield from install(monkeypatch, tmp_path, clock)


@pytest.fixture
def train(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(12)])


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "valid.jsonl", [chat_example(100 + i) for i in range(4)])


def create(hub: FakeHub, train: Path, valid: Path | None = None, **fields: Any) -> FineTuneJob:
    fields.setdefault("base_model", BASE_MODEL)
    fields.setdefault("lora", {"r": 8})
    return FineTuneJob.create(provider=provider(hub), training_file=train, validation_file=valid, **fields)


def bare(job: FineTuneJob) -> str:
    return job.id.split("/")[1]


def metric_line(step: int, loss: float) -> str:
    when = datetime(2026, 1, 1, 0, 0, step, tzinfo=timezone.utc).isoformat()
    return hf.METRIC_PREFIX + json.dumps({"step": step, "train_loss": loss, "epoch": step / 4, "time": when})


def result_line(repo: str, revision: str = "abc123") -> str:
    return hf.RESULT_PREFIX + json.dumps(
        {"hub_repo": repo, "revision": revision, "result": {"train_tokens": 1234, "steps": 4}}
    )


# -- pure parts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "status"),
    [
        ("SCHEDULING", S.QUEUED),
        ("RUNNING", S.RUNNING),
        ("UPDATING", S.RUNNING),
        ("COMPLETED", S.SUCCEEDED),
        ("CANCELED", S.CANCELLED),
        ("ERROR", S.FAILED),
        ("DELETED", S.CANCELLED),
        ("running", S.RUNNING),
        ("SOMETHING_NEW", S.RUNNING),
        (None, S.RUNNING),
    ],
)
def test_stage_table(stage: str | None, status: JobStatus) -> None:
    assert map_stage(stage) is status


def test_stage_table_covers_every_documented_stage() -> None:
    from huggingface_hub import JobStage

    assert {s.value for s in JobStage} | {"UPDATING"} == set(hf.HF_STAGE)
    assert {s for s, st in hf.HF_STAGE.items() if st.is_terminal} == {"COMPLETED", "CANCELED", "ERROR", "DELETED"}


def test_log_lines_are_parsed_and_odd_ones_stay_text() -> None:
    kind, point = parse_line(metric_line(3, 1.5))
    assert kind == "metric" and point.step == 3 and point.train_loss == 1.5
    assert parse_line(result_line("alice/x"))[0] == "result"
    assert parse_line(hf.ERROR_PREFIX + '{"message": "boom", "code": "oom"}') == (
        "error",
        {"message": "boom", "code": "oom"},
    )
    for odd in (
        hf.METRIC_PREFIX + "{not json",
        hf.METRIC_PREFIX + '{"no_step": 1}',
        hf.RESULT_PREFIX + "[1]",
        "plain text",
    ):
        assert parse_line(odd) == ("log", odd)


def view(stage: str, lines_started: bool = True) -> JobView:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return JobView(
        id="j1",
        namespace="alice",
        stage=stage,
        created_at=t0,
        started_at=t0 if lines_started else None,
        finished_at=None,
        flavor="a10g-small",
        command=["python", "-m", hf.ENTRY_MODULE, "--output-repo", "alice/out", "--spec", '{"base_model": "m/b"}'],
    )


def test_event_ids_are_stable_and_ordered_around_the_log() -> None:
    lines = ["hello", metric_line(1, 2.0), "[anytune] WARNING: careful", result_line("alice/out")]
    running = job_events(view("RUNNING"), lines[:2])
    done = job_events(view("COMPLETED"), lines)
    assert [e.id for e in running] == [e.id for e in done][: len(running)]
    assert [e.id for e in done] == sorted(e.id for e in done)
    assert [e.kind for e in done] == ["status", "status", "log", "metric", "log", "log", "status"]
    assert [e.status for e in done if e.kind == "status"] == [S.QUEUED, S.RUNNING, S.SUCCEEDED]
    assert done[4].level == "warning" and "alice/out" in done[-1].message
    times = [e.time for e in done]
    assert times == sorted(times)
    assert [e.kind for e in job_events(view("SCHEDULING", lines_started=False), [])] == ["status"]


def test_record_of_a_failed_job_carries_the_trainer_error_and_last_lines() -> None:
    lines = [
        *(f"line {i}" for i in range(30)),
        metric_line(1, 2.0),
        hf.ERROR_PREFIX + '{"message": "CUDA out of memory", "code": "out_of_memory"}',
    ]
    record = record_from_view("huggingface", view("ERROR"), lines, error_log_lines=5)
    assert record.status is S.FAILED and record.id == "alice/j1" and record.base_model == "m/b"
    assert record.error is not None and record.error.code == "out_of_memory"
    assert record.error.message.startswith("CUDA out of memory")
    assert "line 29" in record.error.message and "line 25" not in record.error.message
    assert record.step == 1


def test_capabilities_and_plan_need_no_huggingface_hub() -> None:
    proc = run_python(
        "import sys, json\n"
        "from anytune import _registry\n"
        "cls = _registry.provider_class(_registry.entry('huggingface'))\n"
        "print(json.dumps(cls.capabilities.summary()))\n"
        "assert 'huggingface_hub' not in sys.modules and 'httpx2' not in sys.modules, 'hub imported'\n"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["methods"] == ["dpo", "sft"] and summary["lora"] and "4bit" in summary["quantization"]


def test_wheel_is_deterministic_installable_and_complete() -> None:
    name, data = hf.build_wheel()
    assert hf.build_wheel() == (name, data)
    assert name.startswith("anytune-") and name.endswith("-py3-none-any.whl")
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = set(archive.namelist())
    for module in (
        "anytune/__init__.py",
        "anytune/_job.py",
        "anytune/py.typed",
        "anytune/providers/huggingface/__init__.py",
        "anytune/providers/huggingface/adapter.py",
        "anytune/_boundary.py",
        "anytune/_create_once.py",
        "anytune/local_backend/joblog.py",
        "anytune/local_backend/devices.py",
        "anytune/local_backend/hf_job.py",
        "anytune/local_backend/train.py",
        "anytune/local_backend/rundir.py",
    ):
        assert module in names, module
    assert not any("__pycache__" in n for n in names)
    # Every module of every package, subpackages included (the job imports from the wheel only).
    for package in (anytune, anytune.providers, anytune.local_backend):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = info.name.replace(".", "/") + ("/__init__.py" if info.ispkg else ".py")
            assert module in names, module
    dist = name.split("-py3")[0].replace("anytune-", "anytune-") + ".dist-info"
    metadata = archive.read(f"{dist}/METADATA").decode()
    assert "Provides-Extra: local" in metadata and 'extra == "local"' in metadata
    record = archive.read(f"{dist}/RECORD").decode().splitlines()
    import base64

    for row in record:
        path, digest, size = row.split(",")
        if digest:
            raw = archive.read(path)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()
            assert int(size) == len(raw)


def test_job_requirements_are_pinned_and_overridable() -> None:
    pins = hf.job_requirements()
    assert all("==" in p for p in pins) and any(p.startswith("torch==") for p in pins)
    changed = hf.job_requirements(["torch==2.5.1", "trl>=0.12"])
    assert "torch==2.5.1" in changed and "torch==2.13.0" not in changed and changed[-1] == "trl>=0.12"


# -- plan -----------------------------------------------------------------------------------------------


def test_plan_shows_uploads_and_the_job_spec_sending_nothing(hub: FakeHub, train: Path, valid: Path) -> None:
    plan = FineTuneJob.plan(
        provider=provider(hub),
        base_model=BASE_MODEL,
        training_file=train,
        validation_file=valid,
        lora={"r": 8},
        hf={"flavor": "l4x1", "namespace": "acme"},
    )
    # The one call: the base model's read-only look-up (huggingface_hub reads its harness list itself).
    calls = [(r.method, r.path) for r in hub.requests if r.path != "/api/agent-harnesses"]
    assert calls == [("GET", f"/api/models/{BASE_MODEL}")]
    assert [u.purpose for u in plan.uploads] == ["training", "validation", "trainer"]
    assert plan.uploads[0].sha256 == hashlib.sha256(train.read_bytes()).hexdigest()
    ops = {r.operation: r.body for r in plan.requests}
    job = ops["HfApi.run_job"]
    assert job["image"] == DEFAULT_IMAGE and job["flavor"] == "l4x1" and job["namespace"] == "acme"
    assert job["secrets"] == ["HF_TOKEN"] and job["timeout"] == "2h"
    assert LABEL_KEY in job["labels"]
    command = job["command"]
    assert command[:2] == ["uv", "run"] and "python" in command and hf.ENTRY_MODULE in command
    assert "--train" in command and any(a.startswith("anytune/data/") for a in command)
    assert ops["HfApi.create_commit"]["repo_id"] == "acme/anytune-datasets"
    assert TOKEN not in json.dumps(plan.model_dump(mode="json"))


# -- submit ---------------------------------------------------------------------------------------------


def test_submit_uploads_the_dataset_privately_and_sends_the_job_spec(
    hub: FakeHub, train: Path, valid: Path, anytune_home: Path
) -> None:
    job = create(hub, train, valid, hf={"flavor": "t4-small", "timeout": "90m"}, tags={"team": "nlp"})
    assert job.ref.startswith(f"huggingface:{USER}/")
    assert job.status() is S.QUEUED
    data = hub.repos[("dataset", f"{USER}/anytune-datasets")]
    assert data.private
    train_path = f"anytune/data/{hashlib.sha256(train.read_bytes()).hexdigest()}.jsonl"
    valid_path = f"anytune/data/{hashlib.sha256(valid.read_bytes()).hexdigest()}.jsonl"
    assert data.files[train_path] == train.read_bytes() and data.files[valid_path] == valid.read_bytes()
    wheels = [p for p in data.files if p.startswith("anytune/wheels/")]
    assert len(wheels) == 1 and zipfile.ZipFile(io.BytesIO(data.files[wheels[0]])).testzip() is None

    body = hub.job_creates[-1].json()
    assert body["dockerImage"] == DEFAULT_IMAGE
    assert body["flavor"] == "t4-small" and body["timeoutSeconds"] == 5400
    assert body["secrets"] == {"HF_TOKEN": TOKEN}
    assert TOKEN not in json.dumps([body["environment"], body["command"], body["labels"]])
    key = JobStore(anytune_home / "jobs.db").get(job.ref)
    assert key is not None and body["labels"][LABEL_KEY] == key.idempotency_key
    assert body["labels"]["anytune-tag-team"] == "nlp" and body["labels"]["anytune-method"] == "sft"
    command = body["command"]
    args = hf.entry_args(command)
    assert args[args.index("--train") + 1] == train_path and args[args.index("--valid") + 1] == valid_path
    assert args[args.index("--dataset-repo") + 1] == f"{USER}/anytune-datasets"
    assert json.loads(args[args.index("--spec") + 1]) == {
        "base_model": BASE_MODEL,
        "lora": {"r": 8},
        "tags": {"team": "nlp"},
    }
    assert "--private" in args
    output = args[args.index("--output-repo") + 1]
    assert hub.repos[("model", output)].private
    assert command[command.index("-c") + 2] == f"{USER}/anytune-datasets" and command[command.index("-c") + 3] in wheels
    assert "anytune[local] @ @ANYTUNE_WHEEL@" in command and "torch==2.13.0" in command


def test_same_content_is_not_uploaded_twice(
    hub: FakeHub, train: Path, valid: Path, anytune_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    create(hub, train, valid)
    commits = hub.calls("POST", r"/commit/")
    assert len(commits) == 1 and len(commits[0].body.splitlines()) == 4  # header + train + valid + wheel
    create(hub, train, valid)  # the job store remembers: no preupload, no commit
    assert len(hub.calls("POST", r"/commit/")) == 1
    # Another machine (empty job store): the Hub's hashes show the content is there already.
    monkeypatch.setenv("ANYTUNE_HOME", str(tmp_path / "other-home"))
    before = len(hub.requests)
    create(hub, train, valid)
    assert len(hub.calls("POST", r"/commit/")) == 1
    assert any(r.path.endswith("/preupload/main") for r in hub.requests[before:])
    assert len(hub.jobs) == 3


def test_a_retried_submit_finds_the_job_by_its_label(hub: FakeHub, train: Path) -> None:
    hf_provider = provider(hub)
    spec = JobSpec(base_model=BASE_MODEL, training_file=train, lora={"r": 8})
    first = hf_provider.submit(spec, idempotency_key="key-1")
    uploads = len(hub.calls("POST", r"/commit/"))
    again = hf_provider.submit(spec, idempotency_key="key-1")
    assert again.id == first.id and len(hub.jobs) == 1
    assert len(hub.calls("POST", r"/commit/")) == uploads
    assert hub.calls("GET", r"^/api/jobs/alice$")[-1].query == [("label", f"{LABEL_KEY}=key-1")]


# -- uploads go where the Hub puts them ----------------------------------------------------------------


def _committed(hub: FakeHub) -> dict[str, dict[str, Any]]:
    """The last commit's lines (after the header), by path."""
    lines = [json.loads(line) for line in hub.calls("POST", r"/commit/")[-1].body.splitlines()[1:]]
    return {item["value"]["path"]: item for item in lines}


def _download(repo: str, path: str, folder: Path) -> bytes:
    """The file as a job gets it: huggingface_hub's ``hf_hub_download`` (the bootstrap's own call)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, path, repo_type="dataset", local_dir=folder, token=TOKEN)).read_bytes()


@pytest.mark.parametrize(
    ("path", "data", "mode"),
    [
        ("adapter_model.safetensors", b'{"tiny": "but tracked"}', ("lfs", "tracked")),
        ("runs/events.out.tfevents.1.host", b"text", ("lfs", "tracked")),
        ("saved_model/variables/data", b"text", ("lfs", "tracked")),
        ("anytune/wheels/0123/anytune-0.1.0-py3-none-any.whl", b"PK\x03\x04\x14\x00", ("lfs", "binary")),
        ("anytune/data/big.jsonl", b'{"a": 1}\n' * (LFS_THRESHOLD // 9 + 1), ("lfs", "large")),
        ("anytune/data/small.jsonl", b'{"text": "caf\xc3\xa9 \xe2\x80\x94 ok"}\n', ("regular", None)),
        ("README.md", b"---\nbase_model: x\n---\n", ("regular", None)),
    ],
)
def test_the_fake_decides_the_upload_mode_by_the_hubs_rules(path: str, data: bytes, mode: tuple[str, Any]) -> None:
    # The measuring instrument itself: name, size and sample decide, not what the client would like.
    assert upload_mode(path, len(data), data[:512], MODEL_LFS_PATTERNS) == mode


def test_the_wheel_goes_through_lfs_and_a_job_downloads_it_whole(
    hub: FakeHub, train: Path, valid: Path, tmp_path: Path
) -> None:
    create(hub, train, valid)
    data = hub.repos[("dataset", f"{USER}/anytune-datasets")]
    wheel_path = next(p for p in data.files if p.startswith("anytune/wheels/"))
    name, wheel = hf.build_wheel()
    sha = hashlib.sha256(wheel).hexdigest()
    assert wheel_path.endswith(name) and data.lfs == {wheel_path: sha}  # the small text data stays in git

    # The LFS protocol, as the Hub runs it: batch, a PUT to the signed URL without the token, verify.
    batch = hub.calls("POST", r"/datasets/alice/anytune-datasets\.git/info/lfs/objects/batch$")
    assert [b.json()["objects"] for b in batch] == [[{"oid": sha, "size": len(wheel)}]]
    puts = hub.calls("PUT", r"^/__storage/")
    assert [p.body for p in puts] == [wheel] and all("authorization" not in p.headers for p in puts)
    assert len(hub.calls("POST", r"\.git/info/lfs/objects/verify$")) == 1
    lines = _committed(hub)
    assert lines[wheel_path] == {
        "key": "lfsFile",
        "value": {"path": wheel_path, "algo": "sha256", "oid": sha, "size": len(wheel)},
    }
    assert sorted(v["key"] for p, v in lines.items() if p != wheel_path) == ["file", "file"]

    # Downloaded as the job's bootstrap does it: through the CDN redirect, the token left behind.
    assert _download(f"{USER}/anytune-datasets", wheel_path, tmp_path / "job") == wheel
    cdn = hub.calls("GET", r"^/__cdn/")
    assert len(cdn) == 1 and "authorization" not in cdn[0].headers


@pytest.mark.slow  # the data check of an 11 MB file starts worker processes
def test_a_large_dataset_goes_through_lfs_in_parts_and_a_job_downloads_it_whole(
    hub: FakeHub, valid: Path, tmp_path: Path
) -> None:
    long = "word " * 1200
    rows = [
        {"messages": [{"role": "user", "content": f"{i}: {long}"}, {"role": "assistant", "content": long}]}
        for i in range(900)
    ]
    big = write_jsonl(tmp_path / "big.jsonl", rows)
    content = big.read_bytes()
    assert len(content) > LFS_THRESHOLD
    hub.multipart_chunk_size = 4 * 1024 * 1024
    create(hub, big, valid)
    sha = hashlib.sha256(content).hexdigest()
    data_path = f"anytune/data/{sha}.jsonl"
    repo = hub.repos[("dataset", f"{USER}/anytune-datasets")]
    assert repo.lfs[data_path] == sha and repo.files[data_path] == content
    assert _committed(hub)[data_path]["key"] == "lfsFile"
    assert _committed(hub)[f"anytune/data/{hashlib.sha256(valid.read_bytes()).hexdigest()}.jsonl"]["key"] == "file"

    # Three parts of at most 4 MiB, each to its own signed URL, then the completion and the verify.
    parts = [p for p in hub.calls("PUT", r"^/__storage/") if "/part/" in p.path]
    assert [p.path.rsplit("/", 1)[1] for p in parts] == ["1", "2", "3"]
    assert b"".join(p.body for p in parts) == content and all("authorization" not in p.headers for p in parts)
    assert len(hub.calls("POST", r"/info/lfs/complete_multipart/")) == 1

    assert _download(f"{USER}/anytune-datasets", data_path, tmp_path / "job") == content


@pytest.mark.parametrize("wrong", ["sends LFS files inline", "skips the LFS upload"])
def test_a_client_breaking_the_lfs_protocol_is_refused_and_nothing_runs(
    hub: FakeHub, train: Path, monkeypatch: pytest.MonkeyPatch, wrong: str
) -> None:
    """Were the adapter (or huggingface_hub) to get LFS wrong, the fake says no, in the Hub's words."""
    from huggingface_hub import _commit_api

    if wrong == "sends LFS files inline":
        fetch = _commit_api._fetch_upload_modes

        def regular_only(additions: list[Any], **kwargs: Any) -> None:
            fetch(additions=additions, **kwargs)
            for addition in additions:
                addition._upload_mode = "regular"

        monkeypatch.setattr(_commit_api, "_fetch_upload_modes", regular_only)
        said = "Your push was rejected because it contains binary files"
    else:
        monkeypatch.setattr(_commit_api, "_upload_files", lambda **kwargs: None)
        said = "an LFS pointer pointed to a file that does not exist"
    with pytest.raises(InvalidRequestError) as err:
        create(hub, train)
    assert said in str(err.value) and "anytune/wheels/" in str(err.value)
    assert not any(p.startswith("anytune/") for p in hub.repos[("dataset", f"{USER}/anytune-datasets")].files)
    assert hub.job_creates == []


def test_a_storage_failure_during_the_lfs_upload_is_an_anytune_error(hub: FakeHub, train: Path) -> None:
    # huggingface_hub raises it as RuntimeError("Error while uploading ...") from the HTTP error.
    hub.fail("PUT", r"^/__storage/", status=403, body={"error": "Request has expired"})
    with pytest.raises(PermissionDeniedError) as err:
        create(hub, train)
    _no_hub_exception_escapes(err.value)
    assert "anytune/wheels/" in str(err.value) and err.value.status_code == 403
    assert hub.job_creates == []


# -- lifecycle --------------------------------------------------------------------------------------------


def test_lifecycle_events_metrics_and_result(hub: FakeHub, train: Path, valid: Path, clock: FakeClock) -> None:
    job = create(hub, train, valid)
    jid = bare(job)
    output = job.record.output["hub_repo"]
    seen: list[Any] = []
    hub.start(jid)
    hub.log(
        jid,
        "[anytune] installing the trainer: anytune-0.1.0-py3-none-any.whl",
        "Resolved 60 packages",
        "[anytune] training 4 steps",
        metric_line(1, 2.0),
        metric_line(2, 1.5),
    )
    first = job.events()
    assert [e.kind for e in first] == ["status", "status", "log", "log", "log", "metric", "metric"]
    # Preempted after step 4, the job resumed from its step-2 checkpoint: steps 3 and 4 come again.
    hub.log(
        jid,
        metric_line(3, 1.4),
        metric_line(4, 1.3),
        "[anytune] resuming from checkpoint-2",
        metric_line(3, 1.2),
        metric_line(4, 1.0),
        result_line(output, "rev42"),
    )
    hub.finish(jid)
    record = job.wait(on_event=seen.append)
    assert record.status is S.SUCCEEDED and record.fine_tuned_model == output
    assert record.output["revision"] == "rev42" and record.trained_tokens == 1234 and record.step == 4
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    assert [e.status for e in seen if e.kind == "status"] == [S.QUEUED, S.RUNNING, S.SUCCEEDED]
    # What the adapter makes of a log that repeats steps: one point per step, in step order, the
    # resumed run's for a repeated step. The events stay the log as it was, every line once.
    assert [(p.step, p.train_loss) for p in job.metrics()] == [(1, 2.0), (2, 1.5), (3, 1.2), (4, 1.0)]
    assert [e.metric.step for e in job.events() if e.metric is not None] == [1, 2, 3, 4, 3, 4]
    assert job.events(after=first[-1].id)[0].metric.step == 3  # type: ignore[union-attr]
    result = job.result()
    assert (result.hub_repo, result.revision, result.trained_tokens) == (output, "rev42", 1234)
    assert result.final_metrics is not None and (result.final_metrics.step, result.final_metrics.train_loss) == (4, 1.0)
    # From another process: the reference is enough.
    again = FineTuneJob.get(job.ref, provider=provider(hub))
    assert again.status() is S.SUCCEEDED and again.result().revision == "rev42"


def test_log_stream_dropped_midway_loses_and_repeats_nothing(hub: FakeHub, train: Path) -> None:
    job = create(hub, train)
    jid = bare(job)
    hub.start(jid)
    hub.log(jid, *(f"line {i}" for i in range(10)))
    hub.fail("GET", r"/logs$", drop_after=4)
    events = job.events()
    logs = [e.message for e in events if e.kind == "log"]
    assert logs == [f"line {i}" for i in range(10)]
    assert len(hub.calls("GET", r"/logs$")) == 2
    # Following: new lines after a cursor, then a stream dropped again; each line exactly once.
    cursor = events[-1].id
    hub.log(jid, *(f"line {i}" for i in range(10, 15)))
    hub.fail("GET", r"/logs$", drop_after=2)
    more = job.events(after=cursor)
    assert [e.message for e in more] == [f"line {i}" for i in range(10, 15)]
    hub.finish(jid, "COMPLETED")
    hub.log(jid, result_line("alice/x"))
    streamed = list(FineTuneJob.get(job.ref, provider=provider(hub)).stream(after=more[-1].id))
    assert [e.kind for e in streamed] == ["log", "status"] and streamed[-1].status is S.SUCCEEDED


def test_a_completed_job_whose_log_replay_was_cut_is_read_again(hub: FakeHub, train: Path) -> None:
    job = create(hub, train)
    jid = bare(job)
    hub.start(jid)
    hub.log(jid, "a", "b", result_line("alice/out", "r1"))
    hub.finish(jid)
    # The server ends the first replay cleanly but early: no error, just lines missing.
    hub.fail("GET", r"/logs$", end_after=2)
    assert job.result().revision == "r1"
    replays = hub.calls("GET", r"/logs$")
    assert len(replays) == 2


def test_failed_job_reports_the_trainer_error_and_last_log_lines(hub: FakeHub, train: Path) -> None:
    job = create(hub, train)
    jid = bare(job)
    hub.start(jid)
    hub.log(
        jid,
        "Traceback (most recent call last):",
        '  File "train.py", line 1',
        "torch.OutOfMemoryError: CUDA out of memory",
        hf.ERROR_PREFIX + json.dumps({"message": "OutOfMemoryError: CUDA out of memory", "code": "oom"}),
    )
    hub.finish(jid, "ERROR", "Job failed with exit code: 1")
    record = job.wait()
    assert record.status is S.FAILED and record.raw_status == "ERROR"
    assert record.error is not None and record.error.code == "oom"
    assert "CUDA out of memory" in record.error.message and "Traceback" in record.error.message
    with pytest.raises(JobFailedError) as err:
        job.result()
    assert "CUDA out of memory" in str(err.value)
    final = job.events()[-1]
    assert final.status is S.FAILED and final.level == "error"


def test_job_that_fails_before_running_carries_the_hub_message(hub: FakeHub, train: Path) -> None:
    job = create(hub, train)
    hub.finish(bare(job), "ERROR", "Timeout exceeded while pulling the image")
    record = job.wait()
    assert record.status is S.FAILED and record.error is not None
    assert "Timeout exceeded" in record.error.message
    assert [e.kind for e in job.events()] == ["status", "status"]


def test_cancel(hub: FakeHub, train: Path) -> None:
    job = create(hub, train)
    hub.start(bare(job))
    record = job.cancel()
    assert record.status is S.CANCELLED and record.raw_status == "CANCELED"
    assert len(hub.calls("POST", r"/cancel$")) == 1
    assert job.cancel().status is S.CANCELLED  # finished: nothing more is sent
    assert len(hub.calls("POST", r"/cancel$")) == 1
    with pytest.raises(JobFailedError):
        job.result()


def test_deleted_job_is_terminal(hub: FakeHub, train: Path) -> None:
    job = create(hub, train)
    hub.finish(bare(job), "DELETED")
    record = job.wait()
    assert record.status is S.CANCELLED and record.error is not None and "deleted" in record.error.message


def test_list_shows_anytune_jobs_newest_first(hub: FakeHub, train: Path, clock: FakeClock) -> None:
    hf_provider = provider(hub)
    spec = JobSpec(base_model=BASE_MODEL, training_file=train)
    first = hf_provider.submit(spec, idempotency_key="k1")
    clock.advance(60)
    second = hf_provider.submit(spec, idempotency_key="k2")
    hub.jobs["foreign"] = Job("foreign", USER, {"flavor": "cpu-basic", "labels": {}}, {}, hub.now())
    assert [r.id for r in hf_provider.list()] == [second.id, first.id]


# -- faults -------------------------------------------------------------------------------------------


def test_reads_retry_429_and_5xx_honouring_retry_after(hub: FakeHub, train: Path, clock: FakeClock) -> None:
    job = create(hub, train)
    hub.fail("GET", r"^/api/jobs/alice/[^/]+$", status=429, headers={"Retry-After": "7"})
    hub.fail("GET", r"^/api/jobs/alice/[^/]+$", status=503)
    hub.fail("GET", r"^/api/jobs/alice/[^/]+$", exception=httpx2.ConnectError)
    assert job.refresh().status is S.QUEUED
    assert 7 in clock.sleeps


def test_persistent_5xx_becomes_service_unavailable(hub: FakeHub, train: Path) -> None:
    job = create(hub, train)
    hub.fail("GET", r"^/api/jobs/alice/[^/]+$", status=502, times=100)
    with pytest.raises(ServiceUnavailableError) as err:
        job.refresh()
    assert err.value.status_code == 502


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "after": True},
        {"exception": httpx2.ReadError, "after": True},
        {"exception": httpx2.RemoteProtocolError, "after": True},
        {"status": 503},
        {"status": 429, "headers": {"Retry-After": "3"}},
        {"exception": httpx2.ConnectError},
    ],
)
def test_create_faults_never_make_two_jobs(hub: FakeHub, train: Path, fault: dict[str, Any]) -> None:
    hub.fail("POST", r"^/api/jobs/alice$", **fault)
    job = create(hub, train)
    assert len(hub.jobs) == 1 and bare(job) in hub.jobs
    assert len(hub.job_creates) == (1 if fault.get("after") else 2)


# -- errors -------------------------------------------------------------------------------------------


def _no_hub_exception_escapes(exc: BaseException) -> None:
    assert isinstance(exc, AnytuneError)
    assert not type(exc).__module__.startswith(("huggingface_hub", "httpx"))


def test_bad_token_is_an_authentication_error(hub: FakeHub, train: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_WrongTokenWrongTokenWrongToken12")
    with pytest.raises(AuthenticationError) as err:
        create(hub, train)
    _no_hub_exception_escapes(err.value)
    assert "hf auth login" in str(err.value) and "WrongToken" not in str(err.value)


def test_no_token_at_all(hub: FakeHub, train: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Missing here is configuration (exit 2); a token the Hub rejects is authentication (exit 7).
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        create(hub, train)
    assert hub.requests == []


def test_no_payment_method_is_a_quota_error(hub: FakeHub, train: Path) -> None:
    hub.payment_method = False
    with pytest.raises(QuotaExceededError) as err:
        create(hub, train)
    assert "payment method" in str(err.value) and err.value.status_code == 402
    assert len(hub.job_creates) == 1


def test_unknown_flavor_names_the_field_and_the_known_flavors(hub: FakeHub, train: Path) -> None:
    with pytest.raises(InvalidRequestError) as err:
        create(hub, train, hf={"flavor": "a10g-huge"})
    assert "hf.flavor 'a10g-huge'" in str(err.value) and "a10g-small" in str(err.value)
    _no_hub_exception_escapes(err.value)


@pytest.mark.parametrize(("model", "gated"), [("nobody/missing", False), ("meta/gated", True)])
def test_missing_or_gated_base_model_fails_before_any_upload(
    hub: FakeHub, train: Path, model: str, gated: bool
) -> None:
    if gated:
        hub.add_repo("model", model, {"config.json": b"{}"}, gated=True)
    # Checked before the job is recorded: a missing id is a setting to fix, a gated one needs access.
    with pytest.raises(ModelNotAvailableError if gated else ConfigError) as err:
        create(hub, train, base_model=model)
    assert model in str(err.value) and ("gated" in str(err.value)) is gated
    assert gated or ("no such model" in str(err.value) and "base_model" in str(err.value))
    assert hub.calls("POST", r"/commit/") == [] and hub.job_creates == []
    assert FineTuneJob.list() == []


def test_unknown_job_is_job_not_found(hub: FakeHub) -> None:
    with pytest.raises(JobNotFoundError):
        FineTuneJob.get("huggingface:alice/doesnotexist", provider=provider(hub))
    with pytest.raises(JobNotFoundError):
        FineTuneJob.get("huggingface:a/b/c", provider=provider(hub))


def test_spec_checks_before_anything_is_sent(hub: FakeHub, train: Path, tmp_path: Path) -> None:
    with pytest.raises(NotSupportedError, match="base_model"):
        create(hub, train, base_model=str(tmp_path))
    with pytest.raises(NotSupportedError, match=r"local\.device"):
        create(hub, train, local={"device": "mps"})
    with pytest.raises(ConfigError, match=r"hf\.timeout"):
        create(hub, train, hf={"timeout": "two hours"})
    with pytest.raises(ConfigError, match=r"hf\.output_repo"):
        create(hub, train, hf={"output_repo": "a/b/c"})
    assert hub.requests == []


# -- configuration and secrets ------------------------------------------------------------------------


def _auth_headers(hub: FakeHub) -> set[str]:
    """The credentials sent to the Hub's API; signed storage URLs carry none (the fake refuses one there)."""
    hub_calls = [r for r in hub.requests if r.path != "/api/agent-harnesses" and not r.path.startswith("/__storage/")]
    return {r.headers.get("authorization", "") for r in hub_calls}


@pytest.mark.parametrize("source", ["settings", "env", "cached-login"])
def test_token_sources(hub: FakeHub, train: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    from huggingface_hub import constants

    hub.tokens = {"hf_OtherTokenOtherTokenOtherToken9": USER}
    if source == "settings":
        monkeypatch.setenv("ANYTUNE_HUGGINGFACE_TOKEN", "hf_OtherTokenOtherTokenOtherToken9")
    elif source == "env":
        monkeypatch.setenv("HF_TOKEN", "hf_OtherTokenOtherTokenOtherToken9")
    else:
        monkeypatch.delenv("HF_TOKEN")
        Path(constants.HF_TOKEN_PATH).write_text("hf_OtherTokenOtherTokenOtherToken9\n")
    job = create(hub, train)
    assert _auth_headers(hub) == {"Bearer hf_OtherTokenOtherTokenOtherToken9"}
    assert hub.jobs[bare(job)].secrets == {"HF_TOKEN": "hf_OtherTokenOtherTokenOtherToken9"}


def test_hf_endpoint_is_honoured(hub: FakeHub, train: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.internal.example")
    create(hub, train)
    hosts = {r.url.split("/")[2] for r in hub.requests if r.path != "/api/agent-harnesses"}
    assert hosts == {"hub.internal.example"}
    assert hub.job_creates[-1].json()["environment"]["HF_ENDPOINT"] == "https://hub.internal.example"


def test_token_never_reaches_logs_errors_events_store_or_job_env(
    hub: FakeHub,
    train: Path,
    anytune_home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    hub.fail("GET", r"^/api/jobs/alice/[^/]+$", status=503)
    job = create(hub, train)
    jid = bare(job)
    hub.start(jid)
    hub.log(jid, f"oops, printed {TOKEN} by mistake", metric_line(1, 1.0))
    hub.finish(jid, "ERROR", "exit code 1")
    record = job.wait()
    with pytest.raises(JobFailedError) as err:
        job.result()
    texts = [
        caplog.text,
        str(err.value),
        repr(err.value),
        record.model_dump_json(),
        *(e.model_dump_json() for e in job.events()),
    ]
    store_bytes = b"".join(p.read_bytes() for p in anytune_home.glob("jobs.db*"))
    body = hub.job_creates[-1].json()
    assert all(TOKEN not in t for t in texts)
    assert TOKEN.encode() not in store_bytes
    assert TOKEN not in json.dumps({k: v for k, v in body.items() if k != "secrets"})
    for r in hub.requests:
        rest = {k: v for k, v in r.headers.items() if k != "authorization"}
        assert TOKEN not in json.dumps(rest) and TOKEN not in r.url
        if not (r.method == "POST" and r.path == f"/api/jobs/{USER}"):
            assert TOKEN.encode() not in r.body


def test_a_hub_error_echoing_the_token_is_scrubbed_down_the_whole_chain(hub: FakeHub, train: Path) -> None:
    # The Hub's words travel in the chained huggingface_hub exception, which a traceback prints.
    hub.fail("POST", r"^/api/jobs/alice$", status=400, body={"error": f"no such hardware for {TOKEN}"})
    with pytest.raises(InvalidRequestError) as err:
        create(hub, train)
    chain: list[BaseException] = []
    current: BaseException | None = err.value
    while current is not None:
        chain.append(current)
        current = current.__cause__ or current.__context__
    assert len(chain) > 1 and type(chain[1]).__module__.startswith("huggingface_hub")
    printed = "".join(traceback.format_exception(type(err.value), err.value, err.value.__traceback__))
    assert "no such hardware" in printed and TOKEN not in printed


def test_deleted_job_whose_log_is_gone_still_has_its_events(hub: FakeHub, train: Path) -> None:
    job = create(hub, train)
    hub.start(bare(job))
    hub.finish(bare(job), "DELETED")
    hub.fail("GET", r"/logs$", status=404, body={"error": "Job not found"})
    assert [e.status for e in job.events()] == [S.QUEUED, S.RUNNING, S.CANCELLED]


def test_sample_dry_run_is_offline(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    sample = Path(__file__).resolve().parents[2] / "samples" / "huggingface_jobs.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANYTUNE_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(sample), "--dry-run", "--namespace", "acme", "--flavor", "l4x1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    job = next(r["body"] for r in plan["requests"] if r["operation"] == "HfApi.run_job")
    assert job["flavor"] == "l4x1" and job["namespace"] == "acme" and job["secrets"] == ["HF_TOKEN"]
