"""Benchmark: `anytune data validate` against the script a user would write.

    python bench/validate_bench.py [--size-mb 100] [--small-mb 25] [--seed 7] [--keep DIR]
    python bench/validate_bench.py --pathological [--line-mb 200] [--blank-lines 20000000]

It generates (deterministically, from a seed) a chat JSONL file whose examples look like real SFT
data: a system prompt (mostly one of a few shared prompts, as in real datasets), one to four
user/assistant turns, message lengths drawn from a long-tailed (log-normal) distribution, some
assistant turns with ``weight: 0``. Then each tool runs in its own subprocess, so peak memory is
per tool:

* ``script``: the straightforward validator from OpenAI's cookbook style — ``json.loads`` per line,
  role/content checks, ``len(enc.encode(text))`` per string with bpe-openai's o200k_base ``Encoding``
  (the same tokenizer anytune uses), lengths collected in a list;
* ``anytune``: ``anytune data validate --json`` when the CLI is installed (else the library function
  ``validate_file``), on the big file and on a smaller one to show memory does not grow with file
  size; the library function on the big file too.

Peak memory: ``VmHWM`` of the process itself, the largest ``VmHWM`` of its worker processes
(anytune forks workers after loading the tokenizer, so its tables are shared copy-on-write), and the
peak total PSS (proportional set size: shared pages split between the processes sharing them) of
the whole process tree, sampled every 20 ms — the honest "how much RAM did the tool take" figure.

The last line printed is one JSON object: ``{"bench": "validate", ...}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# --- data generation ----------------------------------------------------------------------------

_WORDS = (  # noqa: SIM905 - a paragraph reads better than 300 quoted words
    "the of and to a in is it you that he was for on are with as I his they be at one have this from "
    "or had by hot word but what some we can out other were all there when up use your how said an "
    "each she which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my over "
    "know water than call first who may down side been now find any new work part take get place made "
    "live where after back little only round man year came show every good me give our under name very "
    "through just form sentence great think say help low line differ turn cause much mean before move "
    "right boy old too same tell does set three want air well also play small end put home read hand "
    "port large spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth father "
    "function return value error request response customer order account payment invoice shipping "
    "refund policy database query index table column server client token model training dataset "
    "example assistant user system message content configuration deployment container cluster "
    "latency throughput memory processor gradient learning rate epoch batch loss accuracy validation "
    "Python JavaScript TypeScript Rust Kubernetes PostgreSQL Redis Azure OpenAI HuggingFace "
    "naïve café résumé façade coöperate São Paulo Zürich Kraków Ørsted Ærø"
).split()
_PUNCT = [",", ".", ".", "?", ":", ";", "!", " -", " (see above)", "'s"]
_CODE = [
    "```python\ndef f(x):\n    return x * 2\n```",
    "```sql\nSELECT id, name FROM users WHERE active = true ORDER BY id;\n```",
    '```json\n{"status": "ok", "items": [1, 2, 3]}\n```',
    "`kubectl get pods -n prod`",
]
_CJK = ["数据", "模型", "训练", "東京", "こんにちは", "안녕하세요", "🙂", "🚀"]


def _text(rng: random.Random, n_words: int) -> str:
    words = rng.choices(_WORDS, k=n_words)
    out: list[str] = []
    for i, w in enumerate(words):
        r = rng.random()
        if r < 0.08:
            w = w + rng.choice(_PUNCT)
        elif r < 0.10:
            w = str(rng.randint(0, 100000))
        elif r < 0.103:
            w = rng.choice(_CJK)
        elif r < 0.104:
            w = rng.choice(_CODE)
        if i and rng.random() < 0.01:
            out.append("\n\n")
        out.append(w)
    return " ".join(out).replace(" \n\n ", "\n\n")


def _lognormal_words(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return max(1, min(cap, int(rng.lognormvariate(math.log(median), sigma))))


def generate(path: Path, size_mb: float, seed: int) -> dict[str, Any]:
    """Write a realistic chat JSONL of about ``size_mb`` MB; return its shape."""
    rng = random.Random(seed)
    shared_system = [_text(rng, _lognormal_words(rng, 60, 0.8, 600)) for _ in range(12)]
    target = int(size_mb * 1_000_000)
    written = examples = messages = 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            msgs: list[dict[str, Any]] = []
            r = rng.random()
            if r < 0.65:
                msgs.append({"role": "system", "content": rng.choice(shared_system)})
            elif r < 0.8:
                msgs.append({"role": "system", "content": _text(rng, _lognormal_words(rng, 40, 0.7, 400))})
            turns = 1 if rng.random() < 0.72 else rng.randint(2, 4)
            for t in range(turns):
                msgs.append({"role": "user", "content": _text(rng, _lognormal_words(rng, 45, 1.0, 4000))})
                reply: dict[str, Any] = {
                    "role": "assistant",
                    "content": _text(rng, _lognormal_words(rng, 110, 1.0, 8000)),
                }
                if t < turns - 1 and rng.random() < 0.3:
                    reply["weight"] = 0
                msgs.append(reply)
            line = json.dumps({"messages": msgs}, ensure_ascii=rng.random() < 0.5) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            examples += 1
            messages += len(msgs)
    return {"bytes": path.stat().st_size, "examples": examples, "messages": messages}


# --- the tools under test -----------------------------------------------------------------------

# What a user writes after reading OpenAI's cookbook ("Data preparation and analysis for chat model
# fine-tuning"), with the offline tokenizer anytune also uses. Honest and reasonable: no quadratic
# mistakes, streaming line by line, only the token lengths kept in a list.
USER_SCRIPT = r"""
import json, math, sys
import bpe_openai

