#!/usr/bin/env python3
"""plot_curves.py — one SVG of several runs' curves, written by hand (no plotting library).

Reads metrics.jsonl files (one JSON object per line, as `lmc train` writes them), takes
the points of one key (default val_loss) against step (or tokens, with --tokens-per-step)
and draws them overlaid: axes with ticks, a grid, one coloured polyline with markers per
run and a legend.

Usage: plot_curves.py -o OUT.svg [--key val_loss] [--title T] [--tokens-per-step N]
                      [--ylabel L] [--max-step S] LABEL=metrics.jsonl [LABEL=metrics.jsonl ...]
"""
import argparse
import json
import math
import sys
from xml.sax.saxutils import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def nice_ticks(lo, hi, n=6):
    """Round tick values covering [lo, hi], about n of them."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def fmt(v):
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def load(path, key):
    pts = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if key in r and "step" in r and r[key] is not None and math.isfinite(r[key]):
                pts.append((float(r["step"]), float(r[key])))
    pts.sort()
    return pts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--key", default="val_loss")
    ap.add_argument("--title", default="")
    ap.add_argument("--ylabel", default=None)
    ap.add_argument("--tokens-per-step", type=float, default=0)
    ap.add_argument("--max-step", type=float, default=0, help="only points at steps <= this (0: all)")
    ap.add_argument("runs", nargs="+", help="LABEL=metrics.jsonl")
    a = ap.parse_args()

    series = []
    for spec in a.runs:
        if "=" not in spec:
            sys.exit(f"plot_curves: '{spec}' is not LABEL=FILE")
        label, path = spec.split("=", 1)
        pts = load(path, a.key)
        if a.max_step > 0:
            pts = [p for p in pts if p[0] <= a.max_step]
        if not pts:
            sys.exit(f"plot_curves: {path} has no '{a.key}' points")
        if a.tokens_per_step > 0:
            pts = [(s * a.tokens_per_step, v) for s, v in pts]
        series.append((label, pts))

    W, H = 760, 460
    L, R, T, B = 70, 170, 40 if a.title else 20, 55
    pw, ph = W - L - R, H - T - B
    xs = [p[0] for _, s in series for p in s]
    ys = [p[1] for _, s in series for p in s]
    xt = nice_ticks(0 if min(xs) >= 0 else min(xs), max(xs))
    yt = nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def X(v):
        return L + (v - x0) / (x1 - x0) * pw

    def Y(v):
        return T + ph - (v - y0) / (y1 - y0) * ph

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>']
    if a.title:
        o.append(f'<text x="{L + pw / 2:.1f}" y="22" text-anchor="middle" font-size="14">{escape(a.title)}</text>')
    for v in xt:
        o.append(f'<line x1="{X(v):.1f}" y1="{T}" x2="{X(v):.1f}" y2="{T + ph}" stroke="#e5e5e5"/>')
        o.append(f'<text x="{X(v):.1f}" y="{T + ph + 16}" text-anchor="middle">{fmt(v)}</text>')
    for v in yt:
        o.append(f'<line x1="{L}" y1="{Y(v):.1f}" x2="{L + pw}" y2="{Y(v):.1f}" stroke="#e5e5e5"/>')
        o.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    xl = "tokens" if a.tokens_per_step > 0 else "step"
    o.append(f'<text x="{L + pw / 2:.1f}" y="{H - 12}" text-anchor="middle">{xl}</text>')
    yl = escape(a.ylabel or a.key)
    o.append(f'<text transform="translate(18 {T + ph / 2:.1f}) rotate(-90)" text-anchor="middle">{yl}</text>')
    for i, (label, pts) in enumerate(series):
        c = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
        o.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            o.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="2.5" fill="{c}"/>')
        ly = T + 14 + 20 * i
        o.append(f'<line x1="{L + pw + 14}" y1="{ly}" x2="{L + pw + 38}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        o.append(f'<text x="{L + pw + 44}" y="{ly + 4}">{escape(label)} {pts[-1][1]:.3f}</text>')
    o.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    main()
