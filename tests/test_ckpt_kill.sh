#!/usr/bin/env bash
# test_ckpt_kill.sh — checkpoints survive SIGKILL at random moments during
# saves, and resuming from what is left reproduces the uninterrupted run
# bit for bit on the CPU.
#
# A reference run trains a tiny llama for N steps with --save-every 1 (and
# non-default batch, accumulation, schedule, AdamW, clipping and seed).
# Then the same run is started and killed again and again: each time the
# test picks, from a seeded generator, a step s and an event k of that
# step's save, and sends SIGKILL the moment it sees that event. Events come
# from inotify on OUT and on the save's temporary folder (the folder made,
# each file created / closed / renamed, the folder renamed into place): no
# sleeps, and the kill lands at a chosen stage of the save (the process runs
# on for as long as the signal takes). After each kill: every step_N folder
# left is complete and byte-identical to the reference's, the checkpoint
# before s is there, and the next start (`--resume latest`, no batch or
# optimizer flags: they come from the checkpoint) removes the temporaries
# before its first save. The last run finishes; every checkpoint 1..N and
# the last loss of every step equal the reference's. The kill count is
# bounded (8 to 30 kills: more only until two of them have left a temporary
# folder behind, i.e. were seen to land inside a save; fewer if the run
# reaches its last step first, which takes kills landing late on a loaded
# machine; at least 4 are required, one of them inside a save).
# Usage: test_ckpt_kill.sh PATH/TO/lmc
set -u
LMC="$1"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 17))"; done >"$TMP/corpus.txt"
"$LMC" train-tokenizer --text-file "$TMP/corpus.txt" --vocab 300 --style llama3 -o "$TMP/tok" 2>"$TMP/err" &&
"$LMC" prepare-data -m "$TMP/tok" --text-file "$TMP/corpus.txt" --docs line --val-fraction 0.1 -o "$TMP/data" 2>"$TMP/err" ||
  { echo "FAIL: data: $(cat "$TMP/err")" >&2; exit 1; }

python3 - "$LMC" "$TMP" <<'PY'
import ctypes, os, random, select, struct, subprocess, sys

lmc, tmp = sys.argv[1], sys.argv[2]
N = 24
COMMON = [lmc, "train", "--data", f"{tmp}/data", "--threads", "1", "--save-every", "1"]
FRESH = ["--arch", "llama", "--layers", "2", "--hidden", "64", "--heads", "4", "--kv-heads", "2",
         "--batch", "3", "--seq", "16", "--accum", "2", "--steps", str(N), "--lr", "3e-3", "--warmup", "3",
         "--schedule", "wsd", "--wd", "0.05", "--beta2", "0.98", "--clip", "0.5", "--seed", "7"]
passed = failed = 0

def check(cond, what):
    global passed, failed
    if cond: passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)

libc = ctypes.CDLL(None, use_errno=True)
IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x8, 0x40, 0x80, 0x100, 0x200
IN_ISDIR = 0x40000000
MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE

def step_name(s): return "step_%06d" % s

class Run:
    """One `lmc train` process and the events it causes, in order: file
    system events in OUT ("" tag) and in each save's temporary folder (tag:
    its name), and the lines it writes to stderr."""
    def __init__(self, args, out):
        self.out = out
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0: raise OSError(ctypes.get_errno(), "inotify_init1")
        self.tags = {}
        self.watch(out, "")
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.err = self.part = b""
    def watch(self, path, tag):
        wd = libc.inotify_add_watch(self.fd, path.encode(), MASK)
        if wd >= 0: self.tags[wd] = tag
    def events(self):
        ef = self.p.stderr.fileno()
        while True:
            r, _, _ = select.select([self.fd, ef], [], [], 600)
            if not r: raise SystemExit("FAIL: no event from lmc train for 600 s")  # a watchdog, not a wait
            if self.fd in r:
                try: buf = os.read(self.fd, 1 << 16)
                except BlockingIOError: buf = b""
                i = 0
                while i + 16 <= len(buf):
                    wd, mask, _, n = struct.unpack_from("iIII", buf, i)
                    name = buf[i + 16:i + 16 + n].split(b"\0", 1)[0].decode()
                    i += 16 + n
                    tag = self.tags.get(wd)
                    if tag is None: continue
                    if tag == "" and mask & IN_CREATE and mask & IN_ISDIR and name.startswith(".partial."):
                        self.watch(os.path.join(self.out, name), name)
                    yield ("fs", tag, mask, name)
            if ef in r:  # after the fs events: those the process caused before writing are queued
                chunk = os.read(ef, 1 << 16)
                if not chunk: return
                self.err += chunk
                while b"\n" in self.part + chunk:
                    line, _, rest = (self.part + chunk).partition(b"\n")
                    self.part, chunk = b"", rest
                    yield ("line", line.decode(errors="replace"))
                self.part += chunk
    def finish(self):
        rc = self.p.wait()
        os.close(self.fd)
        self.p.stderr.close()
        return rc

def save_event(ev, s):
    """Does event ev belong to the save of step s (its temporary folder made
    or renamed, a file in it created, closed after writing or renamed)?"""
    if ev[0] != "fs": return False
    _, tag, mask, name = ev
    tmpname = ".partial." + step_name(s)
    if tag == tmpname: return (mask & (IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO)) != 0
    if tag != "": return False
    if name == tmpname: return (mask & (IN_CREATE | IN_MOVED_FROM)) != 0
    return name == step_name(s) and (mask & IN_MOVED_TO) != 0

def published(ev, s):
    return ev[0] == "fs" and ev[1] == "" and ev[3] == step_name(s) and (ev[2] & IN_MOVED_TO) != 0

