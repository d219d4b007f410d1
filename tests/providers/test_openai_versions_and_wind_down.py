"""Issue 10, OpenAI / Azure OpenAI: Azure as the real service behaves (the v1 surface by default;
create-once on every api-version, identified by what that version keeps; trainingType always sent,
``developer`` as ``developerTier``; the 512 MB per-file limit before any upload), and OpenAI's
wind-down of self-serve fine-tuning said at the right moments (refusals, plan notes, validate
warnings), "today" injected."""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from anytune import FineTuneJob, JobStatus, NotSupportedError, PermissionDeniedError
from anytune._spec import JobSpec
from anytune.providers.openai import (
    DEFAULT_AZURE_API_VERSION,
    AzureOpenAISettings,
    azure_client_config,
    build_create_body,
)
from anytune.providers.openai.mapping import job_carries_key, suffix_token
from anytune.providers.openai.versions import azure_surface
from anytune.providers.openai.wind_down import (
    PHASES,
    current_phase,
    equivalent_commands,
    retirement_warning,
    wind_down_refusal,
)
from tests.providers.openai_fake import AZURE_SCHEMAS, Fault
from tests.providers.openai_support import (
    AZURE_ENDPOINT,
    AZURE_KEY,
    MODEL,
    QuickAzureOpenAIProvider,
    QuickOpenAIProvider,
    Rig,
    chat_file,
    make_rig,
    preference_file,
    services_keep_to_their_schemas,  # noqa: F401 (autouse: every fake held to its published schemas)
    settings,
)

S = JobStatus
DATED = ("2024-10-21", "2025-04-01-preview")


@pytest.fixture
def train(tmp_path: Path) -> Path:
    return chat_file(tmp_path / "train.jsonl", n=12)


def azure(rig: Rig, **extra: Any) -> QuickAzureOpenAIProvider:
    values = {"api_key": AZURE_KEY, "endpoint": AZURE_ENDPOINT, **extra}
    return QuickAzureOpenAIProvider(AzureOpenAISettings.model_validate(values), **rig.collaborators())


def openai_on(rig: Rig, today: date) -> QuickOpenAIProvider:
    return QuickOpenAIProvider(
        QuickOpenAIProvider.Settings.model_validate(settings("openai")), today=lambda: today, **rig.collaborators()
    )


def the_create(rig: Rig) -> dict[str, Any]:
    [request] = rig.service.requests("POST", "/fine_tuning/jobs")
    body: dict[str, Any] = request.json
    return body


# -- Azure: the default surface ------------------------------------------------------------------------


def test_the_default_azure_api_version_is_the_v1_surface(tmp_path: Path, train: Path) -> None:
    assert DEFAULT_AZURE_API_VERSION == "v1"
    assert azure_client_config(AzureOpenAISettings(), {}).api_version == "v1"
    rig = make_rig(tmp_path, "azure")
    job = FineTuneJob.create(provider=azure(rig), base_model=MODEL, training_file=train, tags={"team": "a"})
    assert job.wait().status is S.SUCCEEDED
    assert all(r.url.startswith(f"{AZURE_ENDPOINT}/openai/v1/") for r in rig.service.log)
    body = the_create(rig)
    assert body["metadata"]["team"] == "a"  # v1 keeps metadata: the idempotency tag is found by it
    assert rig.service.violations == []


