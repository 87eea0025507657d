#!/usr/bin/env bash
# run_optim_cpu.sh — Muon's step-time overhead against AdamW on the CPU at
# GPT-2 124M's architecture (issue 16's goal: Muon <= 1.05x AdamW's step).
# Runs `lmc train --device cpu` on random token ids (GPT-2 124M: 12 layers,
# hidden 768, 12 heads, vocab 50257, 1024 positions, tied; random init) for
# each kind in KINDS, the kinds interleaved ROUNDS times, STEPS steps each,
# and reads every step's own timers from metrics.jsonl: step_ms, optim_ms
# (the optimizer update alone, backend synced) and their process CPU times
# (step_cpu_ms, optim_cpu_ms: all threads; on a loaded machine CPU time
# moves less than wall time).
#
# The overhead is a difference over the whole step:
#   overhead(T) = (O_kind - O_adamw) / (F(T) + O_adamw)
# O = the kind's median optimizer time (steps > SKIP), F(T) = forward +
# backward (step_ms - optim_ms, the median over every kind's steps > SKIP)
# at T tokens per optimizer step. The runs measure F at the tokens they use
# (BATCH x SEQ x ACCUM); the other rows of TOKENS_AT scale it linearly
# (micro-batches of SEQ tokens run one after the other: F is linear in
# ACCUM at a fixed SEQ) — marked "scaled" in the table. tokens_5pct is the
# T where the overhead falls to 5%. Newton–Schulz's work does not depend on
# T (1.09 TFLOP plain, 0.70 in Gram space per 124M optimizer step), the
# model's does (6 x 124M x T flops).
#
# Usage (repository root, after `cmake --build build --target lmc_cli`):
#   bench/run_optim_cpu.sh
#   (bench/results/muon-f32-cpu-2026-12-06.md, 2 cores: LAYERS=12 STEPS=3 KINDS="adamw muon muon-plain")
#   16 cores with AVX512-BF16, a 16 k-token step measured directly:
#   THREADS=16 DTYPE=bf16 ACCUM=16 STEPS=3 ROUNDS=2 KINDS="adamw muon muon-bf16 muon-plain" bench/run_optim_cpu.sh
# env: BUILD_DIR (build), OUT (/tmp/lmc-optim-cpu: table.md, logs), THREADS (2), DTYPE (fp32 | bf16: the training
#      dtype), ACCUM (1), BATCH (1), SEQ (1024), LAYERS (12), STEPS (3), SKIP (1: step 1 is the warm-up),
#      ROUNDS (1), KINDS ("adamw muon muon-plain"; also muon-gram, muon-bf16), TOKENS_AT ("8192 16384 32768 524288"),
#      RUN_LIMIT (3600 s per run)
# Kinds: adamw; muon (the CPU default: --muon-ns-dtype auto = fp32, Gram space for rectangular matrices);
# muon-gram (fp32 Gram space, forced); muon-plain (fp32, --muon-ns-gram 0); muon-bf16 (--muon-ns-dtype bf16:
# AVX512-BF16 where the CPU has it, a portable kernel elsewhere).
set -u
B=${BUILD_DIR:-build}; OUT=${OUT:-/tmp/lmc-optim-cpu}
THREADS=${THREADS:-2}; DTYPE=${DTYPE:-fp32}; ACCUM=${ACCUM:-1}; BATCH=${BATCH:-1}; SEQ=${SEQ:-1024}
LAYERS=${LAYERS:-12}; STEPS=${STEPS:-3}; SKIP=${SKIP:-1}; ROUNDS=${ROUNDS:-1}
KINDS=${KINDS:-adamw muon muon-plain}; TOKENS_AT=${TOKENS_AT:-8192 16384 32768 524288}; RUN_LIMIT=${RUN_LIMIT:-3600}
VOCAB=50257
LMC=$B/lmc
[ -x "$LMC" ] || { echo "FATAL: no $LMC (cmake --build $B --target lmc_cli)" >&2; exit 1; }
[ "$STEPS" -gt "$SKIP" ] || { echo "FATAL: STEPS ($STEPS) must exceed SKIP ($SKIP)" >&2; exit 1; }
mkdir -p "$OUT" || exit 1
L=$OUT/logs; rm -rf "$L"; mkdir -p "$L"
HEAD="date $(date -u +%FT%TZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); cpu $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); avx512_bf16: $(grep -q avx512_bf16 /proc/cpuinfo && echo yes || echo no)"
echo "$HEAD" | tee "$OUT/table.md"
DATA=$OUT/data
if [ ! -f "$DATA/train_00000.bin" ]; then
  python3 bench/bench_train.py write-shards "$DATA" --vocab "$VOCAB" --tokens $((BATCH * ACCUM * (SEQ + 1) * (STEPS + 2))) \
    --val-tokens 65536 >/dev/null || { echo "FATAL: write-shards failed" >&2; exit 1; }
