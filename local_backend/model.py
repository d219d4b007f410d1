"""Loading the base model and tokenizer for adapter training, and the forward pass the trainer uses.

* Source: a local Hugging Face folder or a Hub id (transformers downloads it where there is
  internet). A path that does not exist, or an id that cannot be loaded, fails with a
  :class:`~anytune.errors.ConfigError` naming it, before any training starts.
* Device: ``cuda`` > ``mps`` > ``cpu`` unless ``local.device`` says otherwise. Weights are bf16 on a
  CUDA device that supports it (compute under autocast), fp32 elsewhere.
* Quantization: ``4bit`` is QLoRA (NF4, double quantization, bf16 or fp32 compute), ``8bit`` uses
  LLM.int8(); bitsandbytes is tried on the device first so that a machine where it cannot run fails
  with a clear error instead of mid-training.
* Attention: where the architecture allows it, the model runs with the ``anytune_varlen`` attention
  registered here: a step's sequences are concatenated into one row and each sequence attends only
  to itself (``torch.nn.attention.varlen`` flash kernels on CUDA, one causal SDPA call per sequence
  elsewhere). That spends no compute on padding nor on the cross-sequence blocks a packed mask
  would still compute. Outside a training step it behaves exactly like ``sdpa``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import itertools
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from anytune._quiet import debug_requested
from anytune._spec import JobSpec, LoraConfig, Quantization
from anytune.errors import ConfigError, MissingDependencyError, NotSupportedError
from anytune.local_backend.devices import device_kind

if TYPE_CHECKING:
    from anytune.local_backend.data import Layout, MicroBatch

__all__ = [
    "VARLEN_ATTENTION",
    "LoadedModel",
    "LossHead",
    "build_peft_config",
    "check_bitsandbytes",
    "load_for_training",
    "load_tokenizer",
    "quiet_transformers",
    "resolve_device",
    "resolve_model_source",
]

VARLEN_ATTENTION = "anytune_varlen"
_SKIP_MASK: contextvars.ContextVar[bool] = contextvars.ContextVar("anytune_skip_mask", default=False)
_registered = False


# -- attention -------------------------------------------------------------------------------------


def _varlen_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention within each sequence of a concatenated row; plain ``sdpa`` without boundaries.

    The boundaries come as keyword arguments of the model call (``anytune_cu_seqlens``), which
    transformers hands down to the attention function and gradient checkpointing replays, so a
    recomputed layer sees them too.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    cu: tuple[int, ...] | None = kwargs.pop("anytune_cu_seqlens", None)
    cu_tensor: torch.Tensor | None = kwargs.pop("anytune_cu_tensor", None)
    max_len: int = kwargs.pop("anytune_max_seqlen", 0)
    if cu is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    groups = int(getattr(module, "num_key_value_groups", 1))
    half = (torch.float16, torch.bfloat16)
    if query.dtype not in half and query.is_cuda and torch.is_autocast_enabled("cuda"):
        # Flash kernels take 16-bit inputs only; a QLoRA model keeps fp32 norms, so cast like autocast would.
        dtype = torch.get_autocast_dtype("cuda")
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    if query.is_cuda and cu_tensor is not None and dropout == 0.0 and query.dtype in half:
        varlen, native_gqa = _torch_varlen()
        if varlen is not None:
            q, k, v = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)  # (T, heads, dim)
            extra: dict[str, Any] = {}
            if groups > 1 and native_gqa:
                extra["enable_gqa"] = True
            elif groups > 1:
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            out = varlen(q, k, v, cu_tensor, cu_tensor, max_len, max_len, scale=scaling, window_size=(-1, 0), **extra)
            return out.unsqueeze(0), None
    if groups > 1:
        key = repeat_kv(key, groups)
        value = repeat_kv(value, groups)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if len(cu) == 2:
        out = sdpa(query, key, value, dropout_p=dropout, scale=scaling, is_causal=True)
    else:
        out = torch.cat(
            [
                sdpa(
                    query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], dropout_p=dropout, scale=scaling, is_causal=True
                )
                for a, b in itertools.pairwise(cu)
            ],
            dim=2,
        )
    return out.transpose(1, 2).contiguous(), None


@functools.cache
def _torch_varlen() -> tuple[Any, bool]:
    """PyTorch's flash varlen attention (2.9+; its ``enable_gqa`` arrived later), or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, False
    params = inspect.signature(varlen_attn).parameters
    if "window_size" not in params:
        return None, False
    return varlen_attn, "enable_gqa" in params


