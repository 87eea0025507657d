#!/usr/bin/env bash
# run_cpu.sh — CPU machine: builds lmc (Release, build-bench/), runs
# bench_cpu (correctness check, then timings against peers measured in the
# same run) and llama.cpp's llama-bench on the same weights (the bench
# models written as GGUF by `lmc convert`, F16 and F32), interleaved:
# ROUNDS rounds of [bench_cpu, llama-bench], the ratio from the medians of
# the rounds; appends a section to bench/results/cpu-<date>.md: date,
# commit, CPU, the exact commands, the machine load, the tables, the log.
#
#   bench/run_cpu.sh [bench_cpu options...]     e.g. --only f16, --threads 2
# Environment: BUILD (default <repo>/build-bench), OUT (results file),
# ROUNDS (default 3), PEER_BIN (llama.cpp's bin folder; default: built or
# reused by ../shared/tools/build-llamacpp-peer.sh; PEER_BIN=none: no peer),
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
make -C "$BUILD" --no-print-directory -j2 bench_cpu lmc_cli >/dev/null
PEER_BIN=${PEER_BIN:-$("$ROOT/../shared/tools/build-llamacpp-peer.sh")}
ROUNDS=${ROUNDS:-3}

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
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
STATUS=0
# the thread count and prompt / decode lengths bench_cpu uses (its defaults unless given)
THREADS=2 PROMPT=512 NDEC=128 DIR_f16=/tmp/lmc-bench-125m-f16 DIR_f32=/tmp/lmc-bench-125m-f32
args=("$@")
for ((i = 0; i < ${#args[@]} - 1; i++)); do
    case "${args[$i]}" in
    --threads) THREADS=${args[$((i + 1))]} ;;
    --prompt) PROMPT=${args[$((i + 1))]} ;;
    --decode) NDEC=${args[$((i + 1))]} ;;
    --dir16) DIR_f16=${args[$((i + 1))]} ;;
    --dir32) DIR_f32=${args[$((i + 1))]} ;;
    esac
done
PEER_CMD=""
PEERS=$(mktemp)
trap 'rm -f "$TABLE" "$LOG" "$PEERS"' EXIT
for ((r = 1; r <= ROUNDS; r++)); do
    echo "run_cpu.sh: round $r of $ROUNDS: lmc (bench_cpu)" >&2
    "$BUILD/bench_cpu" "$@" >"$TABLE" 2> >(tee -a "$LOG" >&2) || STATUS=$?
    [ "$PEER_BIN" = none ] && continue
    for d in f16 f32; do
        dir=$( [ $d = f16 ] && echo "$DIR_f16" || echo "$DIR_f32")
        [ -d "$dir" ] || continue
        # the bench models have no tokenizer; llama.cpp needs a vocabulary: a byte-level
        # BPE of 32000 tokens (the 256 byte symbols, then fillers) written beside them
        [ -s "$dir/tokenizer.json" ] || python3 - "$dir" <<'PY'
import json, sys
bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
sym = [chr(c) for c in cs]
vocab = {t: i for i, t in enumerate(sym)}
i = 0
while len(vocab) < 32000:
    t = sym[65 + i % 26] + sym[65 + (i // 26) % 26] + sym[65 + (i // 676) % 26] + sym[80 + i // 17576]
    vocab.setdefault(t, len(vocab)); i += 1
tok = {"version": "1.0", "added_tokens": [], "normalizer": None,
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
       "post_processor": None, "decoder": {"type": "ByteLevel"},
       "model": {"type": "BPE", "vocab": vocab, "merges": [], "unk_token": None}}
json.dump(tok, open(sys.argv[1] + "/tokenizer.json", "w"))
json.dump({"add_bos_token": False}, open(sys.argv[1] + "/tokenizer_config.json", "w"))
PY
        [ -s "$dir.gguf" ] || "$BUILD/lmc" convert -m "$dir" -o "$dir.gguf" --dtype $d >/dev/null 2>>"$LOG"
        PEER_CMD="$PEER_BIN/llama-bench -m {$DIR_f16,$DIR_f32}.gguf -p $PROMPT -n $NDEC -t $THREADS -r 3 -o json"
        echo "run_cpu.sh: round $r of $ROUNDS: llama.cpp llama-bench $d" >&2
        "$PEER_BIN/llama-bench" -m "$dir.gguf" -p "$PROMPT" -n "$NDEC" -t "$THREADS" -r 3 -o json 2>>"$LOG" |
            python3 -c "
import json, sys
for e in json.load(sys.stdin):
    kind = 'prefill' if e['n_prompt'] > 0 else 'decode'
    print('$d', kind, e['avg_ts'])" >>"$PEERS" || STATUS=$?
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
# medians over the rounds: lmc from bench_cpu's result lines, llama.cpp from llama-bench's averages
PEER_TABLE=$(python3 - "$LOG" "$PEERS" <<'PY'
import re, statistics, sys
lmc, peer = {}, {}
for l in open(sys.argv[1]):
    m = re.match(r"bench_cpu: result (f16|f32) prefill_tok_s ([0-9.]+) decode_tok_s ([0-9.]+)", l)
    if m:
        lmc.setdefault((m[1], "prefill"), []).append(float(m[2]))
        lmc.setdefault((m[1], "decode"), []).append(float(m[3]))
for l in open(sys.argv[2]):
    d, k, v = l.split()
    peer.setdefault((d, k), []).append(float(v))
if not peer:
    print("(no llama.cpp peer in this run: PEER_BIN=none)")
    sys.exit()
print("| same weights, medians of the rounds | F16 | F32 |\n|---|---:|---:|")
for k in ("prefill", "decode"):
    for who, t in (("lmc", lmc), ("llama.cpp", peer)):
        cells = [("%.1f (%d)" % (statistics.median(t[(d, k)]), len(t[(d, k)]))) if (d, k) in t else "—" for d in ("f16", "f32")]
        print("| %s %s tok/s (rounds) | %s | %s |" % (who, k, cells[0], cells[1]))
    cells = [("**%.2f×**" % (statistics.median(lmc[(d, k)]) / statistics.median(peer[(d, k)]))) if (d, k) in lmc and (d, k) in peer else "—" for d in ("f16", "f32")]
    print("| **%s ratio lmc / llama.cpp** | %s | %s |" % (k, cells[0], cells[1]))
PY
)

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
    echo "- command: \`bench/run_cpu.sh $*\` → $ROUNDS rounds of \`$CMD\` then \`${PEER_CMD:-(no peer)}\`"
    echo "- peer: llama.cpp $( [ "$PEER_BIN" = none ] && echo "not run" || echo "from $PEER_BIN (../shared/tools/build-llamacpp-peer.sh), on GGUF files lmc convert writes from the same weights; llama-bench's decode (tg) starts from an empty context, bench_cpu's after a 16-token prompt")"
    echo "- OpenBLAS environment: $(env | grep '^OPENBLAS_' | sort | tr '\n' ' ' | sed 's/ $//;s/^$/(none)/')"
    echo "- load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER (the bench's own 2 threads raise it; see the noise row of the table)"
    echo
    echo "$PEER_TABLE"
    echo
    echo "bench_cpu's table (last round):"
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
echo "$PEER_TABLE"
cat "$TABLE"
echo "wrote $OUT" >&2
exit $STATUS
