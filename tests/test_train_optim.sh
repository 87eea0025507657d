#!/usr/bin/env bash
# test_train_optim.sh — `lmc train --optim X` for the memory-efficient
# optimizers (src/train/optim.h) wired into the trainer: for Muon, GaLore,
# APOLLO, APOLLO-Mini and 8-bit AdamW on a tiny llama (CPU, one thread) the
# start-up line names the groups (the kind's group on the hidden matrices,
# AdamW on embeddings/head/norms) and state bytes; the run trains (finite
# losses that differ from AdamW's); trainer_state.json carries the kind and
# settings; the checkpoint's optimizer.safetensors holds the kind's named
# state; resuming from step 3 with no optimizer flags (kind and settings
# from the checkpoint) gives the uninterrupted run's losses and a
# byte-identical final model and optimizer state. A resume with another
# --optim is refused naming both kinds. `lmc info --optim X -m DIR` prints
# the state bytes (AdamW: 8 per parameter; 8-bit AdamW fewer; APOLLO-Mini
# fewer than APOLLO). GaLore's per-step refresh counts in metrics.jsonl
# (exact and subspace). Usage: test_train_optim.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 13))"; done >"$TMP/corpus.txt"
"$LMC" train-tokenizer --text-file "$TMP/corpus.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>"$TMP/err" &&
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/corpus.txt" --docs line --val-fraction 0.1 -o "$TMP/data" 2>"$TMP/err" ||
  { echo "FAIL: data: $(cat "$TMP/err")" >&2; exit 1; }

BASE="--data $TMP/data --threads 1 --batch 2 --seq 16 --steps 6 --lr 3e-3 --warmup 1 --save-every 3 --clip 0.5"
FRESH="--arch llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96"
"$LMC" train $BASE $FRESH -o "$TMP/adamw" 2>"$TMP/err"
ok $? "adamw run: $(cat "$TMP/err")"
grep -q "optimizer adamw: adamw: .* tensors.*state .* bytes (8.000 per parameter)" "$TMP/err"; ok $? "adamw start-up line: $(grep optimizer "$TMP/err")"

declare -A FLAGS=(
  [muon]="--optim muon --muon-lr 0.01"
  [galore]="--optim galore --galore-rank 8 --galore-update-gap 2 --galore-scale 0.5"
  [apollo]="--optim apollo --apollo-rank 8 --apollo-update-gap 2 --apollo-seed 5"
  [apollo-mini]="--optim apollo-mini --apollo-update-gap 2"
  [adamw8bit]="--optim adamw8bit --adamw8bit-block 64"
)
for k in muon galore apollo apollo-mini adamw8bit; do
  g=$k; [ $k = apollo-mini ] && g=apollo
  "$LMC" train $BASE $FRESH ${FLAGS[$k]} -o "$TMP/$k" 2>"$TMP/err"
  ok $? "$k run: $(cat "$TMP/err")"
  line=$(grep "lmc train: optimizer" "$TMP/err")
  echo "$line" | grep -q "optimizer $k: .*$g: [0-9]* tensors.*state [0-9]* bytes"; ok $? "$k start-up line: $line"
  if [ $k != adamw8bit ]; then
    # llama: 2 layers x 7 hidden matrices on the kind; embedding, head, 5 norms on AdamW
    echo "$line" | grep -q "adamw: 7 tensors.*$g: 14 tensors"; ok $? "$k groups: $line"
  fi
  # resume from step 3 with no optimizer flags: the checkpoint's kind and settings
  "$LMC" train $BASE --resume "$TMP/$k/step_000003" -o "$TMP/$k-res" 2>"$TMP/err"
  ok $? "$k resume: $(cat "$TMP/err")"
  python3 - "$TMP" "$k" <<'PY'
import json, math, sys
tmp, k = sys.argv[1], sys.argv[2]
rows = lambda d: [json.loads(l) for l in open(f"{tmp}/{d}/metrics.jsonl")]
a, b, w = rows(k), rows(k + "-res"), rows("adamw")
assert len(a) == 6 and all(math.isfinite(r["loss"]) for r in a), a
assert [r["loss"] for r in a[3:]] == [r["loss"] for r in b], (a, b)
assert [r["loss"] for r in a[1:]] != [r["loss"] for r in w[1:]], "same losses as adamw"
st = json.load(open(f"{tmp}/{k}/step_000006/trainer_state.json"))
assert st["optim"]["kind"] == k, st
if k == "galore": assert st["optim"]["galore_rank"] == 8 and st["optim"]["galore_update_gap"] == 2, st
if k == "apollo": assert st["optim"]["apollo_seed"] == "5" and st["optim"]["apollo_rank"] == 8, st
if k == "muon": assert st["optim"]["muon_lr"] == 0.01, st
for f in ("model.safetensors", "optimizer.safetensors"):
    x = open(f"{tmp}/{k}/step_000006/{f}", "rb").read()
    y = open(f"{tmp}/{k}-res/step_000006/{f}", "rb").read()
    assert x == y, f + " differs after resume"
