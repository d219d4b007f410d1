"""``anytune jobs``: create, follow and manage fine-tuning jobs."""

from __future__ import annotations

import re
import time
from datetime import timedelta
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
from anytune._cli._progress import DEFAULT_INTERVAL, IntervalOpt, ProgressLines
from anytune._job import PRUNE_DEFAULT, FineTuneJob
from anytune._refresh import DEFAULT_TIMEOUT
from anytune._specfile import FILE_KEYS, load_spec_file
from anytune._specpaths import apply_sets, leaf_paths
from anytune._store import UNKNOWN, StoredJob
from anytune._types import Event, FineTunedModel, JobRecord, JobStatus
from anytune.errors import AnytuneError, ConfigError

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


def _data(given: dict[str, Any]) -> dict[str, Any] | None:
    """The data section the data flags set (None when none is given)."""
    from anytune._data.shapes import parse_columns

    section = {k: v for k, v in given.items() if v is not None}
    if isinstance(section.get("columns"), str):
        section["columns"] = parse_columns(section["columns"])  # a bad pair: ConfigError naming columns
    return section or None


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


def _with_sets(spec: dict[str, Any], items: list[str], flags: dict[str, Any]) -> dict[str, Any]:
    """The spec with every ``--set`` applied (they edit it as if written in the file).

    Raises:
        ConfigError: a malformed ``--set``, or one for a field a flag sets too: which should win
            is not obvious on one command line, so neither does.
    """
    if not items:
        return spec
    given = leaf_paths(apply_sets(items))
    for path in sorted(leaf_paths(flags)):
        clash = next((g for g in sorted(given) if g[: len(path)] == path or path[: len(g)] == g), None)
        if clash is not None:
            name = ".".join(clash)
            raise ConfigError("given by --set and by a flag as well; give it once", field=name, source="--set")
    return apply_sets(items, spec)


