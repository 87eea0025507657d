#!/usr/bin/env bash
# run_issue10_quant.sh — issue 10's speed and memory goals in one run: lmc
# against llama.cpp on the same weights, 2 threads, for Q8_0, Q4_0, Q4_K
# (GGUF files made by llama-quantize --pure from the F16 GGUF that `lmc
# convert` wrote; both engines read the same files) and lmc's GPTQ-4 g128
# (an HF folder in the GPTQ v1 layout from `lmc quantize --method rtn
# --bits 4 --group 128 --head`, lm_head 4-bit too as in the --pure GGUFs;
# the kernel a calibrated GPTQ folder runs; its peer is llama.cpp's Q4_0,
# llama.cpp has no GPTQ), plus lmc's own F16 decode
# (the HF folder), on two random Llama models:
#   r125m: the 125M bench shape (hidden 768, 12 layers, 12 heads / 4 kv,
#          MLP 2048, vocab 32000; bench_cpu's shape)
#   r1b:   a 1.1B shape (hidden 2048, 22 layers, 32 heads / 4 kv, MLP 5632,
#          vocab 32000; TinyLlama's shape)
# Models are made once into CACHE and reused. ROUNDS interleaved rounds of,
# per model and type: lmc prefill (`lmc generate -p <512 tokens> -n 1`),
# lmc decode (`-p <2 tokens> -n NDEC`), then llama-bench (-p 512 -n NDEC
# -r 1 -t THREADS); peak RSS (the child's ru_maxrss = VmHWM) of every
# process. Medians over rounds go to OUT as markdown.
#   PEER_BIN=/work/peer-mamba/llama.cpp/build/bin bash bench/run_issue10_quant.sh
# Environment: PEER_BIN (required), LMC (build/lmc), LMC_BASE (optional: a
# second lmc binary, e.g. main's, run right after LMC on every decode and
# prefill: its decode and LMC's ratio to it join the table, A/B in one run),
# CACHE (/tmp/lmc-issue10),
# ROUNDS (3), THREADS (2), NDEC (32), MODELS ("r125m r1b"),
# PEER_ARGS (extra llama-bench arguments, e.g. "--poll 0"; recorded),
# PREP_ONLY=1 (make the models and stop: the first making of the 1.1B files
# takes ~3-6 min, so make them before the timed call),
# OUT (bench/results/issue10-quant-<date>.md), LMC_DEVICE (cpu: lmc runs
# with --device cpu, as the CPU-only llama.cpp build runs; without it lmc
# probes for a GPU, which loads the CUDA libraries of a CUDA build: ~150 MB
# of resident memory on a machine with the toolkit and no GPU).
set -u
cd "$(dirname "$0")/.." || exit 1
PB=${PEER_BIN:?set PEER_BIN to the llama.cpp bin folder}
LMC=${LMC:-build/lmc}
LMC_BASE=${LMC_BASE:-}
CACHE=${CACHE:-/tmp/lmc-issue10}
ROUNDS=${ROUNDS:-3}
T=${THREADS:-2}
NDEC=${NDEC:-32}
MODELS=${MODELS:-"r125m r1b"}
PEER_ARGS=${PEER_ARGS:-}
DEV=${LMC_DEVICE:-cpu}
OUT=${OUT:-bench/results/issue10-quant-$(date -u +%F).md}
TYPES="Q8_0 Q4_0 Q4_K"
mkdir -p "$CACHE" || exit 1
LOG=$CACHE/run.log
: >"$LOG"
log() { echo "$*" | tee -a "$LOG"; }

# rss.py CMD...: runs CMD, prints its stderr's last line and "maxrss_kb N" (the child's peak RSS)
cat >"$CACHE/rss.py" <<'PY'
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
err = [l for l in p.stderr.splitlines() if l.strip()]
sys.stdout.write(p.stdout if sys.argv[1].endswith("llama-bench") else "")
print("lastline", err[-1] if err else "", "rc", p.returncode)
print("maxrss_kb", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY

make_model() { # name hidden layers heads kv inter
  local d=$CACHE/$1
  [ -s "$d/model.safetensors" ] && [ -s "$d/tokenizer.json" ] && return 0
  log "making $d (random F16 Llama: hidden $2, layers $3, heads $4/$5, MLP $6, vocab 32000)"
  python3 - "$d" "$2" "$3" "$4" "$5" "$6" <<'PY' || return 1
import json, os, struct, sys
import numpy as np
d = sys.argv[1]; C, L, H, KV, I = map(int, sys.argv[2:]); V = 32000; hd = C // H
os.makedirs(d, exist_ok=True)
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": H,
           "num_key_value_heads": KV, "head_dim": hd, "vocab_size": V, "hidden_act": "silu",
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
           "torch_dtype": "float16"}, open(f"{d}/config.json", "w"), indent=1)
