"""mp_compare.py — the run comparison the multi-rank training tests share
(tests/test_mp_train*.sh, test_mp_finetune*.sh; not a test itself): each run
against its reference run, from their metrics JSONL and checkpoints, within
the tolerances given; the relative measures are over the reference's values.

  python3 tests/mp_compare.py [options] RUN[:REF] ...

RUN and REF are names under --root (a run without :REF is compared with
--ref). Where their files are (ROOT/NAME is {}):
  --layout train     {}/metrics.jsonl, {}/step_<--step, 6 digits>/FILE (default)
  --layout finetune  {}.metrics.jsonl, {}/FILE
  --layout dirs      {}/metrics.jsonl, {}/FILE
  --file FILE        the weights (default model.safetensors); optimizer.safetensors
                     beside it for --adamw-v, --optim-max, --optim-same
Checks (each only when given; a missing file fails the run):
  --steps N          N metric rows numbered 1..N (else the run is not compared further)
  --rows N, --ref-rows N  the run's / the reference's N metric rows
  --keys             the same tensor names as the reference (else not compared further)
  --loss T           max |loss - ref| / |ref| over the rows (zipped)
  --val T            the same for val_loss, over the reference's rows that have it (none: a failure)
  --val-count N      the reference has N such rows
  --grad-norm T, --aux T (moe_aux_loss): as --loss; --expert-tokens: equal lists
  --norm T           |w - ref| / |ref| over the F32 tensors of the reference (2-norms)
  --max T            max |w - ref| / max |ref| over those tensors
  --skip S           leave the tensors whose name contains S out of --norm and --max (a tensor whose exact
                     gradient is zero, e.g. k_proj.bias — softmax ignores a shift shared by every key's score —
                     holds AdamW's steps on rounding noise, +-lr each, not an error of the split)
  --adamw-v T        max |v - ref| / max |ref| of the optimizer's adamw.v
  --optim-max T      the same per optimizer tensor (denominator at least 1e-30), the largest
  --optim-same       the optimizer tensors' names, dtypes and byte sizes equal
  --ref-key S        the reference's weights hold a tensor whose name contains S
  --json FILE        the measured values, {run: {measure: value}}
Prints a line a run; exits 1 when any run fails."""
import argparse, json, os, struct, sys


def rows(path):
    return [json.loads(l) for l in open(path)]


