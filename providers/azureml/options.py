"""Which options are in force for a job, and the rules about them that are not data (pure).

A spec gives the ``azureml`` section or the older combined ``azure`` one (converted here by
:func:`legacy_options`); unset options fall back to the settings.  Messages and fields name the
section the spec used.  What the capability table already says (hyperparameters, methods, sections)
is not repeated here.
"""

from __future__ import annotations

from anytune._provider import IDEMPOTENCY_TAG
from anytune._spec import AzureMLOptions, AzureOptions, JobSpec
from anytune.errors import ConfigError, NotSupportedError
from anytune.providers.azureml.errors import NAME
from anytune.providers.azureml.mapping import (
    Deployment,
    Submission,
    job_name,
    map_hyperparameters,
    options_section,
    parse_model,
    slug,
)
from anytune.providers.azureml.workspace import AzureMLSettings

#: Options only managed compute reads; serverless fine-tuning refuses them.
MANAGED_ONLY_OPTIONS = ("compute", "instance_type", "job_tier")


def legacy_options(azure: AzureOptions) -> AzureMLOptions:
    """The ``azureml`` options of an older combined ``azure`` section.

    Raises:
        NotSupportedError: it sets ``training_type``, which only Azure OpenAI reads.
    """
    if azure.training_type is not None:
        raise NotSupportedError(
            "training_type belongs to Azure OpenAI",
            field="azure.training_type",
            provider=NAME,
            alternatives=["azure-openai"],
        )
    return AzureMLOptions.model_validate(azure.model_dump(include=set(AzureMLOptions.model_fields), exclude_unset=True))


def spec_options(spec: JobSpec) -> AzureMLOptions:
    """The spec's Azure ML options: its ``azureml`` section, else its ``azure`` one, else none."""
    if spec.azureml is not None:
        return spec.azureml
    return legacy_options(spec.azure) if spec.azure is not None else AzureMLOptions()


def deployment_of(opts: AzureMLOptions, settings: AzureMLSettings) -> Deployment:
    return opts.deployment or settings.deployment


def target(opts: AzureMLOptions, settings: AzureMLSettings) -> tuple[str | None, list[str]]:
    """Managed compute: (cluster, instance types); the spec's choice replaces the settings' pair."""
    if opts.compute or opts.instance_type:
        return opts.compute, [opts.instance_type] if opts.instance_type else []
    return settings.compute, list(settings.instance_types)


def _check_target(opts: AzureMLOptions, settings: AzureMLSettings, section: str) -> None:
    deployment = deployment_of(opts, settings)
    if deployment == "serverless":
        for option in MANAGED_ONLY_OPTIONS:
            if getattr(opts, option) is not None:
                raise NotSupportedError(
                    f"serverless fine-tuning runs on Microsoft-managed compute; {option} needs "
                    f"{section}.deployment='managed'",
                    field=f"{section}.{option}",
                    provider=NAME,
                )
        return
    compute, types = target(opts, settings)
    if not compute and not types:
        raise ConfigError(
            f"managed fine-tuning needs a compute cluster ({section}.compute) or an "
            f"instance type ({section}.instance_type)",
            field=f"{section}.compute",
        )
    if compute and types:
        raise ConfigError("give a compute cluster or instance types, not both", field=f"{section}.compute")


def check_options(spec: JobSpec, settings: AzureMLSettings) -> None:
    """Refuse what the chosen deployment cannot do (pure).

    Raises:
        NotSupportedError: an option or hyperparameter the deployment does not take.
        ConfigError: managed compute with neither a cluster nor instance types, or both.
    """
    opts, section = spec_options(spec), options_section(spec)
    if opts.instance_count is not None:
        raise NotSupportedError(
            "fine-tuning jobs choose their node count", field=f"{section}.instance_count", provider=NAME
        )
    _check_target(opts, settings, section)
    map_hyperparameters(spec, deployment_of(opts, settings))
    parse_model(spec.base_model, registry=opts.registry or settings.registry, version=opts.model_version)


def build_submission(spec: JobSpec, settings: AzureMLSettings, key: str) -> Submission:
    """Everything ``submit`` sends for ``spec`` under idempotency key ``key`` (pure; checks first).

    A dry run has no key yet (``FineTuneJob.plan`` passes a placeholder in angle brackets): the
    job name then shows where the key's hash goes.
    """
    check_options(spec, settings)
    opts, section = spec_options(spec), options_section(spec)
    deployment = deployment_of(opts, settings)
    model = parse_model(spec.base_model, registry=opts.registry or settings.registry, version=opts.model_version)
    name = job_name(key) if not key.startswith("<") else "anytune-KEYHASH"
    suffix = spec.suffix or "ft"
    short = name.rsplit("-", 1)[-1][:8]
    output = spec.output_name or f"{model.name}-{suffix}-{short}"
    compute, types = target(opts, settings) if deployment == "managed" else (None, [])
    accept = opts.accept_marketplace_terms
    return Submission(
        deployment=deployment,
        task=opts.task or "chat-completion",
        model=model,
        name=name,
        display_name=f"{model.name} {suffix} (anytune)",
        experiment_name=opts.experiment_name or settings.experiment_name,
        output_name=slug(output, 200),
        hyperparameters=map_hyperparameters(spec, deployment),
        compute=compute,
        instance_types=types,
        job_tier=opts.job_tier or (settings.job_tier if deployment == "managed" else None),
        tags={
            **spec.tags,
            IDEMPOTENCY_TAG: key,
            "anytune.base_model": spec.base_model[:256],
            "anytune.deployment": deployment,
        },
        accept_marketplace_terms=bool(accept if accept is not None else settings.accept_marketplace_terms),
        section=section,
    )
