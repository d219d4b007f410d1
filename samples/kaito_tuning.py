"""Fine-tune a Kaito preset with LoRA on AKS: a Kaito tuning Workspace, followed to its adapter image.

    pip install "anytune[kubernetes]"
    kubectl config current-context        # an AKS cluster with Kaito (the AI toolchain operator add-on)
    python samples/kaito_tuning.py --input-url https://example.com/data/train.jsonl \\
        --output-image myacr.azurecr.io/adapters/phi3-support:v1 --push-secret acr-push --dry-run
    python samples/kaito_tuning.py --input-url https://example.com/data/train.jsonl \\
        --output-image myacr.azurecr.io/adapters/phi3-support:v1 --push-secret acr-push

Before a run:

* Kaito installed in the cluster (``az aks update --enable-ai-toolchain-operator``, or the Helm
  chart, v0.12 or later): ``kubectl api-resources --api-group kaito.sh`` lists ``workspaces``;
* a GPU node size Kaito knows (``--instance-type``, default ``Standard_NC24ads_A100_v4``, one A100;
  Kaito provisions the node, so quota for that size in the cluster's region);
* the training data where Kaito's pod can read it: ``--input-url`` (an http(s) URL of the same
  file as ``--train``, readable without credentials: the URL is written into the Workspace, so
  never a signed one), or ``--storage abfs://container/prefix --storage-url
  https://<account>.blob.core.windows.net/container/prefix`` (a container readable anonymously:
  the local file is uploaded there and Kaito downloads it);
* a registry to push the adapter to, with a Secret holding its push credentials:
  ``kubectl create secret docker-registry acr-push --docker-server=myacr.azurecr.io
  --docker-username=... --docker-password=...`` (or ``--output-pvc <claim>`` to write to a volume).

The training file is checked on this machine first (format, preset, method); Kaito trains with its
own trainer (TRL's SFTTrainer), one node, and pushes the adapter as an image. Stop following with
Ctrl-C: the Workspace keeps running; re-attach with ``anytune jobs wait kubernetes:<namespace>/<name>``;
``anytune jobs cancel`` deletes the Workspace (Kaito cannot resume it).
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
    parser.add_argument("--preset", default="phi-3-mini-4k-instruct", help="a Kaito tuning preset")
    parser.add_argument("--instance-type", default="Standard_NC24ads_A100_v4", help="the GPU node size")
    parser.add_argument("--train", type=Path, default=DATA / "train.jsonl", help="the training file, checked here")
    parser.add_argument("--input-url", help="an http(s) URL Kaito downloads the training file from")
    parser.add_argument("--storage", help="an object store to upload the training file to (abfs://...)")
    parser.add_argument("--storage-url", help="the https address the pod reads --storage at")
    parser.add_argument("--output-image", help="the image the adapter is pushed as")
    parser.add_argument("--push-secret", help="Secret with the registry's push credentials")
    parser.add_argument("--output-pvc", help="a PersistentVolumeClaim to write the adapter to instead")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--dry-run", action="store_true", help="print the ConfigMap and Workspace; create nothing")
    args = parser.parse_args()

    settings = KubernetesSettings(
        mode="kaito",
        namespace=args.namespace,
        context=args.context,
        storage=args.storage,
        kaito_instance_type=args.instance_type,
        kaito_input_url=args.input_url,
        kaito_storage_url=args.storage_url,
        kaito_output_image=args.output_image,
        kaito_output_secret=args.push_secret,
        kaito_output_volume={"persistentVolumeClaim": {"claimName": args.output_pvc}} if args.output_pvc else None,
    )
    provider = KubernetesProvider(settings)
    spec = {
        "base_model": args.preset,
        "training_file": args.train,
        "method": "sft",
        # Kaito holds out a share of the one file rather than reading a validation file.
        "hyperparameters": {"epochs": 1, "learning_rate": 2e-4, "validation_split": 0.1},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "tags": {"sample": "kaito_tuning"},
    }
    if args.dry_run:
        plan = FineTuneJob.plan(spec, provider=provider)
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
        return 0

    job = FineTuneJob.create(spec, provider=provider)
    print(f"created {job.ref}")
    for event in job.stream():
        print(event)
    try:
        model = job.result()
    except JobFailedError as exc:
        print(f"the job did not succeed: {exc}")
        return 1
    print(f"adapter: {model.model_id}\n{model.extra.get('note')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
