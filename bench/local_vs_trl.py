"""anytune's local trainer against its strongest peers, on the same work, in one invocation.

The peers are TRL's ``SFTTrainer`` (three layouts) and, on CUDA, Unsloth. None is a dependency of
anytune; install them first::

    pip install -e ".[local]" -r bench/requirements.txt       # trl, datasets
    pip install -r bench/requirements-gpu.txt                 # CUDA: liger-kernel, kernels (flash-attn: see there)
    # Unsloth pins older transformers and trl than anytune uses: give it its own environment and
    # pass its interpreter with --unsloth-python (bench/gpu.sh does both)

Run::

    python bench/local_vs_trl.py                                        # CPU, ~34M-param Llama-shaped model
    python bench/local_vs_trl.py --device cuda --model qwen0.5b         # Qwen2.5-0.5B shape, bf16 LoRA
    python bench/local_vs_trl.py --device cuda --model llama8b          # Llama-3-8B shape, bf16 LoRA
    python bench/local_vs_trl.py --device cuda --model llama8b --quant 4bit   # QLoRA (NF4)
    bash bench/gpu.sh        # every GPU figure the README or an issue quotes, one JSON line each
    bash bench/gpu_wheels.sh # first, for a GPU machine without network (see bench/gpu.sh's header)

**Fixture.** A random-weight decoder (nothing is downloaded: ``tiny`` is written to disk like any
Hugging Face folder; the GPU shapes are built directly on the device from their config), a byte-level
BPE tokenizer trained on the fixture's own text, and a chat dataset whose turn lengths are
log-normal (long-tailed, like real SFT data), 35% of it multi-turn and 40% with a system prompt;
conversations longer than ``--max-length`` tokens are left out so that no trainer truncates, and the
count is a multiple of ``--batch-size``.

**The same work.**

* Targets: every run computes the loss on the assistant turns only. The fixture's ChatML template
  carries ``{% generation %}`` markers, which TRL's ``assistant_only_loss=True`` needs, and the bench
  checks that TRL's assistant mask and anytune's labels select the same tokens (the content and the
  end-of-turn token of each assistant message).
* Examples, in the same order: anytune's step ``s`` trains on the examples its seeded order gives
  (``anytune.local_backend.data.step_examples``). The peers get exactly those examples, in that order,
  with a sequential sampler (``train_sampling_strategy="sequential"``, ``shuffle_dataset=False``), so
  ``trl``, ``trl_padfree`` and ``unsloth`` train step for step on anytune's examples. Checked, not
  assumed: each run's per-step sequence lengths, read from its own batches, are compared with
  anytune's (``same_examples``; anytune's come from the indices its trainer asked for).
* Examples per step: measured for every run (sequences per optimizer step, counted in the batches).
  ``trl_packed`` is TRL's packing recipe (``packing=True``, ``packing_strategy="bfd"``) over the same
  ordered examples, ``round(batch * rows / examples)`` rows per step: about ``--batch-size`` examples
  per step, but packing regroups them, so it is TRL's recommended set-up rather than a step-for-step
  twin (its ``same_examples`` is null).
* Hyperparameters: LoRA r=16, alpha=32, dropout ``--lora-dropout`` (0.05) on every linear layer; lr
  2e-4, linear decay, no warm-up; AdamW (fused), gradient clipping at 1.0, the same seed.
* Threads: every run's process calls ``torch.set_num_threads`` with the count anytune's trainer picks
  (one per CPU core this process may use); each run records what it had.

**Peers at their best.**

* TRL: fp32 on CPU (as anytune), bf16 on CUDA; gradient checkpointing as anytune (off, on for QLoRA
  in every run). Three layouts: ``trl`` pads each batch to its longest row, ``trl_padfree`` is
  ``padding_free=True, packing=False`` (exactly ``--batch-size`` examples per step, flattened into
  one row; TRL wants ``max_length=None`` there, harmless as nothing is longer than ``--max-length``),
  ``trl_packed`` as above.
* Attention on CUDA: the first of ``--peer-attention`` that loads on the peer's model (default
  ``flash_attention_3``, ``flash_attention_2``, ``flex_attention``, ``sdpa``). transformers itself
  falls back to the kernels-hub builds (``kernels-community/vllm-flash-attn3``, ``.../flash-attn2``)
  when flash-attn is not installed but ``kernels`` is and the Hub answers; ``flex_attention`` builds
  block-sparse masks from the position ids of a padding-free row; ``sdpa``, the last resort, computes
  a padding-free row's dense block-diagonal mask. anytune on CUDA runs its own varlen attention
  (PyTorch's flash ``torch.nn.attention.varlen.varlen_attn``, one concatenated row per step). On CPU
  every run uses SDPA.
* Kernels on CUDA: ``use_liger_kernel=True`` where liger-kernel is installed (RMSNorm, RoPE, SwiGLU;
  TRL keeps its own chunked LM-head loss, as it requires); Liger's kernels are Triton, so not on CPU.
  The hub kernels of ``model_init_kwargs={"use_kernels": True}`` apply only to a model TRL loads
  itself, which these random models cannot be.
* Unsloth (``unsloth``, CUDA only): ``FastLanguageModel.from_pretrained`` on the random model saved
  to disk once (it loads from a folder; ``load_in_16bit`` or ``load_in_4bit``),
  ``FastLanguageModel.get_peft_model`` with the same LoRA and Unsloth's gradient checkpointing where
  the others checkpoint, then TRL's ``SFTTrainer`` as Unsloth patches it, padding-free, on the same
  ordered examples. Where Unsloth does not import, the run is skipped and the JSON says why. Its
  fast LoRA path takes the same dropout as the others (Unsloth fuses LoRA dropout into it by default,
  ``UNSLOTH_FUSED_LORA_DROPOUT``); ``--lora-dropout 0`` gives every run none.
* Every run reports what it ran with, read back from the model after training: the attention
  implementation (``config._attn_implementation``; for anytune also the kernel its varlen attention
  dispatches to), the implementations refused before it and why, and the module forwards that come
  from a kernel package (Liger, Unsloth).

**Measurement.** Each run is its own subprocess (peak RSS, ``torch.cuda.max_memory_allocated`` and
``max_memory_reserved`` are per run). ``--warmup`` optimizer steps are not timed, then ``--steps``
are; the clock is read, after ``torch.cuda.synchronize()``, only at the two edges of that window.
Every trainer logs every ``--warmup`` steps (reading the loss back waits for the device in each);
TRL also reads its token-accuracy and entropy metrics back at every step, a cost of TRL itself.
Throughput is real (non-padding) input tokens over the window's wall time. Compilation in the
window is counted, not assumed away: ``recompiles_in_window`` is the frames TorchDynamo compiled
between the window's edges (flex_attention, torch.compile), ``triton_compiles_in_window`` the
kernels Triton built then (Liger's, Inductor's: new entries in ``TRITON_CACHE_DIR``); the warm-up
steps are there so that both are 0. The Inductor and Triton caches live under the work directory
(``compile-cache/``), so a figure's compilations are its own or an earlier figure's of the same call.
The parent ends a run's whole process group on a timeout, SIGTERM or SIGINT, and a worker dies with
its parent (``PR_SET_PDEATHSIG``), so a stopped bench leaves no GPU process behind.

**MFU** (CUDA) = model FLOPs of the timed window / its seconds / the GPU's bf16 dense peak (H100
SXM, H200, GH200: 989 TFLOP/s; H100 PCIe: 756; A100: 312; any other GPU: omitted, with the reason).
A LoRA step computes no weight gradient for the frozen weights, so per token it costs
4(N - Vh) (forward 2, activation gradients 2, per frozen weight) + 6A (the adapters' forward,
activation and weight gradients); the LM head (V x h) runs only on the positions that have a label
(anytune's fused head and TRL's chunked one on CUDA both score just those), so it adds 4Vh per
target token; attention adds 12 x layers x hidden per causal (query, key) pair of each sequence
(forward 4, backward 8). Tokens, targets and pairs are the window's own, counted from each run's
batches. N: the frozen matmul parameters (LM head included, input embedding and biases not); A: the
adapter parameters; V, h: vocabulary and hidden size. Recomputation under gradient checkpointing is
not counted, nor is a head a trainer computes on positions without a label (model FLOPs, not
hardware FLOPs).

The last line printed is one JSON object: ``{"bench": "local_vs_trl", ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    # seconds: checks the bench itself
    "smoke": {
        "arch": "llama",
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "intermediate_size": 384,
        "vocab_size": 4096,
        "tie": False,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
    },
    # ~34M parameters: minutes on two CPU cores. A 32k vocabulary like Llama-2's: the LM head matters.
    "tiny": {
        "arch": "llama",
        "hidden_size": 384,
        "num_layers": 6,
        "num_heads": 6,
        "num_kv_heads": 2,
        "intermediate_size": 1024,
        "vocab_size": 32000,
        "tie": False,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
    },
    "qwen0.5b": {
        "arch": "qwen2",
        "hidden_size": 896,
        "num_layers": 24,
        "num_heads": 14,
        "num_kv_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151936,
        "tie": True,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
    },
    "llama8b": {
        "arch": "llama",
        "hidden_size": 4096,
        "num_layers": 32,
        "num_heads": 32,
        "num_kv_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "tie": False,
        "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
    },
}

# ChatML (as anytune's tiny models and Qwen use it) with the generation markers TRL needs for
# assistant-only loss. It renders exactly like anytune.local_backend.tiny.CHATML_TEMPLATE.
TRAINING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

LORA_R, LORA_ALPHA = 16, 32
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LEARNING_RATE = 2e-4
RESULT_TAG = "BENCH_RESULT "
PEER_ATTENTION = "flash_attention_3,flash_attention_2,flex_attention,sdpa"
RUNS_BY_DEVICE = {
    "cpu": ("anytune", "trl", "trl_padfree", "trl_packed"),
    "cuda": ("anytune", "trl", "trl_padfree", "trl_packed", "unsloth"),
}
GOAL_SPEEDUP = {"cpu": 1.5, "cuda": 1.3}
GOAL_MFU = 0.45  # llama8b bf16 LoRA, LoRA FLOPs (see the module docstring)
GOAL_QLORA_MIB = 10 * 1024  # llama8b QLoRA peak allocated GPU memory
# bf16 dense tensor-core peaks, matched on torch.cuda.get_device_name(): (all of, none of, FLOP/s, label).
PEAK_BF16_DENSE: tuple[tuple[tuple[str, ...], tuple[str, ...], float, str], ...] = (
    (("H200",), ("NVL",), 989e12, "H200/GH200 (989 TFLOP/s)"),
    (("H100",), ("PCIE", "NVL"), 989e12, "H100 SXM (989 TFLOP/s)"),
    (("H100", "PCIE"), (), 756e12, "H100 PCIe (756 TFLOP/s)"),
    (("A100",), (), 312e12, "A100 (312 TFLOP/s)"),
)
# Packages whose module forwards count as kernels a run used (read back from the trained model).
KERNEL_PACKAGES = ("liger_kernel", "unsloth", "unsloth_zoo", "kernels", "flash_attn")
MFU_FORMULA = (
    "window FLOPs / s / bf16 dense peak; FLOPs = tokens*(4(N - V*h) + 6A) + targets*4V*h "
    "+ 12*layers*hidden*causal_pairs; N frozen matmul params (LM head V*h in, input embedding out), "
    "A LoRA adapter params, targets = labelled positions; no recompute"
)


# -- pure helpers (unit-tested in tests/test_bench_local_vs_trl.py) ---------------------------------


def gpu_peak_flops(device_name: str) -> tuple[float | None, str]:
    """The bf16 dense peak of the GPU ``torch.cuda.get_device_name()`` calls ``device_name``.

    Returns (FLOP/s, what matched), or (None, why MFU is left out) for a GPU without a figure here.
    """
    name = device_name.upper()
    for need, refuse, peak, label in PEAK_BF16_DENSE:
        if all(s in name for s in need) and not any(s in name for s in refuse):
            return peak, label
    return None, f"no bf16 dense peak on record for {device_name!r}: MFU omitted"


def linear_shapes(shape: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(in, out) features of one decoder layer's linears: q, k, v, o, gate, up, down."""
    h, inter = int(shape["hidden_size"]), int(shape["intermediate_size"])
    kv = int(shape["num_kv_heads"]) * (h // int(shape["num_heads"]))
    return [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]


def flop_counts(shape: Mapping[str, Any], rank: int) -> dict[str, int]:
    """LoRA FLOPs of ``shape`` with adapters of ``rank`` on every linear layer.

    ``per_token``: 4(N - Vh) + 6A, the decoder's frozen matmuls and the adapters; ``per_target``:
    4Vh, the LM head, on the positions that have a label only; ``per_pair``: attention FLOPs per
    causal (query, key) pair, forward and backward, all layers (see the module docstring).
    """
    layers, h = int(shape["num_layers"]), int(shape["hidden_size"])
    linears = linear_shapes(shape)
    head = int(shape["vocab_size"]) * h
    frozen = layers * sum(i * o for i, o in linears) + head
    adapter = layers * rank * sum(i + o for i, o in linears)
    return {
        "frozen_params": frozen,
        "adapter_params": adapter,
        "head_params": head,
        "per_token": 4 * (frozen - head) + 6 * adapter,
        "per_target": 4 * head,
        "per_pair": 12 * layers * h,
    }


def window_flops(counts: Mapping[str, int], tokens: int, targets: int, pairs: int) -> int:
    """Model FLOPs of a window of ``tokens`` input tokens, ``targets`` labelled positions, ``pairs`` pairs."""
    return tokens * counts["per_token"] + targets * counts["per_target"] + pairs * counts["per_pair"]


def causal_pairs(lengths: Iterable[int]) -> int:
    """(query, key) pairs causal attention computes over sequences of these lengths."""
    return sum(n * (n + 1) // 2 for n in lengths)


def lengths_from_cu(cu: Sequence[int]) -> list[int]:
    """Sequence lengths from cumulative boundaries ``[0, a, b, ...]`` (flash varlen's ``cu_seqlens``)."""
    return [b - a for a, b in itertools.pairwise(cu) if b > a]


def lengths_from_positions(positions: Sequence[int]) -> list[int]:
    """Sequence lengths in a padding-free row: each sequence's position ids restart at 0."""
    starts = [i for i, p in enumerate(positions) if p == 0]
    return lengths_from_cu([*starts, len(positions)]) if starts else []


def lengths_from_mask(rows: Sequence[Sequence[int]]) -> list[int]:
    """Sequence lengths of a right-padded batch: the ones of each attention-mask row."""
    return [n for n in (int(sum(row)) for row in rows) if n > 0]


def window_figures(
    per_step: Sequence[Sequence[int]], targets: Sequence[int], warmup: int, steps: int
) -> dict[str, Any]:
    """Tokens, targets, causal pairs and examples per step of the timed steps.

    ``per_step``: each step's sequence lengths; ``targets``: each step's labelled positions.
    """
    timed = [list(s) for s in per_step[warmup : warmup + steps]]
    return {
        "steps": len(timed),
        "tokens": sum(sum(s) for s in timed),
        "targets": sum(targets[warmup : warmup + steps]),
        "pairs": sum(causal_pairs(s) for s in timed),
        "examples_per_step": round(sum(len(s) for s in timed) / len(timed), 2) if timed else None,
    }


def batch_targets(batch: Mapping[str, Any]) -> int:
    """Positions of a collated batch that have a label, as the loss sees them (labels shifted by one)."""
    if "shift_labels" in batch:
        return int((batch["shift_labels"] != -100).sum())
    if "labels" in batch:
        return int((batch["labels"][:, 1:] != -100).sum())
    return 0


def same_examples(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> bool:
    """Whether two runs' timed steps hold sequences of the same lengths, step for step."""
    return len(a) == len(b) and all(sorted(x) == sorted(y) for x, y in zip(a, b, strict=True))


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation, or None without a peak or a time."""
    if not peak or seconds <= 0:
        return None
    return round(flops / seconds / peak, 4)


def compile_counters() -> dict[str, int | None]:
    """Compilations so far in this process: TorchDynamo frames, and Triton kernels in ``TRITON_CACHE_DIR``."""
    utils = sys.modules.get("torch._dynamo.utils")  # not imported: nothing was compiled
    frames = int(utils.counters["frames"]["total"]) if utils is not None else 0
    cache = os.environ.get("TRITON_CACHE_DIR")  # one entry per kernel built; made at the first one
    kernels = (len(os.listdir(cache)) if os.path.isdir(cache) else 0) if cache else None
    return {"dynamo_frames": frames, "triton_kernels": kernels}


def compiles_between(before: Mapping[str, int | None], after: Mapping[str, int | None]) -> dict[str, int | None]:
    """What was compiled between two :func:`compile_counters` readings (None: not measurable)."""
    triton = None
    if before.get("triton_kernels") is not None and after.get("triton_kernels") is not None:
        triton = int(after["triton_kernels"] or 0) - int(before["triton_kernels"] or 0)
    return {
        "recompiles_in_window": int(after["dynamo_frames"] or 0) - int(before["dynamo_frames"] or 0),
        "triton_compiles_in_window": triton,
    }


def default_threads() -> int:
    """The intra-op threads anytune's trainer takes on CPU (one per core this process may use)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# -- fixture -----------------------------------------------------------------------------------------


def _lexicon(rng: random.Random, size: int) -> list[str]:
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "ck"]
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choices([1, 2, 3, 4], weights=[30, 40, 22, 8])[0]
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables)))
    return sorted(words)


