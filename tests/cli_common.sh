# cli_common.sh — what the command-line test scripts share (sourced, not a
# test itself): the pass/fail counters and `ok STATUS MESSAGE`, a temporary
# folder removed on exit ($TMP), and `cli_tiny_data`, which makes a small
# corpus (the first 40 kB of ../shared/data/kjv.txt, or generated lines
# where that is absent), a 300-token llama3-style tokenizer ($TMP/tok) and
# prepared data with a 10% validation split ($TMP/data). Also port_hold.sh
# (a held port for torchrun-style launches).
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/port_hold.sh"

cli_tiny_data() {  # $1: the lmc binary
  if [ -f ../shared/data/kjv.txt ]; then head -c 40000 ../shared/data/kjv.txt >"$TMP/corpus.txt"
  else for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 17))"; done >"$TMP/corpus.txt"; fi
  "$1" train-tokenizer --text-file "$TMP/corpus.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>"$TMP/err"
  ok $? "train-tokenizer: $(cat "$TMP/err")"
  "$1" prepare-data -m "$TMP/tok" --text-file "$TMP/corpus.txt" --docs line --val-fraction 0.1 -o "$TMP/data" 2>"$TMP/err"
  ok $? "prepare-data: $(cat "$TMP/err")"
}
