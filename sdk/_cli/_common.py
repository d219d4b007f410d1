"""What every command shares: the console, JSON output, the options used in several places."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from pydantic import BaseModel
from rich.console import Console

from anytune._secrets import redact

# Off a terminal (pipes, CI logs) rich would squeeze tables into 80 columns and cut job refs.
_WIDTH = None if sys.stdout.isatty() else 200
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", "-p", help="Provider name, or a profile name.", show_default=False)
]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="Profile from anytune.toml.", show_default=False)]


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON on stdout (redacted, like everything anytune prints)."""
    text = orjson.dumps(to_jsonable(value), option=orjson.OPT_INDENT_2, default=str).decode()
    sys.stdout.write(redact(text) + "\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    sys.stdout.write(redact(orjson.dumps(to_jsonable(value), default=str).decode()) + "\n")
    sys.stdout.flush()
