"""rolling-restart: SIGTERM each node in turn, restart it, wait until it caught up; N passes.

    minoots chaos rolling-restart [--rounds 1] [--report FILE]

When the node to stop is the leader, its step is measured as a failover (the
chaos/failover.py probe method, SIGTERM instead of SIGKILL); a leader that gets
SIGTERM hands leadership to a caught-up follower first (raft/node.py Node.hand_over),
so the fires due while it stops should be on time: their lateness is reported on its
own ("leader stop", in the report's drill_info.leader_stop_lateness_ms). Checked
besides the ledger: every SIGTERM ended the process cleanly (exit code 0, within 10 s).
"""
from __future__ import annotations

from .ledger import FIRED, percentile
from .workload import now_ms
from .drill import drill


@drill("rolling-restart", "SIGTERM each node in turn, waiting for it to catch up", default_rounds=1)
def run(ctx) -> None:
    cluster = ctx.cluster
    codes = {}
    leader_windows = []
    step = 0
    ctx.post_checks.append(lambda ctx, merged: _leader_stop_lateness(ctx, merged, leader_windows))
    for n in range(1, ctx.args.rounds + 1):
        for nid in list(cluster.nodes):
            step += 1
            leader = ctx.caught_up()
            t0 = now_ms()
            if nid == leader:
                ctx.measure_failover(step, fault=lambda l: codes.setdefault(f"{step}:{l}", cluster.terminate(l)))
                leader_windows.append(ctx.windows[-1])
            else:
                codes[f"{step}:{nid}"] = cluster.terminate(nid)
                print(f"    step {step}: stopped follower {nid} (exit {codes[f'{step}:{nid}']})", flush=True)
            ctx.pause()
            cluster.start_node(nid)
            ctx.caught_up()
            if nid != leader:
                ctx.windows.append((t0, now_ms()))
    unclean = {k: v for k, v in codes.items() if v != 0}
    ctx.info["exit_codes"] = codes
    ctx.check("unclean_sigterm_exit", len(unclean))
    if unclean:
        ctx.note(f"SIGTERM did not end these cleanly (step:node -> exit code): {unclean}")


def _leader_stop_lateness(ctx, merged: dict, windows: list) -> None:
    """Tick and receive lateness of the fires due while a leader was stopping (its windows only)."""
    first_recv = {}
    for evs in ctx.ledger.events.values():         # the watchers have stopped: no lock needed
        for e in evs:
            if e.kind == FIRED:
                first_recv[e.timer_id] = min(first_recv.get(e.timer_id, e.recv_ms), e.recv_ms)
    tick, recv = [], []
    for e in merged.values():
        if e.kind == FIRED and any(a <= e.fire_at_ms <= b for a, b in windows):
            tick.append(e.at_ms - e.fire_at_ms)
            recv.append(first_recv.get(e.timer_id, e.recv_ms) - e.fire_at_ms)
    out = {}
    for name, values in (("tick", tick), ("receive", recv)):
        out[name] = {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
                     "max": max(values) if values else None}
        d = out[name]
        print(f"   lateness {name:<7} leader stop n={d['n']:<5} P50 {d['p50']} ms  P99 {d['p99']} ms  "
              f"max {d['max']} ms", flush=True)
    ctx.info["leader_stop_lateness_ms"] = out
