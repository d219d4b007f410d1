"""The ``local`` provider end to end: a detached worker trains a tiny model for real.

Jobs are created, followed, cancelled, killed and resumed from this process, from other processes
and through the CLI. Models are built on the spot (a few thousand parameters), so each test takes
seconds, most of them spent importing torch in the worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from anytune import (
    ConfigError,
    FineTunedModel,
    FineTuneJob,
    InvalidRequestError,
    JobFailedError,
    JobRecord,
    JobSpec,
    JobStatus,
    MetricPoint,
    MissingDependencyError,
    NotSupportedError,
)
from anytune.local_backend.rundir import RunDir
from anytune.local_backend.worker import classify
from anytune.providers.local import LocalProvider, resolve_device, worker_command
from tests.clitools import jobs_in_store, run_cli
from tests.conftest import chat_example, run_python, write_jsonl
from tests.local.trainer_helpers import assert_adapter_trained

WAIT = 120.0  # generous: a loaded CI machine; a healthy run takes seconds


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide Llama-shaped model with a ChatML tokenizer, built once for the module."""
    from anytune.local_backend.tiny import build_tiny_model

    texts = [m["content"] for i in range(40) for m in chat_example(i)["messages"]]
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model",
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        vocab_size=512,
        texts=texts,
    )


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(24)])


@pytest.fixture
def valid_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "valid.jsonl", [chat_example(100 + i) for i in range(4)])


def create(
    model: Path | str,
    train: Path,
    valid: Path | None = None,
    *,
    steps: int | None = 6,
    epochs: int | None = None,
    save_steps: int = 3,
    **fields: Any,
) -> FineTuneJob:
    hyper: dict[str, Any] = {"batch_size": 4, "learning_rate": 1e-2, "max_length": 64, "seed": 0}
    if steps is not None:
        hyper["max_steps"] = steps
    if epochs is not None:
        hyper["epochs"] = epochs
    fields.setdefault("lora", {"r": 4, "alpha": 8, "dropout": 0.0})
    fields.setdefault(
        "local", {"device": "cpu", "logging_steps": 1, "eval_steps": save_steps, "save_steps": save_steps}
    )
    return FineTuneJob.create(
        provider="local",
        base_model=str(model),
        training_file=train,
        validation_file=valid,
        hyperparameters=hyper,
        **fields,
    )


def poll(condition: Callable[[], bool], timeout: float = WAIT, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)


def run_of(job: FineTuneJob) -> RunDir:
    return RunDir(Path(job.record.output["run_dir"]))


def log_of(job: FineTuneJob) -> str:
    path = run_of(job).log_file
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def finished(job: FineTuneJob, timeout: float = WAIT) -> JobRecord:
    record = job.wait(timeout=timeout)
    assert record.done, log_of(job)
    return record


# -- a whole job through the detached worker ---------------------------------------------------------


