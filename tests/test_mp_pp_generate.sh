#!/usr/bin/env bash
# test_mp_pp_generate.sh — `lmc generate --pp P` (dist/pp_infer.c): P ranks
# started with torchrun-style variables (a rendezvous port from the OS,
# held for them: port_hold.sh), each loading only its stage's
# layers, give the one-process ids (--json): greedy on llama-tiny,
# qwen2-tiny (tied head) and gpt2-tiny (learned positions, tied head) at
# --pp 2, on their 4-layer versions (layers repeated,
# tests/pp_stack_layers.py) at --pp 4 (llama also with seeded top-k
# sampling), and on the default model (8 layers, bf16) at --pp 2 and 4; under
# mpirun (oversubscribed; skipped without mpirun or MPI in lmc) --pp 2 and
# 4 the same. Each stage's weight bytes as its loader counts them (the
# stage line) stay under (1/P of the whole + the embedding matrix), and
# the stages sum to the whole (plus the embedding again on the last stage
# when it is the head); `lmc info --pp P` lists the stages the ranks
# loaded. `lmc eval` prints the one-process perplexity on the default
# model (windows at --pp 2, --chunks at --pp 4). --pp 2 --tp 2 (4 ranks, each stage sharded by heads) on
# llama-tiny and qwen2-tiny gives the one-process ids. P > layers, --pp
# with --ep or --tp-vocab, mixtures of experts, recurrent models, a world
# that is not --pp x --tp, --device cuda
# and `lmc chat --pp` are refused; rank 1 prints nothing on stdout.
# Usage: test_mp_pp_generate.sh PATH/TO/lmc
set -u
MP_LEAKS=1 # LeakSanitizer on, but under mpirun (mp_leaks_off there)
. "$(dirname "$0")/mp_launch.sh" "$1"
ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p' "$1"; }
# stage s's weight bytes from the stage lines of OUT.r*.err
wbytes() { sed -n "s/.*pipeline stage $2 of .* \([0-9]*\) weight bytes/\1/p" "$1"; }
# run_pp P OUT ARGS...: P ranks of lmc generate --pp P; rank r's stdout in OUT.rR, stderr in OUT.rR.err
run_pp() { local P=$1; run_w "$@" --pp "$P"; }
# run_w W OUT ARGS...: W ranks of lmc generate ARGS
run_w() { local P=$1 out=$2; shift 2; MP_SPLIT=1 mp_ranks "$P" "$out" generate "$@"; }
# bytes_check NAME DIR P ELEM_BYTES: the stage lines of pp$P against pp1's whole
bytes_check() {
  local name=$1 dir=$2 P=$3 eb=$4 whole sum=0 w V C tied E NP
  whole=$(wbytes "$TMP/$name.pp1.r0.err" 0)
  read -r V C tied NP < <(python3 -c "import json; c=json.load(open('$dir/config.json')); \
print(c['vocab_size'], c.get('hidden_size', c.get('n_embd')), int(c.get('tie_word_embeddings', True)), \
c.get('n_positions', 0) if c['model_type'] == 'gpt2' else 0)")
  E=$((V * C * eb))
  for s in $(seq 0 $((P - 1))); do # the embedding share: the token embedding (and GPT-2's positions)
    w=$(wbytes "$TMP/$name.pp$P.r$s.err" "$s")
    [ -n "$w" ] && [ -n "$whole" ] && [ "$w" -lt $((whole / P + E + NP * C * eb)) ]
    ok $? "$name --pp $P stage $s: $w weight bytes, not under $whole / $P + $E + $((NP * C * eb))"
    sum=$((sum + ${w:-0}))
  done
  [ "$sum" = $((whole + (tied && P > 1 ? E : 0))) ]
  ok $? "$name --pp $P: the stages hold $sum bytes, the whole $whole (tied $tied, embedding $E)"
}
# gen NAME DIR ELEM_BYTES "P..." ARGS...: one process, --pp 1 (the whole as one stage) and each P
gen() {
  local name=$1 dir=$2 eb=$3 Ps=$4; shift 4
  "$LMC" generate -m "$dir" "$@" --json >"$TMP/$name.one" 2>"$TMP/$name.one.err"
  ok $? "$name one process: $(cat "$TMP/$name.one.err")"
  run_pp 1 "$name.pp1" -m "$dir" "$@" --json; ok $? "$name --pp 1: $(cat "$TMP/$name.pp1.r0.err")"
  for P in $Ps; do
    run_pp "$P" "$name.pp$P" -m "$dir" "$@" --json
    ok $? "$name --pp $P exit: $(tail -n 3 "$TMP/$name.pp$P".r*.err)"
    [ -n "$(ids "$TMP/$name.one")" ] && [ "$(ids "$TMP/$name.one")" = "$(ids "$TMP/$name.pp$P.r0")" ]
    ok $? "$name --pp $P ids [$(ids "$TMP/$name.pp$P.r0")] vs one process [$(ids "$TMP/$name.one")]"
    [ ! -s "$TMP/$name.pp$P.r1" ]; ok $? "$name --pp $P rank 1 printed: $(cat "$TMP/$name.pp$P.r1")"
    bytes_check "$name" "$dir" "$P" "$eb"
    # lmc info --pp P lists the same stages (layers) as the ranks loaded
    local want got
    want=$(for s in $(seq 0 $((P - 1))); do sed -n "s/.*pipeline stage $s of $P: layers \[\([0-9]*\), \([0-9]*\)).*/\1,\2/p" \
      "$TMP/$name.pp$P.r$s.err"; done | tr '\n' ' ')
    got=$("$LMC" info -m "$dir" --pp "$P" --json | python3 -c \
      'import json,sys; print(" ".join("%d,%d" % tuple(s["layers"]) for s in json.load(sys.stdin)["inference_stages"]), end=" ")')
    [ -n "$want" ] && [ "$want" = "$got" ]; ok $? "$name lmc info --pp $P stages [$got] vs loaded [$want]"
  done
}
G="-p hello_world,_this_is -n 12 --ignore-eos --dtype f32"
for fx in llama-tiny qwen2-tiny gpt2-tiny; do
  gen "$fx" "tests/fixtures/$fx" 4 "2" $G --temp 0
  python3 tests/pp_stack_layers.py "tests/fixtures/$fx" "$TMP/$fx-4l" 2 || ok 1 "stacking $fx"
  gen "$fx-4l" "$TMP/$fx-4l" 4 "4" $G --temp 0
