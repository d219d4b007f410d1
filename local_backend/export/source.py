"""What an export starts from: the adapter folder, the base model it was trained on, and the base's
architecture, all settled before any weights are loaded or any file is written.

Pure checks (:func:`check_request`, :func:`architecture_of`) are separate from the two steps that
may touch the network or the disk (:func:`adapter_folder` for a Hub result, :func:`base_config`),
so that every refusal happens before a byte is downloaded or written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anytune.errors import ConfigError, NotSupportedError, UsageError

if TYPE_CHECKING:
    from anytune._types import FineTunedModel

__all__ = [
    "FORMATS",
    "MANIFEST",
    "Source",
    "adapter_folder",
    "architecture_of",
    "base_config",
    "base_file",
    "check_out_dir",
    "check_request",
    "read_manifest",
    "resolve_source",
]

FORMATS = ("merged", "onnx", "gguf")
#: Written into every export folder: what it holds and where it came from (also how an ONNX export
#: is recognised when another adapter is added to it).
MANIFEST = "anytune-export.json"

#: Hosted services keep the weights they train: nothing to download, so nothing to export.
_HOSTED_ADVICE = (
    "{provider} keeps the weights it fine-tunes: they cannot be downloaded, so they cannot be exported. "
    "Call the model through {provider}'s API{model}; or fine-tune an open model with the local or huggingface "
    "provider (the same spec, another provider=) to get weights you can export"
)


def check_request(fmt: str, *, adapter: str, precision: str | None, outtype: str | None) -> None:
    """Refuse an export request that cannot be right, whatever the model.

    Raises:
        UsageError: an unknown format, or an option of another format.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if adapter not in ("separate", "merged"):
        raise UsageError(f"adapter must be 'separate' or 'merged', not {adapter!r}")
    if fmt != "onnx" and adapter != "separate":
        raise UsageError(f"adapter={adapter!r} applies to the onnx format only ({fmt} always merges the adapter)")
    if precision is not None and fmt != "onnx":
        raise UsageError(f"precision applies to the onnx format only; for {fmt} use dtype/outtype")
    if outtype is not None and fmt != "gguf":
        raise UsageError(f"outtype applies to the gguf format only, not to {fmt}")


def check_out_dir(out: str, *, overwrite: bool, keep: tuple[Path, ...] = ()) -> Path:
    """The destination, resolved: a new or empty folder, or (``overwrite``) an earlier export.

    ``overwrite`` replaces only a folder that holds an anytune export (its ``anytune-export.json``):
    never the adapter, the base model, a folder holding either (``keep``), or any other folder.

    Raises:
        UsageError: an empty path, a file, a folder in the way, or one of ``keep`` (or above it).
    """
    if not str(out).strip():
        raise UsageError("the export folder is an empty path: name a new folder to write")
    target = Path(out).expanduser().resolve()
    for kept in keep:
        kept = kept.resolve()
        if target == kept or target in kept.parents:
            raise UsageError(f"{target} holds {kept}, which the export reads: choose a folder of its own")
    if target.is_file():
        raise UsageError(f"{target} is a file: give a folder to write the export into")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise UsageError(f"{target} is not empty: choose a new folder, or pass overwrite (--force) to replace it")
        if not (target / MANIFEST).is_file():
            raise UsageError(
                f"{target} is not an anytune export (no {MANIFEST}): overwrite (--force) replaces earlier exports "
                "only; choose a new folder"
            )
    return target


@dataclass(frozen=True)
class Source:
    """A fine-tuned result reduced to what an export reads."""

    job_ref: str
    #: the adapter's folder on disk, or a Hub repo to download (``hub_repo`` set).
    adapter_path: str | None
    hub_repo: str | None
    revision: str | None
    base_model: str


def resolve_source(model: FineTunedModel, *, base_model: str | None) -> Source:
    """The adapter and base model of ``model``, or a clear refusal for a result without weights.

    The base the adapter records wins over the one the job was given (as in ``load``); ``base_model``
    overrides both.

    Raises:
        NotSupportedError: a hosted result (a model id only).
        ConfigError: an adapter folder that is gone or holds no adapter; no base model known.
    """
    from anytune.local_backend.inference import adapter_base

    if not model.has_weights:
        named = f" (model={model.model_id!r})" if model.model_id else ""
        raise NotSupportedError(
            _HOSTED_ADVICE.format(provider=model.provider, model=named),
            field="export",
            provider=model.provider,
            alternatives=["local", "huggingface"],
        )
    if model.adapter_path is not None:
        folder = Path(model.adapter_path)
        if not (folder / "adapter_config.json").is_file():
            raise ConfigError(
                f"{model.job_ref}'s adapter folder {folder} holds no adapter_config.json "
                "(moved or deleted?): nothing to export",
                field="adapter_path",
            )
    recorded = adapter_base(model.adapter_path) if model.adapter_path is not None else None
    base = base_model or recorded or model.base_model
    if not base:
        raise ConfigError(
            f"{model.job_ref}'s adapter does not record its base model: pass base_model", field="base_model"
        )
    return Source(
        job_ref=model.job_ref,
        adapter_path=model.adapter_path,
        hub_repo=model.hub_repo if model.adapter_path is None else None,
        revision=model.revision,
        base_model=base,
    )


def adapter_folder(source: Source) -> Path:
    """The adapter on disk: its own folder, or a Hub result downloaded into the Hub cache."""
    if source.adapter_path is not None:
        return Path(source.adapter_path)
    from anytune.local_backend.inference import hub_adapter_folder

    assert source.hub_repo is not None
    return hub_adapter_folder(source.hub_repo, source.revision)


def base_file(base_model: str, name: str) -> Path | None:
    """A file of the base model: in its folder (``None`` when the folder lacks it), else fetched
    through the Hub cache."""
    from anytune.local_backend.model import resolve_model_source

    source = resolve_model_source(base_model)
    if Path(source).is_dir():
        path = Path(source) / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(source, name))


def base_config(base_model: str) -> dict[str, Any]:
    """The base model's ``config.json`` as a dict (a local folder, else through the Hub cache)."""
    path = base_file(base_model, "config.json")
    assert path is not None  # resolve_model_source refuses a folder without one
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def architecture_of(config: dict[str, Any]) -> str:
    """The model class a config names (``LlamaForCausalLM``), or its ``model_type`` when it names none."""
    names = config.get("architectures") or []
    return str(names[0]) if names else str(config.get("model_type") or "unknown")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of an anytune export folder, or ``None`` when ``folder`` is not one."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def adapter_name(job_ref: str) -> str:
    """A file-name-safe adapter name from a job reference (``local:abc-123`` → ``local_abc-123``)."""
    return _NAME_UNSAFE.sub("_", job_ref).strip("._") or "adapter"
