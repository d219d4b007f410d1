"""Fine-tune a model on Azure OpenAI with the sample data, on your Azure subscription, signed in
with an API key or Microsoft Entra ID.  This is where to start: OpenAI is closing self-serve
fine-tuning (no new jobs from 2027-01-06), and the same spec runs here unchanged.

    pip install "anytune[azure]"
    export AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com
    export AZURE_OPENAI_API_KEY=...          # or leave it unset and sign in: `az login` (Entra ID)
    export OPENAI_API_VERSION=v1             # optional; the default ({endpoint}/openai/v1/), or a dated one
    python samples/azure_openai.py --dry-run
    python samples/azure_openai.py --model gpt-4.1-mini-2025-04-14 --training-type globalstandard

``--training-type``: ``standard`` (the default: the resource's region), ``globalstandard``
(cheaper, any region) or ``developer`` (lowest price, preemptible; sent as ``developerTier``).
Files over 512 MB are refused before anything is uploaded.  The fine-tuned model still has to be deployed before
it answers requests; the script prints the model name to deploy.  ``--pause-after-steps N`` shows
pause and resume: the job pauses once N training steps are logged, then resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from anytune import FineTuneJob, JobFailedError, JobStatus

DATA = Path(__file__).resolve().parent / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt-4o-mini-2024-07-18", help="a base model your region can fine-tune")
    parser.add_argument("--training-type", choices=["standard", "globalstandard", "developer"], default=None)
    parser.add_argument(
        "--auth",
        choices=["auto", "key", "entra"],
        default="auto",
        help="auto: the API key when one is set, Entra ID otherwise",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pause-after-steps", type=int, default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the requests instead of sending them")
    args = parser.parse_args()

    spec: dict[str, object] = {
        "base_model": args.model,
        "training_file": DATA / "train.jsonl",
        "validation_file": DATA / "valid.jsonl",
        "hyperparameters": {"epochs": args.epochs},
        "suffix": "anytune-sample",  # Azure: up to 40 letters, digits, '-' or '_'
        "tags": {"sample": "azure_openai"},
    }
    if args.training_type:
        spec["azure_openai"] = {"training_type": args.training_type}
    settings = {"auth": args.auth}
    if args.dry_run:
        plan = FineTuneJob.plan(spec, provider="azure-openai", settings=settings)
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
        return 0

    job = FineTuneJob.create(spec, provider="azure-openai", settings=settings)
    print(f"created {job.ref}")
    steps = 0
    paused = False
    for event in job.stream():
        print(event)
        steps += event.metric is not None
        if args.pause_after_steps and not paused and steps >= args.pause_after_steps:
            print(f"pausing: {job.pause().raw_status}")
            paused = True
            while job.refresh().raw_status != "paused":  # "pausing" until the next checkpoint
                time.sleep(10)
            print(f"resuming: {job.resume().raw_status}")
    try:
        model = job.result()
    except JobFailedError as exc:
        print(f"the job did not succeed: {exc}")
        return 1
    assert job.record.status is JobStatus.SUCCEEDED
    print(f"fine-tuned model (deploy it to use it): {model.model_id}")
    for checkpoint in model.checkpoints:
        print(f"  checkpoint at step {checkpoint.step}: {checkpoint.model}")
    if model.final_metrics is not None:
        m = model.final_metrics
        print(f"  final step {m.step}: train loss {m.train_loss}, validation loss {m.valid_loss}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