def tensors(path):
    """{name: (dtype, raw bytes)} of a safetensors file"""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    h = json.loads(raw[8:8 + n])
    return {k: (v["dtype"], raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__"}


def f32(t, skip=()):
    return {k: struct.unpack(f"<{len(x) // 4}f", x) for k, (dt, x) in t.items()
            if dt == "F32" and not any(s in k for s in skip)}


def rel_rows(r, ref, key):
    """max |a - b| / |b| over the zipped rows whose reference has key (None: no such row)"""
    d = [abs(a[key] - b[key]) / abs(b[key]) for a, b in zip(r, ref) if key in b]
    return max(d) if d else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--root", default="")
    ap.add_argument("--ref")
    ap.add_argument("--layout", choices=("train", "finetune", "dirs"), default="train")
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--file", default="model.safetensors")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--rows", type=int)
    ap.add_argument("--ref-rows", type=int)
    ap.add_argument("--keys", action="store_true")
    for k in ("loss", "val", "grad-norm", "aux", "norm", "max", "adamw-v", "optim-max"):
        ap.add_argument("--" + k, type=float)
    ap.add_argument("--val-count", type=int)
    ap.add_argument("--expert-tokens", action="store_true")
    ap.add_argument("--optim-same", action="store_true")
    ap.add_argument("--ref-key")
    ap.add_argument("--json")
    ap.add_argument("--skip", action="append", default=[])
    a = ap.parse_args()

    def where(name):
        d = os.path.join(a.root, name)
        if a.layout == "finetune": return d + ".metrics.jsonl", os.path.join(d, a.file)
        if a.layout == "dirs": return os.path.join(d, "metrics.jsonl"), os.path.join(d, a.file)
        return os.path.join(d, "metrics.jsonl"), os.path.join(d, f"step_{a.step:06d}", a.file)

    need_m = any(x is not None for x in (a.steps, a.rows, a.ref_rows, a.loss, a.val, a.grad_norm, a.aux,
                                         a.val_count)) or a.expert_tokens
    need_w = a.keys or a.norm is not None or a.max is not None or a.ref_key
    need_o = a.adamw_v is not None or a.optim_max is not None or a.optim_same
    cache = {}

    def load(name):
        if name not in cache:
            m, w = where(name)
            t = tensors(w) if need_w else {}
            cache[name] = (rows(m) if need_m else [], t, f32(t, a.skip), tensors(os.path.join(os.path.dirname(w), "optimizer.safetensors"))
                           if need_o else {})
        return cache[name]

    bad, out = 0, {}
    for spec in a.runs:
        run, ref = spec.split(":", 1) if ":" in spec else (spec, a.ref)
        fails, m = [], {}
        try:
            R, RT, RP, RO = load(ref)
            r, t, p, o = load(run)
        except OSError as e:
            print(f"{run} vs {ref}: {e}"); bad += 1; continue
        if a.ref_key and not any(a.ref_key in k for k in RT): fails.append(f"{ref} has no tensor with {a.ref_key}")
        if a.steps is not None and [x.get("step") for x in r] != list(range(1, a.steps + 1)):
            print(f"{run} vs {ref}: steps {[x.get('step') for x in r]}, not 1..{a.steps}"); bad += 1; continue
        if a.rows is not None and len(r) != a.rows: fails.append(f"{len(r)} rows, not {a.rows}")
        if a.ref_rows is not None and len(R) != a.ref_rows: fails.append(f"the reference's {len(R)} rows, not {a.ref_rows}")
        if a.keys and sorted(t) != sorted(RT):
            print(f"{run} vs {ref}: tensors differ: {sorted(set(t) ^ set(RT))}"); bad += 1; continue
        for opt, key in (("loss", "loss"), ("val", "val_loss"), ("grad_norm", "grad_norm"), ("aux", "moe_aux_loss")):
            tol = getattr(a, opt)
            if tol is None: continue
            m[opt] = rel_rows(r, R, key)
            if m[opt] is None: fails.append(f"no {key} in the reference's rows")
            elif not m[opt] <= tol: fails.append(f"{opt} {m[opt]:.2e} > {tol:g}")
        if a.val_count is not None:
            m["val_count"] = sum("val_loss" in b for b in R)
            if m["val_count"] != a.val_count: fails.append(f"{m['val_count']} validation rows, not {a.val_count}")
        if a.expert_tokens:
            m["expert_tokens_equal"] = all(x["expert_tokens"] == y["expert_tokens"] for x, y in zip(r, R))
            if not m["expert_tokens_equal"]: fails.append("expert loads differ")
        if a.norm is not None or a.max is not None:
            if not RP or any(k not in p for k in RP):
                fails.append("no F32 reference tensors, or some missing from the run")
            else:
                if a.norm is not None:
                    num = sum((x - y) ** 2 for k in RP for x, y in zip(p[k], RP[k]))
                    m["norm"] = (num / sum(y * y for k in RP for y in RP[k])) ** 0.5
                    if not m["norm"] <= a.norm: fails.append(f"weights |diff| / |w| {m['norm']:.2e} > {a.norm:g}")
                if a.max is not None:
                    sc = max(abs(x) for v in RP.values() for x in v)
                    m["max"] = max(abs(x - y) for k in RP for x, y in zip(p[k], RP[k])) / sc
                    if not m["max"] <= a.max: fails.append(f"weights max |diff| / max |w| {m['max']:.2e} > {a.max:g}")
        if a.adamw_v is not None:
            v, rv = f32(o)["adamw.v"], f32(RO)["adamw.v"]
            m["adamw_v"] = max(abs(x - y) for x, y in zip(v, rv)) / max(abs(x) for x in rv)
            if not m["adamw_v"] <= a.adamw_v: fails.append(f"adamw.v {m['adamw_v']:.2e} > {a.adamw_v:g}")
        if a.optim_max is not None:
            fo, fr = f32(o), f32(RO)
            if sorted(o) != sorted(RO): fails.append("optimizer tensors differ")
            else:
                m["optim_max"] = max(max(abs(x - y) for x, y in zip(fo[k], fr[k])) / max(1e-30, max(abs(x) for x in fr[k]))
                                     for k in fr)
                if not m["optim_max"] <= a.optim_max: fails.append(f"optimizer {m['optim_max']:.2e} > {a.optim_max:g}")
        if a.optim_same:
            m["optim_same"] = sorted(o) == sorted(RO) and all(o[k][0] == RO[k][0] and len(o[k][1]) == len(RO[k][1])
                                                              for k in o)
            if not m["optim_same"]: fails.append(f"{len(o)} optimizer tensors DIFFER from the reference's")
        out[run] = m
        print(f"{run} vs {ref}: " + (f"{len(r)} steps, " if need_m else "") + ", ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}"
                                                              for k, v in m.items())
              + ("" if not fails else "; FAIL: " + "; ".join(fails)))
        bad += bool(fails)
    if a.json:
        with open(a.json, "w") as f: json.dump(out, f)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
