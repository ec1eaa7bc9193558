"""follower-kill: SIGKILL a random follower, restart it after a pause; N rounds.

    python -m chaos.follower_kill [--rounds 3] [--report FILE]   (or: minoots chaos follower-kill)

No failover happens, so none is measured; the fault window (kill -> the node
caught up again) is what the lateness split calls "during failover". Checked
besides the ledger: the leader did not change because of a follower's death.
"""
from __future__ import annotations

import random
import sys

from .workload import now_ms
from .drill import drill, main


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


if __name__ == "__main__":
    sys.exit(main("follower-kill"))
