"""The Kaito and Kubeflow custom resources the kubernetes provider builds, held to their published schemas.

Every manifest the pure builders in ``anytune.providers.kubernetes.kaito`` / ``.kubeflow`` make is
validated against the CRD's ``openAPIV3Schema`` (tests/providers/k8s_crds, sources in its README),
made strict: the API server prunes unknown fields without a word, so a misspelt field would vanish
on a real cluster; here it fails. The rules the operators' admission webhooks add on top of the
schema (Kaito's tuning_config_validation.go and workspace_validation.go, the Kubeflow webhooks) are
restated where a manifest could break them. The tuning ConfigMap's keys are checked against the
fields of the dataclasses Kaito's parser.py hands each section to.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from anytune._spec import JobSpec
from anytune._types import JobStatus
from anytune.errors import ConfigError, NotSupportedError
from anytune.providers.kubernetes import kaito, kubeflow
from anytune.providers.kubernetes.kaito import KaitoData

CRDS = Path(__file__).parent / "k8s_crds"

# ObjectMeta as a client sends it: the CRDs leave top-level metadata as a bare object.
_OBJECT_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _strict(node: Any) -> Any:
    """The schema with every object that lists its properties closed to others.

    ``x-kubernetes-preserve-unknown-fields`` keeps a node open, as the API server does.
    """
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CRDS / name).read_text())
    return doc


def _validator(name: str) -> jsonschema.Draft7Validator:
    schema = copy.deepcopy(_load(name)["openAPIV3Schema"])
    schema["properties"]["metadata"] = _OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return jsonschema.Draft7Validator(_strict(schema))


WORKSPACE = _validator("kaito_workspace.json")
TRAINJOB = _validator("trainjob.json")
PYTORCHJOB = _validator("pytorchjob.json")

# Kaito leaves volumeSource schemaless (preserve-unknown-fields); it is a core/v1 VolumeSource,
# which is a Volume without its name: the PyTorchJob CRD carries core/v1's Volume schema.
_VOLUME = _load("pytorchjob.json")["openAPIV3Schema"]["properties"]["spec"]["properties"]["pytorchReplicaSpecs"][
    "additionalProperties"
]["properties"]["template"]["properties"]["spec"]["properties"]["volumes"]["items"]
VOLUME_SOURCE = jsonschema.Draft7Validator(
    _strict({**_VOLUME, "required": [r for r in _VOLUME.get("required", []) if r != "name"]})
)


def _errors(validator: jsonschema.Draft7Validator, doc: Mapping[str, Any]) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc))


def _spec(**fields: Any) -> JobSpec:
    return JobSpec(**{"base_model": "phi-3-mini-4k-instruct", "training_file": "train.jsonl", **fields})


URLS = KaitoData(input_urls=("https://example.com/data/train.jsonl",), output_volume={"emptyDir": {}})
PVC = KaitoData(
    input_volume={"persistentVolumeClaim": {"claimName": "train-data"}},
    dataset_file="sets/train.jsonl",
    output_volume={"persistentVolumeClaim": {"claimName": "adapters"}},
)
IMAGE = KaitoData(
    input_image="registry.example.com/data/chat:1",
    input_image_pull_secrets=("pull-secret",),
    output_image="registry.example.com/adapters/phi3:1",
    output_image_push_secret="push-secret",
)
A100 = "Standard_NC24ads_A100_v4"  # 1 GPU
A100x2 = "Standard_NC48ads_A100_v4"  # 2 GPUs


# -- the strict walker itself --------------------------------------------------------------------


def test_strict_schema_refuses_an_unknown_field_the_published_one_lets_through() -> None:
    good = kaito.workspace_manifest(
        _spec(), name="ws", namespace="ns", labels={}, config="cfg", instance_type=A100, data=URLS
    )
    bad = copy.deepcopy(good)
    bad["tuning"]["presetName"] = "phi-3-mini-4k-instruct"  # a misspelling the API server would prune
    loose = jsonschema.Draft7Validator(_load("kaito_workspace.json")["openAPIV3Schema"])
    assert not list(loose.iter_errors(bad))
    assert _errors(WORKSPACE, good) == []
    assert any("presetName" in e for e in _errors(WORKSPACE, bad))


# -- Kaito: presets and checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct"),
        ("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct"),
        ("MICROSOFT/PHI-4", "phi-4"),
        ("mistralai/Mistral-7B-v0.3", "mistral-7b"),
        ("Qwen/Qwen2.5-Coder-32B-Instruct", "qwen2.5-coder-32b-instruct"),
        ("phi-3.5-mini-instruct", "phi-3.5-mini-instruct"),
        ("falcon-7b", None),  # its tuning parameters left Kaito with the model catalog (v0.12)
        ("mistral-7b-instruct", None),
        ("someone/phi-4", None),
    ],
)
def test_resolve_preset(given: str, expected: str | None) -> None:
    found = kaito.resolve_preset(given)
    assert (found.name if found else None) == expected


def test_preset_table_holds_the_ten_models_kaito_v0_12_tunes() -> None:
    assert sorted(kaito.KAITO_TUNING_PRESETS) == [
        "mistral-7b",
        "phi-3-medium-128k-instruct",
        "phi-3-medium-4k-instruct",
        "phi-3-mini-128k-instruct",
        "phi-3-mini-4k-instruct",
        "phi-3.5-mini-instruct",
        "phi-4",
        "phi-4-mini-instruct",
        "qwen2.5-coder-32b-instruct",
        "qwen2.5-coder-7b-instruct",
    ]
    assert not kaito.KAITO_INFERENCE_ONLY_PRESETS & set(kaito.KAITO_TUNING_PRESETS)


def _require(spec: JobSpec, *, data: KaitoData = URLS, instance_type: str | None = A100, **kw: Any) -> None:
    kaito.require_kaito(spec, instance_type=instance_type, data=data, **kw)


@pytest.mark.parametrize(
    ("spec", "kw", "error", "field", "words"),
    [
        (
            _spec(base_model="phi-3-mini-4k-instrct"),
            {},
            NotSupportedError,
            "base_model",
            "Did you mean 'phi-3-mini-4k-instruct'",
        ),
        (
            _spec(),
            {"preset": "phi3-mini-128k"},
            ConfigError,
            "kubernetes.preset",
            "Did you mean 'phi-3-mini-128k-instruct'",
        ),
        (
            _spec(base_model="llama-3.1-8b-instruct"),
            {},
            NotSupportedError,
            "base_model",
            "serves 'llama-3.1-8b-instruct' but cannot fine-tune",
        ),
        (_spec(base_model="gpt2"), {}, NotSupportedError, "base_model", "Kaito fine-tunes: mistral-7b, phi-3-medium"),
        (_spec(method="dpo"), {}, NotSupportedError, "method", "SFT only"),
        (
            _spec(hyperparameters={"learning_rate_multiplier": 2}),
            {},
            NotSupportedError,
            "hyperparameters.learning_rate_multiplier",
            "set hyperparameters.learning_rate",
        ),
        (_spec(validation_file="valid.jsonl"), {}, NotSupportedError, "validation_file", "validation_split"),
        (_spec(report_to=["wandb"]), {}, NotSupportedError, "report_to", "logs to its pod only"),
        (_spec(suffix="v1"), {}, NotSupportedError, "suffix", "output volume or image"),
        (_spec(hf={}), {}, NotSupportedError, "hf", "options section is not read"),
        (
            _spec(hyperparameters={"batch_size": 3}),
            {"instance_type": A100x2},
            NotSupportedError,
            "hyperparameters.batch_size",
            "multiple of 2",
        ),
        (
            _spec(),
            {"instance_type": "Standard_NC24ads_A100"},
            ConfigError,
            "kubernetes.instance_type",
            "Did you mean 'Standard_NC24ads_A100_v4'",
        ),
        (_spec(), {"instance_type": None}, ConfigError, "kubernetes.instance_type", "GPU node size"),
        (_spec(), {"section": "k8s", "instance_type": "nope"}, ConfigError, "k8s.instance_type", "does not know"),
    ],
)
def test_kaito_refusals_name_the_field(
    spec: JobSpec, kw: dict[str, Any], error: type[Exception], field: str, words: str
) -> None:
    with pytest.raises(error) as caught:
        _require(spec, **kw)
    assert getattr(caught.value, "field", None) == field
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (KaitoData(output_volume={"emptyDir": {}}), "kubernetes.input_urls", "exactly one input"),
        (
            KaitoData(input_urls=("https://e.com/a.jsonl",), input_image="r/i:1", output_volume={"emptyDir": {}}),
            "kubernetes.input_urls",
            "given: input_urls, input_image",
        ),
        (
            KaitoData(input_urls=("https://e.com/a.jsonl", "https://e.com/b.jsonl"), output_volume={"emptyDir": {}}),
            "kubernetes.input_urls",
            "give one URL",
        ),
        (
            KaitoData(input_urls=("file:///tmp/a.jsonl",), output_volume={"emptyDir": {}}),
            "kubernetes.input_urls",
            "http(s)",
        ),
        (
            KaitoData(input_urls=("https://e.com/a.txt",), output_volume={"emptyDir": {}}),
            "kubernetes.dataset_file",
            "'a.txt'",
        ),
        (
            KaitoData(input_image="r/i:1", dataset_file="../etc/a.json", output_volume={"emptyDir": {}}),
            "kubernetes.dataset_file",
            "relative path",
        ),
        (KaitoData(input_urls=("https://e.com/a.csv",)), "kubernetes.output_volume", "exactly one output"),
        (
            KaitoData(input_urls=("https://e.com/a.csv",), output_image="r/o:1"),
            "kubernetes.output_image_push_secret",
            "push",
        ),
    ],
)
def test_kaito_refuses_data_locations_it_cannot_use(data: KaitoData, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _require(_spec(), data=data)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_every_problem_is_listed_not_only_the_first() -> None:
    found = kaito.check_kaito(
        _spec(base_model="gpt2", method="sft", suffix="x"), instance_type="nope", data=KaitoData()
    )
    fields = [p.field for p in found]
    assert fields[:2] == ["base_model", "kubernetes.instance_type"]
    assert {"suffix", "kubernetes.input_urls", "kubernetes.output_volume"} <= set(fields)
    with pytest.raises(NotSupportedError, match=r"also kubernetes\.instance_type"):
        _require(_spec(base_model="gpt2"), instance_type="nope")


def test_a_spec_kaito_can_run_has_no_problems_and_capabilities_say_so() -> None:
    assert kaito.check_kaito(_spec(quantization="4bit"), instance_type="standard_nc24ads_a100_v4", data=PVC) == []
    caps = kaito.kaito_capabilities("kubernetes")
    assert caps.summary()["methods"] == ["sft"]
    assert caps.summary()["quantization"] == ["4bit", "8bit", "none"]
    assert "learning_rate_multiplier" not in caps.hyperparameters


# -- Kaito: the ConfigMap ----------------------------------------------------------------------------

FIELDS: dict[str, set[str]] = {k: set(v) for k, v in _load("kaito_training_config_fields.json")["sections"].items()}


def _flatten(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Kaito's parser.py ``flatten_config_to_cli_args``, restated: what HfArgumentParser receives."""
    out: list[str] = []
    for key, value in config.items():
        if isinstance(value, dict):
            out.extend(_flatten(value, prefix=f"{prefix}{key}_"))
        elif isinstance(value, list):
            out.append(f"--{prefix}{key}")
            out.extend(map(str, value))
        else:
            out.extend([f"--{prefix}{key}", str(value)])
    return out


