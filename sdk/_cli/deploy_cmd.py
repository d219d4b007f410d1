"""``anytune deploy``, ``undeploy`` and ``chat``: make a succeeded job's model callable, call it, and
stop what it costs."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Any

import typer

from anytune import FineTuneJob
from anytune._cli._common import JsonOpt, ProfileOpt, err, lit, out, print_json, safe
from anytune._deploy import Deployment
from anytune._job import require_succeeded
from anytune._types import FineTunedModel
from anytune.errors import ProviderError, UsageError

RefArg = Annotated[str, typer.Argument(help="Job reference (PROVIDER:ID) of a succeeded job.", show_default=False)]
NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", help="Deployment name (default: one derived from the job, the same each time).", show_default=False
    ),
]


def settings_of(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value that reads as JSON (a number, true/false) is taken as that (pure).

    Raises:
        UsageError: an item without ``=``.
    """
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}", field="set")
        try:
            parsed: Any = jsonlib.loads(value)
        except ValueError:
            parsed = value
        settings[key.strip()] = parsed if isinstance(parsed, (int, float, bool)) else value
    return settings


def _model(ref: str, profile: str | None, action: str) -> FineTunedModel:
    job = FineTuneJob.get(ref, profile=profile)
    require_succeeded(job.record, action)
    return job.result()


def _show(deployment: Deployment, json: bool, verb: str) -> None:
    if json:
        print_json(deployment)
        return
    err.print(
        f"{verb} {lit(deployment.name)} ({lit(deployment.kind)}) on {lit(deployment.provider)}: {deployment.status}"
    )
    for note in deployment.cost_notes:
        err.print(f"  cost: {safe(note)}", markup=False)
    out.print(safe(deployment.target), markup=False)


def deploy(
    ref: RefArg,
    name: NameOpt = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A provider deploy setting, KEY=VALUE, repeatable (azure-openai: sku, capacity; azureml: "
            "instance_type, instance_count; huggingface: vendor, region, instance_type, instance_size, ...).",
            show_default=False,
        ),
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once the deployment is asked for.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait for it to be ready.")] = 3600.0,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Deploy a succeeded job's model so applications can call it; prints the name to call it by.

    Idempotent: the same job (and --name) finds its deployment instead of making a second. Hosted
    deployments are billed while they exist, called or not: the cost notes say what; `anytune
    undeploy REF` stops it. OpenAI serves fine-tuned models without one; local results load in
    process (see `anytune serve` to serve them over HTTP).
    """
    settings = settings_of(set_ or [])
    model = _model(ref, profile, "deployed")
    err.print(f"deploying {lit(model.job_ref)} ...")
    done = model.deploy(name, wait=not no_wait, timeout=timeout, **settings)
    _show(done, json, "created" if done.created else "found")
    if done.status == "failed":
        reason = done.extra.get("error") or "the service gave no reason"
        raise ProviderError(
            f"deployment {done.name} failed: {reason}; it still exists: `anytune undeploy {model.job_ref}` removes it",
            provider=done.provider,
        )


def undeploy(ref: RefArg, name: NameOpt = None, profile: ProfileOpt = None, json: JsonOpt = False) -> None:
    """Delete a job's deployment (what keeps costing money); the fine-tuned model itself is kept."""
    model = _model(ref, profile, "undeployed")
    gone = model.undeploy(name)
    if gone is None:
        if json:
            print_json({"deleted": None})
        else:
            err.print(f"{lit(model.job_ref)}: no deployment to delete")
        return
    _show(gone, json, "deleted")


def chat(
    ref: RefArg,
    message: Annotated[str, typer.Argument(help="The user message.", show_default=False)],
    name: NameOpt = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message first.", show_default=False)] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Longest reply, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0: greedy.")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Ask a succeeded job's deployed model one question and print its reply (`anytune deploy` first for
    Azure OpenAI, Azure ML and Hugging Face; OpenAI and local models answer as they are)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    model = _model(ref, profile, "called")
    reply = model.chat(messages, name=name, max_tokens=max_tokens, temperature=temperature, seed=seed)
    if json:
        print_json({"job": model.job_ref, "reply": reply})
        return
    out.print(reply, markup=False, highlight=False)
