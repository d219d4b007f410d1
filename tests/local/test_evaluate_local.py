"""Evaluating a local run: base and fine-tuned from one load, loss and perplexity as the trainer
defines them, generation metrics, through ``FineTuneJob.evaluate`` and ``anytune eval``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from anytune import FineTuneJob
from tests.clitools import run_cli
from tests.conftest import write_jsonl
from tests.local.test_export import _succeeded_run, make_adapter
from tests.test_push import hub as hub  # the fake Hub fixture

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("How many days are in a week?", "A week has seven days."),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from anytune.local_backend.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("eval-models")
    base = build_tiny_model(root / "base", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    return base, make_adapter(base, root / "adapter", seed=5)


def _reference_loss(base: Path, adapter: Path | None, messages: list[dict[str, Any]]) -> tuple[float, int]:
    """Cross-entropy over the assistant turn's tokens, computed independently: the tokens the chat
    template renders for the assistant's reply (and its end-of-turn), with plain transformers + peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    reply_end = len(full.rstrip())
    ids = tok(full[:reply_end], add_special_tokens=False)["input_ids"]
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    model: Any = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    targets = torch.tensor(ids[1:])
    nll = torch.nn.functional.cross_entropy(logits[n_prompt - 1 :], targets[n_prompt - 1 :], reduction="sum")
    return float(nll), len(ids) - n_prompt


