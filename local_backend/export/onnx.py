"""ONNX Runtime export through Microsoft Olive, and generation with ONNX Runtime GenAI.

The export is Olive's own recipe for a fine-tuned model (``olive auto-opt --adapter_path ...
--use_model_builder --use_ort_genai``): ONNX Runtime GenAI's model builder writes the base model as
ONNX with the LoRA weights as *inputs*, and the adapter as an ``.onnx_adapter`` file. One base then
serves several adapters: :func:`add_adapter` builds another adapter's file against the same base and
puts it next to the first (the graph's inputs must match, which they do for adapters with the same
target modules). ``adapter="merged"`` exports the merged model instead (no adapter inputs).

Olive runs as its own command (``python -m olive``), the interface its documentation teaches, in a
scratch folder that takes its cache; it returns 0 even when a pass fails, so success is judged by
the files it must have written, and a failure quotes its log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anytune.errors import AnytuneError, MissingDependencyError, NotSupportedError, UsageError

__all__ = [
    "ONNX_ARCHITECTURES",
    "PRECISIONS",
    "OnnxAnswerer",
    "OnnxModel",
    "add_adapter",
    "check_architecture",
    "export_onnx",
    "load_onnx",
    "olive_argv",
    "onnx_answerers",
    "require",
]

#: The model classes ONNX Runtime GenAI's model builder converts (as onnxruntime-genai 0.14 lists
#: them in ``models/builder.py``), text-only decoders: checked before Olive starts.
ONNX_ARCHITECTURES = frozenset(
    {
        "ChatGLMForConditionalGeneration",
        "ChatGLMModel",
        "Ernie4_5ForCausalLM",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "GptOssForCausalLM",
        "GraniteForCausalLM",
        "InternLM2ForCausalLM",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "NemotronForCausalLM",
        "OlmoForCausalLM",
        "PhiForCausalLM",
        "Phi3ForCausalLM",
        "Phi3SmallForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "SmolLM3ForCausalLM",
    }
)
#: Olive's ``--precision`` values that make sense for an ONNX Runtime GenAI model on a CPU.
PRECISIONS = ("fp32", "fp16", "int4")
#: The files of a saved tokenizer (transformers' save_pretrained), chat template included.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
#: What the model builder names the adapter file it writes.
_BUILT_ADAPTER = "adapter_weights.onnx_adapter"


def require() -> None:
    """Raise :class:`MissingDependencyError` unless Olive and ONNX Runtime GenAI are installed."""
    import importlib.util

    for module, package in (("olive", "olive-ai"), ("onnxruntime_genai", "onnxruntime-genai")):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(package, "onnx", "exporting to ONNX Runtime")


def check_architecture(architecture: str) -> None:
    """Refuse a base model the model builder cannot convert, before anything runs."""
    if architecture not in ONNX_ARCHITECTURES:
        raise NotSupportedError(
            f"the ONNX export is not supported for this architecture: {architecture} is not one ONNX Runtime "
            f"GenAI's model builder converts ({', '.join(sorted(ONNX_ARCHITECTURES))}); the merged export "
            "(--format merged) works for any architecture",
            field="format",
            provider="the ONNX export",
        )


def olive_argv(base: str, out: Path, *, adapter: Path | None, precision: str) -> list[str]:
    """The ``olive auto-opt`` command for a CPU ONNX Runtime GenAI model, with the adapter kept apart."""
    argv = [sys.executable, "-m", "olive", "auto-opt", "--model_name_or_path", base, "--output_path", str(out)]
    if adapter is not None:
        argv += ["--adapter_path", str(adapter)]
    argv += ["--device", "cpu", "--provider", "CPUExecutionProvider", "--precision", precision]
    argv += ["--use_model_builder", "--use_ort_genai", "--log_level", "1", "--disable_telemetry"]
    return argv


_FAILURE_LINE = re.compile(r"^(?:\w+\.)*\w*(?:Error|Exception)\b.*$", re.MULTILINE)


def _failure_summary(log: str) -> str:
    """The last exception line Olive's log holds (its passes log failures instead of raising)."""
    lines = _FAILURE_LINE.findall(log)
    return lines[-1].strip() if lines else "no output model was produced"