def _conversations(n: int, seed: int) -> list[dict[str, Any]]:
    """Chat examples with log-normal (long-tailed) turn lengths, some multi-turn, some with a system prompt."""
    rng = random.Random(seed)
    words = _lexicon(rng, 8000)
    cum: list[float] = []
    total = 0.0
    for rank in range(len(words)):
        total += 1.0 / (rank + 1) ** 1.07  # Zipf-like word frequencies
        cum.append(total)

    def text(mu_words: float, sigma: float, cap: int) -> str:
        count = max(1, min(cap, int(rng.lognormvariate(math.log(mu_words), sigma))))
        out = rng.choices(words, cum_weights=cum, k=count)
        sentence: list[str] = []
        pieces: list[str] = []
        for w in out:
            sentence.append(w)
            if len(sentence) >= rng.randint(6, 18):
                pieces.append(" ".join(sentence).capitalize() + rng.choice([".", ".", ".", "?", "!", ","]))
                sentence = []
        if sentence:
            pieces.append(" ".join(sentence).capitalize() + ".")
        return " ".join(pieces)

    convs = []
    for _ in range(n):
        messages: list[dict[str, str]] = []
        if rng.random() < 0.4:
            messages.append({"role": "system", "content": text(12, 0.6, 60)})
        turns = rng.choices([1, 2, 3, 4], weights=[65, 20, 10, 5])[0]
        for _ in range(turns):
            messages.append({"role": "user", "content": text(22, 1.0, 400)})
            messages.append({"role": "assistant", "content": text(60, 1.0, 450)})
        convs.append({"messages": messages})
    return convs


