"""`minoots chaos DRILL`: fault drills against a local cluster (see chaos/drill.py).

    minoots chaos leader-kill --rounds 3 --report lk.json
    minoots chaos all --report chaos.json
    minoots chaos failover --rounds 10 --report failover.json

Each drill starts its own cluster on 127.0.0.1 (free ports, a temp dir removed
afterwards), runs the client workload and watchers through the SDK while
injecting its fault, checks the invariants and exits 0 only if all held.
`failover` is the measurement alone (chaos/failover.py): --rounds leader kills
under a light create stream, exit 0 only when P95 kill -> first committed tick
is under 2 s.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import click

from minoots.chaos.drill import DRILL_ORDER
from minoots.chaos.failover import RoundArgs

FAILOVER_ROUNDS = 10
DRILL_NAMES = (*DRILL_ORDER, "all", "failover")


@click.command("chaos", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("drill", type=click.Choice(DRILL_NAMES))
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9), help="Cluster size.")
@click.option("--rounds", default=None, type=click.IntRange(1, 100),
              help=f"Fault rounds (default: per drill; failover: {FAILOVER_ROUNDS}).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON report here.")
@click.option("--seed", default=None, type=int, help="Seed of the workload and the fault choices.")
@click.option("--threads", default=3, show_default=True, type=click.IntRange(1, 32), help="Client threads.")
@click.option("--op-pause", default=0.05, show_default=True, type=click.FloatRange(0.0, 10.0),
              help="Seconds each client waits between operations.")
@click.option("--max-delay-ms", default=3000, show_default=True, type=click.IntRange(50, 30000),
              help="Timers are due 50 ms .. this far ahead.")
@click.option("--max-ops", default=5000, show_default=True, type=click.IntRange(1),
              help="Operations per client thread at most.")
@click.option("--pause", default=1.0, show_default=True, type=click.FloatRange(0.0, 60.0),
              help="Seconds a node stays down / a fault lasts.")
@click.option("--warmup", default=1.0, show_default=True, type=click.FloatRange(0.0, 60.0),
              help="Seconds of workload before and after the faults.")
@click.option("--round-timeout", default=RoundArgs.round_timeout, show_default=True,
              type=click.FloatRange(1.0, 300.0))
@click.option("--skew-ms", default=2000, show_default=True, type=click.IntRange(0, 60000),
              help="clock-skew: clock offset of the skewed nodes.")
@click.option("--keep-logs", is_flag=True, help="Keep the cluster's data dirs and node logs.")
def chaos(drill, **opts) -> None:
    """Run a fault drill (or `all`) against a fresh local cluster; exit 0 only if every invariant held.

    Drills: leader-kill, follower-kill, rolling-restart, partition, clock-skew, disk-full, delivery;
    `failover` measures failover time alone (--nodes, --rounds, --report, --round-timeout,
    --seed and --keep-logs apply).
    """
    from minoots.chaos import drill as runner

    if drill == "failover":
        from minoots.chaos import failover

        raise SystemExit(failover.run(kills=opts["rounds"] or FAILOVER_ROUNDS, report=opts["report"],
                                      round_timeout=opts["round_timeout"], seed=opts["seed"],
                                      nodes=opts["nodes"], keep_logs=opts["keep_logs"]))
    args = argparse.Namespace(**opts)
    names = list(runner.DRILL_ORDER) if drill == "all" else [drill]
    raise SystemExit(runner.run(names, args))