fi
flags() {
  case $1 in
    adamw) echo "" ;;
    muon) echo "--optim muon" ;;
    muon-gram) echo "--optim muon --muon-ns-dtype f32 --muon-ns-gram 1" ;;
    muon-plain) echo "--optim muon --muon-ns-dtype f32 --muon-ns-gram 0" ;;
    muon-bf16) echo "--optim muon --muon-ns-dtype bf16" ;;
    *) echo UNKNOWN ;;
  esac
}
rc=0
for rd in $(seq 1 "$ROUNDS"); do
  for k in $KINDS; do
    f=$(flags "$k")
    [ "$f" = UNKNOWN ] && { echo "FATAL: unknown kind $k" >&2; exit 1; }
    tag=$k-r$rd; run=$OUT/run-$tag; rm -rf "$run"
    echo "  $tag: load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$L/load.txt"
    # shellcheck disable=SC2086
    timeout --kill-after=5 "$RUN_LIMIT" "$LMC" train --data "$DATA" -o "$run" --arch gpt2 --vocab "$VOCAB" \
      --layers "$LAYERS" --hidden 768 --heads 12 --max-pos 1024 --batch "$BATCH" --seq "$SEQ" --accum "$ACCUM" \
      --steps "$STEPS" --lr 3e-4 --warmup 0 --eval-every 0 --save-every 0 --device cpu --dtype "$DTYPE" \
      --threads "$THREADS" $f >"$L/$tag.log" 2>&1
    r=$?
    cp "$run/metrics.jsonl" "$L/$tag-metrics.jsonl" 2>/dev/null
    rm -rf "$run"
    [ $r = 0 ] || { echo "  FAIL $tag rc=$r: $(tail -1 "$L/$tag.log" | cut -c1-200)"; rc=1; }
  done
done
echo "  end: load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$L/load.txt"
python3 - "$L" "$KINDS" "$ROUNDS" "$SKIP" "$((BATCH * SEQ * ACCUM))" "$TOKENS_AT" \
  "layers $LAYERS (GPT-2 124M: 12), hidden 768, 12 heads, vocab $VOCAB; batch $BATCH x seq $SEQ x accum $ACCUM; $DTYPE training; $THREADS threads; $ROUNDS round(s) of $STEPS steps, steps > $SKIP measured" \
  <<'PY' | tee -a "$OUT/table.md"
import json, os, statistics as S, sys
L, kinds, rounds, skip, tok, tat, what = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), [int(x) for x in sys.argv[6].split()], sys.argv[7]
res, F, Fc = {}, [], []
for k in kinds:
    o, oc, st, sc = [], [], [], []
    for rd in range(1, rounds + 1):
        p = os.path.join(L, f"{k}-r{rd}-metrics.jsonl")
        if not os.path.exists(p): continue
        for x in (json.loads(l) for l in open(p) if l.strip()):
            if x["step"] <= skip or "optim_ms" not in x: continue
            o.append(x["optim_ms"]); st.append(x["step_ms"]); F.append(x["step_ms"] - x["optim_ms"])
            if "optim_cpu_ms" in x:
                oc.append(x["optim_cpu_ms"]); sc.append(x["step_cpu_ms"]); Fc.append(x["step_cpu_ms"] - x["optim_cpu_ms"])
    res[k] = dict(o=S.median(o) if o else None, oc=S.median(oc) if oc else None, st=S.median(st) if st else None,
                  sc=S.median(sc) if sc else None, n=len(o))
F = S.median(F) if F else None; Fc = S.median(Fc) if Fc else None
print(f"\n{what}\n")
print(f"forward+backward at {tok} tokens (median step_ms - optim_ms over every kind's measured steps): "
      f"{F:.0f} ms wall" + (f", {Fc:.0f} ms CPU" if Fc else "") if F else "no measured steps")
print()
fmt = lambda v, f="%.0f": (f % v) if v is not None else "—"
print("| optimizer | measured steps | step ms | optimizer ms (wall) | optimizer ms (CPU) | O - O_adamw ms (wall) |"
      " overhead at " + str(tok) + " tokens (wall) | (CPU) | tokens for 5% (wall) | (CPU) |")
print("|---|---|---|---|---|---|---|---|---|---|")
a = res.get("adamw", {})
def ovh(r, T, cpu=False):
    O, Oa, f = (r["oc"], a.get("oc"), Fc) if cpu else (r["o"], a.get("o"), F)
    if O is None or Oa is None or f is None: return None
    return (O - Oa) / (f * T / tok + Oa)
for k in kinds:
    r = res[k]
    d = r["o"] - a["o"] if r["o"] is not None and a.get("o") is not None else None
    dc = r["oc"] - a["oc"] if r["oc"] is not None and a.get("oc") is not None else None
    t5 = tok * (d / 0.05 - a["o"]) / F if d is not None and F and k != "adamw" else None
    t5c = tok * (dc / 0.05 - a["oc"]) / Fc if dc is not None and Fc and k != "adamw" else None
    print(f"| {k} | {r['n']} | {fmt(r['st'])} | {fmt(r['o'])} | {fmt(r['oc'])} | {fmt(d)} | "
          f"{fmt(ovh(r, tok), '%.3f')} | {fmt(ovh(r, tok, True), '%.3f')} | {fmt(t5)} | {fmt(t5c)} |")
print("\nOverhead (O - O_adamw) / (F(T) + O_adamw) at other tokens per optimizer step (F scaled linearly from the"
      f" measured {tok}; wall / CPU):\n")
print("| optimizer | " + " | ".join(f"{T} tokens{'' if T == tok else ' (scaled)'}" for T in tat) + " |")
print("|---|" + "---|" * len(tat))
for k in kinds:
    if k == "adamw": continue
    print(f"| {k} | " + " | ".join(f"{fmt(ovh(res[k], T), '%.3f')} / {fmt(ovh(res[k], T, True), '%.3f')}" for T in tat) + " |")
sys.exit(0 if all(res[k]["n"] for k in kinds) else 1)
PY
[ $? = 0 ] || rc=1
exit $rc