def _model_config(shape: dict[str, Any], eos_id: int, bos_id: int) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    common = {
        "vocab_size": shape["vocab_size"],
        "hidden_size": shape["hidden_size"],
        "intermediate_size": shape["intermediate_size"],
        "num_hidden_layers": shape["num_layers"],
        "num_attention_heads": shape["num_heads"],
        "num_key_value_heads": shape["num_kv_heads"],
        "max_position_embeddings": shape["max_position_embeddings"],
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
        "rms_norm_eps": 1e-6,
        "rope_theta": shape["rope_theta"],
        "tie_word_embeddings": shape["tie"],
    }
    if shape["arch"] == "qwen2":
        return Qwen2Config(use_sliding_window=False, **common)
    return LlamaConfig(**common)


def build_fixture(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Write the model folder (tokenizer, config, and weights for ``tiny``), ``train.jsonl`` and the plan.

    ``fixture.json`` holds the figures the runs share: each example's length, anytune's order of
    examples for every step (the peers train on it), the packed run's rows per step, the threads.
    """
    import numpy as np
    from transformers import AutoTokenizer

    from anytune.local_backend import data as D
    from anytune.local_backend.tiny import build_tiny_model

    folder.mkdir(parents=True, exist_ok=True)
    model_dir = folder / "model"
    pool = _conversations(int(args.examples * 1.5) + 64, args.seed)
    texts = [m["content"] for c in pool for m in c["messages"]]
    # A throwaway 1-layer model gives the tokenizer files (BPE trained on the fixture's text).
    build_tiny_model(
        model_dir,
        hidden_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        texts=texts,
        vocab_size=min(SHAPES[args.model]["vocab_size"], 32000),
        seed=args.seed,
    )
    for f in model_dir.glob("*.safetensors"):
        f.unlink()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = TRAINING_TEMPLATE
    tokenizer.save_pretrained(model_dir)

    examples, lengths, targets = [], [], []
    for conv in pool:
        enc = D.encode_conversation(tokenizer, conv["messages"])
        if len(enc) > args.max_length:
            continue
        examples.append(conv)
        lengths.append(len(enc))
        targets.append(enc.num_targets)
        if len(examples) == args.examples:
            break
    # Whole steps only: anytune's last step of an epoch may be short, which a peer's sampler would not copy.
    keep = len(examples) - len(examples) % args.batch_size
    examples, lengths, targets = examples[:keep], lengths[:keep], targets[:keep]
    # TRL's assistant mask must select the tokens anytune learns (checked on a sample).
    mismatched = 0
    for conv in examples[:64]:
        enc = D.encode_conversation(tokenizer, conv["messages"])
        out = tokenizer.apply_chat_template(
            conv["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        mask = np.asarray(out["assistant_masks"], dtype=bool)
        mismatched += int(list(out["input_ids"]) != enc.input_ids.tolist() or not np.array_equal(mask, enc.learn))
    with (folder / "train.jsonl").open("w", encoding="utf-8") as f:
        for conv in examples:
            f.write(json.dumps(conv) + "\n")

    shape = SHAPES[args.model]
    config = _model_config(shape, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    config.save_pretrained(model_dir)
    if args.model in ("tiny", "smoke") and args.device == "cpu":
        import torch

        torch.manual_seed(args.seed)
        model = random_model(config, torch.device("cpu"), torch.float32, quant4=False)
        model.save_pretrained(model_dir)
        del model
    # The order anytune's trainer will take the examples in (a pure function of seed and step).
    order = [D.step_examples(len(examples), args.batch_size, args.seed, s) for s in range(args.warmup + args.steps)]
    ordered_lengths = [lengths[i] for step in order for i in step]
    rows = len(D.pack_best_fit(ordered_lengths, args.max_length))
    lengths_arr = np.asarray(lengths, dtype=np.float64)
    stats = {
        "examples": len(examples),
        "tokens": int(lengths_arr.sum()),
        "targets": int(sum(targets)),
        "mean_len": round(float(lengths_arr.mean()), 1),
        "median_len": float(np.median(lengths_arr)),
        "p90_len": round(float(np.percentile(lengths_arr, 90)), 1),
        "max_len": int(lengths_arr.max()),
        "multi_turn": sum(sum(m["role"] == "assistant" for m in c["messages"]) > 1 for c in examples),
        "mask_mismatches": mismatched,
        "packed_rows_per_step": max(1, round(args.batch_size * rows / len(ordered_lengths))),
        "threads": default_threads(),
        "lengths": lengths,
        "targets_per_example": targets,
        "order": order,
    }
    (folder / "fixture.json").write_text(json.dumps(stats))
    return stats


# -- models ------------------------------------------------------------------------------------------


def random_model(config: Any, device: Any, dtype: Any, *, quant4: bool) -> Any:
    """A randomly initialised causal LM built directly on ``device`` (4-bit NF4 linears if ``quant4``).

    The LM head gets unit-variance logits (std 1/sqrt(hidden)), as ``build_tiny_model`` does, so that a
    LoRA adapter can visibly lower the loss of a random model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if quant4:
        model = _random_4bit(config, device, dtype)
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0.0, config.hidden_size**-0.5)
    return model