def _kaito_accepts(configmap: Mapping[str, Any], method: str) -> dict[str, Any]:
    """What Kaito does with the ConfigMap: the webhook's checks, then the parser's (restated)."""
    text = configmap["data"][kaito.TRAINING_CONFIG_KEY]
    document = yaml.safe_load(text)
    sections = document["training_config"]
    # tuning_config_validation.go validateTuningConfigMapSchema: only the six known sections.
    assert set(sections) <= set(FIELDS), set(sections) - set(FIELDS)
    # validateMethodViaConfigMap: booleans; lora has neither; qlora one of 4-bit and 8-bit.
    quant = sections.get("QuantizationConfig", {})
    four, eight = quant.get("load_in_4bit"), quant.get("load_in_8bit")
    assert all(v is None or isinstance(v, bool) for v in (four, eight))
    assert not (four and eight)
    assert bool(four or eight) == (method == "qlora")
    # validateTrainingArgsViaConfigMap: output_dir a string under /mnt.
    out_dir = sections["TrainingArguments"].get("output_dir", "/mnt/results")
    assert isinstance(out_dir, str) and out_dir.startswith("/mnt/") and ".." not in out_dir
    # parser.py parse_section: each key becomes --key for the section's dataclass; an unknown
    # one makes HfArgumentParser exit, a nested mapping would become an unknown --a_b.
    for name, section in sections.items():
        keys = [a[2:] for a in _flatten(section) if a.startswith("--")]
        assert set(keys) <= FIELDS[name], (name, set(keys) - FIELDS[name])
    assert isinstance(sections, dict)
    return dict(sections)


