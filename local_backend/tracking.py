"""Experiment tracking for the local trainer (``report_to``): TensorBoard, MLflow, Weights & Biases, trackio.

One small interface, :class:`Tracker` (``start`` with the resolved hyperparameters, ``log`` one metric
point, ``finish`` with the job's outcome), one adapter per tracker, and :class:`Trackers`, which fans
out to the chosen ones. Each tracker's package is optional and imported only when a job names it;
:func:`check_trackers` tells, before a job starts, which one is missing and how to install it.

Where each tracker writes, and what configures it (the worker inherits the submitting shell's
environment, so the trackers' own variables work as usual):

* ``tensorboard``: event files under ``<run dir>/tensorboard`` (``torch.utils.tensorboard`` where the
  ``tensorboard`` package is installed, else ``tensorboardX``). A resumed run purges the steps it
  trains again.
* ``mlflow``: ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME`` as mlflow reads them; the run is
  named after the job and a resumed job goes on in the same MLflow run.
* ``wandb``: ``WANDB_PROJECT`` (default ``anytune``), ``WANDB_ENTITY``, ``WANDB_MODE``...; the W&B run id
  is the job's, so a resumed job goes on in the same run.
* ``trackio``: ``TRACKIO_PROJECT`` (default ``anytune``); trackio keeps its data locally unless told
  to sync to a Space (``TRACKIO_SPACE_ID``).

A tracker that fails to start fails the job before training (a wrong URI, no W&B login); one that
fails while logging is reported once as a warning and left out for the rest of the run: the
training matters more than its dashboard.

Metric names follow transformers' Trainer (``train/loss``, ``eval/loss``, ``train/learning_rate``...),
so dashboards built for it work here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from anytune._types import MetricPoint
from anytune.errors import ConfigError, MissingDependencyError

__all__ = [
    "PACKAGES",
    "Tracker",
    "Trackers",
    "check_trackers",
    "metric_scalars",
    "open_trackers",
]

#: The module each tracker needs, by name: (importable modules, any one will do; pip package; extra).
PACKAGES: Mapping[str, tuple[tuple[str, ...], str, str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboardX", "tensorboard"),
    "mlflow": (("mlflow",), "mlflow-skinny", "mlflow"),
    "wandb": (("wandb",), "wandb", "wandb"),
    "trackio": (("trackio",), "trackio", "trackio"),
}
#: Where a run's tracker state lives in its run directory (TensorBoard's logs, MLflow's run id).
TENSORBOARD_DIR = "tensorboard"
STATE_FILE = "tracking.json"

Importer = Callable[[str], ModuleType]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_trackers(names: Sequence[str]) -> None:
    """Fail now, naming the package and its install command, if a tracker's package is missing.

    Raises:
        MissingDependencyError: the first tracker of ``names`` that cannot be imported.
    """
    for name in names:
        modules, package, extra = PACKAGES[name]
        if not any(_installed(m) for m in modules):
            raise MissingDependencyError(package, extra, f"report_to={name!r}")


def metric_scalars(point: MetricPoint) -> dict[str, float]:
    """A metric point as flat scalars named like transformers' Trainer logs (pure)."""
    fields = {
        "train/loss": point.train_loss,
        "train/token_accuracy": point.token_accuracy,
        "train/learning_rate": point.learning_rate,
        "train/epoch": point.epoch,
        "train/tokens_seen": point.tokens_seen,
        "train/tokens_per_second": point.tokens_per_second,
        "eval/loss": point.valid_loss,
        "eval/token_accuracy": point.valid_token_accuracy,
    }
    out = {k: float(v) for k, v in fields.items() if v is not None}
    for key, value in point.extra.items():
        name = f"eval/{key[len('valid_') :]}" if key.startswith("valid_") else f"train/{key}"
        out[name] = float(value)
    return out


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys with scalar values (what MLflow params take)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = (
                value if isinstance(value, str | int | float | bool) or value is None else str(value)
            )
    return out


class Tracker(Protocol):
    """One experiment tracker, as the trainer drives it (rank 0 only)."""

    name: str

    def start(self, config: Mapping[str, Any]) -> None: ...

    def log(self, scalars: Mapping[str, float], step: int) -> None: ...

    def finish(self, outcome: str) -> None:
        """``outcome``: ``succeeded``, ``failed`` or ``cancelled``."""
        ...


