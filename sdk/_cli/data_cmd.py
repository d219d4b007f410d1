"""``anytune data``: check and convert training files before anything is uploaded."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from anytune._cli._common import JsonOpt, cell, err, lit, out, print_json, safe

if TYPE_CHECKING:
    from anytune._data.pipeline import Conversion
    from anytune._data.shapes import Shape

app = typer.Typer(help="Validate and convert datasets.", no_args_is_help=True)

FileArg = Annotated[
    Path,
    typer.Argument(
        help="Data file (.jsonl, .ndjson, .json, .csv, .tsv, .parquet) or folder (saved by datasets, or of "
        "data files).",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        help="Shape of the rows: auto (from the first row), chat, prompt_completion, preference, trl_preference, "
        "alpaca, sharegpt.",
    ),
]
ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        "--columns", help="Read columns as a shape's fields: prompt=question,completion=answer.", show_default=False
    ),
]
PromptTemplateOpt = Annotated[
    str | None,
    typer.Option("--prompt-template", help="Build the prompt from columns: 'Q: {question}'.", show_default=False),
]
CompletionTemplateOpt = Annotated[
    str | None,
    typer.Option("--completion-template", help="Build the completion from columns: '{answer}'.", show_default=False),
]
TemplateOpt = Annotated[
    str | None,
    typer.Option(
        "--template",
        help="Build the whole text from columns, Olive's style: '### Question: {prompt} ### Answer: {response}'; "
        "the text from its last {field} on is the completion (the part learned).",
        show_default=False,
    ),
]
SourceArg = Annotated[
    str,
    typer.Argument(
        help="Data file (.jsonl, .ndjson, .json, .csv, .tsv, .parquet), folder (saved by datasets, or of data "
        "files), or Hugging Face Hub dataset id (org/name; a name that exists on disk is a path).",
        show_default=False,
    ),
]
SystemOpt = Annotated[
    str | None, typer.Option(help="System message to add to every example (one that has none).", show_default=False)
]
SplitOpt = Annotated[
    str | None,
    typer.Option(
        "--split",
        help="Split of a Hub dataset, with an optional slice (train[:4096], train[4096:4224], train[:10%], "
        "train[-100:]), or of a folder saved from a DatasetDict (default: train).",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    str | None, typer.Option("--config", help="Config of a Hub dataset (default: its default).", show_default=False)
]
RevisionOpt = Annotated[
    str | None,
    typer.Option("--revision", help="Branch, tag or commit of a Hub dataset (default: main).", show_default=False),
]

#: Sources that are always converted first: the JSONL validator and converter read JSON Lines only.
_CONVERTED = (".json", ".csv", ".tsv", ".parquet")


@dataclass(frozen=True)
class _Reading:
    """How to read a source: the shape options of ``data validate`` and ``data convert``."""

    format: str = "auto"
    columns: str | None = None
    prompt_template: str | None = None
    completion_template: str | None = None
    template: str | None = None
    system: str | None = None
    split: str | None = None
    config: str | None = None
    revision: str | None = None

    @property
    def shaping(self) -> bool:
        """Options beyond --format and --system that only the conversion pipeline honours."""
        options = (self.columns, self.prompt_template, self.completion_template, self.template, self.split)
        return any(v is not None for v in (*options, self.config, self.revision))

    def kwargs(self) -> dict[str, Any]:
        from anytune._data.shapes import parse_columns

        return {
            "format": self.format,
            "columns": parse_columns(self.columns) if self.columns is not None else None,
            "prompt_template": self.prompt_template,
            "completion_template": self.completion_template,
            "text_template": self.template,
            "system": self.system,
            "split": self.split,
            "config": self.config,
            "revision": self.revision,
        }


def _as_is(
    source: str, reading: _Reading, field: str, shapes: tuple[str, ...], method: str | None
) -> tuple[bool, str | None]:
    """Whether ``path`` goes to the JSON Lines validator (``method`` given) or prompt/completion
    converter as it is, as before other sources and shapes were read; and, for the validator, a
    hint when its first row is in no known shape.

    As it is: a file not named as another kind, read with no shaping option (for the validator,
    --system is one), whose first row is one of ``shapes`` as the validator reads it or cannot be
    read (the validator or converter says why); for the validator, also a first row of no known
    shape, with the hint. A Hub dataset id never is.
    """
    from anytune._data.shapes import describe_mismatch, detect_shape, is_canonical, normalise_format
    from anytune._data.sources import classify_source, first_row
    from anytune._data.validate import require_data_file

    fmt = normalise_format(reading.format)
    try:
        kind = classify_source(source)
    except FileNotFoundError as exc:
        from anytune.errors import ConfigError

        raise ConfigError(f"{source}: {exc.strerror}", field=field) from None
    if kind == "hub":
        return False, None
    path = Path(source)
    if os.path.isdir(path):
        return False, None
    require_data_file(path, field)
    if reading.shaping or (method and reading.system is not None) or path.suffix.lower() in _CONVERTED:
        return False, None
    row = first_row(path)
    if row is None:
        return fmt == "auto" or fmt in shapes, None
    shape = detect_shape(row)
    if shape is None:
        if fmt != "auto" or not method:
            return False, None
        hint = describe_mismatch(row, "preference" if method == "dpo" else "chat", source=str(path))
        return True, f"{path}: {hint}"
    return is_canonical(row, shape) and shape in shapes and fmt in ("auto", shape), None


def _read_as(source: str, shape: Shape | None, unused: tuple[str, ...]) -> list[str]:
    """Notices saying how a converted source was read."""
    from anytune._data.shapes import SHAPES

    notes = []
    if shape is not None:
        info = SHAPES[shape]
        target = "OpenAI DPO" if info.method == "dpo" else "OpenAI chat"
        notes.append(f"read {source} as {info.describe()}, converted to {target} examples")
    if unused:
        notes.append(f"columns not used: {', '.join(unused)}")
    return notes


@app.command("validate")
def validate(
    file: SourceArg,
    method: Annotated[str, typer.Option(help="sft or dpo.")] = "sft",
    provider: Annotated[
        str | None, typer.Option("--provider", "-p", help="Apply this provider's limits and prices.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model whose tokenizer, limits and price apply.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Maximum tokens per example.")] = None,
    min_examples: Annotated[int, typer.Option(help="Fewest examples accepted.")] = 10,
    epochs: Annotated[int | None, typer.Option(help="Epochs for the billed-token estimate.")] = None,
    max_issues: Annotated[int, typer.Option(help="Issues listed at most (all are counted).")] = 1000,
    json: JsonOpt = False,
    format: FormatOpt = "auto",
    columns: ColumnsOpt = None,
    prompt_template: PromptTemplateOpt = None,
    completion_template: CompletionTemplateOpt = None,
    template: TemplateOpt = None,
    system: SystemOpt = None,
    split: SplitOpt = None,
    config: ConfigOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Check every row of FILE, print problems with row (or line) and field, and token/cost statistics.

    Rows in another shape than OpenAI chat / DPO (Alpaca, ShareGPT, TRL, prompt/completion, any
    columns through --columns or a template) are converted first, and each problem is reported
    against the row it came from. FILE may be a Hub dataset id (org/name; --config, --revision,
    --split "train[:4096]"): rows are named org/name[train]:row N. Exit status 0 when the file is
    valid, 3 when it has errors.
    """
    from anytune._data.pipeline import validate_source
    from anytune._data.validate import DatasetRules, validate_file
    from anytune.errors import ConfigError

    if method not in ("sft", "dpo"):
        raise ConfigError(f"expected 'sft' or 'dpo', got {method!r}", field="method", source="--method")
    reading = _Reading(format, columns, prompt_template, completion_template, template, system, split, config, revision)
    as_is, hint = _as_is(file, reading, "FILE", ("chat", "preference", "prompt_completion"), method)
    rules = DatasetRules(
        provider=provider,
        model=model,
        method=method,
        max_tokens_per_example=max_tokens,
        min_examples=min_examples,
        epochs=epochs,
    )
    extra: dict[str, Any] = {}
    if as_is:
        report = validate_file(file, rules, max_issues=max_issues)
        notices = ([hint] if hint else []) + _notices(provider, model)
    else:
        result = validate_source(file, rules, max_issues=max_issues, field="FILE", **reading.kwargs())
        report = result.report
        notices = _read_as(report.file, result.shape, result.unused_columns) + _notices(provider, model)
        extra = {"read_as": result.shape}
    if json:
        print_json(report.model_dump(mode="json") | {"ok": report.ok, "notices": notices} | extra)
    else:
        for notice in notices:
            err.print(f"[yellow]notice[/] {lit(notice)}", highlight=False)
        for issue in report.issues:
            style = "red" if issue.severity == "error" else "yellow"
            err.print(f"[{style}]{issue.severity}[/] {lit(issue)}", highlight=False)
        shown = len(report.issues)
        total = report.errors + report.warnings
        if total > shown:
            err.print(f"... {total - shown} more issues not listed; counts by kind: {lit(report.issue_counts)}")
        _summary(report)
    if not report.ok:
        raise typer.Exit(3)