def _run_olive(argv: Sequence[str], workdir: Path) -> None:
    """Run Olive in ``workdir`` (its cache goes there); raise with its last error if nothing came out."""
    log_path = workdir / "olive.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("w", encoding="utf-8") as log:
        rc = subprocess.run(list(argv), cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    out = Path(argv[argv.index("--output_path") + 1])
    if rc.returncode == 0 and (out / "genai_config.json").is_file() and (out / "model.onnx").is_file():
        return
    text = log_path.read_text(encoding="utf-8", errors="replace")
    kept = Path(tempfile.gettempdir()) / f"anytune-olive-{os.getpid()}.log"
    shutil.copyfile(log_path, kept)
    raise AnytuneError(f"Olive's ONNX export failed: {_failure_summary(text)} (its full log: {kept})")


def _input_names(model_file: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    return sorted(i.name for i in graph.input)


def export_onnx(
    adapter: Path, base_model: str, out: Path, workdir: Path, *, name: str, precision: str, merged_dir: Path | None
) -> tuple[list[str], str | None]:
    """Build the ONNX Runtime GenAI model into ``out`` (which must not exist yet).

    With ``merged_dir`` (a merged export already written there) the merged model is converted and no
    adapter file is written; otherwise the base is converted with the adapter as inputs and the
    adapter saved as ``<name>.onnx_adapter``.

    Returns:
        The files written, and the adapter file's name (``None`` when merged).
    """
    if merged_dir is not None:
        _run_olive(olive_argv(str(merged_dir), out, adapter=None, precision=precision), workdir)
        return sorted(p.name for p in out.iterdir()), None
    _run_olive(olive_argv(base_model, out, adapter=adapter, precision=precision), workdir)
    adapter_file = f"{name}.onnx_adapter"
    (out / _BUILT_ADAPTER).rename(out / adapter_file)
    # Olive copies the base model's tokenizer; a run that saved its own (a chat template of its own,
    # local.chat_template) must be prompted as it was trained, as load() and the merged export are.
    for file in _TOKENIZER_FILES:
        if (adapter / file).is_file():
            shutil.copyfile(adapter / file, out / file)
    return sorted(p.name for p in out.iterdir()), adapter_file


def add_adapter(adapter: Path, base_model: str, into: Path, workdir: Path, *, name: str, precision: str) -> str:
    """Build ``adapter``'s ``.onnx_adapter`` against the base ``into`` serves and put it there.

    Returns:
        The adapter file's name inside ``into``.

    Raises:
        UsageError: the adapter's LoRA inputs differ from those of the model in ``into`` (other
            target modules): it needs a model of its own.
    """
    built = workdir / "built"
    _run_olive(olive_argv(base_model, built, adapter=adapter, precision=precision), workdir)
    ours, theirs = _input_names(built / "model.onnx"), _input_names(into / "model.onnx")
    if ours != theirs:
        extra = sorted(set(ours) ^ set(theirs))[:3]
        raise UsageError(
            f"this adapter's LoRA layers differ from those the model in {into} takes (e.g. {', '.join(extra)}): "
            "adapters that share one ONNX model must target the same modules; export it to a folder of its own"
        )
    target = into / f"{name}.onnx_adapter"
    shutil.copyfile(built / _BUILT_ADAPTER, target)
    return target.name


# -- running an export --------------------------------------------------------------------------------


Messages = Sequence[Mapping[str, Any]]


@dataclass
class OnnxModel:
    """An ONNX Runtime GenAI model with its adapters (``FineTunedModel.load(format="onnx")``).

    ``adapters`` maps adapter names to their files; ``default_adapter`` is the fine-tuned one the
    export was made for (``None`` for a merged export, whose weights already hold it).
    """

    path: Path
    model: Any
    tokenizer: Any
    adapters: dict[str, str] = field(default_factory=dict)
    default_adapter: str | None = None
    _loaded: Any = None

    def _adapter_name(self, adapter: bool | str) -> str | None:
        if adapter is False:
            return None
        if adapter is True:
            return self.default_adapter
        if adapter not in self.adapters:
            known = ", ".join(sorted(self.adapters)) or "none"
            raise UsageError(f"no adapter named {adapter!r} in {self.path} (it has: {known})")
        return adapter

    def _generator(self, max_length: int, adapter: bool | str, **search: Any) -> Any:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=max_length, **search)
        generator = og.Generator(self.model, params)
        name = self._adapter_name(adapter)
        if name is not None:
            if self._loaded is None:
                self._loaded = og.Adapters(self.model)
                for key, file in self.adapters.items():
                    self._loaded.load(str(self.path / file), key)
            generator.set_active_adapter(self._loaded, name)
        return generator

    def prompt_ids(self, prompt: str | Messages) -> list[int]:
        """The token ids of ``prompt`` as the chat template renders it (as the PyTorch path does)."""
        from anytune.local_backend.inference import prompt_text

        return list(self.tokenizer(prompt_text(self.tokenizer, prompt), add_special_tokens=False)["input_ids"])

    def next_token_logits(self, ids: Sequence[int], *, adapter: bool | str = True) -> Any:
        """The logits (a numpy vector) for the token after ``ids``."""
        return self.sequence_logits(ids, adapter=adapter)[-1]

    def sequence_logits(self, ids: Sequence[int], *, adapter: bool | str = True) -> Any:
        """The logits (numpy, ``len(ids) x vocabulary``) at every position of ``ids``: the prompt
        pass of ONNX Runtime GenAI returns them all."""
        generator = self._generator(len(ids) + 1, adapter)
        generator.append_tokens(list(ids))
        logits = generator.get_output("logits")
        return logits[0] if logits.ndim == 3 else logits

    def generate_ids(self, ids: Sequence[int], **options: Any) -> list[int]:
        """All of :meth:`iter_ids` at once."""
        return list(self.iter_ids(ids, **options))

    def iter_ids(
        self,
        ids: Sequence[int],
        *,
        max_new_tokens: int = 64,
        min_new_tokens: int = 0,
        temperature: float = 0.0,
        adapter: bool | str = True,
        seed: int | None = None,
    ) -> Iterator[int]:
        """New token ids after ``ids`` (greedy unless ``temperature > 0``, sampled with ``seed``),
        stopping at end of text once ``min_new_tokens`` are out; one at a time, as ONNX Runtime
        GenAI makes them."""
        search: dict[str, Any] = {"do_sample": temperature > 0}
        if min_new_tokens:
            search["min_length"] = len(ids) + min_new_tokens
        if temperature > 0:
            search["temperature"] = temperature
            if seed is not None:
                search["random_seed"] = seed
        generator = self._generator(len(ids) + max_new_tokens, adapter, **search)
        generator.append_tokens(list(ids))
        while not generator.is_done():
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])

    def stream(
        self,
        prompt: str | Messages,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        adapter: bool | str = True,
        seed: int | None = None,
    ) -> Iterator[str]:
        """:meth:`generate`'s answer as pieces of text while the tokens come: each piece is what the
        decoded answer grew by (a token that ends inside a multi-byte character waits for the next)."""
        new: list[int] = []
        shown = ""
        for token in self.iter_ids(
            self.prompt_ids(prompt), max_new_tokens=max_new_tokens, temperature=temperature, adapter=adapter, seed=seed
        ):
            new.append(token)
            text = str(self.tokenizer.decode(new, skip_special_tokens=True))
            if text.endswith("\ufffd") or not text.startswith(shown):
                continue
            piece, shown = text[len(shown) :], text
            if piece:
                yield piece

    def adapter_for(self, job_ref: str) -> str | None:
        """The name this export gives the adapter of the job ``job_ref`` (added by ``export`` or
        ``--into``), or None when it holds none of that job."""
        from anytune.local_backend.export.source import adapter_name

        name = adapter_name(job_ref)
        return name if name in self.adapters else None

    def generate(
        self,
        prompt: str | Messages,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        adapter: bool | str = True,
        **kwargs: Any,
    ) -> str:
        """Answer ``prompt`` (a user message or chat messages) and return the new text.

        Args:
            adapter: ``True`` the export's own adapter, ``False`` the base model alone, or the name
                of another adapter in the folder.
        """
        seed = kwargs.pop("seed", None)
        if kwargs:
            raise UsageError(f"unknown generation options for an ONNX model: {', '.join(sorted(kwargs))}")
        new = self.generate_ids(
            self.prompt_ids(prompt), max_new_tokens=max_new_tokens, temperature=temperature, adapter=adapter, seed=seed
        )
        from anytune.local_backend.inference import answer_text

        return answer_text(self.tokenizer, new)


