#!/usr/bin/env bash
# Every GPU figure the README or an issue quotes, in one go: `bash bench/gpu.sh` from the repository
# root, on a machine with one CUDA GPU, the repository and Python.
#
# On the lent H200 (no network; the tool carries the working tree and up to 8 ignored paths, 64 MiB in
# all, and returns what is written under $OUT and the last 12,000 characters of output):
#   here, once:   bash bench/gpu_wheels.sh          # the wheels the machine lacks -> bench/.wheels (~34 MiB)
#   device call:  run(command="bash bench/gpu.sh", carry=["bench/.wheels"], timeout_s=600)
#
# Output. stdout: one compact JSON line per figure (bench/gpu_report.py: tokens/s, MFU, peak GPU memory,
# same examples, loss, recompiles per run; the verdict; why a run did not run), or {"figure", "error"};
# then one {"bench": "gpu.sh", ...} line with the elapsed time and the setup notes. stderr: the setup
# notes as they happen. With $OUT set: $OUT/gpu.jsonl (each figure's full summary line from
# bench/local_vs_trl.py, with the setup notes, then the gpu.sh line) and $OUT/gpu-logs.tar.gz (every
# run's log and the install log), both rewritten after each figure, so a call stopped at its limit still
# returns the figures done so far.
#
# Figures (bf16 unless QLoRA; --steps 20 timed after --warmup 4, which is also when Liger's Triton
# kernels and flex_attention compile; batch 8, max length 512):
#   qwen0.5b-lora   Qwen2.5-0.5B shape, LoRA: anytune, trl (padded), trl_padfree, trl_packed, unsloth
#   llama8b-lora    Llama-3-8B shape, LoRA (the MFU goal): anytune, trl_padfree, trl_packed, unsloth
#   llama8b-qlora   Llama-3-8B shape, QLoRA NF4 (the 10 GiB goal): anytune, trl_padfree, unsloth
# TRL's padded layout is measured on the small model only: on the 8B shapes it is the slowest TRL
# layout and would cost a minute that the peers that matter need.
#
# Environment. Unless PYTHON names an interpreter that has everything (nothing is then installed),
# the figures run in BENCH_HOME/venv, a venv over python3's own packages: a .pth file adds every site
# directory python3 sees (python3 may itself be a venv, as /opt/torch/.venv/bin/python3 is on the H200,
# whose torch a plain --system-site-packages venv would not see), and pip is python3's. Into it go the
# wheels of BENCH_WHEELS (default bench/.wheels; `pip install --no-index --no-deps`, then their
# requirements are checked against what the machine has and any unmet one is noted) and anytune itself
# (editable, --no-build-isolation --no-deps). A quick probe (one request to pip's default index,
# `pip --isolated`, so that a local index a config file names does not pass for the network; at most
# 8 s) decides whether the machine is online. Offline (or BENCH_OFFLINE=1) nothing is fetched:
# PIP_NO_INDEX, HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE and HF_DATASETS_OFFLINE are set, and Unsloth is
# skipped, its runs saying why: it has no wheelhouse (its own environment, as it pins older
# transformers and trl, needs unsloth, unsloth_zoo, trl<=1.15, datasets<5, torchao, xformers...: more
# than fits beside the main set, and nothing here can check that set without a GPU). Online, what is
# still missing is installed from the index: anytune[local] with bench/requirements.txt, each line of
# bench/requirements-gpu.txt, and Unsloth.
#
# Time (one H100/H200; the device call allows 600 s): everything keeps to BENCH_BUDGET_S (default
# 540 s) from the start; each install step has a limit and its note gives its real exit code and
# time. Offline from the wheelhouse (measured on a 2-core stand-in): ~1 s probe, ~6 s of installs,
# ~17 s import check. Each run is a fresh process: ~10 s of imports, seconds to build the random
# model on the GPU (~20 s for the 4-bit one), a few seconds of data, then 24 steps (~0.1-0.3 s each
# for 8B LoRA, ~0.6 s for QLoRA with checkpointing). Unsloth's first 8B run also writes the 16 GB random model to disk and reads it
# back (~1 min). The figures share what time is left in proportion to their estimates (150/180/180 s);
# each is stopped (timeout -k 10) at its share plus 30 s and never past the budget. A figure whose time
# runs out keeps the runs that finished and names the rest in "not_run"; one that gets no time prints
# an error line. SIGTERM/SIGINT stop the figure in progress (the bench ends its worker's process group)
# and still write the records.
#
# Settings (environment): PYTHON, BENCH_HOME (environments, fixtures, logs; default
# ~/.cache/anytune-bench), BENCH_WHEELS, BENCH_BUDGET_S, BENCH_OFFLINE (1: skip the probe, offline;
# 0: online), BENCH_UNSLOTH=0 (skip Unsloth), BENCH_FLASH_ATTN=1 (online: also try to build flash-attn,
# usually longer than the budget; transformers uses the kernels hub's builds when `kernels` is installed
# and the Hub answers, else flex_attention), BENCH_SMOKE=1 (check this script's plumbing on a machine
# without a GPU: each figure becomes a two-step CPU run of the smoke model, anytune and trl_padfree).
set -uo pipefail # not -e: a failing step is noted and the figures still run

