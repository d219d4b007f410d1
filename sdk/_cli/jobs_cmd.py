"""``anytune jobs``: create, follow and manage fine-tuning jobs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from anytune._cli._common import (
    JsonOpt,
    ProfileOpt,
    ProviderOpt,
    cell,
    err,
    lit,
    out,
    print_json,
    print_json_line,
    safe,
)
from anytune._job import FineTuneJob
from anytune._specfile import FILE_KEYS, load_spec_file
from anytune._store import UNKNOWN, StoredJob
from anytune._types import Event, JobRecord, JobStatus
from anytune.errors import ConfigError

app = typer.Typer(help="Create, follow and manage fine-tuning jobs.", no_args_is_help=True)

RefArg = Annotated[str, typer.Argument(help="Job reference, e.g. openai:ftjob-abc or fake:fakejob-1.")]

_STYLE = {
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "yellow",
    JobStatus.RUNNING: "cyan",
}


def _status(status: JobStatus, raw_status: str = "") -> Text:
    text = cell(status.value, _STYLE.get(status, "white"))
    if raw_status:
        text.append(f" ({safe(raw_status)})")
    return text


def _show_record(record: JobRecord) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Any]] = [
        ("ref", record.ref),
        ("status", _status(record.status, record.raw_status)),
        ("base model", record.base_model),
        ("fine-tuned model", record.fine_tuned_model),
        ("progress", f"step {record.step}/{record.total_steps or '?'}" if record.step is not None else None),
        ("created", record.created_at),
        ("finished", record.finished_at),
        ("trained tokens", record.trained_tokens),
        ("error", cell(record.error.message, "red") if record.error else None),
    ]
    for name, value in rows:
        if value is not None:
            table.add_row(name, value if isinstance(value, Text) else cell(value))
    out.print(table)


def _lora(r: int | None, alpha: int | None, dropout: float | None, modules: str | None) -> dict[str, Any] | None:
    given = {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": modules}
    given = {k: v for k, v in given.items() if v is not None}
    return given or None


def _tags(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", field="tags", source="--tag")
        tags[key] = value
    return tags


@app.command("create")
def create(
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Spec file (TOML or YAML); flags override it.")
    ] = None,
    provider: ProviderOpt = None,
    profile: ProfileOpt = None,
    base_model: Annotated[str | None, typer.Option(help="Base model id or local path.")] = None,
    training_file: Annotated[Path | None, typer.Option(help="Training data (JSONL).")] = None,
    validation_file: Annotated[Path | None, typer.Option(help="Validation data (JSONL).")] = None,
    method: Annotated[str | None, typer.Option(help="sft or dpo.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Absolute learning rate.")] = None,
    learning_rate_multiplier: Annotated[float | None, typer.Option(help="OpenAI-style multiplier.")] = None,
    warmup_ratio: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(help="Maximum tokens per example.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    lora_alpha: Annotated[int | None, typer.Option()] = None,
    lora_dropout: Annotated[float | None, typer.Option()] = None,
    lora_target_modules: Annotated[
        str | None, typer.Option(help="Comma-separated module names, or all-linear.")
    ] = None,
    quantization: Annotated[str | None, typer.Option(help="none, 4bit (QLoRA) or 8bit.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Suffix of the fine-tuned model's name.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it finishes.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and print the provider requests as JSON; send nothing.")
    ] = False,
    no_validate: Annotated[bool, typer.Option("--no-validate-data", help="Skip dataset checks.")] = False,
    json: JsonOpt = False,
) -> None:
    """Create a fine-tuning job from flags and/or a spec file."""
    spec: dict[str, Any] = {}
    settings: dict[str, Any] | None = None
    if file is not None:
        spec = load_spec_file(file)
        provider = provider or spec.pop("provider", None)
        profile = profile or spec.pop("profile", None)
        settings = spec.pop("settings", None)
        for key in FILE_KEYS:
            spec.pop(key, None)
    hyper = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "learning_rate_multiplier": learning_rate_multiplier,
        "warmup_ratio": warmup_ratio,
        "max_steps": max_steps,
        "max_length": max_length,
        "seed": seed,
    }
    fields: dict[str, Any] = {
        "base_model": base_model,
        "training_file": training_file,
        "validation_file": validation_file,
        "method": method,
        "hyperparameters": {k: v for k, v in hyper.items() if v is not None} or None,
        "lora": _lora(lora_r, lora_alpha, lora_dropout, lora_target_modules),
        "quantization": quantization,
        "suffix": suffix,
        "tags": _tags(tag),
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    common: dict[str, Any] = {
        "provider": provider,
        "profile": profile,
        "settings": settings,
        "validate_data": not no_validate,
    }
    if dry_run:
        print_json(FineTuneJob.plan(spec, **common, **fields))
        return
    job = FineTuneJob.create(spec, **common, **fields)
    if not wait:
        if json:
            print_json(job.record)
        else:
            err.print(f"created [bold]{lit(job.ref)}[/] ({job.record.status.value})")
            out.print(safe(job.ref), markup=False)
        return
    _follow(job, timeout=None, json=json)


@app.command("get")
def get(ref: RefArg, json: JsonOpt = False) -> None:
    """Show a job's current state."""
    job = FineTuneJob.get(ref)
    if json:
        print_json(job.record)
    else:
        _show_record(job.record)


