#!/usr/bin/env bash
# train_spec_pair.sh — draft/target pairs for speculative decoding on KJV
# with the default model's tokenizer (issue 17), then their speed:
#  draft:  a small draft for the default model (models/kjv-llama as the
#          target): DRAFT_LAYERS x DRAFT_HIDDEN (default 2 x 128, ~1.4M
#          parameters with the tied 8192-row embedding), trained on the
#          same token shards (Genesis..Hebrews; James..Revelation held out)
#          for DRAFT_STEPS steps — small enough for a CPU (a few minutes);
#  target: with --target, a larger target for which the default model is
#          the draft, which must beat the draft on held-out text: each
#          shape of TARGETS (LAYERSxHIDDENxHEADSxINTER[@WEIGHT_DECAY], default
#          "12x768x12x2048 12x576x9x1536 12x576x9x1536@0.5": ~91M and ~52M
#          parameters with the tied 8192-row embedding, the last with weight
#          decay 0.5) trains up to TARGET_STEPS steps
#          (1500 x 32 x 256 tokens: ~45 passes over the 1.06M training tokens) with the
#          validation loss evaluated every TARGET_EVAL steps (lmc train
#          --eval-every, TARGET_EVAL_BATCHES batches of the held-out books),
#          the checkpoint of the lowest kept (--keep-best: RUN/best) and an
#          early stop after TARGET_PATIENCE evaluations without a lower one
#          (--patience); weight decay TARGET_WD unless @ gives it. The shape whose best
#          validation loss is lowest becomes kjv-target; a table gives
#          each one's best step, validation loss and held-out perplexity
#          (lmc eval) against the draft's (the default model: 43.2). For a
#          GPU (--device cuda); on a CPU, tiny TARGETS and few steps check
#          the logic (docs/speculation-and-kv.md: "The target recipe");
#  distill: with --distill, drafts distilled from OUT/kjv-target (made by
#          --target in the same run or before): lmc train --distill-from
#          (KL to the target's distribution, --distill-alpha KD_ALPHA,
#          --distill-temp KD_TEMP) for KD_STEPS steps each:
#            kd-draft: the default model's shape, starting from its weights;
#            kd-small: KD_SMALL (LAYERSxHIDDENxHEADSxINTER, default
#                      4x256x4x768, ~5.5M parameters, about half the
#                      default model's bytes) from scratch;
#            kd-tiny:  KD_TINY (default 2x256x4x768, ~3.8M parameters)
#                      from scratch, when KD_DRAFTS names it;
#          a table gives each one's last KL, top-1 agreement with the
#          target (training batches), held-out perplexity and time;
# and measures each pair: validation perplexity of every model, then
# greedy `lmc generate` on KJV prompts (GEN tokens each, the same prompts
# for every run, interleaved ROUNDS times) plain, with --draft-model
# (adaptive K, --draft-tokens 4) and with --prompt-lookup 3: tokens/s
# from the generate log, drafted / accepted, and that the speculative
# texts equal the plain ones (greedy: they must).
# Usage: scripts/train_spec_pair.sh OUT_DIR [--device cpu|cuda] [--target] [--distill] [--measure-only]
# env: LMC (default build/lmc), THREADS (nproc), DRAFT_STEPS (400), DRAFT_BATCH (16), SKIP_DRAFT (0; 1: no kjv-draft),
#      DRAFT_LAYERS/HIDDEN/HEADS/INTER (2/128/4/384), TARGETS (above), TARGET_STEPS (1500),
#      TARGET_BATCH (32), TARGET_LR (6e-4; min 1/10 of it), TARGET_WARMUP (50), TARGET_WD (0.1),
#      TARGET_EVAL (25), TARGET_EVAL_BATCHES (8), TARGET_PATIENCE (6),
#      GEN (64), ROUNDS (2), PROMPTS (8), MEASURE (1; 0 stops after training),
#      EVAL_DEVICE (DEVICE; where the perplexities run),
#      KD_STEPS (300), KD_BATCH (32), KD_WARMUP (20), KD_ALPHA (1), KD_TEMP (1), KD_LR (5e-4 from the default model's
#      weights; 5x for kd-small from scratch), KD_SMALL (4x256x4x768), KD_TINY (2x256x4x768),
#      KD_DRAFTS ("kd-draft kd-small"; "kd-draft kd-small kd-tiny" adds the third)
#      KD_DATA (prepared data for the distillation, default OUT/data), KD_FROM (a folder holding earlier
#      drafts of the same names: each starts from those weights at KD_LR; bench/gpu_spec_pair.sh ONPOLICY=1)
set -eu -o pipefail
OUT=${1:?usage: scripts/train_spec_pair.sh OUT_DIR [--device cpu|cuda] [--target] [--distill] [--measure-only]}
shift
DEVICE=cpu; TARGET=0; MEASURE_ONLY=0; DISTILL=0
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEVICE=${2:?--device needs cpu or cuda}; shift 2 ;;
    --target) TARGET=1; shift ;;
    --distill) DISTILL=1; shift ;;
    --measure-only) MEASURE_ONLY=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