def _random_4bit(config: Any, device: Any, dtype: Any) -> Any:
    """QLoRA's base without a checkpoint: each linear layer is made in 16-bit, quantized to NF4, freed.

    Matches what ``from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True,
    bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, ...))`` gives: 4-bit decoder linears,
    16-bit embeddings, norms and LM head; peak memory stays near the 4-bit size.
    """
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    head = model.get_output_embeddings()
    storage = dtype if device.type == "cuda" else torch.uint8
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear) or child is head:
                continue
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=dtype,
                compress_statistics=True,
                quant_type="nf4",
                quant_storage=storage,
                device="meta",
            )
            w = torch.empty(child.out_features, child.in_features, dtype=dtype, device=device).normal_(0.0, 0.02)
            layer.weight = bnb.nn.Params4bit(
                w, requires_grad=False, compress_statistics=True, quant_type="nf4", quant_storage=storage, module=layer
            ).to(device)
            del w
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(
                    torch.zeros(child.out_features, dtype=dtype, device=device), requires_grad=False
                )
            setattr(parent, name, layer)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if "RotaryEmbedding" in type(child).__name__:
                with torch.device(device):
                    setattr(parent, name, type(child)(config=config))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                continue
            if any(t.is_meta for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))):
                module.to_empty(device=device, recurse=False)
                for pname, p in module.named_parameters(recurse=False):
                    if p.dim() == 1:
                        p.fill_(1.0 if "weight" in pname else 0.0)
                    else:
                        p.normal_(0.0, 0.02)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.is_loaded_in_4bit = True
    return model


def _install_random_loader(device: Any, seed: int) -> None:
    """Make ``AutoModelForCausalLM.from_pretrained`` build the fixture's config with random weights.

    The GPU shapes are far too big to write to disk and read back for a speed benchmark: anytune's
    loader gets the same random model, built on the device, that the TRL run is handed.
    """
    import torch
    import transformers

    original = transformers.AutoModelForCausalLM.from_pretrained

    def from_pretrained(source: str, *args: Any, **kwargs: Any) -> Any:
        config = transformers.AutoConfig.from_pretrained(source)
        if (Path(source) / "model.safetensors").exists():
            return original(source, *args, **kwargs)
        qc = kwargs.get("quantization_config")
        quant4 = bool(qc is not None and getattr(qc, "load_in_4bit", False))
        torch.manual_seed(seed)
        return random_model(config, device, kwargs.get("dtype", torch.bfloat16), quant4=quant4)

    transformers.AutoModelForCausalLM.from_pretrained = from_pretrained  # type: ignore[method-assign]


# -- the runs (each in its own process) -------------------------------------------------------------


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _checkpointing(args: argparse.Namespace) -> bool:
    if args.gradient_checkpointing == "auto":
        return bool(args.quant == "4bit")  # QLoRA is chosen for memory: every run recomputes activations
    return bool(args.gradient_checkpointing == "on")


def _start_worker(stats: Mapping[str, Any]) -> Any:
    """Import torch and give this run the threads every run gets."""
    import torch

    torch.set_num_threads(int(stats["threads"]))
    return torch


def _memory(torch: Any, cuda: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"peak_rss_mib": _peak_rss_mib(), "threads": torch.get_num_threads()}
    if cuda:
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        out["device_name"] = torch.cuda.get_device_name()
    return out