def _varlen_mask(*args: Any, **kwargs: Any) -> Any:
    """Skip building a (T, T) mask inside a varlen step: the attention function needs none."""
    if _SKIP_MASK.get():
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, **kwargs)


def _register_varlen() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN_ATTENTION, _varlen_attention)
    AttentionMaskInterface.register(VARLEN_ATTENTION, _varlen_mask)
    _registered = True


def choose_layout(model: Any, *, packing: bool, max_length: int) -> Layout:
    """``varlen`` where the architecture allows it, else ``packed`` (block-diagonal masks), else ``padded``.

    ``varlen`` needs the model to route attention through transformers' attention interface with
    SDPA semantics: no attention-logit soft-capping, no sinks, and no sliding window shorter than
    the sequences.
    """
    if not packing:
        return "padded"
    cfg = model.config
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None) or []
    sliding_used = any(t != "full_attention" for t in layer_types) or (
        window is not None and not layer_types and getattr(cfg, "use_sliding_window", True)
    )
    ok = (
        type(model)._supports_attention_backend
        and type(model)._supports_sdpa
        and getattr(cfg, "attn_logit_softcapping", None) is None
        and not (sliding_used and window is not None and window < max_length)
        and not any(t not in ("full_attention", "sliding_attention") for t in layer_types)
    )
    return "varlen" if ok else "packed"


# -- devices, sources, tokenizer -------------------------------------------------------------------


def resolve_device(requested: str = "auto", *, local_rank: int = 0) -> torch.device:
    """The training device: ``local.device`` if set, else cuda, then mps, then cpu.

    Raises:
        NotSupportedError: the requested device is not available on this machine.
    """
    requested = device_kind(requested)
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise NotSupportedError("no CUDA device is available here", field="local.device", provider="local")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise NotSupportedError("the MPS device is not available here", field="local.device", provider="local")
    return torch.device(requested)


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name.count("/") > 1
        or (len(name) > 1 and name[1] == ":")
        or name in (".", "..")
    )


