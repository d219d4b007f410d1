"""Kaito tuning workspaces (pure): which presets Kaito fine-tunes, the checks, the manifests, the status.

Kaito (the Kubernetes AI toolchain operator, on AKS) fine-tunes a *preset* model with LoRA or
QLoRA when a ``Workspace`` with a ``tuning`` section is created: it starts a ``batch/v1`` Job of the
same name that runs its own ``fine_tuning.py`` (TRL's ``SFTTrainer`` under ``accelerate launch``,
one process per GPU of the node) on one node of ``resource.instanceType``. The hyperparameters
travel in a ConfigMap named by ``tuning.config`` whose ``training_config.yaml`` key holds six
sections (``ModelConfig``, ``QuantizationConfig``, ``LoraConfig``, ``TrainingArguments``,
``DatasetConfig``, ``DataCollator``).

Everything here follows Kaito v0.12.0 (``kaito-project/kaito`` at commit
0894eb2b567d48cd2d66afe579acb1542b226af4; identical on ``main`` at 056b8280b1a8 for every file
named below):

- the Workspace type: ``api/v1beta1/workspace_types.go`` and its CRD
  ``config/crd/bases/kaito.sh_workspaces.yaml`` (``kaito.sh/v1beta1`` is the storage version;
  ``v1alpha1`` is still served);
- the admission rules: ``api/v1beta1/workspace_validation.go`` (``TuningSpec.validateCreate``,
  ``DataSource.validateCreate``, ``DataDestination.validateCreate``,
  ``ResourceSpec.validateCreateWithTuning``) and ``api/v1beta1/tuning_config_validation.go``
  (``validateTuningConfigMapSchema``, ``validateMethodViaConfigMap``,
  ``validateTrainingArgsViaConfigMap``). The ConfigMap must exist *before* the Workspace: the
  webhook reads it at admission and refuses the Workspace when it is missing;
- how the ConfigMap is read: ``presets/workspace/tuning/text-generation/parser.py``
  (``CONFIG_CLASS_MAP``, ``parse_configs``: each section becomes ``--key value`` arguments of the
  dataclass named there: ``cli.py``'s ``ModelConfig``, ``QuantizationConfig``, ``ExtLoraConfig``
  (PEFT's ``LoraConfig``), ``DatasetConfig``, ``ExtDataCollator``, and TRL's ``SFTConfig``),
  ``fine_tuning.py`` and ``dataset.py`` (one dataset file, found by extension);
- the default ConfigMaps ``charts/kaito/workspace/templates/{lora,qlora}-params.yaml``;
- the status: ``pkg/workspace/controllers/workspace_controller.go``
  (``applyTuningWorkspaceStatus``) and ``api/v1beta1/condition_types.go``;
- the node SKUs a tuning job can use: ``pkg/sku/{azure,aws,arc}_sku_handler.go``
  (``pkg/workspace/tuning/preset_tuning.go`` ``CreatePresetTuning`` looks the instance type up
  there and launches one training process per GPU it lists).
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from anytune._capabilities import ALL_LORA_FIELDS, Capabilities, problems
from anytune._spec import JobSpec, LoraConfig, Method, Quantization
from anytune._types import JobStatus
from anytune.errors import ConfigError, NotSupportedError

from .conditions import check_dns_label, condition, condition_true, is_deleting

__all__ = [
    "KAITO_API_VERSION",
    "KAITO_HYPERPARAMETERS",
    "KAITO_INFERENCE_ONLY_PRESETS",
    "KAITO_SKUS",
    "KAITO_TUNING_PRESETS",
    "TRAINING_CONFIG_KEY",
    "KaitoData",
    "KaitoPreset",
    "KaitoProblem",
    "KaitoSku",
    "check_kaito",
    "configmap_manifest",
    "kaito_capabilities",
    "kaito_method",
    "require_kaito",
    "resolve_preset",
    "training_config",
    "workspace_manifest",
    "workspace_status",
]

KAITO_API_VERSION = "kaito.sh/v1beta1"
#: The ConfigMap key Kaito reads (tuning_config_validation.go ``UnmarshalTrainingConfig``).
TRAINING_CONFIG_KEY = "training_config.yaml"
#: Where Kaito mounts the input data and, by default, writes the adapter (preset_tuning.go,
#: pkg/utils/common_preset.go). ``output_dir`` must lie under ``/mnt``.
DATA_DIR = "/mnt/data"
RESULTS_DIR = "/mnt/results"

_LINEAR_PHI3 = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
_LINEAR_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class KaitoPreset:
    """A model Kaito fine-tunes.

    Attributes:
        name: the preset name ``tuning.preset.name`` takes (the short name every Kaito release
            since the tuning API knows; v0.12 also takes the Hugging Face id).
        hf_id: the Hugging Face model Kaito downloads for it.
        linear_modules: the model's linear layers but ``lm_head`` (transformers' modeling files
            for its architecture): what ``lora.target_modules = "all-linear"`` means here, written
            out because Kaito's parser turns a string into a one-item list, which PEFT then looks
            for as a module name.
    """

    name: str
    hf_id: str
    linear_modules: tuple[str, ...]


# Source: kaito-project/kaito v0.12.0 (0894eb2b567d48cd2d66afe579acb1542b226af4),
# presets/workspace/models/transformer_runtime_tuning_parameters.go ``TransformerTuningParameters``:
# a model supports tuning when that map has its name (vllm_model.go ``SupportTuning`` /
# ``GetTuningParameters``), the name being the Hugging Face id's last part, lower-cased
# (presets/workspace/generator/generator.go ``NewGenerator``) after pkg/utils/plugin/plugin.go
# ``LegacyBuiltinToCatalog`` turned a preset name into that id. Hence ``mistral-7b`` (the map's
# key is ``mistral-7b-v0.3``, the last part of ``mistralai/mistral-7b-v0.3``). Architectures from
# presets/workspace/models/model_catalog.yaml: Phi3ForCausalLM for the phi families,
# MistralForCausalLM, Qwen2ForCausalLM.
KAITO_TUNING_PRESETS: Mapping[str, KaitoPreset] = {
    p.name: p
    for p in (
        KaitoPreset("phi-4", "microsoft/phi-4", _LINEAR_PHI3),
        KaitoPreset("phi-4-mini-instruct", "microsoft/Phi-4-mini-instruct", _LINEAR_PHI3),
        KaitoPreset("phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", _LINEAR_PHI3),
        KaitoPreset("phi-3-mini-128k-instruct", "microsoft/Phi-3-mini-128k-instruct", _LINEAR_PHI3),
        KaitoPreset("phi-3-medium-4k-instruct", "microsoft/Phi-3-medium-4k-instruct", _LINEAR_PHI3),
        KaitoPreset("phi-3-medium-128k-instruct", "microsoft/Phi-3-medium-128k-instruct", _LINEAR_PHI3),
        KaitoPreset("phi-3.5-mini-instruct", "microsoft/Phi-3.5-mini-instruct", _LINEAR_PHI3),
        KaitoPreset("mistral-7b", "mistralai/Mistral-7B-v0.3", _LINEAR_LLAMA_LIKE),
        KaitoPreset("qwen2.5-coder-7b-instruct", "Qwen/Qwen2.5-Coder-7B-Instruct", _LINEAR_LLAMA_LIKE),
        KaitoPreset("qwen2.5-coder-32b-instruct", "Qwen/Qwen2.5-Coder-32B-Instruct", _LINEAR_LLAMA_LIKE),
    )
}

#: Presets Kaito v0.12.0 serves but cannot fine-tune (plugin.go ``LegacyBuiltinToCatalog`` less the
#: table above), so the refusal can say "inference only" rather than "unknown".
KAITO_INFERENCE_ONLY_PRESETS: frozenset[str] = frozenset(
    {
        "llama-3.1-8b-instruct",
        "llama-3.3-70b-instruct",
        "deepseek-r1-distill-llama-8b",
        "deepseek-r1-distill-qwen-14b",
        "deepseek-r1-0528",
        "deepseek-v3-0324",
        "gpt-oss-20b",
        "gpt-oss-120b",
        "gemma-3-4b-instruct",
        "gemma-3-27b-instruct",
        "mistral-7b-instruct",
        "ministral-3-3b-instruct",
        "ministral-3-8b-instruct",
        "ministral-3-14b-instruct",
        "mistral-large-3-675b-instruct",
    }
)


@dataclass(frozen=True)
class KaitoSku:
    """A node size Kaito knows: its cloud and how many GPUs (training processes) it has."""

    name: str
    cloud: str
    gpus: int


def _skus(cloud: str, rows: Sequence[tuple[str, int]]) -> dict[str, KaitoSku]:
    return {name.lower(): KaitoSku(name, cloud, gpus) for name, gpus in rows}


# Source: kaito-project/kaito v0.12.0 (0894eb2b567d48cd2d66afe579acb1542b226af4), pkg/sku/
# azure_sku_handler.go, aws_sku_handler.go, arc_sku_handker.go (GPUCount). Kaito matches the name
# without regard to case (cloud_sku_handler.go ``GetGPUConfigBySKU``); keys here are lower case.
KAITO_SKUS: Mapping[str, KaitoSku] = {
    **_skus(
        "azure",
        [
            ("Standard_NV36ads_A10_v5", 1),
            ("Standard_NV72ads_A10_v5", 2),
            ("Standard_NC24ads_A100_v4", 1),
            ("Standard_NC48ads_A100_v4", 2),
            ("Standard_NC96ads_A100_v4", 4),
            ("Standard_ND96asr_A100_v4", 8),
            ("Standard_ND96amsr_A100_v4", 8),
            ("Standard_NC40ads_H100_v5", 1),
            ("Standard_NC80adis_H100_v5", 2),
            ("Standard_ND96isr_H100_v5", 8),
            ("Standard_NCC40ads_H100_v5", 1),
            ("Standard_ND96isr_H200_v5", 8),
            ("Standard_NG32ads_V620_v1", 1),
            ("Standard_NG32adms_V620_v1", 1),
        ],
    ),
    **_skus(
        "aws",
        [
            ("p4d.24xlarge", 8),
            ("p4de.24xlarge", 8),
            ("p5.48xlarge", 8),
            ("p5e.48xlarge", 8),
            ("p5en.48xlarge", 8),
            ("g6.xlarge", 1),
            ("g6.2xlarge", 1),
            ("g6.4xlarge", 1),
            ("g6.8xlarge", 1),
            ("g6.16xlarge", 1),
            ("gr6.4xlarge", 1),
            ("gr6.8xlarge", 1),
            ("g6.12xlarge", 4),
            ("g6.24xlarge", 4),
            ("g6.48xlarge", 8),
            ("g5.xlarge", 1),
            ("g5.2xlarge", 1),
            ("g5.4xlarge", 1),
            ("g5.8xlarge", 1),
            ("g5.12xlarge", 4),
            ("g5.16xlarge", 1),
            ("g5.24xlarge", 4),
            ("g5.48xlarge", 8),
            ("g4ad.xlarge", 1),
            ("g4ad.2xlarge", 1),
            ("g4ad.4xlarge", 1),
            ("g4ad.8xlarge", 2),
            ("g4ad.16xlarge", 4),
            ("trn1.2xlarge", 1),
            ("trn1.32xlarge", 16),
            ("trn1n.32xlarge", 16),
            ("inf2.xlarge", 1),
            ("inf2.8xlarge", 1),
            ("inf2.24xlarge", 6),
            ("inf2.48xlarge", 12),
        ],
    ),
    **_skus(
        "arc",
        [
            ("Standard_NC4_A2", 1),
            ("Standard_NC8_A2", 1),
            ("Standard_NC16_A2", 2),
            ("Standard_NC32_A2", 2),
            ("Standard_NC4_A16", 1),
            ("Standard_NC8_A16", 1),
            ("Standard_NC16_A16", 2),
            ("Standard_NC32_A16", 2),
        ],
    ),
}

#: Spec hyperparameters the ConfigMap can carry (see :func:`training_config` for where each goes).
KAITO_HYPERPARAMETERS: frozenset[str] = frozenset(
    {
        "epochs",
        "batch_size",
        "learning_rate",
        "warmup_ratio",
        "warmup_steps",
        "max_steps",
        "max_length",
        "seed",
        "gradient_accumulation_steps",
        "weight_decay",
        "lr_scheduler",
        "optimizer",
        "validation_split",
    }
)

# Kaito's dataset.py ``SUPPORTED_EXTENSIONS``: it loads the first file whose name *contains* one of
# these (so ``train.jsonl`` is read as ``json``, which is JSON lines to ``datasets``).
_DATASET_EXTENSIONS = ("csv", "json", "parquet", "arrow", "webdataset")
_HTTP_URL = re.compile(r"^https?://[^/\s]+/\S*$", re.IGNORECASE)


def kaito_capabilities(section: str = "kubernetes") -> Capabilities:
    """What a Kaito tuning workspace can do, as data (``section``: the provider's options section).

    SFT only (Kaito runs TRL's ``SFTTrainer``), LoRA with every spec field (PEFT's ``LoraConfig``
    has them all), no quantization (``lora``) or 4/8-bit (``qlora``); chat or prompt/completion
    rows, the two shapes Kaito's tuning guide names.
    """
    return Capabilities(
        methods=frozenset({Method.SFT}),
        hyperparameters=KAITO_HYPERPARAMETERS,
        lora=True,
        lora_fields=ALL_LORA_FIELDS,
        quantization=frozenset({Quantization.NONE, Quantization.INT4, Quantization.INT8}),
        data_formats=frozenset({"chat", "prompt_completion"}),
        sections=frozenset({section}),
        trackers=frozenset(),
        suffix=False,
        output_name=False,
        hints={
            "method": "Kaito tunes with SFT only (its trainer is TRL's SFTTrainer, methods lora and qlora)",
            "hyperparameters.learning_rate_multiplier": "set hyperparameters.learning_rate instead",
            "report_to": "Kaito's tuning image logs to its pod only",
            "suffix": "Kaito writes the adapter where the output volume or image says",
            "output_name": "Kaito writes the adapter where the output volume or image says",
        },
        service="Kaito",
    )


@dataclass(frozen=True)
class KaitoProblem:
    """Something Kaito cannot do: ``field`` (dotted), ``reason``, and whether the field is a
    provider setting (refused with :class:`ConfigError`) or a spec field (:class:`NotSupportedError`)."""

    field: str
    reason: str
    setting: bool = False


@dataclass(frozen=True)
class KaitoData:
    """Where a tuning workspace reads its data and writes the adapter (``tuning.input`` / ``output``).

    Exactly one input: ``input_urls`` (public http(s) files the ``data-downloader`` init container
    fetches into ``/mnt/data``), ``input_volume`` (a core/v1 VolumeSource mapping mounted at
    ``/mnt/data``, e.g. ``{"persistentVolumeClaim": {"claimName": "train"}}``) or ``input_image``
    (an image whose ``/data`` folder holds the file). ``dataset_file`` is the training file's path
    inside that folder (for URLs: the URL's file name); Kaito otherwise trains on the first file
    with a dataset extension it finds there. Exactly one output: ``output_volume`` (mounted at the
    adapter's folder) or ``output_image`` pushed with the Secret ``output_image_push_secret``.
    Secrets are named, never carried.
    """

    input_urls: tuple[str, ...] = ()
    input_volume: Mapping[str, Any] | None = None
    input_image: str | None = None
    input_image_pull_secrets: tuple[str, ...] = ()
    dataset_file: str | None = None
    output_volume: Mapping[str, Any] | None = None
    output_image: str | None = None
    output_image_push_secret: str | None = None


def resolve_preset(name: str) -> KaitoPreset | None:
    """The tuning preset ``name`` means: a preset name or its Hugging Face id, in any case."""
    wanted = name.strip().lower()
    for preset in KAITO_TUNING_PRESETS.values():
        if wanted in (preset.name, preset.hf_id.lower()):
            return preset
    return None


def kaito_method(spec: JobSpec) -> str:
    """``tuning.method``: ``qlora`` for a quantized base (4-bit, or 8-bit which Kaito's
    webhook also accepts under qlora), ``lora`` otherwise."""
    return "lora" if spec.quantization is Quantization.NONE else "qlora"


def _preset_problem(name: str, field: str, setting: bool) -> KaitoProblem:
    lowered = name.strip().lower()
    known = sorted(KAITO_TUNING_PRESETS)
    if lowered in KAITO_INFERENCE_ONLY_PRESETS:
        reason = f"Kaito serves {name!r} but cannot fine-tune it"
    else:
        candidates = known + [p.hf_id.lower() for p in KAITO_TUNING_PRESETS.values()]
        close = difflib.get_close_matches(lowered, candidates, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        reason = f"{name!r} is not a preset Kaito can fine-tune.{hint}"
    return KaitoProblem(field, f"{reason} Kaito fine-tunes: {', '.join(known)}", setting)


def _url_file(url: str) -> str:
    return posixpath.basename(urlsplit(url).path)


def _input_problems(data: KaitoData, prefix: str) -> list[KaitoProblem]:
    out: list[KaitoProblem] = []
    given = [
        what
        for what, present in (
            ("input_urls", bool(data.input_urls)),
            ("input_volume", data.input_volume is not None),
            ("input_image", bool(data.input_image)),
        )
        if present
    ]
    if len(given) != 1:
        out.append(
            KaitoProblem(
                f"{prefix}input_urls",
                "a Kaito tuning workspace reads exactly one input: input_urls, input_volume or input_image"
                + (f" (given: {', '.join(given)})" if given else ""),
                True,
            )
        )
    # dataset.py loads a single file: more URLs would be downloaded and then ignored.
    if len(data.input_urls) > 1:
        out.append(KaitoProblem(f"{prefix}input_urls", "Kaito trains on one dataset file: give one URL", True))
    for url in data.input_urls:
        # The webhook's validateDataSourceURL: http or https with a host.
        if not _HTTP_URL.match(url):
            out.append(KaitoProblem(f"{prefix}input_urls", f"{url!r} is not an http(s) URL of a file", True))
    name = data.dataset_file or (_url_file(data.input_urls[0]) if len(data.input_urls) == 1 else None)
    if name is not None and not any(ext in posixpath.basename(name).lower() for ext in _DATASET_EXTENSIONS):
        out.append(
            KaitoProblem(
                f"{prefix}dataset_file",
                f"Kaito reads a dataset file by its name, which must contain one of "
                f"{', '.join(_DATASET_EXTENSIONS)} (e.g. train.jsonl), not {posixpath.basename(name)!r}",
                True,
            )
        )
    if data.dataset_file is not None and (data.dataset_file.startswith("/") or ".." in data.dataset_file.split("/")):
        out.append(
            KaitoProblem(f"{prefix}dataset_file", "dataset_file is a relative path inside the input folder", True)
        )
    return out


def _output_problems(data: KaitoData, prefix: str) -> list[KaitoProblem]:
    out: list[KaitoProblem] = []
    if (data.output_volume is not None) == bool(data.output_image):
        out.append(
            KaitoProblem(
                f"{prefix}output_volume",
                "a Kaito tuning workspace writes to exactly one output: output_volume or output_image",
                True,
            )
        )
    if data.output_image and not data.output_image_push_secret:
        # DataDestination.validateCreate: pushing needs registry credentials.
        out.append(
            KaitoProblem(
                f"{prefix}output_image_push_secret",
                "an output image needs the name of a Secret with the registry's push credentials",
                True,
            )
        )
    return out


def _sku_problem(instance_type: str | None, prefix: str) -> KaitoProblem | None:
    field = f"{prefix}instance_type"
    if not instance_type:
        return KaitoProblem(
            field, "Kaito tuning needs the GPU node size (resource.instanceType) to start its training processes", True
        )
    if instance_type.lower() in KAITO_SKUS:
        return None
    names = [s.name for s in KAITO_SKUS.values()]
    close = difflib.get_close_matches(instance_type, names, n=2, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return KaitoProblem(field, f"Kaito does not know the node size {instance_type!r}.{hint}", True)


def _spec_problems(spec: JobSpec, section: str, gpus: int | None) -> list[KaitoProblem]:
    out = [KaitoProblem(f, r) for f, r in problems(spec, kaito_capabilities(section))]
    if spec.validation_file is not None:
        out.append(
            KaitoProblem(
                "validation_file",
                "Kaito trains on one dataset file and holds out a share of it: set hyperparameters.validation_split",
            )
        )
    batch = spec.hyperparameters.batch_size
    if batch is not None and gpus and batch % gpus:
        out.append(
            KaitoProblem(
                "hyperparameters.batch_size",
                f"Kaito runs one training process per GPU ({gpus} on this node size), each taking "
                f"batch_size/{gpus} examples: give a multiple of {gpus}, not {batch}",
            )
        )
    return out


def check_kaito(
    spec: JobSpec,
    *,
    preset: str | None = None,
    instance_type: str | None,
    data: KaitoData,
    section: str = "kubernetes",
) -> list[KaitoProblem]:
    """Everything a Kaito tuning workspace cannot do for ``spec``, in order (pure, no network).

    Args:
        spec: the job.
        preset: the preset setting; ``None`` takes ``spec.base_model`` (a preset name or the
            Hugging Face id Kaito downloads for it).
        instance_type: the GPU node size (``resource.instanceType``).
        data: where the data comes from and the adapter goes.
        section: the provider's settings section, the prefix of setting fields in problems.

    Returns:
        The problems; empty when Kaito can run the job.
    """
    prefix = f"{section}." if section else ""
    found: list[KaitoProblem] = []
    name = preset if preset is not None else spec.base_model
    if resolve_preset(name) is None:
        found.append(
            _preset_problem(name, f"{prefix}preset" if preset is not None else "base_model", preset is not None)
        )
    sku_problem = _sku_problem(instance_type, prefix)
    if sku_problem is not None:
        found.append(sku_problem)
    sku = KAITO_SKUS.get((instance_type or "").lower())
    found.extend(_spec_problems(spec, section, sku.gpus if sku else None))
    found.extend(_input_problems(data, prefix))
    found.extend(_output_problems(data, prefix))
    return found


def require_kaito(
    spec: JobSpec,
    *,
    preset: str | None = None,
    instance_type: str | None,
    data: KaitoData,
    section: str = "kubernetes",
    provider: str = "kubernetes",
) -> KaitoPreset:
    """The preset, or an error for the first problem :func:`check_kaito` finds (listing the rest).

    Raises:
        ConfigError: a setting is wrong (preset, node size, data locations); names the field.
        NotSupportedError: the spec asks for what Kaito cannot do; names the spec field.
    """
    found = check_kaito(spec, preset=preset, instance_type=instance_type, data=data, section=section)
    if found:
        first = found[0]
        reason = first.reason
        if len(found) > 1:
            reason += "; also " + "; ".join(f"{p.field}: {p.reason}" for p in found[1:])
        if first.setting:
            raise ConfigError(reason, field=first.field)
        raise NotSupportedError(reason, field=first.field, provider=provider)
    chosen = resolve_preset(preset if preset is not None else spec.base_model)
    assert chosen is not None  # check_kaito refused an unknown preset
    return chosen


def _dataset_path(data: KaitoData) -> str | None:
    # DatasetConfig.dataset_path is joined to /mnt (dataset.py ``load_data``); the input lands in
    # /mnt/data whatever its kind (pkg/utils/common_preset.go ``DefaultDataVolumePath``).
    name = data.dataset_file or (_url_file(data.input_urls[0]) if data.input_urls else None)
    return posixpath.join("data", name) if name else None


# Spec hyperparameter -> its TrainingArguments / SFTConfig field where the value carries over as is.
# warmup_ratio becomes warmup_steps: transformers 5 (Kaito's image pins 5.14.1) deprecates
# warmup_ratio and reads a warmup_steps below 1 as that share of the steps. max_length is TRL's
# SFTConfig field (trl>=1 in Kaito's image); the optimizers are transformers' names.
_TRAINING_ARGUMENT: Mapping[str, str] = {
    "epochs": "num_train_epochs",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate",
    "warmup_steps": "warmup_steps",
    "warmup_ratio": "warmup_steps",
    "max_steps": "max_steps",
    "max_length": "max_length",
    "seed": "seed",
    "weight_decay": "weight_decay",
    "lr_scheduler": "lr_scheduler_type",
    "optimizer": "optim",
}


def _training_arguments(spec: JobSpec, gpus: int) -> dict[str, Any]:
    hp = spec.hyperparameters
    args: dict[str, Any] = {
        # Kaito's defaults (lora-params.yaml): the adapter lands in /mnt/results (the output
        # volume's mount, or what the pusher packs); no intermediate checkpoints.
        "output_dir": RESULTS_DIR,
        "ddp_find_unused_parameters": False,
        "save_strategy": "no",
        # Transformers logs every 500 steps by default: too rare for the events stream.
        "logging_steps": 10,
        # Kaito's default too: transformers' own (8 per GPU) runs these models out of memory.
        "per_device_train_batch_size": 1,
    }
    for name, value in hp.model_dump(exclude_none=True).items():
        if name in _TRAINING_ARGUMENT:
            args[_TRAINING_ARGUMENT[name]] = value
    if hp.batch_size is not None:
        # The spec's batch is the whole micro-batch; Kaito runs one process per GPU of the node.
        args["per_device_train_batch_size"] = max(1, hp.batch_size // gpus)
    if hp.validation_split is not None:
        args["eval_strategy"] = "epoch"  # the held-out share is only scored when asked
    return args


def _quantization(spec: JobSpec) -> dict[str, Any]:
    if spec.quantization is Quantization.INT4:
        # qlora-params.yaml's settings: NF4 with double quantization, bf16 compute.
        return {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": "bfloat16",
            "bnb_4bit_use_double_quant": True,
        }
    if spec.quantization is Quantization.INT8:
        return {"load_in_8bit": True}
    return {"load_in_4bit": False}


def training_config(
    spec: JobSpec, *, preset: KaitoPreset, gpus: int = 1, dataset_path: str | None = None
) -> dict[str, Any]:
    """The ``training_config`` document: the spec's settings in Kaito's six sections (pure).

    A hyperparameter the spec leaves unset is left out, so Kaito's trainer uses its default.
    Every key is a field of the dataclass Kaito's parser.py gives the section (checked in
    tests/providers/test_kubernetes_crs.py against those dataclasses' fields).
    """
    # anytune's LoRA defaults rather than Kaito's (r=8, alpha=8, dropout 0): the same spec trains
    # the same adapter shape here as on every other provider.
    lora = spec.lora or LoraConfig()
    modules = preset.linear_modules if lora.target_modules == "all-linear" else lora.target_modules
    lora_section: dict[str, Any] = {
        "r": lora.r,
        "lora_alpha": lora.effective_alpha,
        "lora_dropout": lora.dropout,
        "target_modules": list(modules),
    }
    if lora.use_rslora:
        lora_section["use_rslora"] = True
    if lora.use_dora:
        lora_section["use_dora"] = True
    dataset: dict[str, Any] = {"shuffle_dataset": True, "train_test_split": 1}
    if spec.hyperparameters.validation_split is not None:
        dataset["train_test_split"] = round(1 - spec.hyperparameters.validation_split, 6)
    if spec.hyperparameters.seed is not None:
        dataset["shuffle_seed"] = spec.hyperparameters.seed
    if dataset_path is not None:
        dataset["dataset_path"] = dataset_path
    return {
        "training_config": {
            "ModelConfig": {"torch_dtype": "bfloat16", "local_files_only": True, "device_map": "auto"},
            "QuantizationConfig": _quantization(spec),
            "LoraConfig": lora_section,
            "TrainingArguments": _training_arguments(spec, gpus),
            # A causal language model: Kaito's default mlm=true falls back to false anyway for
            # tokenizers without a mask token (fine_tuning.py); false says so up front.
            "DataCollator": {"mlm": False},
            "DatasetConfig": dataset,
        }
    }


def _metadata(
    name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def configmap_manifest(
    spec: JobSpec,
    name: str,
    *,
    namespace: str,
    labels: Mapping[str, str],
    instance_type: str | None,
    data: KaitoData,
    preset: str | None = None,
    section: str = "kubernetes",
) -> dict[str, Any]:
    """The tuning ConfigMap (``v1``) holding :func:`training_config` as YAML under ``training_config.yaml``.

    Create it before the Workspace: Kaito's webhook refuses a Workspace whose ConfigMap is missing.

    Raises:
        ConfigError, NotSupportedError: as :func:`require_kaito`.
    """
    chosen = require_kaito(spec, preset=preset, instance_type=instance_type, data=data, section=section)
    check_dns_label(name, field=f"{section}.config" if section else "config", kind="ConfigMap", rfc1035=False)
    sku = KAITO_SKUS[(instance_type or "").lower()]
    document = training_config(spec, preset=chosen, gpus=sku.gpus, dataset_path=_dataset_path(data))
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(name, namespace, labels, None),
        "data": {TRAINING_CONFIG_KEY: text},
    }


def _data_source(data: KaitoData) -> dict[str, Any]:
    if data.input_urls:
        return {"urls": list(data.input_urls)}
    if data.input_volume is not None:
        return {"volumeSource": dict(data.input_volume)}
    source: dict[str, Any] = {"image": data.input_image}
    if data.input_image_pull_secrets:
        source["imagePullSecrets"] = list(data.input_image_pull_secrets)
    return source


def _data_destination(data: KaitoData) -> dict[str, Any]:
    if data.output_volume is not None:
        return {"volumeSource": dict(data.output_volume)}
    return {"image": data.output_image, "imagePushSecret": data.output_image_push_secret}


def workspace_manifest(
    spec: JobSpec,
    *,
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    config: str,
    instance_type: str | None,
    data: KaitoData,
    preset: str | None = None,
    node_labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    model_access_secret: str | None = None,
    section: str = "kubernetes",
) -> dict[str, Any]:
    """The ``kaito.sh/v1beta1`` Workspace that fine-tunes ``spec`` (pure; nothing is sent).

    Args:
        spec: the job (method and preset come from it; see :func:`check_kaito`).
        name: the workspace name, chosen by the caller (deterministic: the idempotency key's).
            Kaito names the Job and its container after it, so it must be a DNS label.
        namespace: where it lives; the ConfigMap ``config`` must be in the same namespace.
        labels: the workspace's labels.
        config: the tuning ConfigMap's name (:func:`configmap_manifest`).
        instance_type: the GPU node size.
        data: input and output.
        preset: the preset setting; ``None`` takes ``spec.base_model``.
        node_labels: ``resource.labelSelector.matchLabels``: the labels of the nodes to use (Kaito
            gives the nodes it provisions these labels); default ``{"apps": name}``.
        annotations: the workspace's annotations.
        model_access_secret: a Secret with ``HF_TOKEN`` for gated models (none of the tuning
            presets is gated today).
        section: the provider's settings section, for the names of fields in errors.

    Raises:
        ConfigError, NotSupportedError: as :func:`require_kaito`, or a name that is not a DNS label.
    """
    chosen = require_kaito(spec, preset=preset, instance_type=instance_type, data=data, section=section)
    prefix = f"{section}." if section else ""
    check_dns_label(name, field=f"{prefix}name", kind="Workspace", rfc1035=False)
    check_dns_label(config, field=f"{prefix}config", kind="ConfigMap", rfc1035=False)
    sku = KAITO_SKUS[(instance_type or "").lower()]
    preset_section: dict[str, Any] = {"name": chosen.name}
    if model_access_secret:
        preset_section["presetOptions"] = {"modelAccessSecret": model_access_secret}
    return {
        "apiVersion": KAITO_API_VERSION,
        "kind": "Workspace",
        "metadata": _metadata(name, namespace, labels, annotations),
        "resource": {
            "instanceType": sku.name,
            "labelSelector": {"matchLabels": dict(node_labels) if node_labels else {"apps": name}},
        },
        "tuning": {
            "preset": preset_section,
            "method": kaito_method(spec),
            "config": config,
            "input": _data_source(data),
            "output": _data_destination(data),
        },
    }


def _message(cond: Mapping[str, Any] | None) -> str | None:
    if cond is None:
        return None
    text = str(cond.get("message") or "").strip()
    reason = str(cond.get("reason") or "").strip()
    return text or reason or None


# Conditions that, while not True, say why a workspace has not started (node provisioning first).
_WAITING_ON = ("ResourceReady", "NodeClaimReady", "NodesReady", "JobStarted")


def workspace_status(obj: Mapping[str, Any]) -> tuple[JobStatus, str | None]:
    """The uniform status of a tuning Workspace, and the controller's words for it (pure).

    Kaito's controller (``applyTuningWorkspaceStatus``) keeps ``JobStarted`` and
    ``WorkspaceSucceeded`` and ``status.state`` (Pending, Running, Succeeded, Failed) in step with
    the Job it runs: failed when any pod of it failed (reason ``WorkspaceTuningJobStatusFailed`` /
    ``workspaceFailed``), succeeded when it completed. A workspace being deleted is cancelled
    unless it had succeeded: cancelling deletes it. Anything unrecognised is queued (never terminal).
    """
    succeeded = condition_true(obj, "WorkspaceSucceeded")
    if succeeded is not None:
        return JobStatus.SUCCEEDED, _message(succeeded)
    if is_deleting(obj) or condition_true(obj, "WorkspaceDeleting") is not None:
        return JobStatus.CANCELLED, _message(condition(obj, "WorkspaceDeleting")) or "the workspace is being deleted"
    status = obj.get("status") or {}
    state = str(status.get("state") or "") if isinstance(status, Mapping) else ""
    started = condition(obj, "JobStarted")
    overall = condition(obj, "WorkspaceSucceeded")
    failed = state == "Failed" or any(
        c is not None and c.get("reason") in ("WorkspaceTuningJobStatusFailed", "workspaceFailed")
        for c in (started, overall)
    )
    if failed:
        return JobStatus.FAILED, _message(started) or _message(overall) or "the tuning job failed"
    if state == "Running" or condition_true(obj, "JobStarted") is not None:
        return JobStatus.RUNNING, _message(started)
    for kind in _WAITING_ON:
        cond = condition(obj, kind)
        if cond is not None and str(cond.get("status", "")).lower() != "true":
            return JobStatus.QUEUED, _message(cond)
    return JobStatus.QUEUED, None