LMC=${LMC:-build/lmc}; THREADS=${THREADS:-$(nproc)}; BASE=models/kjv-llama
DRAFT_STEPS=${DRAFT_STEPS:-400}; DRAFT_BATCH=${DRAFT_BATCH:-16}; TARGET_STEPS=${TARGET_STEPS:-1500}
DL=${DRAFT_LAYERS:-2}; DH=${DRAFT_HIDDEN:-128}; DHEADS=${DRAFT_HEADS:-4}; DI=${DRAFT_INTER:-384}
TARGETS=${TARGETS:-12x768x12x2048 12x576x9x1536 12x576x9x1536@0.5}; TARGET_BATCH=${TARGET_BATCH:-32}; TARGET_LR=${TARGET_LR:-6e-4}
TARGET_WARMUP=${TARGET_WARMUP:-50}; TARGET_WD=${TARGET_WD:-0.1}; TARGET_EVAL=${TARGET_EVAL:-25}
TARGET_EVAL_BATCHES=${TARGET_EVAL_BATCHES:-8}; TARGET_PATIENCE=${TARGET_PATIENCE:-6}
GEN=${GEN:-64}; ROUNDS=${ROUNDS:-2}; NPROMPTS=${PROMPTS:-8}
SPLIT=71726   # the first line of James: the validation books start here
mkdir -p "$OUT"
tail -n +$SPLIT data/kjv.txt >"$OUT/kjv-val.txt"
[ -d "$OUT/data" ] || "$LMC" prepare-data -m "$BASE" --text-file data/kjv.txt --val-from-line $SPLIT -o "$OUT/data"
common=(--data "$OUT/data" --seq 256 --schedule cosine --eval-every 100 --eval-batches 8 --tokenizer "$BASE"
        --threads "$THREADS" --device "$DEVICE" --max-pos 256 --tie --vocab 8192)