@app.command("create")
def create(
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Spec file (TOML or YAML); --set and flags override it.")
    ] = None,
    provider: ProviderOpt = None,
    profile: ProfileOpt = None,
    base_model: Annotated[str | None, typer.Option(help="Base model id or local path.")] = None,
    training_file: Annotated[
        Path | None,
        typer.Option(help="Training data: JSONL, or CSV/JSON/Parquet/a folder/Alpaca... (converted, format auto)."),
    ] = None,
    validation_file: Annotated[Path | None, typer.Option(help="Validation data (as --training-file).")] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="Data source instead of --training-file: a file or folder (CSV, JSON, Parquet, datasets) "
            "or a Hub dataset id (org/name); the data section's source.",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split trained on: train, train[:4096], train[:10%].", show_default=False)
    ] = None,
    eval_split: Annotated[
        str | None, typer.Option(help="Split of --dataset used for validation.", show_default=False)
    ] = None,
    data_format: Annotated[
        str | None,
        typer.Option(
            "--format", help="Shape of the rows: auto, chat, alpaca, sharegpt, prompt_completion...", show_default=False
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="Column mapping, e.g. prompt=question,completion=answer.", show_default=False),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="One text template split at its last field, e.g. '### Q: {question} ### A: {answer}'.",
            show_default=False,
        ),
    ] = None,
    prompt_template: Annotated[str | None, typer.Option(help="Template of the prompt.", show_default=False)] = None,
    completion_template: Annotated[
        str | None, typer.Option(help="Template of the completion.", show_default=False)
    ] = None,
    method: Annotated[str | None, typer.Option(help="sft or dpo.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Absolute learning rate.")] = None,
    learning_rate_multiplier: Annotated[float | None, typer.Option(help="OpenAI-style multiplier.")] = None,
    warmup_ratio: Annotated[float | None, typer.Option()] = None,
    warmup_steps: Annotated[int | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(help="Maximum tokens per example.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta (method dpo).")] = None,
    gradient_accumulation_steps: Annotated[int | None, typer.Option()] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    lr_scheduler: Annotated[
        str | None, typer.Option(help="linear, cosine or constant_with_warmup.", show_default=False)
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="adamw_torch, adamw_8bit or paged_adamw_8bit.", show_default=False)
    ] = None,
    validation_split: Annotated[
        float | None, typer.Option(help="Share of the training data held out for validation.")
    ] = None,
    report_to: Annotated[
        list[str] | None, typer.Option("--report-to", help="Experiment tracker to log to, repeatable.")
    ] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    lora_alpha: Annotated[int | None, typer.Option()] = None,
    lora_dropout: Annotated[float | None, typer.Option()] = None,
    lora_target_modules: Annotated[
        str | None, typer.Option(help="Comma-separated module names, or all-linear.")
    ] = None,
    quantization: Annotated[str | None, typer.Option(help="none, 4bit (QLoRA) or 8bit.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Suffix of the fine-tuned model's name.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Set any spec field, e.g. local.device=cpu or hyperparameters.warmup_steps=10; "
            "repeatable. The value is read as JSON/TOML (10, true, [1, 2], {r = 8}) else as text. "
            "Overrides the spec file; a flag for the same field is an error.",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it finishes.")] = False,
    progress_interval: IntervalOpt = DEFAULT_INTERVAL,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and print the provider requests as JSON; send nothing.")
    ] = False,
    no_validate: Annotated[bool, typer.Option("--no-validate-data", help="Skip dataset checks.")] = False,
    json: JsonOpt = False,
) -> None:
    """Create a fine-tuning job from flags, --set and/or a spec file.

    Precedence, lowest first: the profile's spec defaults, the spec file, --set (in order), flags;
    a flag and a --set for the same field is an error.
    """
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
        "warmup_steps": warmup_steps,
        "max_steps": max_steps,
        "max_length": max_length,
        "seed": seed,
        "beta": beta,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "weight_decay": weight_decay,
        "lr_scheduler": lr_scheduler,
        "optimizer": optimizer,
        "validation_split": validation_split,
    }
    fields: dict[str, Any] = {
        "base_model": base_model,
        "training_file": training_file,
        "validation_file": validation_file,
        "method": method,
        "hyperparameters": {k: v for k, v in hyper.items() if v is not None} or None,
        "data": _data(
            {
                "source": dataset,
                "split": split,
                "eval_split": eval_split,
                "format": data_format,
                "columns": columns,
                "text_template": template,
                "prompt_template": prompt_template,
                "completion_template": completion_template,
            }
        ),
        "lora": _lora(lora_r, lora_alpha, lora_dropout, lora_target_modules),
        "quantization": quantization,
        "suffix": suffix,
        "tags": _tags(tag),
        "report_to": report_to or None,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    spec = _with_sets(spec, set_ or [], fields)
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
            print_json(_record_json(job.record))
        else:
            err.print(f"created [bold]{lit(job.ref)}[/] ({job.record.status.value})")
            out.print(safe(job.ref), markup=False)
        return
    _follow(job, timeout=None, json=json, interval=progress_interval)


@app.command("get")
def get(ref: RefArg, json: JsonOpt = False) -> None:
    """Show a job's current state."""
    job = FineTuneJob.get(ref)
    if json:
        print_json(_record_json(job.record))
    else:
        _show_record(job.record)


StatusesOpt = Annotated[
    str | None,
    typer.Option(
        "--status",
        help="Only jobs in this status; several comma-separated. Job statuses (validating, queued, running, "
        "paused, succeeded, failed, cancelled) and submitting, submit_failed, unknown.",
        show_default=False,
    ),
]
ProviderFilterOpt = Annotated[
    str | None, typer.Option("--provider", "-p", help="Only this provider's jobs.", show_default=False)
]


@app.command("list")
def list_(
    provider: ProviderFilterOpt = None,
    status: StatusesOpt = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    cached: Annotated[bool, typer.Option("--cached", help="Offline: show the stored states, ask no provider.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=0, help="Seconds to wait for the providers; a job not refreshed by then shows its stored state."
        ),
    ] = DEFAULT_TIMEOUT,
    json: JsonOpt = False,
) -> None:
    """Jobs created through anytune on this machine, newest first, in their current state.

    Unfinished jobs are asked of their provider again (all at once); one whose provider does not
    answer within --timeout shows its stored state, marked stale. --status filters on the state now.
    """
    rows = FineTuneJob.list(provider=provider, status=status, limit=limit, refresh=not cached, timeout=timeout)
    if json:
        print_json([row.model_dump(mode="json") for row in rows])
        return
    table = Table("ref", "status", "base model", "created", "fine-tuned model")
    for row in rows:
        record = row.record
        shown = _status(record.status) if record else cell(row.status)
        if row.stale:
            shown.append(" (stale)", "yellow")
        table.add_row(
            cell(row.ref or _unsubmitted(row)),
            shown,
            cell(row.spec.get("base_model", "")),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            cell((record.fine_tuned_model or "") if record else ""),
        )
    out.print(table)
    stale = [row for row in rows if row.stale]
    if cached and stale:
        err.print(f"{len(stale)} unfinished job(s) show their stored state (--cached): they may have moved on")
    elif stale:
        for row in stale:
            err.print(f"stale: {lit(row.ref)} shows its stored state: {lit(row.stale_reason)}")


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


def _follow(job: FineTuneJob, *, timeout: float | None, json: bool, interval: float = DEFAULT_INTERVAL) -> None:
    if json:
        record = job.wait(timeout=timeout)
        print_json(_record_json(record, _result_of(job, record)))
    elif out.is_terminal:
        from rich.live import Live

        view = _Progress(job)
        with Live(view, console=out, refresh_per_second=4, transient=False):
            record = job.wait(timeout=timeout, on_event=view.on_event)
    else:
        # Not a terminal (CI logs, pipes): plain lines instead of a redrawn view; progress at most
        # once per interval (see _progress).
        lines = ProgressLines(interval)

        def line(event: Event) -> None:
            for text in lines.feed(event, job.record):
                out.print(text, markup=False)

        record = job.wait(timeout=timeout, on_event=line)
        for text in [*lines.finish(record), safe(f"{record.ref} {record.status.value}")]:
            out.print(text, markup=False)
    if record.status is not JobStatus.SUCCEEDED:
        if not json:
            message = record.error.message if record.error else ""
            err.print(f"[red]job {record.status.value}[/] {lit(message)}")
        raise typer.Exit(6)
    if not json:
        model = _result_of(job, record)
        if model is not None:
            _show_result(model)


@app.command("wait")
def wait(
    ref: RefArg,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds (exit 5).")] = None,
    progress_interval: IntervalOpt = DEFAULT_INTERVAL,
    json: JsonOpt = False,
) -> None:
    """Follow a job with a live progress view until it finishes (exit 6 unless it succeeded).

    Off a terminal (CI logs, pipes) it prints plain lines: events as they come, progress (step,
    loss, tokens/s, ETA) at most every --progress-interval seconds."""
    _follow(FineTuneJob.get(ref), timeout=timeout, json=json, interval=progress_interval)


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
    progress_interval: IntervalOpt = DEFAULT_INTERVAL,
    json: JsonOpt = False,
) -> None:
    """Continue a paused or stopped job.

    A paused hosted job (OpenAI, Azure OpenAI) goes on where it stopped; a killed or cancelled
    local run restarts from its last checkpoint. Exit 2 when the provider cannot resume jobs (the
    message names those that can).
    """
    job = FineTuneJob.get(ref)
    record = job.resume()
    if wait:
        _follow(job, timeout=None, json=json, interval=progress_interval)
    elif json:
        print_json(_record_json(record))
    else:
        _show_record(record)