def _base_model(model: Any) -> Any:
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def attention_in_use(model: Any) -> str | None:
    """The attention implementation ``model`` runs with, as its config says (not as it was asked)."""
    return getattr(_base_model(model).config, "_attn_implementation", None)


def patched_kernels(model: Any) -> list[str]:
    """Module forwards (and the modeling module's RoPE) of ``model`` that come from a kernel package."""
    found: set[str] = set()

    def note(fn: Any) -> None:
        fn = getattr(fn, "__func__", fn)
        package = (getattr(fn, "__module__", None) or "").split(".")[0]
        if package in KERNEL_PACKAGES:
            found.add(f"{package}:{getattr(fn, '__qualname__', getattr(fn, '__name__', '?'))}")

    for module in model.modules():
        note(module.__dict__.get("forward") or type(module).forward)
    modeling = sys.modules.get(type(_base_model(model)).__module__)
    note(getattr(modeling, "apply_rotary_pos_emb", None))
    return sorted(found)


def use_best_attention(model: Any, candidates: Sequence[str]) -> list[str]:
    """Switch ``model`` to the first of ``candidates`` that loads here; say why the ones before it did not."""
    refused: list[str] = []
    for impl in candidates:
        try:
            model.set_attn_implementation(impl)
        except Exception as exc:  # each implementation fails in its own words (ImportError, ValueError, Hub errors)
            refused.append(f"{impl}: {type(exc).__name__}: {_first_line(exc)}")
        else:
            break
    return refused


def run_anytune(fixture: Path, args: argparse.Namespace, stats: dict[str, Any]) -> dict[str, Any]:
    torch = _start_worker(stats)
    import anytune.local_backend.train as T
    from anytune._spec import JobSpec
    from anytune.local_backend import data as D
    from anytune.local_backend import model as M
    from anytune.local_backend.rundir import RunDir

    cuda = args.device == "cuda"
    _install_random_loader(torch.device(args.device), args.seed)
    # Read back, from the trainer itself, which examples each step took and what the model ran with.
    asked: list[list[int]] = []
    seen: dict[str, Any] = {}
    edges: list[dict[str, int | None]] = []
    step_examples, load_for_training = D.step_examples, T.load_for_training

    def recording_step_examples(n: int, batch: int, seed: int, step: int) -> list[int]:
        if step == args.warmup and not edges:  # the trainer asks as each step starts: the window opens
            edges.append(compile_counters())
        out = [int(i) for i in step_examples(n, batch, seed, step)]
        asked.append(out)
        return out

    def recording_load(*a: Any, **k: Any) -> Any:
        lm = load_for_training(*a, **k)
        seen.update(attn_implementation=attention_in_use(lm.model), layout=lm.layout, kernels=patched_kernels(lm.model))
        return lm

    D.step_examples = recording_step_examples
    T.load_for_training = recording_load
    steps = args.warmup + args.steps
    spec = JobSpec.model_validate(
        {
            "base_model": str(fixture / "model"),
            "training_file": str(fixture / "train.jsonl"),
            "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "dropout": args.lora_dropout, "target_modules": "all-linear"},
            "quantization": "4bit" if args.quant == "4bit" else "none",
            "hyperparameters": {
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "max_steps": steps,
                "learning_rate": LEARNING_RATE,
                "warmup_steps": 0,
                "seed": args.seed,
            },
            "local": {
                "device": args.device,
                "logging_steps": args.warmup,
                "gradient_checkpointing": _checkpointing(args),
            },
        }
    )
    run = RunDir(Path(tempfile.mkdtemp(prefix="anytune-bench-")) / "run")
    run.create(spec, idempotency_key="bench")
    try:
        result = T.run_training(run)
        edges.append(compile_counters())
        points = [json.loads(line) for line in run.metrics_file.read_text().splitlines() if line.strip()]
    finally:
        shutil.rmtree(run.path.parent, ignore_errors=True)
    first = points[0]  # the warm-up window
    warm_seconds = first["tokens_seen"] / first["tokens_per_second"]
    lengths, targets = stats["lengths"], stats["targets_per_example"]
    per_step = [[lengths[i] for i in step] for step in asked]
    step_targets = [sum(targets[i] for i in step) for step in asked]
    figures = window_figures(per_step, step_targets, args.warmup, args.steps)
    tokens = result["train_tokens"] - first["tokens_seen"]
    if seen.get("layout") == "varlen":
        varlen, _ = M._torch_varlen()  # the kernel anytune's varlen attention calls on CUDA
        kernel = "torch.nn.attention.varlen.varlen_attn" if cuda and varlen is not None else "sdpa, per sequence"
    else:
        kernel = str(seen.get("attn_implementation"))
    return {
        **figures,
        "tokens": tokens,
        "tokens_match_batches": tokens == figures["tokens"],
        "seconds": round(result["train_seconds"] - warm_seconds, 3),
        "steps": result["steps"] - args.warmup,
        "step_lengths": per_step[args.warmup : steps],
        "step_targets": step_targets[args.warmup : steps],
        **compiles_between(edges[0], edges[-1]),
        "order_as_planned": asked == stats["order"][: len(asked)],
        "final_loss": result["final_train_loss"],
        **_memory(torch, cuda),
        "layout": result["layout"],
        "gradient_checkpointing": result["gradient_checkpointing"],
        "attn_implementation": seen.get("attn_implementation"),
        "attention_kernel": kernel,
        "kernels": seen.get("kernels", []),
    }


