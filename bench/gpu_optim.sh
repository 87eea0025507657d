#!/usr/bin/env bash
# gpu_optim.sh — the memory-efficient optimizers' step time on one GPU (and
# the same optimizers on that machine's CPU), in one device call (issues 16
# and 21; about 5 minutes on an H100):
#  1. builds lmc_cli and test_optim_cuda (sm_90, -Werror) in BUILD_DIR;
#  2. runs test_optim_cuda (every optimizer on the GPU against the CPU
#     backend; Muon's batched bf16 Newton–Schulz among them);
#  3. times `lmc train --device cuda --dtype bf16 --optim X` at GPT-2 124M's
#     shape (12 layers, 768 wide, 12 heads, vocab 50304, 1024 positions,
#     tied; batch 16 x 1024, random token ids) for AdamW, Muon, GaLore (its
#     GPU default: the subspace refresh), APOLLO and 8-bit AdamW,
#     INTERLEAVED: ROUNDS rounds, each running every
#     kind once in order, so a drift of the machine hits every kind alike;
#  4. times the same kinds on the CPU backend (all the machine's cores,
#     fp32) at GPT-2 124M's shape with a small batch (CPU_BATCH x CPU_SEQ
#     tokens per step), one round by default (CPU_ROUNDS), GaLore both with
#     its CPU default (the exact refresh) and with --galore-refresh subspace;
#  5. writes $OUT/table.md: per kind the median step time over the steps
#     after SKIP that refresh no projection (all rounds pooled), that median
#     over AdamW's (goals: Muon <= 1.05, GaLore amortised <= 1.10), the
#     per-round ratios' range, the projection refresh (GaLore: the host
#     eigensolver, at step 1 + k*GAP) = median refresh step - plain median,
#     amortised over 200 steps (the default gap), optimizer-state bytes per
#     parameter (start-up line) and the GPU's peak memory above idle
#     (nvidia-smi every 0.2 s), and for GaLore the matrices the refreshes after
#     step 1 handed to the exact host eigensolver (metrics.jsonl's
#     galore_exact_refreshes: the subspace refresh's fallbacks; the worst
#     refresh step, "exact/all"; the goal is 0).
# Fails loudly: the build, the test, a failed or cut run (rc != 0) or a
# missing measurement makes the script exit non-zero (after writing what it
# has); every log goes to $OUT (build.log, test_optim_cuda.log, table.md, and
# logs.tar.gz with each run's log and metrics.jsonl).
# Usage (device, from the repository root; if cJSON/PCRE2 are not installed
# there, `source .devdeps/device-deps.sh unpack` first, as the other gpu_*.sh):
#   bench/gpu_optim.sh
# env: OUT (/tmp/lmc-gpu-optim), KINDS ("adamw muon galore apollo adamw8bit"; also
#      apollo-mini, muon-fp32, muon-bf16), ROUNDS (2), STEPS (14), SKIP (3), GAP (6), BATCH (16),
#      SEQ (1024), CPU_KINDS ("adamw muon galore galore-subspace apollo adamw8bit"; "" skips the
#      CPU; galore-exact also exists), CPU_ROUNDS (1), CPU_STEPS (6),
#      CPU_SKIP (1), CPU_GAP (4), CPU_BATCH (1), CPU_SEQ (512), RUN_LIMIT (120 s per run),
#      BUDGET_S (540 s for the whole script, build included: later runs are skipped, and reported),
#      SKIP_BUILD=1, SKIP_TEST=1, BUILD_DIR (build-dev), JOBS (nproc), DEVICE (cuda),
#      LAYERS HIDDEN HEADS VOCAB MAXPOS (12 768 12 50304 1024), DTYPE (cuda: bf16; cpu: fp32),
#      ACCUM (1: micro-batches per step of the main runs), THREADS (the main runs' --threads; unset: the default)
# The table also reads each step's own timers from metrics.jsonl (step_ms, and optim_ms: the optimizer update
# alone, synced): the optimizer's median ms, its share of the same steps' time, and the load-robust estimate
# (F + O_X + R_X/200) / (F + O_adamw), F = the median forward+backward (step_ms - optim_ms) over every kind's steps.
# The CPU at GPT-2 124M with bf16 training and 8 x 1024 tokens per step (bench/results/optim-cpu-124m-2026-12-06.md):
#   DEVICE=cpu DTYPE=bf16 THREADS=2 SKIP_BUILD=1 SKIP_TEST=1 BUILD_DIR=build VOCAB=50257 BATCH=1 SEQ=1024 ACCUM=8 \
#     STEPS=2 SKIP=1 GAP=200 ROUNDS=1 KINDS="adamw muon-bf16 galore apollo adamw8bit muon-fp32" RUN_LIMIT=1200 \
#     BUDGET_S=3000 WORK=/tmp/o16b-work bench/gpu_optim.sh
#   (GAP >= STEPS: GaLore/APOLLO refresh at step 1 only; the table then takes the refresh from step 1's optimizer
#   timer, against the plain step 2)
# CPU smoke test of the script itself (no GPU; memory columns read —):
#   DEVICE=cpu SKIP_BUILD=1 SKIP_TEST=1 BUILD_DIR=build LAYERS=2 HIDDEN=64 HEADS=4 VOCAB=512 MAXPOS=64 \
#     SEQ=32 BATCH=2 STEPS=8 GAP=4 ROUNDS=2 CPU_KINDS= bench/gpu_optim.sh
. "$(dirname "$0")/gpu_common.sh"
OUT=${OUT:-/tmp/lmc-gpu-optim}
KINDS=${KINDS:-adamw muon galore apollo adamw8bit}
ROUNDS=${ROUNDS:-2}; STEPS=${STEPS:-14}; SKIP=${SKIP:-3}; GAP=${GAP:-6}; BATCH=${BATCH:-16}; SEQ=${SEQ:-1024}
CPU_KINDS=${CPU_KINDS-adamw muon galore galore-subspace apollo adamw8bit}; CPU_ROUNDS=${CPU_ROUNDS:-1}; CPU_STEPS=${CPU_STEPS:-6}; CPU_SKIP=${CPU_SKIP:-1}
CPU_GAP=${CPU_GAP:-4}; CPU_BATCH=${CPU_BATCH:-1}; CPU_SEQ=${CPU_SEQ:-512}; RUN_LIMIT=${RUN_LIMIT:-120}
BUDGET_S=${BUDGET_S:-540} # the whole script: a run that cannot start in time is skipped (and the script fails)
B=${BUILD_DIR:-build-dev}; JOBS=${JOBS:-$(nproc)}; DEVICE=${DEVICE:-cuda}
LAYERS=${LAYERS:-12}; HIDDEN=${HIDDEN:-768}; HEADS=${HEADS:-12}; VOCAB=${VOCAB:-50304}; MAXPOS=${MAXPOS:-1024}
ACCUM=${ACCUM:-1}; THREADS=${THREADS:-}
if [ -z "${DTYPE:-}" ]; then DTYPE=bf16; [ "$DEVICE" = cuda ] || DTYPE=fp32; fi
WORK=${WORK:-/tmp/lmc-gpu-optim-work}
L=$WORK/logs # every log; $OUT gets table.md, build.log, test_optim_cuda.log, logs.tar.gz (<= 8 files come back)
rm -rf "$L"
mkdir -p "$OUT" "$WORK" "$L" || { echo "FATAL: cannot create $OUT or $WORK" >&2; exit 1; }
die() { echo "FATAL: $*" | tee -a "$OUT/table.md" >&2; tar -czf "$OUT/logs.tar.gz" -C "$L" . 2>/dev/null; exit 1; }
rc=0
DEVNAME=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
HEAD="date $(date -u +%FT%TZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); device ${DEVNAME:-none}; cpu $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$HEAD" | tee "$OUT/table.md"

