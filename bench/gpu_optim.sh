#!/usr/bin/env bash
# gpu_optim.sh — the memory-efficient optimizers on one GPU in one device call
# (issues 16 and 21; about 3 minutes): builds lmc_cli and test_optim_cuda,
# runs test_optim_cuda (every optimizer on the GPU against the CPU backend),
# then times `lmc train --device cuda --optim X` at GPT-2 124M's shape (12
# layers, 768 wide, 12 heads, vocab 50304, 1024 positions, tied; batch 16 x
# 1024 tokens, bf16 mixed precision with fp32 master weights, random token
# ids — bench/run_train_cuda.sh's setting) for AdamW, Muon (bf16
# Newton–Schulz operands, the default, and fp32), GaLore, APOLLO, APOLLO-Mini
# and 8-bit AdamW, one after another, and prints a table last:
#  - step ms: the median over the steps after SKIP that refresh no projection
#    (a step's time is the trainer's, which syncs the device at its end);
#  - vs AdamW: that median over AdamW's (goal: Muon <= 1.05);
#  - refresh ms: GaLore/APOLLO's projection refresh (on the host: GaLore's
#    eigensolver on the downloaded gradient) = the median of the refresh steps
#    after step 1 minus the plain step median; "amortised" adds refresh/200
#    (the default gap) to the step (goal: GaLore <= 1.10 of AdamW);
#  - state B/param: optimizer-state bytes per parameter from lmc's start-up line;
#  - peak MiB: the GPU's memory.used (nvidia-smi, polled every 0.2 s) minus the
#    idle value before the run; "peak − AdamW, B/param": that peak's
#    difference from AdamW's run per parameter (measured, 1 MiB granularity);
#    8 + that = the measured state bytes per parameter.
# An optimizer whose run fails because the CUDA backend has no path for it is
# reported as such in the table, not as a script failure.
# Usage (device): bench/gpu_optim.sh     ($OUT gets table.md, test_optim_cuda.log and
#                 logs.tar.gz with every log and each run's metrics.jsonl)
# env: OUT (/tmp/lmc-gpu-optim), BUDGET_S (225: the whole script; a run gets
#      what is left, one that cannot start is listed as skipped), STEPS (20),
#      SKIP (3), GAP (8: refresh gap of the timed runs), KINDS ("adamw muon galore
#      adamw8bit apollo apollo-mini muon-fp32": the goals first), BATCH (16), SEQ (1024),
#      SKIP_BUILD=1, SKIP_TEST=1, BUILD_DIR (build-dev), JOBS (16), DEVICE (cuda),
#      LAYERS HIDDEN HEADS VOCAB MAXPOS (12 768 12 50304 1024)
# CPU smoke test of the script itself (no GPU: memory columns read 0):
#   DEVICE=cpu SKIP_BUILD=1 SKIP_TEST=1 BUILD_DIR=build LAYERS=2 HIDDEN=64 HEADS=4 VOCAB=512 \
#     MAXPOS=64 SEQ=32 BATCH=2 STEPS=10 GAP=4 bench/gpu_optim.sh
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
OUT=${OUT:-/tmp/lmc-gpu-optim}
BUDGET_S=${BUDGET_S:-225}
STEPS=${STEPS:-20}; SKIP=${SKIP:-3}; GAP=${GAP:-8}; BATCH=${BATCH:-16}; SEQ=${SEQ:-1024}
KINDS=${KINDS:-adamw muon galore adamw8bit apollo apollo-mini muon-fp32}
B=${BUILD_DIR:-build-dev}; JOBS=${JOBS:-16}; DEVICE=${DEVICE:-cuda}
LAYERS=${LAYERS:-12}; HIDDEN=${HIDDEN:-768}; HEADS=${HEADS:-12}; VOCAB=${VOCAB:-50304}; MAXPOS=${MAXPOS:-1024}
DTYPE=bf16; [ "$DEVICE" = cuda ] || DTYPE=fp32
WORK=/tmp/lmc-gpu-optim-work
L=$WORK/logs # every log; $OUT gets only table.md, test_optim_cuda.log and logs.tar.gz (the device returns 8 files)
rm -rf "$L"
mkdir -p "$OUT" "$WORK" "$L"
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
rc=0
DEVNAME=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
echo "date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown) device ${DEVNAME:-none}"

# ---- what the CUDA backend registers for the optimizers (backend table entries)
for e in adamw muon adamw8bit lowrank; do
  if grep -q "be->$e = " src/ops/cuda/backend_cuda.cu 2>/dev/null; then echo "cuda entry $e: registered"
  else echo "cuda entry $e: MISSING (optimizers using it will be refused on cuda)"; fi
done

