"""``anytune data preview``: the first examples as the model will see them, what is learned marked."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from anytune._cli._common import JsonOpt, err, out, print_json, safe
from anytune._cli.data_cmd import (
    ColumnsOpt,
    CompletionTemplateOpt,
    ConfigOpt,
    FormatOpt,
    PromptTemplateOpt,
    RevisionOpt,
    SourceArg,
    SplitOpt,
    SystemOpt,
    TemplateOpt,
    _Reading,
    app,
)

if TYPE_CHECKING:
    from anytune._data.preview import PreviewExample, Rendered

#: Around learned text where the terminal shows no colour (NO_COLOR, a pipe, a file).
OPEN, CLOSE = "⟦", "⟧"
#: Where max_length cuts, in the text.
CUT = "✂"
LEARNED = "bold green"


def _plain() -> bool:
    return out.no_color or out.color_system is None


def _text(rendered: Rendered, *, roles: bool) -> Text:
    plain = _plain()
    text = Text()
    cut = False
    for segment in rendered.segments:
        if roles:
            text.append(f"{safe(segment.role)}: ", style="bold")
        if segment.cut and not cut:
            cut = True
            text.append(f"{CUT} max_length ", style="bold red")
        body = safe(segment.text)
        if segment.learned:
            text.append(f"{OPEN}{body}{CLOSE}" if plain else body, style=LEARNED)
        else:
            text.append(body, style="dim strike" if segment.cut else "")
        if roles:
            text.append("\n")
    return text


def _counts(rendered: Rendered) -> str:
    if rendered.tokens is None:
        return ""
    line = f"{rendered.tokens:,} tokens, {rendered.learned_tokens:,} learned"
    if rendered.cut_at is not None:
        line += f"; cut at max_length {rendered.cut_at:,} ({rendered.tokens - rendered.cut_at:,} not seen)"
    return line


def _show(number: int, example: PreviewExample) -> None:
    out.print(Text(f"── example {number} · {safe(example.location)} ──", style="bold cyan"))
    roles = example.tokens is None
    several = len(example.sequences) > 1
    for name, rendered in example.sequences.items():
        if several:
            out.print(Text(f"[{name}]", style="bold magenta"))
        text = _text(rendered, roles=roles)
        text.rstrip()  # the template's closing newline: the counts follow on the next line
        out.print(text)
        counts = _counts(rendered)
        if counts:
            out.print(Text(counts, style="italic"))
    for note in example.notes:
        out.print(Text(f"note: {safe(note)}", style="yellow"))
    out.print()


def preview(
    source: SourceArg,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            "-m",
            help="Model folder or Hub id whose tokenizer and chat template render the examples (needs "
            "the local extra); without it, the messages are shown role by role.",
            show_default=False,
        ),
    ] = None,
    n: Annotated[int, typer.Option("-n", help="Examples to show (only those rows are read).")] = 3,
    max_length: Annotated[
        int | None,
        typer.Option(
            help="The trainer's max_length: show where it cuts (needs --base-model; default: the trainer's, "
            "1024 or the model's max_position_embeddings when lower).",
            show_default=False,
        ),
    ] = None,
    chat_template: Annotated[
        str | None,
        typer.Option(
            help="Jinja chat template, or a file holding one, instead of the tokenizer's (local.chat_template).",
            show_default=False,
        ),
    ] = None,
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
    """Show the first examples of SOURCE as the model will see them, with what is learned marked.

    With --base-model, each example is rendered with the model's chat template and tokenized, and
    the tokens that carry loss are marked exactly as the local trainer labels them (the end-of-turn
    token included), with token counts and, with --max-length, the cut. Without it, the messages
    are shown role by role, the learned ones marked (assistant messages whose weight is not 0;
    the answers of preference pairs).

    Learned text is bold green; where the terminal shows no colour (NO_COLOR, a pipe), it is
    wrapped in ⟦ ⟧. Text past max_length follows a ✂ mark. --json prints a list of examples, each
    with location, segments [{text, learned, role, cut}], tokens and learned_tokens.
    """
    from anytune._data.preview import preview as build
    from anytune.errors import ConfigError

    reading = _Reading(format, columns, prompt_template, completion_template, template, system, split, config, revision)
    try:
        examples = build(
            source, n=n, base_model=base_model, chat_template=chat_template, max_length=max_length, **reading.kwargs()
        )
    except FileNotFoundError as exc:
        if exc.filename is None or os.fspath(exc.filename) != os.fspath(source):
            raise
        # As `data validate` says it: a usage mistake (exit 2), not an I/O failure.
        missing = exc.strerror == os.strerror(errno.ENOENT)
        said = f"file not found: {source}" if missing else f"{source}: {exc.strerror}"
        raise ConfigError(said, field="SOURCE") from exc
    if json:
        print_json([e.to_json() for e in examples])
        return
    for number, example in enumerate(examples, 1):
        _show(number, example)
    if base_model is None:
        err.print("notice: --base-model MODEL shows the exact chat template and tokens", markup=False)


app.command("preview")(preview)
