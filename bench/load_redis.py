"""The Redis peer of ``bench.load``: a sorted-set delay queue, the usual way timers are done on Redis.

One ``redis-server`` (Debian's, from PATH) started on loopback with persistence
off, one key: ``ZADD delay <deadline_ms> <id>``. A poller pops everything due
every 10 ms with a Lua script (ZRANGEBYSCORE + ZREM, atomic on the server), so
each member is delivered once. NOT replicated and not durable (one process, no
AOF/RDB): the table says so. Lateness = pop time (the poller's clock) - deadline.
Loads with the same timer count, window, batch size and client threads as the
MINOOTS run, through ``redis-py`` pipelines (one ZADD per batch).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from minoots.raft.clock import now_ms

KEY = "delay"
BODY = "body"
POLL_S = 0.010
POP = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do redis.call('ZREM', KEYS[1], due[i]); redis.call('HDEL', KEYS[2], due[i]) end
return due
"""


def single_zadds(redis, port: int, seconds: float, threads: int) -> dict:
    """One ZADD per call from `threads` threads (one connection each) for `seconds`: the
    single-create peer of MINOOTS's single CreateTimer. Latency in ms; the key is removed."""
    from minoots.bench.load import dist

    lat: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def single() -> None:
        c = redis.Redis(host="127.0.0.1", port=port)
        k = 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            c.zadd("single", {f"{threading.get_ident()}-{k}": 1})
            took = time.perf_counter() - t0
            k += 1
            with lock:
                lat.append(took)

    st = [threading.Thread(target=single, daemon=True) for _ in range(threads)]
    s0 = time.monotonic()
    for t in st:
        t.start()
    for t in st:
        t.join(seconds + 30)
    took = time.monotonic() - s0
    redis.Redis(host="127.0.0.1", port=port).delete("single")
    return {"calls": len(lat), "seconds": took, "per_s": len(lat) / took if took else 0.0,
            "latency_ms": {k: (v * 1e3 if isinstance(v, float) and k != "n" else v) for k, v in dist(lat).items()}}


def start_server(install: bool, say):
    """Start a throwaway redis-server on a free loopback port (no persistence).
    Returns (redis module, port, Popen, tmp dir) or (None, reason, None, None)."""
    from minoots.bench.debian import find_or_install
    from minoots.raft.testing import free_ports
    exe, why = find_or_install("redis-server", "redis-server", install, say)
    if exe is None:
        return None, why, None, None
    try:
        import redis
    except ImportError:
        return None, "the redis package is not installed (pip install 'minoots[bench]')", None, None
    tmp = Path(tempfile.mkdtemp(prefix="minoots-redis-"))
    port = free_ports(1)[0]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp), "--protected-mode", "yes"],
                            stdout=open(tmp / "redis.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    r = redis.Redis(host="127.0.0.1", port=port)
    t_end = time.monotonic() + 10
    while True:
        try:
            r.ping()
            return redis, port, proc, tmp
        except redis.ConnectionError:
            if time.monotonic() > t_end or proc.poll() is not None:
                stop_server(proc, None)
                return None, f"redis-server did not start (see {tmp / 'redis.log'})", None, None
            time.sleep(0.05)


def stop_server(proc, tmp) -> None:
    """Stop the redis-server started by `start_server` (by its PID) and remove its dir."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def run(n: int, window: float, clients: int, batch: int, payload: int, lead: float, progress: bool, say,
        install: bool = True) -> dict:
    from minoots.bench.load import dist, vmrss
    redis, port, proc, tmp = start_server(install, say)
    if redis is None:
        return {"skipped": port}
    try:
        say(f"redis peer: redis-server pid {proc.pid} on 127.0.0.1:{port}")
        rss0 = vmrss(proc.pid)
        start_ms = now_ms()
        first_ms = start_ms + int(lead * 1000)
        win_ms = int(window * 1000)
        body = b"x" * payload   # the payload lives in a hash beside the sorted set, deleted on pop

        popped: list[tuple[str, int, int]] = []   # (id, deadline, popped_at)
        stop = threading.Event()

        def poller() -> None:
            pr = redis.Redis(host="127.0.0.1", port=port)
            pop = pr.register_script(POP)
            while not stop.is_set():
                now = now_ms()
                while True:
                    due = pop(keys=[KEY, BODY], args=[now, 10_000])
                    for i in range(0, len(due), 2):
                        popped.append((due[i].decode(), int(float(due[i + 1])), now))
                    if len(due) < 20_000:
                        break
                stop.wait(POLL_S)

        pt = threading.Thread(target=poller, daemon=True)
        pt.start()

        # batched load
        batches = [[(f"L{j}", first_ms + int(((j * 0.6180339887498949) % 1.0) * win_ms))
                    for j in range(lo, min(lo + batch, n))] for lo in range(0, n, batch)]
        lock = threading.Lock()
        nxt = [0]
        done = [0]

        def loader() -> None:
            c = redis.Redis(host="127.0.0.1", port=port)
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(batches):
                    return
                p = c.pipeline(transaction=True)
                p.zadd(KEY, {tid: fa for tid, fa in batches[i]})
                if body:
                    p.hset(BODY, mapping={tid: body for tid, _ in batches[i]})
                p.execute()
                with lock:
                    done[0] += len(batches[i])

        t0 = time.monotonic()
        ts = [threading.Thread(target=loader, daemon=True) for _ in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        load_s = time.monotonic() - t0
        time.sleep(0.5)
        rss1 = vmrss(proc.pid)

        # single ZADDs from 16 threads for 5 s (ids not fired-checked: removed afterwards)
        single_rate = single_zadds(redis, port, 5.0, 16)["per_s"]

        last_ms = max(fa for b in batches for _, fa in b)
        say(f"redis peer: firing, last due in {max(0, last_ms - now_ms()) / 1e3:.0f}s")
        deadline = time.monotonic() + max(0, (last_ms - now_ms()) / 1e3) + 30
        while time.monotonic() < deadline and len(popped) < n:
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        pt.join(5)
        counts = Counter(tid for tid, _, _ in popped)
        want = {tid for b in batches for tid, _ in b}
        lost = len(want - counts.keys())
        dup = sum(1 for c in counts.values() if c > 1)
        late = [at - fa for _, fa, at in popped]
        d = dist(late)
        return {
            "replicated": "no (1 process, no persistence)",
            "load": {"timers": done[0], "seconds": load_s, "timers_per_s": done[0] / load_s},
            "single_per_s": single_rate,
            "rss": {"before": rss0, "full": rss1, "bytes_per_timer": (rss1 - rss0) / n if rss0 and rss1 else None},
            "lateness_ms": d,
            "correctness": {"ok": not lost and not dup, "expected": len(want), "lost": lost, "duplicated": dup},
            "summary": {"create": done[0] / load_s, "p50": d["p50"], "p95": d["p95"], "p99": d["p99"], "max": d["max"],
                        "bpt": (rss1 - rss0) / n if rss0 and rss1 else None},
            "note": "lateness is pop time (10 ms poll) - deadline; payload in a hash (HSET/HDEL)",
            "_samples": late,          # for the plots; not written to results.json
        }
    finally:
        stop_server(proc, tmp)
