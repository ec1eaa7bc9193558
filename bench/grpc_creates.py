"""Create throughput through the gRPC API, against a local 3-node cluster.

    minoots bench grpc-creates [--seconds 10] [--to leader|follower] [--sync durable|relaxed] [--json]

Two loads, each for a fixed time, from this process (grpc.aio clients, one
channel per client): batched CreateTimers of 1000 timers from 4 concurrent
clients, and single CreateTimer from 16 concurrent clients. Timers are an hour
out, so nothing fires during the run. Prints timers created per second and the
server's group-commit effect (create commands proposed, from the Raft log
growth). The cluster and this client share the machine: numbers are for
comparing changes on one machine, not absolute capacity. `format_table` prints the
results as a table (timers/s, request latency, Raft entries and requests per entry).
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import grpc
from google.protobuf.duration_pb2 import Duration

from minoots.chaos.ledger import percentile
from minoots.raft.store import DEFAULT_SYNC
from minoots.raft.testing import LocalCluster
from minoots.v1 import timers_pb2 as pb
from minoots.v1 import timers_pb2_grpc

FAR = Duration(seconds=3600)


async def _client(address: str, token: str, batch: int, stop_at: float, counts: list, lat: list) -> None:
    md = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(address) as ch:
        stub = timers_pb2_grpc.TimersStub(ch)
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            if batch == 1:
                await stub.CreateTimer(pb.CreateTimerRequest(timer=pb.TimerSpec(delay=FAR)), timeout=30, metadata=md)
            else:
                await stub.CreateTimers(pb.CreateTimersRequest(
                    timers=[pb.TimerSpec(delay=FAR, payload=b"p" * 64) for _ in range(batch)]), timeout=60, metadata=md)
            lat.append(time.perf_counter() - t0)
            counts[0] += batch


async def _load(address: str, token: str, clients: int, batch: int, seconds: float) -> dict:
    counts, lat = [0], []
    start = time.monotonic()
    await asyncio.gather(*(_client(address, token, batch, start + seconds, counts, lat) for _ in range(clients)))
    took = time.monotonic() - start

    def ms(p: float):
        v = percentile(lat, p)
        return None if v is None else round(v * 1000, 1)
    return {"clients": clients, "batch": batch, "timers": counts[0], "seconds": round(took, 2),
            "timers_per_s": round(counts[0] / took), "requests": len(lat), "p50_ms": ms(50), "p99_ms": ms(99)}


def run(seconds: float = 10.0, to: str = "leader", sync: str = DEFAULT_SYNC,
        report: Callable[[dict], None] = print) -> list[dict]:
    """Both loads against a fresh cluster (removed afterwards); `report` gets each result as it comes."""
    root = Path(tempfile.mkdtemp(prefix="minoots-bench-"))
    cluster = LocalCluster(root / "cluster", node_args=("--sync", sync))
    results = []
    try:
        cluster.start()
        leader = cluster.leader(timeout=30)
        target = cluster.nodes[leader] if to == "leader" else \
            next(n for nid, n in cluster.nodes.items() if nid != leader)
        time.sleep(2)
        for clients, batch in ((4, 1000), (16, 1)):
            before = cluster.status(leader)["commit_index"]
            res = asyncio.run(_load(target.grpc, cluster.admin_token(), clients, batch, seconds))
            after = cluster.status(leader)["commit_index"]
            res["raft_entries"] = after - before
            res["to"] = to
            res["sync"] = sync
            report(res)
            results.append(res)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return results


COLUMNS = (("load", 20), ("timers/s", 9), ("P50 ms", 7), ("P99 ms", 7), ("raft entries", 12),
           ("req/entry", 9), ("to", 8), ("sync", 7))


def format_table(results: list[dict]) -> str:
    """One row per load: what `minoots bench grpc-creates` prints."""
    lines = ["  ".join(h.rjust(w) for h, w in COLUMNS)]
    for r in results:
        kind = "single" if r["batch"] == 1 else f"batch {r['batch']}"
        load = f"{r['clients']} x {kind}"
        per = round(r["requests"] / r["raft_entries"], 1) if r.get("raft_entries") else "-"
        row = (load, r["timers_per_s"], r["p50_ms"], r["p99_ms"], r.get("raft_entries", "-"), per,
               r.get("to", "-"), r.get("sync", "-"))
        lines.append("  ".join(str(v).rjust(w) for v, (_, w) in zip(row, COLUMNS)))
    return "\n".join(lines)
