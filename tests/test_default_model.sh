#!/usr/bin/env bash
# test_default_model.sh — the default model kept in the repo
# (models/kjv-llama, README "The default model") is complete, bf16 and at
# most 25 MB, loads and generates (greedy, deterministic), and still models
# held-out text: perplexity on the first verses of James (validation split,
# never trained on) stays under 2x the value measured when it was made
# (58.6). Usage: test_default_model.sh PATH/TO/lmc
set -u
LMC="$1"
M=models/kjv-llama
. "$(dirname "$0")/cli_common.sh"

for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
  [ -f "$M/$f" ]; ok $? "$M has $f"
done
size=$(wc -c <"$M/model.safetensors")
[ "$size" -le 25000000 ]; ok $? "model.safetensors is $size bytes (> 25 MB)"
grep -q '"torch_dtype":[[:space:]]*"bfloat16"' "$M/config.json"; ok $? "config.json: torch_dtype bfloat16"
# every tensor in the safetensors header is BF16
hdr=$(head -c 20000 "$M/model.safetensors" | tr -d '\0' | tr ',' '\n')
nbf=$(grep -c '"dtype":"BF16"' <<<"$hdr"); nall=$(grep -c '"dtype":' <<<"$hdr")
[ "$nall" -gt 0 ] && [ "$nbf" = "$nall" ]; ok $? "all $nall tensors BF16 (found $nbf)"

out=$("$LMC" generate -m "$M" -p "And" -n 8 --temp 0 2>"$TMP/err"); rc=$?
ok $rc "generate: $(cat "$TMP/err")"
[ -n "$(tr -d '[:space:]' <<<"$out")" ]; ok $? "generate printed text"
out2=$("$LMC" generate -m "$M" -p "And" -n 8 --temp 0 2>/dev/null)
[ "$out" = "$out2" ]; ok $? "greedy generation is deterministic"
# sampling with the model's generation_config defaults
"$LMC" generate -m "$M" -p "In the beginning" -n 16 --seed 1 >"$TMP/s" 2>"$TMP/err"
ok $? "sampled generate: $(cat "$TMP/err")"

sed -n '71726,71800p' data/kjv.txt >"$TMP/val.txt"
head -1 "$TMP/val.txt" | grep -qx "James 1"; ok $? "data/kjv.txt line 71726 starts the validation books (James 1)"
"$LMC" eval -m "$M" --text-file "$TMP/val.txt" --json >"$TMP/eval.json" 2>"$TMP/err"
ok $? "eval: $(cat "$TMP/err")"
ppl=$(sed -n 's/.*"ppl":\([0-9.e+-]*\).*/\1/p' "$TMP/eval.json")
awk -v p="$ppl" 'BEGIN { exit !(p > 1 && p < 117) }'; ok $? "validation perplexity $ppl (want < 117)"

echo "test_default_model: $pass passed, $fail failed"
[ "$fail" = 0 ]
