"""The training entry point of a Kubernetes pod: ``python -m anytune.local_backend.k8s_job ...``.

The ``kubernetes`` provider puts this command in its Job's pods (after a bootstrap that installs
anytune with pinned dependencies, see :mod:`anytune.providers.kubernetes.manifests`). It runs the
local backend's trainer unchanged, with its inputs and outputs on the *storage* the provider was
configured with: a folder (a PersistentVolumeClaim mounted in the pod, or any local path) or an
fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``abfs://...``, ``file:///...``):

1. copies the training (and validation) file from ``STORAGE/<path>`` into the pod;
2. continues from the last checkpoint under ``STORAGE/jobs/<job>/checkpoints/`` when one is there
   (a pod that was deleted, evicted or failed, then created again under the same name, resumes);
3. runs :func:`anytune.local_backend.train.run_training` and prints what it records (the
   ``ANYTUNE_METRIC`` lines of :mod:`.joblog`, :class:`~anytune.local_backend.jobrun.PrintingRunDir`),
   copying each checkpoint to the storage as it is made;
4. writes the adapter folder, ``metrics.jsonl``, ``anytune_spec.json`` and ``anytune_result.json``
   to ``STORAGE/jobs/<job>/`` and prints ``ANYTUNE_RESULT {"location", "adapter", "result"}``.

On a multi-node job (``torch.distributed.run`` in every pod) only the first process of node 0
writes to the storage, as in a local multi-node run; every node restores the checkpoint.

A checkpoint on the storage is complete once its marker ``checkpoints/step-N.done`` exists: an
object store has no atomic folder rename, so the marker is written after the folder's last file.

A failure prints ``ANYTUNE_ERROR {"message", "code"}`` and exits with status 1 (the pod fails, and
the Job with it: ``backoffLimit`` is 0). SIGTERM (the Job deleted, ``anytune jobs cancel``) stops
training at the next step boundary, after a checkpoint. Storage credentials come from the pod's
environment (a Secret the provider references by name) through fsspec; nothing here prints them.

Only light modules are imported at module level: fsspec, torch and the trainer load inside :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anytune._quiet import quiet_worker
from anytune._secrets import register_secret
from anytune._spec import JobSpec
from anytune._types import Checkpoint, JobStatus, MetricPoint
from anytune.local_backend.joblog import RESULT_PREFIX
from anytune.local_backend.jobrun import PrintingRunDir, fail, print_traceback, public_result, say, train
from anytune.local_backend.tracking import TENSORBOARD_DIR

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["DONE_SUFFIX", "JOBS_DIR", "Storage", "main", "output_dir"]

#: Where each job's outputs go under the storage root: ``jobs/<job name>/``.
JOBS_DIR = "jobs"
#: The marker of a complete checkpoint on the storage, next to its folder.
DONE_SUFFIX = ".done"
_STEP = re.compile(r"^step-(\d+)$")


def output_dir(job: str) -> str:
    """A job's folder under the storage root (the provider computes the same)."""
    return f"{JOBS_DIR}/{job}"


class Storage:
    """The storage root through fsspec: a local folder (a mounted volume) or an object-store URL."""

    def __init__(self, url: str) -> None:
        import fsspec.core

        self.url = url.rstrip("/")
        fs, root = fsspec.core.url_to_fs(self.url)
        self.fs: AbstractFileSystem = fs
        self.root = str(root).rstrip("/")

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel.lstrip('/')}" if rel else self.root

    def location(self, rel: str) -> str:
        """Where ``rel`` is, as the user named the storage (a URL or a mounted path)."""
        return f"{self.url}/{rel.lstrip('/')}"

    def get_file(self, rel: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self.path(rel), str(dest))
        return dest

    def put_tree(self, folder: Path, rel: str) -> None:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.put_bytes(path.read_bytes(), f"{rel}/{path.relative_to(folder).as_posix()}")

    def put_bytes(self, data: bytes, rel: str) -> None:
        target = self.path(rel)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(target, data)

    def get_tree(self, rel: str, folder: Path) -> None:
        base = self.path(rel)
        for found in sorted(self.fs.find(base)):
            dest = folder / str(found)[len(base) :].lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(found, str(dest))

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def remove(self, rel: str) -> None:
        if self.fs.exists(self.path(rel)):
            self.fs.rm(self.path(rel), recursive=True)

    def complete_checkpoints(self, rel: str) -> list[int]:
        """Steps of the complete checkpoints under ``rel`` (those with their marker), ascending."""
        base = self.path(rel)
        if not self.fs.exists(base):
            return []
        steps = []
        for entry in self.fs.ls(base, detail=False):
            name = str(entry).rstrip("/").rsplit("/", 1)[-1]
            if name.endswith(DONE_SUFFIX):
                m = _STEP.match(name[: -len(DONE_SUFFIX)])
                if m and self.fs.exists(f"{base}/{name[: -len(DONE_SUFFIX)]}"):
                    steps.append(int(m.group(1)))
        return sorted(steps)


