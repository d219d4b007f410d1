"""bench/validate_bench.py states its data truthfully and compares like with like.

The timings themselves are the benchmark's business (it runs every tool on the same file, checks
their token counts agree and prints the JSON line); these tests hold the parts a reader trusts
without re-running it: the file's stated shape, which runs a ratio pairs, the worker counts of the
scaling table, and the offline tokenizer file handed to tiktoken.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import load_script

BENCH = Path(__file__).parents[1] / "bench" / "validate_bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(BENCH, "validate_bench")


def _system_prompts(path: Path) -> tuple[int, list[str]]:
    """(examples, the system prompt of each example that has one), read back from the file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    prompts = []
    for line in lines:
        messages = json.loads(line)["messages"]
        prompts += [m["content"] for m in messages if m["role"] == "system"]
    return len(lines), prompts


@pytest.mark.parametrize("unique", [False, True])
def test_generated_file_states_its_size_and_repeated_system_prompts(
    bench: ModuleType, tmp_path: Path, unique: bool
) -> None:
    path = tmp_path / "data.jsonl"
    shape = bench.generate(path, 0.3, seed=3, unique_system=unique)
    examples, prompts = _system_prompts(path)
    repeated = sum(1 for p in prompts if prompts.count(p) > 1)

    assert shape["bytes"] == path.stat().st_size >= 300_000
    assert shape["lines"] == shape["examples"] == examples
    assert shape["with_system_share"] == round(len(prompts) / examples, 4)
    assert shape["repeated_system_share"] == round(repeated / examples, 4)
    if unique:  # nothing for the count cache to reuse
        assert shape["repeated_system_share"] == shape["repeated_system_char_share"] == 0
    else:  # most examples share one of a few prompts, as in real datasets
        assert shape["repeated_system_share"] > 0.5
        assert 0 < shape["repeated_system_char_share"] < 1


def _row(tool: str, workers: int, mb_per_s: float) -> dict[str, Any]:
    return {"tool": tool, "workers": workers, "seconds": round(100 / mb_per_s, 3), "mb_per_s": mb_per_s}


def test_ratios_pair_runs_with_as_many_workers(bench: ModuleType) -> None:
    peers = [
        _row("cookbook", 1, 4.0),
        _row("bpe-count", 1, 9.0),
        _row("pool:1", 1, 8.5),
        _row("pool:2", 2, 17.0),
        _row("threads:2", 2, 12.0),
        _row("pool:4", 4, 30.0),
    ]

    one = bench.compare(_row("anytune-cli", 1, 10.0), peers, 1)
    assert (one["peer"], one["ratio"]) == ("bpe-count", 1.11)  # not the naive cookbook, not the pool of 4

    two = bench.compare(_row("anytune-cli", 2, 16.0), peers, 2)
    assert (two["peer"], two["ratio"]) == ("pool:2", 0.94)

    # anytune offered 4 workers but using fewer is still held to the 4-worker peer.
    four = bench.compare(_row("anytune-cli", 2, 16.0), peers, 4)
    assert (four["peer"], four["ratio"]) == ("pool:4", 0.53)


@pytest.mark.parametrize(
    ("cpus", "default", "expected"),
    [(1, 1, [1]), (2, 2, [1, 2]), (6, 6, [1, 2, 4, 6]), (16, 8, [1, 2, 4, 8, 16])],
)
def test_scaling_table_runs_one_worker_up_to_every_cpu(
    bench: ModuleType, cpus: int, default: int, expected: list[int]
) -> None:
    assert bench.worker_counts(cpus, default) == expected


