"""``anytune eval``: a succeeded job's fine-tuned model and its base model, side by side on held-out data."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from anytune import FineTuneJob
from anytune._cli._common import JsonOpt, ProfileOpt, cell, err, lit, out, print_json, safe
from anytune._eval import METRICS, EvalReport, summary_rows
from anytune._eval.run import plan_evaluation
from anytune._job import require_succeeded
from anytune.errors import UsageError


def _metric_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise UsageError(f"unknown --metrics {', '.join(unknown) or value!r}: choose from {', '.join(METRICS)}")
    return names


#: Picture formats ``--plot`` writes (by suffix, as matplotlib does).
_PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def _check_output(path: Path, what: str) -> None:
    """Refuse an output path that cannot be written, before the evaluation runs."""
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder: name a file")
    if what == "--plot" and path.suffix.lower() not in _PLOT_SUFFIXES:
        raise UsageError(f"--plot {path}: name a {', '.join(_PLOT_SUFFIXES)} file")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"{what} {path}: {parent} is not a folder this user can write in")


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if metric not in ("perplexity",) else f"{value:.2f}"


def _print_costs(plan: Mapping[str, Any]) -> None:
    """The dry run's cost lines: per model called, then the total (an upper bound)."""
    costs = plan["costs"]
    if not costs:
        err.print("cost: none (the models run here)", highlight=False)
        return
    for c in costs:
        price = "price unknown" if c["usd"] is None else f"at most ${c['usd']:.4f}"
        err.print(
            f"  {c['what']} {c['model']}: {c['calls']} calls, {c['input_tokens']} input tokens, "
            f"<= {c['max_output_tokens']} output tokens: {price}",
            highlight=False,
        )
    if plan["usd"] is None:
        err.print(
            "cost: not estimated: a price above is not in anytune's table (see the provider's price list)",
            highlight=False,
        )
    else:
        err.print(f"cost: at most ${plan['usd']:.4f} (prices as of {costs[0]['price_as_of']})", highlight=False)


def _print_report(report: EvalReport, show_diff: int) -> None:
    settings = report.settings
    err.print(
        f"{report.examples} examples of {lit(report.data)}; base: {lit(report.models.get('base'))}; "
        f"fine-tuned: {lit(report.models.get('fine-tuned'))}; temperature {settings.temperature}, "
        f"max {settings.max_new_tokens} new tokens, seed {settings.seed}"
    )
    table = Table("metric", "base", "fine-tuned", "change")
    for metric, base, tuned, change in summary_rows(report):
        sign = "" if change is None or change < 0 else "+"
        table.add_row(
            cell(metric), cell(_fmt(base, metric)), cell(_fmt(tuned, metric)), cell(f"{sign}{_fmt(change, metric)}")
        )
    tasks = report.tasks
    for task in dict.fromkeys(t for role in tasks.values() for t in role):
        for metric in dict.fromkeys(m for role in tasks.values() for m in role.get(task, {})):
            base, tuned = (tasks.get(r, {}).get(task, {}).get(metric) for r in ("base", "fine-tuned"))
            change = tuned - base if base is not None and tuned is not None else None
            sign = "" if change is None or change < 0 else "+"
            table.add_row(
                cell(f"{task}:{metric}"),
                cell(_fmt(base, metric)),
                cell(_fmt(tuned, metric)),
                cell(f"{sign}{_fmt(change, metric)}"),
            )
    out.print(table)
    for row in report.disagreements(show_diff):
        out.print(f"\n{safe(row.location)}", markup=False)
        out.print(f"  prompt:     {safe(row.prompt)}", markup=False)
        out.print(f"  reference:  {safe(row.reference)}", markup=False)
        for role in ("base", "fine-tuned"):
            scores = ", ".join(f"{k} {v:.2f}" for k, v in row.scores.get(role, {}).items())
            out.print(f"  {role + ':':11} {safe(row.answers.get(role, ''))}  ({scores})", markup=False)