def resolve_model_source(name: str) -> str:
    """A local folder (as an absolute path) or a Hub id, checked as far as possible offline.

    Raises:
        ConfigError: ``name`` is a path that does not exist, or a folder with no ``config.json``.
    """
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"base model folder {name!r} holds no config.json: it is not a Hugging Face model folder",
                field="base_model",
            )
        return str(path.resolve())
    if _looks_like_path(name):
        raise ConfigError(f"base model path {name!r} does not exist", field="base_model")
    return name


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars, info logs or deprecation notices from the ML stack while it loads or saves
    (the worker's log and the demo's output are for our users, not for those libraries' authors).
    Under ``--debug`` (``ANYTUNE_DEBUG``) it changes nothing: those notes are what was asked for."""
    if debug_requested(os.environ):
        yield
        return
    from transformers.utils import logging as _hf_logging

    hf_logging: Any = _hf_logging  # its functions are untyped
    bnb = logging.getLogger("bitsandbytes")  # warns about optional CPU kernels when peft imports it
    bnb_level = bnb.level
    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    bnb.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        bnb.setLevel(bnb_level)
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(base_model: str, chat_template: str | None = None) -> Any:
    """The base model's fast tokenizer, with ``chat_template`` (if given) installed.

    Raises:
        ConfigError: the tokenizer cannot be loaded, is not a fast tokenizer, or has no chat template
            and none was given.
    """
    from transformers import AutoTokenizer

    source = resolve_model_source(base_model)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer of {base_model!r}: {exc}", field="base_model") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"the tokenizer of {base_model!r} is not a fast (Rust) tokenizer; exact assistant-only labels need "
            "character offsets, which only fast tokenizers give",
            field="base_model",
        )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template:
        raise ConfigError(
            f"the tokenizer of {base_model!r} has no chat template; give one in local.chat_template "
            "(a Jinja template or a file holding one)",
            field="local.chat_template",
        )
    return tokenizer


def check_bitsandbytes(quantization: Quantization, device: torch.device) -> None:
    """Run a tiny quantized layer on ``device`` so that a machine without working kernels fails now.

    Raises:
        MissingDependencyError: bitsandbytes is not installed.
        NotSupportedError: it is installed but cannot run on this device.
    """
    if quantization is Quantization.NONE:
        return
    try:
        import bitsandbytes as _bnb
    except ImportError as exc:
        raise MissingDependencyError("bitsandbytes", "local", f"quantization={quantization.value!r}") from exc
    bnb: Any = _bnb
    try:
        with torch.no_grad():
            if quantization is Quantization.INT4:
                layer: Any = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
            else:
                layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
            layer = layer.to(device)
            layer(torch.randn(2, 64, device=device))
    except Exception as exc:
        raise NotSupportedError(
            f"bitsandbytes {getattr(bnb, '__version__', '?')} cannot run {quantization.value} layers on "
            f"{device.type} here ({type(exc).__name__}: {exc}); train without quantization or on a device "
            "bitsandbytes supports",
            field="quantization",
            provider="local",
        ) from exc


def _check_cpu_4bit_shapes(model: Any, name: str) -> None:
    """bitsandbytes' CPU 4-bit kernels need output sizes divisible by 32: say so before training."""
    bnb: Any = sys.modules["bitsandbytes"]
    for layer_name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit) and module.out_features % 32:
            raise NotSupportedError(
                f"{name!r} has a layer ({layer_name}, {module.out_features} outputs) that bitsandbytes cannot run in "
                "4-bit on CPU (it needs output sizes divisible by 32); train without quantization or on a GPU",
                field="quantization",
                provider="local",
            )


def build_peft_config(lora: LoraConfig) -> Any:
    """The ``peft.LoraConfig`` for a spec's ``lora`` section (``alpha`` defaults to ``2 * r``)."""
    import peft

    return peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.effective_alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


# -- loading ---------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """What the trainer works with.

    Attributes:
        model: the ``peft.PeftModel`` (trainable adapter over the frozen base).
        tokenizer: the tokenizer (its chat template resolved).
        device: where the model runs.
        autocast_dtype: ``torch.bfloat16`` when the forward runs under autocast, else None.
        layout: how a step's sequences are laid out (see :mod:`.data`).
        source: the resolved base model (absolute folder or Hub id).
        quantized: whether the base is 4-bit or 8-bit.
    """

    model: Any
    tokenizer: Any
    device: torch.device
    autocast_dtype: torch.dtype | None
    layout: Layout
    source: str
    quantized: bool
    gradient_checkpointing: bool = False

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass: less memory for about a third more compute."""
        if self.gradient_checkpointing:
            return
        with quiet_transformers():
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.enable_input_require_grads()
        self.gradient_checkpointing = True