@dataclass
class OnnxAnswerer:
    """One role of an ONNX export under evaluation (``FineTunedModel.evaluate(onnx=DIR)``): the
    export's own adapter on (fine-tuned) or off (base), with the evaluation's definitions: answers
    through the chat template, loss as the trainer's (cross-entropy over the assistant turns' tokens,
    :func:`~anytune.local_backend.data.encode_conversation`), computed from ONNX Runtime's logits."""

    model: OnnxModel
    adapter: bool
    name: str

    def answer(self, prompts: Sequence[Sequence[Mapping[str, Any]]], settings: Any) -> list[str]:
        from anytune.local_backend.inference import answer_text

        return [
            answer_text(
                self.model.tokenizer,
                self.model.generate_ids(
                    self.model.prompt_ids(list(messages)),
                    max_new_tokens=settings.max_new_tokens,
                    temperature=settings.temperature,
                    adapter=self.adapter,
                    seed=settings.seed,
                ),
            )
            for messages in prompts
        ]

    def loss(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[tuple[float, int] | None]:
        import numpy as np

        from anytune.local_backend.data import encode_conversation

        out: list[tuple[float, int] | None] = []
        for messages in conversations:
            encoded = encode_conversation(self.model.tokenizer, list(messages), where="evaluation example")
            ids = np.asarray(encoded.input_ids, dtype=np.int64)
            learn = np.asarray(encoded.learn, dtype=bool)
            # learn[j] marks token j as a target, predicted from position j - 1.
            predicts = learn[1:]
            if not predicts.any():
                out.append(None)
                continue
            logits = np.asarray(self.model.sequence_logits(ids.tolist(), adapter=self.adapter), dtype=np.float64)
            rows = logits[:-1][predicts]
            peak = rows.max(axis=1, keepdims=True)
            log_norm = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))
            nll = log_norm - rows[np.arange(len(rows)), ids[1:][predicts]]
            out.append((float(nll.sum()), int(predicts.sum())))
        return out


