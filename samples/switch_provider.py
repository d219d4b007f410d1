"""Run one fine-tuning job on whichever provider the configuration names.

    python samples/switch_provider.py                    # the default profile of samples/anytune.toml
    ANYTUNE_PROFILE=fails python samples/switch_provider.py
    python samples/switch_provider.py --provider fake    # a provider (or profile) by name

Nothing in this script names a service: switching provider is a change of profile or argument.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from anytune import FineTuneJob, JobFailedError

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", help="provider or profile name (default: from anytune.toml)")
    args = parser.parse_args()
    os.environ.setdefault("ANYTUNE_CONFIG", str(HERE / "anytune.toml"))

    job = FineTuneJob.create(
        provider=args.provider,
        training_file=HERE / "data" / "train.jsonl",
        validation_file=HERE / "data" / "valid.jsonl",
        lora={"r": 16, "alpha": 32},
    )
    print(f"created {job.ref}")
    for event in job.stream():
        print(event)
    try:
        model = job.result()
    except JobFailedError as exc:
        print(f"the job failed: {exc}")
        return 1
    print(f"fine-tuned model: {model.model_id or model.adapter_path or model.hub_repo}")
    if model.final_metrics is not None:
        print(f"final train loss: {model.final_metrics.train_loss}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
