"""Publishing a local result to the Hugging Face Hub (``FineTunedModel.push_to_hub``, ``anytune push``).

One commit carries everything a reader of the repo needs: the adapter folder as the trainer saved it
(``adapter_config.json``, the weights, the tokenizer when saved), a model card (``README.md``) with
the metrics and hyperparameters, ``metrics.jsonl`` (one point per logging step), ``anytune_spec.json``
(the spec, with the data files named but not their local paths) and ``anytune_result.json``.

The repo is created when missing (private unless asked otherwise; an existing repo keeps its
visibility). The token comes from the caller, else ``HF_TOKEN``, else ``hf auth login``'s; it is
registered for redaction before any request. huggingface_hub is imported here, on first use.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from anytune._boundary import boundary, error_class_for_status
from anytune._quiet import hub_progress_bars
from anytune._secrets import install_log_filter, redact, register_secret
from anytune._types import FineTunedModel, check_hub_repo_id
from anytune.errors import AnytuneError, ConfigError, MissingDependencyError, ServiceUnavailableError

__all__ = ["DEFAULT_ENDPOINT", "model_card", "publishable_files", "push_result"]

DEFAULT_ENDPOINT = "https://huggingface.co"
PROVIDER = "huggingface"
#: Written by the trainer into every adapter folder (see anytune.providers.local.OUTPUT_SPEC_FILE).
SPEC_FILE = "anytune_spec.json"
#: Figures of the result shown in the card, in this order, with their labels.
_CARD_FIGURES = (
    ("final_train_loss", "final train loss"),
    ("final_valid_loss", "final validation loss"),
    ("base_valid_loss", "base model's validation loss"),
    ("steps", "steps"),
    ("train_tokens", "training tokens"),
    ("train_seconds", "training time (s)"),
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _spec(folder: Path) -> dict[str, Any]:
    """The spec the trainer saved, with data files named by their file name only (a local path
    says where the user keeps things, nothing the repo's readers need)."""
    try:
        data = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    for key in ("training_file", "validation_file"):
        if isinstance(data.get(key), str):
            data[key] = Path(data[key]).name
    return data


def _result(model: FineTunedModel) -> dict[str, Any]:
    """What the trainer reported, without local paths."""
    out = {k: v for k, v in model.extra.items() if not k.endswith(("_path", "_dir")) and k != "hub_url"}
    if model.trained_tokens is not None:
        out["train_tokens"] = model.trained_tokens
    final = model.final_metrics
    if final is not None:
        out.setdefault("steps", final.step)
        if final.train_loss is not None:
            out.setdefault("final_train_loss", final.train_loss)
        if final.valid_loss is not None:
            out.setdefault("final_valid_loss", final.valid_loss)
    return out


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _hyperparameters(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("method", spec.get("method", "sft"))]
    for section in ("hyperparameters", "lora"):
        values = spec.get(section)
        if isinstance(values, dict):
            rows += [(f"{section}.{k}" if section == "lora" else k, v) for k, v in values.items() if v is not None]
    if spec.get("quantization"):
        rows.append(("quantization", spec["quantization"]))
    return rows


def model_card(base_model: str | None, spec: Mapping[str, Any], result: Mapping[str, Any], origin: str) -> str:
    """The repo's ``README.md``: Hub metadata, the metrics, the hyperparameters, how to load it (pure).

    One card for every adapter anytune publishes (``anytune push`` and a Hugging Face job's push);
    ``origin`` is the sentence that says where it was trained.
    """
    base = base_model or str(spec.get("base_model") or "")
    method = str(spec.get("method") or "sft")
    front = ["---"]
    # The Hub links base_model to that model's page: only a repo id belongs there, not a local path.
    if _REPO_ID.match(base) and not Path(base).expanduser().exists():
        front.append(f"base_model: {base}")
    front += ["library_name: peft", "pipeline_tag: text-generation", "tags:", "- anytune", "- lora", f"- {method}"]
    front.append("---")
    metrics = [f"| {label} | {_figure(result[key])} |" for key, label in _CARD_FIGURES if result.get(key) is not None]
    hyper = [f"| {name} | {_figure(value)} |" for name, value in _hyperparameters(spec)]
    lines = [
        *front,
        "",
        f"# LoRA adapter for {base or 'its base model'}",
        "",
        f"Fine-tuned with [anytune](https://example.invalid/anytune) ({method}) {origin}.",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
        *(metrics or ["| (none recorded) | |"]),
        "",
        "## Hyperparameters",
        "",
        "| name | value |",
        "| --- | --- |",
        *hyper,
        "",
        "Files: the PEFT adapter (and tokenizer, when saved), `anytune_spec.json` (the job spec), "
        "`metrics.jsonl` (one point per logging step), `anytune_result.json` (what the trainer reported).",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "",
        'model = AutoPeftModelForCausalLM.from_pretrained("<this repo>")',
        "```",
        "",
    ]
    return redact("\n".join(lines))


def publishable_files(model: FineTunedModel) -> dict[str, bytes | Path]:
    """What the commit holds, by path in the repo: the adapter folder's files, then the card,
    metrics, spec and result anytune writes (they replace files of the same name).

    Raises:
        ConfigError: the result's folder holds no adapter (``adapter_config.json``).
    """
    folder = Path(model.adapter_path or "")
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{folder} holds no adapter (adapter_config.json): nothing to push", field="adapter_path")
    files: dict[str, bytes | Path] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(p.startswith(".") for p in rel.parts):
            files[rel.as_posix()] = path
    spec = _spec(folder)
    result = _result(model)
    run_dir = model.extra.get("run_dir")
    metrics = Path(run_dir) / "metrics.jsonl" if isinstance(run_dir, str) else None
    if metrics is None or not metrics.is_file():
        metrics = folder / "metrics.jsonl"  # the copy the trainer saved with the adapter
    if metrics.is_file():
        files["metrics.jsonl"] = _one_point_per_step(metrics)
    if spec:
        files[SPEC_FILE] = redact(json.dumps(spec, indent=1)).encode()
    files["anytune_result.json"] = redact(json.dumps(result, indent=1, default=str)).encode()
    origin = f"on the local trainer; job `{model.job_ref}`"
    files["README.md"] = model_card(model.base_model, spec, result, origin).encode()
    return files


def _one_point_per_step(path: Path) -> bytes:
    """``metrics.jsonl`` with one line per step, in step order. A resumed run logs again the steps
    after its checkpoint; the last word on a step wins, as :meth:`RunDir.metrics` reads it."""
    points: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):  # a torn or foreign line: not a point
            continue
        if isinstance(step, int):
            points[step] = line
    return "".join(points[s] + "\n" for s in sorted(points)).encode()


