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
# SKIP_PEER=1: no llama-server (lmc against BASE_LMC only). LMC_OPTS and
# BASE_OPTS: extra `lmc serve` options for the branch's and the base server
# (e.g. BASE_LMC=<this build> BASE_OPTS="--max-step-tokens 2048": a policy A/B
# on one binary).
# PROMPTS=fresh (default): each (round, level) sends its own prompt set
# (`bench-serve --prompt-set`, sets share at most a first token), the same
# set for every server of that round and level, so no server finds a prompt
# it saw before: llama-server keeps every finished prompt in its slots and,
# by default, in a host-RAM prompt cache (--cache-ram 8192 MiB), lmc serve
# in its prefix cache (blocks of its KV pool, evicted LRU); a repeated
# prompt runs one row on either. PROMPTS=same: request k sends the same
# prompt at every level and round (the old behaviour: from the second level
# or round on, hits that depend on each server's cache size and policy).
# Each server's CPU seconds (utime + stime from /proc) over each client run
# are reported next to the wall figures (the machine may be shared).
# LOGDIR=DIR keeps the three servers' logs there.
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
if [ "${SKIP_CPU:-0}" = 1 ]; then make -C "$BUILD" --no-print-directory -j2 lmc_cli >/dev/null
else make -C "$BUILD" --no-print-directory -j2 bench_cpu bench_pf lmc_cli >/dev/null; fi
PROMPTS=${PROMPTS:-fresh}
case $PROMPTS in fresh|same) ;; *) echo "run_issue10_float.sh: PROMPTS must be fresh or same" >&2; exit 1;; esac
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
    echo "- command: \`ROUNDS=$ROUNDS SROUNDS=$SROUNDS THREADS=$THREADS LEVELS=\"$LEVELS\" P=$P M=$M PROMPTS=$PROMPTS PEER_BIN=$PEER_BIN${BASE_LMC:+ BASE_LMC=$BASE_LMC}${LMC_OPTS:+ LMC_OPTS=\"$LMC_OPTS\"}${BASE_OPTS:+ BASE_OPTS=\"$BASE_OPTS\"}$( [ "${SKIP_PEER:-0}" = 1 ] && echo " SKIP_PEER=1")$( [ "${SKIP_CPU:-0}" = 1 ] && echo " SKIP_CPU=1")$( [ "${SKIP_SERVE:-0}" = 1 ] && echo " SKIP_SERVE=1") bench/run_issue10_float.sh\`"
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
    keeplogs() { [ -z "${LOGDIR:-}" ] || { mkdir -p "$LOGDIR"; cp "$LOGL" "$LOGDIR/lmc.log"; cp "$LOGP" "$LOGDIR/llama.log"; cp "$LOGB" "$LOGDIR/base.log"; }; }
    trap '[ -n "$SRV_L" ] && kill $SRV_L 2>/dev/null; [ -n "$SRV_P" ] && kill $SRV_P 2>/dev/null; [ -n "$SRV_B" ] && kill $SRV_B 2>/dev/null; keeplogs; rm -f "$LOGL" "$LOGP" "$LOGB" "$JS"' EXIT
    # shellcheck disable=SC2086
    "$BUILD/lmc" serve -m "$GGUF" --port 0 --threads "$THREADS" --max-batch "$NP" --max-connections $((NP * 4 + 16)) \
        --ctx "$CTX" ${LMC_OPTS:-} 2>"$LOGL" &
    SRV_L=$!
    if [ -n "${BASE_LMC:-}" ]; then
        # shellcheck disable=SC2086
        "$BASE_LMC" serve -m "$GGUF" --port 0 --threads "$THREADS" --max-batch "$NP" --max-connections $((NP * 4 + 16)) \
            --ctx "$CTX" ${BASE_OPTS:-} 2>"$LOGB" &
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
    cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
    NLEV=$(wc -w <<<"$LEVELS")
    for ((r = 1; r <= SROUNDS; r++)); do
        li=0
        for C in $LEVELS; do
            N=$(( C * 2 > 32 ? C * 2 : 32 ))
            SET=0; [ "$PROMPTS" = fresh ] && SET=$(( ((r - 1) * NLEV + li) % 239 + 1 ))
            li=$((li + 1))
            order="$WHO"; [ $((r % 2)) = 0 ] && order="$REV"
            for who in $order; do
                url=$URL_L; pid=$SRV_L
                [ $who = llama ] && { url=$URL_P; pid=$SRV_P; }
                [ $who = base ] && { url=$URL_B; pid=$SRV_B; }
                echo "run_issue10_float.sh: serving round $r, concurrency $C, prompt set $SET, $who (load $(cut -d' ' -f1 /proc/loadavg))" >&2
                c0=$(cpu_ticks "$pid")
                j=$(timeout 900 "$BUILD/lmc" bench-serve --url "$url" --concurrency "$C" --requests "$N" --prompt-len "$P" \
                    --max-tokens "$M" --prompt-set "$SET" --json || echo '{}')
                c1=$(cpu_ticks "$pid")
                echo "$who $C $(( c1 - c0 )) $j" >>"$JS"
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
        [ -z "$SRV_B" ] || echo "base lmc: \`$BASE_LMC\` with the same options${BASE_OPTS:+ and $BASE_OPTS}."
        echo "lmc: \`lmc serve -m $GGUF --threads $THREADS --max-batch $NP --ctx $CTX${LMC_OPTS:+ $LMC_OPTS}\`; llama.cpp: \`llama-server -m $GGUF -t $THREADS -tb $THREADS -np $NP -c $((CTX * NP))\`;"
        echo "client: \`lmc bench-serve --concurrency C --requests max(2C, 32) --prompt-len $P --max-tokens $M --prompt-set S\` (streamed, ignore_eos, greedy; prompts distinct within a level; $( [ "$PROMPTS" = fresh ] && echo "S new for every (round, level), the same for each server of it: no prompt cache hits on either server" || echo "S = 0 everywhere: request k the same prompt at every level and round, so later levels and rounds hit each server's prompt cache as far as it kept them"))."
        echo "CPU s: the server process's utime + stime over the client run (median); tok / CPU-s: output tokens per server CPU second; prompt tokens from cache: what each server reported in its usage (cached_tokens / llama-server's cache_n), summed per run, runs in order."
        echo "Each run, in order: \`server concurrency cpu_ticks bench-serve-json\` in the details below."
        echo
        python3 - "$JS" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, c, ticks, j = line.split(" ", 3)
    try: d = json.loads(j)
    except ValueError: d = {}
    if not d.get("ok"): continue
    d["cpu_s"] = int(ticks) / 100.0
    rows.setdefault((int(c), who), []).append(d)
