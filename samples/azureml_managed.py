"""Fine-tune a model with LoRA on your own Azure ML compute (Models as a Platform), then deploy it.

Needs ``pip install "anytune[azure]"``, a signed-in Azure identity (``az login`` or any
azure-identity credential), an Azure ML workspace, and GPU quota: either a compute cluster
(``--compute``) or instance types the service provisions for the job (``--instance-type``).

    python samples/azureml_managed.py --workspace WS --resource-group RG --subscription-id SUB \\
        --compute gpu-cluster
    python samples/azureml_managed.py --instance-type Standard_NC24ads_A100_v4 --job-tier spot
    python samples/azureml_managed.py --compute gpu-cluster --dry-run    # what would be sent
    python samples/azureml_managed.py --resume azureml:anytune-...        # follow a job created earlier
    python samples/azureml_managed.py --compute gpu-cluster --deploy Standard_NC24ads_A100_v4

The workspace may also come from ANYTUNE_AZUREML_* variables, a profile in anytune.toml, or the
workspace config.json (as MLClient.from_config finds it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from anytune import FineTunedModel, FineTuneJob, JobFailedError

HERE = Path(__file__).resolve().parent


def workspace_client(model: FineTunedModel) -> Any:
    """An MLClient for the workspace the model was registered in (read from its asset id)."""
    import re

    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    scope = re.match(
        r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
        r"Microsoft.MachineLearningServices/workspaces/([^/]+)/",
        model.extra["asset_id"],
    )
    assert scope, model.extra["asset_id"]
    return MLClient(DefaultAzureCredential(), *scope.groups())


def deploy_managed(model: FineTunedModel, instance_type: str) -> None:
    """Create a managed online endpoint with one deployment of the fine-tuned model and call it."""
    import re

    from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint, OnlineRequestSettings

    ml = workspace_client(model)
    name = re.sub(r"[^a-z0-9-]", "-", model.extra["name"].lower())[:28].strip("-") + "-ep"
    print(f"creating managed online endpoint {name} on {instance_type} (10-20 minutes)...")
    endpoint = ml.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="key")).result()
    ml.online_deployments.begin_create_or_update(
        ManagedOnlineDeployment(
            name="default",
            endpoint_name=name,
            model=model.extra["asset_id"],
            instance_type=instance_type,
            instance_count=1,
            request_settings=OnlineRequestSettings(request_timeout_ms=90_000),
        )
    ).result()
    endpoint.traffic = {"default": 100}
    ml.begin_create_or_update(endpoint).result()
    request = HERE / ".request.json"
    request.write_text(
        json.dumps(
            {
                "input_data": {
                    "input_string": [{"role": "user", "content": "What is 21 plus 21?"}],
                    "parameters": {"max_new_tokens": 64},
                }
            }
        )
    )
    print("reply:", ml.online_endpoints.invoke(endpoint_name=name, request_file=str(request)))
    request.unlink()
    print(f"delete it when done: ml_client.online_endpoints.begin_delete({name!r})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscription-id")
    parser.add_argument("--resource-group")
    parser.add_argument("--workspace")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--compute", help="an existing compute cluster in the workspace")
    target.add_argument("--instance-type", help="a VM size the service provisions for the job")
    parser.add_argument("--job-tier", choices=["spot", "basic", "standard", "premium"])
    parser.add_argument("--model", default="Phi-3-mini-4k-instruct", help="model name, name:version or asset id")
    parser.add_argument("--registry", help="registry of the model (default: azureml)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--resume", metavar="REF", help="follow an existing job instead of creating one")
    parser.add_argument("--deploy", metavar="INSTANCE_TYPE", help="deploy the result on this VM size")
    args = parser.parse_args()
    given = {
        "subscription_id": args.subscription_id,
        "resource_group": args.resource_group,
        "workspace": args.workspace,
        "registry": args.registry,
        "deployment": "managed",
    }
    settings = {k: v for k, v in given.items() if v is not None}

    azure = {
        "deployment": "managed",
        "task": "chat-completion",
        "compute": args.compute,
        "instance_type": args.instance_type,
        "job_tier": args.job_tier,
    }
    job_fields: dict[str, Any] = {
        "base_model": args.model,
        "training_file": HERE / "data" / "train.jsonl",
        "validation_file": HERE / "data" / "valid.jsonl",
        "hyperparameters": {"epochs": 1, "learning_rate": 2e-4, "batch_size": 1, "max_length": 1024},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "suffix": "anytune-lora",
        "azureml": {k: v for k, v in azure.items() if v is not None},
    }
    if args.dry_run:
        plan = FineTuneJob.plan(provider="azureml", settings=settings, **job_fields)
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
        return 0

    if args.resume:
        job = FineTuneJob.get(args.resume, settings=settings)
    else:
        job = FineTuneJob.create(provider="azureml", settings=settings, **job_fields)
        print(f"created {job.ref}  (studio: {job.record.output.get('studio_url')})")
    for event in job.stream():
        print(event)
    try:
        model = job.result()
    except JobFailedError as exc:
        print(f"the job did not succeed: {exc}")
        return 1
    print(f"registered model: {model.model_id}  ({model.extra['asset_id']})")
    print("deploy with:", model.extra["deploy"]["managed_online_endpoint"]["python"])
    if args.deploy:
        deploy_managed(model, args.deploy)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
