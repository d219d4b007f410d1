"""The trainer's data pipeline: exact assistant-only labels, layouts that equal separate forwards,
truncation, deterministic order, and the tiny model builder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from anytune.errors import ConfigError, DataValidationError
from tests.conftest import write_jsonl
from tests.local import trainer_helpers as H

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.build(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from anytune.local_backend.model import load_tokenizer

    return load_tokenizer(str(model_dir))


# -- labels ---------------------------------------------------------------------------------------


def test_assistant_only_labels_are_exact_with_pad_equal_to_eos(tokenizer: Any) -> None:
    from anytune.local_backend.data import encode_conversation

    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    messages = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is 3 plus 3?"},
        {"role": "assistant", "content": "I am not sure about that.", "weight": 0},
        {"role": "user", "content": "Try again: what is 3 plus 3?"},
        {"role": "assistant", "content": "3 plus 3 is 6."},
    ]
    enc = encode_conversation(tokenizer, messages)
    ids = enc.input_ids.tolist()

    # Independently: the tokens of the learned turn are exactly those between the rendered prefix
    # (through the assistant header) and the end-of-turn token, inclusive.
    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    head = tokenizer.apply_chat_template(messages[:4], tokenize=False, add_generation_prompt=True)
    start, end = n_tokens(head), n_tokens(head + "3 plus 3 is 6.<|im_end|>")
    assert tokenizer.apply_chat_template(messages, tokenize=False).startswith(head + "3 plus 3 is 6.<|im_end|>")
    live = np.flatnonzero(enc.learn).tolist()
    assert live == list(range(start, end))
    assert ids[live[-1]] == tokenizer.eos_token_id  # EOS is learned although it is the pad token
    assert tokenizer.decode([ids[i] for i in live]) == "3 plus 3 is 6.<|im_end|>"
    # Every other end-of-turn token (system, user, the weight-0 answer) and the trailing newline are not.
    eos_positions = [i for i, t in enumerate(ids) if t == tokenizer.eos_token_id]
    assert len(eos_positions) == 5
    assert [i for i in eos_positions if enc.learn[i]] == [live[-1]]
    assert not enc.learn[len(ids) - 1]  # the "\n" the template adds after <|im_end|>


def test_every_assistant_turn_is_learned_by_default(tokenizer: Any) -> None:
    from anytune.local_backend.data import encode_conversation

    messages = [
        {"role": "user", "content": "What is 1 plus 1?"},
        {"role": "assistant", "content": "1 plus 1 is 2."},
        {"role": "user", "content": "What is 2 plus 2?"},
        {"role": "assistant", "content": "2 plus 2 is 4."},
    ]
    enc = encode_conversation(tokenizer, messages)
    ids = enc.input_ids
    text = tokenizer.decode(ids[enc.learn].tolist())
    assert text == "1 plus 1 is 2.<|im_end|>2 plus 2 is 4.<|im_end|>"


def test_prompt_completion_and_preference_files(tmp_path: Path, tokenizer: Any) -> None:
    from anytune.local_backend.data import load_dataset

    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Capital of France?", "completion": "Paris."}])
    data = load_dataset(pc, tokenizer, method="sft", max_length=128)
    (seq,) = data.examples[0].seqs
    assert tokenizer.decode(seq.input_ids[seq.learn].tolist()) == "Paris.<|im_end|>"

    pref = H.preference_file(tmp_path / "pref.jsonl", n=2)
    data = load_dataset(pref, tokenizer, method="dpo", max_length=128)
    chosen, rejected = data.examples[0].seqs
    assert tokenizer.decode(chosen.input_ids[chosen.learn].tolist()) == "0 plus 0 is 0.<|im_end|>"
    assert tokenizer.decode(rejected.input_ids[rejected.learn].tolist()) == "I am not sure about that.<|im_end|>"


def test_truncate_and_drop_are_counted(tmp_path: Path, tokenizer: Any) -> None:
    from anytune.local_backend.data import load_dataset

    long = {
        "messages": [
            {"role": "user", "content": "What is 7 plus 7?"},
            {"role": "assistant", "content": "7 plus 7 is 14. " * 30},
        ]
    }
    only_prompt_fits = {
        "messages": [{"role": "user", "content": "What is 8 plus 8? " * 60}, {"role": "assistant", "content": "16."}]
    }
    path = write_jsonl(tmp_path / "mixed.jsonl", [H.chat_example(i) for i in range(3)] + [long, only_prompt_fits])
    cut = load_dataset(path, tokenizer, method="sft", max_length=96, truncation="truncate")
    assert (cut.truncated, cut.dropped, cut.empty, len(cut)) == (2, 0, 1, 4)
    assert max(len(s) for e in cut.examples for s in e.seqs) == 96
    dropped = load_dataset(path, tokenizer, method="sft", max_length=96, truncation="drop")
    assert (dropped.truncated, dropped.dropped, dropped.empty, len(dropped)) == (0, 2, 0, 3)
    assert any("dropped" in note for note in dropped.notes)


@pytest.mark.parametrize(
    ("method", "rows", "needle"),
    [
        ("sft", [H.preference_example(0)], "method='dpo'"),
        ("dpo", [H.chat_example(0)], "preference pairs"),
        ("sft", [{"text": "hello"}], "unrecognised example"),
    ],
)
def test_wrong_format_is_named(tmp_path: Path, tokenizer: Any, method: str, rows: list[Any], needle: str) -> None:
    from anytune.local_backend.data import check_format, load_dataset

    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(DataValidationError, match=r"data\.jsonl:1") as info:
        load_dataset(path, tokenizer, method=method, max_length=64)  # type: ignore[arg-type]
    assert needle in str(info.value)
    if needle != "unrecognised example":
        with pytest.raises(DataValidationError, match=needle.replace("'", ".").replace("(", r"\(")):
            check_format(path, method)  # type: ignore[arg-type]


def test_bad_json_names_the_line(tmp_path: Path, tokenizer: Any) -> None:
    from anytune.local_backend.data import load_dataset

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(H.chat_example(1)) + "\n{oops\n")
    with pytest.raises(DataValidationError, match=r"bad\.jsonl:2: not valid JSON"):
        load_dataset(path, tokenizer, method="sft", max_length=64)


def test_chat_template_option_is_a_template_or_a_file(tmp_path: Path) -> None:
    from anytune.local_backend.data import resolve_chat_template

    assert resolve_chat_template("{{ messages }}") == "{{ messages }}"
    file = tmp_path / "t.jinja"
    file.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert resolve_chat_template(str(file)) == file.read_text()
    with pytest.raises(ConfigError, match=r"local\.chat_template"):
        resolve_chat_template(str(tmp_path / "missing.jinja"))


# -- order and packing ----------------------------------------------------------------------------


def test_step_order_is_a_function_of_seed_and_step() -> None:
    from anytune.local_backend.data import epoch_order, step_examples

    first = [step_examples(10, 4, seed=3, step=s) for s in range(6)]
    assert first == [step_examples(10, 4, seed=3, step=s) for s in range(6)]
    assert sorted(i for s in first[:3] for i in s) == list(range(10))  # one epoch = 3 steps, 4+4+2
    assert [len(s) for s in first] == [4, 4, 2, 4, 4, 2]
    assert epoch_order(10, 3, 0) != epoch_order(10, 3, 1)
    assert epoch_order(10, 3, 0) != epoch_order(10, 4, 0)


def test_best_fit_decreasing_packing() -> None:
    from anytune.local_backend.data import pack_best_fit, split_micro_batches

    lengths = [7, 5, 4, 3, 3, 2, 1]
    rows = pack_best_fit(lengths, 10)
    assert sorted(i for r in rows for i in r) == list(range(7))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert len(rows) == 3  # 25 tokens need at least 3 rows of 10
    with pytest.raises(ValueError):
        pack_best_fit([11], 10)
    del split_micro_batches  # exercised through the trainer tests


def _seqs(tokenizer: Any) -> list[Any]:
    from anytune.local_backend.data import encode_conversation

    return [encode_conversation(tokenizer, H.chat_example(i)["messages"]) for i in (1, 22, 333, 4444)]


@pytest.mark.parametrize("layout", ["varlen", "packed", "padded"])
def test_layouts_give_the_same_logits_as_separate_forwards(model_dir: Path, tokenizer: Any, layout: str) -> None:
    """A step's sequences laid out together see exactly what each would see alone.

    ``packed`` relies on transformers detecting the restarting position ids and building
    block-diagonal masks; ``varlen`` on the attention registered by the trainer.
    """
    from transformers import AutoModelForCausalLM

    from anytune.local_backend.data import collate
    from anytune.local_backend.model import VARLEN_ATTENTION, LossHead, _register_varlen

    seqs = _seqs(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor(s.input_ids[None].astype(np.int64))).logits[0] for s in seqs]
    if layout == "varlen":
        _register_varlen()
        model.set_attn_implementation(VARLEN_ATTENTION)

    class Wrapped:
        def get_base_model(self) -> Any:
            return model

    head = LossHead.__new__(LossHead)
    torch.nn.Module.__init__(head)
    head.peft_model = Wrapped()  # type: ignore[assignment]
    head._post = lambda t: t
    head.generic = False
    mb = collate(seqs, layout, pad_id=tokenizer.pad_token_id, row_capacity=2 * max(len(s) for s in seqs))  # type: ignore[arg-type]
    assert mb.num_tokens == sum(len(s) for s in seqs)
    if layout == "packed":
        assert mb.input_ids.shape[0] < len(seqs)  # several sequences share a row
    with torch.no_grad():
        got = head(mb)
    expected = torch.cat([alone[i][np.flatnonzero(s.learn) - 1] for i, s in enumerate(seqs)])
    owner = mb.target_seq.tolist()
    order = sorted(range(len(owner)), key=lambda k: (owner[k], k))
    torch.testing.assert_close(got[order], expected, atol=2e-5, rtol=1e-4)
    assert torch.equal(
        mb.targets[order], torch.cat([torch.from_numpy(s.input_ids[s.learn].astype(np.int64)) for s in seqs])
    )


# -- the tiny model -------------------------------------------------------------------------------


def test_tiny_model_is_deterministic_and_chatml(tmp_path: Path) -> None:
    a = H.build(tmp_path / "a", arch="qwen2")
    b = H.build(tmp_path / "b", arch="qwen2")
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    config = json.loads((a / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["pad_token_id"] == config["eos_token_id"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
