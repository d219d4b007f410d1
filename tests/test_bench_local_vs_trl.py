"""The arithmetic behind bench/local_vs_trl.py's verdicts: FLOP counts, GPU peaks, what a step held.

The bench itself needs TRL and minutes; these checks need neither (the bench imports only the
standard library until a run starts), so a wrong FLOP count or peak cannot hide behind a GPU run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_script

BENCH = Path(__file__).parents[1] / "bench" / "local_vs_trl.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(BENCH, "bench_local_vs_trl")


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),  # SXM
        ("NVIDIA H200", 989e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
    ],
)
def test_known_gpus_get_their_bf16_dense_peak(bench: ModuleType, name: str, peak: float) -> None:
    assert bench.gpu_peak_flops(name)[0] == peak


@pytest.mark.parametrize("name", ["NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA GeForce RTX 4090", "NVIDIA L4"])
def test_unknown_gpus_leave_mfu_out_and_say_why(bench: ModuleType, name: str) -> None:
    peak, reason = bench.gpu_peak_flops(name)
    assert peak is None
    assert name in reason and "MFU omitted" in reason
    assert bench.mfu(1e15, 1.0, peak) is None


def test_parameter_counts_match_the_published_models(bench: ModuleType) -> None:
    # PEFT prints these trainable counts for r=16 on every linear layer of the real models.
    llama = bench.flop_counts(bench.SHAPES["llama8b"], 16)
    qwen = bench.flop_counts(bench.SHAPES["qwen0.5b"], 16)
    assert llama["adapter_params"] == 41_943_040
    assert qwen["adapter_params"] == 8_798_208
    # Meta-Llama-3-8B has 8,030,261,248 parameters: the frozen matmuls (LM head included), the input
    # embedding, and the RMSNorm weights (two per layer and the final one).
    shape = bench.SHAPES["llama8b"]
    embedding = shape["vocab_size"] * shape["hidden_size"]
    norms = (2 * shape["num_layers"] + 1) * shape["hidden_size"]
    assert llama["frozen_params"] + embedding + norms == 8_030_261_248


def test_lora_flops_charge_the_lm_head_on_target_tokens_only(bench: ModuleType) -> None:
    shape = bench.SHAPES["llama8b"]
    counts = bench.flop_counts(shape, 16)
    n, a = counts["frozen_params"], counts["adapter_params"]
    head = shape["vocab_size"] * shape["hidden_size"]
    assert counts["head_params"] == head == 128256 * 4096
    assert counts["per_token"] == 4 * (n - head) + 6 * a  # the decoder's frozen matmuls and the adapters
    assert counts["per_target"] == 4 * head  # the head's forward and activation gradient, labelled positions only
    assert counts["per_pair"] == 12 * 32 * 4096  # forward QK^T and AV (4 x hidden), backward twice that
    # 10k tokens of which 4k have a label, in sequences of 500: the head is charged on 4k positions, not 10k.
    pairs = bench.causal_pairs([500] * 20)
    flops = bench.window_flops(counts, 10_000, 4_000, pairs)
    assert flops == 10_000 * (4 * (n - head) + 6 * a) + 4_000 * 4 * head + pairs * 12 * 32 * 4096
    every_token = 10_000 * (4 * n + 6 * a) + pairs * counts["per_pair"]  # the old count: head on every token
    assert every_token - flops == 6_000 * 4 * head
    # One second on an H100: MFU is the window's FLOPs over the peak.
    assert bench.mfu(flops, 1.0, 989e12) == round(flops / 989e12, 4)
    assert 0.28 < flops / 989e12 < 0.30
    assert flops < 0.7 * 10_000 * 6 * n  # the full fine-tuning count would overstate a LoRA step by half


def test_tied_heads_count_once_and_as_a_head(bench: ModuleType) -> None:
    # Qwen2.5-0.5B ties its head to the input embedding: the head's matmul is still a frozen matmul.
    shape = bench.SHAPES["qwen0.5b"]
    counts = bench.flop_counts(shape, 16)
    head = shape["vocab_size"] * shape["hidden_size"]
    assert counts["per_target"] == 4 * head
    assert counts["per_token"] == 4 * (counts["frozen_params"] - head) + 6 * counts["adapter_params"]
    assert counts["per_token"] > 0


def test_sequence_lengths_read_from_each_batch_layout(bench: ModuleType) -> None:
    assert bench.causal_pairs([1, 2, 3]) == 1 + 3 + 6
    assert bench.lengths_from_cu([0, 3, 7, 7]) == [3, 4]
    assert bench.lengths_from_positions([0, 1, 2, 0, 1, 0]) == [3, 2, 1]
    assert bench.lengths_from_positions([]) == []
    assert bench.lengths_from_mask([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]) == [3, 2]


def test_window_counts_only_the_timed_steps(bench: ModuleType) -> None:
    per_step = [[100, 100], [10, 20, 30], [40], [5, 5, 5, 5]]  # warm-up step first, then three timed
    targets = [150, 30, 20, 8]
    figures = bench.window_figures(per_step, targets, 1, 3)
    assert figures == {
        "steps": 3,
        "tokens": 120,
        "targets": 58,
        "pairs": (55 + 210 + 465) + 820 + 4 * 15,
        "examples_per_step": 2.67,
    }
    assert bench.window_figures(per_step, targets, 4, 3)["examples_per_step"] is None


def test_targets_are_the_labelled_positions_the_loss_sees(bench: ModuleType) -> None:
    np = pytest.importorskip("numpy")
    # Padded: the first position of a row never has a target (labels are shifted by one).
    labels = np.array([[-100, -100, 7, 8, -100], [5, -100, 9, -100, -100]])
    assert bench.batch_targets({"labels": labels}) == 3
    # Padding-free rows may carry the shifted labels themselves.
    assert bench.batch_targets({"shift_labels": np.array([[3, -100, 4, 5]]), "labels": labels}) == 3
    assert bench.batch_targets({"input_ids": labels}) == 0


def test_same_examples_compares_step_by_step(bench: ModuleType) -> None:
    ours = [[3, 5], [7]]
    assert bench.same_examples(ours, [[5, 3], [7]])  # order within a step does not matter
    assert not bench.same_examples(ours, [[3], [5, 7]])  # the same sequences, regrouped
    assert not bench.same_examples(ours, [[3, 5]])


def test_runs_default_by_device_and_bad_options_are_refused(bench: ModuleType) -> None:
    assert "unsloth" not in bench._parse([]).run_names
    assert bench._parse(["--device", "cuda"]).run_names[-1] == "unsloth"
    assert bench._parse(["--device", "cuda"]).model == "qwen0.5b"
    for argv in (["--steps", "3", "--warmup", "2"], ["--warmup", "0"], ["--runs", "anytune,axolotl"]):
        with pytest.raises(SystemExit):
            bench._parse(argv)


def test_compiles_are_counted_between_the_window_edges(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    before = bench.compile_counters()
    assert before["triton_kernels"] == 0  # the cache is made at the first kernel built
    for name in ("k1", "k2"):
        (tmp_path / "triton" / name).mkdir(parents=True)
    after = {**bench.compile_counters(), "dynamo_frames": before["dynamo_frames"] + 3}
    assert bench.compiles_between(before, after) == {"recompiles_in_window": 3, "triton_compiles_in_window": 2}
    monkeypatch.delenv("TRITON_CACHE_DIR")
    unknown = bench.compile_counters()
    assert unknown["triton_kernels"] is None
    assert bench.compiles_between(unknown, unknown)["triton_compiles_in_window"] is None


def test_workers_get_the_options_main_was_given_not_sys_argv(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["pytest", "--not-a-bench-option"])
    args = bench._parse(["--model", "smoke", "--steps", "2", "--warmup", "1"])
    cmd = bench.worker_command("trl", tmp_path, args)
    assert cmd[-6:] == ["--model", "smoke", "--steps", "2", "--warmup", "1"]
    assert "--not-a-bench-option" not in cmd
    assert cmd[cmd.index("--parent-pid") + 1] == str(os.getpid())
    assert bench._parse(cmd[2:]).worker == "trl"  # a worker parses its own command line


# A bench parent whose one worker only sleeps (started as the bench starts workers: its own session).
PARENT = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("bench_parent", sys.argv[1])
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)
from pathlib import Path
out = Path(sys.argv[2])
sleeper = f"import os, time; open({str(out / 'pid')!r}, 'w').write(str(os.getpid())); time.sleep(60)"
bench.worker_command = lambda name, fixture, args: [sys.executable, "-c", sleeper]
bench.stop_on_signals()
bench._spawn("anytune", out, bench._parse([]), out / "worker.log", None)
"""

