"""The detached training process of a local job: ``python -m anytune.local_backend.worker RUN_DIR``.

The ``local`` provider starts it in its own session (so it outlives the caller) with its output in
``RUN_DIR/worker.log``.  It records its pid, turns SIGTERM/SIGINT into a cancel request (the trainer
stops at the next step boundary, saves a checkpoint and writes ``cancelled``; a second signal stops
at once), runs :func:`anytune.local_backend.train.run_training`, and turns any exception into a
``failed`` status with an ``error`` object ``{message, code}``: the job never hangs silently and
never ends without a final status.

With several devices the provider runs it under ``python -m torch.distributed.run --standalone
--nproc_per_node N -m anytune.local_backend.worker RUN_DIR``; ``worker.pid`` then holds the
launcher's pid, and every rank reports its own failure. Each rank ends when its launcher dies,
however it died (:mod:`.orphan`): killing the launcher never leaves ranks training.

A run has one worker: the worker holds the run's ``worker.lock`` for its whole life (see
:mod:`anytune.local_backend.rundir`). Started by the provider it inherits the lock the provider took
(descriptor ``ANYTUNE_WORKER_LOCK_FD``; under ``torch.distributed.run`` the launcher holds it for the
ranks); started by hand it takes the lock itself. Holding it, it removes the scratch files of killed
writers before it trains. Then it waits its turn for its devices (:mod:`.devicequeue`): the job is
``queued`` (raw status ``waiting_for_device``) while another job uses its GPU, and a cancel ends the
wait at once.

Exit status: 0 the job ended (succeeded or cancelled), 1 it failed (the record says why), 2 not a
run directory, 3 another worker holds the run (nothing was touched).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from anytune._quiet import quiet_worker
from anytune._types import JobStatus
from anytune.errors import (
    AnytuneError,
    ConfigError,
    DataValidationError,
    JobNotFoundError,
    MissingDependencyError,
    ModelNotAvailableError,
    NotSupportedError,
)
from anytune.local_backend.launch import NODE_RANK_ARG
from anytune.local_backend.rundir import LOCK_FD_ENV, RunDir, WorkerLock

#: The exit status of a worker started on a run another worker holds.
EXIT_ALREADY_RUNNING = 3

OOM_HINT = (
    "lower hyperparameters.batch_size or hyperparameters.max_length, turn on "
    "local.gradient_checkpointing, or train on a 4-bit base (quantization '4bit')"
)


@dataclass(frozen=True)
class Failure:
    """What the job record says about an exception: a stable code and a message a user can act on."""

    code: str
    message: str


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _oom(exc: BaseException) -> Failure:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Failure("out_of_memory", f"out of memory while training ({first[:300]}): {OOM_HINT}")


def _missing_model(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, OSError | ValueError) and (
        "is not a local folder" in text
        or "not a valid model identifier" in text
        or "Repo id must" in text
        or "does not appear to have a file named config.json" in text
        or type(exc).__name__ in ("RepositoryNotFoundError", "HFValidationError", "GatedRepoError")
    )


def _bitsandbytes(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "bitsandbytes" in text and isinstance(exc, ImportError | RuntimeError | OSError | ValueError)


def _chat_template(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, ValueError) and ("chat template" in text or "chat_template" in text)


#: What a collective says when a peer process is gone (gloo, NCCL, the c10d store).
_PEER_LOST = (
    "connection reset by peer",
    "connection closed by peer",
    "remote process exited",
    "communicator was aborted",
    "broken pipe",
)


def _peer_lost(exc: BaseException) -> bool:
    text = str(exc).lower()
    distributed = type(exc).__name__ in ("DistBackendError", "DistNetworkError", "DistStoreError")
    return isinstance(exc, RuntimeError) and (distributed or any(words in text for words in _PEER_LOST))


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _field(exc: BaseException) -> str | None:
    value = getattr(exc, "field", None)
    return value if isinstance(value, str) else None


# Anytune's own errors are already worded for the user: keep the message, give a stable code.
# Specific causes first, then by class.
_ANYTUNE_CAUSES: tuple[tuple[Callable[[BaseException], bool], str], ...] = (
    (
        lambda e: (
            _field(e) == "base_model" and any(w in str(e) for w in ("does not exist", "no config.json", "cannot load"))
        ),
        "model_not_found",
    ),
    (lambda e: _field(e) == "local.chat_template" or "chat template" in str(e), "no_chat_template"),
    (lambda e: "bitsandbytes" in str(e), "bitsandbytes_unavailable"),
)
_ANYTUNE_CODES: tuple[tuple[type[AnytuneError], str], ...] = (
    (MissingDependencyError, "missing_dependency"),
    (DataValidationError, "invalid_data"),
    (NotSupportedError, "not_supported"),
    (ModelNotAvailableError, "model_not_found"),
    (ConfigError, "invalid_config"),
    (JobNotFoundError, "not_found"),
)

# Everything else, first match wins (a table, not a ladder).
_RULES: tuple[tuple[Callable[[BaseException], bool], Callable[[BaseException], Failure]], ...] = (
    (_is_oom, _oom),
    (
        _bitsandbytes,
        lambda e: Failure(
            "bitsandbytes_unavailable",
            f"4-bit/8-bit quantization needs a working bitsandbytes ({_short(e)}); install it with "
            'pip install "anytune[local]", or train without quantization',
        ),
    ),
    (
        _peer_lost,
        lambda e: Failure(
            "rank_lost",
            "another process of this job stopped (killed, crashed or out of memory: worker.log shows which), so "
            f"this one could not go on ({_short(e)[:200]}); `anytune jobs resume` continues from the last checkpoint",
        ),
    ),
    (
        _missing_model,
        lambda e: Failure(
            "model_not_found",
            f"base model not found: not a local model folder (config.json, weights, tokenizer) and not a model "
            f"id that could be fetched from the Hugging Face Hub ({_short(e)})",
        ),
    ),
    (
        _chat_template,
        lambda e: Failure(
            "no_chat_template",
            f"the tokenizer has no chat template ({_short(e)}); pass one with local.chat_template, or use a "
            "chat/instruct model",
        ),
    ),
)


def classify(exc: BaseException) -> Failure:
    """The failure record for ``exc`` (pure; tested table-driven)."""
    code = getattr(exc, "code", None)
    if isinstance(exc, AnytuneError):
        if _is_oom(exc.__cause__ or exc):
            return _oom(exc.__cause__ or exc)
        given = code if isinstance(code, str) and code else None
        found = next((c for matches, c in _ANYTUNE_CAUSES if matches(exc)), None) or next(
            (c for cls, c in _ANYTUNE_CODES if isinstance(exc, cls)), "worker_error"
        )
        return Failure(given or found, str(exc))
    for matches, failure in _RULES:
        if matches(exc):
            return failure(exc)
    return Failure("worker_error", f"training failed: {type(exc).__name__}: {_short(exc)} (see worker.log)")


class _Signals:
    """First SIGTERM/SIGINT: ask the trainer to stop at the next step boundary. Second: stop now."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.count = 0

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self)

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        with contextlib.suppress(OSError):
            self.run.cancel_file.touch()
        if self.count > 1:
            raise KeyboardInterrupt(f"signal {signum} received twice")
        print(f"anytune worker: signal {signum}: stopping at the next step boundary", file=sys.stderr, flush=True)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _under_launcher() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _finish_unfinished(run: RunDir) -> None:
    """The trainer returned without a terminal status: never leave the job looking alive."""
    status = JobStatus(run.status().get("status", JobStatus.QUEUED.value))
    if status.is_terminal:
        return
    if run.result() is not None:
        run.set_status(JobStatus.SUCCEEDED, raw="succeeded", message="job succeeded")
    elif run.cancel_requested():
        run.set_status(JobStatus.CANCELLED, raw="cancelled", message="job cancelled")
    else:
        message = "the trainer stopped without a result (see worker.log)"
        run.set_status(
            JobStatus.FAILED, raw="worker_error", message=message, error={"message": message, "code": "worker_error"}
        )


