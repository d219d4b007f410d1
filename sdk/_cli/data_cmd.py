"""``anytune data``: check and convert training files before anything is uploaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from anytune._cli._common import JsonOpt, cell, err, lit, out, print_json, safe

app = typer.Typer(help="Validate and convert datasets.", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="JSONL file.", show_default=False)]


@app.command("validate")
def validate(
    file: FileArg,
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
) -> None:
    """Check every line of FILE, print problems with line and field, and token/cost statistics.

    Exit status 0 when the file is valid, 3 when it has errors.
    """
    from anytune._data.validate import DatasetRules, require_data_file, validate_file
    from anytune.errors import ConfigError

    if method not in ("sft", "dpo"):
        raise ConfigError(f"expected 'sft' or 'dpo', got {method!r}", field="method", source="--method")
    require_data_file(file, "FILE")
    rules = DatasetRules(
        provider=provider,
        model=model,
        method=method,
        max_tokens_per_example=max_tokens,
        min_examples=min_examples,
        epochs=epochs,
    )
    report = validate_file(file, rules, max_issues=max_issues)
    notices = _notices(provider, model)
    if json:
        print_json(report.model_dump(mode="json") | {"ok": report.ok, "notices": notices})
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
    src: Annotated[Path, typer.Argument(help="Prompt/completion JSONL.")],
    dst: Annotated[Path, typer.Argument(help="Chat JSONL to write, or - for standard output.")],
    system: Annotated[str | None, typer.Option(help="System message to add to every example.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite DST if it exists.")] = False,
) -> None:
    """Turn a prompt/completion file into chat format (messages: user, assistant).

    With DST "-" the result goes to standard output (nothing at all when a line cannot be
    converted); the count goes to standard error.
    """
    from anytune._data.convert import convert_prompt_completion
    from anytune._data.validate import require_data_file
    from anytune.errors import ConfigError

    require_data_file(src, "SRC")
    if str(dst) == "-":
        count = _convert_to_stdout(src, system)
        err.print(f"wrote {count:,} examples to standard output")
        return
    if dst.exists() and not force:
        raise ConfigError(f"{dst} exists; pass --force to overwrite it", field="DST")
    count = convert_prompt_completion(src, dst, system=system)
    err.print(f"wrote {count:,} examples to {lit(dst)}")


def _convert_to_stdout(src: Path, system: str | None) -> int:
    """The converted lines on standard output: the exact bytes into a pipe or file; on a terminal,
    each line through :func:`safe` like any data shown there."""
    import sys
    import tempfile

    from anytune._data.convert import convert_prompt_completion_to

    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None and not sys.stdout.isatty():
        sys.stdout.flush()
        return convert_prompt_completion_to(src, buffer, system=system)
    with tempfile.TemporaryFile() as spool:
        count = convert_prompt_completion_to(src, spool, system=system)
        spool.seek(0)
        for line in spool:
            out.print(safe(line.decode().rstrip("\n")), markup=False)
    return count
