"""Export a fine-tuned result for other runtimes: merged Hugging Face weights, ONNX Runtime (through
Olive) or GGUF (llama.cpp, Ollama).

``FineTunedModel.export()`` calls :func:`export_result` (see ``anytune._types.EXPORTER``). Every
refusal (a hosted result, an unknown format, a folder in the way, an architecture the format's
converter does not handle, a missing package) comes before any weights are loaded or any file is
written. The export is built in a scratch folder beside the destination and moved into place at
the end, so an interrupted or failed export leaves no half-written folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anytune.errors import UsageError
from anytune.local_backend.export.source import (
    FORMATS,
    MANIFEST,
    adapter_folder,
    adapter_name,
    architecture_of,
    base_config,
    base_file,
    check_out_dir,
    check_request,
    read_manifest,
    resolve_source,
)
from anytune.local_backend.rundir import pid_alive

if TYPE_CHECKING:
    from anytune._types import Export, FineTunedModel

__all__ = ["FORMATS", "MANIFEST", "export_result", "load_export"]


def _write_manifest(folder: Path, data: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for package in packages:
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def _tokenizer_json(adapter_dir: Path, base_model: str) -> dict[str, Any] | None:
    """The ``tokenizer.json`` an export will carry: the adapter's own copy, else the base model's."""
    own = adapter_dir / "tokenizer.json"
    file = own if own.is_file() else base_file(base_model, "tokenizer.json")
    if file is None:
        return None
    data: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return data


def _preflight(fmt: str, base_model: str, adapter_dir: Path) -> None:
    """Check the base model (and for GGUF its tokenizer) against the format's converter."""
    config = base_config(base_model)
    if fmt == "onnx":
        from anytune.local_backend.export import onnx

        onnx.require()
        onnx.check_architecture(architecture_of(config))
    elif fmt == "gguf":
        from anytune.local_backend.export import gguf

        gguf.require()
        gguf.check_model(config, _tokenizer_json(adapter_dir, base_model))