class StorageRunDir(PrintingRunDir):
    """A printing run directory that also copies each checkpoint to the storage as it is made
    (the writer only), so a pod created again continues from it; two are kept, as locally."""

    storage: Storage | None = None
    remote: str = ""

    def emit(
        self,
        kind: str,
        message: str,
        *,
        status: JobStatus | None = None,
        level: str = "info",
        metric: MetricPoint | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        super().emit(kind, message, status=status, level=level, metric=metric, checkpoint=checkpoint)
        if checkpoint is not None and self.storage is not None:
            self._mirror(checkpoint.step)

    def _mirror(self, step: int) -> None:
        storage, remote = self.storage, f"{self.remote}/checkpoints"
        assert storage is not None
        local = self.checkpoints_dir / f"step-{step}"
        if not local.is_dir():
            return
        try:
            storage.put_tree(local, f"{remote}/step-{step}")
            storage.put_bytes(b"", f"{remote}/step-{step}{DONE_SUFFIX}")
            keep = {p.name for p in self.checkpoint_dirs()}
            for old in storage.complete_checkpoints(remote):
                if f"step-{old}" not in keep:
                    storage.remove(f"{remote}/step-{old}{DONE_SUFFIX}")  # marker first: never a half one
                    storage.remove(f"{remote}/step-{old}")
        except Exception as exc:  # a lost copy costs a resume point, not the run
            say(f"[anytune] WARNING: copying checkpoint step {step} to the storage failed: {type(exc).__name__}: {exc}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m anytune.local_backend.k8s_job",
        description="Train an anytune job in a Kubernetes pod, inputs and outputs on a volume or an fsspec URL.",
    )
    parser.add_argument("--storage", required=True, help="storage root: a mounted folder or an fsspec URL")
    parser.add_argument("--job", required=True, help="the job's name: outputs go to STORAGE/jobs/JOB/")
    parser.add_argument("--train", required=True, help="training file's path under the storage root")
    parser.add_argument("--valid", help="validation file's path under the storage root")
    parser.add_argument("--spec", required=True, help="the job spec as JSON (without file paths)")
    parser.add_argument("--node-rank", type=int, default=0, help="this pod's node on a multi-node job")
    parser.add_argument("--workdir", type=Path, help="where to work (default: a temporary folder)")
    return parser


def _writer(node_rank: int) -> bool:
    """The one process that writes to the storage: the first process of node 0."""
    return node_rank == 0 and int(os.environ.get("LOCAL_RANK", "0") or 0) == 0


def _restore(storage: Storage, remote: str, run: StorageRunDir) -> int | None:
    """Copy the newest complete checkpoint from the storage into ``run``; its step, or None."""
    steps = storage.complete_checkpoints(f"{remote}/checkpoints")
    if not steps:
        return None
    step = steps[-1]
    tmp = run.new_checkpoint_tmp(step)
    storage.get_tree(f"{remote}/checkpoints/step-{step}", tmp)
    run.commit_checkpoint(tmp, step)
    return step


def _publish(storage: Storage, remote: str, run: StorageRunDir, spec: JobSpec, args: argparse.Namespace) -> None:
    storage.put_tree(run.adapter_dir, f"{remote}/adapter")
    shown = spec.model_dump(mode="json") | {
        "training_file": storage.location(args.train),
        "validation_file": storage.location(args.valid) if args.valid else None,
    }
    storage.put_bytes(json.dumps(shown, indent=1).encode(), f"{remote}/anytune_spec.json")
    if run.metrics_file.exists():
        storage.put_bytes(run.metrics_file.read_bytes(), f"{remote}/metrics.jsonl")
    tensorboard = run.path / TENSORBOARD_DIR
    if tensorboard.is_dir():
        storage.put_tree(tensorboard, f"{remote}/runs")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one pod's part of a job. Returns the exit status (0 once the adapter is on the storage)."""
    args = _parser().parse_args(argv)
    quiet_worker(os.environ)
    register_secret(os.environ.get("HF_TOKEN"))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="anytune-job-"))
    work.mkdir(parents=True, exist_ok=True)
    writer = _writer(args.node_rank)
    remote = output_dir(args.job)
    try:
        storage = Storage(args.storage)
        data: dict[str, Any] = json.loads(args.spec)
        say(f"[anytune] copying the data from {args.storage}")
        data["training_file"] = str(storage.get_file(args.train, work / "data" / "train" / Path(args.train).name))
        if args.valid:
            data["validation_file"] = str(storage.get_file(args.valid, work / "data" / "valid" / Path(args.valid).name))
        spec = JobSpec.model_validate(data)
        run = StorageRunDir(work / "run")
        run.create(spec, idempotency_key=args.job)
        step = _restore(storage, remote, run)
    except Exception as exc:
        print_traceback()
        return fail(f"could not prepare the job: {type(exc).__name__}: {exc}", "invalid_input")
    if step is not None:
        say(f"[anytune] resuming from the checkpoint of step {step} on the storage")
    if writer:
        run.storage, run.remote = storage, remote
    result = train(run, resume=step is not None, node_rank=args.node_rank)
    if isinstance(result, int):
        return result
    if not writer:
        return 0
    location = storage.location(remote)
    say(f"[anytune] writing the adapter to {location}")
    public = public_result(result)
    try:
        _publish(storage, remote, run, spec, args)
        # Last: its presence says the folder is complete (result() reads it).
        storage.put_bytes(json.dumps(public, indent=1, default=str).encode(), f"{remote}/anytune_result.json")
    except Exception as exc:
        print_traceback()
        return fail(f"training finished but writing to {location} failed: {type(exc).__name__}: {exc}", "push_failed")
    say(
        RESULT_PREFIX
        + json.dumps({"location": location, "adapter": f"{location}/adapter", "result": public}, default=str)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
