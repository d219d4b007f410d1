"""Azure Machine Learning fine-tuning: serverless (Models as a Service) and managed compute (MaaP).

Built on ``azure-ai-ml`` (``create_finetuning_job`` + ``MLClient.jobs``) and ``azure-identity``; both
are imported on first use, so ``capabilities`` and :meth:`AzureMLProvider.plan` need nothing from
the network and importing this package needs neither SDK.

Two modes, chosen by the ``deployment`` option (``azureml`` section, or the older ``azure`` one) or
the ``deployment`` setting:

* ``serverless`` - Microsoft-hosted, pay per token.  Models from third-party registries
  (``azureml-meta``, ``azureml-mistral``...) are billed through an Azure Marketplace subscription,
  which this adapter creates first, but only with ``accept_marketplace_terms``.
* ``managed`` - your compute cluster (``compute=``) or instance types (``instance_type=``), and an
  optional job tier.

Where things are:

* :mod:`.adapter` - :class:`AzureMLProvider`, the contract.
* :mod:`.workspace` - who and where: settings, the workspace (settings, Azure ML's variables,
  ``config.json``), the azure-identity credential, the clients and their read-only retry policy.
* :mod:`.options` - the options in force (``azureml``, or the older ``azure`` section converted)
  and the rules about them that are not capability data.
* :mod:`.mapping` - pure wire mapping: names, model references, hyperparameters, the job body, the
  job -> record mapping.
* :mod:`.status` - the status table.
* :mod:`.catalog` - the base model in its registry, and the marketplace subscription.
* :mod:`.data` - the data plane: conversion, blob upload once per content, data assets.
* :mod:`.tracking` - run history and MLflow metrics.
* :mod:`.journal` - the event journal under ``ANYTUNE_HOME/azureml/events``, with stable ids.
* :mod:`.errors` - the error translation at the boundary.

Reads go through azure-core's retry policy (Retry-After honoured, a total deadline per call);
writes are never retried by the transport: the job's name derives from anytune's idempotency key,
so a create that failed ambiguously is looked up by name before it is sent again.
"""

from __future__ import annotations

from anytune.providers.azureml.adapter import AzureMLProvider
from anytune.providers.azureml.data import converted_digest, converted_lines
from anytune.providers.azureml.errors import NAME, map_error
from anytune.providers.azureml.mapping import (
    FIRST_PARTY_REGISTRIES,
    HYPERPARAMETERS,
    Deployment,
    ModelRef,
    Task,
    data_asset_name,
    job_name,
    map_hyperparameters,
    parse_model,
)
from anytune.providers.azureml.options import legacy_options
from anytune.providers.azureml.status import STATUS_MAP, map_status
from anytune.providers.azureml.tracking import METRIC_KEYS
from anytune.providers.azureml.workspace import (
    ARM_SCOPE,
    CREDENTIALS,
    AzureMLSettings,
    Identity,
    Workspace,
    find_workspace_config,
    read_workspace_config,
)

__all__ = [
    "ARM_SCOPE",
    "CREDENTIALS",
    "FIRST_PARTY_REGISTRIES",
    "HYPERPARAMETERS",
    "METRIC_KEYS",
    "NAME",
    "STATUS_MAP",
    "AzureMLProvider",
    "AzureMLSettings",
    "Deployment",
    "Identity",
    "ModelRef",
    "Task",
    "Workspace",
    "converted_digest",
    "converted_lines",
    "data_asset_name",
    "find_workspace_config",
    "job_name",
    "legacy_options",
    "map_error",
    "map_hyperparameters",
    "map_status",
    "parse_model",
    "read_workspace_config",
]
