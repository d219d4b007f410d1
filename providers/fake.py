"""A provider with no network: deterministic, scriptable, and usable in your own tests.

A fake job follows a timeline of steps (``JobSpec.fake``): a preset scenario (``succeed``,
``fail``, ``slow``) or an explicit list of :class:`~anytune._spec.FakeStep`.  Its state is one
JSON file under ``ANYTUNE_HOME/fake/``, written atomically, so a job created in one process can be
followed, cancelled and waited on from another.  Given the same clock, every answer is the same.

    job = FineTuneJob.create(provider="fake", base_model="tiny", training_file="train.jsonl",
                             fake={"scenario": "fail"})
    job.wait().status  # JobStatus.FAILED
"""

from __future__ import annotations

import builtins
import hashlib
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from pydantic import Field

from anytune._capabilities import ALL_TRACKERS, Capabilities
from anytune._deploy import Deployment, is_settled, wait_until
from anytune._files import atomic_write
from anytune._provider import (
    IDEMPOTENCY_TAG,
    PlannedRequest,
    Provider,
    ProviderArgs,
    ProviderSettings,
    SubmitPlan,
    planned_upload,
)
from anytune._secrets import redact
from anytune._spec import FakeOptions, FakeStep, JobSpec, Method, Quantization
from anytune._types import Checkpoint, Event, FineTunedModel, JobError, JobRecord, JobStatus, MetricPoint
from anytune.errors import JobNotFoundError, UsageError

NAME = "fake"

if TYPE_CHECKING:
    from typing_extensions import Unpack


class FakeSettings(ProviderSettings):
    """``speed`` divides every timeline time (2.0 runs twice as fast)."""

    speed: float = Field(1.0, gt=0)
    fine_tuned_prefix: str = "ft"


