"""``anytune serve`` end to end on the local provider, through the unmodified ``openai`` SDK: upload,
create a LoRA job on a tiny model built here, follow its events, list checkpoints, then chat with
the fine-tuned model (whole and streamed, and with a checkpoint), in process and through a real
uvicorn server on 127.0.0.1 with the async SDK."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")
pytest.importorskip("peft")
openai = pytest.importorskip("openai")

from starlette.testclient import TestClient  # noqa: E402

from anytune._serve import KeyRing, ServeOptions, ServeState, create_app  # noqa: E402
from tests.conftest import chat_example, write_jsonl  # noqa: E402
from tests.providers.openai_fake import _published_status, answer_problems  # noqa: E402

KEY = "local-serve-key-0123456789"
PROFILE = """[profiles.loc]
provider = "local"
[profiles.loc.spec]
hyperparameters = { max_steps = 4, batch_size = 4, learning_rate = 1e-2, max_length = 64, seed = 0 }
lora = { r = 4, alpha = 8, dropout = 0.0 }
local = { device = "cpu", logging_steps = 1, save_steps = 2 }
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from anytune.local_backend.tiny import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("serve-model") / "tiny", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2
    )


@pytest.fixture
def app(workdir: Path, anytune_home: Path, tiny: Path) -> Iterator[Any]:
    (workdir / "anytune.toml").write_text(PROFILE)
    state = ServeState(anytune_home / "serve")
    options = ServeOptions(provider="local", profile="loc", model_dirs=(tiny.parent.resolve(),))
    yield create_app(KeyRing([KEY]), state, options)
    state.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_upload_train_follow_and_chat_through_the_openai_sdk(app: Any, tiny: Path, tmp_path: Path) -> None:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    client = openai.OpenAI(api_key=KEY, base_url="http://testserver/v1", http_client=TestClient(app), max_retries=0)
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(24)])
    with train.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=f"local:{tiny}", training_file=uploaded.id)
    assert job.model == f"local:{tiny}"
    deadline = time.monotonic() + 300
    while (current := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, current
        time.sleep(0.5)
    assert current.status == "succeeded", current.error
    assert current.fine_tuned_model == f"ft:{job.id}" and str(tiny) not in current.model_dump_json().replace(
        f"local:{tiny}", ""
    )  # the adapter's folder is not told
    events = client.fine_tuning.jobs.list_events(job.id, limit=200).data
    assert any(e.type == "metrics" for e in events)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] and checkpoints[0].step_number >= checkpoints[-1].step_number
    raw = TestClient(app, headers={"Authorization": f"Bearer {KEY}"})
    for path, schema in (
        (f"/v1/fine_tuning/jobs/{job.id}", "FineTuningJob"),
        (f"/v1/fine_tuning/jobs/{job.id}/events", "ListFineTuningJobEventsResponse"),
        (f"/v1/fine_tuning/jobs/{job.id}/checkpoints", "ListFineTuningJobCheckpointsResponse"),
    ):
        problems = answer_problems("openai", schema, _published_status(raw.get(path).json()))
        assert not problems, problems

    messages = [{"role": "user", "content": chat_example(0)["messages"][-2]["content"]}]
    whole = raw.post(
        "/v1/chat/completions", json={"model": f"ft:{job.id}", "messages": messages, "max_tokens": 8, "temperature": 0}
    )
    answer = ChatCompletion.model_validate(whole.json())
    assert answer.choices[0].message.content and answer.usage is not None and answer.usage.completion_tokens <= 8
    streamed = client.chat.completions.create(
        model=f"ft:{job.id}", messages=messages, max_tokens=8, temperature=0, stream=True
    )
    chunks = list(streamed)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == answer.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    step = checkpoints[-1].step_number
    early = client.chat.completions.create(
        model=f"ft:{job.id}:ckpt-step-{step}", messages=messages, max_tokens=4, temperature=0
    )
    assert early.model == f"ft:{job.id}:ckpt-step-{step}"

    # The same server behind uvicorn on 127.0.0.1, called by the async SDK (streaming too).
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)

        async def call() -> tuple[list[str], str]:
            aclient = openai.AsyncOpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
            jobs = [j.id async for j in aclient.fine_tuning.jobs.list()]
            stream = await aclient.chat.completions.create(
                model=f"ft:{job.id}", messages=messages, max_tokens=8, temperature=0, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            await aclient.close()
            return jobs, text

        jobs, text = asyncio.run(call())
        assert jobs == [job.id] and text == answer.choices[0].message.content
    finally:
        server.should_exit = True
        thread.join(timeout=10)