def test_tiktoken_finds_the_bundled_encoding_offline(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = pytest.importorskip("tiktoken.load")
    cache = bench.seed_tiktoken_cache(tmp_path)
    assert cache is not None
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    # tiktoken's own lookup, with its own hash check: a miss would go to the network (and fail here).
    data = load.read_file_cached(bench.TIKTOKEN_O200K_URL, bench.TIKTOKEN_O200K_SHA256)
    assert data.startswith(b"IQ== 0\n")  # rank 0: the byte "!"


def test_all_workers_is_also_held_to_the_best_peer_the_machine_allows(bench: ModuleType) -> None:
    peers = [_row("bpe-count", 1, 9.0), _row("pool:8", 8, 60.0), _row("pool:16", 16, 90.0)]
    default = _row("anytune-cli", 8, 70.0)
    ratios = bench.all_worker_ratios(default, peers, 16)
    assert (ratios["same_workers"]["peer"], ratios["same_workers"]["ratio"]) == ("pool:8", 1.17)
    # A pool sized to all 16 CPUs beats anytune's 8 default workers: the headline says so too.
    assert (ratios["any_workers"]["peer"], ratios["any_workers"]["ratio"]) == ("pool:16", 0.78)
    assert ratios["any_workers"]["workers"] == 16
    # On a machine with fewer CPUs than anytune's workers, both are the same comparison.
    small = bench.all_worker_ratios(default, peers[:2], 4)
    assert small["any_workers"] == small["same_workers"]


def test_scaling_rows_say_when_anytune_ran_fewer_workers_than_offered(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    def row(k: int, ran: int, seconds: float) -> dict[str, Any]:
        return {
            "workers": k,
            "anytune": {"workers": ran, "seconds": seconds},
            "pool": {"workers": k, "seconds": seconds * 1.1},
            "threads": None,
        }

    table = [row(1, 1, 10.0), row(2, 2, 5.5), row(4, 3, 4.0)]
    speedups = bench._speedups(table)
    assert [s["anytune_ran_fewer"] for s in speedups] == [False, False, True]
    assert speedups[2]["anytune_workers"] == 3
    ratios = [{"ratio": 1.0, "peer": "pool:1"}] * 3
    bench._print_scaling(speedups, ratios)
    lines = capsys.readouterr().out.splitlines()
    row_lines = [line for line in lines if line.strip() and line.split()[0] in {"1", "2", "4"}]
    assert [line.endswith("*3") for line in row_lines] == [False, False, True]
    assert any(line.startswith("*N: anytune ran N workers") for line in lines)


# --- --sources: the same examples as JSONL, CSV and Parquet ---------------------------------------


def _read_sources(paths: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """The (prompt, completion) pairs of each file, read back as a user's tools would."""
    import csv

    import pyarrow.parquet as pq

    pairs: dict[str, list[tuple[str, str]]] = {}
    with open(paths["jsonl"], encoding="utf-8") as f:
        chats = [json.loads(line)["messages"] for line in f]
    assert all([m["role"] for m in msgs] == ["user", "assistant"] for msgs in chats)
    pairs["jsonl"] = [(msgs[0]["content"], msgs[1]["content"]) for msgs in chats]
    with open(paths["csv"], encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["question", "answer"]
        pairs["csv"] = [(q, a) for q, a in reader]
    table = pq.read_table(paths["parquet"])
    assert table.column_names == ["question", "answer"]
    pairs["parquet"] = list(zip(table.column("question").to_pylist(), table.column("answer").to_pylist(), strict=True))
    return pairs


def test_sources_hold_the_same_examples_in_every_file(bench: ModuleType, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    files = bench.write_sources(tmp_path, 60, 7, seed=3, row_group=25)

    large, small = _read_sources(files["large"]["files"]), _read_sources(files["small"]["files"])
    assert len(large["jsonl"]) == files["large"]["rows"] == 60
    assert large["jsonl"] == large["csv"] == large["parquet"]
    assert small["jsonl"] == small["csv"] == small["parquet"] == large["jsonl"][:7]  # the first rows
    # The pairs are the generator's: text with newlines, commas and quotes survives the CSV.
    assert any("\n" in p or "," in p for pair in large["csv"] for p in pair)
    assert pq.ParquetFile(files["large"]["files"]["parquet"]).metadata.num_row_groups == 3  # 25 + 25 + 10
    for size in ("large", "small"):
        assert files[size]["bytes"] == {k: Path(p).stat().st_size for k, p in files[size]["files"].items()}
    # Each pair is the first user turn of one of generate()'s chats and the reply to it.
    chat = next(bench._chats(bench.random.Random(3)))
    user = next(i for i, m in enumerate(chat) if m["role"] == "user")
    assert large["jsonl"][0] == (chat[user]["content"], chat[user + 1]["content"])


def _source_run(mb: float, seconds: float, examples: int, rss: float, pss: float) -> dict[str, Any]:
    return {
        "mb": mb,
        "workers": 2,
        "seconds": seconds,
        "mb_per_s": round(mb / seconds, 2),
        "examples_per_s": round(examples / seconds, 1),
        "peak_rss_mib": rss,
        "peak_worker_rss_mib": rss / 2,
        "peak_tree_pss_mib": pss,
        "result": {"examples": examples, "total": 1000, "p50": 5, "p90": 9, "p99": 10, "max": 12},
    }


def test_source_ratios_and_memory_growth(bench: ModuleType) -> None:
    large = {
        "jsonl": _source_run(160.0, 8.0, 100_000, 200.0, 300.0),  # 20 MB/s, 12,500 ex/s
        "csv": _source_run(150.0, 10.0, 100_000, 220.0, 330.0),  # 15 MB/s, 10,000 ex/s
        "parquet": _source_run(80.0, 5.0, 100_000, 400.0, 600.0),  # 16 MB/s, 20,000 ex/s
    }
    small = {
        "jsonl": _source_run(16.0, 1.0, 10_000, 200.0, 300.0),
        "csv": _source_run(15.0, 1.2, 10_000, 200.0, 300.0),
        "parquet": _source_run(8.0, 0.6, 10_000, 200.0, 300.0),
    }
    ratios = bench.source_ratios(large, {k: int(r["mb"] * 1e6) for k, r in large.items()})
    assert ratios == {
        "csv": {"examples_per_s": 0.8, "mb_per_s": 0.75},
        "parquet": {"examples_per_s": 1.6, "mb_per_s": 0.8},
    }
    growth = bench.memory_growth(large, small)
    assert growth["jsonl"] == {"rss": 1.0, "tree_pss": 1.0, "workers": [2, 2]}
    assert growth["csv"] == {"rss": 1.1, "tree_pss": 1.1, "workers": [2, 2]}
    assert growth["parquet"] == {"rss": 2.0, "tree_pss": 2.0, "workers": [2, 2]}

    files = {
        size: {"rows": rows, "bytes": {k: int(r["mb"] * 1e6) for k, r in runs.items()}, "files": {}}
        for size, rows, runs in (("large", 100_000, large), ("small", 10_000, small))
    }
    summary = bench.sources_summary(files, large, small, "anytune-cli", 10_000)
    assert summary["ratio_to_jsonl"] == ratios and summary["memory_growth"] == growth
    assert summary["per_mb_goal_met"] is False  # neither source reaches the JSONL path per MB
    assert summary["per_example_goal_met"] is False  # the CSV is slower per example too
    assert summary["counts_match"] is True
    assert summary["bytes_per_example"] == {"jsonl": 1600.0, "csv": 1500.0, "parquet": 800.0}
    assert set(summary) >= {
        "tool",
        "form",
        "options",
        "rows",
        "bytes",
        "large",
        "small",
        "ratio_to_jsonl",
        "memory_growth",
        "counts_match",
        "tokens",
    }
    assert summary["options"]["csv"] == ["--columns", "prompt=question,completion=answer"]
    assert set(summary["large"]["csv"]) == set(bench._SOURCE_RUN_KEYS)  # the runs' result is left out
    json.dumps(summary)  # the JSON line's object


def test_sources_summary_prints_each_verdict(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    fast = _source_run(160.0, 8.0, 100_000, 200.0, 300.0)
    large = {"jsonl": fast, "csv": _source_run(170.0, 8.0, 100_000, 200.0, 300.0), "parquet": fast}
    small = {k: _source_run(16.0, 1.0, 10_000, 200.0, 300.0) for k in large}
    files = {
        "large": {"rows": 100_000, "bytes": {**dict.fromkeys(large, 160_000_000), "csv": 170_000_000}, "files": {}},
        "small": {"rows": 10_000, "bytes": dict.fromkeys(large, 16_000_000), "files": {}},
    }
    summary = bench.sources_summary(files, large, small, "anytune-cli", 10_000)
    assert summary["per_mb_goal_met"] is True
    bench._print_sources(summary)
    out = capsys.readouterr().out
    assert "csv / jsonl: 1.06x per MB of its own file, 1.0x per example; goal (>= 1.0 per MB) met" in out
    assert "parquet / jsonl: 1.0x per MB" in out
    assert "csv: peak memory 100,000 rows / 10,000 rows: RSS 1.0x" in out