class _TensorBoard:
    name = "tensorboard"

    def __init__(self, folder: Path, resume_step: int, importer: Importer) -> None:
        self.folder = folder
        self.resume_step = resume_step
        self.importer = importer
        self.writer: Any = None

    def _writer_class(self) -> Any:
        # torch's writer needs the tensorboard package; tensorboardX stands alone.
        if _installed("tensorboard"):
            try:
                return self.importer("torch.utils.tensorboard").SummaryWriter
            except ImportError:
                pass  # a tensorboard that torch cannot use: tensorboardX may still be there
        return self.importer("tensorboardX").SummaryWriter

    def start(self, config: Mapping[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        writer = self._writer_class()
        # purge_step drops what an interrupted run logged past its checkpoint: those steps run again.
        purge = self.resume_step + 1 if self.resume_step > 0 else None
        self.writer = writer(log_dir=str(self.folder), purge_step=purge)
        self.writer.add_text("anytune/config", "```json\n" + json.dumps(config, indent=1, default=str) + "\n```")

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, outcome: str) -> None:
        if self.writer is not None:
            self.writer.close()


class _MLflow:
    name = "mlflow"

    def __init__(self, run_name: str, state: _State, importer: Importer) -> None:
        self.run_name = run_name
        self.state = state
        self.importer = importer
        self.mlflow: Any = None

    def start(self, config: Mapping[str, Any]) -> None:
        self.mlflow = mlflow = self.importer("mlflow")
        run_id = self.state.get("mlflow_run_id")
        if run_id:
            active = mlflow.start_run(run_id=run_id)
        else:
            active = mlflow.start_run(run_name=self.run_name, tags={"anytune.job": self.run_name})
            self.state.set("mlflow_run_id", active.info.run_id)
            # Params are write-once in MLflow: a resumed run (same run id) has them already.
            mlflow.log_params({k: "" if v is None else v for k, v in _flat(config).items()})

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self.mlflow.log_metrics(dict(scalars), step=step)

    def finish(self, outcome: str) -> None:
        if self.mlflow is not None:
            status = {"succeeded": "FINISHED", "cancelled": "KILLED"}.get(outcome, "FAILED")
            self.mlflow.end_run(status=status)


class _Wandb:
    name = "wandb"

    def __init__(self, run_id: str, folder: Path, importer: Importer) -> None:
        self.run_id = run_id
        self.folder = folder
        self.importer = importer
        self.run: Any = None

    def start(self, config: Mapping[str, Any]) -> None:
        wandb = self.importer("wandb")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "anytune",
            id=self.run_id,
            name=self.run_id,
            resume="allow",
            config=dict(config),
            dir=str(self.folder),
        )

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def finish(self, outcome: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if outcome == "succeeded" else 1)


class _Trackio:
    name = "trackio"

    def __init__(self, run_name: str, importer: Importer) -> None:
        self.run_name = run_name
        self.importer = importer
        self.trackio: Any = None

    def start(self, config: Mapping[str, Any]) -> None:
        self.trackio = trackio = self.importer("trackio")
        trackio.init(
            project=os.environ.get("TRACKIO_PROJECT") or "anytune",
            name=self.run_name,
            config=dict(config),
            resume="allow",
        )

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self.trackio.log(dict(scalars), step=step)

    def finish(self, outcome: str) -> None:
        if self.trackio is not None:
            self.trackio.finish()


class _State:
    """Small JSON file of tracker ids a resumed run needs (the MLflow run id)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Any:
        return self._read().get(key)

    def set(self, key: str, value: Any) -> None:
        data = self._read() | {key: value}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)


class Trackers:
    """The chosen trackers together; what the trainer holds (an empty one does nothing)."""

    def __init__(self, trackers: Sequence[Tracker] = (), *, warn: Callable[[str], None] = lambda _: None) -> None:
        self.trackers = list(trackers)
        self.warn = warn
        self.started: list[Tracker] = []

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def start(self, config: Mapping[str, Any]) -> None:
        """Start each tracker; the first failure closes those started and raises.

        Raises:
            ConfigError: a tracker could not start (field ``report_to``).
        """
        for tracker in self.trackers:
            try:
                tracker.start(config)
            except Exception as exc:
                self.finish("failed")
                raise ConfigError(
                    f"report_to: {tracker.name} could not start: {type(exc).__name__}: {exc}", field="report_to"
                ) from exc
            self.started.append(tracker)

    def log(self, point: MetricPoint) -> None:
        scalars = metric_scalars(point)
        for tracker in list(self.started):
            try:
                tracker.log(scalars, point.step)
            except Exception as exc:
                self.started.remove(tracker)
                self.warn(f"report_to: {tracker.name} failed ({type(exc).__name__}: {exc}); no longer logging to it")

    def finish(self, outcome: str) -> None:
        started, self.started = self.started, []
        for tracker in started:
            try:
                tracker.finish(outcome)
            except Exception as exc:
                self.warn(f"report_to: {tracker.name} did not close cleanly ({type(exc).__name__}: {exc})")


def open_trackers(
    names: Sequence[str],
    *,
    run_dir: Path,
    run_id: str,
    resume_step: int = 0,
    warn: Callable[[str], None] = lambda _: None,
    importer: Importer = importlib.import_module,
) -> Trackers:
    """The trackers of ``report_to`` for one run (not started yet: call :meth:`Trackers.start`).

    :func:`check_trackers` first: this assumes their packages are there.

    Args:
        names: the spec's ``report_to``.
        run_dir: the run directory (TensorBoard's logs and the trackers' ids go there).
        run_id: the job's id, used as the run's name in every tracker.
        resume_step: the step a resumed run continues from (0 for a fresh run).
        warn: where warnings go (the run's event log).
        importer: imports a tracker's module (tests pass fakes of the trackers' module API).
    """
    state = _State(run_dir / STATE_FILE)
    made: dict[str, Callable[[], Tracker]] = {
        "tensorboard": lambda: _TensorBoard(run_dir / TENSORBOARD_DIR, resume_step, importer),
        "mlflow": lambda: _MLflow(run_id, state, importer),
        "wandb": lambda: _Wandb(run_id, run_dir, importer),
        "trackio": lambda: _Trackio(run_id, importer),
    }
    return Trackers([made[name]() for name in names], warn=warn)