# A parent that starts a child which asks to die with it, then waits to be killed.
ORPHAN = r"""
import subprocess, sys, time
child = f'''
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("b", {sys.argv[1]!r})
b = importlib.util.module_from_spec(spec); sys.modules["b"] = b; spec.loader.exec_module(b)
b.die_with_parent({__import__("os").getpid()})
open({sys.argv[2] + "/pid"!r}, "w").write(str(os.getpid()))
time.sleep(60)
'''
subprocess.Popen([sys.executable, "-c", child], start_new_session=True)
time.sleep(60)
"""


def _wait_for(path: Path, seconds: float = 20.0) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


def _gone(pid: int, seconds: float = 10.0) -> bool:
    """Whether ``pid`` has ended (a zombie waiting for its reaper counts as ended)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc: Linux")
def test_sigterm_to_the_bench_ends_its_worker_too(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(BENCH), str(tmp_path)])
    try:
        worker = _wait_for(tmp_path / "pid")
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=20) == 128 + signal.SIGTERM
        assert _gone(worker), "the worker outlived the bench"
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG: Linux")
def test_a_worker_dies_with_its_parent_even_by_sigkill(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN, str(BENCH), str(tmp_path)])
    try:
        worker = _wait_for(tmp_path / "pid")
        parent.kill()  # no handler runs: only the kernel can end the worker now
        parent.wait()
        assert _gone(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()


# -- bench/gpu_report.py and bench/gpu.sh: what a GPU call prints and leaves in $OUT --------------------

REPORT = Path(__file__).parents[1] / "bench" / "gpu_report.py"
GPU_SH = Path(__file__).parents[1] / "bench" / "gpu.sh"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return load_script(REPORT, "bench_gpu_report")


def _figure_summary() -> dict[str, object]:
    """A summary line as the bench prints it for a five-run GPU figure, long fields and all."""
    run = {
        "tokens_per_s": 41234.5,
        "tokens": 80000,
        "targets": 30000,
        "seconds": 1.94,
        "examples_per_step": 8.0,
        "same_examples": True,
        "peak_gpu_mib": 20480.5,
        "mfu": 0.4123,
        "final_loss": 11.52,
        "recompiles_in_window": 0,
        "attention_kernel": "torch.nn.attention.varlen.varlen_attn",
        "attention_refused": ["flash_attention_3: ImportError: " + "x" * 200] * 2,
        "kernels": ["liger_kernel:LigerRMSNorm.forward"] * 6,
        "versions": {"trl": "1.16.0", "transformers": "5.24.0", "torch": "2.11.0+cu130"},
        "step_lengths": [[300] * 8] * 20,
    }
    return {
        "bench": "local_vs_trl",
        "figure": "llama8b-lora",
        "model": "llama8b",
        "quant": "none",
        "device_name": "NVIDIA H200",
        "runs": {name: dict(run) for name in ("anytune", "trl", "trl_padfree", "trl_packed", "unsloth")},
        "not_run": {},
        "best_peer": "trl_packed",
        "speedup": 1.31,
        "memory_ratio": 0.8,
        "mfu_goal_met": False,
        "mfu_formula": "y" * 300,
    }


def test_a_figure_prints_a_compact_line_and_keeps_the_whole_summary(report: ModuleType) -> None:
    summary = _figure_summary()
    log = "fixture: ...\nrunning anytune ...\n" + json.dumps(summary) + "\n"
    record = report.figure_record("llama8b-lora", log, 0, "", ["offline", "install: ok in 12s"])
    assert record["runs"] == summary["runs"] and record["mfu_formula"] == summary["mfu_formula"]
    assert record["setup_notes"] == ["offline", "install: ok in 12s"] and record["exit_code"] == 0
    line = json.dumps(report.compact(record), separators=(",", ":"))
    assert len(line) < 1500 < len(json.dumps(summary))  # three figures and the notes fit in 12,000 characters
    short = json.loads(line)
    assert short["runs"]["anytune"] == {
        "tok_s": 41234.5,
        "mfu": 0.4123,
        "gpu_mib": 20480.5,
        "ex_step": 8.0,
        "same": True,
        "loss": 11.52,
        "recompiles": 0,
        "attn": "torch.nn.attention.varlen.varlen_attn",
        "kernels": 6,
    }
    assert (short["best_peer"], short["speedup"], short["mfu_goal_met"]) == ("trl_packed", 1.31, False)


@pytest.mark.parametrize(
    ("log", "rc", "error", "expected"),
    [
        ("Traceback ...\nModuleNotFoundError: No module named 'trl'\n", 1, "", "exit 1: Traceback"),
        ("running anytune ...\n", 124, "", "timed out: running anytune"),
        ("", 0, "torch 2.11.0 (CUDA 13.0) sees no CUDA device", "torch 2.11.0 (CUDA 13.0) sees no CUDA device"),
        ('{"bench": "local_vs_trl", "runs": \n', 1, "", "exit 1: "),  # a cut-off summary is no summary
    ],
)
def test_a_figure_without_a_summary_says_why(report: ModuleType, log: str, rc: int, error: str, expected: str) -> None:
    record = report.figure_record("qwen0.5b-lora", log, rc, error, [])
    assert record["error"].startswith(expected)
    assert report.compact(record) == {"figure": "qwen0.5b-lora", "error": record["error"]}


def _wheel(path: Path, name: str, requires: list[str]) -> Path:
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-1.0.dist-info/METADATA", meta + "\nlong description\nRequires-Dist: not-a-header\n")
    return path


def test_carried_wheels_name_the_requirements_the_machine_does_not_meet(report: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("packaging")
    wheels = [
        _wheel(tmp_path / "datasets-1.0-py3-none-any.whl", "datasets", ["pyarrow>=24.0.0", "dill<0.4.2,>=0.3.0"]),
        _wheel(
            tmp_path / "trl-1.0-py3-none-any.whl",
            "trl",
            ['deepspeed; extra == "deepspeed"', 'pywin32; sys_platform == "win32"', "transformers>=4.56.2"],
        ),
    ]
    installed = {"pyarrow": "21.0.0", "dill": "0.4.1", "transformers": "5.17.0"}
    assert report.unmet(wheels, installed) == ["datasets needs pyarrow>=24.0.0 (have 21.0.0)"]
    assert report.unmet(wheels, {"pyarrow": "24.0.0"}) == [
        "datasets needs dill<0.4.2,>=0.3.0 (have none)",
        "trl needs transformers>=4.56.2 (have none)",
    ]


def test_preflight_names_what_does_not_import_and_a_missing_gpu(
    report: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "REQUIRED", ("json", "no_such_module_anytune_bench"))
    monkeypatch.setattr(report, "OPTIONAL", {"json": "never", "another_missing_module": "peers run without it"})
    lines = report.preflight("cpu")
    assert lines[0].startswith(f"NOTE python {sys.version.split()[0]} at {sys.executable}")
    assert "FATAL import no_such_module_anytune_bench failed" in "\n".join(lines)
    assert "ModuleNotFoundError" in "\n".join(lines)
    assert "NOTE another_missing_module not installed: peers run without it" in lines


def _gpu_sh(tmp_path: Path, python: str, **env: str) -> subprocess.Popen[str]:
    out = tmp_path / "out"
    full = dict(
        os.environ,
        PYTHON=python,
        BENCH_HOME=str(tmp_path / "home"),
        BENCH_OFFLINE="1",
        OUT=str(out),
        **env,
    )
    return subprocess.Popen(["bash", str(GPU_SH)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)


def _stub(tmp_path: Path, body: str) -> str:
    """An interpreter stand-in: a shell script gpu.sh runs where it would run Python."""
    stub = tmp_path / "stub-python"
    stub.write_text("#!/bin/sh\n" + body)
    stub.chmod(0o755)
    return str(stub)


@pytest.mark.skipif(sys.platform == "win32", reason="bash")
def test_gpu_sh_prints_one_line_per_figure_when_nothing_can_run(tmp_path: Path) -> None:
    broken = _stub(tmp_path, "echo 'ImportError: libcuda.so.1: cannot open shared object file' >&2\nexit 1\n")
    proc = _gpu_sh(tmp_path, broken)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line.get("figure") for line in lines] == ["qwen0.5b-lora", "llama8b-lora", "llama8b-qlora", None]
    assert all("the import check with" in line["error"] for line in lines[:3])
    assert lines[3]["bench"] == "gpu.sh" and lines[3]["online"] == "0"
    assert any("offline (BENCH_OFFLINE=1)" in note for note in lines[3]["notes"])
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gpu-logs.tar.gz", "gpu.jsonl"]
    records = [json.loads(line) for line in (out / "gpu.jsonl").read_text().splitlines()]
    assert [r.get("figure") for r in records] == ["qwen0.5b-lora", "llama8b-lora", "llama8b-qlora", None]
    with tarfile.open(out / "gpu-logs.tar.gz") as tar:
        setup = tar.extractfile("logs/setup.log")
        assert setup is not None and b"libcuda.so.1" in setup.read()  # the real error, not a guess


@pytest.mark.skipif(sys.platform == "win32", reason="bash")
def test_gpu_sh_stopped_by_sigterm_still_writes_every_record(tmp_path: Path) -> None:
    # The import check passes; the first figure's bench then runs until gpu.sh is stopped.
    started = tmp_path / "started"
    stub = _stub(
        tmp_path,
        f'case "$1" in\n  bench/gpu_report.py) echo "NOTE stub interpreter"; exit 0 ;;\n'
        f'  bench/local_vs_trl.py) echo "running anytune ..."; : >{started}; exec sleep 60 ;;\nesac\nexit 1\n',
    )
    proc = _gpu_sh(tmp_path, stub)
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert len(lines) == 4
    assert lines[0]["figure"] == "qwen0.5b-lora" and lines[0]["error"].startswith("exit 143: running anytune")
    assert all(line["error"] == "not run: gpu.sh was stopped by SIGTERM" for line in lines[1:3])
    assert any(note.startswith("stopped by SIGTERM") for note in lines[3]["notes"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu-logs.tar.gz", "gpu.jsonl"]