def _take_lock(run: RunDir) -> WorkerLock | None:
    """The run's lock: the one the provider handed over, or taken now; None when another holds it."""
    inherited = os.environ.pop(LOCK_FD_ENV, "")  # not for the programs this one starts
    lock = run.adopt_worker_lock(int(inherited)) if inherited.isdigit() else None
    # On Windows the provider cannot hand the lock over: it lets go as it starts the worker.
    return lock or run.acquire_worker_lock(timeout=10.0 if sys.platform == "win32" else 0.0)


def _fail(run: RunDir, exc: BaseException) -> None:
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    if JobStatus(run.status().get("status", JobStatus.QUEUED.value)).is_terminal:
        return  # the trainer (or another rank) already wrote the final word
    if isinstance(exc, KeyboardInterrupt):
        run.set_status(JobStatus.CANCELLED, raw="cancelled", message="job cancelled (stopped at once)")
        return
    failure = classify(exc)
    prefix = f"rank {_rank()}: " if _under_launcher() else ""
    run.set_status(
        JobStatus.FAILED,
        raw=failure.code,
        message=f"job failed: {prefix}{failure.message}",
        error={"message": prefix + failure.message, "code": failure.code},
    )


OUTPUT_DIR_FIELD = "local.output_dir"


def _ours(folder: Path, spec: dict[str, Any]) -> bool:
    """``folder`` holds an adapter of this very spec (an export that a killed worker did not record)."""
    try:
        return bool(json.loads((folder / "anytune_spec.json").read_text()) == spec)
    except (OSError, ValueError):
        return False


