"""The Azure ML provider: anytune's contract over the package's parts.

``submit`` resolves the submission from the spec (:mod:`.options`), checks the workspace, the model
(:mod:`.catalog`) and the compute before anything is uploaded, uploads the data (:mod:`.data`),
then creates the job once under a name derived from the idempotency key (:func:`create_once`: after
an ambiguous failure the name is looked up before any further attempt).  ``get`` maps the job and
its run-history details (:mod:`.tracking`) to a record and journals what changed (:mod:`.journal`).
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from anytune._boundary import boundary
from anytune._capabilities import Capabilities
from anytune._create_once import create_once
from anytune._deploy import Deployment
from anytune._provider import PlannedRequest, PlannedUpload, Provider, ProviderArgs, SubmitPlan
from anytune._spec import JobSpec, Method, Quantization
from anytune._types import Event, FineTunedModel, JobRecord, MetricPoint
from anytune.errors import (
    AnytuneError,
    ConfigError,
    InvalidRequestError,
    JobNotFoundError,
    ProviderError,
    RateLimitError,
    ServiceUnavailableError,
)
from anytune.providers.azureml.catalog import ensure_marketplace, resolve_model
from anytune.providers.azureml.data import Uploads, converted_digest
from anytune.providers.azureml.deploy import AzureMLDeploySettings, Deployer
from anytune.providers.azureml.endpoints import EndpointChat
from anytune.providers.azureml.errors import NAME, is_ambiguous, is_retryable, retry_hint
from anytune.providers.azureml.journal import EventJournal
from anytune.providers.azureml.mapping import (
    HYPERPARAMETERS,
    TASKS,
    Submission,
    compute_id,
    data_asset_name,
    deploy_hints,
    job_entity,
    job_name,
    raw_status,
    registered_output,
    rest_body,
    subscription_name,
    to_record,
)
from anytune.providers.azureml.options import build_submission, check_options
from anytune.providers.azureml.status import HAS_RUN, map_status
from anytune.providers.azureml.tracking import RunHistory
from anytune.providers.azureml.workspace import AzureMLSettings, Connection, Workspace

if TYPE_CHECKING:
    from typing_extensions import Unpack


class AzureMLProvider(Provider[AzureMLSettings]):
    """Azure Machine Learning fine-tuning; see the package docstring.

    Args:
        settings: :class:`AzureMLSettings`.
        store: the upload cache (content uploaded once per workspace).
        home: anytune's home (event journals, converted files before upload).
        sleep, clock, rand: the time sources of retries and waits (tests pass a fake clock).
        credential: an azure-core ``TokenCredential`` (default: from the ``identity`` setting).
        transport: an azure-core ``HttpTransport`` every request goes through (tests pass a fake).
        http_client: the ``httpx2.Client`` serverless endpoints are called through by the ``openai``
            SDK (evaluation's chat; tests pass a fake).
        env: the environment the workspace falls back to (default: ``os.environ``).
    """

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({Method.SFT}),
        hyperparameters=frozenset(HYPERPARAMETERS["managed"]),
        lora=True,
        lora_fields=frozenset({"r", "alpha", "dropout"}),
        quantization=frozenset({Quantization.NONE}),
        data_formats=frozenset({"chat", "prompt_completion"}),
        sections=frozenset({"azure", "azureml"}),
        output_name=True,  # the registered output model's name
        min_examples=10,
        service="Azure ML",
        hints={
            "hyperparameters.learning_rate_multiplier": "Azure ML takes an absolute learning_rate, not a multiplier",
            "hyperparameters.warmup_ratio": "Azure ML takes warmup_steps (managed compute), not a ratio",
            "azure_openai": "azure_openai options are for Azure OpenAI; Azure ML reads the azureml section",
        },
        notes="serverless (MaaS, marketplace models with opt-in) or managed compute (MaaP); "
        "LoRA and most hyperparameters on managed only",
        extra={"deployments": ["serverless", "managed"], "tasks": sorted(TASKS)},
    )
    Settings: ClassVar[type[AzureMLSettings]] = AzureMLSettings
    DeploySettings: ClassVar[type[AzureMLDeploySettings]] = AzureMLDeploySettings
    poll_interval: ClassVar[float] = 30.0

    def __init__(
        self,
        settings: AzureMLSettings | None = None,
        *,
        credential: Any = None,
        transport: Any = None,
        http_client: Any = None,
        env: Mapping[str, str] | None = None,
        **base: Unpack[ProviderArgs],
    ) -> None:
        super().__init__(settings, **base)
        self.connection = Connection(
            self.settings,
            env=os.environ if env is None else env,
            credential=credential,
            transport=transport,
            sleep=self.sleep,
            clock=self.clock,
        )
        self.runs = RunHistory(self.connection)
        s = self.settings
        self._chat = EndpointChat(
            self.connection,
            http_client=http_client,
            policy=s.retry_policy(max_attempts=s.retry_total + 1, deadline=s.timeout, max_backoff=s.retry_backoff_max),
            sleep=self.sleep,
        )
        self.journal = EventJournal(self.home)
        # Base models resolved by check_base_model, for the submit that follows it.
        self._models: dict[Any, str] = {}

    def workspace(self, *, required: bool = True) -> Workspace | None:
        """The workspace in force: settings, then Azure ML's variables, then ``config.json``.

        Raises:
            ConfigError: ``required`` and some part is missing.
        """
        return self.connection.workspace(required=required)

    def _uploads(self) -> Uploads:
        # Built per use: FineTuneJob gives a provider its store after construction.
        return Uploads(self.connection, self.store, self.home / "azureml" / "uploads")

    # -- configuration (no network) -------------------------------------------------------------
    def validate(self, spec: JobSpec) -> None:
        """Refuse what the chosen deployment cannot do (pure).

        Raises:
            NotSupportedError: an option or hyperparameter the deployment does not take.
            ConfigError: managed compute with neither a cluster nor instance types.
        """
        check_options(spec, self.settings)

    def check_base_model(self, spec: JobSpec, *, dry_run: bool = False) -> None:
        """Look the base model up in its registry before anything is recorded: a name that is not
        there, or cannot be fine-tuned for the task, fails the create at once (as does a missing
        workspace or credential), not after the job's row exists. A dry run sends nothing and
        needs no credential, so it skips the look-up. The answer is kept for ``submit``."""
        if dry_run:
            return
        sub = build_submission(spec, self.settings, "<check>")
        self.connection.require_workspace()
        self._models[(sub.model, sub.task)] = resolve_model(self.connection, sub)

    def _model_uri(self, sub: Submission) -> str:
        found = self._models.pop((sub.model, sub.task), None)
        return found if found is not None else resolve_model(self.connection, sub)

    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        sub = build_submission(spec, self.settings, idempotency_key)
        ws = self.workspace(required=False)
        uploads: builtins.list[PlannedUpload] = []
        ids: dict[str, str] = {}
        for purpose, path in (("training", spec.training_file), ("validation", spec.validation_file)):
            if path is None:
                continue
            size, digest = converted_digest(Path(path), sub.task)
            uploads.append(PlannedUpload(path=str(path), purpose=purpose, bytes=size, sha256=digest))
            ids[purpose] = f"azureml:{data_asset_name(self.settings.data_prefix, digest)}:1"
        requests: builtins.list[PlannedRequest] = []
        if sub.needs_marketplace:
            requests.append(
                PlannedRequest(
                    operation="MLClient.marketplace_subscriptions.begin_create_or_update",
                    body={
                        "name": subscription_name(sub.model.name),
                        "properties": {"modelId": sub.model.marketplace_id},
                    },
                )
            )
        with boundary(self.connection.errors("build the fine-tuning job")):
            entity = job_entity(
                sub, sub.model.uri, ids["training"], ids.get("validation"), compute_id(sub.compute, _arm(ws))
            )
        requests.append(PlannedRequest(operation="MLClient.jobs.create_or_update", body=rest_body(entity)))
        return SubmitPlan(provider=self.name, uploads=uploads, requests=requests, notes=_plan_notes(sub, ws, ids))

    # -- submit ---------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        sub = build_submission(spec, self.settings, idempotency_key)
        ws = self.connection.require_workspace()
        self.connection.info()
        existing = self._find_job(sub.name)
        if existing is not None:
            # Submitted before under this key (a retried create): the same job, not a second one.
            return to_record(self.name, existing)
        model_uri = self._model_uri(sub)
        if sub.needs_marketplace:
            ensure_marketplace(self.connection, sub, sleep=self.sleep, clock=self.clock)
        compute = self._check_compute(sub, ws) if sub.compute else None
        uploads = self._uploads()
        training = uploads.upload(spec.training_path, sub.task)
        validation = uploads.upload(Path(spec.validation_file), sub.task) if spec.validation_file else None
        record = to_record(self.name, self._create(sub, model_uri, training, validation, compute))
        self.journal.record_status(record)
        return record

    def find(self, idempotency_key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        self.connection.require_workspace()
        found = self._find_job(job_name(idempotency_key))
        return None if found is None else to_record(self.name, found)

    def _find_job(self, name: str) -> Any:
        return self.connection.find(f"look up job {name}", lambda: self.connection.ml().jobs.get(name))

    def _create(
        self, sub: Submission, model_uri: str, training: str, validation: str | None, compute: str | None
    ) -> Any:
        """Create the job; after an ambiguous failure look the name up before sending it again."""
        s = self.settings

        def create() -> Any:
            with boundary(self.connection.errors(f"create fine-tuning job {sub.name}")):
                entity = job_entity(sub, model_uri, training, validation, compute)
                return self.connection.ml().jobs.create_or_update(entity)

        return create_once(
            create,
            lambda: self._find_job(sub.name),
            is_ambiguous=is_ambiguous,
            retry_on=is_retryable,
            policy=s.create_policy(),
            retry_after=retry_hint,
            settle=self.create_settle,
            **self.timing,
            what=f"create fine-tuning job {sub.name}",
        )

    def _check_compute(self, sub: Submission, ws: Workspace) -> str:
        assert sub.compute is not None
        name = sub.compute.rsplit("/", 1)[-1].removeprefix("azureml:")
        ml = self.connection.ml()

        def missing() -> AnytuneError:
            known: builtins.list[str] = []
            with contextlib.suppress(Exception):
                known = sorted(str(c.name) for c in ml.compute.list())
            listing = f" Clusters in this workspace: {', '.join(known)}." if known else ""
            return ConfigError(
                f"compute cluster {name!r} does not exist in workspace {ws.name!r}."
                f"{listing} Create it, or use {sub.section}.instance_type instead",
                field=f"{sub.section}.compute",
            )

        with boundary(self.connection.errors(f"look up compute {name!r}", not_found=missing)):
            compute = ml.compute.get(name)
        return str(compute.id)

    # -- state ----------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        ref = f"{self.name}:{job_id}"
        self.connection.info()
        with boundary(self.connection.errors(f"get job {job_id}", not_found=lambda: JobNotFoundError(ref))):
            job = self.connection.ml().jobs.get(job_id)
        run = self.runs.run(job_id, map_status(raw_status(job)))
        record = to_record(self.name, job, run)
        self.journal.record_status(record, warnings=run.get("warnings") or [])
        return record

    def cancel(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record.done or record.raw_status.lower() == "cancelrequested":
            return record
        ref = f"{self.name}:{job_id}"
        with boundary(self.connection.errors(f"cancel job {job_id}", not_found=lambda: JobNotFoundError(ref))):
            # polling=False: the poller would otherwise follow the operation on a thread of its own.
            self.connection.ml().jobs.begin_cancel(job_id, polling=False)
        return self.get(job_id)

    def list(self, limit: int = 20) -> builtins.list[JobRecord]:
        out: builtins.list[JobRecord] = []
        with boundary(self.connection.errors("list jobs")):
            for job in self.connection.ml().jobs.list():
                if job is None or str(getattr(job, "type", "")).lower() != "finetuning":
                    continue
                out.append(to_record(self.name, job))
                if len(out) >= limit:
                    break
        return out

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        """Metric points from the MLflow metrics of the job's run and its child runs, by step."""
        return self.runs.metrics(job_id)

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        """Status changes (as observed by :meth:`get`) and metric points, oldest first."""
        if not self.journal.read(job_id):
            self.get(job_id)
        last = self.journal.last_status(job_id)
        if last is not None and last.status in HAS_RUN:
            # Metrics are a bonus: a metrics store that stays unavailable must not stop the stream.
            with contextlib.suppress(ServiceUnavailableError, RateLimitError, InvalidRequestError):
                self.journal.record_metrics(job_id, self.metrics(job_id))
        for event in self.journal.read(job_id):
            if after is None or event.id > after:
                yield event

    # -- chat (evaluation) ------------------------------------------------------------------------
    def chat(
        self,
        model: str,
        messages: builtins.list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
    ) -> str:
        """One reply from the endpoint ``model`` names (``ENDPOINT`` or ``ENDPOINT/DEPLOYMENT``): a
        serverless endpoint through its OpenAI-shaped chat API, a managed online endpoint through
        ``online_endpoints.invoke`` (see :mod:`.endpoints`). A registered model answers only once
        deployed, so ``anytune eval`` on Azure ML needs ``--deployment`` (and ``--base-deployment``)."""
        return self._chat(model, messages, max_tokens=max_tokens, temperature=temperature, seed=seed)

    # -- deploy (see :mod:`.deploy`) --------------------------------------------------------------
    def deploy(self, model: FineTunedModel, name: str, settings: Any, *, wait: bool, timeout: float) -> Deployment:
        """A serverless endpoint (a serverless job's model) or a managed online endpoint with one
        deployment (a managed job's model), found or created under ``name``; see :mod:`.deploy`."""
        found: Deployment = Deployer(self).deploy(model, name, settings, wait=wait, timeout=timeout)
        return found

    def deployment(self, model: FineTunedModel, name: str) -> Deployment | None:
        found: Deployment | None = Deployer(self).deployment(model, name)
        return found

    def undeploy(self, model: FineTunedModel, name: str) -> Deployment | None:
        gone: Deployment | None = Deployer(self).undeploy(model, name)
        return gone

    # -- result ---------------------------------------------------------------------------------
    def result(self, record: JobRecord) -> FineTunedModel:
        """The registered output model (name, version, asset id) and how to deploy it."""
        ml = self.connection.ml()
        output = (record.output or {}).get("registered_model")
        if not output:
            with boundary(self.connection.errors(f"get job {record.id}")):
                output = registered_output(ml.jobs.get(record.id))
        if not output:
            raise InvalidRequestError(f"job {record.id} succeeded but names no registered model", provider=NAME)
        with boundary(self.connection.errors(f"get model {output}")):
            model = ml.models.get(output, label="latest")
        version = str(model.version)
        info = self.connection.info()
        location, ws_id = info.get("location"), info.get("workspace_id")
        ws_model_uri = (
            f"azureml://locations/{location}/workspaces/{ws_id}/models/{output}/versions/{version}"
            if location and ws_id
            else str(model.id)
        )
        serverless = (record.raw.get("tags") or {}).get("anytune.deployment", "serverless") == "serverless"
        points: builtins.list[MetricPoint] = []
        with contextlib.suppress(ProviderError):
            points = self.metrics(record.id)
        return FineTunedModel(
            provider=record.provider,
            job_ref=record.ref,
            base_model=record.base_model,
            model_id=f"azureml:{output}:{version}",
            final_metrics=points[-1] if points else None,
            extra={
                "name": output,
                "version": version,
                "asset_id": str(model.id),
                "workspace_model_uri": ws_model_uri,
                "deploy": deploy_hints(output, str(model.id), ws_model_uri, serverless=serverless),
            },
        )


def _arm(ws: Workspace | None) -> str | None:
    return ws.arm_id if ws is not None else None


def _plan_notes(sub: Submission, ws: Workspace | None, ids: Mapping[str, str]) -> builtins.list[str]:
    """What a dry run tells a user beyond the requests."""
    notes = [
        f"deployment: {sub.deployment}; task: {sub.task}; job name: {sub.name}"
        + (" (KEYHASH: from the idempotency key assigned at submit)" if "KEYHASH" in sub.name else ""),
        f"data go to the workspace's default datastore as uri_file assets ({', '.join(ids.values())}); "
        "content already uploaded is reused",
    ]
    if ws is None:
        notes.append("no workspace configured yet: submit needs subscription_id, resource_group and workspace")
    if sub.model.version is None and sub.model.asset_id is None:
        notes.append(
            f"the latest version of {sub.model.name!r} in registry {sub.model.registry!r} is looked up at submit"
        )
    if sub.needs_marketplace:
        consent = (
            "created first (accept_marketplace_terms is set)"
            if sub.accept_marketplace_terms
            else "required: set accept_marketplace_terms=true, or subscribe in Azure AI Foundry"
        )
        notes.append(f"marketplace subscription for {sub.model.marketplace_id}: {consent}")
    if sub.compute:
        notes.append(f"compute cluster {sub.compute!r} must exist in the workspace")
    return notes
