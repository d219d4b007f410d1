"""OpenAI and Azure OpenAI fine-tuning behind the uniform API.

One adapter, two providers.  What the API looks like (files, uploads, jobs, events, checkpoints,
result files, statuses, errors) is shared; who and where differs and lives in the two small
subclasses: :class:`OpenAIProvider` builds ``openai.OpenAI(api_key, base_url, organization)``,
:class:`AzureOpenAIProvider` builds ``openai.AzureOpenAI(azure_endpoint, api_version, api_key or an
Entra ID token provider)``.

The package, by what each file holds:

* ``adapter``: the provider contract, implemented once for both services, and the two providers.
* ``clients``: who and where: settings, :class:`ClientConfig`, building the SDK clients, Entra ID.
* ``capabilities``: what the services accept, as data, and :func:`spec_problems`.
* ``mapping``: pure wire mapping: spec -> create body, service objects -> records, events,
  checkpoints and metric points, result files.
* ``status``: the status tables.
* ``uploads``: the data plane: Files and Uploads API, parts from disk, reuse by content.
* ``errors``: SDK exceptions -> anytune's error tree; what is retried, what is ambiguous.
* ``versions``: what each Azure api-version's fine-tuning API has (v1 surface, dated versions).
* ``wind_down``: OpenAI's wind-down of self-serve fine-tuning (phases, retirements), as data.
* ``deployments``: Azure OpenAI model deployments (ARM, ``azure-mgmt-cognitiveservices``): settings,
  request body, resource -> ``Deployment``, provisioning states, cost notes, errors, and the client.

The openai SDK (and azure-identity) are imported on first use: reading ``capabilities`` or making a
dry-run plan never needs them.  Collaborators come in through the constructor: ``http_client`` (the
``httpx2.Client`` the SDK sends through), ``azure_token_provider`` (Entra ID), and the ``sleep``,
``clock`` and ``rand`` every provider takes.
"""

from __future__ import annotations

from .adapter import AzureOpenAIProvider, OpenAIProvider
from .capabilities import AZURE_OPENAI_CAPABILITIES, OPENAI_CAPABILITIES, spec_problems
from .clients import (
    DEFAULT_AZURE_API_VERSION,
    DEFAULT_AZURE_TRAINING_TYPE,
    AzureOpenAISettings,
    ClientConfig,
    OpenAISettings,
    azure_client_config,
    openai_client_config,
)
from .errors import is_ambiguous, is_transient, translate_error
from .mapping import (
    build_create_body,
    checkpoint_from_api,
    decode_result_file,
    event_from_api,
    merge_points,
    metric_from_data,
    parse_result_csv,
    record_from_job,
)
from .status import AZURE_STATUS, OPENAI_STATUS, map_status
from .uploads import MAX_PART_BYTES, FileSlice, part_ranges
from .versions import AzureSurface, azure_surface
from .wind_down import PHASES, current_phase, equivalent_commands, retirement_warning

__all__ = [
    "AZURE_OPENAI_CAPABILITIES",
    "AZURE_STATUS",
    "DEFAULT_AZURE_API_VERSION",
    "DEFAULT_AZURE_TRAINING_TYPE",
    "MAX_PART_BYTES",
    "OPENAI_CAPABILITIES",
    "OPENAI_STATUS",
    "PHASES",
    "AzureOpenAIProvider",
    "AzureOpenAISettings",
    "AzureSurface",
    "ClientConfig",
    "FileSlice",
    "OpenAIProvider",
    "OpenAISettings",
    "azure_client_config",
    "azure_surface",
    "build_create_body",
    "checkpoint_from_api",
    "current_phase",
    "decode_result_file",
    "equivalent_commands",
    "event_from_api",
    "is_ambiguous",
    "is_transient",
    "map_status",
    "merge_points",
    "metric_from_data",
    "openai_client_config",
    "parse_result_csv",
    "part_ranges",
    "record_from_job",
    "retirement_warning",
    "spec_problems",
    "translate_error",
]