def _configmap(spec: JobSpec, data: KaitoData = URLS, instance_type: str = A100) -> dict[str, Any]:
    return kaito.configmap_manifest(
        spec, "tune-cfg", namespace="ns", labels={"app": "anytune"}, instance_type=instance_type, data=data
    )


@pytest.mark.parametrize(
    ("spec", "method", "expected"),
    [
        (
            _spec(),
            "lora",
            {
                "QuantizationConfig": {"load_in_4bit": False},
                "LoraConfig": {
                    "r": 16,
                    "lora_alpha": 32,
                    "lora_dropout": 0.05,
                    "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
                },
            },
        ),
        (
            _spec(quantization="4bit", lora={"r": 8, "target_modules": ["q_proj", "v_proj"], "use_rslora": True}),
            "qlora",
            {
                "QuantizationConfig": {
                    "load_in_4bit": True,
                    "bnb_4bit_quant_type": "nf4",
                    "bnb_4bit_compute_dtype": "bfloat16",
                    "bnb_4bit_use_double_quant": True,
                },
                "LoraConfig": {
                    "r": 8,
                    "lora_alpha": 16,
                    "lora_dropout": 0.05,
                    "target_modules": ["q_proj", "v_proj"],
                    "use_rslora": True,
                },
            },
        ),
        (
            _spec(
                base_model="Qwen/Qwen2.5-Coder-7B-Instruct", quantization="8bit", lora={"alpha": 64, "use_dora": True}
            ),
            "qlora",
            {
                "QuantizationConfig": {"load_in_8bit": True},
                "LoraConfig": {
                    "r": 16,
                    "lora_alpha": 64,
                    "lora_dropout": 0.05,
                    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                    "use_dora": True,
                },
            },
        ),
    ],
)
def test_configmap_methods_and_lora(spec: JobSpec, method: str, expected: dict[str, Any]) -> None:
    cm = _configmap(spec)
    assert cm["apiVersion"] == "v1" and cm["kind"] == "ConfigMap"
    assert cm["metadata"] == {"name": "tune-cfg", "namespace": "ns", "labels": {"app": "anytune"}}
    sections = _kaito_accepts(cm, method)
    for name, section in expected.items():
        assert sections[name] == section
    assert kaito.kaito_method(spec) == method


