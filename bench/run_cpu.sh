#!/usr/bin/env bash
# run_cpu.sh — CPU machine: builds lmc (Release, build-bench/), runs
# bench_cpu (correctness check, then timings against peers measured in the
# same run) and appends a section to bench/results/cpu-<date>.md: date,
# commit, CPU, the exact command, the machine load, the table, the log.
#
#   bench/run_cpu.sh [bench_cpu options...]     e.g. --only f16, --threads 2
# Environment: BUILD (default <repo>/build-bench), OUT (results file),
# QUIET_WAIT=S: first wait up to S seconds for a 5-second window in which
# other processes keep the CPUs less than 15% busy (the machine may be
# shared; the bench reports the other processes' share per model either way).
# BENCH_OPENBLAS_CORETYPE: OpenBLAS kernel for the run. By default any
# OPENBLAS_CORETYPE from the environment is dropped so that OpenBLAS picks the
# kernel for this CPU: the sgemm peer must be the best the machine can do (a
# forced Haswell kernel runs at about half speed on an AVX-512 CPU).
set -euo pipefail
if [ -n "${BENCH_OPENBLAS_CORETYPE:-}" ]; then
    export OPENBLAS_CORETYPE=$BENCH_OPENBLAS_CORETYPE
else
    unset OPENBLAS_CORETYPE
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/bench/results/cpu-$DATE.md}

# One CPU benchmark (and build-bench/ build) at a time on this machine:
# concurrent runs would be each other's noise.
exec 9>"${TMPDIR:-/tmp}/lmc-bench-cpu.lock"
if ! flock -n 9; then
    echo "run_cpu.sh: another CPU benchmark is running; waiting for it" >&2
    flock 9
fi

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLMC_WERROR=ON -DLMC_CUDA=OFF >/dev/null
make -C "$BUILD" --no-print-directory -j2 bench_cpu >/dev/null

# Share of the CPUs busy over the next $1 seconds (from /proc/stat).
busy_share() {
    local a b
    a=$(head -1 /proc/stat)
    sleep "$1"
    b=$(head -1 /proc/stat)
    echo "$a $b" | awk '{ busy = ($13+$14+$15+$18+$19+$20) - ($2+$3+$4+$7+$8+$9);
                          all = busy + ($16+$17) - ($5+$6); printf "%.2f", (all > 0 ? busy / all : 0) }'
}
for ((i = 0; i < ${QUIET_WAIT:-0}; i += 5)); do
    share=$(busy_share 5)
    awk -v s="$share" 'BEGIN { exit !(s < 0.15) }' && break
    echo "run_cpu.sh: machine ${share} busy, waiting for a quiet moment" >&2
done

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no -- src include CMakeLists.txt | wc -l)
lsf() { lscpu | sed -n "s/^$1: *//p" | head -1; }
CPU="$(lsf 'Model name') (family $(lsf 'CPU family'), model $(lsf 'Model'), L3 $(lsf 'L3 cache'))"
NCPU=$(nproc)
CMD="$BUILD/bench_cpu $*"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
TABLE=$(mktemp)
LOG=$(mktemp)
trap 'rm -f "$TABLE" "$LOG"' EXIT
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
STATUS=0
"$BUILD/bench_cpu" "$@" >"$TABLE" 2> >(tee "$LOG" >&2) || STATUS=$?
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$(dirname "$OUT")"
# One file per day; later runs of the day are appended as new sections.
if [ -s "$OUT" ]; then echo; else echo "# CPU inference benchmark — $DATE"; fi >>"$OUT"
{
    echo
    echo "## Run at $START"
    echo
    echo "- date: $START (UTC)"
    if [ "$DIRTY" -gt 0 ]; then
        echo "- commit: $COMMIT (+ $DIRTY uncommitted change(s) under src/ include/ CMakeLists.txt in the working tree)"
    else
        echo "- commit: $COMMIT"
    fi
    echo "- device: $CPU, $NCPU CPUs ($(uname -r))"
    echo "- command: \`bench/run_cpu.sh $*\` → \`$CMD\`"
    echo "- OpenBLAS environment: $(env | grep '^OPENBLAS_' | sort | tr '\n' ' ' | sed 's/ $//;s/^$/(none)/')"
    echo "- load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER (the bench's own 2 threads raise it; see the noise row of the table)"
    echo
    cat "$TABLE"
    echo
    echo "<details><summary>per-repetition log</summary>"
    echo
    echo '```'
    cat "$LOG"
    echo '```'
    echo
    echo "</details>"
} >>"$OUT"
cat "$TABLE"
echo "wrote $OUT" >&2
exit $STATUS
