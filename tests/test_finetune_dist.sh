#!/usr/bin/env bash
# test_finetune_dist.sh — `lmc finetune` data-parallel on two processes
# joined by torchrun-style variables (tcp rendezvous, no MPI needed): LoRA
# and --full at batch 2 per rank equal one process with batch 2 and
# accumulation 2 (the same global batch, the same examples in the same
# order): losses <= 1e-6 relative, written weights <= 1e-6 of their largest
# magnitude; rank 0 alone writes metrics and the output.
# Four ranks under mpirun (batch 1; each layer's gradient all-reduced as
# its backward ends) equal the same one-process runs: losses 1e-6, weights
# 1e-6 (--full) and 1e-4 (LoRA, see below) (skipped without mpirun or MPI).
# --zero 1 over tcp gives the replicated run's adapter bit for bit (the
# ZeRO stages under mpirun: test_finetune_zero.sh).
# Usage: test_finetune_dist.sh PATH/TO/lmc
set -u
export LMC_DIST_TIMEOUT=60 # these runs' collectives wait a minute at most (mp_launch.sh keeps it)
. "$(dirname "$0")/mp_launch.sh" "$1"
FIX=tests/fixtures/llama-tiny
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
C="-m $FIX --data $TMP/d.jsonl --seq 32 --lr 1e-2 --threads 1 --schedule cosine --warmup 2 --steps 8 --clip 0.5"

# two ranks; retried with another port if the OS gave ours away meanwhile
pair() { # NAME EXTRA...: two ranks over tcp writing $TMP/NAME; rank r's output in $TMP/NAME.r<r> (mp_ranks)
  local o=$1; shift
  mp_ranks 2 "$o" finetune $C -o "$TMP/$o" "$@"
}

MPIRUN=(timeout 300 "${MPIRUN[@]}")
have_mpi=0 # mpirun there and lmc built with MPI
if command -v mpirun >/dev/null 2>&1; then
  "${MPIRUN[@]}" -np 1 "$LMC" finetune $C --steps 1 -o "$TMP/probe" >"$TMP/t4" 2>&1
  mp_no_mpi "$TMP/t4" || have_mpi=1
fi
[ $have_mpi = 1 ] || echo "test_finetune_dist: the mpirun part skipped (no mpirun, or lmc built without MPI)"
for mode in lora full; do
  X=""; [ $mode = full ] && X="--full"
  "$LMC" finetune $C -o "$TMP/one-$mode" --batch 2 --accum 2 $X 2>"$TMP/err"; ok $? "$mode one process: $(tail -2 "$TMP/err")"
  pair two-$mode --batch 2 $X; ok $? "$mode two ranks: $(tail -n 3 "$TMP/two-$mode.r0" "$TMP/two-$mode.r1")"
  grep -q "data parallel, 2 ranks (replicated), global batch 4 x 32 x 1 accum" "$TMP/two-$mode.r0"
  ok $? "$mode start-up line: $(grep parallel "$TMP/two-$mode.r0")"
  [ "$(grep -c '^step 8/8' "$TMP/two-$mode.r1")" = 0 ] && [ "$(grep -c '^step 8/8' "$TMP/two-$mode.r0")" = 1 ]
  ok $? "$mode progress on rank 0 only"
  f=adapter_model.safetensors; [ $mode = full ] && f=model.safetensors
  python3 - "$TMP/one-$mode" "$TMP/two-$mode" "$f" <<'PY'