def _notices(provider: str | None, model: str | None) -> list[str]:
    """The provider's advice about the model (a retirement near or past); none when either is not
    given or the provider cannot be built here (its extra missing, its settings incomplete)."""
    if not provider or not model:
        return []
    from anytune import _registry
    from anytune.errors import AnytuneError

    try:
        return _registry.load(provider)().notices(model)
    except AnytuneError:
        return []


def _summary(report: object) -> None:
    from anytune._data.validate import DatasetReport

    assert isinstance(report, DatasetReport)
    table = Table(show_header=False, box=None, title=cell(report.file, "bold"))
    table.add_column(style="bold")
    table.add_column()
    verdict = "[green]valid[/]" if report.ok else f"[red]{report.errors} errors[/]"
    table.add_row("result", f"{verdict}, {report.warnings} warnings")
    table.add_row("format", cell(f"{report.format} ({report.method})"))
    table.add_row("examples", f"{report.examples:,}")
    if report.tokens is not None:
        t = report.tokens
        exact = "" if report.tokens_exact else " (approximate)"
        table.add_row("tokenizer", cell(report.tokenizer + exact))
        table.add_row(
            "tokens",
            f"{t.total:,} total; per example min {t.min:,} / mean {t.mean:,.0f} / "
            f"p50 {t.p50:,} / p90 {t.p90:,} / p99 {t.p99:,} / max {t.max:,}",
        )
    if report.billed_tokens_estimate is not None:
        table.add_row("billed tokens", f"~{report.billed_tokens_estimate:,} over {report.epochs_estimate} epochs")
    if report.cost is not None:
        c = report.cost
        table.add_row(
            "estimated cost",
            cell(f"${c.usd:,.2f} ({c.provider} {c.model}, ${c.usd_per_million:g}/1M tokens, ")
            + cell(f"prices as of {c.price_as_of})"),
        )
    out.print(table)


