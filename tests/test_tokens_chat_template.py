"""Hugging Face models are counted through their chat template, found in the Hub cache or a folder.

A tiny tokenizer with a ChatML template is saved with transformers into a fixture folder, served by
the fake Hub (tests/providers/hf_fake.py) on a loopback port, and downloaded with huggingface_hub's
own ``hf_hub_download`` into a temporary cache: the real cache layout, made by the real client,
without the network. ``anytune data validate --model`` then runs as a user runs it, with
``HF_HUB_CACHE`` pointing at that cache and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

from anytune._data.tokens import ChatTemplateCounter, HFTokenizerCounter, counter_for
from tests.clitools import run_cli
from tests.conftest import FakeClock
from tests.providers.hf_fake import TOKEN, FakeHub

REPO = "acme/tiny-chat-template"
WORDS = ["hello", "world", "how", "are", "you", "the", "assistant", "answers", "questions", "weather", "today"]

EXAMPLES: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "how are you"}]},
    {
        "messages": [
            {"role": "system", "content": "the assistant answers questions"},
            {"role": "user", "content": "weather today"},
            {"role": "assistant", "content": "hello", "weight": 0},
            {"role": "user", "content": "how are you"},
            {"role": "assistant", "content": "the weather today"},
        ]
    },
]


def _build_tokenizer(folder: Path, *, template: bool) -> Path:
    """A small byte-level BPE tokenizer (with the ChatML template the local backend's tiny models use)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from anytune.local_backend.tiny import CHATML_TEMPLATE

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>")
    if template:
        fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_tokenizer(tmp_path_factory.mktemp("tok") / "tiny-chat", template=True)


@pytest.fixture(scope="module")
def hub_cache(tokenizer_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Hub cache holding ``REPO``, made by huggingface_hub's ``hf_hub_download`` from the fake Hub."""
    from huggingface_hub import hf_hub_download

    cache = tmp_path_factory.mktemp("hf-cache")
    hub = FakeHub(FakeClock())
    files = {p.name: p.read_bytes() for p in tokenizer_folder.iterdir() if p.is_file()}
    hub.add_repo("model", REPO, files)
    with hub.serve() as url:
        for name in files:
            hf_hub_download(REPO, name, cache_dir=cache, endpoint=url, token=TOKEN)
    yield cache


def _template_count(folder: Path, example: dict[str, Any]) -> int:
    """The count written independently: transformers' own tokenizer and template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    return len(tok.apply_chat_template(example["messages"], tokenize=True, return_dict=False))


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _validate_in_cache(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``anytune data validate ARGS`` in a fresh process: huggingface_hub reads ``HF_HUB_CACHE`` when imported."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run(
        [sys.executable, "-m", "anytune", "data", "validate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_cached_hub_model_is_counted_through_its_chat_template(
    hub_cache: Path, tokenizer_folder: Path, workdir: Path
) -> None:
    data = _write(workdir / "train.jsonl", EXAMPLES)
    proc = _validate_in_cache(hub_cache, str(data), "--model", REPO, "--min-examples", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    expected = [_template_count(tokenizer_folder, e) for e in EXAMPLES]
    assert report["tokens"]["total"] == sum(expected)
    assert (report["tokens"]["min"], report["tokens"]["max"]) == (min(expected), max(expected))
    assert report["tokens_exact"] is True
    assert report["tokenizer"] == f"chat template of {REPO}"


def test_a_model_folder_with_a_template_counts_like_the_trainer(tokenizer_folder: Path) -> None:
    counter = counter_for("local", str(tokenizer_folder))
    assert isinstance(counter, ChatTemplateCounter) and counter.exact
    for example in EXAMPLES:
        assert counter.count_chat(example["messages"]) == _template_count(tokenizer_folder, example)


def test_without_a_template_the_output_says_approximate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, workdir: Path
) -> None:
    folder = _build_tokenizer(tmp_path / "no-template", template=False)
    counter = counter_for("local", str(folder))
    assert isinstance(counter, HFTokenizerCounter) and counter.exact is False
    data = _write(workdir / "train.jsonl", EXAMPLES)
    result = run_cli(capsys, "data", "validate", str(data), "--model", str(folder), "--min-examples", "1")
    assert result.code == 0, result.err
    assert "without its chat template (approximate)" in " ".join(result.out.split())


def test_a_model_not_in_the_cache_is_an_approximation(hub_cache: Path, workdir: Path) -> None:
    data = _write(workdir / "train.jsonl", EXAMPLES)
    proc = _validate_in_cache(hub_cache, str(data), "--model", "acme/not-cached", "--min-examples", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["tokens_exact"] is False and "approximation for acme/not-cached" in report["tokenizer"]


def test_an_example_the_template_refuses_keeps_its_estimate(tokenizer_folder: Path) -> None:
    counter = ChatTemplateCounter.load(tokenizer_folder, "t")
    assert counter is not None
    assert counter.count_chat([{"role": "user", "content": {"not": "text"}}]) in (None, *range(1, 100))
    # A template that raises (jinja2's raise_exception, a missing key) leaves the scanner's estimate.
    counter._tok.chat_template = "{{ raise_exception('no system messages') }}"
    assert counter.count_chat(EXAMPLES[0]["messages"]) is None
