"""``anytune export``: a succeeded job's fine-tuned weights as a merged model, ONNX Runtime or GGUF."""

from __future__ import annotations

from typing import Annotated, cast

import typer

from anytune import FineTuneJob
from anytune._cli._common import JsonOpt, ProfileOpt, err, lit, out, print_json, safe
from anytune._job import require_succeeded
from anytune._types import ExportFormat
from anytune.errors import UsageError

_FORMATS = ("merged", "onnx", "gguf")


def export(
    ref: Annotated[str, typer.Argument(help="Job reference (PROVIDER:ID) of a succeeded job.", show_default=False)],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="merged (Hugging Face folder), onnx (ONNX Runtime GenAI) or gguf.",
            show_default=False,
        ),
    ],
    out_dir: Annotated[
        str | None, typer.Option("--out", "-o", help="New or empty folder to write.", show_default=False)
    ] = None,
    into: Annotated[
        str | None,
        typer.Option(
            "--into", help="Add this job's adapter to an existing ONNX export of the same base.", show_default=False
        ),
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="onnx: merge the adapter into the model (default: a separate adapter file).")
    ] = False,
    precision: Annotated[
        str | None, typer.Option("--precision", help="onnx: fp32 (default), fp16 or int4.", show_default=False)
    ] = None,
    outtype: Annotated[
        str | None, typer.Option("--outtype", help="gguf: f16 (default), f32, bf16 or q8_0.", show_default=False)
    ] = None,
    dtype: Annotated[
        str, typer.Option("--dtype", help="merged: auto (the checkpoint's), float32, float16 or bfloat16.")
    ] = "auto",
    base_model: Annotated[
        str | None,
        typer.Option("--base-model", help="Override the base model the adapter records.", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out folder.")] = False,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Export a succeeded job's weights: merged (plain transformers), onnx (Olive + ONNX Runtime GenAI) or gguf
    (llama.cpp, Ollama).

    Local runs and Hugging Face jobs have weights to export; hosted services (OpenAI, Azure OpenAI,
    Azure ML serverless) keep theirs, and the command says so before doing anything.
    """
    if format_ not in _FORMATS:
        raise UsageError(f"unknown --format {format_!r}: choose one of {', '.join(_FORMATS)}")
    if (out_dir is None) == (into is None):
        raise UsageError("give --out DIR (a new folder) or --into DIR (an ONNX export to add this adapter to)")
    job = FineTuneJob.get(ref, profile=profile)
    require_succeeded(job.record, "exported")
    err.print(f"exporting {lit(job.ref)} as {lit(format_)} ...")
    done = job.result().export(
        cast(ExportFormat, format_),
        out_dir,
        into=into,
        adapter="merged" if merge else "separate",
        precision=precision,
        outtype=outtype,
        dtype=dtype,
        base_model=base_model,
        overwrite=force,
    )
    if json:
        print_json(done)
        return
    err.print(f"exported {lit(job.ref)} as {lit(done.format)}: {len(done.files)} files")
    out.print(safe(done.path), markup=False)
