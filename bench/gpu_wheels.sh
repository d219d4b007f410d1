#!/usr/bin/env bash
# Download the wheels bench/gpu.sh installs on a GPU machine that reaches no package index: run this
# HERE (where pip reaches the index), then carry the folder to the device call:
#
#   bash bench/gpu_wheels.sh                 # -> bench/.wheels (ignored by git; never commit wheels)
#   run(command="bash bench/gpu.sh", carry=["bench/.wheels"], timeout_s=600)
#
# What: bench/requirements-wheels.txt, pinned, without dependencies (that list is the closure of what
# the lent H200 image lacks), for CPython 3.12 on manylinux x86_64 (that image's python3). bitsandbytes
# is cut down to its CUDA 12.8+/13.x and CPU libraries (its ROCm, XPU and older CUDA builds are 29 MB
# the machine never loads); its RECORD is rewritten to match. The total must stay under
# BENCH_WHEELS_MAX_MIB (default 60): the device call carries at most 64 MiB, working tree included.
#
# Settings (environment): BENCH_WHEELS (folder, default bench/.wheels), BENCH_WHEELS_PYTHON (target
# Python version, default 3.12), BENCH_WHEELS_MAX_MIB, BENCH_BNB_KEEP (regular expression over the
# bitsandbytes library names to keep, default 'cuda12[89]|cuda13|cpu'), PYTHON (the pip to use).
set -euo pipefail

cd "$(dirname "$0")/.."
dest=${BENCH_WHEELS:-bench/.wheels}
target=${BENCH_WHEELS_PYTHON:-3.12}
max_mib=${BENCH_WHEELS_MAX_MIB:-60}
keep=${BENCH_BNB_KEEP:-'cuda12[89]|cuda13|cpu'}
py=${PYTHON:-$(command -v python3 || command -v python)}
abi="cp${target/./}"

mkdir -p "$dest"
rm -f "$dest"/*.whl "$dest"/*.whl.tmp
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
done
grep -v -E '^[[:space:]]*(#|$)' bench/requirements-wheels.txt >"$dest/.requirements"
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$target" --implementation cp --abi "$abi" --abi abi3 --abi none \
    "${platforms[@]}" --platform any -d "$dest" -r "$dest/.requirements"
rm -f "$dest/.requirements"

# bitsandbytes: drop the native libraries the machine will not load, and their RECORD lines.
"$py" - "$dest" "$keep" <<'EOF'
import re, sys, zipfile
from pathlib import Path

dest, keep = Path(sys.argv[1]), re.compile(sys.argv[2])
for wheel in dest.glob("bitsandbytes-*.whl"):
    def wanted(name: str) -> bool:
        lib = re.fullmatch(r"bitsandbytes/libbitsandbytes_(\w+)\.(so|dll|dylib)", name)
        return lib is None or keep.search(lib.group(1)) is not None

    tmp = wheel.with_suffix(".whl.tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        kept = {i.filename for i in src.infolist() if wanted(i.filename)}
        for info in src.infolist():
            if info.filename not in kept:
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(l for l in lines if l.split(",", 1)[0] in kept or l.strip() == "").encode()
            out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    libs = sorted(n.split("libbitsandbytes_")[1] for n in kept if "libbitsandbytes_" in n)
    if not any(l.startswith("cuda") for l in libs):
        sys.exit(f"BENCH_BNB_KEEP={keep.pattern!r} keeps no CUDA library of {wheel.name}")
    tmp.replace(wheel)
    print(f"{wheel.name}: kept {', '.join(libs)}")
EOF

total=0
for w in "$dest"/*.whl; do
    size=$(stat -c %s "$w")
    total=$((total + size))
    awk -v s="$size" -v n="${w##*/}" 'BEGIN { printf "%8.1f MiB  %s\n", s / 1048576, n }'
done
awk -v s="$total" -v d="$dest" -v m="$max_mib" 'BEGIN { printf "%8.1f MiB  total in %s (limit %s MiB)\n", s / 1048576, d, m }'
if [ "$total" -gt $((max_mib * 1048576)) ]; then
    echo "gpu_wheels.sh: $dest is over $max_mib MiB: the device call could not carry it" >&2
    exit 1
fi
