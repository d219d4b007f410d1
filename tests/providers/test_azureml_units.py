"""The azureml provider's pure parts: tables, parsing, conversion, configuration, error mapping,
spec checks, and that none of it needs the Azure SDKs."""

from __future__ import annotations

import contextlib
import json
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from anytune import JobStatus
from anytune._capabilities import problems
from anytune._config import resolve
from anytune._spec import AzureMLOptions, AzureOptions, JobSpec
from anytune.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ModelNotAvailableError,
    NotSupportedError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)
from anytune.providers.azureml import (
    HYPERPARAMETERS,
    STATUS_MAP,
    AzureMLProvider,
    AzureMLSettings,
    ModelRef,
    Workspace,
    converted_lines,
    data_asset_name,
    job_name,
    legacy_options,
    map_error,
    map_hyperparameters,
    map_status,
    parse_model,
    read_workspace_config,
)
from anytune.providers.azureml.tracking import fold_metrics, pages
from tests.conftest import chat_example, run_python, write_jsonl

with warnings.catch_warnings(), contextlib.suppress(ImportError):
    # Imported once, quietly: azure-ai-ml's marshmallow schemas emit deprecation warnings on import.
    warnings.simplefilter("ignore")
    import azure.ai.ml  # noqa: F401

# -- status ------------------------------------------------------------------------------------

STATUSES = [
    ("NotStarted", JobStatus.QUEUED),
    ("Starting", JobStatus.QUEUED),
    ("Provisioning", JobStatus.QUEUED),
    ("Preparing", JobStatus.QUEUED),
    ("Queued", JobStatus.QUEUED),
    ("Running", JobStatus.RUNNING),
    ("Finalizing", JobStatus.RUNNING),
    ("CancelRequested", JobStatus.RUNNING),
    ("Completed", JobStatus.SUCCEEDED),
    ("Failed", JobStatus.FAILED),
    ("Canceled", JobStatus.CANCELLED),
    ("NotResponding", JobStatus.RUNNING),
    ("Paused", JobStatus.PAUSED),
    ("Unknown", JobStatus.QUEUED),
]


@pytest.mark.parametrize(("raw", "expected"), STATUSES)
def test_status_table(raw: str, expected: JobStatus) -> None:
    assert map_status(raw) is expected
    assert map_status(raw.upper()) is expected


def test_status_table_is_complete_and_only_final_states_are_terminal() -> None:
    assert {raw.lower() for raw, _ in STATUSES} == set(STATUS_MAP)
    assert {raw for raw, status in STATUSES if status.is_terminal} == {"Completed", "Failed", "Canceled"}


@pytest.mark.parametrize("raw", [None, "", "SomethingNew"])
def test_unrecognised_status_is_never_terminal(raw: str | None) -> None:
    assert map_status(raw) is JobStatus.QUEUED


# -- hyperparameters ---------------------------------------------------------------------------