def test_configmap_hyperparameters_land_where_kaitos_trainer_reads_them() -> None:
    spec = _spec(
        hyperparameters={
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 2e-5,
            "warmup_ratio": 0.03,
            "max_steps": 500,
            "max_length": 2048,
            "seed": 7,
            "gradient_accumulation_steps": 4,
            "weight_decay": 0.01,
            "lr_scheduler": "cosine",
            "optimizer": "paged_adamw_8bit",
            "validation_split": 0.1,
        }
    )
    sections = _kaito_accepts(_configmap(spec, instance_type=A100x2), "lora")
    assert sections["TrainingArguments"] == {
        "output_dir": "/mnt/results",
        "ddp_find_unused_parameters": False,
        "save_strategy": "no",
        "logging_steps": 10,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 4,  # 8 over the node's 2 GPUs (one process each)
        "gradient_accumulation_steps": 4,
        "learning_rate": 2e-5,
        "warmup_steps": 0.03,
        "max_steps": 500,
        "max_length": 2048,
        "seed": 7,
        "weight_decay": 0.01,
        "lr_scheduler_type": "cosine",
        "optim": "paged_adamw_8bit",
        "eval_strategy": "epoch",
    }
    assert sections["DatasetConfig"] == {
        "shuffle_dataset": True,
        "train_test_split": 0.9,
        "shuffle_seed": 7,
        "dataset_path": "data/train.jsonl",
    }
    assert sections["ModelConfig"] == {"torch_dtype": "bfloat16", "local_files_only": True, "device_map": "auto"}
    assert sections["DataCollator"] == {"mlm": False}


def test_configmap_yaml_reads_back_with_its_types() -> None:
    spec = _spec(hyperparameters={"learning_rate": 1e-5, "warmup_steps": 20})
    text = _configmap(spec, data=PVC)["data"]["training_config.yaml"]
    # PyYAML and Go's yaml.v2 (YAML 1.1) read 1e-05 as a string; the dump writes 1.0e-05.
    assert "1.0e-05" in text
    loaded = yaml.safe_load(text)["training_config"]
    assert loaded["TrainingArguments"]["learning_rate"] == 1e-5
    assert loaded["TrainingArguments"]["warmup_steps"] == 20
    assert loaded["DatasetConfig"]["dataset_path"] == "data/sets/train.jsonl"
    assert list(loaded) == [
        "ModelConfig",
        "QuantizationConfig",
        "LoraConfig",
        "TrainingArguments",
        "DataCollator",
        "DatasetConfig",
    ]


def test_image_input_without_a_file_name_lets_kaito_find_the_file() -> None:
    sections = _kaito_accepts(_configmap(_spec(), data=IMAGE), "lora")
    assert "dataset_path" not in sections["DatasetConfig"]
    # No batch_size: Kaito's default of one example per GPU, not transformers' eight.
    assert sections["TrainingArguments"]["per_device_train_batch_size"] == 1


def test_configmap_refuses_what_the_workspace_would_refuse() -> None:
    with pytest.raises(NotSupportedError):
        _configmap(_spec(method="dpo"))
    with pytest.raises(ConfigError, match="ConfigMap name 'Tune_Cfg'"):
        kaito.configmap_manifest(_spec(), "Tune_Cfg", namespace="ns", labels={}, instance_type=A100, data=URLS)


