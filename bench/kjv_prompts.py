"""kjv_prompts.py — the KJV prompts of the speculative-decoding benches (issue 17), one definition for
spec_cli_cpu.py, spec_profile_cpu.py, spec_trace_cpu.py, spec_pair_cpu.py and spec_onpolicy_data.py:
the first 8 words of verses (lines of data/kjv.txt over 40 characters), every 997th from the 100th;
with held_out, verses of the validation books (data/kjv.txt from line VAL_LINE, James..Revelation:
the pair's training split, which no model of the pair trained on) at an even stride."""

VAL_LINE = 71726  # first line of the validation books (spec_onpolicy_data.py --split-line)


def kjv_verses(lines):
    return [l.strip() for l in lines if len(l.strip()) > 40]


def kjv_prompts(n=None, held_out=False, path="data/kjv.txt"):
    """The first n prompts (n None: all of the set)."""
    lines = open(path, encoding="utf-8").read().split("\n")
    if held_out:
        lines = lines[VAL_LINE - 1:]
    verses = kjv_verses(lines)
    stride = max(1, (len(verses) - 100) // n) if held_out and n else 997
    return [" ".join(v.split()[:8]) for v in verses[100::stride]][:n]
