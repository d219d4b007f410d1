"""Uniform types every provider maps its service's objects into."""

from __future__ import annotations

import enum
import importlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from anytune._secrets import redact_value

if TYPE_CHECKING:
    from anytune._deploy import Deployment

#: The one hook between the uniform types and the code that loads weights: ``module:function``
#: taking ``(model: FineTunedModel, *, device, base_model)`` and returning a :class:`LoadedModel`.
#: A dotted path imported on first use, so these types never import the trainer (or torch).
ADAPTER_LOADER = "anytune.local_backend.inference:load_result"
#: The hook that publishes a local result to the Hugging Face Hub (``FineTunedModel.push_to_hub``):
#: ``module:function`` taking ``(model, *, repo, private, token, endpoint)`` and returning the model
#: with ``hub_repo`` and ``revision`` set. Imported on first use, like :data:`ADAPTER_LOADER`.
HUB_PUBLISHER = "anytune.local_backend.publish:push_result"
#: The hooks that export a result (``FineTunedModel.export``) and open an export
#: (``FineTunedModel.load(format=...)``): ``module:function``, imported on first use.
EXPORTER = "anytune.local_backend.export:export_result"
EXPORT_LOADER = "anytune.local_backend.export:load_export"

ExportFormat = Literal["merged", "onnx", "gguf"]

#: A Hub repo id: ``NAME`` or ``OWNER/NAME``; letters, digits, '-', '_', '.'; starting and ending with
#: a letter or digit, at most 96 characters each (huggingface_hub's own rule; '--' and '..' refused below).
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_REPO_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")


def check_hub_repo_id(repo: str) -> None:
    """Refuse a Hub repo id the Hub would refuse, before anything is sent.

    Raises:
        ConfigError: naming the value and the expected form.
    """
    if not _HUB_REPO_ID.match(repo) or ".." in repo or "--" in repo or repo.endswith(".git"):
        from anytune.errors import ConfigError

        raise ConfigError(
            f"{repo!r} is not a Hub repo id: expected OWNER/NAME (letters, digits, '-', '_', '.'; no '--' or "
            "'..'; starting and ending with a letter or digit)",
            field="repo",
        )


class LoadedModel(Protocol):
    """What :meth:`FineTunedModel.load` returns: a model that answers prompts."""

    def generate(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        **kwargs: Any,
    ) -> str: ...


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobStatus(str, enum.Enum):
    """Where a job is in its life. ``TERMINAL_STATUSES`` holds the states it never leaves."""

    VALIDATING = "validating"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class MetricPoint(_Model):
    """One logged training step, whatever the source (events, checkpoints, CSV, logs, files)."""

    step: int
    epoch: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    token_accuracy: float | None = None
    valid_token_accuracy: float | None = None
    learning_rate: float | None = None
    tokens_seen: int | None = None
    tokens_per_second: float | None = None
    time: datetime | None = None
    extra: dict[str, float] = Field(default_factory=dict)


class Checkpoint(_Model):
    """A saved state of the job: a model id (hosted) or a directory (local)."""

    step: int
    id: str | None = None
    model: str | None = None
    path: str | None = None
    metrics: MetricPoint | None = None
    created_at: datetime | None = None


EventKind = Literal["status", "log", "metric", "checkpoint"]


class Event(_Model):
    """Something that happened to a job, oldest first in ``stream()`` and ``events()``.

    ``id`` is the provider's cursor: it is unique per job and ``events(after=id)`` resumes after it.
    ``message`` and ``raw`` are redacted when the event is built: a key a service echoes never
    reaches the caller.
    """

    id: str
    kind: EventKind
    time: datetime
    message: str = ""
    level: Literal["debug", "info", "warning", "error"] = "info"
    status: JobStatus | None = None
    metric: MetricPoint | None = None
    checkpoint: Checkpoint | None = None
    raw: dict[str, Any] | None = None

    _redact = field_validator("message", "raw")(redact_value)

    def __str__(self) -> str:
        return f"{self.time:%H:%M:%S} {self.kind:<10} {self.message}"


