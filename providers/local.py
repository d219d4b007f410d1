"""The ``local`` provider: LoRA/QLoRA fine-tuning on this machine's GPU or CPU, as a detached job.

``submit`` writes a run directory (:class:`~anytune.local_backend.rundir.RunDir`) and starts a
worker process (``python -m anytune.local_backend.worker RUN_DIR``) in its own session, so the job
outlives the caller.  Everything after that goes through the run directory: ``get``, ``events``,
``metrics``, ``checkpoints`` and ``result`` read it, ``cancel`` drops a cancel marker there (and
signals the worker), from any process.  A worker that died (SIGKILL, a machine restart) shows as
``failed`` with code ``worker_died``; ``resume`` starts a new worker that continues from the last
complete checkpoint.

A run has one worker at a time. ``submit`` and ``resume`` take the run's ``worker.lock`` before they
look, and hand it to the worker they start, which holds it for its whole life: of N concurrent
resumes one starts a worker and the others get :class:`~anytune.errors.InvalidRequestError` ("job ...
is already running: its worker (pid N) ..."); concurrent submits with one idempotency key all get the
one run.  Holding the lock, ``resume`` removes the scratch files of writers that were killed mid-write.

The adapter (and, with ``local.merge``, the merged model) stays in the run directory, or goes to
``local.output_dir``: a new or empty folder (checked before the job starts), which the worker fills
before it records ``succeeded`` (the adapter is copied there, the merged model moved to its
``merged/``), and which ``FineTunedModel.adapter_path`` then names. The output is a folder, not a
named model: ``suffix`` and ``output_name`` are refused, pointing to ``local.output_dir``.

This module imports neither torch nor transformers: the registry reads its capabilities without
the ``local`` extra installed, and only the worker process loads the ML stack.

    job = FineTuneJob.create(provider="local", base_model="Qwen/Qwen2.5-0.5B-Instruct",
                             training_file="train.jsonl", lora={"r": 16})
    job.wait()
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from anytune._base_model import DEFAULT_HUB_TIMEOUT, HubClient, check_base_model
from anytune._capabilities import ALL_TRACKERS, Capabilities
from anytune._deploy import Deployment, DeploymentStatus
from anytune._provider import (
    IDEMPOTENCY_TAG,
    PlannedRequest,
    Provider,
    ProviderArgs,
    ProviderSettings,
    SubmitPlan,
    planned_upload,
)
from anytune._spec import JobSpec, LocalOptions, Method, Quantization
from anytune._timestamps import parse_timestamp
from anytune._types import (
    Checkpoint,
    Event,
    FineTunedModel,
    JobError,
    JobRecord,
    JobStatus,
    MetricPoint,
    format_ref,
)
from anytune.errors import ConfigError, InvalidRequestError, JobNotFoundError, NotSupportedError, ProviderError
from anytune.local_backend.accelerate_config import apply_accelerate_config
from anytune.local_backend.devicequeue import LOCKS_ENV, QUEUE_ENV
from anytune.local_backend.devices import device_kind
from anytune.local_backend.hparams import check_optimizer, check_validation_split, resolved_settings
from anytune.local_backend.launch import check_strategy, node_commands, shell_line, worker_command
from anytune.local_backend.rundir import (
    CHECKPOINT_PREFIX,
    LOCK_FD_ENV,
    RunDir,
    WorkerLock,
    pid_alive,
    write_json_atomic,
)
from anytune.local_backend.tracking import check_trackers
from anytune.local_backend.zero import STAGES, check_with_deepspeed, deepspeed_config, load_user_config

if TYPE_CHECKING:
    from typing_extensions import Unpack

NAME = "local"
_OUTPUT_DIR = "local.output_dir"
#: The spec the trainer writes into every adapter folder (and so into ``local.output_dir``).
OUTPUT_SPEC_FILE = "anytune_spec.json"
JOB_PREFIX = "run-"
#: A run whose worker pid is not recorded yet counts as starting for this long after creation.
LAUNCH_GRACE_S = 60.0
#: How long submit/resume try for the run's lock (another caller may hold it for a moment).
LOCK_WAIT_S = 0.5
#: How long a submit that lost the lock to a submit of the same key waits for that run to appear.
CREATION_WAIT_S = 10.0
#: How long resume waits for a worker that wrote its final status to exit (torch.distributed.run's
#: launcher notices its ranks are done within a few seconds).
EXIT_WAIT_S = 15.0
#: Figures of result.json that go to ``FineTunedModel.extra`` and ``JobRecord.output``.
FIGURES = (
    "train_seconds",
    "peak_rss_mib",
    "peak_gpu_mib",
    "final_train_loss",
    "final_valid_loss",
    "base_valid_loss",
    "steps",
    "tokens_per_second",
    "merged_path",
    "device",
)


class LocalSettings(ProviderSettings):
    """Settings of the ``local`` provider (profile ``settings``, ``ANYTUNE_LOCAL_*``, arguments).

    Attributes:
        runs_dir: where run directories go (default ``ANYTUNE_HOME/runs``).
        python: the interpreter that runs the worker (default: the current one). It needs
            ``anytune[local]`` installed.
        queue: which jobs wait for their device while another local job uses it, unless the spec
            says (``local.queue``): ``auto`` (GPU and MPS jobs; CPU jobs share the CPU), ``device``
            (every job, CPU too) or ``none`` (jobs start at once). See
            :mod:`anytune.local_backend.devicequeue`.
        hub_timeout: seconds the check before a job starts waits for the Hub to answer about a
            base model given by id (offline, with ``HF_HUB_OFFLINE=1``, the local cache answers).
    """

    runs_dir: Path | None = None
    python: str | None = None
    queue: Literal["auto", "device", "none"] = "auto"
    hub_timeout: float = Field(DEFAULT_HUB_TIMEOUT, gt=0)


def _parse_iso(value: Any) -> datetime | None:
    return parse_timestamp(value) if isinstance(value, str) else None


def resolve_device(requested: str) -> str:
    """The device ``auto`` means on this machine (imports torch only to answer ``auto``)."""
    return device_kind(requested)


def _visible_cuda() -> int:
    """CUDA devices this process sees (imports torch: asked only of a multi-device CUDA job)."""
    import torch

    return int(torch.cuda.device_count())


def _launch_plan(python: str, run_path: Path, options: LocalOptions) -> list[dict[str, Any]]:
    """What ``--dry-run`` shows: each node's launch command, as a list and as a shell line."""
    return [
        {"node_rank": rank, "command": command, "shell": shell_line(command)}
        for rank, command in enumerate(node_commands(python, run_path, options))
    ]


