"""Single creates from many callers, with Redis's single ZADD from Python in the same run.

    minoots bench single-creates [--seconds 10] [--callers 16] [--repeat 1] [--sync durable|relaxed]

Each repeat starts a fresh 3-node cluster (durable by default), lets it settle, then
runs `--callers` threads, one SDK `Client` each, calling `Client.create` back to back
for `--seconds` (the same load as `minoots bench load`'s single-create phase). Then,
unless `--no-redis`, one redis-server (no persistence, not replicated) gets one ZADD per
call from as many threads (bench/load_redis.py), the single-create peer the README quotes.

Besides creates/s and latency, each row shows where the CPU went, in CPU milliseconds
per create (user + system, from /proc): the leader, each follower, and this process
(the callers). On a shared machine throughput moves with the other load, CPU per
create much less: compare builds on that column. `Raft entries` and `req/entry` show how
many requests the API's group commit put into one replicated command.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from minoots.bench.load import SINGLE_THREADS, _single_phase
from minoots.raft.clock import now_ms
from minoots.raft.store import DEFAULT_SYNC
from minoots.raft.testing import LocalCluster, harness_token

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """User + system CPU seconds of a process (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _loadavg() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _per_create(before: Optional[float], after: Optional[float], n: int) -> Optional[float]:
    if before is None or after is None or not n:
        return None
    return (after - before) * 1000.0 / n


def minoots_run(seconds: float, callers: int, sync: str, say: Callable[[str], None]) -> dict:
    """One fresh cluster, `callers` threads of single creates for `seconds`."""
    harness_token()
    root = Path(tempfile.mkdtemp(prefix="minoots-single-"))
    cluster = LocalCluster(root / "cluster", node_args=("--sync", sync))
    try:
        cluster.start()
        leader = cluster.leader(timeout=30)
        time.sleep(2)
        pids = {nid: n.pid for nid, n in cluster.nodes.items()}
        pids["callers"] = os.getpid()
        before_idx = cluster.status(leader)["commit_index"]
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        load0 = _loadavg()
        far = now_ms() + 3_600_000
        res = _single_phase([n.grpc for n in cluster.nodes.values()], seconds, lambda k: far, [0], {},
                            threading.Lock(), "")
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        entries = cluster.status(leader)["commit_index"] - before_idx
        n = res["timers"]
        cpu = {k: _per_create(cpu0[k], cpu1[k], n) for k in pids}
        followers = [cpu[k] for k in cluster.nodes if k != leader]
        row = {"system": "minoots", "sync": sync, "callers": callers, "creates": n, "seconds": res["seconds"],
               "per_s": res["timers_per_s"], "errors": res["errors"], "error_sample": res["error_sample"],
               "p50_ms": res["latency_ms"].get("p50"), "p99_ms": res["latency_ms"].get("p99"),
               "raft_entries": entries, "requests_per_entry": n / entries if entries else None,
               "cpu_ms_per_create": {"leader": cpu[leader], "followers": followers, "callers": cpu["callers"]},
               "loadavg": [load0, _loadavg()]}
        say(f"minoots: {row['per_s']:.0f} creates/s")
        return row
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def redis_run(seconds: float, callers: int, install: bool, say: Callable[[str], None]) -> dict:
    """One ZADD per call from `callers` threads against a fresh redis-server."""
    from minoots.bench import load_redis

    redis, port, proc, tmp = load_redis.start_server(install, say)
    if redis is None:
        return {"system": "redis", "skipped": port}
    try:
        c0, p0 = cpu_seconds(proc.pid), cpu_seconds(os.getpid())
        load0 = _loadavg()
        res = load_redis.single_zadds(redis, port, seconds, callers)
        n = res["calls"]
        row = {"system": "redis", "callers": callers, "creates": n, "seconds": res["seconds"], "per_s": res["per_s"],
               "p50_ms": res["latency_ms"].get("p50"), "p99_ms": res["latency_ms"].get("p99"),
               "cpu_ms_per_create": {"server": _per_create(c0, cpu_seconds(proc.pid), n),
                                     "callers": _per_create(p0, cpu_seconds(os.getpid()), n)},
               "loadavg": [load0, _loadavg()]}
        say(f"redis: {row['per_s']:.0f} ZADD/s")
        return row
    finally:
        load_redis.stop_server(proc, tmp)


def run(seconds: float = 10.0, callers: int = SINGLE_THREADS, repeat: int = 1, sync: str = DEFAULT_SYNC,
        redis: bool = True, install: bool = True, say: Callable[[str], None] = print) -> list[dict]:
    """`repeat` times: MINOOTS then (unless `redis` is False) Redis, one after the other."""
    rows = []
    for i in range(repeat):
        rows.append(dict(minoots_run(seconds, callers, sync, say), run=i + 1))
        if redis:
            rows.append(dict(redis_run(seconds, callers, install, say), run=i + 1))
    return rows


def _ms(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_table(rows: list[dict]) -> str:
    """The table `minoots bench single-creates` prints, one row per system and run."""
    head = ("| run | system | callers | creates/s | P50 ms | P99 ms | Raft entries | req/entry "
            "| CPU ms/create: server(s) | CPU ms/create: callers | load avg (start-end) |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r.get('run', '')} | {r['system']} | - | skipped: {r['skipped']} | | | | | | | |")
            continue
        cpu = r["cpu_ms_per_create"]
        if r["system"] == "minoots":
            system = f"minoots ({r['sync']}, Raft x3)"
            server = f"leader {_ms(cpu['leader'])}, followers " + " / ".join(_ms(f) for f in cpu["followers"])
            entries = str(r["raft_entries"])
            per = "-" if r["requests_per_entry"] is None else f"{r['requests_per_entry']:.1f}"
        else:
            system, server, entries, per = "redis ZADD (1 process, no persistence)", _ms(cpu["server"]), "-", "-"
        load = " - ".join("-" if v is None else f"{v:.1f}" for v in r["loadavg"])
        lines.append(f"| {r.get('run', '')} | {system} | {r['callers']} | {r['per_s']:,.0f} | {_ms(r['p50_ms'])} "
                     f"| {_ms(r['p99_ms'])} | {entries} | {per} | {server} | {_ms(cpu['callers'])} | {load} |")
    return "\n".join(lines)
