#!/usr/bin/env python3
"""transform.py SRC_DIR OUT_DIR — rewrites lmc's CUDA sources (SRC_DIR =
src/ops/cuda) into C++ for the CPU emulator (emu.h), written to
OUT_DIR/ops/cuda/ under the same names, so that `-I OUT_DIR` ahead of
`-I src` makes the real launchers include the rewritten common.cuh:

  - the CUDA and cub includes become #include "emu.h" (the device model,
    with the runtime model cuda_runtime_model.h), cuBLASLt's becomes
    #include "cublaslt_model.h";
  - `extern __shared__ T name[];` points name at the block's dynamic shared
    memory (E.smem); other `__shared__` variables become `static` (one copy,
    shared by the block's fibers; blocks run one at a time);
  - `K<<<grid, block, smem, stream>>>(args)` becomes
    `emu_cfg(grid, block, smem, stream).go(K, args)`;
  - inline PTX is mapped by instruction: mma.sync m16n8k16 bf16, ldmatrix
    x4 (.trans), cp.async (+ commit / wait); anything else is an error, so
    a kernel the emulator cannot model fails loudly instead of passing.

Every file is rewritten, matmul.cu and backend_cuda.cu included: they
call the runtime and cuBLASLt models. Python 3 standard library only."""
import os
import re
import sys

SKIP = set()


def split_top(s, sep):
    """s split at `sep` characters outside strings and brackets."""
    out, depth, cur, i = [], 0, "", 0
    while i < len(s):
        ch = s[i]
        if ch == '"':
            j = i + 1
            while s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            cur += s[i:j + 1]
            i = j + 1
            continue
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == sep and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    return out + [cur]


def operands(part):
    """['"=r"(x)', ...] -> ['x', ...]"""
    return [re.match(r'\s*"[^"]*"\s*\((.*)\)\s*$', o, re.S).group(1).strip()
            for o in split_top(part, ",") if o.strip()]


def asm_call(body, where):
    parts = split_top(body, ":")
    ptx = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', parts[0])).replace("\\n", "").strip()
    outs = operands(parts[1]) if len(parts) > 1 else []
    ins = operands(parts[2]) if len(parts) > 2 else []
    if ptx.startswith("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"):
        return "emu_mma_m16n8k16_bf16(%s)" % ", ".join(outs + ins)
    m = re.match(r"ldmatrix\.sync\.aligned\.m8n8\.x4(\.trans)?\.shared\.b16\b", ptx)
    if m:
        return "emu_ldmatrix_x4(%s, %s, %s)" % (", ".join(outs), ins[0], "true" if m.group(1) else "false")
    m = re.match(r"cp\.async\.c[ag]\.shared\.global\s*\[%0\],\s*\[%1\],\s*(\d+)(,\s*%2)?;?$", ptx)
    if m:
        return "emu_cp_async(%s, %s, %s, %s)" % (ins[0], ins[1], m.group(1), ins[2] if m.group(2) else m.group(1))
    if re.match(r"cp\.async\.(commit_group|wait_all|wait_group\s+\d+);?$", ptx):
        return "(void)0"
    sys.exit("transform.py: %s: inline PTX the emulator does not model: %r" % (where, ptx))


def rewrite_asm(src, where):
    out, pos = "", 0
    for m in re.finditer(r"\basm\s+(?:volatile\s*)?\(", src):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while depth:  # to the matching parenthesis, skipping strings
            if src[i] == '"':
                i += 1
                while src[i] != '"':
                    i += 2 if src[i] == "\\" else 1
            depth += {"(": 1, ")": -1}.get(src[i], 0)
            i += 1
        out += src[pos:m.start()] + same_lines(src[m.start():i], asm_call(src[m.end():i - 1], where))
        pos = i
    return out + src[pos:]


def same_lines(old, new):
    """new, followed by as many newlines as old spans: #line stays true."""
    return new + "\n" * old.count("\n")


def transform(src, where, deduced):
    src = re.sub(r"#include\s*<cublasLt\.h>", '#include "cublaslt_model.h"', src)
    src = re.sub(r"#include\s*<(cuda_runtime|cuda_bf16|cuda_fp16)\.h>", '#include "emu.h"', src)
    src = re.sub(r"#include\s*<cub/[\w/]+\.cuh>", '#include "emu.h"', src)
    src = re.sub(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s*)?([\w ]+?)\s*(\w+)\[\]\s*;",
                 lambda m: same_lines(m.group(0), "%s *%s = (%s *)E.smem;" % (m.group(1), m.group(2), m.group(1))), src)
    src = re.sub(r"\b__shared__\b", "static", src)
    def launch(m):
        k = m.group(1)
        if k in deduced:  # template arguments deduced from the call, as nvcc does
            k = "[](auto... p) { %s(p...); }" % k
        return same_lines(m.group(0), "emu_cfg(%s).go(%s, " % (" ".join(m.group(2).split()), k))
    src = re.sub(r"([\w:]+(?:<[^<>();]*>)?)\s*<<<(.*?)>>>\s*\(", launch, src, flags=re.S)
    return rewrite_asm(src, where)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src_dir, out_dir = sys.argv[1], os.path.join(sys.argv[2], "ops", "cuda")
    os.makedirs(out_dir, exist_ok=True)
    names = [n for n in sorted(os.listdir(src_dir)) if n.endswith((".cu", ".cuh")) and n not in SKIP]
    texts = {}
    for name in names:
        with open(os.path.join(src_dir, name)) as f:
            texts[name] = f.read()
    # kernel templates: a launch that names one bare has its arguments deduced
    deduced = set(re.findall(r"template\s*<[^>]*>\s*__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)",
                             "\n".join(texts.values())))
    for name in names:
        text = transform(texts[name], name, deduced)
        with open(os.path.join(out_dir, name), "w") as f:
            f.write('#line 1 "%s"\n' % os.path.join(src_dir, name) + text)
        if name.endswith(".cu"):
            print(name)


if __name__ == "__main__":
    main()
