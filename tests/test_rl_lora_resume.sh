#!/usr/bin/env bash
# test_rl_lora_resume.sh — `lmc rl --lora R` and `lmc rl --resume` on the
# llama-tiny fixture (CPU, one thread):
# - LoRA GRPO trains only the adapter (the trained-parameter count is the
#   adapter's), the reference is the base with the adapters off: at step 1
#   (B = 0, policy = base) the KL is exactly 0, later it is > 0; the
#   sampler's log-probs (rollouts through the scheduler, adapters on) equal
#   the trainer's within 1e-5; the
#   result is a PEFT folder that `lmc generate --lora` applies; the base
#   folder is untouched;
# - a run checkpointed at step 2 and resumed to step 4 gives the
#   uninterrupted run's metrics (reward, loss, KL, grad norm, ...) and final
#   weights byte for byte: LoRA GRPO and PPO, full-parameter GRPO and PPO
#   (value head and its moments);
# - resuming with other settings, or from a folder that is not a
#   checkpoint, fails with a clear error.
# Usage: test_rl_lora_resume.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
M=tests/fixtures/llama-tiny
sum0=$(cat "$M"/*.safetensors | cksum)
printf '{"prompt": "say a word", "answer": "e"}\n{"prompt": "another one", "answer": "e"}\n{"prompt": "and a third", "answer": "a"}\n' > "$TMP/t.jsonl"
COMMON="-m $M --tasks $TMP/t.jsonl --group 4 --prompts 2 --max-new 6 --epochs 2 --answer-regex ([aeiou]) --threads 1"

# --- LoRA ---
"$LMC" rl $COMMON --lora 4 --lr 2e-2 --steps 3 -o "$TMP/lora" 2> "$TMP/lora.log"
ok $? "rl --lora runs"
grep -q "trained parameters (LoRA" "$TMP/lora.log"; ok $? "LoRA run announced"
python3 - "$TMP/lora" "$TMP/lora.log" "$M/config.json" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
assert [r["step"] for r in rows] == [1, 2, 3], rows
assert rows[0]["kl"] == 0, rows[0]          # B = 0: the policy is the reference
assert rows[2]["kl"] > 0, rows               # the adapter moved away from the base
# the rollouts sample from the policy with its adapters (scheduler = trainer)
assert all(r["logp_maxdiff"] <= 1e-5 for r in rows), rows
c = json.load(open(sys.argv[3]))
n = int(re.search(r"(\d+) trained parameters", open(sys.argv[2]).read()).group(1))
# r (in + out) per adapted linear, all seven linears of every layer
H, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
hd = c.get("head_dim", H // c["num_attention_heads"])
q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
per = 4 * ((H + q) + (H + kv) * 2 + (q + H) + (H + I) * 2 + (I + H))
assert n >= per * L and n < per * L + 16 * 2 * 7 * L, (n, per * L)
cfg = json.load(open(sys.argv[1] + "/final/adapter_config.json"))
assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8, cfg
PY
ok $? "LoRA metrics: KL 0 at step 1, > 0 later; adapter-sized training; PEFT config"
"$LMC" generate -m "$M" --lora "$TMP/lora/final" -p "say" -n 4 --threads 1 > /dev/null 2>&1
ok $? "the adapter loads with generate --lora"
[ "$(cat "$M"/*.safetensors | cksum)" = "$sum0" ]; ok $? "base weights untouched"

# --- resume: LoRA GRPO, full GRPO, full PPO ---
same() { # metrics of steps 3 and 4 (timings left out) and the final weights equal
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
skip = {"rollout_tok_s", "train_tok_s", "gen_s", "train_s"}
a = [{k: v for k, v in json.loads(l).items() if k not in skip} for l in open(sys.argv[1])]
b = [{k: v for k, v in json.loads(l).items() if k not in skip} for l in open(sys.argv[2])]
assert [r["step"] for r in a] == [1, 2, 3, 4] and [r["step"] for r in b] == [3, 4], (a, b)
assert a[2:] == b, (a[2:], b)
PY
    [ $? = 0 ] || return 1
    for f in "$1"/final/*.safetensors; do cmp -s "$f" "$2/final/$(basename "$f")" || return 1; done
}
for v in "lora grpo --lora 4 --lr 2e-2" "lora ppo --lora 4 --lr 2e-2" "full grpo --lr 3e-3" "full ppo --lr 3e-3"; do
    set -- $v; name=$1-$2; shift; algo=$1; shift
    "$LMC" rl $COMMON --algo $algo "$@" --steps 4 --save-every 2 -o "$TMP/$name-a" 2> "$TMP/$name-a.log"
    ok $? "$name: uninterrupted run with checkpoints"
    [ -f "$TMP/$name-a/ckpt/step_000002/rl_state.json" ]; ok $? "$name: checkpoint written"
    "$LMC" rl $COMMON --algo $algo "$@" --steps 4 --resume "$TMP/$name-a/ckpt/step_000002" -o "$TMP/$name-b" \
        2> "$TMP/$name-b.log"
    ok $? "$name: resumed run"
    grep -q "resumed .* at step 2" "$TMP/$name-b.log"; ok $? "$name: resume announced"
    same "$TMP/$name-a" "$TMP/$name-b"; ok $? "$name: resumed = uninterrupted (metrics, final weights bit for bit)"
done

# --- bad resumes ---
"$LMC" rl $COMMON --lora 4 --group 2 --steps 4 --resume "$TMP/lora-grpo-a/ckpt/step_000002" -o "$TMP/x" 2> "$TMP/e1"
rc=$?; [ $rc != 0 ] && grep -q "differs from the checkpoint" "$TMP/e1"; ok $? "resume with another --group refused"
"$LMC" rl $COMMON --steps 4 --resume "$TMP/lora-grpo-a/ckpt/step_000002" -o "$TMP/x" 2> "$TMP/e2"
rc=$?; [ $rc != 0 ]; ok $? "a LoRA checkpoint resumed without --lora refused"
"$LMC" rl $COMMON --lora 4 --steps 4 --resume "$TMP" -o "$TMP/x" 2> "$TMP/e3"
rc=$?; [ $rc != 0 ] && grep -q "rl_state.json\|adapter" "$TMP/e3"; ok $? "not a checkpoint: named"
cp -r "$TMP/full-ppo-a/ckpt/step_000002" "$TMP/bad"
printf '{"step": 2, "next_task": ' > "$TMP/bad/rl_state.json"
"$LMC" rl $COMMON --algo ppo --steps 4 --resume "$TMP/bad" -o "$TMP/x" 2> "$TMP/e4"
rc=$?; [ $rc != 0 ] && grep -q "rl_state.json: not a JSON object" "$TMP/e4"; ok $? "a truncated rl_state.json named"
printf '{"step": -1}' > "$TMP/bad/rl_state.json"
"$LMC" rl $COMMON --algo ppo --steps 4 --resume "$TMP/bad" -o "$TMP/x" 2> "$TMP/e5"
rc=$?; [ $rc != 0 ] && grep -q "expected step" "$TMP/e5"; ok $? "missing fields named"
"$LMC" rl $COMMON --lora 0 -o "$TMP/x" 2> /dev/null; [ $? = 2 ]; ok $? "--lora 0 refused"

echo "test_rl_lora_resume: $pass passed, $fail failed"
[ $fail = 0 ]
