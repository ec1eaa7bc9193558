"""partition: isolate the leader from the other nodes, heal, N rounds.

    minoots chaos partition [--rounds 1] [--report FILE]

Every node sits behind a Raft proxy (chaos/netproxy.py; `--raft` is the proxy's
address, `--raft-bind` the node's own), so Raft links can be black-holed while
the processes, their gRPC APIs and the clients keep running. Per round:

1. the failover is measured as in chaos/failover.py, the "fault" being the
   isolation of the leader (the old leader keeps running);
2. while isolated (--pause seconds after the new leader fired the probe, at
   least leaderFallbackTimeout): a pinned watcher streams from the old leader,
   and creates are sent straight to the old leader's gRPC API (bounded: 3 tries,
   2 s each). Checked: the old leader acknowledges none of them (if one were
   acknowledged it would have to fire: it goes in the ledger either way), it
   stops calling itself leader, and every event it streams is the event the
   majority has at that sequence (it applies only committed entries: any
   FIRED it showed from its own uncommitted ticks would diverge);
3. heal; the old leader must come back as a follower and catch up; nothing
   may fire twice (the ledger's duplicate check over the whole stream).
"""
from __future__ import annotations

import threading
import time
import uuid

import grpc

from minoots.raft.testing import authed_channel
from minoots.v1 import timers_pb2, timers_pb2_grpc

from .drill import drill
from .netproxy import proxy_cluster
from .workload import now_ms

PROBES = 3


def configure(cluster, args, ctx) -> None:
    """Put a proxy on each node's Raft address and move the node to a private one."""
    net = proxy_cluster(cluster)
    ctx.net = net
    ctx.cleanup.append(net.close)


class PinnedWatch(threading.Thread):
    """Streams WatchEvents from one node only (no SDK failover), recording (seq, kind, timer, at)."""

    def __init__(self, address: str, from_sequence: int, token: str) -> None:
        super().__init__(daemon=True, name=f"pinned-{address}")
        self.channel = authed_channel(address, token)
        self.from_sequence = from_sequence
        self.events: list[tuple] = []
        self.error: str | None = None
        self._call = None
        self._stopped = False

    def run(self) -> None:
        stub = timers_pb2_grpc.TimersStub(self.channel)
        try:
            self._call = stub.WatchEvents(timers_pb2.WatchEventsRequest(from_sequence=self.from_sequence))
            for pb in self._call:
                at = pb.at.ToMilliseconds()
                self.events.append((pb.sequence, pb.kind, pb.timer_id, at, now_ms()))
        except grpc.RpcError as exc:
            if not self._stopped:
                self.error = f"{exc.code().name}: {exc.details()}"

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None:
            self._call.cancel()
        self.join(timeout=5)
        self.channel.close()


def probe_creates(ctx, address: str) -> dict:
    """Creates sent straight to the isolated node; each must fail (it cannot commit)."""
    acked = failed = 0
    errors = []
    with authed_channel(address, ctx.cluster.admin_token()) as ch:
        stub = timers_pb2_grpc.TimersStub(ch)
        for _ in range(PROBES):
            tid = "iso-" + uuid.uuid4().hex
            fire_at = now_ms() + 500
            spec = timers_pb2.TimerSpec(id=tid, tenant=ctx.ledger.tenant, idempotency_key=tid)
            spec.fire_at.FromMilliseconds(fire_at)
            try:
                resp = stub.CreateTimer(timers_pb2.CreateTimerRequest(timer=spec), timeout=2.0)
            except grpc.RpcError as exc:
                failed += 1
                errors.append(f"{exc.code().name}: {(exc.details() or '')[:120]}")
                ctx.ledger.create_unknown(tid, fire_at, "isolated_probe")
                continue
            acked += 1
            ctx.ledger.created(resp.timer.id, fire_at, now_ms())
    return {"acked": acked, "failed": failed, "errors": errors[:3]}


@drill("partition", "isolate the leader's Raft links, heal; it must rejoin as a follower", default_rounds=1,
       configure=configure)
def run(ctx) -> None:
    cluster, net = ctx.cluster, ctx.net
    rounds = []
    for n in range(1, ctx.args.rounds + 1):
        leader = ctx.caught_up()
        old = cluster.nodes[leader]
        start_seq = max((w_evs[-1].sequence for w_evs in ctx.ledger.events.values() if w_evs), default=0) + 1
        pinned = PinnedWatch(old.grpc, start_seq, ctx.cluster.admin_token())
        pinned.start()
        r = ctx.measure_failover(n, fault=net.isolate)
        # Stay partitioned a while: past PySyncObj's leaderFallbackTimeout (2 s) at least.
        time.sleep(max(ctx.args.pause, 2.5))
        probes = probe_creates(ctx, old.grpc)
        st = cluster.status(leader) or {}
        still_leader = st.get("role") == "leader"
        iso_fired_total = st.get("fired_total")
        t_heal = now_ms()
        net.heal()
        back = ctx.caught_up()
        st_after = cluster.status(leader) or {}
        rejoined_as_follower = st_after.get("role") == "follower"
        time.sleep(0.5)
        pinned.stop()
        during = [e for e in pinned.events if e[4] < t_heal]
        ctx.windows[-1] = (ctx.windows[-1][0], max(ctx.windows[-1][1], now_ms()))
        ctx.check("isolated_leader_acked_write", probes["acked"])
        ctx.check("isolated_leader_kept_leading", int(still_leader))
        ctx.check("old_leader_not_follower_after_heal", int(not rejoined_as_follower))
        ctx.pinned = getattr(ctx, "pinned", []) + [pinned]
        rounds.append({"round": n, "isolated": leader, "new_leader": r["new_leader"], "leader_after_heal": back,
                       "probes_to_isolated": probes, "isolated_role_before_heal": st.get("role"),
                       "isolated_fired_total_before_heal": iso_fired_total,
                       "role_after_heal": st_after.get("role"),
                       "pinned_events_while_isolated": len(during),
                       "pinned_fired_while_isolated": sum(1 for e in during if e[1] == 3),
                       "pinned_error": pinned.error})
        print(f"    isolated {leader}: role before heal {st.get('role')}, direct creates acked "
              f"{probes['acked']}/{PROBES}, events it streamed while isolated {len(during)}, "
              f"after heal {st_after.get('role')}", flush=True)
    ctx.info["partition_rounds"] = rounds
    ctx.info["proxy"] = net.stats()
    ctx.post_checks.append(_compare_pinned)


def _compare_pinned(ctx, merged: dict) -> None:
    """Every event the isolated node streamed must be the majority's event at that sequence."""
    bad = 0
    for p in getattr(ctx, "pinned", []):
        for seq, kind, tid, at, _ in p.events:
            e = merged.get(seq)
            if e is not None and (e.timer_id != tid or e.at_ms != at):
                bad += 1
    ctx.check("isolated_node_divergent_events", bad)