def _with_accelerate(spec: JobSpec) -> JobSpec:
    """``spec`` with its ``local.accelerate_config`` read onto the local fields (itself without one)."""
    if spec.local is None or spec.local.accelerate_config is None:
        return spec
    return spec.model_copy(update={"local": apply_accelerate_config(spec.local)})


def _deepspeed_source(options: LocalOptions) -> str | None:
    given = options.deepspeed_config
    return str(given) if isinstance(given, Path) else None


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None  # not Linux, or gone: the pid check alone decides


# Workers started by this process: kept so they are reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _reap() -> None:
    for pid, proc in builtins.list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


class LocalDeploySettings(BaseModel):
    """``deploy(**settings)`` on the local provider: where the model is loaded in this process."""

    model_config = ConfigDict(extra="forbid")

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    base_model: str | None = Field(None, description="override the base model the adapter records")


def _local_deployment(model: FineTunedModel, status: DeploymentStatus) -> Deployment:
    """The in-process deployment of a local result (pure)."""
    return Deployment(
        provider=NAME,
        job_ref=model.job_ref,
        name="in-process",
        kind="in-process",
        target=model.adapter_path or model.job_ref,
        model=model.adapter_path or model.job_ref,
        status=status,
        cost_notes=(
            "Runs in this process on your own hardware: nothing is billed; undeploy() frees its memory.",
            "To serve it to other programs over OpenAI's API, run `anytune serve` (anytune[serve]).",
        ),
    )


