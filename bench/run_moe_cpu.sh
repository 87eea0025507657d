#!/usr/bin/env bash
# run_moe_cpu.sh — CPU decode of a Mixtral-shape model, lmc against
# llama.cpp on the same GGUF file written by `lmc convert`, and against a
# dense model of the same active size, interleaved in one run.
#
# Models (bench_moe.c --shape, random F16 weights from the spec tables, plus
# a byte-level BPE tokenizer.json of vocab_size tokens written here so the
# files carry a vocabulary llama.cpp loads): the Mixtral shape (8 experts,
# top-2) and its dense Llama twin (intermediate = 2 x expert width: the
# same weights per token). Both converted to F16 GGUF by lmc. Each round
# decodes N tokens with `lmc generate -m FILE.gguf` (its "generated N tokens
# at X tok/s") and `llama-bench -m FILE.gguf -p 0 -n N -r 1` (tg), on both
# models, the order alternating per round; medians over the rounds.
#
# Usage (repository root, build/lmc and build/bench_moe built):
#   bench/run_moe_cpu.sh [SHAPE=1b|small] ; env: PEER_BIN=llama.cpp bin dir, N=32, ROUNDS=3, DIR=/tmp/lmc-bench-moe,
#   CPP_EXTRA="--poll 0" (extra llama-bench options: on a loaded machine its spin-waiting threads lose the cores),
#   LMC_BASE=path/to/an/earlier/lmc (a third engine in the same rotation, "base": before/after a change),
#   EXTRA="a.gguf b.gguf" (more F16 GGUF files decoded by every engine in the same rounds, e.g. the 125M
#   bench model /tmp/lmc-bench-125m-f16.gguf that bench/run_issue10_float.sh writes)
set -euo pipefail
SHAPE=${1:-1b}
N=${N:-32}
ROUNDS=${ROUNDS:-3}
DIR=${DIR:-/tmp/lmc-bench-moe}
LMC=${LMC:-./build/lmc}
BM=${BENCH_MOE:-./build/bench_moe}
B=${PEER_BIN:-$(../shared/tools/build-llamacpp-peer.sh)}
export LD_LIBRARY_PATH="$B${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$DIR"
echo "commit $(git rev-parse --short HEAD 2>/dev/null), shape $SHAPE, N=$N, ROUNDS=$ROUNDS, llama-bench extra: ${CPP_EXTRA:-none}"
echo "uptime before: $(uptime)"
mapfile -t dirs < <("$BM" --shape "$SHAPE" --dir "$DIR" --write-only 1)
for d in "${dirs[@]}"; do
  python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]; V = json.load(open(d + "/config.json"))["vocab_size"]
# GPT-2's byte alphabet, then filler tokens up to V (no merges: text encodes to bytes)
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256)); cs = bs[:]; k = 0
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + k); k += 1
vocab = {chr(c): i for i, c in enumerate(cs)}
for i in range(len(vocab), V - 1): vocab["<t%d>" % i] = i
tok = {"version": "1.0", "added_tokens": [{"id": V - 1, "content": "<|endoftext|>", "special": True, "single_word": False,
       "lstrip": False, "rstrip": False, "normalized": False}], "normalizer": None,
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
       "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
       "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []}}
json.dump(tok, open(d + "/tokenizer.json", "w"))
json.dump({"eos_token": "<|endoftext|>", "add_bos_token": False}, open(d + "/tokenizer_config.json", "w"))
PY
  [ -f "$d.gguf" ] || "$LMC" convert -m "$d" -o "$d.gguf" --dtype f16 >&2
done
moe="${dirs[0]}.gguf"; dense="${dirs[1]}.gguf"
declare -A F=([moe]="$moe" [dense]="$dense")
models="moe dense"
for f in ${EXTRA:-}; do
  [ -f "$f" ] || { echo "run_moe_cpu.sh: no $f" >&2; exit 1; }
  k=$(basename "$f" .gguf); F[$k]="$f"; models="$models $k"
done
engines="lmc cpp"; [ -n "${LMC_BASE:-}" ] && engines="lmc base cpp"
echo "engines: $engines${LMC_BASE:+ (base = $LMC_BASE)}; models: $models"
P="In the beginning God created the heaven and the earth."
gen_run() { "$1" generate -m "$2" -p "$P" -n "$N" --temp 0 --ignore-eos --threads 2 2>&1 >/dev/null |
            sed -n 's/.*generated [0-9]* tokens at \([0-9.]*\) tok\/s.*/\1/p' | tail -1; }
lmc_run() { gen_run "$LMC" "$1"; }
base_run() { gen_run "$LMC_BASE" "$1"; }
cpp_run() { "$B/llama-bench" -m "$1" -p 0 -n "$N" -r 1 -t 2 ${CPP_EXTRA:-} -o csv 2>/dev/null |
            python3 -c "import csv,sys; r=list(csv.DictReader(sys.stdin)); print(r[-1]['avg_ts'])"; }
declare -A T
jobs=""
for m in $models; do for eng in $engines; do jobs="$jobs $eng:$m"; done; done
for r in $(seq 1 "$ROUNDS"); do
  # the order reversed every other round
  if [ $((r % 2)) = 1 ]; then order="$jobs"; else order=$(echo $jobs | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for job in $order; do
    eng=${job%%:*} m=${job##*:}; f=${F[$m]}
    v=$(${eng}_run "$f"); T[$eng:$m]="${T[$eng:$m]:-} $v"
    echo "round $r: $eng $m $v tok/s" >&2
  done
done
echo "uptime after: $(uptime)"
med() { echo "$@" | tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
params() { "$LMC" info -m "$1" --json 2>/dev/null | python3 -c "import json,sys;j=json.load(sys.stdin);print('%.1fM | %.1fM' % (j['parameters']/1e6, j.get('active_parameters', j['parameters'])/1e6))"; }
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }
if [ -n "${LMC_BASE:-}" ]; then
  echo "| model (F16 GGUF written by lmc) | parameters | active / token | lmc tok/s | lmc base tok/s | llama.cpp tok/s | lmc / llama.cpp | base / llama.cpp | lmc / base |"
  echo "|---|---|---|---|---|---|---|---|---|"
else
  echo "| model (F16 GGUF written by lmc) | parameters | active / token | lmc tok/s | llama.cpp tok/s | lmc / llama.cpp |"
  echo "|---|---|---|---|---|---|"
fi
for m in $models; do
  l=$(med ${T[lmc:$m]}); c=$(med ${T[cpp:$m]})
  if [ -n "${LMC_BASE:-}" ]; then
    b=$(med ${T[base:$m]})
    echo "| $(basename "${F[$m]}") | $(params "${F[$m]}") | $l | $b | $c | $(ratio "$l" "$c") | $(ratio "$b" "$c") | $(ratio "$l" "$b") |"
  else
    echo "| $(basename "${F[$m]}") | $(params "${F[$m]}") | $l | $c | $(ratio "$l" "$c") |"
  fi
done
lm=$(med ${T[lmc:moe]}); cm=$(med ${T[cpp:moe]}); ld=$(med ${T[lmc:dense]}); cd_=$(med ${T[cpp:dense]})
echo
echo "decode time ratio moe / dense (same active weights): lmc $(awk -v a="$lm" -v b="$ld" 'BEGIN{printf "%.3f", b/a}'), llama.cpp $(awk -v a="$cm" -v b="$cd_" 'BEGIN{printf "%.3f", b/a}')"
printf "rounds (tok/s):"
for m in $models; do for eng in $engines; do printf " %s %s [%s ]," "$eng" "$m" "${T[$eng:$m]}"; done; done
echo