import json, struct, sys
a, b, f = sys.argv[1:4]
def rows(d): return [json.loads(l)["loss"] for l in open(d + ".metrics.jsonl")]
def tensors(d):
    raw = open(f"{d}/{f}", "rb").read()
    n = int.from_bytes(raw[:8], "little"); h = json.loads(raw[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]
        if v["dtype"] != "F32": continue
        out[k] = struct.unpack(f"<{(e - s) // 4}f", raw[8 + n + s:8 + n + e])
    return out
la, lb = rows(a), rows(b)
assert len(la) == len(lb) == 8, (len(la), len(lb))
wl = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
ta, tb = tensors(a), tensors(b)
assert ta and ta.keys() == tb.keys(), (len(ta), len(tb))
scale = max(abs(x) for t in ta.values() for x in t)
wp = max(abs(x - y) for k in ta for x, y in zip(ta[k], tb[k])) / scale
print(f"{f}: losses max rel {wl:.2e}, weights max |diff| / max |w| {wp:.2e} over {len(ta)} tensors")
sys.exit(0 if wl <= 1e-6 and wp <= 1e-6 else 1)
PY
  ok $? "$mode: two ranks equal one process with the same global batch (1e-6)"
  # four ranks under mpirun (each layer's gradient all-reduced as its backward ends): the same
  if [ $have_mpi = 1 ]; then
    "${MPIRUN[@]}" -np 4 "$LMC" finetune $C -o "$TMP/four-$mode" --batch 1 $X >"$TMP/t4" 2>&1
    ok $? "$mode four ranks (mpirun): $(tail -n 3 "$TMP/t4")"
    # llama-tiny: 2 layers (LoRA: the adapters of each; --full: the embedding and the norm + head too)
    grep -q "data parallel: $([ $mode = lora ] && echo 2 || echo 4) parts' gradients each all-reduced" "$TMP/t4"
    ok $? "$mode four ranks: per-layer all-reduce: $(grep "parts'" "$TMP/t4")"
    # LoRA: B starts at zero and AdamW turns the rounding of the 4-example sums (one process sums in
    # its batch matmuls) into updates: 3.1e-5 of max |w| (the replicated all-reduce gives the same bits);
    # --full: 6.9e-7 to 1.1e-6 of max |w| as the CPU ops' rounding moves (3e-6 bound)
    python3 - "$TMP/one-$mode" "$TMP/four-$mode" "$f" $([ $mode = lora ] && echo 1e-4 || echo 3e-6) <<'PY'
import json, struct, sys
a, b, f, wtol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def rows(d): return [json.loads(l)["loss"] for l in open(d + ".metrics.jsonl")]
def tensors(d):
    raw = open(f"{d}/{f}", "rb").read()
    n = int.from_bytes(raw[:8], "little"); h = json.loads(raw[8:8 + n])
    return {k: struct.unpack(f"<{(v['data_offsets'][1] - v['data_offsets'][0]) // 4}f",
                             raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__" and v["dtype"] == "F32"}
la, lb = rows(a), rows(b)
ta, tb = tensors(a), tensors(b)
assert len(la) == len(lb) == 8 and ta and ta.keys() == tb.keys(), (len(la), len(lb))
wl = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
scale = max(abs(x) for t in ta.values() for x in t)
wp = max(abs(x - y) for k in ta for x, y in zip(ta[k], tb[k])) / scale
print(f"four ranks {f}: losses max rel {wl:.2e}, weights max |diff| / max |w| {wp:.2e}")
px = 1 if "avx512f" in open("/proc/cpuinfo").read() else 10  # AVX2-only CPUs: --full 5.1e-6 measured (zero_train_common.sh)
sys.exit(0 if wl <= 1e-6 and wp <= wtol * px else 1)
PY
    ok $? "$mode: four ranks (mpirun) equal one process with the same global batch"
  fi
done
# --zero 1 over the tcp rendezvous (the adapter's moments sharded): the replicated run's bits
pair z1 --batch 2 --zero 1; ok $? "--zero 1 two ranks (tcp): $(tail -n 3 "$TMP/z1.r0" "$TMP/z1.r1")"
grep -q "data parallel, 2 ranks, ZeRO-1" "$TMP/z1.r0"; ok $? "--zero 1 start-up line: $(grep parallel "$TMP/z1.r0")"
cmp -s "$TMP/z1/adapter_model.safetensors" "$TMP/two-lora/adapter_model.safetensors"
ok $? "--zero 1 over tcp = --zero 0 (the same sums in the same order), bit for bit"
echo "test_finetune_dist: $pass passed, $fail failed"
[ $fail = 0 ]
