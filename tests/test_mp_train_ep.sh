#!/usr/bin/env bash
# test_mp_train_ep.sh — `lmc train --ep N` (train/trainer_ep.c): the experts
# split over N ranks, data parallel over the same ranks. 12 AdamW steps
# (accumulation 2, clipping, warmup + cosine, validation every 6) of
# mixtral-tiny (4 experts) at EP 2 and EP 4, and of qwen3moe-tiny (8
# experts, --router-aux-coef 0.05 so the load-balancing loss trains, layers
# recomputed) at EP 2 and EP 4, and a Mixtral-shape model from scratch
# (--arch mixtral, 8 experts: each rank draws the one-process values and
# keeps its part) at EP 2, give the one-process run with the same
# global batch: losses, validation losses and the aux loss within 1e-6
# relative, the expert-load metrics equal, the checkpoint's weights within
# 1e-6 in relative norm and 2e-6 of the largest weight element-wise (rank 0
# writes one folder with every expert; qwen3moe at EP 4 with batch 2 per
# rank against one process with batch 8);
# rank 1 logs no step; an EP 2 run stopped at step 6 and resumed
# (--resume latest) equals the uninterrupted EP 2 run bit for bit (model and
# optimizer files), and one process resumes its checkpoint and equals the
# one-process run; the checkpoint generates with `lmc generate`. Refused
# with clear messages: N not dividing the experts, a dense model, --ep with
# --tp / --zero 1 / --optim muon, a world other than N. Ranks meet over tcp (torchrun-style
# variables, a port from the OS, tried again if it was taken meanwhile);
# the qwen3moe EP 2 case runs under mpirun (--oversubscribe, run-as-root
# allowed) when mpirun is there and lmc has MPI, else over tcp too.
# Usage: test_mp_train_ep.sh PATH/TO/lmc
set -u
. "$(dirname "$0")/mp_launch.sh" "$1"
command -v python3 >/dev/null || { echo "test_mp_train_ep: skipped (python3 missing)"; exit 0; }
FX=tests/fixtures
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/c.txt"
"$LMC" prepare-data -m $FX/mixtral-tiny --text-file "$TMP/c.txt" --docs line --val-fraction 0.1 -o "$TMP/data" \
  2>"$TMP/err" || { echo "FAIL: data: $(cat "$TMP/err")" >&2; exit 1; }
S="--data $TMP/data --seq 16 --steps 12 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 6
   --eval-every 6 --eval-batches 2"
MX="$S -m $FX/mixtral-tiny"
QW="$S -m $FX/qwen3moe-tiny --router-aux-coef 0.05 --recompute"
SC="$S --arch mixtral --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 48"
# run W OUT ARGS...: W ranks of lmc train meet at a free port; rank r's stderr in OUT.r<r>
run() { local W=$1 out=$2; shift 2; mp_ranks "$W" "$out" train "$@" -o "$TMP/$out"; }
# mpirun when it works with this lmc (else tcp): W OUT ARGS...
mp_probe train $MX --batch 2 --steps 1 --warmup 0 --ep 2
MPI=$USE_MPI
mrun() {
  local W=$1 out=$2; shift 2
  [ $MPI = 1 ] || { run "$W" "$out" "$@"; return; }
  timeout 300 "${MPIRUN[@]}" -np "$W" "$LMC" train "$@" -o "$TMP/$out" >"$TMP/$out.r0" 2>&1
}

"$LMC" train $MX --batch 4 -o "$TMP/mx1" 2>"$TMP/err"; ok $? "mixtral one process: $(tail -3 "$TMP/err")"
run 2 mx2 $MX --batch 2 --ep 2; ok $? "mixtral --ep 2: $(tail -n 3 "$TMP"/mx2.r*)"
run 4 mx4 $MX --batch 1 --ep 4; ok $? "mixtral --ep 4: $(tail -n 3 "$TMP"/mx4.r*)"
grep -q "expert parallel x data parallel over 2 ranks, global batch 4 x 16 x 2 accum; each rank holds 2 of the 4 experts" \
  "$TMP/mx2.r0"; ok $? "mixtral --ep 2 start-up line: $(grep parallel "$TMP/mx2.r0")"
