"""How long `import anytune` takes, next to the floor it stands on.

Each figure is the best of N fresh interpreters (``python -c 'import X'``), minus the interpreter's
own start-up measured the same way. The peer is pydantic alone: anytune's public types are pydantic
models, so its import can never cost less than pydantic's.

    python bench/import_bench.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CASES = {
    "python": "pass",
    "pydantic": "import pydantic; from pydantic import BaseModel, Field",
    "anytune": "import anytune",
    "from anytune import FineTuneJob, JobSpec": "from anytune import FineTuneJob, JobSpec",
}


def best_of(code: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    raw = {name: best_of(code, args.runs) for name, code in CASES.items()}
    base = raw["python"]
    net = {name: max(0.0, value - base) for name, value in raw.items() if name != "python"}
    for name, value in net.items():
        print(f"{name:<42} {value * 1000:7.1f} ms")
    ratio = net["anytune"] / net["pydantic"] if net["pydantic"] else float("nan")
    print(f"{'anytune / pydantic':<42} {ratio:7.2f}x")
    print(
        json.dumps(
            {
                "bench": "import",
                "runs": args.runs,
                "python_startup_s": round(base, 4),
                "import_s": {k: round(v, 4) for k, v in net.items()},
                "anytune_over_pydantic": round(ratio, 2),
                "goal_s": 0.2,
                "meets_goal": net["anytune"] < 0.2,
            }
        )
    )


if __name__ == "__main__":
    main()