def dir_deleted(ev):
    return ev[0] == "fs" and ev[1] == "" and (ev[2] & IN_DELETE) != 0 and (ev[2] & IN_ISDIR) != 0

def started(ev):  # the line printed after OUT was prepared, before the first step
    return ev[0] == "line" and ev[1].startswith("lmc train: device")

def listdir(d): return sorted(os.listdir(d))
def steps_in(d):
    return sorted(int(n[5:]) for n in os.listdir(d) if n.startswith("step_") and n[5:].isdigit())
def same_folder(a, b):
    if listdir(a) != listdir(b): return False
    return all(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read() for f in listdir(a))

# ---- the reference: uninterrupted, counting each save's events ----
ref = os.path.join(tmp, "ref"); os.mkdir(ref)
run = Run(COMMON + FRESH + ["-o", ref], ref)
counts, starts = {}, 0
for ev in run.events():
    starts += started(ev)
    for s in range(1, N + 1):
        if save_event(ev, s): counts[s] = counts.get(s, 0) + 1
rc = run.finish()
check(rc == 0, "reference run: %d %s" % (rc, run.err.decode(errors="replace")))
check(steps_in(ref) == list(range(1, N + 1)), "reference saved every step: %s" % steps_in(ref))
check(starts == 1, "the start line is seen")
# the stages of one save: the folder made; each file created and closed (a
# .safetensors file as NAME.tmp, then renamed); the folder renamed (from, to).
# The events inside the folder before the test's watch on it is in place are
# not seen (a kill then lands at a later stage); those in OUT always are.
E = 3 + sum(3 if f.endswith(".safetensors") else 2 for f in listdir(os.path.join(ref, step_name(1))))
check(all(3 <= counts.get(s, 0) <= E for s in range(1, N + 1)), "every save seen (%d stages): %s" % (E, counts))
if failed:
    print("test_ckpt_kill: %d passed, %d failed" % (passed, failed))
    sys.exit(1)

# ---- killed again and again ----
out = os.path.join(tmp, "run"); os.mkdir(out)
rng = random.Random(20261205)
kills = landed_inside = 0
stale = []  # temporaries the last kill left
while kills < 30 and not (kills >= 8 and landed_inside >= 2):
    have = steps_in(out)
    latest = have[-1] if have else 0
    s = latest + 1 + rng.randrange(2)
    if s >= N: break
    k = rng.randint(1, E)  # kill at the k-th event of the save of step s
    args = COMMON + (["--resume", "latest"] if have else FRESH) + ["-o", out]
    run = Run(args, out)
    seen, deleted, killed, start_seen = 0, set(), False, False
    for ev in run.events():  # to the end of its output: the start line may be read after the kill
        if dir_deleted(ev): deleted.add(ev[3])
        if started(ev):
            start_seen = True
            check(set(stale) <= deleted, "stale temporaries %s removed at the start (saw %s)" % (stale, deleted))
        if not killed and save_event(ev, s):
            seen += 1
            if seen >= k or published(ev, s):
                run.p.kill()
                killed = True
    rc = run.finish()
    check(start_seen, "run %d printed its start line" % (kills + 1))
    check(killed and rc == -9, "killed during the save of step %d (event %d of %d): rc %d %s" %
          (s, k, E, rc, run.err.decode(errors="replace")[-500:]))
    kills += 1
    stale = [n for n in listdir(out) if n.startswith(".partial.")]
    if stale: landed_inside += 1
    have = steps_in(out)
    print("kill %d: save of step %d, event %d of %d; left %s, newest step_%06d" %
          (kills, s, k, E, stale or "no temporary", have[-1] if have else 0))
    check(all(same_folder(os.path.join(out, step_name(t)), os.path.join(ref, step_name(t))) for t in have),
          "after kill %d: every step folder complete and equal to the reference's (%s)" % (kills, have))
    check(s == 1 or (s - 1) in have, "after a kill in save %d: step %d intact (%s)" % (s, s - 1, have))

print("test_ckpt_kill: %d kills, %d left a temporary (landed inside a save)" % (kills, landed_inside))
check(kills >= 4 and landed_inside >= 1, "kills landed inside saves: %d of %d" % (landed_inside, kills))

# ---- the last run finishes from what is left ----
have = steps_in(out)
run = Run(COMMON + (["--resume", "latest"] if have else FRESH) + ["-o", out], out)
deleted = set()
for ev in run.events():
    if dir_deleted(ev): deleted.add(ev[3])
    if started(ev): check(set(stale) <= deleted, "last run: stale %s removed at the start (saw %s)" % (stale, deleted))
rc = run.finish()
check(rc == 0, "last run: %d %s" % (rc, run.err.decode(errors="replace")))
check(steps_in(out) == list(range(1, N + 1)), "every step saved: %s" % steps_in(out))
check(not [n for n in listdir(out) if n.startswith(".partial.")], "no temporaries left: %s" % listdir(out))
for t in range(1, N + 1):
    a, b = os.path.join(out, step_name(t)), os.path.join(ref, step_name(t))
    check(os.path.isdir(a) and same_folder(a, b), "%s bit-identical to the uninterrupted run's" % step_name(t))
# losses: the last line written for each step (a killed run's steps are redone)
import json
def last_losses(path):
    d = {}
    for line in open(path):
        try: r = json.loads(line)
        except ValueError: continue
        d[r["step"]] = r["loss"]
    return d
check(last_losses(os.path.join(out, "metrics.jsonl")) == last_losses(os.path.join(ref, "metrics.jsonl")),
      "every step's loss equals the uninterrupted run's")
print("test_ckpt_kill: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
PY
