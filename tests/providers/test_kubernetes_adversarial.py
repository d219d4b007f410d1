"""The kubernetes provider against bad settings and hostile inputs a user or an attacker may give.

Each case is a defect found by adversarial testing: a clear ConfigError naming the setting, before
anything is created, and no secret in what is shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

pytest.importorskip("kubernetes")

from anytune.errors import ConfigError
from anytune.providers.kubernetes import KubernetesSettings
from anytune.providers.kubernetes.settings import make_api_client

TOKEN = "hf_K8sSECRETtokenVALUE0123456789abcd"


@pytest.mark.parametrize(
    ("toleration", "said"),
    [
        ({"key": 1}, "'key' must be a string"),
        ({"key": "gpu", "bogus": "x"}, "unknown toleration field(s) ['bogus']"),
        ({"key": "gpu", "operator": "exists"}, "operator 'exists'"),
        ({"key": "gpu", "operator": "Exists", "value": "x"}, "takes no value"),
        ({"key": "gpu", "effect": "NoSchedul"}, "effect 'NoSchedul'"),
        ({"key": "gpu", "effect": "NoExecute", "tolerationSeconds": "60"}, "tolerationSeconds"),
    ],
)
def test_a_toleration_of_a_wrong_shape_is_refused_naming_the_setting(toleration: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError) as caught:
        KubernetesSettings(tolerations=[toleration])
    assert caught.value.errors()[0]["loc"] == ("tolerations",) and said in str(caught.value)


def test_well_formed_tolerations_pass() -> None:
    ok = [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoExecute", "tolerationSeconds": 30},
        {"operator": "Exists"},
    ]
    assert KubernetesSettings(tolerations=ok).tolerations == ok


def test_a_kubeconfig_that_is_not_yaml_is_a_config_error_that_quotes_nothing(tmp_path: Path) -> None:
    # Was an internal error (exit 70) with yaml's own text; the file may hold a token.
    bad = tmp_path / "config"
    bad.write_text(f"users:\n- user: {{token: {TOKEN}\n")
    with pytest.raises(ConfigError) as caught:
        make_api_client(KubernetesSettings(kubeconfig=str(bad), in_cluster=False))
    assert caught.value.field == "settings.kubeconfig" and "not YAML" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_an_api_error_body_echoing_a_token_is_redacted_in_the_error() -> None:
    import json

    from kubernetes.client.exceptions import ApiException

    from anytune.providers.kubernetes.errors import translate_error

    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = json.dumps(
        {"kind": "Status", "reason": "Invalid", "message": f"denied: env HF_TOKEN={TOKEN}", "details": {"x": TOKEN}}
    )
    error = translate_error(exc, provider="kubernetes", what="creating the Job")
    assert error is not None and TOKEN not in str(error) and TOKEN not in repr(error)
    assert TOKEN not in json.dumps(getattr(error, "body", None))


def _failed_job() -> dict[str, Any]:
    reason, text = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    return {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": text}]}}


def test_an_oom_killed_pod_says_out_of_memory_not_only_backoff_limit() -> None:
    from anytune import JobStatus
    from anytune.providers.kubernetes import job_state

    pod = {
        "metadata": {"name": "anytune-x-0-abcde"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
            ],
        },
    }
    state = job_state(_failed_job(), [pod])
    assert state.status is JobStatus.FAILED and state.error is not None
    assert state.error.code == "out_of_memory" and "OOMKilled" in state.error.message
    assert "settings.memory" in state.error.message and "BackoffLimitExceeded" not in state.error.code
    evicted = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "reason": "Evicted", "message": "disk"}}
    assert job_state(_failed_job(), [evicted]).error.code == "evicted"  # type: ignore[union-attr]
    assert job_state(_failed_job(), []).error.code == "BackoffLimitExceeded"  # type: ignore[union-attr]


def test_a_base_model_folder_on_this_machine_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    # Was accepted: the plan named /home/me/model and the pod failed loading it minutes later.
    from anytune import JobSpec
    from anytune.providers.kubernetes import KubernetesProvider
    from anytune.providers.kubernetes.manifests import STORAGE_MOUNT
    from tests.conftest import chat_example, write_jsonl

    model = tmp_path / "model"
    model.mkdir()
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(2)])

    def never() -> Any:
        raise AssertionError("no API call may be made")

    provider = KubernetesProvider(
        KubernetesSettings(storage=f"file://{tmp_path}/bucket"), api_client_factory=never, home=tmp_path / "home"
    )
    with pytest.raises(ConfigError, match="a folder on this machine") as caught:
        provider.validate(JobSpec(base_model=str(model), training_file=train))
    assert caught.value.field == "base_model" and not (tmp_path / "bucket").exists()
    # A Hub id, a path on the storage volume as the pod sees it, or one baked in the image, pass.
    for name in ("acme/tiny-chat", f"{STORAGE_MOUNT}/models/llama", "/models/in-the-image"):
        provider.validate(JobSpec(base_model=name, training_file=train))
