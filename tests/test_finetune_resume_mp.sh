#!/usr/bin/env bash
# test_finetune_resume_mp.sh — `lmc finetune --full` checkpoints under
# mpirun: data parallel (-np 2) and tensor parallel (-np 2 --tp 2) on
# llama-tiny, and TP 2 with the vocabulary split (--tp-vocab) on qwen2-tiny
# (its embedding tied to the head). Each layout runs 8 steps uninterrupted, and again with
# --save-every 4 --stop-at 6 (stopped after step 6 without output, as if
# killed; the step-4 checkpoint is the newest) then --resume from step 4 to
# the end: the resumed model is bit-identical to the uninterrupted one and
# steps 5..8 have the same losses; the uninterrupted llama runs equal one process
# with the same global batch (losses 1e-6 relative, weights 1e-6 in norm
# and 1e-5 of their largest, test_mp_finetune's bounds). The consolidated TP checkpoint also resumes in one process
# (1e-6). Skipped without mpirun or an MPI build.
# Usage: test_finetune_resume_mp.sh PATH/TO/lmc
set -u
export LMC_DIST_TIMEOUT=120
. "$(dirname "$0")/mp_launch.sh" "$1"
skip() { echo "test_finetune_resume_mp: skipped: $1"; exit 0; }
command -v mpirun >/dev/null 2>&1 || skip "no mpirun"
grep -qE '^MPI_C_FOUND:[A-Z]+=(TRUE|ON|1)$|^MPI_mpi_LIBRARY:FILEPATH=/' "$(dirname "$LMC")/CMakeCache.txt" 2>/dev/null ||
  skip "lmc built without MPI"
MPIRUN=(timeout 300 "${MPIRUN[@]}")
FIX=tests/fixtures/llama-tiny
for i in $(seq 1 23); do
  echo "{\"prompt\":\"Verse $i says:\",\"completion\":\" the lord is my shepherd $((i % 5)) and I shall not want $i\"}"
done >"$TMP/d.jsonl"
C=(finetune --data "$TMP/d.jsonl" --seq 32 --lr 1e-2 --threads 1 --schedule cosine --warmup 2 --steps 8
   --clip 0.5 --full)

"$LMC" "${C[@]}" -m $FIX --batch 2 --accum 2 -o "$TMP/one" 2>"$TMP/err"; ok $? "one process: $(tail -2 "$TMP/err")"
for lay in dp tp tpv; do
  case $lay in
    dp) X=(-m $FIX --batch 2);;
    tp) X=(-m $FIX --batch 2 --accum 2 --tp 2);;
    tpv) X=(-m tests/fixtures/qwen2-tiny --batch 2 --accum 2 --tp 2 --tp-vocab);; # tied embedding, split by vocabulary
  esac
  "${MPIRUN[@]}" -np 2 "$LMC" "${C[@]}" "${X[@]}" -o "$TMP/$lay" >"$TMP/$lay.log" 2>&1
  ok $? "$lay uninterrupted: $(tail -3 "$TMP/$lay.log")"
  "${MPIRUN[@]}" -np 2 "$LMC" "${C[@]}" "${X[@]}" --save-every 4 --stop-at 6 -o "$TMP/${lay}k" >"$TMP/${lay}k.log" 2>&1
  ok $? "$lay stopped at 6: $(tail -3 "$TMP/${lay}k.log")"
  [ -f "$TMP/${lay}k.ckpt/step_000004/optimizer.safetensors" ] && [ ! -e "$TMP/${lay}k" ] &&
    grep -q "stopped at step 6 of 8" "$TMP/${lay}k.log"
  ok $? "$lay: step-4 checkpoint, no output after --stop-at: $(ls "$TMP/${lay}k.ckpt" 2>&1)"
  "${MPIRUN[@]}" -np 2 "$LMC" "${C[@]}" "${X[@]}" --resume "$TMP/${lay}k.ckpt/step_000004" -o "$TMP/${lay}r" \
    >"$TMP/${lay}r.log" 2>&1
  ok $? "$lay resumed: $(tail -3 "$TMP/${lay}r.log")"
  grep -q "resumed .*step_000004 at step 4" "$TMP/${lay}r.log"; ok $? "$lay resume line"
  cmp -s "$TMP/$lay/model.safetensors" "$TMP/${lay}r/model.safetensors"
  ok $? "$lay: resumed model bit-identical to the uninterrupted one"
  python3 - "$TMP/$lay.metrics.jsonl" "$TMP/${lay}r.metrics.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in b] == [5, 6, 7, 8], [r["step"] for r in b]
assert [r["loss"] for r in a[4:]] == [r["loss"] for r in b], (a[4:], b)
PY
  ok $? "$lay: resumed losses of steps 5..8 equal"
done
# the consolidated TP checkpoint resumed by one process with the same global batch
"$LMC" "${C[@]}" -m $FIX --batch 2 --accum 2 --resume "$TMP/tpk.ckpt/step_000004" -o "$TMP/tp1" 2>"$TMP/err"
ok $? "tp checkpoint resumed in one process: $(tail -2 "$TMP/err")"
python3 - "$TMP" <<'PY'
import json, struct, sys
tmp = sys.argv[1]
def rows(d): return [json.loads(l)["loss"] for l in open(f"{tmp}/{d}.metrics.jsonl")]
def params(d):
    b = open(f"{tmp}/{d}/model.safetensors", "rb").read()
    n = int.from_bytes(b[:8], "little"); h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        s, e = v["data_offsets"]; out[k] = struct.unpack(f"<{(e - s) // 4}f", b[8 + n + s:8 + n + e])
    return out
ref, refp = rows("one"), params("one")
scale = max(abs(x) for t in refp.values() for x in t)
bad = 0
for d, first in (("dp", 0), ("tp", 0), ("tp1", 4)):
    r, p = rows(d), params(d)
    assert len(r) == 8 - first and sorted(p) == sorted(refp), (d, len(r))
    wl = max(abs(x - y) / abs(y) for x, y in zip(r, ref[first:]))
    wp = max(abs(x - y) for k in refp for x, y in zip(p[k], refp[k])) / scale
    wn = (sum((x - y) ** 2 for k in refp for x, y in zip(p[k], refp[k])) /
          sum(y * y for t in refp.values() for y in t)) ** 0.5
    print(f"{d}: losses max rel {wl:.2e}, weights |diff| / |w| {wn:.2e} (max |diff| / max |w| {wp:.2e})")
    # test_mp_finetune's bounds: the TP sums' order changes the rounding, which AdamW magnifies
    bad += not (wl <= 1e-6 and wn <= 1e-6 and wp <= 1e-5)
sys.exit(bad)
PY
ok $? "dp, tp and the tp checkpoint resumed in one process equal one process"
echo "test_finetune_resume_mp: $pass passed, $fail failed"
[ $fail = 0 ]