def _spec(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({"base_model": "Phi-3-mini-4k-instruct", "training_file": "t.jsonl", **fields})


def test_serverless_hyperparameters() -> None:
    spec = _spec(hyperparameters={"epochs": 2, "batch_size": 4, "learning_rate": 1e-5})
    assert map_hyperparameters(spec, "serverless") == {
        "num_train_epochs": "2",
        "per_device_train_batch_size": "4",
        "learning_rate": "1e-05",
    }


def test_managed_hyperparameters_and_lora() -> None:
    spec = _spec(hyperparameters={"max_steps": 100, "max_length": 2048, "seed": 1, "warmup_steps": 5}, lora={"r": 32})
    assert map_hyperparameters(spec, "managed") == {
        "max_steps": "100",
        "max_seq_length": "2048",
        "seed": "1",
        "warmup_steps": "5",
        "apply_lora": "true",
        "lora_r": "32",
        "lora_alpha": "64",
        "lora_dropout": "0.05",
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"hyperparameters": {"max_steps": 10}}, "hyperparameters.max_steps"), ({"lora": {"r": 8}}, "lora")],
)
def test_serverless_refuses_what_only_managed_takes(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(NotSupportedError, match="managed") as err:
        map_hyperparameters(_spec(**fields), "serverless")
    assert err.value.field == field


#: The hyperparameter names Azure ML documents per deployment (sources in the file).
DOCUMENTED = json.loads((Path(__file__).resolve().parent / "azureml_finetuning_contract.json").read_text())[
    "hyperparameters"
]


@pytest.mark.parametrize("deployment", ["serverless", "managed"])
def test_every_name_the_adapter_sends_is_one_azure_ml_documents(deployment: str) -> None:
    sent = set(HYPERPARAMETERS[deployment].values())
    if deployment == "managed":
        sent |= set(map_hyperparameters(_spec(lora={"r": 8}), "managed"))
    assert sent <= set(DOCUMENTED[deployment]), sent - set(DOCUMENTED[deployment])


# -- names and models --------------------------------------------------------------------------


def test_names_are_deterministic() -> None:
    assert job_name("k") == job_name("k") != job_name("k2")
    assert job_name("k").startswith("anytune-") and len(job_name("k")) == 32
    assert data_asset_name("anytune", "ab" * 32) == "anytune-" + "ab" * 16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Phi-3-mini-4k-instruct", ModelRef("azureml", "Phi-3-mini-4k-instruct")),
        ("Phi-3-mini-4k-instruct:7", ModelRef("azureml", "Phi-3-mini-4k-instruct", "7")),
        ("Phi-3-mini-4k-instruct@latest", ModelRef("azureml", "Phi-3-mini-4k-instruct")),
        (
            "azureml://registries/azureml-meta/models/Llama-2-7b/versions/3",
            ModelRef(
                "azureml-meta", "Llama-2-7b", "3", "azureml://registries/azureml-meta/models/Llama-2-7b/versions/3"
            ),
        ),
        ("azureml://registries/azureml-meta/models/Llama-2-7b/labels/latest", ModelRef("azureml-meta", "Llama-2-7b")),
        (
            "azureml://locations/eastus/workspaces/abc/models/mine/versions/2",
            ModelRef(None, "mine", "2", "azureml://locations/eastus/workspaces/abc/models/mine/versions/2"),
        ),
    ],
)
def test_parse_model(text: str, expected: ModelRef) -> None:
    assert parse_model(text, registry="azureml") == expected


def test_parse_model_version_option_and_bad_input() -> None:
    assert parse_model("m", registry="r", version="4").uri == "azureml://registries/r/models/m/versions/4"
    assert parse_model("m", registry="r").marketplace_id == "azureml://registries/r/models/m"
    for bad in ("azureml://nonsense", "has space", "/subscriptions/x"):
        with pytest.raises(ConfigError):
            parse_model(bad, registry="r")


# -- data conversion ---------------------------------------------------------------------------


def test_chat_conversion_keeps_only_what_the_service_reads(tmp_path: Path) -> None:
    row = chat_example(1)
    row["messages"][2]["weight"] = 0
    row["metadata"] = {"x": 1}
    src = write_jsonl(tmp_path / "a.jsonl", [row, {"prompt": "p", "completion": "c"}])
    lines = [json.loads(x) for x in converted_lines(src, "chat-completion")]
    assert lines[0] == {"messages": chat_example(1)["messages"]}
    assert lines[1] == {"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]}


def test_text_completion_conversion(tmp_path: Path) -> None:
    multi = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": [{"type": "text", "text": "c"}]},
            {"role": "assistant", "content": "d"},
        ]
    }
    src = write_jsonl(tmp_path / "a.jsonl", [multi, {"prompt": "p", "completion": "q"}])
    assert [json.loads(x) for x in converted_lines(src, "text-completion")] == [
        {"prompt": "a\n\nb\n\nc", "completion": "d"},
        {"prompt": "p", "completion": "q"},
    ]


# -- metrics -----------------------------------------------------------------------------------


def _points(*values: tuple[int, float]) -> list[dict[str, Any]]:
    return [{"step": step, "value": value, "timestamp": 1_700_000_000_000 + 1000 * step} for step, value in values]


@pytest.mark.parametrize("order", ["step key first", "summary first"])
def test_a_steps_own_loss_beats_the_runs_summary_logged_at_the_same_step(order: str) -> None:
    """Hugging Face's Trainer logs the run's mean loss as train_loss at the last step."""
    histories = [("loss", _points((1, 2.0), (2, 1.0))), ("train_loss", _points((2, 1.5)))]
    points = fold_metrics(histories if order == "step key first" else histories[::-1])
    assert [(p.step, p.train_loss) for p in points] == [(1, 2.0), (2, 1.0)]
    assert points[1].extra == {"train_loss": 1.5} and points[0].extra == {}


