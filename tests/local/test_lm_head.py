"""The fused LM-head loss against ``F.cross_entropy`` on the full logits: values, gradients, chunks, dtypes.

Supervised training never materialises the logits of a whole step: ``_HeadCrossEntropy`` computes
the summed cross-entropy at the labelled positions chunk by chunk and its gradient with respect to
the hidden states at once. These tests hold that shortcut to the textbook computation (all the
logits, ``ignore_index=-100`` at the unlabelled positions) in float32 and bfloat16, across chunk
boundaries, and through :class:`LossHead` on a tiny model, including the heads it must not fuse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
M = pytest.importorskip("anytune.local_backend.model")

IGNORE = -100
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
# (batch, sequence, labelled positions, hidden, vocabulary, hidden scale). Row 0 is never labelled
# (a sequence whose labels are all -100). With 64-row chunks, 64 labels fill exactly one chunk, 65
# spill one row into a second, 150 make two full chunks and a ragged third. Vocabularies are not
# multiples of anything. A scale of 30 gives logits in the hundreds: exp() overflows float32 there,
# so only a log-sum-exp computation survives it.
CASES = {
    "one label": (2, 3, 1, 8, 5, 1.0),
    "one full chunk": (3, 40, 64, 16, 97, 1.0),
    "one past a chunk": (3, 40, 65, 16, 97, 1.0),
    "ragged last chunk": (3, 100, 150, 32, 1000, 1.0),
    "no labels": (2, 8, 0, 8, 11, 1.0),
    "huge logits": (3, 30, 40, 16, 50, 30.0),
}


@pytest.fixture(params=["one chunk", "64-row chunks"])
def chunking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default chunk (all rows here at once), or the smallest one the head allows (64 rows)."""
    if request.param == "64-row chunks":
        monkeypatch.setattr(M, "HEAD_CHUNK_BYTES", 1)
    return str(request.param)


def _inputs(case: str, device: str, *, seed: int = 0) -> tuple[Any, Any, Any]:
    """Hidden states (batch, seq, hidden), a head weight (vocab, hidden), labels with -100 holes."""
    batch, seq, labelled, width, vocab, scale = CASES[case]
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq, width, generator=g) * scale
    weight = torch.randn(vocab, width, generator=g) / width**0.5
    labels = torch.full((batch, seq), IGNORE, dtype=torch.long)
    eligible = torch.arange(seq, batch * seq)  # every position but row 0's
    assert labelled <= eligible.numel()
    chosen = eligible[torch.randperm(eligible.numel(), generator=g)[:labelled]]
    labels.view(-1)[chosen] = torch.randint(0, vocab, (labelled,), generator=g)
    return hidden.to(device), weight.to(device), labels.to(device)


def _fused(hidden: Any, weight: Any, labels: Any, dtype: Any) -> tuple[Any, Any]:
    """What :meth:`LossHead._fused_loss` does: pick the labelled positions, then the fused head."""
    flat = labels.view(-1)
    index = torch.nonzero(flat != IGNORE).view(-1)
    picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)
    out: tuple[Any, Any] = M._HeadCrossEntropy.apply(picked, weight, flat.index_select(0, index), dtype, True)
    return out