def export_outputs(run: RunDir, result: dict[str, Any]) -> dict[str, Any]:
    """Put the finished adapter (and merged model) in ``local.output_dir``; the result, pointing there.

    The adapter is copied (the run directory keeps its own: ``hf_job`` and inspection read it), the
    merged model is moved (it can be large). The folder appears whole: the copy is made beside it and
    renamed into place. A folder that filled up while the job ran is not overwritten: the job fails
    naming the field, and the adapter stays in the run directory.
    """
    spec = run.spec()
    target = spec.local.output_dir if spec.local is not None else None
    if target is None:
        return result
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not (target.is_dir() and _ours(target, spec.model_dump(mode="json"))):
            raise ConfigError(
                f"{target} is no longer a new or empty folder (something was written there while the job ran); "
                f"the adapter is in {run.adapter_dir}",
                field=OUTPUT_DIR_FIELD,
            )
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.anytune-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(run.adapter_dir, tmp)
        if target.is_dir():
            target.rmdir()  # empty: checked above
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    exported = {**result, "adapter_path": str(target)}
    merged = result.get("merged_path")
    if merged:
        shutil.move(str(merged), str(target / "merged"))
        exported["merged_path"] = str(target / "merged")
    return exported


class ExportingRunDir(RunDir):
    """The run directory as the trainer sees it: its result is exported (:func:`export_outputs`) as it
    is written, before the trainer records ``succeeded``: a job that succeeded has its output in place."""

    def write_result(self, data: dict[str, Any]) -> None:
        super().write_result(export_outputs(self, data))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job's training in this process. Returns the exit status (0 unless it failed)."""
    parser = argparse.ArgumentParser(
        prog="python -m anytune.local_backend.worker",
        description="Run a local anytune job (started by the local provider).",
    )
    parser.add_argument("run_dir", type=Path, help="the job's run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.add_argument(
        NODE_RANK_ARG,
        dest="node_rank",
        type=int,
        default=0,
        help="this machine's node rank on a multi-node job (node 0's first process writes the run directory)",
    )
    args = parser.parse_args(argv)
    if _under_launcher():
        # First thing: a rank whose launcher was killed must not go on training (see .orphan).
        from anytune.local_backend.orphan import guard

        guard()
    quiet_worker(os.environ)  # before transformers/bitsandbytes load: their notes stay out of worker.log
    run = RunDir(args.run_dir)
    if not run.exists():
        print(f"anytune worker: {args.run_dir} is not a run directory (no spec.json)", file=sys.stderr)
        return 2
    lock: WorkerLock | None = None
    if _under_launcher():
        os.environ.pop(LOCK_FD_ENV, None)  # the launcher holds the lock for every rank
    else:
        lock = _take_lock(run)
        if lock is None:
            holder = run.lock_holder()
            print(
                f"anytune worker: run {run.path} is already running"
                f"{f' (pid {holder})' if holder else ''}; a run has one worker, so this one exits",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_ALREADY_RUNNING
        lock.record(os.getpid())
        for path in run.remove_stale_scratch(lock):
            print(f"anytune worker: removed {path.name}, left by a writer that was killed", file=sys.stderr)
    _Signals(run).install()
    if lock is not None:
        run.write_pid(os.getpid())
    print(
        f"anytune worker: pid {os.getpid()}, rank {_rank()}, run {run.path}{', resuming' if args.resume else ''}",
        file=sys.stderr,
        flush=True,
    )
    try:
        from anytune.local_backend.devicequeue import hold_devices

        # In line for the GPU before loading anything: two jobs on one device would run out of memory.
        devices = hold_devices(run)
        if devices is None:
            return 0  # cancelled while it waited: the status says so, no device was taken
        with devices:
            from anytune.local_backend.train import run_training

            run_training(ExportingRunDir(run.path), resume=args.resume, node_rank=args.node_rank)
    except BaseException as exc:
        _fail(run, exc)
        return 1
    if args.node_rank == 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        _finish_unfinished(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
