"""clock-skew: nodes with clocks off by +/- --skew-ms lead in turn; N rounds.

    minoots chaos clock-skew [--rounds 1] [--skew-ms 2000] [--report FILE]

n1 runs with `--clock-offset-ms +skew`, n2 with `-skew`, the others on time.
Each round hands leadership (Cluster.TransferLeadership over gRPC, asked of the
current leader) to n1, then n2, then n3, and lets the workload run --pause
seconds (at least 2) under each. Checked, besides the ledger with `skew` allowed:

* ticks stay monotonic along the sequence (the kernel clamps a behind leader's
  ticks to the last tick): tick_regressions = 0;
* nothing fires earlier than the skew allows, neither by tick time nor by the
  time a watcher received it (a leader whose clock is ahead fires early in real
  time: that is reported as early-within-skew with its maximum);
* the skew's effect on lateness is in the report per leader phase: receive
  lateness (this machine's clock) of the timers due under each leader.
"""
from __future__ import annotations

import time

import grpc

from minoots.raft.testing import authed_channel
from minoots.v1 import cluster_pb2, cluster_pb2_grpc

from .drill import drill
from .ledger import distribution
from .workload import now_ms


def configure(cluster, args, ctx) -> None:
    ids = list(cluster.nodes)
    offsets = {ids[0]: args.skew_ms}
    if len(ids) > 1:
        offsets[ids[1]] = -args.skew_ms
    for nid, off in offsets.items():
        node = cluster.nodes[nid]
        node.extra_args = tuple(node.extra_args) + ("--clock-offset-ms", str(off))
    ctx.skew_ms = abs(args.skew_ms)
    ctx.info["clock_offsets_ms"] = {nid: offsets.get(nid, 0) for nid in ids}


def transfer(ctx, to: str, timeout: float = 20.0) -> str:
    """Ask the leader to hand over to `to`; returns who leads afterwards (bounded retries)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        leader = ctx.caught_up()
        if leader == to:
            return leader
        with authed_channel(ctx.cluster.nodes[leader].grpc, ctx.cluster.admin_token()) as ch:
            try:
                cluster_pb2_grpc.ClusterStub(ch).TransferLeadership(
                    cluster_pb2.TransferLeadershipRequest(to=to), timeout=12.0)
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
                time.sleep(0.3)
                continue
        try:
            if ctx.cluster.leader(timeout=5) == to:
                return to
        except TimeoutError:
            pass
    ctx.note(f"could not make {to} the leader within {timeout}s (last error: {last})")
    return ctx.caught_up()


@drill("clock-skew", "leaders with clocks +/- skew in turn; ticks monotonic, nothing early beyond the skew",
       default_rounds=1, configure=configure)
def run(ctx) -> None:
    phases = []
    order = list(ctx.cluster.nodes)[:3]
    for n in range(1, ctx.args.rounds + 1):
        for nid in order:
            got = transfer(ctx, nid)
            t0 = now_ms()
            time.sleep(max(ctx.args.pause, 2.0))
            phases.append({"round": n, "leader": got, "offset_ms": ctx.info["clock_offsets_ms"].get(got, 0),
                           "from_ms": t0, "to_ms": now_ms()})
            print(f"    round {n}: {got} (clock offset {phases[-1]['offset_ms']:+d} ms) led for "
                  f"{(phases[-1]['to_ms'] - t0) / 1000:.1f} s", flush=True)
    ctx.info["leader_phases"] = phases
    ctx.post_checks.append(_lateness_by_leader)


def _lateness_by_leader(ctx, merged: dict) -> None:
    """Receive lateness (watcher clock - fire_at) of the fires due in each leader phase."""
    first = {}
    for e in merged.values():
        if e.kind == "fired" and e.timer_id not in first:
            first[e.timer_id] = e
    out = []
    for ph in ctx.info.get("leader_phases", []):
        lat = [e.recv_ms - e.fire_at_ms for e in first.values() if ph["from_ms"] <= e.fire_at_ms < ph["to_ms"]]
        tick = [e.at_ms - e.fire_at_ms for e in first.values() if ph["from_ms"] <= e.fire_at_ms < ph["to_ms"]]
        out.append({"leader": ph["leader"], "offset_ms": ph["offset_ms"], "receive_lateness_ms": distribution(lat),
                    "tick_lateness_ms": distribution(tick)})
    ctx.info["lateness_by_leader"] = out
    for o in out:
        d = o["receive_lateness_ms"]
        print(f"    leader {o['leader']} ({o['offset_ms']:+d} ms): receive lateness n={d['n']} P50 {d['p50']} ms "
              f"P95 {d['p95']} ms max {d['max']} ms", flush=True)