def _reference(hidden: Any, weight: Any, labels: Any, autocast: Any = None) -> tuple[Any, Any]:
    """Summed ``F.cross_entropy`` of all the logits (float32, as the trainer's unfused path), hits."""
    with torch.autocast(hidden.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        logits = hidden @ weight.t()
    logits = logits.float().view(-1, weight.shape[0])
    flat = labels.view(-1)
    loss = F.cross_entropy(logits, flat, ignore_index=IGNORE, reduction="sum")
    hits = ((logits.detach().argmax(-1) == flat) & (flat != IGNORE)).sum()
    return loss, hits


def _loss_and_grad(fn: Callable[[Any], tuple[Any, Any]], hidden: Any, grad_scale: float) -> tuple[Any, Any, Any]:
    leaf = hidden.detach().clone().requires_grad_()
    loss, hits = fn(leaf)
    # The trainer scales each micro-batch's summed loss by 1 / (labels in the step): a backward
    # with an incoming gradient other than 1 must scale the saved gradient.
    (loss * grad_scale).backward()
    assert leaf.grad is not None
    return loss.detach(), hits, leaf.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_float32_loss_and_gradient_match_cross_entropy(case: str, device: str, chunking: str) -> None:
    hidden, weight, labels = _inputs(case, device)
    n = int((labels != IGNORE).sum())
    scale = 1.0 / max(n, 1)
    loss, hits, grad = _loss_and_grad(lambda h: _fused(h, weight, labels, torch.float32), hidden, scale)
    ref_loss, ref_hits, ref_grad = _loss_and_grad(lambda h: _reference(h, weight, labels), hidden, scale)

    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    assert int(hits) == int(ref_hits)
    # Unlabelled positions (row 0 entirely) take no gradient at all.
    assert bool((grad[labels == IGNORE] == 0).all())
    if n:
        assert float(grad.abs().max()) > 0
    else:
        assert float(loss) == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hidden_dtype", [torch.float32, torch.bfloat16], ids=["autocast", "bf16 weights"])
@pytest.mark.parametrize("case", ["one past a chunk", "ragged last chunk", "huge logits"])
def test_bfloat16_loss_and_gradient_match_autocast_cross_entropy(
    case: str, hidden_dtype: Any, device: str, chunking: str
) -> None:
    """bf16 matmuls with a float32 softmax, as ``F.cross_entropy`` on autocast logits does.

    Float32 hidden states with bf16 compute is a bf16-autocast run over float32 weights; bf16 hidden
    states and weight is a model loaded in bf16 (CUDA). The reference is the unfused path under the
    same autocast: bf16 logits made float32, then ``F.cross_entropy``.
    """
    hidden, weight, labels = _inputs(case, device)
    hidden, weight = hidden.to(hidden_dtype), weight.to(hidden_dtype)
    scale = 1.0 / int((labels != IGNORE).sum())
    loss, hits, grad = _loss_and_grad(lambda h: _fused(h, weight, labels, torch.bfloat16), hidden, scale)
    ref_loss, ref_hits, ref_grad = _loss_and_grad(
        lambda h: _reference(h, weight, labels, autocast=torch.bfloat16), hidden, scale
    )

    assert loss.dtype == torch.float32 and grad.dtype == hidden_dtype
    # Both sides compute the same bf16 logits and sum their float32 losses: they agree to float32
    # rounding, unless a kernel rounds a logit computed in chunks one bf16 step (2**-8 relative)
    # differently from the whole matrix, hence 2**-8 relative.
    torch.testing.assert_close(loss, ref_loss, rtol=2**-8, atol=1e-6)
    assert int(hits) == int(ref_hits)
    # bf16 keeps 8 significant bits: each rounding is off by up to 2**-9 relative. A gradient here
    # goes through about four (the probabilities cast to bf16, the matmul's output, the incoming
    # scalar and the product by it) and the two sides round at different places (the reference
    # scales before casting), so they may differ by 2**-6 of the gradient's largest entry. A wrong
    # gradient (a missing -1 at the target, a dropped scale) is off by far more than that.
    size = float(ref_grad.float().abs().max())
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=2**-6, atol=2**-6 * size)
    assert bool((grad[labels == IGNORE] == 0).all())


def test_the_step_loss_is_the_mean_over_all_its_labels_across_micro_batches(chunking: str) -> None:
    """Summed losses per micro-batch, each scaled by 1 / (labels in the whole step): the step's mean.

    That is ``F.cross_entropy(reduction="mean")`` over every labelled token of the step, whatever
    the split: not the mean of per-micro-batch means, which would weigh a short micro-batch's
    tokens more.
    """
    hidden, weight, labels = _inputs("ragged last chunk", "cpu", seed=3)
    total = int((labels != IGNORE).sum())
    # Uneven micro-batches of whole sequences: the unlabelled row, then two labelled ones.
    splits = [(0, 1), (1, 2), (2, 3)]
    leaf = hidden.detach().clone().requires_grad_()
    losses = []
    for a, b in splits:
        loss, _ = _fused(leaf[a:b], weight, labels[a:b], torch.float32)
        (loss / total).backward()
        losses.append(loss.detach())
    step_loss = torch.stack(losses).sum() / total

    ref = leaf.detach().clone().requires_grad_()
    logits = (ref @ weight.t()).view(-1, weight.shape[0])
    ref_loss = F.cross_entropy(logits, labels.view(-1), ignore_index=IGNORE, reduction="mean")
    ref_loss.backward()
    ref_loss = ref_loss.detach()
    assert leaf.grad is not None and ref.grad is not None
    torch.testing.assert_close(step_loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-5, atol=1e-6)

    counts = [int((labels[a:b] != IGNORE).sum()) for a, b in splits]
    assert counts[0] == 0 and counts[1] != counts[2]  # the split is uneven, so the next line can fail
    mean_of_means = sum(float(x) / c for x, c in zip(losses, counts, strict=True) if c) / 2
    assert abs(mean_of_means - float(ref_loss)) > 1e-3