# ---- build (sm_90: CMakeLists sets CUDA_ARCHITECTURES 90)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if ! pkg-config --exists libcjson 2>/dev/null && [ -f .devdeps/device-deps.sh ]; then
    # shellcheck disable=SC1091
    source .devdeps/device-deps.sh unpack
  fi
  case "${PKG_CONFIG_PATH:-}" in */tmp/devdeps/*) export PKG_CONFIG_SYSROOT_DIR=${PKG_CONFIG_SYSROOT_DIR:-/tmp/devdeps} ;; esac
  t=$(date +%s)
  if cmake -S . -B "$B" -DLMC_WERROR="${LMC_WERROR:-ON}" >"$OUT/build.log" 2>&1 &&
     make -C "$B" -j"$JOBS" lmc_cli test_optim_cuda >>"$OUT/build.log" 2>&1; then
    echo "build ok ($(($(date +%s) - t)) s)"
  else
    tail -30 "$OUT/build.log"; die "build failed (build.log)"
  fi
  grep -q "be->muon_batch = " src/ops/cuda/backend_cuda.cu || die "the CUDA table registers no muon_batch"
fi
LMC=$B/lmc
[ -x "$LMC" ] || die "no $LMC"

# ---- the CUDA optimizer tests (GPU vs CPU backend)
if [ "${SKIP_TEST:-0}" != 1 ]; then
  timeout 120 "$B/test_optim_cuda" >"$OUT/test_optim_cuda.log" 2>&1; r=$?
  grep '^FAIL' "$OUT/test_optim_cuda.log" | head -20
  echo "test_optim_cuda rc=$r: $(tail -1 "$OUT/test_optim_cuda.log")" | tee -a "$OUT/table.md"
  [ $r = 0 ] || { echo "FAIL: test_optim_cuda (test_optim_cuda.log)" | tee -a "$OUT/table.md"; rc=1; }
fi

# ---- timed runs
DATA=$WORK/data-v$VOCAB
if [ ! -f "$DATA/train_00000.bin" ]; then
  python3 bench/bench_train.py write-shards "$DATA" --vocab "$VOCAB" --tokens $((BATCH * ACCUM * (SEQ + 1) * (STEPS + 2))) \
    --val-tokens 65536 >/dev/null || die "write-shards failed"
fi
smi_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -dc '0-9'; }
poll_mem() { # PID FILE: the largest memory.used (MiB) while PID lives
  local max=0 v
  while kill -0 "$1" 2>/dev/null; do
    v=$(smi_used)
    if [ -n "$v" ] && [ "$v" -gt "$max" ]; then max=$v; echo "$max" >"$2"; fi
    sleep 0.2
  done
}
flags() { # KIND GAP
  case $1 in
    adamw) echo "" ;;
    muon) echo "--optim muon" ;;                                      # bf16 Newton–Schulz (batched)
    muon-fp32) echo "--optim muon --muon-ns-dtype f32" ;;
    muon-bf16) echo "--optim muon --muon-ns-dtype bf16" ;;                # the CPU's default is fp32 (auto)
    galore) echo "--optim galore --galore-update-gap $2" ;;           # rank 128, scale 0.25; auto refresh
    galore-exact) echo "--optim galore --galore-update-gap $2 --galore-refresh exact" ;;
    galore-subspace) echo "--optim galore --galore-update-gap $2 --galore-refresh subspace" ;;
    apollo) echo "--optim apollo --apollo-update-gap $2" ;;           # rank 256, channel-wise
    apollo-mini) echo "--optim apollo-mini --apollo-update-gap $2" ;;
    adamw8bit) echo "--optim adamw8bit" ;;
    *) echo "UNKNOWN" ;;
  esac
}
: >"$WORK/runs.txt"
run_kind() { # DEV KIND ROUND DTYPE BATCH SEQ STEPS GAP THREADS [ACCUM]
  local dev=$1 k=$2 rd=$3 dt=$4 bt=$5 sq=$6 st=$7 gp=$8 th=$9 ac=${10:-1} f run tag base r pid poller
  f=$(flags "$k" "$gp")
  [ "$f" = UNKNOWN ] && { echo "$dev $k $rd unknown-kind" >>"$WORK/runs.txt"; rc=1; return; }
  tag=$dev-$k-r$rd; run=$WORK/run-$tag
  local lim=$((BUDGET_S - ($(date +%s) - T0) - 20))
  [ "$lim" -gt "$RUN_LIMIT" ] && lim=$RUN_LIMIT
  if [ "$lim" -lt 30 ]; then echo "  SKIP $tag: out of the time budget (BUDGET_S=$BUDGET_S)"; rc=1; return; fi
  rm -rf "$run"
  base=$(smi_used); base=${base:-0}
  echo 0 >"$L/$tag.mem"
  # shellcheck disable=SC2086
  timeout --kill-after=5 "$lim" "$LMC" train --data "$DATA" -o "$run" --arch gpt2 --vocab "$VOCAB" \
    --layers "$LAYERS" --hidden "$HIDDEN" --heads "$HEADS" --max-pos "$MAXPOS" --batch "$bt" --seq "$sq" \
    --accum "$ac" --steps "$st" --lr 3e-4 --warmup 0 --eval-every 0 --save-every 0 --device "$dev" --dtype "$dt" $th $f \
    >"$L/$tag.log" 2>&1 &
  pid=$!
  poller=
  if [ "$dev" = cuda ]; then poll_mem $pid "$L/$tag.mem" & poller=$!; fi
  wait $pid; r=$?
  [ -n "$poller" ] && wait "$poller" 2>/dev/null
  cp "$run/metrics.jsonl" "$L/$tag-metrics.jsonl" 2>/dev/null
  rm -rf "$run"
  echo "$dev $k $rd rc=$r base=$base peak=$(cat "$L/$tag.mem")" | tee -a "$WORK/runs.txt"
  if [ $r != 0 ]; then
    echo "  FAIL $tag: $(grep -v '^step' "$L/$tag.log" | grep -v '^\s*$' | tail -1 | cut -c1-200)"
    rc=1
  fi
}
for rd in $(seq 1 "$ROUNDS"); do
  for k in $KINDS; do
    run_kind "$DEVICE" "$k" "$rd" "$DTYPE" "$BATCH" "$SEQ" "$STEPS" "$GAP" "${THREADS:+--threads $THREADS}" "$ACCUM"
  done
done
if [ -n "$CPU_KINDS" ] && [ "$DEVICE" = cuda ]; then
  for rd in $(seq 1 "$CPU_ROUNDS"); do
    for k in $CPU_KINDS; do
      run_kind cpu "$k" "$rd" fp32 "$CPU_BATCH" "$CPU_SEQ" "$CPU_STEPS" "$CPU_GAP" "--threads $(nproc)"
    done
  done
fi

# ---- the table
SHAPE="GPT-2 architecture (124M at the defaults): $LAYERS layers, hidden $HIDDEN, $HEADS heads, vocab $VOCAB, $MAXPOS positions, tied"
python3 - "$WORK/runs.txt" "$L" "$SHAPE" "$DEVICE" "$KINDS" "$ROUNDS" "$STEPS" "$SKIP" "$GAP" "$BATCH x $SEQ x $ACCUM accum, $DTYPE${THREADS:+, $THREADS threads}" \
  "$CPU_KINDS" "$CPU_ROUNDS" "$CPU_STEPS" "$CPU_SKIP" "$CPU_GAP" "$CPU_BATCH x $CPU_SEQ, fp32, $(nproc) threads" \
  <<'PY' | tee -a "$OUT/table.md"
import json, os, re, statistics, sys
runs_txt, logs, shape, device = sys.argv[1:5]
groups = [(device, sys.argv[5].split(), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9]), sys.argv[10]),
          ("cpu", sys.argv[11].split(), int(sys.argv[12]), int(sys.argv[13]), int(sys.argv[14]), int(sys.argv[15]), sys.argv[16])]
info = {}
for l in open(runs_txt):
    w = l.split()
    if len(w) >= 4 and w[3].startswith("rc="):
        d = dict(x.split("=", 1) for x in w[3:] if "=" in x)
        info[(w[0], w[1], int(w[2]))] = {"rc": int(d["rc"]), "base": int(d["base"] or 0), "peak": int(d["peak"] or 0)}
missing = 0
for gi, (dev, kinds, rounds, steps, skip, gap, what) in enumerate(groups):
    if not kinds or (gi == 1 and device != "cuda"):
        continue
    res = {}
    fwdbwd = []
    for k in kinds:
        plain, refs, per_round, peak, state, n, notes = [], [], {}, None, None, None, []
        oplain, orefs, shares, oref1 = [], [], [], []
        fb = []  # GaLore: (exact, subspace) refreshed matrices at each refresh step > 1 (metrics.jsonl)
        refresh_kind = k.startswith("galore") or k.startswith("apollo")
        for rd in range(1, rounds + 1):
            tag = f"{dev}-{k}-r{rd}"
            i = info.get((dev, k, rd))
            if i is None:
                notes.append(f"r{rd} not run"); continue
            if i["rc"] != 0:
                notes.append(f"r{rd} rc={i['rc']}")
            logp = os.path.join(logs, tag + ".log")
            log = open(logp).read() if os.path.exists(logp) else ""
            m = re.search(r"state (\d+) bytes \(([\d.]+) per parameter\)", log)
            if m: state = float(m.group(2))
            m = re.search(r"(\d+) parameters", log)
            if m: n = int(m.group(1))
            m = re.search(r"batch (\d+) x (\d+) x (\d+) accum", log)
            tok = int(m.group(1)) * int(m.group(2)) * int(m.group(3)) if m else None
            mp = os.path.join(logs, tag + "-metrics.jsonl")
            if not os.path.exists(mp) or not tok:
                notes.append(f"r{rd} no metrics"); continue
            rows = [json.loads(l) for l in open(mp) if l.strip()]
            ms = {x["step"]: 1000.0 * tok / x["tokens_per_s"] for x in rows if x.get("tokens_per_s")}
            is_ref = lambda s: refresh_kind and (s - 1) % gap == 0
            p = [v for s, v in ms.items() if s > skip and not is_ref(s)]
            om = {x["step"]: (x["optim_ms"], x["step_ms"]) for x in rows if "optim_ms" in x}
            for s, (o, st_ms) in om.items():
                if s > skip and not is_ref(s):
                    oplain.append(o); shares.append(o / st_ms); fwdbwd.append(st_ms - o)
                elif s > 1 and is_ref(s):
                    orefs.append(o)
                elif s == 1 and is_ref(s):
                    oref1.append(o)
            fb += [(x["galore_exact_refreshes"], x.get("galore_subspace_refreshes", 0)) for x in rows
                   if "galore_exact_refreshes" in x and x["step"] > 1 and is_ref(x["step"])]
            plain += p
            refs += [v for s, v in ms.items() if s > 1 and is_ref(s)]
            if p: per_round[rd] = statistics.median(p)
            if dev == "cuda": peak = max(peak or 0, i["peak"] - i["base"])
        res[k] = dict(step=statistics.median(plain) if plain else None, nplain=len(plain), per_round=per_round,
                      refresh=(statistics.median(refs) - statistics.median(plain)) if refs and plain else None,
                      peak=peak, state=state if state is not None else (8.0 if k == "adamw" else None), n=n, notes=notes,
                      opt=statistics.median(oplain) if oplain else None,
                      share=statistics.median(shares) if shares else None,
                      fb=(f"{max(e for e, _ in fb)}/{max(e + u for e, u in fb)}" if fb else None),
                      orefresh=(statistics.median(orefs) - statistics.median(oplain)) if orefs and oplain else
                               (statistics.median(oref1) - statistics.median(oplain)) if oref1 and oplain else None)
        if refresh_kind and not orefs and oref1 and oplain:  # GAP >= STEPS: only step 1 refreshes
            res[k]["notes"].append("refresh from step 1's optimizer timer")
    a = res.get("adamw", {})
    print()
    if fwdbwd:
        print(f"forward+backward (step_ms - optim_ms), median over every kind's plain steps: {statistics.median(fwdbwd):.1f} ms")
    print(f"### {dev}: {shape}; batch {what}; {rounds} interleaved rounds of {steps} steps; step = median over "
          f"steps > {skip} without a projection refresh (refresh every {gap} steps in these runs, amortised over 200)")
    print()
    F = statistics.median(fwdbwd) if fwdbwd else None
    print("| optimizer | step ms | vs AdamW | per-round ratio range | refresh ms | amortised /200 vs AdamW "
          "| optimizer ms | optimizer / step | refresh (optimizer timer) ms | est. from timers vs AdamW, amortised "
          "| exact refreshes / matrices, later refreshes (worst) | state B/param | peak MiB above idle | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    f = lambda v, fmt: (fmt % v) if v is not None else "—"
    for k in kinds:
        r = res[k]
        if r["step"] is None: missing += 1
        ratio = r["step"] / a["step"] if r["step"] and a.get("step") else None
        rr = [r["per_round"][q] / a["per_round"][q] for q in r["per_round"] if q in a.get("per_round", {})]
        rng = f"{min(rr):.3f}–{max(rr):.3f}" if rr else "—"
        am = (r["step"] + (r["refresh"] or 0) / 200.0) / a["step"] if r["step"] and a.get("step") else None
        est = ((F + r["opt"] + (r["orefresh"] or 0) / 200.0) / (F + a["opt"])
               if F is not None and r.get("opt") is not None and a.get("opt") is not None else None)
        print(f"| {k} | {f(r['step'], '%.1f')} | {f(ratio, '%.3f')} | {rng} | {f(r['refresh'], '%.0f')} | {f(am, '%.3f')} "
              f"| {f(r['opt'], '%.1f')} | {f(r['share'], '%.3f')} | {f(r['orefresh'], '%.0f')} | {f(est, '%.3f')} "
              f"| {r['fb'] or '—'} | {f(r['state'], '%.3f')} | {f(r['peak'], '%d')} | {'; '.join(r['notes'])} |")
sys.exit(1 if missing else 0)
PY
[ $? = 0 ] || { echo "FAIL: a kind has no measurement (table.md)"; rc=1; }
cp "$WORK/runs.txt" "$L/"
tar -czf "$OUT/logs.tar.gz" -C "$L" . 2>/dev/null
echo "=== total $(($(date +%s) - T0)) s; rc=$rc" | tee -a "$OUT/table.md"
exit $rc