@app.command("convert")
def convert(
    src: Annotated[
        str, typer.Argument(help="Data file or folder, or Hub dataset id (org/name), in any shape (see --format).")
    ],
    dst: Annotated[Path, typer.Argument(help="Chat (or DPO) JSONL to write, or - for standard output.")],
    system: SystemOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite DST if it exists.")] = False,
    format: FormatOpt = "auto",
    columns: ColumnsOpt = None,
    prompt_template: PromptTemplateOpt = None,
    completion_template: CompletionTemplateOpt = None,
    template: TemplateOpt = None,
    split: SplitOpt = None,
    config: ConfigOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Turn any source into OpenAI chat JSONL (DPO JSONL for preference data).

    Reads JSONL, JSON, CSV/TSV, Parquet, folders and Hub datasets (org/name, with --config,
    --revision and --split "train[:4096]"); rows in OpenAI chat or DPO, prompt/completion,
    TRL, Alpaca or ShareGPT shape, or any columns through --columns or templates. Nothing is written
    when a row cannot be converted. With DST "-" the result goes to standard output (nothing at all
    when a row cannot be converted); the count goes to standard error.
    """
    from anytune._data.convert import convert_prompt_completion, convert_prompt_completion_to
    from anytune._data.pipeline import write_canonical, write_canonical_to
    from anytune.errors import ConfigError

    reading = _Reading(format, columns, prompt_template, completion_template, template, system, split, config, revision)
    legacy, _ = _as_is(src, reading, "SRC", ("prompt_completion",), None)
    kwargs = {} if legacy else reading.kwargs()
    notes: list[str] = []

    def to_stream(stream: IO[bytes]) -> int:
        if legacy:
            return convert_prompt_completion_to(src, stream, system=system)
        return _counted(write_canonical_to(src, stream, **kwargs), notes)

    if str(dst) == "-":
        count = _convert_to_stdout(to_stream)
        err.print(f"wrote {count:,} examples to standard output")
    else:
        if dst.exists() and not force:
            raise ConfigError(f"{dst} exists; pass --force to overwrite it", field="DST")
        if legacy:
            count = convert_prompt_completion(src, dst, system=system)
        else:
            count = _counted(write_canonical(src, dst, **kwargs), notes)
        err.print(f"wrote {count:,} examples to {lit(dst)}")
    for note in notes:
        err.print(f"[yellow]notice[/] {lit(note)}", highlight=False)


def _counted(conversion: Conversion, notes: list[str]) -> int:
    notes += _read_as(conversion.source, conversion.shape, conversion.unused_columns)
    return conversion.examples


def _convert_to_stdout(write: Callable[[IO[bytes]], int]) -> int:
    """The converted lines on standard output: the exact bytes into a pipe or file; on a terminal,
    each line through :func:`safe` like any data shown there."""
    import sys
    import tempfile

    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None and not sys.stdout.isatty():
        sys.stdout.flush()
        return write(buffer)
    with tempfile.TemporaryFile() as spool:
        count = write(spool)
        spool.seek(0)
        for line in spool:
            out.print(safe(line.decode().rstrip("\n")), markup=False)
    return count


# `data preview` lives in its own module, which reuses the options above and registers itself on app.
from anytune._cli import preview_cmd  # noqa: E402, F401
