"""Trainer knobs (gradient accumulation, weight decay, schedules, 8-bit AdamW, validation split) and
experiment tracking (report_to), for real on CPU with a tiny model, and what --dry-run shows of them."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from anytune import FineTuneJob
from anytune._types import MetricPoint
from anytune.errors import ConfigError, DataValidationError, MissingDependencyError, NotSupportedError
from anytune.local_backend.rundir import RunDir
from tests.clitools import jobs_in_store, run_cli
from tests.local import trainer_helpers as H

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

FAST = {"learning_rate": 1e-2, "batch_size": 8, "seed": 7}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.build(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.chat_file(tmp_path_factory.mktemp("data") / "train.jsonl", n=24)


def _spec(model_dir: Path, train: Path, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "base_model": str(model_dir),
        "training_file": str(train),
        "lora": {"r": 8, "dropout": 0.0},
        "hyperparameters": dict(FAST),
        "local": {"logging_steps": 1, "device": "cpu"},
    }
    for key, value in extra.items():
        spec[key] = spec[key] | value if isinstance(spec.get(key), dict) else value
    return spec


def _first_step(run: RunDir) -> dict[str, Any]:
    """The adapter weights after one SGD step at rate 1 (the step is the clipped gradient itself)."""
    from anytune.local_backend.train import _Dist, _Trainer, _Window

    trainer = _Trainer(run, run.spec(), _Dist())
    trainer.setup()
    trainer.optimizer = torch.optim.SGD(trainer.params, lr=1.0)
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    torch.manual_seed(0)
    trainer.train_step(0, _Window())
    return {
        "plan": trainer.plan,
        "weights": {n: p.detach().clone() for n, p in trainer.lm.model.named_parameters() if p.requires_grad},
    }


# -- gradient accumulation --------------------------------------------------------------------------


def test_accumulation_takes_the_step_of_one_big_batch(tmp_path: Path, model_dir: Path, train_file: Path) -> None:
    """4 examples x 2 micro-batches: the same optimizer steps, and the same update, as batches of 8."""
    big = _first_step(H.make_run(tmp_path, "big", **_spec(model_dir, train_file, hyperparameters={"batch_size": 8})))
    accumulated = _first_step(
        H.make_run(
            tmp_path,
            "acc",
            **_spec(model_dir, train_file, hyperparameters={"batch_size": 4, "gradient_accumulation_steps": 2}),
        )
    )
    a, b = big["plan"], accumulated["plan"]
    assert (b.batch_size, b.gradient_accumulation_steps, b.step_examples) == (4, 2, 8)
    assert (a.steps_per_epoch, a.total_steps) == (b.steps_per_epoch, b.total_steps) == (3, 9)
    for key, value in big["weights"].items():
        torch.testing.assert_close(accumulated["weights"][key], value, atol=1e-6, rtol=1e-5)


def test_resume_with_accumulation_weight_decay_and_cosine_matches_an_uninterrupted_run(
    tmp_path: Path, model_dir: Path, train_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from anytune.local_backend.train import run_training

    hyper = {
        "batch_size": 4,
        "gradient_accumulation_steps": 2,
        "epochs": 2,
        "weight_decay": 0.1,
        "lr_scheduler": "cosine",
        "warmup_steps": 1,
    }
    spec = _spec(model_dir, train_file, hyperparameters=hyper, local={"save_steps": 2})
    whole = run_training(H.make_run(tmp_path, "whole", **spec))
    assert whole["steps"] == whole["total_steps"] == 6  # 24 examples / (4 x 2) per step, 2 epochs
    assert (whole["gradient_accumulation_steps"], whole["lr_scheduler"], whole["weight_decay"]) == (2, "cosine", 0.1)
    rates = [p["learning_rate"] for p in H.metrics(RunDir(tmp_path / "whole"))]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(1e-2)  # one warm-up step, then cosine decay
    assert rates[1] > rates[3] > rates[5] > 0

    victim = H.make_run(tmp_path, "victim", **spec)
    real_update = RunDir.update

    def update(self: RunDir, **fields: Any) -> None:
        real_update(self, **fields)
        if fields.get("step") == 3:
            self.request_cancel()

    monkeypatch.setattr(RunDir, "update", update)
    assert run_training(victim)["status"] == "cancelled"
    monkeypatch.setattr(RunDir, "update", real_update)
    resumed = run_training(victim, resume=True)
    assert resumed["steps"] == whole["steps"] == 6
    assert resumed["train_tokens"] == whole["train_tokens"]
    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(victim.adapter_dir / "adapter_model.safetensors"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)


def test_resume_refuses_a_changed_accumulation(tmp_path: Path, model_dir: Path, train_file: Path) -> None:
    from anytune.local_backend.train import run_training

    spec = _spec(model_dir, train_file, hyperparameters={"batch_size": 4, "max_steps": 2}, local={"save_steps": 1})
    run = H.make_run(tmp_path, **spec)
    run_training(run)
    changed = json.loads(run.spec_file.read_text())
    changed["spec"]["hyperparameters"]["gradient_accumulation_steps"] = 2
    run.spec_file.write_text(json.dumps(changed))
    with pytest.raises(ConfigError, match="gradient_accumulation_steps was 1, now 2"):
        run_training(run, resume=True)


# -- optimizer --------------------------------------------------------------------------------------


def test_adamw_8bit_trains_on_cpu(tmp_path: Path, model_dir: Path, train_file: Path) -> None:
    pytest.importorskip("bitsandbytes")
    from anytune.local_backend.train import run_training

    run = H.make_run(
        tmp_path, **_spec(model_dir, train_file, hyperparameters={"optimizer": "adamw_8bit", "max_steps": 4})
    )
    result = run_training(run)
    assert result["optimizer"] == "adamw_8bit" and result["steps"] == 4
    points = H.metrics(run)
    assert points[-1]["train_loss"] < points[0]["train_loss"]


def test_8bit_optimizer_without_bitsandbytes_fails_before_the_run(
    workdir: Path, anytune_home: Path, model_dir: Path, train_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    with pytest.raises(MissingDependencyError, match=r"bitsandbytes.*pip install \"anytune\[local\]\""):
        FineTuneJob.create(
            provider="local", **_spec(model_dir, train_file, hyperparameters={"optimizer": "adamw_8bit"})
        )
    assert jobs_in_store(anytune_home) == 0
    assert not (anytune_home / "runs").exists() or not any((anytune_home / "runs").iterdir())


def test_8bit_optimizer_that_cannot_run_on_the_device_is_refused(
    workdir: Path, anytune_home: Path, model_dir: Path, train_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bnb = pytest.importorskip("bitsandbytes")

    class Broken:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(bnb.optim, "PagedAdamW8bit", Broken)
    with pytest.raises(NotSupportedError) as exc:
        FineTuneJob.create(
            provider="local", **_spec(model_dir, train_file, hyperparameters={"optimizer": "paged_adamw_8bit"})
        )
    assert exc.value.field == "hyperparameters.optimizer"
    assert "no kernel for this device" in str(exc.value) and "adamw_torch" in str(exc.value)
    assert jobs_in_store(anytune_home) == 0


# -- validation split -------------------------------------------------------------------------------


def test_validation_split_holds_out_a_seeded_share_and_reports_it(
    tmp_path: Path, model_dir: Path, train_file: Path
) -> None:
    from anytune.local_backend.train import run_training

    spec = _spec(model_dir, train_file, hyperparameters={"validation_split": 0.25, "max_steps": 3})
    runs = [H.make_run(tmp_path, name, **spec) for name in ("a", "b")]
    results = [run_training(run) for run in runs]
    assert results[0]["examples"] == 18 and results[0]["validation_examples"] == 6
    assert results[0]["base_valid_loss"] is not None and results[0]["final_valid_loss"] is not None
    assert results[0]["final_valid_loss"] == results[1]["final_valid_loss"]  # the same held-out examples
    messages = [e.message for e in runs[0].events()]
    assert any("validation split: 6 of 24 training examples held out" in m for m in messages)
    assert H.metrics(runs[0])[-1]["valid_loss"] is not None


def test_validation_split_of_a_one_example_file_is_named(tmp_path: Path, model_dir: Path) -> None:
    from anytune.local_backend.train import run_training

    one = H.chat_file(tmp_path / "one.jsonl", n=1)
    run = H.make_run(tmp_path, **_spec(model_dir, one, hyperparameters={"validation_split": 0.5}))
    with pytest.raises(DataValidationError, match=r"one\.jsonl: hyperparameters\.validation_split: .*2 examples"):
        run_training(run)


# -- experiment tracking ----------------------------------------------------------------------------


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files under ``folder``, read from their TFRecord framing."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_gets_the_loss_of_every_logged_step(tmp_path: Path, model_dir: Path, train_file: Path) -> None:
    pytest.importorskip("tensorboardX")
    from anytune.local_backend.train import run_training

    run = H.make_run(
        tmp_path,
        **_spec(model_dir, train_file, hyperparameters={"max_steps": 3, "validation_split": 0.25}),
        report_to=["tensorboard"],
    )
    result = run_training(run)
    scalars = _tensorboard_scalars(run.path / "tensorboard")
    points = H.metrics(run)
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([p["train_loss"] for p in points], rel=1e-6)
    assert scalars["eval/loss"][-1] == (3, pytest.approx(result["final_valid_loss"], rel=1e-6))
    assert {"train/learning_rate", "train/token_accuracy", "train/tokens_seen"} <= scalars.keys()
    assert any("reporting to tensorboard" in e.message for e in run.events())


def test_mlflow_records_params_and_metrics_in_a_file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    from anytune.local_backend.tracking import open_trackers

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 wants a database; a folder is enough here
    for step, (resume, loss) in enumerate(((0, 2.5), (1, 1.5)), start=1):  # a run, then its resume
        trackers = open_trackers(["mlflow"], run_dir=tmp_path, run_id="run-abc", resume_step=resume)
        trackers.start({"learning_rate": 0.01, "lora": {"r": 8}})
        trackers.log(MetricPoint(step=step, train_loss=loss, learning_rate=0.01))
        trackers.finish("succeeded")
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs(experiment_ids=["0"])
    assert found.info.run_name == "run-abc" and found.info.status == "FINISHED"
    assert found.data.params == {"learning_rate": "0.01", "lora.r": "8"}
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.5), (2, 1.5)]


class _FakeRun:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    def log(self, data: dict[str, float], step: int) -> None:
        self.calls.append(("log", (step, data)))

    def finish(self, exit_code: int = 0) -> None:
        self.calls.append(("finish", exit_code))


def _fake_modules(calls: list[tuple[str, Any]]) -> Any:
    """Fakes of the module API of wandb and trackio (neither package is a test dependency)."""
    import types

    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: calls.append(("wandb.init", kw)) or _FakeRun(calls)  # type: ignore[attr-defined]
    trackio = types.ModuleType("trackio")
    trackio.init = lambda **kw: calls.append(("trackio.init", kw))  # type: ignore[attr-defined]
    trackio.log = lambda data, step: calls.append(("trackio.log", (step, data)))  # type: ignore[attr-defined]
    trackio.finish = lambda: calls.append(("trackio.finish", None))  # type: ignore[attr-defined]
    return {"wandb": wandb, "trackio": trackio}.__getitem__


def test_wandb_and_trackio_get_the_config_each_point_and_the_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anytune.local_backend.tracking import open_trackers

    monkeypatch.setenv("WANDB_PROJECT", "proj")
    calls: list[tuple[str, Any]] = []
    trackers = open_trackers(["wandb", "trackio"], run_dir=tmp_path, run_id="run-1", importer=_fake_modules(calls))
    trackers.start({"learning_rate": 0.01})
    trackers.log(MetricPoint(step=3, train_loss=1.25, valid_loss=1.5, extra={"valid_rewards/margin": 0.5}))
    trackers.finish("failed")
    scalars = {"train/loss": 1.25, "eval/loss": 1.5, "eval/rewards/margin": 0.5}
    assert calls == [
        (
            "wandb.init",
            {
                "project": "proj",
                "id": "run-1",
                "name": "run-1",
                "resume": "allow",
                "config": {"learning_rate": 0.01},
                "dir": str(tmp_path),
            },
        ),
        ("trackio.init", {"project": "anytune", "name": "run-1", "config": {"learning_rate": 0.01}, "resume": "allow"}),
        ("log", (3, scalars)),
        ("trackio.log", (3, scalars)),
        ("finish", 1),
        ("trackio.finish", None),
    ]


def _fake_mlflow(calls: list[tuple[str, Any]]) -> Any:
    """A fake of the part of mlflow's module API the tracker uses (mlflow is not a test dependency:
    its OpenTelemetry pins and azure-ai-ml's leave pip unable to resolve the dev environment)."""
    import types

    mlflow = types.ModuleType("mlflow")

    def start_run(**kw: Any) -> Any:
        calls.append(("start_run", kw))
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id=kw.get("run_id") or "mlrun-1"))

    mlflow.start_run = start_run  # type: ignore[attr-defined]
    mlflow.log_params = lambda params: calls.append(("log_params", params))  # type: ignore[attr-defined]
    mlflow.log_metrics = lambda data, step: calls.append(("log_metrics", (step, data)))  # type: ignore[attr-defined]
    mlflow.end_run = lambda status: calls.append(("end_run", status))  # type: ignore[attr-defined]
    return {"mlflow": mlflow}.__getitem__