done
gen llama-4l-sampled "$TMP/llama-tiny-4l" 4 "4" $G --temp 0.9 --top-k 40 --seed 7
gen kjv models/kjv-llama 2 "2 4" -p "And the LORD said unto Moses" -n 16 --temp 0 --ignore-eos
# --tp 2 inside each of 2 stages (4 ranks): llama-tiny (KV heads split) and qwen2-tiny (replicated, tied head)
for fx in llama-tiny qwen2-tiny; do
  run_w 4 "$fx.tppp" -m "tests/fixtures/$fx" $G --temp 0 --json --pp 2 --tp 2
  ok $? "$fx --pp 2 --tp 2 exit: $(tail -n 3 "$TMP/$fx.tppp".r*.err)"
  [ -n "$(ids "$TMP/$fx.one")" ] && [ "$(ids "$TMP/$fx.one")" = "$(ids "$TMP/$fx.tppp.r0")" ]
  ok $? "$fx --pp 2 --tp 2 ids [$(ids "$TMP/$fx.tppp.r0")] vs one process [$(ids "$TMP/$fx.one")]"
done
# lmc eval --pp: the one-process perplexity (sliding windows and --chunks) on the default model
head -c 3000 data/kjv.txt >"$TMP/ev.txt"
for EP in ":2" "--chunks:4"; do
  E=${EP%:*} P=${EP#*:}
  "$LMC" eval -m models/kjv-llama --text-file "$TMP/ev.txt" --ctx 128 --json $E >"$TMP/ev.one" 2>"$TMP/ev.err"
  ok $? "eval one process: $(cat "$TMP/ev.err")"
  {
    port_hold
    pids=(); rc=0
    for r in $(seq $((P - 1)) -1 1); do
      RANK=$r WORLD_SIZE=$P MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" eval -m models/kjv-llama \
        --text-file "$TMP/ev.txt" --ctx 128 --json $E --pp $P >"$TMP/ev.r$r" 2>"$TMP/ev.r$r.err" & pids+=($!)
    done
    RANK=0 WORLD_SIZE=$P MASTER_ADDR=127.0.0.1 MASTER_PORT=$HELD_PORT "$LMC" eval -m models/kjv-llama \
      --text-file "$TMP/ev.txt" --ctx 128 --json $E --pp $P >"$TMP/ev.pp" 2>"$TMP/ev.pp.err" || rc=1
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    port_release
    [ $rc = 0 ] && grep -q '"ppl"' "$TMP/ev.one" && cmp -s "$TMP/ev.one" "$TMP/ev.pp" && [ ! -s "$TMP/ev.r1" ]
    ok $? "eval $E --pp $P: $(cat "$TMP/ev.pp") vs one process $(cat "$TMP/ev.one"): $(tail -n 2 "$TMP/ev.pp.err")"
  }
done
# mpirun: --pp 2 and 4 on the 4-layer llama
if [ $HAVE_MPIRUN = 1 ]; then
  mp_leaks_off # Open MPI's own allocations
  for np in 2 4; do
    timeout 120 "${MPIRUN[@]}" -np $np "$LMC" generate -m "$TMP/llama-tiny-4l" $G --temp 0 --json --pp $np >"$TMP/mpi" 2>"$TMP/mpi.err"
    rc=$?
    if mp_no_mpi "$TMP/mpi.err"; then echo "test_mp_pp_generate: mpirun part skipped (no MPI)"; break; fi
    [ $rc = 0 ] && [ "$(ids "$TMP/llama-tiny-4l.one")" = "$(ids "$TMP/mpi")" ]
    ok $? "mpirun --pp $np ids [$(ids "$TMP/mpi")] vs [$(ids "$TMP/llama-tiny-4l.one")]: $(tail -n 3 "$TMP/mpi.err")"
  done
else
  echo "test_mp_pp_generate: mpirun part skipped (no mpirun)"
fi
# refusals
run_pp 3 more -m tests/fixtures/llama-tiny -p hi -n 2; rc=$?
[ $rc != 0 ] && grep -q "the model has 2 layers" "$TMP/more.r0.err"; ok $? "--pp 3 on 2 layers: $(cat "$TMP/more.r0.err")"
"$LMC" generate -m tests/fixtures/llama-tiny -p hi -n 2 --pp 2 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "needs 2 ranks" "$TMP/err"; ok $? "--pp 2 without ranks: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/llama-tiny -p hi -n 2 --pp 2 --ep 2 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "does not combine with --ep" "$TMP/err"; ok $? "--pp with --ep: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/llama-tiny -p hi -n 2 --pp 2 --tp 2 --tp-vocab >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "does not combine with --tp-vocab" "$TMP/err"; ok $? "--pp with --tp-vocab: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/llama-tiny -p hi -n 2 --pp 2 --tp 2 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "needs 4 ranks" "$TMP/err"; ok $? "--pp 2 --tp 2 in one process: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/llama-tiny -p hi -n 2 --pp 1 --device cuda >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "CPU backend only" "$TMP/err"; ok $? "--pp --device cuda: $(cat "$TMP/err")"
echo hi | "$LMC" chat -m tests/fixtures/llama-tiny --pp 2 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ] && grep -q "run in .lmc generate. and .lmc serve." "$TMP/err"; ok $? "chat --pp: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/mixtral-tiny -p hi -n 2 --pp 1 >"$TMP/o" 2>"$TMP/err"
[ $? = 1 ] && grep -q "mixtures of experts are not split" "$TMP/err"; ok $? "--pp on a mixture of experts: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/mamba-tiny -p hi -n 2 --pp 1 >"$TMP/o" 2>"$TMP/err"
[ $? = 1 ] && grep -q "recurrent models are not split" "$TMP/err"; ok $? "--pp on mamba: $(cat "$TMP/err")"
"$LMC" generate -m tests/fixtures/llama-tiny -p hi -n 2 --pp 0 >"$TMP/o" 2>"$TMP/err"
[ $? = 2 ]; ok $? "--pp 0 accepted"
echo "test_mp_pp_generate: $pass passed, $fail failed"
[ $fail = 0 ]
