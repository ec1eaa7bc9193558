"""Recurring timers on a real 3-node cluster, through the SDK and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

pytestmark = pytest.mark.cluster


def test_every_fires_each_occurrence_with_its_own_fire_id_on_every_node(real_cluster):
    import minoots
    from minoots.api.types import EventKind, TimerState, datetime_to_ms
    from support import cluster_grpc, wait_for

    with minoots.Client(cluster_grpc(real_cluster), timeout=60) as c:
        t = c.create(delay=0.3, id="rec", tenant="sched", every=1, max_count=3)
        assert (t.every, t.max_count, t.until, t.state) == (timedelta(seconds=1), 3, None, TimerState.ARMED)
        first = t.fire_at_ms
        wait_for(lambda: c.get("rec", tenant="sched").state == TimerState.SETTLED, "three occurrences")
        fired = []
        w = c.watch(from_sequence=1, tenant="sched")
        try:
            for e in w:
                if e.kind == EventKind.FIRED:
                    fired.append((e.fire_id, datetime_to_ms(e.fire_at)))
                if e.kind == EventKind.SETTLED:
                    break
        finally:
            w.close()
        assert len(fired) == 3 and len({f for f, _ in fired}) == 3
        assert [at for _, at in fired] == [first, first + 1000, first + 2000]   # on the grid
        for n in real_cluster.nodes.values():
            with minoots.Client([n.grpc], timeout=60) as one:
                got = wait_for(lambda: (lambda x: x if x.state == TimerState.SETTLED else None)(
                    one.get("rec", tenant="sched")), "every node to settle it")
                assert got.attempts == 3 and got.every == timedelta(seconds=1)
        with pytest.raises(minoots.InvalidArgument, match="every"):
            c.create(delay=1, tenant="sched", every=0.5)
        with pytest.raises(minoots.InvalidArgument, match="ack_required"):
            c.create(delay=1, tenant="sched", every=5, ack_required=True)


def test_cli_timer_create_every(real_cluster):
    from support import cluster_grpc

    env = dict(os.environ, MINOOTS_NODES=",".join(cluster_grpc(real_cluster)))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "minoots", "timer", *args], capture_output=True, text=True,
                              timeout=120, env=env)

    r = run("create", "--in", "1h", "--every", "90s", "--max-count", "5", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["every_ms"], got["max_count"], got["until"]) == (90_000, 5, None)
    r = run("get", got["id"])
    assert r.returncode == 0 and "90s, 5 occurrences" in r.stdout
    r = run("create", "--in", "1h", "--every", "10ms")
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "Traceback" not in r.stderr
    r = run("create", "--in", "1h", "--max-count", "3")
    assert r.returncode == 2 and "need --every or --cron" in r.stderr


def test_cron_timer_through_the_sdk_and_the_cli(real_cluster):
    import minoots
    from minoots.api.types import TimerState
    from support import cluster_grpc, wait_for

    with minoots.Client(cluster_grpc(real_cluster), timeout=60) as c:
        t = c.create(delay=0, id="cron1", tenant="sched", cron="* * * * * *", tz="UTC", max_count=2)
        assert (t.cron, t.tz, t.max_count) == ("* * * * * *", "UTC", 2) and t.fire_at_ms % 1000 == 0
        wait_for(lambda: c.get("cron1", tenant="sched").state == TimerState.SETTLED, "two occurrences")
        assert c.get("cron1", tenant="sched").attempts == 2
        with pytest.raises(minoots.InvalidArgument, match="time zone"):
            c.create(delay=0, tenant="sched", cron="0 9 * * *", tz="Nowhere/Special")
    env = dict(os.environ, MINOOTS_NODES=",".join(cluster_grpc(real_cluster)))
    r = subprocess.run([sys.executable, "-m", "minoots", "timer", "create", "--cron", "0 9 * * 1-5", "--tz",
                        "Europe/Paris", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["cron"], got["tz"], got["state"]) == ("0 9 * * 1-5", "Europe/Paris", "armed")
    r = subprocess.run([sys.executable, "-m", "minoots", "timer", "create", "--cron", "0 9 * * *"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "--cron and --tz go together" in r.stderr
