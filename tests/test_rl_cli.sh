#!/usr/bin/env bash
# test_rl_cli.sh — `lmc rl` end to end on the llama-tiny fixture (CPU):
# GRPO and PPO runs write one metrics line per step with every metric,
# `lmc plot` draws reward/accuracy/kl from it, the saved policy loads and
# generates, the sampler's and the trainer's log-probs agree (<= 1e-5),
# and bad input fails cleanly: a malformed tasks file
# (named with its line), an unknown algorithm, chat messages without a
# template (and with --chat-template they run), a reward command that
# prints garbage (named with the task).
# Usage: test_rl_cli.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
M=tests/fixtures/llama-tiny
printf '{"prompt": "say a word", "answer": "e"}\n{"prompt": "another one", "answer": "e"}\n' > "$TMP/t.jsonl"
COMMON="-m $M --tasks $TMP/t.jsonl --group 4 --prompts 2 --max-new 6 --epochs 2 --lr 3e-3 --answer-regex ([aeiou]) --threads 1"

for algo in grpo ppo; do
    "$LMC" rl $COMMON --algo $algo --steps 3 -o "$TMP/$algo" 2> "$TMP/$algo.log"
    ok $? "rl --algo $algo runs"
    python3 - "$TMP/$algo/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rows] == [1, 2, 3], rows
keys = ["reward", "accuracy", "kl", "clip_frac", "entropy", "response_len", "rollout_tok_s", "train_tok_s", "loss"]
for r in rows:
    for k in keys: assert k in r, k
    assert 0 <= r["reward"] <= 1 and r["entropy"] > 0 and r["response_len"] > 0
    assert r["logp_maxdiff"] <= 1e-5, r["logp_maxdiff"]
PY
    ok $? "$algo metrics.jsonl complete"
    "$LMC" plot "$TMP/$algo/metrics.jsonl" --metric reward,accuracy,kl -o "$TMP/$algo.svg" 2>/dev/null
    ok $? "lmc plot reads $algo metrics"
done
"$LMC" generate -m "$TMP/grpo/final" -p "say" -n 4 --threads 1 > /dev/null 2>&1
ok $? "the saved policy generates"

printf '{"prompt": "a", "answer": "b"}\n{"prompt": 3}\n' > "$TMP/bad.jsonl"
"$LMC" rl -m $M --tasks "$TMP/bad.jsonl" -o "$TMP/x" 2> "$TMP/e2"; rc=$?
[ $rc != 0 ] && grep -q "bad.jsonl:2" "$TMP/e2"; ok $? "bad task line named"
"$LMC" rl $COMMON --algo dpo -o "$TMP/x" 2> /dev/null; [ $? = 2 ]; ok $? "unknown algo refused"
"$LMC" rl $COMMON --reward-cmd "echo nope" --steps 1 -o "$TMP/x" 2> "$TMP/e3"; rc=$?
[ $rc != 0 ] && grep -q "task 1" "$TMP/e3" && grep -q "not one number" "$TMP/e3"; ok $? "bad reward-cmd output names the task"

printf '{"messages": [{"role": "user", "content": "hi"}], "answer": "e"}\n' > "$TMP/c.jsonl"
printf '{%% for m in messages %%}<{{ m.role }}>{{ m.content }}{%% endfor %%}{%% if add_generation_prompt %%}<assistant>{%% endif %%}' > "$TMP/t.jinja"
"$LMC" rl -m $M --tasks "$TMP/c.jsonl" --group 2 --prompts 1 --max-new 4 --steps 1 --threads 1 -o "$TMP/c" 2> "$TMP/e4"; rc=$?
[ $rc != 0 ] && grep -q "chat template" "$TMP/e4"; ok $? "messages without a chat template: clear error"
"$LMC" rl -m $M --tasks "$TMP/c.jsonl" --group 2 --prompts 1 --max-new 4 --steps 1 --threads 1 \
    --chat-template "$TMP/t.jinja" -o "$TMP/c" 2> /dev/null && [ -s "$TMP/c/metrics.jsonl" ]
ok $? "messages tasks through --chat-template"

# the GPU: --device cuda --dtype fp32 runs where there is one (sampler and
# trainer log-probs agree as on the CPU); elsewhere a clean error naming cuda
"$LMC" rl $COMMON --algo grpo --steps 1 --device cuda --dtype fp32 -o "$TMP/cu" 2> "$TMP/ecu"; rc=$?
if [ $rc = 0 ]; then
    python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).readline()); assert r['logp_maxdiff'] <= 1e-5, r" \
        "$TMP/cu/metrics.jsonl"
    ok $? "rl --device cuda --dtype fp32 runs"
else
    [ $rc = 1 ] && grep -qi "cuda" "$TMP/ecu"; ok $? "rl --device cuda without a GPU fails cleanly ($rc: $(cat "$TMP/ecu"))"
fi
# bf16 on the cpu: mixed precision where the CPU has AVX512-BF16, else refused naming it
"$LMC" rl $COMMON --dtype bf16 --steps 1 -o "$TMP/x" 2> "$TMP/ebf"; rc=$?
if grep -qw avx512_bf16 /proc/cpuinfo; then
  [ $rc = 0 ] && [ -d "$TMP/x/final" ]; ok $? "rl --dtype bf16 on the cpu runs ($rc: $(tail -2 "$TMP/ebf"))"
else
  [ $rc = 2 ] && grep -q "AVX512-BF16" "$TMP/ebf"; ok $? "rl --dtype bf16 refused without AVX512-BF16 ($rc)"
fi

echo "test_rl_cli: $pass passed, $fail failed"
[ $fail = 0 ]
