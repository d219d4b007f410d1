"""``FineTunedModel.export`` / ``anytune export``: merged, ONNX Runtime (Olive) and GGUF.

Each export is checked against what the user would otherwise run: the merged model against the base
with the adapter applied (peft), the ONNX model's next-token logits and greedy tokens against the
merged PyTorch model, the GGUF file by loading it back with transformers' own GGUF reader (which
undoes llama.cpp's conventions independently of our writer). Tolerances are stated where they are
asserted. The models and adapters are built here (a few MB), nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from anytune import Export, FineTunedModel, FineTuneJob, JobSpec, JobStatus
from anytune.errors import AnytuneError, MissingDependencyError, NotSupportedError, UsageError
from anytune.local_backend.rundir import RunDir
from anytune.providers.local import LocalProvider
from tests.clitools import run_cli
from tests.conftest import chat_example, write_jsonl
from tests.test_push import hub as hub  # the fake Hub fixture

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

PROMPT = "What is the capital of France?"
# Llama 3's and Qwen2's pre-tokenizer regexes as their tokenizer.json files spell them.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: float32 all the way (PyTorch, ONNX Runtime, GGUF f32): kernels differ only in summation order.
F32_TOLERANCE = 1e-4


def make_adapter(base: Path, out: Path, *, seed: int, targets: Sequence[str] = TARGETS) -> Path:
    """A LoRA adapter whose B matrices are random (a fresh adapter's are zero and change nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # A's initialisation too: the same adapter on every run
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=list(targets)))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from anytune.local_backend.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("export-models")
    shape: dict[str, Any] = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2}
    llama = build_tiny_model(root / "llama", arch="llama", **shape)
    qwen = build_tiny_model(root / "qwen2", arch="qwen2", **shape, seed=1)
    qwen3 = build_tiny_model(root / "qwen3", arch="qwen3", **shape, seed=5)
    return {
        "llama": llama,
        "qwen2": qwen,
        "qwen3": qwen3,
        "qwen3_adapter": make_adapter(qwen3, root / "qwen3-adapter", seed=6),
        "adapter": make_adapter(llama, root / "adapter", seed=1),
        "adapter2": make_adapter(llama, root / "adapter2", seed=2),
        "adapter_attn": make_adapter(llama, root / "adapter-attn", seed=3, targets=["q_proj", "v_proj"]),
        "qwen_adapter": make_adapter(qwen, root / "qwen-adapter", seed=4),
    }


def result(adapter: Path, base: Path, job: str = "local:job-1") -> FineTunedModel:
    return FineTunedModel(provider="local", job_ref=job, adapter_path=str(adapter), base_model=str(base))


def token_ids(folder: Path, text: str = PROMPT) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(folder)(text)["input_ids"])


def last_logits(model: Any, ids: Sequence[int]) -> Any:
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0, -1]


def greedy(model: Any, ids: Sequence[int], n: int, eos: int) -> list[int]:
    """Plain argmax decoding (no generation config: the tiny model's banned-token list is PyTorch-only)."""
    seq, new = list(ids), []
    for _ in range(n):
        token = int(last_logits(model, seq).argmax())
        new.append(token)
        if token == eos:
            break
        seq.append(token)
    return new


def peft_model(base: Path, adapter: Path) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()


# -- merged ---------------------------------------------------------------------------------------


