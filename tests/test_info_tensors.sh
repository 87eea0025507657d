#!/usr/bin/env bash
# test_info_tensors.sh — `lmc info --tensors` lists the architecture's
# tensor spec table for a model: for every fixture (llama, qwen2, gpt2,
# qwen3; mixtral, qwen3moe with one row per expert tensor) each tensor of
# model.safetensors appears once with its on-disk shape and dtype, nothing else is listed except a tied head marked absent,
# roles are what the names say (embeddings, norms, biases, matrices), and
# the text form names the same tensors. Usage: test_info_tensors.sh PATH/TO/lmc
set -u
LMC="$1"
. "$(dirname "$0")/cli_common.sh"
for m in llama-tiny qwen2-tiny gpt2-tiny qwen3-tiny mixtral-tiny qwen3moe-tiny; do
  D=tests/fixtures/$m
  "$LMC" info -m "$D" --tensors --json >"$TMP/t.json" 2>"$TMP/err"; ok $? "$m info --tensors: $(cat "$TMP/err")"
  "$LMC" info -m "$D" --tensors >"$TMP/t.txt" 2>>"$TMP/err"; ok $? "$m info --tensors (text)"
  python3 - "$D/model.safetensors" "$TMP/t.json" "$TMP/t.txt" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
hdr = {k: v for k, v in json.loads(f.read(n)).items() if k != "__metadata__"}
listed = json.load(open(sys.argv[2]))
names = [t["name"] for t in listed]
errs = []
if len(set(names)) != len(names):
    errs.append("a tensor listed twice")
for t in listed:
    if t["dtype"] == "absent (tied)":
        if t["required"] or t["name"] in hdr:
            errs.append("absent " + t["name"])
        continue
    h = hdr.get(t["name"])
    if h is None:
        errs.append("listed, not in the file: " + t["name"])
    elif h["shape"] != t["shape"] or h["dtype"] != t["dtype"]:
        errs.append("%s: %s %s vs file %s %s" % (t["name"], t["shape"], t["dtype"], h["shape"], h["dtype"]))
    want = ("embedding" if any(s in t["name"] for s in ("embed", "wte", "wpe")) else
            "bias" if t["name"].endswith(".bias") else
            "norm" if len(t["shape"]) == 1 else "matrix")
    if t["role"] != want:
        errs.append("%s: role %s, want %s" % (t["name"], t["role"], want))
missing = set(hdr) - set(names)
if missing:
    errs.append("in the file, not listed: %s" % sorted(missing)[:3])
text = [l.split()[0] for l in open(sys.argv[3]) if l.strip()]
if text != names:
    errs.append("text and json lists differ")
if errs:
    print("\n".join(errs))
sys.exit(1 if errs else 0)
PY
  ok $? "$m: tensor table matches model.safetensors"
done
echo "test_info_tensors: $pass passed, $fail failed"
[ "$fail" = 0 ]