enc = bpe_openai.get_encoding("o200k_base")
ROLES = {"system", "user", "assistant", "tool", "developer"}
path = sys.argv[1]
errors = []
lengths = []
with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            ex = json.loads(line)
        except json.JSONDecodeError:
            errors.append((lineno, "bad_json"))
            continue
        messages = ex.get("messages") if isinstance(ex, dict) else None
        if not isinstance(messages, list) or not messages:
            errors.append((lineno, "missing_messages"))
            continue
        n = 3
        has_assistant = False
        for m in messages:
            role = m.get("role")
            if role not in ROLES:
                errors.append((lineno, "unknown_role"))
            content = m.get("content")
            if not isinstance(content, str) or not content:
                errors.append((lineno, "bad_content"))
            has_assistant = has_assistant or role == "assistant"
            n += 3
            for key, value in m.items():
                if isinstance(value, str):
                    n += len(enc.encode(value))
                if key == "name":
                    n += 1
        if not has_assistant:
            errors.append((lineno, "no_assistant_message"))
        lengths.append(n)
lengths.sort()
pct = lambda q: lengths[max(0, math.ceil(q / 100 * len(lengths)) - 1)]
print(json.dumps({"examples": len(lengths), "errors": len(errors), "total": sum(lengths),
                  "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": lengths[-1]}))
