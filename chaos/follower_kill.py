"""follower-kill: SIGKILL a random follower, restart it after a pause; N rounds.

    minoots chaos follower-kill [--rounds 3] [--report FILE]

No failover happens, so none is measured; the fault window (kill -> the node
caught up again) is what the lateness split calls "during failover". Checked
besides the ledger: the leader did not change because of a follower's death.
"""
from __future__ import annotations

import random

from .workload import now_ms
from .drill import drill


@drill("follower-kill", "SIGKILL a follower, restart it after a pause", default_rounds=3)
def run(ctx) -> None:
    changes = 0
    for n in range(1, ctx.args.rounds + 1):
        leader = ctx.caught_up()
        victim = random.choice([nid for nid in ctx.cluster.nodes if nid != leader])
        t0 = now_ms()
        ctx.cluster.kill(victim)
        ctx.pause()
        ctx.cluster.start_node(victim)
        after = ctx.caught_up()
        ctx.windows.append((t0, now_ms()))
        if after != leader:
            changes += 1
        print(f"    round {n}: killed follower {victim}, leader {leader} -> {after}", flush=True)
    # Informational, not an invariant: a restarted follower may legitimately start an election
    # (PySyncObj has no pre-vote), which disturbs the leader.
    ctx.info["leader_changes"] = changes
