"""FSDP2 and DeepSpeed ZeRO-2/3 against DDP on several CPU processes, on the same work.

Run::

    python bench/distributed_bench.py                      # 2 processes (gloo), ~4M-param Llama shape
    python bench/distributed_bench.py --processes 2 --steps 20 --hidden 512 --layers 8
    python bench/distributed_bench.py --strategies ddp zero3   # a subset

Each strategy is one job of the real ``local`` provider (``local.strategy`` ``ddp``, ``fsdp``,
``zero2``, ``zero3``; the ZeRO runs are left out, with a note, where DeepSpeed is not installed;
``local.num_devices`` processes under ``torch.distributed.run``, device ``cpu``), on the same
random-weight Llama-shaped model (written to disk once, as any Hugging Face folder), the same chat
dataset and the same hyperparameters (LoRA r=16 on every linear layer, batch ``--batch-size`` per
step over all processes, seed 0, no dropout), so both train on the same examples in the same order.
A one-process run is there too (``--no-single`` leaves it out): it is the baseline the losses of both
strategies must match, and what one process costs in memory.

**Figures** (the trainer's own, from each run's ``result.json``):

* ``tokens_per_second``: real (non-padding) input tokens of every process over the training steps'
  wall time (model loading, checkpoints and the final save are not in it).
* ``peak_rss_mib_per_rank``: each process's peak resident memory (``getrusage(RUSAGE_SELF)``),
  gathered from every rank at the end. On CPU a rank's RSS holds its copy (DDP) or its shard (FSDP)
  of the frozen base, plus torch itself (a few hundred MiB that neither strategy shares).
* ``final_rss_mib_per_rank``: each process's resident memory after the last step (Linux
  ``/proc/self/statm``): what a rank holds once training runs. Every rank loads the whole base before
  FSDP shards it, so the peak shows the load, and this figure shows what sharding saves afterwards.
* ``final_train_loss``: the last step's loss, to show both strategies computed the same updates.

Ratios are each strategy over DDP (``ratios_over_ddp``; ``ratios_fsdp_over_ddp`` is FSDP's):
tokens/s above 1 means it is faster; RSS below 1 means it holds less per process. On a small model
on CPU, FSDP's per-layer all-gathers (forward and backward) cost more than DDP's one gradient
all-reduce, and what it saves per rank is bounded by how much of the RSS is
the model (torch alone is ~450 MiB).

**glibc keeps freed memory.** On Linux, RSS is what the allocator kept, not what tensors use: after
a large block is freed glibc raises its mmap threshold, so later big buffers (FSDP's all-gathers, the
full base freed once sharded) come from a heap it does not give back, and FSDP can show *more* RSS
per rank than DDP. ``MALLOC_MMAP_THRESHOLD_=65536`` (inherited by the ranks) fixes the threshold, and
the figures then show the sharding. Measured on 2 cores (another job sharing them; hidden 768,
8 layers, vocab 8192, ~65M parameters, 6 steps): by default FSDP/DDP tokens/s x0.62, peak RSS per
rank x1.36, end RSS x1.24; with the fixed threshold x0.57, x0.93 and x0.85 (598 vs 706 MiB: about
half the fp32 base, as two shards should). Losses agree within 3e-7.

ZeRO, measured the same way (2 cores, fixed threshold, hidden 768, 8 layers, vocab 8192, 6 steps,
DeepSpeed 0.19.8 on its CPU accelerator over gloo), over DDP: ZeRO-2 tokens/s x0.74, peak RSS per
rank x1.00, end RSS x1.02 (it shards only the optimizer states and gradients, of the adapter: small
next to the frozen base); ZeRO-3 tokens/s x0.32, peak RSS x1.35 (every rank holds the whole base
while DeepSpeed partitions it, beside the partitions), end RSS x0.93 (657 vs 709 MiB; FSDP's 601).
FSDP in the same session: x0.44, x0.93, x0.85. Losses agree within 5e-7. On the default shape
(hidden 256, 4 layers, 12 steps) ZeRO-2 x1.02 tokens/s, ZeRO-3 x0.44; RSS is torch's there.

The last line printed is one JSON object: ``{"bench": "distributed", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
#: The strategies that need DeepSpeed (``anytune[deepspeed]``).
ZERO = ("zero2", "zero3")
#: The figures of result.json each run reports.
FIGURES = (
    "tokens_per_second",
    "train_seconds",
    "wall_seconds",
    "peak_rss_mib",
    "peak_rss_mib_per_rank",
    "final_rss_mib_per_rank",
    "final_train_loss",
    "steps",
    "train_tokens",
    "world_size",
    "strategy",
)


def chat_examples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` chat conversations of varied length (deterministic for a seed)."""
    import random

    rng = random.Random(seed)
    words = [
        "the",
        "a",
        "model",
        "trains",
        "on",
        "data",
        "with",
        "loss",
        "and",
        "steps",
        "over",
        "many",
        "tokens",
        "each",
        "batch",
        "of",
        "text",
    ]
    out = []
    for i in range(n):
        question = " ".join(rng.choice(words) for _ in range(rng.randint(4, 24)))
        answer = " ".join(rng.choice(words) for _ in range(rng.randint(8, 60)))
        out.append(
            {"messages": [{"role": "user", "content": f"{i}: {question}?"}, {"role": "assistant", "content": answer}]}
        )
    return out


