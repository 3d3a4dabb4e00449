#!/usr/bin/env bash
# Coverage-guided fuzzing of smpfs's parsers with libFuzzer, on stable Rust.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 seconds, every target)
#
# Builds the targets with LLVM's SanitizerCoverage passes (stable `-C passes` /
# `-C llvm-args` flags; no nightly, no cargo-fuzz needed), seeds each corpus from
# fuzz/seeds/, the format test vectors and pydicom's test files, then runs one target at a
# time under `nice -n 19` and prints executions, coverage and crashes per target.
# Corpora grow in fuzz/corpus/ across runs; crashes land in fuzz/artifacts/TARGET/.
# Environment: FUZZ_JOBS (cargo build jobs, default 1), FUZZ_BUILD=0 (reuse the last build),
# FUZZ_ARGS (extra libFuzzer flags,
# e.g. "-fork=1 -ignore_crashes=1" to keep going past a known crash and collect them all).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
seconds=${1:-60}
shift || true
all=(header object audit_line audit_log keys options dicom_deid dicom_volume manifest siv_open)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

triple=$(rustc -vV | sed -n 's/^host: //p')
# Coverage instrumentation as cargo-fuzz sets it, minus the sanitizer (which needs
# nightly). Passing --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
command -v c++ >/dev/null || { echo "run.sh: needs a C++ compiler for libFuzzer (apt-get install g++)" >&2; exit 1; }
if [ "${FUZZ_BUILD:-1}" != 0 ]; then
    echo "== building fuzz targets (release, instrumented, $triple)"
    nice -n 19 cargo build --release --target "$triple" -j "${FUZZ_JOBS:-1}" --bins
fi
bin="$here/target/$triple/release"

# Seeds: committed ones, the test vectors, generated ones, and pydicom's DICOM files (its
# test data has no clear license, so it is copied at run time, never committed).
mkdir -p corpus artifacts
"$bin/make-seeds" "$here/target/seeds" >/dev/null
for t in "${all[@]}"; do
    mkdir -p "corpus/$t"
    for dir in "seeds/$t" "target/seeds/$t"; do
        [ -d "$dir" ] && cp -n "$dir"/* "corpus/$t/" 2>/dev/null || true
    done
done
cp -n ../tests/vectors/*.smpfs corpus/header/ 2>/dev/null || true
cp -n ../tests/vectors/manifest-*.bin corpus/manifest/ 2>/dev/null || true
python=python3
if ! "$python" -c 'import pydicom' 2>/dev/null; then
    python="$here/target/venv/bin/python"
    if ! "$python" -c 'import pydicom' 2>/dev/null; then
        python3 -m venv "$here/target/venv" && "$here/target/venv/bin/pip" -q install pydicom \
            || python=""
    fi
fi
if [ -n "$python" ]; then
    data=$("$python" -c 'import pydicom, os; print(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"))')
    for f in "$data"/*.dcm; do
        [ "$(stat -c %s "$f")" -le 65536 ] || continue
        name=pydicom-$(basename "$f" .dcm)
        [ -e "corpus/dicom_deid/$name" ] || { printf '\0' | cat - "$f" > "corpus/dicom_deid/$name"; }
        cp -n "$f" "corpus/dicom_volume/$name"
    done
    # Two real series, slices joined as the volume target splits them.
    for series in 98892001/CT5N 77654033/CT2; do
        dir="$data/dicomdirtests/$series"
        [ -d "$dir" ] || continue
        out="corpus/dicom_volume/pydicom-series-${series//\//-}"
        [ -e "$out" ] || python3 - "$dir" "$out" <<'EOF'
import os, sys
files = sorted(os.listdir(sys.argv[1]))[:4]
parts = [open(os.path.join(sys.argv[1], f), "rb").read() for f in files]
open(sys.argv[2], "wb").write(b"\n--SLICE--\n".join(parts))
EOF
    done
else
    echo "run.sh: pydicom unavailable; DICOM targets start from the synthetic seeds only" >&2
fi

summary=()
for t in "${targets[@]}"; do
    [ -x "$bin/$t" ] || { echo "run.sh: no target $t (have: ${all[*]})" >&2; exit 2; }
    mkdir -p "artifacts/$t"
    log="artifacts/$t/last-run.log"
    echo "== $t: ${seconds}s"
    before=$(ls "artifacts/$t" | grep -c -E '^(crash|oom|timeout|leak)-' || true)
    # One job, nice'd: the machine is shared. A slow input is reported at 10 s, not killed
    # as a crash unless it takes 60 s; RSS is capped at 2 GiB (an OOM is a finding).
    set +e
    RAYON_NUM_THREADS=1 nice -n 19 "$bin/$t" "corpus/$t" \
        -max_total_time="$seconds" -timeout=60 -report_slow_units=10 -rss_limit_mb=2048 \
        -max_len=1048576 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    after=$(ls "artifacts/$t" | grep -c -E '^(crash|oom|timeout|leak)-' || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    # Fork mode (-fork=N) prints no final stats: take its last status line.
    [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    [ -n "$rate" ] || rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    units=$(ls "corpus/$t" | wc -l)
    line=$(printf '%-13s execs %-10s (%s/s)  %-22s corpus %-5s new crashes %s  exit %s' \
        "$t" "${execs:-?}" "${rate:-?}" "${cov:-cov: ?}" "$units" "$((after - before))" "$rc")
    echo "$line"
    summary+=("$line")
    if [ "$rc" -ne 0 ]; then
        grep -m1 -E 'panicked|ERROR: libFuzzer|deadly signal' "$log" || true
        echo "   see fuzz/$log; reproduce with: fuzz/target/$triple/release/$t fuzz/artifacts/$t/<file>"
    fi
done
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