# -- Kaito: the Workspace ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [URLS, PVC, IMAGE], ids=["urls", "volumes", "images"])
@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_workspace_manifest_matches_the_crd(data: KaitoData, quantization: str) -> None:
    ws = kaito.workspace_manifest(
        _spec(base_model="microsoft/Phi-3-mini-4k-instruct", quantization=quantization),
        name="anytune-3f9a2c",
        namespace="team-a",
        labels={"anytune.dev/job": "3f9a2c"},
        config="anytune-3f9a2c",
        instance_type="standard_nc24ads_a100_v4",
        data=data,
        annotations={"note": "x"},
    )
    assert _errors(WORKSPACE, ws) == []
    for side in ("input", "output"):
        source = ws["tuning"][side].get("volumeSource")
        if source is not None:
            assert _errors(VOLUME_SOURCE, source) == []
    assert ws["apiVersion"] == "kaito.sh/v1beta1" and ws["kind"] == "Workspace"
    assert ws["resource"] == {"instanceType": A100, "labelSelector": {"matchLabels": {"apps": "anytune-3f9a2c"}}}
    assert ws["tuning"]["preset"] == {"name": "phi-3-mini-4k-instruct"}
    assert ws["tuning"]["method"] == ("qlora" if quantization == "4bit" else "lora")
    assert ws["tuning"]["config"] == "anytune-3f9a2c"
    assert ws["metadata"] == {
        "name": "anytune-3f9a2c",
        "namespace": "team-a",
        "labels": {"anytune.dev/job": "3f9a2c"},
        "annotations": {"note": "x"},
    }


def test_workspace_data_sections_follow_the_real_types() -> None:
    def tuning(data: KaitoData) -> dict[str, Any]:
        ws = kaito.workspace_manifest(
            _spec(),
            name="w",
            namespace="n",
            labels={},
            config="c",
            instance_type=A100,
            data=data,
            node_labels={"pool": "gpu"},
            model_access_secret="hf-token",
        )
        assert ws["resource"]["labelSelector"] == {"matchLabels": {"pool": "gpu"}}
        assert ws["tuning"]["preset"] == {
            "name": "phi-3-mini-4k-instruct",
            "presetOptions": {"modelAccessSecret": "hf-token"},
        }
        assert _errors(WORKSPACE, ws) == []
        result: dict[str, Any] = ws["tuning"]
        return result

    assert tuning(URLS)["input"] == {"urls": ["https://example.com/data/train.jsonl"]}
    assert tuning(URLS)["output"] == {"volumeSource": {"emptyDir": {}}}
    assert tuning(PVC)["input"] == {"volumeSource": {"persistentVolumeClaim": {"claimName": "train-data"}}}
    assert tuning(IMAGE)["input"] == {"image": "registry.example.com/data/chat:1", "imagePullSecrets": ["pull-secret"]}
    assert tuning(IMAGE)["output"] == {
        "image": "registry.example.com/adapters/phi3:1",
        "imagePushSecret": "push-secret",
    }