def _import_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise MissingDependencyError("huggingface_hub", "hf", "pushing to the Hugging Face Hub") from exc
    install_log_filter(logging.getLogger("huggingface_hub"))
    return huggingface_hub


def _translate(repo: str, endpoint: str) -> Any:
    """huggingface_hub / httpx2 exceptions -> anytune errors (the status picks the family)."""

    def translate(exc: Exception, upload: str = "") -> AnytuneError | None:
        # huggingface_hub raises a failed LFS upload (the PUT to storage, a part, the verify call)
        # as RuntimeError("Error while uploading 'PATH' to the Hub.") from the HTTP or transport
        # error: that error is what happened, and the message names the file.
        if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, Exception):
            return translate(exc.__cause__, f" ({str(exc).rstrip('.')})")
        errors = sys.modules.get("huggingface_hub.errors")
        if errors is not None and isinstance(exc, errors.HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else None
            text = getattr(exc, "server_message", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            return error_class_for_status(status)(
                f"pushing to {repo}{upload}: {text}", provider=PROVIDER, status_code=status
            )
        httpx2 = sys.modules.get("httpx2")
        if httpx2 is not None and isinstance(exc, httpx2.HTTPError):
            return ServiceUnavailableError(
                f"pushing to {repo}{upload}: could not reach {endpoint}: {type(exc).__name__}: {exc}",
                provider=PROVIDER,
            )
        return None

    return translate


def push_result(
    model: FineTunedModel, *, repo: str, private: bool = True, token: str | None = None, endpoint: str | None = None
) -> FineTunedModel:
    """Create ``repo`` if needed and commit the result's files to it (see the module docstring).

    Everything that can be checked here is checked before the first request: the repo id, the
    adapter folder, the token.

    Returns:
        ``model`` with ``hub_repo``, ``revision`` (the commit) and ``extra["hub_url"]`` set.

    Raises:
        ConfigError: a bad repo id, no adapter, or no token (set ``HF_TOKEN``).
        MissingDependencyError: huggingface_hub is not installed.
        AuthenticationError, PermissionDeniedError, ProviderError: the Hub refused or failed.
    """
    check_hub_repo_id(repo)
    files = publishable_files(model)
    hub = _import_hub()
    token = token or hub.get_token()
    if not token:
        raise ConfigError(
            "no Hugging Face token: set HF_TOKEN to a token with write access, or log in with `hf auth login`",
            field="HF_TOKEN",
        )
    register_secret(token)
    where = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    from anytune._version import __version__

    with boundary(_translate(repo, where)):
        api = hub.HfApi(endpoint=where, token=token, library_name="anytune", library_version=__version__)
        url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        operations = [hub.CommitOperationAdd(path_in_repo=name, path_or_fileobj=src) for name, src in files.items()]
        with hub_progress_bars(hub.utils):
            info = api.create_commit(
                url.repo_id,
                operations,
                repo_type="model",
                commit_message=f"anytune: LoRA adapter of {model.job_ref}",
            )
    extra = {**model.extra, "hub_url": str(url), "pushed_files": sorted(files)}
    return model.model_copy(update={"hub_repo": url.repo_id, "revision": str(info.oid), "extra": extra})
