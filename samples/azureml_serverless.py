"""Fine-tune a model on Azure Machine Learning serverless (Models as a Service), then deploy it.

Needs ``pip install "anytune[azure]"``, a signed-in Azure identity (``az login``, a managed
identity, or the AZURE_* variables of azure-identity) and an Azure ML workspace (or Azure AI
Foundry hub project) in a region that offers serverless fine-tuning for the model.

    # workspace from arguments, ANYTUNE_AZUREML_* variables, or the workspace config.json
    python samples/azureml_serverless.py --subscription-id SUB --resource-group RG --workspace WS
    python samples/azureml_serverless.py --dry-run                     # what would be sent; sends nothing
    # a model billed through Azure Marketplace: review its terms, then opt in
    python samples/azureml_serverless.py --model Meta-Llama-3.1-8B-Instruct --registry azureml-meta \\
        --accept-marketplace-terms
    python samples/azureml_serverless.py --resume azureml:anytune-...   # follow a job created earlier
    python samples/azureml_serverless.py --deploy                      # + serverless endpoint, one request

Training data: samples/data/train.jsonl and valid.jsonl (OpenAI chat JSONL; anytune converts them to
what the task reads and uploads each content once).
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


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "subscription_id": args.subscription_id,
        "resource_group": args.resource_group,
        "workspace": args.workspace,
        "registry": args.registry,
        "deployment": "serverless",
        "accept_marketplace_terms": args.accept_marketplace_terms,
    }
    return {k: v for k, v in given.items() if v is not None}


def deploy_serverless(model: FineTunedModel, endpoint_name: str) -> None:
    """Create a serverless endpoint for the fine-tuned model and send it one chat request."""
    import requests
    from azure.ai.ml.entities import ServerlessEndpoint

    ml = workspace_client(model)
    model_id = model.extra["deploy"]["serverless_endpoint"]["model_id"]
    print(f"creating serverless endpoint {endpoint_name} for {model_id} (a few minutes)...")
    endpoint = ml.serverless_endpoints.begin_create_or_update(
        ServerlessEndpoint(name=endpoint_name, model_id=model_id)
    ).result()
    key = ml.serverless_endpoints.get_keys(endpoint_name).primary_key
    reply = requests.post(
        f"{endpoint.scoring_uri}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        json={"messages": [{"role": "user", "content": "What is 21 plus 21?"}], "max_tokens": 64},
        timeout=120,
    )
    reply.raise_for_status()
    print("reply:", reply.json()["choices"][0]["message"]["content"])
    print(f"delete it when done: ml_client.serverless_endpoints.begin_delete({endpoint_name!r})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscription-id")
    parser.add_argument("--resource-group")
    parser.add_argument("--workspace")
    parser.add_argument("--model", default="Phi-4-mini-instruct", help="model name, name:version or asset id")
    parser.add_argument("--registry", help="registry of the model (default: azureml)")
    parser.add_argument(
        "--accept-marketplace-terms",
        action="store_true",
        default=None,
        help="subscribe to the model's Azure Marketplace offer if it needs one",
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--resume", metavar="REF", help="follow an existing job instead of creating one")
    parser.add_argument(
        "--deploy",
        metavar="ENDPOINT",
        nargs="?",
        const="anytune-ft",
        help="deploy the result to a serverless endpoint (default name: anytune-ft)",
    )
    args = parser.parse_args()
    settings = settings_from(args)

    job_fields: dict[str, Any] = {
        "base_model": args.model,
        "training_file": HERE / "data" / "train.jsonl",
        "validation_file": HERE / "data" / "valid.jsonl",
        "hyperparameters": {"epochs": args.epochs, "learning_rate": 2e-5, "batch_size": 1},
        "suffix": "anytune-sample",
        "azureml": {"task": "chat-completion"},
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
    print("deploy with:", model.extra["deploy"]["serverless_endpoint"]["python"])
    if args.deploy:
        deploy_serverless(model, args.deploy)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
