#!/usr/bin/env bash
# run_issue10_float.sh — issue 10's float-weight goals, lmc against llama.cpp
# on the same F16 weights (the 125M bench model: bench_cpu's random-weight
# Llama and the GGUF `lmc convert` writes from it), in one run, THREADS
# threads each, appending one section to bench/results/issue10-float-<date>.md:
#  1. prefill (512 tokens) and decode (128 tokens): bench/run_cpu.sh --only
#     f16, ROUNDS alternations of bench_cpu and llama-bench, medians;
#  2. the prefill GEMM and attention alone (bench_pf: bf16 GEMM vs the fp32
#     kernels, query blocks vs per-query attention, CPU time);
#  3. serving at concurrency LEVELS (default 1 8 64): `lmc serve` and
#     llama-server (-np = the largest level, the same context per slot) on the
#     same GGUF, both up for the whole run and driven in turn by the same
#     client (`lmc bench-serve`: streamed /v1/completions, P-token prompts
#     given as ids, M new tokens, ignore_eos), SROUNDS rounds alternating
#     which server goes first; medians of output tok/s and TTFT p50, the
#     ratios, and each server's peak resident memory (VmHWM).
# Goals (issue 10): prefill >= 1.3x llama-bench pp512; serving at 8 and 64
# >= 1.2x llama-server with TTFT p50 no worse; decode reported.
#
#   bench/run_issue10_float.sh
# Environment: PEER_BIN (llama.cpp's bin folder with llama-bench and
# llama-server; default /work/peer-mamba/llama.cpp/build/bin when present,
# else ../shared/tools/build-llamacpp-peer.sh), ROUNDS (prefill/decode
# rounds, default 3), SROUNDS (serving rounds, default 2), THREADS (2),
# LEVELS ("1 8 64"), P (128), M (128), BUILD (<repo>/build-bench), OUT,
# SKIP_CPU=1 (serving only), SKIP_SERVE=1 (prefill/decode only);
# BASE_LMC=PATH/lmc: a second `lmc serve` (e.g. main's build) driven in
# the same rounds, its columns and the ratio branch / base added;
# SKIP_PEER=1: no llama-server (lmc against BASE_LMC only).
# The levels run in order against servers that stay up, and request k of
# every level sends the same prompt: from the second level on, the first
# requests' prompts are cached by both servers (llama-server's slots, lmc's
# prefix cache), which is what TTFT at c = 8 measures after c = 1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/bench/results/issue10-float-$DATE.md}
THREADS=${THREADS:-2}; ROUNDS=${ROUNDS:-3}; SROUNDS=${SROUNDS:-2}
LEVELS=${LEVELS:-"1 8 64"}; P=${P:-128}; M=${M:-128}
if [ -z "${PEER_BIN:-}" ]; then
    if [ -x /work/peer-mamba/llama.cpp/build/bin/llama-server ]; then PEER_BIN=/work/peer-mamba/llama.cpp/build/bin
    else PEER_BIN=$("$ROOT/../shared/tools/build-llamacpp-peer.sh"); fi
fi
for b in llama-bench llama-server; do
    [ -x "$PEER_BIN/$b" ] || { echo "run_issue10_float.sh: no $PEER_BIN/$b (set PEER_BIN)" >&2; exit 1; }