@pytest.mark.parametrize("name", ["Upper", "a" * 64, "-lead", "trail-", "dot.ted"])
def test_workspace_name_must_be_a_dns_label(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        kaito.workspace_manifest(
            _spec(), name=name, namespace="n", labels={}, config="c", instance_type=A100, data=URLS
        )
    assert caught.value.field == "kubernetes.name"


# -- Kaito: the status --------------------------------------------------------------------------------


def _cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def _ws(*conds: dict[str, Any], state: str | None = None, deleting: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": list(conds)}
    if state:
        status["state"] = state
    meta: dict[str, Any] = {"name": "w"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize(
    ("obj", "expected", "message"),
    [
        ({"metadata": {"name": "w"}}, JobStatus.QUEUED, None),
        (
            _ws(_cond("ResourceReady", "False", "workspaceResourceStatusNotReady", "waiting for nodes")),
            JobStatus.QUEUED,
            "waiting for nodes",
        ),
        (
            _ws(
                _cond("ResourceReady", "True"),
                _cond("JobStarted", "False", "WorkspaceTuningJobStatusPending", "Tuning job has not started"),
                _cond("WorkspaceSucceeded", "False", "workspacePending", "workspace is initializing"),
                state="Pending",
            ),
            JobStatus.QUEUED,
            "Tuning job has not started",
        ),
        (
            _ws(
                _cond("ResourceReady", "True"),
                _cond("JobStarted", "True", "WorkspaceTuningJobStatusStarted", "Tuning job has started"),
                _cond("WorkspaceSucceeded", "False", "workspacePending", "tuning job is running"),
                state="Running",
            ),
            JobStatus.RUNNING,
            "Tuning job has started",
        ),
        (
            _ws(
                _cond("JobStarted", "True", "WorkspaceTuningJobStatusStarted", "Tuning job has started"),
                _cond("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds"),
                state="Succeeded",
            ),
            JobStatus.SUCCEEDED,
            "workspace succeeds",
        ),
        (
            _ws(
                _cond("JobStarted", "False", "WorkspaceTuningJobStatusFailed", "tuning job failed"),
                _cond("WorkspaceSucceeded", "False", "workspaceFailed", "tuning job failed"),
                state="Failed",
            ),
            JobStatus.FAILED,
            "tuning job failed",
        ),
        (_ws(state="Failed"), JobStatus.FAILED, "the tuning job failed"),
        (_ws(state="Running"), JobStatus.RUNNING, None),
        (
            _ws(_cond("WorkspaceDeleting", "True", "workspaceDeleted", "workspace is being deleted")),
            JobStatus.CANCELLED,
            "workspace is being deleted",
        ),
        (_ws(_cond("JobStarted", "True"), deleting=True), JobStatus.CANCELLED, "the workspace is being deleted"),
        (
            _ws(_cond("WorkspaceSucceeded", "True", "workspaceSucceeded"), deleting=True),
            JobStatus.SUCCEEDED,
            "workspaceSucceeded",
        ),
    ],
)
def test_workspace_status(obj: dict[str, Any], expected: JobStatus, message: str | None) -> None:
    assert kaito.workspace_status(obj) == (expected, message)


# -- Kubeflow Trainer v2: TrainJob ------------------------------------------------------------------

FULL = {
    "env": [
        {"name": "ANYTUNE_JOB", "value": "abc"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}},
    ],
    "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "64Gi"}, "requests": {"cpu": "8"}},
    "node_selector": {"agentpool": "gpu"},
    "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
    "service_account": "trainer",
    "volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "train-data"}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
    ],
    "volume_mounts": [{"name": "data", "mountPath": "/data"}, {"name": "shm", "mountPath": "/dev/shm"}],
    "image_pull_secrets": ["regcred"],
    "annotations": {"anytune.dev/key": "k"},
}
COMMAND = ["torchrun", "-m", "anytune.local_backend.run"]


@pytest.mark.parametrize("options", [{}, FULL], ids=["minimal", "full"])
@pytest.mark.parametrize("nodes", [1, 4])
def test_trainjob_manifest_matches_the_crd(options: dict[str, Any], nodes: int) -> None:
    tj = kubeflow.trainjob_manifest(
        name="anytune-3f9a2c",
        namespace="team-a",
        labels={"anytune.dev/job": "3f9a2c"},
        image="pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime",
        command=COMMAND,
        args=["--run-dir", "/data/run"],
        num_nodes=nodes,
        procs_per_node=2,
        active_deadline_seconds=86400,
        **options,
    )
    assert _errors(TRAINJOB, tj) == []
    assert tj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and tj["kind"] == "TrainJob"
    spec = tj["spec"]
    assert spec["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    assert spec["trainer"]["numNodes"] == nodes and spec["trainer"]["numProcPerNode"] == 2
    (patch,) = spec["runtimePatches"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    pod = job["template"]["spec"]["template"]
    assert pod["metadata"]["labels"] == {"anytune.dev/job": "3f9a2c"}
    # The webhook (jobset.go Validate): a domain-prefixed manager; containers the runtime has; no
    # env on the "node" container (it comes from trainer.env).
    assert "/" in patch["manager"] and "." in patch["manager"].split("/")[0]
    for container in pod.get("spec", {}).get("containers", []):
        assert container["name"] == "node" and "env" not in container
    if options:
        assert spec["trainer"]["env"] == FULL["env"]
        assert spec["trainer"]["resourcesPerNode"] == FULL["resources"]
        assert pod["spec"]["nodeSelector"] == {"agentpool": "gpu"}
        assert pod["spec"]["serviceAccountName"] == "trainer"
        assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["spec"]["containers"] == [{"name": "node", "volumeMounts": FULL["volume_mounts"]}]


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"priority_class": "high"}, "kubernetes.priority_class", "cannot set a priority class"),
        ({"name": "Bad_Name"}, "kubernetes.name", "TrainJob name 'Bad_Name'"),
        ({"name": "9starts-with-digit"}, "kubernetes.name", "start with a letter"),
        ({"num_nodes": 0}, "kubernetes.num_nodes", "at least 1"),
        ({"procs_per_node": 0}, "kubernetes.procs_per_node", "at least 1"),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "kubernetes.env", "given twice"),
        ({"env": [{"value": "1"}]}, "kubernetes.env", "needs a name"),
        ({"command": []}, "kubernetes.command", "needs a command"),
        ({"patch_manager": "anytune"}, "patch_manager", "domain-prefixed"),
    ],
)
def test_trainjob_refusals(kw: dict[str, Any], field: str, words: str) -> None:
    args: dict[str, Any] = {"name": "tj", "namespace": "n", "labels": {}, "image": "i", "command": COMMAND, **kw}
    with pytest.raises(ConfigError) as caught:
        kubeflow.trainjob_manifest(**args)
    assert caught.value.field == field
    assert words in str(caught.value)


