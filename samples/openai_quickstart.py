"""Fine-tune an OpenAI model on the sample data, follow it, and print what it produced.

Starting out?  Use samples/azure_openai.py (the same spec on Azure OpenAI) or ``--provider local``:
OpenAI is closing self-serve fine-tuning - organisations that never fine-tuned lost job creation on
2026-05-07, those without recent fine-tuned inference on 2026-07-02, and no new jobs start from
2027-01-06 (fine-tunes of gpt-4o, gpt-4o-mini, gpt-4.1 and gpt-4.1-mini retire on 2027-01-14).
This sample is for organisations that still have access.

    pip install "anytune[openai]"
    export OPENAI_API_KEY=sk-...            # or OPENAI_BASE_URL / OPENAI_ORG_ID / OPENAI_PROJECT_ID too
    python samples/openai_quickstart.py --dry-run      # what would be sent; nothing leaves the machine
    python samples/openai_quickstart.py                # runs for real (bills your OpenAI account)

Check the cost first: ``anytune data validate samples/data/train.jsonl --provider openai --model
gpt-4o-mini-2024-07-18`` prints billed tokens and the estimate.  Stop following with Ctrl-C: the job
keeps running; re-attach later with ``anytune jobs wait openai:ftjob-...``.

If the create is refused, the error names the wind-down phase and prints the equivalent
``anytune jobs create --provider azure-openai ...`` and ``--provider local ...`` commands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anytune import FineTuneJob, JobFailedError

DATA = Path(__file__).resolve().parent / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt-4o-mini-2024-07-18", help="a fine-tunable OpenAI model")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--suffix", default="anytune-quickstart")
    parser.add_argument("--dry-run", action="store_true", help="print the requests instead of sending them")
    args = parser.parse_args()

    spec = {
        "base_model": args.model,
        "training_file": DATA / "train.jsonl",
        "validation_file": DATA / "valid.jsonl",
        "method": "sft",
        "hyperparameters": {"epochs": args.epochs, "learning_rate_multiplier": 1.0},
        "suffix": args.suffix,
        "tags": {"sample": "openai_quickstart"},
    }
    if args.dry_run:
        plan = FineTuneJob.plan(spec, provider="openai")
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
        return 0

    job = FineTuneJob.create(spec, provider="openai")
    print(f"created {job.ref} (re-attach from anywhere with FineTuneJob.get({job.ref!r}))")
    for event in job.stream():
        print(event)
    try:
        model = job.result()
    except JobFailedError as exc:
        print(f"the job did not succeed: {exc}")
        return 1
    print(f"fine-tuned model: {model.model_id}")
    for checkpoint in model.checkpoints:
        print(f"  checkpoint at step {checkpoint.step}: {checkpoint.model}")
    if model.final_metrics is not None:
        m = model.final_metrics
        print(f"  final step {m.step}: train loss {m.train_loss}, validation loss {m.valid_loss}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