def test_merged_loads_with_plain_transformers_and_matches_base_plus_adapter(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    export = result(models["adapter"], models["llama"]).export("merged", str(tmp_path / "merged"))
    folder = Path(export.path)
    assert export.format == "merged" and "model.safetensors" in export.files and "tokenizer.json" in export.files
    assert not (folder / "adapter_config.json").exists()  # a plain model, not an adapter
    manifest = json.loads((folder / "anytune-export.json").read_text())
    assert manifest["format"] == "merged" and manifest["job_ref"] == "local:job-1"
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = token_ids(folder)
    # float32 merge: W + BA computed once instead of per call; 1e-5 of logits about 4 in size.
    assert torch.allclose(
        last_logits(merged, ids), last_logits(peft_model(models["llama"], models["adapter"]), ids), atol=1e-5
    )
    base = AutoModelForCausalLM.from_pretrained(models["llama"]).eval()
    assert not torch.allclose(last_logits(merged, ids), last_logits(base, ids), atol=1e-2)  # the adapter is in it


def test_merged_in_bfloat16_is_saved_as_bfloat16(models: dict[str, Path], tmp_path: Path) -> None:
    export = result(models["adapter"], models["llama"]).export("merged", str(tmp_path / "bf16"), dtype="bfloat16")
    assert json.loads((Path(export.path) / "config.json").read_text())["dtype"] == "bfloat16"


# -- refusals before any work -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["merged", "onnx", "gguf"])
def test_a_hosted_result_cannot_be_exported_and_the_error_says_what_to_do(fmt: str, tmp_path: Path) -> None:
    hosted = FineTunedModel(provider="openai", job_ref="openai:ftjob-1", model_id="ft:gpt-4o-mini:org::abc")
    with pytest.raises(NotSupportedError) as info:
        hosted.export(fmt, str(tmp_path / "out"))  # type: ignore[arg-type]
    message = str(info.value)
    assert "cannot be downloaded" in message and "ft:gpt-4o-mini:org::abc" in message
    assert "local or huggingface provider" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"format": "tflite"}, "unknown export format 'tflite'"),
        ({"format": "merged", "adapter": "merged"}, "onnx format only"),
        ({"format": "gguf", "precision": "int4"}, "precision applies to the onnx format only"),
        ({"format": "onnx", "outtype": "q8_0"}, "outtype applies to the gguf format only"),
        ({"format": "gguf", "outtype": "q4_k"}, "outtype must be one of f32, f16, bf16, q8_0"),
        ({"format": "onnx", "precision": "int3"}, "precision must be one of fp32, fp16, int4"),
        ({"format": "merged", "dtype": "float8"}, "dtype must be one of"),
        ({"format": "merged", "into": "somewhere"}, "exactly one of out"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(
    models: dict[str, Path], tmp_path: Path, kwargs: dict[str, Any], expected: str
) -> None:
    kwargs = {"out": str(tmp_path / "out"), **kwargs}
    if "into" in kwargs:
        kwargs["out"] = str(tmp_path / "out")
    fmt = kwargs.pop("format")
    with pytest.raises(UsageError, match=expected):
        result(models["adapter"], models["llama"]).export(fmt, **kwargs)
    assert not (tmp_path / "out").exists()


def test_a_folder_with_files_is_never_replaced_and_an_earlier_export_only_when_asked(
    models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    model = result(models["adapter"], models["llama"])
    with pytest.raises(UsageError, match="not empty"):
        model.export("merged", str(out))
    with pytest.raises(UsageError, match="not an anytune export"):
        model.export("merged", str(out), overwrite=True)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    earlier = tmp_path / "earlier"
    model.export("gguf", str(earlier), outtype="f32")
    model.export("merged", str(earlier), overwrite=True)  # an export replaces an export
    assert (earlier / "model.safetensors").is_file() and not any(earlier.glob("*.gguf"))


def test_the_adapter_its_run_and_the_base_model_are_never_the_destination(
    models: dict[str, Path], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _succeeded_run(workdir, models["adapter"], models["llama"])
    ref = f"local:{run.id}"
    before = sorted(p.name for p in run.adapter_dir.iterdir())
    for out in (str(run.adapter_dir), str(run.adapter_dir.parent), str(models["llama"]), ""):
        done = run_cli(capsys, "export", ref, "-f", "gguf", "--out", out, "--force")
        assert done.code == 2 and "Traceback" not in done.err, (out, done.err)
    assert sorted(p.name for p in run.adapter_dir.iterdir()) == before
    assert FineTuneJob.get(ref).status() is JobStatus.SUCCEEDED


def test_a_scratch_folder_left_by_a_killed_export_is_removed_by_the_next(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """SIGKILL runs no clean-up: the scratch folder carries the dead process's id, and goes."""
    left = tmp_path / ".out.anytune-999999999-abc"
    (left / "export").mkdir(parents=True)
    mine = tmp_path / f".out.anytune-{os.getpid()}-live"  # a live process's: kept
    mine.mkdir()
    result(models["adapter"], models["llama"]).export("gguf", str(tmp_path / "out"))
    assert not left.exists() and mine.exists()


def test_an_adapter_folder_that_is_gone_is_named(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(AnytuneError, match=r"holds no adapter_config\.json"):
        result(tmp_path / "gone", models["llama"]).export("merged", str(tmp_path / "out"))


def _unsupported_base(tmp_path: Path, models: dict[str, Path], **config: Any) -> Path:
    """A copy of the tiny Llama with a config the exporters must refuse."""
    base = tmp_path / "odd-base"
    shutil.copytree(models["llama"], base)
    data = json.loads((base / "config.json").read_text())
    data.update(config)
    (base / "config.json").write_text(json.dumps(data))
    return base


@pytest.mark.parametrize(
    ("fmt", "config", "expected"),
    [
        (
            "gguf",
            {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]},
            "not supported for this architecture (gpt_neox)",
        ),
        (
            "gguf",
            {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}},
            "'llama3' rope scaling",
        ),
        ("onnx", {"architectures": ["GPTNeoXForCausalLM"]}, "not supported for this architecture: GPTNeoXForCausalLM"),
    ],
)
def test_an_architecture_the_converter_cannot_handle_is_refused_before_any_work(
    models: dict[str, Path], tmp_path: Path, fmt: str, config: dict[str, Any], expected: str
) -> None:
    base = _unsupported_base(tmp_path, models, **config)
    with pytest.raises(NotSupportedError, match=re.escape(expected)):
        # The adapter records the tiny Llama as its base: base_model= overrides it, as a user would.
        result(models["adapter"], base).export(fmt, str(tmp_path / "out"), base_model=str(base))  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["odd-base"]  # no scratch folder left either


def test_missing_packages_name_the_extra(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("olive", "gguf") else real(name, *a)
    )
    model = result(models["adapter"], models["llama"])
    with pytest.raises(MissingDependencyError, match=r"anytune\[onnx\]"):
        model.export("onnx", str(tmp_path / "o"))
    with pytest.raises(MissingDependencyError, match=r"anytune\[gguf\]"):
        model.export("gguf", str(tmp_path / "g"))
    assert not (tmp_path / "o").exists() and not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    ("pre", "model", "expected"),
    [
        ({"type": "ByteLevel", "use_regex": True}, {"type": "BPE"}, "gpt-2"),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": LLAMA3_SPLIT},
                    },
                    {"type": "ByteLevel", "use_regex": False},
                ],
            },
            {"type": "BPE"},
            "llama-bpe",
        ),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": QWEN2_SPLIT},
                    },
                    {"type": "ByteLevel", "use_regex": False},
                ],
            },
            {"type": "BPE"},
            "qwen2",
        ),
        ({"type": "Split", "pattern": {"Regex": "\\w+"}}, {"type": "BPE"}, None),
        ({"type": "Metaspace"}, {"type": "BPE", "byte_fallback": True}, None),
        ({"type": "Metaspace"}, {"type": "Unigram"}, None),
    ],
)
def test_the_pre_tokenizer_is_named_as_llama_cpp_knows_it_or_refused(
    pre: dict[str, Any], model: dict[str, Any], expected: str | None
) -> None:
    from anytune.local_backend.export.gguf import pre_tokenizer

    tokenizer_json = {"pre_tokenizer": pre, "model": model}
    if expected is None:
        with pytest.raises(NotSupportedError):
            pre_tokenizer(tokenizer_json)
    else:
        assert pre_tokenizer(tokenizer_json) == expected


