"""Per-stage latency of single creates from a traced run (see drive.py): one row per stage,
over every create command the leader proposed. Usage: python analyze.py TRACE_DIR"""
import bisect
import glob
import json
import os
import sys


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


d = sys.argv[1]
cj = json.load(open(os.path.join(d, "client.json")))
ev = {}
for f in glob.glob(os.path.join(d, "trace-*.tsv")):
    pid = int(f.rsplit("-", 1)[1].split(".")[0])
    rows = []
    for line in open(f):
        t, label, k, e = line.rstrip("\n").split("\t")
        rows.append((int(t), label, None if k == "None" else k, e))
    ev[pid] = sorted(rows)
L = ev[cj["leader_pid"]]
F = [p for p in ev if p != cj["leader_pid"]]


def times(rows, label):
    return [t for t, lab, k, e in rows if lab == label]


def keyed(rows, label):
    return sorted((int(k), t) for t, lab, k, e in rows if lab == label)


def first_covering(pairs, i, after=0):
    """Earliest time of an event whose index is >= i (and at or after `after`)."""
    best = None
    for j, t in pairs:
        if j >= i and t >= after and (best is None or t < best):
            best = t
    return best


add = dict(keyed(L, "j.add"))
cb = dict(keyed(L, "cb"))
sent = {}
for j, t in keyed(L, "send.ae"):
    sent.setdefault(j, t)
lsync = keyed(L, "j.sync")
replies = [(int(k) - 1, t) for t, lab, k, e in L if lab == "recv.reply"]
props, settles, landed = times(L, "m.propose"), times(L, "settle"), times(L, "b.landed")
frecv = {p: keyed(ev[p], "recv.ae") for p in F}
fsync = {p: keyed(ev[p], "j.sync") for p in F}
stages = {s: [] for s in (
    "loop -> tick thread (propose .. appended)", "appended .. sent to followers", "leader: sent .. own fsync done",
    "wire: sent .. follower read it", "follower: read .. fsync done", "quorum: sent .. first reply read",
    "leader: reply read .. applied, callback", "callback .. future resolved on the loop",
    "one round: propose .. batch answered")}
for i in sorted(i for i in cb if i in add and i in sent):
    a, s, c = add[i], sent[i], cb[i]
    p = props[bisect.bisect_right(props, a) - 1] if bisect.bisect_right(props, a) else None
    q = first_covering(replies, i, s)
    if p is None or q is None:
        continue
    stages["loop -> tick thread (propose .. appended)"].append(a - p)
    stages["appended .. sent to followers"].append(s - a)
    ls = first_covering(lsync, i)
    if ls:
        stages["leader: sent .. own fsync done"].append(ls - s)
    reads = [(first_covering(frecv[f], i, s), f) for f in F]
    reads = [(r, f) for r, f in reads if r]
    if reads:
        r, f = min(reads)
        stages["wire: sent .. follower read it"].append(r - s)
        fs = first_covering(fsync[f], i, r)
        if fs:
            stages["follower: read .. fsync done"].append(fs - r)
    stages["quorum: sent .. first reply read"].append(q - s)
    stages["leader: reply read .. applied, callback"].append(c - q)
    k = bisect.bisect_left(settles, c)
    if k < len(settles):
        stages["callback .. future resolved on the loop"].append(settles[k] - c)
    k = bisect.bisect_left(landed, c)
    if k < len(landed):
        stages["one round: propose .. batch answered"].append(landed[k] - p)
n = len(stages["quorum: sent .. first reply read"])
print(f"create commands traced: {n}")
print(f"| stage | P50 ms | P90 ms |\n| --- | --- | --- |")
for name, v in stages.items():
    if v:
        print(f"| {name} | {pct(v, 50) / 1e6:.2f} | {pct(v, 90) / 1e6:.2f} |")
inb = [int(e) for t, lab, k, e in L if lab == "b.create.done"]
lat = [b - a for a, b in cj["lat"]]
print(f"| request in the batcher (wait for the batch in flight + its own round) | {pct(inb, 50) / 1e6:.2f} | "
      f"{pct(inb, 90) / 1e6:.2f} |")
print(f"| caller: Client.create end to end | {pct(lat, 50) / 1e6:.2f} | {pct(lat, 90) / 1e6:.2f} |")
fl = [int(k) for t, lab, k, e in L if lab == "b.flush"]
ls_d = [eval(e)[0] for t, lab, k, e in L if lab == "j.sync"]
fs_d = [eval(e)[0] for p in F for t, lab, k, e in ev[p] if lab == "j.sync"]
hb, ae = len(times(L, "send.hb")), len(times(L, "send.ae"))
ws = sorted(int(e) for t, lab, k, e in L if lab == "trysend")
print(f"requests per create command: mean {sum(fl) / max(1, len(fl)):.1f}; journal fsync (LMDB commit) "
      f"leader P50 {pct(ls_d, 50) / 1e6:.2f} ms, followers P50 {pct(fs_d, 50) / 1e6:.2f} ms")
print(f"leader messages per create command: {ae / max(1, n):.2f} AppendEntries with entries, "
      f"{hb / max(1, n):.2f} empty (commit notices and heartbeats); socket writes P50 {pct(ws, 50) / 1e6:.3f} "
      f"P99 {pct(ws, 99) / 1e6:.2f} ms")
