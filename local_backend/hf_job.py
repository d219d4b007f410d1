"""The training entry point of a Hugging Face Job: ``python -m anytune.local_backend.hf_job ...``.

The ``huggingface`` provider puts this command in the job (after a bootstrap that installs anytune
with pinned dependencies, see :mod:`anytune.providers.huggingface`). It runs the local backend's
trainer unchanged:

1. downloads the training (and validation) file from the dataset repo,
2. builds a run directory whose spec points at them and calls
   :func:`anytune.local_backend.train.run_training`,
3. prints what the trainer records: one ``ANYTUNE_METRIC {json}`` line per logging step (the
   provider turns them into metric points) and ``[anytune] ...`` lines for everything else,
4. pushes the adapter, tokenizer, metrics, resolved spec, result, a model card and, with
   ``report_to=["tensorboard"]``, the TensorBoard event files (under ``runs/``) to the output model
   repo in one commit, and prints ``ANYTUNE_RESULT {"hub_repo", "revision", "result"}``.

``report_to``'s trackers run in the job as they do locally: the job installs their packages (see
:func:`anytune.providers.huggingface.request.job_command`) and gets their settings
(``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``, ``TRACKIO_SPACE_ID``...) from the submitting shell.

A failure prints ``ANYTUNE_ERROR {"message", "code"}`` and exits with status 1, so the job ends in
``ERROR`` with the reason in its last log lines. SIGTERM (a cancelled job) stops training at the next
step boundary. The token comes from the job's ``HF_TOKEN`` secret through huggingface_hub; nothing
here prints it.

Only light modules are imported at module level: torch and the trainer load inside :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anytune._quiet import quiet_worker
from anytune._secrets import register_secret
from anytune._spec import JobSpec
from anytune.local_backend.joblog import RESULT_PREFIX
from anytune.local_backend.jobrun import PrintingRunDir, public_result, train
from anytune.local_backend.jobrun import fail as _fail
from anytune.local_backend.jobrun import print_traceback as _traceback
from anytune.local_backend.jobrun import say as _say
from anytune.local_backend.rundir import RunDir
from anytune.local_backend.tracking import TENSORBOARD_DIR

__all__ = ["PrintingRunDir", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m anytune.local_backend.hf_job",
        description="Train an anytune job on Hugging Face Jobs and push the adapter.",
    )
    parser.add_argument("--dataset-repo", required=True, help="dataset repo holding the data files")
    parser.add_argument("--train", required=True, help="training file's path in the dataset repo")
    parser.add_argument("--valid", help="validation file's path in the dataset repo")
    parser.add_argument("--output-repo", required=True, help="model repo the adapter is pushed to")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True)
    visibility.add_argument("--public", dest="private", action="store_false")
    parser.add_argument("--spec", required=True, help="the job spec as JSON (without file paths)")
    parser.add_argument("--workdir", type=Path, help="where to work (default: a temporary folder)")
    return parser


def _download(repo: str, path: str, folder: Path) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, path, repo_type="dataset", local_dir=folder))


def _model_card(spec: JobSpec, result: dict[str, Any], dataset_repo: str) -> str:
    from anytune.local_backend.publish import model_card

    origin = (
        f"on Hugging Face Jobs ({result.get('steps')} steps, {result.get('train_tokens')} training tokens); "
        f"data in `{dataset_repo}`"
    )
    return model_card(spec.base_model, spec.model_dump(mode="json", exclude_none=True), result, origin)


def _push(run: RunDir, args: argparse.Namespace, spec: JobSpec, result: dict[str, Any]) -> str:
    """Commit the adapter folder, metrics, spec, result and model card; return the revision."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(library_name="anytune")
    api.create_repo(args.output_repo, repo_type="model", private=args.private, exist_ok=True)
    files: dict[str, bytes | Path] = {}
    for path in sorted(run.adapter_dir.rglob("*")):
        if path.is_file():
            files[path.relative_to(run.adapter_dir).as_posix()] = path
    # The job-side paths mean nothing on the Hub: say where the data really is.
    where = f"hf://datasets/{args.dataset_repo}"
    shown = spec.model_dump(mode="json") | {
        "training_file": f"{where}/{args.train}",
        "validation_file": f"{where}/{args.valid}" if args.valid else None,
    }
    files["anytune_spec.json"] = json.dumps(shown, indent=1).encode()
    # report_to=["tensorboard"]: the event files go with the adapter (the Hub shows them in its
    # TensorBoard tab); the job's own disk is gone once it ends.
    tensorboard = run.path / TENSORBOARD_DIR
    for path in sorted(tensorboard.rglob("*")) if tensorboard.is_dir() else ():
        if path.is_file():
            files[f"runs/{path.relative_to(tensorboard).as_posix()}"] = path
    if run.metrics_file.exists():
        files["metrics.jsonl"] = run.metrics_file.read_bytes()
    public = public_result(result)
    files["anytune_result.json"] = json.dumps(public, indent=1, default=str).encode()
    files["README.md"] = _model_card(spec, result, args.dataset_repo).encode()
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=source) for name, source in files.items()]
    info = api.create_commit(
        args.output_repo,
        operations,
        repo_type="model",
        commit_message=f"anytune: {spec.method.value} LoRA adapter for {spec.base_model}",
    )
    return str(info.oid)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one Hugging Face job. Returns the exit status (0 once the adapter is pushed)."""
    args = _parser().parse_args(argv)
    # Before huggingface_hub, transformers or bitsandbytes load: the job's log (what `anytune jobs
    # events` shows) is the job's, not its libraries' deprecation notes, as in the local worker.
    quiet_worker(os.environ)
    register_secret(os.environ.get("HF_TOKEN"))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="anytune-job-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(args.spec)
        _say(f"[anytune] downloading the data from {args.dataset_repo}")
        data["training_file"] = str(_download(args.dataset_repo, args.train, work / "data"))
        if args.valid:
            data["validation_file"] = str(_download(args.dataset_repo, args.valid, work / "data"))
        spec = JobSpec.model_validate(data)
    except Exception as exc:
        _traceback()
        return _fail(f"could not prepare the job: {type(exc).__name__}: {exc}", "invalid_input")
    run = PrintingRunDir(work / "run")
    run.create(spec, idempotency_key="hf-job")
    result = train(run)
    if isinstance(result, int):
        return result
    _say(f"[anytune] pushing the adapter to {args.output_repo}")
    try:
        revision = _push(run, args, spec, result)
    except Exception as exc:
        _traceback()
        return _fail(
            f"training finished but pushing to {args.output_repo} failed: {type(exc).__name__}: {exc}", "push_failed"
        )
    public = public_result(result)
    _say(
        RESULT_PREFIX + json.dumps({"hub_repo": args.output_repo, "revision": revision, "result": public}, default=str)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