def test_mlflow_logs_params_once_and_a_resumed_job_goes_on_in_the_same_run(tmp_path: Path) -> None:
    from anytune.local_backend.tracking import open_trackers

    calls: list[tuple[str, Any]] = []
    first = open_trackers(["mlflow"], run_dir=tmp_path, run_id="run-7", importer=_fake_mlflow(calls))
    first.start({"learning_rate": 0.01, "lora": {"r": 8}, "seed": None})
    first.log(MetricPoint(step=2, train_loss=1.5))
    first.finish("cancelled")
    resumed = open_trackers(["mlflow"], run_dir=tmp_path, run_id="run-7", importer=_fake_mlflow(calls), resume_step=2)
    resumed.start({"learning_rate": 0.01, "lora": {"r": 8}, "seed": None})
    resumed.log(MetricPoint(step=3, train_loss=1.25, valid_loss=1.4))
    resumed.finish("succeeded")
    assert calls[0] == ("start_run", {"run_name": "run-7", "tags": {"anytune.job": "run-7"}})
    assert calls[1][0] == "log_params" and calls[1][1]["learning_rate"] == 0.01
    assert calls[2:4] == [("log_metrics", (2, {"train/loss": 1.5})), ("end_run", "KILLED")]
    assert calls[4] == ("start_run", {"run_id": "mlrun-1"})  # the same run, no second set of params
    assert calls[5:] == [("log_metrics", (3, {"train/loss": 1.25, "eval/loss": 1.4})), ("end_run", "FINISHED")]


