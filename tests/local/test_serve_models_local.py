"""``anytune serve``'s chat route beyond fine-tuned adapters in transformers: the base model a key's
job was trained from (answered by that job's loaded model with the adapter off), and ONNX Runtime
GenAI exports (``--onnx``), whole and streamed, each checked against an independent reference."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from starlette.testclient import TestClient  # noqa: E402

from anytune import FineTuneJob  # noqa: E402
from anytune._serve import KeyRing, ServeOptions, ServeState, create_app  # noqa: E402
from anytune._serve.state import JobRow  # noqa: E402
from tests.local.test_export import _succeeded_run, greedy, make_adapter, onnx_needed, peft_model  # noqa: E402

KEY = "serve-models-key-0123456789"
OTHER = "serve-models-other-key-987654"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from anytune.local_backend.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("serve-models")
    base = build_tiny_model(root / "base", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    return base, make_adapter(base, root / "adapter", seed=11)


def _greedy(base: Path, adapter: Path | None, n: int) -> str:
    """Plain transformers (+ peft) greedy decoding of QUESTION: the reference."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model: Any = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    ids = tok(
        tok.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True),
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return str(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)).strip()


@contextlib.contextmanager
def _serving(anytune_home: Path, job_ref: str, base: Path, **options: Any) -> Iterator[tuple[TestClient, str]]:
    state = ServeState(anytune_home / "serve")
    owner = KeyRing([KEY]).owner(KEY)
    assert owner is not None
    row = JobRow("ftjob-0123456789abcdef", owner, job_ref, "k", {"model": f"local:{base}"}, 1_700_000_000)
    state.add_job(row)
    app = create_app(KeyRing([KEY, OTHER]), state, ServeOptions(provider="local", **options))
    try:
        yield TestClient(app, headers={"Authorization": f"Bearer {KEY}"}), row.id
    finally:
        state.close()


def _chat(client: TestClient, model: str, n: int, **extra: Any) -> Any:
    return client.post(
        "/v1/chat/completions", json={"model": model, "messages": QUESTION, "max_tokens": n, "temperature": 0, **extra}
    )


def _streamed(client: TestClient, model: str, n: int) -> str:
    body = _chat(client, model, n, stream=True).text
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


def test_the_base_model_of_a_keys_job_answers_with_the_adapter_off(
    tiny: tuple[Path, Path], workdir: Path, anytune_home: Path
) -> None:
    base, adapter = tiny
    run = _succeeded_run(workdir, adapter, base)
    with _serving(anytune_home, f"local:{run.id}", base) as (client, job_id):
        tuned = _chat(client, f"ft:{job_id}", 8)
        assert tuned.status_code == 200, tuned.text
        assert tuned.json()["choices"][0]["message"]["content"] == _greedy(base, adapter, 8)
        for name in (f"local:{base}", str(base)):  # as the job named it, or without the prefix
            plain = _chat(client, name, 8)
            assert plain.status_code == 200, plain.text
            assert plain.json()["model"] == name
            assert plain.json()["choices"][0]["message"]["content"] == _greedy(base, None, 8)
        assert _greedy(base, None, 8) != _greedy(base, adapter, 8)  # the adapter does change the answer
        assert _streamed(client, f"local:{base}", 8) == _greedy(base, None, 8)
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert ids == [f"ft:{job_id}", f"local:{base}"]
        assert client.get(f"/v1/models/local:{base}").json()["owned_by"] == "system"
        for other_provider in (f"openai:{base}", f"huggingface:{base}", f"local:{base}x"):  # no job named these
            assert client.get(f"/v1/models/{other_provider}").status_code == 404
            assert _chat(client, other_provider, 4).status_code == 404

        # Another key's base models are not this key's to call, nor any model on the server's disk.
        other = TestClient(client.app, headers={"Authorization": f"Bearer {OTHER}"})
        for name in (f"local:{base}", str(base), f"ft:{job_id}"):
            refused = _chat(other, name, 4)
            assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
            assert str(base) not in refused.text.replace(name, "")


@onnx_needed
@pytest.mark.slow
def test_an_onnx_export_answers_for_the_jobs_whose_adapters_it_holds(
    tiny: tuple[Path, Path], workdir: Path, anytune_home: Path
) -> None:
    base, adapter = tiny
    run = _succeeded_run(workdir, adapter, base)
    model = FineTuneJob.get(f"local:{run.id}").result()
    export = model.export("onnx", str(workdir / "onnx"))
    onnx = model.load(format="onnx", path=export.path)
    name = onnx.adapter_for(model.job_ref)
    assert name is not None
    expected = onnx.generate(QUESTION, max_new_tokens=8, adapter=name)
    expected_base = onnx.generate(QUESTION, max_new_tokens=8, adapter=False)
    # ONNX Runtime's greedy tokens are PyTorch's plain argmax ones (transformers' generate() also
    # applies the tiny model's banned-token list, which ONNX Runtime GenAI does not read).
    from transformers import AutoModelForCausalLM

    ids = onnx.prompt_ids(QUESTION)
    eos = int(onnx.tokenizer.eos_token_id)
    assert onnx.generate_ids(ids, max_new_tokens=8, adapter=name) == greedy(peft_model(base, adapter), ids, 8, eos)
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    assert onnx.generate_ids(ids, max_new_tokens=8, adapter=False) == greedy(plain, ids, 8, eos)
    assert expected != expected_base

    with _serving(anytune_home, f"local:{run.id}", base, onnx_dirs=(Path(export.path),)) as (client, job_id):
        whole = _chat(client, f"ft:{job_id}", 8)
        assert whole.status_code == 200, whole.text
        assert whole.json()["choices"][0]["message"]["content"] == expected
        assert _streamed(client, f"ft:{job_id}", 8) == expected
        assert _chat(client, f"local:{base}", 8).json()["choices"][0]["message"]["content"] == expected_base
        assert "torch" not in repr(whole.json())
