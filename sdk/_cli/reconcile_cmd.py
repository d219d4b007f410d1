"""``anytune jobs reconcile``: settle submissions whose outcome is unknown, by looking their keys up."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from anytune._cli._common import JsonOpt, cell, err, out, print_json
from anytune._job import FineTuneJob
from anytune._store import SUBMIT_FAILED, UNKNOWN

#: The exit status when some submission is still unknown (the lookup failed or is not offered).
STILL_UNKNOWN_EXIT = 8


def reconcile(
    provider: Annotated[str | None, typer.Option("--provider", "-p", help="Only this provider's jobs.")] = None,
    stale_after: Annotated[
        float,
        typer.Option(min=0, help="Seconds after which a job still 'submitting' counts as abandoned and is looked up."),
    ] = 3600.0,
    json: JsonOpt = False,
) -> None:
    """Look up jobs whose submission outcome is unknown: found, they become the job; surely absent,
    "not submitted". Nothing is created. Exit 8 when some outcome is still unknown."""
    rows = FineTuneJob.reconcile(provider=provider, stale_after=stale_after)
    if json:
        print_json([row.model_dump(mode="json") for row in rows])
    elif not rows:
        err.print("no submission with an unknown outcome")
    else:
        table = Table("idempotency key", "provider", "outcome", "detail")
        for row in rows:
            if row.ref is not None:
                outcome, detail = f"found: {row.ref}", row.status
            elif row.status == SUBMIT_FAILED:
                outcome, detail = "not submitted", row.submit_error or ""
            else:
                outcome, detail = "still unknown", row.submit_error or row.status
            table.add_row(cell(row.idempotency_key), cell(row.provider), cell(outcome), cell(detail))
        out.print(table)
    if any(row.ref is None and row.status == UNKNOWN for row in rows):
        if not json:
            err.print(
                "[yellow]some outcomes are still unknown[/]: run this again later, or create the job again "
                "with the same idempotency key"
            )
        raise typer.Exit(STILL_UNKNOWN_EXIT)


def register(app: typer.Typer) -> None:
    """Add ``reconcile`` to the ``jobs`` group ``app``."""
    app.command("reconcile")(reconcile)