class JobError(_Model):
    """The provider's account of why a job failed (redacted when built, like every service text)."""

    message: str
    code: str | None = None
    param: str | None = None

    _redact = field_validator("message", "code", "param")(redact_value)


class JobRecord(_Model):
    """The last known state of a job, as the provider reported it, mapped to uniform fields.

    ``raw_status`` and ``raw`` keep the provider's own view for anything the uniform fields miss;
    they, ``output`` and ``error`` are redacted when the record is built.
    """

    provider: str
    id: str
    status: JobStatus
    raw_status: str = ""
    base_model: str | None = None
    fine_tuned_model: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    error: JobError | None = None
    step: int | None = None
    total_steps: int | None = None
    trained_tokens: int | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any] = Field(default_factory=dict)

    _redact = field_validator("raw_status", "output", "raw")(redact_value)

    @property
    def ref(self) -> str:
        """Provider-qualified reference, e.g. ``openai:ftjob-abc``; works from any process."""
        return format_ref(self.provider, self.id)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Export(_Model):
    """An export of a fine-tuned model (:meth:`FineTunedModel.export`): where it lies and what it holds.

    ``path`` is the folder; ``files`` its file names. ``adapter`` names the ``.onnx_adapter`` file
    of an ONNX export that keeps the adapter apart from the base (``None`` when merged). Every
    export folder also holds ``anytune-export.json``, the same facts for other tools.
    """

    format: ExportFormat
    path: str
    files: tuple[str, ...]
    job_ref: str
    base_model: str | None = None
    adapter: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


#: What a result's live handles hold (its provider with clients and locks, weights in memory, bound
#: deployments): shared by a copy, left out of a pickle and of equality, which are the data's.
_LIVE = ("_provider", "_loaded", "_deployments")