def test_a_tracker_that_fails_mid_run_is_dropped_with_a_warning(tmp_path: Path) -> None:
    from anytune.local_backend.tracking import open_trackers

    calls: list[tuple[str, Any]] = []
    warnings: list[str] = []
    modules = _fake_modules(calls)

    def broken(name: str) -> Any:
        module = modules(name)
        module.log = lambda data, step: (_ for _ in ()).throw(OSError("disk full"))
        return module

    trackers = open_trackers(["trackio"], run_dir=tmp_path, run_id="r", importer=broken, warn=warnings.append)
    trackers.start({})
    trackers.log(MetricPoint(step=1, train_loss=1.0))
    trackers.log(MetricPoint(step=2, train_loss=1.0))
    trackers.finish("succeeded")
    assert warnings == ["report_to: trackio failed (OSError: disk full); no longer logging to it"]


def test_a_tracker_that_cannot_start_fails_the_job_naming_report_to(tmp_path: Path) -> None:
    from anytune.local_backend.tracking import open_trackers

    def refusing(name: str) -> Any:
        raise RuntimeError("api key not configured")

    trackers = open_trackers(["wandb"], run_dir=tmp_path, run_id="r", importer=refusing)
    with pytest.raises(ConfigError, match="report_to: wandb could not start: RuntimeError: api key") as exc:
        trackers.start({})
    assert exc.value.field == "report_to"


