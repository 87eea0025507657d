#!/bin/bash
# run_serve_ab_cpu.sh — two `lmc serve` builds (A: this one, B: a base such
# as main's) up side by side on the 125M F16 bench GGUF, 2 threads each,
# driven in turn (A, B, A, B) by `lmc bench-serve` at each C:N given
# (concurrency C, N requests of 128 prompt + 64 new tokens); per run: the
# server's CPU seconds (utime + stime from /proc, the steadier figure on a
# shared machine), output tok/s, TTFT p50, ITL p50. The second pair of
# each level re-sends the first pair's prompts (prefix-cache hits).
#   bench/run_serve_ab_cpu.sh build-bench/lmc /path/to/main/lmc 1:8 8:16 64:64
set -u
B=$1; A=$2; shift 2
L1=/tmp/serve10c-s1.log; L2=/tmp/serve10c-s2.log
$B serve -m /tmp/lmc-bench-125m-f16.gguf --port 0 --threads 2 --max-batch 64 --max-connections 272 --ctx 272 2>$L1 & P1=$!
$A serve -m /tmp/lmc-bench-125m-f16.gguf --port 0 --threads 2 --max-batch 64 --max-connections 272 --ctx 272 2>$L2 & P2=$!
for i in $(seq 200); do U1=$(grep -o "http://127.0.0.1:[0-9]*" $L1 | head -1); U2=$(grep -o "http://127.0.0.1:[0-9]*" $L2 | head -1); [ -n "$U1" ] && [ -n "$U2" ] && break; sleep 0.3; done
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
tck=$(getconf CLK_TCK)
for spec in "$@"; do
  C=${spec%%:*}; N=${spec#*:}
  for who in 1 2 1 2; do
    if [ $who = 1 ]; then U=$U1; P=$P1; n=branch; else U=$U2; P=$P2; n=base; fi
    c0=$(cpu $P)
    j=$($B bench-serve --url $U --concurrency $C --requests $N --prompt-len 128 --max-tokens 64 --json)
    c1=$(cpu $P)
    echo "$n c=$C load=$(cut -d' ' -f1 /proc/loadavg) cpu_s=$(echo "($c1-$c0)/$tck" | bc -l | cut -c1-6) $(echo $j | python3 -c 'import json,sys; d=json.load(sys.stdin); print("out_tok/s", d["output_tokens_per_s"], "ttft_p50", d["ttft_s"]["p50"], "itl_p50", d["itl_s"]["p50"], "tokens", d["output_tokens"])')"
  done
done
kill $P1 $P2