class FineTunedModel(_Model):
    """What a succeeded job produced.

    Hosted providers give a ``model_id`` to call; the local backend gives an ``adapter_path``;
    Hugging Face Jobs give a ``hub_repo`` and ``revision``.
    """

    provider: str
    job_ref: str
    base_model: str | None = None
    model_id: str | None = None
    adapter_path: str | None = None
    hub_repo: str | None = None
    revision: str | None = None
    checkpoints: tuple[Checkpoint, ...] = ()
    final_metrics: MetricPoint | None = None
    trained_tokens: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    _loaded: Any = PrivateAttr(default=None)
    _exports: dict[str, Export] = PrivateAttr(default_factory=dict)
    #: The provider that made it (set by ``FineTuneJob.result``): what deploys and calls it.
    _provider: Any = PrivateAttr(default=None)
    #: Deployments deploy()/deployment() found, by name: chat() reuses a ready one without a read.
    _deployments: dict[str, Deployment] = PrivateAttr(default_factory=dict)

    @property
    def loaded(self) -> LoadedModel | None:
        """The model :meth:`load` loaded (kept for :meth:`generate` and :meth:`chat`), or None."""
        loaded: LoadedModel | None = self._loaded
        return loaded

    def unload(self) -> None:
        """Let go of the loaded model, and of the accelerator memory it held."""
        self._loaded = None
        import gc
        import sys

        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FineTunedModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, like any pydantic model

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private.update({name: None for name in _LIVE}, _deployments={})
        state["__pydantic_private__"] = private
        return state

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> FineTunedModel:
        memo = {} if memo is None else memo
        for name in _LIVE:  # the copy shares them (deepcopy returns what memo already holds)
            live = getattr(self, name)
            memo[id(live)] = live
        copied: FineTunedModel = super().__deepcopy__(memo)
        return copied

    def attach(self, provider: Any) -> FineTunedModel:
        """Remember the provider that made this result, for :meth:`deploy` and :meth:`chat`."""
        self._provider = provider
        return self

    @property
    def has_weights(self) -> bool:
        """Whether the weights can be reached from here (a local adapter, or one on the Hub): what
        loading, exporting and loss-based evaluation need; hosted results have a ``model_id`` only."""
        return self.adapter_path is not None or self.hub_repo is not None

    def load(
        self,
        *,
        device: str | None = None,
        base_model: str | None = None,
        format: Literal["adapter", "onnx"] = "adapter",
        path: str | None = None,
    ) -> LoadedModel:
        """Load the fine-tuned model for :meth:`generate`.

        ``format="adapter"`` (default): the base model with this adapter applied (transformers +
        peft; ``anytune[local]``), for results that carry an adapter: the local backend's
        ``adapter_path``, or a Hugging Face ``hub_repo``. ``format="onnx"``: an ONNX export run with
        ONNX Runtime GenAI on the CPU (``anytune[onnx]``), from ``path`` or from this object's last
        :meth:`export` to ONNX. The loaded model is kept for :meth:`generate`.

        Args:
            device: ``cpu``, ``cuda``, ``mps`` or ``auto`` (default); adapter format only.
            base_model: override the base model the adapter records.
            format: ``"adapter"`` or ``"onnx"``.
            path: the ONNX export folder (default: this result's last ONNX export).

        Raises:
            NotSupportedError: a hosted model (only a ``model_id``): call it through its service.
            MissingDependencyError: torch, transformers or peft (onnxruntime-genai) is not installed.
            UsageError: ``format="onnx"`` with no export to load.
        """
        if format != "adapter":
            loaded_export: LoadedModel = self._load_export(format, path)
            self._loaded = loaded_export
            return loaded_export
        if not self.has_weights:
            from anytune.errors import NotSupportedError

            target = f"model {self.model_id!r}" if self.model_id else "the fine-tuned model"
            raise NotSupportedError(
                f"this result has no adapter weights to load here; {target} is served by {self.provider}: "
                f"call it through the {self.provider} API (for OpenAI-compatible services, chat completions "
                f"with model={self.model_id!r})",
                field="load",
                provider=self.provider,
            )
        module, _, name = ADAPTER_LOADER.partition(":")
        loader = getattr(importlib.import_module(module), name)
        loaded: LoadedModel = loader(self, device=device, base_model=base_model)
        self._loaded = loaded
        return loaded

    def _load_export(self, format: str, path: str | None) -> LoadedModel:
        from anytune.errors import UsageError

        if format != "onnx":
            raise UsageError(f"load(format={format!r}): choose 'adapter' or 'onnx'")
        if path is None:
            known = self._exports.get("onnx")
            if known is None:
                raise UsageError(
                    "no ONNX export to load: export one first (model.export('onnx', out=DIR)) or pass path=DIR"
                )
            path = known.path
        module, _, name = EXPORT_LOADER.partition(":")
        opener = getattr(importlib.import_module(module), name)
        loaded: LoadedModel = opener(path, format=format)
        return loaded

    def export(
        self,
        format: ExportFormat,
        out: str | None = None,
        *,
        into: str | None = None,
        adapter: Literal["separate", "merged"] = "separate",
        precision: str | None = None,
        outtype: str | None = None,
        dtype: str = "auto",
        base_model: str | None = None,
        overwrite: bool = False,
    ) -> Export:
        """Export the fine-tuned weights for another runtime (``anytune[local]``, plus the format's extra).

        - ``"merged"``: the adapter merged into the base weights, a Hugging Face model folder that
          plain transformers loads (a bitsandbytes-quantised base is dequantised first).
        - ``"onnx"`` (``anytune[onnx]``): ONNX Runtime GenAI through Microsoft Olive
          (``olive auto-opt --use_model_builder --use_ort_genai``); the base model as ONNX and the
          adapter as ``<job>.onnx_adapter`` beside it (``adapter="separate"``, so one base serves
          several adapters: add another job's with ``into=``), or merged (``adapter="merged"``).
          Run it with ``load(format="onnx")``.
        - ``"gguf"`` (``anytune[gguf]``): one GGUF file for llama.cpp and Ollama, written with the
          ``gguf`` package, for Llama, Mistral, Qwen2 and Qwen3 models with byte-level BPE tokenizers.

        Works for results with weights: local runs and Hugging Face jobs (the adapter is downloaded
        from the Hub). Everything is checked before any weights are loaded or any file written.

        Args:
            format: ``"merged"``, ``"onnx"`` or ``"gguf"``.
            out: a new (or empty) folder to write.
            into: instead of ``out``, an ONNX export (``adapter="separate"``) of the same base model
                to add this result's adapter to.
            adapter: ONNX only: ``"separate"`` (default) or ``"merged"``.
            precision: ONNX only: ``"fp32"`` (default), ``"fp16"`` or ``"int4"``.
            outtype: GGUF only: ``"f16"`` (default), ``"f32"``, ``"bf16"`` or ``"q8_0"``.
            dtype: merged (and GGUF's merge step): ``"auto"`` (the checkpoint's), ``"float32"``,
                ``"float16"`` or ``"bfloat16"``.
            base_model: override the base model the adapter records.
            overwrite: replace the files of a non-empty ``out`` (only once the new export is whole).

        Raises:
            NotSupportedError: a hosted result (the service keeps its weights), or an architecture
                the format's converter does not handle.
            UsageError: an unknown format or option, ``out`` not empty, ``into`` not a matching export.
            MissingDependencyError: the format's packages are not installed.
            AnytuneError: the converter itself failed (the message quotes it).
        """
        module, _, name = EXPORTER.partition(":")
        exporter = getattr(importlib.import_module(module), name)
        export: Export = exporter(
            self,
            format=format,
            out=out,
            into=into,
            adapter=adapter,
            precision=precision,
            outtype=outtype,
            dtype=dtype,
            base_model=base_model,
            overwrite=overwrite,
        )
        return export

    def _remember_export(self, export: Export) -> None:
        """Keep the latest export of each format, for ``load(format=...)`` (exporters call this)."""
        self._exports[export.format] = export

    def generate(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        **kwargs: Any,
    ) -> str:
        """Answer ``prompt`` (a user message, or chat messages) with the fine-tuned model.

        Loads the model on first use (see :meth:`load`). Greedy decoding unless ``temperature > 0``.

        Raises:
            NotSupportedError: a hosted model without local weights (call it through its service).
        """
        loaded = self._loaded if self._loaded is not None else self.load()
        return loaded.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, **kwargs)

    # -- deploy and call ----------------------------------------------------------------------------
    def _deployer(self, action: str) -> Any:
        if self._provider is None:
            from anytune.errors import UsageError

            raise UsageError(
                f"this FineTunedModel was not made by a job: {action} the one FineTuneJob.get(ref).result() gives",
                field=action,
            )
        return self._provider

    def _named(self, name: str | None) -> str:
        from anytune._deploy import check_name, default_name

        return check_name(name) if name is not None else default_name(self.job_ref)

    def _bound(self, deployment: Deployment | None, name: str) -> Deployment | None:
        if deployment is None:
            return None
        provider = self._provider
        if deployment._answer is None:
            target = deployment.target

            def answer(messages: list[dict[str, Any]], max_tokens: int, temperature: float, seed: int) -> str:
                reply: str = provider.chat(target, messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
                return reply

            deployment._answer = answer
        deployment._remove = lambda: self.undeploy(name)
        self._deployments[name] = deployment
        return deployment

    def deploy(
        self, name: str | None = None, *, wait: bool = True, timeout: float | None = None, **settings: Any
    ) -> Deployment:
        """Make the fine-tuned model callable, on its provider: an Azure OpenAI model deployment, an
        Azure ML serverless (MaaS) or managed online (MaaP) endpoint, a Hugging Face Inference
        Endpoint; OpenAI serves its fine-tuned models as they are, and local results are loaded in
        this process. Idempotent: the deployment ``name`` (default: one derived from the job, the
        same every time) is found when it exists, created otherwise; never a second.

        Hosted deployments cost money while they exist, called or not: ``cost_notes`` says what and
        how much is known; :meth:`undeploy` stops it.

        Args:
            name: the deployment's name (3-32 lowercase letters, digits and '-').
            wait: return once it is ready (or failed).
            timeout: seconds to wait at most (default one hour); it keeps deploying after.
            settings: the provider's own (``anytune deploy --help`` lists them): ``sku``/``capacity``
                on Azure OpenAI, ``instance_type``/``instance_count`` on Azure ML managed compute,
                ``vendor``/``region``/``instance_type``/``instance_size`` on Hugging Face...

        Raises:
            UsageError: a bad name or setting (nothing is created).
            NotSupportedError: the provider cannot deploy this result.
            WaitTimeoutError: still deploying at the deadline.
        """
        from anytune._deploy import DEFAULT_TIMEOUT, check_settings, check_timeout

        provider = self._deployer("deploy")
        named = self._named(name)
        checked = check_settings(provider.DeploySettings, settings, provider.name)
        deployment = provider.deploy(
            self, named, checked, wait=wait, timeout=check_timeout(DEFAULT_TIMEOUT if timeout is None else timeout)
        )
        bound = self._bound(deployment, named)
        assert bound is not None
        return bound

    def deployment(self, name: str | None = None) -> Deployment | None:
        """The deployment ``name`` (default: the one :meth:`deploy` makes) as it is now, or None."""
        return self._current(self._named(name))

    def _current(self, named: str) -> Deployment | None:
        return self._bound(self._deployer("deployment").deployment(self, named), named)

    def undeploy(self, name: str | None = None) -> Deployment | None:
        """Delete the deployment ``name`` (default: the one :meth:`deploy` makes) and stop what it
        costs; waits until it is gone. None when there was nothing to delete (a repeat is harmless).
        The fine-tuned model itself is kept: ``deploy()`` again brings it back."""
        provider = self._deployer("undeploy")
        named = self._named(name)
        self._deployments.pop(named, None)
        gone: Deployment | None = provider.undeploy(self, named)
        return gone

    def chat(
        self,
        messages: str | Sequence[Mapping[str, Any]],
        *,
        name: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> str:
        """The fine-tuned model's reply to ``messages`` (chat messages, or one user message as
        text), through its deployment ``name`` (default: the one :meth:`deploy` makes). OpenAI's
        models and local results need no deploy; other hosted ones must be deployed first.

        Raises:
            UsageError: bad messages, or no deployment of that name (``deploy()`` first).
        """
        from anytune._deploy import as_messages

        checked = as_messages(messages)
        named = self._named(name)
        known = self._deployments.get(named)
        found = known if known is not None and known.ready else self._current(named)
        if found is None:
            from anytune.errors import UsageError

            raise UsageError(
                f"{self.job_ref} has no deployment {named!r}: deploy it first (model.deploy() / "
                f"anytune deploy {self.job_ref}; see its cost notes)",
                field="chat",
            )
        return found.chat(checked, max_tokens=max_tokens, temperature=temperature, seed=seed)

    def evaluate(
        self,
        data: str,
        *,
        metrics: Sequence[str] | None = None,
        max_examples: int | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        seed: int = 0,
        batch_size: int = 8,
        judge: Any | None = None,
        lm_eval_tasks: Sequence[str] = (),
        lm_eval_include: str | None = None,
        device: str | None = None,
        base_model: str | None = None,
        onnx: str | None = None,
    ) -> Any:
        """The base model and this fine-tuned model side by side on the held-out examples of ``data``
        (``anytune[local]``; ``rouge_l`` needs ``anytune[eval]``).

        For results with weights (local runs, Hugging Face Jobs results): the base model is loaded
        once and answers with the adapter on and off. A hosted result is evaluated through its
        service's chat API by ``FineTuneJob.evaluate``. Each example's last assistant turn is the
        reference; the turns before it are the prompt.

        Args:
            data: a held-out data file or folder (any shape ``anytune data`` reads), or a Hub dataset id.
            metrics: from ``loss``, ``perplexity``, ``exact_match``, ``token_f1``, ``rouge_l``, ``judge``;
                default all but ``judge``.
            max_examples: evaluate the first this many examples.
            max_new_tokens, temperature, seed: generation settings (greedy by default), recorded.
            batch_size: examples asked of a model at once.
            judge: an LLM judge (:class:`anytune.OpenAIJudge`) for the ``judge`` metric.
            lm_eval_tasks: lm-evaluation-harness tasks to run on both models too (``anytune[lm-eval]``);
                ``lm_eval_include`` is a folder of your own task definitions.
            device, base_model: as for :meth:`load`.
            onnx: evaluate this result's ONNX export in that folder (``anytune export --format onnx``,
                adapter kept apart) in ONNX Runtime instead of the PyTorch weights: the same metrics,
                loss included, with the export's adapter on and off (``anytune[onnx]``).

        Returns:
            An :class:`anytune.EvalReport`.
        """
        from anytune._eval.report import GenerationSettings
        from anytune._eval.run import evaluate_model

        return evaluate_model(
            self,
            data,
            metrics=metrics,
            max_examples=max_examples,
            settings=GenerationSettings(
                max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, batch_size=batch_size
            ),
            judge=judge,
            lm_eval_tasks=lm_eval_tasks,
            lm_eval_include=lm_eval_include,
            device=device,
            base_model=base_model,
            onnx=onnx,
        )

    def push_to_hub(
        self, repo: str, *, private: bool = True, token: str | None = None, endpoint: str | None = None
    ) -> FineTunedModel:
        """Publish this local result to a Hugging Face Hub model repo, in one commit.

        The adapter folder (the tokenizer too, when the trainer saved it), a model card with the
        metrics and hyperparameters, the metrics (``metrics.jsonl``), the spec and the result go to
        ``repo``, created when missing (``huggingface_hub``: ``anytune[local]`` or ``anytune[hf]``).

        Args:
            repo: ``OWNER/NAME`` (or ``NAME``, under the token's user).
            private: visibility of a repo created now; an existing repo keeps its own.
            token: a Hub token with write access; default ``HF_TOKEN``, then ``hf auth login``'s.
            endpoint: the Hub URL; default ``HF_ENDPOINT``, then huggingface.co.

        Returns:
            This result with ``hub_repo`` and ``revision`` set, and ``extra["hub_url"]``.

        Raises:
            ConfigError: a repo id the Hub would refuse, no token, no adapter in the folder.
            NotSupportedError: a hosted model (no adapter weights here to push).
            UsageError: a Hugging Face job's adapter, on the Hub already (the message says where).
            AuthenticationError, PermissionDeniedError, ProviderError: the Hub refused or failed.
        """
        check_hub_repo_id(repo)
        if self.adapter_path is None:
            from anytune.errors import NotSupportedError, UsageError

            if self.hub_repo is not None:
                at = f" at revision {self.revision}" if self.revision else ""
                raise UsageError(
                    f"{self.job_ref}'s adapter is on the Hub already: {self.hub_repo}{at} "
                    f"(https://huggingface.co/{self.hub_repo}); nothing pushed"
                )
            target = f"model {self.model_id!r}" if self.model_id else "the fine-tuned model"
            raise NotSupportedError(
                f"this result has no adapter weights here to push; {target} stays with {self.provider}",
                field="push",
                provider=self.provider,
            )
        module, _, name = HUB_PUBLISHER.partition(":")
        publish = getattr(importlib.import_module(module), name)
        pushed: FineTunedModel = publish(self, repo=repo, private=private, token=token, endpoint=endpoint)
        return pushed


def format_ref(provider: str, job_id: str) -> str:
    return f"{provider}:{job_id}"


def _is_text(value: str) -> bool:
    """Whether ``value`` is encodable text (an argument with undecodable bytes holds surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``provider:job_id``. Raises ``ValueError`` when there is no provider prefix."""
    if not ref.isascii() and not _is_text(ref):
        raise ValueError(f"job reference {ref!r} is not valid text (undecodable bytes)")
    provider, sep, job_id = ref.partition(":")
    if not sep or not provider or not job_id:
        raise ValueError(
            f"job reference {ref!r} is not provider-qualified; expected PROVIDER:JOB_ID, e.g. openai:ftjob-abc"
        )
    return provider, job_id
