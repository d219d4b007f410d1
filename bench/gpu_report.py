"""bench/gpu.sh's checks and output: what the machine has, and one record per figure.

The device tool returns only the last 12,000 characters of a call's output, and one figure's full
record (five runs, each with its attention refusals, versions and kernels) runs to several thousand:
each figure's stdout line keeps what a reader compares (tokens/s, MFU, peak GPU memory, same
examples, loss, recompiles, the verdict) and gpu.jsonl keeps the bench's whole summary line.
Standard library only at import (``unmet`` also uses ``packaging``, which pip brings).

    python bench/gpu_report.py preflight [--device cuda]        # NOTE/FATAL lines; exit 0
    python bench/gpu_report.py unmet WHEELS_DIR                  # NOTE lines; exit 0
    python bench/gpu_report.py figure NAME LOG RC [--error TEXT] [--notes FILE] [--jsonl FILE]
    python bench/gpu_report.py done --elapsed S --budget S [--info K=V ...] [--notes FILE] [--jsonl FILE]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import sys
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SUMMARY_PREFIX = '{"bench": "local_vs_trl"'
# Run fields kept on the stdout line, under shorter names.
COMPACT_RUN = (
    ("tokens_per_s", "tok_s"),
    ("mfu", "mfu"),
    ("peak_gpu_mib", "gpu_mib"),
    ("examples_per_step", "ex_step"),
    ("same_examples", "same"),
    ("final_loss", "loss"),
    ("recompiles_in_window", "recompiles"),
)
COMPACT_VERDICT = (
    "best_peer",
    "speedup",
    "memory_ratio",
    "speed_goal_met",
    "memory_goal_met",
    "mfu_goal_met",
    "qlora_under_10gib",
)
# What every figure needs (a failure is fatal: no figure can be produced) and what only some runs use.
REQUIRED = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "anytune.local_backend.train")
OPTIONAL = {
    "bitsandbytes": "the QLoRA figure fails without it",
    "liger_kernel": "TRL runs without Liger kernels",
    "flash_attn": "peers use the kernels hub's flash attention where it answers, else flex_attention",
    "kernels": "no kernels-hub attention for the peers",
}


# -- what the machine has (run with the interpreter the figures use) ----------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:240]


def preflight(device: str) -> list[str]:
    """``NOTE``/``FATAL`` lines: the versions found, a module that does not import, no CUDA device."""
    lines: list[str] = []
    versions: list[str] = []
    for module in REQUIRED:
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # each import fails in its own words; all of them are reported
            lines.append(f"FATAL import {module} failed with {sys.executable}: {_first_line(exc)}")
            continue
        if "." not in module:
            versions.append(f"{module} {getattr(mod, '__version__', '?')}")
    for module, without in OPTIONAL.items():
        if importlib.util.find_spec(module) is None:
            lines.append(f"NOTE {module} not installed: {without}")
        else:
            versions.append(f"{module} {_dist_version(module)}")
    lines.insert(0, f"NOTE python {sys.version.split()[0]} at {sys.executable}; " + ", ".join(versions))
    if device == "cuda" and "torch" in sys.modules:
        torch: Any = sys.modules["torch"]
        try:
            if not torch.cuda.is_available():
                lines.append(f"FATAL torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
            else:
                lines.insert(1, f"NOTE GPU {torch.cuda.get_device_name()}, torch CUDA {torch.version.cuda}")
        except Exception as exc:  # a broken driver raises from is_available or get_device_name
            lines.append(f"FATAL torch.cuda failed: {_first_line(exc)}")
    return lines


def _dist_version(module: str) -> str:
    name = {"liger_kernel": "liger-kernel", "flash_attn": "flash-attn"}.get(module, module)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def wheel_requirements(wheel: Path) -> tuple[str, list[str]]:
    """(distribution name, its ``Requires-Dist`` lines) read from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = z.read(meta).decode("utf-8", "replace")
    name, requires = "", []
    for line in text.split("\n\n", 1)[0].splitlines():
        if line.startswith("Name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Requires-Dist:"):
            requires.append(line.split(":", 1)[1].strip())
    return name, requires