def med(v): return statistics.median(v) if v else float("nan")
def table(a, b, an, bn):
    print("| concurrency | %s out tok/s | %s out tok/s | **ratio** | %s TTFT p50 (ms) | %s TTFT p50 (ms) | **TTFT %s / %s** | %s / %s TTFT p99 (ms) | %s / %s ITL p50 (ms) | %s / %s CPU s | %s / %s tok per CPU-s | %s / %s prompt tokens from cache | failed (%s, %s) |" % (an, bn, an, bn, an, bn, an, bn, an, bn, an, bn, an, bn, an, bn, an, bn))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for c in sorted({k[0] for k in rows}):
        L, Q = rows.get((c, a), []), rows.get((c, b), [])
        if not L or not Q: continue
        lt, qt = med([d["output_tokens_per_s"] for d in L]), med([d["output_tokens_per_s"] for d in Q])
        lf, qf = med([1e3 * d["ttft_s"]["p50"] for d in L]), med([1e3 * d["ttft_s"]["p50"] for d in Q])
        l9, q9 = med([1e3 * d["ttft_s"]["p99"] for d in L]), med([1e3 * d["ttft_s"]["p99"] for d in Q])
        li, qi = med([1e3 * d["itl_s"]["p50"] for d in L]), med([1e3 * d["itl_s"]["p50"] for d in Q])
        lc, qc = med([d["cpu_s"] for d in L]), med([d["cpu_s"] for d in Q])
        lk = med([d["output_tokens"] / d["cpu_s"] for d in L if d["cpu_s"] > 0])
        qk = med([d["output_tokens"] / d["cpu_s"] for d in Q if d["cpu_s"] > 0])
        def cached(v): # each run's count, or ? where the server reported none
            return ",".join(str(d.get("cached_prompt_tokens", 0)) if d.get("cached_reported") else "?" for d in v)
        print("| %d | %.1f | %.1f | **%.2fx** | %.0f | %.0f | **%.2fx** | %.0f / %.0f | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f (%.2fx) | %s / %s | %d, %d (%d, %d runs) |" % (
            c, lt, qt, lt / qt, lf, qf, lf / qf, l9, q9, li, qi, lc, qc, lk, qk, lk / qk if qk else float("nan"), cached(L), cached(Q),
            sum(d["failed"] for d in L), sum(d["failed"] for d in Q), len(L), len(Q)))
    print()
if any(k[1] == "llama" for k in rows): table("lmc", "llama", "lmc", "llama.cpp")
if any(k[1] == "base" for k in rows): table("lmc", "base", "lmc", "base lmc")
PY
        echo
        echo "Peak resident memory (VmHWM) after the run: lmc serve $RSS_L${RSS_B:+, base lmc serve $RSS_B}${RSS_P:+, llama-server $RSS_P} (each with its own KV cache: lmc ${KV_L:-KV format not in its log}${KV_B:+, base lmc $KV_B}, llama.cpp f16 cache of $((CTX * NP)) cells)."
        echo "Goals: ratio >= 1.2x at concurrency 8 and 64, TTFT lmc / llama.cpp <= 1.00x."
        echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        echo "<details><summary>each serving run (server, concurrency, server CPU ticks of 10 ms, bench-serve JSON)</summary>"
        echo; echo '```'; cat "$JS"; echo '```'; echo; echo "</details>"
    } >>"$OUT"
fi
if [ "${SKIP_CPU:-0}" != 1 ]; then
    { echo; echo "<details><summary>bench/run_cpu.sh's section (bench_cpu's table, per-repetition log)</summary>"; echo
      sed -n '/^## Run at/,$p' "$CPU_OUT"; echo; echo "</details>"; } >>"$OUT"
    rm -f "$CPU_OUT"
fi
echo "wrote $OUT" >&2
sed -n "/^## Run at $START/,\$p" "$OUT" | sed '/<details>/,$d'
