# serve_level.sh — sourced by the serving benches: serve_level LMC URL C N P M
# BLOCK [JSON_OUT] drives one concurrency level with `lmc bench-serve` (C
# clients, N streaming requests, prompt P tokens, at most M new), samples
# /metrics every 0.2 s meanwhile for the KV waste (1 - tokens stored /
# (blocks used x BLOCK)), appends bench-serve's JSON to JSON_OUT when given,
# and prints one Markdown table row: concurrency, requests, failed, output
# tok/s, TTFT and ITL p50 / p99 (ms), KV waste mean / worst sample.
serve_level() {
  local lmc=$1 url=$2 c=$3 n=$4 p=$5 m=$6 bs=$7 json_out=${8:-} waste mon j w
  waste=$(mktemp)
  ( while :; do
      curl -s "$url/metrics" | awk -v bs="$bs" '/^lmc_kv_blocks_used /{u=$2} /^lmc_kv_tokens_stored /{s=$2}
        END{ if (u > 0) printf "%.4f\n", 1 - s / (u * bs) }' >>"$waste"
      sleep 0.2
    done ) &
  mon=$!
  j=$(timeout 300 "$lmc" bench-serve --url "$url" --concurrency "$c" --requests "$n" --prompt-len "$p" \
      --max-tokens "$m" --json)
  kill $mon 2>/dev/null; wait $mon 2>/dev/null
  w=$(awk '{s += $1; n++; if (n == 1 || $1 > w) w = $1} END{if (n) printf "%.1f%% / %.1f%%", 100 * s / n, 100 * w}' "$waste")
  rm -f "$waste"
  [ -n "$json_out" ] && echo "$j" >>"$json_out"
  echo "$j" | python3 -c "
import json, sys
j = json.load(sys.stdin); w = sys.argv[1]
print('| %d | %d | %d | %.1f | %.1f / %.1f | %.1f / %.1f | %s |' % (j['concurrency'], j['requests'], j['failed'],
      j['output_tokens_per_s'], 1e3 * j['ttft_s']['p50'], 1e3 * j['ttft_s']['p99'], 1e3 * j['itl_s']['p50'],
      1e3 * j['itl_s']['p99'], w or 'n/a'))" "${w:-}"
}