def job_fields(strategy: str | None, processes: int, args: argparse.Namespace) -> dict[str, Any]:
    """The ``FineTuneJob.create`` keywords of one run (``strategy`` None: one process)."""
    local: dict[str, Any] = {"device": "cpu", "logging_steps": 1, "save_steps": 10**6}
    if strategy is not None:
        local |= {"num_devices": processes, "strategy": strategy}
    return {
        "hyperparameters": {
            "batch_size": args.batch_size,
            "learning_rate": 2e-4,
            "max_length": args.max_length,
            "seed": 0,
            "max_steps": args.steps,
        },
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "local": local,
    }


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The bench's figures of one run, from its ``result.json``."""
    out = {key: result.get(key) for key in FIGURES}
    if out["peak_rss_mib_per_rank"] is None and out["peak_rss_mib"] is not None:
        out["peak_rss_mib_per_rank"] = [out["peak_rss_mib"]]  # an older trainer's one process
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios(runs: dict[str, dict[str, Any]], strategy: str = "fsdp") -> dict[str, Any]:
    """``strategy`` / DDP: throughput, the largest and the mean per-rank peak RSS, and the loss gap."""
    ddp, fsdp = runs.get("ddp"), runs.get(strategy)
    if not ddp or not fsdp:
        return {}
    ddp_rss, fsdp_rss = ddp["peak_rss_mib_per_rank"] or [], fsdp["peak_rss_mib_per_rank"] or []
    ddp_end = [v for v in ddp.get("final_rss_mib_per_rank") or [] if v is not None]
    fsdp_end = [v for v in fsdp.get("final_rss_mib_per_rank") or [] if v is not None]
    loss_gap = None
    if ddp["final_train_loss"] is not None and fsdp["final_train_loss"] is not None:
        loss_gap = abs(ddp["final_train_loss"] - fsdp["final_train_loss"])
    return {
        "tokens_per_second": _ratio(fsdp["tokens_per_second"], ddp["tokens_per_second"]),
        "max_rank_peak_rss": _ratio(max(fsdp_rss, default=None), max(ddp_rss, default=None)),
        "mean_rank_peak_rss": _ratio(
            sum(fsdp_rss) / len(fsdp_rss) if fsdp_rss else None, sum(ddp_rss) / len(ddp_rss) if ddp_rss else None
        ),
        "max_rank_final_rss": _ratio(max(fsdp_end, default=None), max(ddp_end, default=None)),
        "final_train_loss_gap": loss_gap,
    }