def load_for_training(spec: JobSpec, device: torch.device, *, max_length: int) -> LoadedModel:
    """Load the base model (quantized if asked), wrap it with a fresh LoRA adapter, pick the layout.

    Raises:
        ConfigError: the model or tokenizer cannot be loaded (message names it).
        MissingDependencyError, NotSupportedError: quantization cannot run here.
    """
    from transformers import AutoModelForCausalLM
    from transformers import BitsAndBytesConfig as _BitsAndBytesConfig

    BitsAndBytesConfig: Any = _BitsAndBytesConfig

    local = spec.local
    from anytune.local_backend.data import resolve_chat_template

    tokenizer = load_tokenizer(spec.base_model, resolve_chat_template(local.chat_template if local else None))
    source = resolve_model_source(spec.base_model)
    check_bitsandbytes(spec.quantization, device)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    compute = torch.bfloat16 if bf16 else torch.float32
    kwargs: dict[str, Any] = {"dtype": compute, "attn_implementation": "sdpa"}
    quantized = spec.quantization is not Quantization.NONE
    if spec.quantization is Quantization.INT4:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_storage=compute if bf16 else torch.uint8,
        )
    elif spec.quantization is Quantization.INT8:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    if quantized:
        kwargs["device_map"] = {"": device}
    try:
        with quiet_transformers():
            model: Any = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        hub = source == spec.base_model
        where = (
            "not a local folder, and not found on the Hugging Face Hub (or no network)"
            if hub
            else "the folder could not be loaded"
        )
        raise ConfigError(f"cannot load base model {spec.base_model!r}: {where}: {exc}", field="base_model") from exc
    if not quantized:
        model.to(device)
    elif spec.quantization is Quantization.INT4 and device.type == "cpu":
        _check_cpu_4bit_shapes(model, spec.base_model)
    model.config.use_cache = False
    layout = choose_layout(model, packing=local.packing if local else True, max_length=max_length)
    if layout == "varlen":
        _register_varlen()
        model.set_attn_implementation(VARLEN_ATTENTION)

    import peft as _peft

    peft: Any = _peft

    if quantized:
        _prepare_kbit(model)  # checkpointing is decided by the trainer
    lora = spec.lora or LoraConfig()
    with quiet_transformers():
        pmodel = peft.get_peft_model(model, build_peft_config(lora))
    if bf16 and not quantized and not lora.use_dora:
        _keep_lora_inputs_16bit(pmodel)
    return LoadedModel(
        model=pmodel,
        tokenizer=tokenizer,
        device=device,
        autocast_dtype=torch.bfloat16 if bf16 else None,
        layout=layout,
        source=source,
        quantized=quantized,
    )


def _keep_lora_inputs_16bit(model: Any) -> None:
    """Let LoRA layers take their bf16 input as it is instead of copying it to float32 first.

    peft keeps adapter weights in float32 and, by default, casts each LoRA layer's input to that
    dtype before the dropout and ``lora_A``; under bf16 autocast, ``lora_A`` then casts it straight
    back to bf16 for its matmul. The float32 detour changes no result (dropout scales in float32
    internally either way) but costs a copy of every adapted layer's input, twice its memory for
    the dropout mask and the saved activation, and the casts back in the backward pass. This only
    applies where the trainer runs the model under autocast (unquantized bf16 training; peft's
    4-bit layers already skip the cast under autocast).
    """
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False


def _prepare_kbit(model: Any) -> None:
    """Freeze a quantized base and keep its small 16-bit parameters (norms, biases) in float32.

    What ``peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)`` does,
    except for the input embeddings and the LM head, which stay in the compute dtype: under bf16
    autocast the head's matmul runs in bf16 whatever its weight's dtype, so a float32 copy would
    only double their memory (about 4 GB more for a Llama-3-8B-sized vocabulary) and cost a cast
    of the whole head at every step.
    """
    big = {
        id(m.weight)
        for m in (model.get_input_embeddings(), model.get_output_embeddings())
        if m is not None and hasattr(m, "weight")
    }
    for param in model.parameters():
        param.requires_grad_(False)
        if (
            param.dtype in (torch.float16, torch.bfloat16)
            and type(param).__name__ != "Params4bit"
            and id(param) not in big
        ):
            param.data = param.data.float()


def activation_bytes_per_token(model: Any, *, dtype_bytes: int) -> int:
    """Rough activation memory one token costs in a LoRA training step without checkpointing."""
    cfg = model.config
    h = int(getattr(cfg, "hidden_size", 1024))
    inter = int(getattr(cfg, "intermediate_size", 4 * h))
    layers = int(getattr(cfg, "num_hidden_layers", 12))
    return layers * (16 * h + 5 * inter) * dtype_bytes


# -- the forward the trainer uses ------------------------------------------------------------------


def _head_transforms(config: Any) -> tuple[Any, Any, Any]:
    return (
        getattr(config, "final_logit_softcapping", None),
        getattr(config, "logit_scale", None),
        getattr(config, "logits_scaling", None),
    )


