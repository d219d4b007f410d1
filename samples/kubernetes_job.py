"""Fine-tune with LoRA as a Kubernetes Job on your own cluster, follow it, and load the adapter.

    pip install "anytune[kubernetes]"          # add [local] to load and try the adapter afterwards
    kubectl config current-context             # the cluster this runs on (your kubeconfig)
    python samples/kubernetes_job.py --storage s3://my-bucket/anytune --dry-run   # the manifests; no call
    python samples/kubernetes_job.py --storage s3://my-bucket/anytune --storage-secret s3-keys
    python samples/kubernetes_job.py --storage pvc://training-data --gpus 1 --node-selector pool=a100

Before a run:

* a storage the pods can reach: an object-store URL (the pods get its credentials from the Secret
  ``--storage-secret`` names, e.g. ``kubectl create secret generic s3-keys
  --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...``; this machine
  uploads with its own fsspec credentials), or a PersistentVolumeClaim in the namespace (ReadWriteMany
  for several nodes);
* GPU nodes with the NVIDIA device plugin (``nvidia.com/gpu`` allocatable), or ``--gpus 0`` for a
  CPU pod;
* for a gated or private base model, a Secret with the Hub token: ``kubectl create secret generic hf
  --from-literal=HF_TOKEN=hf_...`` and ``--hub-token-secret hf``.

The pod installs anytune's trainer from PyPI's packages (it needs egress to PyPI and the Hub), trains,
and writes the adapter to ``STORAGE/jobs/<job>/adapter``. Stop following with Ctrl-C: the Job keeps
running; re-attach with ``anytune jobs wait kubernetes:<namespace>/<job>``; ``anytune jobs cancel``
deletes the Job and keeps the outputs; ``anytune jobs resume`` continues from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anytune import FineTuneJob, JobFailedError
from anytune.providers.kubernetes import KubernetesProvider, KubernetesSettings

DATA = Path(__file__).resolve().parent / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", required=True, help="pvc://<claim>[/subpath] or an fsspec URL (s3://...)")
    parser.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct", help="a causal LM on the Hub")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per pod (0: CPU)")
    parser.add_argument("--nodes", type=int, default=1, help="pods (an Indexed Job with a headless Service)")
    parser.add_argument("--node-selector", action="append", default=[], help="KEY=VALUE, repeatable")
    parser.add_argument("--hub-token-secret", help="Secret holding HF_TOKEN")
    parser.add_argument("--storage-secret", help="Secret whose keys become the pod's environment")
    parser.add_argument("--dry-run", action="store_true", help="print the manifests instead of creating them")
    parser.add_argument("--try-it", action="store_true", help="load the adapter here and answer one prompt")
    args = parser.parse_args()

    settings = KubernetesSettings(
        storage=args.storage,
        namespace=args.namespace,
        context=args.context,
        gpus=args.gpus,
        node_selector=dict(item.split("=", 1) for item in args.node_selector),
        hub_token_secret=args.hub_token_secret,
        storage_secret=args.storage_secret,
    )
    provider = KubernetesProvider(settings)
    local: dict[str, object] = {"device": "cuda" if args.gpus else "cpu", "num_devices": max(args.gpus, 1)}
    if args.nodes > 1:
        # The spec asks for an endpoint; on Kubernetes its port is kept and the host is node 0's pod.
        local |= {"nodes": args.nodes, "rdzv_endpoint": "node0:29400"}
    spec = {
        "base_model": args.model,
        "training_file": DATA / "train.jsonl",
        "validation_file": DATA / "valid.jsonl",
        "method": "sft",
        "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 2e-4},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "local": local,
        "tags": {"sample": "kubernetes_job"},
    }
    if args.dry_run:
        plan = FineTuneJob.plan(spec, provider=provider)
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
        return 0

    job = FineTuneJob.create(spec, provider=provider)
    print(f"created {job.ref}; outputs at {job.record.output.get('location')}")
    for event in job.stream():
        print(event)
    try:
        model = job.result()
    except JobFailedError as exc:
        print(f"the job did not succeed: {exc}")
        return 1
    print(f"adapter: {model.model_id}" + (f" (downloaded to {model.adapter_path})" if model.adapter_path else ""))
    if args.try_it and model.adapter_path:
        print(model.generate("What is the capital of France?"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