finish() { # checkpoint dir -> bf16 HF folder with the default model's generation settings
  rm -rf "$2"
  "$LMC" convert -m "$1" -o "$2" --dtype bf16
  cp "$BASE/generation_config.json" "$BASE/tokenizer_config.json" "$2/"
}
ppl() { # model dir -> its held-out perplexity (lmc eval over the validation books)
  "$LMC" eval -m "$1" --text-file "$OUT/kjv-val.txt" --device "${EVAL_DEVICE:-$DEVICE}" --json |
    python3 -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["ppl"])'
}
if [ $MEASURE_ONLY = 0 ]; then
  if [ "${SKIP_DRAFT:-0}" = 0 ]; then
    "$LMC" train "${common[@]}" -o "$OUT/draft-run" --arch llama --layers "$DL" --hidden "$DH" --heads "$DHEADS" \
        --kv-heads "$DHEADS" --intermediate "$DI" --batch "$DRAFT_BATCH" --steps "$DRAFT_STEPS" --lr 3e-3 --min-lr 3e-4 \
        --warmup 20 --save-every 100
    finish "$(ls -d "$OUT"/draft-run/step_* | sort | tail -1)" "$OUT/kjv-draft"
  fi
  if [ $TARGET = 1 ]; then
    # each shape: validation loss every TARGET_EVAL steps, RUN/best = its lowest, early stop after
    # TARGET_PATIENCE evaluations without a lower one; no other checkpoint (the last step's folder aside)
    min_lr=$(python3 -c "print($TARGET_LR / 10)")
    best_run=""; best_vl=""
    echo "## target shapes: best validation loss (lmc train --keep-best --patience $TARGET_PATIENCE, eval every $TARGET_EVAL)"
    echo "| shape (layers x hidden x heads x intermediate[@weight decay]) | steps run | best step | val loss (trainer) | held-out ppl (lmc eval) | draft $BASE ppl | target better |"
    echo "|---|---|---|---|---|---|---|"
    [ -s "$OUT/draft-ppl" ] || ppl "$BASE" >"$OUT/draft-ppl"   # computed once per OUT
    dppl=$(cat "$OUT/draft-ppl")
    for shape in $TARGETS; do
      wd=$TARGET_WD; dims=$shape
      case $shape in *@*) wd=${shape#*@}; dims=${shape%@*} ;; esac
      IFS=x read -r TL TH THEADS TI <<<"$dims"
      run="$OUT/target-run-$shape"
      "$LMC" train "${common[@]}" -o "$run" --arch llama --layers "$TL" --hidden "$TH" --heads "$THEADS" \
          --kv-heads "$THEADS" --intermediate "$TI" --batch "$TARGET_BATCH" --steps "$TARGET_STEPS" \
          --lr "$TARGET_LR" --min-lr "$min_lr" --warmup "$TARGET_WARMUP" --wd "$wd" \
          --eval-every "$TARGET_EVAL" --eval-batches "$TARGET_EVAL_BATCHES" --keep-best --patience "$TARGET_PATIENCE" \
          2>"$run.log" || { tail -20 "$run.log" >&2; exit 1; }
      finish "$run/best" "$run/best-hf"
      read -r ran bstep bvl < <(python3 - "$run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
b = min((r["val_loss"], r["step"]) for r in rows if "val_loss" in r)
print(rows[-1]["step"], b[1], "%.4f" % b[0])
PY
)
      tppl=$(ppl "$run/best-hf")
      better=$(python3 -c "print('yes' if $tppl < $dppl else 'NO')")
      echo "| $shape | $ran of $TARGET_STEPS | $bstep | $bvl | $tppl | $dppl | $better |"
      if [ -z "$best_vl" ] || python3 -c "import sys; sys.exit(0 if $bvl < $best_vl else 1)"; then
        best_vl=$bvl; best_run=$run
      fi
    done
    rm -rf "$OUT/kjv-target"
    cp -r "$best_run/best-hf" "$OUT/kjv-target"
    echo "kjv-target: $best_run/best (the lowest best validation loss, $best_vl)"
  fi
  if [ $DISTILL = 1 ]; then
    [ -d "$OUT/kjv-target" ] || { echo "--distill needs $OUT/kjv-target (run with --target)" >&2; exit 1; }
    KD_STEPS=${KD_STEPS:-300}; KD_BATCH=${KD_BATCH:-32}; KD_LR=${KD_LR:-5e-4}
    echo "## drafts distilled from kjv-target (lmc train --distill-from, alpha ${KD_ALPHA:-1}, T ${KD_TEMP:-1}, $KD_STEPS steps x $KD_BATCH x 256 tokens)"
    echo "| draft | shape | init | parameters | KL to the target (last step) | top-1 agreement (last step) | held-out ppl | seconds |"
    echo "|---|---|---|---|---|---|---|---|"
    for kd in ${KD_DRAFTS:-kd-draft kd-small}; do
      run="$OUT/$kd-run"; t0=$(date +%s); rm -rf "$run"
      if [ "$kd" = kd-draft ]; then
        init=(-m "$BASE"); lr=$KD_LR; shape="default (8x288x6x768)"; from="$BASE"
      else
        case $kd in
          kd-small) IFS=x read -r SL SH SHEADS SI <<<"${KD_SMALL:-4x256x4x768}" ;;
          kd-tiny) IFS=x read -r SL SH SHEADS SI <<<"${KD_TINY:-2x256x4x768}" ;;
          *) echo "KD_DRAFTS: unknown draft $kd (kd-draft, kd-small, kd-tiny)" >&2; exit 2 ;;
        esac
        init=(--arch llama --layers "$SL" --hidden "$SH" --heads "$SHEADS" --kv-heads "$SHEADS" --intermediate "$SI")
        lr=$(python3 -c "print(5 * $KD_LR)"); shape="${SL}x${SH}x${SHEADS}x${SI}"; from=scratch
      fi
      if [ -n "${KD_FROM:-}" ] && [ -d "$KD_FROM/$kd" ]; then   # a second stage: from an earlier draft's weights
        init=(-m "$KD_FROM/$kd"); lr=$KD_LR; from="$KD_FROM/$kd"
      fi
      kdc=(--data "${KD_DATA:-$OUT/data}" "${common[@]:2}")      # common starts with --data OUT/data
      "$LMC" train "${kdc[@]}" -o "$run" "${init[@]}" --batch "$KD_BATCH" --steps "$KD_STEPS" --lr "$lr" \
          --min-lr "$(python3 -c "print($lr / 10)")" --warmup "${KD_WARMUP:-20}" --distill-from "$OUT/kjv-target" \
          --distill-alpha "${KD_ALPHA:-1}" --distill-temp "${KD_TEMP:-1}" 2>"$run.log" || { tail -20 "$run.log" >&2; exit 1; }
      finish "$(ls -d "$run"/step_* | sort | tail -1)" "$OUT/$kd"
      secs=$(($(date +%s) - t0))
      read -r np kl ag < <(python3 - "$run/metrics.jsonl" "$run.log" <<'PY'
import json, re, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
m = re.search(r"llama, (\d+) parameters", open(sys.argv[2]).read())
print(m.group(1) if m else "?", "%.4f" % r["distill_kl"], "%.1f%%" % (100 * r["distill_agree"]))
PY
)
      echo "| $kd | $shape | $from | $np | $kl | $ag | $(ppl "$OUT/$kd") | $secs |"
    done
  fi
