"""What every command shares: the console, JSON output, the options used in several places.

Text that comes from data, paths, providers or exceptions is data, never markup: it reaches the
terminal only through :func:`safe` (plain text), :func:`cell` (a table cell) or :func:`lit`
(inside a line that has markup of our own), which mask secrets, neutralise terminal control
characters and keep Rich from reading ``[bold]`` in it as a style.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import orjson
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from anytune._secrets import redact

# Off a terminal (pipes, CI logs) rich would squeeze tables into 80 columns and cut job refs.
_WIDTH = None if sys.stdout.isatty() else 200
# No emoji codes either: ":a:" in a ref, path or message is text, not a picture.
out = Console(highlight=False, soft_wrap=True, width=_WIDTH, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH, emoji=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", "-p", help="Provider name, or a profile name.", show_default=False)
]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="Profile from anytune.toml.", show_default=False)]


# C0 controls but tab and newline, DEL, C1 controls (\x9b is a one-byte CSI), and the Unicode
# bidirectional overrides and isolates that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object) -> str:
    """``value`` as text fit for the terminal: secrets masked, control characters shown as
    ``\\x1b``-style escapes. Print it with ``markup=False``, or use :func:`cell` / :func:`lit`."""
    return _CONTROL.sub(_visible, redact(str(value)))


def cell(value: object, style: str = "") -> Text:
    """A table cell holding ``value`` literally (see :func:`safe`), in ``style``."""
    return Text(safe(value), style=style)


def lit(value: object) -> str:
    """``value`` for a line that carries markup of our own: :func:`safe`, then markup-escaped."""
    return escape(safe(value))


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


# What JSON leaves raw but a terminal may act on (C0 controls are already ``\\u00XX`` in JSON).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _json_text(value: Any, option: int = 0) -> str:
    """``value`` as JSON, redacted, with every character a terminal would act on escaped."""
    text = redact(orjson.dumps(to_jsonable(value), option=option, default=str).decode())
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON on stdout (redacted, like everything anytune prints)."""
    sys.stdout.write(_json_text(value, orjson.OPT_INDENT_2) + "\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    sys.stdout.write(_json_text(value) + "\n")
    sys.stdout.flush()