def test_the_runs_summary_is_no_steps_loss_when_the_last_step_logged_none() -> None:
    """logging_steps rarely divides the step count: the summary lands on a step without ``loss``,
    and must not end the curve with the run's mean."""
    histories = [("loss", _points((10, 2.0), (20, 1.0))), ("train_loss", _points((25, 1.4)))]
    points = fold_metrics(histories)
    assert [(p.step, p.train_loss) for p in points] == [(10, 2.0), (20, 1.0), (25, None)]
    assert points[2].extra == {"train_loss": 1.4}


def test_a_trainer_that_logs_only_train_loss_fills_the_field() -> None:
    points = fold_metrics([("train_loss", _points((1, 2.0), (2, 1.0)))])
    assert [(p.step, p.train_loss, p.extra) for p in points] == [(1, 2.0, {}), (2, 1.0, {})]


def test_metrics_fold_by_step_in_step_order() -> None:
    points = fold_metrics(
        [
            ("grad_norm", _points((3, 0.5), (1, 1.5))),
            ("eval_loss", _points((2, 1.2))),
            ("Learning_Rate", _points((1, 2e-4), (3, 1e-4))),
            ("num_input_tokens_seen", _points((1, 128.0))),
            ("epoch", [{"step": 2, "value": 1.0, "timestamp": 1_700_000_009_000}, *_points((2, 1.0))]),
        ]
    )
    assert [p.step for p in points] == [1, 2, 3]
    assert (points[0].learning_rate, points[0].tokens_seen, points[0].extra) == (2e-4, 128, {"grad_norm": 1.5})
    assert (points[1].valid_loss, points[1].epoch, points[1].train_loss) == (1.2, 1.0, None)
    assert points[1].time is not None and points[1].time.timestamp() == 1_700_000_002  # the earliest log of step 2
    assert isinstance(points[0].tokens_seen, int)


def test_every_page_is_read_and_a_looping_server_ends_the_listing() -> None:
    book = {
        None: {"runs": [1], "next_page_token": "a"},
        "a": {"runs": [2, 3], "next_page_token": "b"},
        "b": {"runs": [4]},
    }
    assert list(pages(lambda token: book[token], "runs")) == [1, 2, 3, 4]
    loop = {None: {"metrics": [1], "next_page_token": "a"}, "a": {"metrics": [2], "next_page_token": "a"}}
    assert list(pages(lambda token: loop[token], "metrics")) == [1, 2]
    assert list(pages(lambda token: {}, "runs")) == []  # MLflow leaves an empty list out


# -- workspace ---------------------------------------------------------------------------------

WS_CONFIG = {"subscription_id": "sub-1", "resource_group": "rg-1", "workspace_name": "ws-1"}


def _provider(env: dict[str, str] | None = None, **settings: Any) -> AzureMLProvider:
    return AzureMLProvider(AzureMLSettings(**settings), env=env or {})


def test_workspace_from_settings_then_azureml_variables_then_config_json(workdir: Path) -> None:
    (workdir / ".azureml").mkdir()
    (workdir / ".azureml" / "config.json").write_text(json.dumps(WS_CONFIG))
    assert _provider().workspace() == Workspace("sub-1", "rg-1", "ws-1")
    env = {"AZUREML_ARM_SUBSCRIPTION": "sub-env", "AZUREML_ARM_WORKSPACE_NAME": "ws-env"}
    assert _provider(env).workspace() == Workspace("sub-env", "rg-1", "ws-env")
    assert _provider(env, workspace="ws-arg").workspace() == Workspace("sub-env", "rg-1", "ws-arg")


def test_workspace_config_with_an_arm_scope(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {"Scope": "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w"}
        )
    )
    assert read_workspace_config(path) == {"subscription_id": "s", "resource_group": "r", "workspace_name": "w"}
    assert _provider(config_path=path).workspace() == Workspace("s", "r", "w")


def test_missing_workspace_names_what_to_set(workdir: Path) -> None:
    with pytest.raises(ConfigError, match="subscription_id, resource_group, workspace") as err:
        _provider().workspace()
    assert err.value.field == "settings.subscription_id"
    assert _provider().workspace(required=False) is None
    with pytest.raises(ConfigError, match=r"no workspace config\.json"):
        _provider(config_path=workdir / "nope").workspace()


