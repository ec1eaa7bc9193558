"""leader-kill: SIGKILL the leader, keep it down for --pause seconds, restart it; N rounds.

    minoots chaos leader-kill [--rounds 3] [--report FILE]

Each round is measured like chaos/failover.py (probe due 20 ms after the kill;
failover = kill -> first survivor reporting the probe fired). The killed node is
restarted after the pause and the next round waits until it has caught up.
"""
from __future__ import annotations

from .drill import drill


@drill("leader-kill", "SIGKILL the leader, restart it after a pause", default_rounds=3)
def run(ctx) -> None:
    for n in range(1, ctx.args.rounds + 1):
        r = ctx.measure_failover(n)
        ctx.pause()
        ctx.cluster.start_node(r["killed"])
        ctx.caught_up()