def onnx_answerers(model: Any, path: str | Path | None = None) -> dict[str, OnnxAnswerer]:
    """``base`` and ``fine-tuned`` from an ONNX export that keeps the adapter apart (the adapter off
    and on).

    Raises:
        UsageError: no export to evaluate, or a merged one (it holds no base model to compare with).
    """
    loaded = model.load(format="onnx", path=None if path is None else str(path))
    assert isinstance(loaded, OnnxModel)
    if loaded.default_adapter is None:
        raise UsageError(
            f"{loaded.path} is a merged ONNX export: it holds no base model to compare the fine-tuned one "
            "with; evaluate an export that keeps the adapter apart (anytune export --format onnx, without --merge)"
        )
    return {
        "base": OnnxAnswerer(loaded, adapter=False, name=f"{loaded.path} (ONNX, adapter off)"),
        "fine-tuned": OnnxAnswerer(loaded, adapter=True, name=f"{loaded.path} (ONNX, {loaded.default_adapter})"),
    }


def load_onnx(path: str | Path) -> OnnxModel:
    """Open an ONNX export folder for generation with ONNX Runtime GenAI (on the CPU).

    Raises:
        MissingDependencyError: onnxruntime-genai or transformers is not installed.
        UsageError: ``path`` is not an ONNX export.
    """
    import importlib.util

    from anytune.local_backend.export.source import read_manifest

    for module, package in (("onnxruntime_genai", "onnxruntime-genai"), ("transformers", "transformers")):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(package, "onnx", "running an ONNX export")
    folder = Path(path)
    if not (folder / "genai_config.json").is_file():
        raise UsageError(f"{folder} is not an ONNX Runtime GenAI model folder (no genai_config.json)")
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    from anytune.local_backend.model import quiet_transformers

    manifest = read_manifest(folder) or {}
    adapters = {str(k): str(v) for k, v in (manifest.get("adapters") or {}).items()}
    if not manifest:  # an Olive folder not written by anytune: take the adapter files it holds
        adapters = {p.stem: p.name for p in sorted(folder.glob("*.onnx_adapter"))}
    default = manifest.get("default_adapter")
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return OnnxModel(
        path=folder,
        model=og.Model(str(folder)),
        tokenizer=tokenizer,
        adapters=adapters,
        default_adapter=str(default) if default else (next(iter(adapters)) if len(adapters) == 1 else None),
    )