# -- GGUF -------------------------------------------------------------------------------------------


def _load_gguf(export: Export) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = next(name for name in export.files if name.endswith(".gguf"))
    model = AutoModelForCausalLM.from_pretrained(export.path, gguf_file=file).eval()
    return model, AutoTokenizer.from_pretrained(export.path, gguf_file=file)


@pytest.mark.parametrize(
    ("arch", "adapter"), [("llama", "adapter"), ("qwen2", "qwen_adapter"), ("qwen3", "qwen3_adapter")]
)
def test_gguf_reads_back_through_transformers_as_the_merged_model(
    models: dict[str, Path], tmp_path: Path, arch: str, adapter: str
) -> None:
    """Llama's q/k permutation, Qwen2's tied head and biases and Qwen3's q/k norms survive the round
    trip (f32: 1e-4)."""
    from transformers import AutoTokenizer

    model = result(models[adapter], models[arch])
    merged = Path(model.export("merged", str(tmp_path / "merged")).path)
    export = model.export("gguf", str(tmp_path / "gguf"), outtype="f32")
    assert export.files == ("anytune-export.json", "local_job-1.f32.gguf")
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(merged).eval()
    loaded, tokenizer = _load_gguf(export)
    ours = AutoTokenizer.from_pretrained(merged)
    for text in (PROMPT, "Café — naïve 123 tokens\n"):
        assert tokenizer(text)["input_ids"] == ours(text)["input_ids"]
    assert tokenizer.chat_template == ours.chat_template
    ids = token_ids(merged)
    assert torch.allclose(last_logits(loaded, ids), last_logits(reference, ids), atol=F32_TOLERANCE)