"""

MODEL = "gpt-4o-mini-2024-07-18"

# The library function, as `FineTuneJob.create` calls it.
ANYTUNE_LIB = r"""
import json, sys
from anytune._data.validate import DatasetRules, validate_file
report = validate_file(sys.argv[1], DatasetRules(provider="openai", model=MODEL))
print(json.dumps(report.model_dump(mode="json")))
""".replace("MODEL", repr(MODEL))

# The real command line, `anytune data validate --json ...`, run in-process so the footer can read
# the peak memory after it exits (it exits 3 when the file has errors).
ANYTUNE_CLI = r"""
import json, runpy, sys
sys.argv = ["anytune", "data", "validate", "--json", "--provider", "openai", "--model", MODEL, sys.argv[1]]
try:
    runpy.run_module("anytune", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    if exc.code not in (None, 0, 3):
        raise
""".replace("MODEL", repr(MODEL))

# Appended to every tool: its own and its children's peak RSS, read just before exit.
PEAK_FOOTER = r"""
import resource as _r
def _hwm():
    for _l in open("/proc/self/status"):
        if _l.startswith("VmHWM:"):
            return int(_l.split()[1]) / 1024
print("PEAK " + json.dumps({"self_mib": _hwm(),
      "children_mib": _r.getrusage(_r.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _tree_pss_kib(root: int) -> int:
    """Total PSS of ``root`` and its descendants (Linux)."""
    pids = [root]
    total = 0
    seen: set[int] = set()
    while pids:
        pid = pids.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return total


def _normalize(obj: dict[str, Any]) -> dict[str, Any]:
    """The user script's summary as is; an anytune report reduced to the same keys."""
    tokens = obj.get("tokens")
    if not isinstance(tokens, dict):
        return obj
    return {
        "examples": obj["examples"],
        "errors": obj["errors"],
        "total": tokens["total"],
        "p50": tokens["p50"],
        "p90": tokens["p90"],
        "p99": tokens["p99"],
        "max": tokens["max"],
        "workers": obj.get("workers", 1),
    }


def run_tool(name: str, argv: list[str], data: Path) -> dict[str, Any]:
    """Run one tool in a fresh subprocess; time it and sample its process tree's memory."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    start = time.perf_counter()
    proc = subprocess.Popen([*argv, str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak_pss = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_pss
        while not stop.is_set():
            peak_pss = max(peak_pss, _tree_pss_kib(proc.pid))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{err[-4000:]}")
    peak: dict[str, float] = {}
    body: list[str] = []
    for line in out.splitlines():
        if line.startswith("PEAK "):
            peak = json.loads(line[5:])
        else:
            body.append(line)
    result = _normalize(json.loads("\n".join(body)))
    size = data.stat().st_size
    return {
        "tool": name,
        "mb": round(size / 1e6, 1),
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / 1e6 / seconds, 2),
        "examples_per_s": round(result.get("examples", 0) / seconds, 1),
        "peak_rss_mib": round(peak.get("self_mib", 0.0), 1),
        "peak_worker_rss_mib": round(peak.get("children_mib", 0.0), 1),
        "peak_tree_pss_mib": round(peak_pss / 1024, 1),
        "result": result,
    }


def write_pathological(where: Path, line_mb: float, blank_lines: int) -> tuple[Path, Path]:
    """One chat example on a single line of ``line_mb`` MB, and a file of ``blank_lines`` blank lines."""
    one, blank = where / "one_line.jsonl", where / "blank_lines.jsonl"
    piece = b"lorem ipsum dolor sit amet " * 40_000
    with one.open("wb") as f:
        f.write(b'{"messages": [{"role": "user", "content": "')
        for _ in range(max(1, int(line_mb * 1e6) // len(piece))):
            f.write(piece)
        f.write(b'"}, {"role": "assistant", "content": "ok"}]}\n')
    with blank.open("wb") as f:
        for _ in range(blank_lines // 1_000_000):
            f.write(b"\n" * 1_000_000)
        f.write(b"\n" * (blank_lines % 1_000_000))
    return one, blank


def pathological(line_mb: float, blank_lines: int) -> int:
    """Time and peak memory on a huge single line and on a file of blank lines, in one process and
    with worker processes (``ANYTUNE_DATA_WORKERS``); the files are deleted afterwards."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="anytune-bench-") as tmp:
        files = write_pathological(Path(tmp), line_mb, blank_lines)
        lib = [sys.executable, "-c", ANYTUNE_LIB + PEAK_FOOTER]
        saved = os.environ.get("ANYTUNE_DATA_WORKERS")
        try:
            for data in files:
                for workers in ("1", str(MAX_BENCH_WORKERS)):
                    os.environ["ANYTUNE_DATA_WORKERS"] = workers
                    row = run_tool(data.stem, lib, data)
                    row["workers"] = row["result"].get("workers", workers)
                    rows.append(row)
        finally:
            if saved is None:
                os.environ.pop("ANYTUNE_DATA_WORKERS", None)
            else:
                os.environ["ANYTUNE_DATA_WORKERS"] = saved
    print(f"\n{'file':<12} {'MB':>6} {'workers':>7} {'s':>7} {'RSS MiB':>8} {'worker':>7} {'tree PSS':>9}")
    for r in rows:
        print(
            f"{r['tool']:<12} {r['mb']:>6} {r['workers']:>7} {r['seconds']:>7} {r['peak_rss_mib']:>8} "
            f"{r['peak_worker_rss_mib']:>7} {r['peak_tree_pss_mib']:>9}"
        )
    keys = ("mb", "workers", "seconds", "peak_rss_mib", "peak_worker_rss_mib", "peak_tree_pss_mib")
    print(
        json.dumps(
            {"bench": "validate-pathological", "runs": [{"file": r["tool"], **{k: r[k] for k in keys}} for r in rows]}
        )
    )
    return 0


#: Workers asked for in the parallel runs of ``--pathological`` (the scan uses at most this many).
MAX_BENCH_WORKERS = 8


def _cli_available() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "anytune", "data", "validate", "--help"], capture_output=True, text=True
    )
    return probe.returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size-mb", type=float, default=100.0, help="size of the big file (default 100)")
    ap.add_argument("--small-mb", type=float, default=25.0, help="size of the small file (default 25)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", type=Path, default=None, help="write the files here and keep them")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest is reported")
    ap.add_argument(
        "--pathological",
        action="store_true",
        help="instead: a single line of --line-mb MB and a file of --blank-lines blank lines",
    )
    ap.add_argument("--line-mb", type=float, default=200.0)
    ap.add_argument("--blank-lines", type=int, default=20_000_000)
    args = ap.parse_args(argv)
    if args.pathological:
        return pathological(args.line_mb, args.blank_lines)

    with tempfile.TemporaryDirectory(prefix="anytune-bench-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        big, small = where / "big.jsonl", where / "small.jsonl"
        t0 = time.perf_counter()
        shape = generate(big, args.size_mb, args.seed)
        generate(small, args.small_mb, args.seed + 1)
        print(
            f"generated {shape['bytes'] / 1e6:.1f} MB, {shape['examples']} examples, "
            f"{shape['messages']} messages in {time.perf_counter() - t0:.1f} s; "
            f"{os.cpu_count()} CPUs",
            file=sys.stderr,
        )

        py = sys.executable
        script = [py, "-c", USER_SCRIPT + PEAK_FOOTER]
        lib = [py, "-c", ANYTUNE_LIB + PEAK_FOOTER]
        # `anytune data validate` itself when the CLI is installed, else the library function.
        tool = [py, "-c", ANYTUNE_CLI + PEAK_FOOTER] if _cli_available() else lib
        name = "anytune-cli" if tool is not lib else "anytune-lib"

        def best(label: str, cmd: list[str], data: Path) -> dict[str, Any]:
            runs = [run_tool(label, cmd, data) for _ in range(max(1, args.repeat))]
            return min(runs, key=lambda r: r["seconds"])

        rows = [best("script", script, big), best(name, tool, big), best(name, tool, small)]
        if tool is not lib:
            rows.append(best("anytune-lib", lib, big))

    s, a, a_small = rows[0], rows[1], rows[2]
    same = all(s["result"].get(k) == a["result"].get(k) for k in ("examples", "total", "p50", "p90", "p99"))
    print(f"\n{'tool':<12} {'MB':>6} {'s':>7} {'MB/s':>7} {'ex/s':>9} {'RSS MiB':>8} {'worker':>7} {'tree PSS':>9}")
    for r in rows:
        print(
            f"{r['tool']:<12} {r['mb']:>6} {r['seconds']:>7} {r['mb_per_s']:>7} {r['examples_per_s']:>9} "
            f"{r['peak_rss_mib']:>8} {r['peak_worker_rss_mib']:>7} {r['peak_tree_pss_mib']:>9}"
        )
    ratio = round(a["mb_per_s"] / s["mb_per_s"], 2)
    print(f"\nthroughput anytune/script: {ratio}x; token counts identical: {same}")
    summary = {
        "bench": "validate",
        "cpus": os.cpu_count(),
        "file_mb": a["mb"],
        "examples": a["result"].get("examples"),
        "tokens": a["result"].get("total"),
        "tool": a["tool"],
        "counts_match": same,
        "script": {k: s[k] for k in ("seconds", "mb_per_s", "examples_per_s", "peak_rss_mib", "peak_tree_pss_mib")},
        "anytune": {
            k: a[k]
            for k in (
                "seconds",
                "mb_per_s",
                "examples_per_s",
                "peak_rss_mib",
                "peak_worker_rss_mib",
                "peak_tree_pss_mib",
            )
        },
        "anytune_small": {
            k: a_small[k]
            for k in ("mb", "seconds", "mb_per_s", "peak_rss_mib", "peak_worker_rss_mib", "peak_tree_pss_mib")
        },
        "throughput_ratio": ratio,
    }
    if len(rows) > 3:
        summary["anytune_lib"] = {
            k: rows[3][k] for k in ("seconds", "mb_per_s", "peak_rss_mib", "peak_worker_rss_mib", "peak_tree_pss_mib")
        }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