# ---- build
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if ! pkg-config --exists libcjson 2>/dev/null && [ -f .devdeps/device-deps.sh ]; then
    # shellcheck disable=SC1091
    source .devdeps/device-deps.sh unpack
  fi
  case "${PKG_CONFIG_PATH:-}" in */tmp/devdeps/*) export PKG_CONFIG_SYSROOT_DIR=${PKG_CONFIG_SYSROOT_DIR:-/tmp/devdeps} ;; esac
  t=$(date +%s)
  if cmake -S . -B "$B" -DLMC_WERROR="${LMC_WERROR:-ON}" >"$L/build.log" 2>&1 &&
     make -C "$B" -j"$JOBS" lmc_cli test_optim_cuda >>"$L/build.log" 2>&1; then
    echo "build ok ($(($(date +%s) - t)) s)"
  else
    tail -30 "$L/build.log"; echo "build FAILED"; exit 1
  fi
fi
LMC=$B/lmc
[ -x "$LMC" ] || { echo "no $LMC"; exit 1; }

# ---- the CUDA optimizer tests (GPU vs CPU backend)
if [ "${SKIP_TEST:-0}" != 1 ]; then
  timeout 90 "$B/test_optim_cuda" >"$L/test_optim_cuda.log" 2>&1; r=$?
  grep '^FAIL' "$L/test_optim_cuda.log" | head -20
  echo "test_optim_cuda rc=$r: $(tail -1 "$L/test_optim_cuda.log")"
  [ $r = 0 ] || rc=1
fi

# ---- timed runs at GPT-2 124M's shape
DATA=$WORK/data-v$VOCAB
if [ ! -f "$DATA/train_00000.bin" ]; then
  python3 bench/bench_train.py write-shards "$DATA" --vocab "$VOCAB" --tokens $((BATCH * (SEQ + 1) * (STEPS + 2))) \
    --val-tokens 65536 >/dev/null || { echo "write-shards failed"; exit 1; }
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
flags() {
  case $1 in
    adamw) echo "" ;;
    muon) echo "--optim muon" ;;
    muon-fp32) echo "--optim muon --muon-ns-bf16 0" ;;
    galore) echo "--optim galore --galore-update-gap $GAP" ;;          # rank 128, scale 0.25
    apollo) echo "--optim apollo --apollo-update-gap $GAP" ;;          # rank 256, channel-wise
    apollo-mini) echo "--optim apollo-mini --apollo-update-gap $GAP" ;;
    adamw8bit) echo "--optim adamw8bit" ;;
    *) echo "UNKNOWN" ;;
  esac
}
: >"$WORK/runs.txt"
for k in $KINDS; do
  f=$(flags "$k")
  [ "$f" = UNKNOWN ] && { echo "$k unknown kind" >>"$WORK/runs.txt"; continue; }
  lim=$(left); lim=$((lim - 10))
  [ $lim -gt 90 ] && lim=90
  if [ $lim -lt 20 ]; then echo "$k skipped (out of time budget)" | tee -a "$WORK/runs.txt"; continue; fi
  run=$WORK/run-$k
  rm -rf "$run"
  base=$(smi_used); base=${base:-0}
  echo 0 >"$L/$k.mem"
  # shellcheck disable=SC2086
  timeout --kill-after=5 $lim "$LMC" train --data "$DATA" -o "$run" --arch gpt2 --vocab "$VOCAB" --layers "$LAYERS" \
    --hidden "$HIDDEN" --heads "$HEADS" --max-pos "$MAXPOS" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --lr 3e-4 \
    --warmup 0 --eval-every 0 --save-every 0 --device "$DEVICE" --dtype "$DTYPE" $f >"$L/$k.log" 2>&1 &
  pid=$!
  poll_mem $pid "$L/$k.mem" &
  poller=$!
  wait $pid; r=$?
  wait $poller 2>/dev/null
  cp "$run/metrics.jsonl" "$L/$k-metrics.jsonl" 2>/dev/null
  rm -rf "$run"
  echo "$k rc=$r base=$base peak=$(cat "$L/$k.mem") limit=$lim" | tee -a "$WORK/runs.txt"
  if [ $r != 0 ]; then
    why=$(grep -v '^step' "$L/$k.log" | grep -v '^\s*$' | tail -1 | cut -c1-200)
    echo "  $k: $why"
    # a kind the CUDA backend cannot run is a reported gap, not a failure of this script
    if echo "$why" | grep -qE "not available on the [a-z]+ backend"; then
      echo "$k nocuda $why" >>"$WORK/runs.txt"
    else rc=1; fi
  fi
done

# ---- the table
SHAPE="$DEVICE, GPT-2 shape: $LAYERS layers, hidden $HIDDEN, $HEADS heads, vocab $VOCAB, $MAXPOS positions, batch $BATCH x $SEQ, $DTYPE"
python3 - "$WORK/runs.txt" "$L" "$STEPS" "$SKIP" "$GAP" "$KINDS" "$SHAPE" <<'PY' | tee "$L/table.md"
import json, os, re, statistics, sys
runs_txt, out, steps, skip, gap, kinds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6].split()
shape = sys.argv[7]
info = {}
for l in open(runs_txt):
    w = l.split()
    if len(w) >= 2 and w[1].startswith("rc="):
        d = dict(x.split("=", 1) for x in w[1:] if "=" in x)
        info[w[0]] = {"rc": int(d["rc"]), "base": int(d["base"] or 0), "peak": int(d["peak"] or 0)}
    elif len(w) >= 2 and w[1] == "nocuda":
        info.setdefault(w[0], {})["nocuda"] = " ".join(w[2:])
    elif len(w) >= 2:
        info[w[0]] = {"note": " ".join(w[1:])}
res = {}
for k in kinds:
    i = info.get(k, {"note": "not run"})
    r = {"i": i}
    p = os.path.join(out, k + "-metrics.jsonl")
    log = open(os.path.join(out, k + ".log")).read() if os.path.exists(os.path.join(out, k + ".log")) else ""
    m = re.search(r"state (\d+) bytes \(([\d.]+) per parameter\)", log)
    r["state"] = float(m.group(2)) if m else (8.0 if k == "adamw" else None)
    m = re.search(r"(\d+) parameters", log)
    r["n"] = int(m.group(1)) if m else None
    refresh = k in ("galore", "apollo", "apollo-mini")
    if os.path.exists(p):
        rows = [json.loads(l) for l in open(p) if l.strip()]
        ms = {x["step"]: x.get("tokens_per_s") for x in rows}
        tok = None
        m = re.search(r"batch (\d+) x (\d+) x (\d+) accum", log)
        tok = int(m.group(1)) * int(m.group(2)) * int(m.group(3)) if m else None
        def st(s):
            return 1000.0 * tok / ms[s] if tok and ms.get(s) else None
        is_ref = lambda s: refresh and (s - 1) % gap == 0
        plain = [st(s) for s in ms if s > skip and not is_ref(s) and st(s)]
        refs = [st(s) for s in ms if s > 1 and is_ref(s) and st(s)]
        r["step"] = statistics.median(plain) if plain else None
        r["refresh"] = (statistics.median(refs) - r["step"]) if refs and r["step"] else None
        r["nsteps"] = len(plain)
    res[k] = r
a = res.get("adamw", {})
print()
print(f"{shape}; {steps} steps per optimizer; step = median over steps > {skip} "
      f"without a projection refresh; refresh gap {gap} in these runs, amortised over 200")
print()
print("| optimizer | step ms | vs AdamW | refresh ms | amortised /200 vs AdamW | state B/param (log) "
      "| peak MiB above idle | peak − AdamW, B/param | measured state B/param | note |")
print("|---|---|---|---|---|---|---|---|---|---|")
f = lambda v, fmt: (fmt % v) if v is not None else "—"
for k in kinds:
    r = res[k]; i = r["i"]
    note = i.get("note", "")
    if "nocuda" in i:
        note = "no CUDA path: " + i["nocuda"]
    elif i.get("rc", 0) not in (0,):
        note = f"FAILED rc={i['rc']} (see {k}.log)" if i.get("rc") not in (124, 137) else "cut at the time limit"
    ratio = r["step"] / a["step"] if r.get("step") and a.get("step") else None
    am = None
    if r.get("step") and a.get("step"):
        am = (r["step"] + (r["refresh"] or 0) / 200.0) / a["step"]
    peak = i["peak"] - i["base"] if "peak" in i and shape.startswith("cuda") else None
    dpp = None
    if peak is not None and "peak" in a.get("i", {}) and r["n"]:
        dpp = (peak - (a["i"]["peak"] - a["i"]["base"])) * 1048576.0 / r["n"]
    meas = 8.0 + dpp if dpp is not None else None
    print(f"| {k} | {f(r.get('step'), '%.1f')} | {f(ratio, '%.3f')} | {f(r.get('refresh'), '%.0f')} | {f(am, '%.3f')} "
          f"| {f(r['state'], '%.3f')} | {f(peak, '%d')} | {f(dpp, '%+.2f')} | {f(meas, '%.2f')} | {note} |")
PY
cp "$WORK/runs.txt" "$L/"
cp "$L/table.md" "$OUT/"
cp "$L/test_optim_cuda.log" "$OUT/" 2>/dev/null
tar -czf "$OUT/logs.tar.gz" -C "$L" . 2>/dev/null
echo "=== total $(($(date +%s) - T0)) s; rc=$rc"
exit $rc