def test_gguf_f16_and_q8_0_stay_close_to_the_merged_model(models: dict[str, Path], tmp_path: Path) -> None:
    """Rounding only: f16 within 1e-2 and q8_0 within 0.1 of logits about 4 in size, same argmax."""
    from transformers import AutoModelForCausalLM

    model = result(models["adapter"], models["llama"])
    reference = AutoModelForCausalLM.from_pretrained(model.export("merged", str(tmp_path / "m")).path).eval()
    ids = token_ids(models["llama"])
    want = last_logits(reference, ids)
    for outtype, tolerance in (("f16", 1e-2), ("q8_0", 0.1)):
        export = model.export("gguf", str(tmp_path / outtype), outtype=outtype)
        assert export.files[-1] == f"local_job-1.{outtype}.gguf"
        got = last_logits(_load_gguf(export)[0], ids)
        assert torch.allclose(got, want, atol=tolerance), (outtype, (got - want).abs().max())
        assert int(got.argmax()) == int(want.argmax())


# -- ONNX Runtime (Olive) -----------------------------------------------------------------------------

onnx_needed = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("olive", "onnxruntime_genai")),
    reason="anytune[onnx] is not installed",
)


#: A chat template of the run's own (local.chat_template), saved with the adapter's tokenizer.
RUN_TEMPLATE = "{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}<<assistant>> "


