#!/usr/bin/env bash
# test_moe_gguf.sh — mixture-of-experts models as GGUF files (llama.cpp's
# layout: Mixtral as "llama" with expert_count, "qwen2moe", "qwen3moe",
# "olmoe"; the experts of a layer stacked per projection as
# ffn_gate_exps / ffn_up_exps / ffn_down_exps, ne [in, out, experts]; the
# router ffn_gate_inp; Qwen2-MoE's shared expert ffn_*_shexp and its gate
# ffn_gate_inp_shexp; expert_count / expert_used_count /
# expert_feed_forward_length / expert_shared_feed_forward_length keys).
#  - Round trip on mixtral-, qwen3moe-, qwen2moe- (a dense layer among
#    sparse ones), olmoe- and olmoe-clip-tiny (clip_qkv as
#    attention.clamp_kqv): `lmc convert` to f32 GGUF, then `lmc parity
#    FILE.gguf --ref FIXTURE` against transformers' float64 references
#    (logits, greedy ids); the GGUF converted back to a folder passes parity
#    too; the names, shapes and keys in the file are llama.cpp's (read back
#    by a small GGUF reader here); q8_0 files (experts as quantized linears)
#    match their dequantized folder (KL < 1e-2, top-1 >= 0.85).
#  - Refused or broken: OLMoE clip_qkv -1, 0 or a string (the field named); a Qwen2-MoE with norm_topk_prob true (llama.cpp's
#    qwen2moe never renormalises) is not written; a file whose expert_count
#    disagrees with the stacks, top-k above the experts, a missing expert
#    stack, a stack of the wrong expert count: exit 1 naming the key or
#    tensor, never a crash.
# Usage: test_moe_gguf.sh PATH/TO/lmc
set -u
LMC="$1"
FIX=tests/fixtures
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2" >&2; fi; }
TEXT="And the king said unto his servants, Go ye and search the land, and bring me word again of all that ye find there."

for m in mixtral-tiny qwen3moe-tiny qwen2moe-tiny olmoe-tiny olmoe-clip-tiny; do
  G="$TMP/$m.gguf"
  "$LMC" convert -m "$FIX/$m" -o "$G" --dtype f32 >/dev/null 2>"$TMP/err"; ok $? "$m convert f32: $(cat "$TMP/err")"
  "$LMC" parity "$G" --ref "$FIX/$m" >"$TMP/par" 2>&1; ok $? "$m f32 GGUF parity: $(grep -v PASS "$TMP/par" | tail -4)"
  grep -q "greedy .*24 of 24" "$TMP/par"; ok $? "$m GGUF greedy ids"
  "$LMC" convert -m "$G" -o "$TMP/$m-back" --dtype f32 >/dev/null 2>"$TMP/err"; ok $? "$m GGUF -> folder: $(cat "$TMP/err")"
  "$LMC" parity "$TMP/$m-back" --ref "$FIX/$m" >"$TMP/par" 2>&1; ok $? "$m GGUF -> folder parity: $(grep -v PASS "$TMP/par" | tail -4)"
  python3 - "$G" "$FIX/$m/config.json" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read(); cfg = json.load(open(sys.argv[2]))
o = 4
def u(f, n):
    global o
    v = struct.unpack_from(f, b, o)[0]; o += n; return v
def s():
    n = u("<Q", 8); global o; v = b[o:o + n].decode(); o += n; return v