@app.command("list")
def list_(
    provider: Annotated[str | None, typer.Option("--provider", "-p", help="Only this provider.")] = None,
    status: Annotated[str | None, typer.Option(help="Only jobs last seen in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    json: JsonOpt = False,
) -> None:
    """Jobs created through anytune on this machine (last known state; newest first)."""
    rows = FineTuneJob.list(provider=provider, status=status, limit=limit)
    if json:
        print_json([row.model_dump(mode="json") for row in rows])
        return
    table = Table("ref", "status", "base model", "created", "fine-tuned model")
    for row in rows:
        record = row.record
        table.add_row(
            cell(row.ref or _unsubmitted(row)),
            _status(record.status) if record else cell(row.status),
            cell(row.spec.get("base_model", "")),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            cell((record.fine_tuned_model or "") if record else ""),
        )
    out.print(table)


class _Progress:
    """The live view of ``jobs wait``: status, step, loss, elapsed time."""

    def __init__(self, job: FineTuneJob) -> None:
        self.job = job
        self.started = time.monotonic()
        self.last_loss: float | None = None
        self.last_valid: float | None = None
        self.log: list[str] = []

    def on_event(self, event: Event) -> None:
        if event.metric is not None:
            self.last_loss = event.metric.train_loss if event.metric.train_loss is not None else self.last_loss
            self.last_valid = event.metric.valid_loss if event.metric.valid_loss is not None else self.last_valid
        if event.kind != "metric":
            self.log = [*self.log[-4:], f"{event.time:%H:%M:%S} {event.message}"]

    def __rich__(self) -> Table:
        record = self.job.record
        table = Table(show_header=False, box=None, title=cell(record.ref, "bold"))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("status", _status(record.status))
        step = f"{record.step or 0}/{record.total_steps or '?'}"
        table.add_row("step", step)
        table.add_row("train loss", f"{self.last_loss:.4f}" if self.last_loss is not None else "-")
        table.add_row("valid loss", f"{self.last_valid:.4f}" if self.last_valid is not None else "-")
        table.add_row("elapsed", f"{time.monotonic() - self.started:.0f} s")
        for line in self.log:
            table.add_row("", cell(line, "dim"))
        return table


def _follow(job: FineTuneJob, *, timeout: float | None, json: bool) -> None:
    if json:
        record = job.wait(timeout=timeout)
        print_json(record)
    elif out.is_terminal:
        from rich.live import Live

        view = _Progress(job)
        with Live(view, console=out, refresh_per_second=4, transient=False):
            record = job.wait(timeout=timeout, on_event=view.on_event)
    else:
        # Not a terminal (CI logs, pipes): one line per event instead of a redrawn view.
        def line(event: Event) -> None:
            out.print(safe(event), markup=False)

        record = job.wait(timeout=timeout, on_event=line)
        out.print(safe(f"{record.ref} {record.status.value}"), markup=False)
    if record.status is not JobStatus.SUCCEEDED:
        if not json:
            message = record.error.message if record.error else ""
            err.print(f"[red]job {record.status.value}[/] {lit(message)}")
        raise typer.Exit(6)


@app.command("wait")
def wait(
    ref: RefArg,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds (exit 5).")] = None,
    json: JsonOpt = False,
) -> None:
    """Follow a job with a live progress view until it finishes (exit 6 unless it succeeded)."""
    _follow(FineTuneJob.get(ref), timeout=timeout, json=json)


@app.command("events")
def events(
    ref: RefArg,
    follow: Annotated[bool, typer.Option("--follow", "-F", help="Keep streaming until the job ends.")] = False,
    after: Annotated[str | None, typer.Option(help="Only events after this event id.")] = None,
    json: JsonOpt = False,
) -> None:
    """Print a job's events, oldest first (JSON lines with --json)."""
    job = FineTuneJob.get(ref)
    stream = job.stream(after=after) if follow else iter(job.events(after))
    for event in stream:
        if json:
            print_json_line(event)
        else:
            out.print(safe(event), markup=False)


@app.command("metrics")
def metrics(
    ref: RefArg,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also write a loss-curve picture (PNG/SVG/PDF by suffix).")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Print a job's training metrics by step."""
    points = FineTuneJob.get(ref).metrics()
    if plot is not None:
        from anytune._plot import plot_loss

        written = plot_loss(points, plot, title=ref)
        err.print(f"loss curve written to [bold]{lit(written)}[/]")
    if json:
        print_json(points)
        return
    table = Table("step", "epoch", "train loss", "valid loss", "token acc", "lr", "tokens")
    for p in points:
        table.add_row(
            *(
                ("-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v))
                for v in (p.step, p.epoch, p.train_loss, p.valid_loss, p.token_accuracy, p.learning_rate, p.tokens_seen)
            )
        )
    out.print(table)


@app.command("resume")
def resume(
    ref: RefArg,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it finishes.")] = False,
    json: JsonOpt = False,
) -> None:
    """Continue a stopped job (a killed or cancelled local run) from its last checkpoint."""
    job = FineTuneJob.get(ref)
    record = job.resume()
    if wait:
        _follow(job, timeout=None, json=json)
    elif json:
        print_json(record)
    else:
        _show_record(record)


@app.command("cancel")
def cancel(ref: RefArg, json: JsonOpt = False) -> None:
    """Ask the provider to stop a job."""
    record = FineTuneJob.get(ref).cancel()
    if json:
        print_json(record)
    else:
        _show_record(record)


def _unsubmitted(row: StoredJob) -> str:
    """The first cell of a row without a job: never "not submitted" when that is not known."""
    if row.status == UNKNOWN:
        return f"(outcome unknown: key {row.idempotency_key}; run anytune jobs reconcile)"
    return f"(not submitted: {row.submit_error or row.status})"