@app.command("pause")
def pause(ref: RefArg, json: JsonOpt = False) -> None:
    """Pause a hosted job; `anytune jobs resume` continues it.

    OpenAI and Azure OpenAI pause at the next checkpoint and stop billing. Exit 2 when the provider
    cannot pause jobs (the message names those that can).
    """
    record = FineTuneJob.get(ref).pause()
    if json:
        print_json(_record_json(record))
    else:
        _show_record(record)


@app.command("cancel")
def cancel(ref: RefArg, json: JsonOpt = False) -> None:
    """Ask the provider to stop a job; shows its state after the request."""
    record = FineTuneJob.get(ref).cancel()
    if json:
        print_json(_record_json(record))
        return
    _show_record(record)
    if not record.done:
        # Some providers stop a job in the background (the local worker at its next step).
        err.print(
            f"cancel requested: {lit(record.provider)} still reports {record.status.value}"
            f"{f' ({lit(record.raw_status)})' if record.raw_status else ''}; "
            f"follow it with: anytune jobs wait {lit(record.ref)}"
        )


@app.command("delete")
def delete(
    ref: RefArg,
    force: Annotated[
        bool, typer.Option("--force", help="Delete the row of an unfinished job too (it keeps running, untracked).")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Remove a job from the job store (the list). It does not cancel the job or delete its files."""
    row = FineTuneJob.delete(ref, force=force)
    if json:
        print_json(row)
        return
    out.print(f"deleted {safe(ref)} from the job store", markup=False)
    run_dir = row.record.output.get("run_dir") if row.record is not None else None
    if run_dir:
        err.print(f"its run directory is kept: {lit(run_dir)} (remove it yourself once you no longer need it)")
    if row.unfinished:
        err.print(f"the job was {row.status} and was not cancelled: anytune no longer tracks it")


@app.command("prune")
def prune(
    status: Annotated[
        str,
        typer.Option(
            "--status",
            help="Statuses to remove, comma-separated. Unfinished jobs and unknown submissions go only when named.",
        ),
    ] = ",".join(PRUNE_DEFAULT),
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help="Only jobs created longer ago than this: 90s, 30m, 12h, 7d, 2w.", show_default=False
        ),
    ] = None,
    provider: ProviderFilterOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")] = False,
    json: JsonOpt = False,
) -> None:
    """Remove old rows from the job store by status and age (the jobs themselves are not touched)."""
    age = _age(older_than) if older_than is not None else None
    rows = FineTuneJob.prune(status=status, older_than=age, provider=provider, dry_run=dry_run)
    if json:
        print_json(rows)
        return
    if rows:
        table = Table("ref", "status", "created")
        for row in rows:
            table.add_row(cell(row.ref or _unsubmitted(row)), cell(row.status), f"{row.created_at:%Y-%m-%d %H:%M}")
        out.print(table)
    err.print(f"{'would remove' if dry_run else 'removed'} {len(rows)} job(s) from the job store")


_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``90s`` or ``2w`` as a duration."""
    found = _AGE.fullmatch(text)
    if found is None:
        raise ConfigError(
            f"expected an age such as 90s, 30m, 12h, 7d or 2w, got {text!r}", field="older_than", source="--older-than"
        )
    try:
        return timedelta(seconds=float(found[1]) * _AGE_UNITS[found[2].lower()])
    except OverflowError as exc:
        raise ConfigError(f"age {text!r} is too large", field="older_than", source="--older-than") from exc


def _record_json(record: JobRecord, result: FineTunedModel | None = None) -> dict[str, Any]:
    """A record as commands print it in JSON: its ``ref`` (what every command takes) and its
    fields; a followed job that succeeded adds its ``result`` (where the model is)."""
    data: dict[str, Any] = {"ref": record.ref, **record.model_dump(mode="json")}
    if result is not None:
        data["result"] = result.model_dump(mode="json")
    return data


def _result_of(job: FineTuneJob, record: JobRecord) -> FineTunedModel | None:
    """What a finished job produced, or None (it did not succeed, or its result cannot be read:
    said on stderr, the job's success stands)."""
    if record.status is not JobStatus.SUCCEEDED:
        return None
    try:
        return job.result()
    except AnytuneError as exc:
        err.print(f"[yellow]the job succeeded, but its result could not be read:[/] {lit(exc)}")
        return None


def _show_result(model: FineTunedModel) -> None:
    """Where a succeeded job's model is: whatever the provider gave (id, folders, Hub repo)."""
    hub = model.hub_repo and (f"{model.hub_repo} @ {model.revision}" if model.revision else model.hub_repo)
    rows = [
        ("model id", model.model_id),
        ("adapter", model.adapter_path),
        ("merged model", model.extra.get("merged_path")),
        ("hub repo", hub),
        ("run directory", model.extra.get("run_dir")),
    ]
    table = Table(
        show_header=False, box=None, pad_edge=False, title=cell(f"result of {model.job_ref}"), title_justify="left"
    )
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        if value:
            table.add_row(name, cell(value))
    out.print(table)


def _unsubmitted(row: StoredJob) -> str:
    """The first cell of a row without a job: never "not submitted" when that is not known."""
    if row.status == UNKNOWN:
        return f"(outcome unknown: key {row.idempotency_key}; run anytune jobs reconcile)"
    return f"(not submitted: {row.submit_error or row.status})"
