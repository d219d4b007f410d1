"""``anytune serve`` through the unmodified ``openai`` SDK (in process: starlette's TestClient is an
``httpx2.Client`` the SDK sends through), every answer held to OpenAI's published schemas (closed:
an answer carries only the fields they define).

Jobs run on the fake provider here (a profile that runs its timeline 1000x faster); the local
end-to-end run (a tiny model trained, then chatted with, also through a real uvicorn server) is in
``tests/local/test_serve_local.py``.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from starlette.testclient import TestClient  # noqa: E402

from anytune._serve import KeyRing, ServeOptions, ServeState, create_app, keys_from  # noqa: E402
from anytune.errors import ConfigError  # noqa: E402
from tests.conftest import chat_example, write_jsonl  # noqa: E402
from tests.providers.openai_fake import _published_status, answer_problems  # noqa: E402

KEY_A = "key-alpha-0123456789abcdef"
KEY_B = "key-bravo-0123456789abcdef"
PROFILE = '[profiles.srv]\nprovider = "fake"\nsettings = { speed = 1000 }\n'


@pytest.fixture
def app(workdir: Path, anytune_home: Path) -> Iterator[Any]:
    (workdir / "anytune.toml").write_text(PROFILE)
    state = ServeState(anytune_home / "serve")
    yield create_app(
        KeyRing([KEY_A, KEY_B]), state, ServeOptions(provider="fake", profile="srv", max_upload_bytes=4096)
    )
    state.close()


def sdk(app: Any, key: str = KEY_A) -> Any:
    return openai.OpenAI(api_key=key, base_url="http://testserver/v1", http_client=TestClient(app), max_retries=0)


def raw(app: Any, key: str | None = KEY_A) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {key}"} if key else {})


def published(schema: str, payload: Any) -> None:
    problems = answer_problems("openai", schema, _published_status(payload))
    assert not problems, problems


def wait_for(client: Any, job_id: str, status: str, timeout: float = 30) -> Any:
    """The job once it reaches ``status`` (failing the test if it ends otherwise or takes too long)."""
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status != status:
        assert job.status not in ("succeeded", "failed", "cancelled"), job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


@pytest.fixture
def train(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(12)])


def upload(app: Any, path: Path, key: str = KEY_A) -> Any:
    with path.open("rb") as f:
        return sdk(app, key).files.create(file=f, purpose="fine-tune")


# -- files ------------------------------------------------------------------------------------


def test_files_upload_list_retrieve_content_delete(app: Any, train: Path) -> None:
    client = sdk(app)
    made = upload(app, train)
    assert made.filename == "train.jsonl" and made.bytes == train.stat().st_size and made.purpose == "fine-tune"
    assert client.files.retrieve(made.id).id == made.id
    assert client.files.content(made.id).read() == train.read_bytes()
    second = upload(app, train)
    assert [f.id for f in client.files.list()] == [second.id, made.id]  # newest first
    for path, schema in (("/v1/files", "ListFilesResponse"), (f"/v1/files/{made.id}", "OpenAIFile")):
        answer = raw(app).get(path)
        assert answer.status_code == 200
        published(schema, answer.json())
    deleted = client.files.delete(made.id)
    assert deleted.deleted is True
    published("DeleteFileResponse", raw(app).delete(f"/v1/files/{second.id}").json())
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)
    assert client.files.list().data == []


def test_an_oversized_upload_is_refused_and_nothing_is_kept(app: Any, tmp_path: Path, anytune_home: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps(chat_example(0)) * 200)  # over the test server's 4096 bytes
    with pytest.raises(openai.APIStatusError) as info:
        upload(app, big)
    assert info.value.status_code == 413 and "larger than this server accepts" in str(info.value)
    assert sdk(app).files.list().data == []
    assert not any((anytune_home / "serve" / "files").iterdir())


def test_a_chunked_upload_over_the_limit_is_cut_off_as_it_comes(app: Any, anytune_home: Path) -> None:
    """A body without Content-Length (chunked) is read only up to the limit: the app is driven at the
    ASGI level and counts the chunks it pulls (starlette would otherwise spool a file part of any
    size to disk before anything looked at its size)."""
    import asyncio

    chunks = [
        b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n',
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n',
        *[b"x" * (1 << 20)] * 200,  # 200 MiB offered to a server that takes 4096 bytes
        b"\r\n--xyz--\r\n",
    ]
    pulled = [0]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        i = pulled[0]
        pulled[0] += 1
        return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/files",
        "raw_path": b"/v1/files",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {KEY_A}".encode()),
            (b"content-type", b"multipart/form-data; boundary=xyz"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert pulled[0] < 5  # stopped at the limit
    assert not any((anytune_home / "serve" / "files").iterdir())


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("x" * 300 + ".jsonl", "x" * 100 + ".jsonl"),
        ("训练.jsonl", "upload.jsonl"),
        ("é data.csv", "data.csv"),
        ("../../etc/passwd", "passwd"),
        ("..", "upload"),
        ("a\\b\x00c.jsonl", "b_00c.jsonl"),  # the NUL arrives percent-encoded
    ],
)
def test_upload_names_are_kept_safe_short_and_with_their_suffix(app: Any, given: str, stored: str) -> None:
    answer = raw(app).post("/v1/files", files={"file": (given, b"{}\n")}, data={"purpose": "fine-tune"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["filename"] == stored


def test_a_file_of_another_purpose_or_without_one_is_refused(app: Any, train: Path) -> None:
    with train.open("rb") as f:
        answer = raw(app).post("/v1/files", files={"file": f}, data={"purpose": "assistants"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "purpose"
    with train.open("rb") as f:
        answer = raw(app).post("/v1/files", files={"file": f})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "purpose"


# -- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef", KEY_A + "x", ""])
def test_every_route_needs_a_key_and_the_answer_never_echoes_it(app: Any, key: str | None) -> None:
    for method, path in (
        ("GET", "/v1/files"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-x/events"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ):
        answer = raw(app, key).request(method, path, json={})
        assert answer.status_code == 401, (method, path)
        assert answer.json()["error"]["code"] == "invalid_api_key"
        if key:
            assert key not in answer.text
    with pytest.raises(openai.AuthenticationError):
        sdk(app, "wrong-key-0123456789abcdef").files.list()


def test_each_key_sees_only_its_own_files_jobs_and_models(app: Any, train: Path) -> None:
    mine = upload(app, train)
    job = sdk(app).fine_tuning.jobs.create(model="gpt-test", training_file=mine.id)
    other = sdk(app, KEY_B)
    assert other.files.list().data == [] and other.fine_tuning.jobs.list().data == []
    for call in (
        lambda: other.files.retrieve(mine.id),
        lambda: other.files.content(mine.id),
        lambda: other.files.delete(mine.id),
        lambda: other.fine_tuning.jobs.retrieve(job.id),
        lambda: other.fine_tuning.jobs.cancel(job.id),
        lambda: other.fine_tuning.jobs.list_events(job.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    # Another key's file cannot be trained on either.
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.create(model="gpt-test", training_file=mine.id)
    assert sdk(app).files.retrieve(mine.id).id == mine.id


def test_keys_are_required_long_and_kept_only_as_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="needs at least one API key"):
        keys_from({})
    with pytest.raises(ConfigError, match="shorter than"):
        keys_from({"ANYTUNE_SERVE_API_KEYS": "short"})
    keys = keys_from({"ANYTUNE_SERVE_API_KEYS": f"{KEY_A}, {KEY_B},"}, [KEY_A])
    assert keys == [KEY_A, KEY_B]
    ring = KeyRing(keys)
    assert KEY_A not in repr(ring) and KEY_A not in repr(vars(ring))
    assert ring.owner(KEY_A) != ring.owner(KEY_B) and ring.owner("nope") is None and ring.owner(None) is None


# -- jobs -------------------------------------------------------------------------------------


def test_a_job_is_created_followed_and_listed_as_openai_describes_it(app: Any, train: Path) -> None:
    client = sdk(app)
    training = upload(app, train)
    job = client.fine_tuning.jobs.create(
        model="gpt-test",
        training_file=training.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        metadata={"team": "search"},
        seed=7,
    )
    assert job.model == "gpt-test" and job.training_file == training.id and job.seed == 7
    published("FineTuningJob", raw(app).get(f"/v1/fine_tuning/jobs/{job.id}").json())
    done = wait_for(client, job.id, "succeeded")
    assert done.fine_tuned_model == f"ft:{job.id}"
    assert done.hyperparameters.n_epochs == 2
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events and events[0].created_at >= events[-1].created_at  # newest first
    published("ListFineTuningJobEventsResponse", raw(app).get(f"/v1/fine_tuning/jobs/{job.id}/events").json())
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    rest = client.fine_tuning.jobs.list_events(job.id, after=page.data[-1].id, limit=100)
    assert [e.id for e in page.data + rest.data] == [e.id for e in events]
    published("ListFineTuningJobCheckpointsResponse", raw(app).get(f"/v1/fine_tuning/jobs/{job.id}/checkpoints").json())
    listed = client.fine_tuning.jobs.list(metadata={"team": "search"})
    assert [j.id for j in listed.data] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "other"}).data == []
    published("ListPaginatedFineTuningJobsResponse", raw(app).get("/v1/fine_tuning/jobs").json())
    assert [m.id for m in client.models.list().data] == [f"ft:{job.id}"]  # not its base: a fake job has no weights
    assert client.models.retrieve(f"ft:{job.id}").id == f"ft:{job.id}"
    for base in ("gpt-test", "openai:gpt-test"):  # a fake job's base has no weights here to answer with
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(base)


def test_cancel_pause_and_resume_answer_with_the_job(app: Any, train: Path, workdir: Path) -> None:
    (workdir / "anytune.toml").write_text('[profiles.srv]\nprovider = "fake"\nsettings = { speed = 0.01 }\n')
    client = sdk(app)
    job = client.fine_tuning.jobs.create(model="gpt-test", training_file=upload(app, train).id)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.id == job.id and cancelled.status == "cancelled"
    published("FineTuningJob", raw(app).get(f"/v1/fine_tuning/jobs/{job.id}").json())


def test_the_same_idempotency_key_never_makes_a_second_job_even_at_once(app: Any, train: Path) -> None:
    client = sdk(app)
    training = upload(app, train).id
    first = client.fine_tuning.jobs.create(
        model="gpt-test", training_file=training, extra_headers={"Idempotency-Key": "nightly-42"}
    )
    again = client.fine_tuning.jobs.create(
        model="gpt-test", training_file=training, extra_headers={"Idempotency-Key": "nightly-42"}
    )
    assert again.id == first.id
    by_metadata = [
        client.fine_tuning.jobs.create(model="gpt-test", training_file=training, metadata={"idempotency_key": "m-1"})
        for _ in range(2)
    ]
    assert by_metadata[0].id == by_metadata[1].id != first.id
    # Several clients at once with one key: one job.
    ids: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            made = sdk(app).fine_tuning.jobs.create(
                model="gpt-test", training_file=training, extra_headers={"Idempotency-Key": "burst"}
            )
            ids.append(made.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ids) == 6 and len(set(ids)) == 1
    assert len(client.fine_tuning.jobs.list(limit=100).data) == 3


def test_concurrent_creates_from_two_keys_lose_nothing_and_leak_nothing(app: Any, train: Path) -> None:
    files = {KEY_A: upload(app, train, KEY_A).id, KEY_B: upload(app, train, KEY_B).id}
    made: dict[str, list[str]] = {KEY_A: [], KEY_B: []}
    lock = threading.Lock()

    def create(key: str, n: int) -> None:
        job = sdk(app, key).fine_tuning.jobs.create(model="gpt-test", training_file=files[key], suffix=f"n{n}")
        with lock:
            made[key].append(job.id)

    threads = [threading.Thread(target=create, args=(k, n)) for n in range(4) for k in (KEY_A, KEY_B)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in (KEY_A, KEY_B):
        listed = {j.id for j in sdk(app, key).fine_tuning.jobs.list(limit=100).data}
        assert listed == set(made[key]) and len(listed) == 4


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"training_file": "file-x"}, 400, "model"),
        ({"model": "gpt-test"}, 400, "training_file"),
        ({"model": "gpt-test", "training_file": "file-nope"}, 404, "training_file"),
        ({"model": "gpt-test", "training_file": "FILE", "metadata": {"a": 1}}, 400, "metadata"),
        ({"model": "gpt-test", "training_file": "FILE", "method": {"type": "reinforcement"}}, 400, "method.type"),
        ({"model": "gpt-test", "training_file": "FILE", "method": "supervised"}, 400, "method"),
        (
            {"model": "gpt-test", "training_file": "FILE", "method": {"type": "supervised", "supervised": "x"}},
            400,
            "method.supervised",
        ),
        ({"model": "gpt-test", "training_file": "FILE", "hyperparameters": "x"}, 400, "hyperparameters"),
        ({"model": "gpt-test", "training_file": "FILE", "hyperparameters": {"bogus": 1}}, 400, "hyperparameters.bogus"),
        (
            {"model": "gpt-test", "training_file": "FILE", "hyperparameters": {"n_epochs": "3"}},
            400,
            "hyperparameters.n_epochs",
        ),
        (
            {"model": "gpt-test", "training_file": "FILE", "hyperparameters": {"n_epochs": True}},
            400,
            "hyperparameters.n_epochs",
        ),
        ({"model": "gpt-test", "training_file": "FILE", "seed": True}, 400, "seed"),
        (
            {"model": "gpt-test", "training_file": "FILE", "metadata": {f"k{i}": "v" for i in range(17)}},
            400,
            "metadata",
        ),
        ({"model": "gpt-test", "training_file": "FILE", "metadata": {"k": "v" * 513}}, 400, "metadata"),
        ({"model": "local:/etc", "training_file": "FILE"}, 400, "model"),
        ({"model": "local:../../", "training_file": "FILE"}, 400, "model"),
    ],
)
def test_bad_create_requests_are_refused_naming_the_field_and_make_no_job(
    app: Any, train: Path, body: dict[str, Any], status: int, param: str | None
) -> None:
    file_id = upload(app, train).id
    body = {k: (file_id if v == "FILE" else v) for k, v in body.items()}
    answer = raw(app).post("/v1/fine_tuning/jobs", json=body)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and answer.json()["error"]["param"] == param
    assert raw(app).get("/v1/fine_tuning/jobs").json()["data"] == []


def test_deeply_nested_json_is_a_400_not_a_crash(app: Any) -> None:
    for body in (b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[" * 100000):
        for path in ("/v1/fine_tuning/jobs", "/v1/chat/completions"):
            answer = raw(app).post(path, content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400, (path, answer.text[:200])


def test_malformed_json_is_a_400_in_openais_shape(app: Any) -> None:
    answer = raw(app).post(
        "/v1/fine_tuning/jobs", content=b'{"model": "x",', headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]["message"]
    answer = raw(app).post("/v1/chat/completions", content=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400


def test_bad_training_data_names_the_upload_line_and_field_and_makes_no_job(
    app: Any, tmp_path: Path, anytune_home: Path
) -> None:
    rows: list[Any] = [chat_example(i) for i in range(12)]
    rows[4] = {"messages": [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]}
    bad = write_jsonl(tmp_path / "mine.jsonl", rows)
    file_id = upload(app, bad).id
    with pytest.raises(openai.BadRequestError) as info:
        sdk(app).fine_tuning.jobs.create(model="gpt-test", training_file=file_id)
    message = str(info.value)
    assert "mine.jsonl:5:" in message and f"mine.jsonl is {file_id}" in message and "role" in message
    assert str(anytune_home) not in message  # the stored copy's path is not shown
    assert sdk(app).fine_tuning.jobs.list().data == []


def test_an_unknown_model_is_a_404_from_chat(app: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk(app).chat.completions.create(model="ft:ftjob-0123", messages=[{"role": "user", "content": "hi"}])
    assert "does not exist" in str(info.value)


def test_a_hosted_result_is_not_served_here(app: Any, train: Path) -> None:
    client = sdk(app)
    job = client.fine_tuning.jobs.create(model="gpt-test", training_file=upload(app, train).id)
    wait_for(client, job.id, "succeeded")
    with pytest.raises(openai.BadRequestError, match="call it through that service"):
        client.chat.completions.create(model=f"ft:{job.id}", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "ft:ftjob-1", "messages": []}, "messages"),
        ({"model": "ft:ftjob-1", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "ft:ftjob-1", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": "ft:ftjob-1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "ft:ftjob-1", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, "temperature"),
        ({"model": "ft:ftjob-1", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "ft:ftjob-1", "messages": [{"role": "user", "content": "x"}], "seed": 10**40}, "seed"),
        ({"model": "ft:ftjob-1", "messages": [{"role": "user", "content": "x"}], "stream": "no"}, "stream"),
    ],
)
def test_bad_chat_requests_name_the_field(app: Any, body: dict[str, Any], param: str) -> None:
    answer = raw(app).post("/v1/chat/completions", json=body)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param


# -- limits and reliability -------------------------------------------------------------------


def test_a_key_over_its_request_rate_gets_429_with_retry_after(workdir: Path, anytune_home: Path) -> None:
    (workdir / "anytune.toml").write_text(PROFILE)
    now = [0.0]
    state = ServeState(anytune_home / "serve")
    app = create_app(
        KeyRing([KEY_A, KEY_B]),
        state,
        ServeOptions(provider="fake", profile="srv", requests_per_minute=60, burst=2, clock=lambda: now[0]),
    )
    client = raw(app)
    assert [client.get("/v1/files").status_code for _ in range(2)] == [200, 200]
    limited = client.get("/v1/files")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert raw(app, KEY_B).get("/v1/files").status_code == 200  # another key has its own budget
    now[0] += 1.0
    assert client.get("/v1/files").status_code == 200
    state.close()


def test_a_restarted_server_keeps_files_and_jobs(app: Any, train: Path, anytune_home: Path) -> None:
    training = upload(app, train)
    job = sdk(app).fine_tuning.jobs.create(model="gpt-test", training_file=training.id)
    state = ServeState(anytune_home / "serve")  # a new process would open the same folder
    again = create_app(KeyRing([KEY_A]), state, ServeOptions(provider="fake", profile="srv"))
    assert sdk(again).files.retrieve(training.id).filename == "train.jsonl"
    assert sdk(again).fine_tuning.jobs.retrieve(job.id).id == job.id
    state.close()


def test_no_key_reaches_a_response_or_the_log(
    app: Any, train: Path, caplog: pytest.LogCaptureFixture, anytune_home: Path
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    client = sdk(app)
    job = client.fine_tuning.jobs.create(model="gpt-test", training_file=upload(app, train).id)
    texts = [caplog.text]
    for path in ("/v1/files", "/v1/fine_tuning/jobs", f"/v1/fine_tuning/jobs/{job.id}/events", "/v1/models"):
        texts.append(raw(app).get(path).text)
    texts += [p.read_bytes().decode("utf-8", "replace") for p in anytune_home.rglob("*") if p.is_file()]
    for text in texts:
        assert KEY_A not in text and KEY_B not in text


def test_the_cli_refuses_to_serve_without_keys_and_never_prints_configured_ones(
    capsys: pytest.CaptureFixture[str], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.clitools import run_cli

    monkeypatch.delenv("ANYTUNE_SERVE_API_KEYS", raising=False)
    done = run_cli(capsys, "serve")
    assert done.code == 2 and "needs at least one API key" in done.err and "Traceback" not in done.err
    (workdir / "anytune.toml").write_text(f'[serve]\napi_keys = ["{KEY_A}"]\n')
    shown = run_cli(capsys, "config", "show", "--json")
    assert KEY_A not in shown.out + shown.err

    started: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append((app, kw)))
    done = run_cli(capsys, "serve", "--port", "8123")
    assert done.code == 0, done.err
    ((app, options),) = started
    assert options["host"] == "127.0.0.1" and options["port"] == 8123  # loopback unless told otherwise
    assert raw(app, KEY_A).get("/v1/files").status_code == 200  # the configured key is accepted
    assert KEY_A not in done.out + done.err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--engine", "tgi"), "choose auto, transformers or vllm"),
        (("--engine", "vllm"), "anytune[vllm]"),  # vLLM is not installed here
        (("--onnx", "."), "not an ONNX Runtime GenAI export"),
        (("--vllm-memory", "2"), "--vllm-memory"),
    ],
)
def test_the_cli_refuses_a_bad_engine_or_export_before_serving(
    args: tuple[str, ...], needle: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.clitools import run_cli

    if args[:2] == ("--engine", "vllm") and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    monkeypatch.setenv("ANYTUNE_SERVE_API_KEYS", KEY_A)
    started: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append(app))
    done = run_cli(capsys, "serve", *args)
    assert done.code == 2 and needle in done.err and "Traceback" not in done.err
    assert not started


@pytest.mark.parametrize(
    "pieces",
    [
        ["  he", "llo ", " wor", "ld  \n"],
        ["\ufffd"],
        ["a", "\ufffd", " b"],
        ["", " ", "x"],
        ["ab\ufffd"],
        ["x", " \n "],
    ],
)
def test_streamed_pieces_join_to_the_whole_answer(pieces: list[str]) -> None:
    from anytune._serve.chat import _as_answer_text

    whole = "".join(pieces).rstrip("\ufffd").strip()  # what answer_text makes of the same text
    assert "".join(_as_answer_text(iter(pieces))) == whole


def test_a_file_is_deleted_once_and_not_while_a_running_job_uses_it(app: Any, train: Path, workdir: Path) -> None:
    client = sdk(app)
    spare = upload(app, train).id
    codes: list[int] = []

    def delete() -> None:
        codes.append(raw(app).delete(f"/v1/files/{spare}").status_code)

    threads = [threading.Thread(target=delete) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 404, 404, 404, 404, 404]
    (workdir / "anytune.toml").write_text('[profiles.srv]\nprovider = "fake"\nsettings = { speed = 0.001 }\n')
    used = upload(app, train).id
    job = client.fine_tuning.jobs.create(model="gpt-test", training_file=used)
    with pytest.raises(openai.ConflictError, match=job.id):
        client.files.delete(used)
    client.fine_tuning.jobs.cancel(job.id)
    assert client.files.delete(used).deleted is True  # once the job has ended


def test_no_path_of_the_server_reaches_an_error(app: Any, tmp_path: Path, anytune_home: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text('prompt,completion\n"unterminated,x\n')
    file_id = upload(app, bad).id
    answer = raw(app).post("/v1/fine_tuning/jobs", json={"model": "gpt-test", "training_file": file_id})
    assert answer.status_code == 400
    text = answer.text
    assert str(anytune_home) not in text and str(Path.cwd()) not in text and "bad.csv" in text


def test_a_checkpoint_that_does_not_exist_is_no_model(app: Any, train: Path) -> None:
    client = sdk(app)
    job = client.fine_tuning.jobs.create(model="gpt-test", training_file=upload(app, train).id)
    wait_for(client, job.id, "succeeded")
    with pytest.raises(openai.NotFoundError, match="no checkpoint at step 99999"):
        client.models.retrieve(f"ft:{job.id}:ckpt-step-99999")


def test_a_throttled_provider_is_a_429_with_its_retry_after(
    app: Any, train: Path, monkeypatch: pytest.MonkeyPatch, anytune_home: Path
) -> None:
    from anytune import FineTuneJob
    from anytune.errors import RateLimitError

    def throttled(*args: Any, **kwargs: Any) -> Any:
        raise RateLimitError(f"slow down (see {anytune_home}/x)", retry_after=7, provider="fake")

    monkeypatch.setattr(FineTuneJob, "create", throttled)
    answer = raw(app).post("/v1/fine_tuning/jobs", json={"model": "gpt-test", "training_file": upload(app, train).id})
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "8"
    assert str(anytune_home) not in answer.text
