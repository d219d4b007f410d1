#!/usr/bin/env bash
# Every GPU figure the README or an issue quotes, in one go: `bash bench/gpu.sh` from the repository
# root, on a machine with one CUDA GPU, the repository and Python. Prints exactly one JSON line per
# figure on stdout (bench/local_vs_trl.py's summary, or {"figure": ..., "error": ...}); with $OUT set,
# also appends them to $OUT/gpu.jsonl and copies each run's log to $OUT/gpu-logs/.
#
# Figures (bf16 unless QLoRA; --steps 20 timed after --warmup 4; batch 8, max length 512):
#   qwen0.5b-lora   Qwen2.5-0.5B shape, LoRA: anytune, trl (padded), trl_padfree, trl_packed, unsloth
#   llama8b-lora    Llama-3-8B shape, LoRA (the MFU goal): anytune, trl_padfree, trl_packed, unsloth
#   llama8b-qlora   Llama-3-8B shape, QLoRA NF4 (the 10 GiB goal): anytune, trl_padfree, unsloth
# TRL's padded layout is measured on the small model only: on the 8B shapes it is the slowest TRL
# layout and would cost a minute that the peers that matter need.
#
# Time (one H100/H200; the whole script must fit in 10 minutes): the script keeps to
# BENCH_BUDGET_S (default 540 s) from its start. Each run is a fresh process: ~10 s of imports,
# seconds to build the random model on the GPU (~20 s for the 4-bit one), a few seconds of data
# preparation, then 24 steps (~0.1-0.3 s each for 8B LoRA, ~0.6 s for QLoRA with checkpointing).
# Unsloth's first 8B run also writes the 16 GB random model to disk and reads it back (~1 min).
# Estimate: qwen0.5b ~2 min, llama8b ~2.5 min, llama8b QLoRA ~3 min, so ~7.5 min for the figures;
# installs when nothing is installed yet: ~1-2 min for the main environment if the system Python
# already has a CUDA torch (several more if torch must be downloaded), up to 4 min for Unsloth's.
# The figures share what time is left in proportion to their estimates (150/180/180 s); a figure
# whose time runs out keeps the runs that finished and names the rest in "not_run"; one that gets
# no time at all prints an error line. A second invocation finds everything installed.
#
# Settings (environment): PYTHON (an interpreter that already has anytune[local], trl and datasets:
# no environment is created), BENCH_HOME (environments and fixtures; default ~/.cache/anytune-bench),
# BENCH_BUDGET_S, BENCH_UNSLOTH=0 (skip Unsloth), BENCH_FLASH_ATTN=1 (also try to install flash-attn:
# it usually compiles for longer than the budget; transformers uses the kernels hub's flash-attention
# builds instead when `kernels` is installed and the Hub is reachable, else flex_attention).
set -euo pipefail

cd "$(dirname "$0")/.."
start=$SECONDS
budget=${BENCH_BUDGET_S:-540}
home=${BENCH_HOME:-$HOME/.cache/anytune-bench}
work=$home/work
mkdir -p "$work"
base=$(command -v python3 || command -v python)
notes=()

note() {
    notes+=("$1")
    echo "gpu.sh: $1" >&2
}

left() {
    echo $((budget - (SECONDS - start)))
}

# try SECONDS COMMAND...: run an install step with a time limit; a failure is noted, never fatal.
try() {
    local limit=$1
    shift
    if ! timeout "$limit" "$@" >>"$work/setup.log" 2>&1; then
        note "failed or timed out after ${limit}s: $* (see $work/setup.log)"
        return 1
    fi
}

has() {
    "$1" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$2') is None)" 2>/dev/null
}

pip_flags=(-q --disable-pip-version-check --retries 1 --timeout 15)

# -- the main environment: anytune[local], TRL, datasets, and the CUDA kernels the peers use --------
if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
else
    if [ ! -x "$home/venv/bin/python" ]; then
        # --system-site-packages: a CUDA torch the machine already has is used, not downloaded again
        try 60 "$base" -m venv --system-site-packages "$home/venv" || true
    fi
    py=$home/venv/bin/python
    [ -x "$py" ] || py=$base
    if ! has "$py" trl || ! has "$py" datasets || ! "$py" -c "import anytune.local_backend.train" 2>/dev/null; then
        try 300 "$py" -m pip install "${pip_flags[@]}" -e ".[local]" -r bench/requirements.txt || true
    fi