done
export PEER_BIN
unset OPENBLAS_CORETYPE
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLMC_WERROR=ON -DLMC_CUDA=OFF >/dev/null
make -C "$BUILD" --no-print-directory -j2 bench_cpu bench_pf lmc_cli >/dev/null
DIR=/tmp/lmc-bench-125m-f16
GGUF=$DIR.gguf
mkdir -p "$(dirname "$OUT")"
[ -s "$OUT" ] || echo "# Issue 10, float weights: lmc vs llama.cpp on the same F16 weights — $DATE" >"$OUT"
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no -- src include tools CMakeLists.txt | wc -l)
{
    echo
    echo "## Run at $START"
    echo
    echo "- commit: $COMMIT$( [ "$DIRTY" -gt 0 ] && echo " (+ $DIRTY uncommitted change(s))")"
    echo "- device: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, $THREADS threads for each engine"
    echo "- peer: llama.cpp from $PEER_BIN ($(git -C "$PEER_BIN/../.." log -1 --format='%h %cs' 2>/dev/null || echo 'tree unknown'))"
    echo "- command: \`ROUNDS=$ROUNDS SROUNDS=$SROUNDS THREADS=$THREADS LEVELS=\"$LEVELS\" P=$P M=$M PEER_BIN=$PEER_BIN${BASE_LMC:+ BASE_LMC=$BASE_LMC}$( [ "${SKIP_PEER:-0}" = 1 ] && echo " SKIP_PEER=1")$( [ "${SKIP_CPU:-0}" = 1 ] && echo " SKIP_CPU=1")$( [ "${SKIP_SERVE:-0}" = 1 ] && echo " SKIP_SERVE=1") bench/run_issue10_float.sh\`"
    echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$OUT"

# ---- 1. prefill and decode (run_cpu.sh also writes the model, its tokenizer and the GGUF) ----
if [ "${SKIP_CPU:-0}" != 1 ]; then
    CPU_OUT=$(mktemp)
    OUT=$CPU_OUT ROUNDS=$ROUNDS BUILD=$BUILD "$ROOT/bench/run_cpu.sh" --only f16 --threads "$THREADS" \
        --dir32 "${TMPDIR:-/tmp}/lmc-issue10-no-f32" >/dev/null || true # (no F32 llama-bench run)
    {
        echo
        echo "### 1. Prefill (512 tokens) and decode (128 tokens), F16, $ROUNDS alternations of bench_cpu and llama-bench"
        echo
        sed -n '/^| same weights/,/^$/p' "$CPU_OUT"
        echo "Goal: prefill ratio >= 1.3x. (bench_cpu's full table and per-repetition log: bench/run_cpu.sh's section below the serving table.)"
        echo
        echo "### 2. The prefill GEMM and attention alone (\`$BUILD/bench_pf --threads $THREADS\`)"
        echo
        "$BUILD/bench_pf" --threads "$THREADS"
    } >>"$OUT"
fi

# ---- 3. serving ----
if [ "${SKIP_SERVE:-0}" != 1 ]; then
    [ -s "$GGUF" ] || { echo "run_issue10_float.sh: no $GGUF (run without SKIP_CPU first)" >&2; exit 1; }
    NP=1; for c in $LEVELS; do [ "$c" -gt "$NP" ] && NP=$c; done
    CTX=$(( (P + M + 16) ))
    LOGL=$(mktemp); LOGP=$(mktemp); LOGB=$(mktemp); JS=$(mktemp)
    SRV_L=""; SRV_P=""; SRV_B=""
    trap '[ -n "$SRV_L" ] && kill $SRV_L 2>/dev/null; [ -n "$SRV_P" ] && kill $SRV_P 2>/dev/null; [ -n "$SRV_B" ] && kill $SRV_B 2>/dev/null; rm -f "$LOGL" "$LOGP" "$LOGB" "$JS"' EXIT
    "$BUILD/lmc" serve -m "$GGUF" --port 0 --threads "$THREADS" --max-batch "$NP" --max-connections $((NP * 4 + 16)) \
        --ctx "$CTX" 2>"$LOGL" &
    SRV_L=$!
    if [ -n "${BASE_LMC:-}" ]; then
        "$BASE_LMC" serve -m "$GGUF" --port 0 --threads "$THREADS" --max-batch "$NP" --max-connections $((NP * 4 + 16)) \
            --ctx "$CTX" 2>"$LOGB" &
        SRV_B=$!
    fi
    PORT=""
    if [ "${SKIP_PEER:-0}" != 1 ]; then
        # llama-server takes a port: one that was free a moment ago (a clash fails the start, loudly)
        PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        "$PEER_BIN/llama-server" -m "$GGUF" --host 127.0.0.1 --port "$PORT" -t "$THREADS" -tb "$THREADS" -np "$NP" \
            -c $((CTX * NP)) >"$LOGP" 2>&1 &
        SRV_P=$!
    fi
    URL_L=""; URL_B=""
    for _ in $(seq 300); do
        URL_L=$(grep -o "http://127.0.0.1:[0-9]*" "$LOGL" | head -1 || true)
        URL_B=$(grep -o "http://127.0.0.1:[0-9]*" "$LOGB" | head -1 || true)
        okp=1; [ -n "$PORT" ] && okp=$(curl -s "http://127.0.0.1:$PORT/health" | grep -c '"ok"' || true)
        [ -n "$URL_L" ] && [ "$okp" -gt 0 ] && { [ -z "$SRV_B" ] || [ -n "$URL_B" ]; } && break
        kill -0 $SRV_L 2>/dev/null || { cat "$LOGL" >&2; exit 1; }
        [ -z "$SRV_P" ] || kill -0 $SRV_P 2>/dev/null || { tail -20 "$LOGP" >&2; exit 1; }
        [ -z "$SRV_B" ] || kill -0 $SRV_B 2>/dev/null || { cat "$LOGB" >&2; exit 1; }
        sleep 0.2
    done
    URL_P="http://127.0.0.1:$PORT"
    [ -n "$URL_L" ] || { echo "lmc serve did not start" >&2; exit 1; }
    [ -z "$SRV_B" ] || [ -n "$URL_B" ] || { echo "BASE_LMC serve did not start" >&2; exit 1; }
    WHO="lmc"; [ -n "$SRV_B" ] && WHO="$WHO base"; [ -n "$SRV_P" ] && WHO="$WHO llama"
    REV=$(echo $WHO | tr ' ' '\n' | tac | tr '\n' ' ')
    for ((r = 1; r <= SROUNDS; r++)); do
        for C in $LEVELS; do
            N=$(( C * 2 > 32 ? C * 2 : 32 ))
            order="$WHO"; [ $((r % 2)) = 0 ] && order="$REV"
            for who in $order; do
                url=$URL_L; [ $who = llama ] && url=$URL_P; [ $who = base ] && url=$URL_B
                echo "run_issue10_float.sh: serving round $r, concurrency $C, $who (load $(cut -d' ' -f1 /proc/loadavg))" >&2
                j=$(timeout 900 "$BUILD/lmc" bench-serve --url "$url" --concurrency "$C" --requests "$N" --prompt-len "$P" \
                    --max-tokens "$M" --json || echo '{}')
                echo "$who $C $j" >>"$JS"
            done
        done
    done
    hwm() { sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null | head -1; }
    # the KV format each lmc server reports in its startup log ("... KV blocks of B tokens (f16, N bytes per token, ...")
    kvfmt() { sed -n 's/.*KV blocks of [0-9]* tokens (\([a-z0-9]*\), \([0-9]*\) bytes per token.*/\1 paged pool, \2 bytes per token/p' "$1" 2>/dev/null | head -1; }
    KV_L=$(kvfmt "$LOGL"); KV_B=""
    [ -z "$SRV_B" ] || KV_B=$(kvfmt "$LOGB")
    RSS_L=$(hwm $SRV_L); RSS_P=""; RSS_B=""
    [ -z "$SRV_P" ] || RSS_P=$(hwm $SRV_P)
    [ -z "$SRV_B" ] || RSS_B=$(hwm $SRV_B)
    {
        echo
        echo "### 3. Serving, same GGUF, $SROUNDS rounds (order alternating), medians"
        echo
        [ -z "$SRV_B" ] || echo "base lmc: \`$BASE_LMC\` with the same options."
        echo "lmc: \`lmc serve -m $GGUF --threads $THREADS --max-batch $NP --ctx $CTX\`; llama.cpp: \`llama-server -m $GGUF -t $THREADS -tb $THREADS -np $NP -c $((CTX * NP))\`;"
        echo "client: \`lmc bench-serve --concurrency C --requests max(2C, 32) --prompt-len $P --max-tokens $M\` (streamed, ignore_eos, greedy; prompts distinct within a level, request k the same prompt at every level)."
        echo
        python3 - "$JS" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, c, j = line.split(" ", 2)
    try: d = json.loads(j)
    except ValueError: d = {}
    if not d.get("ok"): continue
    rows.setdefault((int(c), who), []).append(d)
def med(v): return statistics.median(v) if v else float("nan")
def table(a, b, an, bn):
    print("| concurrency | %s out tok/s | %s out tok/s | **ratio** | %s TTFT p50 (ms) | %s TTFT p50 (ms) | **TTFT %s / %s** | %s / %s TTFT p99 (ms) | %s / %s ITL p50 (ms) | failed (%s, %s) |" % (an, bn, an, bn, an, bn, an, bn, an, bn, an, bn))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for c in sorted({k[0] for k in rows}):
        L, Q = rows.get((c, a), []), rows.get((c, b), [])
        if not L or not Q: continue
        lt, qt = med([d["output_tokens_per_s"] for d in L]), med([d["output_tokens_per_s"] for d in Q])
        lf, qf = med([1e3 * d["ttft_s"]["p50"] for d in L]), med([1e3 * d["ttft_s"]["p50"] for d in Q])
        l9, q9 = med([1e3 * d["ttft_s"]["p99"] for d in L]), med([1e3 * d["ttft_s"]["p99"] for d in Q])
        li, qi = med([1e3 * d["itl_s"]["p50"] for d in L]), med([1e3 * d["itl_s"]["p50"] for d in Q])
        print("| %d | %.1f | %.1f | **%.2fx** | %.0f | %.0f | **%.2fx** | %.0f / %.0f | %.1f / %.1f | %d, %d (%d, %d runs) |" % (
            c, lt, qt, lt / qt, lf, qf, lf / qf, l9, q9, li, qi, sum(d["failed"] for d in L), sum(d["failed"] for d in Q), len(L), len(Q)))
    print()
if any(k[1] == "llama" for k in rows): table("lmc", "llama", "lmc", "llama.cpp")
if any(k[1] == "base" for k in rows): table("lmc", "base", "lmc", "base lmc")
PY
        echo
        echo "Peak resident memory (VmHWM) after the run: lmc serve $RSS_L${RSS_B:+, base lmc serve $RSS_B}${RSS_P:+, llama-server $RSS_P} (each with its own KV cache: lmc ${KV_L:-KV format not in its log}${KV_B:+, base lmc $KV_B}, llama.cpp f16 cache of $((CTX * NP)) cells)."
        echo "Goals: ratio >= 1.2x at concurrency 8 and 64, TTFT lmc / llama.cpp <= 1.00x."
        echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    } >>"$OUT"
fi
if [ "${SKIP_CPU:-0}" != 1 ]; then
    { echo; echo "<details><summary>bench/run_cpu.sh's section (bench_cpu's table, per-repetition log)</summary>"; echo
      sed -n '/^## Run at/,$p' "$CPU_OUT"; echo; echo "</details>"; } >>"$OUT"
    rm -f "$CPU_OUT"
fi
echo "wrote $OUT" >&2
sed -n "/^## Run at $START/,\$p" "$OUT" | sed '/<details>/,$d'
