"""The fake OpenAI / Azure OpenAI service held to the published descriptions: the vendored OpenAI
description stays the project's shared one; a field a surface does not define is refused as the
service refuses it (driven with the openai SDK itself, no adapter in between); the adapter's real
requests pass the closed schemas of every surface; Azure's answers follow the schema of the
api-version in use and never echo a request-only knob."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import openai
import pytest

from anytune import FineTuneJob, JobStatus, NotSupportedError
from tests.providers.openai_fake import (
    AZURE_SCHEMAS,
    SCHEMA_PATH,
    answer_problems,
    closed,
    problems,
    surface,
    unknown_fields,
)
from tests.providers.openai_support import (
    AZURE_ENDPOINT,
    AZURE_KEY,
    MODEL,
    OPENAI_BASE,
    OPENAI_KEY,
    STRING_CHECK_GRADER,
    Rig,
    chat_file,
    make_rig,
    preference_file,
    services_keep_to_their_schemas,  # noqa: F401 (autouse: every fake held to its published schemas)
)

S = JobStatus
#: The project's shared copy (../shared from the repository root), absent in a fresh clone.
SHARED_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "openai-finetuning-openapi.json"
DATED = ("2024-10-21", "2025-04-01-preview")
V1_VERSIONS = ("v1", "preview")
AZURE_SURFACES = ("v1", *DATED)


def openai_client(rig: Rig) -> openai.OpenAI:
    return openai.OpenAI(api_key=OPENAI_KEY, base_url=OPENAI_BASE, http_client=rig.service.client(), max_retries=0)


def azure_client(rig: Rig, version: str) -> openai.OpenAI:
    if version == "v1":
        return openai.OpenAI(
            api_key="not-used",
            base_url=f"{AZURE_ENDPOINT}/openai/v1/",
            default_headers={"api-key": AZURE_KEY},
            http_client=rig.service.client(),
            max_retries=0,
        )
    return openai.AzureOpenAI(
        api_key=AZURE_KEY,
        azure_endpoint=AZURE_ENDPOINT,
        api_version=version,
        http_client=rig.service.client(),
        max_retries=0,
    )


def refused_on_purpose(rig: Rig, *names: str) -> None:
    """The request broke the schema on purpose: the fake recorded it, naming the fields."""
    assert rig.service.violations and all(any(n in v for v in rig.service.violations) for n in names)
    rig.service.violations.clear()


# -- the vendored description -----------------------------------------------------------------------


def test_the_fake_reads_the_description_vendored_beside_it() -> None:
    assert Path(__file__).resolve().parent / "openai-finetuning-openapi.json" == SCHEMA_PATH
    assert surface("openai").operations["POST /fine_tuning/jobs"].body == "CreateFineTuningJobRequest"


def test_the_vendored_description_is_the_shared_one() -> None:
    if not SHARED_SCHEMA.is_file():
        pytest.skip(f"no shared copy at {SHARED_SCHEMA} to compare with (a fresh clone has only the vendored one)")
    assert SCHEMA_PATH.read_bytes() == SHARED_SCHEMA.read_bytes(), (
        f"{SCHEMA_PATH.name} drifted from {SHARED_SCHEMA}: copy the shared description again"
    )


def test_the_azure_fragments_name_their_sources() -> None:
    sources = [AZURE_SCHEMAS["v1"]["source"], *(v["source"] for v in AZURE_SCHEMAS["versions"].values())]
    for source in sources:
        assert source["repo"] == "Azure/azure-rest-api-specs" and len(source["commit"]) == 40
    assert all(version in AZURE_SCHEMAS["versions"][version]["source"]["path"] for version in DATED)


def test_closing_a_schema_refuses_only_unlisted_fields() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "method": {"type": "object", "properties": {"n_epochs": {"type": "integer"}}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "items": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}}}},
        },
    }
    original = copy.deepcopy(schema)
    strict = closed(schema)
    assert schema == original  # a copy: the published schema is left as it is
    assert strict["additionalProperties"] is False
    assert strict["properties"]["method"]["additionalProperties"] is False
    assert strict["properties"]["items"]["items"]["additionalProperties"] is False
    assert strict["properties"]["metadata"] == original["properties"]["metadata"]  # a map stays a map


def test_unknown_fields_are_named_by_their_path() -> None:
    body = {
        "model": MODEL,
        "training_file": "file-1",
        "n_epoch": 3,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "lr": 0.1}}},
        "metadata": {"any": "key"},
    }
    assert unknown_fields("openai", "CreateFineTuningJobRequest", body) == [
        "method.supervised.hyperparameters.lr",
        "n_epoch",
    ]
    assert problems("openai", "CreateFineTuningJobRequest", {"model": MODEL, "training_file": "f"}) == []


def test_an_unknown_field_inside_a_one_of_is_found_in_the_branch_meant() -> None:
    grader = dict(STRING_CHECK_GRADER)
    method: dict[str, Any] = {"type": "reinforcement", "reinforcement": {"grader": grader}}
    body = {"model": MODEL, "training_file": "f", "method": method}
    assert unknown_fields("openai", "CreateFineTuningJobRequest", body) == []
    method["reinforcement"] = {"grader": {**grader, "operator": "eq"}}
    assert unknown_fields("openai", "CreateFineTuningJobRequest", body) == ["method.reinforcement.grader.operator"]


# -- refused as the service refuses it (the SDK against the fake, no adapter) ------------------------


def test_a_misspelt_argument_is_refused_as_openai_refuses_it(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(rig).fine_tuning.jobs.create(model=MODEL, training_file="file-x", extra_body={"n_epoch": 3})
    assert info.value.status_code == 400
    assert info.value.body == {
        "message": "Unrecognized request argument supplied: n_epoch",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert rig.service.jobs == {}  # refused before anything was created
    refused_on_purpose(rig, "n_epoch")


def test_several_misspelt_arguments_are_listed(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(rig).fine_tuning.jobs.create(
            model=MODEL, training_file="file-x", extra_body={"n_epoch": 3, "learning_rate": 1e-4}
        )
    assert info.value.message.endswith("Unrecognized request arguments supplied: learning_rate, n_epoch")
    refused_on_purpose(rig, "n_epoch", "learning_rate")


def test_a_misspelt_nested_parameter_is_named_by_its_path(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    method: Any = {"type": "supervised", "supervised": {"hyperparameters": {"n_epoch": 3}}}
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(rig).fine_tuning.jobs.create(model=MODEL, training_file="file-x", method=method)
    assert info.value.body == {
        "message": "Unknown parameter: 'method.supervised.hyperparameters.n_epoch'.",
        "type": "invalid_request_error",
        "param": "method.supervised.hyperparameters.n_epoch",
        "code": "unknown_parameter",
    }
    refused_on_purpose(rig, "n_epoch")


def test_an_unknown_upload_field_is_refused_too(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: chunk_size"):
        openai_client(rig).uploads.create(
            bytes=10, filename="t.jsonl", mime_type="text/jsonl", purpose="fine-tune", extra_body={"chunk_size": 5}
        )
    assert rig.service.uploads == {}
    refused_on_purpose(rig, "chunk_size")


@pytest.mark.parametrize("version", AZURE_SURFACES)
def test_azure_refuses_a_field_its_version_does_not_define(tmp_path: Path, version: str) -> None:
    rig = make_rig(tmp_path, "azure")
    with pytest.raises(openai.BadRequestError) as info:
        azure_client(rig, version).fine_tuning.jobs.create(
            model=MODEL, training_file="file-x", extra_body={"trainingType": "standard", "n_epoch": 3}
        )
    assert info.value.body == {"code": "invalidPayload", "message": "Unrecognized request argument supplied: n_epoch"}
    refused_on_purpose(rig, "n_epoch")


@pytest.mark.parametrize("version", DATED)
def test_the_dated_versions_refuse_what_only_openai_defines(tmp_path: Path, version: str) -> None:
    rig = make_rig(tmp_path, "azure")
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: metadata"):
        azure_client(rig, version).fine_tuning.jobs.create(
            model=MODEL, training_file="file-x", metadata={"k": "v"}, extra_body={"trainingType": "standard"}
        )
    refused_on_purpose(rig, "metadata")


def test_2025_04_01_preview_takes_no_supervised_hyperparameters_under_the_method(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    method: Any = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    with pytest.raises(openai.BadRequestError, match=r"Unknown parameter: 'method\.supervised'\."):
        azure_client(rig, "2025-04-01-preview").fine_tuning.jobs.create(
            model=MODEL, training_file="file-x", method=method, extra_body={"trainingType": "standard"}
        )
    refused_on_purpose(rig, "method.supervised")


def test_an_operation_the_version_lacks_is_not_found(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    with pytest.raises(openai.NotFoundError):
        azure_client(rig, "2024-10-21").fine_tuning.jobs.pause("ftjob-abc")
    assert rig.service.violations == []


def test_a_query_parameter_the_surface_does_not_define_is_recorded(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    azure_client(rig, "v1").fine_tuning.jobs.list(metadata={"team": "a"})
    assert rig.service.violations == ["v1 GET /fine_tuning/jobs: query parameter 'metadata[team]' is not defined"]
    rig.service.violations.clear()
    openai_rig = make_rig(tmp_path / "o", "openai")
    openai_client(openai_rig).fine_tuning.jobs.list(metadata={"team": "a"})  # OpenAI's list takes it


# -- the adapter's real requests, and the answers, on every surface ------------------------------------


def run_everything(rig: Rig, tmp_path: Path, version: str | None) -> None:
    """Every request the adapter makes: both upload paths, a rich create, pause and resume where the
    surface has them, events, checkpoints, the result file, DPO where there is a method."""
    options: dict[str, Any] = {"upload_threshold_bytes": 1000, "upload_part_bytes": 1024}
    if version is not None:
        options["api_version"] = version
    provider = rig.provider(**options)
    train, valid = chat_file(tmp_path / "train.jsonl"), chat_file(tmp_path / "valid.jsonl", n=4, offset=50)
    assert train.stat().st_size > 1000 >= valid.stat().st_size  # the Uploads API, then the Files API
    fields: dict[str, Any] = {
        "validation_file": valid,
        "suffix": "demo",
        "tags": {"team": "nlp"},
        "hyperparameters": {"epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5, "seed": 7},
    }
    if version != "2024-10-21":
        fields["openai"] = {"wandb": {"project": "ft", "entity": "me", "tags": ["a"]}}
    job = FineTuneJob.create(provider=provider, base_model=MODEL, training_file=train, **fields)
    if version != "2024-10-21":
        while job.refresh().status is not S.RUNNING:
            pass
        job.pause()
        job.refresh()
        job.resume()
    assert job.wait().status is S.SUCCEEDED
    assert job.result().checkpoints
    if version != "2024-10-21":
        dpo = FineTuneJob.create(
            provider=provider,
            base_model=MODEL,
            training_file=preference_file(tmp_path / "prefs.jsonl"),
            method="dpo",
            hyperparameters={"epochs": 2, "beta": 0.2},
        )
        assert dpo.wait().status is S.SUCCEEDED


@pytest.mark.parametrize(("flavour", "version"), [("openai", None), *(("azure", v) for v in AZURE_SURFACES)])
def test_the_adapters_requests_pass_the_closed_schemas(tmp_path: Path, flavour: Any, version: str | None) -> None:
    rig = make_rig(tmp_path, flavour)
    run_everything(rig, tmp_path, version)
    name = version or "openai"
    checked = {(op, schema) for s, op, schema in rig.service.checked if s == name}
    create = "FineTuningJobCreation" if version in DATED else "CreateFineTuningJobRequest"
    assert ("POST /fine_tuning/jobs", create) in checked  # checked closed
    operations = {op for op, _ in checked}
    uploads = {"POST /uploads", "POST /uploads/{upload_id}/parts", "POST /uploads/{upload_id}/complete"}
    if version in V1_VERSIONS:
        # Azure's v1 defines no /uploads: the file over the threshold goes whole through /files.
        assert not uploads & operations and "POST /files" in operations
        assert len(rig.service.requests("POST", r".*/files")) >= 2
    else:
        upload = "UploadFileStartBody" if version in DATED else "CreateUploadRequest"
        assert ("POST /uploads", upload) in checked and uploads | {"POST /files"} <= operations
    assert {
        "GET /fine_tuning/jobs/{fine_tuning_job_id} answer",
        "GET /fine_tuning/jobs/{fine_tuning_job_id}/events answer",
        "GET /fine_tuning/jobs/{fine_tuning_job_id}/checkpoints answer",
    } <= operations
    # services_keep_to_their_schemas: no request or answer broke the surface's schema


def test_a_reinforcement_body_passes_the_closed_schemas(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "openai")
    grader = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}"}
    grader.update({"reference": "{{item.answer}}", "operation": "eq"})
    FineTuneJob.create(
        provider=rig.provider(),
        base_model="o4-mini-2025-04-16",
        training_file=chat_file(tmp_path / "t.jsonl"),
        hyperparameters={"epochs": 2},
        openai={"reinforcement": {"grader": grader, "hyperparameters": {"reasoning_effort": "low"}}},
    )
    assert ("openai", "POST /fine_tuning/jobs", "CreateFineTuningJobRequest") in rig.service.checked


def job_answers(rig: Rig) -> list[dict[str, Any]]:
    return [p for _, _, p in rig.service.answers if isinstance(p, dict) and p.get("object") == "fine_tuning.job"]


@pytest.mark.parametrize("version", AZURE_SURFACES)
def test_azure_answers_follow_the_version_in_use(tmp_path: Path, version: str) -> None:
    rig = make_rig(tmp_path, "azure")
    run_everything(rig, tmp_path, version)
    assert {s for s, _, _ in rig.service.answers} == {version}
    [first, *_] = rig.service.requests("POST", "/fine_tuning/jobs")
    assert first.json["trainingType"] == "standard"  # sent, as the service requires ...
    jobs = job_answers(rig)
    assert jobs and not any("trainingType" in j for j in jobs)  # ... and never echoed: a request knob
    statuses = {j["status"] for j in jobs}
    levels = {e["level"] for _, op, p in rig.service.answers if op.endswith("/events") for e in p["data"]}
    if version == "v1":  # OpenAI's shapes, with Azure's user_provided_suffix
        assert statuses == {"validating_files", "queued", "running", "paused", "succeeded"}
        assert levels == {"info", "warn"}
        assert {j["user_provided_suffix"] for j in jobs} == {"demo", None} and not any("suffix" in j for j in jobs)
        return
    published = AZURE_SCHEMAS["versions"][version]["definitions"]
    assert statuses <= set(published["FineTuningState"]["enum"]) and {"created", "pending"} <= statuses
    if version == "2025-04-01-preview":
        assert {"pausing", "paused", "resuming"} <= statuses  # the dated two-step pause and resume
    assert levels == {"info", "warning"}
    for answer in jobs:
        assert set(answer) <= set(published["FineTuningJob"]["properties"])
        assert None not in answer.values()  # Swagger 2.0: a value the service lacks is left out
        assert answer["suffix"].startswith("demo-") or answer["method"]["type"] == "dpo"


def a_job_answer(tmp_path: Path, version: str) -> dict[str, Any]:
    rig = make_rig(tmp_path / version, "azure")
    provider = rig.provider(api_version=version)
    FineTuneJob.create(provider=provider, base_model=MODEL, training_file=chat_file(tmp_path / "t.jsonl"))
    return job_answers(rig)[-1]


@pytest.mark.parametrize("version", AZURE_SURFACES)
def test_the_answer_check_refuses_what_the_version_does_not_publish(tmp_path: Path, version: str) -> None:
    answer = a_job_answer(tmp_path, version)
    assert answer_problems(version, "FineTuningJob", answer) == []
    echoed = {**answer, "trainingType": "standard"}
    assert any("trainingType" in p for p in answer_problems(version, "FineTuningJob", echoed))
    if version == "v1":
        assert answer_problems(version, "FineTuningJob", {**answer, "status": "pending"})  # a dated name
        assert answer_problems(version, "FineTuningJob", {**answer, "suffix": "x"})  # the dated field
        return
    assert answer_problems(version, "FineTuningJob", {**answer, "fine_tuned_model": None})  # no nulls
    assert answer_problems(version, "FineTuningJob", {**answer, "metadata": {"k": "v"}})  # OpenAI's, not here
    paused = answer_problems(version, "FineTuningJob", {**answer, "status": "paused"})
    assert bool(paused) is (version == "2024-10-21")


def test_2024_10_21_has_no_pause_and_the_adapter_says_so_before_sending(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "azure")
    provider = rig.provider(api_version="2024-10-21")
    job = FineTuneJob.create(provider=provider, base_model=MODEL, training_file=chat_file(tmp_path / "t.jsonl"))
    for action in (job.pause, job.resume):
        with pytest.raises(NotSupportedError) as info:
            action()
        assert "2024-10-21" in str(info.value) and "api_version 'v1'" in str(info.value)
    assert rig.service.requests("POST", r"/fine_tuning/jobs/[^/]+/(pause|resume)") == []