def test_create_returns_at_once_and_the_worker_completes_the_job(
    tiny_model: Path, train_file: Path, valid_file: Path, capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    started = time.monotonic()
    job = create(tiny_model, train_file, valid_file)
    assert time.monotonic() - started < 5, "create must not wait for the training"
    assert job.ref.startswith("local:run-")
    assert job.record.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    run = run_of(job)
    assert run.pid() is not None

    record = finished(job)
    assert record.status is JobStatus.SUCCEEDED, (record.error, log_of(job))
    assert record.step == record.total_steps == 6
    assert record.trained_tokens and record.trained_tokens > 0
    assert record.output["train_seconds"] > 0 and record.output["peak_rss_mib"] > 0
    assert record.fine_tuned_model == record.output["adapter_path"]

    events = job.events()
    statuses = [e.status for e in events if e.kind == "status"]
    assert JobStatus.RUNNING in statuses and statuses[-1] is JobStatus.SUCCEEDED
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert job.events(after=events[-2].id) == events[-1:]
    points = job.metrics()
    assert [p.step for p in points] == sorted({p.step for p in points}) and points[-1].step == 6
    assert any(p.valid_loss is not None for p in points)
    assert [c.step for c in job.checkpoints()] == [3]  # the final step writes the adapter instead

    result = job.result()
    adapter = Path(str(result.adapter_path))
    assert (adapter / "adapter_config.json").is_file()
    assert result.trained_tokens == record.trained_tokens
    assert result.final_metrics is not None and result.final_metrics.step == 6
    for key in ("train_seconds", "peak_rss_mib", "final_train_loss", "final_valid_loss", "base_valid_loss"):
        assert key in result.extra, key
    assert result.checkpoints and Path(str(result.checkpoints[-1].path)).is_dir()
    # It trained: the adapter moved off peft's zero init and the held-out loss fell below the base
    # model's; the reported final losses are those of the curve's last step.
    assert_adapter_trained(adapter)
    assert result.extra["final_valid_loss"] < result.extra["base_valid_loss"], result.extra
    assert result.extra["final_train_loss"] == pytest.approx(points[-1].train_loss)
    assert result.final_metrics.valid_loss == pytest.approx(result.extra["final_valid_loss"])

    # The adapter loads with the helpers (plain peft underneath) and answers.
    answer = result.generate("What is 3 plus 3?", max_new_tokens=4)
    assert isinstance(answer, str)
    assert isinstance(result.generate([{"role": "user", "content": "Hi"}], max_new_tokens=2), str)

    # ... and the CLI sees the same job, and draws its loss curve.
    shown = run_cli(capsys, "jobs", "get", job.ref, "--json")
    assert shown.code == 0 and json.loads(shown.out)["status"] == "succeeded"
    plot = run_cli(capsys, "jobs", "metrics", job.ref, "--plot", "loss.png")
    assert plot.code == 0, plot.err
    assert (workdir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listed = LocalProvider().list()
    assert [r.id for r in listed] == [job.id]
    # A retried submit with the same key finds the same run instead of starting another.
    again = job._provider.submit(run.spec(), idempotency_key=run.meta()["idempotency_key"])
    assert again.id == job.id and len(LocalProvider().list()) == 1


def test_create_wait_ends_with_the_adapter_path(
    tiny_model: Path, train_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a user runs to get an adapter in one command ends by saying where the adapter is."""
    sets = {
        "hyperparameters.max_steps": "2",
        "hyperparameters.batch_size": "4",
        "hyperparameters.max_length": "64",
        "lora.r": "4",
        "local.device": "cpu",
    }
    argv = ["jobs", "create", "-p", "local", "--base-model", str(tiny_model), "--training-file", str(train_file)]
    result = run_cli(capsys, *argv, *(x for k, v in sets.items() for x in ("--set", f"{k}={v}")), "--wait")
    assert result.code == 0, result.out + result.err
    ref = next(word for word in result.out.split() if word.startswith("local:run-"))
    adapter = str(FineTuneJob.get(ref).result().adapter_path)
    assert (Path(adapter) / "adapter_config.json").is_file()
    after = result.out.split(f"result of {ref}", 1)[1]
    # A long path may wrap in the table: compare without the line breaks and padding.
    assert "".join(after.split()).startswith("adapter" + "".join(adapter.split())), result.out


def test_get_wait_stream_and_cancel_from_other_processes(tiny_model: Path, train_file: Path, valid_file: Path) -> None:
    job = create(tiny_model, train_file, valid_file, steps=2000, save_steps=2)
    run = run_of(job)
    poll(lambda: (job.refresh().step or 0) >= 3 or job.record.done)
    assert job.record.status is JobStatus.RUNNING, (job.record.error, log_of(job))

    # One process streams the events, another cancels, a third waits for the end.
    stream_proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from anytune import FineTuneJob\n"
            f"job = FineTuneJob.get({job.ref!r})\n"
            "kinds = [e.kind for e in job.stream(timeout=120)]\n"
            "print('final', job.record.status.value, 'metric' in kinds, 'status' in kinds)\n",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    cancel = run_python(f"from anytune import FineTuneJob\nprint(FineTuneJob.get({job.ref!r}).cancel().status.value)")
    assert cancel.returncode == 0, cancel.stderr
    waited = run_python(
        f"from anytune import FineTuneJob\nr = FineTuneJob.get({job.ref!r}).wait(timeout=120)\n"
        "print(r.status.value, r.step)",
        timeout=WAIT,
    )
    assert waited.returncode == 0, waited.stderr
    status, step = waited.stdout.split()
    assert status == "cancelled", log_of(job)
    out, errs = stream_proc.communicate(timeout=WAIT)
    assert out.split() == ["final", "cancelled", "True", "True"], errs

    record = job.refresh()
    assert record.status is JobStatus.CANCELLED and record.error is None
    poll(lambda: not run.worker_alive(), timeout=30)  # the worker exits on its own
    # Stopped cleanly at a step boundary, with that step's checkpoint kept.
    checkpoints = job.checkpoints()
    assert checkpoints and checkpoints[-1].step == int(step) == record.step
    assert 3 <= int(step) < 2000
    with pytest.raises(JobFailedError) as info:
        job.result()
    assert info.value.record.status is JobStatus.CANCELLED


def test_sigkill_then_cli_resume_ends_at_the_uninterrupted_step_count(
    tiny_model: Path, train_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two identical jobs (2 epochs of 24 examples, batch 4): one runs through, one is killed.
    reference = create(tiny_model, train_file, steps=None, epochs=2, save_steps=2)
    victim = create(tiny_model, train_file, steps=None, epochs=2, save_steps=2)
    run = run_of(victim)
    poll(lambda: len(run.checkpoint_dirs()) >= 1 or victim.refresh().done, every=0.01)
    pid = run.pid()
    assert pid is not None and not victim.refresh().done, log_of(victim)
    os.kill(pid, signal.SIGKILL)
    poll(lambda: victim.refresh().done)

    record = victim.record
    assert record.status is JobStatus.FAILED and record.error is not None
    assert record.error.code == "worker_died" and record.raw_status == "worker_died"
    assert f"anytune jobs resume {victim.ref}" in record.error.message
    with pytest.raises(JobFailedError, match="worker_died"):
        victim.result()
    killed_at = record.step or 0

    resumed = run_cli(capsys, "jobs", "resume", victim.ref, "--wait", "--json")
    assert resumed.code == 0, resumed.err + log_of(victim)
    final = json.loads(resumed.out)
    expected = finished(reference)
    assert expected.status is JobStatus.SUCCEEDED
    assert final["status"] == "succeeded"
    assert final["step"] == final["total_steps"] == expected.step == expected.total_steps
    assert expected.step is not None and expected.step > killed_at
    events = [e.message for e in victim.events() if e.kind == "status"]
    assert any("resuming from step-" in m for m in events), events
    # The resumed run reports again the steps after its checkpoint: the curve still has each step once.
    steps = [m.step for m in victim.metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == expected.step, steps
    # Nothing left to resume once it succeeded.
    again = run_cli(capsys, "jobs", "resume", victim.ref)
    assert again.code != 0 and "already succeeded" in again.err


def test_two_devices_run_under_torch_distributed(tiny_model: Path, train_file: Path) -> None:
    # On CPU the multi-device path is DDP over gloo with two processes, launched by torch.distributed.run.
    job = create(tiny_model, train_file, steps=2, local={"device": "cpu", "num_devices": 2, "logging_steps": 1})
    launch = json.loads((run_of(job).path / "launch.json").read_text())
    assert launch["command"][1:3] == ["-m", "torch.distributed.run"]
    record = finished(job)
    assert record.status is JobStatus.SUCCEEDED, (record.error, log_of(job))
    assert job.result().extra["world_size"] == 2


# -- bad input fails fast with a clear record ------------------------------------------------------


def _failure(job: FineTuneJob, timeout: float = 60) -> tuple[str, str]:
    record = finished(job, timeout)
    assert record.status is JobStatus.FAILED, log_of(job)
    assert record.error is not None and record.error.code
    return record.error.code, record.error.message


def test_unknown_model_path_fails_with_a_clear_error(train_file: Path, tmp_path: Path, anytune_home: Path) -> None:
    missing = tmp_path / "no-such-model"
    # Refused before the run exists (tests/test_base_model.py has the cases)...
    with pytest.raises(ConfigError) as info:
        create(missing, train_file)
    assert info.value.field == "base_model" and "no-such-model" in str(info.value)
    assert jobs_in_store(anytune_home) == 0 and not (anytune_home / "runs").exists()
    # ...and a folder gone by the time the worker starts (a submit past the check) fails clearly there.
    spec = JobSpec(base_model=str(missing), training_file=train_file, local={"device": "cpu"})  # type: ignore[arg-type]
    started = time.monotonic()
    record = LocalProvider().submit(spec, idempotency_key="gone")
    code, message = _failure(FineTuneJob.get(record.ref, provider=LocalProvider()))
    assert time.monotonic() - started < 60
    assert code == "model_not_found"
    assert "no-such-model" in message


def test_tokenizer_without_chat_template_fails_with_a_clear_error(
    tiny_model: Path, train_file: Path, tmp_path: Path
) -> None:
    import shutil

    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    code, message = _failure(create(plain, train_file))
    assert "chat template" in message.lower() or "chat_template" in message.lower(), message
    assert code == "no_chat_template"


def test_4bit_where_bitsandbytes_cannot_run_fails_with_a_clear_error(
    tiny_model: Path, train_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker sees a bitsandbytes that cannot load (as on a machine without a usable backend).
    shadow = tmp_path / "shadow"
    (shadow / "bitsandbytes").mkdir(parents=True)
    (shadow / "bitsandbytes" / "__init__.py").write_text(
        "raise ImportError('bitsandbytes: no usable backend on this machine (simulated by the test)')\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")])))
    code, message = _failure(create(tiny_model, train_file, quantization="4bit"))
    assert "bitsandbytes" in message
    assert code == "bitsandbytes_unavailable"


# -- no worker needed ---------------------------------------------------------------------------------


def test_dry_run_creates_nothing(
    tiny_model: Path, train_file: Path, capsys: pytest.CaptureFixture[str], anytune_home: Path
) -> None:
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "local",
        "--base-model",
        str(tiny_model),
        "--training-file",
        str(train_file),
        "--lora-r",
        "4",
        "--dry-run",
    )
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["provider"] == "local"
    assert plan["uploads"][0]["sha256"] and plan["uploads"][0]["bytes"] == train_file.stat().st_size
    body = plan["requests"][0]["body"]
    assert body["command"][1:3] == ["-m", "anytune.local_backend.worker"]
    assert body["device"] == "cpu"
    assert not (anytune_home / "runs").exists()
    assert jobs_in_store(anytune_home) == 0


def test_worker_command_uses_torch_distributed_for_several_devices(tmp_path: Path) -> None:
    assert worker_command("py", tmp_path, resume=True) == [
        "py",
        "-m",
        "anytune.local_backend.worker",
        str(tmp_path),
        "--resume",
    ]
    multi = worker_command("py", tmp_path, num_devices=2)
    assert multi[:6] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert multi[6:] == ["-m", "anytune.local_backend.worker", str(tmp_path)]
    assert resolve_device("cuda") == "cuda"


def _fake_run(
    provider: LocalProvider, spec: JobSpec, status: JobStatus, *, pid: int | None = None, key: str = "k"
) -> RunDir:
    run = RunDir(provider.runs_dir / provider.job_id_for(key))
    run.create(spec, idempotency_key=key)
    if status is not JobStatus.QUEUED:
        run.set_status(status, step=4, total_steps=10)
    if pid is not None:
        run.write_pid(pid)
    return run


@pytest.fixture
def spec(train_file: Path) -> JobSpec:
    return JobSpec(base_model="tiny", training_file=train_file, lora={"r": 4})  # type: ignore[arg-type]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_worker_shows_as_worker_died_and_cancel_then_settles_it(spec: JobSpec) -> None:
    provider = LocalProvider()
    run = _fake_run(provider, spec, JobStatus.RUNNING, pid=_dead_pid())
    record = provider.get(run.id)
    assert record.status is JobStatus.FAILED and record.error is not None
    assert record.error.code == "worker_died" and "no checkpoint" in record.error.message
    assert record.step == 4 and record.total_steps == 10
    # Cancelling a job nobody runs any more writes the final status itself.
    assert provider.cancel(run.id).status is JobStatus.CANCELLED
    assert provider.get(run.id).status is JobStatus.CANCELLED


def test_a_live_pid_of_another_program_is_not_the_worker(spec: JobSpec) -> None:
    provider = LocalProvider()
    run = _fake_run(provider, spec, JobStatus.RUNNING, pid=os.getpid())  # pytest: alive, not our worker
    assert provider.get(run.id).error is not None


def test_resume_refuses_a_succeeded_or_running_job(spec: JobSpec) -> None:
    provider = LocalProvider()
    done = _fake_run(provider, spec, JobStatus.SUCCEEDED, key="a")
    with pytest.raises(InvalidRequestError, match="already succeeded"):
        provider.resume(done.id)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(30)", "run-x"])
    try:
        running = _fake_run(provider, spec, JobStatus.RUNNING, key="b")
        # A live process counts as the worker only when its command line names the run.
        running.write_pid(sleeper.pid)
        assert provider.get(running.id).error is not None  # 'run-x' is not this run's id
        argv = [sys.executable, "-c", "import time; time.sleep(30)", running.id]
        worker = subprocess.Popen(argv)
        try:
            running.write_pid(worker.pid)
            assert provider.get(running.id).status is JobStatus.RUNNING
            with pytest.raises(InvalidRequestError, match="still running"):
                provider.resume(running.id)
        finally:
            worker.kill()
            worker.wait()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_unknown_ids_are_not_found(spec: JobSpec) -> None:
    from anytune import JobNotFoundError

    provider = LocalProvider()
    for bad in ("run-nothere", "../etc", "fakejob-1"):
        with pytest.raises(JobNotFoundError):
            provider.get(bad)


def test_metrics_plot_writes_a_png(spec: JobSpec, capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    provider = LocalProvider()
    run = _fake_run(provider, spec, JobStatus.SUCCEEDED)
    for step in range(1, 6):
        run.log_metric(MetricPoint(step=step, train_loss=3.0 / step, valid_loss=3.2 / step if step % 2 else None))
    result = run_cli(capsys, "jobs", "metrics", f"local:{run.id}", "--plot", "curves/loss.png")
    assert result.code == 0, result.err
    png = workdir / "curves" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "loss curve written" in result.err


def test_plot_without_matplotlib_names_the_extra(spec: JobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    from anytune._plot import plot_loss

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"anytune\[local\]"):
        plot_loss([MetricPoint(step=1, train_loss=1.0)], "x.png")


def test_hosted_results_cannot_be_loaded_here() -> None:
    hosted = FineTunedModel(provider="openai", job_ref="openai:ftjob-1", model_id="ft:gpt-4o-mini:org::abc")
    with pytest.raises(NotSupportedError, match="chat completions"):
        hosted.load()
    with pytest.raises(NotSupportedError):
        hosted.generate("hi")


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (
            lambda: __import__("torch").OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
            "out_of_memory",
            "batch_size",
        ),
        (
            lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB"),
            "out_of_memory",
            "4bit",
        ),
        (lambda: ImportError("bitsandbytes: no usable backend"), "bitsandbytes_unavailable", "quantization"),
        (lambda: OSError("/x/y is not a local folder and is not a valid model identifier"), "model_not_found", "/x/y"),
        (
            lambda: ValueError("Cannot use chat template functions because tokenizer.chat_template is not set"),
            "no_chat_template",
            "local.chat_template",
        ),
        (lambda: NotSupportedError("nope", field="quantization", provider="local"), "not_supported", "nope"),
        (lambda: ConfigError("base model path '/m' does not exist", field="base_model"), "model_not_found", "/m"),
        (
            lambda: ConfigError("the tokenizer of 'm' has no chat template", field="local.chat_template"),
            "no_chat_template",
            "chat template",
        ),
        (
            lambda: MissingDependencyError("bitsandbytes", "local", "quantization='4bit'"),
            "bitsandbytes_unavailable",
            "anytune[local]",
        ),
        (lambda: ConfigError("bad", field="hyperparameters"), "invalid_config", "bad"),
        (
            lambda: RuntimeError(
                "[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:56728: Connection reset by peer"
            ),
            "rank_lost",
            "jobs resume",
        ),
        (lambda: type("DistBackendError", (RuntimeError,), {})("NCCL error"), "rank_lost", "another process"),
        (lambda: KeyError("boom"), "worker_error", "KeyError"),
    ],
)
def test_worker_failures_get_a_stable_code_and_a_clear_message(
    make: Callable[[], BaseException], code: str, words: str
) -> None:
    failure = classify(make())
    assert failure.code == code
    assert words in failure.message


def test_capabilities_load_without_torch() -> None:
    proc = run_python(
        "import sys\nfrom anytune import _registry\n"
        "caps = _registry.provider_class(_registry.entry('local')).capabilities\n"
        "assert caps.lora and 'dpo' in {m.value for m in caps.methods}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- local.output_dir (issue 10: an accepted option is honoured) --------------------------------------


def test_output_dir_receives_the_adapter_and_the_merged_model(
    tiny_model: Path, train_file: Path, tmp_path: Path
) -> None:
    target = tmp_path / "exported" / "my-adapter"
    job = create(
        tiny_model,
        train_file,
        steps=2,
        save_steps=2,
        local={"device": "cpu", "logging_steps": 1, "output_dir": str(target), "merge": True},
    )
    record = finished(job)
    assert record.status is JobStatus.SUCCEEDED, (record.error, log_of(job))
    result = job.result()
    assert Path(str(result.adapter_path)) == target.resolve() == Path(str(record.fine_tuned_model))
    assert (target / "adapter_config.json").is_file() and (target / "anytune_spec.json").is_file()
    assert (target / "merged" / "config.json").is_file() and result.extra["merged_path"] == str(target / "merged")
    assert (run_of(job).adapter_dir / "adapter_config.json").is_file()  # the run keeps its own copy
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no scratch left beside it
    # The spec that filled the folder passes again (a create retried after the job finished finds
    # the same run); another job into the same folder is refused before it starts.
    LocalProvider().validate(run_of(job).spec())
    with pytest.raises(ConfigError) as info:
        create(tiny_model, train_file, steps=2, local={"device": "cpu", "output_dir": str(target), "logging_steps": 2})
    assert info.value.field == "local.output_dir" and "not empty" in str(info.value)