class LocalProvider(Provider[LocalSettings]):
    """See the module docstring."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({Method.SFT, Method.DPO}),
        lora=True,
        quantization=frozenset(Quantization),
        data_formats=frozenset({"chat", "prompt_completion", "preference"}),
        sections=frozenset({"local"}),
        trackers=ALL_TRACKERS,
        # The output is a folder, not a named model: suffix and output_name would be ignored.
        suffix=False,
        output_name=False,
        hints={
            "suffix": "the local provider names no model; set local.output_dir to choose where the adapter goes",
            "output_name": "the local provider names no model; set local.output_dir to choose where the adapter goes",
        },
        pause=False,
        # One example is a legitimate (over)fit test on your own machine; nothing is billed.
        min_examples=1,
        notes="transformers + peft (+ bitsandbytes for 4bit/8bit) on this machine; runs under ANYTUNE_HOME/runs",
        extra={"devices": ["auto", "cpu", "cuda", "mps"], "resume": True},
    )
    Settings: ClassVar[type[ProviderSettings]] = LocalSettings
    poll_interval: ClassVar[float] = 0.5

    def __init__(
        self,
        settings: LocalSettings | None = None,
        *,
        hub_client: HubClient | None = None,
        **base: Unpack[ProviderArgs],
    ) -> None:
        """``hub_client``: what looks a Hub base model id up before a job starts (default: an
        ``HfApi`` on ``HF_ENDPOINT``); anything with ``HfApi``'s ``model_info`` and ``auth_check``."""
        super().__init__(settings, **base)
        self._hub_client = hub_client

    @property
    def runs_dir(self) -> Path:
        return self.settings.runs_dir or self.home / "runs"

    @property
    def python(self) -> str:
        return self.settings.python or sys.executable

    # -- run directories ------------------------------------------------------------------------
    @staticmethod
    def job_id_for(idempotency_key: str) -> str:
        """The run id for a submit key: a retried submit finds the run the first one made."""
        return JOB_PREFIX + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]

    def _run(self, job_id: str) -> RunDir:
        if not job_id.startswith(JOB_PREFIX) or "/" in job_id or os.sep in job_id or job_id in (".", ".."):
            raise JobNotFoundError(format_ref(self.name, job_id), "not a local run id (run-...)")
        run = RunDir(self.runs_dir / job_id)
        if not run.exists():
            raise JobNotFoundError(format_ref(self.name, job_id), f"no run directory under {self.runs_dir}")
        return run

    @staticmethod
    def _localised(spec: JobSpec) -> JobSpec:
        """The spec with every local path made absolute (the worker runs in the run directory), and
        ``local.accelerate_config`` read onto the local fields."""
        spec = _with_accelerate(spec)
        update: dict[str, Any] = {"training_file": spec.training_path.expanduser().resolve()}
        if spec.validation_file is not None:
            update["validation_file"] = spec.validation_file.expanduser().resolve()
        base = Path(spec.base_model).expanduser()
        if base.exists():
            update["base_model"] = str(base.resolve())
        local: dict[str, Any] = {}
        if spec.local is not None and spec.local.output_dir is not None:
            local["output_dir"] = spec.local.output_dir.expanduser().resolve()
        if spec.local is not None and isinstance(spec.local.deepspeed_config, Path):
            # The file's content, recorded in the run's spec: the run keeps what it started with.
            local["deepspeed_config"] = load_user_config(spec.local.deepspeed_config)
        if spec.local is not None and local:
            update["local"] = spec.local.model_copy(update=local)
        return spec.model_copy(update=update)

    # -- process ----------------------------------------------------------------------------------
    def _worker_alive(self, run: RunDir, state: dict[str, Any]) -> bool:
        _reap()
        pid = run.pid()
        if pid is None:
            # submit writes the pid right after the launch; before that the run is starting.
            created = _parse_iso(run.meta().get("created_at"))
            age = (datetime.now(timezone.utc) - created).total_seconds() if created else LAUNCH_GRACE_S
            return state.get("status") == JobStatus.QUEUED.value and age < LAUNCH_GRACE_S
        if not pid_alive(pid):
            return False
        # A recycled pid (after a reboot) belongs to some other program: its command line says so.
        cmdline = _cmdline(pid)
        return cmdline is None or run.id in cmdline

    @staticmethod
    def _lock_to_resume(run: RunDir) -> WorkerLock | None:
        """The run's lock, once the worker that holds it is gone; None while it is running.

        A worker that wrote its final status (cancelled, failed) still holds the lock until its
        process exits: wait for that, so that ``cancel --wait`` then ``resume`` just works.
        """
        deadline = time.monotonic() + EXIT_WAIT_S
        while True:
            lock = run.acquire_worker_lock(timeout=LOCK_WAIT_S)
            status = JobStatus(run.status().get("status", JobStatus.QUEUED.value))
            if lock is not None or not status.is_terminal or time.monotonic() > deadline:
                return lock

    def _already_running(self, run: RunDir, ref: str) -> InvalidRequestError:
        """The error for a start refused because another process holds the run's lock."""
        deadline = time.monotonic() + 1.0
        holder = run.lock_holder()
        while holder is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the holder records the worker's pid right after it starts it
            holder = run.lock_holder()
        return self._still_running(ref, holder)

    def _still_running(self, ref: str, pid: int | None) -> InvalidRequestError:
        worker = f"its worker (pid {pid}) is still running" if pid else "its worker is starting"
        return InvalidRequestError(
            f"job {ref} is already running: {worker}, and a run has one worker at a time; "
            "cancel it first or wait for it",
            provider=self.name,
        )

    def _launch(self, run: RunDir, spec: JobSpec, *, resume: bool, lock: WorkerLock) -> int:
        """Start the worker and hand it ``lock`` (held by the caller, who closes its copy after)."""
        options = spec.local or LocalOptions()
        # This machine's node; on a multi-node job the others are started by the user (see plan()).
        command = worker_command(
            self.python,
            run.path,
            num_devices=options.num_devices,
            resume=resume,
            nodes=options.nodes,
            node_rank=options.node_rank,
            rdzv_endpoint=options.rdzv_endpoint,
        )
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # the log shows progress as it happens
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        # The device queue: this provider's mode, and one lock folder for every job of this home.
        env[QUEUE_ENV] = self.settings.queue
        env[LOCKS_ENV] = str(self.home / "devices")
        # The worker inherits the lock's descriptor: the run stays locked with no gap until it exits.
        # (Windows cannot pass it: there the worker takes the lock as the caller lets go.)
        handed = () if sys.platform == "win32" else (lock.fileno(),)
        if handed:
            env[LOCK_FD_ENV] = str(lock.fileno())
        write_json_atomic(
            run.path / "launch.json",
            {
                "command": command,
                "python": self.python,
                "resume": resume,
                "launched_at": datetime.now(timezone.utc).isoformat(),
            },
        )
        with open(run.log_file, "ab") as log:
            try:
                proc = subprocess.Popen(
                    command,
                    cwd=run.path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=handed,
                )
            except OSError as exc:
                message = f"could not start the worker ({command[0]}): {exc}"
                run.set_status(
                    JobStatus.FAILED,
                    raw="launch_failed",
                    message=message,
                    error={"message": message, "code": "launch_failed"},
                )
                raise ProviderError(message, provider=self.name) from exc
        _children[proc.pid] = proc
        lock.record(proc.pid)
        # The worker rewrites this with its own pid; writing it now closes the window in which a
        # reader would see a run with no live process.
        run.write_pid(proc.pid)
        return proc.pid

    # -- records ----------------------------------------------------------------------------------
    def _settle(self, run: RunDir, status: JobStatus) -> None:
        """Give a worker that just wrote a terminal status a moment to append its status event, so
        that ``stream()``, which stops at a terminal record, never misses the final event."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                with open(run.events_file, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - 4096))
                    tail = f.read()
            except FileNotFoundError:
                tail = b""
            if f'"status":"{status.value}"'.encode() in tail or not run.worker_alive():
                return
            time.sleep(0.02)

    def _record(self, run: RunDir) -> JobRecord:
        state = run.status()
        meta = run.meta()
        status = JobStatus(state.get("status", JobStatus.QUEUED.value))
        raw_status = str(state.get("raw_status") or status.value)
        error = self._error(state.get("error"), status)
        if not status.is_terminal and not self._worker_alive(run, state):
            # The worker may have finished between the two reads: look once more.
            state = run.status()
            status = JobStatus(state.get("status", JobStatus.QUEUED.value))
            raw_status = str(state.get("raw_status") or status.value)
            error = self._error(state.get("error"), status)
            if not status.is_terminal:
                status, raw_status, error = self._dead(run)
        elif status.is_terminal:
            self._settle(run, status)
        result = (run.result() or {}) if status is JobStatus.SUCCEEDED else {}
        output: dict[str, Any] = {"run_dir": str(run.path), "log_file": str(run.log_file)}
        for key in FIGURES:
            if result.get(key) is not None:
                output[key] = result[key]
            elif state.get(key) is not None:
                output[key] = state[key]
        if result.get("adapter_path"):
            output["adapter_path"] = result["adapter_path"]
        spec = meta.get("spec", {})
        trained = result.get(
            "train_tokens", state.get("trained_tokens", state.get("train_tokens", state.get("tokens_seen")))
        )
        return JobRecord(
            provider=self.name,
            id=run.id,
            status=status,
            raw_status=raw_status,
            base_model=spec.get("base_model"),
            fine_tuned_model=output.get("adapter_path") if status is JobStatus.SUCCEEDED else None,
            created_at=_parse_iso(meta.get("created_at")),
            started_at=_parse_iso(state.get("started_at")),
            finished_at=_parse_iso(state.get("finished_at")) if status.is_terminal else None,
            updated_at=_parse_iso(state.get("updated_at")) or datetime.now(timezone.utc),
            error=error,
            step=_int(state.get("step")),
            total_steps=_int(state.get("total_steps")),
            trained_tokens=_int(trained),
            output=output,
            raw={**state, "metadata": {IDEMPOTENCY_TAG: meta.get("idempotency_key")}},
        )

    @staticmethod
    def _error(value: Any, status: JobStatus) -> JobError | None:
        if status is not JobStatus.FAILED or value is None:
            return None
        if isinstance(value, dict):
            return JobError(
                message=str(value.get("message") or "the worker failed"),
                code=value.get("code"),
                param=value.get("param"),
            )
        return JobError(message=str(value))

    def _dead(self, run: RunDir) -> tuple[JobStatus, str, JobError | None]:
        """What a run whose worker is gone without a terminal status reports."""
        ref = format_ref(self.name, run.id)
        if run.cancel_requested():
            # Killed by the cancel signal before it could install its handler.
            return JobStatus.CANCELLED, "cancelled", None
        last = run.last_checkpoint()
        where = (
            f"continues from the last checkpoint ({last.name})"
            if last is not None
            else "starts it again (no checkpoint was saved yet)"
        )
        pid = run.pid()
        message = (
            f"the worker process{f' (pid {pid})' if pid else ''} exited without finishing "
            f"(killed, crashed or the machine restarted; its log: {run.log_file}). "
            f"`anytune jobs resume {ref}` {where}."
        )
        return JobStatus.FAILED, "worker_died", JobError(message=message, code="worker_died")

    # -- the contract ---------------------------------------------------------------------------
    def _check_output_dir(self, spec: JobSpec) -> None:
        """``local.output_dir`` must be a new or empty folder: the finished job writes its adapter there.

        A folder that holds this very spec's adapter (a create retried after the job finished) passes.
        """
        if spec.local is None or spec.local.output_dir is None:
            return
        folder = spec.local.output_dir.expanduser().resolve()
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{folder} is a file; give a new or empty folder for the adapter", field=_OUTPUT_DIR)
        if folder.is_dir() and any(folder.iterdir()) and not self._holds_this_job(folder, spec):
            raise ConfigError(
                f"{folder} is not empty; give a new or empty folder, so that no earlier output is overwritten",
                field=_OUTPUT_DIR,
            )

    def _holds_this_job(self, folder: Path, spec: JobSpec) -> bool:
        try:
            written = json.loads((folder / OUTPUT_SPEC_FILE).read_text())
        except (OSError, ValueError):
            return False
        return bool(written == self._localised(spec).model_dump(mode="json"))

    def validate(self, spec: JobSpec) -> None:
        spec = _with_accelerate(spec)  # a bad file or a conflict with the spec: said first
        self._check_output_dir(spec)
        if spec.quantization is not Quantization.NONE and importlib.util.find_spec("bitsandbytes") is None:
            raise NotSupportedError(
                f"{spec.quantization.value} quantization needs bitsandbytes, which is not installed "
                '(pip install "anytune[local]"; on macOS use quantization "none")',
                field="quantization",
                provider=self.name,
            )
        # What the worker would fail on at its start, said before the run exists: a tracker's
        # missing package, an 8-bit optimizer bitsandbytes cannot run on this device.
        check_trackers(spec.report_to)
        check_validation_split(spec)
        options = spec.local or LocalOptions()
        if spec.hyperparameters.optimizer not in (None, "adamw_torch"):  # only then is the device needed
            check_optimizer(spec.hyperparameters.optimizer, resolve_device(options.device))
        if options.world_size > 1 or options.strategy != "ddp" or options.cpu_offload:
            device = resolve_device(options.device)
            check_strategy(
                options,
                quantization=spec.quantization,
                device=device,
                visible_cuda=_visible_cuda() if device == "cuda" and options.num_devices > 1 else None,
                deepspeed_installed=importlib.util.find_spec("deepspeed") is not None,
            )
        if options.strategy in STAGES:
            # A missing or bad DeepSpeed file, a key the spec decides: said before the run exists.
            config = deepspeed_config(spec, options, options.world_size)
            check_with_deepspeed(
                config, options.world_size, source=_deepspeed_source(options), device=resolve_device(options.device)
            )

    def check_base_model(self, spec: JobSpec, *, dry_run: bool = False) -> None:
        # The worker loads the folder, or the id from the Hub or (offline) the local Hub cache:
        # what it would fail on a minute from now is said before the run exists.
        check_base_model(
            spec.base_model, provider=self.name, client=self._hub_client, timeout=self.settings.hub_timeout
        )

    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        spec = self._localised(spec)
        uploads = [planned_upload(spec.training_path, "training")]
        if spec.validation_file is not None:
            uploads.append(planned_upload(spec.validation_file, "validation"))
        options = spec.local or LocalOptions()
        run_path = self.runs_dir / self.job_id_for(idempotency_key)
        device = resolve_device(options.device)
        launch = _launch_plan(self.python, run_path, options)
        body = {
            "run_dir": str(run_path),
            # What submit starts here: this machine's node.
            "command": launch[options.node_rank]["command"],
            "device": device,
            "num_devices": options.num_devices,
            "strategy": options.strategy,
            "nodes": options.nodes,
            "world_size": options.world_size,
            # Every node's command: submit starts node local.node_rank's; the others are started
            # on their machines, by hand or from a scheduler.
            "launch": launch,
            "spec": spec.model_dump(mode="json", exclude_none=True),
            # Every value the trainer will use, defaults applied (the spec above holds what was set).
            "resolved": resolved_settings(spec, device=device),
        }
        if options.strategy in STAGES:
            # The DeepSpeed config the engine gets (the worker maps it again, with the batch the
            # trainer's plan resolves: capped at the number of examples).
            body["deepspeed_config"] = deepspeed_config(spec, options, options.world_size)
        notes = [
            "nothing is created before submit: the run directory and the worker process come then",
            "the worker runs detached; follow it with `anytune jobs wait REF` from any shell",
        ]
        if options.nodes > 1:
            notes.append(
                f"{options.nodes} nodes: submit starts node {options.node_rank}'s command here; start each other "
                "node's command (launch[].shell) on its machine, by hand or from a scheduler, e.g. Slurm: "
                "srun --nodes N --ntasks-per-node 1 with --node_rank and --node-rank set to $SLURM_NODEID. "
                f"Every node needs the run directory at {run_path} (a shared filesystem) and reaches "
                f"{options.rdzv_endpoint}"
            )
        return SubmitPlan(
            provider=self.name,
            uploads=uploads,
            requests=[PlannedRequest(operation="local.start_worker", body=body)],
            notes=notes,
        )

    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        job_id = self.job_id_for(idempotency_key)
        run = RunDir(self.runs_dir / job_id)
        if run.exists():
            return self._record(run)
        lock = run.acquire_worker_lock(timeout=LOCK_WAIT_S)
        if lock is None:
            # A submit with the same key is creating this run: what it makes is this job.
            deadline = time.monotonic() + CREATION_WAIT_S
            while not run.exists():
                if time.monotonic() > deadline:
                    raise self._already_running(run, format_ref(self.name, job_id))
                time.sleep(0.05)
            return self._record(run)
        with lock:
            if not run.exists():
                spec = self._localised(spec)
                run.create(spec, idempotency_key=idempotency_key)
                self._launch(run, spec, resume=False, lock=lock)
        return self._record(run)

    def get(self, job_id: str) -> JobRecord:
        return self._record(self._run(job_id))

    def cancel(self, job_id: str) -> JobRecord:
        run = self._run(job_id)
        state = run.status()
        if JobStatus(state.get("status", JobStatus.QUEUED.value)).is_terminal:
            return self._record(run)
        if self._worker_alive(run, state):
            # The worker stops at the next step boundary, saves a checkpoint and writes `cancelled`.
            # Under torch.distributed.run the pid is the launcher's: the marker alone reaches every rank.
            spec = run.spec()
            if spec.local is not None and spec.local.world_size > 1:
                run.cancel_file.touch()
            else:
                run.request_cancel()
        else:
            run.cancel_file.touch()
            # Nobody runs it (the worker died): the job ends here; `resume` can still pick it up.
            run.set_status(JobStatus.CANCELLED, raw="cancelled", message="job cancelled (no worker was running)")
        return self._record(run)

    def resume(self, job_id: str) -> JobRecord:
        """Start a new worker that continues from the last complete checkpoint.

        The check and the start hold the run's lock, which the new worker keeps: of concurrent
        resumes exactly one starts a worker. Scratch files of writers that were killed mid-write
        are removed first.

        Raises:
            InvalidRequestError: the worker is still running (the message names its pid), or the job
                already succeeded.
        """
        run = self._run(job_id)
        ref = format_ref(self.name, job_id)
        succeeded = InvalidRequestError(f"job {ref} already succeeded; there is nothing to resume", provider=self.name)
        if run.status().get("status") == JobStatus.SUCCEEDED.value:
            raise succeeded  # its worker may still be exiting: this is the answer that matters
        lock = self._lock_to_resume(run)
        if lock is None:
            raise self._already_running(run, ref)
        with lock:
            state = run.status()
            if state.get("status") == JobStatus.SUCCEEDED.value:
                raise succeeded
            if self._worker_alive(run, state):
                raise self._still_running(ref, run.pid())  # a worker that holds no lock (an older anytune)
            run.remove_stale_scratch(lock)
            with contextlib.suppress(FileNotFoundError):
                run.cancel_file.unlink()
            last = run.last_checkpoint()
            message = f"resuming from {last.name}" if last is not None else "restarting (no checkpoint to resume from)"
            run.set_status(JobStatus.QUEUED, raw="resuming", message=message, error=None)
            self._launch(run, run.spec(), resume=last is not None, lock=lock)
        return self._record(run)

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        return self._run(job_id).events(after)

    def list(self, limit: int = 20) -> builtins.list[JobRecord]:
        if not self.runs_dir.is_dir():
            return []
        runs = [RunDir(p) for p in self.runs_dir.iterdir() if p.name.startswith(JOB_PREFIX)]
        runs = [r for r in runs if r.exists()]
        runs.sort(key=lambda r: r.spec_file.stat().st_mtime, reverse=True)
        return [self._record(r) for r in runs[:limit]]

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        return self._run(job_id).metrics()

    def checkpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        run = self._run(job_id)
        points = run.metrics()
        out: builtins.list[Checkpoint] = []
        for folder in run.checkpoint_dirs():
            step = int(folder.name[len(CHECKPOINT_PREFIX) :])
            at = [p for p in points if p.step <= step]
            try:
                created = datetime.fromtimestamp(folder.stat().st_mtime, tz=timezone.utc)
            except FileNotFoundError:
                continue  # rotated away while we looked
            out.append(
                Checkpoint(
                    step=step,
                    id=f"{job_id}:{folder.name}",
                    path=str(folder),
                    metrics=at[-1] if at else None,
                    created_at=created,
                )
            )
        return out

    # -- deploy: in this process ----------------------------------------------------------------------
    DeploySettings: ClassVar[type[BaseModel]] = LocalDeploySettings

    def deploy(self, model: FineTunedModel, name: str, settings: Any, *, wait: bool, timeout: float) -> Deployment:
        """Load the base model with the adapter here (transformers + peft) once; later chats reuse it.
        ``name`` plays no part: there is one in-process deployment per result."""
        created = model.loaded is None
        if created:
            model.load(device=settings.device, base_model=settings.base_model)
        return self._bind(model, _local_deployment(model, "ready").model_copy(update={"created": created}))

    def deployment(self, model: FineTunedModel, name: str) -> Deployment | None:
        """Always there: a local result answers in process, loaded on its first chat."""
        if not model.has_weights:
            return None
        return self._bind(model, _local_deployment(model, "ready"))

    def undeploy(self, model: FineTunedModel, name: str) -> Deployment | None:
        """Drop the loaded weights (and the accelerator's cache); None when nothing was loaded."""
        if model.loaded is None:
            return None
        model.unload()
        return _local_deployment(model, "deleted")

    @staticmethod
    def _bind(model: FineTunedModel, deployment: Deployment) -> Deployment:
        def answer(messages: builtins.list[dict[str, Any]], max_tokens: int, temperature: float, seed: int) -> str:
            if temperature > 0:
                import torch

                torch.manual_seed(seed)
            return model.generate(messages, max_new_tokens=max_tokens, temperature=temperature)

        return deployment.bind(answer, None)

    def result(self, record: JobRecord) -> FineTunedModel:
        run = self._run(record.id)
        data = run.result()
        if data is None:
            raise ProviderError(
                f"job {record.ref} succeeded but wrote no result.json in {run.path}", provider=self.name
            )
        points = run.metrics()
        final = points[-1] if points else None
        if final is not None and final.valid_loss is None and data.get("final_valid_loss") is not None:
            final = final.model_copy(update={"valid_loss": float(data["final_valid_loss"])})
        extra = {k: v for k, v in data.items() if k not in ("adapter_path", "train_tokens")}
        extra["run_dir"] = str(run.path)
        return FineTunedModel(
            provider=self.name,
            job_ref=record.ref,
            base_model=record.base_model,
            adapter_path=str(data.get("adapter_path") or run.adapter_dir),
            checkpoints=tuple(self.checkpoints(record.id)),
            final_metrics=final,
            trained_tokens=_int(data.get("train_tokens")),
            extra=extra,
        )


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