def eval_(
    ref: Annotated[str, typer.Argument(help="Job reference (PROVIDER:ID) of a succeeded job.", show_default=False)],
    data: Annotated[
        str, typer.Option("--data", "-d", help="Held-out data: a file, folder or Hub dataset id.", show_default=False)
    ],
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            "-m",
            help=f"Comma-separated: {', '.join(METRICS)} (default: all the result can give, no judge).",
            show_default=False,
        ),
    ] = None,
    max_examples: Annotated[
        int | None, typer.Option("--max-examples", "-n", min=1, help="Evaluate the first N examples.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Answer length cap.")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0: greedy (reproducible).")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed, recorded with the results.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Examples asked of a model at once.")] = 8,
    judge: Annotated[
        str | None,
        typer.Option("--judge", help="Judge model for the judge metric (OpenAI-compatible chat).", show_default=False),
    ] = None,
    judge_base_url: Annotated[
        str | None,
        typer.Option(
            "--judge-base-url",
            help="The judge's endpoint (default OpenAI); key: ANYTUNE_JUDGE_API_KEY or OPENAI_API_KEY.",
        ),
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option(
            "--deployment",
            help="Call the fine-tuned model by this name (Azure OpenAI: its deployment; Azure ML: its endpoint, "
            "or ENDPOINT/DEPLOYMENT).",
            show_default=False,
        ),
    ] = None,
    base_deployment: Annotated[
        str | None,
        typer.Option(
            "--base-deployment",
            help="Call the base model by this name (Azure OpenAI: its deployment; Azure ML: its endpoint).",
            show_default=False,
        ),
    ] = None,
    lm_eval_tasks: Annotated[
        str | None,
        typer.Option(
            "--lm-eval-tasks",
            help="lm-evaluation-harness tasks to run on both models (weights only).",
            show_default=False,
        ),
    ] = None,
    lm_eval_include: Annotated[
        str | None,
        typer.Option("--lm-eval-include", help="A folder of your own lm-eval task definitions.", show_default=False),
    ] = None,
    show_diff: Annotated[
        int, typer.Option("--show-diff", min=0, help="Also show the N examples where the two models differ most.")
    ] = 0,
    save: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also write the full report as JSON here.", show_default=False)
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also draw the metrics as a picture (PNG/SVG/PDF).", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the data and say how many model calls it would make.")
    ] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, mps or auto (weights only).")] = None,
    onnx: Annotated[
        Path | None,
        typer.Option(
            "--onnx",
            help="Evaluate this ONNX export of the job (anytune export --format onnx) in ONNX Runtime.",
            show_default=False,
        ),
    ] = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Evaluate a succeeded job: base model and fine-tuned model on the same held-out examples.

    Each example's last assistant turn is the reference and the turns before it the prompt. Local runs
    and Hugging Face jobs give loss and perplexity too; hosted models answer through their service's
    chat API. The report is kept with the job (`anytune eval REF --data ... --json` prints it all).
    """
    asked = _metric_list(metrics)
    if asked is not None and "judge" in asked and judge is None:
        raise UsageError("--metrics judge needs --judge MODEL")
    job = FineTuneJob.get(ref, profile=profile)
    require_succeeded(job.record, "evaluated")
    grader: Any = None
    if judge is not None:
        from anytune._eval.judge import OpenAIJudge

        grader = OpenAIJudge(judge, base_url=judge_base_url)
        if asked is None:
            asked = ["exact_match", "token_f1", "rouge_l", "judge"]
    call_as = {k: v for k, v in (("fine-tuned", deployment), ("base", base_deployment)) if v} or None
    tasks = [t.strip() for t in (lm_eval_tasks or "").split(",") if t.strip()]
    if dry_run:
        from anytune._eval.report import GenerationSettings

        plan = plan_evaluation(
            job.result(),
            data,
            metrics=asked,
            judge=grader,
            call_as=call_as,
            base_model_id=job.record.base_model,
            lm_eval_tasks=tasks,
            max_examples=max_examples,
            settings=GenerationSettings(max_new_tokens=max_new_tokens),
        )
        if json:
            print_json({"job": job.ref, **plan})
            return
        judging = f", {plan['judge_calls']} judge calls" if plan["judge_calls"] else ""
        err.print(
            f"{plan['examples']} examples, metrics {', '.join(plan['metrics'])}: {plan['model_calls']} model calls"
            f"{judging}",
            highlight=False,
        )
        _print_costs(plan)
        return
    # Where the results go is checked before any model is called: a long or paid run is not wasted.
    for path, what in ((save, "--out"), (plot, "--plot")):
        if path is not None:
            _check_output(path, what)

    def progress(done: int, total: int) -> None:
        if not json and (done == total or done % 10 == 0):
            err.print(f"  {done}/{total} examples", highlight=False)

    report = job.evaluate(
        data,
        metrics=asked,
        max_examples=max_examples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        call_as=call_as,
        lm_eval_tasks=tasks,
        lm_eval_include=lm_eval_include,
        judge=grader,
        device=device,
        onnx=None if onnx is None else str(onnx),
        progress=progress,
    )
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if plot is not None:
        from anytune._plot import plot_evaluation

        plot_evaluation(report.summary, plot, title=f"{job.ref} on {Path(str(data)).name}")
    if json:
        print_json(report)
        return
    _print_report(report, show_diff)
