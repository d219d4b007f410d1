"""The data plane: what a job reads from the dataset repo (data files, the trainer wheel) and the upload.

Data and wheel live under content-addressed paths (``anytune/data/<sha256>.jsonl``,
``anytune/wheels/<sha256[:16]>/<wheel>``): the upload cache remembers what was sent where, and the
Hub's own preupload check leaves out a file whose content the repo already holds, so the same bytes
are never sent twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anytune._files import file_digest
from anytune._provider import PlannedUpload, UploadCache
from anytune._quiet import hub_progress_bars
from anytune._spec import JobSpec

from .request import JobFiles
from .wheel import build_wheel

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["DATA_DIR", "WHEEL_DIR", "JobInputs", "data_path", "plan_inputs", "upload_inputs", "wheel_path"]

DATA_DIR = "anytune/data"
WHEEL_DIR = "anytune/wheels"

#: How the adapter runs one Hub call: ``call(what, fn)``, with its retries and error boundary.
Call = Callable[[str, Callable[[], Any]], Any]


def data_path(sha256: str) -> str:
    return f"{DATA_DIR}/{sha256}.jsonl"


def wheel_path(filename: str, sha256: str) -> str:
    return f"{WHEEL_DIR}/{sha256[:16]}/{filename}"


@dataclass(frozen=True)
class JobInputs:
    """A job's input files: what is uploaded (``uploads``), to which path (``paths`` by purpose)."""

    uploads: list[PlannedUpload]
    paths: dict[str, str]
    wheel: bytes

    def files(self, dataset_repo: str) -> JobFiles:
        return JobFiles(dataset_repo, self.paths["training"], self.paths.get("validation"), self.paths["trainer"])

    def source(self, item: PlannedUpload) -> Path | bytes:
        return self.wheel if item.purpose == "trainer" else Path(item.path)


def plan_inputs(spec: JobSpec) -> JobInputs:
    """The data files and the wheel of this anytune, with their paths in the dataset repo; no network."""
    uploads: list[PlannedUpload] = []
    paths: dict[str, str] = {}
    for purpose, file in (("training", spec.training_file), ("validation", spec.validation_file)):
        if file is not None:
            size, digest = file_digest(Path(file))
            uploads.append(PlannedUpload(path=str(file), purpose=purpose, bytes=size, sha256=digest))
            paths[purpose] = data_path(digest)
    filename, wheel = build_wheel()
    digest = hashlib.sha256(wheel).hexdigest()
    uploads.append(
        PlannedUpload(
            path=f"{filename} (built from the running anytune)", purpose="trainer", bytes=len(wheel), sha256=digest
        )
    )
    paths["trainer"] = wheel_path(filename, digest)
    return JobInputs(uploads, paths, wheel)


def upload_inputs(
    api: HfApi,
    inputs: JobInputs,
    repo: str,
    *,
    call: Call,
    store: UploadCache | None,
    provider: str,
    scope: str,
) -> JobFiles:
    """Create the private dataset repo and commit the inputs the cache does not know it holds.

    Args:
        api: the Hub client.
        inputs: from :func:`plan_inputs`.
        repo: the dataset repo id.
        call: the adapter's way to run a Hub call (retries, error translation).
        store: where uploads are remembered (None: every file is offered to the Hub's preupload check).
        provider: the provider name the cache files uploads under.
        scope: the account the cache files uploads under (endpoint and repo).
    """
    import huggingface_hub
    from huggingface_hub import CommitOperationAdd

    call("creating the dataset repo", lambda: api.create_repo(repo, repo_type="dataset", private=True, exist_ok=True))
    sources: dict[str, Path | bytes] = {}
    for item in inputs.uploads:
        path_in_repo = inputs.paths[item.purpose]
        if store is not None and store.find_upload(provider, scope, item.sha256) == path_in_repo:
            continue
        sources[path_in_repo] = inputs.source(item)
    if sources:

        def commit() -> Any:
            # Fresh operations per attempt: huggingface_hub marks them used. The preupload step
            # compares each file's hash with the repo's and leaves identical content out.
            operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=src) for p, src in sorted(sources.items())]
            with hub_progress_bars(huggingface_hub.utils):
                return api.create_commit(
                    repo,
                    operations,
                    repo_type="dataset",
                    commit_message=f"anytune: {len(operations)} job input file(s)",
                )

        call("uploading the dataset and trainer", commit)
        if store is not None:
            for item in inputs.uploads:
                if inputs.paths[item.purpose] in sources:
                    store.record_upload(provider, scope, item.sha256, inputs.paths[item.purpose], item.bytes)
    return inputs.files(repo)
