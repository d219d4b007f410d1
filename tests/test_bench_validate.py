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
