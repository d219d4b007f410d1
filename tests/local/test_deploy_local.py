"""A local result deployed in this process: loaded once, answering through ``chat`` exactly what
transformers + peft generate, freed by ``undeploy``; the CLI's ``chat`` on a local job."""

from __future__ import annotations

from pathlib import Path

import pytest

from anytune import FineTuneJob
from anytune.errors import UsageError
from tests.clitools import run_cli
from tests.local.test_export import _succeeded_run, make_adapter

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from anytune.local_backend.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("deploy-models")
    base = build_tiny_model(root / "base", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    return base, make_adapter(base, root / "adapter", seed=7)


def _reference(base: Path, adapter: Path, question: str, max_new_tokens: int) -> str:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
    return str(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)).strip()


def test_deploy_loads_once_chat_answers_as_transformers_does_and_undeploy_frees_it(
    tiny: tuple[Path, Path], workdir: Path
) -> None:
    base, adapter = tiny
    run = _succeeded_run(workdir, adapter, base)
    model = FineTuneJob.get(f"local:{run.id}").result()
    assert model.loaded is None

    deployed = model.deploy(device="cpu")
    assert deployed.kind == "in-process" and deployed.ready and deployed.created
    assert any("nothing is billed" in n for n in deployed.cost_notes)
    loaded = model.loaded
    assert loaded is not None
    assert model.deploy().created is False and model.loaded is loaded  # idempotent: not loaded twice

    question = "What is the capital of France?"
    reply = deployed.chat(question, max_tokens=6)
    assert reply and reply == _reference(base, adapter, question, 6)
    assert model.chat(question, max_tokens=6) == reply

    gone = model.undeploy()
    assert gone is not None and gone.status == "deleted" and model.loaded is None
    assert model.undeploy() is None
    with pytest.raises(UsageError, match="device"):
        model.deploy(device="tpu")


def test_cli_chat_answers_from_a_local_job(
    tiny: tuple[Path, Path], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, adapter = tiny
    run = _succeeded_run(workdir, adapter, base)
    question = "Name a primary colour."
    said = run_cli(capsys, "chat", f"local:{run.id}", question, "--max-tokens", "5")
    assert said.code == 0, said.err
    assert said.out.strip() == _reference(base, adapter, question, 5)