def _peer_model(fixture: Path, args: argparse.Namespace, dtype: Any) -> Any:
    """The base model a peer trains: ``tiny``/``smoke`` from disk, the GPU shapes built like anytune's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    quant4 = args.quant == "4bit"
    if (fixture / "model" / "model.safetensors").exists():
        extra: dict[str, Any] = {}
        if quant4:
            from transformers import BitsAndBytesConfig

            extra = {
                "device_map": {"": args.device},
                "quantization_config": BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=dtype,
                    bnb_4bit_quant_storage=dtype if args.device == "cuda" else torch.uint8,
                ),
            }
        return AutoModelForCausalLM.from_pretrained(fixture / "model", dtype=dtype, **extra)
    config = AutoConfig.from_pretrained(fixture / "model")
    return random_model(config, torch.device(args.device), dtype, quant4=quant4)


def run_trl(fixture: Path, args: argparse.Namespace, stats: dict[str, Any], *, layout: str) -> dict[str, Any]:
    torch = _start_worker(stats)
    from peft import LoraConfig
    from transformers import AutoTokenizer

    cuda = args.device == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(fixture / "model")
    torch.manual_seed(args.seed)
    model = _peer_model(fixture, args, torch.bfloat16 if cuda else torch.float32)
    refused = use_best_attention(model, [a for a in args.peer_attention.split(",") if a]) if cuda else []
    model.config.use_cache = False
    liger = cuda and importlib.util.find_spec("liger_kernel") is not None
    peft_config = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=args.lora_dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    out = train_sft(
        model,
        tokenizer,
        fixture,
        args,
        stats,
        layout=layout,
        peft_config=peft_config,
        liger=liger,
        checkpointing=_checkpointing(args),
    )
    out["attention_refused"] = refused
    out["liger"] = "on" if liger else ("not on CPU (Triton kernels)" if not cuda else "liger-kernel not installed")
    return out


def _sequential(trainer_cls: Any) -> Any:
    """``trainer_cls`` taking its dataset in order (for a transformers without ``train_sampling_strategy``)."""

    class Sequential(trainer_cls):  # type: ignore[misc]
        def _get_train_sampler(self, *a: Any, **k: Any) -> Any:
            from torch.utils.data import SequentialSampler

            return SequentialSampler(a[0] if a and a[0] is not None else self.train_dataset)

    return Sequential


def batch_lengths(batch: Mapping[str, Any]) -> list[int]:
    """The sequence lengths of one collated batch, whatever its layout."""
    if "cu_seq_lens_q" in batch:
        return lengths_from_cu([int(x) for x in batch["cu_seq_lens_q"].tolist()])
    if "attention_mask" in batch:
        return lengths_from_mask(batch["attention_mask"].tolist())
    if "position_ids" in batch:
        return [n for row in batch["position_ids"].tolist() for n in lengths_from_positions(row)]
    return [len(row) for row in batch["input_ids"].tolist()]


def train_sft(
    model: Any,
    tokenizer: Any,
    fixture: Path,
    args: argparse.Namespace,
    stats: dict[str, Any],
    *,
    layout: str,
    peft_config: Any,
    liger: bool,
    checkpointing: bool,
) -> dict[str, Any]:
    """Train with TRL's ``SFTTrainer`` (as installed: Unsloth patches it) on anytune's ordered examples."""
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = args.device == "cuda"
    examples = [json.loads(line) for line in (fixture / "train.jsonl").read_text().splitlines() if line.strip()]
    ordered = [examples[i] for step in stats["order"] for i in step]
    rows = stats["packed_rows_per_step"] if layout == "packed" else args.batch_size
    total = args.warmup + args.steps
    out_dir = tempfile.mkdtemp(prefix="trl-bench-")
    options: dict[str, Any] = {
        "output_dir": out_dir,
        "max_steps": total,
        "per_device_train_batch_size": rows,
        "gradient_accumulation_steps": 1,
        "learning_rate": LEARNING_RATE,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "optim": "adamw_torch_fused",
        "seed": args.seed,
        "data_seed": args.seed,
        "bf16": cuda,
        "fp16": False,
        "use_cpu": not cuda,
        "gradient_checkpointing": checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if checkpointing else None,
        # padding-free without packing does not truncate, so TRL wants no max_length there
        "max_length": None if layout == "padding_free" else args.max_length,
        "packing": layout == "packed",
        "packing_strategy": "bfd",
        "padding_free": layout == "padding_free",
        "shuffle_dataset": False,
        "assistant_only_loss": True,
        "use_liger_kernel": liger,
        "logging_steps": args.warmup,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    trainer_cls: Any = SFTTrainer
    if "train_sampling_strategy" in fields:
        options["train_sampling_strategy"] = "sequential"
    else:
        trainer_cls = _sequential(trainer_cls)
    config = SFTConfig(**options)
    marks: dict[int, float] = {}
    compiled: dict[int, dict[str, int | None]] = {}
    edges = (args.warmup, total)

    class Timer(TrainerCallback):
        """Reads the clock (and the compile counters) at the two edges of the timed window only."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in edges:
                if cuda:
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()
                compiled[state.global_step] = compile_counters()

    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(ordered),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Timer()],
    )
    per_step: list[list[int]] = []
    step_targets: list[int] = []
    collate = trainer.data_collator

    def counting(features: list[dict[str, Any]]) -> Any:
        batch = collate(features)
        per_step.append(batch_lengths(batch))
        step_targets.append(batch_targets(batch))
        return batch

    trainer.data_collator = counting
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        **window_figures(per_step, step_targets, args.warmup, args.steps),
        "seconds": round(marks[total] - marks[args.warmup], 3),
        "rows_per_step": rows,
        "step_lengths": per_step[args.warmup : total],
        "step_targets": step_targets[args.warmup : total],
        **compiles_between(compiled[args.warmup], compiled[total]),
        "final_loss": losses[-1] if losses else None,
        **_memory(torch, cuda),
        "layout": layout,
        "padding_free": bool(getattr(trainer, "padding_free", config.padding_free)),
        "gradient_checkpointing": bool(config.gradient_checkpointing),
        "attn_implementation": attention_in_use(trainer.model),
        "kernels": patched_kernels(trainer.model),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }


def _model_on_disk(fixture: Path, args: argparse.Namespace) -> Path:
    """The random GPU-shaped model saved once as a Hugging Face folder (Unsloth loads from one)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    folder = fixture.parent / f"unsloth-{args.model}-seed{args.seed}"
    if (folder / "complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    torch.manual_seed(args.seed)
    model = random_model(
        AutoConfig.from_pretrained(fixture / "model"), torch.device(args.device), torch.bfloat16, quant4=False
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(fixture / "model").save_pretrained(folder)
    del model
    (folder / "complete").write_text("")
    return folder


def run_unsloth(fixture: Path, args: argparse.Namespace, stats: dict[str, Any]) -> dict[str, Any]:
    if args.device != "cuda":
        return {"skipped": "Unsloth runs on CUDA only"}
    try:
        import unsloth  # first: it patches transformers and trl as it is imported
        from unsloth import FastLanguageModel
    except Exception as exc:  # not installed, or no GPU it supports: the run is skipped, saying why
        return {"skipped": f"unsloth does not import with {sys.executable}: {type(exc).__name__}: {_first_line(exc)}"}
    torch = _start_worker(stats)
    from transformers import AutoTokenizer

    folder = _model_on_disk(fixture, args)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()  # the copy written to disk is not part of Unsloth's run
    checkpointing = _checkpointing(args)
    model, _ = FastLanguageModel.from_pretrained(
        model_name=str(folder),
        max_seq_length=args.max_length,
        dtype=torch.bfloat16,
        load_in_4bit=args.quant == "4bit",
        load_in_16bit=args.quant != "4bit",
        fix_tokenizer=False,
        use_gradient_checkpointing="unsloth" if checkpointing else False,
        random_state=args.seed,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=LORA_R,
        target_modules=list(LORA_TARGETS),
        lora_alpha=LORA_ALPHA,
        lora_dropout=args.lora_dropout,
        bias="none",
        use_gradient_checkpointing="unsloth" if checkpointing else False,
        random_state=args.seed,
    )
    tokenizer = AutoTokenizer.from_pretrained(fixture / "model")  # the fixture's, untouched
    # Unsloth checkpoints inside its own layers (get_peft_model above), not through the Trainer's switch.
    out = train_sft(
        model,
        tokenizer,
        fixture,
        args,
        stats,
        layout="padding_free",
        peft_config=None,
        liger=False,
        checkpointing=False,
    )
    out["gradient_checkpointing"] = "unsloth" if checkpointing else False
    utils = sys.modules.get("unsloth.models._utils")  # where Unsloth records the attention kernels it found
    out["unsloth"] = {
        "version": getattr(unsloth, "__version__", None),
        "flash_attn": getattr(utils, "HAS_FLASH_ATTENTION", None),
        "xformers": getattr(utils, "xformers", None) is not None,  # the module, or None where it did not load
    }
    return out


RUNS = {
    "anytune": run_anytune,
    "trl": lambda fx, a, s: run_trl(fx, a, s, layout="padded"),
    "trl_padfree": lambda fx, a, s: run_trl(fx, a, s, layout="padding_free"),
    "trl_packed": lambda fx, a, s: run_trl(fx, a, s, layout="packed"),
    "unsloth": run_unsloth,
}


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` does, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent and os.getppid() != parent:  # the parent was gone before the request took effect
        os._exit(1)


def worker(name: str, fixture: Path, args: argparse.Namespace) -> None:
    die_with_parent(args.parent_pid)
    stats = json.loads((fixture / "fixture.json").read_text())
    out = RUNS[name](fixture, args, stats)
    print(RESULT_TAG + json.dumps(out), flush=True)


# -- the parent --------------------------------------------------------------------------------------


# The worker running now, whose process group a signal to the parent ends (see stop_on_signals).
_ACTIVE: list[subprocess.Popen[bytes]] = []


def _reaped(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` has exited, reaping it without ``Popen``'s lock (a signal handler may interrupt
    ``proc.wait()`` while it holds that lock, and ``proc.wait()`` again would then deadlock)."""
    if proc.returncode is not None:
        return True
    try:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
    except ChildProcessError:  # reaped already
        return True
    if pid == 0:
        return False
    proc.returncode = os.waitstatus_to_exitcode(status)
    return True