# -- through LossHead, on a tiny model -------------------------------------------------------------

# transformers asks peft's wrapper for this deprecated attribute; nothing of ours.
quiet_peft = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

VOCAB = 301


def _tiny_peft(**lora: Any) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    base = LlamaForCausalLM(config)
    options: dict[str, Any] = {
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj"],
        "init_lora_weights": False,
    }
    return get_peft_model(base, LoraConfig(**(options | lora)))


def _micro_batch() -> Any:
    from anytune.local_backend.data import Encoded, collate

    rng = np.random.default_rng(0)
    seqs = []
    for n, first in ((20, 5), (13, 1), (30, 12)):
        learn = np.zeros(n, dtype=bool)
        learn[first:] = True
        seqs.append(Encoded(rng.integers(0, VOCAB, n).astype(np.int32), learn))
    return collate(seqs, "padded", pad_id=0, row_capacity=64)


def _grads_of(model: Any, loss: Any) -> dict[str, Any]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _head_vs_logits(peft_model: Any) -> tuple[Any, ...]:
    """The loss, hits and trainable gradients through ``forward(loss=True)`` and from its logits."""
    head = M.LossHead(peft_model)
    mb = _micro_batch()
    loss, hits = head(mb, loss=True)
    fused = _grads_of(peft_model, loss / mb.num_targets)
    logits = head(mb)
    ref = F.cross_entropy(logits, mb.targets, reduction="sum")
    plain = _grads_of(peft_model, ref / mb.num_targets)
    ref_hits = (logits.detach().argmax(-1) == mb.targets).sum()
    return loss.detach(), ref.detach(), int(hits), int(ref_hits), fused, plain


def _assert_same(fused: dict[str, Any], plain: dict[str, Any]) -> None:
    assert fused.keys() == plain.keys() and fused
    for name in fused:
        torch.testing.assert_close(fused[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


@quiet_peft
def test_loss_head_gives_the_logits_loss_and_adapter_gradients() -> None:
    peft_model = _tiny_peft()
    loss, ref, hits, ref_hits, fused, plain = _head_vs_logits(peft_model)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert hits == ref_hits
    assert {n for n in fused if "lora_" in n} == set(fused)  # only the adapter trains
    _assert_same(fused, plain)
    assert all(float(g.abs().max()) > 0 for g in fused.values())


@quiet_peft
@pytest.mark.parametrize(
    "make_head_train",
    ["lora on lm_head", "head weight trainable", "head with a bias"],
)
def test_loss_head_does_not_fuse_a_head_that_trains_or_has_a_bias(make_head_train: str) -> None:
    """The fused backward returns no gradient for the head: a head that trains must take the plain path."""
    if make_head_train == "lora on lm_head":
        peft_model = _tiny_peft(target_modules=["q_proj", "v_proj", "lm_head"])
    else:
        peft_model = _tiny_peft()
        base = peft_model.get_base_model()
        if make_head_train == "head weight trainable":
            base.lm_head.weight.requires_grad_(True)
        else:
            old = base.lm_head
            base.lm_head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
            base.lm_head.requires_grad_(False)
            with torch.no_grad():
                base.lm_head.weight.copy_(old.weight)
                base.lm_head.bias.uniform_(-1.0, 1.0)
    loss, ref, hits, ref_hits, fused, plain = _head_vs_logits(peft_model)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert hits == ref_hits
    _assert_same(fused, plain)
    head_grads = [n for n in fused if "lm_head" in n]
    assert bool(head_grads) == (make_head_train != "head with a bias")
