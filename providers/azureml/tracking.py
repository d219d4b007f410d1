"""The workspace's tracking data plane: run history (times, errors, warnings) and MLflow metrics.

Azure ML serves both behind the workspace's API host, found through its discovery URL; requests go
through plain azure-core pipelines with the workspace's credential, transport and read retry
policy.  Metric points are folded from the MLflow metric histories of the job's run and its child
runs into one :class:`~anytune.MetricPoint` per step.  MLflow pages both the run search and each
metric's history (``next_page_token``): every page is read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

from anytune._boundary import boundary
from anytune._timestamps import parse_timestamp
from anytune._types import JobStatus, MetricPoint
from anytune.errors import (
    InvalidRequestError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
    ServiceUnavailableError,
)
from anytune.providers.azureml.workspace import Connection

#: MLflow metric key -> MetricPoint field (anything else goes to ``extra``).  Where a job logged
#: several keys of one field, the one listed first fills it and the others stay in ``extra`` under
#: their own names: a step's own value beats a summary (see :func:`fold_metrics`).
METRIC_KEYS: Mapping[str, str] = {
    "loss": "train_loss",
    "train/loss": "train_loss",
    "train_loss": "train_loss",
    "eval_loss": "valid_loss",
    "eval/loss": "valid_loss",
    "validation_loss": "valid_loss",
    "epoch": "epoch",
    "train/epoch": "epoch",
    "learning_rate": "learning_rate",
    "train/learning_rate": "learning_rate",
    "train_token_accuracy": "token_accuracy",
    "eval_token_accuracy": "valid_token_accuracy",
    "num_input_tokens_seen": "tokens_seen",
}
_RANK: Mapping[str, int] = {key: i for i, key in enumerate(METRIC_KEYS)}

#: Failures after which run details or metrics are simply not there yet (the job is still what
#: the jobs API says it is).
_UNREADABLE = (ServiceUnavailableError, InvalidRequestError, RateLimitError, PermissionDeniedError)


def fold_metrics(histories: Iterable[tuple[str, Iterable[Mapping[str, Any]]]]) -> list[MetricPoint]:
    """MLflow metric histories, ``(key, points)``, as one MetricPoint per step, by step (pure).

    Each field is filled from the first key of :data:`METRIC_KEYS` the job logged at all; the other
    keys of that field stay in ``extra`` under their own names.  Whole keys, not steps, decide:
    Hugging Face's Trainer logs ``loss`` every ``logging_steps`` and its closing summary, the run's
    mean, as ``train_loss`` at the last step, usually one that logged no ``loss``.  A step's time is
    the earliest timestamp logged at it.
    """
    listed = [(key, list(history)) for key, history in histories]
    holder: dict[str, str] = {}  # field -> the key that fills it
    for key, _ in listed:
        field = METRIC_KEYS.get(key.lower())
        if field is not None and (field not in holder or _RANK[key.lower()] < _RANK[holder[field]]):
            holder[field] = key.lower()
    rows: dict[int, dict[str, Any]] = {}
    for key, history in listed:
        field = METRIC_KEYS.get(key.lower())
        fills = field is not None and holder[field] == key.lower()
        for m in history:
            step = int(m.get("step") or 0)
            row = rows.setdefault(step, {"step": step, "extra": {}})
            value = float(m["value"])
            at = parse_timestamp(int(m["timestamp"]), unit="ms") if m.get("timestamp") else None
            if at is not None:
                row["time"] = min(row.get("time") or at, at)
            if fills and field is not None:
                row[field] = int(value) if field == "tokens_seen" else value
            else:
                row["extra"][key] = value
    return [MetricPoint(**rows[s]) for s in sorted(rows)]


def pages(fetch: Callable[[str | None], Mapping[str, Any]], items: str) -> Iterator[Any]:
    """The ``items`` of every page of an MLflow listing (``next_page_token``), first page first.

    A token the server already gave ends the listing: a server that loops must not hang us.
    """
    token: str | None = None
    seen: set[str] = set()
    while True:
        page = fetch(token)
        yield from page.get(items) or []
        token = page.get("next_page_token") or None
        if token is None or token in seen:
            return
        seen.add(token)


class RunHistory:
    """Run details and metrics of a workspace's jobs (a job's name is its run id)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._client: Any = None

    def api_base(self) -> str:
        """The workspace's API host, from its discovery URL (else the region's default host)."""
        info = self.conn.info()
        if "api" not in info:
            url = info.get("discovery_url") or f"https://{info.get('location') or 'eastus'}.api.azureml.ms/discovery"
            api = None
            with contextlib.suppress(ProviderError):
                # Discovery runs before the data plane's base URL is known: a client of its own.
                api = self._send(self.conn.pipeline(url), url).get("api")
            info["api"] = (api or url.rsplit("/discovery", 1)[0]).rstrip("/")
        return str(info["api"])

    def _data_plane(self) -> Any:
        if self._client is None:
            self._client = self.conn.pipeline(self.api_base())
        return self._client

    def _send(self, client: Any, url: str, *, method: str = "GET", body: Any = None) -> dict[str, Any]:
        from azure.core.rest import HttpRequest

        with boundary(self.conn.errors(f"{method} {url.split('?')[0]}")):
            request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
            response = client.send_request(request)
            response.raise_for_status()
            data = response.json() if response.content else {}
        return data if isinstance(data, dict) else {}

    def _get(self, path: str, *, body: Any = None) -> dict[str, Any]:
        client = self._data_plane()
        url = f"{self.api_base()}/{path}"
        return self._send(client, url, method="POST" if body is not None else "GET", body=body)

    def run(self, run_id: str, status: JobStatus) -> dict[str, Any]:
        """Run history's view of the job (start/end times, error, warnings); empty when unreadable."""
        if status is JobStatus.QUEUED:
            return {}
        try:
            return self._get(f"history/v1.0{self.conn.require_workspace().arm_id}/runs/{run_id}")
        except _UNREADABLE:
            return {}

    def _mlflow(self, path: str, *, body: Any = None) -> dict[str, Any]:
        return self._get(f"mlflow/v1.0{self.conn.require_workspace().arm_id}/api/2.0/mlflow/{path}", body=body)

    def _runs(self, job_id: str) -> list[dict[str, Any]]:
        """The job's run and its descendants (the fine-tuning steps log under child runs)."""
        try:
            root = self._mlflow(f"runs/get?{urlencode({'run_id': job_id})}").get("run") or {}
        except _UNREADABLE:
            return []
        runs = [root]
        experiment = (root.get("info") or {}).get("experiment_id")
        if experiment:
            body = {
                "experiment_ids": [experiment],
                "max_results": 1000,
                "filter": f"tags.mlflow.rootRunId = '{job_id}'",
            }

            def search(token: str | None) -> Mapping[str, Any]:
                return self._mlflow("runs/search", body=body | ({"page_token": token} if token else {}))

            with contextlib.suppress(ServiceUnavailableError, InvalidRequestError, RateLimitError):
                # The root run carries its own id as its rootRunId: it is found again here.
                runs += [r for r in pages(search, "runs") if (r.get("info") or {}).get("run_id") != job_id]
        return runs

    def _history(self, run_id: str, key: str) -> list[Mapping[str, Any]]:
        """Every logged point of one metric of one run."""
        query = {"run_id": run_id, "metric_key": key}

        def fetch(token: str | None) -> Mapping[str, Any]:
            return self._mlflow("metrics/get-history?" + urlencode(query | ({"page_token": token} if token else {})))

        return list(pages(fetch, "metrics"))

    def metrics(self, job_id: str) -> list[MetricPoint]:
        """Metric points from the MLflow metrics of the job's run and its descendants, by step.

        Only the metrics a run lists are read (a run's ``data.metrics`` holds the latest value of
        each key it logged).
        """
        histories: list[tuple[str, list[Mapping[str, Any]]]] = []
        for run in self._runs(job_id):
            run_id = (run.get("info") or {}).get("run_id")
            keys = {m.get("key") for m in (run.get("data") or {}).get("metrics") or []}
            histories += [
                (key, self._history(str(run_id), key)) for key in sorted(k for k in keys if isinstance(k, str))
            ]
        return fold_metrics(histories)
