"""Pure parts of the OpenAI / Azure OpenAI adapter, table by table: statuses, request bodies, spec
checks, events, metrics, result files, client configuration and error translation."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from pydantic import SecretStr

from anytune import (
    AuthenticationError,
    InvalidRequestError,
    JobNotFoundError,
    JobSpec,
    JobStatus,
    MetricPoint,
    ModelNotAvailableError,
    NotSupportedError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)
from anytune._provider import IDEMPOTENCY_TAG
from anytune.providers import openai as adapter
from anytune.providers.openai import (
    AZURE_STATUS,
    DEFAULT_AZURE_API_VERSION,
    OPENAI_STATUS,
    AzureOpenAIProvider,
    AzureOpenAISettings,
    FileSlice,
    OpenAIProvider,
    OpenAISettings,
    azure_client_config,
    build_create_body,
    decode_result_file,
    event_from_api,
    map_status,
    merge_points,
    metric_from_data,
    openai_client_config,
    parse_result_csv,
    part_ranges,
    record_from_job,
    spec_problems,
    translate_error,
)
from anytune.providers.openai.mapping import split_body
from tests.conftest import run_python
from tests.providers.openai_fake import problems as schema_problems
from tests.providers.openai_support import STRING_CHECK_GRADER

S = JobStatus

# -- statuses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("validating_files", S.VALIDATING),
        ("queued", S.QUEUED),
        ("running", S.RUNNING),
        ("paused", S.PAUSED),
        ("succeeded", S.SUCCEEDED),
        ("failed", S.FAILED),
        ("cancelled", S.CANCELLED),
    ],
)
def test_openai_status_table(raw: str, expected: JobStatus) -> None:
    assert map_status(raw, OPENAI_STATUS) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("created", S.VALIDATING),
        ("pending", S.QUEUED),
        ("running", S.RUNNING),
        ("pausing", S.PAUSED),
        ("paused", S.PAUSED),
        ("resuming", S.RUNNING),
        ("succeeded", S.SUCCEEDED),
        ("failed", S.FAILED),
        ("cancelled", S.CANCELLED),
        ("canceled", S.CANCELLED),
        ("validating_files", S.VALIDATING),
        ("queued", S.QUEUED),
        ("Succeeded", S.SUCCEEDED),
    ],
)
def test_azure_status_table(raw: str, expected: JobStatus) -> None:
    assert map_status(raw, AZURE_STATUS) is expected


def test_only_the_documented_end_states_are_terminal() -> None:
    for table in (OPENAI_STATUS, AZURE_STATUS):
        terminal = {raw for raw, status in table.items() if status.is_terminal}
        assert terminal <= {"succeeded", "failed", "cancelled", "canceled"}


@pytest.mark.parametrize("raw", ["", None, "exploded"])
def test_an_unknown_status_keeps_the_job_followed(raw: str | None) -> None:
    assert map_status(raw, OPENAI_STATUS) is S.RUNNING  # never a made-up outcome


def test_record_from_azure_job_with_nulls() -> None:
    job = {
        "id": "ftjob-1",
        "object": "fine_tuning.job",
        "status": "pending",
        "model": "gpt-4o-mini",
        "created_at": 1_700_000_000,
        "finished_at": None,
        "fine_tuned_model": None,
        "error": {},
        "trained_tokens": None,
        "seed": None,
        "hyperparameters": {"n_epochs": None},
        "result_files": None,
        "organization_id": None,
        "trainingType": "globalstandard",
    }
    record = record_from_job("azure-openai", job, AZURE_STATUS)
    assert record.status is S.QUEUED and record.raw_status == "pending"
    assert record.error is None and record.trained_tokens is None and record.finished_at is None
    assert record.output["trainingType"] == "globalstandard"
    assert "result_files" not in record.output and record.raw == job


def test_record_carries_the_failure() -> None:
    job = {
        "id": "ftjob-2",
        "status": "failed",
        "model": "m",
        "error": {"code": "invalid_training_file", "message": "bad line 3", "param": "training_file"},
    }
    record = record_from_job("openai", job, OPENAI_STATUS)
    assert record.error is not None
    assert (record.error.code, record.error.message, record.error.param) == (
        "invalid_training_file",
        "bad line 3",
        "training_file",
    )


# -- request bodies ------------------------------------------------------------------------------


def spec(**fields: Any) -> JobSpec:
    fields.setdefault("base_model", "gpt-4o-mini-2024-07-18")
    fields.setdefault("training_file", Path("train.jsonl"))
    return JobSpec.model_validate(fields)


def body_of(s: JobSpec, flavour: str = "openai", validation: str | None = "file-v") -> dict[str, Any]:
    return build_create_body(
        s, training_file="file-t", validation_file=validation, idempotency_key="key-1", flavour=flavour
    )  # type: ignore[arg-type]


def test_supervised_body_maps_hyperparameters_under_the_method() -> None:
    body = body_of(
        spec(
            hyperparameters={"epochs": 3, "batch_size": 8, "learning_rate_multiplier": 0.5, "seed": 7},
            suffix="demo",
            tags={"team": "nlp"},
        )
    )
    assert body == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-t",
        "validation_file": "file-v",
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 0.5}},
        },
        "suffix": "demo",
        "seed": 7,
        "metadata": {"team": "nlp", IDEMPOTENCY_TAG: "key-1"},
    }
    assert schema_problems("openai", "CreateFineTuningJobRequest", body) == []


def test_defaults_leave_choices_to_the_service() -> None:
    body = body_of(spec(), validation=None)
    assert body == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-t",
        "method": {"type": "supervised"},
        "metadata": {IDEMPOTENCY_TAG: "key-1"},
    }
    assert schema_problems("openai", "CreateFineTuningJobRequest", body) == []


def test_dpo_body_carries_beta() -> None:
    body = body_of(spec(method="dpo", hyperparameters={"epochs": 2, "beta": 0.1}))
    assert body["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "beta": 0.1}}}
    assert schema_problems("openai", "CreateFineTuningJobRequest", body) == []


def test_dpo_without_hyperparameters_still_carries_its_dpo_object() -> None:
    # Azure's DpoMethodRequest (2025-04-01-preview) requires ``dpo`` even when it is empty.
    s = spec(method="dpo")
    body = body_of(s)
    assert body["method"] == {"type": "dpo", "dpo": {}}
    assert schema_problems("openai", "CreateFineTuningJobRequest", body) == []
    dated = build_create_body(
        s,
        training_file="file-t",
        validation_file=None,
        idempotency_key="key-1",
        flavour="azure",
        keeps_metadata=False,
        supervised_in_method=False,
    )
    assert dated["method"] == {"type": "dpo", "dpo": {}}
    # trainingType: required by the service in practice although no description lists it.
    assert schema_problems("2025-04-01-preview", "FineTuningJobCreation", dated) == ["trainingType: not defined"]


def test_reinforcement_is_passed_through_with_mapped_hyperparameters() -> None:
    grader = dict(STRING_CHECK_GRADER)
    body = body_of(
        spec(
            hyperparameters={"epochs": 2},
            openai={"reinforcement": {"grader": grader, "hyperparameters": {"reasoning_effort": "low"}}},
        )
    )
    assert body["method"] == {
        "type": "reinforcement",
        "reinforcement": {"grader": grader, "hyperparameters": {"n_epochs": 2, "reasoning_effort": "low"}},
    }
    assert schema_problems("openai", "CreateFineTuningJobRequest", body) == []


def test_wandb_integration() -> None:
    body = body_of(spec(openai={"wandb": {"project": "ft", "entity": "me", "tags": ["a"]}}))
    assert body["integrations"] == [{"type": "wandb", "wandb": {"project": "ft", "entity": "me", "tags": ["a"]}}]
    assert body_of(spec(openai={"wandb": {"project": "ft"}}))["integrations"] == [
        {"type": "wandb", "wandb": {"project": "ft"}}
    ]
    assert schema_problems("openai", "CreateFineTuningJobRequest", body) == []


def test_azure_training_type_goes_in_the_body() -> None:
    body = body_of(spec(azure={"training_type": "globalstandard"}), flavour="azure")
    assert body["trainingType"] == "globalstandard"
    assert "trainingType" not in body_of(spec(azure={"training_type": "globalstandard"}), flavour="openai")
    known, extra = split_body(body)
    assert extra == {"trainingType": "globalstandard"} and "trainingType" not in known


def test_supervised_hyperparameters_go_top_level_where_the_method_holds_only_its_type() -> None:
    s = spec(hyperparameters={"epochs": 2, "batch_size": 4})
    dated = build_create_body(
        s, training_file="t", validation_file=None, idempotency_key="k", flavour="azure", supervised_in_method=False
    )
    assert (dated["method"], dated["hyperparameters"]) == ({"type": "supervised"}, {"n_epochs": 2, "batch_size": 4})
    dpo = build_create_body(
        spec(method="dpo", hyperparameters={"beta": 0.3}),
        training_file="t",
        validation_file=None,
        idempotency_key="k",
        flavour="azure",
        supervised_in_method=False,
    )
    assert dpo["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3}}} and "hyperparameters" not in dpo
    bare = build_create_body(
        spec(),
        training_file="t",
        validation_file=None,
        idempotency_key="k",
        flavour="azure",
        supervised_in_method=False,
    )
    assert bare["method"] == {"type": "supervised"} and "hyperparameters" not in bare


def test_azure_openai_section_carries_the_training_type() -> None:
    body = body_of(spec(azure_openai={"training_type": "developer"}), flavour="azure")
    assert body["trainingType"] == "developerTier"  # the wire value the service accepts
    assert problems(spec(azure_openai={"training_type": "developer"}), "azure") == {}


# -- spec checks ---------------------------------------------------------------------------------


def problems(s: JobSpec, flavour: str = "openai") -> dict[str, tuple[str, tuple[str, ...]]]:
    return {f: (r, a) for f, r, a in spec_problems(s, flavour)}  # type: ignore[arg-type]


def test_absolute_learning_rate_is_refused_with_advice() -> None:
    found = problems(spec(hyperparameters={"learning_rate": 2e-4}))
    reason, alternatives = found["hyperparameters.learning_rate"]
    assert "OpenAI does not take an absolute learning rate" in reason and "learning_rate_multiplier" in reason
    assert alternatives == ("local", "huggingface")


def test_lora_and_quantization_are_refused() -> None:
    found = problems(spec(lora={"r": 8}, quantization="4bit"))
    assert "does not take LoRA settings" in found["lora"][0]
    assert "quantization" in found
    assert found["lora"][1] == ("local", "huggingface")


def test_validate_names_the_field_and_the_alternatives() -> None:
    with pytest.raises(NotSupportedError) as info:
        OpenAIProvider().validate(spec(lora={"r": 8}))
    assert info.value.field == "lora" and info.value.provider == "openai"
    assert info.value.alternatives == ["local", "huggingface"]
    assert "OpenAI does not take LoRA settings" in str(info.value)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"hyperparameters": {"epochs": 51}}, "hyperparameters.epochs"),
        ({"hyperparameters": {"batch_size": 512}}, "hyperparameters.batch_size"),
        ({"method": "dpo", "hyperparameters": {"beta": 3.0}}, "hyperparameters.beta"),
        ({"hyperparameters": {"max_steps": 10}}, "hyperparameters.max_steps"),
        ({"tags": {f"t{i}": "x" for i in range(16)}}, "tags"),
        ({"method": "dpo", "openai": {"reinforcement": {"grader": {}}}}, "openai.reinforcement"),
    ],
)
def test_service_limits(fields: dict[str, Any], field: str) -> None:
    assert field in problems(spec(**fields))


def test_a_spec_the_service_takes_has_no_problem() -> None:
    assert (
        problems(
            spec(
                method="dpo",
                suffix="my.model",
                hyperparameters={"epochs": 50, "batch_size": 256, "beta": 2.0, "seed": 1},
            )
        )
        == {}
    )


@pytest.mark.parametrize("suffix", ["has.dot", "x" * 41])
def test_azure_suffix_rules(suffix: str) -> None:
    assert "suffix" in problems(spec(suffix=suffix), "azure")
    assert "suffix" not in problems(spec(suffix=suffix), "openai")
    assert problems(spec(suffix="ok_name-2"), "azure") == {}


def test_azure_ml_options_are_not_azure_openai_options() -> None:
    found = problems(spec(azure={"training_type": "developer", "compute": "gpu-cluster"}), "azure")
    assert list(found) == ["azure.compute"] and found["azure.compute"][1] == ("azureml",)


def test_the_capability_tables_word_the_refusals() -> None:
    from anytune._capabilities import problems as table_problems

    found = dict(
        table_problems(spec(hyperparameters={"learning_rate": 1e-4, "epochs": 60}), OpenAIProvider.capabilities)
    )
    assert "learning_rate_multiplier" in found["hyperparameters.learning_rate"]
    assert found["hyperparameters.epochs"] == "OpenAI accepts epochs in 1 to 50, not 60"
    azure = dict(table_problems(spec(lora={"r": 8}), AzureOpenAIProvider.capabilities))
    assert azure["lora"].startswith("Azure OpenAI does not take LoRA settings")


# -- events, checkpoints, metrics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("info", "info"),
        ("warn", "warning"),
        ("warning", "warning"),
        ("error", "error"),
        (None, "info"),
        ("LOUD", "info"),
    ],
)
def test_event_levels(level: str | None, expected: str) -> None:
    event = event_from_api({"id": "ev1", "created_at": 1, "level": level, "message": "hello", "data": None})
    assert event.level == expected and event.kind == "log"


@pytest.mark.parametrize(
    ("message", "kind", "status"),
    [
        ("Validating training file: file-abc", "status", S.VALIDATING),
        ("Files validated, moving job to queued state", "status", S.QUEUED),
        ("Job enqueued. Waiting for jobs ahead to complete.", "status", S.QUEUED),
        ("Fine-tuning job started", "status", S.RUNNING),
        ("The job has successfully completed", "status", S.SUCCEEDED),
        ("Fine-tuning job cancelled", "status", S.CANCELLED),
        ("Job paused", "status", S.PAUSED),
        ("Job failed due to an invalid training file.", "status", S.FAILED),
        ("Checkpoint created at step 30", "checkpoint", None),
        ("New fine-tuned model created: ft:x", "log", None),
    ],
)
def test_event_messages(message: str, kind: str, status: JobStatus | None) -> None:
    event = event_from_api({"id": "e", "created_at": 5, "level": "info", "message": message, "type": "message"})
    assert (event.kind, event.status) == (kind, status)
    if kind == "checkpoint":
        assert event.checkpoint is not None and event.checkpoint.step == 30


def test_metric_events() -> None:
    event = event_from_api(
        {
            "id": "e",
            "created_at": 1_700_000_000,
            "level": "info",
            "type": "metrics",
            "message": "Step 4/10",
            "data": {
                "step": 4,
                "train_loss": 1.25,
                "train_mean_token_accuracy": 0.6,
                "valid_loss": 1.5,
                "valid_mean_token_accuracy": 0.55,
                "total_steps": 10,
                "full_valid_loss": 1.4,
            },
        }
    )
    assert event.kind == "metric" and event.metric is not None
    point = event.metric
    assert (point.step, point.train_loss, point.token_accuracy, point.valid_loss, point.valid_token_accuracy) == (
        4,
        1.25,
        0.6,
        1.5,
        0.55,
    )
    assert point.extra == {"full_valid_loss": 1.4} and point.time == event.time


def test_event_without_id_gets_a_stable_one() -> None:
    raw = {"created_at": 3, "level": "info", "message": "Job started."}
    assert event_from_api(raw).id == event_from_api(dict(raw)).id


def test_metric_from_data_needs_a_step() -> None:
    assert metric_from_data({"train_loss": 1.0}) is None
    assert metric_from_data(None) is None
    point = metric_from_data({"step": 2.0, "train_loss": "0.5", "valid_loss": "", "dpo_reward": 0.1})
    assert point == MetricPoint(step=2, train_loss=0.5, extra={"dpo_reward": 0.1})


CSV = (
    "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,full_valid_loss\n"
    "1,1.6,0.5,,,\n"
    "2,1.28,0.55,1.4,0.6,\n"
    "3,1.02,0.6,,,0.99\n"
)


def test_result_csv() -> None:
    points = parse_result_csv(CSV)
    assert [p.step for p in points] == [1, 2, 3]
    assert points[1].valid_loss == 1.4 and points[1].valid_token_accuracy == 0.6 and points[1].token_accuracy == 0.55
    assert points[2].extra == {"full_valid_loss": 0.99} and points[0].valid_loss is None


def test_result_file_may_be_base64() -> None:
    assert decode_result_file(CSV.encode()) == CSV
    assert decode_result_file(base64.b64encode(CSV.encode())) == CSV
    assert decode_result_file(b"\xef\xbb\xbf" + CSV.encode()) == CSV


def test_merge_points_later_sources_fill_and_override() -> None:
    events = [MetricPoint(step=1, train_loss=1.0), MetricPoint(step=2, train_loss=0.9)]
    checkpoints = [MetricPoint(step=2, valid_loss=1.1, extra={"full_valid_loss": 1.05})]
    csv_points = [MetricPoint(step=2, train_loss=0.91), MetricPoint(step=3, train_loss=0.8)]
    merged = merge_points(events, checkpoints, csv_points)
    assert [p.step for p in merged] == [1, 2, 3]
    assert merged[1] == MetricPoint(step=2, train_loss=0.91, valid_loss=1.1, extra={"full_valid_loss": 1.05})


# -- uploads ---------------------------------------------------------------------------------------------


def test_part_ranges() -> None:
    assert part_ranges(0, 10) == [(0, 0)]
    assert part_ranges(25, 10) == [(0, 10), (10, 10), (20, 5)]
    assert part_ranges(20, 10) == [(0, 10), (10, 10)]


def test_file_slice_reads_a_window_and_rewinds(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(100)))
    with FileSlice(path, 10, 20) as part:
        assert part.seekable() and part.seek(0, io.SEEK_END) == 20
        part.seek(0)
        assert part.read(5) == bytes(range(10, 15))
        assert part.read() == bytes(range(15, 30))
        assert part.read(1) == b""
        part.seek(0)  # a retry starts again
        assert part.read() == bytes(range(10, 30))


# -- client configuration --------------------------------------------------------------------------------


def test_openai_settings_win_over_the_sdk_variables() -> None:
    env = {
        "OPENAI_API_KEY": "sk-env",
        "OPENAI_BASE_URL": "https://proxy.test/v1/",
        "OPENAI_ORG_ID": "org-env",
        "OPENAI_PROJECT_ID": "proj-env",
    }
    cfg = openai_client_config(OpenAISettings(), env)
    assert (cfg.api_key, cfg.key_source, cfg.base_url, cfg.organization, cfg.project) == (
        "sk-env",
        "OPENAI_API_KEY",
        "https://proxy.test/v1",
        "org-env",
        "proj-env",
    )
    cfg = openai_client_config(OpenAISettings(api_key="sk-set", organization="org-set"), env)  # type: ignore[arg-type]
    assert (cfg.api_key, cfg.organization) == ("sk-set", "org-set")
    cfg = openai_client_config(OpenAISettings(api_key_env="TEAM_KEY"), {"TEAM_KEY": "sk-team"})
    assert (cfg.api_key, cfg.key_source, cfg.base_url) == ("sk-team", "TEAM_KEY", "https://api.openai.com/v1")
    assert "sk-team" not in repr(cfg)


def test_azure_settings_and_variables() -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/",
        "AZURE_OPENAI_API_KEY": "k" * 32,
        "OPENAI_API_VERSION": "2024-10-21",
    }
    cfg = azure_client_config(AzureOpenAISettings(), env)
    assert (cfg.base_url, cfg.api_key, cfg.api_version, cfg.entra) == (
        "https://res.openai.azure.com",
        "k" * 32,
        "2024-10-21",
        False,
    )
    cfg = azure_client_config(AzureOpenAISettings(api_version="2025-04-01-preview"), env)
    assert cfg.api_version == "2025-04-01-preview"
    cfg = azure_client_config(AzureOpenAISettings(endpoint="https://e.test"), {})
    assert cfg.entra and cfg.api_key is None and cfg.api_version == DEFAULT_AZURE_API_VERSION
    cfg = azure_client_config(AzureOpenAISettings(auth="entra"), env)
    assert cfg.entra and cfg.api_key is None
    cfg = azure_client_config(AzureOpenAISettings(auth="key"), {})
    assert not cfg.entra and cfg.api_key is None  # refused when the client is built


def test_collaborators_come_in_through_the_constructor() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"object": "list", "data": [], "has_more": False})

    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    key = SecretStr("sk-unit-0123456789abcdef")
    plain = OpenAIProvider(OpenAISettings(api_key=key, base_url="https://x.test/v1"), http_client=client)
    assert plain.list() == []
    azure = AzureOpenAIProvider(
        AzureOpenAISettings(endpoint="https://res.openai.azure.test", auth="entra"),
        http_client=client,
        azure_token_provider=lambda: "entra-token-from-the-caller",
    )
    assert azure.list() == []
    assert [r.url.host for r in seen] == ["x.test", "res.openai.azure.test"]
    assert seen[1].headers["authorization"] == "Bearer entra-token-from-the-caller"


# -- error translation -------------------------------------------------------------------------------


def status_error(status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> Exception:
    request = httpx2.Request("POST", "https://api.openai.test/v1/fine_tuning/jobs")
    response = httpx2.Response(
        status,
        json={"error": body} if body is not None else {},
        request=request,
        headers={"x-request-id": "req_123", **(headers or {})},
    )
    classes = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        403: openai.PermissionDeniedError,
        404: openai.NotFoundError,
        409: openai.ConflictError,
        429: openai.RateLimitError,
    }
    cls = classes.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(f"Error code: {status}", response=response, body=body)


def translated(exc: BaseException, **kwargs: Any) -> BaseException:
    kwargs.setdefault("provider", "openai")
    kwargs.setdefault("flavour", "openai")
    kwargs.setdefault("what", "creating the fine-tuning job")
    result = translate_error(exc, **kwargs)
    assert result is not None
    return result


def test_auth_error() -> None:
    err = translated(status_error(401, {"message": "Incorrect API key provided", "code": "invalid_api_key"}))
    assert isinstance(err, AuthenticationError) and err.status_code == 401 and err.request_id == "req_123"


def test_openai_refusing_fine_tuning_points_elsewhere() -> None:
    exc = status_error(
        403, {"message": "You are not allowed to create fine-tuning jobs.", "type": "invalid_request_error"}
    )
    err = translated(exc, creating=True)
    assert isinstance(err, PermissionDeniedError)
    assert "winding down self-serve fine-tuning" in str(err)
    assert "provider='azure-openai'" in str(err) and "provider='local'" in str(err)
    plain = translated(exc, flavour="azure", provider="azure-openai", creating=True)
    assert isinstance(plain, PermissionDeniedError) and "winding down" not in str(plain)
    scope = translated(status_error(403, {"message": "Missing scopes: api.fine_tuning.jobs.write"}), creating=True)
    assert "fine-tuning write permission" in str(scope)


def test_quota_is_not_throttling() -> None:
    quota = translated(
        status_error(
            429,
            {"message": "You exceeded your current quota", "code": "insufficient_quota", "type": "insufficient_quota"},
        )
    )
    assert isinstance(quota, QuotaExceededError)
    assert not adapter.is_transient(status_error(429, {"code": "insufficient_quota", "message": "q"}))
    throttled_exc = status_error(
        429,
        {"message": "Requests have exceeded call rate limit. Go to https://aka.ms/oai/quotaincrease", "code": "429"},
        {"retry-after": "12"},
    )
    throttled = translated(throttled_exc)
    assert isinstance(throttled, RateLimitError) and throttled.retry_after == 12.0
    assert adapter.is_transient(throttled_exc)


def test_model_and_file_errors() -> None:
    model = translated(
        status_error(
            400,
            {
                "message": "Model gpt-9 is not available for fine-tuning",
                "param": "model",
                "code": "model_not_available",
            },
        )
    )
    assert isinstance(model, ModelNotAvailableError)
    bad_file = translated(
        status_error(400, {"message": "Invalid file format", "param": "training_file", "code": "invalid_file_format"})
    )
    assert isinstance(bad_file, InvalidRequestError) and "training_file" in str(bad_file)


def test_missing_job() -> None:
    err = translated(status_error(404, {"message": "Could not find job"}), what="reading the job", job_id="ftjob-x")
    assert isinstance(err, JobNotFoundError) and err.ref == "openai:ftjob-x"


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_server_errors(status: int) -> None:
    exc = status_error(status, {"message": "boom"})
    assert isinstance(translated(exc), ServiceUnavailableError)
    assert adapter.is_transient(exc) and adapter.is_ambiguous(exc)


def test_transport_errors() -> None:
    request = httpx2.Request("GET", "https://api.openai.test/v1/fine_tuning/jobs/x")
    timeout = openai.APITimeoutError(request=request)
    dropped = openai.APIConnectionError(request=request)
    for exc in (timeout, dropped):
        assert isinstance(translated(exc), ServiceUnavailableError)
        assert adapter.is_transient(exc) and adapter.is_ambiguous(exc)
    assert not adapter.is_ambiguous(status_error(429, {"message": "slow down"}))


def test_entra_failures_become_authentication_errors() -> None:
    from azure.core.exceptions import ClientAuthenticationError

    err = translated(
        ClientAuthenticationError("DefaultAzureCredential failed"), flavour="azure", provider="azure-openai"
    )
    assert isinstance(err, AuthenticationError) and "az login" in str(err)


def test_other_exceptions_are_not_ours_to_translate() -> None:
    assert translate_error(ValueError("x"), provider="openai", flavour="openai", what="w") is None


# -- packaging --------------------------------------------------------------------------------------


def test_capabilities_are_readable_without_importing_the_sdk() -> None:
    proc = run_python(
        "import sys, json\n"
        "from anytune import _registry\n"
        "caps = {n: _registry.provider_class(_registry.entry(n)).capabilities.summary() "
        "for n in ('openai', 'azure-openai')}\n"
        "print(json.dumps([caps, sorted(m for m in ('openai', 'httpx2', 'tenacity', 'azure') if m in sys.modules)]))"
    )
    assert proc.returncode == 0, proc.stderr
    caps, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == []
    assert caps["openai"]["pause"] and caps["openai"]["lora"] is False
    assert caps["azure-openai"]["sections"] == ["azure", "azure_openai", "openai"]


def test_registry_rows() -> None:
    from anytune import _registry

    assert _registry.load("openai") is OpenAIProvider
    assert _registry.load("azure-openai") is AzureOpenAIProvider
    assert _registry.entry("openai").extra == "openai"
    assert _registry.entry("azure-openai").requires == ("openai", "azure.identity")


def test_a_field_the_service_does_not_take_is_named_before_one_out_of_range(tmp_path: Path) -> None:
    from anytune.providers.openai import spec_problems

    spec = JobSpec(
        base_model="gpt-4o-mini-2024-07-18",
        training_file=tmp_path / "t.jsonl",
        hyperparameters={"epochs": 60, "learning_rate": 1e-4},
    )
    found = spec_problems(spec, "openai")
    assert [f for f, _, _ in found] == ["hyperparameters.learning_rate", "hyperparameters.epochs"]
    assert found[0][2] == ("local", "huggingface")
