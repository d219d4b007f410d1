"""``anytune config``: what configuration is in force."""

from __future__ import annotations

import typer
from rich.table import Table

from anytune._cli._common import JsonOpt, ProfileOpt, ProviderOpt, cell, err, lit, out, print_json
from anytune._config import diagnose

app = typer.Typer(help="Inspect configuration and profiles.", no_args_is_help=True)


@app.command("show")
def show(provider: ProviderOpt = None, profile: ProfileOpt = None, json: JsonOpt = False) -> None:
    """Print the resolved settings (secrets masked), where each came from, every config file looked
    for, and each provider's credentials (found or not, masked).

    Exit status 0, also with no configuration at all; 2 when a config file, profile or setting is
    invalid (what can be shown is still shown).
    """
    view, error = diagnose(provider=provider, profile=profile)
    if json:
        print_json(view)
    else:
        _print(view)
    if error is not None:
        err.print(f"[bold red]configuration error:[/] {lit(error.message)}", highlight=False)
        raise typer.Exit(2)


def _print(view: dict[str, object]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="dim")
    sources = view["sources"]
    assert isinstance(sources, dict)
    rows: list[tuple[str, object, str]] = [
        ("provider", view["provider"] or "(none chosen)", sources.get("provider", "")),
        ("profile", view["profile"] or "(none)", sources.get("profile", "")),
        ("home", view["home"], sources.get("home", "")),
    ]
    for entry in _list(view["searched"]):
        state = "found" if entry["found"] else "not found"
        if entry.get("error"):
            state = f"invalid: {entry['error']}"
        rows.append((f"{entry['kind']} config", entry["path"], f"{state} (looked in {entry['via']})"))
    settings = view["settings"]
    assert isinstance(settings, dict)
    rows += [(f"settings.{k}", v, sources.get(f"settings.{k}", "default")) for k, v in settings.items()]
    spec_defaults = view["spec_defaults"]
    assert isinstance(spec_defaults, dict)
    rows += [
        (f"spec.{k}", v, sources.get(f"spec.{k}", f"profile {view['profile']!r}")) for k, v in spec_defaults.items()
    ]
    for cred in _list(view["credentials"]):
        shown = cred["value"] if cred["found"] else "not found"
        rows.append((f"credentials.{cred['provider']}", shown, str(cred["source"])))
    for name, value, source in rows:
        table.add_row(cell(name), cell(value), cell(source))
    out.print(table)
    if view.get("note"):
        out.print(cell(view["note"], "dim"))


def _list(value: object) -> list[dict[str, object]]:
    assert isinstance(value, list)
    return value