o = open(f"{tmp}/{k}/step_000006/optimizer.safetensors", "rb").read()
n = int.from_bytes(o[:8], "little")
hdr = json.loads(o[8:8 + n])
assert hdr["__metadata__"]["lmc.optimizer"] == k, hdr.get("__metadata__")
PY
  ok $? "$k: resumed run equals the uninterrupted one, state in the checkpoint"
done

# GaLore's refresh counters in metrics.jsonl: the CPU default (exact) refreshes
# all 14 matrices exactly at steps 1, 3, 5; --galore-refresh subspace at step 1
# only, then by the subspace step (no fallback: these gradients have rank > 8)
"$LMC" train $BASE $FRESH ${FLAGS[galore]} --galore-refresh subspace -o "$TMP/galore-sub" 2>"$TMP/err"
ok $? "galore subspace run: $(cat "$TMP/err")"
python3 - "$TMP" <<'PY'
import json, sys
rows = lambda d: [json.loads(l) for l in open(f"{sys.argv[1]}/{d}/metrics.jsonl")]
cnt = lambda d: [(r["galore_exact_refreshes"], r["galore_subspace_refreshes"]) for r in rows(d)]
assert cnt("galore") == [(14, 0), (0, 0)] * 3, cnt("galore")
assert cnt("galore-sub") == [(14, 0), (0, 0), (0, 14), (0, 0), (0, 14), (0, 0)], cnt("galore-sub")
assert all("galore_exact_refreshes" not in r for r in rows("muon"))
PY
ok $? "galore refresh counters in metrics.jsonl"

# resuming a muon checkpoint as adamw (or galore) is refused, naming both
"$LMC" train $BASE --resume "$TMP/muon/step_000003" --optim adamw -o "$TMP/bad" 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "muon" "$TMP/err" && grep -q "adamw" "$TMP/err"; ok $? "adamw resume of muon refused: $(cat "$TMP/err")"
"$LMC" train $BASE --resume "$TMP/muon/step_000003" --optim galore -o "$TMP/bad2" 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "muon" "$TMP/err"; ok $? "galore resume of muon refused: $(cat "$TMP/err")"
"$LMC" train $BASE --resume "$TMP/adamw/step_000003" --optim muon -o "$TMP/bad3" 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "muon" "$TMP/err"; ok $? "muon resume of adamw refused: $(cat "$TMP/err")"
# bad flags: usage errors
"$LMC" train $BASE $FRESH --optim sgd -o "$TMP/bad4" 2>"$TMP/err"
[ $? = 2 ] && grep -q "optim" "$TMP/err"; ok $? "--optim sgd refused: $(cat "$TMP/err")"
"$LMC" train $BASE $FRESH --optim galore --galore-rank 0 -o "$TMP/bad5" 2>"$TMP/err"
[ $? = 2 ] && grep -q "galore-rank" "$TMP/err"; ok $? "--galore-rank 0 refused: $(cat "$TMP/err")"

# lmc info --optim X -m DIR: state bytes
CK="$TMP/adamw/step_000006"
for k in adamw adamw8bit muon galore apollo apollo-mini; do
  "$LMC" info -m "$CK" --optim $k --json >"$TMP/info_$k.json" 2>"$TMP/err"; ok $? "info --optim $k: $(cat "$TMP/err")"
done
"$LMC" info -m "$CK" --optim adamw8bit --adamw8bit-embed-8bit 1 --json >"$TMP/info_adamw8bit-emb8.json" 2>"$TMP/err"
ok $? "info --optim adamw8bit --adamw8bit-embed-8bit 1: $(cat "$TMP/err")"
"$LMC" info -m "$CK" --optim galore --galore-rank 8 >"$TMP/info_text" 2>"$TMP/err"
grep -q "optimizer galore: .*galore: 14 tensors.*state [0-9]* bytes" "$TMP/info_text"; ok $? "info text: $(cat "$TMP/info_text" "$TMP/err")"
python3 - "$TMP" <<'PY'
import json, sys
tmp = sys.argv[1]
i = {k: json.load(open(f"{tmp}/info_{k}.json"))
     for k in ("adamw", "adamw8bit", "adamw8bit-emb8", "muon", "galore", "apollo", "apollo-mini")}
p = i["adamw"]["parameters"]
assert all(v["parameters"] == p for v in i.values()), i
assert i["adamw"]["state_bytes"] == 8 * p, i["adamw"]
# the embedding keeps fp32 moments by default; with --adamw8bit-embed-8bit 1 every big tensor is 8-bit
assert i["adamw8bit-emb8"]["state_bytes"] < 3 * p, i["adamw8bit-emb8"]
assert i["adamw8bit-emb8"]["state_bytes"] < i["adamw8bit"]["state_bytes"] < i["adamw"]["state_bytes"], i
assert i["muon"]["state_bytes"] < i["adamw"]["state_bytes"], i["muon"]
assert i["apollo-mini"]["state_bytes"] < i["apollo"]["state_bytes"], i  # default rank 256 exceeds these 64-wide matrices
PY
ok $? "info state bytes ordered as the formulas say"
"$LMC" info -m "$CK" --optim bogus >/dev/null 2>"$TMP/err"; [ $? = 2 ]; ok $? "info --optim bogus refused"

echo "test_train_optim: $pass passed, $fail failed"
[ $fail = 0 ]