[ "$(grep -c '^step' "$TMP/mx2.r1")" = 0 ]; ok $? "rank 1 logged steps"
"$LMC" train $QW --batch 4 -o "$TMP/qw1" 2>"$TMP/err"; ok $? "qwen3moe one process: $(tail -3 "$TMP/err")"
mrun 2 qw2 $QW --batch 2 --ep 2; ok $? "qwen3moe --ep 2 (mpi $MPI): $(tail -n 3 "$TMP"/qw2.r*)"
"$LMC" train $QW --batch 8 -o "$TMP/qw8" 2>"$TMP/err"; ok $? "qwen3moe one process, batch 8: $(tail -3 "$TMP/err")"
run 4 qw4 $QW --batch 2 --ep 4; ok $? "qwen3moe --ep 4: $(tail -n 3 "$TMP"/qw4.r*)"
"$LMC" train $SC --batch 4 -o "$TMP/sc1" 2>"$TMP/err"; ok $? "from scratch one process: $(tail -3 "$TMP/err")"
run 2 sc2 $SC --batch 2 --ep 2; ok $? "from scratch --ep 2: $(tail -n 3 "$TMP"/sc2.r*)"
# stopped at 6 and resumed at EP 2, and by one process (global batch 4)
run 2 rs $MX --batch 2 --ep 2 --stop-at 6; ok $? "mixtral --ep 2 stop at 6: $(tail -n 3 "$TMP"/rs.r*)"
mkdir -p "$TMP/rs1" && cp -r "$TMP/rs/step_000006" "$TMP/rs1/" && cp "$TMP/mx1/metrics.jsonl" "$TMP/rs1/"
sed -i '7,$d' "$TMP/rs1/metrics.jsonl"
R="--data $TMP/data --threads 1 --resume latest --save-every 6 --eval-every 6 --eval-batches 2"
run 2 rs $R --ep 2; ok $? "mixtral --ep 2 resume: $(tail -n 3 "$TMP"/rs.r*)"
"$LMC" train $R --batch 4 -o "$TMP/rs1" 2>"$TMP/err"; ok $? "one-process resume of the EP checkpoint: $(tail -3 "$TMP/err")"
for f in model optimizer; do
  cmp -s "$TMP/rs/step_000012/$f.safetensors" "$TMP/mx2/step_000012/$f.safetensors"
  ok $? "--ep 2 stopped at 6 and resumed: $f.safetensors equals the uninterrupted run's bit for bit"
done
"$LMC" generate -m "$TMP/mx2/step_000012" -p "the quick" -n 4 --temp 0 >"$TMP/gen" 2>"$TMP/err"
ok $? "generate from the EP checkpoint: $(tail -3 "$TMP/err")"
# the replicated gradients are summed over the ranks in another order than one process sums its
# rows, and a rank's 16-row micro-batch (EP 4, batch 1) runs the small-M matmul kernels: the
# losses agree to ~1e-8, the weights to ~1e-7 in norm and <= 1e-6 of the largest element-wise
# (AdamW's normalisation amplifies the rounding of gradients near zero: qwen3moe at EP 4 with
# batch 1 per rank measured 8e-6 element-wise, 8.3e-7 in norm; with batch 2 per rank 6.2e-7)
# (AVX2-only CPUs, whose fp32 kernels block the sums otherwise: 4.9e-6 element-wise measured on
# a Zen 3, qwen3moe at EP 2; hence 1e-5 there)
MAXTOL=2e-6; grep -q avx512f /proc/cpuinfo || MAXTOL=1e-5
python3 tests/mp_compare.py --root "$TMP" --step 12 mx2:mx1 mx4:mx1 rs1:mx1 qw2:qw1 qw4:qw8 sc2:sc1 --ref-rows 12 \
  --ref-key .experts.3. --steps 12 --keys --loss 1e-6 --val 1e-6 --aux 1e-6 --expert-tokens --norm 1e-6 --max $MAXTOL \
  --adamw-v 1e-5
ok $? "EP 2 / EP 4 runs and the one-process resume of an EP checkpoint equal the one-process run (1e-6)"
# refusals
run 3 nd $QW --batch 1 --ep 3
[ $? != 0 ] && grep -q "8 experts of each layer do not divide over 3 ranks" "$TMP/nd.r0"
ok $? "--ep 3 with 8 experts: $(tail -n 2 "$TMP/nd.r0")"
run 2 dense $S -m $FX/llama-tiny --batch 2 --ep 2
[ $? != 0 ] && grep -q "dense model" "$TMP/dense.r0"; ok $? "dense --ep 2: $(tail -n 2 "$TMP/dense.r0")"
run 2 mu $MX --batch 2 --ep 2 --optim muon
[ $? != 0 ] && grep -q "AdamW only" "$TMP/mu.r0"; ok $? "--ep 2 --optim muon: $(tail -n 2 "$TMP/mu.r0")"
"$LMC" train $MX --batch 2 --ep 2 -o "$TMP/w1" 2>"$TMP/err"
[ $? = 2 ] && grep -q "needs 2 ranks" "$TMP/err"; ok $? "--ep 2 on one rank: $(cat "$TMP/err")"
for x in "--tp 2" "--zero 1"; do
  "$LMC" train $MX --batch 2 --ep 2 $x -o "$TMP/x" 2>"$TMP/err"
  [ $? = 2 ] && grep -q "\-\-ep runs alone" "$TMP/err"; ok $? "--ep 2 $x: $(cat "$TMP/err")"
done
echo "test_mp_train_ep: $pass passed, $fail failed"
[ $fail = 0 ]
