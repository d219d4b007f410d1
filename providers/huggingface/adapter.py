"""The ``huggingface`` provider: the contract, on Hugging Face Jobs.

Reliability, and why:

* A create carries the label ``anytune-idempotency_key`` (labels allow no dots). Before creating,
  and after an ambiguous failure (dropped connection, 408, 5xx), jobs with that label are looked up
  (:func:`anytune._create_once.create_once`).
* Reads retry on 408/429/5xx and connection errors, honouring ``Retry-After``, within a deadline.
* The token is registered for redaction and handed to the job only as a secret; every
  huggingface_hub and httpx2 exception becomes an anytune error at :func:`anytune._boundary.boundary`,
  which scrubs the original before chaining it.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib.util
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel

from anytune._base_model import check_base_model, hub_offline
from anytune._boundary import Translate, boundary
from anytune._capabilities import ALL_TRACKERS, Capabilities
from anytune._create_once import create_once
from anytune._deploy import Deployment, is_gone, is_settled, wait_until
from anytune._files import atomic_write
from anytune._provider import PlannedRequest, Provider, ProviderArgs, ProviderSettings, SubmitPlan
from anytune._retry import RetryPolicy, retry_after_of, retry_call
from anytune._secrets import redact
from anytune._spec import HFOptions, JobSpec, LocalOptions, Method, Quantization
from anytune._types import Event, FineTunedModel, JobRecord, JobStatus, MetricPoint
from anytune.errors import (
    AnytuneError,
    AuthenticationError,
    ConfigError,
    JobNotFoundError,
    NotSupportedError,
    ProviderError,
    UsageError,
)
from anytune.local_backend.joblog import RESULT_PREFIX

from .endpoints import (
    HuggingFaceDeploySettings,
    adapter_of,
    chat_model_of,
    create_arguments,
    deployment_from_raw,
    describe,
    serves,
    split_target,
)
from .errors import is_ambiguous, is_transient, translate_error
from .hub import NAME, HttpClientFactory, HuggingFaceSettings, import_hub, make_api, resolve_endpoint, resolve_token
from .records import EPOCH, JobView, job_events, last_of_kind, metric_points, record_from_view, view_from_info
from .request import (
    LABEL_KEY,
    JobFiles,
    build_job_request,
    check_hf_options,
    default_dataset_repo,
    default_output_repo,
    sanitize_label,
)
from .status import map_stage
from .uploads import plan_inputs, upload_inputs

if TYPE_CHECKING:
    from huggingface_hub import HfApi
    from typing_extensions import Unpack

__all__ = ["HuggingFaceProvider"]

T = TypeVar("T")

#: ``local`` options a job cannot honour, and why (the job runs the local trainer, so the rest apply).
_LOCAL_REFUSALS: tuple[tuple[str, Callable[[LocalOptions], bool], str], ...] = (
    ("local.device", lambda o: o.device == "mps", "a job runs on CUDA or CPU hardware"),
    ("local.num_devices", lambda o: o.num_devices > 1, "one process per job is implemented"),
    ("local.output_dir", lambda o: o.output_dir is not None, "the adapter goes to the Hub repo (hf.output_repo)"),
    ("local.merge", lambda o: o.merge, "only the adapter is pushed"),
)


class HuggingFaceProvider(Provider[HuggingFaceSettings]):
    """anytune's trainer on Hugging Face Jobs, the adapter pushed to a Hub model repo.

    Args:
        settings: the typed settings (default: ``HuggingFaceSettings()``).
        store: where uploads are remembered.
        home: anytune's home directory.
        sleep, clock, rand: what retries sleep on, their deadline clock and jitter.
        http_client_factory: makes the ``httpx2.Client`` huggingface_hub sends through. huggingface_hub
            has one client per process, so this installs it process-wide (its public
            ``set_client_factory``) when the provider first connects; None keeps the configured one.
    """

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({Method.SFT, Method.DPO}),
        lora=True,
        quantization=frozenset(Quantization),
        data_formats=frozenset({"chat", "prompt_completion", "preference"}),
        # The job runs the local trainer: its options section (packing, logging...) applies too.
        sections=frozenset({"hf", "local"}),
        # The job runs the local trainer, which logs to these (the job installs the tracker's package).
        trackers=ALL_TRACKERS,
        output_name=True,  # the Hub model repo's name (hf.output_repo wins)
        pause=False,
        min_examples=1,
        notes="anytune's trainer on Hugging Face Jobs; adapter pushed to a Hub model repo",
        service="Hugging Face Jobs",
        extra={"flavors": "hf.flavor (default a10g-small)", "resume": False},
    )
    Settings: ClassVar[type[ProviderSettings]] = HuggingFaceSettings
    # A log read of a running job lasts a few seconds (the Hub holds the stream open): poll calmly.
    poll_interval: ClassVar[float] = 10.0
    #: ``NAMESPACE/ID`` (or the bare id, in the token's own namespace).
    job_id_pattern: ClassVar[str] = r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9]{1,64}"
    DeploySettings: ClassVar[type[BaseModel]] = HuggingFaceDeploySettings
    #: Seconds between reads of an endpoint being created or deleted (it takes minutes).
    deploy_poll_interval: ClassVar[float] = 15.0
    #: Seconds undeploy waits for a deleted endpoint to be gone.
    undeploy_timeout: ClassVar[float] = 600.0

    def __init__(
        self,
        settings: HuggingFaceSettings | None = None,
        *,
        http_client_factory: HttpClientFactory | None = None,
        **base: Unpack[ProviderArgs],
    ) -> None:
        super().__init__(settings, **base)
        self._http_client_factory = http_client_factory
        self._lock = threading.Lock()
        self._api_obj: HfApi | None = None
        self._token: str | None = None
        self._whoami: str | None = None
        # Per job: the longest log replay read so far, and whether it is final (job terminal).
        self._logs: dict[str, list[str]] = {}
        self._final_logs: set[str] = set()
        # Per chat target: (endpoint URL, the request's model), resolved once per name.
        self._endpoints: dict[str, tuple[str, str]] = {}

    @property
    def endpoint(self) -> str:
        return resolve_endpoint(self.settings)

    # -- plumbing -------------------------------------------------------------------------------
    def _api(self) -> HfApi:
        with self._lock:
            if self._api_obj is None:
                import_hub(self.name)
                with boundary(self._translator("reading the Hugging Face token")):
                    self._token = resolve_token(self.settings, self.name)
                self._api_obj = make_api(
                    endpoint=self.endpoint, token=self._token, http_client_factory=self._http_client_factory
                )
            return self._api_obj

    def _job_token(self) -> str:
        """The token the job gets as its ``HF_TOKEN`` secret (resolved with the client)."""
        self._api()
        if self._token is None:  # pragma: no cover - _api() sets it or raises
            raise RuntimeError("the Hugging Face token was not resolved")
        return self._token

    @property
    def _policy(self) -> RetryPolicy:
        s = self.settings
        return s.retry_policy(max_attempts=s.max_attempts, deadline=s.retry_deadline, max_backoff=s.max_backoff)

    def _translator(
        self, what: str, *, job_id: str | None = None, flavor: str | None = None, base_model: str | None = None
    ) -> Translate:
        """This adapter's translation for :func:`boundary`, naming what was being done and to what."""
        job_ref = f"{self.name}:{job_id}" if job_id else None

        def translate(exc: Exception) -> AnytuneError | None:
            return translate_error(
                exc, provider=self.name, what=what, job_ref=job_ref, flavor=flavor, base_model=base_model
            )

        return translate

    def _call(self, what: str, fn: Callable[[], T], **context: Any) -> T:
        """One Hub call: retried while transient, its failure translated."""
        with boundary(self._translator(what, **context)):
            return retry_call(
                fn,
                policy=self._policy,
                retry_on=is_transient,
                retry_after=retry_after_of,
                **self.timing,
                what=f"{self.name}: {what}",
            )

    def _namespace(self, spec: JobSpec | None = None) -> str:
        explicit = (spec.hf.namespace if spec is not None and spec.hf is not None else None) or self.settings.namespace
        if explicit:
            return explicit
        if self._whoami is None:
            api = self._api()
            info = self._call("finding the token's user (whoami)", lambda: api.whoami(cache=True))
            self._whoami = str(info["name"])
        return self._whoami

    def _split(self, job_id: str) -> tuple[str, str]:
        namespace, _, bare = job_id.rpartition("/")
        if not bare or "/" in namespace:
            raise JobNotFoundError(f"{self.name}:{job_id}", "expected NAMESPACE/JOB_ID")
        return namespace or self._namespace(), bare

    # -- validation and plan --------------------------------------------------------------------
    def validate(self, spec: JobSpec) -> None:
        path = Path(spec.base_model).expanduser()
        if spec.base_model.startswith((".", "/", "~")) or path.exists():
            raise NotSupportedError(
                "a Hugging Face job downloads its base model from the Hub: give a Hub model id (upload a local "
                "model first with `hf upload`)",
                field="base_model",
                provider=self.name,
                alternatives=["local"],
            )
        local = spec.local or LocalOptions()
        for field, refused, why in _LOCAL_REFUSALS:
            if refused(local):
                raise NotSupportedError(why, field=field, provider=self.name, alternatives=["local"])
        check_hf_options(spec.hf or HFOptions())

    def check_base_model(self, spec: JobSpec, *, dry_run: bool = False) -> None:
        # The job downloads the model on the Hub's side, with this token: the id must resolve there
        # and, when gated, be open to the token. The local cache serves nothing here.
        if dry_run and (hub_offline() or importlib.util.find_spec("huggingface_hub") is None):
            return  # a plan works offline and without the hf extra; submit checks again (HfApi.auth_check)
        check_base_model(
            spec.base_model,
            provider=self.name,
            client=self._lookup_client(dry_run),
            timeout=self.settings.hub_timeout,
            folders=False,
            use_cache=False,
        )

    def _lookup_client(self, dry_run: bool) -> HfApi:
        """The provider's client; for a plan without a token, one without (a public model needs none).

        A create needs the token anyway: without one it fails here, before any request.
        """
        if not dry_run:
            return self._api()
        try:
            return self._api()
        except (ConfigError, AuthenticationError):
            return make_api(endpoint=self.endpoint, token=None, http_client_factory=self._http_client_factory)

    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        options = spec.hf or HFOptions()
        namespace = options.namespace or self.settings.namespace or "<your namespace>"
        inputs = plan_inputs(spec)
        dataset_repo = default_dataset_repo(spec, namespace)
        output_repo = default_output_repo(spec, namespace, idempotency_key)
        request = build_job_request(
            spec,
            idempotency_key,
            inputs.files(dataset_repo),
            namespace=namespace,
            output_repo=output_repo,
            settings=self.settings,
            endpoint=self.endpoint,
        )
        request["secrets"] = ["HF_TOKEN"]  # by name: the value is your token, sent only as a job secret
        return SubmitPlan(
            provider=self.name,
            uploads=inputs.uploads,
            requests=[
                PlannedRequest(
                    operation=f"GET {self.endpoint}/api/jobs/{namespace}?label={LABEL_KEY}=...",
                    body={"labels": {LABEL_KEY: sanitize_label(idempotency_key)}},
                ),
                PlannedRequest(operation="HfApi.auth_check", body={"repo_id": spec.base_model, "repo_type": "model"}),
                PlannedRequest(
                    operation="HfApi.create_repo",
                    body={"repo_id": dataset_repo, "repo_type": "dataset", "private": True, "exist_ok": True},
                ),
                PlannedRequest(
                    operation="HfApi.create_commit",
                    body={"repo_id": dataset_repo, "repo_type": "dataset", "files": sorted(inputs.paths.values())},
                ),
                PlannedRequest(
                    operation="HfApi.create_repo",
                    body={"repo_id": output_repo, "repo_type": "model", "private": options.private, "exist_ok": True},
                ),
                PlannedRequest(operation="HfApi.run_job", body=request),
            ],
            notes=[
                "files already in the dataset repo with the same content are not sent again",
                "the token goes to the job as the secret HF_TOKEN only (never an environment variable or argument)",
                f"the job is labelled {LABEL_KEY}=<key>; a retried create finds it instead of starting another",
                f"the job pushes the adapter, metrics and resolved spec to {output_repo} and prints its revision",
            ],
        )

    # -- submit ---------------------------------------------------------------------------------
    def find(self, idempotency_key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        api = self._api()
        found = self._find_job(api, self._namespace(spec), idempotency_key)
        return None if found is None else self._record(found)

    def _find_job(self, api: HfApi, namespace: str, key: str) -> JobView | None:
        label = sanitize_label(key)

        def lookup() -> JobView | None:
            jobs = [view_from_info(j, namespace) for j in api.list_jobs(namespace=namespace, labels={LABEL_KEY: label})]
            # Checked here too, for a service that ignores the filter.
            mine = [v for v in jobs if v.labels.get(LABEL_KEY) == label]
            mine.sort(key=lambda v: v.created_at or EPOCH, reverse=True)
            return mine[0] if mine else None

        return self._call("looking up the job by its idempotency label", lookup)

    def _check_base_model(self, api: HfApi, spec: JobSpec) -> None:
        # Fail before paying for hardware: a missing or gated model would only fail inside the job.
        self._call(
            "checking the base model",
            lambda: api.auth_check(spec.base_model, repo_type="model"),
            base_model=spec.base_model,
        )

    def _upload_inputs(self, api: HfApi, spec: JobSpec, namespace: str) -> JobFiles:
        repo = default_dataset_repo(spec, namespace)
        return upload_inputs(
            api,
            plan_inputs(spec),
            repo,
            call=self._call,
            store=self.store,
            provider=self.name,
            scope=f"{self.endpoint}|{repo}",
        )

    def _create_job(self, api: HfApi, request: Mapping[str, Any], key: str, flavor: str) -> JobView:
        """Create the job once: a create is retried only when it surely did not happen (429, refused
        connection), or after the label lookup found nothing following an ambiguous failure."""
        namespace = str(request["namespace"])
        secrets = {"HF_TOKEN": self._job_token()}
        with boundary(self._translator("creating the job", flavor=flavor)):
            return create_once(
                lambda: view_from_info(api.run_job(**request, secrets=secrets), namespace),
                lambda: self._find_job(api, namespace, key),
                is_ambiguous=is_ambiguous,
                retry_on=is_transient,
                policy=self._policy,
                retry_after=retry_after_of,
                settle=self.create_settle,
                **self.timing,
                what=f"{self.name}: creating the job",
            )

    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        self.validate(spec)
        api = self._api()
        namespace = self._namespace(spec)
        found = self._find_job(api, namespace, idempotency_key)
        if found is not None:
            return self._record(found)
        self._check_base_model(api, spec)
        files = self._upload_inputs(api, spec, namespace)
        options = spec.hf or HFOptions()
        output_repo = default_output_repo(spec, namespace, idempotency_key)
        self._call(
            "creating the output model repo",
            lambda: api.create_repo(output_repo, repo_type="model", private=options.private, exist_ok=True),
        )
        request = build_job_request(
            spec,
            idempotency_key,
            files,
            namespace=namespace,
            output_repo=output_repo,
            settings=self.settings,
            endpoint=self.endpoint,
        )
        return self._record(self._create_job(api, request, idempotency_key, options.flavor))

    # -- reads ----------------------------------------------------------------------------------
    def _record(self, view: JobView, lines: Sequence[str] | None = None) -> JobRecord:
        return record_from_view(self.name, view, lines, error_log_lines=self.settings.error_log_lines)

    def _view(self, job_id: str) -> JobView:
        namespace, bare = self._split(job_id)
        api = self._api()
        info = self._call("reading the job", lambda: api.inspect_job(job_id=bare, namespace=namespace), job_id=job_id)
        return view_from_info(info, namespace)

    def _lines(self, view: JobView) -> list[str]:
        """The job's log so far: the longest replay read (a stream that ended early is read again
        next time), fetched no more once the job has finished and its log was read in full."""
        key = view.ref_id
        if key in self._final_logs or view.stage.upper() == "SCHEDULING":
            return list(self._logs.get(key, []))
        api = self._api()
        status = map_stage(view.stage)

        def replay() -> list[str]:
            # A job may print anything, the token included: nothing read leaves here unredacted.
            return [redact(line) for line in api.fetch_job_logs(job_id=view.id, namespace=view.namespace, follow=False)]

        lines: list[str] = []
        # A completed job always ends its log with the result line: a replay without it was cut short.
        for _ in range(3 if status is JobStatus.SUCCEEDED else 1):
            try:
                lines = self._call("reading the job's log", replay, job_id=view.ref_id)
            except JobNotFoundError:
                if not status.is_terminal:
                    raise
                break  # a deleted job's log may be gone: its stages still tell its story
            if status is not JobStatus.SUCCEEDED or last_of_kind(lines, "result") is not None:
                break
        known = self._logs.get(key, [])
        if len(lines) >= len(known):
            self._logs[key] = lines
        if status.is_terminal:
            self._final_logs.add(key)
        return list(self._logs[key])

    def get(self, job_id: str) -> JobRecord:
        view = self._view(job_id)
        # Finished jobs carry their log's verdict (revision, error with the last lines); running
        # ones use what events() has read, without reading the log again.
        lines = self._lines(view) if map_stage(view.stage).is_terminal else self._logs.get(view.ref_id)
        return self._record(view, lines)

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        view = self._view(job_id)
        lines = self._lines(view)
        try:
            cursor = int(after) if after is not None else -1
        except ValueError:
            cursor = -1  # not one of ours: everything (the caller's cursor drops what it has seen)
        for event in job_events(view, lines):
            if int(event.id) > cursor:
                yield event

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        return metric_points(self._lines(self._view(job_id)))

    def cancel(self, job_id: str) -> JobRecord:
        view = self._view(job_id)
        if map_stage(view.stage).is_terminal:
            return self._record(view)
        api = self._api()
        # Cancelling twice is harmless, so the request is retried like a read.
        self._call(
            "cancelling the job", lambda: api.cancel_job(job_id=view.id, namespace=view.namespace), job_id=job_id
        )
        return self._record(self._view(job_id))

    def list(self, limit: int = 20) -> builtins.list[JobRecord]:
        api = self._api()
        namespace = self._namespace()

        def read() -> builtins.list[JobView]:
            return [view_from_info(j, namespace) for j in api.list_jobs(namespace=namespace)]

        views = [v for v in self._call("listing jobs", read) if LABEL_KEY in v.labels]
        views.sort(key=lambda v: v.created_at or EPOCH, reverse=True)
        return [self._record(v) for v in views[:limit]]

    def result(self, record: JobRecord) -> FineTunedModel:
        view = self._view(record.id)
        lines = self._lines(view)
        pushed = last_of_kind(lines, "result")
        if not isinstance(pushed, dict) or not pushed.get("hub_repo"):
            raise ProviderError(
                f"job {record.ref} completed but its log holds no {RESULT_PREFIX.strip()} line (the adapter repo "
                f"and revision); see {view.url or 'the job page'}",
                provider=self.name,
            )
        points = metric_points(lines)
        reported = pushed.get("result")
        outcome: dict[str, Any] = reported if isinstance(reported, dict) else {}
        trained = outcome.get("train_tokens")
        return FineTunedModel(
            provider=self.name,
            job_ref=record.ref,
            base_model=view.base_model or record.base_model,
            hub_repo=str(pushed["hub_repo"]),
            revision=str(pushed["revision"]) if pushed.get("revision") else None,
            final_metrics=points[-1] if points else None,
            trained_tokens=trained if isinstance(trained, int) else None,
            extra={"url": view.url, "result": outcome},
        )

    # -- deploy: Inference Endpoints (the request and the mapping: .endpoints) -----------------------
    def _placement(self, model: FineTunedModel, name: str) -> Path:
        """Where the namespace of a job's endpoint is noted (``ANYTUNE_HOME/huggingface/endpoints``):
        an endpoint deployed into an organisation (``namespace=``) is found again by ``deployment``,
        ``chat`` and ``undeploy`` from any later process, which are not told the namespace."""
        digest = hashlib.sha256(f"{model.job_ref}\n{name}".encode()).hexdigest()[:24]
        return self.home / "huggingface" / "endpoints" / f"{name}-{digest}.json"

    def _remember_namespace(self, model: FineTunedModel, name: str, namespace: str) -> None:
        path = self._placement(model, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(json.dumps({"job_ref": model.job_ref, "name": name, "namespace": namespace}).encode())

    def _endpoint_namespace(self, model: FineTunedModel, name: str) -> str:
        """Where ``name`` of ``model`` lives: the namespace noted when it was deployed, else the
        provider's (settings, else the token's user)."""
        try:
            noted = json.loads(self._placement(model, name).read_text(encoding="utf-8")).get("namespace")
        except (OSError, ValueError, AttributeError):
            noted = None
        return str(noted) if isinstance(noted, str) and noted else self._namespace()

    def _read_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The endpoint as the API returns it, None when there is none (404); a read, retried."""
        api = self._api()

        def read() -> dict[str, Any] | None:
            from huggingface_hub.errors import HfHubHTTPError

            try:
                return dict(api.get_inference_endpoint(name, namespace=namespace).raw)
            except HfHubHTTPError as exc:
                if exc.response is not None and exc.response.status_code == 404:
                    return None
                raise

        return self._call(f"reading Inference Endpoint {namespace}/{name}", read)

    def _refuse_other(self, raw: Mapping[str, Any], model: FineTunedModel, namespace: str, name: str) -> None:
        if not serves(raw, model):
            raise UsageError(
                f"Inference Endpoint {namespace}/{name} serves {describe(raw)}, not {adapter_of(model)} on "
                f"{model.base_model} ({model.job_ref}): choose another name, or undeploy that one first",
                field="name",
            )

    def _as_deployment(
        self,
        raw: Mapping[str, Any],
        model: FineTunedModel,
        namespace: str,
        *,
        created: bool = False,
        price: float | None = None,
    ) -> Deployment:
        return deployment_from_raw(
            raw, provider=self.name, job_ref=model.job_ref, namespace=namespace, created=created, price=price
        )

    def _hardware_price(self, namespace: str, settings: HuggingFaceDeploySettings) -> float | None:
        """The chosen hardware's hourly price from the hardware API; a combination it does not list is
        refused before anything is created."""
        api = self._api()
        listed = self._call(
            "listing Inference Endpoints hardware", lambda: api.list_inference_endpoints_hardware(namespace=namespace)
        )
        wanted = (
            settings.vendor,
            settings.region,
            settings.accelerator,
            settings.instance_type,
            settings.instance_size,
        )
        for hw in listed:
            if (hw.vendor, hw.region, hw.accelerator, hw.instance_type, hw.instance_size) == wanted:
                return float(hw.price_per_hour)
        offered = sorted(
            f"{hw.instance_type} {hw.instance_size}"
            for hw in listed
            if (hw.vendor, hw.region, hw.accelerator) == wanted[:3] and hw.status != "deprecated"
        )
        raise UsageError(
            f"deploy setting instance_type: {settings.instance_type} {settings.instance_size} ({settings.accelerator}) "
            f"is not offered in {settings.vendor} {settings.region}; offered there: {', '.join(offered) or 'none'}",
            field="instance_type",
        )

    def _create_endpoint(
        self, model: FineTunedModel, namespace: str, name: str, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create the endpoint once: its name is the key; after an ambiguous failure (or a 409) the
        name is looked up before anything is sent again."""
        api = self._api()
        # The adapter repo is private by default: TGI downloads it with the token, held as a secret.
        secrets = {"HF_TOKEN": self._job_token()}

        def create() -> dict[str, Any]:
            return dict(api.create_inference_endpoint(**arguments, secrets=secrets).raw)

        def ambiguous(exc: BaseException) -> bool:
            response = getattr(exc, "response", None)
            return is_ambiguous(exc) or getattr(response, "status_code", None) == 409

        with boundary(self._translator(f"creating Inference Endpoint {namespace}/{name}")):
            raw = create_once(
                create,
                lambda: self._read_endpoint(namespace, name),
                is_ambiguous=ambiguous,
                retry_on=is_transient,
                policy=self._policy,
                retry_after=retry_after_of,
                settle=self.create_settle,
                **self.timing,
                what=f"{self.name}: creating Inference Endpoint {namespace}/{name}",
            )
        self._refuse_other(raw, model, namespace, name)  # a lookup may find someone else's
        return raw

    def deploy(self, model: FineTunedModel, name: str, settings: Any, *, wait: bool, timeout: float) -> Deployment:
        from anytune._deploy import check_name

        chosen = (
            settings
            if isinstance(settings, HuggingFaceDeploySettings)
            else HuggingFaceDeploySettings.model_validate(settings or {})
        )
        check_name(name)
        arguments = create_arguments(model, name, chosen, namespace="")  # checks the result before any call
        namespace = chosen.namespace or self._namespace()
        arguments["namespace"] = namespace
        self._remember_namespace(model, name, namespace)  # before the create: a crash mid-way still finds it
        raw = self._read_endpoint(namespace, name)
        created, price = raw is None, None
        if raw is None:
            price = self._hardware_price(namespace, chosen)
            raw = self._create_endpoint(model, namespace, name, arguments)
        else:
            self._refuse_other(raw, model, namespace, name)
        deployment = self._as_deployment(raw, model, namespace, created=created, price=price)
        if not wait or deployment.status != "creating":
            return deployment

        def read() -> Deployment | None:
            now = self._read_endpoint(namespace, name)
            return None if now is None else self._as_deployment(now, model, namespace, created=created, price=price)

        final = wait_until(
            read,
            settled=is_settled,
            sleep=self.sleep,
            clock=self.clock,
            timeout=timeout,
            what=f"Inference Endpoint {namespace}/{name}",
            interval=self.deploy_poll_interval,
        )
        if final is None:
            raise ProviderError(
                f"Inference Endpoint {namespace}/{name} was deleted while it was deploying", provider=self.name
            )
        return final

    def deployment(self, model: FineTunedModel, name: str) -> Deployment | None:
        adapter_of(model)
        namespace = self._endpoint_namespace(model, name)
        raw = self._read_endpoint(namespace, name)
        if raw is None:
            return None
        self._refuse_other(raw, model, namespace, name)
        return self._as_deployment(raw, model, namespace)

    def undeploy(self, model: FineTunedModel, name: str) -> Deployment | None:
        adapter_of(model)
        namespace = self._endpoint_namespace(model, name)
        raw = self._read_endpoint(namespace, name)
        if raw is None:
            self._placement(model, name).unlink(missing_ok=True)
            return None
        self._refuse_other(raw, model, namespace, name)
        gone = self._as_deployment(raw, model, namespace)
        api = self._api()

        def delete() -> None:
            from huggingface_hub.errors import HfHubHTTPError

            try:
                api.delete_inference_endpoint(name, namespace=namespace)
            except HfHubHTTPError as exc:
                # A retried delete whose first attempt went through: gone is what was asked.
                if exc.response is None or exc.response.status_code != 404:
                    raise

        # Deleting twice is harmless, so the request is retried like a read.
        self._call(f"deleting Inference Endpoint {namespace}/{name}", delete)
        self._endpoints.pop(gone.target, None)

        def read() -> Deployment | None:
            return (
                None if self._read_endpoint(namespace, name) is None else gone.model_copy(update={"status": "deleting"})
            )

        wait_until(
            read,
            settled=is_gone,
            sleep=self.sleep,
            clock=self.clock,
            timeout=self.undeploy_timeout,
            what=f"deleting Inference Endpoint {namespace}/{name}",
            interval=self.deploy_poll_interval,
        )
        self._placement(model, name).unlink(missing_ok=True)
        return gone.model_copy(update={"status": "deleted", "url": None})

    # -- chat -------------------------------------------------------------------------------------
    def _resolve_endpoint(self, target: str) -> tuple[str, str]:
        """(URL, the request's ``model``) of the endpoint ``NAMESPACE/NAME`` (or ``NAME``), read once per target."""
        cached = self._endpoints.get(target)
        if cached is not None:
            return cached
        namespace, name = split_target(target, None)
        namespace = namespace or self._namespace()
        raw = self._read_endpoint(namespace, name)
        if raw is None:
            raise UsageError(
                f"no Inference Endpoint {namespace}/{name}: deploy the fine-tuned model first (model.deploy())",
                field="model",
            )
        status = raw.get("status") or {}
        url = status.get("url")
        if status.get("state") not in ("running", "scaledToZero") or not url:
            raise UsageError(
                f"Inference Endpoint {namespace}/{name} is {status.get('state')}, not running: wait for it "
                "(deploy(wait=True)), resume it if paused, or see its page on endpoints.huggingface.co",
                field="model",
            )
        resolved = (str(url), chat_model_of(raw))
        self._endpoints[target] = resolved
        return resolved

    def chat(
        self,
        model: str,
        messages: builtins.list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
    ) -> str:
        """One chat completion from the Inference Endpoint ``model`` (``NAMESPACE/NAME`` or ``NAME``,
        a :attr:`Deployment.target`), through TGI's Messages API with its adapter as the ``model``."""
        url, request_model = self._resolve_endpoint(model)
        from huggingface_hub import InferenceClient

        client = InferenceClient(base_url=url, token=self._job_token())

        def ask() -> Any:
            return client.chat_completion(
                messages, model=request_model, max_tokens=max_tokens, temperature=temperature, seed=seed
            )

        # Asking again is harmless (nothing is created), so a chat is retried like a read; a scaled
        # to zero endpoint answers 503 while it wakes.
        answer = self._call(f"chat with Inference Endpoint {model}", ask)
        content = answer.choices[0].message.content if answer.choices else None
        return content or ""