def end_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """End ``proc``'s process group: SIGTERM and ``grace`` seconds to exit (0: SIGKILL at once), then
    SIGKILL for whatever is left in the group (what the worker started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    deadline = time.monotonic() + grace
    while not _reaped(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    while not _reaped(proc):
        time.sleep(0.05)


def stop_on_signals() -> None:
    """On SIGTERM or SIGINT, end the active worker's process group (its own session), then exit 128+signal."""

    def handler(signum: int, frame: Any) -> None:
        for proc in list(_ACTIVE):
            end_group(proc)
        print(f"stopped by signal {signum}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def worker_command(name: str, fixture: Path, args: argparse.Namespace) -> list[str]:
    """The command line of run ``name``'s worker: this script, with the options the parent was given."""
    python = args.unsloth_python if name == "unsloth" else sys.executable
    return [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--fixture",
        str(fixture),
        "--parent-pid",
        str(os.getpid()),
        *args.argv,
    ]


def _spawn(
    name: str, fixture: Path, args: argparse.Namespace, log: Path, timeout: float | None
) -> tuple[dict[str, Any] | None, str]:
    """Run ``name`` in its own process (its own session, so a timeout or a signal ends all it started)."""
    cmd = worker_command(name, fixture, args)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    # Compiled kernels stay with the bench's files, not in the user's caches (and a later run reuses them).
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(log.parent / "compile-cache" / "inductor"))
    env.setdefault("TRITON_CACHE_DIR", str(log.parent / "compile-cache" / "triton"))
    if name == "unsloth":
        env["HF_HUB_OFFLINE"] = "1"  # its model is a local folder; no update checks mid-benchmark
    started = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _ACTIVE.append(proc)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            end_group(proc, grace=0)
            return None, f"timed out after {timeout:.0f}s (log: {log})"
        finally:
            _ACTIVE.remove(proc)
    text = log.read_text(errors="replace")
    for line in text.splitlines()[::-1]:
        if line.startswith(RESULT_TAG):
            res: dict[str, Any] = json.loads(line[len(RESULT_TAG) :])
            res["wall_s"] = round(time.perf_counter() - started, 1)
            return res, ""
    tail = [line for line in text.splitlines() if line.strip()][-1:] or [""]
    print(f"  {name} failed (exit {code}); last lines of {log}:", file=sys.stderr)
    print("\n".join(text.splitlines()[-25:]), file=sys.stderr)
    return None, f"exit {code}: {tail[0][:300]}"


