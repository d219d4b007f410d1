"""``anytune config``: what configuration is in force."""

from __future__ import annotations

import typer
from rich.table import Table

from anytune._cli._common import JsonOpt, ProfileOpt, ProviderOpt, out, print_json
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
    table.add_row("provider", view["provider"], sources.get("provider", ""))
    table.add_row("profile", str(view["profile"]), sources.get("profile", ""))
    table.add_row("home", view["home"], sources.get("home", ""))
    table.add_row("config files", ", ".join(view["config_files"]) or "(none)", "")
    for key, value in view["settings"].items():
        table.add_row(f"settings.{key}", str(value), sources.get(f"settings.{key}", "default"))
    for key, value in view["spec_defaults"].items():
        table.add_row(f"spec.{key}", str(value), sources.get(f"spec.{key}", f"profile {view['profile']!r}"))
    out.print(table, markup=False)