def test_a_local_run_is_evaluated_with_loss_perplexity_and_answers(
    tiny: tuple[Path, Path], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, adapter = tiny
    run = _succeeded_run(workdir, adapter, base)
    data = write_jsonl(
        workdir / "heldout.jsonl",
        [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA],
    )
    job = FineTuneJob.get(f"local:{run.id}")
    report = job.evaluate(str(data), max_new_tokens=8)
    assert report.metrics == ("loss", "perplexity", "exact_match", "token_f1", "rouge_l")
    for role, with_adapter in (("base", None), ("fine-tuned", adapter)):
        summary = report.summary[role]
        assert summary["perplexity"] == pytest.approx(math.exp(summary["loss"]))
        totals = [
            _reference_loss(base, with_adapter, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
            for q, a in QA
        ]
        # Token-weighted over the three examples, as training reports loss; float32 on both sides.
        assert summary["loss"] == pytest.approx(sum(t[0] for t in totals) / sum(t[1] for t in totals), rel=1e-4)
        assert 0.0 <= summary["token_f1"] <= 1.0
    assert abs(report.summary["base"]["loss"] - report.summary["fine-tuned"]["loss"]) > 1e-3  # the adapter counts
    assert report.models["fine-tuned"].endswith(str(run.adapter_dir)) and report.models["base"] == str(base)
    assert all(set(row.answers) == {"base", "fine-tuned"} for row in report.rows)

    done = run_cli(capsys, "eval", job.ref, "--data", str(data), "-m", "loss,perplexity", "--json")
    assert done.code == 0, done.err
    cli = json.loads(done.out)
    assert cli["summary"]["fine-tuned"]["loss"] == pytest.approx(report.summary["fine-tuned"]["loss"], rel=1e-6)
    assert all(row["answers"] == {} for row in cli["rows"])  # loss only: nothing generated
    assert len(FineTuneJob.get(job.ref).evaluations()) == 2


def test_batches_give_the_answers_and_losses_of_one_example_at_a_time(tiny: tuple[Path, Path], workdir: Path) -> None:
    """Left-padded generation and right-padded loss: same greedy answers, losses within 1e-5."""
    base, adapter = tiny
    run = _succeeded_run(workdir, adapter, base)
    rows = [
        {"messages": [{"role": "user", "content": q * k}, {"role": "assistant", "content": a}]}
        for k, (q, a) in enumerate(QA, 1)
    ]
    data = write_jsonl(workdir / "uneven.jsonl", rows)  # prompts of different lengths: padding matters
    result = FineTuneJob.get(f"local:{run.id}").result()
    one = result.evaluate(str(data), batch_size=1, max_new_tokens=6)
    batched = result.evaluate(str(data), batch_size=3, max_new_tokens=6)
    assert [r.answers for r in one.rows] == [r.answers for r in batched.rows]
    for a, b in zip(one.rows, batched.rows, strict=True):
        for role in ("base", "fine-tuned"):
            assert a.scores[role]["loss"] == pytest.approx(b.scores[role]["loss"], rel=1e-5)
    assert batched.settings.batch_size == 3


def test_a_hugging_face_jobs_result_is_evaluated_from_its_hub_adapter(
    tiny: tuple[Path, Path], tmp_path: Path, hub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter a Hugging Face job pushed is loaded through huggingface_hub (the fake Hub here)."""
    from huggingface_hub import constants

    from anytune import FineTunedModel
    from tests.providers.hf_fake import USER

    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    base, adapter = tiny
    local = FineTunedModel(provider="local", job_ref="local:x", adapter_path=str(adapter), base_model=str(base))
    pushed = local.push_to_hub(f"{USER}/eval-adapter")
    remote = FineTunedModel(
        provider="huggingface",
        job_ref="huggingface:job-1",
        hub_repo=pushed.hub_repo,
        revision=pushed.revision,
        base_model=str(base),
    )
    data = write_jsonl(
        tmp_path / "heldout.jsonl",
        [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA],
    )
    from_hub = remote.evaluate(str(data), metrics=["loss"])
    from_disk = local.evaluate(str(data), metrics=["loss"])
    for role in ("base", "fine-tuned"):  # the same adapter, fetched
        assert from_hub.summary[role]["loss"] == pytest.approx(from_disk.summary[role]["loss"], rel=1e-6)
    assert from_hub.models["fine-tuned"].endswith(f"{USER}/eval-adapter@{pushed.revision}")


TASK = """task: anytune_tiny_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: " {{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow
def test_lm_eval_harness_tasks_run_on_both_models(
    tiny: tuple[Path, Path], workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task of the user's own (a folder of lm-eval YAML, local data) through `--lm-eval-tasks`."""
    pytest.importorskip("lm_eval")
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # also: no download-count ping for "json"
    base, adapter = tiny
    run = _succeeded_run(workdir, adapter, base)
    qa = write_jsonl(workdir / "qa.jsonl", [{"question": q, "answer": a.split()[-1].rstrip(".")} for q, a in QA])
    tasks = workdir / "tasks"
    tasks.mkdir()
    (tasks / "tiny_qa.yaml").write_text(TASK.format(data=qa))
    data = write_jsonl(
        workdir / "heldout.jsonl",
        [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA],
    )
    done = run_cli(
        capsys,
        "eval",
        f"local:{run.id}",
        "--data",
        str(data),
        "-m",
        "loss",
        "--lm-eval-tasks",
        "anytune_tiny_qa",
        "--lm-eval-include",
        str(tasks),
        "--json",
    )
    assert done.code == 0, done.err
    report = json.loads(done.out)
    for role in ("base", "fine-tuned"):
        acc = report["tasks"][role]["anytune_tiny_qa"]["acc"]
        assert 0.0 <= acc <= 1.0
    assert FineTuneJob.get(f"local:{run.id}").evaluations()[-1].tasks == report["tasks"]


def test_lm_eval_tasks_on_a_hosted_model_are_refused(workdir: Path) -> None:
    from anytune import FineTunedModel
    from anytune.errors import UsageError

    hosted = FineTunedModel(provider="openai", job_ref="openai:ftjob-1", model_id="ft:x")
    data = write_jsonl(
        workdir / "d.jsonl", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    )
    with pytest.raises(UsageError, match="lm-eval tasks run on weights"):
        hosted.evaluate(str(data), lm_eval_tasks=["hellaswag"])


@pytest.mark.parametrize(
    ("device", "expected"), [("tpu", "unknown device 'tpu'"), ("cuda", "device cuda is not available")]
)
def test_a_device_this_machine_lacks_exits_2(
    tiny: tuple[Path, Path], workdir: Path, capsys: pytest.CaptureFixture[str], device: str, expected: str
) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base, adapter = tiny
    run = _succeeded_run(workdir, adapter, base)
    data = write_jsonl(
        workdir / "d.jsonl", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    )
    done = run_cli(capsys, "eval", f"local:{run.id}", "--data", str(data), "--device", device)
    assert done.code == 2 and expected in done.err and "Traceback" not in done.err


@pytest.mark.parametrize(
    ("lengths", "groups"),
    [
        ([10, 10, 10], [[0, 1, 2]]),  # no padding at all
        ([100, 10, 101, 11], [[1, 3], [0, 2]]),  # like with like, shortest first
        ([5, 50], [[0], [1]]),  # padding 5 to 50 would waste more than it saves
        ([], []),
    ],
)
def test_sequences_of_like_length_run_together(lengths: list[int], groups: list[list[int]]) -> None:
    from anytune.local_backend.evaluate import padding_groups

    assert padding_groups(lengths) == groups