fi
while read -r requirement; do
    case $requirement in '' | '#'*) continue ;; esac
    module=${requirement%%[<>=!~ ;]*}
    has "$py" "${module//-/_}" || try 120 "$py" -m pip install "${pip_flags[@]}" "$requirement" || true
done <bench/requirements-gpu.txt
if [ "${BENCH_FLASH_ATTN:-0}" = 1 ] && ! has "$py" flash_attn; then
    try 240 "$py" -m pip install "${pip_flags[@]}" --no-build-isolation flash-attn || true
fi
has "$py" flash_attn || note "flash-attn not installed: peers use the kernels hub's flash attention, else flex_attention"
has "$py" liger_kernel || note "liger-kernel not installed: TRL runs without Liger kernels"

# -- Unsloth: its own environment (it pins older transformers and trl than anytune uses) ------------
upy=$py
if [ "${BENCH_UNSLOTH:-1}" = 1 ]; then
    uv=$home/unsloth-venv
    if ! has "$uv/bin/python" unsloth && [ "$(left)" -gt 420 ]; then
        [ -x "$uv/bin/python" ] || try 60 "$base" -m venv --system-site-packages "$uv" || true
        [ -x "$uv/bin/python" ] && { try 240 "$uv/bin/python" -m pip install "${pip_flags[@]}" unsloth || true; }
    fi
    if has "$uv/bin/python" unsloth; then
        upy=$uv/bin/python
    else
        note "Unsloth not installed (time left $(left)s): its runs report why they were skipped"
    fi
fi

cuda_error=""
if ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>>"$work/setup.log"; then
    cuda_error="no CUDA device visible to torch with $py"
fi

# emit FIGURE LOG RC [ERROR]: print the figure's JSON line (the bench's, with the setup notes added).
emit() {
    local line
    line=$("$base" - "$1" "$2" "$3" "${4:-}" "${notes[@]+"${notes[@]}"}" <<'EOF'
import json, sys
figure, log, rc, error, *notes = sys.argv[1:]
lines = []
try:
    with open(log, errors="replace") as f:
        lines = f.read().splitlines()
except OSError:
    pass
found = [l for l in lines if l.startswith('{"bench"')]
if found and not error:
    out = json.loads(found[-1])
else:
    tail = [l for l in lines if l.strip()][-3:]
    out = {"bench": "local_vs_trl", "figure": figure, "error": error or f"exit {rc}: " + " | ".join(tail)[-600:]}
out["setup_notes"] = notes
print(json.dumps(out))
EOF
)
    echo "$line"
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT/gpu-logs"
        echo "$line" >>"$OUT/gpu.jsonl"
    fi
}

common=(--device cuda --steps 20 --warmup 4 --batch-size 8 --max-length 512 --workdir "$work" --unsloth-python "$upy")
figures=(
    "qwen0.5b-lora|150|--model qwen0.5b --runs anytune,trl,trl_padfree,trl_packed,unsloth"
    "llama8b-lora|180|--model llama8b --runs anytune,trl_padfree,trl_packed,unsloth"
    "llama8b-qlora|180|--model llama8b --quant 4bit --runs anytune,trl_padfree,unsloth"
)
remaining_plan=0
for f in "${figures[@]}"; do
    IFS='|' read -r _ plan _ <<<"$f"
    remaining_plan=$((remaining_plan + plan))
done

for f in "${figures[@]}"; do
    IFS='|' read -r name plan extra <<<"$f"
    log=$work/$name.out
    : >"$log"
    share=$(($(left) * plan / remaining_plan))
    [ "$share" -lt "$plan" ] || share=$plan
    remaining_plan=$((remaining_plan - plan))
    if [ -n "$cuda_error" ]; then
        emit "$name" "$log" 0 "$cuda_error"
        continue
    fi
    if [ "$share" -lt 45 ]; then
        emit "$name" "$log" 0 "not run: ${share}s of the ${budget}s budget left for it"
        continue
    fi
    rc=0
    # shellcheck disable=SC2086  # $extra holds several options on purpose
    timeout $((share + 60)) "$py" bench/local_vs_trl.py "${common[@]}" $extra --label "$name" \
        --time-limit "$share" >"$log" 2>&1 || rc=$?
    emit "$name" "$log" "$rc"
    if [ -n "${OUT:-}" ]; then
        cp "$log" "$work"/*.log "$OUT/gpu-logs/" 2>/dev/null || true
    fi
done
[ -z "${OUT:-}" ] || cp "$work/setup.log" "$OUT/gpu-logs/" 2>/dev/null || true
echo "gpu.sh: done in $((SECONDS - start))s" >&2