def _tj(*conds: dict[str, Any], jobs: list[dict[str, int]] | None = None, deleting: bool = False) -> dict[str, Any]:
    obj = _ws(*conds, deleting=deleting)
    if jobs is not None:
        obj["status"]["jobsStatus"] = [{"name": "node", **j} for j in jobs]
    return obj


@pytest.mark.parametrize(
    ("obj", "expected", "message"),
    [
        ({"metadata": {"name": "t"}}, JobStatus.QUEUED, None),
        (_tj(jobs=[{"active": 0, "ready": 0}]), JobStatus.QUEUED, None),
        (_tj(jobs=[{"active": 2, "ready": 1}]), JobStatus.RUNNING, None),
        (
            _tj(_cond("Suspended", "True", "Suspended", "TrainJob is suspended")),
            JobStatus.PAUSED,
            "Suspended: TrainJob is suspended",
        ),
        (
            _tj(_cond("Suspended", "False", "Resumed", "TrainJob is resumed")),
            JobStatus.QUEUED,
            "Resumed: TrainJob is resumed",
        ),
        (
            _tj(_cond("Complete", "True", "AllJobsCompleted", "jobset completed successfully")),
            JobStatus.SUCCEEDED,
            "AllJobsCompleted: jobset completed successfully",
        ),
        (
            _tj(_cond("Failed", "True", "FailedJobs", "jobset failed"), jobs=[{"active": 1}]),
            JobStatus.FAILED,
            "FailedJobs: jobset failed",
        ),
        (_tj(_cond("Failed", "True", "DeadlineExceeded", "")), JobStatus.FAILED, "DeadlineExceeded"),
        (
            _tj(_cond("Failed", "True", "TrainingRuntimeNotSupported", "runtime torch-x is not supported")),
            JobStatus.FAILED,
            "TrainingRuntimeNotSupported: runtime torch-x is not supported",
        ),
        (_tj(jobs=[{"active": 1}], deleting=True), JobStatus.CANCELLED, "the TrainJob is being deleted"),
        (_tj(_cond("Complete", "True", "", "done"), deleting=True), JobStatus.SUCCEEDED, "done"),
    ],
)
def test_trainjob_status(obj: dict[str, Any], expected: JobStatus, message: str | None) -> None:
    assert kubeflow.trainjob_status(obj) == (expected, message)


# -- training-operator v1: PyTorchJob ----------------------------------------------------------------


def _webhook_accepts(job: Mapping[str, Any]) -> None:
    """pytorchjob_webhook.go ``validatePyTorchReplicaSpecs`` / ``validateSpec``, restated."""
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) <= {"Master", "Worker"}
    if "Master" in replicas:
        assert replicas["Master"]["replicas"] == 1
    if "elasticPolicy" in job["spec"]:
        assert "Worker" in replicas
    for rspec in replicas.values():
        containers = rspec["template"]["spec"]["containers"]
        assert any(c["name"] == "pytorch" for c in containers)
        assert all(c["image"] for c in containers)


@pytest.mark.parametrize("options", [{}, FULL], ids=["minimal", "full"])
@pytest.mark.parametrize(
    ("nodes", "extra", "replicas"),
    [
        (1, {}, {"Master": 1}),
        (3, {}, {"Master": 1, "Worker": 2}),
        (4, {"elastic_min_nodes": 2, "max_restarts": 3}, {"Worker": 4}),
    ],
)
def test_pytorchjob_manifest_matches_the_crd(
    options: dict[str, Any], nodes: int, extra: dict[str, Any], replicas: dict[str, int]
) -> None:
    job = kubeflow.pytorchjob_manifest(
        name="anytune-3f9a2c",
        namespace="team-a",
        labels={"anytune.dev/job": "3f9a2c"},
        image="pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime",
        command=COMMAND,
        num_nodes=nodes,
        procs_per_node=2,
        priority_class="high" if options else None,
        backoff_limit=2,
        **extra,
        **options,
    )
    assert _errors(PYTORCHJOB, job) == []
    _webhook_accepts(job)
    spec = job["spec"]
    assert {k: v["replicas"] for k, v in spec["pytorchReplicaSpecs"].items()} == replicas
    assert spec["nprocPerNode"] == "2"
    assert spec["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 2}
    pod = next(iter(spec["pytorchReplicaSpecs"].values()))["template"]
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "pytorch" and container["command"] == COMMAND
    assert pod["metadata"]["labels"] == {"anytune.dev/job": "3f9a2c"}
    if extra:
        assert spec["elasticPolicy"] == {"rdzvBackend": "c10d", "minReplicas": 2, "maxReplicas": 4, "maxRestarts": 3}
    if options:
        assert pod["spec"]["priorityClassName"] == "high"
        assert container["env"] == FULL["env"] and container["volumeMounts"] == FULL["volume_mounts"]
        assert container["resources"] == FULL["resources"]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"name": "UPPER"}, "kubernetes.name"),
        ({"num_nodes": 0}, "kubernetes.num_nodes"),
        ({"elastic_min_nodes": 5, "num_nodes": 4}, "kubernetes.elastic_min_nodes"),
        ({"max_restarts": 2}, "kubernetes.max_restarts"),
        ({"backoff_limit": -1}, "kubernetes.backoff_limit"),
        ({"active_deadline_seconds": 0}, "kubernetes.active_deadline_seconds"),
    ],
)
def test_pytorchjob_refusals(kw: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"name": "pj", "namespace": "n", "labels": {}, "image": "i", "command": COMMAND, **kw}
    with pytest.raises(ConfigError) as caught:
        kubeflow.pytorchjob_manifest(**args)
    assert caught.value.field == field