def _derive(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-run tokens/s, MFU and same-examples check; the device and its peak."""
    counts = flop_counts(SHAPES[args.model], LORA_R)
    device_name = next((r["device_name"] for r in results.values() if r.get("device_name")), None)
    peak, peak_note = gpu_peak_flops(device_name) if device_name else (None, "no GPU")
    reference = results.get("anytune", {}).get("step_lengths")
    reference_targets = results.get("anytune", {}).get("step_targets")
    for name, r in results.items():
        r["tokens_per_s"] = round(r["tokens"] / r["seconds"], 1) if r["seconds"] > 0 else None
        flops = window_flops(counts, r["tokens"], r["targets"], r["pairs"])
        r["model_tflops_per_s"] = round(flops / r["seconds"] / 1e12, 2) if r["seconds"] > 0 else None
        r["mfu"] = mfu(flops, r["seconds"], peak) if args.device == "cuda" else None
        if name == "anytune" or name == "trl_packed" or reference is None:
            r["same_examples"] = r["same_targets"] = None if name != "anytune" else True
        else:
            r["same_examples"] = same_examples(r["step_lengths"], reference)
            # The assistant-only mask selects the same positions: each step's label count is anytune's.
            r["same_targets"] = r.get("step_targets") == reference_targets
    return {"device_name": device_name, "peak_flops": peak, "peak": peak_note, **counts}


RUN_FIELDS = (
    "tokens_per_s",
    "tokens",
    "targets",
    "seconds",
    "steps",
    "examples_per_step",
    "rows_per_step",
    "same_examples",
    "same_targets",
    "order_as_planned",
    "recompiles_in_window",
    "triton_compiles_in_window",
    "tokens_match_batches",
    "peak_rss_mib",
    "peak_gpu_mib",
    "peak_gpu_reserved_mib",
    "model_tflops_per_s",
    "mfu",
    "final_loss",
    "gradient_checkpointing",
    "layout",
    "padding_free",
    "attn_implementation",
    "attention_kernel",
    "attention_refused",
    "kernels",
    "liger",
    "unsloth",
    "threads",
    "versions",
    "wall_s",
)


def _print_table(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    gpu = args.device == "cuda"
    header = f"{'run':<12} {'tok/s':>9} {'ex/step':>7} {'same ex':>7} {'peak RSS MiB':>12}"
    header += f" {'GPU alloc MiB':>13} {'reserved':>9} {'MFU':>6}" if gpu else ""
    header += f" {'final loss':>10} {'steps':>5} {'wall s':>6}"
    print("\n" + header)
    for name, r in results.items():
        same = {True: "yes", False: "NO", None: "-"}[r.get("same_examples")]
        line = f"{name:<12} {r['tokens_per_s'] or 0:>9.1f} {r['examples_per_step'] or 0:>7.2f} {same:>7}"
        line += f" {r['peak_rss_mib']:>12.0f}"
        if gpu:
            mfu_text = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
            line += f" {r.get('peak_gpu_mib') or 0:>13.0f} {r.get('peak_gpu_reserved_mib') or 0:>9.0f} {mfu_text:>6}"
        loss = f"{r['final_loss']:.4f}" if r.get("final_loss") is not None else "-"
        line += f" {loss:>10} {r['steps']:>5} {r['wall_s']:>6.0f}"
        print(line)
    for name, r in results.items():
        kernels = ", ".join(r.get("kernels") or []) or "none"
        attention = r.get("attention_kernel") or r.get("attn_implementation")
        print(f"  {name}: attention {attention}; kernels {kernels}; threads {r.get('threads')}")
        for reason in r.get("attention_refused") or []:
            print(f"    not used: {reason}")


def _verdict(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """anytune against the fastest peer (tokens/s), and the goals that apply to this figure."""
    ours = results.get("anytune")
    peers = {k: v for k, v in results.items() if k != "anytune" and v.get("tokens_per_s")}
    if not ours or not ours.get("tokens_per_s") or not peers:
        return {}
    gpu = args.device == "cuda"
    mem_key = "peak_gpu_mib" if gpu else "peak_rss_mib"
    best = max(peers, key=lambda k: peers[k]["tokens_per_s"])
    speedup = ours["tokens_per_s"] / peers[best]["tokens_per_s"]
    mem_ratio = ours[mem_key] / peers[best][mem_key]
    goal = GOAL_SPEEDUP[args.device]
    out: dict[str, Any] = {
        "best_peer": best,
        "speedup": round(speedup, 3),
        "memory_key": mem_key,
        "memory_ratio": round(mem_ratio, 3),
        "memory_ratio_vs_lowest_peer": round(ours[mem_key] / min(v[mem_key] for v in peers.values()), 3),
        "goal_speedup": goal,
        "speed_goal_met": speedup >= goal,
        "memory_goal_met": mem_ratio <= 1.0,
    }
    print(f"\nanytune / {best} (the fastest peer): {speedup:.2f}x tokens/s (goal {goal}x), {mem_ratio:.2f}x {mem_key}")
    if gpu and args.model == "llama8b" and args.quant == "none" and ours.get("mfu") is not None:
        out["goal_mfu"] = GOAL_MFU
        out["mfu_goal_met"] = ours["mfu"] >= GOAL_MFU
    if gpu and args.model == "llama8b" and args.quant == "4bit":
        out["qlora_under_10gib"] = ours["peak_gpu_mib"] < GOAL_QLORA_MIB
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", choices=sorted(SHAPES), default=None, help="default: tiny (cpu), qwen0.5b (cuda)")
    parser.add_argument("--quant", choices=["none", "4bit"], default="none")
    parser.add_argument("--runs", default=None, help="comma-separated, of: " + ",".join(RUNS) + " (default: all)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first (and the log interval)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per optimizer step")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument(
        "--gradient-checkpointing",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: off, except on for QLoRA (every run alike)",
    )
    parser.add_argument(
        "--peer-attention",
        default=PEER_ATTENTION,
        help="CUDA: attention implementations to try for TRL's model, best first (default: %(default)s)",
    )
    parser.add_argument("--unsloth-python", default=sys.executable, help="interpreter of the environment with Unsloth")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds for all runs; later runs are skipped")
    parser.add_argument("--label", default=None, help="name of the figure, copied into the JSON line")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the fixture and logs here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--fixture", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # what the workers are given (main's own argv, not necessarily sys.argv)
    args.model = args.model or ("tiny" if args.device == "cpu" else "qwen0.5b")
    names = [r.strip() for r in (args.runs or ",".join(RUNS_BY_DEVICE[args.device])).split(",") if r.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    args.run_names = names
    if args.warmup < 1 or args.steps < 1 or args.steps % args.warmup:
        parser.error("--warmup and --steps must be positive, --steps a multiple of --warmup (the log interval)")
    return args


def _run_all(args: argparse.Namespace, fixture: Path, work: Path) -> tuple[dict[str, Any], dict[str, str]]:
    deadline = None if args.time_limit is None else time.monotonic() + args.time_limit
    results: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    for name in args.run_names:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left < 30:
            problems[name] = f"skipped: {max(left, 0):.0f}s of --time-limit left"
            continue
        print(f"running {name} ...", flush=True)
        res, problem = _spawn(name, fixture, args, work / f"{args.model}-{args.quant}-{name}.log", left)
        if res is None:
            problems[name] = problem
        elif "skipped" in res:
            problems[name] = "skipped: " + str(res["skipped"])
            print(f"  {problems[name]}", flush=True)
        else:
            results[name] = res
    return results, problems


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        worker(args.worker, args.fixture, args)
        return 0
    stop_on_signals()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="local-vs-trl-"))
    fixture = work / f"fixture-{args.model}"
    t0 = time.perf_counter()
    stats = build_fixture(fixture, args)
    print(
        f"fixture: {args.model} ({args.device}, quant {args.quant}), {stats['examples']} conversations, "
        f"{stats['multi_turn']} multi-turn, tokens/conv mean {stats['mean_len']} median {stats['median_len']} "
        f"p90 {stats['p90_len']} max {stats['max_len']}; TRL assistant mask == anytune labels on 64 samples: "
        f"{'yes' if stats['mask_mismatches'] == 0 else 'NO (' + str(stats['mask_mismatches']) + ' differ)'}; "
        f"{stats['threads']} threads per run; built in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    if args.time_limit is not None:
        args.time_limit -= time.perf_counter() - t0
    results, problems = _run_all(args, fixture, work)
    flops = _derive(args, results)
    _print_table(args, results)
    shape = SHAPES[args.model]
    summary: dict[str, Any] = {
        "bench": "local_vs_trl",
        "figure": args.label,
        "device": args.device,
        "device_name": flops["device_name"],
        "model": args.model,
        "quant": args.quant,
        "params_m": round(
            (flops["frozen_params"] + shape["vocab_size"] * shape["hidden_size"] * (not shape["tie"])) / 1e6, 1
        ),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "lora_dropout": args.lora_dropout,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "threads_per_run": stats["threads"],
        "mask_mismatches": stats["mask_mismatches"],
        "runs": {k: {f: v.get(f) for f in RUN_FIELDS if f in v} for k, v in results.items()},
        "not_run": problems,
        **_verdict(args, results),
    }
    if args.device == "cuda":
        summary.update(peak=flops["peak"], peak_flops=flops["peak_flops"], mfu_formula=MFU_FORMULA)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