def unmet(wheels: Iterable[Path], installed: Mapping[str, str] | None = None) -> list[str]:
    """The requirements of ``wheels`` (extras left out) that the installed versions do not meet.

    Offline, pip installs the wheels with ``--no-deps``: nothing else checks that the set fits the
    machine's own packages (datasets' pyarrow floor, transformers' tokenizers range...).
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    if installed is None:
        found: dict[str, str] = {}
        for dist in importlib.metadata.distributions():  # in sys.path order: the first one found is imported
            found.setdefault(canonicalize_name(dist.metadata["Name"] or ""), dist.version)
        installed = found
    else:
        installed = {canonicalize_name(k): v for k, v in installed.items()}
    problems = []
    for wheel in sorted(wheels):
        name, requires = wheel_requirements(wheel)
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            have = installed.get(canonicalize_name(req.name))
            try:
                ok = have is not None and req.specifier.contains(Version(have), prereleases=True)
            except InvalidVersion:
                ok = False
            if not ok:
                problems.append(f"{name} needs {req.name}{req.specifier} (have {have or 'none'})")
    return problems


# -- the records ----------------------------------------------------------------------------------


def figure_record(figure: str, log_text: str, rc: int, error: str, notes: Sequence[str]) -> dict[str, Any]:
    """The bench's own summary line from its log, or an error record saying why there is none."""
    lines = log_text.splitlines()
    out: dict[str, Any] | None = None
    found = [line for line in lines if line.startswith(SUMMARY_PREFIX)]
    if found and not error:
        try:
            out = json.loads(found[-1])
        except ValueError:
            out = None
    if out is None:
        tail = [line.strip() for line in lines if line.strip()][-3:]
        why = error or ("timed out" if rc in (124, 137) else f"exit {rc}") + ": " + " | ".join(tail)[-600:]
        out = {"bench": "local_vs_trl", "figure": figure, "error": why}
    out["figure"] = figure
    out["exit_code"] = rc
    out["setup_notes"] = list(notes)
    return out


def compact(record: Mapping[str, Any]) -> dict[str, Any]:
    """A figure's stdout line: about 150 characters per run instead of a thousand."""
    out: dict[str, Any] = {"figure": record.get("figure")}
    if "error" in record:
        out["error"] = str(record["error"])[:400]
        return out
    out.update(model=record.get("model"), quant=record.get("quant"), gpu=record.get("device_name"))
    runs: dict[str, Any] = {}
    for name, run in (record.get("runs") or {}).items():
        short = {key: run[field] for field, key in COMPACT_RUN if run.get(field) is not None}
        attention = run.get("attention_kernel") or run.get("attn_implementation")
        if attention is not None:
            short["attn"] = str(attention)[:48]
        if run.get("kernels"):
            short["kernels"] = len(run["kernels"])
        runs[name] = short
    out["runs"] = runs
    out.update({k: record[k] for k in COMPACT_VERDICT if k in record})
    if record.get("not_run"):
        out["not_run"] = {k: str(v)[:120] for k, v in record["not_run"].items()}
    return out


def _notes(path: str | None) -> list[str]:
    if not path:
        return []
    try:
        return [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []


def _append(jsonl: str | None, record: Mapping[str, Any]) -> None:
    if jsonl:
        with open(jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    pre = sub.add_parser("preflight")
    pre.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    need = sub.add_parser("unmet")
    need.add_argument("wheels", type=Path)
    fig = sub.add_parser("figure")
    fig.add_argument("name")
    fig.add_argument("log")
    fig.add_argument("rc", type=int)
    fig.add_argument("--error", default="")
    done = sub.add_parser("done")
    done.add_argument("--elapsed", type=int, required=True)
    done.add_argument("--budget", type=int, required=True)
    done.add_argument("--info", action="append", default=[], help="KEY=VALUE, copied into the record")
    for p in (fig, done):
        p.add_argument("--notes", default=None, help="file of setup notes, one a line")
        p.add_argument("--jsonl", default=None, help="append the full record here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.what == "preflight":
        print("\n".join(preflight(args.device)), flush=True)
    elif args.what == "unmet":
        try:
            problems = unmet(args.wheels.glob("*.whl"))
        except ImportError as exc:  # no packaging: say so rather than fail the run
            problems = [f"cannot check the wheels' requirements: {_first_line(exc)}"]
        for problem in problems:
            print(f"NOTE unmet: {problem}")
    elif args.what == "figure":
        try:
            text = Path(args.log).read_text(errors="replace")
        except OSError:
            text = ""
        record = figure_record(args.name, text, args.rc, args.error, _notes(args.notes))
        _append(args.jsonl, record)
        print(json.dumps(compact(record), separators=(",", ":")), flush=True)
    else:
        info = dict(item.split("=", 1) for item in args.info if "=" in item)
        record = {"bench": "gpu.sh", "elapsed_s": args.elapsed, "budget_s": args.budget, **info}
        record["notes"] = _notes(args.notes)
        _append(args.jsonl, record)
        print(json.dumps(record, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