SZ = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
FMT = {4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
def val(t):
    global o
    if t == 8: return s()
    if t == 9:
        at = u("<I", 4); n = u("<Q", 8)
        return [val(at) for _ in range(n)]
    v = struct.unpack_from(FMT.get(t, "<B"), b, o)[0]; o += SZ[t]; return v
ver = u("<I", 4); nt = u("<Q", 8); nkv = u("<Q", 8)
kv = {}
for _ in range(nkv):
    k = s(); kv[k] = val(u("<I", 4))
ts = {}
for _ in range(nt):
    n = s(); nd = u("<I", 4); ne = [u("<Q", 8) for _ in range(nd)]; u("<I", 4); u("<Q", 8); ts[n] = ne
a = kv["general.architecture"]
E = cfg.get("num_local_experts", cfg.get("num_experts")); k = cfg["num_experts_per_tok"]
C = cfg["hidden_size"]; I = cfg.get("moe_intermediate_size") if a in ("qwen2moe", "qwen3moe") else cfg["intermediate_size"]
want = {"mixtral": "llama", "qwen3_moe": "qwen3moe", "qwen2_moe": "qwen2moe", "olmoe": "olmoe"}[cfg["model_type"]]
assert a == want, (a, want)
assert kv[a + ".expert_count"] == E and kv[a + ".expert_used_count"] == k, kv
if a in ("qwen2moe", "qwen3moe"): assert kv[a + ".expert_feed_forward_length"] == I
if a == "qwen2moe":
    assert kv[a + ".expert_shared_feed_forward_length"] == cfg["shared_expert_intermediate_size"]
    assert ts["blk.0.ffn_gate_shexp.weight"] == [C, cfg["shared_expert_intermediate_size"]]
    assert ts["blk.0.ffn_gate_inp_shexp.weight"][0] == C
if cfg.get("clip_qkv"): assert abs(kv[a + ".attention.clamp_kqv"] - cfg["clip_qkv"]) < 1e-6
dense = set(cfg.get("mlp_only_layers") or [])
for l in range(cfg["num_hidden_layers"]):
    if l in dense:
        assert "blk.%d.ffn_gate_inp.weight" % l not in ts and ts["blk.%d.ffn_up.weight" % l] == [C, cfg["intermediate_size"]]
        continue
    assert ts["blk.%d.ffn_gate_inp.weight" % l] == [C, E]
    assert ts["blk.%d.ffn_gate_exps.weight" % l] == [C, I, E], ts["blk.%d.ffn_gate_exps.weight" % l]
    assert ts["blk.%d.ffn_up_exps.weight" % l] == [C, I, E]
    assert ts["blk.%d.ffn_down_exps.weight" % l] == [I, C, E]
assert not any(".experts." in n for n in ts)
PY
  ok $? "$m: llama.cpp's names, shapes and keys in the file"
  Q="$TMP/$m-q8_0.gguf"
  "$LMC" convert -m "$FIX/$m" -o "$Q" --dtype q8_0 >/dev/null 2>"$TMP/err"; ok $? "$m convert q8_0: $(cat "$TMP/err")"
  "$LMC" convert -m "$Q" -o "$TMP/$m-deq" --dtype f32 >/dev/null 2>"$TMP/err"; ok $? "$m q8_0 dequantized: $(cat "$TMP/err")"
  k=$("$LMC" eval -m "$Q" --kl-base "$TMP/$m-deq" --text "$TEXT" --json 2>"$TMP/err")
  python3 -c "import json,sys;j=json.loads(sys.argv[1]);sys.exit(0 if j['kl_mean']<1e-2 and j['top1_agree']>=0.85 else 1)" "$k" 2>/dev/null
  ok $? "$m q8_0 GGUF (quantized experts) vs its dequantized weights: $k $(cat "$TMP/err")"
done

# OLMoE's clip_qkv must be a positive number (null: none)
for v in -1 0 '"big"'; do
  rm -rf "$TMP/oc"; cp -r "$FIX/olmoe-clip-tiny" "$TMP/oc"; chmod -R u+w "$TMP/oc"
  python3 -c "import json,sys;p=sys.argv[1];c=json.load(open(p));c['clip_qkv']=json.loads(sys.argv[2]);json.dump(c,open(p,'w'))" "$TMP/oc/config.json" "$v"
  "$LMC" info -m "$TMP/oc" >"$TMP/out" 2>&1; rc=$?
  [ $rc -eq 1 ] && grep -q "clip_qkv" "$TMP/out"; ok $? "clip_qkv $v refused naming the field: rc $rc $(head -c 200 "$TMP/out")"
done

# llama.cpp's qwen2moe never renormalises the top-k: such a model is not written
rm -rf "$TMP/q2"; cp -r "$FIX/qwen2moe-tiny" "$TMP/q2"; chmod -R u+w "$TMP/q2"
python3 -c "import json,sys;p=sys.argv[1];c=json.load(open(p));c['norm_topk_prob']=True;json.dump(c,open(p,'w'))" "$TMP/q2/config.json"
"$LMC" convert -m "$TMP/q2" -o "$TMP/q2.gguf" --dtype f32 >"$TMP/out" 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "norm_topk_prob" "$TMP/out" && [ ! -e "$TMP/q2.gguf" ]; ok $? "qwen2moe with norm_topk_prob refused: rc $rc $(cat "$TMP/out")"

# broken files, patched from mixtral-tiny's
# patch WHAT: copies the file and changes one key's u32 value or one tensor's name / expert count
patch() {
  python3 - "$TMP/mixtral-tiny.gguf" "$TMP/b.gguf" "$@" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read()); what, a1, a2 = sys.argv[3], sys.argv[4], sys.argv[5]
if what == "key":  # key name, new u32 value
    i = b.find(a1.encode() + struct.pack("<I", 4)) + len(a1) + 4
    struct.pack_into("<I", b, i, int(a2))
elif what == "rename":  # old tensor name, new name of the same length
    i = b.find(struct.pack("<Q", len(a1)) + a1.encode()); b[i + 8:i + 8 + len(a1)] = a2.encode()
elif what == "experts":  # tensor name, new ne[2]
    i = b.find(struct.pack("<Q", len(a1)) + a1.encode()) + 8 + len(a1)
    assert struct.unpack_from("<I", b, i)[0] == 3
    struct.pack_into("<Q", b, i + 4 + 16, int(a2))
open(sys.argv[2], "wb").write(b)
PY
}
expect() { # expect PATTERN WHAT
  "$LMC" info -m "$TMP/b.gguf" >"$TMP/out" 2>&1; local rc=$?
  [ $rc -eq 1 ] && grep -q -- "$1" "$TMP/out"; ok $? "$2: rc $rc, got: $(head -c 300 "$TMP/out")"
  ! grep -qi "assert\|segmentation\|sanitizer" "$TMP/out"; ok $? "$2: crashed"
}
patch key llama.expert_count 3; expect "ffn_gate_inp.weight' has ne \[64, 4\], the config says \[64, 3\]" "expert_count below the stacks"
patch key llama.expert_count 5; expect "ffn_gate_inp.weight' has ne \[64, 4\], the config says \[64, 5\]" "expert_count above the stacks"
patch key llama.expert_used_count 7; expect "num_experts_per_tok" "top-k above the experts"
patch rename blk.1.ffn_up_exps.weight blk.1.ffn_up_expX.weight; expect "missing tensor 'blk.1.ffn_up_exps.weight' (expected ne \[64, 96, 4\])" "missing expert stack"
patch experts blk.0.ffn_down_exps.weight 2; expect "ffn_down_exps.weight' has ne \[96, 64, 2\], the config says \[96, 64, 4\]" "a stack of 2 experts"
# without expert_count a llama file is a dense Llama: the stacks are then extra tensors
patch rename llama.expert_count llama.expert_coun_; expect "unexpected tensor\|missing tensor" "llama file without expert_count"

echo "test_moe_gguf: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