@pytest.fixture(scope="module")
def onnx_export(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[FineTunedModel, Export]:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("onnx")
    adapter = root / "adapter"
    shutil.copytree(models["adapter"], adapter)
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    tokenizer.chat_template = RUN_TEMPLATE
    tokenizer.save_pretrained(adapter)
    model = result(adapter, models["llama"])
    return model, model.export("onnx", str(root / "model"))


@onnx_needed
@pytest.mark.slow
def test_onnx_logits_and_greedy_tokens_match_pytorch(
    models: dict[str, Path], onnx_export: tuple[FineTunedModel, Export]
) -> None:
    """Next-token logits within 1e-4 (float32 both sides) and the same 16 greedy tokens, with the adapter
    on, and the base model's with it off."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    model, export = onnx_export
    assert export.adapter == "local_job-1.onnx_adapter" and export.adapter in export.files
    assert {"model.onnx", "genai_config.json", "tokenizer.json"} <= set(export.files)
    onnx_model = model.load(format="onnx")
    # Prompted as the run was trained: its own template, not the base model's Olive copied.
    assert onnx_model.tokenizer.chat_template == RUN_TEMPLATE
    assert onnx_model.prompt_ids(PROMPT) == token_ids(
        Path(model.adapter_path or ""), "<<user>> " + PROMPT + "\n<<assistant>> "
    )
    reference = peft_model(models["llama"], models["adapter"])
    base = AutoModelForCausalLM.from_pretrained(models["llama"]).eval()
    eos = json.loads((models["llama"] / "config.json").read_text())["eos_token_id"]
    for text in (PROMPT, "Name a primary colour."):
        ids = onnx_model.prompt_ids(text)
        np.testing.assert_allclose(
            onnx_model.next_token_logits(ids), last_logits(reference, ids).numpy(), atol=F32_TOLERANCE
        )
        np.testing.assert_allclose(
            onnx_model.next_token_logits(ids, adapter=False), last_logits(base, ids).numpy(), atol=F32_TOLERANCE
        )
        assert onnx_model.generate_ids(ids, max_new_tokens=16) == greedy(reference, ids, 16, eos)
    answer = model.generate(PROMPT, max_new_tokens=8)  # through the loaded ONNX model
    assert isinstance(answer, str)
    assert FineTunedModel.model_validate(model.model_dump()).load(format="onnx", path=export.path).adapters == {
        "local_job-1": "local_job-1.onnx_adapter"
    }


@onnx_needed
@pytest.mark.slow
def test_an_onnx_export_is_evaluated_as_its_pytorch_weights_are(
    onnx_export: tuple[FineTunedModel, Export], tmp_path: Path
) -> None:
    """Loss from ONNX Runtime's logits within 1e-4 of PyTorch's for the adapter on (fine-tuned) and off
    (base); answers are ONNX Runtime's greedy ones (PyTorch's batched generation applies the tiny
    model's generation config, which ONNX Runtime GenAI does not read, so the texts are not compared)."""
    from anytune.errors import UsageError
    from tests.conftest import chat_example, write_jsonl

    model, export = onnx_export
    data = write_jsonl(tmp_path / "heldout.jsonl", [chat_example(i) for i in range(4)])
    metrics = ["loss", "perplexity", "exact_match", "token_f1"]
    torch_report = model.evaluate(str(data), metrics=metrics, max_new_tokens=8)
    onnx_report = model.evaluate(str(data), metrics=metrics, max_new_tokens=8, onnx=export.path)
    for role in ("base", "fine-tuned"):
        assert onnx_report.summary[role]["loss"] == pytest.approx(torch_report.summary[role]["loss"], abs=1e-4)
    onnx_model = model.load(format="onnx", path=export.path)
    for row, example in zip(onnx_report.rows, [chat_example(i) for i in range(4)], strict=True):
        prompt = example["messages"][:-1]
        assert row.answers == {
            "base": onnx_model.generate(prompt, max_new_tokens=8, adapter=False),
            "fine-tuned": onnx_model.generate(prompt, max_new_tokens=8),
        }
    assert onnx_report.summary["base"]["loss"] != pytest.approx(onnx_report.summary["fine-tuned"]["loss"])
    assert "ONNX" in onnx_report.models["fine-tuned"]
    with pytest.raises(UsageError, match="lm-eval"):
        model.evaluate(str(data), onnx=export.path, lm_eval_tasks=["arc_easy"])


@onnx_needed
@pytest.mark.slow
def test_a_second_adapter_joins_the_same_onnx_model(
    models: dict[str, Path], onnx_export: tuple[FineTunedModel, Export], tmp_path: Path
) -> None:
    import numpy as np

    _, export = onnx_export
    second = result(models["adapter2"], models["llama"], job="local:job-2")
    added = second.export("onnx", into=export.path)
    assert added.adapter == "local_job-2.onnx_adapter" and added.path == export.path
    manifest = json.loads((Path(export.path) / "anytune-export.json").read_text())
    assert manifest["adapters"] == {
        "local_job-1": "local_job-1.onnx_adapter",
        "local_job-2": "local_job-2.onnx_adapter",
    }
    loaded = second.load(format="onnx")
    ids = loaded.prompt_ids(PROMPT)
    want = last_logits(peft_model(models["llama"], models["adapter2"]), ids).numpy()
    np.testing.assert_allclose(loaded.next_token_logits(ids, adapter="local_job-2"), want, atol=F32_TOLERANCE)
    with pytest.raises(UsageError, match="no adapter named 'nope'"):
        loaded.generate(PROMPT, adapter="nope")
    with pytest.raises(UsageError, match="already holds adapter 'local_job-2'"):
        second.export("onnx", into=export.path)
    # Another target-module set cannot share the graph: refused, and nothing is added.
    other = result(models["adapter_attn"], models["llama"], job="local:job-3")
    with pytest.raises(UsageError, match="target the same modules"):
        other.export("onnx", into=export.path)
    assert not (Path(export.path) / "local_job-3.onnx_adapter").exists()
    assert json.loads((Path(export.path) / "anytune-export.json").read_text()) == manifest
    # And a folder of another base, or no export at all, is refused before Olive runs.
    with pytest.raises(UsageError, match="is not an ONNX export"):
        other.export("onnx", into=str(tmp_path))
    qwen = result(models["qwen_adapter"], models["qwen2"], job="local:job-4")
    with pytest.raises(UsageError, match="adapters share an ONNX model only with their own base"):
        qwen.export("onnx", into=export.path)


@onnx_needed
@pytest.mark.slow
def test_onnx_with_the_adapter_merged_matches_too(models: dict[str, Path], tmp_path: Path) -> None:
    import numpy as np

    model = result(models["adapter"], models["llama"])
    export = model.export("onnx", str(tmp_path / "merged-onnx"), adapter="merged")
    assert export.adapter is None and not any(f.endswith(".onnx_adapter") for f in export.files)
    loaded = model.load(format="onnx")
    ids = loaded.prompt_ids(PROMPT)
    want = last_logits(peft_model(models["llama"], models["adapter"]), ids).numpy()
    np.testing.assert_allclose(loaded.next_token_logits(ids), want, atol=F32_TOLERANCE)
    # Merged weights hold no base model: evaluating it against "base" would compare it with itself.
    from anytune.errors import UsageError
    from tests.conftest import chat_example, write_jsonl

    data = write_jsonl(tmp_path / "heldout.jsonl", [chat_example(0)])
    with pytest.raises(UsageError, match="merged ONNX export"):
        model.evaluate(str(data), onnx=export.path)


@onnx_needed
def test_an_olive_failure_quotes_its_error_and_leaves_nothing_behind(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Olive logs a failed pass and exits 0: success is judged by its output files."""
    from anytune.local_backend.export import onnx

    script = "print('Traceback ...'); print('ValueError: the model builder cannot read this checkpoint')"
    monkeypatch.setattr(
        onnx, "olive_argv", lambda base, out, **_: [sys.executable, "-c", script, "--output_path", str(out)]
    )
    with pytest.raises(AnytuneError, match="ValueError: the model builder cannot read this checkpoint") as info:
        result(models["adapter"], models["llama"]).export("onnx", str(tmp_path / "out"))
    assert "its full log:" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the export nor its scratch folder


def test_olive_is_asked_for_an_ort_genai_model_with_the_adapter_apart() -> None:
    from anytune.local_backend.export.onnx import olive_argv

    argv = olive_argv("Qwen/Qwen2.5-0.5B-Instruct", Path("/o"), adapter=Path("/a"), precision="int4")
    assert argv[1:4] == ["-m", "olive", "auto-opt"]
    pairs = dict(zip(argv[4::2], argv[5::2], strict=False))
    assert pairs["--model_name_or_path"] == "Qwen/Qwen2.5-0.5B-Instruct" and pairs["--adapter_path"] == "/a"
    assert pairs["--precision"] == "int4" and pairs["--provider"] == "CPUExecutionProvider"
    assert {"--use_model_builder", "--use_ort_genai", "--disable_telemetry"} <= set(argv)
    assert "--adapter_path" not in olive_argv("m", Path("/o"), adapter=None, precision="fp32")


# -- CLI ------------------------------------------------------------------------------------------------


def _succeeded_run(workdir: Path, adapter: Path, base: Path, key: str = "export") -> RunDir:
    """A local run as the worker leaves it, its adapter folder holding ``adapter`` (``key``: its
    idempotency key; one run per key)."""
    provider = LocalProvider()
    train = write_jsonl(workdir / "train.jsonl", [chat_example(i) for i in range(3)])
    spec = JobSpec(base_model=str(base), training_file=train, lora={"r": 4, "alpha": 8})
    run = RunDir(provider.runs_dir / provider.job_id_for(key))
    run.create(spec, idempotency_key=key)
    shutil.copytree(adapter, run.adapter_dir)
    run.write_result({"adapter_path": str(run.adapter_dir), "steps": 2})
    run.set_status(JobStatus.SUCCEEDED, step=2, total_steps=2)
    return run


def test_cli_exports_a_local_job_and_prints_where(
    models: dict[str, Path], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _succeeded_run(workdir, models["adapter"], models["llama"])
    ref = f"local:{run.id}"
    done = run_cli(capsys, "export", ref, "--format", "gguf", "--out", str(workdir / "g"), "--outtype", "q8_0")
    assert done.code == 0, done.err
    assert done.out.strip() == str((workdir / "g").resolve())
    assert any(p.suffix == ".gguf" for p in (workdir / "g").iterdir())
    as_json = run_cli(capsys, "export", ref, "-f", "merged", "-o", str(workdir / "m"), "--json")
    assert as_json.code == 0, as_json.err
    data = json.loads(as_json.out)
    assert data["format"] == "merged" and data["job_ref"] == ref and "model.safetensors" in data["files"]
    again = run_cli(capsys, "export", ref, "-f", "merged", "-o", str(workdir / "m"))
    assert again.code == 2 and "not empty" in again.err and "Traceback" not in again.err


def test_cli_eval_of_a_folder_that_is_no_onnx_export_exits_2_and_stores_nothing(
    models: dict[str, Path], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _succeeded_run(workdir, models["adapter"], models["llama"])
    data = write_jsonl(workdir / "heldout.jsonl", [chat_example(0)])
    (workdir / "not-onnx").mkdir()
    done = run_cli(capsys, "eval", f"local:{run.id}", "--data", str(data), "--onnx", str(workdir / "not-onnx"))
    assert done.code == 2 and "not-onnx" in done.err and "Traceback" not in done.err
    assert FineTuneJob.get(f"local:{run.id}").evaluations() == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "zip", "--out", "x"], "unknown --format 'zip'"),
        (["--format", "merged"], "give --out DIR"),
        (["--format", "merged", "--out", "x", "--into", "y"], "give --out DIR"),
    ],
)
def test_cli_refuses_bad_options_with_exit_2(
    capsys: pytest.CaptureFixture[str], workdir: Path, args: list[str], expected: str
) -> None:
    done = run_cli(capsys, "export", "local:run-0123456789abcdef", *args)
    assert done.code == 2 and expected in done.err
    assert not (workdir / "x").exists()


def test_cli_refuses_an_unfinished_job(
    models: dict[str, Path], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _succeeded_run(workdir, models["adapter"], models["llama"])
    run.set_status(JobStatus.RUNNING, step=1, total_steps=2)
    done = run_cli(capsys, "export", f"local:{run.id}", "-f", "merged", "-o", str(workdir / "m"))
    assert done.code == 2 and "only a succeeded job's result can be exported" in done.err
    assert not (workdir / "m").exists()


# -- where the adapter comes from ---------------------------------------------------------------------


def test_a_qlora_base_saved_in_4bit_is_dequantised_before_the_merge(models: dict[str, Path], tmp_path: Path) -> None:
    """The merged model is plain float weights (no bitsandbytes needed to load it), equal to the
    dequantised base with the adapter applied (1e-4)."""
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quantized = tmp_path / "base-4bit"
    four_bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    AutoModelForCausalLM.from_pretrained(
        models["llama"], quantization_config=four_bit, device_map="cpu"
    ).save_pretrained(quantized)
    AutoTokenizer.from_pretrained(models["llama"]).save_pretrained(quantized)
    export = result(models["adapter"], quantized).export(
        "merged", str(tmp_path / "merged"), base_model=str(quantized), dtype="float32"
    )
    assert "quantization_config" not in json.loads((Path(export.path) / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(export.path).eval()
    assert type(merged.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    dequantized = AutoModelForCausalLM.from_pretrained(quantized, device_map="cpu").dequantize()
    reference = PeftModel.from_pretrained(dequantized, str(models["adapter"])).eval()
    ids = token_ids(models["llama"])
    assert torch.allclose(last_logits(merged, ids), last_logits(reference, ids), atol=F32_TOLERANCE)


def test_a_hugging_face_jobs_result_is_downloaded_from_the_hub_and_exported(
    models: dict[str, Path],
    tmp_path: Path,
    hub: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The adapter a Hugging Face job pushed is fetched with huggingface_hub (the fake Hub on a loopback
    port here) and merged like a local one."""
    from huggingface_hub import constants

    from tests.providers.hf_fake import USER

    # Read by huggingface_hub at import, as a process started with HF_ENDPOINT set would have them.
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # not the user's cache
    pushed = result(models["adapter"], models["llama"]).push_to_hub(f"{USER}/tiny-adapter")
    remote = FineTunedModel(
        provider="huggingface",
        job_ref="huggingface:job-9",
        hub_repo=pushed.hub_repo,
        revision=pushed.revision,
        base_model=str(models["llama"]),
    )
    export = remote.export("merged", str(tmp_path / "merged"))
    assert (tmp_path / "hub-cache" / "models--alice--tiny-adapter").is_dir()  # fetched through the Hub client
    assert json.loads((Path(export.path) / "anytune-export.json").read_text())["job_ref"] == "huggingface:job-9"
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(export.path).eval()
    ids = token_ids(models["llama"])
    reference = peft_model(models["llama"], models["adapter"])
    assert torch.allclose(last_logits(merged, ids), last_logits(reference, ids), atol=1e-5)


def test_two_exports_racing_for_one_folder_leave_one_whole_export(models: dict[str, Path], tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    out = str(tmp_path / "shared")
    model = result(models["adapter"], models["llama"])
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(model.export, "merged", out) for _ in range(2)]
    outcomes = [f.exception() for f in futures]
    assert sum(e is None for e in outcomes) == 1
    assert all(e is None or isinstance(e, UsageError) for e in outcomes), outcomes
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)  # whole: config, weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # no scratch folder left