def timeline(options: FakeOptions) -> list[FakeStep]:
    """The steps a job with these options goes through (pure)."""
    if options.timeline is not None:
        return list(options.timeline)
    total = options.seconds * (20 if options.scenario == "slow" else 1)
    n = options.steps
    steps = [
        FakeStep(at=0.0, status="validating", message="validating training file"),
        FakeStep(at=0.1 * total, status="queued", message="job queued"),
        FakeStep(at=0.2 * total, status="running", message="training started"),
    ]
    last = n if options.scenario != "fail" else max(1, n // 2)
    for k in range(1, last + 1):
        steps.append(
            FakeStep(
                at=round(0.2 * total + 0.7 * total * k / n, 6),
                status="running",
                step=k,
                train_loss=round(2.0 * 0.8**k, 6),
                valid_loss=round(2.1 * 0.82**k, 6) if k == n else None,
                message=f"step {k}/{n}",
            )
        )
    if options.scenario == "fail":
        steps.append(
            FakeStep(at=0.95 * total, status="failed", error="training diverged: loss is NaN", message="job failed")
        )
    else:
        steps.append(FakeStep(at=total, status="succeeded", message="job succeeded"))
    return steps


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _write_json(path: Path, state: dict[str, Any]) -> None:
    """``state`` as ``path``, whole or not at (redacted; another process or thread never reads half
    a file, nor do two writers share a temporary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(redact(orjson.dumps(state).decode()).encode())


class FakeProvider(Provider[FakeSettings]):
    """See the module docstring."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({Method.SFT, Method.DPO}),
        lora=True,
        quantization=frozenset(Quantization),
        data_formats=frozenset({"chat", "prompt_completion", "preference"}),
        sections=frozenset({"fake"}),
        trackers=ALL_TRACKERS,
        pause=False,
        min_examples=10,  # as strict as the hosted services, so tests that pass here pass there
        notes="deterministic, offline; state under ANYTUNE_HOME/fake",
    )
    Settings: ClassVar[type[ProviderSettings]] = FakeSettings
    poll_interval: ClassVar[float] = 0.02

    def __init__(self, settings: FakeSettings | None = None, **base: Unpack[ProviderArgs]) -> None:
        # Wall-clock time by default, not monotonic: a fake job's timeline is shared by every
        # process that reads its state file, and its timestamps are shown as dates.
        base.setdefault("clock", time.time)
        super().__init__(settings, **base)
        self.dir = self.home / "fake"

    # -- state file -----------------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        if not job_id.startswith("fakejob-") or "/" in job_id or os.sep in job_id:
            raise JobNotFoundError(f"{self.name}:{job_id}", "not a fake job id")
        return self.dir / f"{job_id}.json"

    def _load(self, job_id: str) -> dict[str, Any]:
        try:
            state: dict[str, Any] = orjson.loads(self._path(job_id).read_bytes())
        except FileNotFoundError:
            raise JobNotFoundError(f"{self.name}:{job_id}") from None
        return state

    def _write(self, state: dict[str, Any]) -> None:
        _write_json(self._path(state["id"]), state)

    # -- timeline evaluation (pure given state and now) -----------------------------------------
    def _visible(self, state: dict[str, Any], now: float) -> list[tuple[int, FakeStep]]:
        elapsed = (now - state["created_at"]) * self.settings.speed
        cancelled = state.get("cancelled_at")
        cut = (cancelled - state["created_at"]) * self.settings.speed if cancelled is not None else None
        steps = [FakeStep.model_validate(s) for s in state["timeline"]]
        out = [(i, s) for i, s in enumerate(steps) if s.at <= elapsed and (cut is None or s.at <= cut)]
        if cut is not None and elapsed >= cut and not any(JobStatus(s.status).is_terminal for _, s in out):
            out.append((len(steps), FakeStep(at=cut, status="cancelled", message="job cancelled")))
        # Nothing happens after a terminal step.
        for k, (_, s) in enumerate(out):
            if JobStatus(s.status).is_terminal:
                return out[: k + 1]
        return out

    def _events(self, state: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        prev: str | None = None
        for index, step in self._visible(state, self.clock()):
            when = _ts(state["created_at"] + step.at / self.settings.speed)
            eid = f"{index:06d}"
            if step.step is not None and (step.train_loss is not None or step.valid_loss is not None):
                point = MetricPoint(step=step.step, train_loss=step.train_loss, valid_loss=step.valid_loss, time=when)
                events.append(
                    Event(id=eid, kind="metric", time=when, metric=point, message=step.message or f"step {step.step}")
                )
            elif step.status != prev:
                level = "error" if step.status == "failed" else "info"
                text = step.message or step.status
                if step.error:
                    text = f"{text}: {step.error}"
                events.append(
                    Event(id=eid, kind="status", time=when, status=JobStatus(step.status), message=text, level=level)
                )
            elif step.message:
                events.append(Event(id=eid, kind="log", time=when, message=step.message))
            prev = step.status
        return events

    def _record(self, state: dict[str, Any]) -> JobRecord:
        visible = self._visible(state, self.clock())
        last = visible[-1][1] if visible else FakeStep(at=0, status="validating")
        status = JobStatus(last.status)
        steps_done = [s.step for _, s in visible if s.step is not None]
        total = [s.step for s in (FakeStep.model_validate(x) for x in state["timeline"]) if s.step is not None]
        running = [s.at for _, s in visible if s.status == "running"]
        error = next((JobError(message=s.error, code="fake_failure") for _, s in visible if s.error), None)
        succeeded = status is JobStatus.SUCCEEDED
        suffix = state.get("suffix") or "anytune"
        return JobRecord(
            provider=self.name,
            id=state["id"],
            status=status,
            raw_status=last.status,
            base_model=state["base_model"],
            fine_tuned_model=f"{self.settings.fine_tuned_prefix}:{state['base_model']}:{suffix}:{state['id']}"
            if succeeded
            else None,
            created_at=_ts(state["created_at"]),
            started_at=_ts(state["created_at"] + running[0] / self.settings.speed) if running else None,
            finished_at=_ts(state["created_at"] + last.at / self.settings.speed) if status.is_terminal else None,
            error=error,
            step=max(steps_done) if steps_done else None,
            total_steps=max(total) if total else None,
            trained_tokens=1000 * max(steps_done) if succeeded and steps_done else None,
            raw={"id": state["id"], "status": last.status, "metadata": state["metadata"]},
        )

    # -- the contract ---------------------------------------------------------------------------
    def plan(self, spec: JobSpec, *, idempotency_key: str) -> SubmitPlan:
        uploads = [planned_upload(spec.training_path, "training")]
        if spec.validation_file is not None:
            uploads.append(planned_upload(spec.validation_file, "validation"))
        options = spec.fake or FakeOptions()
        body = {
            "base_model": spec.base_model,
            "method": spec.method.value,
            "hyperparameters": spec.hyperparameters.model_dump(exclude_none=True),
            "suffix": spec.suffix,
            "metadata": {**spec.tags, IDEMPOTENCY_TAG: idempotency_key},
            "timeline": [s.model_dump(exclude_none=True) for s in timeline(options)],
        }
        return SubmitPlan(
            provider=self.name, uploads=uploads, requests=[PlannedRequest(operation="fake.create_job", body=body)]
        )

    @staticmethod
    def job_id_for(idempotency_key: str) -> str:
        """The id of the job created under ``idempotency_key`` (derived: a retried submit finds it)."""
        return "fakejob-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]

    def find(self, idempotency_key: str, *, spec: JobSpec | None = None) -> JobRecord | None:
        try:
            return self.get(self.job_id_for(idempotency_key))
        except JobNotFoundError:
            return None

    def submit(self, spec: JobSpec, *, idempotency_key: str) -> JobRecord:
        found = self.find(idempotency_key)
        if found is not None:
            return found
        job_id = self.job_id_for(idempotency_key)
        body = self.plan(spec, idempotency_key=idempotency_key).requests[0].body
        state = {
            "id": job_id,
            "created_at": self.clock(),
            "cancelled_at": None,
            "base_model": spec.base_model,
            "suffix": spec.suffix,
            # What its fine-tuned model "learned": chat() answers from this file (see there).
            "training_file": str(Path(spec.training_path).resolve()),
            "metadata": body["metadata"],
            "timeline": body["timeline"],
        }
        self._write(state)
        return self._record(state)

    def get(self, job_id: str) -> JobRecord:
        return self._record(self._load(job_id))

    #: What the fake's base models answer to everything.
    BASE_ANSWER = "I do not know."

    def chat(
        self,
        model: str,
        messages: builtins.list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
    ) -> str:
        """Deterministic answers: a fine-tuned model of this fake has memorised its training file (the
        assistant reply of the training example whose last user message is the same; else the base
        answer); any other model answers :attr:`BASE_ANSWER`. Cut to ``max_tokens`` words."""
        question = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        answer = self.BASE_ANSWER
        job_id = model.rsplit(":", 1)[-1]
        if model.startswith(f"{self.settings.fine_tuned_prefix}:") and self._path(job_id).is_file():
            answer = _memorised(self._load(job_id).get("training_file")).get(question, answer)
        return " ".join(answer.split(" ")[:max_tokens])

    # -- deploy: a simulated deployment, one JSON file per name -----------------------------------------
    #: Seconds (divided by ``speed``) a fake deployment stays ``creating``.
    DEPLOY_SECONDS = 2.0

    def _deployment_path(self, name: str) -> Path:
        return self.dir / "deployments" / f"{name}.json"

    def _deployment_of(self, state: dict[str, Any]) -> Deployment:
        ready = (self.clock() - state["created_at"]) * self.settings.speed >= self.DEPLOY_SECONDS
        return Deployment(
            provider=self.name,
            job_ref=state["job_ref"],
            name=state["name"],
            kind="fake-deployment",
            target=state["model"],
            model=state["model"],
            status="ready" if ready else "creating",
            cost_notes=("The fake provider's deployments cost nothing.",),
        )

    def deployment(self, model: FineTunedModel, name: str) -> Deployment | None:
        path = self._deployment_path(name)
        if not path.is_file():
            return None
        state = orjson.loads(path.read_bytes())
        if state["model"] != model.model_id:
            raise UsageError(
                f"deployment {name!r} serves {state['model']}, not {model.model_id}: choose another name",
                field="name",
            )
        return self._deployment_of(state)

    def deploy(self, model: FineTunedModel, name: str, settings: Any, *, wait: bool, timeout: float) -> Deployment:
        found = self.deployment(model, name)
        if found is None:
            state = {"name": name, "job_ref": model.job_ref, "model": model.model_id, "created_at": self.clock()}
            _write_json(self._deployment_path(name), state)
            found = self._deployment_of(state).model_copy(update={"created": True})
        if wait and not is_settled(found):
            settled = wait_until(
                lambda: self.deployment(model, name),
                settled=is_settled,
                sleep=self.sleep,
                clock=self.clock,
                timeout=timeout,
                what=f"{self.name} deployment {name}",
                interval=0.5,
            )
            if settled is None:
                raise UsageError(f"deployment {name!r} was removed while it was being created", field="name")
            found = settled.model_copy(update={"created": found.created})
        return found

    def undeploy(self, model: FineTunedModel, name: str) -> Deployment | None:
        found = self.deployment(model, name)
        if found is None:
            return None
        self._deployment_path(name).unlink(missing_ok=True)
        return found.model_copy(update={"status": "deleted"})

    def cancel(self, job_id: str) -> JobRecord:
        state = self._load(job_id)
        record = self._record(state)
        if not record.done and state.get("cancelled_at") is None:
            state["cancelled_at"] = self.clock()
            self._write(state)
        return self._record(state)

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        for event in self._events(self._load(job_id)):
            if after is None or event.id > after:
                yield event

    def list(self, limit: int = 20) -> list[JobRecord]:
        if not self.dir.is_dir():
            return []
        states = [orjson.loads(p.read_bytes()) for p in self.dir.glob("fakejob-*.json")]
        states.sort(key=lambda s: s["created_at"], reverse=True)
        return [self._record(s) for s in states[:limit]]

    def checkpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        # One checkpoint per step whose standing point (the last report of that step: a resumed
        # run reports steps again) has a validation loss; in step order, each step once.
        return [
            Checkpoint(
                step=point.step,
                id=f"{job_id}:ckpt-{point.step}",
                metrics=point,
                model=f"{job_id}:ckpt-step-{point.step}",
                created_at=point.time,
            )
            for point in self.metrics(job_id)
            if point.valid_loss is not None
        ]


def _memorised(training_file: str | None) -> dict[str, str]:
    """Last user message → assistant reply, for each chat example of a (canonical JSONL) training file."""
    import json

    found: dict[str, str] = {}
    if not training_file or not Path(training_file).is_file():
        return found
    with open(training_file, encoding="utf-8") as f:
        for line in f:
            try:
                messages = json.loads(line).get("messages") or []
            except (ValueError, AttributeError):
                continue
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            replies = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
            if users and replies:
                found.setdefault(str(users[-1].get("content") or ""), str(replies[-1].get("content") or ""))
    return found
