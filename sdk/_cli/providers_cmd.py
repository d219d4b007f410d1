"""``anytune providers``: what is installed and what each provider can do."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from anytune import _registry
from anytune._cli._common import JsonOpt, cell, out, print_json


def providers(json: JsonOpt = False) -> None:
    """List providers, whether their extra is installed, and their capabilities."""
    rows: list[dict[str, Any]] = []
    for name, entry in sorted(_registry.entries().items()):
        missing = entry.missing()
        try:
            caps: dict[str, Any] | None = _registry.provider_class(entry).capabilities.summary()
        except Exception as exc:
            caps, missing = None, [*missing, f"(cannot load: {exc})"]
        rows.append(
            {
                "name": name,
                "installed": not missing,
                "missing": missing,
                "install": f'pip install "anytune[{entry.extra}]"' if entry.extra and missing else None,
                "origin": entry.origin,
                "summary": entry.summary,
                "capabilities": caps,
            }
        )
    if json:
        print_json(rows)
        return
    table = Table("provider", "installed", "methods", "LoRA", "quantization", "summary")
    for row in rows:
        caps = row["capabilities"] or {}
        installed = cell("yes", "green") if row["installed"] else cell("no", "red").append(f" {row['install'] or ''}")
        table.add_row(
            cell(row["name"]),
            installed,
            cell(", ".join(caps.get("methods", []))),
            "yes" if caps.get("lora") else "no",
            cell(", ".join(caps.get("quantization", []))),
            cell(row["summary"]),
        )
    out.print(table)