def table(runs: dict[str, dict[str, Any]]) -> str:
    """The figures as a few aligned lines."""
    lines = [
        f"{'run':<8} {'procs':>5} {'tokens/s':>10} {'train s':>8} {'peak RSS/rank MiB':<18} "
        f"{'end RSS/rank MiB':<18} {'loss':>8}"
    ]
    for name, run in runs.items():
        peak = ", ".join(f"{v:.0f}" for v in run["peak_rss_mib_per_rank"] or [])
        end = ", ".join(f"{v:.0f}" for v in run.get("final_rss_mib_per_rank") or [] if v is not None)
        loss = run["final_train_loss"]
        lines.append(
            f"{name:<8} {run['world_size'] or 1:>5} {run['tokens_per_second'] or 0:>10.1f} "
            f"{run['train_seconds'] or 0:>8.2f} {peak:<18} {end:<18} {loss if loss is None else f'{loss:.4f}':>8}"
        )
    return "\n".join(lines)


def summary(args: argparse.Namespace, model: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON line: settings, each run's figures and the FSDP / DDP ratios."""
    return {
        "bench": "distributed",
        "device": "cpu",
        "processes": args.processes,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "cpu_count": os.cpu_count(),
        "model": model,
        "runs": runs,
        "ratios_fsdp_over_ddp": ratios(runs),
        "ratios_over_ddp": {s: ratios(runs, s) for s in STRATEGIES if s != "ddp" and s in runs},
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--no-single", action="store_true", help="leave out the one-process baseline")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--workdir", type=Path, default=None, help="keep the model, data and runs here")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each run may take")
    return parser.parse_args(argv)


def _run(name: str, strategy: str | None, train: Path, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    from anytune import FineTuneJob, JobStatus

    job = FineTuneJob.create(
        provider="local", base_model=str(model), training_file=train, **job_fields(strategy, args.processes, args)
    )
    record = job.wait(timeout=args.timeout)
    run_dir = Path(record.output["run_dir"])
    if record.status is not JobStatus.SUCCEEDED:
        log = (run_dir / "worker.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name}: {record.status.value}: {record.error}\n{log}")
    return figures(json.loads((run_dir / "result.json").read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="anytune-distributed-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["ANYTUNE_HOME"] = str(work / "home")  # the runs stay with the bench, not in ~/.anytune
    from anytune.local_backend.tiny import build_tiny_model

    examples = chat_examples(args.examples)
    train = work / "train.jsonl"
    train.write_text("".join(json.dumps(e) + "\n" for e in examples))
    texts = [m["content"] for e in examples for m in e["messages"]]
    model = build_tiny_model(
        work / "model", hidden_size=args.hidden, num_layers=args.layers, vocab_size=args.vocab, texts=texts
    )
    shape = {"hidden_size": args.hidden, "layers": args.layers, "vocab_size": args.vocab}
    plan: list[tuple[str, str | None]] = [] if args.no_single else [("single", None)]
    import importlib.util

    chosen = [s for s in STRATEGIES if s in args.strategies]
    if importlib.util.find_spec("deepspeed") is None and any(s in ZERO for s in chosen):
        print('zero2/zero3 left out: DeepSpeed is not installed (pip install "anytune[deepspeed]")', file=sys.stderr)
        chosen = [s for s in chosen if s not in ZERO]
    plan += [(s, s) for s in chosen]
    runs: dict[str, dict[str, Any]] = {}
    for name, strategy in plan:
        start = time.perf_counter()
        runs[name] = _run(name, strategy, train, model, args)
        print(f"{name}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    print(table(runs))
    line = summary(args, shape, runs)
    for name, r in line["ratios_over_ddp"].items():
        if r:
            print(
                f"{name} / DDP: tokens/s x{r['tokens_per_second']}, peak RSS per rank x{r['max_rank_peak_rss']} "
                f"(max) x{r['mean_rank_peak_rss']} (mean), RSS per rank after training x{r['max_rank_final_rss']} "
                f"(max); final loss gap {r['final_train_loss_gap']}"
            )
    print(json.dumps(line, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