def export_result(
    model: FineTunedModel,
    *,
    format: str,
    out: str | Path | None = None,
    into: str | Path | None = None,
    adapter: str = "separate",
    precision: str | None = None,
    outtype: str | None = None,
    dtype: str = "auto",
    base_model: str | None = None,
    overwrite: bool = False,
) -> Export:
    """What :meth:`anytune.FineTunedModel.export` calls; see there for the arguments."""
    from anytune._types import Export

    check_request(format, adapter=adapter, precision=precision, outtype=outtype)
    if (out is None) == (into is None):
        raise UsageError("give exactly one of out (a new folder) or into (an ONNX export to add this adapter to)")
    if into is not None and format != "onnx":
        raise UsageError("into adds an adapter to an ONNX export: it applies to the onnx format only")
    if format == "gguf" and (outtype or "f16") not in _gguf_outtypes():
        raise UsageError(f"outtype must be one of {', '.join(_gguf_outtypes())}, not {outtype!r}")
    if format == "onnx" and (precision or "fp32") not in _onnx_precisions():
        raise UsageError(f"precision must be one of {', '.join(_onnx_precisions())}, not {precision!r}")
    from anytune.local_backend.export.merged import DTYPES

    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if format == "onnx" and dtype != "auto":
        raise UsageError("dtype applies to the merged and gguf formats; for onnx use precision (fp32, fp16, int4)")
    source = resolve_source(model, base_model=base_model)
    name = adapter_name(source.job_ref)
    if into is not None:
        return _add_to_onnx(model, Path(into), source=source, name=name, precision=precision)
    keep = tuple(Path(p) for p in (source.adapter_path, source.base_model) if p and Path(p).exists())
    target = check_out_dir(str(out), overwrite=overwrite, keep=keep)
    adapter_dir = adapter_folder(source)  # a Hugging Face job's adapter is downloaded (read only)
    _preflight(format, source.base_model, adapter_dir)

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_scratch(target.parent, target.name)
    with tempfile.TemporaryDirectory(prefix=_scratch_prefix(target.name), dir=target.parent) as scratch:
        work = Path(scratch)
        built = work / "export"
        built.mkdir()
        manifest: dict[str, Any] = {
            "format": format,
            "job_ref": source.job_ref,
            "base_model": source.base_model,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        adapter_file: str | None = None
        if format == "merged":
            from anytune.local_backend.export.merged import save_merged

            save_merged(adapter_dir, source.base_model, built, dtype=dtype)
            manifest.update(dtype=dtype, versions=_versions(("transformers", "peft", "torch")))
        elif format == "gguf":
            from anytune.local_backend.export.gguf import write_gguf
            from anytune.local_backend.export.merged import save_merged

            merged = work / "merged"
            merged.mkdir()
            save_merged(adapter_dir, source.base_model, merged, dtype=dtype)
            kind = outtype or "f16"
            write_gguf(merged, built / f"{name}.{kind}.gguf", outtype=kind, name=name)
            manifest.update(outtype=kind, file=f"{name}.{kind}.gguf", versions=_versions(("gguf", "transformers")))
        else:
            from anytune.local_backend.export import onnx

            merged_dir: Path | None = None
            if adapter == "merged":
                from anytune.local_backend.export.merged import save_merged

                merged_dir = work / "merged"
                merged_dir.mkdir()
                save_merged(adapter_dir, source.base_model, merged_dir, dtype="float32")
            built.rmdir()  # Olive writes its output folder itself
            _, adapter_file = onnx.export_onnx(
                adapter_dir,
                source.base_model,
                built,
                work,
                name=name,
                precision=precision or "fp32",
                merged_dir=merged_dir,
            )
            manifest.update(
                adapter=adapter,
                precision=precision or "fp32",
                adapters={name: adapter_file} if adapter_file else {},
                default_adapter=name if adapter_file else None,
                versions=_versions(("olive-ai", "onnxruntime-genai", "onnxruntime", "transformers")),
            )
        _write_manifest(built, manifest)
        _move_into_place(built, target, overwrite=overwrite)
    files = tuple(sorted(p.name for p in target.iterdir()))
    export = Export(
        format=format,
        path=str(target),
        files=files,
        job_ref=source.job_ref,
        base_model=source.base_model,
        adapter=adapter_file,
        options={k: manifest[k] for k in ("dtype", "outtype", "adapter", "precision") if k in manifest},
    )
    model._remember_export(export)
    return export


def _scratch_prefix(name: str) -> str:
    """Scratch folders beside the destination carry the exporting process's id, so that one left by
    a killed export (SIGKILL runs no clean-up) is recognised and removed by the next export there."""
    return f".{name}.anytune-{os.getpid()}-"


def _remove_stale_scratch(parent: Path, name: str) -> None:
    for folder in parent.glob(f".{name}.anytune-*-*"):
        pid = folder.name[len(f".{name}.anytune-") :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _move_into_place(built: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the finished export to ``target``: the old export (``overwrite``) goes only now that the
    new one is whole; an export that another process finished there meanwhile is not replaced."""
    if target.is_dir() and (overwrite or not any(target.iterdir())):
        shutil.rmtree(target)
    try:
        built.rename(target)  # atomic; refuses a non-empty folder
    except OSError as exc:
        if target.exists():
            raise UsageError(f"{target} was filled by another export while this one ran: nothing replaced") from exc
        raise


def _add_to_onnx(model: FineTunedModel, into: Path, *, source: Any, name: str, precision: str | None) -> Export:
    """Add ``model``'s adapter to the ONNX export in ``into`` (Olive's one base, many adapters)."""
    from anytune._types import Export
    from anytune.local_backend.export import onnx

    manifest = read_manifest(into)
    if manifest is None or manifest.get("format") != "onnx":
        raise UsageError(f"{into} is not an ONNX export written by anytune (no {MANIFEST} of format onnx)")
    if manifest.get("adapter") == "merged":
        raise UsageError(f"{into} holds a merged model: it takes no adapters; export with adapter='separate'")
    if manifest.get("base_model") != source.base_model:
        raise UsageError(
            f"{into} serves base model {manifest.get('base_model')!r}, this adapter was trained on "
            f"{source.base_model!r}: adapters share an ONNX model only with their own base"
        )
    precision = precision or str(manifest.get("precision", "fp32"))
    if manifest.get("precision", "fp32") != precision:
        raise UsageError(
            f"{into} holds a {manifest.get('precision', 'fp32')} model: add adapters at that precision, not {precision}"
        )
    adapters = dict(manifest.get("adapters") or {})
    if name in adapters:
        raise UsageError(f"{into} already holds adapter {name!r} ({adapters[name]})")
    onnx.require()
    _remove_stale_scratch(into.resolve().parent, into.resolve().name)
    with tempfile.TemporaryDirectory(prefix=_scratch_prefix(into.resolve().name), dir=into.resolve().parent) as scratch:
        file = onnx.add_adapter(
            adapter_folder(source), source.base_model, into, Path(scratch), name=name, precision=precision
        )
    adapters[name] = file
    manifest["adapters"] = adapters
    _write_manifest(into, manifest)
    export = Export(
        format="onnx",
        path=str(into.resolve()),
        files=tuple(sorted(p.name for p in into.iterdir())),
        job_ref=source.job_ref,
        base_model=source.base_model,
        adapter=file,
        options={"adapter": "separate", "precision": precision},
    )
    model._remember_export(export)
    return export


def _gguf_outtypes() -> tuple[str, ...]:
    from anytune.local_backend.export.gguf import OUTTYPES

    return OUTTYPES


def _onnx_precisions() -> tuple[str, ...]:
    from anytune.local_backend.export.onnx import PRECISIONS

    return PRECISIONS


def load_export(path: str | Path, *, format: str) -> Any:
    """What ``FineTunedModel.load(format=...)`` calls for an export folder."""
    if format == "onnx":
        from anytune.local_backend.export.onnx import load_onnx

        return load_onnx(path)
    raise UsageError(f"load(format={format!r}): only 'adapter' (default) and 'onnx' load here")