cd "$(dirname "$0")/.." || exit 2
start=$SECONDS
budget=${BENCH_BUDGET_S:-540}
home=${BENCH_HOME:-$HOME/.cache/anytune-bench}
work=$home/work
logs=$work/logs
wheels=${BENCH_WHEELS:-bench/.wheels}
smoke=${BENCH_SMOKE:-0}
out=${OUT:-}
base=$(command -v python3 || command -v python)
mkdir -p "$logs" || exit 2
rm -f "$logs"/*.out "$work"/*.log "$work/gpu.jsonl"
: >"$work/notes.txt"
: >"$logs/setup.log"
[ -z "$out" ] || mkdir -p "$out"
export TORCHINDUCTOR_CACHE_DIR=$work/compile-cache/inductor TRITON_CACHE_DIR=$work/compile-cache/triton
export HF_HUB_DISABLE_TELEMETRY=1

note() {
    echo "$1" >>"$work/notes.txt"
    echo "gpu.sh: $1" >&2
}

left() {
    echo $((budget - (SECONDS - start)))
}

# Run a command in the background and wait for it, so that a trapped signal is handled at once.
child=""
stopped=""
run_child() {
    "$@" &
    child=$!
    wait "$child"
    local rc=$?
    child=""
    return "$rc"
}

# step LIMIT LABEL COMMAND...: one install step, never past the budget; noted with its exit code and time.
step() {
    local limit=$1 label=$2 t0=$SECONDS rc=0
    shift 2
    [ -z "$stopped" ] || return 1
    [ "$limit" -le $(($(left) - 60)) ] || limit=$(($(left) - 60))
    if [ "$limit" -lt 5 ]; then
        note "$label: skipped, $(left)s of the ${budget}s budget left"
        return 1
    fi
    echo "== $label (limit ${limit}s): $*" >>"$logs/setup.log"
    run_child timeout -k 5 "$limit" "$@" >>"$logs/setup.log" 2>&1 </dev/null || rc=$?
    if [ "$rc" -eq 0 ]; then
        note "$label: ok in $((SECONDS - t0))s"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        note "$label: stopped at its ${limit}s limit (exit $rc after $((SECONDS - t0))s)"
    else
        note "$label: exit $rc after $((SECONDS - t0))s: $(grep -v '^\s*$' "$logs/setup.log" | tail -n 1 | cut -c1-200)"
    fi
    return "$rc"
}

# make_venv DIR: a venv without pip and without --system-site-packages, whose .pth gives it python3's
# whole view (its torch, its pip), whether python3 is a system interpreter or itself a venv.
make_venv() {
    local dir=$1 purelib
    "$base" -m venv --without-pip "$dir" || return 1
    purelib=$("$dir/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))") || return 1
    "$base" -c "
import os, sys
for p in sys.path:
    if os.path.basename(p) in ('site-packages', 'dist-packages') and os.path.isdir(p):
        print(f'import site; site.addsitedir({p!r})')" >"$purelib/_bench_base_python.pth"
}

has() {
    "$1" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$2') is None)" 2>/dev/null </dev/null
}

finish() {
    [ -z "$out" ] || cp "$work/gpu.jsonl" "$out/gpu.jsonl" 2>/dev/null
    if [ -n "$out" ]; then
        # shellcheck disable=SC2046  # the run logs' names are the bench's own: no spaces
        tar -czf "$out/gpu-logs.tar.gz.part" -C "$work" logs $(cd "$work" && ls -- *.log 2>/dev/null) &&
            mv -f "$out/gpu-logs.tar.gz.part" "$out/gpu-logs.tar.gz"
    fi
}

# read_notes FILE: its "NOTE text" lines become notes; the first "FATAL text" line also stops the figures.
fatal=""
read_notes() {
    local line
    while read -r line; do
        case $line in
        "NOTE "*) note "${line#NOTE }" ;;
        "FATAL "*)
            note "${line#FATAL }"
            fatal=${fatal:-${line#FATAL }}
            ;;
        esac
    done <"$1"
}

on_signal() {
    stopped=$1
    note "stopped by SIG$1 after $((SECONDS - start))s"
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null
        wait "$child" 2>/dev/null
    fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

# -- online? -----------------------------------------------------------------------------------------
online=0
case ${BENCH_OFFLINE:-auto} in
1) note "offline (BENCH_OFFLINE=1)" ;;
0) online=1 ;;
*)
    # --isolated: pip's default index, not a local one a config file may name (that would answer offline)
    if timeout -k 2 8 "$base" -m pip --isolated index versions pip --disable-pip-version-check --retries 0 \
        --timeout 5 >/dev/null 2>&1 </dev/null; then
        online=1
    else
        note "offline: the package index does not answer (probe in $((SECONDS - start))s); nothing is fetched"
    fi
    ;;
esac
if [ "$online" = 0 ]; then
    export PIP_NO_INDEX=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
fi
pip_net=(-q --disable-pip-version-check --retries 1 --timeout 15)
pip_local=(-q --disable-pip-version-check --no-index --no-deps --no-cache-dir)

# -- the environment ---------------------------------------------------------------------------------
if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
else
    venv=$home/venv
    if [ ! -x "$venv/bin/python" ]; then
        t0=$SECONDS
        if make_venv "$venv" >>"$logs/setup.log" 2>&1 </dev/null; then
            note "made $venv over $base's packages in $((SECONDS - t0))s"
        else
            note "could not make $venv (see logs/setup.log): the figures use $base itself"
            rm -rf "$venv"
        fi
    fi
    py=$venv/bin/python
    [ -x "$py" ] || py=$base
    shopt -s nullglob
    wheel_files=("$wheels"/*.whl)
    shopt -u nullglob
    if [ "${#wheel_files[@]}" -gt 0 ]; then
        step 150 "install ${#wheel_files[@]} wheels from $wheels" \
            "$py" -m pip install "${pip_local[@]}" --no-compile "${wheel_files[@]}"
        run_child timeout -k 5 60 "$py" bench/gpu_report.py unmet "$wheels" >"$work/unmet.txt" 2>>"$logs/setup.log" </dev/null
        read_notes "$work/unmet.txt"
    elif [ "$online" = 0 ]; then
        note "offline and no wheels in $wheels: run 'bash bench/gpu_wheels.sh' where pip reaches the index, and carry bench/.wheels"
    fi
    if ! "$py" -c "import anytune.local_backend.train" >/dev/null 2>&1 </dev/null; then
        step 120 "install anytune (editable, no build isolation)" \
            "$py" -m pip install "${pip_local[@]}" --no-build-isolation -e .
    fi
    if [ "$online" = 1 ] && { ! has "$py" trl || ! has "$py" datasets || ! has "$py" anytune; }; then
        step 300 "install anytune[local] and bench/requirements.txt" \
            "$py" -m pip install "${pip_net[@]}" -e ".[local]" -r bench/requirements.txt
    fi
fi
if [ "$online" = 1 ] && [ "$smoke" != 1 ]; then
    while read -r requirement; do
        case $requirement in '' | '#'*) continue ;; esac
        module=${requirement%%[<>=!~ ;]*}
        has "$py" "${module//-/_}" || step 120 "install $requirement" "$py" -m pip install "${pip_net[@]}" "$requirement"
    done <bench/requirements-gpu.txt
    if [ "${BENCH_FLASH_ATTN:-0}" = 1 ] && ! has "$py" flash_attn; then
        step 240 "build flash-attn" "$py" -m pip install "${pip_net[@]}" --no-build-isolation flash-attn
    fi
fi

# -- Unsloth: its own environment (it pins older transformers and trl than anytune uses) ------------
upy=$py
if [ "${BENCH_UNSLOTH:-1}" = 1 ] && [ "$smoke" != 1 ]; then
    uv=$home/unsloth-venv
    if has "$uv/bin/python" unsloth; then
        upy=$uv/bin/python
    elif [ "$online" = 0 ]; then
        note "Unsloth: not installed and offline (no wheelhouse for it): its runs are skipped"
    elif [ "$(left)" -gt 420 ]; then
        [ -x "$uv/bin/python" ] || make_venv "$uv" >>"$logs/setup.log" 2>&1 </dev/null || note "could not make $uv"
        [ -x "$uv/bin/python" ] && step 240 "install unsloth" "$uv/bin/python" -m pip install "${pip_net[@]}" unsloth
        has "$uv/bin/python" unsloth && upy=$uv/bin/python
    else
        note "Unsloth: not installed, $(left)s left: its runs are skipped"
    fi
fi

# -- what the figures will run with --------------------------------------------------------------------
device=cuda
[ "$smoke" != 1 ] || device=cpu
t0=$SECONDS
rc=0
run_child timeout -k 5 120 "$py" bench/gpu_report.py preflight --device "$device" >"$work/preflight.txt" \
    2>"$work/preflight.err" </dev/null || rc=$?
cat "$work/preflight.err" >>"$logs/setup.log"
if [ "$rc" -ne 0 ]; then # the interpreter itself is broken: its own last words say how
    why=$(grep -v '^\s*$' "$work/preflight.err" | tail -n 1 | cut -c1-300)
    echo "FATAL the import check with $py ended with exit $rc after $((SECONDS - t0))s: ${why:-no output}" >>"$work/preflight.txt"
fi
read_notes "$work/preflight.txt"
[ -n "$fatal" ] || note "import check: everything the figures need imports ($device), $((SECONDS - t0))s"

# emit FIGURE LOG RC [ERROR]: the figure's lines (full in gpu.jsonl, compact on stdout); then the files.
emit() {
    "$base" bench/gpu_report.py figure "$1" "$2" "$3" --error "${4:-}" --notes "$work/notes.txt" \
        --jsonl "$work/gpu.jsonl" </dev/null || echo "{\"figure\": \"$1\", \"error\": \"gpu_report.py failed\"}"
    finish
}

if [ "$smoke" = 1 ]; then
    common=(--device cpu --model smoke --steps 2 --warmup 1 --examples 64 --runs "anytune,trl_padfree")
    figures=("qwen0.5b-lora|150|" "llama8b-lora|180|" "llama8b-qlora|180|")
else
    common=(--device cuda --steps 20 --warmup 4 --batch-size 8 --max-length 512 --unsloth-python "$upy")
    figures=(
        "qwen0.5b-lora|150|--model qwen0.5b --runs anytune,trl,trl_padfree,trl_packed,unsloth"
        "llama8b-lora|180|--model llama8b --runs anytune,trl_padfree,trl_packed,unsloth"
        "llama8b-qlora|180|--model llama8b --quant 4bit --runs anytune,trl_padfree,unsloth"
    )
fi
remaining_plan=0
for f in "${figures[@]}"; do
    IFS='|' read -r _ plan _ <<<"$f"
    remaining_plan=$((remaining_plan + plan))
done

for f in "${figures[@]}"; do
    IFS='|' read -r name plan extra <<<"$f"
    log=$logs/$name.out
    : >"$log"
    share=$(($(left) * plan / remaining_plan))
    [ "$share" -lt "$plan" ] || share=$plan
    remaining_plan=$((remaining_plan - plan))
    if [ -n "$stopped" ]; then
        emit "$name" "$log" 0 "not run: gpu.sh was stopped by SIG$stopped"
        continue
    fi
    if [ -n "$fatal" ]; then
        emit "$name" "$log" 0 "$fatal"
        continue
    fi
    if [ "$share" -lt 45 ]; then
        emit "$name" "$log" 0 "not run: ${share}s of the ${budget}s budget left for it"
        continue
    fi
    hard=$((share + 30))
    [ "$hard" -le "$(left)" ] || hard=$(left)
    rc=0
    # shellcheck disable=SC2086  # $extra holds several options on purpose
    run_child timeout -k 10 "$hard" "$py" bench/local_vs_trl.py "${common[@]}" $extra --label "$name" \
        --time-limit "$share" --workdir "$work" >"$log" 2>&1 </dev/null || rc=$?
    emit "$name" "$log" "$rc"
done

"$base" bench/gpu_report.py "done" --elapsed $((SECONDS - start)) --budget "$budget" --info "python=$py" \
    --info "online=$online" --info "wheels=$wheels" --notes "$work/notes.txt" --jsonl "$work/gpu.jsonl" </dev/null
finish
echo "gpu.sh: done in $((SECONDS - start))s" >&2
[ -z "$stopped" ] || exit 143
