"""Fine-tune a Hub model with LoRA on Hugging Face Jobs, follow it, and load the pushed adapter.

    pip install "anytune[hf]"                 # add [local] to load and try the adapter afterwards
    hf auth login                              # or: export HF_TOKEN=hf_...  (a token with write access)
    python samples/huggingface_jobs.py --dry-run      # what would be uploaded and sent; no network
    python samples/huggingface_jobs.py                # runs for real: bills your Hugging Face account

The job runs anytune's own trainer (the same one as ``provider="local"``) on the hardware you pick
(``--flavor``; ``hf jobs hardware`` lists them), with the data in a private dataset repo and the
adapter pushed to a private model repo of yours. Jobs need a payment method or credits on the
account. Stop following with Ctrl-C: the job keeps running; re-attach later with
``anytune jobs wait huggingface:<namespace>/<job id>``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anytune import FineTuneJob, JobFailedError

DATA = Path(__file__).resolve().parent / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct", help="a causal LM on the Hub")
    parser.add_argument("--flavor", default="a10g-small", help="Jobs hardware, e.g. t4-small, l4x1, a100-large")
    parser.add_argument("--timeout", default="1h", help="the job is stopped after this long")
    parser.add_argument("--namespace", help="user or organisation that runs (and pays for) the job")
    parser.add_argument("--output-repo", help="model repo for the adapter (default: derived from the model)")
    parser.add_argument("--qlora", action="store_true", help="train on a 4-bit base model")
    parser.add_argument("--dry-run", action="store_true", help="print the plan instead of sending anything")
    parser.add_argument("--try-it", action="store_true", help="load the adapter here and answer one prompt")
    args = parser.parse_args()

    spec = {
        "base_model": args.model,
        "training_file": DATA / "train.jsonl",
        "validation_file": DATA / "valid.jsonl",
        "method": "sft",
        "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 2e-4},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "quantization": "4bit" if args.qlora else "none",
        "tags": {"sample": "huggingface_jobs"},
        "hf": {
            "flavor": args.flavor,
            "timeout": args.timeout,
            "namespace": args.namespace,
            "output_repo": args.output_repo,
            "private": True,
        },
    }
    if args.dry_run:
        plan = FineTuneJob.plan(spec, provider="huggingface")
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
        return 0

    job = FineTuneJob.create(spec, provider="huggingface")
    print(f"created {job.ref} ({job.record.output.get('url')}); re-attach with FineTuneJob.get({job.ref!r})")
    for event in job.stream():
        print(event)
    try:
        model = job.result()
    except JobFailedError as exc:
        print(f"the job did not succeed: {exc}")
        return 1
    print(f"adapter: https://huggingface.co/{model.hub_repo} at revision {model.revision}")
    if model.final_metrics is not None:
        print(f"final train loss {model.final_metrics.train_loss}, validation loss {model.final_metrics.valid_loss}")
    if args.try_it:
        print(model.generate("What is the capital of France?"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
