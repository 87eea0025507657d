# shellcheck shell=bash
# zero_train_common.sh — sourced by test_train_zero_units.sh and
# test_train_zero_optim.sh (not a test itself): the data (a tokenizer and
# shards of a small corpus in $TMP/data), the llama / GPT-2 / tied-llama
# training flags A, G, T (20 steps, accumulation 2, clipping, validation,
# a checkpoint every 10), mpirun's flags (MPIRUN), ok, and the comparisons
# compare and bitexact; have_mpi=1 when mpirun runs lmc's MPI ranks.
set -u
export LMC_DIST_TIMEOUT=60 # these runs' collectives wait a minute at most (mp_launch.sh keeps it)
. "$(dirname "$0")/mp_launch.sh" "$1"
MPIRUN=(timeout 300 "${MPIRUN[@]}")
mp_data
C="--data $TMP/data --seq 16 --steps 20 --lr 3e-3 --warmup 2 --clip 0.5 --accum 2 --threads 1 --save-every 10
   --eval-every 10 --eval-batches 2"
A="$C --arch llama --layers 3 --hidden 64 --heads 4 --kv-heads 2 --intermediate 96"
G="$C --arch gpt2 --layers 2 --hidden 64 --heads 4"
T="$A --tie"
# compare DIR REF [PTOL [LTOL]]: losses, validation losses (LTOL, default 1e-6), final parameters (PTOL, default 1e-6)
compare() {
  python3 - "$TMP/$1" "$TMP/$2" "${3:-1e-6}" "${4:-1e-6}" <<'PY'
import json, struct, sys
def rows(d): return [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
def params(d):
    b = open(f"{d}/step_000020/model.safetensors", "rb").read()
    n = int.from_bytes(b[:8], "little"); h = json.loads(b[8:8 + n]); base = 8 + n; out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; out[k] = struct.unpack(f"<{(e - s) // 4}f", b[base + s:base + e])
    return out
r, ref, p, refp = rows(sys.argv[1]), rows(sys.argv[2]), params(sys.argv[1]), params(sys.argv[2])
assert len(r) == 20 == len(ref) and sorted(p) == sorted(refp), (len(r), len(ref))
wl = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(r, ref))
wv = max(abs(a["val_loss"] - b["val_loss"]) / abs(b["val_loss"]) for a, b in zip(r, ref) if "val_loss" in b)
scale = max(abs(x) for t in refp.values() for x in t)
wp = max(abs(x - y) for k in refp for x, y in zip(p[k], refp[k])) / scale
print(f"{sys.argv[1].rsplit('/', 1)[1]}: losses max rel {wl:.2e}, val {wv:.2e}, params max |diff| / max |p| {wp:.2e}")
lt = float(sys.argv[4])
# parameters: AVX2-only CPUs' fp32 kernels block a rank's small batch otherwise than one
# process's (small-M vs blocked kernels), and AdamW turns that rounding into updates: up to
# 2.3x the AVX-512 bounds measured on a Zen 3, so 10x there
px = 1 if "avx512f" in open("/proc/cpuinfo").read() else 10
sys.exit(0 if wl <= lt and wv <= lt and wp <= float(sys.argv[3]) * px else 1)
PY
}
# bitexact A B: the same losses and the same final model file
bitexact() {
  python3 - "$TMP/$1" "$TMP/$2" <<'PY'
import json, sys
a, b = sys.argv[1], sys.argv[2]
la = [json.loads(l)["loss"] for l in open(f"{a}/metrics.jsonl")]
lb = [json.loads(l)["loss"] for l in open(f"{b}/metrics.jsonl")]
assert la == lb, (la, lb)
assert open(f"{a}/step_000020/model.safetensors", "rb").read() == open(f"{b}/step_000020/model.safetensors", "rb").read()
PY
}
have_mpi=0
if command -v mpirun >/dev/null 2>&1; then
  "${MPIRUN[@]}" -np 1 "$LMC" train $A --batch 4 --zero 0 --steps 1 -o "$TMP/probe" 2>"$TMP/err"
  mp_no_mpi "$TMP/err" || have_mpi=1
fi