t = [("model.embed_tokens.weight", (V, C))]
for l in range(L):
    p = f"model.layers.{l}."
    t += [(p + "input_layernorm.weight", (C,)), (p + "post_attention_layernorm.weight", (C,)),
          (p + "self_attn.q_proj.weight", (H * hd, C)), (p + "self_attn.k_proj.weight", (KV * hd, C)),
          (p + "self_attn.v_proj.weight", (KV * hd, C)), (p + "self_attn.o_proj.weight", (C, H * hd)),
          (p + "mlp.gate_proj.weight", (I, C)), (p + "mlp.up_proj.weight", (I, C)),
          (p + "mlp.down_proj.weight", (C, I))]
t += [("model.norm.weight", (C,)), ("lm_head.weight", (V, C))]
hdr, off = {}, 0
for n, s in t:
    nb = 2 * int(np.prod(s)); hdr[n] = {"dtype": "F16", "shape": list(s), "data_offsets": [off, off + nb]}; off += nb
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
rng = np.random.default_rng(10)
with open(f"{d}/model.safetensors.tmp", "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for n, s in t:
        a = np.ones(s, np.float16) if len(s) == 1 else (rng.standard_normal(s, np.float32) * 0.02).astype(np.float16)
        f.write(a.tobytes())
os.replace(f"{d}/model.safetensors.tmp", f"{d}/model.safetensors")
# a byte-level BPE of 32000 tokens (the 256 byte symbols, then fillers), as bench/run_cpu.sh writes
bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
sym = [chr(c) for c in cs]
vocab = {s: i for i, s in enumerate(sym)}
i = 0
while len(vocab) < V:
    s = sym[65 + i % 26] + sym[65 + (i // 26) % 26] + sym[65 + (i // 676) % 26] + sym[80 + i // 17576]
    vocab.setdefault(s, len(vocab)); i += 1
json.dump({"version": "1.0", "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "vocab": vocab, "merges": [], "unk_token": None}}, open(f"{d}/tokenizer.json", "w"))
json.dump({"add_bos_token": False}, open(f"{d}/tokenizer_config.json", "w"))
PY
}

prep() { # name: the F16 GGUF, the llama-quantize types and the GPTQ-4 folder
  local d=$CACHE/$1
  [ -s "$d.F16.gguf" ] || { log "lmc convert $1 -> F16 GGUF"; "$LMC" convert -m "$d" -o "$d.F16.gguf" --dtype f16 >>"$LOG" 2>&1 || return 1; }
  for q in $TYPES; do
    [ -s "$d.$q.gguf" ] && continue
    log "llama-quantize --pure $1 $q"
    "$PB/llama-quantize" --pure "$d.F16.gguf" "$d.$q.gguf.tmp" "$q" "$T" >>"$LOG" 2>&1 && mv "$d.$q.gguf.tmp" "$d.$q.gguf" || return 1
  done
  [ -s "$d-gptq4/config.json" ] || { log "lmc quantize $1 -> GPTQ-4 g128"; rm -rf "$d-gptq4"
    "$LMC" quantize -m "$d" -o "$d-gptq4" --method rtn --bits 4 --group 128 --head --threads "$T" >>"$LOG" 2>&1 || return 1; }
}

START=$(date -u +%FT%TZ)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for m in $MODELS; do
  case $m in
  r125m) make_model r125m 768 12 12 4 2048 ;;
  r1b) make_model r1b 2048 22 32 4 5632 ;;
  *) echo "unknown model $m" >&2; exit 1 ;;
  esac || { echo "making $m failed (see $LOG)" >&2; exit 1; }
  prep "$m" || { echo "preparing $m failed (see $LOG)" >&2; exit 1; }
done
[ "${PREP_ONLY:-0}" = 1 ] && { log "models ready in $CACHE"; exit 0; }
P512=$(python3 -c 'print("the quick brown fox "*25 + "abcdefghijkl")') # 512 tokens of the byte-level vocabulary
RES=$CACHE/results.tsv
: >"$RES"
lmc_run() { # model type src [binary engine-name]
  local out pf dc rss1 rss2 bin=${4:-$LMC} eng=${5:-lmc}
  out=$(python3 "$CACHE/rss.py" "$bin" generate -m "$3" -p "$P512" -n 1 --temp 0 --ignore-eos -t "$T" --device "$DEV")
  log "  $eng $1 $2 prefill: $(echo "$out" | tr '\n' ' ')"
  pf=$(echo "$out" | sed -n 's/.*prompt 512 tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p')
  rss1=$(echo "$out" | sed -n 's/^maxrss_kb //p')
  out=$(python3 "$CACHE/rss.py" "$bin" generate -m "$3" -p "ab" -n "$NDEC" --temp 0 --ignore-eos -t "$T" --device "$DEV")
  log "  $eng $1 $2 decode: $(echo "$out" | tr '\n' ' ')"
  dc=$(echo "$out" | sed -n 's/.*generated [0-9]* tokens at \([0-9.]*\) tok\/s.*/\1/p')
  rss2=$(echo "$out" | sed -n 's/^maxrss_kb //p')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$eng" "${pf:-nan}" "${dc:-nan}" "$(( ${rss1:-0} > ${rss2:-0} ? ${rss1:-0} : ${rss2:-0} ))" >>"$RES"
}
peer_run() { # model type gguf
  local out
  # shellcheck disable=SC2086
  out=$(python3 "$CACHE/rss.py" "$PB/llama-bench" -m "$3" -p 512 -n "$NDEC" -r 1 -t "$T" $PEER_ARGS -o json)
  log "  llama.cpp $1 $2: $(echo "$out" | grep -E '^(lastline|maxrss)' | tr '\n' ' ')"
  echo "$out" | python3 -c "
import json, sys
txt = sys.stdin.read(); js = txt[:txt.rfind(']') + 1]
rss = [l.split()[1] for l in txt.splitlines() if l.startswith('maxrss_kb')][0]
pf = dc = 'nan'
for e in json.loads(js or '[]'):
    if e['n_prompt'] > 0: pf = e['avg_ts']
    else: dc = e['avg_ts']
print('$1', '$2', 'llama.cpp', pf, dc, rss, sep='\t')" >>"$RES"
}
log "start $START load $LOAD0 commit $(git rev-parse --short HEAD) lmc $LMC base '$LMC_BASE' threads $T rounds $ROUNDS ndec $NDEC peer_args '$PEER_ARGS'"
for r in $(seq 1 "$ROUNDS"); do
  for m in $MODELS; do
    d=$CACHE/$m
    log "round $r $m ($(cut -d' ' -f1-3 /proc/loadavg))"
    lmc_run "$m" F16 "$d"
    [ -n "$LMC_BASE" ] && lmc_run "$m" F16 "$d" "$LMC_BASE" base
    for q in $TYPES; do
      lmc_run "$m" "$q" "$d.$q.gguf"
      [ -n "$LMC_BASE" ] && lmc_run "$m" "$q" "$d.$q.gguf" "$LMC_BASE" base
      peer_run "$m" "$q" "$d.$q.gguf"
    done
    lmc_run "$m" GPTQ-4 "$d-gptq4"
    [ -n "$LMC_BASE" ] && lmc_run "$m" GPTQ-4 "$d-gptq4" "$LMC_BASE" base
  done
done
END=$(date -u +%FT%TZ)
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
log "end $END load $LOAD1"
python3 - "$RES" "$OUT" "$START" "$END" "$LOAD0" "$LOAD1" "$(git rev-parse --short HEAD)" "$T" "$ROUNDS" "$NDEC" "$PEER_ARGS" "$CACHE" "$DEV" "$LMC_BASE" <<'PY'
import math, statistics, subprocess, sys
res, out, start, end, l0, l1, commit, T, R, ndec, pargs, cache, dev, base = sys.argv[1:]
v = {}
for line in open(res):
    m, t, eng, pf, dc, rss = line.rstrip("\n").split("\t")
    for k, x in (("pf", pf), ("dc", dc), ("rss", rss)):
        try:
            f = float(x)
        except ValueError:
            f = math.nan
        v.setdefault((m, t, eng, k), []).append(f)
def med(m, t, e, k):
    xs = [x for x in v.get((m, t, e, k), []) if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan
def f(x, nd=1):
    return "-" if math.isnan(x) else f"{x:.{nd}f}"
def ratio(a, b):
    return math.nan if math.isnan(a) or math.isnan(b) or b == 0 else a / b
cpu = subprocess.run("lscpu | sed -n 's/^Model name: *//p'", shell=True, capture_output=True, text=True).stdout.strip()
L = [f"# Issue 10 quantized speed and memory: lmc vs llama.cpp, {T} threads — {start[:10]}", "",
     f"- Commit {commit}; {start} to {end}; load average before {l0}, after {l1}",
     f"- Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores",
     f"- Command: `PEER_BIN=... ROUNDS={R} NDEC={ndec} THREADS={T}"
     + (f" PEER_ARGS='{pargs}'" if pargs else "") + " bash bench/run_issue10_quant.sh`"
     + (f" (llama-bench given `{pargs}`)" if pargs else " (llama-bench at its defaults, --poll 50)"),
     f"- Models in {cache}: random Llama F16 folders, `lmc convert --dtype f16` GGUF, "
     "`llama-quantize --pure` Q8_0/Q4_0/Q4_K (every tensor that type, both engines read these files), "
     "GPTQ-4 = `lmc quantize --method rtn --bits 4 --group 128 --head` (GPTQ v1 layout, lm_head 4-bit too; peer: llama.cpp Q4_0)",
     f"- lmc prefill: `lmc generate --device {dev} -p <512 tokens> -n 1`; lmc decode: `-p <2 tokens> -n {ndec}`; "
     f"llama.cpp: `llama-bench -p 512 -n {ndec} -r 1` (pp512, tg{ndec}); medians of {R} interleaved rounds; "
     "RSS: peak resident set (ru_maxrss) of each process, MB", ""]
for m in sorted({k[0] for k in v}, key=lambda s: s != "r125m"):
    f16 = med(m, "F16", "lmc", "dc")
    L += [f"## {m}", "", f"lmc F16 (HF folder): prefill {f(med(m, 'F16', 'lmc', 'pf'))} tok/s, decode {f(f16)} tok/s, "
          f"peak RSS {f(med(m, 'F16', 'lmc', 'rss') / 1024, 0)} MB", "",
          "| type | lmc pp512 | llama.cpp pp512 | ratio (goal >= 1.0) | lmc decode | llama.cpp decode | ratio (goal >= 1.1) "
          "| lmc decode / lmc F16 (4-bit goal >= 3) | lmc RSS MB | llama.cpp RSS MB | ratio (goal <= 1) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in ("Q8_0", "Q4_0", "Q4_K", "GPTQ-4"):
        pt = "Q4_0" if t == "GPTQ-4" else t
        a = [med(m, t, "lmc", k) for k in ("pf", "dc", "rss")]
        b = [med(m, pt, "llama.cpp", k) for k in ("pf", "dc", "rss")]
        L.append(f"| {t}{' (peer Q4_0)' if t == 'GPTQ-4' else ''} | {f(a[0])} | {f(b[0])} | {f(ratio(a[0], b[0]), 2)}x "
                 f"| {f(a[1])} | {f(b[1])} | {f(ratio(a[1], b[1]), 2)}x | {f(ratio(a[1], f16), 2)}x "
                 f"| {f(a[2] / 1024, 0)} | {f(b[2] / 1024, 0)} | {f(ratio(a[2], b[2]), 2)} |")
    L.append("")
    if base:
        L += [f"A/B in the same run: lmc ({commit}) against the base binary `{base}` (decode tok/s, medians)", "",
              "| type | lmc decode | base decode | lmc / base | lmc prefill | base prefill | lmc / base |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for t in ("F16", "Q8_0", "Q4_0", "Q4_K", "GPTQ-4"):
            a, b = med(m, t, "lmc", "dc"), med(m, t, "base", "dc")
            pa, pb = med(m, t, "lmc", "pf"), med(m, t, "base", "pf")
            L.append(f"| {t} | {f(a)} | {f(b)} | {f(ratio(a, b), 2)}x | {f(pa)} | {f(pb)} | {f(ratio(pa, pb), 2)}x |")
        L.append("")
L += ["## Raw lines", "", "```"] + [l.rstrip() for l in open(cache + "/run.log")] + ["```", ""]
open(out, "w").write("\n".join(L))
print("\n".join(L[: L.index("## Raw lines")]))
PY
echo "wrote $OUT"