def test_dated_versions_stay_selectable(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    job = FineTuneJob.create(
        provider=azure(rig, api_version="2025-04-01-preview"), base_model=MODEL, training_file=train
    )
    assert job.wait().status is S.SUCCEEDED
    assert all("/openai/v1/" not in r.url and r.query["api-version"] == "2025-04-01-preview" for r in rig.service.log)
    assert rig.service.violations == []


# -- Azure: create-once on every version ---------------------------------------------------------------


@pytest.mark.parametrize("version", DATED)
@pytest.mark.parametrize("fault", [Fault("timeout_after"), Fault("drop_after"), Fault("status_after", 500)])
def test_dated_versions_create_at_most_once(version: str, fault: Fault, tmp_path: Path, train: Path) -> None:
    """The dated versions keep no metadata: the create lands, its answer is lost, and the lookup finds
    the job by the key's token in its suffix, so one submit makes one job."""
    rig = make_rig(tmp_path, "azure")
    rig.service.inject("POST", "/fine_tuning/jobs", fault)
    job = FineTuneJob.create(
        provider=azure(rig, api_version=version),
        base_model=MODEL,
        training_file=train,
        azure_openai={"training_type": "standard"},  # named, so that this test is about identity alone
    )
    assert job.wait().status is S.SUCCEEDED
    assert len(rig.service.jobs) == 1, "the lookup missed the job and a second one was created"
    body = the_create(rig)
    assert "metadata" not in body  # not defined by the version's FineTuningJobCreation
    key = FineTuneJob.list()[0].idempotency_key
    assert key is not None and body["suffix"] == suffix_token(key)
    answered = job.record.raw  # the job as the version shows it: its FineTuningJob's fields only
    assert answered["suffix"] == body["suffix"] and "metadata" not in answered
    assert set(answered) <= set(AZURE_SCHEMAS["versions"][version]["definitions"]["FineTuningJob"]["properties"])
    assert "trainingType" not in answered  # a request knob, not echoed
    assert rig.service.violations == []  # bodies, queries and answers matched the version's description


def test_a_retried_submit_on_a_dated_version_finds_the_job(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    provider = azure(rig, api_version="2024-10-21")
    spec = JobSpec(base_model=MODEL, training_file=str(train), suffix="mine")
    first = provider.submit(spec, idempotency_key="key-1")
    again = provider.submit(spec, idempotency_key="key-1")  # another process, the same submit
    other = provider.submit(spec, idempotency_key="key-2")  # a different submit of the same data
    assert again.id == first.id and other.id != first.id and len(rig.service.jobs) == 2
    assert rig.service.jobs[first.id].obj["suffix"] == f"mine-{suffix_token('key-1')}"
    assert rig.service.violations == []


def test_the_suffix_token_is_matched_exactly() -> None:
    token = suffix_token("k")
    assert job_carries_key({"suffix": token}, "k") and job_carries_key({"suffix": f"mine-{token}"}, "k")
    assert job_carries_key({"fine_tuned_model": f"gpt-4o-mini.ft-abc-mine-{token}"}, "k")
    assert not job_carries_key({"suffix": f"{token}x"}, "k") and not job_carries_key({"suffix": "mine"}, "k")
    assert len(token) == 12 and token.isalnum()


def test_2024_10_21_gets_top_level_hyperparameters_and_no_method(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    provider = azure(rig, api_version="2024-10-21")
    FineTuneJob.create(provider=provider, base_model=MODEL, training_file=train, hyperparameters={"epochs": 2})
    body = the_create(rig)
    assert "method" not in body and body["hyperparameters"] == {"n_epochs": 2}
    assert rig.service.violations == []
    with pytest.raises(NotSupportedError) as info:
        FineTuneJob.create(
            provider=provider, base_model=MODEL, training_file=preference_file(tmp_path / "p.jsonl"), method="dpo"
        )
    assert info.value.field == "method" and "2024-10-21" in str(info.value)


def test_2025_04_01_preview_gets_supervised_hyperparameters_top_level(tmp_path: Path, train: Path) -> None:
    """Its supervised method holds only ``type`` (SupervisedMethodRequest); DPO's keep theirs under
    ``method.dpo``."""
    rig = make_rig(tmp_path, "azure")
    provider = azure(rig, api_version="2025-04-01-preview")
    FineTuneJob.create(provider=provider, base_model=MODEL, training_file=train, hyperparameters={"epochs": 2})
    FineTuneJob.create(
        provider=provider,
        base_model=MODEL,
        training_file=preference_file(tmp_path / "p.jsonl"),
        method="dpo",
        hyperparameters={"epochs": 3, "beta": 0.2},
    )
    supervised, dpo = (r.json for r in rig.service.requests("POST", "/fine_tuning/jobs"))
    assert (supervised["method"], supervised["hyperparameters"]) == ({"type": "supervised"}, {"n_epochs": 2})
    assert dpo["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 3, "beta": 0.2}}}
    assert "hyperparameters" not in dpo
    with pytest.raises(NotSupportedError) as info:  # FineTuningMethodType: supervised and dpo only
        FineTuneJob.create(
            provider=provider,
            base_model=MODEL,
            training_file=train,
            openai={"reinforcement": {"grader": {"type": "string_check", "name": "g"}}},
        )
    assert info.value.field == "openai.reinforcement" and "dpo and supervised" in str(info.value)
    assert len(rig.service.requests("POST", "/fine_tuning/jobs")) == 2


def test_a_user_suffix_leaves_room_for_the_token_on_dated_versions(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    with pytest.raises(NotSupportedError) as info:
        FineTuneJob.create(
            provider=azure(rig, api_version="2025-04-01-preview"),
            base_model=MODEL,
            training_file=train,
            suffix="s" * 30,
        )
    assert info.value.field == "suffix" and "27" in str(info.value)
    assert rig.service.log == []
    FineTuneJob.create(provider=azure(rig), base_model=MODEL, training_file=train, suffix="s" * 30)  # v1: fine


def test_unknown_dated_versions_take_the_nearest_older_shape() -> None:
    assert azure_surface("2025-06-01-preview").has_method and not azure_surface("2025-06-01-preview").keeps_metadata
    assert not azure_surface("2024-12-01-preview").has_method
    assert azure_surface(None).v1 and azure_surface("preview").keeps_metadata


# -- Azure: trainingType -------------------------------------------------------------------------------


def _body(**spec: Any) -> dict[str, Any]:
    return build_create_body(
        JobSpec(base_model=MODEL, training_file="t.jsonl", **spec),
        training_file="file-1",
        validation_file=None,
        idempotency_key="k",
        flavour="azure",
    )


def test_training_type_is_always_sent_in_the_services_spelling() -> None:
    assert _body()["trainingType"] == "standard"  # the documented default
    assert _body(azure_openai={"training_type": "developer"})["trainingType"] == "developerTier"
    assert _body(azure={"training_type": "globalstandard"})["trainingType"] == "globalstandard"
    assert AzureOpenAISettings().training_type == "standard"


def test_the_settings_default_training_type_is_used(tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    FineTuneJob.create(provider=azure(rig, training_type="developer"), base_model=MODEL, training_file=train)
    assert the_create(rig)["trainingType"] == "developerTier"
    assert rig.service.violations == []


def test_the_fake_answers_a_missing_training_type_as_the_service_does(tmp_path: Path) -> None:
    import httpx2

    rig = make_rig(tmp_path, "azure")
    with rig.service.client() as client:
        answer = client.post(
            f"{AZURE_ENDPOINT}/openai/v1/fine_tuning/jobs",
            json={"model": MODEL, "training_file": "file-x"},
            headers={"api-key": AZURE_KEY},
        )
    assert isinstance(answer, httpx2.Response) and answer.status_code == 400
    assert "does not support fine-tuning" in answer.json()["error"]["message"]


# -- Azure: the per-file limit -------------------------------------------------------------------------


def test_azure_refuses_a_file_over_512_mb_before_any_upload(tmp_path: Path, train: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as handle:  # sparse: no disk used
        handle.truncate(512 * 1024**2 + 1)
    rig = make_rig(tmp_path, "azure")
    with pytest.raises(NotSupportedError) as info:
        FineTuneJob.create(
            provider=azure(rig), base_model=MODEL, training_file=train, validation_file=big, validate_data=False
        )
    assert info.value.field == "validation_file" and str(big) in str(info.value) and "512 MB" in str(info.value)
    assert "\n" not in str(info.value)
    assert not any(r.method == "POST" for r in rig.service.log)  # the training file was not uploaded either


# -- OpenAI's wind-down ----------------------------------------------------------------------------------


def test_the_phases_are_one_table_read_by_date() -> None:
    assert [p.starts for p in PHASES] == [date(2026, 5, 7), date(2026, 7, 2), date(2027, 1, 6)]
    assert current_phase(date(2026, 5, 6)) is None
    assert current_phase(date(2026, 5, 7)) is PHASES[0] and current_phase(date(2026, 8, 1)) is PHASES[1]
    assert current_phase(date(2027, 2, 1)) is PHASES[2]


def test_retirement_warnings_come_near_and_past_the_date() -> None:
    assert retirement_warning("gpt-4o-mini-2024-07-18", date(2026, 1, 1)) is None  # far
    near = retirement_warning("gpt-4.1-2025-04-14", date(2026, 12, 1))
    assert near is not None and "2027-01-14" in near and "44 days" in near
    past = retirement_warning("gpt-4o", date(2027, 2, 1))
    assert past is not None and "retired" in past
    assert retirement_warning("gpt-4.1-nano-2025-04-14", date(2027, 2, 1)) is None


def test_equivalent_commands_carry_the_spec() -> None:
    spec = JobSpec(
        base_model=MODEL,
        training_file="data/train file.jsonl",
        validation_file="v.jsonl",
        suffix="x",
        hyperparameters={"epochs": 3, "learning_rate_multiplier": 0.5},
    )
    to_azure, to_local = equivalent_commands(spec)
    assert to_azure.startswith(f"anytune jobs create --provider azure-openai --base-model {MODEL} ")
    assert "--training-file 'data/train file.jsonl' --validation-file v.jsonl" in to_azure
    assert "--epochs 3" in to_azure and "--learning-rate-multiplier 0.5" in to_azure and "--suffix x" in to_azure
    assert to_local.startswith("anytune jobs create --provider local --base-model <open model id> ")
    assert "--epochs 3" in to_local and "learning-rate-multiplier" not in to_local


@pytest.mark.parametrize(("today", "phase"), [(date(2026, 6, 1), "phase 1"), (date(2026, 8, 1), "phase 2")])
def test_the_refusal_names_the_phase_and_the_commands(today: date, phase: str, tmp_path: Path, train: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    rig.service.refuse_fine_tuning = True
    with pytest.raises(PermissionDeniedError) as info:
        FineTuneJob.create(
            provider=openai_on(rig, today), base_model=MODEL, training_file=train, hyperparameters={"epochs": 2}
        )
    message = str(info.value)
    assert phase in message and "\n" not in message
    assert f"anytune jobs create --provider azure-openai --base-model {MODEL} --training-file {train}" in message
    assert "anytune jobs create --provider local" in message and "--epochs 2" in message
    assert "Existing jobs stay readable" in message
    assert len(rig.service.requests("POST", "/fine_tuning/jobs")) == 1  # refused once, not retried
    assert wind_down_refusal("no", date(2027, 2, 1)).count("no organisation") == 0  # phase 3 says "every"


def test_plan_and_validate_warn_of_a_retiring_base_model(
    tmp_path: Path, train: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(tmp_path, "openai")
    with caplog.at_level(logging.WARNING, logger="anytune.providers.openai"):
        plan = FineTuneJob.plan(provider=openai_on(rig, date(2026, 12, 1)), base_model=MODEL, training_file=train)
    assert any("retire on 2027-01-14" in note for note in plan.notes)
    assert any("retire on 2027-01-14" in r.getMessage() for r in caplog.records)
    far = FineTuneJob.plan(provider=openai_on(rig, date(2025, 1, 1)), base_model=MODEL, training_file=train)
    assert not any("retire" in note for note in far.notes)
    gone = FineTuneJob.plan(provider=openai_on(rig, date(2027, 3, 1)), base_model=MODEL, training_file=train)
    assert any("retired on 2027-01-14" in note for note in gone.notes)  # a warning, not a refusal
    assert rig.service.log == []


def test_a_fine_tuned_base_model_retires_with_its_base() -> None:
    warning = retirement_warning("ft:gpt-4o-mini-2024-07-18:org::abc123", date(2026, 12, 1))
    assert warning is not None and "2027-01-14" in warning


def test_data_validate_shows_the_retirement_notice(train: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.clitools import run_cli

    result = run_cli(capsys, "data", "validate", str(train), "--provider", "openai", "--model", MODEL)
    assert result.code == 0
    assert "notice" in result.err and "2027-01-14" in result.err  # near or past, whatever today is
    plain = run_cli(capsys, "data", "validate", str(train))
    assert "notice" not in plain.err
    as_json = run_cli(capsys, "data", "validate", str(train), "--provider", "openai", "--model", MODEL, "--json")
    assert any("2027-01-14" in n for n in json.loads(as_json.out)["notices"])
