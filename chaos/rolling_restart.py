"""rolling-restart: SIGTERM each node in turn, restart it, wait until it caught up; N passes.

    minoots chaos rolling-restart [--rounds 1] [--report FILE]

When the node to stop is the leader, its step is measured as a failover (the
chaos/failover.py probe method, SIGTERM instead of SIGKILL). Checked besides the
ledger: every SIGTERM ended the process cleanly (exit code 0, within 10 s).
"""
from __future__ import annotations

from .workload import now_ms
from .drill import drill


@drill("rolling-restart", "SIGTERM each node in turn, waiting for it to catch up", default_rounds=1)
def run(ctx) -> None:
    cluster = ctx.cluster
    codes = {}
    step = 0
    for n in range(1, ctx.args.rounds + 1):
        for nid in list(cluster.nodes):
            step += 1
            leader = ctx.caught_up()
            t0 = now_ms()
            if nid == leader:
                ctx.measure_failover(step, fault=lambda l: codes.setdefault(f"{step}:{l}", cluster.terminate(l)))
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
