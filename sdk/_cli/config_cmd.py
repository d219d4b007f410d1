"""``anytune config``: what configuration is in force."""

from __future__ import annotations

import typer
from rich.table import Table

from anytune._cli._common import JsonOpt, ProfileOpt, ProviderOpt, cell, out, print_json
from anytune._config import resolve

app = typer.Typer(help="Inspect configuration and profiles.", no_args_is_help=True)


@app.command("show")
def show(provider: ProviderOpt = None, profile: ProfileOpt = None, json: JsonOpt = False) -> None:
    """Print the resolved settings (secrets masked) and where each came from."""
    view = resolve(provider=provider, profile=profile).show()
    if json:
        print_json(view)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="dim")
    sources = view["sources"]
    rows: list[tuple[str, object, str]] = [
        ("provider", view["provider"], sources.get("provider", "")),
        ("profile", view["profile"], sources.get("profile", "")),
        ("home", view["home"], sources.get("home", "")),
        ("config files", ", ".join(view["config_files"]) or "(none)", ""),
    ]
    rows += [(f"settings.{k}", v, sources.get(f"settings.{k}", "default")) for k, v in view["settings"].items()]
    rows += [
        (f"spec.{k}", v, sources.get(f"spec.{k}", f"profile {view['profile']!r}"))
        for k, v in view["spec_defaults"].items()
    ]
    for name, value, source in rows:
        table.add_row(cell(name), cell(value), cell(source))
    out.print(table)