def test_a_missing_tracker_package_fails_before_the_run_with_its_install_hint(
    workdir: Path, anytune_home: Path, model_dir: Path, train_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anytune.local_backend.tracking as tracking

    monkeypatch.setattr(tracking, "_installed", lambda module: module != "wandb")
    with pytest.raises(MissingDependencyError, match=r"report_to='wandb' needs the 'wandb' package.*anytune\[wandb\]"):
        FineTuneJob.create(provider="local", report_to=["tensorboard", "wandb"], **_spec(model_dir, train_file))
    assert jobs_in_store(anytune_home) == 0


# -- what --dry-run shows ---------------------------------------------------------------------------


def test_dry_run_shows_every_resolved_value(
    capsys: pytest.CaptureFixture[str], workdir: Path, anytune_home: Path, model_dir: Path, train_file: Path
) -> None:
    spec = workdir / "job.yaml"  # JSON is YAML
    spec.write_text(
        json.dumps(
            {
                "provider": "local",
                "base_model": str(model_dir),
                "training_file": str(train_file),
                "hyperparameters": {"gradient_accumulation_steps": 2, "batch_size": 4, "validation_split": 0.25},
                "report_to": ["tensorboard"],
            }
        )
    )
    result = run_cli(capsys, "jobs", "create", "--file", str(spec), "--dry-run", "--no-validate-data")
    assert result.code == 0, result.err
    resolved = json.loads(result.out)["requests"][0]["body"]["resolved"]
    assert resolved == {
        "method": "sft",
        "epochs": 3,
        "examples": 18,
        "batch_size": 4,
        "gradient_accumulation_steps": 2,
        "step_examples": 8,
        "steps_per_epoch": 3,
        "total_steps": 9,
        "learning_rate": 2e-4,
        "lr_scheduler": "linear",
        "warmup_ratio": 0.03,
        "warmup_steps": 0,
        "optimizer": "adamw_torch",
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "max_length": 1024,
        "max_length_from": "default",
        "seed": 42,
        "lora": {
            "r": 16,
            "alpha": 32,
            "dropout": 0.05,
            "target_modules": "all-linear",
            "use_rslora": False,
            "use_dora": False,
        },
        "quantization": "none",
        "validation": {"split": 0.25, "seed": 42, "examples": 6},
        "device": resolved["device"],
        "num_devices": 1,
        "strategy": "ddp",
        "nodes": 1,
        "packing": True,
        "truncation": "truncate",
        "gradient_checkpointing": "auto",
        "logging_steps": 10,
        "eval_steps": "every epoch",
        "save_steps": "every epoch",
        "report_to": ["tensorboard"],
    }
    assert jobs_in_store(anytune_home) == 0


def test_dry_run_takes_max_length_from_a_short_model(
    tmp_path: Path, workdir: Path, anytune_home: Path, train_file: Path
) -> None:
    short = H.build(tmp_path / "short", max_position_embeddings=256)
    plan = FineTuneJob.plan(provider="local", base_model=str(short), training_file=train_file, validate_data=False)
    resolved = plan.requests[0].body["resolved"]
    assert (resolved["max_length"], resolved["max_length_from"]) == (256, "the model's max_position_embeddings")


def test_trainer_and_dry_run_agree(tmp_path: Path, model_dir: Path, train_file: Path) -> None:
    from anytune._spec import JobSpec
    from anytune.local_backend.hparams import resolved_settings
    from anytune.local_backend.train import run_training

    spec = _spec(
        model_dir,
        train_file,
        hyperparameters={"batch_size": 2, "gradient_accumulation_steps": 3, "max_steps": 2, "validation_split": 0.1},
        local={"save_steps": 5},
    )
    shown = resolved_settings(JobSpec.model_validate(spec), device="cpu")
    result = run_training(H.make_run(tmp_path, **spec))
    for key in ("total_steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "seed"):
        assert shown[key] == result[key], key
    assert (shown["examples"], shown["validation"]["examples"]) == (result["examples"], result["validation_examples"])
    assert result["final_valid_loss"] is not None


# -- the other providers ----------------------------------------------------------------------------


def test_validation_split_and_validation_file_together_name_both(
    capsys: pytest.CaptureFixture[str], workdir: Path, anytune_home: Path, train_file: Path, model_dir: Path
) -> None:
    spec = workdir / "job.yaml"
    spec.write_text(
        f"provider: local\nbase_model: {model_dir}\ntraining_file: {train_file}\nvalidation_file: {train_file}\n"
        "hyperparameters:\n  validation_split: 0.1\n"
    )
    result = run_cli(capsys, "jobs", "create", "--file", str(spec))
    assert result.code == 2
    assert "validation_file" in result.err and "validation_split" in result.err
    assert "Traceback" not in result.err and jobs_in_store(anytune_home) == 0


@pytest.mark.parametrize(
    ("provider", "extra", "field"),
    [
        ("openai", {"report_to": ["tensorboard"]}, "report_to"),
        (
            "openai",
            {"hyperparameters": {"gradient_accumulation_steps": 4}},
            "hyperparameters.gradient_accumulation_steps",
        ),
        ("azure-openai", {"hyperparameters": {"validation_split": 0.1}}, "hyperparameters.validation_split"),
        ("azureml", {"hyperparameters": {"weight_decay": 0.01}}, "hyperparameters.weight_decay"),
        ("azureml", {"report_to": ["mlflow"]}, "report_to"),
    ],
)
def test_hosted_services_refuse_the_trainer_knobs_naming_who_can(
    workdir: Path,
    anytune_home: Path,
    train_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
    extra: dict[str, Any],
    field: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "key")
    with pytest.raises(NotSupportedError) as exc:
        FineTuneJob.plan(
            provider=provider,
            base_model="gpt-4o-mini-2024-07-18",
            training_file=train_file,
            validate_data=False,
            **extra,
        )
    assert exc.value.field == field
    assert {"local", "huggingface"} <= set(exc.value.alternatives)
    assert jobs_in_store(anytune_home) == 0


def test_a_hugging_face_job_installs_the_trackers_and_gets_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from anytune._spec import JobSpec
    from anytune.providers.huggingface.hub import HuggingFaceSettings
    from anytune.providers.huggingface.request import JobFiles, build_job_request, entry_args

    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    monkeypatch.setenv("WANDB_API_KEY", "secret-key")  # a credential: not put in the job's definition
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example")  # mlflow is not asked for
    spec = JobSpec(
        base_model="Qwen/Qwen2.5-0.5B",
        training_file=Path("train.jsonl"),
        report_to=["tensorboard", "wandb"],
        hyperparameters={"gradient_accumulation_steps": 4, "lr_scheduler": "cosine", "validation_split": 0.1},
    )

    def request_for() -> dict[str, Any]:
        return build_job_request(
            spec,
            "key",
            JobFiles(dataset_repo="me/data", train="train.jsonl", valid=None, wheel="anytune.whl"),
            namespace="me",
            output_repo="me/out",
            settings=HuggingFaceSettings(),
            endpoint="https://huggingface.co",
        )

    request = request_for()
    assert any(arg.startswith("anytune[local,tensorboard,wandb] @ ") for arg in request["command"])
    assert request["env"]["WANDB_PROJECT"] == "my-project"
    assert "WANDB_API_KEY" not in request["env"] and "MLFLOW_TRACKING_URI" not in request["env"]
    assert "ANYTUNE_DEBUG" not in request["env"]  # the job's log is quiet unless --debug asked
    monkeypatch.setenv("ANYTUNE_DEBUG", "1")
    debug = request_for()
    assert debug["env"]["ANYTUNE_DEBUG"] == "1"
    args = entry_args(request["command"])
    sent = json.loads(args[args.index("--spec") + 1])
    assert sent["report_to"] == ["tensorboard", "wandb"]
    assert sent["hyperparameters"] == {
        "gradient_accumulation_steps": 4,
        "lr_scheduler": "cosine",
        "validation_split": 0.1,
    }
