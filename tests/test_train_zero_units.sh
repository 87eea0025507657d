#!/usr/bin/env bash
# test_train_zero_units.sh — data-parallel `lmc train` with one ZeRO unit per
# model part (trainer_dist.c: stage 2 reduce-scatters each layer's gradient
# after its backward, stage 3 gathers each layer's parameters before use):
# 20 steps (accumulation 2, clipping, validation) at world 1 (`--zero S` in
# one process) and world 4 (mpirun -np 4) for ZeRO 0-3, and a tied-head
# GPT-2 (transposed Conv1D tensors, learned positions) and a tied llama at
# world 2 for ZeRO 2 and 3, each against the one-process run with the same
# global batch: losses, validation losses and final parameters <= 1e-6
# relative (GPT-2's parameters 1e-5, and ZeRO 2 and 3 = ZeRO 0 bit for
# bit: see below); stop at step 10 + resume equals the uninterrupted run bit for
# bit at world 4 (ZeRO 2) and world 1 (ZeRO 3); a world-4 ZeRO-3 checkpoint
# resumed by 2 ranks (resharded) = the one-process run; `-m DIR` (each rank
# reads only its shard of the folder) at world 1 and 4 = the one-process run
# from it; `--bucket-mb` (units of several parts) at world 4 for ZeRO 1-3 and
# a tied llama at world 2, and its checkpoint resumed unbucketed on 2 ranks,
# = the one-process run; --optim muon and adamw8bit at world 4, galore and
# apollo at world 2 (stage 0 through the zero module, bucketed) = their
# one-process runs, and with --zero 1 (their state sharded by whole tensors;
# a stop + resume bit-exact, other resumes refused). The mpirun part is skipped
# when mpirun is missing or lmc was built without MPI.
# Usage: test_train_zero_units.sh PATH/TO/lmc
set -u
LMC="$1"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TMP=${KEEP_TMP:-$(mktemp -d)}; [ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$TMP"' EXIT
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export LMC_DIST_TIMEOUT=60
MPIRUN=(timeout 300 mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo
        --mca oob_tcp_if_include lo)
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/c.txt"
"$LMC" train-tokenizer --text-file "$TMP/c.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>"$TMP/err" &&
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/c.txt" --docs line --val-fraction 0.1 -o "$TMP/data" 2>"$TMP/err" ||
  { echo "FAIL: data: $(cat "$TMP/err")" >&2; exit 1; }
C="--data $TMP/data --seq 16 --steps 20 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 10
   --eval-every 10 --eval-batches 2"
A="$C --arch llama --layers 3 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96"
G="$C --arch gpt2 --layers 2 --hidden 64 --heads 4"
T="$A --tie"
# compare DIR REF [PTOL [LTOL]]: losses, validation losses (LTOL, default 1e-6), final parameters (PTOL, default 1e-6)
compare() {
  python3 - "$TMP/$1" "$TMP/$2" "${3:-1e-6}" "${4:-1e-6}" <<'PY'
import json, struct, sys
def rows(d): return [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
def params(d):
    b = open(f"{d}/step_000020/model.safetensors", "rb").read()
    n = int.from_bytes(b[:8], "little"); h = json.loads(b[8:8 + n]); base = 8 + n; out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; out[k] = struct.unpack(f"<{(e - s) // 4}f", b[base + s:base + e])
    return out
r, ref, p, refp = rows(sys.argv[1]), rows(sys.argv[2]), params(sys.argv[1]), params(sys.argv[2])
assert len(r) == 20 == len(ref) and sorted(p) == sorted(refp), (len(r), len(ref))
wl = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(r, ref))
wv = max(abs(a["val_loss"] - b["val_loss"]) / abs(b["val_loss"]) for a, b in zip(r, ref) if "val_loss" in b)
scale = max(abs(x) for t in refp.values() for x in t)
wp = max(abs(x - y) for k in refp for x, y in zip(p[k], refp[k])) / scale
print(f"{sys.argv[1].rsplit('/', 1)[1]}: losses max rel {wl:.2e}, val {wv:.2e}, params max |diff| / max |p| {wp:.2e}")
lt = float(sys.argv[4])
sys.exit(0 if wl <= lt and wv <= lt and wp <= float(sys.argv[3]) else 1)
PY
}
# bitexact A B: the same losses and the same final model file
bitexact() {
  python3 - "$TMP/$1" "$TMP/$2" <<'PY'
import json, sys
a, b = sys.argv[1], sys.argv[2]
la = [json.loads(l)["loss"] for l in open(f"{a}/metrics.jsonl")]
lb = [json.loads(l)["loss"] for l in open(f"{b}/metrics.jsonl")]
assert la == lb, (la, lb)
assert open(f"{a}/step_000020/model.safetensors", "rb").read() == open(f"{b}/step_000020/model.safetensors", "rb").read()
PY
}
"$LMC" train $A --batch 4 -o "$TMP/ref" 2>"$TMP/err"; ok $? "one process: $(tail -n 3 "$TMP/err")"
for z in 0 1 2 3; do # world 1: the zero module in one process
  "$LMC" train $A --batch 4 --zero $z -o "$TMP/w1z$z" 2>"$TMP/err"; ok $? "world 1 zero $z: $(tail -n 3 "$TMP/err")"
  compare "w1z$z" ref; ok $? "world 1 zero $z equals the one-process run"
done
"$LMC" train $A --batch 4 --zero 3 --stop-at 10 -o "$TMP/w1r" 2>"$TMP/err" &&
"$LMC" train --data "$TMP/data" --threads 1 --batch 4 --zero 3 --resume latest -o "$TMP/w1r" 2>"$TMP/err"
ok $? "world 1 zero 3 stop + resume: $(tail -n 3 "$TMP/err")"
bitexact w1r w1z3; ok $? "world 1 zero 3 resumed = uninterrupted, bit for bit"
if ! command -v mpirun >/dev/null 2>&1; then
  echo "test_train_zero_units: mpirun part skipped (no mpirun)"
else
  "${MPIRUN[@]}" -np 1 "$LMC" train $A --batch 4 --zero 0 --steps 1 -o "$TMP/probe" 2>"$TMP/err"
  if grep -q "without MPI\|no MPI" "$TMP/err"; then
    echo "test_train_zero_units: mpirun part skipped (lmc built without MPI)"
  else
    for z in 0 1 2 3; do
      "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero $z -o "$TMP/w4z$z" 2>"$TMP/err"
      ok $? "world 4 zero $z: $(tail -n 3 "$TMP/err")"
      compare "w4z$z" ref; ok $? "world 4 zero $z equals the one-process run"
    done
    "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero 2 --stop-at 10 -o "$TMP/w4r" 2>"$TMP/err" &&
    "${MPIRUN[@]}" -np 4 "$LMC" train --data "$TMP/data" --threads 1 --zero 2 --resume latest -o "$TMP/w4r" 2>"$TMP/err"
    ok $? "world 4 zero 2 stop + resume: $(tail -n 3 "$TMP/err")"
    bitexact w4r w4z2; ok $? "world 4 zero 2 resumed = uninterrupted, bit for bit"
    # another world resumes by resharding: 4 ranks stop at 10, 2 ranks (batch 2: the same global batch) go on
    "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero 3 --stop-at 10 -o "$TMP/w42" 2>"$TMP/err" &&
    "${MPIRUN[@]}" -np 2 "$LMC" train --data "$TMP/data" --threads 1 --batch 2 --zero 3 --eval-every 10 --eval-batches 2 \
      --resume latest -o "$TMP/w42" 2>"$TMP/err"
    ok $? "world 4 -> 2 zero 3 resume: $(tail -n 3 "$TMP/err")"
    compare w42 ref; ok $? "world 4 -> 2 zero 3 resumed equals the one-process run"
    # tied heads: part 0 serves the embedding and the classifier. GPT-2's
    # key bias has a zero gradient up to rounding (softmax ignores it):
    # AdamW turns the rounding of the 2-rank sum into updates, 3.3e-6 of
    # max |p| at ZeRO 0 as at 2 and 3; those equal ZeRO 0 bit for bit
    for m in G T; do
      "$LMC" train ${!m} --batch 4 -o "$TMP/ref$m" 2>"$TMP/err"; ok $? "$m one process: $(tail -n 3 "$TMP/err")"
      for z in 0 2 3; do
        "${MPIRUN[@]}" -np 2 "$LMC" train ${!m} --batch 2 --zero $z -o "$TMP/$m$z" 2>"$TMP/err"
        ok $? "$m world 2 zero $z: $(tail -n 3 "$TMP/err")"
      done
      compare "${m}0" "ref$m" $([ $m = G ] && echo 1e-5); ok $? "$m world 2 zero 0 equals the one-process run"
      for z in 2 3; do bitexact "$m$z" "${m}0"; ok $? "$m world 2 zero $z = zero 0 bit for bit"; done
    done
    # -m DIR: the ranks read only their shard from the folder (lmc_tmodel_src_dir; GPT-2's Conv1D
    # tensors transposed and cut by the parts), 3 steps against the one-process run from it
    for m in A G; do
      src=ref; [ $m = G ] && src=refG
      M="--data $TMP/data --seq 16 --steps 3 --lr 3e-3 --warmup 1 --threads 1 -m $TMP/$src/step_000020"
      "$LMC" train $M --batch 4 -o "$TMP/dir$m" 2>"$TMP/err"; ok $? "$m -m one process: $(tail -n 3 "$TMP/err")"
      "$LMC" train $M --batch 4 --zero 3 -o "$TMP/dir${m}w1" 2>"$TMP/err"; ok $? "$m -m world 1: $(tail -n 3 "$TMP/err")"
      "${MPIRUN[@]}" -np 4 "$LMC" train $M --batch 1 --zero 3 -o "$TMP/dir${m}w4" 2>"$TMP/err"
      ok $? "$m -m world 4 zero 3: $(tail -n 3 "$TMP/err")"
      python3 - "$TMP/dir$m" "$TMP/dir${m}w1" "$TMP/dir${m}w4" <<'PY'
import json, sys
ls = [[json.loads(l)["loss"] for l in open(f"{d}/metrics.jsonl")] for d in sys.argv[1:]]
assert len(ls[0]) == 3 and ls[1] == ls[0], ls
w = max(abs(a - b) / abs(b) for a, b in zip(ls[2], ls[0]))
print(f"{sys.argv[3].rsplit('/', 1)[1]}: losses max rel {w:.2e} (world 1: equal)")
sys.exit(0 if len(ls[2]) == 3 and w <= 1e-6 else 1)
PY
      ok $? "$m -m: world 1 zero 3 = one process bit for bit, world 4 within 1e-6"
    done
    # --bucket-mb: consecutive parts merged into one zero unit (a layer of the llama is 0.118 MiB, the
    # embedding 0.073: 0.15 gives units {embedding, layer 0}, {layers 1, 2}, {norm, head}; the tied
    # llama's 0.1 puts the embedding with layer 0), reduced and
    # gathered as one; a bucketed ZeRO-3 checkpoint resumed unbucketed by 2 ranks (regrouped)
    for z in 1 2 3; do
      "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero $z --bucket-mb 0.15 -o "$TMP/b4z$z" 2>"$TMP/err"
      ok $? "bucketed world 4 zero $z: $(tail -n 3 "$TMP/err")"
      grep -q "5 model parts in 3 units" "$TMP/err"; ok $? "bucketed world 4 zero $z: 3 units: $(grep buckets "$TMP/err")"
      compare "b4z$z" ref; ok $? "bucketed world 4 zero $z equals the one-process run"
    done
    "${MPIRUN[@]}" -np 2 "$LMC" train $T --batch 2 --zero 3 --bucket-mb 0.1 -o "$TMP/bT3" 2>"$TMP/err"
    ok $? "bucketed tied world 2 zero 3: $(tail -n 3 "$TMP/err")"
    compare bT3 refT; ok $? "bucketed tied world 2 zero 3 equals the one-process run"
    "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --zero 3 --bucket-mb 0.15 --stop-at 10 -o "$TMP/b42" 2>"$TMP/err" &&
    "${MPIRUN[@]}" -np 2 "$LMC" train --data "$TMP/data" --threads 1 --batch 2 --zero 3 --eval-every 10 --eval-batches 2 \
      --resume latest -o "$TMP/b42" 2>"$TMP/err"
    ok $? "bucketed world 4 -> unbucketed 2 zero 3 resume: $(tail -n 3 "$TMP/err")"
    compare b42 ref; ok $? "bucketed world 4 -> unbucketed 2 zero 3 resumed equals the one-process run"
    # other optimizers (--optim): stage 0 through the zero module, each unit's gradient all-reduced
    # as its backward ends (with buckets too), then the same step on every rank. 8-bit AdamW's
    # moment codes turn the rounding of the 4-rank gradient sum into code flips (losses 1.7e-5,
    # parameters 1e-3 of max |p| after 20 steps): compared at 1e-4 / 1e-2, and bit for bit at
    # world 1 (--zero 0 in one process: the same code path without the sum)
    for k in muon adamw8bit galore apollo; do
      O="--optim $k"; [ $k = galore ] && O="$O --galore-rank 8 --galore-update-gap 2"
      [ $k = apollo ] && O="$O --apollo-rank 8 --apollo-update-gap 2"
      [ $k = adamw8bit ] && O="$O --adamw8bit-block 64"
      "$LMC" train $A --batch 4 $O -o "$TMP/ref$k" 2>"$TMP/err"; ok $? "$k one process: $(tail -n 3 "$TMP/err")"
      n=4; [ $k = galore ] || [ $k = apollo ] && n=2
      "${MPIRUN[@]}" -np $n "$LMC" train $A --batch $((4 / n)) $O --bucket-mb 0.15 -o "$TMP/o$k" 2>"$TMP/err"
      ok $? "$k world $n: $(tail -n 3 "$TMP/err")"
      if [ $k = adamw8bit ]; then
        compare "o$k" "ref$k" 1e-2 1e-4; ok $? "$k world $n equals the one-process run (8-bit tolerances)"
        "$LMC" train $A --batch 4 $O --zero 0 -o "$TMP/o${k}w1" 2>"$TMP/err"; ok $? "$k world 1: $(tail -n 3 "$TMP/err")"
        bitexact "o${k}w1" "ref$k"; ok $? "$k world 1 (zero module) = one process bit for bit"
      else
        compare "o$k" "ref$k"; ok $? "$k world $n equals the one-process run"
      fi
      # --zero 1: the state sharded by whole tensors (each rank steps its own and broadcasts them)
      [ $k = apollo ] && continue
      "${MPIRUN[@]}" -np $n "$LMC" train $A --batch $((4 / n)) $O --zero 1 -o "$TMP/s$k" 2>"$TMP/err"
      ok $? "$k world $n zero 1: $(tail -n 3 "$TMP/err")"
      if [ $k = adamw8bit ]; then compare "s$k" "ref$k" 1e-2 1e-4; else compare "s$k" "ref$k"; fi
      ok $? "$k world $n zero 1 (sharded state) equals the one-process run"
    done
    # a sharded run stopped at 10 and resumed = uninterrupted, bit for bit; resumed by --zero 0 or
    # another world: refused; APOLLO (index-seeded projections) refused at --zero 1
    "${MPIRUN[@]}" -np 4 "$LMC" train $A --batch 1 --optim muon --zero 1 --stop-at 10 -o "$TMP/sr" 2>"$TMP/err" &&
    "${MPIRUN[@]}" -np 4 "$LMC" train --data "$TMP/data" --threads 1 --zero 1 --optim muon --resume latest \
      -o "$TMP/sr" 2>"$TMP/err"
    ok $? "muon world 4 zero 1 stop + resume: $(tail -n 3 "$TMP/err")"
    bitexact sr smuon; ok $? "muon world 4 zero 1 resumed = uninterrupted, bit for bit"
    for w in "4 --zero 0" "2 --zero 1"; do
      set -- $w
      "${MPIRUN[@]}" -np $1 "$LMC" train --data "$TMP/data" --threads 1 --batch $((4 / $1)) $2 $3 --optim muon \
        --resume latest -o "$TMP/sr" 2>"$TMP/err"
      [ $? -ne 0 ] && grep -q "sharded over 4 ranks" "$TMP/err"; ok $? "sharded muon resumed by $w refused: $(grep -m1 sharded "$TMP/err")"
    done
    "${MPIRUN[@]}" -np 2 "$LMC" train $A --batch 2 --optim apollo --zero 1 -o "$TMP/bad" 2>"$TMP/err"
    [ $? -ne 0 ] && grep -q "APOLLO" "$TMP/err"; ok $? "--optim apollo --zero 1 refused: $(grep -m1 APOLLO "$TMP/err")"
  fi
fi
echo "test_train_zero_units: $pass passed, $fail failed"
[ $fail = 0 ]