def test_nproc_defaults_to_auto() -> None:
    job = kubeflow.pytorchjob_manifest(name="pj", namespace="n", labels={}, image="i", command=COMMAND)
    assert job["spec"]["nprocPerNode"] == "auto"
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert _errors(PYTORCHJOB, job) == []


def _pj(*conds: dict[str, Any], active: int | None = None, deleting: bool = False) -> dict[str, Any]:
    obj = _ws(*conds, deleting=deleting)
    if active is not None:
        obj["status"]["replicaStatuses"] = {"Master": {"active": active}}
    return obj


@pytest.mark.parametrize(
    ("obj", "expected", "message"),
    [
        ({"metadata": {"name": "p"}}, JobStatus.QUEUED, None),
        (
            _pj(_cond("Created", "True", "PyTorchJobCreated", "PyTorchJob pj is created.")),
            JobStatus.QUEUED,
            "PyTorchJobCreated: PyTorchJob pj is created.",
        ),
        (_pj(_cond("Created", "True"), active=1), JobStatus.RUNNING, None),
        (
            _pj(_cond("Created", "True"), _cond("Running", "True", "PyTorchJobRunning", "PyTorchJob pj is running.")),
            JobStatus.RUNNING,
            "PyTorchJobRunning: PyTorchJob pj is running.",
        ),
        (
            _pj(_cond("Running", "False"), _cond("Restarting", "True", "PyTorchJobRestarting", "pod restarted")),
            JobStatus.RUNNING,
            "PyTorchJobRestarting: pod restarted",
        ),
        (
            _pj(_cond("Running", "False"), _cond("Suspended", "True", "PyTorchJobSuspended", "suspended")),
            JobStatus.PAUSED,
            "PyTorchJobSuspended: suspended",
        ),
        (
            _pj(_cond("Running", "False"), _cond("Succeeded", "True", "PyTorchJobSucceeded", "done")),
            JobStatus.SUCCEEDED,
            "PyTorchJobSucceeded: done",
        ),
        (
            _pj(_cond("Running", "False"), _cond("Failed", "True", "PyTorchJobFailed", "pod exited 1")),
            JobStatus.FAILED,
            "PyTorchJobFailed: pod exited 1",
        ),
        (_pj(_cond("Running", "True"), deleting=True), JobStatus.CANCELLED, "the PyTorchJob is being deleted"),
    ],
)
def test_pytorchjob_status(obj: dict[str, Any], expected: JobStatus, message: str | None) -> None:
    assert kubeflow.pytorchjob_status(obj) == (expected, message)


def test_a_secret_travels_by_reference_only() -> None:
    """The builders copy a Secret reference as given and add no value of their own."""
    job = kubeflow.pytorchjob_manifest(name="pj", namespace="n", labels={}, image="i", command=COMMAND, env=FULL["env"])
    text = json.dumps(job)
    assert '"secretKeyRef": {"name": "hub", "key": "token"}' in text
    ws = kaito.workspace_manifest(
        _spec(), name="w", namespace="n", labels={}, config="c", instance_type=A100, data=IMAGE
    )
    assert ws["tuning"]["output"]["imagePushSecret"] == "push-secret"


def test_the_modules_import_nothing_heavy() -> None:
    code = (
        "import sys, anytune.providers.kubernetes.kaito, anytune.providers.kubernetes.kubeflow;"
        "heavy = {'kubernetes', 'torch', 'transformers', 'jsonschema'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