def test_settings_from_anytune_azureml_variables(config_dir: Path) -> None:
    env = {
        "ANYTUNE_AZUREML_SUBSCRIPTION_ID": "s",
        "ANYTUNE_AZUREML_RESOURCE_GROUP": "r",
        "ANYTUNE_AZUREML_WORKSPACE": "w",
        "ANYTUNE_AZUREML_DEPLOYMENT": "managed",
        "ANYTUNE_AZUREML_INSTANCE_TYPES": '["Standard_NC24ads_A100_v4"]',
        "ANYTUNE_CONFIG_DIR": str(config_dir),
    }
    settings = resolve(provider="azureml", env=env).settings
    assert isinstance(settings, AzureMLSettings)
    assert (settings.subscription_id, settings.workspace, settings.deployment) == ("s", "w", "managed")
    assert settings.instance_types == ("Standard_NC24ads_A100_v4",)


def test_profile_settings(workdir: Path) -> None:
    (workdir / "anytune.toml").write_text(
        textwrap.dedent("""
        [profiles.aml]
        provider = "azureml"
        spec = { base_model = "Meta-Llama-3-8B-Instruct" }

        [profiles.aml.settings]
        subscription_id = "s"
        resource_group = "r"
        workspace = "w"
        identity = "cli"
        registry = "azureml-meta"
        accept_marketplace_terms = true
    """)
    )
    config = resolve(provider="aml")
    assert config.provider == "azureml" and config.spec_defaults["base_model"] == "Meta-Llama-3-8B-Instruct"
    assert config.show()["settings"]["identity"] == "cli"  # not a secret, not masked


# -- spec checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("azure", "error", "field"),
    [
        ({"compute": "gpu"}, NotSupportedError, "azure.compute"),
        ({"instance_type": "Standard_NC6"}, NotSupportedError, "azure.instance_type"),
        ({"job_tier": "spot"}, NotSupportedError, "azure.job_tier"),
        ({"training_type": "standard"}, NotSupportedError, "azure.training_type"),
        ({"deployment": "managed", "instance_count": 2, "compute": "c"}, NotSupportedError, "azure.instance_count"),
        ({"deployment": "managed"}, ConfigError, "azure.compute"),
        ({"deployment": "managed", "compute": "c", "instance_type": "t"}, ConfigError, "azure.compute"),
    ],
)
def test_validate_refuses_what_the_deployment_cannot_do(
    azure: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as err:
        _provider().validate(_spec(azure=azure))
    assert err.value.field == field  # type: ignore[attr-defined]


def test_validate_accepts_settings_defaults_for_managed() -> None:
    _provider(deployment="managed", compute="gpu").validate(_spec(lora={"r": 4}))
    _provider(deployment="managed", instance_types=("A", "B")).validate(_spec())


@pytest.mark.parametrize(
    ("azureml", "error", "field"),
    [
        ({"compute": "gpu"}, NotSupportedError, "azureml.compute"),
        ({"deployment": "managed", "instance_count": 2, "compute": "c"}, NotSupportedError, "azureml.instance_count"),
        ({"deployment": "managed"}, ConfigError, "azureml.compute"),
    ],
)
def test_the_azureml_section_is_read_and_named(azureml: dict[str, Any], error: type[Exception], field: str) -> None:
    with pytest.raises(error) as err:
        _provider().validate(_spec(azureml=azureml))
    assert err.value.field == field  # type: ignore[attr-defined]
    _provider().validate(_spec(azureml={"deployment": "managed", "compute": "gpu"}, lora={"r": 4}))


def test_the_older_azure_section_becomes_azureml_options() -> None:
    assert legacy_options(AzureOptions(deployment="managed", compute="c", registry="r")) == AzureMLOptions(
        deployment="managed", compute="c", registry="r"
    )
    with pytest.raises(NotSupportedError) as err:
        legacy_options(AzureOptions(training_type="standard"))
    assert err.value.field == "azure.training_type" and err.value.alternatives == ["azure-openai"]


def test_capabilities_read_both_azure_sections_and_refuse_azure_openai_options() -> None:
    caps = AzureMLProvider.capabilities
    assert {"azure", "azureml"} <= caps.sections
    found = dict(problems(_spec(azure_openai={"training_type": "standard"}), caps))
    assert list(found) == ["azure_openai"] and "Azure OpenAI" in found["azure_openai"]
    assert problems(_spec(azureml={"deployment": "managed"}), caps) == []


def test_plan_needs_no_workspace_and_notes_the_marketplace(tmp_path: Path, workdir: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", [chat_example(i) for i in range(10)])
    plan = _provider(registry="azureml-meta").plan(
        JobSpec(base_model="Meta-Llama-3-8B-Instruct", training_file=train), idempotency_key="k"
    )
    ops = [r.operation for r in plan.requests]
    assert ops == ["MLClient.marketplace_subscriptions.begin_create_or_update", "MLClient.jobs.create_or_update"]
    assert any("accept_marketplace_terms" in n for n in plan.notes)
    assert any("no workspace configured" in n for n in plan.notes)
    assert plan.requests[1].body["name"] == job_name("k")


# -- error mapping -----------------------------------------------------------------------------


def _http_error(status: int, code: str = "", message: str = "boom", headers: dict[str, str] | None = None) -> Any:
    from azure.core.exceptions import HttpResponseError

    exc = HttpResponseError(message=message)
    exc.status_code = status
    exc.error = SimpleNamespace(code=code, message=message)  # type: ignore[assignment]
    exc.response = SimpleNamespace(headers=headers or {})  # type: ignore[assignment]
    return exc


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, "UserError", "bad input", InvalidRequestError),
        (401, "InvalidAuthenticationToken", "expired", AuthenticationError),
        (403, "AuthorizationFailed", "no role", PermissionDeniedError),
        (403, "QuotaExceeded", "not enough quota", QuotaExceededError),
        (400, "UserError", "Model is not supported for fine-tuning", ModelNotAvailableError),
        (400, "MarketplaceSubscriptionNotFound", "subscribe first", ModelNotAvailableError),
        (429, "TooManyRequests", "slow down", RateLimitError),
        (500, "InternalServerError", "oops", ServiceUnavailableError),
        (503, "ServiceUnavailable", "later", ServiceUnavailableError),
    ],
)
def test_http_errors_map_by_code_then_status(status: int, code: str, message: str, expected: type) -> None:
    pytest.importorskip("azure.core")
    mapped = map_error(
        _http_error(status, code, message, {"Retry-After": "4", "x-ms-request-id": "rid"}), action="do it"
    )
    assert type(mapped) is expected
    assert "do it" in mapped.message and message in mapped.message
    if expected is RateLimitError:
        assert mapped.retry_after == 4.0  # type: ignore[attr-defined]


