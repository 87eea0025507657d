# shellcheck shell=bash
# finetune_zero_common.sh — sourced by test_finetune_zero.sh (LoRA) and
# test_finetune_zero_full.sh (--full), not a test itself: the data, the
# flags C, mpirun's flags, ok, compare and bitexact, and finetune_zero_runs
# MODE (one process at --batch 2 --accum 2 and --batch 1 --accum 4; ZeRO 1,
# 2, 3 at world 2 and 4 against them; stop at 10 + resume; the world-2
# ZeRO-3 run's step-10 checkpoint resumed by one process at ZeRO 2).
# Exits 0 (skipped) without mpirun or an lmc built with MPI.
set -u
export LMC_DIST_TIMEOUT=60 # these runs' collectives wait a minute at most (mp_launch.sh keeps it)
. "$(dirname "$0")/mp_launch.sh" "$1"
MPIRUN=(timeout 300 "${MPIRUN[@]}")
FIX=tests/fixtures/llama-tiny
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
C="-m $FIX --data $TMP/d.jsonl --seq 32 --lr 1e-2 --threads 1 --schedule cosine --warmup 2 --steps 20 --clip 0.5"
if ! command -v mpirun >/dev/null 2>&1; then echo "test_finetune_zero: skipped (no mpirun)"; exit 0; fi
"${MPIRUN[@]}" -np 1 "$LMC" finetune $C --steps 1 --zero 1 -o "$TMP/probe" >"$TMP/err" 2>&1
if mp_no_mpi "$TMP/err"; then echo "test_finetune_zero: skipped (lmc built without MPI)"; exit 0; fi

# compare ONE RUN FILE [WTOL]: losses (1e-6 relative) and FILE's tensors (WTOL of max |w|, default 1e-6)
compare() {
  python3 - "$TMP/$1" "$TMP/$2" "$3" "${4:-1e-6}" <<'PY'
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
assert len(la) == len(lb) == 20 and ta and ta.keys() == tb.keys(), (len(la), len(lb), len(ta), len(tb))
wl = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
scale = max(abs(x) for t in ta.values() for x in t)
wp = max(abs(x - y) for k in ta for x, y in zip(ta[k], tb[k])) / scale
print(f"{b.rsplit('/', 1)[1]} {f}: losses max rel {wl:.2e}, tensors max |diff| / max |w| {wp:.2e}")
sys.exit(0 if wl <= 1e-6 and wp <= wtol else 1)
PY
}
# bitexact A B FILE: the same losses (every field but the speed) and the same FILE
bitexact() {
  diff <(sed 's/, "tokens_per_s": [0-9.e+-]*//' "$TMP/$1.metrics.jsonl") \
       <(sed 's/, "tokens_per_s": [0-9.e+-]*//' "$TMP/$2.metrics.jsonl") >/dev/null &&
  cmp -s "$TMP/$1/$3" "$TMP/$2/$3"
}

finetune_zero_runs() {
  local mode=$1
  X=""; f=adapter_model.safetensors
  [ $mode = full ] && X="--full" && f=model.safetensors
  "$LMC" finetune $C $X -o "$TMP/one2-$mode" --batch 2 --accum 2 2>"$TMP/err"; ok $? "$mode one process: $(tail -2 "$TMP/err")"
  "$LMC" finetune $C $X -o "$TMP/one4-$mode" --batch 1 --accum 4 2>"$TMP/err"; ok $? "$mode one process: $(tail -2 "$TMP/err")"
  for z in 1 2 3; do
    # world 2, a checkpoint every 10 steps (the uninterrupted run of the resume check below)
    "${MPIRUN[@]}" -np 2 "$LMC" finetune $C $X -o "$TMP/w2z$z-$mode" --batch 2 --zero $z --save-every 10 >"$TMP/t" 2>&1
    ok $? "$mode world 2 zero $z: $(tail -n 3 "$TMP/t")"
    grep -q "data parallel, 2 ranks, ZeRO-$z" "$TMP/t"; ok $? "$mode zero $z start-up line: $(grep 'data parallel' "$TMP/t")"
    grep -q "zero-$z on 2 ranks: state .* MiB" "$TMP/t"; ok $? "$mode zero $z memory line: $(grep 'on 2 ranks' "$TMP/t")"
    compare one2-$mode w2z$z-$mode $f; ok $? "$mode world 2 zero $z = one process (batch 2, accum 2)"
    [ "$(ls "$TMP/w2z$z-$mode.ckpt/zero" | grep -c '^zero-step000000[12]0-rank0000[01]\.bin$')" = 4 ] &&
      [ -e "$TMP/w2z$z-$mode.ckpt/zero/zero-manifest-step00000010.json" ]
    ok $? "$mode zero $z: each rank's shard of each step in OUT.ckpt/zero: $(ls "$TMP/w2z$z-$mode.ckpt/zero")"
    "${MPIRUN[@]}" -np 4 "$LMC" finetune $C $X -o "$TMP/w4z$z-$mode" --batch 1 --zero $z >"$TMP/t" 2>&1
    ok $? "$mode world 4 zero $z: $(tail -n 3 "$TMP/t")"
    compare one4-$mode w4z$z-$mode $f; ok $? "$mode world 4 zero $z = one process (batch 1, accum 4)"
  done
  bitexact w2z1-$mode w2z3-$mode $f && bitexact w2z2-$mode w2z3-$mode $f; ok $? "$mode world 2: zero 1, 2, 3 the same bits"
  # stop at 10, resume from the sharded step-10 checkpoint: the uninterrupted run bit for bit
  for z in 1 3; do
    "${MPIRUN[@]}" -np 2 "$LMC" finetune $C $X -o "$TMP/r$z-$mode" --batch 2 --zero $z --save-every 10 --stop-at 10 \
      >"$TMP/t" 2>&1; ok $? "$mode zero $z stop at 10: $(tail -n 2 "$TMP/t")"
    [ ! -e "$TMP/r$z-$mode" ]; ok $? "$mode zero $z: --stop-at writes no OUT"
    "${MPIRUN[@]}" -np 2 "$LMC" finetune $C $X -o "$TMP/r$z-$mode" --batch 2 --zero $z --save-every 10 \
      --resume latest >"$TMP/t" 2>&1; ok $? "$mode zero $z resume: $(tail -n 2 "$TMP/t")"
    grep -q "resumed $TMP/r$z-$mode.ckpt/step_000010 at step 10" "$TMP/t"; ok $? "$mode --resume latest: $(grep resumed "$TMP/t")"
    bitexact w2z$z-$mode r$z-$mode $f; ok $? "$mode zero $z: stop at 10 + resume = uninterrupted, bit for bit"
  done
  # the world-2 ZeRO-3 run's step-10 checkpoint (not its newest) resumed by one process at ZeRO-2 with the same
  # global batch (the shards consolidated and split again)
  "$LMC" finetune $C $X -o "$TMP/rs-$mode" --batch 2 --accum 2 --zero 2 \
    --resume "$TMP/w2z3-$mode.ckpt/step_000010" >"$TMP/t" 2>&1; ok $? "$mode resharded resume: $(tail -n 2 "$TMP/t")"
  head -10 "$TMP/w2z3-$mode.metrics.jsonl" | cat - "$TMP/rs-$mode.metrics.jsonl" >"$TMP/rs.metrics.jsonl"
  rm -rf "$TMP/rs"; mv "$TMP/rs-$mode" "$TMP/rs"
  compare one2-$mode rs $f; ok $? "$mode: world 2's step-10 checkpoint resumed by one process = one process"
}