fi
# ---- measure (MEASURE=0: stop after training; EVAL_DEVICE: where the perplexities run, default DEVICE)
[ "${MEASURE:-1}" = 1 ] || exit 0
echo "## validation perplexity (James..Revelation)"
for m in "$BASE" "$OUT/kjv-draft" "$OUT/kjv-target"; do
  [ -d "$m" ] || continue
  printf '%s: ' "$m"; "$LMC" eval -m "$m" --text-file "$OUT/kjv-val.txt" --device "${EVAL_DEVICE:-$DEVICE}" --json | tr -d '\n'; echo
done
if [ -d "$OUT/kjv-target" ]; then
  tp=$(ppl "$OUT/kjv-target"); dp=$(ppl "$BASE")
  echo "target vs draft held-out perplexity: $tp vs $dp ($(python3 -c "print('the target is better' if $tp < $dp else 'the target is WORSE than its draft')"))"
fi
python3 - "$LMC" "$DEVICE" "$THREADS" "$GEN" "$ROUNDS" "$NPROMPTS" "$BASE" "$OUT" <<'PY'
import os, re, statistics, subprocess, sys
LMC, DEV, THR, GEN, ROUNDS, NP, BASE, OUT = sys.argv[1:9]
GEN, ROUNDS, NP = int(GEN), int(ROUNDS), int(NP)
verses = [l.strip() for l in open("data/kjv.txt", encoding="utf-8") if len(l.strip()) > 40]
prompts = [" ".join(v.split()[:8]) for v in verses[100:100 + 997 * NP:997]][:NP]
# each target with its drafts: plain, --prompt-lookup 3 and each draft interleaved prompt by prompt
T = os.path.join(OUT, "kjv-target")
groups = [(BASE, [("kjv-draft", os.path.join(OUT, "kjv-draft"))]),
          (T, [("kjv-llama", BASE), ("kd-draft", os.path.join(OUT, "kd-draft")),
               ("kd-small", os.path.join(OUT, "kd-small")), ("kd-tiny", os.path.join(OUT, "kd-tiny"))])]
def gen(model, prompt, extra):
    r = subprocess.run([LMC, "generate", "-m", model, "-p", prompt, "-n", str(GEN), "--temp", "0", "--ignore-eos",
                        "--device", DEV, "--threads", THR, *extra], capture_output=True, text=True, timeout=600)
    if r.returncode: sys.exit("generate failed: " + r.stderr[-400:])
    m = re.search(r"generated \d+ tokens at ([0-9.]+) tok/s", r.stderr)
    d = re.search(r"(\d+) drafted, (\d+) accepted", r.stderr)
    return r.stdout, float(m.group(1)) if m else float("nan"), (int(d.group(1)), int(d.group(2))) if d else (0, 0)
print("| target + draft | mode | tokens/s (median over prompts and rounds) | vs plain | drafted / accepted | texts equal to plain |")
print("|---|---|---|---|---|---|")
for tgt, drafts in groups:
    drafts = [(n, d) for n, d in drafts if os.path.isdir(d)]
    if not (os.path.isdir(tgt) and drafts): continue
    tname = os.path.basename(tgt.rstrip("/"))
    modes = [("plain", "", [])] + [("--draft-model", n, ["--draft-model", d, "--draft-tokens", "4"]) for n, d in drafts] + \
            [("--prompt-lookup 3", "", ["--prompt-lookup", "3"])]
    keys = [m + n for m, n, _ in modes]
    rates = {k: [] for k in keys}; texts = {k: [] for k in keys}; dr = {k: [0, 0] for k in keys}
    for r in range(ROUNDS):
        for p in prompts:
            for (m, n, extra), k in zip(modes, keys):  # interleaved: each prompt through every mode in turn
                out, tps, (d, a) = gen(tgt, p, extra)
                rates[k].append(tps); dr[k][0] += d; dr[k][1] += a
                if r == 0: texts[k].append(out)
    base = statistics.median(rates["plain"])
    for (m, n, _), k in zip(modes, keys):
        med = statistics.median(rates[k])
        same = sum(a == b for a, b in zip(texts[k], texts["plain"]))
        print("| %s | %s | %.1f | %.2fx | %s | %d of %d |" % (tname + (" + " + n if n else ""), m, med, med / base,
              "%d / %d (%.0f%%)" % (dr[k][0], dr[k][1], 100 * dr[k][1] / max(1, dr[k][0])) if dr[k][0] else "-",
              same, len(prompts)), flush=True)
PY
