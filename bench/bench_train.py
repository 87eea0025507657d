#!/usr/bin/env python3
"""bench_train.py — the PyTorch side of the training benchmark
(bench/run_train_cuda.sh), plus the small helpers that script needs.

  bench_train.py [bench] [--model gpt2,llama] [--mode eager,compile] [sizes] ...
      Trains a randomly initialised transformers GPT2LMHeadModel and/or
      LlamaForCausalLM on random token batches that live on the device:
      fp32 master weights, bf16 autocast (cuda), AdamW (fused where
      available), global-norm clipping at 1.0 like `lmc train`. Warm-up
      steps (torch.compile compiles in the first), then timed steps, each
      ended by loss.item() (a sync, as lmc's step is). Prints one JSON line
      per (model, mode): tokens/s (median step time and mean), MFU, peak
      memory (torch.cuda.max_memory_allocated / reserved).
      MFU uses lmc's formula (src/train/trainer.c lmc_trainer_flops_per_token):
      6*N + 12*L*T*(heads*head_dim) FLOPs per token, N = the parameters
      (tied embeddings counted once), against --peak-tflops (default 989, an
      H100 SXM's dense bf16 rate, lmc's default on cuda).
  bench_train.py write-shards DIR --vocab V --tokens N [--val-tokens M] [--seed S]
      Random token shards in lmc's format (src/train/data.h): DIR/train_00000.bin,
      DIR/val_00000.bin, uint16 ids when V <= 65536, no EOS id.
  bench_train.py lmc-metrics FILE [--skip W]
      Median tokens_per_s / mfu / tflops of `lmc train`'s metrics.jsonl, steps > W.
  bench_train.py record / report
      Collect one run's numbers into a JSONL file; write the Markdown table.

The helpers import neither torch nor transformers.
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

SHARD_MAGIC = b"LMCTOK01"
SHARD_VERSION = 1
NO_EOS = 0xFFFFFFFF


# ----------------------------------------------------------------------------- shards
def write_shard(path, vocab, n_tokens, seed):
    dtype = 2 if vocab <= 65536 else 4
    try:
        import numpy as np

        rng = np.random.default_rng(seed)
        ids = rng.integers(0, vocab, size=n_tokens, dtype=np.int64)
        body = ids.astype("<u2" if dtype == 2 else "<u4").tobytes()
    except ImportError:  # pure Python fallback (slow for many tokens)
        import array
        import random

        r = random.Random(seed)
        a = array.array("H" if dtype == 2 else "I", (r.randrange(vocab) for _ in range(n_tokens)))
        if sys.byteorder != "little":
            a.byteswap()
        body = a.tobytes()
    header = SHARD_MAGIC + struct.pack("<IIIIQQ", SHARD_VERSION, dtype, vocab, NO_EOS, n_tokens, 0)
    header += b"\0" * (64 - len(header))
    assert len(header) == 64 and len(body) == n_tokens * dtype
    with open(path, "wb") as f:
        f.write(header)
        f.write(body)


def cmd_write_shards(argv):
    p = argparse.ArgumentParser(prog="bench_train.py write-shards")
    p.add_argument("dir")
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--tokens", type=int, default=1 << 21)
    p.add_argument("--val-tokens", type=int, default=1 << 16)
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args(argv)
    if not 1 <= a.vocab <= 0x80000000:
        sys.exit("write-shards: --vocab must be 1 .. 2^31")
    os.makedirs(a.dir, exist_ok=True)
    write_shard(os.path.join(a.dir, "train_00000.bin"), a.vocab, a.tokens, a.seed)
    if a.val_tokens > 0:
        write_shard(os.path.join(a.dir, "val_00000.bin"), a.vocab, a.val_tokens, a.seed + 1)
    print(f"write-shards: {a.dir}: train {a.tokens} + val {a.val_tokens} random ids below {a.vocab}")


# ----------------------------------------------------------------------------- lmc metrics
def lmc_metrics(path, skip):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    # steps after the warm-up; with fewer logged (a run cut short), all but the first
    timed = [r for r in rows if r.get("step", 0) > skip] or [r for r in rows if r.get("step", 0) > 1] or rows
    out = {"steps_logged": len(rows), "steps_timed": len(timed)}
    for k in ("tokens_per_s", "mfu", "tflops"):
        v = [r[k] for r in timed if isinstance(r.get(k), (int, float))]
        if v:
            out[k] = statistics.median(v)
    for k in ("loss",):
        if rows:
            out[k + "_first"] = rows[0].get(k)
            out[k + "_last"] = rows[-1].get(k)
    return out


def cmd_lmc_metrics(argv):
    p = argparse.ArgumentParser(prog="bench_train.py lmc-metrics")
    p.add_argument("file")
    p.add_argument("--skip", type=int, default=5)
    a = p.parse_args(argv)
    print(json.dumps(lmc_metrics(a.file, a.skip)))


# ----------------------------------------------------------------------------- record / report
def last_json_line(path):
    res = None
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        res = json.loads(line)
                    except ValueError:
                        pass
    except OSError:
        pass
    return res


def cmd_record(argv):
    p = argparse.ArgumentParser(prog="bench_train.py record")
    p.add_argument("--results", required=True, help="JSONL file to append to")
    p.add_argument("--system", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--rc", type=int, default=0)
    p.add_argument("--wall-s", type=float)
    p.add_argument("--mem-peak-mib", type=float, help="peak of the poller (GPU memory.used or VmHWM)")
    p.add_argument("--mem-base-mib", type=float, default=0.0, help="idle GPU memory.used before the run")
    p.add_argument("--mem-kind", default="nvidia-smi")
    p.add_argument("--lmc-metrics", help="lmc train's metrics.jsonl")
    p.add_argument("--lmc-log", help="lmc train's stderr (parameter count)")
    p.add_argument("--skip", type=int, default=5)
    p.add_argument("--torch-log", help="bench_train.py's output (last JSON line)")
    p.add_argument("--note", default="")
    a = p.parse_args(argv)
    r = {"system": a.system, "model": a.model, "rc": a.rc, "note": a.note}
    if a.wall_s is not None:
        r["wall_s"] = round(a.wall_s, 1)
    if a.mem_peak_mib is not None and a.mem_peak_mib > 0:
        r["mem_peak_mib"] = a.mem_peak_mib - a.mem_base_mib
        r["mem_base_mib"] = a.mem_base_mib
        r["mem_kind"] = a.mem_kind
    if a.lmc_metrics and os.path.exists(a.lmc_metrics):
        r.update(lmc_metrics(a.lmc_metrics, a.skip))
    if a.lmc_log and os.path.exists(a.lmc_log):
        with open(a.lmc_log, errors="replace") as f:
            for line in f:
                if "parameters," in line and line.startswith("lmc train:"):
                    try:
                        r["params"] = int(line.split(",")[1].split()[0])
                    except (IndexError, ValueError):
                        pass
    if a.torch_log:
        t = last_json_line(a.torch_log)
        if t:
            for k in ("tokens_per_s", "tokens_per_s_mean", "mfu", "tflops", "params", "max_mem_alloc_gib",
                      "max_mem_reserved_gib", "warmup_s", "step_ms_median", "loss_first", "loss_last",
                      "error", "torch", "transformers", "attn_impl", "steps_timed"):
                if k in t:
                    r[k] = t[k]
    with open(a.results, "a") as f:
        f.write(json.dumps(r) + "\n")
    print("record: " + json.dumps(r))


def fmt_num(v, nd=0):
    if v is None:
        return "—"
    return f"{v:,.{nd}f}"


def cmd_report(argv):
    p = argparse.ArgumentParser(prog="bench_train.py report")
    p.add_argument("--results", required=True)
    p.add_argument("--md", required=True, help="Markdown file to append to")
    p.add_argument("--title", default="Training throughput")
    p.add_argument("--header", action="append", default=[], help="'- key: value' lines")
    a = p.parse_args(argv)
    rows = []
    if os.path.exists(a.results):
        with open(a.results) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    L = [f"## {a.title}", ""]
    L += [f"- {h}" for h in a.header]
    kinds = {r.get("mem_kind") for r in rows if r.get("mem_kind")}
    mem_head = "peak GPU memory above idle (nvidia-smi)" if kinds <= {"nvidia-smi"} else \
        "peak memory (" + ", ".join(sorted(kinds)) + ")"
    L += ["",
          f"| system | model | params | tokens/s | MFU | {mem_head} | torch max allocated / reserved | notes |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = r.get("mfu")
        mem = r.get("mem_peak_mib")
        mem_s = f"{mem / 1024:.2f} GiB" if mem is not None else "—"
        tm = "—"
        if r.get("max_mem_alloc_gib") is not None:
            tm = f"{r['max_mem_alloc_gib']:.2f} / {r.get('max_mem_reserved_gib', float('nan')):.2f} GiB"
        notes = []
        if r.get("rc"):
            notes.append(f"rc={r['rc']}")
        if r.get("error"):
            notes.append("error: " + str(r["error"])[:120].replace("|", "/"))
        if r.get("warmup_s") is not None:
            notes.append(f"warm-up {r['warmup_s']:.0f} s")
        if r.get("steps_timed"):
            notes.append(f"median of {r['steps_timed']} steps")
        if r.get("loss_last") is not None:
            notes.append(f"loss {r['loss_last']:.3f}")
        if r.get("wall_s") is not None:
            notes.append(f"{r['wall_s']:.0f} s wall")
        if r.get("note"):
            notes.append(r["note"])
        n = r.get("params")
        n_s = "—" if not n else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"
        L.append(f"| {r['system']} | {r['model']} | {n_s} | "
                 f"{fmt_num(r.get('tokens_per_s'))} | {f'{100 * mfu:.1f}%' if mfu is not None else '—'} | "
                 f"{mem_s} | {tm} | {'; '.join(notes)} |")
    # ratios lmc / torch per model
    by = {(r["system"], r["model"]): r for r in rows}
    ratio_lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        lm = by.get(("lmc", model))
        if not lm or not lm.get("tokens_per_s"):
            continue
        for peer in ("torch.compile", "torch eager"):
            pr = by.get((peer, model))
            if not pr or not pr.get("tokens_per_s"):
                continue
            s = f"{model}: lmc / {peer} tokens/s = {lm['tokens_per_s'] / pr['tokens_per_s']:.2f}x"
            if lm.get("mem_peak_mib") and pr.get("mem_peak_mib"):
                s += f", peak memory {lm['mem_peak_mib'] / pr['mem_peak_mib']:.2f}x"
            ratio_lines.append(s)
    if ratio_lines:
        L += ["", "Ratios:", ""] + [f"- {s}" for s in ratio_lines]
    L.append("")
    with open(a.md, "a") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))


# ----------------------------------------------------------------------------- the PyTorch bench
def build_model(kind, a):
    import transformers

    if kind == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=a.vocab, n_positions=a.max_pos, n_embd=a.hidden, n_layer=a.layers, n_head=a.heads,
            n_inner=None, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            layer_norm_epsilon=1e-5, tie_word_embeddings=True, use_cache=False,
            bos_token_id=min(50256, a.vocab - 1), eos_token_id=min(50256, a.vocab - 1))
    elif kind == "llama":
        cfg = transformers.LlamaConfig(
            vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
            num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.heads,
            max_position_embeddings=a.max_pos, rms_norm_eps=1e-5, tie_word_embeddings=a.llama_tie,
            attention_bias=False, mlp_bias=False, attention_dropout=0.0, use_cache=False)
    else:
        raise ValueError(f"unknown model {kind}")
    try:
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=a.attn)
    except (TypeError, ValueError, ImportError) as e:  # older/newer signature or sdpa unavailable
        print(f"note: from_config(attn_implementation={a.attn}) failed ({e}); default attention", file=sys.stderr)
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return model, cfg


def bench_one(kind, mode, a):
    import torch
    import torch.nn.functional as F
    import transformers

    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    model, cfg = build_model(kind, a)
    model.to(dev)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())  # tied weights once
    head_dim = a.hidden // a.heads
    fpt = 6.0 * n_params + 12.0 * a.layers * a.seq * (a.heads * head_dim)
    V = a.vocab

    class WithLoss(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, y):
            logits = self.m(input_ids=x, use_cache=False).logits
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))

    step_model = WithLoss(model)
    if mode == "compile":
        step_model = torch.compile(step_model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    opt = None
    for kw in ({"fused": True}, {"foreach": True}, {}):
        try:
            opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95), eps=1e-8, **kw)
            opt_kind = next(iter(kw), "default")
            break
        except (RuntimeError, TypeError, ValueError):
            continue
    amp = a.dtype == "bf16"
    g = torch.Generator(device=dev)
    g.manual_seed(a.seed)
    batches = []
    for _ in range(4):  # (inputs, targets) = the first and last T of T+1 random ids, as lmc's windows
        xy = torch.randint(0, V, (a.batch, a.seq + 1), device=dev, generator=g)
        batches.append((xy[:, :-1].contiguous(), xy[:, 1:].contiguous()))
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def step(i):
        x, y = batches[i % len(batches)]
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()  # a sync each step, as lmc's step

    t0 = time.perf_counter()
    losses = []
    for i in range(a.warmup):
        losses.append(step(i))
    warm_s = time.perf_counter() - t0
    times, cpu_times = [], []
    for i in range(a.steps):
        s0, c0 = time.perf_counter(), time.process_time()
        losses.append(step(a.warmup + i))
        times.append(time.perf_counter() - s0)
        cpu_times.append(time.process_time() - c0)  # all threads' CPU time (a loaded host's fair share)
    tok = a.batch * a.seq
    med = statistics.median(times)
    tps = tok / med
    res = {
        "system": "torch.compile" if mode == "compile" else "torch eager", "model": kind,
        "params": n_params, "batch": a.batch, "seq": a.seq, "dtype": a.dtype, "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "warmup_steps": a.warmup, "steps_timed": a.steps, "warmup_s": round(warm_s, 2),
        "step_ms_median": round(1e3 * med, 3), "tokens_per_s": round(tps, 1),
        "tokens_per_s_mean": round(tok * len(times) / sum(times), 1),
        "cpu_s_per_step_median": round(statistics.median(cpu_times), 4) if cpu_times else None,
        "flops_per_token": fpt, "tflops": round(tps * fpt / 1e12, 3),
        "peak_tflops": a.peak_tflops, "mfu": round(tps * fpt / 1e12 / a.peak_tflops, 5),
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "optimizer": f"AdamW ({opt_kind})", "attn_impl": getattr(cfg, "_attn_implementation", None),
        "tie": bool(getattr(cfg, "tie_word_embeddings", False)),
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    if cuda:
        res["max_mem_alloc_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
        res["max_mem_reserved_gib"] = round(torch.cuda.max_memory_reserved(dev) / 2**30, 3)
    if not all(math.isfinite(v) for v in losses):
        res["error"] = "non-finite loss"
    return res


def cmd_bench(argv):
    p = argparse.ArgumentParser(prog="bench_train.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gpt2,llama", help="gpt2, llama or both (comma list)")
    p.add_argument("--mode", default="eager,compile", help="eager, compile or both (comma list)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bf16", "fp32"], help="bf16 autocast (default on cuda) or fp32")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=2048, help="llama MLP width (gpt2: 4*hidden)")
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--max-pos", type=int, default=1024)
    p.add_argument("--llama-tie", type=int, default=1, help="1: tied llama embeddings (as lmc --tie)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    a = p.parse_args(argv)
    a.llama_tie = bool(a.llama_tie)
    if a.dtype is None:
        a.dtype = "bf16" if a.device.startswith("cuda") else "fp32"
    if a.seq > a.max_pos:
        p.error("--seq exceeds --max-pos")
    import torch

    if a.device.startswith("cuda"):
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32
    rc = 0
    for kind in a.model.split(","):
        for mode in a.mode.split(","):
            try:
                r = bench_one(kind, mode, a)
            except Exception as e:  # report and go on with the next configuration
                import traceback

                traceback.print_exc()
                r = {"system": "torch.compile" if mode == "compile" else "torch eager", "model": kind,
                     "error": f"{type(e).__name__}: {e}"[:500]}
            if "error" in r:
                rc = 1
            print(json.dumps(r), flush=True)
            if a.device.startswith("cuda"):
                import gc

                gc.collect()
                torch.cuda.empty_cache()
                torch._dynamo.reset()
    return rc


def main():
    cmds = {"write-shards": cmd_write_shards, "lmc-metrics": cmd_lmc_metrics, "record": cmd_record,
            "report": cmd_report, "bench": cmd_bench}
    if len(sys.argv) > 1 and sys.argv[1] in cmds:
        return cmds[sys.argv[1]](sys.argv[2:]) or 0
    return cmd_bench(sys.argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