def test_transport_and_credential_errors_map() -> None:
    pytest.importorskip("azure.identity")
    from azure.core.exceptions import ClientAuthenticationError, ServiceResponseTimeoutError
    from azure.identity import CredentialUnavailableError

    assert isinstance(map_error(ServiceResponseTimeoutError("read timed out"), action="x"), ServiceUnavailableError)
    # No credential on this machine is configuration; a refusal by Entra ID is authentication.
    assert isinstance(map_error(CredentialUnavailableError("no credential"), action="x"), ConfigError)
    assert isinstance(
        map_error(ClientAuthenticationError("AADSTS7000215: bad secret"), action="x"), AuthenticationError
    )
    missing = map_error(
        _http_error(404, "ResourceGroupNotFound", "Resource group 'r' could not be found."),
        action="x",
        workspace=Workspace("s", "r", "w"),
    )
    assert isinstance(missing, ConfigError) and missing.field == "settings.workspace"


# -- no SDK needed -----------------------------------------------------------------------------

BLOCK_AZURE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "azure" or name.startswith("azure."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
"""


def test_capabilities_and_plan_shape_need_no_azure_sdk() -> None:
    proc = run_python(
        BLOCK_AZURE
        + textwrap.dedent("""
        from anytune import _registry
        from anytune.errors import MissingDependencyError
        from anytune.providers.azureml import AzureMLProvider
        assert AzureMLProvider.capabilities.lora
        assert "azureml" in _registry.capabilities()
        assert _registry.entry("azureml").missing() == ["azure.ai.ml", "azure.identity"]
        try:
            _registry.load("azureml")
        except MissingDependencyError as exc:
            print(exc)
        assert not [m for m in sys.modules if m.startswith("azure")]
    """)
    )
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "anytune[azure]"' in proc.stdout