def _head_postprocess(config: Any) -> Any:
    softcap, scale, divide = _head_transforms(config)

    def post(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            logits = logits * scale
        if divide is not None:
            logits = logits / divide
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return post


HEAD_CHUNK_BYTES = 256 << 20
"""Float32 logits materialised at a time by the fused head loss (a few hundred rows of a big vocabulary)."""


class _HeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` against ``targets``, never holding all the logits.

    The logits of a chunk of rows are computed, reduced to their loss and arg-max, and turned at once
    into that chunk's gradient with respect to ``hidden`` (``(softmax - onehot) @ weight``), which is
    all the backward pass needs: the head is frozen and the loss is a sum, so the gradient is that
    tensor times the incoming scalar. Same arithmetic as ``F.cross_entropy(hidden @ weight.T,
    reduction="sum")`` and its backward (matmuls in ``dtype``, softmax in float32), without the
    (targets x vocabulary) float32 logits, their softmax and their gradient alive together: for a
    128k vocabulary that is about 1.5 GB per thousand targets.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        dtype: torch.dtype,
        want_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = max(64, HEAD_CHUNK_BYTES // (4 * weight.shape[0]) // 64 * 64)
        w = weight if weight.dtype == dtype else weight.to(dtype)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.int64, device=hidden.device)
        grad = torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if want_grad else None
        with torch.autocast(hidden.device.type, enabled=False):
            for a in range(0, hidden.shape[0], rows):
                t = targets[a : a + rows, None]
                logits = (hidden[a : a + rows].to(dtype) @ w.t()).float()
                lse = torch.logsumexp(logits, dim=-1, keepdim=True)
                loss += (lse - logits.gather(1, t)).sum()
                correct += (logits.argmax(-1) == t[:, 0]).sum()
                if grad is not None:
                    probs = logits.sub_(lse).exp_()  # in place: softmax
                    probs.scatter_add_(1, t, torch.full_like(t, -1, dtype=probs.dtype))
                    torch.mm(probs.to(dtype), w, out=grad[a : a + rows])
        ctx.hidden_dtype = hidden.dtype
        ctx.save_for_backward(grad if grad is not None else torch.empty(0))
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_correct: torch.Tensor) -> tuple[Any, ...]:
        (grad,) = ctx.saved_tensors
        return (grad * grad_loss.to(grad.dtype)).to(ctx.hidden_dtype), None, None, None, None


class LossHead(torch.nn.Module):
    """Runs the decoder to hidden states and the LM head only where a label exists.

    Big vocabularies make the head and its softmax the largest cost of a small model; computing them
    at every position (as ``model(...).logits`` does) wastes most of it. This module is what DDP
    wraps, so gradient synchronisation sees every forward. ``forward(mb, loss=True)`` goes one step
    further for supervised training: it returns the summed cross-entropy and the number of correct
    arg-max predictions, computed chunk by chunk (:class:`_HeadCrossEntropy`), so the logits of the
    whole step never exist at once.
    """

    def __init__(self, peft_model: Any) -> None:
        super().__init__()
        self.peft_model = peft_model
        base = peft_model.get_base_model()
        self._post = _head_postprocess(base.config)
        self.generic = False

    def _parts(self) -> tuple[Any, Any]:
        base = self.peft_model.get_base_model()
        return base.get_decoder(), base.get_output_embeddings()

    def forward(self, mb: MicroBatch, loss: bool = False) -> Any:
        """Logits (float32) at ``mb.pred_index``, one row per target.

        With ``loss=True``: ``(summed cross-entropy against mb.targets, correct arg-max count)``
        instead, through the fused head where the head allows it (a frozen plain linear layer and no
        logit transform), else from the logits.
        """
        if loss and not self.generic:
            fused = self._fused_loss(mb)
            if fused is not None:
                return fused
        logits = self._logits(mb)
        if not loss:
            return logits
        return (F.cross_entropy(logits, mb.targets, reduction="sum"), (logits.detach().argmax(-1) == mb.targets).sum())

    def _fused_loss(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
        base = self.peft_model.get_base_model()
        head = base.get_output_embeddings()
        plain = (
            type(head) is torch.nn.Linear
            and head.bias is None
            and not head.weight.requires_grad
            and all(v is None for v in _head_transforms(base.config))
        )
        if not plain:
            return None
        hidden = self._hidden(mb)
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mb.pred_index)
        device = picked.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
        want_grad = torch.is_grad_enabled() and picked.requires_grad
        out: tuple[torch.Tensor, torch.Tensor] = _HeadCrossEntropy.apply(  # type: ignore[no-untyped-call]
            picked, head.weight, mb.targets, dtype, want_grad
        )
        return out

    def _run(self, mb: MicroBatch, *, full: bool) -> torch.Tensor:
        """The decoder's last hidden states, or (``full``) the whole model's logits, for ``mb``."""
        extra: dict[str, Any] = {}
        if mb.cu_seqlens is not None:
            extra["anytune_cu_seqlens"] = mb.cu_seqlens
            extra["anytune_max_seqlen"] = max(b - a for a, b in itertools.pairwise(mb.cu_seqlens))
            if mb.input_ids.is_cuda:
                extra["anytune_cu_tensor"] = torch.tensor(mb.cu_seqlens, dtype=torch.int32, device=mb.input_ids.device)
        token = _SKIP_MASK.set(mb.cu_seqlens is not None)
        try:
            if full:
                logits: torch.Tensor = self.peft_model(
                    input_ids=mb.input_ids,
                    position_ids=mb.position_ids,
                    attention_mask=mb.attention_mask,
                    use_cache=False,
                    **extra,
                ).logits
                return logits
            decoder = self.peft_model.get_base_model().get_decoder()
            hidden: torch.Tensor = decoder(
                input_ids=mb.input_ids,
                position_ids=mb.position_ids,
                attention_mask=mb.attention_mask,
                use_cache=False,
                **extra,
            ).last_hidden_state
            return hidden
        finally:
            _SKIP_MASK.reset(token)

    def _hidden(self, mb: MicroBatch) -> torch.Tensor:
        return self._run(mb, full=False)

    def _logits(self, mb: MicroBatch) -> torch.Tensor:
        if self.generic:
            logits = self._run(mb, full=True)
            return logits.reshape(-1, logits.shape[-1]).index_select(0, mb.pred_index).float()
        _, head = self._parts()
        hidden = self._run(mb, full=False)
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mb.pred_index)
        return self._post(head(picked)).float()  # type: ignore[no-any-return]

    def self_check(self, mb: MicroBatch) -> None:
        """Compare the head-only path with the model's own forward once; fall back if they differ.

        Architectures that transform logits in ways :func:`_head_postprocess` does not know stay
        correct (at full-head cost) instead of silently training on wrong logits.
        """
        with eval_mode(self), torch.no_grad():
            fast = self.forward(mb)
            self.generic = True
            ref = self.forward(mb)
            self.generic = not torch.allclose(fast, ref, atol=1e-3, rtol=1e-3)
        if self.generic:
            logging.getLogger(__name__).warning("head-only logits differ from the model's; using full logits")


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module.eval()`` for a while, except bitsandbytes 4-bit layers, which stay in training mode.

    On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weights for a faster inference
    kernel the first time it runs in eval mode without gradients, and that kernel has no backward:
    training after any evaluation would then silently drop gradients through the frozen layers.
    Those layers have no dropout, so keeping them in training mode changes nothing else.
    """
    was_training = module.training
    module.eval()
    try:
        bnb = sys.modules.get("bitsandbytes")
        if bnb is not None:
            for sub in module.modules():
                if isinstance(sub, bnb.nn.Linear4bit):
                    sub.training = True
        yield
    finally:
        module.train(was_training)


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def world_info() -> tuple[int, int, int]:
    """(rank, local rank, world size) from the launcher's environment (torchrun, accelerate)."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), int(env.get("WORLD_SIZE", "1"))


DeviceKind = Literal["cuda", "mps", "cpu"]
